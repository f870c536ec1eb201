/*
 * job - parse and validate one job document (job format v1).
 *
 * Shared by heroldd and `herold enqueue`, so both accept and reject exactly
 * the same jobs with the same reasons.  Pure: no I/O, no clock except the
 * `now` argument.  The format is documented in docs/jobs.md.
 *
 * A job is valid when every field is; the first bad field is reported as
 * "<json path>: <what was expected>", e.g.
 *   audience.recipients[3].id: expected 1-64 characters of A-Z a-z 0-9 . _ : -
 * Reasons never quote field values (they may hold personal data).
 */
#ifndef HEROLD_JOB_H
#define HEROLD_JOB_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "herr.h"

#define JOB_VERSION 1
#define JOB_MAX_CHANNELS 16
#define JOB_ID_MAX 128

/* The rendered parts of a message, one per channel use (docs/templates.md). */
enum job_part {
    JOB_PART_EMAIL_SUBJECT, JOB_PART_EMAIL_TXT, JOB_PART_EMAIL_HTML, JOB_PART_SMS,
    JOB_PART_PUSH_TITLE, JOB_PART_PUSH_BODY, JOB_PART_SOCIAL, JOB_PARTS
};

/* "email.subject", "email.txt", ... as the template files are named. */
extern const char *const job_part_names[JOB_PARTS];

struct job_recipient {
    const char *id;       /* opaque, unique within the job */
    const char *email;    /* NULL if absent */
    const char *phone;    /* NULL if absent (E.164 when present) */
};

/* Who a job addresses (docs/jobs.md, docs/citizens.md). */
enum job_audience {
    AUD_RECIPIENTS,     /* explicit recipients with their contact points, in the job */
    AUD_CITIZENS,       /* explicit citizen ids: records in Redis */
    AUD_TOPICS,         /* the subscribers of one or more topics */
    AUD_ALL,            /* every citizen */
    AUD_REACHED,        /* the citizens an earlier alert reached (reached_by) */
};

#define JOB_MAX_TOPICS 16

struct job {
    json_t *root;                  /* owned; every pointer below borrows from it */
    const char *id;
    const char *kind;              /* alert | announcement | newsletter | notice */
    const char *priority;          /* urgent | normal | bulk */
    const char *lang;              /* default "de" */
    const char *topic;             /* NULL if absent */
    const char *subject;           /* inline content; NULL with a template */
    const char *text;
    const char *html;              /* NULL if absent */
    const char *template;          /* template name, or NULL for inline content */
    const json_t *data;            /* template data (an object), or NULL */
    char *parts[JOB_PARTS];        /* owned; filled by msgset_apply, NULL = none */
    char render_lang[36];          /* language the parts were rendered in */
    const char *channels[JOB_MAX_CHANNELS];
    size_t nchannels;
    enum job_audience audience;
    struct job_recipient *rcpts;   /* owned array: AUD_RECIPIENTS (contacts) or
                                    * AUD_CITIZENS (ids only) */
    size_t nrcpts;
    const char *topics[JOB_MAX_TOPICS];   /* AUD_TOPICS */
    size_t ntopics;
    bool lang_given;               /* "lang" was in the job (else citizens' own) */
    const char *references;        /* an earlier alert's job id, or NULL */
    const char *msg_type;          /* "alert" (default), "update" or "cancel" */
    const char *reached_by;        /* AUD_REACHED: that job's id */
    double send_at;                /* unix seconds, 0 if absent */
    double expires_at;             /* unix seconds, 0 if absent */
    const json_t *options;         /* "options" object or NULL */
};

struct job_limits {
    long max_bytes;
    int max_recipients;
    int max_subject_chars;
    long max_text_bytes;
};

/* Is this channel name usable here?  (heroldd: configured; CLI: known) */
typedef bool job_channel_ok_fn(const char *name, void *arg);

/* job_parse - parse buf (len bytes, not NUL-terminated necessarily) as a
 * v1 job that arrived on lane ("urgent", "normal" or "bulk"; NULL when
 * the caller, like `herold enqueue`, picks the lane from the job).
 * now is unix seconds.  Returns a new job (free with job_free) or NULL
 * with err->path and err->msg set and err->kind HERR_INPUT (or
 * HERR_RESOURCE when memory ran out: the caller defers, not rejects). */
struct job *job_parse(const char *buf, size_t len, const char *lane,
                      const struct job_limits *lim,
                      job_channel_ok_fn *channel_ok, void *channel_arg,
                      double now, struct herr *err);

void job_free(struct job *j);

/* job_id_ok - 1 if s is a valid job or recipient id of at most max chars
 * (A-Z a-z 0-9 . _ : -), else 0. */
int job_id_ok(const char *s, size_t max);

/* job_scheduled - is j due later than now (unix seconds), so that it
 * waits in the scheduled set? */
bool job_scheduled(const struct job *j, double now);

/* job_parse_time - RFC 3339 date-time ("2026-12-01T07:00:00+01:00",
 * "...Z", optional fraction) into unix seconds; -1 if malformed. */
int job_parse_time(const char *s, double *out);

#endif
