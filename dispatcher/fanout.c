/*
 * fanout - per-job delivery of units to channels, with the ledger writes
 * around each provider call (see fanout.h for the state machine).
 *
 * Owns the job runs, their per-unit state arrays, retry heaps and ledger
 * batches, and the per-delivery contexts handed to channels.  Memory per
 * run is the parsed job (its JSON tree, about 0.3 KB per recipient,
 * bounded by jobs.max_bytes) plus four bytes per unit, plus at most
 * delivery.window delivery contexts in total.  Never blocks the loop; never logs contact points (recipient ids
 * and pseudonyms only).
 */
#include "fanout.h"

#include <math.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "log.h"
#include "scripts.h"

#define FANOUT_TICK 0.05

enum item_action { ACT_SUBMIT, ACT_FINAL, ACT_RETRY };

struct batch_item {
    uint32_t unit;
    uint8_t action;
    double due;                    /* ACT_RETRY: monotonic time of next try */
    char *field;                   /* "<channel>:<recipient>" */
    char *value;                   /* ledger value */
    char flag[2];                  /* "d" in doubt, "-" none */
};

struct batch {
    struct job_run *jr;
    struct batch_item *items;
    size_t n, cap;
    bool sent;                     /* an EVALSHA is outstanding */
    struct batch *next;
};

struct retry_entry {
    double due;
    uint32_t unit;
};

struct job_run {
    struct fanout *f;
    struct job *job;
    enum track_lane lane;
    char entry[40];
    char job_key[TRACK_KEY_MAX];
    char units_key[TRACK_KEY_MAX];
    size_t nunits, terminal;
    uint8_t *state;                /* enum unit_state, as confirmed in the ledger */
    uint8_t *attempts;
    uint8_t *busy;                 /* 1 while queued, at a channel, or being recorded */
    uint8_t *doubt;                /* 1: last attempt may have reached the provider */
    size_t next;                   /* first unit not yet looked at */
    struct retry_entry *heap;
    size_t nheap, capheap;
    struct batch *open;            /* being filled */
    struct batch *pending;         /* flushed or waiting to be resent */
    size_t busy_count;
    uint8_t *bounced;              /* per recipient: its e-mail bounced before */
    bool loading;                  /* the bounce lookup is outstanding */
    bool abandoned, ended;
    struct job_run *prev, *nextrun;
};

struct delivery_ctx {
    struct delivery d;
    struct job_run *jr;
    uint32_t unit;
    char idem[33];
};

struct fanout {
    struct ev_loop *loop;
    const struct herold_config *cfg;
    struct redisq *rq;
    const struct fanout_channel *channels;
    size_t nchannels;
    fanout_end_fn *on_end;
    void *arg;
    struct job_run *runs[LANE_COUNT];
    size_t inflight;
    long abort_after_ok, ok_count;
    bool draining;
    double ledger_hold_until;      /* Redis refused a write: resend after this */
    double ledger_hold;            /* current pause, doubled per refusal */
    void (*drained_fn)(void *);
    void *drained_arg;
    ev_prepare prepare;            /* flush batches and pump before sleeping */
    ev_timer tick;                 /* retries due, unconfirmed batches */
    ev_timer deadline;
};

static void fanout_record(struct job_run *jr, uint32_t unit, enum unit_state st,
                          enum item_action act, int code, const char *reason, double due,
                          bool doubt);

/* ---- small helpers ---- */

/* fanout_unit_channel - channel index of unit u in jr. */
static size_t fanout_unit_channel(const struct job_run *jr, uint32_t u)
{
    return u % jr->job->nchannels;
}

static const struct job_recipient *fanout_unit_rcpt(const struct job_run *jr, uint32_t u)
{
    return &jr->job->rcpts[u / jr->job->nchannels];
}

/* fanout_channel - the configured channel called name, or NULL. */
static const struct fanout_channel *fanout_channel(const struct fanout *f, const char *name)
{
    for (size_t i = 0; i < f->nchannels; i++)
        if (strcmp(f->channels[i].ops->name, name) == 0)
            return &f->channels[i];
    return NULL;
}

/* fanout_idem_key - stable key per (job, recipient, channel): a resend after
 * a crash carries the same one, so deduplicating receivers see one effect. */
static void fanout_idem_key(const struct job_run *jr, uint32_t u, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    const char *ch = jr->job->channels[fanout_unit_channel(jr, u)];
    const char *rid = fanout_unit_rcpt(jr, u)->id;
    unsigned char md[SHA256_DIGEST_LENGTH];
    char in[JOB_ID_MAX + 1 + 64 + 1 + 64 + 1];
    int n = snprintf(in, sizeof in, "%s%c%s%c%s", jr->job->id, 0, ch, 0, rid);

    SHA256((const unsigned char *)in, (size_t)n, md);
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[32] = '\0';
}

/* fanout_backoff - exponential backoff with full jitter in [d/2, d]. */
static double fanout_backoff(const struct fanout *f, int attempt, long retry_after_ms)
{
    double d = f->cfg->delivery.backoff_base_ms / 1000.0;

    for (int i = 1; i < attempt && d < f->cfg->delivery.backoff_max_ms / 1000.0; i++)
        d *= 2;
    if (d > f->cfg->delivery.backoff_max_ms / 1000.0)
        d = f->cfg->delivery.backoff_max_ms / 1000.0;
    d = d / 2 + d / 2 * ((double)rand() / RAND_MAX);
    if (retry_after_ms >= 0 && retry_after_ms / 1000.0 > d)
        d = retry_after_ms / 1000.0;   /* never sooner than the provider asked */
    return d;
}

/* ---- retry heap (min-heap on due) ---- */

static int heap_push(struct job_run *jr, double due, uint32_t unit)
{
    size_t i;

    if (jr->nheap == jr->capheap) {
        size_t cap = jr->capheap ? jr->capheap * 2 : 16;
        struct retry_entry *h = herold_realloc(jr->heap, cap * sizeof *h);
        if (h == NULL)
            return -1;
        jr->heap = h;
        jr->capheap = cap;
    }
    i = jr->nheap++;
    while (i > 0 && jr->heap[(i - 1) / 2].due > due) {
        jr->heap[i] = jr->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    jr->heap[i].due = due;
    jr->heap[i].unit = unit;
    return 0;
}

static uint32_t heap_pop(struct job_run *jr)
{
    uint32_t top = jr->heap[0].unit;
    struct retry_entry last = jr->heap[--jr->nheap];
    size_t i = 0;

    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= jr->nheap)
            break;
        if (c + 1 < jr->nheap && jr->heap[c + 1].due < jr->heap[c].due)
            c++;
        if (jr->heap[c].due >= last.due)
            break;
        jr->heap[i] = jr->heap[c];
        i = c;
    }
    if (jr->nheap > 0)
        jr->heap[i] = last;
    return top;
}

/* ---- ledger batches ---- */

static void batch_free(struct batch *b)
{
    if (b == NULL)
        return;
    for (size_t i = 0; i < b->n; i++) {
        herold_free(b->items[i].field);
        herold_free(b->items[i].value);
    }
    herold_free(b->items);
    herold_free(b);
}

/* fanout_maybe_end - report the run's end once nothing is outstanding. */
static void fanout_maybe_end(struct job_run *jr)
{
    if (jr->ended || jr->busy_count > 0 || jr->open || jr->pending || jr->loading)
        return;
    if (jr->abandoned) {
        jr->ended = true;
        jr->f->on_end(jr, FANOUT_RELEASED, jr->f->arg);
    } else if (jr->terminal == jr->nunits) {
        jr->ended = true;
        jr->f->on_end(jr, FANOUT_DONE, jr->f->arg);
    }
}

static void fanout_submit(struct job_run *jr, uint32_t u);

/* fanout_batch_confirmed - Redis holds the batch: now do what follows. */
static void fanout_batch_confirmed(struct batch *b)
{
    struct job_run *jr = b->jr;

    for (size_t i = 0; i < b->n; i++) {
        struct batch_item *it = &b->items[i];
        enum unit_state st;
        int att;

        if (track_unit_parse(it->value, strlen(it->value), &st, &att) != 0)
            continue;
        switch (it->action) {
        case ACT_SUBMIT:
            jr->state[it->unit] = UNIT_SENDING;
            fanout_submit(jr, it->unit);
            break;
        case ACT_RETRY:
            jr->state[it->unit] = UNIT_RETRY;
            jr->busy[it->unit] = 0;
            jr->busy_count--;
            if (heap_push(jr, it->due, it->unit) != 0) {
                /* Out of memory: the unit stays `retry` in the ledger and is
                 * picked up when the job is resumed; it must not be lost. */
                LOG(LOG_ERROR, "fanout", "retry_deferred", "job=%s reason=\"out of memory\"",
                    jr->job->id);
            }
            break;
        case ACT_FINAL:
            if (!track_state_terminal(jr->state[it->unit]))
                jr->terminal++;
            jr->state[it->unit] = (uint8_t)st;
            jr->busy[it->unit] = 0;
            jr->busy_count--;
            break;
        }
    }
}

static void fanout_flush(struct batch *b);

static void fanout_on_ledger_reply(struct redisq *q, const struct redisq_reply *r, void *arg)
{
    struct batch *b = arg;
    struct job_run *jr = b->jr;
    struct batch **pp;

    (void)q;
    b->sent = false;
    if (r == NULL || redisq_reply_type(r) == REDISQ_ERROR) {
        /* Unknown outcome or a Redis-side refusal (OOM, MISCONF, LOADING,
         * BUSY): keep the batch and resend it, after a pause that doubles
         * up to 2 s so a refusing Redis is not hammered; never fail a unit
         * for it. */
        struct fanout *f = jr->f;
        if (r != NULL && ev_now(f->loop) >= f->ledger_hold_until) {
            char buf[160];
            f->ledger_hold = f->ledger_hold > 0 ? f->ledger_hold * 2 : 0.1;
            if (f->ledger_hold > 2.0)
                f->ledger_hold = 2.0;
            f->ledger_hold_until = ev_now(f->loop) + f->ledger_hold;
            LOG(LOG_WARN, "fanout", "ledger_write_refused",
                "job=%s error=%s retry_in_ms=%ld", jr->job->id,
                log_quote(redisq_reply_str(r, NULL), buf, sizeof buf),
                (long)(f->ledger_hold * 1000));
        }
        return;   /* the tick timer resends */
    }
    jr->f->ledger_hold = 0;
    for (pp = &jr->pending; *pp && *pp != b; pp = &(*pp)->next)
        ;
    if (*pp)
        *pp = b->next;
    fanout_batch_confirmed(b);
    batch_free(b);
    fanout_maybe_end(jr);
}

/* fanout_flush - send b to Redis (or leave it pending when Redis is down). */
static void fanout_flush(struct batch *b)
{
    struct job_run *jr = b->jr;
    const char *stack_argv[2 + 3 * 128];
    size_t stack_lens[2 + 3 * 128];
    const char **argv = stack_argv;
    size_t *lens = stack_lens;
    size_t argc = 2 + 3 * b->n;

    if (b->sent || !redisq_is_up(jr->f->rq) || ev_now(jr->f->loop) < jr->f->ledger_hold_until)
        return;
    if (argc > sizeof stack_argv / sizeof stack_argv[0]) {
        argv = herold_malloc(argc * sizeof *argv);
        lens = herold_malloc(argc * sizeof *lens);
        if (argv == NULL || lens == NULL)
            goto out;
    }
    argv[0] = jr->job_key;
    argv[1] = jr->units_key;
    for (size_t i = 0; i < b->n; i++) {
        argv[2 + 3 * i] = b->items[i].field;
        argv[3 + 3 * i] = b->items[i].value;
        argv[4 + 3 * i] = b->items[i].flag;
    }
    for (size_t i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    if (redisq_eval(jr->f->rq, &script_ledger, fanout_on_ledger_reply, b, 2, (int)argc,
                    argv, lens) == 0)
        b->sent = true;
out:
    if (argv != stack_argv) {
        herold_free(argv);
        herold_free(lens);
    }
}

/* fanout_close_batch - move the open batch to pending and flush it. */
static void fanout_close_batch(struct job_run *jr)
{
    struct batch *b = jr->open, **pp;

    if (b == NULL)
        return;
    jr->open = NULL;
    for (pp = &jr->pending; *pp; pp = &(*pp)->next)
        ;
    *pp = b;
    fanout_flush(b);
}

/* fanout_record - queue one ledger write for unit u; what follows it
 * (act) happens once Redis confirms. */
static void fanout_record(struct job_run *jr, uint32_t u, enum unit_state st,
                          enum item_action act, int code, const char *reason, double due,
                          bool doubt)
{
    struct batch *b = jr->open;
    struct batch_item *it;
    char value[256];
    const struct job_recipient *r = fanout_unit_rcpt(jr, u);
    const char *ch = jr->job->channels[fanout_unit_channel(jr, u)];
    size_t flen = strlen(ch) + 1 + strlen(r->id) + 1;

    /* Allocation failures here cannot drop the unit silently: the unit is
     * left busy and the job is abandoned so that another pass (a restart
     * or another instance) resumes it from the ledger. */
    if (b == NULL) {
        b = herold_calloc(1, sizeof *b);
        if (b == NULL)
            goto oom;
        b->jr = jr;
        b->cap = (size_t)jr->f->cfg->delivery.batch;
        b->items = herold_calloc(b->cap, sizeof *b->items);
        if (b->items == NULL) {
            herold_free(b);
            goto oom;
        }
        jr->open = b;
    }
    it = &b->items[b->n];
    it->unit = u;
    it->action = (uint8_t)act;
    it->due = due;
    it->flag[0] = doubt ? 'd' : '-';
    it->flag[1] = '\0';
    it->field = herold_malloc(flen);
    track_unit_value(value, sizeof value, st, jr->attempts[u], code, reason);
    it->value = herold_strdup(value);
    if (it->field == NULL || it->value == NULL) {
        herold_free(it->field);
        herold_free(it->value);
        goto oom;
    }
    snprintf(it->field, flen, "%s:%s", ch, r->id);
    b->n++;
    if (b->n == b->cap)
        fanout_close_batch(jr);
    return;
oom:
    LOG(LOG_ERROR, "fanout", "out_of_memory", "job=%s action=abandon_run", jr->job->id);
    jr->abandoned = true;
}

/* ---- bounces ---- */

/* fanout_note_bounce - remember a permanently refused address (by its
 * hash, never in clear) so later fan-outs skip it.  Best effort: the unit
 * itself is already recorded as failed in the ledger. */
static void fanout_note_bounce(struct fanout *f, struct job_run *jr, const char *addr,
                               int code)
{
    char key[TRACK_KEY_MAX], field[TRACK_CONTACT_MAX], val[200], ts[40];

    snprintf(val, sizeof val, "%d|%s|%s", code, clock_iso(clock_wall(), ts, sizeof ts),
             jr->job->id);
    const char *argv[] = {"HSET", track_key(key, f->cfg->redis.prefix, "contacts:bounced"),
                          track_contact_field(field, "email", addr), val};
    redisq_argv(f->rq, redisq_ignore, NULL, 0, 4, argv, NULL);
}

static void fanout_on_bounced(struct redisq *q, const struct redisq_reply *r, void *arg)
{
    struct job_run *jr = arg;
    size_t hits = 0;

    (void)q;
    jr->loading = false;
    if (r == NULL || redisq_reply_type(r) != REDISQ_ARRAY) {
        /* cannot tell: send to everyone rather than hold the job */
        LOG(LOG_WARN, "fanout", "bounce_check_skipped", "job=%s", jr->job->id);
        return;
    }
    for (size_t i = 0, k = 0; i < jr->job->nrcpts; i++) {
        if (jr->job->rcpts[i].email == NULL)
            continue;
        const struct redisq_reply *e = redisq_reply_elem(r, k++);
        if (e != NULL && redisq_reply_type(e) == REDISQ_STR) {
            jr->bounced[i] = 1;
            hits++;
        }
    }
    if (hits)
        LOG(LOG_INFO, "fanout", "bounced_skipped", "job=%s recipients=%zu", jr->job->id, hits);
}

/* fanout_check_bounces - for a job with an e-mail channel, look up which
 * recipients' addresses bounced before (one HMGET); units wait until the
 * answer is in. */
static void fanout_check_bounces(struct fanout *f, struct job_run *jr)
{
    char key[TRACK_KEY_MAX];
    const char **argv;
    char (*fields)[TRACK_CONTACT_MAX];
    size_t n = 0, emails = 0;
    bool has_email = false;

    for (size_t c = 0; c < jr->job->nchannels; c++)
        has_email |= strcmp(jr->job->channels[c], "email") == 0;
    for (size_t i = 0; i < jr->job->nrcpts; i++)
        emails += jr->job->rcpts[i].email != NULL;
    if (!has_email || emails == 0 || !redisq_is_up(f->rq))
        return;
    jr->bounced = herold_calloc(jr->job->nrcpts, 1);
    argv = herold_malloc((emails + 2) * sizeof *argv);
    fields = herold_malloc(emails * sizeof *fields);
    if (jr->bounced && argv && fields) {
        argv[n++] = "HMGET";
        argv[n++] = track_key(key, f->cfg->redis.prefix, "contacts:bounced");
        for (size_t i = 0, k = 0; i < jr->job->nrcpts; i++)
            if (jr->job->rcpts[i].email != NULL)
                argv[n++] = track_contact_field(fields[k++], "email", jr->job->rcpts[i].email);
        jr->loading = redisq_argv(f->rq, fanout_on_bounced, jr, 0, (int)n, argv, NULL) == 0;
    }
    herold_free(argv);
    herold_free(fields);
}

/* ---- delivery ---- */

static void fanout_on_done(void *arg, const struct delivery_result *res)
{
    struct delivery_ctx *dc = arg;
    struct job_run *jr = dc->jr;
    struct fanout *f = jr->f;
    uint32_t u = dc->unit;
    int attempt = jr->attempts[u];
    const char *ch = jr->job->channels[fanout_unit_channel(jr, u)];
    char qb[200];

    f->inflight--;
    herold_free(dc);
    if (res->status == DELIVERY_OK) {
        if (f->abort_after_ok > 0 && ++f->ok_count == f->abort_after_ok) {
            LOG(LOG_WARN, "fanout", "faultpoint", "point=after_provider_ok n=%ld", f->ok_count);
            abort();
        }
        fanout_record(jr, u, UNIT_SENT, ACT_FINAL, res->provider_code, "", 0, false);
        LOG(LOG_DEBUG, "fanout", "delivered", "job=%s ch=%s rcpt=%s attempt=%d code=%d",
            jr->job->id, ch, fanout_unit_rcpt(jr, u)->id, attempt, res->provider_code);
        return;
    }
    if (res->status == DELIVERY_TRANSIENT && attempt < f->cfg->delivery.max_attempts &&
        !jr->abandoned) {
        double delay = fanout_backoff(f, attempt, res->retry_after_ms);
        LOG(LOG_WARN, "fanout", "delivery_failed",
            "job=%s ch=%s rcpt=%s attempt=%d code=%d class=transient in_doubt=%s "
            "retry_in_ms=%ld reason=%s",
            jr->job->id, ch, fanout_unit_rcpt(jr, u)->id, attempt, res->provider_code,
            res->in_doubt ? "yes" : "no", (long)(delay * 1000),
            log_quote(res->reason, qb, sizeof qb));
        jr->doubt[u] = res->in_doubt;
        fanout_record(jr, u, UNIT_RETRY, ACT_RETRY, res->provider_code, res->reason,
                      ev_now(f->loop) + delay, false);
        return;
    }
    if (jr->abandoned && res->status == DELIVERY_TRANSIENT) {
        /* not ours any more: leave the unit to its new owner */
        fanout_record(jr, u, UNIT_RETRY, ACT_RETRY, res->provider_code, res->reason, 0, false);
        return;
    }
    if (res->status == DELIVERY_PERMANENT && res->provider_code >= 500 &&
        strcmp(ch, "email") == 0 && fanout_unit_rcpt(jr, u)->email != NULL)
        fanout_note_bounce(f, jr, fanout_unit_rcpt(jr, u)->email, res->provider_code);
    LOG(LOG_ERROR, "fanout", "delivery_failed",
        "job=%s ch=%s rcpt=%s attempt=%d code=%d class=%s reason=%s", jr->job->id, ch,
        fanout_unit_rcpt(jr, u)->id, attempt, res->provider_code,
        res->status == DELIVERY_PERMANENT ? "permanent" : "attempts_exhausted",
        log_quote(res->reason, qb, sizeof qb));
    fanout_record(jr, u, UNIT_FAILED, ACT_FINAL, res->provider_code, res->reason, 0, false);
}

/* fanout_contact - the unit's contact point for its channel, or NULL. */
static const char *fanout_contact(const struct fanout_channel *ch,
                                  const struct job_recipient *r)
{
    if (ch->ops->contact == NULL)
        return r->id;
    if (strcmp(ch->ops->contact, "email") == 0)
        return r->email;
    if (strcmp(ch->ops->contact, "phone") == 0)
        return r->phone;
    return r->id;
}

/* fanout_submit - hand unit u (already recorded as sending) to its channel. */
static void fanout_submit(struct job_run *jr, uint32_t u)
{
    struct fanout *f = jr->f;
    const struct job *j = jr->job;
    const char *chname = j->channels[fanout_unit_channel(jr, u)];
    const struct fanout_channel *ch = fanout_channel(f, chname);
    const struct job_recipient *r = fanout_unit_rcpt(jr, u);
    struct delivery_ctx *dc = herold_calloc(1, sizeof *dc);
    struct delivery_result res = {DELIVERY_TRANSIENT, -1, 0, false, ""};
    struct herr err;

    if (dc == NULL || ch == NULL) {
        snprintf(res.reason, sizeof res.reason, "%s",
                 dc ? "channel not configured" : "out of memory");
        if (dc == NULL) {
            f->inflight--;
            fanout_record(jr, u, UNIT_RETRY, ACT_RETRY, 0, res.reason,
                          ev_now(f->loop) + fanout_backoff(f, jr->attempts[u], -1), false);
            return;
        }
        res.status = DELIVERY_PERMANENT;
        fanout_on_done(dc, &res);
        return;
    }
    dc->jr = jr;
    dc->unit = u;
    fanout_idem_key(jr, u, dc->idem);
    dc->d.job_id = j->id;
    dc->d.kind = j->kind;
    dc->d.priority = j->priority;
    dc->d.rcpt_id = r->id;
    dc->d.address = fanout_contact(ch, r);
    dc->d.idem_key = dc->idem;
    dc->d.attempt = jr->attempts[u];
    dc->d.lang = j->render_lang[0] ? j->render_lang : j->lang;   /* what was rendered */
    dc->d.subject = j->subject;
    dc->d.text = j->text;
    dc->d.html = j->html;
    dc->d.parts = j->parts;
    dc->d.options = j->options ? json_object_get(j->options, chname) : NULL;
    if (ch->ops->submit(ch->state, &dc->d, fanout_on_done, dc, &err) != 0) {
        snprintf(res.reason, sizeof res.reason, "channel refused: %.140s", err.msg);
        if (err.kind == HERR_TRANSIENT) {
            /* Busy or draining: backpressure, not a failed attempt.  The
             * unit waits briefly and keeps its attempt count. */
            herold_free(dc);
            f->inflight--;
            jr->attempts[u]--;
            fanout_record(jr, u, UNIT_RETRY, ACT_RETRY, 0, res.reason,
                          ev_now(f->loop) + 0.1, false);
            return;
        }
        /* Bad input (an unknown endpoint in options, an unusable
         * address) will not improve by retrying. */
        if (err.kind == HERR_INPUT)
            res.status = DELIVERY_PERMANENT;
        fanout_on_done(dc, &res);
    }
}

/* fanout_next_unit - the next unit of jr that may start now, or -1. */
static long fanout_next_unit(struct job_run *jr, double now)
{
    if (jr->abandoned || jr->ended || jr->loading)
        return -1;
    if (jr->nheap > 0 && jr->heap[0].due <= now)
        return (long)heap_pop(jr);
    while (jr->next < jr->nunits) {
        uint32_t u = (uint32_t)jr->next++;
        if (!track_state_terminal(jr->state[u]) && !jr->busy[u]) {
            if (jr->state[u] == UNIT_RETRY || jr->state[u] == UNIT_SENDING ||
                jr->state[u] == UNIT_NONE)
                return (long)u;
        }
    }
    return -1;
}

/* fanout_start_unit - decide what happens to unit u and record it. */
static void fanout_start_unit(struct job_run *jr, uint32_t u)
{
    struct fanout *f = jr->f;
    const struct job *j = jr->job;
    const char *chname = j->channels[fanout_unit_channel(jr, u)];
    const struct fanout_channel *ch = fanout_channel(f, chname);
    const char *addr;
    struct herr err;

    jr->busy[u] = 1;
    jr->busy_count++;
    if (j->expires_at > 0 && clock_wall() >= j->expires_at) {
        fanout_record(jr, u, UNIT_EXPIRED, ACT_FINAL, 0, "expires_at passed", 0, false);
        return;
    }
    if (ch == NULL) {
        fanout_record(jr, u, UNIT_FAILED, ACT_FINAL, 0, "channel not configured", 0, false);
        return;
    }
    addr = fanout_contact(ch, fanout_unit_rcpt(jr, u));
    if (addr == NULL) {
        fanout_record(jr, u, UNIT_SUPPRESSED, ACT_FINAL, 0, "no contact point for channel",
                      0, false);
        return;
    }
    if (jr->bounced && jr->bounced[u / j->nchannels] && ch->ops->contact &&
        strcmp(ch->ops->contact, "email") == 0) {
        fanout_record(jr, u, UNIT_SUPPRESSED, ACT_FINAL, 0, "address bounced before", 0,
                      false);
        return;
    }
    if (ch->ops->validate_address(ch->state, addr, &err) != 0) {
        fanout_record(jr, u, UNIT_SUPPRESSED, ACT_FINAL, 0, "invalid contact point", 0,
                      false);
        return;
    }
    if (jr->attempts[u] < 255)
        jr->attempts[u]++;
    /* In doubt: the previous attempt was recorded as `sending` (a crash) or
     * ended without an answer; this resend keeps the idempotency key. */
    bool doubt = jr->state[u] == UNIT_SENDING || jr->doubt[u];
    jr->doubt[u] = 0;
    f->inflight++;
    fanout_record(jr, u, UNIT_SENDING, ACT_SUBMIT, 0, "", 0, doubt);
}

/* fanout_pump - start units while the window has room, urgent first. */
static void fanout_pump(struct fanout *f)
{
    double now = ev_now(f->loop);
    size_t window = (size_t)f->cfg->delivery.window;

    if (f->draining)
        return;
    for (int lane = 0; lane < LANE_COUNT; lane++) {
        for (struct job_run *jr = f->runs[lane]; jr; jr = jr->nextrun) {
            long u;
            /* f->inflight counts units from their `sending` record to
             * their channel's done: that is the window. */
            while (f->inflight < window && (u = fanout_next_unit(jr, now)) >= 0)
                fanout_start_unit(jr, (uint32_t)u);
            if (f->inflight >= window)
                return;
        }
    }
}

/* fanout_flush_all - close open batches and resend unconfirmed ones. */
static void fanout_flush_all(struct fanout *f)
{
    for (int lane = 0; lane < LANE_COUNT; lane++) {
        for (struct job_run *jr = f->runs[lane], *nx; jr; jr = nx) {
            nx = jr->nextrun;
            fanout_close_batch(jr);
            for (struct batch *b = jr->pending; b; b = b->next)
                if (!b->sent)
                    fanout_flush(b);
        }
    }
}

static bool fanout_quiet(const struct fanout *f)
{
    if (f->inflight > 0)
        return false;
    for (int lane = 0; lane < LANE_COUNT; lane++)
        for (struct job_run *jr = f->runs[lane]; jr; jr = jr->nextrun)
            if (jr->open || jr->pending)
                return false;
    return true;
}

static void fanout_check_drained(struct fanout *f)
{
    if (f->draining && f->drained_fn && fanout_quiet(f)) {
        void (*fn)(void *) = f->drained_fn;
        f->drained_fn = NULL;
        ev_timer_stop(f->loop, &f->deadline);
        fn(f->drained_arg);
    }
}

static void fanout_on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct fanout *f = w->data;

    (void)loop;
    (void)revents;
    fanout_pump(f);
    fanout_flush_all(f);
    for (int lane = 0; lane < LANE_COUNT; lane++)
        for (struct job_run *jr = f->runs[lane], *nx; jr; jr = nx) {
            nx = jr->nextrun;
            fanout_maybe_end(jr);
        }
    fanout_check_drained(f);
}

static void fanout_on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    /* Nothing to do here: waking the loop runs the prepare watcher, which
     * starts due retries and resends unconfirmed batches. */
}

static void fanout_on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct fanout *f = w->data;

    (void)loop;
    (void)revents;
    LOG(LOG_WARN, "fanout", "drain_deadline", "inflight=%zu action=abort", f->inflight);
    for (size_t i = 0; i < f->nchannels; i++)
        if (f->channels[i].ops->drain)
            f->channels[i].ops->drain(f->channels[i].state, 0);
    if (f->drained_fn) {
        void (*fn)(void *) = f->drained_fn;
        f->drained_fn = NULL;
        fn(f->drained_arg);
    }
}

struct fanout *fanout_new(struct ev_loop *loop, const struct herold_config *cfg,
                          struct redisq *rq, const struct fanout_channel *channels,
                          size_t nchannels, fanout_end_fn *on_end, void *arg,
                          long abort_after_ok)
{
    struct fanout *f = herold_calloc(1, sizeof *f);

    if (f == NULL)
        return NULL;
    f->loop = loop;
    f->cfg = cfg;
    f->rq = rq;
    f->channels = channels;
    f->nchannels = nchannels;
    f->on_end = on_end;
    f->arg = arg;
    f->abort_after_ok = abort_after_ok;
    ev_prepare_init(&f->prepare, fanout_on_prepare);
    f->prepare.data = f;
    ev_prepare_start(loop, &f->prepare);
    ev_unref(loop);
    ev_timer_init(&f->tick, fanout_on_tick, FANOUT_TICK, FANOUT_TICK);
    f->tick.data = f;
    ev_timer_start(loop, &f->tick);
    ev_unref(loop);
    ev_timer_init(&f->deadline, fanout_on_deadline, 0., 0.);
    f->deadline.data = f;
    return f;
}

void fanout_free(struct fanout *f)
{
    if (f == NULL)
        return;
    for (int lane = 0; lane < LANE_COUNT; lane++)
        while (f->runs[lane])
            fanout_free_run(f, f->runs[lane]);
    ev_ref(f->loop);
    ev_prepare_stop(f->loop, &f->prepare);
    ev_ref(f->loop);
    ev_timer_stop(f->loop, &f->tick);
    ev_timer_stop(f->loop, &f->deadline);
    herold_free(f);
}

/* fanout_field_unit - unit index for ledger field "<channel>:<rcpt>". */
static long fanout_field_unit(const struct job_run *jr, json_t *rmap, const char *field)
{
    const char *colon = strchr(field, ':');
    size_t chlen;
    json_t *ri;

    if (colon == NULL)
        return -1;
    chlen = (size_t)(colon - field);
    ri = json_object_get(rmap, colon + 1);
    if (ri == NULL)
        return -1;
    for (size_t c = 0; c < jr->job->nchannels; c++)
        if (strlen(jr->job->channels[c]) == chlen &&
            memcmp(jr->job->channels[c], field, chlen) == 0)
            return (long)(json_integer_value(ri) * (json_int_t)jr->job->nchannels + (json_int_t)c);
    return -1;
}

/* fanout_resume - apply the ledger read by the begin script. */
static void fanout_resume(struct job_run *jr, const struct redisq_reply *ledger, size_t first)
{
    size_t n = ledger ? redisq_reply_len(ledger) : 0;
    json_t *rmap;
    size_t resumed = 0, doubt = 0;

    if (n <= first)
        return;
    rmap = json_object();
    for (size_t i = 0; i < jr->job->nrcpts; i++)
        json_object_set_new(rmap, jr->job->rcpts[i].id, json_integer((json_int_t)i));
    for (size_t i = first; i + 1 < n; i += 2) {
        size_t vlen;
        const char *field = redisq_reply_str(redisq_reply_elem(ledger, i), NULL);
        const char *val = redisq_reply_str(redisq_reply_elem(ledger, i + 1), &vlen);
        enum unit_state st;
        int att;
        long u = fanout_field_unit(jr, rmap, field);

        if (u < 0 || track_unit_parse(val, vlen, &st, &att) != 0)
            continue;
        jr->state[u] = (uint8_t)st;
        jr->attempts[u] = (uint8_t)(att > 255 ? 255 : att);
        if (track_state_terminal(st))
            jr->terminal++;
        if (st == UNIT_SENDING)
            doubt++;
        resumed++;
    }
    json_decref(rmap);
    LOG(LOG_INFO, "fanout", "job_resumed", "job=%s units=%zu final=%zu in_doubt=%zu",
        jr->job->id, resumed, jr->terminal, doubt);
}

struct job_run *fanout_add(struct fanout *f, struct job *job, enum track_lane lane,
                           const char *entry, const struct redisq_reply *ledger,
                           size_t first)
{
    struct job_run *jr = herold_calloc(1, sizeof *jr), **pp;

    if (jr == NULL)
        goto fail;
    jr->f = f;
    jr->job = job;
    jr->lane = lane;
    snprintf(jr->entry, sizeof jr->entry, "%s", entry);
    track_key_job(jr->job_key, f->cfg->redis.prefix, job->id);
    track_key_units(jr->units_key, f->cfg->redis.prefix, job->id);
    jr->nunits = job->nrcpts * job->nchannels;
    jr->state = herold_calloc(jr->nunits, 1);
    jr->attempts = herold_calloc(jr->nunits, 1);
    jr->busy = herold_calloc(jr->nunits, 1);
    jr->doubt = herold_calloc(jr->nunits, 1);
    if (!jr->state || !jr->attempts || !jr->busy || !jr->doubt)
        goto fail;
    fanout_resume(jr, ledger, first);
    fanout_check_bounces(f, jr);
    /* append: within a lane, older jobs first */
    for (pp = &f->runs[lane]; *pp; pp = &(*pp)->nextrun)
        ;
    jr->prev = NULL;
    *pp = jr;
    LOG(LOG_INFO, "fanout", "job_started", "job=%s lane=%s units=%zu", job->id,
        track_lane_names[lane], jr->nunits);
    if (jr->terminal == jr->nunits)
        ev_feed_event(f->loop, &f->tick, EV_TIMER);   /* end it from the loop */
    return jr;
fail:
    if (jr) {
        herold_free(jr->state);
        herold_free(jr->attempts);
        herold_free(jr->busy);
        herold_free(jr->doubt);
        herold_free(jr);
    }
    job_free(job);
    return NULL;
}

void fanout_abandon(struct fanout *f, struct job_run *jr)
{
    (void)f;
    if (!jr->abandoned)
        LOG(LOG_WARN, "fanout", "job_abandoned", "job=%s reason=\"entry claimed elsewhere\"",
            jr->job->id);
    jr->abandoned = true;
    fanout_maybe_end(jr);
}

void fanout_free_run(struct fanout *f, struct job_run *jr)
{
    struct job_run **pp;

    for (pp = &f->runs[jr->lane]; *pp && *pp != jr; pp = &(*pp)->nextrun)
        ;
    if (*pp)
        *pp = jr->nextrun;
    batch_free(jr->open);
    while (jr->pending) {
        struct batch *b = jr->pending;
        jr->pending = b->next;
        if (b->sent)
            b->jr = NULL;   /* cannot happen: runs end only with no batch outstanding */
        batch_free(b);
    }
    job_free(jr->job);
    herold_free(jr->state);
    herold_free(jr->attempts);
    herold_free(jr->busy);
    herold_free(jr->doubt);
    herold_free(jr->heap);
    herold_free(jr->bounced);
    herold_free(jr);
}

const struct job *fanout_run_job(const struct job_run *jr)
{
    return jr->job;
}

const char *fanout_run_entry(const struct job_run *jr)
{
    return jr->entry;
}

enum track_lane fanout_run_lane(const struct job_run *jr)
{
    return jr->lane;
}

void fanout_drain(struct fanout *f, double deadline_s, void (*done_fn)(void *), void *arg)
{
    f->draining = true;
    f->drained_fn = done_fn;
    f->drained_arg = arg;
    ev_timer_set(&f->deadline, deadline_s, 0.);
    ev_timer_start(f->loop, &f->deadline);
    LOG(LOG_INFO, "fanout", "draining", "inflight=%zu deadline_ms=%ld", f->inflight,
        (long)(deadline_s * 1000));
}

size_t fanout_inflight(const struct fanout *f)
{
    return f->inflight;
}

void fanout_redis_up(struct fanout *f)
{
    fanout_flush_all(f);
}
