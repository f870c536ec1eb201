/*
 * test_citizen - citizen_validate field by field (the exact error path,
 * the expected-what message, never the value), the pure syntax helpers
 * and the unsubscribe MAC (against a value computed independently with
 * Python's hmac module).
 *
 * Each case starts from a valid input (base_in) and changes one thing.
 * Bad values carry the canary "Zq9Canary" wherever they can, and every
 * message is checked not to contain it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "dispatcher/citizen.h"

#define CANARY "Zq9Canary"

static void base_in(struct citizen_in *in)
{
    memset(in, 0, sizeof *in);
    in->id = "b-1001";
    in->email = "anna.muster@example.org";
    in->phone = "+4915112345678";
    in->lang = "de";
    in->tz = "Europe/Berlin";
    in->quiet = "22:00-07:00";
    in->push_json = "[{\"platform\":\"fcm\",\"token\":\"fcm-token_0123456789abcdef:xyz\"}]";
    in->topics[0] = (struct citizen_topic_in){"abfall", "email,sms"};
    in->topics[1] = (struct citizen_topic_in){"baustellen", "push"};
    in->ntopics = 2;
    in->consents[0] = (struct citizen_consent_in){"email", "form", "2026-01", NULL, NULL};
    in->consents[1] = (struct citizen_consent_in){"sms", "letter", "2026-01",
                                                  "2026-01-10T09:00:00+01:00", NULL};
    in->nconsents = 2;
}

/* one mutation per case */
#define M(name) static void name(struct citizen_in *in)
M(m_none) { (void)in; }
M(m_id_empty) { in->id = ""; }
M(m_id_null) { in->id = NULL; }
M(m_id_at) { in->id = "Zq9Canary@example.org"; }
M(m_id_long) { in->id = "a123456789a123456789a123456789a123456789a123456789a123456789abcde"; }
M(m_id_64) { in->id = "a123456789a123456789a123456789a123456789a123456789a123456789abcd"; }
M(m_id_colon) { in->id = "reg:4711.a_b-c"; }
M(m_email_bad) { in->email = "Zq9Canary@@example.org"; }
M(m_email_space) { in->email = "Zq9 Canary@example.org"; }
M(m_email_remove) { in->email = ""; }
M(m_email_absent) { in->email = NULL; in->nconsents = 0; }
M(m_phone_bad) { in->phone = "+49Zq9Canary"; }
M(m_phone_nospace) { in->phone = "+49 151 12345678"; }
M(m_phone_premium) { in->phone = "+499001234567"; }
M(m_phone_remove) { in->phone = ""; }
M(m_lang_bad) { in->lang = "Deutsch"; }
M(m_lang_ls) { in->lang = "de-x-ls"; }
M(m_lang_single) { in->lang = "de-x"; }
M(m_tz_bad) { in->tz = "Europe/Zq9Canary"; }
M(m_tz_utc) { in->tz = "UTC"; }
M(m_quiet_bad) { in->quiet = "22-07"; }
M(m_quiet_same) { in->quiet = "07:00-07:00"; }
M(m_quiet_hour) { in->quiet = "25:00-07:00"; }
M(m_push_notjson) { in->push_json = "[{Zq9Canary"; }
M(m_push_obj) { in->push_json = "{\"platform\":\"fcm\"}"; }
M(m_push_platform) { in->push_json = "[{\"platform\":\"Zq9Canary\",\"token\":\"x\"}]"; }
M(m_push_apns_bad) {
    in->push_json = "[{\"platform\":\"fcm\",\"token\":\"fcm-token_0123456789abcdef:xyz\"},"
                    "{\"platform\":\"apns\",\"token\":\"Zq9Canary\"}]";
}
M(m_push_state) {
    in->push_json = "[{\"platform\":\"fcm\",\"token\":\"fcm-token_0123456789abcdef:xyz\","
                    "\"state\":\"Zq9Canary\"}]";
}
M(m_push_unknown) {
    in->push_json = "[{\"platform\":\"fcm\",\"token\":\"fcm-token_0123456789abcdef:xyz\","
                    "\"Zq9Canary\":1}]";
}
M(m_push_dup) {
    in->push_json = "[{\"platform\":\"fcm\",\"token\":\"fcm-token_0123456789abcdef:xyz\"},"
                    "{\"platform\":\"fcm\",\"token\":\"fcm-token_0123456789abcdef:xyz\"}]";
}
M(m_push_empty) { in->push_json = "[]"; }
M(m_push_remove) { in->push_json = ""; }
M(m_topic_upper) { in->topics[1].topic = "Baustellen"; }
M(m_topic_dash_first) { in->topics[1].topic = "-x"; }
M(m_topic_all) { in->topics[1].topic = "all"; }
M(m_topic_dup) { in->topics[1].topic = "abfall"; }
M(m_topic_chan_bad) { in->topics[1].channels = "push,Zq9Canary"; }
M(m_topic_chan_dup) { in->topics[1].channels = "sms,sms"; }
M(m_topic_chan_empty) { in->topics[1].channels = ""; }
M(m_topic_chan_trailing) { in->topics[1].channels = "sms,"; }
M(m_topic_chan_null) { in->topics[1].channels = NULL; }
M(m_topic_all4) { in->topics[1].channels = "webhook,push,sms,email"; }
M(m_topics_many) { in->ntopics = CITIZEN_MAX_TOPICS + 1; }
M(m_drop_bad) { in->drop_topics[0] = "Zq9Canary"; in->ndrop = 1; }
M(m_drop_both) { in->drop_topics[0] = "abfall"; in->ndrop = 1; }
M(m_drop_dup) { in->drop_topics[0] = "x"; in->drop_topics[1] = "x"; in->ndrop = 2; }
M(m_drop_ok) { in->drop_topics[0] = "kultur"; in->ndrop = 1; }
M(m_consent_channel) { in->consents[1].channel = "fax"; }
M(m_consent_channel_dup) { in->consents[1].channel = "email"; }
M(m_consent_method) { in->consents[1].method = "phone"; }
M(m_consent_tv_empty) { in->consents[1].text_version = ""; }
M(m_consent_tv_ctrl) { in->consents[1].text_version = "2026\n01"; }
M(m_consent_tv_long) {
    in->consents[1].text_version =
        "v123456789v123456789v123456789v123456789v123456789v123456789v1234";
}
M(m_consent_tv_blank) { in->consents[1].text_version = " 2026-01"; }
M(m_consent_given_bad) { in->consents[1].given_at = "2026-01-10 09:00"; }
M(m_consent_given_future) { in->consents[1].given_at = "2999-01-01T00:00:00Z"; }
M(m_consent_confirmed_form) { in->consents[0].confirmed_at = "2026-01-10T09:00:00Z"; }
M(m_consent_import_ok) {
    in->consents[1] = (struct citizen_consent_in){"sms", "import", "alt-3",
                                                  "2025-05-01T10:00:00Z", "2025-05-01T10:05:00Z"};
}
M(m_consent_import_before) {
    in->consents[1] = (struct citizen_consent_in){"sms", "import", "alt-3",
                                                  "2025-05-01T10:00:00Z", "2025-04-01T10:05:00Z"};
}
M(m_withdraw_bad) { in->withdraw[0] = "Zq9Canary"; in->nwithdraw = 1; }
M(m_withdraw_both) { in->withdraw[0] = "sms"; in->nwithdraw = 1; }
M(m_withdraw_ok) { in->withdraw[0] = "push"; in->nwithdraw = 1; }
M(m_withdraw_dup) { in->withdraw[0] = "push"; in->withdraw[1] = "push"; in->nwithdraw = 2; }
M(m_consents_many) { in->nconsents = CITIZEN_MAX_CONSENTS + 1; }

struct vcase {
    const char *label;
    void (*mutate)(struct citizen_in *in);
    const char *want_path;      /* NULL: valid */
    const char *want_msg;       /* substring of the message */
};

static const struct vcase vcases[] = {
    {"valid base", m_none, NULL, NULL},
    {"id empty", m_id_empty, "id", "expected 1-64 characters"},
    {"id NULL", m_id_null, "id", "expected 1-64 characters"},
    {"id an address", m_id_at, "id", "A-Z a-z 0-9 . _ : -"},
    {"id 65 chars", m_id_long, "id", "expected 1-64 characters"},
    {"id 64 chars", m_id_64, NULL, NULL},
    {"id with : . _ -", m_id_colon, NULL, NULL},
    {"email two @", m_email_bad, "email", "expected an e-mail address"},
    {"email space", m_email_space, "email", "expected an e-mail address"},
    {"email removed", m_email_remove, NULL, NULL},
    {"email absent", m_email_absent, NULL, NULL},
    {"phone letters", m_phone_bad, "phone", "expected an E.164 number"},
    {"phone spaces", m_phone_nospace, "phone", "expected an E.164 number"},
    {"phone premium rate", m_phone_premium, "phone", "expected an E.164 number"},
    {"phone removed", m_phone_remove, NULL, NULL},
    {"lang word", m_lang_bad, "lang", "expected a language tag"},
    {"lang Leichte Sprache", m_lang_ls, NULL, NULL},
    {"lang single subtag last", m_lang_single, "lang", "expected a language tag"},
    {"tz unknown", m_tz_bad, "tz", "expected an IANA time zone"},
    {"tz UTC", m_tz_utc, NULL, NULL},
    {"quiet no minutes", m_quiet_bad, "quiet", "HH:MM-HH:MM"},
    {"quiet empty interval", m_quiet_same, "quiet", "different start and end"},
    {"quiet hour 25", m_quiet_hour, "quiet", "HH:MM-HH:MM"},
    {"push not JSON", m_push_notjson, "push", "expected a JSON array"},
    {"push an object", m_push_obj, "push", "expected a JSON array"},
    {"push platform", m_push_platform, "push[0].platform", "expected fcm, apns or webpush"},
    {"push bad APNs token", m_push_apns_bad, "push[1].token", "expected a apns push token"},
    {"push state", m_push_state, "push[0].state", "expected active or dead"},
    {"push unknown field", m_push_unknown, "push[0]", "unknown field"},
    {"push duplicate", m_push_dup, "push[1].token", "listed twice"},
    {"push empty list", m_push_empty, NULL, NULL},
    {"push removed", m_push_remove, NULL, NULL},
    {"topic upper case", m_topic_upper, "topics[1].topic", "a-z 0-9 _ -"},
    {"topic starts with -", m_topic_dash_first, "topics[1].topic", "a-z 0-9 _ -"},
    {"topic all reserved", m_topic_all, "topics[1].topic", "reserved"},
    {"topic twice", m_topic_dup, "topics[1].topic", "topic given twice"},
    {"topic channel unknown", m_topic_chan_bad, "topics[1].channels",
     "expected distinct channels"},
    {"topic channel twice", m_topic_chan_dup, "topics[1].channels", "expected distinct"},
    {"topic channels empty", m_topic_chan_empty, "topics[1].channels", "expected distinct"},
    {"topic channels trailing comma", m_topic_chan_trailing, "topics[1].channels",
     "expected distinct"},
    {"topic channels NULL", m_topic_chan_null, "topics[1].channels", "expected distinct"},
    {"topic all four channels", m_topic_all4, NULL, NULL},
    {"too many topics", m_topics_many, "topics", "at most 64 topics"},
    {"drop bad name", m_drop_bad, "drop_topics[0]", "a-z 0-9 _ -"},
    {"drop and subscribe", m_drop_both, "topics[0].topic", "both subscribed and dropped"},
    {"drop twice", m_drop_dup, "drop_topics[1]", "topic given twice"},
    {"drop ok", m_drop_ok, NULL, NULL},
    {"consent channel", m_consent_channel, "consents[1].channel",
     "expected email, sms, push or webhook"},
    {"consent channel twice", m_consent_channel_dup, "consents[1].channel",
     "channel given twice"},
    {"consent method", m_consent_method, "consents[1].method",
     "expected form, letter, counter or import"},
    {"consent text version empty", m_consent_tv_empty, "consents[1].text_version",
     "1-64 printable"},
    {"consent text version newline", m_consent_tv_ctrl, "consents[1].text_version",
     "1-64 printable"},
    {"consent text version 65", m_consent_tv_long, "consents[1].text_version",
     "1-64 printable"},
    {"consent text version blank", m_consent_tv_blank, "consents[1].text_version",
     "1-64 printable"},
    {"consent given_at malformed", m_consent_given_bad, "consents[1].given_at",
     "expected an RFC 3339 time"},
    {"consent given_at future", m_consent_given_future, "consents[1].given_at",
     "not in the future"},
    {"confirmed_at with form", m_consent_confirmed_form, "consents[0].confirmed_at",
     "only for method import"},
    {"import with confirmed_at", m_consent_import_ok, NULL, NULL},
    {"import confirmed before given", m_consent_import_before, "consents[1].confirmed_at",
     "earlier than given_at"},
    {"withdraw unknown channel", m_withdraw_bad, "withdraw[0]",
     "expected email, sms, push or webhook"},
    {"withdraw and give", m_withdraw_both, "consents[1].channel",
     "both given and withdrawn"},
    {"withdraw ok", m_withdraw_ok, NULL, NULL},
    {"withdraw twice", m_withdraw_dup, "withdraw[1]", "channel given twice"},
    {"too many consents", m_consents_many, "consents", "at most 8 consents"},
};

static void test_validate_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof vcases / sizeof vcases[0]; i++) {
        const struct vcase *c = &vcases[i];
        struct citizen_in in;
        struct herr err;
        int rc;

        base_in(&in);
        c->mutate(&in);
        memset(&err, 0x5a, sizeof err);
        rc = citizen_validate(&in, &err);
        if (c->want_path == NULL) {
            if (rc != 0)
                fail_msg("%s: refused: %s: %s", c->label, err.path, err.msg);
            continue;
        }
        if (rc != -1)
            fail_msg("%s: accepted, want %s", c->label, c->want_path);
        if (err.kind != HERR_INPUT)
            fail_msg("%s: kind %d, want HERR_INPUT", c->label, (int)err.kind);
        if (strcmp(err.path, c->want_path) != 0)
            fail_msg("%s: path \"%s\", want \"%s\"", c->label, err.path, c->want_path);
        if (strstr(err.msg, c->want_msg) == NULL)
            fail_msg("%s: message \"%s\" lacks \"%s\"", c->label, err.msg, c->want_msg);
        if (strstr(err.msg, CANARY) != NULL || strstr(err.path, CANARY) != NULL)
            fail_msg("%s: the value leaked into the error: %s", c->label, err.msg);
    }
}

static void test_syntax(void **state)
{
    (void)state;
    assert_true(citizen_id_ok("a"));
    assert_false(citizen_id_ok("a b"));
    assert_false(citizen_id_ok("+4915112345678"));
    assert_false(citizen_id_ok("\xc3\xa4"));
    assert_true(citizen_topic_ok("abfall"));
    assert_true(citizen_topic_ok("0-9_x"));
    assert_false(citizen_topic_ok("_x"));
    assert_false(citizen_topic_ok(""));
    assert_false(citizen_topic_ok("a.b"));
    assert_false(citizen_topic_ok(
        "a123456789a123456789a123456789a123456789a123456789a123456789abcde"));
    assert_true(citizen_channel_ok("webhook"));
    assert_false(citizen_channel_ok("mastodon"));
    assert_false(citizen_channel_ok(NULL));
}

/* values from Python: hmac.new(key, id + b"\0" + topic, sha256).hexdigest()[:24] */
static void test_unsubscribe_mac(void **state)
{
    static const struct {
        const char *key, *id, *topic, *want;
    } cases[] = {
        {"0123456789abcdef0123", "b-1", "abfall", "979ea5f2ac861ce776c24891"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[25];
        citizen_unsubscribe_mac((const unsigned char *)cases[i].key, strlen(cases[i].key),
                                cases[i].id, cases[i].topic, out);
        assert_string_equal(out, cases[i].want);
    }
}

/* the MAC separates id and topic: "a" + "bc" differs from "ab" + "c" */
static void test_unsubscribe_mac_separates(void **state)
{
    char a[25], b[25];
    (void)state;
    citizen_unsubscribe_mac((const unsigned char *)"k", 1, "a", "bc", a);
    citizen_unsubscribe_mac((const unsigned char *)"k", 1, "ab", "c", b);
    assert_string_not_equal(a, b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate_table),
        cmocka_unit_test(test_syntax),
        cmocka_unit_test(test_unsubscribe_mac),
        cmocka_unit_test(test_unsubscribe_mac_separates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
