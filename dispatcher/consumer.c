/*
 * consumer - the stream side of heroldd: consumer group reads, claims,
 * heartbeats, job begin/reject/finish, trimming and the persistence check.
 *
 * Owns the list of active entries (jobs being started, run or finished) and
 * the timers for claiming, heartbeats and trimming.  Holds at most
 * queue.max_active_jobs normal/bulk jobs and queue.max_urgent_jobs urgent
 * ones, so an urgent job is read even while bulk work fills every slot;
 * when urgent slots free up while the blocking read waits without the
 * urgent lane, the urgent lane is read at once on the main connection.  Never blocks
 * the loop; never logs payloads (they carry personal data): entry ids and
 * job ids only.
 */
#include "consumer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "log.h"
#include "flowscripts.h"
#include "scripts.h"
#include "../channels/channel.h"

struct active {
    struct consumer *c;
    enum track_lane lane;
    char entry[40];
    char job_id[JOB_ID_MAX + 1];
    struct job *job;          /* while the begin script runs */
    char *payload;            /* while the begin script runs (for the dead stream) */
    struct job_run *jr;       /* once running */
    bool finishing;           /* finish script outstanding */
    bool finish_wanted;       /* run done, finish not yet confirmed */
    bool recovery;            /* read again from a PEL (own or claimed) */
    /* a cancel to the citizens an earlier alert reached: its audience is
     * collected (script reach) before the run starts */
    char *cursor;
    bool fresh, cancelled;
    double accepted_ts;
    struct active *next;
};

struct consumer {
    struct ev_loop *loop;
    const struct herold_config *cfg;
    struct redisq *rq, *rqb;
    struct fanout *fanout;
    const struct msgset *templates;
    struct msgset_opts msg_opts;
    const char *crash_on_job;
    const char *prefix;
    char lane_key[LANE_COUNT][TRACK_KEY_MAX];
    char rejected_key[TRACK_KEY_MAX], dead_key[TRACK_KEY_MAX];
    char events_key[TRACK_KEY_MAX], alarms_key[TRACK_KEY_MAX];
    char scheduled_key[TRACK_KEY_MAX];
    bool promoting;           /* promote script outstanding */
    char events_maxlen[24], retention[24], max_deliveries[16];
    struct active *active;
    size_t nactive[LANE_COUNT];
    size_t beginning;         /* begin scripts outstanding */
    bool ready;               /* Redis checked, groups exist */
    bool checking;            /* persistence check outstanding */
    bool ever_ready;
    bool reading;             /* blocking read outstanding */
    bool reading_urgent;      /* ... and it includes the urgent lane */
    bool urgent_polling;      /* a non-blocking read of the urgent lane is outstanding */
    bool pel_reading;
    bool recovering;          /* an entry from a PEL is being worked on */
    bool pel_done[LANE_COUNT];
    char pel_next[LANE_COUNT][40];
    bool stopping;
    int fatal;
    ev_timer claim_timer, heartbeat_timer, trim_timer, finish_timer, recheck_timer;
    ev_timer schedule_timer;
};

static void consumer_read(struct consumer *c);

/* ---- active entries ---- */

static struct active *consumer_find(struct consumer *c, const char *entry)
{
    for (struct active *a = c->active; a; a = a->next)
        if (strcmp(a->entry, entry) == 0)
            return a;
    return NULL;
}

static void consumer_remove(struct consumer *c, struct active *a)
{
    struct active **pp;

    for (pp = &c->active; *pp && *pp != a; pp = &(*pp)->next)
        ;
    if (*pp)
        *pp = a->next;
    c->nactive[a->lane]--;
    if (a->recovery)
        c->recovering = false;
    job_free(a->job);
    herold_free(a->payload);
    herold_free(a->cursor);
    herold_free(a);
}

/* consumer_free_slots - jobs of lane that may still be taken. */
static size_t consumer_free_slots(const struct consumer *c, enum track_lane lane)
{
    size_t max = (size_t)(lane == LANE_URGENT ? c->cfg->queue.max_urgent_jobs
                                              : c->cfg->queue.max_active_jobs), used;

    used = lane == LANE_URGENT ? c->nactive[LANE_URGENT]
                               : c->nactive[LANE_NORMAL] + c->nactive[LANE_BULK];
    return used >= max ? 0 : max - used;
}

static int consumer_lane_of(const struct consumer *c, const char *stream)
{
    for (int i = 0; i < LANE_COUNT; i++)
        if (strcmp(c->lane_key[i], stream) == 0)
            return i;
    return -1;
}

/* ---- reject, begin, finish ---- */

static bool consumer_channel_ok(const char *name, void *arg)
{
    const struct consumer *c = arg;

    return c->cfg->channels != NULL && json_object_get(c->cfg->channels, name) != NULL &&
           channel_find(name) != NULL;
}

/* consumer_reject - record an invalid entry with its reason, then ack it.
 * If Redis does not confirm, the entry stays pending and is read again. */
static void consumer_reject(struct consumer *c, enum track_lane lane, const char *entry,
                            const char *payload, size_t plen, const char *reason)
{
    char ts[40];
    const char *argv[10];
    size_t lens[10];

    argv[0] = c->lane_key[lane];
    argv[1] = c->rejected_key;
    argv[2] = c->events_key;
    argv[3] = c->cfg->queue.group;
    argv[4] = entry;
    argv[5] = track_lane_names[lane];
    argv[6] = payload;
    argv[7] = reason;
    argv[8] = clock_iso(clock_wall(), ts, sizeof ts);
    argv[9] = c->events_maxlen;
    for (int i = 0; i < 10; i++)
        lens[i] = strlen(argv[i]);
    lens[6] = plen;
    char qb[440];

    LOG(LOG_WARN, "consumer", "job_rejected", "lane=%s entry=%s reason=%s",
        track_lane_names[lane], entry, log_quote(reason, qb, sizeof qb));
    redisq_eval(c->rq, &script_reject, redisq_ignore, NULL, 3, 10, argv, lens);
}

/* consumer_start_run - hand the begun job of a to the fan-out. */
static void consumer_start_run(struct active *a)
{
    struct consumer *c = a->c;
    struct job *job = a->job;

    a->job = NULL;
    a->jr = fanout_add(c->fanout, job, a->lane, a->entry, a->cursor, a->fresh, a->accepted_ts,
                       a->cancelled);
    if (a->jr == NULL) {
        LOG(LOG_ERROR, "consumer", "job_deferred", "job=%s reason=\"out of memory\"",
            a->job_id);
        consumer_remove(c, a);
    }
}

/* consumer_cancel_referenced - an update or cancel of an earlier alert:
 * that alert stops first (docs/flow.md, "Emergency path").  Sent before
 * anything of the new job, on the same connection, so Redis applies it
 * before the new job's audience is collected. */
static void consumer_cancel_referenced(struct consumer *c, const struct job *job)
{
    char jk[TRACK_KEY_MAX], ts[40];
    const char *argv[7];

    argv[0] = track_key_job(jk, c->prefix, job->references);
    argv[1] = c->scheduled_key;
    argv[2] = c->events_key;
    argv[3] = job->references;
    argv[4] = clock_iso(clock_wall(), ts, sizeof ts);
    argv[5] = c->retention;
    argv[6] = c->events_maxlen;
    LOG(LOG_WARN, "consumer", "alert_superseded", "job=%s references=%s msg_type=%s", job->id,
        job->references, job->msg_type);
    redisq_eval(c->rq, &script_cancel, redisq_ignore, NULL, 3, 7, argv, NULL);
}

static void consumer_reach(struct active *a, const char *cursor);

static void consumer_on_reach(struct redisq *q, const struct redisq_reply *r, void *arg)
{
    struct active *a = arg;
    struct consumer *c = a->c;
    const char *next;

    (void)q;
    c->beginning--;
    if (r == NULL || redisq_reply_type(r) != REDISQ_STR) {
        /* the entry stays pending: read again, collected again (ZADD) */
        c->pel_done[a->lane] = false;
        snprintf(c->pel_next[a->lane], sizeof c->pel_next[a->lane], "0");
        consumer_remove(c, a);
        return;
    }
    next = redisq_reply_str(r, NULL);
    if (strcmp(next, "0") != 0) {
        consumer_reach(a, next);
        return;
    }
    {
        char ak[TRACK_KEY_MAX];
        const char *argv[] = {"EXPIRE", track_key_aud(ak, c->prefix, a->job_id), c->retention};
        redisq_argv(c->rq, redisq_ignore, NULL, 0, 3, argv, NULL);
    }
    consumer_start_run(a);
}

/* consumer_reach - collect, one HSCAN step at a time, the citizens the
 * referenced alert reached into the new job's audience set. */
static void consumer_reach(struct active *a, const char *cursor)
{
    struct consumer *c = a->c;
    char uk[TRACK_KEY_MAX], ak[TRACK_KEY_MAX];
    const char *argv[4];

    argv[0] = track_key_units(uk, c->prefix, a->job->reached_by);
    argv[1] = track_key_aud(ak, c->prefix, a->job_id);
    argv[2] = cursor;
    argv[3] = "1000";
    if (redisq_eval(c->rq, &script_reach, consumer_on_reach, a, 2, 4, argv, NULL) != 0) {
        consumer_remove(c, a);
        return;
    }
    c->beginning++;
}

static void consumer_on_begin(struct redisq *q, const struct redisq_reply *r, void *arg)
{
    struct active *a = arg;
    struct consumer *c = a->c;
    const char *verdict;

    (void)q;
    c->beginning--;
    if (r == NULL || redisq_reply_type(r) != REDISQ_ARRAY || redisq_reply_len(r) < 1) {
        /* Unknown outcome: leave the entry pending; it is read again from
         * this consumer's PEL (the begin script is safe to repeat). */
        LOG(LOG_WARN, "consumer", "begin_unconfirmed", "job=%s entry=%s retry=yes",
            a->job_id, a->entry);
        c->pel_done[a->lane] = false;
        snprintf(c->pel_next[a->lane], sizeof c->pel_next[a->lane], "0");
        consumer_remove(c, a);
        return;
    }
    verdict = redisq_reply_str(redisq_reply_elem(r, 0), NULL);
    if (strcmp(verdict, "run") == 0) {
        struct job *job = a->job;
        a->job = NULL;
        herold_free(a->payload);
        a->payload = NULL;
        if (c->crash_on_job && strcmp(c->crash_on_job, a->job_id) == 0) {
            LOG(LOG_WARN, "consumer", "faultpoint", "point=crash_on_job job=%s", a->job_id);
            abort();
        }
        const struct redisq_reply *units = redisq_reply_elem(r, 2);
        const char *acc = redisq_reply_str(redisq_reply_elem(r, 3), NULL);
        const char *cancel = redisq_reply_str(redisq_reply_elem(r, 4), NULL);
        const char *cursor = redisq_reply_str(redisq_reply_elem(r, 1), NULL);
        a->fresh = units != NULL && strcmp(redisq_reply_str(units, NULL), "0") == 0;
        a->accepted_ts = acc ? strtod(acc, NULL) : 0;
        a->cancelled = cancel != NULL && cancel[0] != '\0';
        a->cursor = herold_strdup(cursor ? cursor : "");
        a->job = job;
        if (a->cursor == NULL) {
            consumer_remove(c, a);
            return;
        }
        if (job->references != NULL)
            consumer_cancel_referenced(c, job);
        if (job->audience == AUD_REACHED && a->cursor[0] == '\0') {
            consumer_reach(a, "0");
            return;
        }
        consumer_start_run(a);
        return;
    }
    if (strcmp(verdict, "dup") == 0) {
        LOG(LOG_INFO, "consumer", "job_duplicate", "job=%s entry=%s original=%s", a->job_id,
            a->entry, redisq_reply_str(redisq_reply_elem(r, 1), NULL));
    } else if (strcmp(verdict, "dead") == 0) {
        LOG(LOG_ERROR, "consumer", "job_dead", "job=%s entry=%s deliveries=%s", a->job_id,
            a->entry, redisq_reply_str(redisq_reply_elem(r, 1), NULL));
    } else {
        LOG(LOG_INFO, "consumer", "entry_gone", "job=%s entry=%s", a->job_id, a->entry);
    }
    consumer_remove(c, a);
    consumer_read(c);
}

/* consumer_has_field - does a stream entry's field list have name? */
static bool consumer_has_field(const struct redisq_reply *fields, const char *name)
{
    for (size_t i = 0; i + 1 < redisq_reply_len(fields); i += 2)
        if (strcmp(redisq_reply_str(redisq_reply_elem(fields, i), NULL), name) == 0)
            return true;
    return false;
}

static void consumer_on_park(struct redisq *q, const struct redisq_reply *r, void *arg)
{
    struct consumer *c = arg;

    (void)q;
    if (r == NULL || redisq_reply_type(r) != REDISQ_ARRAY) {
        /* unknown: the entry stays pending and is read again */
        c->pel_done[LANE_URGENT] = c->pel_done[LANE_NORMAL] = c->pel_done[LANE_BULK] = false;
        return;
    }
    consumer_read(c);
}

/* consumer_park - a job due later goes to the scheduled set (docs/flow.md). */
static void consumer_park(struct consumer *c, enum track_lane lane, const char *entry,
                          const struct job *job, const char *payload, size_t plen)
{
    char jk[TRACK_KEY_MAX], at[32], ts[40];
    const char *argv[14];
    size_t lens[14];

    argv[0] = track_key_job(jk, c->prefix, job->id);
    argv[1] = c->lane_key[lane];
    argv[2] = c->scheduled_key;
    argv[3] = c->events_key;
    argv[4] = c->cfg->queue.group;
    argv[5] = entry;
    argv[6] = payload;
    snprintf(at, sizeof at, "%.3f", job->send_at);
    argv[7] = at;
    argv[8] = track_lane_names[lane];
    argv[9] = job->id;
    argv[10] = job->kind;
    argv[11] = clock_iso(clock_wall(), ts, sizeof ts);
    argv[12] = c->events_maxlen;
    argv[13] = c->cfg->queue.consumer;
    for (int i = 0; i < 14; i++)
        lens[i] = strlen(argv[i]);
    lens[6] = plen;
    LOG(LOG_INFO, "consumer", "job_scheduled", "job=%s entry=%s send_at=%s", job->id, entry,
        clock_iso(job->send_at, ts, sizeof ts));
    redisq_eval(c->rq, &script_park, consumer_on_park, c, 4, 14, argv, lens);
}

/* consumer_mandatory - an urgent alert goes out on every configured
 * mandatory channel too (flow.mandatory_channels). */
static void consumer_mandatory(struct consumer *c, struct job *job)
{
    const struct config_flow *fl = &c->cfg->flow;

    if (strcmp(job->kind, "alert") != 0 || strcmp(job->priority, "urgent") != 0)
        return;
    for (size_t i = 0; i < fl->nmandatory && job->nchannels < JOB_MAX_CHANNELS; i++) {
        bool have = false;
        for (size_t k = 0; k < job->nchannels; k++)
            have |= strcmp(job->channels[k], fl->mandatory[i]) == 0;
        if (!have && consumer_channel_ok(fl->mandatory[i], c))
            job->channels[job->nchannels++] = fl->mandatory[i];
    }
}

/* consumer_take - one stream entry: validate, then begin or reject. */
static void consumer_take(struct consumer *c, enum track_lane lane, const char *entry,
                          const struct redisq_reply *fields, bool recovery)
{
    const char *payload = NULL;
    size_t plen = 0;
    struct herr err;
    struct job_limits lim = {c->cfg->jobs.max_bytes, c->cfg->jobs.max_recipients,
                             c->cfg->jobs.max_subject_chars, c->cfg->jobs.max_text_bytes};
    struct job *job;
    struct active *a;
    char reason[400];
    const char *argv[18];
    size_t lens[18];
    char units[24], ts[40], now[32];

    if (consumer_find(c, entry) != NULL)
        return;   /* already working on it */
    if (fields == NULL || redisq_reply_type(fields) != REDISQ_ARRAY) {
        /* deleted while pending (trimmed): nothing left to deliver */
        const char *ack[4] = {"XACK", c->lane_key[lane], c->cfg->queue.group, entry};
        LOG(LOG_ERROR, "consumer", "lost_jobs", "lane=%s ids=%s reason=\"payload deleted "
            "while pending\"", track_lane_names[lane], entry);
        redisq_argv(c->rq, redisq_ignore, NULL, 0, 4, ack, NULL);
        return;
    }
    for (size_t i = 0; i + 1 < redisq_reply_len(fields); i += 2) {
        if (strcmp(redisq_reply_str(redisq_reply_elem(fields, i), NULL), "job") == 0) {
            payload = redisq_reply_str(redisq_reply_elem(fields, i + 1), &plen);
            break;
        }
    }
    if (payload == NULL) {
        consumer_reject(c, lane, entry, "", 0, "entry has no field \"job\"");
        return;
    }
    job = job_parse(payload, plen, track_lane_names[lane], &lim, consumer_channel_ok, c,
                    clock_wall(), &err);
    if (job == NULL) {
        if (err.kind == HERR_RESOURCE) {
            LOG(LOG_ERROR, "consumer", "job_deferred", "entry=%s reason=\"out of memory\"",
                entry);
            return;
        }
        consumer_reject(c, lane, entry, payload, plen, herr_format(&err, reason, sizeof reason));
        return;
    }
    consumer_mandatory(c, job);
    /* Render now, once per job: a missing template or variable rejects the
     * job before anything is sent. */
    if (msgset_apply(c->templates, &c->msg_opts, job, NULL, &err) != 0) {
        job_free(job);
        if (err.kind == HERR_RESOURCE) {
            LOG(LOG_ERROR, "consumer", "job_deferred", "entry=%s reason=\"out of memory\"",
                entry);
            return;
        }
        consumer_reject(c, lane, entry, payload, plen, herr_format(&err, reason, sizeof reason));
        return;
    }
    /* Due later: parked until then (rendered again when promoted, with
     * the message set of that day). */
    if (job_scheduled(job, clock_wall()) && !consumer_has_field(fields, "promoted") &&
        !consumer_has_field(fields, "resume")) {
        consumer_park(c, lane, entry, job, payload, plen);
        job_free(job);
        return;
    }
    a = herold_calloc(1, sizeof *a);
    if (a == NULL || (a->payload = herold_strndup(payload, plen)) == NULL) {
        herold_free(a);
        job_free(job);
        return;
    }
    a->c = c;
    a->lane = lane;
    a->job = job;
    a->recovery = recovery;
    snprintf(a->entry, sizeof a->entry, "%s", entry);
    snprintf(a->job_id, sizeof a->job_id, "%s", job->id);
    a->next = c->active;
    c->active = a;
    c->nactive[lane]++;

    char jk[TRACK_KEY_MAX], uk[TRACK_KEY_MAX];
    snprintf(units, sizeof units, "%zu", job->nrcpts * job->nchannels);
    argv[0] = track_key_job(jk, c->prefix, job->id);
    argv[1] = track_key_units(uk, c->prefix, job->id);
    argv[2] = c->lane_key[lane];
    argv[3] = c->dead_key;
    argv[4] = c->events_key;
    argv[5] = c->cfg->queue.group;
    argv[6] = a->entry;
    argv[7] = track_lane_names[lane];
    argv[8] = clock_iso(clock_wall(), ts, sizeof ts);
    argv[9] = units;
    argv[10] = c->max_deliveries;
    argv[11] = job->kind;
    argv[12] = c->events_maxlen;
    argv[13] = a->payload;
    argv[14] = job->id;
    argv[15] = c->cfg->queue.consumer;
    argv[16] = c->retention;
    snprintf(now, sizeof now, "%.3f", clock_wall());
    argv[17] = now;
    for (int i = 0; i < 18; i++)
        lens[i] = strlen(argv[i]);
    lens[13] = plen;
    if (redisq_eval(c->rq, &script_begin, consumer_on_begin, a, 5, 18, argv, lens) != 0) {
        consumer_remove(c, a);
        return;
    }
    c->beginning++;
    if (recovery)
        c->recovering = true;
}

/* consumer_take_streams - a XREADGROUP reply: [[stream, [[id, fields]...]]...],
 * urgent lane first whatever order Redis used.  Returns entries seen; the
 * last id per lane goes to last[lane]. */
static size_t consumer_take_streams(struct consumer *c, const struct redisq_reply *r,
                                    char last[LANE_COUNT][40], size_t seen[LANE_COUNT],
                                    bool recovery)
{
    size_t total = 0;

    if (r == NULL || redisq_reply_type(r) != REDISQ_ARRAY)
        return 0;
    for (int want = 0; want < LANE_COUNT; want++) {
        for (size_t s = 0; s < redisq_reply_len(r); s++) {
            const struct redisq_reply *st = redisq_reply_elem(r, s);
            int lane = consumer_lane_of(c, redisq_reply_str(redisq_reply_elem(st, 0), NULL));
            const struct redisq_reply *entries = redisq_reply_elem(st, 1);
            if (lane != want || entries == NULL)
                continue;
            for (size_t e = 0; e < redisq_reply_len(entries); e++) {
                const struct redisq_reply *en = redisq_reply_elem(entries, e);
                const char *id = redisq_reply_str(redisq_reply_elem(en, 0), NULL);
                consumer_take(c, (enum track_lane)lane, id, redisq_reply_elem(en, 1), recovery);
                if (last)
                    snprintf(last[lane], 40, "%s", id);
                if (seen)
                    seen[lane]++;
                total++;
            }
        }
    }
    return total;
}

/* ---- reading ---- */

struct pel_read {
    struct consumer *c;
    enum track_lane lane;
    size_t count;
};

static void consumer_on_pel(struct redisq *q, const struct redisq_reply *r, void *arg)
{
    struct pel_read *pr = arg;
    struct consumer *c = pr->c;
    char last[LANE_COUNT][40] = {{0}};
    size_t seen[LANE_COUNT] = {0};

    (void)q;
    c->pel_reading = false;
    if (r != NULL && redisq_reply_type(r) != REDISQ_ERROR) {
        consumer_take_streams(c, r, last, seen, true);
        if (seen[pr->lane] < pr->count)
            c->pel_done[pr->lane] = true;
        else
            snprintf(c->pel_next[pr->lane], 40, "%s", last[pr->lane]);
    }
    herold_free(pr);
    consumer_read(c);
}

static void consumer_on_read(struct redisq *q, const struct redisq_reply *r, void *arg)
{
    struct consumer *c = arg;

    (void)q;
    c->reading = false;
    if (r != NULL && redisq_reply_type(r) == REDISQ_ERROR) {
        char buf[160];
        LOG(LOG_WARN, "consumer", "read_failed", "error=%s",
            log_quote(redisq_reply_str(r, NULL), buf, sizeof buf));
        if (redisq_reply_is_error(r, "NOGROUP")) {
            /* The group vanished (Redis lost state): recreate it through
             * a fresh readiness check, never at "$". */
            c->ready = false;
            redisq_reset(c->rq, "consumer group missing");
        }
        return;
    }
    if (r != NULL)
        consumer_take_streams(c, r, NULL, NULL, false);
    consumer_read(c);
}

static void consumer_on_urgent_poll(struct redisq *q, const struct redisq_reply *r, void *arg)
{
    struct consumer *c = arg;

    (void)q;
    c->urgent_polling = false;
    if (r != NULL && redisq_reply_type(r) == REDISQ_ARRAY)
        consumer_take_streams(c, r, NULL, NULL, false);
    if (r != NULL && redisq_reply_type(r) == REDISQ_ARRAY)
        consumer_read(c);   /* a nil reply (nothing new) ends the loop */
}

/* consumer_read - issue the next reads: one entry of this consumer's own
 * PEL at a time, and new entries (blocking, on the second connection) for
 * the lanes with free slots.
 *
 * Recovery goes one entry at a time, here and in claims: an entry read
 * again counts one more delivery, and a poison job that crashes the daemon
 * must not drag the innocent jobs that happened to be pending beside it
 * into the dead stream.  Only the entry being recovered is charged. */
static void consumer_read(struct consumer *c)
{
    const char *argv[16];
    char count[24];
    int argc = 0, nl = 0;
    size_t n = (size_t)-1;
    enum track_lane lanes[LANE_COUNT];

    if (!c->ready || c->stopping || !redisq_is_up(c->rq))
        return;
    for (int l = 0; l < LANE_COUNT && !c->pel_reading && !c->recovering; l++) {
        size_t free_slots = consumer_free_slots(c, (enum track_lane)l);
        struct pel_read *pr;
        if (c->pel_done[l] || free_slots == 0)
            continue;
        pr = herold_malloc(sizeof *pr);
        if (pr == NULL)
            return;
        pr->c = c;
        pr->lane = (enum track_lane)l;
        pr->count = 1;
        snprintf(count, sizeof count, "1");
        argv[0] = "XREADGROUP";
        argv[1] = "GROUP";
        argv[2] = c->cfg->queue.group;
        argv[3] = c->cfg->queue.consumer;
        argv[4] = "COUNT";
        argv[5] = count;
        argv[6] = "STREAMS";
        argv[7] = c->lane_key[l];
        argv[8] = c->pel_next[l];
        if (redisq_argv(c->rq, consumer_on_pel, pr, 0, 9, argv, NULL) != 0) {
            herold_free(pr);
            return;
        }
        c->pel_reading = true;
    }
    if (c->reading && !c->reading_urgent && !c->urgent_polling &&
        consumer_free_slots(c, LANE_URGENT) > 0) {
        /* urgent slots came free while the blocking read waits for the
         * other lanes only: look at the urgent lane now, not after
         * queue.block_ms */
        snprintf(count, sizeof count, "%zu", consumer_free_slots(c, LANE_URGENT));
        const char *uv[] = {"XREADGROUP", "GROUP", c->cfg->queue.group, c->cfg->queue.consumer,
                            "COUNT", count, "STREAMS", c->lane_key[LANE_URGENT], ">"};
        if (redisq_argv(c->rq, consumer_on_urgent_poll, c, 0, 9, uv, NULL) == 0)
            c->urgent_polling = true;
    }
    if (c->reading || !redisq_is_up(c->rqb))
        return;
    for (int l = 0; l < LANE_COUNT; l++) {
        size_t free_slots = consumer_free_slots(c, (enum track_lane)l);
        if (free_slots == 0)
            continue;
        lanes[nl++] = (enum track_lane)l;
        if (free_slots < n)
            n = free_slots;
    }
    if (nl == 0)
        return;
    snprintf(count, sizeof count, "%zu", n);
    /* Without the urgent lane (its slots are all taken), wait briefly, so
     * that a freed slot is noticed soon even if the poll above found the
     * lane empty. */
    int block_ms = c->cfg->queue.block_ms;
    char block[16];

    if (lanes[0] != LANE_URGENT && block_ms > 50)
        block_ms = 50;
    snprintf(block, sizeof block, "%d", block_ms);
    argv[argc++] = "XREADGROUP";
    argv[argc++] = "GROUP";
    argv[argc++] = c->cfg->queue.group;
    argv[argc++] = c->cfg->queue.consumer;
    argv[argc++] = "COUNT";
    argv[argc++] = count;
    argv[argc++] = "BLOCK";
    argv[argc++] = block;
    argv[argc++] = "STREAMS";
    for (int i = 0; i < nl; i++)
        argv[argc++] = c->lane_key[lanes[i]];
    for (int i = 0; i < nl; i++)
        argv[argc++] = ">";
    if (redisq_argv(c->rqb, consumer_on_read, c, block_ms, argc, argv, NULL) == 0) {
        c->reading = true;
        c->reading_urgent = lanes[0] == LANE_URGENT;
    }
}

/* ---- finishing ---- */

static void consumer_send_finish(struct consumer *c, struct active *a);

static void consumer_on_finish(struct redisq *q, const struct redisq_reply *r, void *arg)
{
    struct active *a = arg;
    struct consumer *c = a->c;

    (void)q;
    a->finishing = false;
    if (r == NULL || redisq_reply_type(r) == REDISQ_ERROR)
        return;   /* the finish timer tries again */
    if (strcmp(redisq_reply_str(redisq_reply_elem(r, 0), NULL), "requeued") == 0)
        LOG(LOG_INFO, "consumer", "job_requeued", "job=%s entry=%s new_entry=%s "
            "reason=\"units waiting again\"", a->job_id, a->entry,
            redisq_reply_str(redisq_reply_elem(r, 1), NULL));
    else
        LOG(LOG_INFO, "consumer", "job_done", "job=%s entry=%s lane=%s", a->job_id, a->entry,
            track_lane_names[a->lane]);
    fanout_free_run(c->fanout, a->jr);
    a->jr = NULL;
    consumer_remove(c, a);
    consumer_read(c);
}

static void consumer_send_finish(struct consumer *c, struct active *a)
{
    char jk[TRACK_KEY_MAX], uk[TRACK_KEY_MAX], lk[TRACK_KEY_MAX], dk[TRACK_KEY_MAX], ts[40];
    const char *argv[12];

    if (a->finishing || !redisq_is_up(c->rq))
        return;
    argv[0] = track_key_job(jk, c->prefix, a->job_id);
    argv[1] = track_key_units(uk, c->prefix, a->job_id);
    argv[2] = c->lane_key[a->lane];
    argv[3] = c->events_key;
    argv[4] = track_key_later(lk, c->prefix, a->job_id);
    argv[5] = track_key_dlq(dk, c->prefix, a->job_id);
    argv[6] = c->cfg->queue.group;
    argv[7] = a->entry;
    argv[8] = clock_iso(clock_wall(), ts, sizeof ts);
    argv[9] = c->retention;
    argv[10] = c->events_maxlen;
    argv[11] = a->job_id;
    if (redisq_eval(c->rq, &script_finish, consumer_on_finish, a, 6, 12, argv, NULL) == 0)
        a->finishing = true;
}

void consumer_on_fanout_end(struct job_run *jr, enum fanout_end how, void *arg)
{
    struct consumer *c = arg;
    struct active *a = consumer_find(c, fanout_run_entry(jr));

    if (a == NULL) {
        fanout_free_run(c->fanout, jr);
        return;
    }
    if (how == FANOUT_RELEASED) {
        fanout_free_run(c->fanout, jr);
        a->jr = NULL;
        consumer_remove(c, a);
        consumer_read(c);
        return;
    }
    a->finish_wanted = true;
    consumer_send_finish(c, a);
}

static void consumer_on_finish_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct consumer *c = w->data;

    (void)loop;
    (void)revents;
    for (struct active *a = c->active; a; a = a->next)
        if (a->finish_wanted && !a->finishing)
            consumer_send_finish(c, a);
}

/* ---- scheduled jobs ---- */

static void consumer_promote(struct consumer *c);

static void consumer_on_promote(struct redisq *q, const struct redisq_reply *r, void *arg)
{
    struct consumer *c = arg;
    long long n;

    (void)q;
    c->promoting = false;
    if (r == NULL || redisq_reply_type(r) != REDISQ_ARRAY)
        return;
    n = redisq_reply_int(redisq_reply_elem(r, 0));
    if (n > 0)
        LOG(LOG_INFO, "consumer", "jobs_promoted", "count=%lld", n);
    if (n >= 100)
        consumer_promote(c);   /* more may be due */
}

/* consumer_promote - move due scheduled jobs to their lanes (the promote
 * script decides who does it, so several instances never double one). */
static void consumer_promote(struct consumer *c)
{
    char now[32], ts[40];
    const char *argv[7];

    if (c->promoting || !c->ready || c->stopping || !redisq_is_up(c->rq))
        return;
    snprintf(now, sizeof now, "%.3f", clock_wall());
    argv[0] = c->scheduled_key;
    argv[1] = c->events_key;
    argv[2] = c->prefix;
    argv[3] = now;
    argv[4] = "100";
    argv[5] = clock_iso(clock_wall(), ts, sizeof ts);
    argv[6] = c->events_maxlen;
    if (redisq_eval(c->rq, &script_promote, consumer_on_promote, c, 2, 7, argv, NULL) == 0)
        c->promoting = true;
}

static void consumer_on_schedule_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    consumer_promote(w->data);
}

/* ---- heartbeat, claims, trimming ---- */

static void consumer_on_heartbeat_reply(struct redisq *q, const struct redisq_reply *r,
                                        void *arg)
{
    struct consumer *c = arg;

    (void)q;
    if (r == NULL || redisq_reply_type(r) != REDISQ_ARRAY)
        return;
    for (size_t i = 0; i < redisq_reply_len(r); i++) {
        struct active *a = consumer_find(c, redisq_reply_str(redisq_reply_elem(r, i), NULL));
        if (a && a->jr && !a->finish_wanted)
            fanout_abandon(c->fanout, a->jr);
    }
}

static void consumer_on_heartbeat(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct consumer *c = w->data;

    (void)loop;
    (void)revents;
    if (!c->ready)
        return;
    for (int l = 0; l < LANE_COUNT; l++) {
        const char *argv[3 + 2048];
        int argc = 0;
        argv[argc++] = c->lane_key[l];
        argv[argc++] = c->cfg->queue.group;
        argv[argc++] = c->cfg->queue.consumer;
        for (struct active *a = c->active; a && argc < 3 + 2048; a = a->next)
            if (a->lane == (enum track_lane)l && a->jr)
                argv[argc++] = a->entry;
        if (argc > 3)
            redisq_eval(c->rq, &script_heartbeat, consumer_on_heartbeat_reply, c, 1, argc,
                        argv, NULL);
    }
}

struct claim_read {
    struct consumer *c;
    enum track_lane lane;
};

static void consumer_alarm_lost(struct consumer *c, enum track_lane lane,
                                const struct redisq_reply *ids)
{
    char list[1024] = "", ts[40];
    size_t o = 0;
    const char *argv[12];

    for (size_t i = 0; i < redisq_reply_len(ids) && o + 42 < sizeof list; i++)
        o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", i ? "," : "",
                              redisq_reply_str(redisq_reply_elem(ids, i), NULL));
    LOG(LOG_ERROR, "consumer", "lost_jobs", "lane=%s count=%zu ids=%s "
        "reason=\"stream entries deleted while pending (trimmed by length?)\"",
        track_lane_names[lane], redisq_reply_len(ids), list);
    argv[0] = "XADD";
    argv[1] = c->alarms_key;
    argv[2] = "*";
    argv[3] = "ts";
    argv[4] = clock_iso(clock_wall(), ts, sizeof ts);
    argv[5] = "event";
    argv[6] = "lost_jobs";
    argv[7] = "lane";
    argv[8] = track_lane_names[lane];
    argv[9] = "ids";
    argv[10] = list;
    redisq_argv(c->rq, redisq_ignore, NULL, 0, 11, argv, NULL);
}

static void consumer_claim_from(struct consumer *c, int lane);

/* consumer_on_claim - an XAUTOCLAIM reply: [cursor, entries, deleted ids].
 * Takes the claimed entry (at most one: recovery goes one at a time) or,
 * when this lane had none, asks the next lane. */
static void consumer_on_claim(struct redisq *q, const struct redisq_reply *r, void *arg)
{
    struct claim_read *cr = arg;
    struct consumer *c = cr->c;
    enum track_lane lane = cr->lane;
    size_t taken = 0;

    (void)q;
    herold_free(cr);
    if (r == NULL || redisq_reply_type(r) != REDISQ_ARRAY || redisq_reply_len(r) < 2)
        return;
    const struct redisq_reply *entries = redisq_reply_elem(r, 1);
    for (size_t e = 0; e < redisq_reply_len(entries); e++) {
        const struct redisq_reply *en = redisq_reply_elem(entries, e);
        const char *id = redisq_reply_str(redisq_reply_elem(en, 0), NULL);
        LOG(LOG_INFO, "consumer", "entry_claimed", "lane=%s entry=%s", track_lane_names[lane],
            id);
        consumer_take(c, lane, id, redisq_reply_elem(en, 1), true);
        taken++;
    }
    if (redisq_reply_len(r) >= 3 && redisq_reply_len(redisq_reply_elem(r, 2)) > 0)
        consumer_alarm_lost(c, lane, redisq_reply_elem(r, 2));
    if (taken == 0 && lane + 1 < LANE_COUNT)
        consumer_claim_from(c, lane + 1);
}

/* consumer_claim_from - XAUTOCLAIM one idle entry of another consumer,
 * trying lane first (urgent before normal before bulk). */
static void consumer_claim_from(struct consumer *c, int lane)
{
    char idle[24];
    struct claim_read *cr;

    for (; lane < LANE_COUNT; lane++)
        if (consumer_free_slots(c, (enum track_lane)lane) > 0)
            break;
    if (lane == LANE_COUNT || !c->ready || c->stopping || c->recovering)
        return;
    cr = herold_malloc(sizeof *cr);
    if (cr == NULL)
        return;
    cr->c = c;
    cr->lane = (enum track_lane)lane;
    snprintf(idle, sizeof idle, "%d", c->cfg->queue.claim_idle_ms);
    const char *argv[] = {"XAUTOCLAIM", c->lane_key[lane], c->cfg->queue.group,
                          c->cfg->queue.consumer, idle, "0-0", "COUNT", "1"};
    if (redisq_argv(c->rq, consumer_on_claim, cr, 0, 8, argv, NULL) != 0)
        herold_free(cr);
}

static void consumer_on_claim_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    consumer_claim_from(w->data, LANE_URGENT);
}

static void consumer_on_trim_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct consumer *c = w->data;
    char minid[32];
    double now = clock_wall();

    (void)loop;
    (void)revents;
    if (!c->ready)
        return;
    for (int l = 0; l < LANE_COUNT; l++) {
        const char *argv[] = {c->lane_key[l]};
        redisq_eval(c->rq, &script_trim, redisq_ignore, NULL, 1, 1, argv, NULL);
    }
    /* rejected and dead entries carry payloads: keep them for the
     * configured number of days, then let them go */
    snprintf(minid, sizeof minid, "%.0f",
             (now - c->cfg->jobs.rejected_retention_days * 86400.0) * 1000.0);
    const char *r1[] = {"XTRIM", c->rejected_key, "MINID", minid};
    const char *r2[] = {"XTRIM", c->dead_key, "MINID", minid};
    redisq_argv(c->rq, redisq_ignore, NULL, 0, 4, r1, NULL);
    redisq_argv(c->rq, redisq_ignore, NULL, 0, 4, r2, NULL);
}

/* ---- readiness: persistence check and groups ---- */

/* consumer_info_field - value of "name:" in an INFO text, into out. */
static bool consumer_info_field(const char *info, const char *name, char *out, size_t size)
{
    size_t nlen = strlen(name);

    for (const char *p = info; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, name, nlen) == 0 && p[nlen] == ':') {
            size_t n = strcspn(p + nlen + 1, "\r\n");
            if (n >= size)
                n = size - 1;
            memcpy(out, p + nlen + 1, n);
            out[n] = '\0';
            return true;
        }
    }
    return false;
}

static void consumer_on_group(struct redisq *q, const struct redisq_reply *r, void *arg)
{
    (void)q;
    (void)arg;
    if (r == NULL)
        return;
    if (redisq_reply_type(r) == REDISQ_ERROR && !redisq_reply_is_error(r, "BUSYGROUP")) {
        char buf[160];
        LOG(LOG_ERROR, "consumer", "group_create_failed", "error=%s",
            log_quote(redisq_reply_str(r, NULL), buf, sizeof buf));
    }
}

static void consumer_on_groups_done(struct redisq *q, const struct redisq_reply *r, void *arg)
{
    struct consumer *c = arg;

    (void)q;
    c->checking = false;
    if (r == NULL)
        return;
    c->ready = true;
    for (int l = 0; l < LANE_COUNT; l++) {
        c->pel_done[l] = false;
        snprintf(c->pel_next[l], sizeof c->pel_next[l], "0");
    }
    if (!c->ever_ready) {
        c->ever_ready = true;
        LOG(LOG_INFO, "consumer", "ready", "group=%s consumer=%s prefix=%s",
            c->cfg->queue.group, c->cfg->queue.consumer, c->prefix);
    } else {
        LOG(LOG_INFO, "consumer", "resumed", "group=%s consumer=%s", c->cfg->queue.group,
            c->cfg->queue.consumer);
    }
    fanout_redis_up(c->fanout);
    consumer_on_finish_timer(c->loop, &c->finish_timer, 0);
    consumer_read(c);
}

static void consumer_on_info(struct redisq *q, const struct redisq_reply *r, void *arg)
{
    struct consumer *c = arg;
    char aof[8] = "", policy[32] = "", role[16] = "";
    const char *info;

    if (r == NULL || redisq_reply_type(r) != REDISQ_STR) {
        c->checking = false;
        return;
    }
    info = redisq_reply_str(r, NULL);
    consumer_info_field(info, "aof_enabled", aof, sizeof aof);
    consumer_info_field(info, "maxmemory_policy", policy, sizeof policy);
    consumer_info_field(info, "role", role, sizeof role);
    if (strcmp(role, "master") != 0) {
        LOG(LOG_ERROR, "consumer", "redis_not_master", "role=%s action=wait", role);
        c->checking = false;
        redisq_reset(q, "Redis is not a master");
        return;
    }
    if (strcmp(aof, "1") != 0 || strcmp(policy, "noeviction") != 0) {
        if (!c->cfg->redis.allow_unsafe_persistence) {
            LOG(LOG_FATAL, "consumer", "redis_unsafe",
                "appendonly=%s maxmemory_policy=%s reason=\"herold needs appendonly yes and "
                "maxmemory-policy noeviction, or jobs can be lost; set "
                "redis.allow_unsafe_persistence to override\"",
                strcmp(aof, "1") == 0 ? "yes" : "no", policy);
            c->checking = false;
            if (!c->ever_ready) {
                c->fatal = 1;
                ev_break(c->loop, EVBREAK_ALL);
            } else {
                /* configuration changed under a running daemon: stop
                 * taking work and look again later */
                c->ready = false;
                ev_timer_again(c->loop, &c->recheck_timer);
            }
            return;
        }
        LOG(LOG_WARN, "consumer", "redis_unsafe_allowed",
            "appendonly=%s maxmemory_policy=%s reason=\"jobs can be lost on a Redis crash\"",
            strcmp(aof, "1") == 0 ? "yes" : "no", policy);
    }
    for (int l = 0; l < LANE_COUNT; l++) {
        const char *argv[] = {"XGROUP", "CREATE", c->lane_key[l], c->cfg->queue.group, "0",
                              "MKSTREAM"};
        redisq_argv(q, consumer_on_group, c, 0, 6, argv, NULL);
    }
    const char *ping[] = {"PING"};
    if (redisq_argv(q, consumer_on_groups_done, c, 0, 1, ping, NULL) != 0)
        c->checking = false;
}

static void consumer_check(struct consumer *c)
{
    const char *argv[] = {"INFO"};

    if (c->checking || !redisq_is_up(c->rq))
        return;
    if (redisq_argv(c->rq, consumer_on_info, c, 0, 1, argv, NULL) == 0)
        c->checking = true;
}

static void consumer_on_recheck(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    consumer_check(w->data);
}

void consumer_on_redis(struct redisq *q, bool up, void *arg)
{
    struct consumer *c = arg;

    if (q == c->rqb) {
        if (!up)
            c->reading = false;
        else
            consumer_read(c);
        return;
    }
    if (up) {
        consumer_check(c);
        return;
    }
    c->ready = false;
    c->checking = false;
    c->pel_reading = false;
    LOG(LOG_WARN, "consumer", "paused", "reason=\"Redis connection lost\"");
}

/* ---- lifecycle ---- */

struct consumer *consumer_new(struct ev_loop *loop, const struct herold_config *cfg,
                              struct redisq *rq, struct redisq *rqb,
                              const char *crash_on_job)
{
    struct consumer *c = herold_calloc(1, sizeof *c);
    double beat;

    if (c == NULL)
        return NULL;
    c->loop = loop;
    c->cfg = cfg;
    c->rq = rq;
    c->rqb = rqb;
    c->crash_on_job = crash_on_job;
    c->prefix = cfg->redis.prefix;
    msgset_opts_from_config(cfg, &c->msg_opts);
    for (int l = 0; l < LANE_COUNT; l++)
        track_key_lane(c->lane_key[l], c->prefix, (enum track_lane)l);
    track_key(c->rejected_key, c->prefix, "rejected");
    track_key(c->dead_key, c->prefix, "dead");
    track_key(c->events_key, c->prefix, "events");
    track_key(c->alarms_key, c->prefix, "alarms");
    track_key(c->scheduled_key, c->prefix, "scheduled");
    snprintf(c->events_maxlen, sizeof c->events_maxlen, "%ld", cfg->jobs.events_maxlen);
    snprintf(c->retention, sizeof c->retention, "%ld", cfg->jobs.retention_days * 86400L);
    snprintf(c->max_deliveries, sizeof c->max_deliveries, "%d", cfg->queue.max_deliveries);
    beat = cfg->queue.claim_idle_ms / 3000.0;
    ev_timer_init(&c->heartbeat_timer, consumer_on_heartbeat, beat, beat);
    c->heartbeat_timer.data = c;
    ev_timer_init(&c->claim_timer, consumer_on_claim_timer, beat, beat);
    c->claim_timer.data = c;
    ev_timer_init(&c->trim_timer, consumer_on_trim_timer, 1.0,
                  cfg->queue.trim_interval_ms / 1000.0);
    c->trim_timer.data = c;
    ev_timer_init(&c->finish_timer, consumer_on_finish_timer, 0.2, 0.2);
    c->finish_timer.data = c;
    ev_timer_init(&c->schedule_timer, consumer_on_schedule_timer, 0.,
                  cfg->flow.schedule_poll_ms / 1000.0);
    c->schedule_timer.data = c;
    ev_init(&c->recheck_timer, consumer_on_recheck);
    c->recheck_timer.repeat = 5.0;
    c->recheck_timer.data = c;
    ev_timer_start(loop, &c->heartbeat_timer);
    ev_timer_start(loop, &c->claim_timer);
    ev_timer_start(loop, &c->trim_timer);
    ev_timer_start(loop, &c->finish_timer);
    ev_timer_start(loop, &c->schedule_timer);
    return c;
}

void consumer_set_templates(struct consumer *c, const struct msgset *set)
{
    c->templates = set;
}

/* consumer_render - a template job in a citizen's language, with the
 * message set in use now. */
static int consumer_render(void *arg, struct job *copy, const char *lang, struct herr *err)
{
    struct consumer *c = arg;

    return msgset_apply(c->templates, &c->msg_opts, copy, lang, err);
}

void consumer_attach(struct consumer *c, struct fanout *f)
{
    c->fanout = f;
    fanout_set_render(f, consumer_render, c);
}

void consumer_stop(struct consumer *c)
{
    c->stopping = true;
    ev_timer_stop(c->loop, &c->claim_timer);
    ev_timer_stop(c->loop, &c->trim_timer);
    ev_timer_stop(c->loop, &c->recheck_timer);
    ev_timer_stop(c->loop, &c->schedule_timer);
    /* Cancelling the blocking read means closing its connection; whatever
     * it delivered meanwhile stays pending and is read again next start. */
    redisq_stop(c->rqb);
}

bool consumer_settled(const struct consumer *c)
{
    if (c->beginning > 0)
        return false;
    for (const struct active *a = c->active; a; a = a->next)
        if (a->finishing)
            return false;
    return true;
}

int consumer_fatal(const struct consumer *c)
{
    return c->fatal;
}

void consumer_free(struct consumer *c)
{
    if (c == NULL)
        return;
    ev_timer_stop(c->loop, &c->heartbeat_timer);
    ev_timer_stop(c->loop, &c->claim_timer);
    ev_timer_stop(c->loop, &c->trim_timer);
    ev_timer_stop(c->loop, &c->finish_timer);
    ev_timer_stop(c->loop, &c->recheck_timer);
    ev_timer_stop(c->loop, &c->schedule_timer);
    while (c->active) {
        struct active *a = c->active;
        if (a->jr)
            fanout_free_run(c->fanout, a->jr);
        a->jr = NULL;
        consumer_remove(c, a);
    }
    herold_free(c);
}
