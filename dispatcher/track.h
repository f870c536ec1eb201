/*
 * track - the tracking schema: Redis key names under the prefix, the
 * encoding of a unit's ledger value, and the status report the CLI reads.
 * Layout and states are documented in docs/redis-layout.md.
 */
#ifndef HEROLD_TRACK_H
#define HEROLD_TRACK_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "herr.h"
#include "redisq.h"

#define TRACK_KEY_MAX 256

enum track_lane { LANE_URGENT, LANE_NORMAL, LANE_BULK, LANE_COUNT };

extern const char *const track_lane_names[LANE_COUNT];

/* track_lane_from_name - LANE_* for "urgent"/"normal"/"bulk", -1 else. */
int track_lane_from_name(const char *name);

/* Key builders: write "<prefix><suffix>" into buf (TRACK_KEY_MAX bytes). */
const char *track_key_lane(char *buf, const char *prefix, enum track_lane lane);
const char *track_key_job(char *buf, const char *prefix, const char *job_id);
const char *track_key_units(char *buf, const char *prefix, const char *job_id);
const char *track_key(char *buf, const char *prefix, const char *name);
/* "<prefix>job:<id>:later": units waiting for a time (retry, quiet hours) */
const char *track_key_later(char *buf, const char *prefix, const char *job_id);
/* "<prefix>job:<id>:dlq": the job's dead letters */
const char *track_key_dlq(char *buf, const char *prefix, const char *job_id);
/* "<prefix>job:<id>:aud": a cancellation's audience (reached_by); prefix
 * may be "" for the key suffix the page script takes */
const char *track_key_aud(char *buf, const char *prefix, const char *job_id);

/* Unit states as stored in the ledger. */
enum unit_state {
    UNIT_NONE = 0,      /* no field yet: accepted */
    UNIT_SENDING,
    UNIT_RETRY,
    UNIT_DEFERRED,      /* waiting for the end of the citizen's quiet hours */
    UNIT_SENT,
    UNIT_FAILED,
    UNIT_SUPPRESSED,
    UNIT_EXPIRED,
    UNIT_DEAD,          /* transient failures until the last attempt: dead-letter set */
    UNIT_CANCELLED      /* the job was cancelled before this unit reached a provider */
};

extern const char *const track_state_names[];

static inline bool track_state_terminal(enum unit_state s)
{
    return s >= UNIT_SENT;
}

/* track_unit_value - "state|attempts|code|reason" into buf; '|' and
 * control characters in reason become '/' and ' '. */
const char *track_unit_value(char *buf, size_t size, enum unit_state s, int attempts,
                             int code, const char *reason);

/* track_unit_parse - the inverse for state and attempts; -1 if malformed. */
int track_unit_parse(const char *v, size_t len, enum unit_state *s, int *attempts);

/* track_contact_field - the field for a contact point in the
 * "<prefix>contacts:bounced" hash: kind ("email"), ':' and 32 hex digits
 * of SHA-256 of the lower-cased address.  The address itself is never
 * stored there.  out must hold TRACK_CONTACT_MAX bytes. */
#define TRACK_CONTACT_MAX 48
const char *track_contact_field(char *out, const char *kind, const char *addr);

/* track_status - read the job record and ledger of job_id over a
 * synchronous connection and build the report the CLI prints: a new JSON
 * object (see docs/redis-layout.md), or NULL with err (kind HERR_INPUT
 * "no such job" when unknown).  max_failures bounds the failure list. */
json_t *track_status(struct redisq_sync *s, const char *prefix, const char *job_id,
                     size_t max_failures, struct herr *err);

#endif
