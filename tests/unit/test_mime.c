/*
 * test_mime - the MIME builder: RFC 2047 encoded-words (decoded back by a
 * decoder in this file), header folding, quoted-printable edge cases,
 * multipart structure and boundary collisions (through the random-source
 * hook), header-injection refusal per field with the exact error, the
 * address grammar, Message-ID generation, dot-stuffing, the wire rules
 * (CRLF only, lines <= 998) on every message built here, and allocation
 * failures.
 *
 * With HEROLD_MIME_OUT set to a directory, test_samples also writes
 * sample-N.eml with sample-N.json (the original values) there, for the
 * independent check in tests/integration/mime_check.py.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "channels/mime.h"
#include "dispatcher/alloc.h"

#define NOW 1772000000 /* Wed, 25 Feb 2026 06:13:20 +0000 */

/* base_message - a valid message every test starts from. */
static struct mime_message base_message(void)
{
    struct mime_message m = {
        .from_addr = "rathaus@musterstadt.de",
        .from_name = "Stadt Musterstadt",
        .to_addr = "erika.mustermann@example.org",
        .subject = "Abfuhrtermine",
        .text = "Am Montag wird die Biotonne geleert.\n",
        .message_id = "<abfuhr-0312.p1@herold.musterstadt.de>",
        .date = NOW,
    };
    return m;
}

/* ---- wire checks and small decoders ------------------------------------ */

/* wire_check - no bare CR or LF, every line <= 998 octets, ends in CRLF;
 * returns the longest line. */
static size_t wire_check(const char *p, size_t n)
{
    size_t i, line = 0, longest = 0;

    assert_true(n >= 2);
    assert_memory_equal(p + n - 2, "\r\n", 2);
    assert_int_equal(strlen(p), n);
    for (i = 0; i < n; i++) {
        if (p[i] == '\r') {
            assert_true(i + 1 < n && p[i + 1] == '\n');
        } else if (p[i] == '\n') {
            assert_true(i > 0 && p[i - 1] == '\r');
            if (line > longest)
                longest = line;
            line = 0;
            continue;
        } else {
            line++;
        }
    }
    /* line counted the CR; subtract it. */
    assert_true(longest <= 998 + 1);
    return longest ? longest - 1 : 0;
}

/* build_ok - mime_build that must succeed and pass wire_check. */
static char *build_ok(const struct mime_message *m, size_t *len)
{
    struct herr err = {0};
    char *out = NULL;
    size_t n = 0;
    char buf[400];

    if (mime_build(m, &out, &n, &err) != 0)
        fail_msg("mime_build: %s", herr_format(&err, buf, sizeof buf));
    assert_non_null(out);
    wire_check(out, n);
    if (len != NULL)
        *len = n;
    return out;
}

/* header_end - offset of the blank line ending the header section. */
static size_t header_end(const char *msg)
{
    const char *e = strstr(msg, "\r\n\r\n");

    assert_non_null(e);
    return (size_t)(e - msg) + 2;
}

/* header_count - how many header fields named name the message has. */
static int header_count(const char *msg, const char *name)
{
    size_t end = header_end(msg), nl = strlen(name), i;
    int count = 0;

    for (i = 0; i < end; i++) {
        if ((i == 0 || msg[i - 1] == '\n') && strncasecmp(msg + i, name, nl) == 0 &&
            msg[i + nl] == ':')
            count++;
    }
    return count;
}

/* header_get - the unfolded value of the first field named name (leading
 * space removed), as a new string, or NULL. */
static char *header_get(const char *msg, const char *name)
{
    size_t end = header_end(msg), nl = strlen(name), i, o = 0;
    char *v;

    for (i = 0; i < end; i++) {
        if ((i == 0 || msg[i - 1] == '\n') && strncasecmp(msg + i, name, nl) == 0 &&
            msg[i + nl] == ':')
            break;
    }
    if (i >= end)
        return NULL;
    i += nl + 1;
    if (msg[i] == ' ')
        i++;
    v = malloc(end - i + 1);
    assert_non_null(v);
    for (; i < end; i++) {
        if (msg[i] == '\r' && msg[i + 1] == '\n') {
            if (msg[i + 2] != ' ' && msg[i + 2] != '\t')
                break;
            i++;   /* unfold: drop CRLF, keep the WSP */
            continue;
        }
        v[o++] = msg[i];
    }
    v[o] = '\0';
    return v;
}

/* hexval - value of a hex digit, -1 if none. */
static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* b64_decode - decode base64 (skipping CR/LF) from s[0..n) into out. */
static size_t b64_decode(const char *s, size_t n, char *out)
{
    static const char al[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint32_t v = 0;
    int bits = 0;
    size_t o = 0, i;

    for (i = 0; i < n; i++) {
        const char *p;
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '=')
            continue;
        p = strchr(al, s[i]);
        assert_non_null(p);
        v = (v << 6) | (uint32_t)(p - al);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((v >> bits) & 0xFF);
        }
    }
    return o;
}

/* qp_decode - decode quoted-printable from s[0..n) into out. */
static size_t qp_decode(const char *s, size_t n, char *out)
{
    size_t i, o = 0;

    for (i = 0; i < n; i++) {
        if (s[i] == '=' && i + 2 < n + 1 && s[i + 1] == '\r' && s[i + 2] == '\n') {
            i += 2;
        } else if (s[i] == '=') {
            assert_true(i + 2 < n);
            assert_true(hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0);
            out[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    return o;
}

/* utf8_valid - s[0..n) is whole UTF-8 characters (structure only). */
static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0, k, len;

    while (i < n) {
        len = s[i] < 0x80 ? 1 : s[i] >= 0xF0 ? 4 : s[i] >= 0xE0 ? 3 :
              s[i] >= 0xC2 ? 2 : 0;
        if (len == 0 || i + len > n)
            return 0;
        for (k = 1; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
        i += len;
    }
    return 1;
}

/*
 * ew_decode - decode an unstructured value with RFC 2047 encoded-words,
 * dropping whitespace between adjacent encoded-words.  Every word must be
 * UTF-8, at most 75 long, and decode to whole UTF-8 characters.
 */
static char *ew_decode(const char *v)
{
    char *out = malloc(strlen(v) + 1), *pending = NULL;
    size_t o = 0;
    int prev_ew = 0;

    assert_non_null(out);
    while (*v != '\0') {
        if (strncmp(v, "=?UTF-8?", 8) == 0 && (v[8] == 'Q' || v[8] == 'B') &&
            v[9] == '?') {
            const char *end = strstr(v + 10, "?=");
            size_t n, start;

            assert_non_null(end);
            assert_true((size_t)(end + 2 - v) <= 75);
            if (prev_ew && pending != NULL)
                o = (size_t)(pending - out);   /* drop the whitespace */
            start = o;
            if (v[8] == 'B') {
                o += b64_decode(v + 10, (size_t)(end - v - 10), out + o);
            } else {
                for (n = 10; v + n < end; n++) {
                    if (v[n] == '_') {
                        out[o++] = ' ';
                    } else if (v[n] == '=') {
                        out[o++] = (char)(hexval(v[n + 1]) * 16 + hexval(v[n + 2]));
                        n += 2;
                    } else {
                        out[o++] = v[n];
                    }
                }
            }
            assert_true(utf8_valid((unsigned char *)out + start, o - start));
            v = end + 2;
            prev_ew = 1;
            pending = NULL;
        } else {
            if (*v == ' ' || *v == '\t') {
                if (pending == NULL)
                    pending = out + o;
            } else {
                prev_ew = 0;
                pending = NULL;
            }
            out[o++] = *v++;
        }
    }
    out[o] = '\0';
    return out;
}

/* normalise - s with LF, CR and CRLF all turned into CRLF (new string). */
static char *normalise(const char *s)
{
    char *out = malloc(2 * strlen(s) + 1);
    size_t o = 0;

    assert_non_null(out);
    for (; *s != '\0'; s++) {
        if (*s == '\r' || *s == '\n') {
            out[o++] = '\r';
            out[o++] = '\n';
            if (s[0] == '\r' && s[1] == '\n')
                s++;
        } else {
            out[o++] = *s;
        }
    }
    out[o] = '\0';
    return out;
}

/* header_lines_max - the longest line in the header section. */
static size_t header_lines_max(const char *msg)
{
    size_t end = header_end(msg), i, line = 0, longest = 0;

    for (i = 0; i < end; i++) {
        if (msg[i] == '\r') {
            if (line > longest)
                longest = line;
            line = 0;
            i++;
        } else {
            line++;
        }
    }
    return longest;
}

/* body_of_single - decoded body of a single-part message (new string). */
static char *body_of_single(const char *msg, size_t len)
{
    size_t h = header_end(msg) + 2;
    char *cte = header_get(msg, "Content-Transfer-Encoding");
    char *out = malloc(len - h + 1);
    size_t n;

    assert_non_null(cte);
    assert_non_null(out);
    if (strcmp(cte, "base64") == 0)
        n = b64_decode(msg + h, len - h, out);
    else
        n = qp_decode(msg + h, len - h, out);
    out[n] = '\0';
    free(cte);
    return out;
}

/* ---- encoded-words and folding ---------------------------------------- */

#define A68 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

struct ew_case {
    const char *label;
    const char *subject;
    const char *want_raw;   /* exact Subject value as sent, or NULL */
};

static const struct ew_case ew_cases[] = {
    {"plain ascii", "Abfuhrtermine im März", "=?UTF-8?Q?Abfuhrtermine_im_M=C3=A4rz?="},
    {"ascii only", "Abfuhrtermine fuer Maerz", "Abfuhrtermine fuer Maerz"},
    {"umlauts", "Müllabfuhr: Änderung für Größere Straße",
     "=?UTF-8?Q?M=C3=BCllabfuhr=3A_=C3=84nderung_f=C3=BCr_Gr=C3=B6=C3=9Fe?=\r\n"
     " =?UTF-8?Q?re_Stra=C3=9Fe?="},
    {"euro", "Gebühr 12 €", "=?UTF-8?Q?Geb=C3=BChr_12_=E2=82=AC?="},
    {"emoji", "🗑️ Biotonne 🚮🚮", NULL},
    {"emoji only", "🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉", NULL},
    {"encoded-word lookalike", "=?UTF-8?Q?x?= ist kein Wort", NULL},
    {"double space", "zwei  Leerzeichen", NULL},
    {"trailing space", "Ende ", NULL},
    {"tab", "a\tb", NULL},
    {"empty", "", ""},
    {"specials", "Termin (neu): \"Abholung\" <heute>", "Termin (neu): \"Abholung\" <heute>"},
    {"long ascii", "Die Abfuhr der Gelben Säcke verschiebt sich wegen des Feiertags in "
                   "allen Ortsteilen um einen Tag nach hinten, bitte beachten Sie den Plan",
     NULL},
    {"68-char word", "Hinweis " A68, "Hinweis\r\n " A68},
    {"69-char word", A68 "B", NULL},
    {"long word", "Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft",
     NULL},
    {"long umlauts", "äöüäöüäöüäöüäöüäöüäöüäöüäöüäöüäöüäöüäöüäöüäöüäöüäöüäöüäöüäöüäöüäöüäöü"
                     "äöüäöüäöüäöüäöüäöüäöüäöüäöüäöüäöüäöü", NULL},
};

/* test_subject_roundtrip - every subject decodes back, lines <= 78. */
static void test_subject_roundtrip(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof ew_cases / sizeof ew_cases[0]; i++) {
        const struct ew_case *c = &ew_cases[i];
        struct mime_message m = base_message();
        char *msg, *raw, *dec;
        size_t end, k;

        m.subject = c->subject;
        msg = build_ok(&m, NULL);
        assert_int_equal(header_count(msg, "Subject"), 1);
        raw = header_get(msg, "Subject");
        assert_non_null(raw);
        dec = ew_decode(raw);
        if (strcmp(dec, c->subject) != 0)
            fail_msg("%s: decoded \"%s\"", c->label, dec);
        if (c->want_raw != NULL) {
            /* want_raw is the wire form; compare folded text. */
            end = header_end(msg);
            k = strlen("\r\nSubject: ");
            if (c->want_raw[0] == '\0')
                assert_non_null(strstr(msg, "\r\nSubject:\r\n"));
            else if (strstr(msg, "\r\nSubject: ") == NULL ||
                     strncmp(strstr(msg, "\r\nSubject: ") + k, c->want_raw,
                             strlen(c->want_raw)) != 0)
                fail_msg("%s: wire form differs:\n%.*s", c->label, (int)end, msg);
        }
        if (header_lines_max(msg) > 78)
            fail_msg("%s: header line over 78", c->label);
        free(dec);
        free(raw);
        herold_free(msg);
    }
}

struct name_case {
    const char *label;
    const char *name;
    const char *want_raw;   /* exact From value, or NULL */
};

static const struct name_case name_cases[] = {
    {"atoms", "Stadt Musterstadt", "Stadt Musterstadt <rathaus@musterstadt.de>"},
    {"umlaut", "Bürgerbüro", "=?UTF-8?Q?B=C3=BCrgerb=C3=BCro?= <rathaus@musterstadt.de>"},
    {"comma", "Mustermann, Erika", "=?UTF-8?Q?Mustermann=2C_Erika?= <rathaus@musterstadt.de>"},
    {"dots", "Stadtwerke Musterstadt e.V.", NULL},
    {"quote and angle", "\"Admin\" <root@evil.example>", NULL},
    {"emoji", "Müll 🚮 Service", NULL},
    {"long", "Stadtverwaltung Musterstadt – Amt für Abfallwirtschaft, Straßenreinigung "
             "und Friedhofswesen", NULL},
};

/* test_display_names - names decode back; specials never stay raw. */
static void test_display_names(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof name_cases / sizeof name_cases[0]; i++) {
        const struct name_case *c = &name_cases[i];
        struct mime_message m = base_message();
        char *msg, *raw, *dec, *lt;

        m.from_name = c->name;
        m.to_name = c->name;
        msg = build_ok(&m, NULL);
        assert_int_equal(header_count(msg, "From"), 1);
        assert_int_equal(header_count(msg, "To"), 1);
        raw = header_get(msg, "From");
        if (c->want_raw != NULL && strcmp(raw, c->want_raw) != 0)
            fail_msg("%s: From is \"%s\"", c->label, raw);
        lt = strrchr(raw, '<');
        assert_non_null(lt);
        assert_string_equal(lt, "<rathaus@musterstadt.de>");
        /* The phrase before the address: one '<' only, decoded back. */
        assert_ptr_equal(strchr(raw, '<'), lt);
        lt[-1] = '\0';
        dec = ew_decode(raw);
        if (strcmp(dec, c->name) != 0)
            fail_msg("%s: decoded \"%s\"", c->label, dec);
        assert_true(header_lines_max(msg) <= 78);
        free(dec);
        free(raw);
        herold_free(msg);
    }
}

/* ---- quoted-printable ----------------------------------------------- */

struct qp_case {
    const char *label;
    const char *text;
    const char *want_body;   /* exact encoded body; NULL: round trip only */
};

#define A10 "AAAAAAAAAA"
static const struct qp_case qp_cases[] = {
    {"trailing space", "a \n", "a=20\r\n"},
    {"trailing tab no newline", "a\t", "a=09\r\n"},
    {"inner space", "a b\n", "a b\r\n"},
    {"equals", "a=b==\n", "a=3Db=3D=3D\r\n"},
    {"lone LF", "x\ny", "x\r\ny\r\n"},
    {"lone CR", "x\ry\r", "x\r\ny\r\n"},
    {"CRLF", "x\r\ny\r\n", "x\r\ny\r\n"},
    {"CR CR LF", "x\r\r\ny", "x\r\n\r\ny\r\n"},
    {"LF CR", "x\n\ry", "x\r\n\r\ny\r\n"},
    {"umlaut", "Grüße\n", "Gr=C3=BC=C3=9Fe\r\n"},
    {"76 chars", A10 A10 A10 A10 A10 A10 A10 "AAAAAA\n",
     A10 A10 A10 A10 A10 A10 A10 "AAAAAA\r\n"},
    {"77 chars", A10 A10 A10 A10 A10 A10 A10 "AAAAAAA\n",
     A10 A10 A10 A10 A10 A10 A10 "AAAAA=\r\nAA\r\n"},
    {"escape at the edge", A10 A10 A10 A10 A10 A10 A10 "AAAA=\n",
     A10 A10 A10 A10 A10 A10 A10 "AAAA=\r\n=3D\r\n"},
    {"space at the edge", A10 A10 A10 A10 A10 A10 A10 "AAAAA \n",
     A10 A10 A10 A10 A10 A10 A10 "AAAAA=\r\n=20\r\n"},
    {"dot line", ".\n..\n", ".\r\n..\r\n"},
    {"smuggling", "a\n.\nMAIL FROM:<x@evil.example>\r\n.\r\n", NULL},
    {"empty", "", "\r\n"},
    {"control", "\x1b[0m\x7f\n", "=1B[0m=7F\r\n"},
};

/* test_qp - exact encodings, soft breaks, line ends; decodes back. */
static void test_qp(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof qp_cases / sizeof qp_cases[0]; i++) {
        const struct qp_case *c = &qp_cases[i];
        struct mime_message m = base_message();
        char *msg, *body, *want, *cte;
        size_t len, h, k, col = 0;

        m.text = c->text;
        msg = build_ok(&m, &len);
        cte = header_get(msg, "Content-Transfer-Encoding");
        assert_string_equal(cte, "quoted-printable");
        h = header_end(msg) + 2;
        if (c->want_body != NULL && strcmp(msg + h, c->want_body) != 0)
            fail_msg("%s: body \"%s\"", c->label, msg + h);
        for (k = h; k < len; k++) {
            if (msg[k] == '\r') {
                assert_true(col <= 76);
                assert_true(col == 0 || (msg[k - 1] != ' ' && msg[k - 1] != '\t'));
                col = 0;
                k++;
            } else {
                col++;
            }
        }
        body = body_of_single(msg, len);
        want = normalise(c->text);
        /* A single part always ends with a line end on the wire. */
        if (strlen(want) < 2 || strcmp(want + strlen(want) - 2, "\r\n") != 0) {
            want = realloc(want, strlen(want) + 3);
            strcat(want, "\r\n");
        }
        if (strcmp(body, want) != 0)
            fail_msg("%s: decoded body differs", c->label);
        free(cte);
        free(want);
        free(body);
        herold_free(msg);
    }
}

/* test_base64_choice - text that QP would blow up goes out as base64. */
static void test_base64_choice(void **state)
{
    struct mime_message m = base_message();
    char text[4000], *msg, *cte, *body;
    size_t len, i;

    (void)state;
    text[0] = '\0';
    for (i = 0; i < 200; i++)
        strcat(text, i % 20 == 19 ? "€\n" : "€🚮");
    m.text = text;
    msg = build_ok(&m, &len);
    cte = header_get(msg, "Content-Transfer-Encoding");
    assert_string_equal(cte, "base64");
    body = body_of_single(msg, len);
    {
        char *want = normalise(text);
        assert_string_equal(body, want);
        free(want);
    }
    free(body);
    free(cte);
    herold_free(msg);
}

/* ---- multipart and boundaries ---------------------------------------- */

/* part_split - the parts of a multipart message under boundary b: fills
 * starts/ends (raw part text incl. part headers); returns the count and
 * checks the boundary occurs only as a delimiter line or parameter. */
static int part_split(const char *msg, const char *b, const char **starts,
                      const char **ends, int max)
{
    char delim[80];
    const char *p, *body = msg + header_end(msg) + 2;
    int n = 0, closed = 0, found = 0;

    snprintf(delim, sizeof delim, "--%s", b);
    for (p = strstr(msg, b); p != NULL; p = strstr(p + 1, b))
        found++;
    for (p = body; (p = strstr(p, delim)) != NULL; p += strlen(delim)) {
        assert_true(p == body || (p[-2] == '\r' && p[-1] == '\n'));
        assert_false(closed);
        if (n > 0)
            ends[n - 1] = p - 2;
        if (strncmp(p + strlen(delim), "--\r\n", 4) == 0) {
            closed = 1;
            assert_string_equal(p + strlen(delim), "--\r\n");
            continue;
        }
        assert_memory_equal(p + strlen(delim), "\r\n", 2);
        assert_true(n < max);
        starts[n++] = p + strlen(delim) + 2;
    }
    assert_true(closed);
    /* Once in Content-Type, once per delimiter line. */
    assert_int_equal(found, n + 2);
    return n;
}

/* boundary_of - the boundary parameter of Content-Type (new string). */
static char *boundary_of(const char *msg)
{
    char *ct = header_get(msg, "Content-Type"), *b, *e;

    assert_non_null(ct);
    b = strstr(ct, "boundary=\"");
    assert_non_null(b);
    b += 10;
    e = strchr(b, '"');
    assert_non_null(e);
    *e = '\0';
    b = strdup(b);
    free(ct);
    return b;
}

/* part_decode - decode one raw part (headers + body); checks its type. */
static char *part_decode(const char *start, const char *end, const char *type)
{
    const char *h = strstr(start, "\r\n\r\n");
    char hdr[200], *out;
    size_t n;

    assert_true(h != NULL && h < end);
    snprintf(hdr, sizeof hdr, "Content-Type: %s; charset=utf-8\r\n", type);
    assert_int_equal(strncmp(start, hdr, strlen(hdr)), 0);
    out = malloc((size_t)(end - h) + 1);
    assert_non_null(out);
    if (strstr(start, "Content-Transfer-Encoding: base64\r\n") == start + strlen(hdr))
        n = b64_decode(h + 4, (size_t)(end - h - 4), out);
    else
        n = qp_decode(h + 4, (size_t)(end - h - 4), out);
    out[n] = '\0';
    return out;
}

/* test_multipart - text and html in multipart/alternative, each exact. */
static void test_multipart(void **state)
{
    struct mime_message m = base_message();
    const char *starts[4], *ends[4];
    char *msg, *b, *ct, *t, *h, *want;

    (void)state;
    m.text = "Hallo Erika,\nam Montag wird die Biotonne geleert.\n-- \nStadt";
    m.html = "<p>Hallo Erika,</p>\r\n<p>am Montag wird die <b>Biotonne</b> "
             "geleert.</p>\r\n";
    msg = build_ok(&m, NULL);
    assert_int_equal(header_count(msg, "MIME-Version"), 1);
    assert_int_equal(header_count(msg, "Content-Type"), 1);
    ct = header_get(msg, "Content-Type");
    assert_int_equal(strncmp(ct, "multipart/alternative; boundary=\"=_herold_", 42), 0);
    b = boundary_of(msg);
    assert_int_equal(strlen(b), 9 + 24);
    assert_int_equal(part_split(msg, b, starts, ends, 4), 2);
    t = part_decode(starts[0], ends[0], "text/plain");
    h = part_decode(starts[1], ends[1], "text/html");
    want = normalise(m.text);
    assert_string_equal(t, want);
    free(want);
    assert_string_equal(h, m.html);
    free(t);
    free(h);
    free(b);
    free(ct);
    herold_free(msg);
}

static const unsigned char rng_first[12] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55,
                                            0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb};
static int rng_calls;
static int rng_stuck;

/* rng_test - first draw "00112233445566778899aabb", then counting bytes
 * (or the first draw forever when stuck); -1 when rng_calls is negative. */
static int rng_test(unsigned char *buf, size_t n)
{
    size_t i;

    if (rng_calls < 0)
        return -1;
    assert_int_equal(n, sizeof rng_first);
    if (rng_calls == 0 || rng_stuck)
        memcpy(buf, rng_first, n);
    else
        for (i = 0; i < n; i++)
            buf[i] = (unsigned char)(0xc0 + rng_calls);
    rng_calls++;
    return 0;
}

/* test_boundary_collision - a body holding the first-choice boundary makes
 * the builder draw again; a stuck or failing source is an error. */
static void test_boundary_collision(void **state)
{
    struct mime_message m = base_message();
    const char *starts[4], *ends[4];
    struct herr err = {0};
    char *msg, *b, *t;
    size_t len;

    (void)state;
    m.text = "Kennung: =_herold_00112233445566778899aabb\n"
             "--=_herold_00112233445566778899aabb--\n";
    m.html = "<p>00112233445566778899aabb</p>";
    mime_set_random(rng_test);
    rng_calls = 0;
    rng_stuck = 0;
    msg = build_ok(&m, &len);
    assert_int_equal(rng_calls, 2);
    b = boundary_of(msg);
    assert_string_equal(b, "=_herold_c1c1c1c1c1c1c1c1c1c1c1c1");
    assert_int_equal(part_split(msg, b, starts, ends, 4), 2);
    t = part_decode(starts[0], ends[0], "text/plain");
    assert_non_null(strstr(t, "--=_herold_00112233445566778899aabb--"));
    free(t);
    free(b);
    herold_free(msg);

    rng_calls = 0;
    rng_stuck = 1;
    msg = (char *)"untouched";
    assert_int_equal(mime_build(&m, &msg, &len, &err), -1);
    assert_null(msg);
    assert_int_equal(err.kind, HERR_TRANSIENT);
    assert_int_equal(rng_calls, 8);

    rng_calls = -1;
    assert_int_equal(mime_build(&m, &msg, &len, &err), -1);
    assert_int_equal(err.kind, HERR_TRANSIENT);
    assert_string_equal(err.msg, "random source failed for the MIME boundary");
    mime_set_random(NULL);

    /* The real source: two builds, two different boundaries. */
    msg = build_ok(&m, NULL);
    b = boundary_of(msg);
    herold_free(msg);
    msg = build_ok(&m, NULL);
    t = boundary_of(msg);
    assert_string_not_equal(b, t);
    free(b);
    free(t);
    herold_free(msg);
}

/* ---- injection -------------------------------------------------------- */

enum field {
    F_FROM_ADDR, F_FROM_NAME, F_TO_ADDR, F_TO_NAME, F_REPLY_TO, F_SUBJECT,
    F_MESSAGE_ID, F_LIST_ID, F_LIST_NAME, F_UNSUB_HTTPS, F_UNSUB_MAILTO,
    F_COUNT
};

static const char *const field_names[F_COUNT] = {
    "from_addr", "from_name", "to_addr", "to_name", "reply_to", "subject",
    "message_id", "list_id", "list_name", "unsub_https", "unsub_mailto",
};

/* A valid value of each field, the injection goes after it. */
static const char *const field_values[F_COUNT] = {
    "rathaus@musterstadt.de", "Stadt", "erika@example.org", "Erika",
    "buergerbuero@musterstadt.de", "Abfuhr", "<x1@herold.musterstadt.de>",
    "abfuhr.musterstadt.de", "Abfuhr", "https://musterstadt.de/u?t=1",
    "mailto:u@musterstadt.de",
};

/* field_set - point field f of m at v. */
static void field_set(struct mime_message *m, enum field f, const char *v)
{
    switch (f) {
    case F_FROM_ADDR: m->from_addr = v; break;
    case F_FROM_NAME: m->from_name = v; break;
    case F_TO_ADDR: m->to_addr = v; break;
    case F_TO_NAME: m->to_name = v; break;
    case F_REPLY_TO: m->reply_to = v; break;
    case F_SUBJECT: m->subject = v; break;
    case F_MESSAGE_ID: m->message_id = v; break;
    case F_LIST_ID: m->list_id = v; break;
    case F_LIST_NAME: m->list_name = v; break;
    case F_UNSUB_HTTPS: m->unsub_https = v; break;
    case F_UNSUB_MAILTO: m->unsub_mailto = v; break;
    case F_COUNT: break;
    }
}

struct inject_case {
    const char *label;
    const char *bytes;
    const char *want_msg;
};

static const struct inject_case inject_cases[] = {
    {"CRLF", "\r\n", "must not contain line breaks"},
    {"CR", "\r", "must not contain line breaks"},
    {"LF", "\n", "must not contain line breaks"},
    {"NEL", "\xc2\x85", "must not contain line breaks"},
    {"U+2028", "\xe2\x80\xa8", "must not contain line breaks"},
    {"U+2029", "\xe2\x80\xa9", "must not contain line breaks"},
    {"overlong NUL", "\xc0\x80", "must be valid UTF-8"},
    {"lone continuation", "\x80", "must be valid UTF-8"},
    {"surrogate", "\xed\xa0\x80", "must be valid UTF-8"},
    {"vertical tab", "\v", "must not contain control characters"},
    {"form feed", "\f", "must not contain control characters"},
    {"escape", "\x1b", "must not contain control characters"},
    {"C1", "\xc2\x9b", "must not contain control characters"},
};

/* test_injection - every header-bound field refuses every line break,
 * named by field, never quoting the value. */
static void test_injection(void **state)
{
    size_t i;
    int f;

    (void)state;
    for (f = 0; f < F_COUNT; f++) {
        for (i = 0; i < sizeof inject_cases / sizeof inject_cases[0]; i++) {
            const struct inject_case *c = &inject_cases[i];
            struct mime_message m = base_message();
            struct herr err = {0};
            char value[300], fmt[400], *out = (char *)"untouched";
            size_t len = 7;

            m.list_id = "abfuhr.musterstadt.de";
            snprintf(value, sizeof value, "%s%sBcc: evil@example.net",
                     field_values[f], c->bytes);
            field_set(&m, (enum field)f, value);
            if (mime_build(&m, &out, &len, &err) != -1)
                fail_msg("%s in %s: accepted", c->label, field_names[f]);
            assert_null(out);
            assert_int_equal(len, 0);
            assert_int_equal(err.kind, HERR_INPUT);
            assert_string_equal(err.path, field_names[f]);
            if (strcmp(err.msg, c->want_msg) != 0)
                fail_msg("%s in %s: \"%s\"", c->label, field_names[f],
                         herr_format(&err, fmt, sizeof fmt));
            assert_null(strstr(err.msg, "evil"));
        }
    }
}

/* test_injection_message - the exact text a person reads. */
static void test_injection_message(void **state)
{
    struct mime_message m = base_message();
    struct herr err = {0};
    char *out, buf[300];

    (void)state;
    m.subject = "Hallo\r\nBcc: alle@example.net";
    assert_int_equal(mime_build(&m, &out, NULL, &err), -1);
    assert_string_equal(herr_format(&err, buf, sizeof buf),
                        "subject: must not contain line breaks");
}

struct field_case {
    const char *label;
    enum field f;
    const char *value;
    const char *want_msg;   /* NULL: accepted */
};

static const struct field_case field_cases[] = {
    {"bad from", F_FROM_ADDR, "rathaus", "not a valid mailbox address"},
    {"addr with name", F_TO_ADDR, "Erika <e@example.org>", "not a valid mailbox address"},
    {"two addrs", F_TO_ADDR, "a@example.org,b@example.org", "not a valid mailbox address"},
    {"space", F_REPLY_TO, "a b@example.org", "not a valid mailbox address"},
    {"msgid no brackets", F_MESSAGE_ID, "x@y.de", "must be <left@right> of dot-atoms"},
    {"msgid two ats", F_MESSAGE_ID, "<a@b@c.de>", "must be <left@right> of dot-atoms"},
    {"msgid space", F_MESSAGE_ID, "<a b@c.de>", "must be <left@right> of dot-atoms"},
    {"list id no dot", F_LIST_ID, "abfuhr", "must be a dotted list identifier (RFC 2919)"},
    {"list id bracket", F_LIST_ID, "<abfuhr.de>", "must be a dotted list identifier (RFC 2919)"},
    {"http unsub", F_UNSUB_HTTPS, "http://musterstadt.de/u",
     "must be an https:// URL without spaces, '<', '>', '\"' or ','"},
    {"unsub bracket", F_UNSUB_HTTPS, "https://x.de/>, <https://evil.example/",
     "must be an https:// URL without spaces, '<', '>', '\"' or ','"},
    {"unsub bare", F_UNSUB_HTTPS, "https://",
     "must be an https:// URL without spaces, '<', '>', '\"' or ','"},
    {"mailto wrong", F_UNSUB_MAILTO, "u@musterstadt.de",
     "must be a mailto: URL without spaces, '<', '>', '\"' or ','"},
    {"tab subject ok", F_SUBJECT, "a\tb", NULL},
    {"list name alone", F_LIST_NAME, "Abfuhr", "needs list_id"},
};

/* test_field_rules - grammar of the structured fields, exact messages. */
static void test_field_rules(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof field_cases / sizeof field_cases[0]; i++) {
        const struct field_case *c = &field_cases[i];
        struct mime_message m = base_message();
        struct herr err = {0};
        char *out = NULL;
        int rc;

        field_set(&m, c->f, c->value);
        rc = mime_build(&m, &out, NULL, &err);
        if (c->want_msg == NULL) {
            if (rc != 0)
                fail_msg("%s: refused: %s", c->label, err.msg);
            herold_free(out);
            continue;
        }
        if (rc != -1)
            fail_msg("%s: accepted", c->label);
        assert_int_equal(err.kind, HERR_INPUT);
        assert_string_equal(err.path, field_names[c->f]);
        if (strcmp(err.msg, c->want_msg) != 0)
            fail_msg("%s: \"%s\"", c->label, err.msg);
    }
}

/* test_required - missing required fields and bad bodies. */
static void test_required(void **state)
{
    struct mime_message m;
    struct herr err = {0};
    char *out;

    (void)state;
    m = base_message();
    m.from_addr = NULL;
    assert_int_equal(mime_build(&m, &out, NULL, &err), -1);
    assert_string_equal(err.path, "from_addr");
    assert_string_equal(err.msg, "is required");
    m = base_message();
    m.text = NULL;
    assert_int_equal(mime_build(&m, &out, NULL, &err), -1);
    assert_string_equal(err.path, "text");
    m = base_message();
    m.subject = NULL;
    assert_int_equal(mime_build(&m, &out, NULL, &err), -1);
    assert_string_equal(err.path, "subject");
    m = base_message();
    m.message_id = "";
    assert_int_equal(mime_build(&m, &out, NULL, &err), -1);
    assert_string_equal(err.path, "message_id");
    m = base_message();
    m.html = "<p>\xff</p>";
    assert_int_equal(mime_build(&m, &out, NULL, &err), -1);
    assert_string_equal(err.path, "html");
    assert_string_equal(err.msg, "must be valid UTF-8");
    m = base_message();
    m.text = "\xe2\x82";   /* truncated euro sign */
    assert_int_equal(mime_build(&m, &out, NULL, &err), -1);
    assert_string_equal(err.path, "text");
    m = base_message();
    m.date = (time_t)400000000000LL;   /* year > 9999 */
    assert_int_equal(mime_build(&m, &out, NULL, &err), -1);
    assert_string_equal(err.path, "date");
}

/* ---- addresses and ids ------------------------------------------------ */

struct addr_case {
    const char *addr;
    int want;
};

static char addr_long_local[80], addr_300[310], addr_255[260], addr_label64[100];

static const struct addr_case addr_cases[] = {
    {"erika@example.org", 1},
    {"erika.mustermann@stadt.musterstadt.de", 1},
    {"e+news@example.org", 1},
    {"o'brien@example.ie", 1},
    {"x!#$%&'*+-/=?^_`{|}~@example.org", 1},
    {"\"erika.m..x\"@example.org", 1},
    {"\"a@b\"@example.org", 1},
    {"user@xn--mnchen-3ya.de", 1},
    {"user@sub-domain.example-1.de", 1},
    {"A@B.DE", 1},
    {"user@example.123a", 1},
    {"a@b", 0},                      /* no dot: decided, refused */
    {"user@localhost", 0},
    {"user@example", 0},
    {"", 0},
    {"@example.org", 0},
    {"user@", 0},
    {"user", 0},
    {"user@@example.org", 0},
    {".user@example.org", 0},
    {"user.@example.org", 0},
    {"us..er@example.org", 0},
    {"user@example..org", 0},
    {"user@.example.org", 0},
    {"user@example.org.", 0},
    {"user@-example.org", 0},
    {"user@example-.org", 0},
    {"user@exa_mple.org", 0},
    {"user@192.168.1.1", 0},
    {"user@[192.168.1.1]", 0},
    {"us er@example.org", 0},
    {"user@exam ple.org", 0},
    {"<user@example.org>", 0},
    {"user@example.org>", 0},
    {"a,b@example.org", 0},
    {"user@example.org,x@y.org", 0},
    {"user@example.org\r\nRCPT TO:<x@y.org>", 0},
    {"user@example.org\n", 0},
    {"\"us er\"@example.org", 0},
    {"\"us\\\"er\"@example.org", 0},
    {"\"<x>\"@example.org", 0},
    {"\"\"@example.org", 0},
    {"\"user@example.org", 0},
    {"jörg@example.org", 0},
    {"user@münchen.de", 0},
    {"user@example.org\t", 0},
    {addr_long_local, 0},
    {addr_300, 0},
    {addr_255, 0},
    {addr_label64, 0},
};

/* addr_fill - the generated long addresses of addr_cases. */
static void addr_fill(void)
{
    memset(addr_long_local, 'a', 65);
    strcpy(addr_long_local + 65, "@example.org");
    memset(addr_300, 'a', 20);
    addr_300[20] = '@';
    for (size_t i = 21; i < 296; i++)
        addr_300[i] = (i % 10 == 0) ? '.' : 'b';
    strcpy(addr_300 + 296, ".org");
    /* 64 + '@' + 186 + ".org" = 255: one over the 254 limit. */
    memset(addr_255, 'c', 64);
    addr_255[64] = '@';
    for (size_t i = 65; i < 251; i++)
        addr_255[i] = (i % 50 == 0 && i < 250) ? '.' : 'd';
    strcpy(addr_255 + 251, ".org");
    strcpy(addr_label64, "user@");
    memset(addr_label64 + 5, 'e', 64);
    strcpy(addr_label64 + 69, ".org");
}

/* test_address_grammar - the table, plus the boundary lengths accepted. */
static void test_address_grammar(void **state)
{
    char ok254[260], ok64[80];
    size_t i;

    (void)state;
    addr_fill();
    assert_int_equal(strlen(addr_255), 255);
    assert_int_equal(strlen(addr_300), 300);
    for (i = 0; i < sizeof addr_cases / sizeof addr_cases[0]; i++) {
        if (mime_address_ok(addr_cases[i].addr) != addr_cases[i].want)
            fail_msg("\"%s\": want %d", addr_cases[i].addr, addr_cases[i].want);
    }
    assert_int_equal(mime_address_ok(NULL), 0);
    memcpy(ok254, addr_255 + 1, 255);   /* 63 + '@' + ... = 254 */
    assert_int_equal(strlen(ok254), 254);
    assert_int_equal(mime_address_ok(ok254), 1);
    memset(ok64, 'a', 64);
    strcpy(ok64 + 64, "@example.org");
    assert_int_equal(mime_address_ok(ok64), 1);
    {
        char lab63[80] = "u@";
        memset(lab63 + 2, 'e', 63);
        strcpy(lab63 + 65, ".org");
        assert_int_equal(mime_address_ok(lab63), 1);
    }
}

/* test_message_id - deterministic, escaped, bounded; accepted by build. */
static void test_message_id(void **state)
{
    struct mime_message m = base_message();
    char id[300], id2[300], small[10], *msg, *v;

    (void)state;
    assert_int_equal(mime_message_id(id, sizeof id, "abfuhr-0312", "herold.musterstadt.de"), 0);
    assert_string_equal(id, "<abfuhr-0312@herold.musterstadt.de>");
    assert_int_equal(mime_message_id(id, sizeof id, "abfuhr-0312:p:3f9a.x=y ü",
                                     "musterstadt.de"), 0);
    assert_string_equal(id, "<abfuhr-0312=3Ap=3A3f9a=2Ex=3Dy=20=C3=BC@musterstadt.de>");
    assert_int_equal(mime_message_id(id2, sizeof id2, "abfuhr-0312:p:3f9a.x=y ü",
                                     "musterstadt.de"), 0);
    assert_string_equal(id, id2);
    /* Injective: "=3A" literally and ':' differ. */
    assert_int_equal(mime_message_id(id2, sizeof id2, "abfuhr-0312=3Ap=3A3f9a.x=y ü",
                                     "musterstadt.de"), 0);
    assert_string_not_equal(id, id2);
    m.message_id = id;
    msg = build_ok(&m, NULL);
    v = header_get(msg, "Message-ID");
    assert_string_equal(v, id);
    free(v);
    herold_free(msg);

    assert_int_equal(mime_message_id(small, sizeof small, "abcdef", "x.de"), -1);
    assert_int_equal(mime_message_id(small, sizeof small, "ab", "x.de"), 0);
    assert_string_equal(small, "<ab@x.de>");
    assert_int_equal(mime_message_id(id, sizeof id, "", "x.de"), -1);
    assert_int_equal(mime_message_id(id, sizeof id, "k", "localhost"), -1);
    assert_int_equal(mime_message_id(id, sizeof id, "k", "x.de\r\nBcc: a@b.de"), -1);
    {
        char key[200];
        memset(key, ':', 199);
        key[199] = '\0';
        assert_int_equal(mime_message_id(id, sizeof id, key, "x.de"), -1);
    }
}

/* ---- headers ------------------------------------------------------------ */

/* test_headers - exact header set for a bulk newsletter. */
static void test_headers(void **state)
{
    struct mime_message m = base_message();
    char *msg, *v;
    static const char *const once[] = {"Date", "From", "To", "Subject",
                                       "Message-ID", "MIME-Version",
                                       "Reply-To", "List-Id", "List-Unsubscribe",
                                       "List-Unsubscribe-Post", "Precedence",
                                       "Auto-Submitted", "Content-Type",
                                       "Content-Transfer-Encoding"};
    size_t i;

    (void)state;
    m.reply_to = "buergerbuero@musterstadt.de";
    m.list_id = "abfuhr.musterstadt.de";
    m.list_name = "Abfuhrkalender Musterstadt";
    m.unsub_https = "https://musterstadt.de/abmelden?t=3f9a1c2b5d6e7f8091a2b3c4d5e6f708";
    m.unsub_mailto = "mailto:abmelden@musterstadt.de?subject=3f9a1c2b";
    m.bulk = true;
    msg = build_ok(&m, NULL);
    for (i = 0; i < sizeof once / sizeof once[0]; i++)
        if (header_count(msg, once[i]) != 1)
            fail_msg("%s: %d times", once[i], header_count(msg, once[i]));
    assert_int_equal(header_count(msg, "Bcc"), 0);
    assert_int_equal(header_count(msg, "Cc"), 0);
    assert_int_equal(strncmp(msg, "Date: Wed, 25 Feb 2026 06:13:20 +0000\r\n", 39), 0);
    v = header_get(msg, "List-Unsubscribe");
    assert_string_equal(v, "<https://musterstadt.de/abmelden?t=3f9a1c2b5d6e7f8091a2b3c4d5e6f708>, "
                           "<mailto:abmelden@musterstadt.de?subject=3f9a1c2b>");
    free(v);
    assert_non_null(strstr(msg, "\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
    assert_non_null(strstr(msg, "\r\nList-Id: Abfuhrkalender Musterstadt <abfuhr.musterstadt.de>\r\n"));
    assert_non_null(strstr(msg, "\r\nPrecedence: bulk\r\n"));
    assert_non_null(strstr(msg, "\r\nAuto-Submitted: auto-generated\r\n"));
    assert_non_null(strstr(msg, "\r\nReply-To: buergerbuero@musterstadt.de\r\n"));
    assert_non_null(strstr(msg, "\r\nMIME-Version: 1.0\r\n"));
    assert_non_null(strstr(msg, "\r\nContent-Type: text/plain; charset=utf-8\r\n"));
    herold_free(msg);

    /* mailto only: no one-click; not bulk: no Precedence. */
    m.unsub_https = NULL;
    m.bulk = false;
    msg = build_ok(&m, NULL);
    v = header_get(msg, "List-Unsubscribe");
    assert_string_equal(v, "<mailto:abmelden@musterstadt.de?subject=3f9a1c2b>");
    free(v);
    assert_int_equal(header_count(msg, "List-Unsubscribe-Post"), 0);
    assert_int_equal(header_count(msg, "Precedence"), 0);
    assert_int_equal(header_count(msg, "Auto-Submitted"), 0);
    herold_free(msg);

    /* An alert: no list headers at all. */
    m = base_message();
    msg = build_ok(&m, NULL);
    assert_int_equal(header_count(msg, "List-Unsubscribe"), 0);
    assert_int_equal(header_count(msg, "List-Id"), 0);
    herold_free(msg);
}

/* test_date_local - the local offset form. */
static void test_date_local(void **state)
{
    struct mime_message m = base_message();
    char *msg;

    (void)state;
    setenv("TZ", "Europe/Berlin", 1);
    tzset();
    m.date_local = true;
    msg = build_ok(&m, NULL);
    assert_int_equal(strncmp(msg, "Date: Wed, 25 Feb 2026 07:13:20 +0100\r\n", 39), 0);
    herold_free(msg);
    m.date = 1782000000;   /* June 2026: summer time */
    msg = build_ok(&m, NULL);
    assert_non_null(strstr(msg, " +0200\r\n"));
    herold_free(msg);
    unsetenv("TZ");
    tzset();
}

/* test_long_values - 100 KB one-line bodies; maximum-length fields. */
static void test_long_values(void **state)
{
    struct mime_message m = base_message();
    size_t n = 100 * 1024, len, longest;
    char *text = malloc(n + 1), *html = malloc(n + 1), *msg;
    char url[MIME_URL_MAX + 1], id[MIME_MSGID_MAX + 1], subject[3000];
    size_t i;

    (void)state;
    assert_non_null(text);
    assert_non_null(html);
    for (i = 0; i < n; i++) {
        text[i] = "abcdefghij ="[i % 12];
        html[i] = i % 7 == 0 ? ' ' : 'x';
    }
    text[n] = html[n] = '\0';
    memcpy(url, "https://", 8);
    memset(url + 8, 'u', MIME_URL_MAX - 8);
    url[MIME_URL_MAX] = '\0';
    id[0] = '<';
    memset(id + 1, 'i', MIME_MSGID_MAX - 9);
    strcpy(id + MIME_MSGID_MAX - 8, "@abc.de>");
    assert_int_equal(strlen(id), MIME_MSGID_MAX);
    subject[0] = '\0';
    for (i = 0; i < 150; i++)
        strcat(subject, "Straße € ");
    strcat(subject, "Ende");
    m.text = text;
    m.html = html;
    m.unsub_https = url;
    m.unsub_mailto = "mailto:u@musterstadt.de";
    m.message_id = id;
    m.subject = subject;
    m.from_name = subject + 1560;   /* 20 whole "Straße € " and "Ende" */
    msg = build_ok(&m, &len);
    longest = wire_check(msg, len);
    assert_true(longest <= 998);
    assert_true(len > 2 * n);
    herold_free(msg);

    /* One byte more is refused, not truncated. */
    {
        char big[MIME_URL_MAX + 2];
        struct herr err = {0};
        memcpy(big, url, MIME_URL_MAX);
        big[MIME_URL_MAX] = 'u';
        big[MIME_URL_MAX + 1] = '\0';
        m.unsub_https = big;
        assert_int_equal(mime_build(&m, &msg, NULL, &err), -1);
        assert_string_equal(err.path, "unsub_https");
    }
    free(text);
    free(html);
}

/* ---- dot-stuffing ------------------------------------------------------ */

/* test_dot_stuff - leading dots doubled; bare line ends refused. */
static void test_dot_stuff(void **state)
{
    static const char in[] = ".\r\n..x\r\na.b\r\n.";
    struct mime_message m = base_message();
    struct herr err = {0};
    char *out, *msg;
    size_t len, mlen;

    (void)state;
    assert_int_equal(mime_dot_stuff(in, sizeof in - 1, &out, &len, &err), 0);
    assert_string_equal(out, "..\r\n...x\r\na.b\r\n..");
    assert_int_equal(len, strlen(out));
    herold_free(out);
    assert_int_equal(mime_dot_stuff("a\nb", 3, &out, &len, &err), -1);
    assert_int_equal(err.kind, HERR_INPUT);
    assert_null(out);
    assert_int_equal(mime_dot_stuff("a\rb", 3, &out, &len, &err), -1);
    assert_int_equal(mime_dot_stuff("a\r", 2, &out, &len, &err), -1);
    assert_int_equal(mime_dot_stuff("", 0, &out, &len, &err), 0);
    assert_int_equal(len, 0);
    herold_free(out);

    /* The smuggling body from the QP table: after stuffing, no line of the
     * message is a lone dot, so DATA cannot end early. */
    m.text = "a\n.\nMAIL FROM:<x@evil.example>\r\n.\r\n";
    m.html = ".\r\n";
    msg = build_ok(&m, &mlen);
    assert_int_equal(mime_dot_stuff(msg, mlen, &out, &len, &err), 0);
    assert_null(strstr(out, "\r\n.\r\n"));
    herold_free(out);
    herold_free(msg);
}

/* ---- allocation failure -------------------------------------------- */

/* test_alloc_failure - every allocation may fail: -1 HERR_RESOURCE, no
 * leak, until enough are allowed and the build succeeds. */
static void test_alloc_failure(void **state)
{
    struct mime_message m = base_message();
    char text[5000];
    long n;
    int ok = 0;

    (void)state;
    memset(text, 'a', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    m.text = text;
    m.html = "<p>Grüße</p>";
    m.subject = "Müllabfuhr";
    for (n = 0; n < 100 && !ok; n++) {
        struct herr err = {0};
        char *out = (char *)"untouched";
        size_t len;
        int rc;

        herold_alloc_fail_after = n;
        rc = mime_build(&m, &out, &len, &err);
        herold_alloc_fail_after = -1;
        if (rc == 0) {
            ok = 1;
            wire_check(out, len);
            herold_free(out);
        } else {
            assert_int_equal(err.kind, HERR_RESOURCE);
            assert_null(out);
        }
    }
    assert_true(ok);
    assert_true(n > 3);

    {
        struct herr err = {0};
        char *out;
        size_t len;

        herold_alloc_fail_after = 0;
        assert_int_equal(mime_dot_stuff(".a\r\n", 4, &out, &len, &err), -1);
        herold_alloc_fail_after = -1;
        assert_int_equal(err.kind, HERR_RESOURCE);
        assert_null(out);
    }
}

/* ---- samples for mime_check.py ------------------------------------- */

/* json_str - s as a JSON string (UTF-8 passes through), or null. */
static void json_str(FILE *f, const char *s)
{
    if (s == NULL) {
        fputs("null", f);
        return;
    }
    fputc('"', f);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* sample_write - dir/sample-N.eml and dir/sample-N.json for m. */
static void sample_write(const char *dir, int n, const struct mime_message *m)
{
    char path[4096];
    size_t len;
    char *msg = build_ok(m, &len);
    FILE *f;

    snprintf(path, sizeof path, "%s/sample-%d.eml", dir, n);
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(msg, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    herold_free(msg);

    snprintf(path, sizeof path, "%s/sample-%d.json", dir, n);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"from_addr\": ", f); json_str(f, m->from_addr);
    fputs(", \"from_name\": ", f); json_str(f, m->from_name);
    fputs(", \"to_addr\": ", f); json_str(f, m->to_addr);
    fputs(", \"to_name\": ", f); json_str(f, m->to_name);
    fputs(", \"reply_to\": ", f); json_str(f, m->reply_to);
    fputs(", \"subject\": ", f); json_str(f, m->subject);
    fputs(", \"text\": ", f); json_str(f, m->text);
    fputs(", \"html\": ", f); json_str(f, m->html);
    fputs(", \"message_id\": ", f); json_str(f, m->message_id);
    fputs(", \"list_id\": ", f); json_str(f, m->list_id);
    fputs(", \"unsub_https\": ", f); json_str(f, m->unsub_https);
    fputs(", \"unsub_mailto\": ", f); json_str(f, m->unsub_mailto);
    fprintf(f, ", \"bulk\": %s}\n", m->bulk ? "true" : "false");
    assert_int_equal(fclose(f), 0);
}

/* test_samples - with HEROLD_MIME_OUT set, write the sample set. */
static void test_samples(void **state)
{
    const char *dir = getenv("HEROLD_MIME_OUT");
    static char big[20000];
    struct mime_message m;
    int n = 0;
    size_t i;

    (void)state;
    if (dir == NULL || dir[0] == '\0')
        return;   /* the unit run proper; mime_check.py sets the variable */
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        fail_msg("mkdir %s: %s", dir, strerror(errno));

    m = base_message();
    m.subject = "Müllabfuhr: Änderung für die Größere Straße";
    m.from_name = "Bürgerbüro Musterstadt";
    sample_write(dir, ++n, &m);

    m = base_message();
    m.subject = "Gebühren 2026: 12,50 € pro Tonne";
    m.text = "Die Gebühr beträgt 12,50 €.\r\nZahlbar bis 1. März.\n";
    m.html = "<p>Die Gebühr beträgt <b>12,50&nbsp;€</b>.</p>\n<p>Zahlbar bis 1. März.</p>";
    m.to_name = "Mustermann, Erika";
    m.reply_to = "kasse@musterstadt.de";
    sample_write(dir, ++n, &m);

    m = base_message();
    m.subject = "🗑️ Morgen: Biotonne 🚮 und Gelber Sack ♻️ – bitte bis 6 Uhr bereitstellen";
    m.text = "Bitte stellen Sie die Tonnen 🚮 bis 6 Uhr bereit.\n.\nEnde";
    m.html = "<p>Bitte stellen Sie die Tonnen 🚮 bis 6 Uhr bereit.</p>";
    m.from_name = "Abfallwirtschaft \"AWM\" <info@evil.example>";
    m.list_id = "abfuhr.musterstadt.de";
    m.list_name = "Abfuhrkalender";
    m.unsub_https = "https://musterstadt.de/abmelden?t=3f9a1c2b5d6e7f8091a2b3c4";
    m.unsub_mailto = "mailto:abmelden@musterstadt.de?subject=unsub-3f9a1c2b";
    m.bulk = true;
    sample_write(dir, ++n, &m);

    m = base_message();
    m.subject = "Die Abfuhr der Gelben Säcke verschiebt sich wegen des Feiertags in allen "
                "Ortsteilen um einen Tag nach hinten; bitte beachten Sie den neuen Plan "
                "für das ganze Jahr";
    for (i = 0; i + 1 < sizeof big; i++)
        big[i] = i % 997 == 996 ? '\n' : "Strasse = \t "[i % 12];
    big[sizeof big - 1] = '\0';
    m.text = big;
    m.unsub_mailto = "mailto:abmelden@musterstadt.de";
    sample_write(dir, ++n, &m);

    m = base_message();
    m.subject = "Plain ASCII subject that is long enough to need folding across more "
                "than one header line, as RFC 5322 recommends";
    m.text = "€🚮€🚮€🚮€🚮€🚮€🚮€🚮€🚮€🚮€🚮€🚮€🚮€🚮\n€🚮€🚮€🚮€🚮€🚮€🚮\n";
    m.html = "<p>€🚮€🚮€🚮€🚮€🚮€🚮€🚮€🚮€🚮€🚮€🚮€🚮€🚮€🚮€🚮€🚮€🚮€🚮</p>";
    m.date_local = true;
    sample_write(dir, ++n, &m);

    m = base_message();
    m.subject = "=?UTF-8?Q?nicht_dekodieren?= und  doppelte Leerzeichen ";
    m.text = "Zeile mit Leerzeichen am Ende   \nCR allein\rund LF\nund CRLF\r\n";
    m.from_name = NULL;
    sample_write(dir, ++n, &m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_subject_roundtrip),
        cmocka_unit_test(test_display_names),
        cmocka_unit_test(test_qp),
        cmocka_unit_test(test_base64_choice),
        cmocka_unit_test(test_multipart),
        cmocka_unit_test(test_boundary_collision),
        cmocka_unit_test(test_injection),
        cmocka_unit_test(test_injection_message),
        cmocka_unit_test(test_field_rules),
        cmocka_unit_test(test_required),
        cmocka_unit_test(test_address_grammar),
        cmocka_unit_test(test_message_id),
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_date_local),
        cmocka_unit_test(test_long_values),
        cmocka_unit_test(test_dot_stuff),
        cmocka_unit_test(test_alloc_failure),
        cmocka_unit_test(test_samples),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
