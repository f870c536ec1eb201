/*
 * test_track - the tracking schema: key names and the ledger value
 * encoding that the Lua scripts and the CLI read back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dispatcher/scripts.h"
#include "dispatcher/track.h"

struct value_case {
    const char *label;
    enum unit_state state;
    int attempts, code;
    const char *reason;
    const char *want;
};

static const struct value_case value_cases[] = {
    {"sent", UNIT_SENT, 1, 200, "", "sent|1|200|"},
    {"retry with reason", UNIT_RETRY, 2, 503, "http 503", "retry|2|503|http 503"},
    {"bar in reason", UNIT_FAILED, 5, 0, "a|b", "failed|5|0|a/b"},
    {"control chars", UNIT_FAILED, 1, 0, "x\r\ny", "failed|1|0|x  y"},
    {"null reason", UNIT_SUPPRESSED, 0, 0, NULL, "suppressed|0|0|"},
    {"expired", UNIT_EXPIRED, 0, 0, "expires_at passed", "expired|0|0|expires_at passed"},
};

static void test_unit_value(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof value_cases / sizeof value_cases[0]; i++) {
        const struct value_case *c = &value_cases[i];
        char buf[256];
        enum unit_state st;
        int att;

        track_unit_value(buf, sizeof buf, c->state, c->attempts, c->code, c->reason);
        if (strcmp(buf, c->want) != 0)
            fail_msg("%s: got \"%s\", want \"%s\"", c->label, buf, c->want);
        assert_int_equal(track_unit_parse(buf, strlen(buf), &st, &att), 0);
        assert_int_equal(st, c->state);
        assert_int_equal(att, c->attempts);
    }
}

static void test_unit_value_truncates(void **state)
{
    char buf[12];

    (void)state;
    track_unit_value(buf, sizeof buf, UNIT_RETRY, 3, 500, "a long reason that does not fit");
    assert_int_equal(strlen(buf), sizeof buf - 1);
    assert_memory_equal(buf, "retry|3|500", 11);
}

static void test_unit_parse_rejects(void **state)
{
    static const char *const bad[] = {"", "sent", "bogus|1|0|", "SENT|1|0|", "|1|0|"};
    enum unit_state st;
    int att;

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (track_unit_parse(bad[i], strlen(bad[i]), &st, &att) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
}

static void test_terminal_states(void **state)
{
    (void)state;
    assert_false(track_state_terminal(UNIT_NONE));
    assert_false(track_state_terminal(UNIT_SENDING));
    assert_false(track_state_terminal(UNIT_RETRY));
    assert_true(track_state_terminal(UNIT_SENT));
    assert_true(track_state_terminal(UNIT_FAILED));
    assert_true(track_state_terminal(UNIT_SUPPRESSED));
    assert_true(track_state_terminal(UNIT_EXPIRED));
}

static void test_keys(void **state)
{
    char buf[TRACK_KEY_MAX];

    (void)state;
    assert_string_equal(track_key_lane(buf, "herold:", LANE_URGENT), "herold:jobs:urgent");
    assert_string_equal(track_key_lane(buf, "{herold}:", LANE_BULK), "{herold}:jobs:bulk");
    assert_string_equal(track_key_job(buf, "herold:", "abfuhr-1"), "herold:job:abfuhr-1");
    assert_string_equal(track_key_units(buf, "herold:", "abfuhr-1"),
                        "herold:job:abfuhr-1:units");
    assert_string_equal(track_key(buf, "herold:", "rejected"), "herold:rejected");
    assert_int_equal(track_lane_from_name("normal"), LANE_NORMAL);
    assert_int_equal(track_lane_from_name("Normal"), -1);
}

static void test_script_shas(void **state)
{
    (void)state;
    scripts_register(NULL);
    assert_int_equal(strlen(script_ledger.sha), 40);
    assert_string_not_equal(script_ledger.sha, script_begin.sha);
    /* scripts never mention a lane or prefix literally: every key is in KEYS */
    assert_null(strstr(script_begin.source, "herold:"));
    assert_null(strstr(script_ledger.source, "herold:"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unit_value),
        cmocka_unit_test(test_unit_value_truncates),
        cmocka_unit_test(test_unit_parse_rejects),
        cmocka_unit_test(test_terminal_states),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_script_shas),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
