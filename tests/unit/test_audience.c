/*
 * test_audience - the per-citizen resolution (docs/citizens.md steps 1-3):
 * choice per topic, consent states, contact points and their state.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "dispatcher/audience.h"

#define CONFIRMED "{\"state\":\"confirmed\",\"method\":\"letter\",\"text_version\":\"v1\"}"
#define PENDING "{\"state\":\"pending\",\"method\":\"form\",\"text_version\":\"v1\"}"
#define WITHDRAWN "{\"state\":\"withdrawn\",\"method\":\"form\",\"text_version\":\"v1\"}"

/* A job over channels email, sms, webhook with the given choice topics. */
static void job3(struct aud_job *aj, const char *const *topics, size_t ntopics)
{
    memset(aj, 0, sizeof *aj);
    aj->nch = 3;
    aj->ch[0] = "email";
    aj->contact[0] = AUD_BY_EMAIL;
    aj->ch[1] = "sms";
    aj->contact[1] = AUD_BY_PHONE;
    aj->sms[1] = true;
    aj->ch[2] = "webhook";
    aj->contact[2] = AUD_BY_ID;
    for (size_t i = 0; i < ntopics; i++)
        aj->topics[i] = topics[i];
    aj->ntopics = ntopics;
}

/* kv - a record from NULL-terminated key, value pairs. */
static size_t kv(struct aud_kv *out, const char *const *pairs)
{
    size_t n = 0;

    for (; pairs[2 * n] != NULL; n++) {
        out[n].k = pairs[2 * n];
        out[n].klen = strlen(pairs[2 * n]);
        out[n].v = pairs[2 * n + 1];
        out[n].vlen = strlen(pairs[2 * n + 1]);
    }
    return n;
}

static void test_choice_and_consent(void **state)
{
    static const char *const topics[] = {"abfall"};
    static const char *const rec[] = {
        "email", "a@example.org", "phone", "+4915112345678",
        "topic:abfall", "email,webhook", "topic:kultur", "sms",
        "consent:email", CONFIRMED, "consent:webhook", PENDING, "consent:sms", CONFIRMED,
        NULL};
    struct aud_job aj;
    struct aud_kv f[32];
    struct aud_result r;
    size_t n = kv(f, rec);

    (void)state;
    job3(&aj, topics, 1);
    assert_int_equal(aud_resolve(&aj, f, n, -1, &r), 2);
    assert_int_equal(r.verdict[0], AUD_DELIVER);
    assert_int_equal(r.verdict[1], AUD_NONE);         /* sms chosen only for kultur */
    assert_int_equal(r.verdict[2], AUD_SUPPRESS);
    assert_string_equal(r.reason[2], "consent pending");

    /* no topic restriction: the union of all choices */
    job3(&aj, NULL, 0);
    assert_int_equal(aud_resolve(&aj, f, n, -1, &r), 3);
    assert_int_equal(r.verdict[1], AUD_DELIVER);

    /* one channel only (a unit taken from the later set) */
    assert_int_equal(aud_resolve(&aj, f, n, 0, &r), 1);
    assert_int_equal(r.verdict[0], AUD_DELIVER);
    assert_int_equal(r.verdict[1], AUD_NONE);
}

static void test_consent_states(void **state)
{
    static const char *const rec[] = {
        "email", "a@example.org", "phone", "+4915112345678", "topic:t", "email,sms,webhook",
        "consent:email", WITHDRAWN, "consent:sms", "{not json", NULL};
    struct aud_job aj;
    struct aud_kv f[16];
    struct aud_result r;

    (void)state;
    job3(&aj, NULL, 0);
    aud_resolve(&aj, f, kv(f, rec), -1, &r);
    assert_string_equal(r.reason[0], "consent withdrawn");
    assert_string_equal(r.reason[1], "no consent");   /* unreadable counts as none */
    assert_string_equal(r.reason[2], "no consent");
}

static void test_contact_points(void **state)
{
    static const char *const bounced[] = {
        "email", "a@example.org", "email_state", "bounced", "phone", "+493012345678",
        "topic:t", "email,sms", "consent:email", CONFIRMED, "consent:sms", CONFIRMED, NULL};
    static const char *const invalid[] = {
        "email", "no-tld@example", "phone", "+49900123456", "topic:t", "email,sms",
        "consent:email", CONFIRMED, "consent:sms", CONFIRMED, NULL};
    static const char *const missing[] = {
        "topic:t", "email,sms,webhook", "consent:email", CONFIRMED, "consent:sms", CONFIRMED,
        "consent:webhook", CONFIRMED, NULL};
    struct aud_job aj;
    struct aud_kv f[16];
    struct aud_result r;

    (void)state;
    job3(&aj, NULL, 0);
    aud_resolve(&aj, f, kv(f, bounced), -1, &r);
    assert_string_equal(r.reason[0], "address bounced before");
    assert_string_equal(r.reason[1], "landline cannot receive SMS");
    aud_resolve(&aj, f, kv(f, invalid), -1, &r);
    assert_string_equal(r.reason[0], "invalid contact point");
    assert_string_equal(r.reason[1], "invalid contact point");   /* premium rate */
    aud_resolve(&aj, f, kv(f, missing), -1, &r);
    assert_string_equal(r.reason[0], "no contact point for channel");
    assert_string_equal(r.reason[1], "no contact point for channel");
    assert_int_equal(r.verdict[2], AUD_DELIVER);    /* webhook needs only the id */
}

static void test_erased_record(void **state)
{
    struct aud_job aj;
    struct aud_result r;

    (void)state;
    job3(&aj, NULL, 0);
    assert_int_equal(aud_resolve(&aj, NULL, 0, -1, &r), 0);
    for (size_t c = 0; c < 3; c++)
        assert_int_equal(r.verdict[c], AUD_NONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_choice_and_consent),
        cmocka_unit_test(test_consent_states),
        cmocka_unit_test(test_contact_points),
        cmocka_unit_test(test_erased_record),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
