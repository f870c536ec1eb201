/*
 * mime - builds one RFC 5322 / MIME message as bytes for SMTP DATA.
 *
 * Owns only the buffers it returns.  It never strips or repairs a header
 * field: anything that could end a header line (CR, LF, NEL, U+2028,
 * U+2029) or any other control character is refused with the field's
 * name, never its contents.  It never emits a bare CR or LF, never a line
 * over 998 octets, never a multipart boundary that occurs in a part, and
 * never dot-stuffs (libESMTP does that on the wire; see mime.h).  It does
 * no I/O and keeps no state but the random-source hook, so worker threads
 * may call it concurrently.
 */
#include "channels/mime.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <openssl/rand.h>

#include "dispatcher/alloc.h"

#define MIME_FOLD_AT 78        /* RFC 5322 2.1.1: SHOULD */
#define MIME_EW_MAX 75         /* RFC 2047 2: encoded-word length */
#define MIME_QP_LINE 76        /* RFC 2045 6.7 (5) */
#define MIME_B64_LINE 76
#define MIME_NAME_MAX 256      /* display names and the List-Id phrase */
#define MIME_SUBJECT_MAX 4096  /* bytes; the job parser caps it lower */
#define MIME_LISTID_MAX 255
#define MIME_WORD_MAX 68       /* longest plain word: "Subject: " + 68 < 78 */
#define MIME_BOUNDARY_TRIES 8
#define MIME_BOUNDARY_RANDOM 12   /* bytes, 24 hex digits */

static const char mime_hex[] = "0123456789ABCDEF";
static const char mime_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* ---- random source ---------------------------------------------------- */

/* mime_rand_openssl - the default random source: OpenSSL's CSPRNG. */
static int mime_rand_openssl(unsigned char *buf, size_t n)
{
    return RAND_bytes(buf, (int)n) == 1 ? 0 : -1;
}

static mime_random_fn *mime_random = mime_rand_openssl;

void mime_set_random(mime_random_fn *fn)
{
    mime_random = fn != NULL ? fn : mime_rand_openssl;
}

/* ---- growable output buffer ------------------------------------------- */

struct mbuf {
    char *p;
    size_t len, cap;
    size_t line_start;   /* offset of the current header line */
    size_t name_end;     /* offset just after the current "Name:" */
    bool failed;         /* an allocation failed; everything after is a no-op */
};

/* mbuf_reserve - room for n more bytes plus a NUL; false once failed. */
static bool mbuf_reserve(struct mbuf *b, size_t n)
{
    size_t need, cap;
    char *p;

    if (b->failed)
        return false;
    need = b->len + n + 1;
    if (need <= b->cap)
        return true;
    cap = b->cap ? b->cap : 1024;
    while (cap < need)
        cap *= 2;
    p = herold_realloc(b->p, cap);
    if (p == NULL) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

/* mbuf_put - append n bytes. */
static void mbuf_put(struct mbuf *b, const char *s, size_t n)
{
    if (n == 0 || !mbuf_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* mbuf_puts - append a C string. */
static void mbuf_puts(struct mbuf *b, const char *s)
{
    mbuf_put(b, s, strlen(s));
}

/* mbuf_putc - append one byte. */
static void mbuf_putc(struct mbuf *b, char c)
{
    mbuf_put(b, &c, 1);
}

/* mbuf_crlf - end a line; the next header line starts here. */
static void mbuf_crlf(struct mbuf *b)
{
    mbuf_put(b, "\r\n", 2);
    b->line_start = b->len;
}

/* ---- character classes ------------------------------------------------ */

/* ch_alnum - ASCII letter or digit (locale-independent). */
static bool ch_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9');
}

/* ch_atext - RFC 5322 atext. */
static bool ch_atext(unsigned char c)
{
    return ch_alnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* utf8_next - length (1-4) of the valid UTF-8 sequence at s and its code
 * point in *cp, or 0 if invalid (overlong, surrogate, > U+10FFFF,
 * truncated).  Stops at the terminating NUL, which is never a
 * continuation byte. */
static size_t utf8_next(const unsigned char *s, uint32_t *cp)
{
    uint32_t c = s[0];
    size_t n, i;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        c &= 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        c &= 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        c &= 0x07;
    } else {
        return 0;
    }
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if ((n == 3 && c < 0x800) || (n == 4 && (c < 0x10000 || c > 0x10FFFF)) ||
        (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return n;
}

/* utf8_check - 0 if s is valid UTF-8, else -1 with err for field. */
static int utf8_check(const char *s, const char *field, struct herr *err)
{
    const unsigned char *p = (const unsigned char *)s;
    uint32_t cp;
    size_t n;

    while (*p != '\0') {
        n = utf8_next(p, &cp);
        if (n == 0)
            return herr_set(err, HERR_INPUT, field, "must be valid UTF-8");
        p += n;
    }
    return 0;
}

/*
 * header_check - the injection gate for a header-bound field: refuses line
 * breaks first (so the message names the attack), then invalid UTF-8,
 * then any other control character but TAB, then a value over max bytes.
 */
static int header_check(const char *s, const char *field, size_t max,
                        struct herr *err)
{
    const unsigned char *p;
    uint32_t cp;
    size_t n;

    /* Byte scan first: it finds CR and LF even after invalid UTF-8. */
    for (p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '\r' || *p == '\n' ||
            (p[0] == 0xC2 && p[1] == 0x85) ||
            (p[0] == 0xE2 && p[1] == 0x80 && (p[2] == 0xA8 || p[2] == 0xA9)))
            return herr_set(err, HERR_INPUT, field,
                            "must not contain line breaks");
    }
    for (p = (const unsigned char *)s; *p != '\0'; p += n) {
        n = utf8_next(p, &cp);
        if (n == 0)
            return herr_set(err, HERR_INPUT, field, "must be valid UTF-8");
        if ((cp < 0x20 && cp != '\t') || (cp >= 0x7F && cp <= 0x9F))
            return herr_set(err, HERR_INPUT, field,
                            "must not contain control characters");
    }
    if ((size_t)((const char *)p - s) > max)
        return herr_set(err, HERR_INPUT, field, "is longer than %zu bytes", max);
    return 0;
}

/* ---- grammar: addresses, ids, URLs ------------------------------------ */

/* dot_atom_ok - s[0..n) is RFC 5322 dot-atom-text. */
static bool dot_atom_ok(const char *s, size_t n)
{
    size_t i;

    if (n == 0 || s[0] == '.' || s[n - 1] == '.')
        return false;
    for (i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (s[i + 1] == '.')
                return false;
        } else if (!ch_atext((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

/* local_ok - s[0..n) is a local-part herold accepts (see mime.h). */
static bool local_ok(const char *s, size_t n)
{
    size_t i;

    if (n == 0 || n > 64)
        return false;
    if (s[0] != '"')
        return dot_atom_ok(s, n);
    if (n < 3 || s[n - 1] != '"')
        return false;
    for (i = 1; i < n - 1; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c > 0x7E || c == '"' || c == '\\' || c == '<' ||
            c == '>' || c == ',')
            return false;
    }
    return true;
}

/* domain_ok - s[0..n) is two or more LDH labels, top label not numeric. */
static bool domain_ok(const char *s, size_t n)
{
    size_t i, start = 0, labels = 0;
    bool numeric = true;

    if (n == 0 || n > 255)
        return false;
    for (i = 0; i <= n; i++) {
        if (i == n || s[i] == '.') {
            size_t len = i - start;
            if (len == 0 || len > 63 || s[start] == '-' || s[i - 1] == '-')
                return false;
            labels++;
            if (i < n)
                numeric = true;
            start = i + 1;
            continue;
        }
        if (!ch_alnum((unsigned char)s[i]) && s[i] != '-')
            return false;
        if (s[i] < '0' || s[i] > '9')
            numeric = false;
    }
    return labels >= 2 && !numeric;
}

int mime_address_ok(const char *addr)
{
    const char *at;
    size_t len;

    if (addr == NULL)
        return 0;
    len = strlen(addr);
    if (len == 0 || len > 254)
        return 0;
    at = strrchr(addr, '@');
    if (at == NULL)
        return 0;
    return local_ok(addr, (size_t)(at - addr)) &&
           domain_ok(at + 1, strlen(at + 1));
}

/* msgid_ok - "<dot-atom-text@dot-atom-text>" within MIME_MSGID_MAX. */
static bool msgid_ok(const char *s)
{
    size_t n = strlen(s);
    const char *at;

    if (n < 5 || n > MIME_MSGID_MAX || s[0] != '<' || s[n - 1] != '>')
        return false;
    at = memchr(s, '@', n);
    if (at == NULL)
        return false;
    return dot_atom_ok(s + 1, (size_t)(at - s - 1)) &&
           dot_atom_ok(at + 1, (size_t)(s + n - 1 - at - 1));
}

int mime_message_id(char *out, size_t size, const char *idem_key,
                    const char *domain)
{
    const unsigned char *k;
    size_t len = 0;

    if (out == NULL || size == 0 || idem_key == NULL || idem_key[0] == '\0' ||
        domain == NULL || !domain_ok(domain, strlen(domain)))
        return -1;
    /* Count first, so a too-long id leaves nothing half-written behind. */
    for (k = (const unsigned char *)idem_key; *k != '\0'; k++)
        len += (ch_atext(*k) && *k != '=') ? 1 : 3;
    len += 3 + strlen(domain);   /* '<', '@', '>' */
    if (len > MIME_MSGID_MAX || len + 1 > size)
        return -1;
    len = 0;
    out[len++] = '<';
    for (k = (const unsigned char *)idem_key; *k != '\0'; k++) {
        if (ch_atext(*k) && *k != '=') {
            out[len++] = (char)*k;
        } else {
            out[len++] = '=';
            out[len++] = mime_hex[*k >> 4];
            out[len++] = mime_hex[*k & 0x0F];
        }
    }
    out[len++] = '@';
    memcpy(out + len, domain, strlen(domain));
    len += strlen(domain);
    out[len++] = '>';
    out[len] = '\0';
    return 0;
}

/* url_ok - s starts with prefix and continues with at least one printable
 * ASCII byte, none of them space, '<', '>', '"' or ','. */
static bool url_ok(const char *s, const char *prefix)
{
    size_t n = strlen(prefix);
    const unsigned char *p;

    if (strncmp(s, prefix, n) != 0 || s[n] == '\0')
        return false;
    for (p = (const unsigned char *)s + n; *p != '\0'; p++) {
        if (*p < 0x21 || *p > 0x7E || *p == '<' || *p == '>' || *p == '"' ||
            *p == ',')
            return false;
    }
    return true;
}

/* ---- header writing --------------------------------------------------- */

/* hdr_begin - start a header line with "Name:". */
static void hdr_begin(struct mbuf *b, const char *name)
{
    b->line_start = b->len;
    mbuf_puts(b, name);
    mbuf_putc(b, ':');
    b->name_end = b->len;
}

/* hdr_word - append " tok", folding before it when the line would pass
 * 78 (never right after the name: a value's first token stays there). */
static void hdr_word(struct mbuf *b, const char *tok, size_t n)
{
    size_t cur = b->len - b->line_start;

    if (cur + 1 + n > MIME_FOLD_AT && b->len != b->name_end)
        mbuf_crlf(b);
    mbuf_putc(b, ' ');
    mbuf_put(b, tok, n);
}

/* hdr_words - append the space-separated words of s, folding between them. */
static void hdr_words(struct mbuf *b, const char *s)
{
    const char *sp;

    while (*s != '\0') {
        sp = strchr(s, ' ');
        if (sp == NULL)
            sp = s + strlen(s);
        hdr_word(b, s, (size_t)(sp - s));
        s = *sp == ' ' ? sp + 1 : sp;
    }
}

/* q_plain - byte written as itself in a Q encoded-word in any context
 * (RFC 2047 5 (3): the phrase rule, the strictest). */
static bool q_plain(unsigned char c)
{
    return ch_alnum(c) || c == '!' || c == '*' || c == '+' || c == '-' ||
           c == '/';
}

/* q_len - encoded length of one byte in Q encoding ('_' for space). */
static size_t q_len(unsigned char c)
{
    return (q_plain(c) || c == ' ') ? 1 : 3;
}

/* b64_encode - base64 of in[0..n) into out (4 * ceil(n/3) bytes). */
static size_t b64_encode(const unsigned char *in, size_t n, char *out)
{
    size_t i, o = 0;
    uint32_t v;

    for (i = 0; i + 2 < n; i += 3) {
        v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = mime_b64[v >> 18];
        out[o++] = mime_b64[(v >> 12) & 63];
        out[o++] = mime_b64[(v >> 6) & 63];
        out[o++] = mime_b64[v & 63];
    }
    if (i < n) {
        v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = mime_b64[v >> 18];
        out[o++] = mime_b64[(v >> 12) & 63];
        out[o++] = i + 1 < n ? mime_b64[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    return o;
}

/*
 * hdr_encoded - append s (valid UTF-8) as a run of RFC 2047 encoded-words,
 * Q, or B when Q would be over half as long again.  Each word holds whole characters, is at
 * most 75 long, and fits on its line (the first one after the field name,
 * later ones on continuation lines); decoders drop the folding whitespace
 * between adjacent encoded-words, so the value round-trips exactly.
 */
static void hdr_encoded(struct mbuf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t qlen = 0, blen, i;
    bool use_q;
    uint32_t cp;

    for (i = 0; p[i] != '\0'; i++)
        qlen += q_len(p[i]);
    blen = 4 * ((i + 2) / 3);
    /* Q keeps mostly-ASCII German text readable; B only when much shorter. */
    use_q = 2 * qlen <= 3 * blen;

    while (*p != '\0') {
        char word[MIME_EW_MAX + 1];
        size_t cur = b->len - b->line_start, budget = MIME_EW_MAX, w = 0, used;
        const unsigned char *start = p;

        /* Use the rest of this line if a useful word fits there. */
        if (cur + 1 + 20 <= MIME_FOLD_AT && MIME_FOLD_AT - cur - 1 < budget)
            budget = MIME_FOLD_AT - cur - 1;
        budget -= 12;   /* "=?UTF-8?Q?" and "?=" */
        memcpy(word, use_q ? "=?UTF-8?Q?" : "=?UTF-8?B?", 10);
        w = 10;
        used = 0;
        while (*p != '\0') {
            size_t clen = utf8_next(p, &cp), cost = 0, k;

            if (clen == 0)
                clen = 1;   /* checked by the caller; never reached */
            if (use_q) {
                for (k = 0; k < clen; k++)
                    cost += q_len(p[k]);
                if (used + cost > budget)
                    break;
                for (k = 0; k < clen; k++) {
                    unsigned char c = p[k];
                    if (q_plain(c)) {
                        word[w++] = (char)c;
                    } else if (c == ' ') {
                        word[w++] = '_';
                    } else {
                        word[w++] = '=';
                        word[w++] = mime_hex[c >> 4];
                        word[w++] = mime_hex[c & 0x0F];
                    }
                }
                used += cost;
            } else {
                size_t bytes = (size_t)(p - start) + clen;
                if (4 * ((bytes + 2) / 3) > budget)
                    break;
            }
            p += clen;
        }
        if (!use_q)
            w += b64_encode(start, (size_t)(p - start), word + w);
        word[w++] = '?';
        word[w++] = '=';
        hdr_word(b, word, w);
    }
}

/* phrase_plain - s can go out as atoms: atext words, single spaces. */
static bool phrase_plain(const char *s)
{
    size_t word = 0;

    if (s[0] == '\0' || s[0] == ' ')
        return false;
    for (; *s != '\0'; s++) {
        if (*s == ' ') {
            if (s[1] == ' ' || s[1] == '\0')
                return false;
            word = 0;
        } else if (!ch_atext((unsigned char)*s) || ++word > MIME_WORD_MAX) {
            return false;
        }
    }
    return true;
}

/* subject_plain - s can go out as unstructured ASCII words: printable,
 * single spaces, nothing a decoder could take for an encoded-word. */
static bool subject_plain(const char *s)
{
    size_t word = 0;

    if (s[0] == ' ' || strstr(s, "=?") != NULL)
        return false;
    for (; *s != '\0'; s++) {
        if (*s == ' ') {
            if (s[1] == ' ' || s[1] == '\0')
                return false;
            word = 0;
        } else if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7E ||
                   ++word > MIME_WORD_MAX) {
            return false;
        }
    }
    return true;
}

/* hdr_phrase - a display name: atoms when plain, else encoded-words. */
static void hdr_phrase(struct mbuf *b, const char *s)
{
    if (phrase_plain(s))
        hdr_words(b, s);
    else
        hdr_encoded(b, s);
}

/* hdr_mailbox - "Name: [phrase] <addr>" or "Name: addr". */
static void hdr_mailbox(struct mbuf *b, const char *name, const char *phrase,
                        const char *addr)
{
    char tok[260];
    int n;

    hdr_begin(b, name);
    if (phrase != NULL && phrase[0] != '\0') {
        hdr_phrase(b, phrase);
        n = snprintf(tok, sizeof tok, "<%s>", addr);
        hdr_word(b, tok, (size_t)n);
    } else {
        hdr_word(b, addr, strlen(addr));
    }
    mbuf_crlf(b);
}

/* hdr_simple - "Name: value" with value a single unfoldable token. */
static void hdr_simple(struct mbuf *b, const char *name, const char *value)
{
    hdr_begin(b, name);
    hdr_word(b, value, strlen(value));
    mbuf_crlf(b);
}

/* date_format - RFC 5322 date-time, English names, numeric offset. */
static int date_format(char *out, size_t size, time_t t, bool local)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed",
                                       "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr",
                                         "May", "Jun", "Jul", "Aug",
                                         "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    long off = 0;
    char sign = '+';

    if (local) {
        if (localtime_r(&t, &tm) == NULL)
            return -1;
        off = tm.tm_gmtoff;
    } else if (gmtime_r(&t, &tm) == NULL) {
        return -1;
    }
    if (tm.tm_year + 1900 < 1970 || tm.tm_year + 1900 > 9999)
        return -1;
    if (off < 0) {
        sign = '-';
        off = -off;
    }
    snprintf(out, size, "%s, %02d %s %04d %02d:%02d:%02d %c%02ld%02ld",
             days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
             tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec, sign,
             off / 3600, (off % 3600) / 60);
    return 0;
}

/* ---- bodies ----------------------------------------------------------- */

/* body_normalise - s with every CRLF, lone CR and lone LF as CRLF. */
static void body_normalise(struct mbuf *b, const char *s)
{
    while (*s != '\0') {
        size_t n = strcspn(s, "\r\n");

        mbuf_put(b, s, n);
        s += n;
        if (*s == '\0')
            break;
        mbuf_put(b, "\r\n", 2);
        s += (s[0] == '\r' && s[1] == '\n') ? 2 : 1;
    }
}

/*
 * body_qp - quoted-printable (RFC 2045 6.7) of s[0..n), which has CRLF
 * line ends only.  Hard line breaks stay CRLF; '=', controls, non-ASCII
 * and whitespace at the end of a line are encoded; soft breaks keep every
 * line at most 76 including the '='; an "=XX" is never split.
 */
static void body_qp(struct mbuf *b, const char *s, size_t n)
{
    size_t i = 0, col = 0;

    while (i < n) {
        size_t eol = i;

        while (eol < n && !(s[eol] == '\r' && eol + 1 < n && s[eol + 1] == '\n'))
            eol++;
        for (; i < eol; i++) {
            unsigned char c = (unsigned char)s[i];
            bool last = i + 1 == eol;
            bool lit = (c >= 33 && c <= 126 && c != '=') ||
                       ((c == ' ' || c == '\t') && !last);
            size_t t = lit ? 1 : 3;

            /* The last character may fill the line to 76; any other must
             * leave room for the soft break's '='. */
            if (col + t > (last ? MIME_QP_LINE : MIME_QP_LINE - 1)) {
                mbuf_put(b, "=\r\n", 3);
                col = 0;
            }
            if (lit) {
                mbuf_putc(b, (char)c);
            } else {
                char e[3] = {'=', mime_hex[c >> 4], mime_hex[c & 0x0F]};
                mbuf_put(b, e, 3);
            }
            col += t;
        }
        if (eol < n) {
            mbuf_put(b, "\r\n", 2);
            i = eol + 2;
            col = 0;
        }
    }
}

/* body_b64 - base64 of s[0..n) in lines of 76, each ending CRLF. */
static void body_b64(struct mbuf *b, const char *s, size_t n)
{
    const size_t chunk = MIME_B64_LINE / 4 * 3;
    size_t i;
    char line[MIME_B64_LINE];

    for (i = 0; i < n; i += chunk) {
        size_t len = n - i < chunk ? n - i : chunk;
        mbuf_put(b, line, b64_encode((const unsigned char *)s + i, len, line));
        mbuf_put(b, "\r\n", 2);
    }
}

/* One encoded body part. */
struct mime_part {
    struct mbuf enc;
    const char *cte;   /* "quoted-printable" or "base64" */
};

/* part_encode - normalise s's line ends, then encode it as QP, or as
 * base64 when QP would be much larger.  false when memory ran out. */
static bool part_encode(struct mime_part *part, const char *s)
{
    struct mbuf norm = {0};
    size_t b64len;
    bool ok;

    body_normalise(&norm, s);
    body_qp(&part->enc, norm.p ? norm.p : "", norm.len);
    part->cte = "quoted-printable";
    b64len = 4 * ((norm.len + 2) / 3);
    b64len += 2 * ((b64len + MIME_B64_LINE - 1) / MIME_B64_LINE);
    /* Base64 only when QP is much larger (over half as long again):
     * QP keeps German text readable in raw form and diffs. */
    if (!norm.failed && !part->enc.failed && 2 * part->enc.len > 3 * b64len) {
        part->enc.len = 0;
        body_b64(&part->enc, norm.p, norm.len);
        part->cte = "base64";
    }
    ok = !norm.failed && !part->enc.failed;
    herold_free(norm.p);
    return ok;
}

/* mem_find - needle[0..nn) occurs in hay[0..hn) (memmem is GNU-only). */
static bool mem_find(const char *hay, size_t hn, const char *needle, size_t nn)
{
    const char *p = hay, *end = hay + hn;

    while (nn <= (size_t)(end - p) &&
           (p = memchr(p, needle[0], (size_t)(end - p) - nn + 1)) != NULL) {
        if (memcmp(p, needle, nn) == 0)
            return true;
        p++;
    }
    return false;
}

/* boundary_pick - "=_herold_" + 24 random hex digits into out (34 bytes),
 * redrawn while the random digits occur in any part.  Checking for the
 * digits alone is stricter than checking for the whole boundary. */
static int boundary_pick(char out[34], const struct mime_part *parts,
                         size_t nparts, struct herr *err)
{
    unsigned char r[MIME_BOUNDARY_RANDOM];
    int tries;
    size_t i;

    for (tries = 0; tries < MIME_BOUNDARY_TRIES; tries++) {
        bool clash = false;

        if (mime_random(r, sizeof r) != 0)
            return herr_set(err, HERR_TRANSIENT, NULL,
                            "random source failed for the MIME boundary");
        memcpy(out, "=_herold_", 9);
        for (i = 0; i < sizeof r; i++) {
            out[9 + 2 * i] = "0123456789abcdef"[r[i] >> 4];
            out[10 + 2 * i] = "0123456789abcdef"[r[i] & 0x0F];
        }
        out[33] = '\0';
        for (i = 0; i < nparts && !clash; i++)
            clash = parts[i].enc.len > 0 &&
                    mem_find(parts[i].enc.p, parts[i].enc.len, out + 9,
                             2 * MIME_BOUNDARY_RANDOM);
        if (!clash)
            return 0;
    }
    return herr_set(err, HERR_TRANSIENT, NULL,
                    "no MIME boundary free of the body after %d tries", tries);
}

/* ---- validation and assembly ------------------------------------------ */

/* opt - the optional field s, with "" meaning absent. */
static const char *opt(const char *s)
{
    return (s != NULL && s[0] != '\0') ? s : NULL;
}

/* check_addr - a required or optional address field. */
static int check_addr(const char *s, const char *field, bool required,
                      struct herr *err)
{
    if (s == NULL || s[0] == '\0')
        return required ? herr_set(err, HERR_INPUT, field, "is required") : 0;
    if (header_check(s, field, 254, err) != 0)
        return -1;
    if (!mime_address_ok(s))
        return herr_set(err, HERR_INPUT, field, "not a valid mailbox address");
    return 0;
}

/* check_fields - every rule of mime.h on m, first failure into err. */
static int check_fields(const struct mime_message *m, struct herr *err)
{
    if (check_addr(m->from_addr, "from_addr", true, err) != 0 ||
        check_addr(m->to_addr, "to_addr", true, err) != 0 ||
        check_addr(m->reply_to, "reply_to", false, err) != 0)
        return -1;
    if (opt(m->from_name) &&
        header_check(m->from_name, "from_name", MIME_NAME_MAX, err) != 0)
        return -1;
    if (opt(m->to_name) &&
        header_check(m->to_name, "to_name", MIME_NAME_MAX, err) != 0)
        return -1;
    if (m->subject == NULL)
        return herr_set(err, HERR_INPUT, "subject", "is required");
    if (header_check(m->subject, "subject", MIME_SUBJECT_MAX, err) != 0)
        return -1;
    if (m->message_id == NULL || m->message_id[0] == '\0')
        return herr_set(err, HERR_INPUT, "message_id", "is required");
    if (header_check(m->message_id, "message_id", MIME_MSGID_MAX, err) != 0)
        return -1;
    if (!msgid_ok(m->message_id))
        return herr_set(err, HERR_INPUT, "message_id",
                        "must be <left@right> of dot-atoms");
    if (opt(m->list_id)) {
        if (header_check(m->list_id, "list_id", MIME_LISTID_MAX, err) != 0)
            return -1;
        if (!dot_atom_ok(m->list_id, strlen(m->list_id)) ||
            strchr(m->list_id, '.') == NULL)
            return herr_set(err, HERR_INPUT, "list_id",
                            "must be a dotted list identifier (RFC 2919)");
    }
    if (opt(m->list_name)) {
        if (header_check(m->list_name, "list_name", MIME_NAME_MAX, err) != 0)
            return -1;
        if (!opt(m->list_id))
            return herr_set(err, HERR_INPUT, "list_name", "needs list_id");
    }
    if (opt(m->unsub_https)) {
        if (header_check(m->unsub_https, "unsub_https", MIME_URL_MAX, err) != 0)
            return -1;
        if (!url_ok(m->unsub_https, "https://"))
            return herr_set(err, HERR_INPUT, "unsub_https",
                            "must be an https:// URL without spaces, '<', '>', "
                            "'\"' or ','");
    }
    if (opt(m->unsub_mailto)) {
        if (header_check(m->unsub_mailto, "unsub_mailto", MIME_URL_MAX, err) != 0)
            return -1;
        if (!url_ok(m->unsub_mailto, "mailto:"))
            return herr_set(err, HERR_INPUT, "unsub_mailto",
                            "must be a mailto: URL without spaces, '<', '>', "
                            "'\"' or ','");
    }
    if (m->text == NULL)
        return herr_set(err, HERR_INPUT, "text", "is required");
    if (utf8_check(m->text, "text", err) != 0)
        return -1;
    if (m->html != NULL && utf8_check(m->html, "html", err) != 0)
        return -1;
    return 0;
}

/* write_headers - the header section up to, not including, Content-Type. */
static void write_headers(struct mbuf *b, const struct mime_message *m,
                          const char *date)
{
    hdr_begin(b, "Date");
    hdr_words(b, date);
    mbuf_crlf(b);
    hdr_mailbox(b, "From", opt(m->from_name), m->from_addr);
    hdr_mailbox(b, "To", opt(m->to_name), m->to_addr);
    if (opt(m->reply_to))
        hdr_simple(b, "Reply-To", m->reply_to);
    hdr_begin(b, "Subject");
    if (subject_plain(m->subject))
        hdr_words(b, m->subject);
    else
        hdr_encoded(b, m->subject);
    mbuf_crlf(b);
    hdr_simple(b, "Message-ID", m->message_id);
    hdr_simple(b, "MIME-Version", "1.0");
    if (opt(m->list_id)) {
        char tok[MIME_LISTID_MAX + 3];
        int n = snprintf(tok, sizeof tok, "<%s>", m->list_id);

        hdr_begin(b, "List-Id");
        if (opt(m->list_name))
            hdr_phrase(b, m->list_name);
        hdr_word(b, tok, (size_t)n);
        mbuf_crlf(b);
    }
    if (opt(m->unsub_https) || opt(m->unsub_mailto)) {
        /* https first: RFC 8058 one-click receivers use the https URI. */
        char tok[MIME_URL_MAX + 4];
        int n;

        hdr_begin(b, "List-Unsubscribe");
        if (opt(m->unsub_https)) {
            n = snprintf(tok, sizeof tok, "<%s>%s", m->unsub_https,
                         opt(m->unsub_mailto) ? "," : "");
            hdr_word(b, tok, (size_t)n);
        }
        if (opt(m->unsub_mailto)) {
            n = snprintf(tok, sizeof tok, "<%s>", m->unsub_mailto);
            hdr_word(b, tok, (size_t)n);
        }
        mbuf_crlf(b);
        if (opt(m->unsub_https))
            hdr_simple(b, "List-Unsubscribe-Post", "List-Unsubscribe=One-Click");
    }
    if (m->bulk) {
        /* RFC 3834: auto-responders stay silent for both. */
        hdr_simple(b, "Precedence", "bulk");
        hdr_simple(b, "Auto-Submitted", "auto-generated");
    }
}

int mime_build(const struct mime_message *m, char **out, size_t *out_len,
               struct herr *err)
{
    struct mime_part parts[2] = {{{0}, NULL}, {{0}, NULL}};
    struct mbuf b = {0};
    char date[64], boundary[34];
    size_t nparts = opt(m->html) ? 2 : 1, i;
    int rc = -1;

    *out = NULL;
    if (out_len != NULL)
        *out_len = 0;
    if (check_fields(m, err) != 0)
        return -1;
    if (date_format(date, sizeof date, m->date, m->date_local) != 0)
        return herr_set(err, HERR_INPUT, "date", "out of range");

    /* Encode the parts first: the boundary is chosen against them. */
    if (!part_encode(&parts[0], m->text) ||
        (nparts == 2 && !part_encode(&parts[1], m->html))) {
        herr_set(err, HERR_RESOURCE, NULL, "out of memory building a message");
        goto fail;
    }
    if (nparts == 2 && boundary_pick(boundary, parts, nparts, err) != 0)
        goto fail;

    write_headers(&b, m, date);
    if (nparts == 1) {
        mbuf_puts(&b, "Content-Type: text/plain; charset=utf-8\r\n"
                      "Content-Transfer-Encoding: ");
        mbuf_puts(&b, parts[0].cte);
        mbuf_puts(&b, "\r\n\r\n");
        mbuf_put(&b, parts[0].enc.p, parts[0].enc.len);
        /* DATA content ends with CRLF; a body without a final line end gets one. */
        if (parts[0].enc.len < 2 ||
            memcmp(parts[0].enc.p + parts[0].enc.len - 2, "\r\n", 2) != 0)
            mbuf_put(&b, "\r\n", 2);
    } else {
        static const char *const types[] = {"text/plain", "text/html"};

        mbuf_puts(&b, "Content-Type: multipart/alternative;\r\n boundary=\"");
        mbuf_puts(&b, boundary);
        mbuf_puts(&b, "\"\r\n\r\n");
        for (i = 0; i < nparts; i++) {
            /* The CRLF before each delimiter belongs to the delimiter
             * (RFC 2046 5.1.1), so each part decodes to exactly its text. */
            mbuf_puts(&b, i == 0 ? "--" : "\r\n--");
            mbuf_puts(&b, boundary);
            mbuf_puts(&b, "\r\nContent-Type: ");
            mbuf_puts(&b, types[i]);
            mbuf_puts(&b, "; charset=utf-8\r\nContent-Transfer-Encoding: ");
            mbuf_puts(&b, parts[i].cte);
            mbuf_puts(&b, "\r\n\r\n");
            mbuf_put(&b, parts[i].enc.p, parts[i].enc.len);
        }
        mbuf_puts(&b, "\r\n--");
        mbuf_puts(&b, boundary);
        mbuf_puts(&b, "--\r\n");
    }
    if (b.failed) {
        herr_set(err, HERR_RESOURCE, NULL, "out of memory building a message");
        goto fail;
    }
    *out = b.p;
    if (out_len != NULL)
        *out_len = b.len;
    b.p = NULL;
    rc = 0;
fail:
    herold_free(b.p);
    for (i = 0; i < 2; i++)
        herold_free(parts[i].enc.p);
    return rc;
}

int mime_dot_stuff(const char *in, size_t len, char **out, size_t *out_len,
                   struct herr *err)
{
    size_t i, o = 0, dots = 0;
    char *p;

    *out = NULL;
    if (out_len != NULL)
        *out_len = 0;
    for (i = 0; i < len; i++) {
        if ((in[i] == '\r' && (i + 1 == len || in[i + 1] != '\n')) ||
            (in[i] == '\n' && (i == 0 || in[i - 1] != '\r')))
            return herr_set(err, HERR_INPUT, NULL,
                            "dot-stuffing needs CRLF line ends only");
        if (in[i] == '.' && (i == 0 || in[i - 1] == '\n'))
            dots++;
    }
    p = herold_malloc(len + dots + 1);
    if (p == NULL)
        return herr_set(err, HERR_RESOURCE, NULL, "out of memory dot-stuffing");
    for (i = 0; i < len; i++) {
        if (in[i] == '.' && (i == 0 || in[i - 1] == '\n'))
            p[o++] = '.';
        p[o++] = in[i];
    }
    p[o] = '\0';
    *out = p;
    if (out_len != NULL)
        *out_len = o;
    return 0;
}
