/*
 * audience - who of a job's audience gets which unit (docs/citizens.md,
 * "Precisely, per citizen and channel", steps 1-3).
 *
 * Pure: works on a citizen record as field/value pairs (as HGETALL returns
 * them), no I/O.  The steps that need Redis (bounce list, daily cap) or a
 * clock (quiet hours) are done by the fan-out with what this returns.
 */
#ifndef HEROLD_AUDIENCE_H
#define HEROLD_AUDIENCE_H

#include <stdbool.h>
#include <stddef.h>

#include "job.h"

/* How a channel reaches a citizen (channel_ops.contact). */
enum aud_contact { AUD_BY_ID, AUD_BY_EMAIL, AUD_BY_PHONE, AUD_BY_PUSH };

/* A job as the resolver sees it, prepared once per run. */
struct aud_job {
    size_t nch;
    const char *ch[JOB_MAX_CHANNELS];          /* channel names */
    enum aud_contact contact[JOB_MAX_CHANNELS];
    bool sms[JOB_MAX_CHANNELS];                /* needs a number that takes SMS */
    const char *topics[JOB_MAX_TOPICS];        /* choice from these topics... */
    size_t ntopics;                            /* ...or, when 0, from all topics */
};

enum aud_verdict {
    AUD_NONE,          /* not chosen: no unit at all */
    AUD_SUPPRESS,      /* a unit, recorded suppressed with reason */
    AUD_DELIVER,       /* a unit to deliver (subject to bounce, cap, quiet hours) */
};

/* One field of a citizen record; strings are not NUL-terminated. */
struct aud_kv {
    const char *k, *v;
    size_t klen, vlen;
};

struct aud_result {
    enum aud_verdict verdict[JOB_MAX_CHANNELS];
    const char *reason[JOB_MAX_CHANNELS];      /* static text for AUD_SUPPRESS */
    /* borrowed from the record (pointers into the values, with lengths) */
    struct aud_kv email, phone, lang, tz, quiet;
};

/* aud_job_init - fill aj from job; contact[i] is the contact kind of
 * channel i (the caller knows the channel tables).  The choice topics are
 * the audience's topics, else the job's topic, else none (all topics). */
void aud_job_init(struct aud_job *aj, const struct job *job,
                  const enum aud_contact *contact);

/* aud_resolve - steps 1-3 for one citizen record of n fields (all, or
 * only_ch >= 0 for a single channel).  A record without fields (erased in
 * the meantime) gets AUD_NONE everywhere.  Returns the number of units
 * (AUD_SUPPRESS + AUD_DELIVER). */
size_t aud_resolve(const struct aud_job *aj, const struct aud_kv *kv, size_t n, int only_ch,
                   struct aud_result *out);

#endif
