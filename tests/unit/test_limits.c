/*
 * test_limits - templates/limits from tables: SMS encoding, units, code
 * points and segments (GSM 03.38 basic and extension tables, UCS-2,
 * escape and surrogate pairs at part boundaries); Mastodon's URL count;
 * Bluesky's graphemes; truncation for SMS and the three other units; and
 * invalid UTF-8.  A seeded random sweep checks every cut against a
 * brute-force oracle built from the measuring functions.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unigbrk.h>
#include <unistr.h>

#include "templates/limits.h"

#define ELL "\xE2\x80\xA6"              /* U+2026 … */
#define EURO "\xE2\x82\xAC"             /* U+20AC € */
#define GRIN "\xF0\x9F\x98\x80"         /* U+1F600, outside the BMP */
#define E_ACUTE_NFD "e\xCC\x81"         /* e + U+0301 */
#define FAMILY "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7"
#define FLAG_DE "\xF0\x9F\x87\xA9\xF0\x9F\x87\xAA"
#define FLAG_FR "\xF0\x9F\x87\xAB\xF0\x9F\x87\xB7"

/* A text built as head + rep * times + tail, so tables can hold long ones. */
struct text_spec {
    const char *head;
    const char *rep;
    size_t times;
    const char *tail;
};

/* text_new - build the text of spec; free with free(). */
static char *text_new(const struct text_spec *spec)
{
    size_t hl = strlen(spec->head), rl = spec->rep ? strlen(spec->rep) : 0;
    size_t tl = strlen(spec->tail), i;
    char *s = malloc(hl + rl * spec->times + tl + 1), *p;

    assert_non_null(s);
    p = s;
    memcpy(p, spec->head, hl);
    p += hl;
    for (i = 0; i < spec->times; i++) {
        memcpy(p, spec->rep, rl);
        p += rl;
    }
    memcpy(p, spec->tail, tl + 1);
    return s;
}

/* repeat_new - rep times n; free with free(). */
static char *repeat_new(const char *rep, size_t n)
{
    struct text_spec spec = {"", rep, n, ""};

    return text_new(&spec);
}

/* ---- SMS measurement ---------------------------------------------------- */

struct sms_case {
    const char *label;
    struct text_spec text;
    enum sms_encoding want_encoding;
    size_t want_units;
    size_t want_chars;
    size_t want_segments;
};

#define G SMS_GSM7
#define A10 "aaaaaaaaaa"
#define B10 "bbbbbbbbbb"
#define U SMS_UCS2

static const struct sms_case sms_cases[] = {
    {"empty", {"", NULL, 0, ""}, G, 0, 0, 0},
    {"street closure", {"Straßensperrung ab Montag", NULL, 0, ""}, G, 25, 25, 1},
    {"German umlauts and ß",
     {"Äpfel Öl Übung äöü ß", NULL, 0, ""}, G, 20, 20, 1},
    {"euro costs two", {"Gebühr: 5 " EURO, NULL, 0, ""}, G, 12, 11, 1},
    {"extension table, two each",
     {"^{}\\[~]|\f" EURO, NULL, 0, ""}, G, 20, 10, 1},
    {"é is GSM-7", {"Café", NULL, 0, ""}, G, 4, 4, 1},
    {"ê is not", {"Crêpe", NULL, 0, ""}, U, 5, 5, 1},
    {"Ç is GSM-7", {"Ça", NULL, 0, ""}, G, 2, 2, 1},
    {"ç is not", {"ça", NULL, 0, ""}, U, 2, 2, 1},
    {"backtick is not", {"a`b", NULL, 0, ""}, U, 3, 3, 1},
    {"tab is not", {"a\tb", NULL, 0, ""}, U, 3, 3, 1},
    {"Greek capitals", {"ΔΦΓΛΩΠΨΣΘΞ", NULL, 0, ""}, G, 10, 10, 1},
    {"CR LF", {"Zeile 1\r\nZeile 2", NULL, 0, ""}, G, 16, 16, 1},
    {"emoji is two units", {"Hallo " GRIN, NULL, 0, ""}, U, 8, 7, 1},
    {"160 septets", {"", "a", 160, ""}, G, 160, 160, 1},
    {"161 septets", {"", "a", 161, ""}, G, 161, 161, 2},
    {"80 euros are 160 septets", {"", EURO, 80, ""}, G, 160, 80, 1},
    {"153*2 septets", {"", "a", 306, ""}, G, 306, 306, 2},
    {"153*2+1 septets", {"", "a", 307, ""}, G, 307, 307, 3},
    /* 152 + € would be 154 in part 1: € moves whole to part 2, so 306
     * septets need 3 parts, not ceil(306/153) = 2. */
    {"escape pair at a part boundary", {"", "a", 152, EURO B10 B10 B10 B10 B10 B10 B10 B10 B10 B10 B10 B10 B10 B10 B10 "bb"},
     G, 306, 305, 3},
    /* 151 + € is exactly 153: the same 306 septets now take 2 parts. */
    {"escape pair ending a part exactly",
     {"", "a", 151, EURO B10 B10 B10 B10 B10 B10 B10 B10 B10 B10 B10 B10 B10 B10 B10 "bbb"},
     G, 306, 305, 2},
    {"70 units", {"ê", "a", 69, ""}, U, 70, 70, 1},
    {"71 units", {"ê", "a", 70, ""}, U, 71, 71, 2},
    {"67*2 units", {"ê", "a", 133, ""}, U, 134, 134, 2},
    {"67*2+1 units", {"ê", "a", 134, ""}, U, 135, 135, 3},
    /* 66 + 2 would be 68 in part 1: the pair moves whole to part 2. */
    {"surrogate pair at a part boundary",
     {"", "a", 66, GRIN A10 A10 A10 A10 A10 A10 "aaaaaa"},
     U, 134, 133, 3},
    {"35 emoji are 70 units", {"", GRIN, 35, ""}, U, 70, 35, 1},
    {"invalid byte is one UCS-2 char", {"ab\xff", NULL, 0, ""}, U, 3, 3, 1},
    {"truncated sequence, two bad bytes", {"\xE2\x82", NULL, 0, ""}, U, 2, 2, 1},
};

static void test_sms_table(void **state)
{
    size_t k;

    (void)state;
    for (k = 0; k < sizeof sms_cases / sizeof sms_cases[0]; k++) {
        const struct sms_case *c = &sms_cases[k];
        char *text = text_new(&c->text);
        struct sms_info info;

        limits_sms(text, &info);
        if (info.encoding != c->want_encoding || info.units != c->want_units ||
            info.chars != c->want_chars || info.segments != c->want_segments)
            fail_msg("%s: got enc %d units %zu chars %zu segs %zu, want %d %zu %zu %zu",
                     c->label, info.encoding, info.units, info.chars, info.segments,
                     c->want_encoding, c->want_units, c->want_chars, c->want_segments);
        free(text);
    }
}

/* Every character of GSM 03.38 (3GPP TS 23.038), as listed in the table,
 * row by row; ESC is absent (it is no character). */
static const char gsm_basic[] =
    "@£$¥èéùìòÇ\nØø\rÅå" "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ" " !\"#¤%&'()*+,-./" "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§" "¿abcdefghijklmnopqrstuvwxyzäöñüà";
static const char gsm_extension[] = "\f^{}\\[~]|" EURO;

static void test_sms_alphabet(void **state)
{
    const uint8_t *s = (const uint8_t *)gsm_basic;
    size_t n = strlen(gsm_basic), i = 0, count = 0;
    struct sms_info info;

    (void)state;
    limits_sms(gsm_basic, &info);
    assert_int_equal(info.chars, 127);
    assert_int_equal(info.encoding, SMS_GSM7);
    assert_int_equal(info.units, 127);
    /* Each one alone: one septet. */
    while (i < n) {
        char one[8] = {0};
        int len = u8_mblen(s + i, n - i);

        assert_true(len > 0);
        memcpy(one, s + i, (size_t)len);
        limits_sms(one, &info);
        if (info.encoding != SMS_GSM7 || info.units != 1)
            fail_msg("basic char %zu (%s) not one septet", count, one);
        i += (size_t)len;
        count++;
    }
    limits_sms(gsm_extension, &info);
    assert_int_equal(info.encoding, SMS_GSM7);
    assert_int_equal(info.chars, 10);
    assert_int_equal(info.units, 20);
}

/* ---- SMS truncation --------------------------------------------------------- */

struct sms_fit_case {
    const char *label;
    struct text_spec text;
    size_t max_segments;
    struct text_spec want;
    bool want_cut;
    enum sms_encoding want_encoding;
};

static const struct sms_fit_case sms_fit_cases[] = {
    {"fits unchanged", {"Straßensperrung ab Montag", NULL, 0, ""}, 1,
     {"Straßensperrung ab Montag", NULL, 0, ""}, false, G},
    {"empty for 0 segments", {"", NULL, 0, ""}, 0, {"", NULL, 0, ""}, false, G},
    /* 40 words of 4 letters: 31 words are 154 septets, + "..." = 157. */
    {"word boundary, stays GSM-7 with ...", {"", "Wort ", 40, ""}, 1,
     {"", "Wort ", 30, "Wort..."}, true, G},
    {"umlauts stay GSM-7", {"", "Müll ", 40, ""}, 1,
     {"", "Müll ", 30, "Müll..."}, true, G},
    /* 2 units + 13 words of 5 = 67, + "…" = 68; 14 words would be 73. */
    {"UCS-2 text gets …", {GRIN, " Wort", 20, ""}, 1,
     {GRIN, " Wort", 13, ELL}, true, U},
    {"emoji after the cut: GSM-7 prefix wins", {"", "Wort ", 40, GRIN}, 1,
     {"", "Wort ", 30, "Wort..."}, true, G},
    {"single long word", {"", "a", 200, ""}, 1, {"", "a", 157, "..."}, true, G},
    {"single long word of euros", {"", EURO, 81, ""}, 1,
     {"", EURO, 78, "..."}, true, G},
    {"two segments", {"", "Wort ", 100, ""}, 2,
     {"", "Wort ", 59, "Wort..."}, true, G},
    {"nothing fits in 0 segments", {"Hallo", NULL, 0, ""}, 0,
     {"", NULL, 0, ""}, true, G},
    {"newline is a word boundary", {"Achtung\n", "x", 200, ""}, 1,
     {"Achtung...", NULL, 0, ""}, true, G},
    {"UCS-2 long word keeps whole emoji", {"", GRIN, 40, ""}, 1,
     {"", GRIN, 34, ELL}, true, U},
};

static void test_sms_fit_table(void **state)
{
    size_t k;

    (void)state;
    for (k = 0; k < sizeof sms_fit_cases / sizeof sms_fit_cases[0]; k++) {
        const struct sms_fit_case *c = &sms_fit_cases[k];
        char *text = text_new(&c->text), *want = text_new(&c->want), *got;
        bool cut = !c->want_cut;
        struct sms_info info;

        got = limits_sms_fit(text, c->max_segments, &cut);
        assert_non_null(got);
        if (strcmp(got, want) != 0 || cut != c->want_cut)
            fail_msg("%s: got \"%s\" cut %d, want \"%s\" cut %d", c->label, got, cut,
                     want, c->want_cut);
        limits_sms(got, &info);
        if (info.segments > c->max_segments || info.encoding != c->want_encoding)
            fail_msg("%s: result has %zu segments, encoding %d", c->label,
                     info.segments, info.encoding);
        assert_null(u8_check((const uint8_t *)got, strlen(got)));
        free(text);
        free(want);
        free(got);
    }
}

/* ---- code points, Mastodon, graphemes ----------------------------------- */

struct count_case {
    const char *label;
    struct text_spec text;
    size_t want_chars;
    size_t want_mastodon;
    size_t want_graphemes;
};

#define URL_LONG "https://www.stadt-beispiel.de/aktuelles/2026/strassensperrung-hauptstrasse"
#define UL (sizeof URL_LONG - 1)

static const struct count_case count_cases[] = {
    {"empty", {"", NULL, 0, ""}, 0, 0, 0},
    {"ASCII", {"Hallo Welt", NULL, 0, ""}, 10, 10, 10},
    {"umlauts", {"Straße Übung", NULL, 0, ""}, 12, 12, 12},
    {"emoji", {GRIN, NULL, 0, ""}, 1, 1, 1},
    {"combining acute is one grapheme", {E_ACUTE_NFD, NULL, 0, ""}, 2, 2, 1},
    {"ZWJ family is one grapheme", {FAMILY, NULL, 0, ""}, 5, 5, 1},
    {"a flag is one grapheme", {FLAG_DE, NULL, 0, ""}, 2, 2, 1},
    {"two flags are two", {FLAG_DE FLAG_FR, NULL, 0, ""}, 4, 4, 2},
    {"three regional indicators are two", {FLAG_DE "\xF0\x9F\x87\xAB", NULL, 0, ""}, 3, 3, 2},
    {"skin tone", {"\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD", NULL, 0, ""}, 2, 2, 1},
    {"Hangul jamo L V T is one", {"\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", NULL, 0, ""}, 3, 3, 1},
    {"Hangul syllables", {"한국어", NULL, 0, ""}, 3, 3, 3},
    {"CR LF is one grapheme", {"\r\n", NULL, 0, ""}, 2, 2, 1},
    {"long URL is 23", {URL_LONG, NULL, 0, ""}, UL, 23, UL},
    {"short URL is 23 too", {"https://a.de", NULL, 0, ""}, 12, 23, 12},
    {"http and capitals", {"Info: HTTP://A.DE/x", NULL, 0, ""}, 19, 6 + 23, 19},
    {"URL in parentheses, trailing punctuation apart",
     {"(https://a.de/x).", NULL, 0, ""}, 17, 1 + 23 + 2, 17},
    {"inner punctuation stays in the URL", {"https://a.de/x.y", NULL, 0, ""}, 16, 23, 16},
    {"two URLs", {"a https://a.de b http://b.de/" URL_LONG, NULL, 0, ""},
     2 + 12 + 3 + 12 + UL, 2 + 23 + 3 + 23, 2 + 12 + 3 + 12 + UL},
    {"scheme alone is no URL", {"https://", NULL, 0, ""}, 8, 8, 8},
    {"scheme then space", {"https:// x", NULL, 0, ""}, 10, 10, 10},
    {"after a letter is no URL", {"xhttps://a.de", NULL, 0, ""}, 13, 13, 13},
    {"ftp is no URL", {"ftp://a.de", NULL, 0, ""}, 10, 10, 10},
    {"URL with emoji after space", {"https://a.de " GRIN, NULL, 0, ""}, 14, 25, 14},
    {"bad byte", {"\xff", NULL, 0, ""}, 1, 1, 1},
    {"bad bytes between letters", {"a\xff\xfe" "b", NULL, 0, ""}, 4, 4, 4},
    {"truncated sequence", {"a\xE2\x82", NULL, 0, ""}, 3, 3, 3},
    {"encoded surrogate", {"\xED\xA0\x80", NULL, 0, ""}, 3, 3, 3},
    {"overlong NUL", {"\xC0\x80", NULL, 0, ""}, 2, 2, 2},
    {"past U+10FFFF", {"\xF4\x90\x80\x80", NULL, 0, ""}, 4, 4, 4},
    {"bad byte in a URL", {"https://a.de/\xff", NULL, 0, ""}, 14, 23, 14},
    {"long combining run", {"e", "\xCC\x81", 300, ""}, 301, 301, 1},
    {"600 characters with URLs",
     {"Sperrung: " URL_LONG " ", "Hinweis ", 60, "mehr: " URL_LONG},
     10 + UL + 1 + 480 + 6 + UL, 10 + 23 + 1 + 480 + 6 + 23, 10 + UL + 1 + 480 + 6 + UL},
};

static void test_count_table(void **state)
{
    size_t k;

    (void)state;
    for (k = 0; k < sizeof count_cases / sizeof count_cases[0]; k++) {
        const struct count_case *c = &count_cases[k];
        char *text = text_new(&c->text);
        size_t chars = limits_chars(text), masto = limits_mastodon_len(text);
        size_t graphemes = limits_graphemes(text);

        if (chars != c->want_chars || masto != c->want_mastodon ||
            graphemes != c->want_graphemes)
            fail_msg("%s: got chars %zu mastodon %zu graphemes %zu, want %zu %zu %zu",
                     c->label, chars, masto, graphemes, c->want_chars,
                     c->want_mastodon, c->want_graphemes);
        free(text);
    }
}

/* ---- generic truncation ------------------------------------------------ */

struct fit_case {
    const char *label;
    struct text_spec text;
    enum limits_unit unit;
    size_t max;
    struct text_spec want;
    bool want_cut;
};

static const struct fit_case fit_cases[] = {
    {"fits unchanged", {"Achtung Straßensperrung", NULL, 0, ""}, LIMITS_CHARS, 23,
     {"Achtung Straßensperrung", NULL, 0, ""}, false},
    {"empty text, max 0", {"", NULL, 0, ""}, LIMITS_CHARS, 0, {"", NULL, 0, ""}, false},
    {"word boundary with …", {"Achtung Straßensperrung ab Montag", NULL, 0, ""},
     LIMITS_CHARS, 20, {"Achtung" ELL, NULL, 0, ""}, true},
    {"last word boundary that fits", {"Achtung Straßensperrung ab Montag", NULL, 0, ""},
     LIMITS_CHARS, 27, {"Achtung Straßensperrung ab" ELL, NULL, 0, ""}, true},
    {"trailing spaces dropped", {"Achtung    Straßensperrung", NULL, 0, ""},
     LIMITS_CHARS, 12, {"Achtung" ELL, NULL, 0, ""}, true},
    {"single long word", {"Donaudampfschifffahrt", NULL, 0, ""}, LIMITS_CHARS, 10,
     {"Donaudamp" ELL, NULL, 0, ""}, true},
    {"max 1: only the ellipsis", {"Hallo Welt", NULL, 0, ""}, LIMITS_CHARS, 1,
     {ELL, NULL, 0, ""}, true},
    {"max smaller than the ellipsis", {"Hallo Welt", NULL, 0, ""}, LIMITS_CHARS, 0,
     {"", NULL, 0, ""}, true},
    {"emoji kept whole by code points", {"", GRIN, 10, ""}, LIMITS_CHARS, 5,
     {"", GRIN, 4, ELL}, true},
    {"graphemes: accents stay on their letters", {"", E_ACUTE_NFD, 10, ""},
     LIMITS_GRAPHEMES, 4, {"", E_ACUTE_NFD, 3, ELL}, true},
    {"graphemes: families stay whole", {"", FAMILY, 10, ""}, LIMITS_GRAPHEMES, 3,
     {"", FAMILY, 2, ELL}, true},
    {"graphemes: flags stay whole", {"", FLAG_DE, 5, ""}, LIMITS_GRAPHEMES, 3,
     {"", FLAG_DE, 2, ELL}, true},
    {"graphemes: word boundary", {"Gefahr " FAMILY FAMILY " Ende", NULL, 0, ""},
     LIMITS_GRAPHEMES, 10, {"Gefahr " FAMILY FAMILY ELL, NULL, 0, ""}, true},
    {"graphemes: 300 fit", {"", E_ACUTE_NFD, 300, ""}, LIMITS_GRAPHEMES, 300,
     {"", E_ACUTE_NFD, 300, ""}, false},
    {"mastodon: URL counts 23 and stays whole",
     {"Info " URL_LONG " und mehr", NULL, 0, ""}, LIMITS_MASTODON, 30,
     {"Info " URL_LONG ELL, NULL, 0, ""}, true},
    {"mastodon: URL that does not fit is dropped",
     {"Info " URL_LONG " und mehr", NULL, 0, ""}, LIMITS_MASTODON, 28,
     {"Info" ELL, NULL, 0, ""}, true},
    {"mastodon: fits thanks to the URL rule", {"Info " URL_LONG, NULL, 0, ""},
     LIMITS_MASTODON, 28, {"Info " URL_LONG, NULL, 0, ""}, false},
    {"mastodon: a single long word is cut by code points",
     {"", "x", 30, ""}, LIMITS_MASTODON, 10, {"", "x", 9, ELL}, true},
    {"invalid UTF-8 comes back as U+FFFD", {"ab\xff cd", NULL, 0, ""}, LIMITS_CHARS, 10,
     {"ab\xEF\xBF\xBD cd", NULL, 0, ""}, false},
    {"invalid UTF-8 cut", {"ab\xff\xfe cd ef", NULL, 0, ""}, LIMITS_GRAPHEMES, 6,
     {"ab\xEF\xBF\xBD\xEF\xBF\xBD" ELL, NULL, 0, ""}, true},
};

/* measure - text's length in unit. */
static size_t measure(const char *text, enum limits_unit unit)
{
    switch (unit) {
    case LIMITS_CHARS:
        return limits_chars(text);
    case LIMITS_MASTODON:
        return limits_mastodon_len(text);
    case LIMITS_GRAPHEMES:
        return limits_graphemes(text);
    }
    return 0;
}

static void test_fit_table(void **state)
{
    size_t k;

    (void)state;
    for (k = 0; k < sizeof fit_cases / sizeof fit_cases[0]; k++) {
        const struct fit_case *c = &fit_cases[k];
        char *text = text_new(&c->text), *want = text_new(&c->want), *got;
        bool cut = !c->want_cut;

        got = limits_fit(text, c->unit, c->max, &cut);
        assert_non_null(got);
        if (strcmp(got, want) != 0 || cut != c->want_cut)
            fail_msg("%s: got \"%s\" cut %d, want \"%s\" cut %d", c->label, got, cut,
                     want, c->want_cut);
        if (measure(got, c->unit) > c->max)
            fail_msg("%s: result measures %zu > %zu", c->label, measure(got, c->unit),
                     c->max);
        assert_null(u8_check((const uint8_t *)got, strlen(got)));
        free(text);
        free(want);
        free(got);
    }
}

/* A Mastodon post of 600 characters with URLs: counted with each URL as
 * 23, cut to 500 at a word end, URLs whole. */
static void test_mastodon_600(void **state)
{
    struct text_spec spec = {"Sperrung Hauptstraße: " URL_LONG " ", "Umleitung ", 49,
                             "Details: " URL_LONG};
    char *text = text_new(&spec), *got;
    bool cut = false;

    (void)state;
    assert_int_equal(limits_chars(text), 22 + UL + 1 + 490 + 9 + UL);
    assert_int_equal(limits_mastodon_len(text), 22 + 23 + 1 + 490 + 9 + 23);
    got = limits_fit(text, LIMITS_MASTODON, 500, &cut);
    assert_true(cut);
    assert_true(limits_mastodon_len(got) <= 500);
    assert_non_null(strstr(got, URL_LONG));             /* the first URL, whole */
    assert_null(strstr(got, "Details"));
    assert_int_equal(strcmp(got + strlen(got) - strlen("Umleitung" ELL), "Umleitung" ELL), 0);
    free(got);
    /* Counted by code points, the same text needs far more cutting. */
    got = limits_fit(text, LIMITS_CHARS, 500, &cut);
    assert_true(limits_chars(got) <= 500);
    assert_true(limits_mastodon_len(got) < 500 - 40);
    free(got);
    free(text);
}

/* Many kilobytes: linear walks, results that fit (no timing asserted). */
static void test_long_texts(void **state)
{
    char *text = repeat_new("Straße " GRIN " é " FAMILY " ", 4000), *got;
    size_t n = strlen(text);
    bool cut = false;
    struct sms_info info;

    (void)state;
    assert_true(n > 64 * 1024);
    limits_sms(text, &info);
    assert_int_equal(info.encoding, SMS_UCS2);
    got = limits_sms_fit(text, 10, &cut);
    assert_true(cut);
    limits_sms(got, &info);
    assert_true(info.segments <= 10);
    free(got);
    got = limits_fit(text, LIMITS_GRAPHEMES, 300, &cut);
    assert_true(cut && limits_graphemes(got) <= 300);
    free(got);
    got = limits_fit(text, LIMITS_GRAPHEMES, (size_t)-1, &cut);
    assert_false(cut);
    assert_string_equal(got, text);
    free(got);
    free(text);
    /* A GSM-7 text of 64 KB, cut to 255 parts. */
    text = repeat_new("Müll ", 13200);
    got = limits_sms_fit(text, 255, &cut);
    limits_sms(got, &info);
    assert_true(cut && info.encoding == SMS_GSM7 && info.segments <= 255);
    free(got);
    free(text);
}

/* Bad bytes anywhere, in every function: no crash, valid UTF-8 out. */
static void test_invalid_utf8(void **state)
{
    static const char *const bad[] = {
        "\xff", "\x80\x80\x80", "\xC3", "a\xE2\x82", "\xF0\x9F\x98", "\xED\xA0\x80\xED\xB0\x80",
        "\xC0\xAF", "https://\xff", "\xff https://x", "\xCC\x81\xff\xCC\x81",
        "\xF8\x88\x80\x80\x80", "Stra\xdf\x65",
    };
    size_t k, max;

    (void)state;
    for (k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        struct sms_info info;
        bool cut;
        char *got;

        limits_sms(bad[k], &info);
        assert_int_equal(info.encoding, SMS_UCS2);
        assert_int_equal(info.chars, limits_chars(bad[k]));
        (void)limits_graphemes(bad[k]);
        (void)limits_mastodon_len(bad[k]);
        for (max = 0; max < 4; max++) {
            enum limits_unit u;

            got = limits_sms_fit(bad[k], max, &cut);
            assert_non_null(got);
            assert_null(u8_check((const uint8_t *)got, strlen(got)));
            limits_sms(got, &info);
            assert_true(info.segments <= max);
            assert_true(cut || max > 0);
            free(got);
            for (u = LIMITS_CHARS; u <= LIMITS_GRAPHEMES; u++) {
                got = limits_fit(bad[k], u, max, NULL);
                assert_non_null(got);
                assert_null(u8_check((const uint8_t *)got, strlen(got)));
                assert_true(measure(got, u) <= max);
                free(got);
            }
        }
    }
}

/* ---- the oracle sweep ---------------------------------------------------- */

/* A tiny deterministic generator, so a failure can be replayed. */
static uint32_t rng_state = 0x9e3779b9u;

static uint32_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

/* The first GSM_FRAGMENTS are GSM-7 (some of them two septets). */
#define GSM_FRAGMENTS 12
static const char *const fragments[] = {
    "a", "Wort", "ä", "ß", EURO, "{", " ", " ", " ", "\n", "Straße", ".",
    GRIN, E_ACUTE_NFD, "ê", "https://x.de/a", "http://b.de.", "(", ")", FAMILY,
    FLAG_DE, "\xff", "\r\n",
};

/* random_text_new - a random text of up to max_frags fragments, only
 * GSM-7 ones when gsm_only. */
static char *random_text_new(size_t max_frags, bool gsm_only)
{
    size_t nfrag = rng_next() % (max_frags + 1), i, len = 0;
    size_t nchoice = gsm_only ? GSM_FRAGMENTS : sizeof fragments / sizeof fragments[0];
    char *s = malloc(nfrag * 20 + 1);

    assert_non_null(s);
    for (i = 0; i < nfrag; i++) {
        const char *f = fragments[rng_next() % nchoice];

        memcpy(s + len, f, strlen(f));
        len += strlen(f);
    }
    s[len] = '\0';
    return s;
}

/* clean_new - s with every invalid byte as U+FFFD, as the fit functions see it. */
static char *clean_new(const char *s)
{
    size_t n = strlen(s), i = 0, o = 0;
    char *r = malloc(3 * n + 1);

    assert_non_null(r);
    while (i < n) {
        ucs4_t cp;
        int len = u8_mbtoucr(&cp, (const uint8_t *)s + i, n - i);

        if (len < 0) {
            memcpy(r + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else {
            memcpy(r + o, s + i, (size_t)len);
            o += (size_t)len;
            i += (size_t)len;
        }
    }
    r[o] = '\0';
    return r;
}

/* is_ws - a white space byte. */
static bool is_ws(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* unit_boundaries - mark in b[0..n] where a unit of the clean text s may
 * end a prefix: code point starts, or grapheme starts. */
static void unit_boundaries(const char *s, size_t n, bool graphemes, bool *b)
{
    size_t i;

    if (graphemes && n > 0) {
        char *p = malloc(n);

        assert_non_null(p);
        u8_grapheme_breaks((const uint8_t *)s, n, p);
        for (i = 0; i < n; i++)
            b[i] = p[i] != 0;
        free(p);
    } else {
        for (i = 0; i < n; i++)
            b[i] = ((unsigned char)s[i] & 0xC0) != 0x80;
    }
    b[n] = true;
}

/* oracle_fits - whether s[0..keep) + tail measures at most max. */
static bool oracle_fits(const char *s, size_t keep, const char *tail, int unit, size_t max,
                        bool gsm_only)
{
    size_t tl = strlen(tail);
    char *p = malloc(keep + tl + 1);
    bool ok;

    assert_non_null(p);
    memcpy(p, s, keep);
    memcpy(p + keep, tail, tl + 1);
    if (unit < 0) {
        struct sms_info info;

        limits_sms(p, &info);
        ok = info.segments <= max && (!gsm_only || info.encoding == SMS_GSM7);
    } else {
        ok = measure(p, (enum limits_unit)unit) <= max;
    }
    free(p);
    return ok;
}

/* oracle - the expected result by brute force: try every prefix, word ends
 * first, measuring each with the public functions; unit -1 is SMS.  */
static char *oracle(const char *text, int unit, size_t max)
{
    char *s = clean_new(text), *r;
    size_t n = strlen(s), best = 0, i, pass;
    bool *b = malloc(n + 1), found = false;
    const char *tail = ELL;

    assert_non_null(b);
    if (oracle_fits(s, n, "", unit, max, false)) {
        free(b);
        return s;
    }
    unit_boundaries(s, n, unit == LIMITS_GRAPHEMES, b);
    for (pass = 0; pass < 2 && !found; pass++) {
        for (i = n; i-- > 0;) {
            bool word_end = i > 0 && is_ws(s[i]) && !is_ws(s[i - 1]);

            if (!b[i] || (pass == 0 && !word_end))
                continue;
            if (unit < 0 && oracle_fits(s, i, "...", unit, max, true)) {
                /* GSM-7 with "..." wins a tie against "…". */
                best = i, tail = "...", found = true;
                break;
            }
            if (oracle_fits(s, i, ELL, unit, max, false)) {
                best = i, tail = ELL, found = true;
                break;
            }
        }
    }
    if (!found)
        tail = "", best = 0;
    r = malloc(best + strlen(tail) + 1);
    assert_non_null(r);
    memcpy(r, s, best);
    strcpy(r + best, tail);
    free(s);
    free(b);
    return r;
}

static void test_oracle_sweep(void **state)
{
    size_t round;

    (void)state;
    for (round = 0; round < 160; round++) {
        /* Short texts for the character units; long ones, a third of
         * them all GSM-7, so that SMS cuts span several parts. */
        char *text = random_text_new(40, false);
        char *sms_text = random_text_new(120, round % 3 == 0);
        int unit;

        for (unit = -1; unit <= LIMITS_GRAPHEMES; unit++) {
            size_t total = unit < 0 ? 5 : measure(text, (enum limits_unit)unit) + 2;
            size_t max, step = total > 40 ? 3 : 1;

            for (max = 0; max <= total; max += step) {
                const char *in = unit < 0 ? sms_text : text;
                char *want = oracle(in, unit, max), *got;
                bool cut;

                got = unit < 0 ? limits_sms_fit(in, max, &cut)
                               : limits_fit(in, (enum limits_unit)unit, max, &cut);
                assert_non_null(got);
                if (strcmp(got, want) != 0)
                    fail_msg("round %zu unit %d max %zu: text \"%s\"\n got  \"%s\"\n want \"%s\"",
                             round, unit, max, in, got, want);
                free(got);
                free(want);
            }
        }
        free(text);
        free(sms_text);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sms_table),
        cmocka_unit_test(test_sms_alphabet),
        cmocka_unit_test(test_sms_fit_table),
        cmocka_unit_test(test_count_table),
        cmocka_unit_test(test_fit_table),
        cmocka_unit_test(test_mastodon_600),
        cmocka_unit_test(test_long_texts),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_oracle_sweep),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
