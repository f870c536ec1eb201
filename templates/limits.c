/*
 * limits - the length of a rendered text in the units each channel counts
 * (SMS septets or UTF-16 units and segments, code points, Mastodon's
 * count, Bluesky's graphemes), and the longest word-boundary prefix of a
 * text that fits a limit.
 *
 * SMS follows GSM 03.38 (3GPP TS 23.038): a text is GSM-7 when every
 * character is in the basic table (one septet) or the extension table
 * reached by ESC 0x1B (two septets: form feed ^ { } \ [ ~ ] | and the euro
 * sign); one character outside both makes the whole message UCS-2, counted
 * in UTF-16 code units.  Parts of a concatenated SMS are filled character
 * by character, so an escape pair or a surrogate pair never straddles two
 * parts.  Mastodon counts code points with every http(s) URL as 23
 * (its characters_reserved_per_url); Bluesky counts extended grapheme
 * clusters (UAX #29).
 *
 * Owns nothing but the strings the fit functions return.  Pure: no I/O,
 * no logging (the texts are citizen-facing content), no global state, so
 * any thread may call it.  It never reads past the terminating NUL, never
 * returns invalid UTF-8, and runs in time linear in the text: each
 * function walks the text once or twice and never re-measures prefixes,
 * so 64 KB texts cost microseconds, not seconds.
 *
 * Invalid UTF-8 is tolerated, never trusted: each byte that starts no
 * valid character counts as one character, U+FFFD (which is not GSM-7),
 * and the fit functions hand it back as U+FFFD.
 *
 * This is the only file that includes libunistring.  Graphemes come from
 * u8_grapheme_breaks, not u8_grapheme_next: in libunistring 1.0 (Debian
 * 12) u8_grapheme_next decides each break from one pair of code points,
 * so it splits emoji ZWJ sequences (a family is 3) and flags (2 regional
 * indicators are 2); the whole-string function applies the full rules.
 */
#include "templates/limits.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <unigbrk.h>
#include <unistr.h>

#define LIMITS_GSM7_SINGLE 160  /* septets in a single SMS */
#define LIMITS_GSM7_PART 153    /* septets per part of a concatenated SMS */
#define LIMITS_UCS2_SINGLE 70   /* UTF-16 units in a single SMS */
#define LIMITS_UCS2_PART 67     /* UTF-16 units per concatenated part */
#define LIMITS_URL_LEN 23       /* Mastodon's characters_reserved_per_url */
#define LIMITS_BAD 0xFFFD       /* what a bad byte counts and returns as */
#define LIMITS_ELLIPSIS_CP 0x2026

static const char limits_ellipsis[] = "\xE2\x80\xA6";   /* U+2026 "…" */
static const char limits_gsm_ellipsis[] = "...";        /* "…" is not GSM-7 */
static const char limits_bad_utf8[] = "\xEF\xBF\xBD";   /* U+FFFD */

/* ---- characters ---------------------------------------------------- */

/* utf8_next - decode the character at s (n > 0 bytes left) into *cp and
 * return its length; a byte that starts no valid character is LIMITS_BAD
 * with length 1, so a valid U+FFFD is the only LIMITS_BAD of length 3. */
static size_t utf8_next(const uint8_t *s, size_t n, ucs4_t *cp)
{
    int len;

    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    /* u8_mbtoucr rejects overlongs, surrogates and values past U+10FFFF;
     * unlike u8_mbtouc it says so instead of swallowing several bytes. */
    len = u8_mbtoucr(cp, s, n);
    if (len <= 0) {
        *cp = LIMITS_BAD;
        return 1;
    }
    return (size_t)len;
}

/* utf8_bad - whether a character decoded by utf8_next was a bad byte. */
static bool utf8_bad(ucs4_t cp, size_t len)
{
    return cp == LIMITS_BAD && len == 1;
}

/* is_space - the ASCII white space that separates words and ends URLs. */
static bool is_space(ucs4_t cp)
{
    return cp == ' ' || (cp >= '\t' && cp <= '\r');
}

/* gsm_septets - septets cp takes in GSM 03.38: 1 (basic table), 2
 * (extension table, after ESC) or 0 (not encodable). */
static size_t gsm_septets(ucs4_t cp)
{
    if (cp < 0x80) {
        if (cp == '\n' || cp == '\r')
            return 1;
        if (cp == '\f')
            return 2;                   /* ESC 0x0A, the page break */
        if (cp < 0x20 || cp == 0x7F || cp == '`')
            return 0;
        switch (cp) {
        case '^': case '{': case '}': case '\\':
        case '[': case '~': case ']': case '|':
            return 2;
        default:
            return 1;                   /* the rest of printable ASCII */
        }
    }
    switch (cp) {
    /* Latin-1 letters and signs of the basic table. */
    case 0x00A1: case 0x00A3: case 0x00A4: case 0x00A5: case 0x00A7:
    case 0x00BF: case 0x00C4: case 0x00C5: case 0x00C6: case 0x00C7:
    case 0x00C9: case 0x00D1: case 0x00D6: case 0x00D8: case 0x00DC:
    case 0x00DF: case 0x00E0: case 0x00E4: case 0x00E5: case 0x00E6:
    case 0x00E8: case 0x00E9: case 0x00EC: case 0x00F1: case 0x00F2:
    case 0x00F6: case 0x00F8: case 0x00F9: case 0x00FC:
    /* Greek capitals of the basic table: Γ Δ Θ Λ Ξ Π Σ Φ Ψ Ω. */
    case 0x0393: case 0x0394: case 0x0398: case 0x039B: case 0x039E:
    case 0x03A0: case 0x03A3: case 0x03A6: case 0x03A8: case 0x03A9:
        return 1;
    case 0x20AC:                        /* € : ESC 0x65 */
        return 2;
    default:
        return 0;
    }
}

/* ucs2_units - UTF-16 code units of cp: 2 outside the BMP (a surrogate pair). */
static size_t ucs2_units(ucs4_t cp)
{
    return cp > 0xFFFF ? 2 : 1;
}

/* ---- SMS ------------------------------------------------------------ */

/* A running SMS measure in one encoding: the units so far, and how they
 * pack into parts of a concatenated message, whole characters only. */
struct sms_count {
    size_t units;
    size_t parts;       /* parts used by the concatenated packing */
    size_t fill;        /* units in the last of those parts */
};

/* sms_count_add - add one character of w units to a part size of part. */
static void sms_count_add(struct sms_count *c, size_t w, size_t part)
{
    c->units += w;
    if (c->parts == 0 || c->fill + w > part) {
        c->parts++;             /* the character moves whole to a new part */
        c->fill = w;
    } else {
        c->fill += w;
    }
}

/* sms_count_segments - segments for c: 0 if empty, 1 if it fits single. */
static size_t sms_count_segments(const struct sms_count *c, size_t single)
{
    if (c->units == 0)
        return 0;
    return c->units <= single ? 1 : c->parts;
}

/* sms_segments_plus - segments of c followed by `extra` one-unit characters. */
static size_t sms_segments_plus(struct sms_count c, size_t extra, size_t part,
                                size_t single)
{
    while (extra-- > 0)
        sms_count_add(&c, 1, part);
    return sms_count_segments(&c, single);
}

/*
 * limits_sms - measure text as an SMS into *out: the encoding (GSM-7 when
 * every character is in GSM 03.38's basic or extension table, else UCS-2),
 * the units in that encoding (septets, extension characters counting two;
 * or UTF-16 code units, characters outside the BMP counting two), the
 * code points, and the segments the message is sent as (0 for an empty
 * text; 1 up to 160 septets or 70 units; otherwise parts of 153 septets or
 * 67 units, filled with whole characters so that no escape pair or
 * surrogate pair is split).  A bad UTF-8 byte counts as U+FFFD.  One pass
 * measures both encodings, since which one applies is known only at the
 * end.  Borrows text for the call.
 */
void limits_sms(const char *text, struct sms_info *out)
{
    const uint8_t *s = (const uint8_t *)text;
    size_t n, i = 0, chars = 0;
    struct sms_count gsm = {0, 0, 0}, ucs = {0, 0, 0};
    bool gsm7 = true;

    assert(text != NULL && out != NULL);
    n = strlen(text);
    while (i < n) {
        ucs4_t cp;
        size_t len = utf8_next(s + i, n - i, &cp);
        size_t w = gsm_septets(cp);

        if (w == 0)
            gsm7 = false;
        if (gsm7)
            sms_count_add(&gsm, w, LIMITS_GSM7_PART);
        sms_count_add(&ucs, ucs2_units(cp), LIMITS_UCS2_PART);
        chars++;
        i += len;
    }
    out->chars = chars;
    if (gsm7) {
        out->encoding = SMS_GSM7;
        out->units = gsm.units;
        out->segments = sms_count_segments(&gsm, LIMITS_GSM7_SINGLE);
    } else {
        out->encoding = SMS_UCS2;
        out->units = ucs.units;
        out->segments = sms_count_segments(&ucs, LIMITS_UCS2_SINGLE);
    }
}

/* ---- Mastodon ------------------------------------------------------- */

/*
 * Mastodon's count as a state machine, so that measuring a text and
 * walking it for a cut share one definition.  A URL begins at "http://" or
 * "https://" (any case) followed by a non-space, where the character
 * before is not an ASCII letter or digit, '@', '$' or '#' (Mastodon's
 * twitter-text rule), and runs to the next white space.  It counts 23,
 * except that punctuation at its end (. , : ; ! ? ' " ) ] } > …) is not
 * part of it, as Mastodon leaves it out, and counts one each.
 *
 * The scheme is counted character by character until the character after
 * it arrives, so that the count of every prefix is exact ("https://" alone
 * is 8, not a URL).  done only grows, except that it gives the scheme back
 * when the URL begins, and then gains 23; masto_low never shrinks.
 */
struct masto {
    size_t done;        /* counted so far, the current URL aside */
    size_t scheme;      /* scheme characters still to come */
    size_t scheme_len;  /* length of that scheme until the URL begins */
    size_t trail;       /* punctuation at the end of the current URL */
    bool in_url;
};

/* is_url_trail - punctuation Mastodon leaves out at the end of a URL. */
static bool is_url_trail(ucs4_t cp)
{
    if (cp == LIMITS_ELLIPSIS_CP)
        return true;
    return cp > 0 && cp < 0x80 && strchr(".,:;!?'\")]}>", (int)cp) != NULL;
}

/* url_scheme_at - length of the URL scheme starting at s[i] (0 if none),
 * prev being the code point before it (0 at the start). */
static size_t url_scheme_at(const uint8_t *s, size_t n, size_t i, ucs4_t prev)
{
    static const char *const schemes[] = {"https://", "http://"};
    size_t k;

    if ((prev >= '0' && prev <= '9') || (prev >= 'A' && prev <= 'Z') ||
        (prev >= 'a' && prev <= 'z') || prev == '@' || prev == '$' ||
        prev == '#')
        return 0;
    for (k = 0; k < sizeof schemes / sizeof schemes[0]; k++) {
        size_t len = strlen(schemes[k]), j;

        if (n - i <= len)
            continue;           /* a URL needs a character after the scheme */
        for (j = 0; j < len; j++) {
            uint8_t c = s[i + j];

            if (c >= 'A' && c <= 'Z')
                c = (uint8_t)(c - 'A' + 'a');
            if (c != (uint8_t)schemes[k][j])
                break;
        }
        if (j == len && !is_space(s[i + len]))
            return len;
    }
    return 0;
}

/* masto_step - count code point cp; scheme_at is url_scheme_at there. */
static void masto_step(struct masto *m, ucs4_t cp, size_t scheme_at)
{
    if (m->in_url) {
        if (is_space(cp)) {
            m->done += LIMITS_URL_LEN + m->trail + 1;
            m->in_url = false;
        } else if (is_url_trail(cp)) {
            m->trail++;
        } else {
            m->trail = 0;
        }
        return;
    }
    if (m->scheme_len > 0 && m->scheme == 0) {
        /* The character after the scheme: from here on, the scheme and
         * everything up to white space is one URL. */
        size_t k = m->scheme_len;

        m->scheme_len = 0;
        if (!is_space(cp)) {
            m->done -= k;
            m->in_url = true;
            m->trail = is_url_trail(cp) ? 1 : 0;
            return;
        }
        m->done++;      /* defensive (url_scheme_at excludes it): no URL */
        return;
    }
    if (m->scheme == 0 && scheme_at > 0) {
        m->scheme = scheme_at;
        m->scheme_len = scheme_at;
    }
    if (m->scheme > 0)
        m->scheme--;
    m->done++;
}

/* masto_cost - Mastodon's count of everything stepped so far. */
static size_t masto_cost(const struct masto *m)
{
    return m->done + (m->in_url ? LIMITS_URL_LEN + m->trail : 0);
}

/* masto_low - a lower bound of masto_cost that never shrinks as text is added. */
static size_t masto_low(const struct masto *m)
{
    return m->done + (m->in_url ? LIMITS_URL_LEN : 0);
}

/*
 * limits_mastodon_len - the length Mastodon counts against its limit
 * (500 by default): code points, with every http:// or https:// URL
 * counted as 23 whatever its length.  The URL rule is the one described
 * at struct masto above; punctuation at a URL's end counts extra, so a
 * text is never counted shorter than Mastodon counts it there.  Remote
 * mentions (@user@example.org) count in full, where Mastodon counts only
 * "@user": an overcount, on the safe side.  A bad UTF-8 byte is one
 * character.  Borrows text for the call.
 */
size_t limits_mastodon_len(const char *text)
{
    const uint8_t *s = (const uint8_t *)text;
    struct masto m = {0, 0, 0, 0, false};
    size_t n, i = 0;
    ucs4_t prev = 0;

    assert(text != NULL);
    n = strlen(text);
    while (i < n) {
        ucs4_t cp;
        size_t len = utf8_next(s + i, n - i, &cp);
        size_t scheme = (cp == 'h' || cp == 'H') ? url_scheme_at(s, n, i, prev) : 0;

        masto_step(&m, cp, scheme);
        prev = cp;
        i += len;
    }
    return masto_cost(&m);
}

/* ---- characters and graphemes ----------------------------------------- */

/*
 * limits_chars - the number of Unicode code points in text, as push
 * services and most APIs count "characters"; a bad UTF-8 byte counts one.
 * Borrows text for the call.
 */
size_t limits_chars(const char *text)
{
    const uint8_t *s = (const uint8_t *)text;
    size_t n, i = 0, count = 0;

    assert(text != NULL);
    n = strlen(text);
    while (i < n) {
        ucs4_t cp;

        i += utf8_next(s + i, n - i, &cp);
        count++;
    }
    return count;
}

/* valid_run - the length of the longest valid UTF-8 prefix of s[0..n). */
static size_t valid_run(const uint8_t *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        ucs4_t cp;
        size_t len = utf8_next(s + i, n - i, &cp);

        if (utf8_bad(cp, len))
            break;
        i += len;
    }
    return i;
}

/* graphemes_in - grapheme clusters of the valid UTF-8 s[0..n), n > 0. */
static size_t graphemes_in(const uint8_t *s, size_t n)
{
    char small[512];
    char *breaks = n <= sizeof small ? small : malloc(n);
    size_t i, count = 0;

    if (breaks == NULL) {
        /* Out of memory: code points are never fewer than graphemes, so
         * counting them errs on the side of a text being too long. */
        for (i = 0; i < n; i++)
            count += (s[i] & 0xC0) != 0x80;
        return count;
    }
    u8_grapheme_breaks(s, n, breaks);
    for (i = 0; i < n; i++)
        count += breaks[i] != 0;
    if (breaks != small)
        free(breaks);
    return count;
}

/*
 * limits_graphemes - the number of extended grapheme clusters (UAX #29)
 * in text, as Bluesky counts its 300-grapheme post limit: "é" written as
 * e + U+0301 is one, so are an emoji ZWJ sequence, a flag (two regional
 * indicators), an emoji with a skin tone and a Hangul syllable made of
 * jamo.  A bad UTF-8 byte is one grapheme on its own; the valid runs
 * between bad bytes are segmented by libunistring.  Allocates a scratch
 * array for texts over 512 bytes; if that fails it counts code points,
 * which is never less.  Borrows text for the call.
 */
size_t limits_graphemes(const char *text)
{
    const uint8_t *s = (const uint8_t *)text;
    size_t n, i = 0, count = 0;

    assert(text != NULL);
    n = strlen(text);
    while (i < n) {
        size_t run = valid_run(s + i, n - i);

        if (run == 0) {
            count++;                    /* a bad byte */
            i++;
            continue;
        }
        count += graphemes_in(s + i, run);
        i += run;
    }
    return count;
}

/* ---- cutting ---------------------------------------------------------- */

/* The text a fit works on: the caller's when it is valid UTF-8, else a
 * copy with every bad byte replaced by U+FFFD (owned). */
struct fit_text {
    const char *s;
    size_t n;
    char *owned;
};

/* fit_text_init - set t up for text; -1 when out of memory. */
static int fit_text_init(struct fit_text *t, const char *text)
{
    const uint8_t *s = (const uint8_t *)text;
    size_t n = strlen(text), i = 0, bad = 0, o = 0;

    t->s = text;
    t->n = n;
    t->owned = NULL;
    while (i < n) {
        ucs4_t cp;
        size_t len = utf8_next(s + i, n - i, &cp);

        bad += utf8_bad(cp, len);
        i += len;
    }
    if (bad == 0)
        return 0;
    /* Each bad byte grows from 1 to 3 bytes. */
    t->owned = malloc(n + 2 * bad + 1);
    if (t->owned == NULL)
        return -1;
    for (i = 0; i < n;) {
        ucs4_t cp;
        size_t len = utf8_next(s + i, n - i, &cp);

        if (utf8_bad(cp, len)) {
            memcpy(t->owned + o, limits_bad_utf8, 3);
            o += 3;
        } else {
            memcpy(t->owned + o, text + i, len);
            o += len;
        }
        i += len;
    }
    t->owned[o] = '\0';
    t->s = t->owned;
    t->n = o;
    return 0;
}

/* fit_result - a new string: t's first keep bytes, then tail. */
static char *fit_result(const struct fit_text *t, size_t keep, const char *tail)
{
    size_t tail_len = strlen(tail);
    char *r = malloc(keep + tail_len + 1);

    if (r == NULL)
        return NULL;
    memcpy(r, t->s, keep);
    memcpy(r + keep, tail, tail_len + 1);
    return r;
}

/* fit_whole - t's whole text as a new string, taking the owned copy if any. */
static char *fit_whole(struct fit_text *t)
{
    char *r = t->owned;

    if (r != NULL) {
        t->owned = NULL;
        return r;
    }
    return fit_result(t, t->n, "");
}

/* Where a text may be cut so that the prefix plus the ellipsis fits. */
struct cutpoint {
    bool fits;          /* some prefix, maybe empty, plus the ellipsis fits */
    size_t word;        /* longest fitting prefix that ends a word; 0: none */
    size_t any;         /* longest fitting prefix at a unit boundary */
};

/* cut_note - record that the prefix of `at` bytes fits with the ellipsis. */
static void cut_note(struct cutpoint *c, size_t at, bool word_end)
{
    c->fits = true;
    c->any = at;
    if (word_end)
        c->word = at;
}

/* cut_choice - the prefix to keep: the last fitting word end, or, when not
 * even the first word fits, as much of it as fits. */
static size_t cut_choice(const struct cutpoint *c)
{
    return c->word > 0 ? c->word : c->any;
}

/* cut_finish - the result for c: the chosen prefix plus ellipsis, or "". */
static char *cut_finish(const struct cutpoint *c, const struct fit_text *t,
                        const char *ellipsis)
{
    if (!c->fits)
        return fit_result(t, 0, "");    /* not even the ellipsis fits */
    return fit_result(t, cut_choice(c), ellipsis);
}

/*
 * sms_walk - the cut of t (valid UTF-8, too long as it is) for max
 * segments.  Two candidates are walked side by side: a GSM-7 prefix
 * (every character so far in GSM 03.38) followed by "...", and any prefix
 * followed by "…", which makes the result UCS-2.  The walk stops when
 * neither can fit any more; the longer kept prefix wins, GSM-7 on a tie.
 */
static char *sms_walk(const struct fit_text *t, size_t max)
{
    const uint8_t *s = (const uint8_t *)t->s;
    struct sms_count gsm = {0, 0, 0}, ucs = {0, 0, 0};
    struct cutpoint gc = {false, 0, 0}, uc = {false, 0, 0};
    bool gsm_live = true, ucs_live = true, prev_space = true;
    size_t i = 0;

    while (gsm_live || ucs_live) {
        ucs4_t cp = 0;
        size_t len = i < t->n ? utf8_next(s + i, t->n - i, &cp) : 0;
        bool word_end = i < t->n && !prev_space && is_space(cp);
        size_t w;

        /* Does the prefix s[0..i) plus ellipsis fit?  Both measures only
         * grow, so the first "no" is final for that candidate. */
        if (gsm_live) {
            if (sms_segments_plus(gsm, sizeof limits_gsm_ellipsis - 1, LIMITS_GSM7_PART,
                                  LIMITS_GSM7_SINGLE) <= max)
                cut_note(&gc, i, word_end);
            else
                gsm_live = false;
        }
        if (ucs_live) {
            if (sms_segments_plus(ucs, 1, LIMITS_UCS2_PART, LIMITS_UCS2_SINGLE) <= max)
                cut_note(&uc, i, word_end);
            else
                ucs_live = false;
        }
        if (i == t->n)
            break;
        w = gsm_septets(cp);
        if (w == 0)
            gsm_live = false;
        if (gsm_live)
            sms_count_add(&gsm, w, LIMITS_GSM7_PART);
        sms_count_add(&ucs, ucs2_units(cp), LIMITS_UCS2_PART);
        prev_space = is_space(cp);
        i += len;
    }
    if (gc.fits && (!uc.fits || cut_choice(&gc) >= cut_choice(&uc)))
        return cut_finish(&gc, t, limits_gsm_ellipsis);
    return cut_finish(&uc, t, limits_ellipsis);
}

/*
 * limits_sms_fit - the longest prefix of text that, cut where a word ends
 * (before white space) and followed by an ellipsis, fits in max_segments;
 * a single word too long for them is cut between characters instead.  The
 * ellipsis is "..." when the kept prefix is GSM-7, because "…" is not in
 * GSM 03.38 and would turn the whole message into UCS-2, more than halving
 * its room; a prefix that is UCS-2 anyway gets "…" (one unit).  When a
 * GSM-7 prefix with "..." and a longer prefix with "…" both fit, the
 * longer wins.  Text that fits is returned unchanged (*cut false), as is
 * an empty text even for 0 segments; when not even the ellipsis fits
 * (max_segments 0) the result is "".  Bad UTF-8 bytes come back as
 * U+FFFD.  Returns a new string (free with free()), or NULL when out of
 * memory; cut may be NULL.  Borrows text for the call.
 */
char *limits_sms_fit(const char *text, size_t max_segments, bool *cut)
{
    struct fit_text t;
    struct sms_info info;
    char *r;

    assert(text != NULL);
    if (cut != NULL)
        *cut = false;
    if (fit_text_init(&t, text) < 0)
        return NULL;
    limits_sms(t.s, &info);
    if (info.segments <= max_segments) {
        r = fit_whole(&t);
    } else {
        if (cut != NULL)
            *cut = true;
        r = sms_walk(&t, max_segments);
    }
    free(t.owned);
    return r;
}

/*
 * fit_walk - the cut of t (valid UTF-8, too long as it is) for max in
 * unit; breaks holds t's grapheme breaks for LIMITS_GRAPHEMES.  Steps unit by
 * unit (code point or grapheme), asking at each boundary whether the
 * prefix plus "…" fits, and stops once a lower bound of that says no
 * longer prefix can.
 */
static char *fit_walk(const struct fit_text *t, enum limits_unit unit,
                      const char *breaks, size_t max)
{
    const uint8_t *s = (const uint8_t *)t->s;
    struct cutpoint c = {false, 0, 0};
    struct masto m = {0, 0, 0, 0, false};
    bool prev_space = true;
    size_t i = 0, count = 0;
    ucs4_t prev = 0;

    for (;;) {
        ucs4_t cp = 0;
        size_t len = 0, with, low;
        bool word_end;

        if (i < t->n) {
            len = utf8_next(s + i, t->n - i, &cp);
            if (unit == LIMITS_GRAPHEMES) {
                while (i + len < t->n && !breaks[i + len])
                    len++;
            }
        }
        word_end = i < t->n && !prev_space && is_space(cp);
        if (unit == LIMITS_MASTODON) {
            /* Step the ellipsis on a copy: after "https://" it starts a URL. */
            struct masto e = m;

            masto_step(&e, LIMITS_ELLIPSIS_CP, 0);
            with = masto_cost(&e);
            low = masto_low(&m);
        } else {
            with = count + 1;
            low = count;
        }
        if (with <= max)
            cut_note(&c, i, word_end);
        if (i == t->n || low >= max)
            break;
        if (unit == LIMITS_MASTODON) {
            size_t scheme = (cp == 'h' || cp == 'H') ? url_scheme_at(s, t->n, i, prev) : 0;

            masto_step(&m, cp, scheme);
        }
        count++;
        prev = cp;
        prev_space = is_space(cp);
        i += len;
    }
    return cut_finish(&c, t, limits_ellipsis);
}

/*
 * limits_fit - the longest prefix of text that, cut where a word ends
 * (before white space) and followed by "…", is at most max long in unit:
 * code points (LIMITS_CHARS), Mastodon's count (LIMITS_MASTODON) or
 * graphemes (LIMITS_GRAPHEMES); the ellipsis counts one in each.  A single
 * word too long for max is cut between code points, or between graphemes
 * for LIMITS_GRAPHEMES, so no accent is torn from its letter.  Text that
 * fits is returned unchanged (*cut false); when max is 0 and text is not
 * empty, the result is "" (not even the ellipsis fits).  Bad UTF-8 bytes
 * come back as U+FFFD.  Returns a new string (free with free()), or NULL
 * when out of memory; cut may be NULL.  Borrows text for the call.
 */
char *limits_fit(const char *text, enum limits_unit unit, size_t max, bool *cut)
{
    struct fit_text t;
    char *breaks = NULL, *r = NULL;
    size_t len;

    assert(text != NULL);
    assert(unit == LIMITS_CHARS || unit == LIMITS_MASTODON || unit == LIMITS_GRAPHEMES);
    if (cut != NULL)
        *cut = false;
    if (fit_text_init(&t, text) < 0)
        return NULL;
    if (unit == LIMITS_GRAPHEMES && t.n > 0) {
        /* One segmentation serves both the measure and the walk. */
        size_t i;

        breaks = malloc(t.n);
        if (breaks == NULL)
            goto done;
        u8_grapheme_breaks((const uint8_t *)t.s, t.n, breaks);
        for (len = 0, i = 0; i < t.n; i++)
            len += breaks[i] != 0;
    } else if (unit == LIMITS_MASTODON) {
        len = limits_mastodon_len(t.s);
    } else {
        len = limits_chars(t.s);        /* also an empty text's 0 graphemes */
    }
    if (len <= max) {
        r = fit_whole(&t);
        goto done;
    }
    if (cut != NULL)
        *cut = true;
    r = fit_walk(&t, unit, breaks, max);
done:
    free(breaks);
    free(t.owned);
    return r;
}
