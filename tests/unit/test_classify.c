/*
 * test_classify - channel_classify_http from a table: transport outcome
 * in, delivery status, in_doubt, retry hint and operator reason out.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "channels/channel.h"

#define T DELIVERY_TRANSIENT
#define P DELIVERY_PERMANENT
#define OK DELIVERY_OK

struct classify_case {
    const char *label;
    enum transport_kind kind;
    int code;
    long retry_after_ms;
    bool sent;
    const char *detail;
    enum delivery_status want_status;
    bool want_in_doubt;
    long want_retry;
    const char *want_reason;
};

static const struct classify_case classify_cases[] = {
    {"200", TRANSPORT_DONE, 200, -1, true, "", OK, false, -1, "http 200"},
    {"204", TRANSPORT_DONE, 204, -1, true, "", OK, false, -1, "http 204"},
    {"299", TRANSPORT_DONE, 299, -1, true, "", OK, false, -1, "http 299"},
    {"429 with hint", TRANSPORT_DONE, 429, 7000, true, "", T, false, 7000, "http 429"},
    {"429 no hint", TRANSPORT_DONE, 429, -1, true, "", T, false, -1, "http 429"},
    {"408", TRANSPORT_DONE, 408, -1, true, "", T, false, -1, "http 408"},
    {"425", TRANSPORT_DONE, 425, -1, true, "", T, false, -1, "http 425"},
    {"400", TRANSPORT_DONE, 400, -1, true, "", P, false, -1, "http 400"},
    {"401", TRANSPORT_DONE, 401, -1, true, "", P, false, -1, "http 401"},
    {"404", TRANSPORT_DONE, 404, 5000, true, "", P, false, -1, "http 404"},
    {"410", TRANSPORT_DONE, 410, -1, true, "", P, false, -1, "http 410"},
    {"500", TRANSPORT_DONE, 500, -1, true, "", T, false, -1, "http 500"},
    {"502 proxy", TRANSPORT_DONE, 502, -1, true, "", T, true, -1, "http 502"},
    {"503 with hint", TRANSPORT_DONE, 503, 7000, true, "", T, false, 7000, "http 503"},
    {"504 proxy", TRANSPORT_DONE, 504, -1, true, "", T, true, -1, "http 504"},
    {"599", TRANSPORT_DONE, 599, -1, true, "", T, false, -1, "http 599"},
    {"301", TRANSPORT_DONE, 301, -1, true, "", P, false, -1, "http 301 unexpected redirect"},
    {"307", TRANSPORT_DONE, 307, -1, true, "", P, false, -1, "http 307 unexpected redirect"},
    {"101", TRANSPORT_DONE, 101, -1, true, "", P, false, -1,
     "http 101 unexpected informational reply"},
    {"600", TRANSPORT_DONE, 600, -1, true, "", T, true, -1, "http 600 invalid status"},
    {"timeout sent", TRANSPORT_TIMEOUT, 0, -1, true, "timeout", T, true, -1,
     "timeout after request sent"},
    {"timeout not sent", TRANSPORT_TIMEOUT, 0, -1, false, "timeout", T, false, -1,
     "timeout before request sent"},
    {"connect", TRANSPORT_CONNECT, 0, -1, false, "Couldn't connect to server", T, false, -1,
     "connect: Couldn't connect to server"},
    {"tls verify", TRANSPORT_TLS, 0, -1, false, "certificate verify failed", T, false, -1,
     "tls: certificate verify failed"},
    {"protocol sent", TRANSPORT_PROTOCOL, 200, -1, true, "reply too large", T, true, -1,
     "protocol: reply too large"},
    {"protocol not sent", TRANSPORT_PROTOCOL, 0, -1, false, "", T, false, -1, "protocol"},
    {"aborted sent", TRANSPORT_ABORTED, 0, -1, true, "aborted", T, true, -1,
     "aborted after request sent"},
    {"aborted not sent", TRANSPORT_ABORTED, 0, -1, false, "aborted", T, false, -1,
     "aborted before request sent"},
    {"local", TRANSPORT_LOCAL, 0, -1, false, "out of memory", T, false, -1,
     "local: out of memory"},
};

/* test_classify_table - every row of classify_cases. */
static void test_classify_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof classify_cases / sizeof classify_cases[0]; i++) {
        const struct classify_case *c = &classify_cases[i];
        struct transport_outcome t;
        struct delivery_result r;

        memset(&t, 0, sizeof t);
        t.kind = c->kind;
        t.code = c->code;
        t.retry_after_ms = c->retry_after_ms;
        t.request_sent = c->sent;
        snprintf(t.detail, sizeof t.detail, "%s", c->detail);
        memset(&r, 0x5a, sizeof r);   /* classify must set every field */
        channel_classify_http(&t, &r);
        if (r.status != c->want_status || r.in_doubt != c->want_in_doubt ||
            r.retry_after_ms != c->want_retry || r.provider_code != c->code ||
            strcmp(r.reason, c->want_reason) != 0)
            fail_msg("case %s: got status=%d in_doubt=%d retry=%ld code=%d reason=\"%s\"; "
                     "want status=%d in_doubt=%d retry=%ld code=%d reason=\"%s\"",
                     c->label, (int)r.status, (int)r.in_doubt, r.retry_after_ms,
                     r.provider_code, r.reason, (int)c->want_status,
                     (int)c->want_in_doubt, c->want_retry, c->code, c->want_reason);
    }
}

/* test_classify_never_quotes_body - the reply body never reaches reason. */
static void test_classify_never_quotes_body(void **state)
{
    static const char body[] = "{\"error\":\"user alice@example.org unknown\"}";
    static const int codes[] = {200, 400, 429, 500, 503};
    struct transport_outcome t;
    struct delivery_result r;

    (void)state;
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        memset(&t, 0, sizeof t);
        t.kind = TRANSPORT_DONE;
        t.code = codes[i];
        t.retry_after_ms = -1;
        t.body = body;
        t.body_len = sizeof body - 1;
        channel_classify_http(&t, &r);
        assert_null(strstr(r.reason, "alice"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify_table),
        cmocka_unit_test(test_classify_never_quotes_body),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
