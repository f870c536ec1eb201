/*
 * test_cli_flow - the pure parts of the flow-control CLI: reading a dead
 * letter's ledger value for `herold dlq show`, and the CHANNEL:RECIPIENT
 * argument check.  Includes cli_flow.c to reach its static helpers
 * (STYLE 8); the Redis side is covered by the integration tests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dispatcher/cli_flow.c"

struct parse_case {
    const char *label;
    const char *value;          /* NULL: no ledger field */
    int want_rc;
    const char *want_state;
    long want_attempts, want_code;
    const char *want_reason;    /* NULL: unknown */
};

static const struct parse_case parse_cases[] = {
    {"dead with reason", "dead|5|500|HTTP 500", 0, "dead", 5, 500, "HTTP 500"},
    {"empty reason", "dead|3|0|", 0, "dead", 3, 0, ""},
    {"reason with colon and spaces", "dead|1|421|smtp: 421 try later", 0, "dead", 1, 421,
     "smtp: 421 try later"},
    {"reason keeps later bars", "dead|2|0|a|b", 0, "dead", 2, 0, "a|b"},
    {"other state", "retry|0|500|dlq retry", 0, "retry", 0, 500, "dlq retry"},
    {"missing", NULL, -1, "", -1, -1, NULL},
    {"empty", "", -1, "", -1, -1, NULL},
    {"no bar", "garbage", -1, "", -1, -1, NULL},
    {"empty state", "|1|0|x", -1, "", -1, -1, NULL},
    {"upper-case state", "DEAD|1|0|x", -1, "", -1, -1, NULL},
    {"state too long", "deaddeaddeaddeaddead|1|0|x", -1, "", -1, -1, NULL},
    {"attempts not a number", "dead|x|0|r", -1, "dead", -1, -1, NULL},
    {"attempts empty", "dead||0|r", -1, "dead", -1, -1, NULL},
    {"code missing", "dead|5", -1, "dead", -1, -1, NULL},
    {"code not ended", "dead|5|500", -1, "dead", 5, -1, NULL},
};

static void test_ledger_parse(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
        const struct parse_case *c = &parse_cases[i];
        struct cf_letter l;
        int rc = cf_ledger_parse(c->value, c->value ? strlen(c->value) : 0, &l);

        if (rc != c->want_rc)
            fail_msg("%s: rc %d, want %d", c->label, rc, c->want_rc);
        if (strcmp(l.state, c->want_state) != 0)
            fail_msg("%s: state \"%s\", want \"%s\"", c->label, l.state, c->want_state);
        if (l.attempts != c->want_attempts || l.code != c->want_code)
            fail_msg("%s: attempts %ld code %ld, want %ld %ld", c->label, l.attempts, l.code,
                     c->want_attempts, c->want_code);
        if (c->want_reason == NULL) {
            if (l.reason != NULL)
                fail_msg("%s: a reason, want none", c->label);
        } else if (l.reason == NULL || l.reason_len != strlen(c->want_reason) ||
                   memcmp(l.reason, c->want_reason, l.reason_len) != 0) {
            fail_msg("%s: reason \"%.*s\", want \"%s\"", c->label,
                     l.reason ? (int)l.reason_len : 6, l.reason ? l.reason : "(none)",
                     c->want_reason);
        }
    }
}

/* the value is a Redis reply: parsing stops at len, not at a NUL */
static void test_ledger_parse_len(void **state)
{
    static const char v[] = "dead|5|500|HTTP 500 and more";
    struct cf_letter l;

    (void)state;
    assert_int_equal(cf_ledger_parse(v, strlen("dead|5|500|HTTP 500"), &l), 0);
    assert_int_equal(l.reason_len, 8);
    assert_memory_equal(l.reason, "HTTP 500", 8);
    assert_int_equal(cf_ledger_parse(v, strlen("dead|5|50"), &l), -1);
}

struct member_case {
    const char *label;
    const char *member;
    bool want;
};

static const struct member_case member_cases[] = {
    {"plain", "email:r-17", true},
    {"recipient with colons", "webhook:p:3f9a:1", true},
    {"channel with underscore", "sms_sipgate:c.1", true},
    {"no colon", "email", false},
    {"empty channel", ":r1", false},
    {"empty recipient", "email:", false},
    {"upper-case channel", "Email:r1", false},
    {"space in recipient", "email:r 1", false},
    {"channel too long", "abcdefghijabcdefghijabcdefghijabc:r1", false},
};

static void test_member_ok(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof member_cases / sizeof member_cases[0]; i++) {
        const struct member_case *c = &member_cases[i];
        if (cf_member_ok(c->member) != c->want)
            fail_msg("%s: \"%s\" %s", c->label, c->member, c->want ? "refused" : "accepted");
    }
}

static void test_handles(void **state)
{
    (void)state;
    assert_true(cli_flow_handles("dlq"));
    assert_true(cli_flow_handles("schedule"));
    assert_true(cli_flow_handles("cancel"));
    assert_false(cli_flow_handles("status"));
    assert_false(cli_flow_handles("citizen"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ledger_parse),
        cmocka_unit_test(test_ledger_parse_len),
        cmocka_unit_test(test_member_ok),
        cmocka_unit_test(test_handles),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
