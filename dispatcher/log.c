/*
 * log - logfmt writer and recipient pseudonyms.
 *
 * Writes whole lines to stderr with one write(2) each so lines from the
 * SMTP worker threads never interleave.  Must never be handed contact
 * points, bodies or secrets: it cannot tell them from identifiers.
 */
#include "log.h"

#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum log_level log_min_level = LOG_INFO;

static const char *const log_names[] = {"debug", "info", "warn", "error", "fatal"};
static const unsigned char *log_key;
static size_t log_key_len;
static unsigned char log_random_key[32];
static bool log_random_key_ready;

int log_parse_level(const char *name, enum log_level *out)
{
    for (int i = LOG_DEBUG; i <= LOG_FATAL; i++) {
        if (strcmp(name, log_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_write(enum log_level lvl, const char *mod, const char *event,
               const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    size_t n;
    va_list ap;
    int k;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof line, "ts=%Y-%m-%dT%H:%M:%S", &tm);
    k = snprintf(line + n, sizeof line - n, ".%03ldZ level=%s mod=%s event=%s",
                 ts.tv_nsec / 1000000, log_names[lvl], mod, event);
    n += (size_t)k;
    if (fmt[0] != '\0' && n < sizeof line - 2) {
        line[n++] = ' ';
        va_start(ap, fmt);
        k = vsnprintf(line + n, sizeof line - n, fmt, ap);
        va_end(ap);
        if (k > 0)
            n += (size_t)k;
        if (n >= sizeof line - 1)
            n = sizeof line - 2;
        /* a trailing space from an empty last field is harmless but ugly */
        while (n > 0 && line[n - 1] == ' ')
            n--;
    }
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, n) < 0) {
        /* nowhere left to report a failing stderr */
    }
}

const char *log_quote(const char *s, char *buf, size_t size)
{
    bool plain = s[0] != '\0';
    size_t o = 0;

    for (const char *p = s; *p && plain; p++)
        if (*p == ' ' || *p == '"' || *p == '=' || *p == '\\' || (unsigned char)*p < 0x20)
            plain = false;
    if (plain) {
        snprintf(buf, size, "%s", s);
        return buf;
    }
    if (size < 3) {
        buf[0] = '\0';
        return buf;
    }
    buf[o++] = '"';
    for (const char *p = s; *p && o + 3 < size; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c < 0x20) {
            buf[o++] = ' ';
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

void log_set_pseudonym_key(const unsigned char *key, size_t len)
{
    log_key = key;
    log_key_len = len;
}

const char *log_pseudonym(const char *contact, char out[16])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    static const char hex[] = "0123456789abcdef";

    if (log_key == NULL) {
        if (!log_random_key_ready) {
            if (RAND_bytes(log_random_key, sizeof log_random_key) != 1)
                memset(log_random_key, 0x5a, sizeof log_random_key);
            log_random_key_ready = true;
        }
        log_key = log_random_key;
        log_key_len = sizeof log_random_key;
    }
    HMAC(EVP_sha256(), log_key, (int)log_key_len, (const unsigned char *)contact,
         strlen(contact), mac, &maclen);
    out[0] = 'p';
    out[1] = ':';
    for (int i = 0; i < 6; i++) {
        out[2 + 2 * i] = hex[mac[i] >> 4];
        out[3 + 2 * i] = hex[mac[i] & 15];
    }
    out[14] = '\0';
    return out;
}
