/*
 * job - parse and validate one job document, job format v1 (docs/jobs.md).
 *
 * Owns the parsed JSON tree and the recipient array of each struct job it
 * returns; every string in a job borrows from that tree.  Pure: no I/O, no
 * clock but the caller's `now`, no global state, so heroldd and
 * `herold enqueue` give the same answer for the same bytes.
 *
 * It must never put a field's value into an error: reasons name the field
 * (as a JSON path) and the rule or limit, because values may be personal
 * data.  Object keys from the input appear in paths only when they are
 * plain identifiers; anything else is shown as "?".
 *
 * Fields are checked in one fixed order and the first bad one is reported:
 *   size, JSON syntax, top level is an object, v, reserved fields
 *   (template, data, references), unknown fields (in document order), id,
 *   kind, priority (value, then lane), channels, audience, subject, text,
 *   html, lang, topic, send_at, expires_at, options, meta.
 * docs/jobs.md repeats this order; keep the two in step.
 */
#include "job.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

/* A send_at at most this far ahead of `now` counts as "now". */
#define JOB_SEND_AT_SLACK 1.0
/* How far ahead a job may be scheduled. */
#define JOB_SEND_AT_MAX (400.0 * 86400)
#define JOB_META_MAX_BYTES 4096
#define JOB_RCPT_ID_MAX 64
#define JOB_EMAIL_MIN 3
#define JOB_EMAIL_MAX 254
#define JOB_CHANNEL_NAME_MAX 32
#define JOB_TOPIC_MAX 64
#define JOB_LANG_MAX 35
#define JOB_COUNT(a) (sizeof (a) / sizeof *(a))
/* Longest object key shown in an error path; longer or odder keys show as "?". */
#define JOB_KEY_SHOWN_MAX 64

static const char *const job_known_fields[] = {
    "v", "id", "kind", "priority", "channels", "audience", "subject", "text",
    "html", "template", "data", "lang", "topic", "send_at", "expires_at", "options",
    "meta", "references", "msg_type",
};

const char *const job_part_names[JOB_PARTS] = {
    "email.subject", "email.txt", "email.html", "sms.txt", "push.title", "push.body",
    "social.txt",
};

static const char *const job_kinds[] = {
    "alert", "announcement", "newsletter", "notice",
};

static const char *const job_priorities[] = {"urgent", "normal", "bulk"};

static const char *const job_audience_forms[] = {
    "recipients", "citizens", "topic", "topics", "all", "reached_by",
};

static const char *const job_msg_types[] = {"alert", "update", "cancel"};

/* Recipient id and its index, sorted to find duplicates in O(n log n). */
struct job_rcpt_key {
    const char *id;
    size_t idx;
};

/* job_bad - fill err as HERR_INPUT for path; returns -1. */
static int job_bad(struct herr *err, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int job_bad(struct herr *err, const char *path, const char *fmt, ...)
{
    char msg[sizeof err->msg];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return herr_set(err, HERR_INPUT, path, "%s", msg);
}

/* job_oom - fill err as HERR_RESOURCE; returns -1. */
static int job_oom(struct herr *err)
{
    return herr_set(err, HERR_RESOURCE, "",
                    "out of memory while reading the job; try again later");
}

/* job_in_list - index of s in list, or -1. */
static int job_in_list(const char *s, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, list[i]) == 0)
            return (int)i;
    return -1;
}

/* job_key_shown - key if it is safe to print in a path, else "?". */
static const char *job_key_shown(const char *key)
{
    size_t n = 0;

    for (const char *p = key; *p != '\0'; p++, n++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return "?";
    }
    return (n >= 1 && n <= JOB_KEY_SHOWN_MAX) ? key : "?";
}

/* job_chars_ok - every byte of s (of length len) is in [a-z0-9] or extra. */
static bool job_chars_ok(const char *s, size_t len, const char *extra)
{
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
            continue;
        if (c == '\0' || strchr(extra, c) == NULL)
            return false;
    }
    return true;
}

/*
 * job_id_ok - is s a job or recipient id: 1..max characters, each one of
 * A-Z a-z 0-9 . _ : -?  Returns 1 or 0; NULL is not an id.
 */
int job_id_ok(const char *s, size_t max)
{
    size_t n = 0;

    if (s == NULL)
        return 0;
    for (; s[n] != '\0'; n++) {
        char c = s[n];
        if (n >= max)
            return 0;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
              c == '-'))
            return 0;
    }
    return n >= 1;
}

/* job_digits - parse exactly n ASCII digits at s into *out; -1 if not. */
static int job_digits(const char *s, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* job_leap - is y a leap year in the proleptic Gregorian calendar? */
static bool job_leap(long y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* job_days_from_civil - days from 1970-01-01 to y-m-d (Gregorian), for
 * 0 <= y <= 9999.  Counting days from 0001-01-01 needs a positive year, so
 * both dates are moved 400 years on: a 400-year cycle is a whole number of
 * days (146097) with the same leap years, so the difference is unchanged. */
static long job_days_from_civil(long y, int m, int d)
{
    static const int before_month[12] = {0, 31, 59, 90, 120, 151,
                                         181, 212, 243, 273, 304, 334};
    long ys = y + 400;
    long py = ys - 1;
    long days = py * 365 + py / 4 - py / 100 + py / 400; /* to ys-01-01 */
    long epoch = 2369L * 365 + 2369 / 4 - 2369 / 100 + 2369 / 400; /* 1970+400 */

    days += before_month[m - 1] + (m > 2 && job_leap(y) ? 1 : 0) + (d - 1);
    return days - epoch;
}

/*
 * job_parse_time - read an RFC 3339 date-time, e.g.
 * "2026-12-01T07:00:00+01:00", "2026-12-01T06:00:00.250Z", into unix
 * seconds in *out.  Strict: four-digit year, two-digit fields, "T" (or "t")
 * between date and time, an optional fraction of one or more digits, and
 * "Z" ("z") or a +hh:mm / -hh:mm offset; nothing else before or after.
 * Each field is range-checked (days per month, leap years; second 60 is
 * accepted for leap seconds and counts as the next second).  Returns 0, or
 * -1 with *out untouched when s is malformed.  Pure; no timegm, no TZ.
 */
int job_parse_time(const char *s, double *out)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30,
                                  31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
    double frac = 0.0, scale = 0.1;
    const char *p;
    long days;

    if (s == NULL || out == NULL)
        return -1;
    /* "YYYY-MM-DDTHH:MM:SS" is 19 characters; check each separator before
     * reading past it so that a short string is never overrun. */
    if (job_digits(s, 4, &y) || s[4] != '-' || job_digits(s + 5, 2, &mo) ||
        s[7] != '-' || job_digits(s + 8, 2, &d) ||
        (s[10] != 'T' && s[10] != 't') || job_digits(s + 11, 2, &h) ||
        s[13] != ':' || job_digits(s + 14, 2, &mi) || s[16] != ':' ||
        job_digits(s + 17, 2, &sec))
        return -1;
    p = s + 19;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return -1;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (scale >= 1e-9) /* beyond nanoseconds a double cannot tell */
                frac += (*p - '0') * scale;
            scale /= 10;
        }
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p == '+' ? 1 : -1;
        if (job_digits(p + 1, 2, &oh) || p[3] != ':' ||
            job_digits(p + 4, 2, &om))
            return -1;
        p += 6;
    } else {
        return -1;
    }
    if (*p != '\0')
        return -1;

    if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 60 ||
        oh > 23 || om > 59)
        return -1;
    if (d > mdays[mo - 1] + (mo == 2 && job_leap(y) ? 1 : 0))
        return -1;

    days = job_days_from_civil(y, mo, d);
    /* Local time minus the offset is UTC: 07:00+01:00 is 06:00Z. */
    *out = (double)days * 86400.0 + h * 3600.0 + mi * 60.0 + sec + frac -
           sign * (oh * 3600.0 + om * 60.0);
    return 0;
}

/* job_json_error - turn a jansson load error into err.  jansson's own text
 * may quote up to 20 bytes of the input ("... near '...'"), so only its
 * position and a fixed phrase per error code are kept.  jansson reports
 * some allocation failures with no error at all (empty text); those are
 * resource errors, not bad input. */
static int job_json_error(const json_error_t *je, struct herr *err)
{
    const char *what;

    if (je->text[0] == '\0')
        return job_oom(err);
    switch (json_error_code(je)) {
    case json_error_out_of_memory:
        return job_oom(err);
    case json_error_stack_overflow:
        what = "nested deeper than 2048 levels";
        break;
    case json_error_invalid_utf8:
        what = "invalid UTF-8";
        break;
    case json_error_premature_end_of_input:
        what = "unexpected end of input";
        break;
    case json_error_end_of_input_expected:
        what = "unexpected data after the end of the document";
        break;
    case json_error_null_character:
        what = "\\u0000 is not allowed in strings";
        break;
    case json_error_null_byte_in_key:
        what = "\\u0000 is not allowed in keys";
        break;
    case json_error_duplicate_key:
        what = "duplicate key";
        break;
    case json_error_numeric_overflow:
        what = "number out of range";
        break;
    default:
        what = "syntax error";
        break;
    }
    if (je->line < 1)
        return job_bad(err, "", "invalid JSON: %s", what);
    return job_bad(err, "", "invalid JSON at line %d column %d: %s",
                   je->line, je->column, what);
}

/* job_string - the string at key: 0 and *out (NULL when absent and not
 * required), or -1 with err. */
static int job_string(json_t *root, const char *key, bool required,
                      const char **out, struct herr *err)
{
    json_t *v = json_object_get(root, key);

    *out = NULL;
    if (v == NULL) {
        if (required)
            return job_bad(err, key, "required");
        return 0;
    }
    if (!json_is_string(v))
        return job_bad(err, key, "expected a string");
    *out = json_string_value(v);
    return 0;
}

/* job_check_version - "v" must be the integer 1. */
static int job_check_version(json_t *root, struct herr *err)
{
    json_t *v = json_object_get(root, "v");

    if (v == NULL)
        return job_bad(err, "v", "required (the job format version, 1)");
    if (!json_is_integer(v))
        return job_bad(err, "v", "expected the integer %d", JOB_VERSION);
    if (json_integer_value(v) != JOB_VERSION)
        return job_bad(err, "v",
                       "job format version %" JSON_INTEGER_FORMAT
                       " is not supported; this herold reads version %d",
                       json_integer_value(v), JOB_VERSION);
    return 0;
}

/* job_check_fields - reserved top-level fields, then unknown ones. */
static int job_check_fields(json_t *root, struct herr *err)
{
    const char *key;
    json_t *v;

    json_object_foreach(root, key, v) {
        if (job_in_list(key, job_known_fields, JOB_COUNT(job_known_fields)) < 0)
            return job_bad(err, job_key_shown(key),
                           "unknown field (job format v%d)", JOB_VERSION);
    }
    return 0;
}

/* job_check_priority - explicit or default priority, and the lane. */
static int job_check_priority(struct job *j, json_t *root, const char *lane,
                              struct herr *err)
{
    const char *p;
    bool dflt = false;

    if (job_string(root, "priority", false, &p, err))
        return -1;
    if (p == NULL) {
        p = strcmp(j->kind, "alert") == 0 ? "urgent" : "normal";
        dflt = true;
    } else if (job_in_list(p, job_priorities, JOB_COUNT(job_priorities)) < 0) {
        return job_bad(err, "priority", "expected one of urgent, normal, bulk");
    }
    j->priority = p;
    if (lane == NULL || strcmp(p, lane) == 0)
        return 0;
    /* The lane comes from the stream name, never from the producer; an
     * unknown one is a caller bug, and is still never echoed. */
    assert(job_in_list(lane, job_priorities, JOB_COUNT(job_priorities)) >= 0);
    if (job_in_list(lane, job_priorities, JOB_COUNT(job_priorities)) < 0)
        lane = "?";
    if (dflt)
        return job_bad(err, "priority",
                       "job is \"%s\" (the default for kind \"%s\") but arrived "
                       "on the \"%s\" lane", p, j->kind, lane);
    return job_bad(err, "priority", "job says \"%s\" but arrived on the \"%s\" lane",
                   p, lane);
}

/* job_check_channels - non-empty, unique, well-formed, usable names. */
static int job_check_channels(struct job *j, json_t *root,
                              job_channel_ok_fn *channel_ok, void *arg,
                              struct herr *err)
{
    json_t *a = json_object_get(root, "channels");
    char path[64];
    size_t n;

    if (a == NULL)
        return job_bad(err, "channels", "required");
    if (!json_is_array(a) || json_array_size(a) == 0)
        return job_bad(err, "channels", "expected a non-empty array of channel names");
    n = json_array_size(a);
    if (n > JOB_MAX_CHANNELS)
        return job_bad(err, "channels", "%zu channels; the limit is %d",
                       n, JOB_MAX_CHANNELS);
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(a, i);
        const char *name;
        size_t len;

        snprintf(path, sizeof path, "channels[%zu]", i);
        if (!json_is_string(c))
            return job_bad(err, path, "expected a channel name (a string)");
        name = json_string_value(c);
        len = json_string_length(c);
        if (len < 1 || len > JOB_CHANNEL_NAME_MAX || !job_chars_ok(name, len, "_-"))
            return job_bad(err, path, "expected 1-%d characters of a-z 0-9 _ -",
                           JOB_CHANNEL_NAME_MAX);
        for (size_t k = 0; k < i; k++)
            if (strcmp(j->channels[k], name) == 0)
                return job_bad(err, path, "duplicate channel");
        if (channel_ok != NULL && !channel_ok(name, arg))
            return job_bad(err, path, "unknown or unconfigured channel");
        j->channels[i] = name;
    }
    j->nchannels = n;
    return 0;
}

/* job_email_ok - s looks like a deliverable mailbox: 3-254 bytes, exactly
 * one @, a non-empty local part, a domain with an inner dot, and no
 * space, control character or line break anywhere (it becomes RCPT TO). */
static bool job_email_ok(const char *s, size_t len)
{
    const char *at = NULL, *dot;
    size_t dlen;

    if (len < JOB_EMAIL_MIN || len > JOB_EMAIL_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const unsigned char *u = (const unsigned char *)s + i;
        /* C0, space, DEL; C1 controls (C2 80..9F); LS and PS (E2 80 A8/A9).
         * s is NUL-terminated, so u[1] and u[2] can be read. */
        if (c <= 0x20 || c == 0x7f || (c == 0xC2 && u[1] <= 0x9F) ||
            (c == 0xE2 && u[1] == 0x80 && (u[2] == 0xA8 || u[2] == 0xA9)))
            return false;
        if (c == '@') {
            if (at != NULL)
                return false;
            at = s + i;
        }
    }
    if (at == NULL || at == s)
        return false;
    dlen = len - (size_t)(at + 1 - s);
    dot = memchr(at + 1, '.', dlen);
    return dot != NULL && dot != at + 1 && at[dlen] != '.';
}

/* job_phone_ok - E.164: "+", a non-zero digit, 8-15 digits in all. */
static bool job_phone_ok(const char *s, size_t len)
{
    if (len < 9 || len > 16 || s[0] != '+' || s[1] == '0')
        return false;
    for (size_t i = 1; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* job_rcpt_key_cmp - qsort order: by id, then by position in the job. */
static int job_rcpt_key_cmp(const void *a, const void *b)
{
    const struct job_rcpt_key *x = a, *y = b;
    int c = strcmp(x->id, y->id);

    if (c != 0)
        return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* job_check_unique - report the first recipient (in job order) whose id
 * an earlier recipient already has.  Returns 0, or -1 with err. */
static int job_check_unique(const struct job *j, struct herr *err)
{
    struct job_rcpt_key *keys;
    size_t worst = SIZE_MAX;
    char path[64];

    if (j->nrcpts < 2)
        return 0;
    keys = herold_calloc(j->nrcpts, sizeof *keys);
    if (keys == NULL)
        return job_oom(err);
    for (size_t i = 0; i < j->nrcpts; i++) {
        keys[i].id = j->rcpts[i].id;
        keys[i].idx = i;
    }
    qsort(keys, j->nrcpts, sizeof *keys, job_rcpt_key_cmp);
    /* Within a run of equal ids the second entry is the first duplicate
     * of that id; the smallest of those is the first in the job. */
    for (size_t i = 1; i < j->nrcpts; i++)
        if (strcmp(keys[i].id, keys[i - 1].id) == 0 &&
            (i < 2 || strcmp(keys[i - 1].id, keys[i - 2].id) != 0) &&
            keys[i].idx < worst)
            worst = keys[i].idx;
    herold_free(keys);
    if (worst == SIZE_MAX)
        return 0;
    snprintf(path, sizeof path, "audience.recipients[%zu].id", worst);
    return job_bad(err, path, "duplicate recipient id");
}

/* job_check_recipient - one element of audience.recipients into *r. */
static int job_check_recipient(json_t *o, size_t i, struct job_recipient *r,
                               struct herr *err)
{
    char path[128];
    const char *key;
    json_t *v;

    snprintf(path, sizeof path, "audience.recipients[%zu]", i);
    if (!json_is_object(o))
        return job_bad(err, path, "expected an object");
    json_object_foreach(o, key, v) {
        if (strcmp(key, "id") != 0 && strcmp(key, "email") != 0 &&
            strcmp(key, "phone") != 0) {
            snprintf(path, sizeof path, "audience.recipients[%zu].%s", i,
                     job_key_shown(key));
            return job_bad(err, path, "unknown field (job format v%d)", JOB_VERSION);
        }
    }

    v = json_object_get(o, "id");
    snprintf(path, sizeof path, "audience.recipients[%zu].id", i);
    if (v == NULL)
        return job_bad(err, path, "required");
    if (!json_is_string(v) || !job_id_ok(json_string_value(v), JOB_RCPT_ID_MAX))
        return job_bad(err, path, "expected 1-%d characters of A-Z a-z 0-9 . _ : -",
                       JOB_RCPT_ID_MAX);
    r->id = json_string_value(v);

    v = json_object_get(o, "email");
    if (v != NULL) {
        snprintf(path, sizeof path, "audience.recipients[%zu].email", i);
        if (!json_is_string(v) ||
            !job_email_ok(json_string_value(v), json_string_length(v)))
            return job_bad(err, path,
                           "expected an e-mail address: %d-%d characters, one @, "
                           "a domain with a dot, no spaces or control characters",
                           JOB_EMAIL_MIN, JOB_EMAIL_MAX);
        r->email = json_string_value(v);
    }

    v = json_object_get(o, "phone");
    if (v != NULL) {
        snprintf(path, sizeof path, "audience.recipients[%zu].phone", i);
        if (!json_is_string(v) ||
            !job_phone_ok(json_string_value(v), json_string_length(v)))
            return job_bad(err, path,
                           "expected an E.164 number: + and 8-15 digits");
        r->phone = json_string_value(v);
    }
    return 0;
}

/* job_topic_ok - a topic name: 1-64 of a-z 0-9 _ -, not starting with _ or -. */
static bool job_topic_ok(const char *s)
{
    size_t n = strlen(s);

    return n >= 1 && n <= JOB_TOPIC_MAX && s[0] != '-' && s[0] != '_' &&
           job_chars_ok(s, n, "_-");
}

/* job_check_citizens - audience.citizens: unique citizen ids. */
static int job_check_citizens(struct job *j, json_t *a, const struct job_limits *lim,
                              struct herr *err)
{
    char path[128];
    size_t n;

    if (!json_is_array(a) || json_array_size(a) == 0)
        return job_bad(err, "audience.citizens", "expected a non-empty array of citizen ids");
    n = json_array_size(a);
    if (lim->max_recipients >= 0 && n > (size_t)lim->max_recipients)
        return job_bad(err, "audience.citizens", "%zu citizens; the limit is %d", n,
                       lim->max_recipients);
    j->rcpts = herold_calloc(n, sizeof *j->rcpts);
    if (j->rcpts == NULL)
        return job_oom(err);
    for (size_t i = 0; i < n; i++) {
        const char *id = json_string_value(json_array_get(a, i));
        if (id == NULL || !job_id_ok(id, 64)) {
            snprintf(path, sizeof path, "audience.citizens[%zu]", i);
            return job_bad(err, path, "expected 1-64 characters of A-Z a-z 0-9 . _ : -");
        }
        j->rcpts[i].id = id;
        j->nrcpts = i + 1;
    }
    if (job_check_unique(j, err) != 0) {
        /* same check, the path names this form */
        const char *b = strchr(err->path, '[');
        snprintf(path, sizeof path, "audience.citizens%s", b ? b : "");
        if ((b = strrchr(path, '.')) != NULL && strcmp(b, ".id") == 0)
            *(char *)b = '\0';
        snprintf(err->path, sizeof err->path, "%s", path);
        snprintf(err->msg, sizeof err->msg, "duplicate citizen id");
        return -1;
    }
    return 0;
}

/* job_check_topics - audience.topic (one name) or audience.topics (a list). */
static int job_check_topics(struct job *j, json_t *aud, struct herr *err)
{
    json_t *t = json_object_get(aud, "topic"), *ts = json_object_get(aud, "topics");
    char path[128];

    if (t != NULL) {
        if (!json_is_string(t) || !job_topic_ok(json_string_value(t)))
            return job_bad(err, "audience.topic", "expected 1-%d characters of a-z 0-9 _ -",
                           JOB_TOPIC_MAX);
        j->topics[j->ntopics++] = json_string_value(t);
        return 0;
    }
    if (!json_is_array(ts) || json_array_size(ts) == 0 ||
        json_array_size(ts) > JOB_MAX_TOPICS)
        return job_bad(err, "audience.topics", "expected an array of 1-%d topic names",
                       JOB_MAX_TOPICS);
    for (size_t i = 0; i < json_array_size(ts); i++) {
        const char *name = json_string_value(json_array_get(ts, i));
        snprintf(path, sizeof path, "audience.topics[%zu]", i);
        if (name == NULL || !job_topic_ok(name))
            return job_bad(err, path, "expected 1-%d characters of a-z 0-9 _ -",
                           JOB_TOPIC_MAX);
        for (size_t k = 0; k < j->ntopics; k++)
            if (strcmp(j->topics[k], name) == 0)
                return job_bad(err, path, "duplicate topic");
        j->topics[j->ntopics++] = name;
    }
    return 0;
}

/* job_check_audience - exactly one form: recipients, citizens, topic,
 * topics or all (docs/jobs.md). */
static int job_check_audience(struct job *j, json_t *root,
                              const struct job_limits *lim, struct herr *err)
{
    json_t *aud = json_object_get(root, "audience");
    json_t *a, *v;
    const char *key, *form = NULL;
    char path[128];
    size_t n;

    if (aud == NULL)
        return job_bad(err, "audience", "required");
    if (!json_is_object(aud))
        return job_bad(err, "audience", "expected an object");
    json_object_foreach(aud, key, v) {
        if (job_in_list(key, job_audience_forms, JOB_COUNT(job_audience_forms)) < 0) {
            snprintf(path, sizeof path, "audience.%s", job_key_shown(key));
            return job_bad(err, path, "unknown field (job format v%d)", JOB_VERSION);
        }
        if (form != NULL) {
            snprintf(path, sizeof path, "audience.%s", key);
            return job_bad(err, path, "only one of recipients, citizens, topic, topics, all, "
                           "reached_by");
        }
        form = key;
    }
    if (form == NULL)
        return job_bad(err, "audience", "expected one of recipients, citizens, topic, topics, "
                       "all, reached_by");
    if (strcmp(form, "citizens") == 0) {
        j->audience = AUD_CITIZENS;
        return job_check_citizens(j, json_object_get(aud, form), lim, err);
    }
    if (strcmp(form, "topic") == 0 || strcmp(form, "topics") == 0) {
        j->audience = AUD_TOPICS;
        return job_check_topics(j, aud, err);
    }
    if (strcmp(form, "all") == 0) {
        if (!json_is_true(json_object_get(aud, "all")))
            return job_bad(err, "audience.all", "expected true");
        j->audience = AUD_ALL;
        return 0;
    }
    if (strcmp(form, "reached_by") == 0) {
        const char *id = json_string_value(json_object_get(aud, form));
        if (id == NULL || !job_id_ok(id, JOB_ID_MAX))
            return job_bad(err, "audience.reached_by", "expected a job id");
        j->audience = AUD_REACHED;
        j->reached_by = id;
        return 0;
    }

    j->audience = AUD_RECIPIENTS;
    a = json_object_get(aud, "recipients");
    if (!json_is_array(a) || json_array_size(a) == 0)
        return job_bad(err, "audience.recipients",
                       "expected a non-empty array of recipients");
    n = json_array_size(a);
    if (lim->max_recipients >= 0 && n > (size_t)lim->max_recipients)
        return job_bad(err, "audience.recipients", "%zu recipients; the limit is %d",
                       n, lim->max_recipients);

    j->rcpts = herold_calloc(n, sizeof *j->rcpts);
    if (j->rcpts == NULL)
        return job_oom(err);
    for (size_t i = 0; i < n; i++) {
        if (job_check_recipient(json_array_get(a, i), i, &j->rcpts[i], err))
            return -1;
        j->nrcpts = i + 1;
    }
    return job_check_unique(j, err);
}

/* job_check_subject - 1..max characters, no line break or control
 * character: the subject goes into a mail header, and a line break there
 * is header injection.  Rejected, never stripped. */
static int job_check_subject(struct job *j, json_t *root,
                             const struct job_limits *lim, struct herr *err)
{
    const unsigned char *s;
    size_t len, chars = 0;

    if (job_string(root, "subject", true, &j->subject, err))
        return -1;
    s = (const unsigned char *)j->subject;
    len = strlen(j->subject);
    for (size_t i = 0; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) /* jansson guarantees valid UTF-8 */
            chars++;
    if (chars == 0)
        return job_bad(err, "subject", "must not be empty");
    if (lim->max_subject_chars >= 0 && chars > (size_t)lim->max_subject_chars)
        return job_bad(err, "subject", "%zu characters; the limit is %d",
                       chars, lim->max_subject_chars);
    if (len != json_string_length(json_object_get(root, "subject")))
        return job_bad(err, "subject", "must not contain control characters");
    for (size_t i = 0; i < len; i++) {
        unsigned c = s[i];
        /* Line breaks: CR, LF, VT, FF, NEL (C2 85), LS and PS (E2 80 A8/A9). */
        if (c == '\r' || c == '\n' || c == '\v' || c == '\f' ||
            (c == 0xC2 && s[i + 1] == 0x85) ||
            (c == 0xE2 && s[i + 1] == 0x80 && (s[i + 2] == 0xA8 || s[i + 2] == 0xA9)))
            return job_bad(err, "subject", "must not contain line breaks");
        /* Other C0 controls but TAB, DEL and the C1 controls (C2 80..9F). */
        if ((c < 0x20 && c != '\t') || c == 0x7f ||
            (c == 0xC2 && s[i + 1] >= 0x80 && s[i + 1] <= 0x9F))
            return job_bad(err, "subject", "must not contain control characters");
    }
    return 0;
}

/* job_check_body - text (required) or html (optional): 1..max bytes. */
static int job_check_body(json_t *root, const char *key, bool required,
                          const struct job_limits *lim, const char **out,
                          struct herr *err)
{
    size_t len;

    if (job_string(root, key, required, out, err))
        return -1;
    if (*out == NULL)
        return 0;
    len = json_string_length(json_object_get(root, key));
    if (len == 0)
        return job_bad(err, key, "must not be empty");
    if (lim->max_text_bytes >= 0 && len > (size_t)lim->max_text_bytes)
        return job_bad(err, key, "%zu bytes; the limit is %ld", len,
                       lim->max_text_bytes);
    return 0;
}

/* job_check_content - either a template (with optional data) or inline
 * content (subject, text, optional html), never both. */
static int job_check_content(struct job *j, json_t *root, const struct job_limits *lim,
                             struct herr *err)
{
    const char *t;
    json_t *data = json_object_get(root, "data");
    static const char *const inline_fields[] = {"subject", "text", "html"};

    if (job_string(root, "template", false, &t, err))
        return -1;
    if (t == NULL) {
        if (data != NULL)
            return job_bad(err, "data", "only allowed together with template");
        return job_check_subject(j, root, lim, err) ||
               job_check_body(root, "text", true, lim, &j->text, err) ||
               job_check_body(root, "html", false, lim, &j->html, err);
    }
    if (strlen(t) < 1 || strlen(t) > 64 || !job_chars_ok(t, strlen(t), "-"))
        return job_bad(err, "template", "expected 1-64 characters of a-z 0-9 -");
    for (size_t i = 0; i < JOB_COUNT(inline_fields); i++)
        if (json_object_get(root, inline_fields[i]) != NULL)
            return job_bad(err, inline_fields[i],
                           "not allowed together with template (the template provides it)");
    if (data != NULL && !json_is_object(data))
        return job_bad(err, "data", "expected an object");
    j->template = t;
    j->data = data;
    return 0;
}

/* job_lang_ok - a BCP 47-like tag: 2-3 lowercase letters, then subtags of
 * "-" and 1-8 letters or digits, where a one-character subtag (such as
 * the private-use "x" in "de-x-ls") must be followed by another; at most
 * 35 characters. */
static bool job_lang_ok(const char *s)
{
    size_t len = strlen(s), i = 0, start;

    if (len > JOB_LANG_MAX)
        return false;
    while (i < len && s[i] >= 'a' && s[i] <= 'z')
        i++;
    if (i < 2 || i > 3)
        return false;
    while (i < len) {
        if (s[i] != '-')
            return false;
        start = ++i;
        while (i < len && ((s[i] >= 'a' && s[i] <= 'z') ||
                           (s[i] >= 'A' && s[i] <= 'Z') ||
                           (s[i] >= '0' && s[i] <= '9')))
            i++;
        if (i - start < 1 || i - start > 8)
            return false;
        if (i - start == 1 && i == len)
            return false;
    }
    return true;
}

/* job_check_time - an optional RFC 3339 field into *out (0 if absent). */
static int job_check_time(json_t *root, const char *key, double *out,
                          struct herr *err)
{
    const char *s;
    double t;

    if (job_string(root, key, false, &s, err))
        return -1;
    if (s == NULL)
        return 0;
    if (job_parse_time(s, &t))
        return job_bad(err, key, "expected an RFC 3339 date-time such as "
                       "2026-12-01T07:00:00+01:00");
    /* 0 means "absent" in struct job, so the epoch itself cannot be used. */
    if (t <= 0)
        return job_bad(err, key, "expected a date-time after 1970-01-01T00:00:00Z");
    *out = t;
    return 0;
}

/* job_check_times - send_at (not in the future yet), expires_at after it. */
static int job_check_times(struct job *j, json_t *root, double now,
                           struct herr *err)
{
    if (job_check_time(root, "send_at", &j->send_at, err))
        return -1;
    if (j->send_at > now + JOB_SEND_AT_MAX)
        return job_bad(err, "send_at", "more than 400 days ahead");
    if (job_check_time(root, "expires_at", &j->expires_at, err))
        return -1;
    if (j->send_at > 0 && j->expires_at > 0 && j->expires_at <= j->send_at)
        return job_bad(err, "expires_at", "must be after send_at");
    return 0;
}

/* job_check_references - references and msg_type (docs/flow.md,
 * "Emergency path"): an update or cancel names an earlier alert, and only
 * a cancel may go to the citizens that alert reached. */
static int job_check_references(struct job *j, json_t *root, struct herr *err)
{
    const char *s;

    if (job_string(root, "msg_type", false, &s, err))
        return -1;
    if (s != NULL && job_in_list(s, job_msg_types, JOB_COUNT(job_msg_types)) < 0)
        return job_bad(err, "msg_type", "expected one of alert, update, cancel");
    j->msg_type = s ? s : "alert";
    if (job_string(root, "references", false, &s, err))
        return -1;
    if (s != NULL && !job_id_ok(s, JOB_ID_MAX))
        return job_bad(err, "references", "expected the job id of an earlier alert");
    if (s != NULL && strcmp(s, j->id) == 0)
        return job_bad(err, "references", "a job cannot reference itself");
    j->references = s;
    if (s != NULL && strcmp(j->kind, "alert") != 0)
        return job_bad(err, "references", "only an alert (kind alert) can update or cancel "
                       "an earlier alert");
    if (s != NULL && strcmp(j->msg_type, "alert") == 0)
        return job_bad(err, "msg_type", "required with references: update or cancel");
    if (s == NULL && strcmp(j->msg_type, "alert") != 0)
        return job_bad(err, "references", "required with msg_type %s", j->msg_type);
    if (j->audience == AUD_REACHED &&
        (s == NULL || strcmp(j->reached_by, s) != 0 || strcmp(j->msg_type, "cancel") != 0))
        return job_bad(err, "audience.reached_by", "only for a cancel (msg_type cancel) of "
                       "the job in references");
    return 0;
}

bool job_scheduled(const struct job *j, double now)
{
    return j->send_at > now + JOB_SEND_AT_SLACK;
}

/* job_check_options - per-channel option objects for listed channels. */
static int job_check_options(struct job *j, json_t *root, struct herr *err)
{
    json_t *o = json_object_get(root, "options"), *v;
    const char *key;
    char path[128];

    if (o == NULL)
        return 0;
    if (!json_is_object(o))
        return job_bad(err, "options", "expected an object with one object per channel");
    json_object_foreach(o, key, v) {
        size_t k;

        snprintf(path, sizeof path, "options.%s", job_key_shown(key));
        for (k = 0; k < j->nchannels; k++)
            if (strcmp(j->channels[k], key) == 0)
                break;
        if (k == j->nchannels)
            return job_bad(err, path, "no such channel in channels");
        if (!json_is_object(v))
            return job_bad(err, path, "expected an object");
    }
    j->options = o;
    return 0;
}

/* job_check_meta - free-form object, bounded when serialised. */
static int job_check_meta(json_t *root, struct herr *err)
{
    json_t *m = json_object_get(root, "meta");
    char probe[16];
    size_t n;

    if (m == NULL)
        return 0;
    if (!json_is_object(m))
        return job_bad(err, "meta", "expected an object");
    /* json_dumpb returns the full length even when it does not fit, and 0
     * only on failure: "{}" is never shorter than 2 bytes. */
    n = json_dumpb(m, probe, sizeof probe, JSON_COMPACT);
    if (n == 0)
        return job_oom(err);
    if (n > JOB_META_MAX_BYTES)
        return job_bad(err, "meta", "%zu bytes as compact JSON; the limit is %d",
                       n, JOB_META_MAX_BYTES);
    return 0;
}

/* job_validate - every field of root into j, in the documented order. */
static int job_validate(struct job *j, const char *lane,
                        const struct job_limits *lim,
                        job_channel_ok_fn *channel_ok, void *channel_arg,
                        double now, struct herr *err)
{
    json_t *root = j->root;
    const char *s;

    if (!json_is_object(root))
        return job_bad(err, "", "expected a JSON object (job format v%d)",
                       JOB_VERSION);
    /* The version comes first: a newer producer's job must be told its
     * version is unknown, not that its new fields are. */
    if (job_check_version(root, err) || job_check_fields(root, err))
        return -1;

    if (job_string(root, "id", true, &s, err))
        return -1;
    if (!job_id_ok(s, JOB_ID_MAX))
        return job_bad(err, "id", "expected 1-%d characters of A-Z a-z 0-9 . _ : -",
                       JOB_ID_MAX);
    j->id = s;

    if (job_string(root, "kind", true, &s, err))
        return -1;
    if (job_in_list(s, job_kinds, JOB_COUNT(job_kinds)) < 0)
        return job_bad(err, "kind",
                       "expected one of alert, announcement, newsletter, notice");
    j->kind = s;

    if (job_check_priority(j, root, lane, err) ||
        job_check_channels(j, root, channel_ok, channel_arg, err) ||
        job_check_audience(j, root, lim, err) ||
        job_check_content(j, root, lim, err))
        return -1;

    if (job_string(root, "lang", false, &s, err))
        return -1;
    j->lang_given = s != NULL;
    if (s == NULL)
        s = "de";
    else if (!job_lang_ok(s))
        return job_bad(err, "lang", "expected a language tag such as de, en or de-x-ls");
    j->lang = s;

    if (job_string(root, "topic", false, &s, err))
        return -1;
    if (s != NULL && !job_topic_ok(s))
        return job_bad(err, "topic", "expected 1-%d characters of a-z 0-9 _ -",
                       JOB_TOPIC_MAX);
    j->topic = s;
    if (j->topic == NULL && j->audience == AUD_TOPICS && j->ntopics == 1)
        j->topic = j->topics[0];

    if (job_check_times(j, root, now, err) || job_check_references(j, root, err) ||
        job_check_options(j, root, err) || job_check_meta(root, err))
        return -1;
    return 0;
}

/*
 * job_parse - parse and validate len bytes at buf as a v1 job (see job.h
 * for the arguments).  Returns a new job, free with job_free; the job owns
 * the JSON tree and all its strings borrow from it.  On failure returns
 * NULL and fills err: HERR_INPUT with the first bad field in the order
 * given at the top of this file, or HERR_RESOURCE when memory ran out, in
 * which case the caller must defer the job, not reject it.  A negative
 * limit in lim means "no limit" (config never sets one).  err is cleared
 * first, so after a success it reads HERR_NONE.
 */
struct job *job_parse(const char *buf, size_t len, const char *lane,
                      const struct job_limits *lim,
                      job_channel_ok_fn *channel_ok, void *channel_arg,
                      double now, struct herr *err)
{
    struct job *j;
    json_error_t je;
    json_t *root;

    assert(lim != NULL);
    herr_clear(err);
    if (lim->max_bytes >= 0 && len > (size_t)lim->max_bytes) {
        job_bad(err, "", "job is %zu bytes; the limit is %ld", len, lim->max_bytes);
        return NULL;
    }
    /* Check the size before parsing: the limit is what bounds the parser's
     * memory. */
    /* jansson 2.14 reports some failed allocations as syntax errors
     * ("invalid token" when a string buffer cannot be allocated), which
     * would turn a good job into a rejected one under memory pressure.
     * malloc sets errno to ENOMEM when it fails, so a parse that saw one
     * is a resource error whatever jansson says, and a tree built while an
     * allocation failed is not trusted either. */
    errno = 0;
    root = json_loadb(buf != NULL ? buf : "", buf != NULL ? len : 0,
                      JSON_REJECT_DUPLICATES, &je);
    if (errno == ENOMEM) {
        json_decref(root);
        job_oom(err);
        return NULL;
    }
    if (root == NULL) {
        job_json_error(&je, err);
        return NULL;
    }
    j = herold_calloc(1, sizeof *j);
    if (j == NULL) {
        json_decref(root);
        job_oom(err);
        return NULL;
    }
    j->root = root;
    if (job_validate(j, lane, lim, channel_ok, channel_arg, now, err)) {
        job_free(j);
        return NULL;
    }
    return j;
}

/* job_free - free j, its recipient array and its JSON tree; every string
 * borrowed from j is invalid afterwards.  NULL is a no-op. */
void job_free(struct job *j)
{
    if (j == NULL)
        return;
    herold_free(j->rcpts);
    for (int i = 0; i < JOB_PARTS; i++)
        herold_free(j->parts[i]);
    json_decref(j->root);
    herold_free(j);
}
