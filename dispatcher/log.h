/*
 * log - structured logfmt lines on stderr, and recipient pseudonyms.
 *
 * One line per event:
 *   ts=2026-03-01T07:00:02.120Z level=warn mod=webhook event=delivery_failed k=v ...
 * The level is checked before any argument is formatted.  Callers log
 * identifiers, never people: job ids, delivery keys, channels, and the
 * pseudonym of a contact point (log_pseudonym), never an address, number,
 * token, message body, URL query or secret.
 */
#ifndef HEROLD_LOG_H
#define HEROLD_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_FATAL };

extern enum log_level log_min_level;

/* log_parse_level - "debug".."fatal" into *out; -1 if unknown. */
int log_parse_level(const char *name, enum log_level *out);

/* log_write - one line; fmt formats the trailing "k=v k=v" part. */
void log_write(enum log_level lvl, const char *mod, const char *event,
               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#define LOG(lvl, mod, event, fmt, ...)                                  \
    do {                                                                \
        if ((lvl) >= log_min_level)                                     \
            log_write((lvl), (mod), (event), (fmt), ##__VA_ARGS__);     \
    } while (0)

#define LOG_EVENT(lvl, mod, event) LOG(lvl, mod, event, "%s", "")

/* log_quote - s as a logfmt value: quoted and escaped when it holds
 * spaces, quotes, '=' or control characters; truncated to fit buf. */
const char *log_quote(const char *s, char *buf, size_t size);

/* log_set_pseudonym_key - borrow key (len bytes) for log_pseudonym; the
 * caller keeps it alive and secret.  Without a key pseudonyms use a
 * per-process random key, so they still never reveal the contact. */
void log_set_pseudonym_key(const unsigned char *key, size_t len);

/* log_pseudonym - "p:" plus 12 hex digits of HMAC-SHA256(key, contact)
 * into out (at least 16 bytes).  The CLI computes the same value to
 * answer "did X get Y" without herold logging X. */
const char *log_pseudonym(const char *contact, char out[16]);

#endif
