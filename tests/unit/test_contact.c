/*
 * test_contact - dispatcher/contact from tables: e-mail addresses (length
 * limits at and past the edge, IDN in UTF-8 and in xn-- form, dots,
 * labels, TLDs, quoting, spaces and control characters), E.164 phone
 * numbers (German mobile, landline, premium-rate and service ranges, the
 * trunk 0, national and spaced forms, foreign numbers), and push tokens
 * of the three platforms.  Each refusal is checked by its exact reason.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dispatcher/contact.h"

/* A text built as head + rep * times + tail, so tables can hold long ones. */
struct text_spec {
    const char *head;
    const char *rep;
    size_t times;
    const char *tail;
};

/* text_new - the text of spec, or NULL for a NULL head; free with free(). */
static char *text_new(const struct text_spec *spec)
{
    size_t hl, rl, tl, i;
    char *s, *p;

    if (spec->head == NULL)
        return NULL;
    hl = strlen(spec->head);
    rl = spec->rep ? strlen(spec->rep) : 0;
    tl = spec->tail ? strlen(spec->tail) : 0;
    s = malloc(hl + rl * spec->times + tl + 1);
    assert_non_null(s);
    p = s;
    memcpy(p, spec->head, hl);
    p += hl;
    for (i = 0; i < spec->times; i++) {
        memcpy(p, spec->rep, rl);
        p += rl;
    }
    if (tl > 0)
        memcpy(p, spec->tail, tl);
    p[tl] = '\0';
    return s;
}

/* check - one verdict against the wanted one; want_why NULL: accepted. */
static void check(const char *label, bool ok, const char *why, const char *want_why)
{
    if (want_why == NULL && !ok)
        fail_msg("%s: refused (%s), want accepted", label, why);
    if (want_why != NULL && ok)
        fail_msg("%s: accepted, want \"%s\"", label, want_why);
    if (want_why != NULL && (why == NULL || strcmp(why, want_why) != 0))
        fail_msg("%s: reason \"%s\", want \"%s\"", label, why ? why : "(null)", want_why);
}

/* ---- e-mail ------------------------------------------------------------- */

#define TOO_LONG "e-mail address longer than 254 characters"
#define NO_TLD "the domain has no top-level domain"
#define NOT_ALPHA "the top-level domain is not alphabetic"
#define IDN "the domain is not ASCII; write an internationalized domain in its xn-- (punycode) form"
#define EMPTY_LABEL "the domain has an empty label (leading, trailing or double dot)"
#define LOCAL_DOT "the part before @ may not begin or end with a dot"
#define LOCAL_CHAR "the part before @ has a character not allowed there"
#define SPACE "e-mail address contains a space or control character"
#define HYPHEN "a domain label begins or ends with '-'"
#define L10 "aaaaaaaaaa"
#define L63 L10 L10 L10 L10 L10 L10 "aaa"
#define L58 L10 L10 L10 L10 L10 "aaaaaaaa"

struct email_case {
    const char *label;
    struct text_spec addr;
    const char *want_why;      /* NULL: accepted */
};

static const struct email_case email_cases[] = {
    {"plain", {"anna.schmidt@example.de", NULL, 0, NULL}, NULL},
    {"shortest", {"a@b.de", NULL, 0, NULL}, NULL},
    {"plus and hyphen", {"info+abfuhr@stadt-musterhausen.de", NULL, 0, NULL}, NULL},
    {"every atext character", {"x_y-z!#$%&'*+/=?^`{|}~@example.org", NULL, 0, NULL}, NULL},
    {"subdomains", {"user@mail.rathaus.example.com", NULL, 0, NULL}, NULL},
    {"upper case", {"Anna@Example.DE", NULL, 0, NULL}, NULL},
    {"digits in labels", {"a1@123.example.de", NULL, 0, NULL}, NULL},
    {"IDN domain as A-label", {"anna@xn--mnchen-3ya.de", NULL, 0, NULL}, NULL},
    {"IDN TLD as A-label", {"anna@example.xn--p1ai", NULL, 0, NULL}, NULL},
    {"local part of 64", {"", "a", 64, "@example.de"}, NULL},
    {"label of 63", {"a@", "b", 63, ".de"}, NULL},
    /* 64 + 1 + 63 + 1 + 63 + 1 + 58 + 3 = 254 */
    {"254 characters", {"", "a", 64, "@" L63 "." L63 "." L58 ".de"}, NULL},
    {"255 characters", {"", "a", 64, "@" L63 "." L63 "." L58 "a.de"}, TOO_LONG},
    {"300 characters", {"", "a", 288, "@example.de"}, TOO_LONG},
    {"missing", {NULL, NULL, 0, NULL}, "missing e-mail address"},
    {"empty", {"", NULL, 0, NULL}, "missing e-mail address"},
    {"no TLD", {"anna.schmidt@example", NULL, 0, NULL}, NO_TLD},
    {"localhost", {"root@localhost", NULL, 0, NULL}, NO_TLD},
    {"numeric domain", {"anna@123", NULL, 0, NULL}, NO_TLD},
    {"all-numeric TLD", {"anna@example.123", NULL, 0, NULL}, NOT_ALPHA},
    {"IPv4 address as domain", {"anna@192.0.2.1", NULL, 0, NULL}, NOT_ALPHA},
    {"TLD with a digit", {"anna@example.d3", NULL, 0, NULL}, NOT_ALPHA},
    {"TLD with a hyphen", {"anna@example.d-e", NULL, 0, NULL}, NOT_ALPHA},
    {"one-letter TLD", {"anna@example.d", NULL, 0, NULL}, "the top-level domain is a single letter"},
    {"IDN in UTF-8", {"anna@m\xc3\xbcnchen.de", NULL, 0, NULL}, IDN},
    {"IDN TLD in UTF-8", {"anna@example.\xd1\x80\xd1\x84", NULL, 0, NULL}, IDN},
    {"UTF-8 local part", {"m\xc3\xbcller@example.de", NULL, 0, NULL}, "the part before @ must be ASCII"},
    {"two dots in the local part", {"anna..schmidt@example.de", NULL, 0, NULL},
     "the part before @ has two dots in a row"},
    {"leading dot", {".anna@example.de", NULL, 0, NULL}, LOCAL_DOT},
    {"trailing dot", {"anna.@example.de", NULL, 0, NULL}, LOCAL_DOT},
    {"only a dot", {".@example.de", NULL, 0, NULL}, LOCAL_DOT},
    {"two dots in the domain", {"anna@example..de", NULL, 0, NULL}, EMPTY_LABEL},
    {"domain with a leading dot", {"anna@.example.de", NULL, 0, NULL}, EMPTY_LABEL},
    {"domain with a trailing dot", {"anna@example.de.", NULL, 0, NULL}, EMPTY_LABEL},
    {"label of 64", {"a@", "b", 64, ".de"}, "a domain label is longer than 63 characters"},
    {"local part of 65", {"", "a", 65, "@example.de"},
     "the part before @ is longer than 64 characters"},
    {"label starts with -", {"anna@-example.de", NULL, 0, NULL}, HYPHEN},
    {"label ends with -", {"anna@example-.de", NULL, 0, NULL}, HYPHEN},
    {"TLD ends with -", {"anna@example.de-", NULL, 0, NULL}, HYPHEN},
    {"underscore in the domain", {"anna@exa_mple.de", NULL, 0, NULL},
     "the domain has a character other than letters, digits, '-' and '.'"},
    {"no @", {"anna.example.de", NULL, 0, NULL}, "e-mail address without @"},
    {"two @", {"anna@b@example.de", NULL, 0, NULL}, "e-mail address with more than one @"},
    {"nothing before @", {"@example.de", NULL, 0, NULL}, "the part before @ is empty"},
    {"nothing after @", {"anna@", NULL, 0, NULL}, "the domain is empty"},
    {"quoted local part", {"\"anna\"@example.de", NULL, 0, NULL}, "quoted local parts are not supported"},
    {"quoted with @", {"\"a@b\"@example.de", NULL, 0, NULL}, "e-mail address with more than one @"},
    {"address literal", {"anna@[192.0.2.1]", NULL, 0, NULL}, "address literals are not supported"},
    {"comment", {"anna(x)@example.de", NULL, 0, NULL}, LOCAL_CHAR},
    {"comma", {"anna,bert@example.de", NULL, 0, NULL}, LOCAL_CHAR},
    {"display name form", {"Anna <anna@example.de>", NULL, 0, NULL}, SPACE},
    {"angle brackets", {"<anna@example.de>", NULL, 0, NULL}, LOCAL_CHAR},
    {"space", {"anna schmidt@example.de", NULL, 0, NULL}, SPACE},
    {"trailing space", {"anna@example.de ", NULL, 0, NULL}, SPACE},
    {"tab", {"anna\t@example.de", NULL, 0, NULL}, SPACE},
    {"CR LF", {"anna@example.de\r\nBcc: x@example.de", NULL, 0, NULL}, SPACE},
    {"DEL", {"anna@example.de\x7f", NULL, 0, NULL}, SPACE},
};

static void test_email_table(void **state)
{
    size_t k;

    (void)state;
    for (k = 0; k < sizeof email_cases / sizeof email_cases[0]; k++) {
        const struct email_case *c = &email_cases[k];
        char *addr = text_new(&c->addr);
        const char *why = NULL;
        bool ok = contact_email_ok(addr, &why);

        if (addr != NULL && strcmp(c->label, "254 characters") == 0)
            assert_int_equal(strlen(addr), 254);
        if (addr != NULL && strcmp(c->label, "255 characters") == 0)
            assert_int_equal(strlen(addr), 255);
        check(c->label, ok, why, c->want_why);
        /* why may be NULL. */
        assert_int_equal(contact_email_ok(addr, NULL), ok);
        free(addr);
    }
}

/* ---- phone -------------------------------------------------------------- */

#define PREMIUM "premium-rate or service number"
#define NOT_INTL "phone number not in international form: + and country code (E.164)"
#define SEPARATOR "phone number with a character other than digits after the + (no spaces or separators)"
#define DIGITS "phone number must have 8 to 15 digits (E.164)"

struct phone_case {
    const char *label;
    const char *number;
    enum phone_kind want_kind;
    const char *want_why;      /* NULL: accepted */
};

static const struct phone_case phone_cases[] = {
    {"mobile 0151", "+4915112345678", PHONE_MOBILE, NULL},
    {"mobile 0160", "+491601234567", PHONE_MOBILE, NULL},
    {"mobile 0170", "+491701234567", PHONE_MOBILE, NULL},
    {"mobile 0179", "+4917912345678", PHONE_MOBILE, NULL},
    {"Berlin landline", "+4930123456", PHONE_LANDLINE, NULL},
    {"Berlin landline, long", "+49301234567890", PHONE_LANDLINE, NULL},
    {"Munich landline", "+49891234567", PHONE_LANDLINE, NULL},
    {"small town landline", "+49355512345", PHONE_LANDLINE, NULL},
    {"shortest German", "+49301234", PHONE_LANDLINE, NULL},
    {"freephone is no mobile", "+49800123456", PHONE_LANDLINE, NULL},
    {"14x is no mobile", "+491401234567", PHONE_LANDLINE, NULL},
    {"Austria", "+436641234567", PHONE_UNKNOWN, NULL},
    {"United Kingdom", "+447911123456", PHONE_UNKNOWN, NULL},
    {"USA", "+12125550123", PHONE_UNKNOWN, NULL},
    {"+4 is not +49", "+4812345678", PHONE_UNKNOWN, NULL},
    {"8 digits", "+12345678", PHONE_UNKNOWN, NULL},
    {"15 digits", "+123456789012345", PHONE_UNKNOWN, NULL},
    {"premium 0900", "+4990012345678", PHONE_UNKNOWN, PREMIUM},
    {"premium 0900, short", "+499001234", PHONE_UNKNOWN, PREMIUM},
    {"mass calls 0137", "+491371234567", PHONE_UNKNOWN, PREMIUM},
    {"shared cost 0180", "+491801234567", PHONE_UNKNOWN, PREMIUM},
    {"directory 118xx", "+4911880123", PHONE_UNKNOWN, PREMIUM},
    {"social services 116", "+49116116", PHONE_UNKNOWN, PREMIUM},
    {"premium with spaces", "+49 900 1234567", PHONE_UNKNOWN, SEPARATOR},
    {"national 0151", "015112345678", PHONE_UNKNOWN, NOT_INTL},
    {"national with spaces", "0151 12345678", PHONE_UNKNOWN, NOT_INTL},
    {"0049", "004915112345678", PHONE_UNKNOWN, NOT_INTL},
    {"spaces", "+49 151 12345678", PHONE_UNKNOWN, SEPARATOR},
    {"hyphens", "+49-151-12345678", PHONE_UNKNOWN, SEPARATOR},
    {"slash", "+49151/12345678", PHONE_UNKNOWN, SEPARATOR},
    {"(0)", "+49(0)15112345678", PHONE_UNKNOWN, SEPARATOR},
    {"two +", "++4915112345678", PHONE_UNKNOWN, SEPARATOR},
    {"trailing newline", "+4915112345678\n", PHONE_UNKNOWN, SEPARATOR},
    {"fullwidth digits", "+\xef\xbc\x94\xef\xbc\x99", PHONE_UNKNOWN, SEPARATOR},
    {"trunk 0 after +49", "+49015112345678", PHONE_UNKNOWN,
     "German number with the trunk 0 after +49; drop the 0"},
    {"country code 0", "+0123456789", PHONE_UNKNOWN, "country codes do not begin with 0"},
    {"7 digits", "+1234567", PHONE_UNKNOWN, DIGITS},
    {"16 digits", "+1234567890123456", PHONE_UNKNOWN, DIGITS},
    {"German, 16 digits", "+4915112345678901", PHONE_UNKNOWN, DIGITS},
    {"German, 5 after +49", "+4930123", PHONE_UNKNOWN, DIGITS},
    {"only +", "+", PHONE_UNKNOWN, DIGITS},
    {"empty", "", PHONE_UNKNOWN, "missing phone number"},
    {"missing", NULL, PHONE_UNKNOWN, "missing phone number"},
};

static void test_phone_table(void **state)
{
    size_t k;

    (void)state;
    for (k = 0; k < sizeof phone_cases / sizeof phone_cases[0]; k++) {
        const struct phone_case *c = &phone_cases[k];
        enum phone_kind kind = (enum phone_kind)-1;
        const char *why = NULL;
        bool ok = contact_phone_ok(c->number, &kind, &why);

        check(c->label, ok, why, c->want_why);
        if (ok && kind != c->want_kind)
            fail_msg("%s: kind %d, want %d", c->label, kind, c->want_kind);
        if (!ok && kind != (enum phone_kind)-1)
            fail_msg("%s: kind written on refusal", c->label);
        /* kind and why may be NULL. */
        assert_int_equal(contact_phone_ok(c->number, NULL, NULL), ok);
    }
}

/* ---- push tokens ----------------------------------------------------------- */

#define HEX16 "0123456789abcdef"
#define APNS "an APNs token is 64 hexadecimal digits"
#define FCM_CHARS "an FCM token has only letters, digits, '_', ':' and '-'"
#define WP "a Web Push token is an https:// endpoint URL"
#define WP_HOST "the Web Push endpoint has a bad host name"
#define WP_PORT "the Web Push endpoint has a bad port"
#define WP_PATH "the Web Push endpoint needs a path after the host"
#define WP_CHAR "the Web Push endpoint has a character not allowed in a URL"

struct push_case {
    const char *label;
    const char *platform;
    struct text_spec token;
    const char *want_why;      /* NULL: accepted */
};

static const struct push_case push_cases[] = {
    {"APNs", "apns", {"", HEX16, 4, NULL}, NULL},
    {"APNs upper case", "apns", {"", "0123456789ABCDEF", 4, NULL}, NULL},
    {"APNs 63", "apns", {"", HEX16, 3, "0123456789abcde"}, APNS},
    {"APNs 65", "apns", {"", HEX16, 4, "0"}, APNS},
    {"APNs not hex", "apns", {"", HEX16, 3, "0123456789abcdeg"}, APNS},
    {"APNs with spaces", "apns", {"", "0123 567 9abcdef", 4, NULL}, APNS},
    {"FCM", "fcm", {"dQw4w9WgXcQ:APA91bH-", "abcXYZ_0189-", 12, NULL}, NULL},
    {"FCM 20", "fcm", {"abcdefghij0123456789", NULL, 0, NULL}, NULL},
    {"FCM 19", "fcm", {"abcdefghij012345678", NULL, 0, NULL}, "an FCM token has at least 20 characters"},
    {"FCM 4096", "fcm", {"", "a", 4096, NULL}, NULL},
    {"FCM 4097", "fcm", {"", "a", 4097, NULL}, "push token longer than 4096 characters"},
    {"FCM with a dot", "fcm", {"abcdefghij.0123456789", NULL, 0, NULL}, FCM_CHARS},
    {"FCM with a space", "fcm", {"abcdefghij 0123456789", NULL, 0, NULL}, FCM_CHARS},
    {"FCM with a newline", "fcm", {"abcdefghij0123456789\n", NULL, 0, NULL}, FCM_CHARS},
    {"Web Push, FCM", "webpush", {"https://fcm.googleapis.com/fcm/send/dQw4w9WgXcQ:APA91bH", NULL, 0, NULL}, NULL},
    {"Web Push, Mozilla", "webpush",
     {"https://updates.push.services.mozilla.com/wpush/v2/gAAAAABm-x_Y=", NULL, 0, NULL}, NULL},
    {"Web Push with a port", "webpush", {"https://push.example.org:8443/p/1", NULL, 0, NULL}, NULL},
    {"Web Push with a query", "webpush", {"https://push.example.org/p?id=1&k=2", NULL, 0, NULL}, NULL},
    {"Web Push 4097", "webpush", {"https://push.example.org/", "a", 4072, NULL},
     "push token longer than 4096 characters"},
    {"http", "webpush", {"http://push.example.org/p/1", NULL, 0, NULL}, WP},
    {"scheme in upper case", "webpush", {"HTTPS://push.example.org/p/1", NULL, 0, NULL}, WP},
    {"not a URL", "webpush", {"dQw4w9WgXcQ:APA91bH", NULL, 0, NULL}, WP},
    {"scheme only", "webpush", {"https://", NULL, 0, NULL}, WP},
    {"no host", "webpush", {"https:///p/1", NULL, 0, NULL}, WP_HOST},
    {"double dot in host", "webpush", {"https://push..example.org/p/1", NULL, 0, NULL}, WP_HOST},
    {"host ends with a dot", "webpush", {"https://push.example.org./p/1", NULL, 0, NULL}, WP_HOST},
    {"user info", "webpush", {"https://user@push.example.org/p/1", NULL, 0, NULL},
     "the Web Push endpoint may not contain user information"},
    {"no path", "webpush", {"https://push.example.org", NULL, 0, NULL}, WP_PATH},
    {"port 0", "webpush", {"https://push.example.org:0/p", NULL, 0, NULL}, WP_PORT},
    {"port 65536", "webpush", {"https://push.example.org:65536/p", NULL, 0, NULL}, WP_PORT},
    {"empty port", "webpush", {"https://push.example.org:/p", NULL, 0, NULL}, WP_PORT},
    {"space in the path", "webpush", {"https://push.example.org/p 1", NULL, 0, NULL}, WP_CHAR},
    {"fragment", "webpush", {"https://push.example.org/p#1", NULL, 0, NULL}, WP_CHAR},
    {"quote", "webpush", {"https://push.example.org/p\"1", NULL, 0, NULL}, WP_CHAR},
    {"non-ASCII", "webpush", {"https://push.example.org/p\xc3\xbc", NULL, 0, NULL}, WP_CHAR},
    {"empty token", "fcm", {"", NULL, 0, NULL}, "missing push token"},
    {"missing token", "apns", {NULL, NULL, 0, NULL}, "missing push token"},
    {"unknown platform", "gcm", {"abcdefghij0123456789", NULL, 0, NULL},
     "unknown push platform (fcm, apns or webpush)"},
    {"platform in upper case", "FCM", {"abcdefghij0123456789", NULL, 0, NULL},
     "unknown push platform (fcm, apns or webpush)"},
    {"missing platform", NULL, {"abcdefghij0123456789", NULL, 0, NULL}, "missing push platform"},
};

static void test_push_table(void **state)
{
    size_t k;

    (void)state;
    for (k = 0; k < sizeof push_cases / sizeof push_cases[0]; k++) {
        const struct push_case *c = &push_cases[k];
        char *token = text_new(&c->token);
        const char *why = NULL;
        bool ok = contact_push_ok(c->platform, token, &why);

        check(c->label, ok, why, c->want_why);
        assert_int_equal(contact_push_ok(c->platform, token, NULL), ok);
        free(token);
    }
}

/* No reason quotes the value: none contains a distinctive part of it. */
static void test_reasons_never_quote(void **state)
{
    static const char *const emails[] = {
        "geheim.person@example", "geheim..person@example.de", "geheim@m\xc3\xbcnchen.de",
    };
    static const char *const phones[] = {"+4990077665544", "0151 77665544", "+4977665544x"};
    const char *why;
    size_t k;

    (void)state;
    for (k = 0; k < sizeof emails / sizeof emails[0]; k++) {
        assert_false(contact_email_ok(emails[k], &why));
        assert_null(strstr(why, "geheim"));
    }
    for (k = 0; k < sizeof phones / sizeof phones[0]; k++) {
        assert_false(contact_phone_ok(phones[k], NULL, &why));
        assert_null(strstr(why, "7766"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_email_table),
        cmocka_unit_test(test_phone_table),
        cmocka_unit_test(test_push_table),
        cmocka_unit_test(test_reasons_never_quote),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
