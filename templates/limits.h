/*
 * limits - how long a rendered text is in the units each channel counts,
 * and how to make it fit.
 *
 *  - SMS: GSM 03.38 7-bit (basic table plus the extension table, whose
 *    characters take two septets) when every character is encodable, else
 *    UCS-2 (UTF-16 code units: characters outside the BMP, like emoji, take
 *    two).  Segments: 160 septets single / 153 per part concatenated; 70
 *    units single / 67 per part for UCS-2.  A two-septet character or a
 *    surrogate pair is never split across parts.
 *  - Mastodon: 500 characters (Unicode code points), every http(s) URL
 *    counted as 23 whatever its length, as Mastodon counts it.
 *  - Bluesky: 300 graphemes (extended grapheme clusters, UAX #29, via
 *    libunistring); links count as the text holds them.
 *  - Push: title and body limits in characters, from configuration.
 *
 * Truncation cuts at a word boundary and appends "…" so that the result,
 * ellipsis included, fits; a single word longer than the limit is cut at a
 * character (or grapheme) boundary.  An SMS that stays GSM-7 gets "..."
 * instead: "…" is not in GSM 03.38 and would make it UCS-2.  Never
 * produces invalid UTF-8.  Input should be valid UTF-8 (rendered templates
 * are); a bad byte counts as one character, U+FFFD, and comes back from
 * the fit functions as U+FFFD.
 */
#ifndef HEROLD_LIMITS_H
#define HEROLD_LIMITS_H

#include <stdbool.h>
#include <stddef.h>

enum sms_encoding { SMS_GSM7, SMS_UCS2 };

struct sms_info {
    enum sms_encoding encoding;
    size_t units;       /* septets (GSM-7) or UTF-16 code units (UCS-2) */
    size_t chars;       /* Unicode code points */
    size_t segments;    /* 0 for an empty text */
};

/* limits_sms - measure text as an SMS. */
void limits_sms(const char *text, struct sms_info *out);

/* limits_sms_fit - the longest prefix of text (cut at a word boundary,
 * "..." appended when cut and the result is GSM-7, "…" when it is UCS-2)
 * that fits in max_segments.  Returns a new string (free with free()) or
 * NULL when out of memory.  *cut tells whether it was shortened. */
char *limits_sms_fit(const char *text, size_t max_segments, bool *cut);

/* Code points of text. */
size_t limits_chars(const char *text);

/* Mastodon's count: code points, each http:// or https:// URL as 23. */
size_t limits_mastodon_len(const char *text);

/* Bluesky's count: extended grapheme clusters. */
size_t limits_graphemes(const char *text);

enum limits_unit { LIMITS_CHARS, LIMITS_MASTODON, LIMITS_GRAPHEMES };

/* limits_fit - the longest word-boundary prefix of text whose length in
 * unit, "…" included, is at most max; a new string (free()) or NULL when
 * out of memory.  *cut tells whether it was shortened. */
char *limits_fit(const char *text, enum limits_unit unit, size_t max, bool *cut);

#endif
