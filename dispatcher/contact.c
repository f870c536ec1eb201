/*
 * contact - is a citizen's e-mail address, phone number or push token one
 * herold may use?
 *
 * Pure functions over the string handed in: no I/O, no allocation, no
 * state, so any thread may call them.  The reasons are static strings
 * that describe the rule broken and never quote the value, because they
 * end up in logs and in the audit trail (docs/citizens.md).
 */
#include "dispatcher/contact.h"

#include <string.h>

#define CONTACT_LOCAL_MAX 64
#define CONTACT_LABEL_MAX 63
#define PHONE_DIGITS_MIN 8     /* country code included */
#define PHONE_DIGITS_MAX 15    /* E.164 */
#define PHONE_DE_MIN 6         /* digits after +49 */
#define PHONE_DE_MAX 13
#define APNS_TOKEN_LEN 64
#define FCM_TOKEN_MIN 20

/* refuse - set *why (if why) and return false. */
static bool refuse(const char **why, const char *reason)
{
    if (why)
        *why = reason;
    return false;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_alpha(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
static bool is_alnum(char c) { return is_alpha(c) || is_digit(c); }

/* is_hex - c is a hexadecimal digit, either case. */
static bool is_hex(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* is_atext - c may appear in an unquoted local part (RFC 5322 atext). */
static bool is_atext(char c)
{
    return is_alnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* has_non_ascii - some byte of s[0..n) is >= 0x80 (not ASCII). */
static bool has_non_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return true;
    return false;
}

/* ---- e-mail -------------------------------------------------------------- */

/* local_ok - the part before '@': 1-64 atext characters in dot-separated
 * runs (RFC 5322 dot-atom), no quoting. */
static bool local_ok(const char *s, size_t n, const char **why)
{
    if (n == 0)
        return refuse(why, "the part before @ is empty");
    if (n > CONTACT_LOCAL_MAX)
        return refuse(why, "the part before @ is longer than 64 characters");
    if (s[0] == '"')
        return refuse(why, "quoted local parts are not supported");
    if (has_non_ascii(s, n))
        return refuse(why, "the part before @ must be ASCII");
    if (s[0] == '.' || s[n - 1] == '.')
        return refuse(why, "the part before @ may not begin or end with a dot");
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.' && s[i + 1] == '.')
            return refuse(why, "the part before @ has two dots in a row");
        if (s[i] != '.' && !is_atext(s[i]))
            return refuse(why, "the part before @ has a character not allowed there");
    }
    return true;
}

/* tld_why - why the last label cannot be a top-level domain, or NULL:
 * it must be two or more letters, or an IDN A-label ("xn--p1ai"). */
static const char *tld_why(const char *s, size_t n)
{
    size_t i;

    if (n >= 5 && strncmp(s, "xn--", 4) == 0)
        return NULL;            /* domain_ok has checked its characters */
    for (i = 0; i < n; i++)
        if (!is_alpha(s[i]))
            return "the top-level domain is not alphabetic";
    return n < 2 ? "the top-level domain is a single letter" : NULL;
}

/* domain_ok - the part after '@': two or more LDH labels of 1-63
 * characters, not beginning or ending with '-', and a top-level domain
 * as tld_why wants it. */
static bool domain_ok(const char *s, size_t n, const char **why)
{
    size_t start = 0, labels = 0, i;
    const char *reason;

    if (n == 0)
        return refuse(why, "the domain is empty");
    if (s[0] == '[')
        return refuse(why, "address literals are not supported");
    if (has_non_ascii(s, n))
        return refuse(why, "the domain is not ASCII; write an internationalized "
                           "domain in its xn-- (punycode) form");
    /* i == n ends the last label as a dot would. */
    for (i = 0; i <= n; i++) {
        size_t len;

        if (i < n && s[i] != '.') {
            if (!is_alnum(s[i]) && s[i] != '-')
                return refuse(why, "the domain has a character other than "
                                   "letters, digits, '-' and '.'");
            continue;
        }
        len = i - start;
        if (len == 0)
            return refuse(why, "the domain has an empty label (leading, "
                               "trailing or double dot)");
        if (len > CONTACT_LABEL_MAX)
            return refuse(why, "a domain label is longer than 63 characters");
        if (s[start] == '-' || s[i - 1] == '-')
            return refuse(why, "a domain label begins or ends with '-'");
        labels++;
        if (i < n)
            start = i + 1;
    }
    if (labels < 2)
        return refuse(why, "the domain has no top-level domain");
    reason = tld_why(s + start, n - start);
    return reason == NULL || refuse(why, reason);
}

bool contact_email_ok(const char *s, const char **why)
{
    const char *at;
    size_t n;

    if (s == NULL || s[0] == '\0')
        return refuse(why, "missing e-mail address");
    n = strnlen(s, CONTACT_EMAIL_MAX + 1);
    if (n > CONTACT_EMAIL_MAX)
        return refuse(why, "e-mail address longer than 254 characters");
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
            return refuse(why, "e-mail address contains a space or control character");
    /* A local part may hold '@' only when quoted, which we refuse anyway,
     * so the one '@' splits the address. */
    at = strchr(s, '@');
    if (at == NULL)
        return refuse(why, "e-mail address without @");
    if (strchr(at + 1, '@') != NULL)
        return refuse(why, "e-mail address with more than one @");
    return local_ok(s, (size_t)(at - s), why) &&
           domain_ok(at + 1, n - (size_t)(at - s) - 1, why);
}

/* ---- phone --------------------------------------------------------------- */

/* German national ranges after +49 that must never receive our messages:
 * premium rate (900), mass calls (137), shared cost (180), directory
 * enquiries (118xx) and harmonised services of social value (116xxx). */
static const char *const phone_de_refused[] = {"900", "137", "180", "118", "116"};

/* phone_de - classify the national part of a German number (after +49). */
static bool phone_de(const char *nat, size_t n, enum phone_kind *kind,
                     const char **why)
{
    size_t i;

    if (nat[0] == '0')
        return refuse(why, "German number with the trunk 0 after +49; drop the 0");
    if (n < PHONE_DE_MIN || n > PHONE_DE_MAX)
        return refuse(why, "German number of implausible length "
                           "(+49 and 6 to 13 digits)");
    for (i = 0; i < sizeof phone_de_refused / sizeof phone_de_refused[0]; i++)
        if (strncmp(nat, phone_de_refused[i], 3) == 0)
            return refuse(why, "premium-rate or service number");
    /* Mobile networks: 015x, 016x, 017x. */
    *kind = nat[0] == '1' && (nat[1] == '5' || nat[1] == '6' || nat[1] == '7')
                ? PHONE_MOBILE : PHONE_LANDLINE;
    return true;
}

bool contact_phone_ok(const char *s, enum phone_kind *kind, const char **why)
{
    enum phone_kind k = PHONE_UNKNOWN;
    size_t n;

    if (s == NULL || s[0] == '\0')
        return refuse(why, "missing phone number");
    if (s[0] != '+')
        return refuse(why, "phone number not in international form: + and "
                           "country code (E.164)");
    n = strnlen(s + 1, PHONE_DIGITS_MAX + 1);
    for (size_t i = 0; i < n; i++)
        if (!is_digit(s[1 + i]))
            return refuse(why, "phone number with a character other than digits "
                               "after the + (no spaces or separators)");
    if (n < PHONE_DIGITS_MIN || n > PHONE_DIGITS_MAX)
        return refuse(why, "phone number must have 8 to 15 digits (E.164)");
    if (s[1] == '0')
        return refuse(why, "country codes do not begin with 0");
    if (s[1] == '4' && s[2] == '9' && !phone_de(s + 3, n - 2, &k, why))
        return false;
    if (kind)
        *kind = k;
    return true;
}

/* ---- push tokens --------------------------------------------------------- */

/* webpush_ok - an https endpoint URL: "https://" host [":" port] "/" path,
 * printable ASCII without spaces, quotes, angle brackets, backslash or
 * fragment. */
static bool webpush_ok(const char *s, size_t n, const char **why)
{
    const char *reason = "a Web Push token is an https:// endpoint URL";
    size_t i = 8, host;

    if (n <= 8 || strncmp(s, "https://", 8) != 0)
        return refuse(why, reason);
    /* Host: LDH labels and dots, no user info. */
    for (host = i; i < n && (is_alnum(s[i]) || s[i] == '-' || s[i] == '.'); i++)
        if (s[i] == '.' && (i == host || s[i - 1] == '.'))
            return refuse(why, "the Web Push endpoint has a bad host name");
    if (i < n && s[i] == '@')
        return refuse(why, "the Web Push endpoint may not contain user information");
    if (i == host || s[i - 1] == '.')
        return refuse(why, "the Web Push endpoint has a bad host name");
    if (i < n && s[i] == ':') {
        size_t port = ++i;
        long v = 0;

        for (; i < n && is_digit(s[i]) && i - port < 5; i++)
            v = v * 10 + (s[i] - '0');
        if (i == port || v < 1 || v > 65535)
            return refuse(why, "the Web Push endpoint has a bad port");
    }
    if (i >= n || s[i] != '/')
        return refuse(why, "the Web Push endpoint needs a path after the host");
    for (; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f ||
            strchr("\"<>\\^`{|}#", s[i]) != NULL)
            return refuse(why, "the Web Push endpoint has a character not "
                               "allowed in a URL");
    return true;
}

bool contact_push_ok(const char *platform, const char *token, const char **why)
{
    size_t n, i;

    if (platform == NULL)
        return refuse(why, "missing push platform");
    if (token == NULL || token[0] == '\0')
        return refuse(why, "missing push token");
    n = strnlen(token, CONTACT_TOKEN_MAX + 1);
    if (n > CONTACT_TOKEN_MAX)
        return refuse(why, "push token longer than 4096 characters");
    if (strcmp(platform, "apns") == 0) {
        if (n != APNS_TOKEN_LEN)
            return refuse(why, "an APNs token is 64 hexadecimal digits");
        for (i = 0; i < n; i++)
            if (!is_hex(token[i]))
                return refuse(why, "an APNs token is 64 hexadecimal digits");
        return true;
    }
    if (strcmp(platform, "fcm") == 0) {
        if (n < FCM_TOKEN_MIN)
            return refuse(why, "an FCM token has at least 20 characters");
        for (i = 0; i < n; i++)
            if (!is_alnum(token[i]) && token[i] != '_' && token[i] != ':' &&
                token[i] != '-')
                return refuse(why, "an FCM token has only letters, digits, "
                                   "'_', ':' and '-'");
        return true;
    }
    if (strcmp(platform, "webpush") == 0)
        return webpush_ok(token, n, why);
    return refuse(why, "unknown push platform (fcm, apns or webpush)");
}
