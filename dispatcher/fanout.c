/*
 * fanout - per-job delivery of units to channels, with the ledger writes
 * around each provider call (see fanout.h for the state machine).
 *
 * Owns the job runs, their pages (recipients and units being resolved or
 * delivered), ledger batches, and the per-delivery contexts handed to
 * channels.  Memory per run is the parsed job (bounded by jobs.max_bytes;
 * for an explicit list, its JSON tree of about 0.3 KB per recipient and a
 * 4-byte index entry per recipient) plus at most audience.pages_ahead main
 * pages and as many pages taken from the later set, each of audience.page
 * recipients; plus at most delivery.window delivery contexts in total.
 * Never blocks the loop; never logs contact points (recipient ids and
 * pseudonyms only).
 */
#include "fanout.h"

#include <math.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "audience.h"
#include "clock.h"
#include "log.h"
#include "ratelimit.h"
#include "scripts.h"
#include "tz.h"

#define FANOUT_TICK 0.05
#define FANOUT_VARIANTS 8
#define FANOUT_KV_STACK 64
#define FANOUT_GRANT_TTL 0.05      /* shared tokens unused this long are dropped */
#define FANOUT_CANCEL_POLL 0.5     /* seconds between looks at a run's cancel mark */

enum item_action { ACT_SUBMIT, ACT_FINAL, ACT_LATER };

/* A unit recorded as `sending`, waiting for its provider's token. */
struct staged {
    struct page *pg;
    uint32_t unit;
};

struct stage_ring {
    struct staged *v;
    size_t head, n, cap;           /* cap: delivery.window */
};

/* Flow state of one provider (a configured channel): docs/flow.md. */
struct provider {
    const struct config_provider *cp;   /* NULL: no limits */
    struct rl_bucket bucket;       /* local limit */
    double granted;                /* shared: tokens left from the last grant */
    double grant_at;               /* clock_mono of that grant */
    double ask_after;              /* shared: no grant before this (clock_mono) */
    bool asking;                   /* a gcra call is outstanding */
    unsigned want;                 /* units that found no token in this pump */
    bool blocked;                  /* no token for the rest of this pump */
    bool urgent_waits;             /* an urgent unit found no token in this pump */
    double paused_until;           /* clock_mono; Retry-After or an open circuit */
    int fails;                     /* transient failures in a row */
    /* A rate-limited provider's token is taken when a unit is handed to
     * it, after its `sending` record: units recorded but without a token
     * wait in these rings (per lane), so a Redis stall never turns into a
     * burst.  pipe counts units from their start to the hand-over, [0]
     * non-urgent, [1] urgent; each at most the burst. */
    struct stage_ring ring[LANE_COUNT];
    size_t pipe[2];
    char key[TRACK_KEY_MAX];       /* shared limit key "P rl:<channel>" */
};

/* What the resolution decided for a unit of a page. */
enum plan { PLAN_SEND, PLAN_DEFER, PLAN_SUPPRESS };

struct rcpt {
    char *own;                     /* one allocation holding the strings below */
    const char *id, *email, *phone, *lang;
    double quiet_end;              /* unix seconds the quiet hours end; 0: not quiet */
    char capday[11];               /* local day for the daily cap, "" none */
    char bounce[TRACK_CONTACT_MAX];/* contacts:bounced field of the e-mail, "" none */
};

struct unit {
    uint32_t rc;                   /* index into the page's recipients */
    uint8_t ch;                    /* channel index in the job */
    uint8_t state;                 /* enum unit_state, as confirmed in the ledger */
    uint8_t attempts;
    uint8_t plan;
    uint8_t busy;                  /* queued, at a channel, or being recorded */
    uint8_t doubt;                 /* the last attempt may have reached the provider */
    uint8_t from_later;            /* taken from the later set (holds a lease there) */
    uint8_t started;               /* looked at by the pump */
    const char *reason;            /* PLAN_SUPPRESS */
};

struct page {
    struct job_run *jr;
    struct page *next;
    bool later;                    /* units taken from the later set */
    bool ready;                    /* resolved; units may start */
    bool admitting;                /* the admit script is outstanding */
    char *cursor;                  /* main pages: the checkpoint after this page */
    struct rcpt *rc;
    size_t nrc;
    struct unit *u;
    size_t nu;
    size_t scan;                   /* units before this one were all started */
    size_t open;                   /* units not yet settled (final or parked) */
};

struct batch_item {
    struct page *pg;
    uint32_t unit;
    uint8_t action;
    bool cancelled;                /* the ledger recorded `cancelled` instead */
    char *field;                   /* "<channel>:<recipient>" */
    char *value;                   /* ledger value */
    char flag[2];                  /* "d" in doubt, "-" none */
    char zop[24];                  /* later set: "-", "x" or a due time */
};

struct batch {
    struct job_run *jr;
    struct batch_item *items;
    size_t n, cap;
    bool sent;                     /* an EVALSHA is outstanding */
    struct batch *next;
};

struct variant {
    char lang[36];
    struct job job;                /* shallow copy with its own parts */
    bool ok;
};

struct job_run {
    struct fanout *f;
    struct job *job;
    enum track_lane lane;
    char entry[40];
    char job_key[TRACK_KEY_MAX];
    char units_key[TRACK_KEY_MAX];
    char later_key[TRACK_KEY_MAX];
    char dlq_key[TRACK_KEY_MAX];
    struct aud_job aj;
    double accepted_ts;            /* unix seconds the job was first accepted */
    double expires_at;             /* the job's, or the alert default; 0 none */
    bool cancelled;                /* the job record carries `cancel` */
    bool cancel_asking;
    double cancel_check_at;        /* clock_mono of the next look */
    char mode[16];                 /* page script mode */
    char aud_set[TRACK_KEY_MAX];   /* mode "set": the key suffix of the audience */
    char *cursor;                  /* where the next main page starts */
    bool exhausted;                /* no main page left to read */
    bool loading;                  /* a page read is outstanding */
    bool taking;                   /* a take from the later set is outstanding */
    struct page *pages, *tail;     /* main pages, in audience order */
    size_t npages;
    struct page *lpages;           /* pages taken from the later set */
    size_t nlpages;
    double later_due;              /* wall time of the next take; HUGE_VAL none */
    double hold_until;             /* a page read or admission failed: wait (clock_mono) */
    long later_left;               /* members of the later set at the last take; -1 unknown */
    unsigned long later_writes, later_writes_seen;
    struct batch *open;            /* being filled */
    struct batch *pending;         /* flushed or waiting to be resent */
    size_t busy_count;
    uint32_t *sorted;              /* explicit recipients by id (for later units) */
    struct variant *var;
    size_t nvar;
    size_t citizens, units, npages_read;
    double t0;
    bool abandoned, ended;
    struct job_run *nextrun;
};

struct delivery_ctx {
    struct delivery d;
    struct page *pg;
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
    fanout_render_fn *render;
    void *render_arg;
    struct job_run *runs[LANE_COUNT];
    struct provider *prov;         /* one per channel */
    char dlq_index_key[TRACK_KEY_MAX];
    size_t inflight;
    size_t since_bulk;             /* normal units started since bulk's last */
    long abort_after_ok, ok_count;
    bool draining;
    double ledger_hold_until;      /* Redis refused a write: resend after this (clock_mono) */
    double ledger_hold;            /* current pause, doubled per refusal */
    void (*drained_fn)(void *);
    void *drained_arg;
    ev_prepare prepare;            /* flush batches and pump before sleeping */
    ev_timer tick;                 /* retries due, unconfirmed batches */
    ev_timer wake;                 /* the next token or the end of a pause */
    ev_timer deadline;
};

static void fanout_record(struct page *pg, uint32_t u, enum unit_state st,
                          enum item_action act, int code, const char *reason, double due,
                          bool doubt);

/* ---- small helpers ---- */

/* fanout_channel - the configured channel called name, or NULL. */
static const struct fanout_channel *fanout_channel(const struct fanout *f, const char *name)
{
    for (size_t i = 0; i < f->nchannels; i++)
        if (strcmp(f->channels[i].ops->name, name) == 0)
            return &f->channels[i];
    return NULL;
}

/* fanout_provider - the flow state of channel name, or NULL. */
static struct provider *fanout_provider(const struct fanout *f, const char *name)
{
    const struct fanout_channel *ch = fanout_channel(f, name);

    return ch ? &f->prov[ch - f->channels] : NULL;
}

static const char *unit_channel(const struct page *pg, uint32_t u)
{
    return pg->jr->job->channels[pg->u[u].ch];
}

static const struct rcpt *unit_rcpt(const struct page *pg, uint32_t u)
{
    return &pg->rc[pg->u[u].rc];
}

/* fanout_idem_key - stable key per (job, recipient, channel): a resend after
 * a crash carries the same one, so deduplicating receivers see one effect. */
static void fanout_idem_key(const struct page *pg, uint32_t u, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[SHA256_DIGEST_LENGTH];
    char in[JOB_ID_MAX + 1 + 64 + 1 + 64 + 1];
    int n = snprintf(in, sizeof in, "%s%c%s%c%s", pg->jr->job->id, 0, unit_channel(pg, u), 0,
                     unit_rcpt(pg, u)->id);

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

/* ---- pages ---- */

static void page_free(struct page *pg)
{
    if (pg == NULL)
        return;
    for (size_t i = 0; i < pg->nrc; i++)
        herold_free(pg->rc[i].own);
    herold_free(pg->rc);
    herold_free(pg->u);
    herold_free(pg->cursor);
    herold_free(pg);
}

/* page_settle - one unit of pg reached a final or parked state. */
static void page_settle(struct page *pg)
{
    if (pg->open > 0)
        pg->open--;
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

/* fanout_run_idle - nothing of jr is in memory or on the way to Redis. */
static bool fanout_run_idle(const struct job_run *jr)
{
    return jr->busy_count == 0 && jr->open == NULL && jr->pending == NULL && !jr->loading &&
           !jr->taking && !jr->cancel_asking && jr->pages == NULL && jr->lpages == NULL;
}

/* fanout_maybe_end - report the run's end once nothing is outstanding. */
static void fanout_maybe_end(struct job_run *jr)
{
    if (jr->ended)
        return;
    if (jr->abandoned && jr->busy_count == 0 && !jr->open && !jr->pending && !jr->loading &&
        !jr->taking && !jr->cancel_asking) {
        /* what was not started stays in Redis for the new owner */
        for (struct page *pg; (pg = jr->pages) != NULL; page_free(pg))
            jr->pages = pg->next;
        for (struct page *pg; (pg = jr->lpages) != NULL; page_free(pg))
            jr->lpages = pg->next;
        jr->tail = NULL;
        jr->npages = jr->nlpages = 0;
    }
    if (!fanout_run_idle(jr))
        return;
    if (jr->abandoned) {
        jr->ended = true;
        jr->f->on_end(jr, FANOUT_RELEASED, jr->f->arg);
    } else if (jr->exhausted && jr->later_left == 0 &&
               jr->later_writes_seen == jr->later_writes) {
        double s = clock_mono() - jr->t0;
        jr->ended = true;
        LOG(LOG_INFO, "fanout", "job_audience", "job=%s recipients=%zu units=%zu pages=%zu "
            "seconds=%.3f", jr->job->id, jr->citizens, jr->units, jr->npages_read, s);
        jr->f->on_end(jr, FANOUT_DONE, jr->f->arg);
    }
}

static void fanout_submit(struct page *pg, uint32_t u);
static bool fanout_urgent(const struct job_run *jr);

/* fanout_limited - does p have a rate limit (and so stage its units)? */
static bool fanout_limited(const struct provider *p)
{
    return p != NULL && p->cp != NULL && p->cp->rate > 0;
}

/* fanout_unpipe - unit u of pg (of a rate-limited provider) is no longer
 * between its start and its hand-over. */
static void fanout_unpipe(struct page *pg, uint32_t u)
{
    struct provider *p = fanout_provider(pg->jr->f, unit_channel(pg, u));

    if (fanout_limited(p)) {
        size_t *n = &p->pipe[fanout_urgent(pg->jr) ? 1 : 0];
        if (*n > 0)
            (*n)--;
    }
}

/* fanout_handover - unit u is recorded as `sending`: hand it to its
 * channel, or, for a rate-limited provider, to the ring where it waits
 * for a token (fanout_drain_rings). */
static void fanout_handover(struct page *pg, uint32_t u)
{
    struct provider *p = fanout_provider(pg->jr->f, unit_channel(pg, u));
    struct stage_ring *r;

    if (!fanout_limited(p)) {
        fanout_submit(pg, u);
        return;
    }
    r = &p->ring[pg->jr->lane];
    if (r->n == r->cap) {   /* cannot happen: staged units hold window slots */
        fanout_unpipe(pg, u);
        fanout_submit(pg, u);
        return;
    }
    r->v[(r->head + r->n++) % r->cap] = (struct staged){pg, u};
}

/* fanout_batch_confirmed - Redis holds the batch: now do what follows. */
static void fanout_batch_confirmed(struct batch *b)
{
    struct job_run *jr = b->jr;

    for (size_t i = 0; i < b->n; i++) {
        struct batch_item *it = &b->items[i];
        struct unit *un = &it->pg->u[it->unit];
        enum unit_state st;
        int att;

        if (track_unit_parse(it->value, strlen(it->value), &st, &att) != 0)
            continue;
        if (it->cancelled) {
            /* the job was cancelled: the ledger holds `cancelled`, and no
             * provider is called */
            un->state = UNIT_CANCELLED;
            un->busy = 0;
            jr->busy_count--;
            page_settle(it->pg);
            if (it->action == ACT_SUBMIT) {
                jr->f->inflight--;
                fanout_unpipe(it->pg, it->unit);
            }
            continue;
        }
        switch (it->action) {
        case ACT_SUBMIT:
            un->state = UNIT_SENDING;
            fanout_handover(it->pg, it->unit);
            break;
        case ACT_LATER: {
            /* Set the next take from the confirmation: replies come in
             * command order, so a take that ran before this write was
             * answered before it, and one after it sees the member. */
            double due = strtod(it->zop, NULL);
            jr->later_writes++;
            if (due < jr->later_due)
                jr->later_due = due;
        }
            /* fall through */
        case ACT_FINAL:
            un->state = (uint8_t)st;
            un->busy = 0;
            jr->busy_count--;
            page_settle(it->pg);
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
    if (r == NULL || redisq_reply_type(r) != REDISQ_ARRAY) {
        /* Unknown outcome or a Redis-side refusal (OOM, MISCONF, LOADING,
         * BUSY): keep the batch and resend it, after a pause that doubles
         * up to 2 s so a refusing Redis is not hammered; never fail a unit
         * for it. */
        struct fanout *f = jr->f;
        if (r != NULL && clock_mono() >= f->ledger_hold_until) {
            char buf[160];
            f->ledger_hold = f->ledger_hold > 0 ? f->ledger_hold * 2 : 0.1;
            if (f->ledger_hold > 2.0)
                f->ledger_hold = 2.0;
            f->ledger_hold_until = clock_mono() + f->ledger_hold;
            LOG(LOG_WARN, "fanout", "ledger_write_refused",
                "job=%s error=%s retry_in_ms=%ld", jr->job->id,
                log_quote(redisq_reply_str(r, NULL), buf, sizeof buf),
                (long)(f->ledger_hold * 1000));
        }
        return;   /* the tick timer resends */
    }
    jr->f->ledger_hold = 0;
    if (redisq_reply_int(redisq_reply_elem(r, 1)) == 1 && !jr->cancelled) {
        LOG(LOG_INFO, "fanout", "job_cancelled", "job=%s action=record_rest", jr->job->id);
        jr->cancelled = true;
    }
    for (size_t i = 2; i < redisq_reply_len(r); i++) {
        long long k = redisq_reply_int(redisq_reply_elem(r, i));
        if (k >= 1 && (size_t)k <= b->n)
            b->items[k - 1].cancelled = true;
    }
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
    const char *stack_argv[7 + 4 * 128];
    size_t stack_lens[7 + 4 * 128];
    const char **argv = stack_argv;
    size_t *lens = stack_lens;
    size_t argc = 7 + 4 * b->n;
    char now[32];

    if (b->sent || !redisq_is_up(jr->f->rq) || clock_mono() < jr->f->ledger_hold_until)
        return;
    if (argc > sizeof stack_argv / sizeof stack_argv[0]) {
        argv = herold_malloc(argc * sizeof *argv);
        lens = herold_malloc(argc * sizeof *lens);
        if (argv == NULL || lens == NULL)
            goto out;
    }
    snprintf(now, sizeof now, "%.3f", clock_wall());
    argv[0] = jr->job_key;
    argv[1] = jr->units_key;
    argv[2] = jr->later_key;
    argv[3] = jr->dlq_key;
    argv[4] = jr->f->dlq_index_key;
    argv[5] = now;
    argv[6] = jr->job->id;
    for (size_t i = 0; i < b->n; i++) {
        argv[7 + 4 * i] = b->items[i].field;
        argv[8 + 4 * i] = b->items[i].value;
        argv[9 + 4 * i] = b->items[i].flag;
        argv[10 + 4 * i] = b->items[i].zop;
    }
    for (size_t i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    if (redisq_eval(jr->f->rq, &script_ledger, fanout_on_ledger_reply, b, 5, (int)argc,
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

/* fanout_record - queue one ledger write for unit u of pg; what follows
 * it (act) happens once Redis confirms.  due (wall clock) places an
 * ACT_LATER unit in the later set. */
static void fanout_record(struct page *pg, uint32_t u, enum unit_state st,
                          enum item_action act, int code, const char *reason, double due,
                          bool doubt)
{
    struct job_run *jr = pg->jr;
    struct unit *un = &pg->u[u];
    struct batch *b = jr->open;
    struct batch_item *it;
    char value[256];
    const char *ch = unit_channel(pg, u);
    const char *rid = unit_rcpt(pg, u)->id;
    size_t flen = strlen(ch) + 1 + strlen(rid) + 1;

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
    it->pg = pg;
    it->unit = u;
    it->action = (uint8_t)act;
    it->flag[0] = doubt ? 'd' : '-';
    it->flag[1] = '\0';
    if (act == ACT_LATER)
        snprintf(it->zop, sizeof it->zop, "%.3f", due);
    else if (act == ACT_FINAL && (un->from_later || doubt))
        snprintf(it->zop, sizeof it->zop, "x");
    else
        snprintf(it->zop, sizeof it->zop, "-");
    it->field = herold_malloc(flen);
    track_unit_value(value, sizeof value, st, un->attempts, code, reason);
    it->value = herold_strdup(value);
    if (it->field == NULL || it->value == NULL) {
        herold_free(it->field);
        herold_free(it->value);
        goto oom;
    }
    snprintf(it->field, flen, "%s:%s", ch, rid);
    b->n++;
    if (act == ACT_LATER && due < jr->later_due)
        jr->later_due = due;
    if (b->n == b->cap)
        fanout_close_batch(jr);
    return;
oom:
    LOG(LOG_ERROR, "fanout", "out_of_memory", "job=%s action=abandon_run", jr->job->id);
    jr->abandoned = true;
}

/* fanout_decide - record a decision that needs no provider call. */
static void fanout_decide(struct page *pg, uint32_t u, enum unit_state st, const char *reason,
                          double due)
{
    struct unit *un = &pg->u[u];

    un->busy = 1;
    un->started = 1;
    pg->jr->busy_count++;
    fanout_record(pg, u, st, st == UNIT_DEFERRED || st == UNIT_RETRY ? ACT_LATER : ACT_FINAL,
                  0, reason, due, false);
}

/* ---- bounces ---- */

/* fanout_note_bounce - remember a permanently refused address (by its
 * hash, never in clear) so later fan-outs skip it, and mark the citizen's
 * address bounced.  Best effort: the unit itself is already recorded as
 * failed in the ledger. */
static void fanout_note_bounce(struct fanout *f, struct job_run *jr, const char *rid,
                               const char *addr, int code)
{
    char key[TRACK_KEY_MAX], field[TRACK_CONTACT_MAX], val[200], ts[40];

    snprintf(val, sizeof val, "%d|%s|%s", code, clock_iso(clock_wall(), ts, sizeof ts),
             jr->job->id);
    const char *argv[] = {"HSET", track_key(key, f->cfg->redis.prefix, "contacts:bounced"),
                          track_contact_field(field, "email", addr), val};
    redisq_argv(f->rq, redisq_ignore, NULL, 0, 4, argv, NULL);
    if (jr->job->audience != AUD_RECIPIENTS) {
        /* only if the record still holds this address (HSET would revive
         * an erased citizen): a tiny script-free check via HSETNX is not
         * enough, so the CLI's erase removes contacts:bounced as well */
        char ck[TRACK_KEY_MAX + 80];
        snprintf(ck, sizeof ck, "%scitizen:%s", f->cfg->redis.prefix, rid);
        const char *a2[] = {"EVAL",
            "if redis.call('HGET', KEYS[1], 'email') == ARGV[1] then "
            "redis.call('HSET', KEYS[1], 'email_state', 'bounced') end return 1",
            "1", ck, addr};
        redisq_argv(f->rq, redisq_ignore, NULL, 0, 5, a2, NULL);
    }
}

/* ---- per-language messages ---- */

/* fanout_variant - the job rendered in lang (a citizen's language), or
 * the job itself when it has a fixed language, inline content, or the
 * rendering fails. */
static const struct job *fanout_variant(struct job_run *jr, const char *lang)
{
    struct fanout *f = jr->f;
    const struct job *j = jr->job;
    struct variant *v;
    struct herr err;

    if (lang == NULL || j->template == NULL || j->lang_given || f->render == NULL ||
        strcmp(lang, j->render_lang[0] ? j->render_lang : j->lang) == 0)
        return j;
    for (size_t i = 0; i < jr->nvar; i++)
        if (strcmp(jr->var[i].lang, lang) == 0)
            return jr->var[i].ok ? &jr->var[i].job : j;
    if (jr->nvar == FANOUT_VARIANTS || strlen(lang) >= sizeof jr->var[0].lang)
        return j;
    if (jr->var == NULL && (jr->var = herold_calloc(FANOUT_VARIANTS, sizeof *jr->var)) == NULL)
        return j;
    v = &jr->var[jr->nvar++];
    snprintf(v->lang, sizeof v->lang, "%s", lang);
    v->job = *j;
    v->job.lang = v->lang;      /* the citizen's language first, then the defaults */
    memset(v->job.parts, 0, sizeof v->job.parts);
    v->job.render_lang[0] = '\0';
    v->ok = f->render(f->render_arg, &v->job, NULL, &err) == 0;
    if (!v->ok) {
        for (int p = 0; p < JOB_PARTS; p++) {
            herold_free(v->job.parts[p]);
            v->job.parts[p] = NULL;
        }
        LOG(LOG_WARN, "fanout", "render_lang_failed", "job=%s lang=%s action=job_language",
            j->id, lang);
        return j;
    }
    return &v->job;
}

/* ---- delivery ---- */

/* fanout_pause - pause provider p for non-urgent units for d seconds
 * (capped at flow.max_pause_s, plus up to 10 % jitter so instances do not
 * resume in step). */
static void fanout_pause(struct fanout *f, struct provider *p, const char *ch, double d,
                         const char *why)
{
    double until;

    if (d > f->cfg->flow.max_pause_s)
        d = f->cfg->flow.max_pause_s;
    d += d * 0.1 * ((double)rand() / RAND_MAX);
    until = clock_mono() + d;
    if (until <= p->paused_until)
        return;
    p->paused_until = until;
    LOG(LOG_WARN, "fanout", "provider_paused", "channel=%s pause_ms=%ld reason=%s", ch,
        (long)(d * 1000), why);
}

/* fanout_flow_result - what a provider's answer means for the provider:
 * Retry-After pauses it, a run of transient failures opens its circuit,
 * a success closes it. */
static void fanout_flow_result(struct fanout *f, const char *ch, const struct delivery_result *res,
                               int attempt)
{
    struct provider *p = fanout_provider(f, ch);

    if (p == NULL)
        return;
    if (res->status == DELIVERY_OK) {
        p->fails = 0;
        return;
    }
    if (res->status != DELIVERY_TRANSIENT)
        return;
    if (res->retry_after_ms >= 0) {
        fanout_pause(f, p, ch, res->retry_after_ms / 1000.0, "retry_after");
    } else if (res->provider_code == 429) {
        fanout_pause(f, p, ch, fanout_backoff(f, attempt, -1), "429");
    } else if (++p->fails >= f->cfg->flow.circuit_failures) {
        fanout_pause(f, p, ch,
                     fanout_backoff(f, p->fails - f->cfg->flow.circuit_failures + 1, -1),
                     "circuit_open");
    }
}

static void fanout_on_done(void *arg, const struct delivery_result *res)
{
    struct delivery_ctx *dc = arg;
    struct page *pg = dc->pg;
    struct job_run *jr = pg->jr;
    struct fanout *f = jr->f;
    uint32_t u = dc->unit;
    struct unit *un = &pg->u[u];
    int attempt = un->attempts;
    const char *ch = unit_channel(pg, u);
    const struct rcpt *r = unit_rcpt(pg, u);
    const struct config_provider *cp = config_provider(f->cfg, ch);
    int max_attempts = cp && cp->max_attempts > 0 ? cp->max_attempts
                                                  : f->cfg->delivery.max_attempts;
    bool too_old = cp && cp->max_age_s > 0 && jr->accepted_ts > 0 &&
                   clock_wall() - jr->accepted_ts > cp->max_age_s;
    long retry_after = res->retry_after_ms;
    char qb[200], why[160];

    f->inflight--;
    herold_free(dc);
    fanout_flow_result(f, ch, res, attempt);
    if (retry_after > f->cfg->flow.max_pause_s * 1000L)
        retry_after = f->cfg->flow.max_pause_s * 1000L;
    if (res->status == DELIVERY_OK) {
        if (f->abort_after_ok > 0 && ++f->ok_count == f->abort_after_ok) {
            LOG(LOG_WARN, "fanout", "faultpoint", "point=after_provider_ok n=%ld", f->ok_count);
            abort();
        }
        fanout_record(pg, u, UNIT_SENT, ACT_FINAL, res->provider_code, "", 0, false);
        LOG(LOG_DEBUG, "fanout", "delivered", "job=%s ch=%s rcpt=%s attempt=%d code=%d",
            jr->job->id, ch, r->id, attempt, res->provider_code);
        return;
    }
    if (jr->abandoned && res->status == DELIVERY_TRANSIENT) {
        /* not ours any more: leave the unit to its new owner */
        fanout_record(pg, u, UNIT_RETRY, ACT_LATER, res->provider_code, res->reason,
                      clock_wall(), res->in_doubt);
        return;
    }
    if (res->status == DELIVERY_TRANSIENT && attempt < max_attempts && !too_old) {
        double delay = fanout_backoff(f, attempt, retry_after);
        double due = clock_wall() + delay;
        LOG(LOG_WARN, "fanout", "delivery_failed",
            "job=%s ch=%s rcpt=%s attempt=%d code=%d class=transient in_doubt=%s "
            "retry_in_ms=%ld reason=%s",
            jr->job->id, ch, r->id, attempt, res->provider_code,
            res->in_doubt ? "yes" : "no", (long)(delay * 1000),
            log_quote(res->reason, qb, sizeof qb));
        if (jr->expires_at > 0 && due >= jr->expires_at) {
            fanout_record(pg, u, UNIT_EXPIRED, ACT_FINAL, res->provider_code,
                          "expires_at comes before the next attempt", 0, false);
            return;
        }
        /* an attempt without an answer is counted in doubt now; the
         * resend (from the later set) carries the same idempotency key */
        fanout_record(pg, u, UNIT_RETRY, ACT_LATER, res->provider_code, res->reason, due,
                      res->in_doubt);
        return;
    }
    if (res->status == DELIVERY_PERMANENT && res->provider_code >= 500 &&
        strcmp(ch, "email") == 0 && r->email != NULL)
        fanout_note_bounce(f, jr, r->id, r->email, res->provider_code);
    if (res->status == DELIVERY_TRANSIENT) {
        /* the last attempt, or too old to try again: a dead letter, with
         * the last error */
        snprintf(why, sizeof why, "%s: %.120s", too_old ? "max age reached" : "attempts exhausted",
                 res->reason);
        LOG(LOG_ERROR, "fanout", "delivery_failed",
            "job=%s ch=%s rcpt=%s attempt=%d code=%d class=%s reason=%s", jr->job->id, ch,
            r->id, attempt, res->provider_code, too_old ? "max_age" : "attempts_exhausted",
            log_quote(res->reason, qb, sizeof qb));
        fanout_record(pg, u, UNIT_DEAD, ACT_FINAL, res->provider_code, why, 0, false);
        return;
    }
    LOG(LOG_ERROR, "fanout", "delivery_failed",
        "job=%s ch=%s rcpt=%s attempt=%d code=%d class=permanent reason=%s", jr->job->id, ch,
        r->id, attempt, res->provider_code, log_quote(res->reason, qb, sizeof qb));
    fanout_record(pg, u, UNIT_FAILED, ACT_FINAL, res->provider_code, res->reason, 0, false);
}

/* fanout_contact - the unit's contact point for its channel, or NULL. */
static const char *fanout_contact(const struct fanout_channel *ch, const struct rcpt *r)
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
static void fanout_submit(struct page *pg, uint32_t u)
{
    struct job_run *jr = pg->jr;
    struct fanout *f = jr->f;
    struct unit *un = &pg->u[u];
    const char *chname = unit_channel(pg, u);
    const struct fanout_channel *ch = fanout_channel(f, chname);
    const struct rcpt *r = unit_rcpt(pg, u);
    const struct job *j;
    struct delivery_ctx *dc = herold_calloc(1, sizeof *dc);
    struct delivery_result res = {DELIVERY_TRANSIENT, -1, 0, false, ""};
    struct herr err;

    if (dc == NULL || ch == NULL) {
        snprintf(res.reason, sizeof res.reason, "%s",
                 dc ? "channel not configured" : "out of memory");
        if (dc == NULL) {
            f->inflight--;
            fanout_record(pg, u, UNIT_RETRY, ACT_LATER, 0, res.reason,
                          clock_wall() + fanout_backoff(f, un->attempts, -1), false);
            return;
        }
        res.status = DELIVERY_PERMANENT;
        fanout_on_done(dc, &res);
        return;
    }
    j = fanout_variant(jr, r->lang);
    dc->pg = pg;
    dc->unit = u;
    fanout_idem_key(pg, u, dc->idem);
    dc->d.job_id = j->id;
    dc->d.kind = j->kind;
    dc->d.priority = j->priority;
    dc->d.rcpt_id = r->id;
    dc->d.address = fanout_contact(ch, r);
    dc->d.idem_key = dc->idem;
    dc->d.attempt = un->attempts;
    dc->d.lang = j->render_lang[0] ? j->render_lang : j->lang;   /* what was rendered */
    dc->d.topic = j->topic;
    dc->d.references = j->references;
    dc->d.msg_type = j->msg_type;
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
            un->attempts--;
            fanout_record(pg, u, UNIT_RETRY, ACT_LATER, 0, res.reason, clock_wall() + 0.1,
                          false);
            return;
        }
        /* Bad input (an unknown endpoint in options, an unusable
         * address) will not improve by retrying. */
        if (err.kind == HERR_INPUT)
            res.status = DELIVERY_PERMANENT;
        fanout_on_done(dc, &res);
    }
}

/* fanout_start_unit - decide what happens to unit u of pg and record it. */
static void fanout_start_unit(struct page *pg, uint32_t u)
{
    struct job_run *jr = pg->jr;
    struct fanout *f = jr->f;
    struct unit *un = &pg->u[u];
    const struct fanout_channel *ch = fanout_channel(f, unit_channel(pg, u));
    const char *addr;
    struct herr err;

    un->started = 1;
    un->busy = 1;
    jr->busy_count++;
    if (jr->expires_at > 0 && clock_wall() >= jr->expires_at) {
        fanout_record(pg, u, UNIT_EXPIRED, ACT_FINAL, 0, "expires_at passed", 0, false);
        return;
    }
    if (ch == NULL) {
        fanout_record(pg, u, UNIT_FAILED, ACT_FINAL, 0, "channel not configured", 0, false);
        return;
    }
    addr = fanout_contact(ch, unit_rcpt(pg, u));
    if (addr == NULL) {
        fanout_record(pg, u, UNIT_SUPPRESSED, ACT_FINAL, 0, "no contact point for channel",
                      0, false);
        return;
    }
    if (ch->ops->validate_address(ch->state, addr, &err) != 0) {
        fanout_record(pg, u, UNIT_SUPPRESSED, ACT_FINAL, 0, "invalid contact point", 0,
                      false);
        return;
    }
    if (un->attempts < 255)
        un->attempts++;
    /* In doubt: the previous attempt was recorded as `sending` (a crash) or
     * ended without an answer; this resend keeps the idempotency key. */
    bool doubt = un->state == UNIT_SENDING || un->doubt;
    un->doubt = 0;
    f->inflight++;
    {
        struct provider *p = fanout_provider(f, unit_channel(pg, u));
        if (fanout_limited(p))
            p->pipe[fanout_urgent(jr) ? 1 : 0]++;
    }
    fanout_record(pg, u, UNIT_SENDING, ACT_SUBMIT, 0, "", 0, doubt);
}

/* ---- reading the audience ---- */

static bool fanout_urgent(const struct job_run *jr)
{
    return strcmp(jr->job->priority, "urgent") == 0;
}

/* fanout_kv - the field/value pairs of a HGETALL reply into kv (n max). */
static size_t fanout_kv(const struct redisq_reply *h, struct aud_kv *kv, size_t n)
{
    size_t k = 0, len = h ? redisq_reply_len(h) : 0;

    for (size_t i = 0; i + 1 < len && k < n; i += 2, k++) {
        kv[k].k = redisq_reply_str(redisq_reply_elem(h, i), &kv[k].klen);
        kv[k].v = redisq_reply_str(redisq_reply_elem(h, i + 1), &kv[k].vlen);
    }
    return k;
}

/* fanout_put - a counted string into the recipient's buffer at *pos. */
static const char *fanout_put(char **pos, const char *s, size_t n)
{
    char *at = *pos;

    if (s == NULL)
        return NULL;
    memcpy(at, s, n);
    at[n] = '\0';
    *pos = at + n + 1;
    return at;
}

/* fanout_rcpt_citizen - fill r from a citizen record's resolution; the
 * quiet hours and the cap day only for non-urgent jobs. */
static int fanout_rcpt_citizen(struct job_run *jr, struct rcpt *r, const char *id,
                               size_t idlen, const struct aud_result *res, bool wants_email)
{
    const struct herold_config *cfg = jr->f->cfg;
    size_t need = idlen + res->email.vlen + res->phone.vlen + res->lang.vlen + 4;
    char *pos, tzname[72], qbuf[16];
    const struct tz *z = NULL;
    struct quiet q;
    time_t now = (time_t)clock_wall();

    if ((r->own = herold_malloc(need)) == NULL)
        return -1;
    pos = r->own;
    r->id = fanout_put(&pos, id, idlen);
    r->email = res->email.v && res->email.vlen ? fanout_put(&pos, res->email.v, res->email.vlen)
                                               : NULL;
    r->phone = res->phone.v && res->phone.vlen ? fanout_put(&pos, res->phone.v, res->phone.vlen)
                                               : NULL;
    r->lang = res->lang.v && res->lang.vlen ? fanout_put(&pos, res->lang.v, res->lang.vlen)
                                            : NULL;
    if (wants_email && r->email != NULL)
        track_contact_field(r->bounce, "email", r->email);
    if (fanout_urgent(jr))
        return 0;
    if (res->tz.v && res->tz.vlen > 0 && res->tz.vlen < sizeof tzname) {
        memcpy(tzname, res->tz.v, res->tz.vlen);
        tzname[res->tz.vlen] = '\0';
        z = tz_get(tzname, NULL);
    }
    if (z == NULL)
        z = tz_get(cfg->audience.default_tz, NULL);
    if (z == NULL)
        return 0;
    if (cfg->audience.daily_cap > 0)
        tz_local_day(z, now, r->capday);
    if (res->quiet.v && res->quiet.vlen < sizeof qbuf) {
        memcpy(qbuf, res->quiet.v, res->quiet.vlen);
        qbuf[res->quiet.vlen] = '\0';
        if (quiet_parse(qbuf, &q) == 0)
            r->quiet_end = (double)quiet_until(&q, z, now);
    }
    return 0;
}

/* fanout_rcpt_explicit - r borrows the job's recipient (no copy needed:
 * the job outlives its pages). */
static void fanout_rcpt_explicit(struct rcpt *r, const struct job_recipient *jrcpt,
                                 bool wants_email)
{
    r->id = jrcpt->id;
    r->email = jrcpt->email;
    r->phone = jrcpt->phone;
    r->lang = NULL;
    if (wants_email && r->email != NULL)
        track_contact_field(r->bounce, "email", r->email);
}

static void fanout_admit(struct page *pg);
static void fanout_page_ready(struct page *pg);

/* fanout_add_unit - append a unit to pg (capacity was reserved). */
static struct unit *fanout_add_unit(struct page *pg, uint32_t rc, size_t ch)
{
    struct unit *un = &pg->u[pg->nu++];

    memset(un, 0, sizeof *un);
    un->rc = rc;
    un->ch = (uint8_t)ch;
    pg->open++;
    return un;
}

/* fanout_unit_from_ledger - set up un from its ledger value (v, n: NULL
 * when none).  Returns false when the unit needs nothing: final, or (for
 * a main page, taken is false) parked in the later set, which owns it. */
static bool fanout_unit_from_ledger(struct unit *un, const char *v, size_t n, bool taken)
{
    enum unit_state st;
    int att;

    if (v == NULL || n == 0)
        return true;
    if (track_unit_parse(v, n, &st, &att) != 0)
        return true;
    if (track_state_terminal(st) || (!taken && (st == UNIT_RETRY || st == UNIT_DEFERRED)))
        return false;
    un->state = (uint8_t)st;
    un->attempts = (uint8_t)(att > 255 ? 255 : att);
    un->doubt = st == UNIT_SENDING;
    un->from_later = st == UNIT_SENDING;   /* it may hold a lease in the later set */
    return true;
}

/* fanout_contact_kind - how channel name reaches a recipient. */
static enum aud_contact fanout_contact_kind(const struct fanout *f, const char *name)
{
    const struct fanout_channel *ch = fanout_channel(f, name);

    if (ch == NULL || ch->ops->contact == NULL)
        return AUD_BY_ID;
    if (strcmp(ch->ops->contact, "email") == 0)
        return AUD_BY_EMAIL;
    if (strcmp(ch->ops->contact, "phone") == 0)
        return AUD_BY_PHONE;
    if (strcmp(ch->ops->contact, "push") == 0)
        return AUD_BY_PUSH;
    return AUD_BY_ID;
}

/* fanout_find_rcpt - the job's explicit recipient with id (idlen bytes),
 * by binary search over jr->sorted; NULL if the job has none. */
static const struct job_recipient *fanout_find_rcpt(const struct job_run *jr, const char *id,
                                                    size_t idlen)
{
    const struct job *j = jr->job;
    size_t lo = 0, hi = j->nrcpts;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int cmp = strncmp(j->rcpts[jr->sorted[mid]].id, id, idlen);
        if (cmp == 0 && strlen(j->rcpts[jr->sorted[mid]].id) > idlen)
            cmp = 1;
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < j->nrcpts && strlen(j->rcpts[jr->sorted[lo]].id) == idlen &&
        memcmp(j->rcpts[jr->sorted[lo]].id, id, idlen) == 0)
        return &j->rcpts[jr->sorted[lo]];
    return NULL;
}

/* fanout_build - one recipient of a page reply (record h, ledger values
 * led, one per channel; only_ch >= 0 for a unit taken from the later
 * set) into pg's recipients and units.  For explicit recipients, known is
 * the job's recipient when the caller has it, else it is looked up by id. */
static int fanout_build(struct page *pg, const char *id, size_t idlen,
                        const struct redisq_reply *h, const struct redisq_reply *led,
                        int only_ch, const char *lval, size_t llen,
                        const struct job_recipient *known)
{
    struct job_run *jr = pg->jr;
    const struct job *j = jr->job;
    struct aud_kv stack_kv[FANOUT_KV_STACK], *kv = stack_kv;
    struct aud_result res;
    size_t nkv = 0, hn = h ? redisq_reply_len(h) / 2 : 0;
    uint32_t rc = (uint32_t)pg->nrc;
    struct rcpt *r = &pg->rc[rc];
    const struct job_recipient *jrcpt = NULL;
    bool wants_email = false;

    memset(r, 0, sizeof *r);
    if (j->audience == AUD_RECIPIENTS) {
        /* explicit recipients: every channel, no consent or choice */
        memset(&res, 0, sizeof res);
        for (size_t c = 0; c < jr->aj.nch; c++)
            if (only_ch < 0 || (size_t)only_ch == c)
                res.verdict[c] = AUD_DELIVER;
        jrcpt = known ? known : fanout_find_rcpt(jr, id, idlen);
        if (jrcpt == NULL)
            return 0;   /* not a recipient of this job: ignore the member */
    } else {
        if (hn > FANOUT_KV_STACK && (kv = herold_malloc(hn * sizeof *kv)) == NULL)
            return -1;
        nkv = fanout_kv(h, kv, hn);
        aud_resolve(&jr->aj, kv, nkv, only_ch, &res);
    }
    for (size_t c = 0; c < jr->aj.nch; c++)
        if (res.verdict[c] == AUD_DELIVER && jr->aj.contact[c] == AUD_BY_EMAIL)
            wants_email = true;
    if (jrcpt != NULL)
        fanout_rcpt_explicit(r, jrcpt, wants_email);
    else if (fanout_rcpt_citizen(jr, r, id, idlen, &res, wants_email) != 0)
        goto oom;
    pg->nrc++;
    for (size_t c = 0; c < jr->aj.nch; c++) {
        struct unit *un;
        const char *v = NULL;
        size_t vn = 0;

        if (only_ch >= 0 && (size_t)only_ch != c)
            continue;
        if (res.verdict[c] == AUD_NONE) {
            if (only_ch < 0)
                continue;
            /* taken from the later set, but no longer chosen */
            res.verdict[c] = AUD_SUPPRESS;
            res.reason[c] = "no longer subscribed";
        }
        if (only_ch >= 0) {
            v = lval;
            vn = llen;
        } else if (led != NULL) {
            const struct redisq_reply *e = redisq_reply_elem(led, c);
            if (e != NULL && redisq_reply_type(e) == REDISQ_STR)
                v = redisq_reply_str(e, &vn);
        }
        un = fanout_add_unit(pg, rc, c);
        if (!fanout_unit_from_ledger(un, v, vn, pg->later)) {
            pg->nu--;
            pg->open--;
            continue;
        }
        un->from_later |= pg->later;
        if (res.verdict[c] == AUD_SUPPRESS) {
            un->plan = PLAN_SUPPRESS;
            un->reason = res.reason[c];
        } else {
            un->plan = PLAN_SEND;
        }
    }
    if (kv != stack_kv)
        herold_free(kv);
    return 0;
oom:
    if (kv != stack_kv)
        herold_free(kv);
    return -1;
}

/* fanout_page_new - a page with room for nrc recipients. */
static struct page *fanout_page_new(struct job_run *jr, size_t nrc, bool later)
{
    struct page *pg = herold_calloc(1, sizeof *pg);

    if (pg == NULL)
        return NULL;
    pg->jr = jr;
    pg->later = later;
    pg->rc = herold_calloc(nrc ? nrc : 1, sizeof *pg->rc);
    pg->u = herold_calloc((nrc ? nrc : 1) * jr->aj.nch, sizeof *pg->u);
    if (pg->rc == NULL || pg->u == NULL) {
        page_free(pg);
        return NULL;
    }
    return pg;
}

static void fanout_read_page(struct job_run *jr);

static void fanout_on_page(struct redisq *q, const struct redisq_reply *r, void *arg)
{
    struct job_run *jr = arg;
    const struct job *j = jr->job;
    struct page *pg = NULL;
    size_t n, nrc, start = 0;
    char *next = NULL, buf[24];
    bool by_index = j->audience == AUD_RECIPIENTS || j->audience == AUD_CITIZENS;

    (void)q;
    jr->loading = false;
    if (jr->abandoned || jr->ended) {
        fanout_maybe_end(jr);
        return;
    }
    if (r == NULL || redisq_reply_type(r) != REDISQ_ARRAY || redisq_reply_len(r) < 2) {
        char qb[160];
        LOG(LOG_WARN, "fanout", "page_read_failed", "job=%s error=%s retry_in_ms=500", j->id,
            log_quote(r ? redisq_reply_str(r, NULL) : "no reply", qb, sizeof qb));
        jr->hold_until = clock_mono() + 0.5;
        return;   /* read again after the pause */
    }
    n = redisq_reply_len(r);
    nrc = (n - 2) / 3;
    if (by_index) {
        start = (size_t)strtoul(jr->cursor, NULL, 10);
        snprintf(buf, sizeof buf, "%zu", start + nrc);
        next = herold_strdup(buf);
        jr->exhausted = start + nrc >= j->nrcpts;
    } else {
        next = herold_strdup(redisq_reply_str(redisq_reply_elem(r, 0), NULL));
        jr->exhausted = redisq_reply_int(redisq_reply_elem(r, 1)) == 1;
    }
    if (next == NULL || (pg = fanout_page_new(jr, nrc, false)) == NULL ||
        (pg->cursor = herold_strdup(next)) == NULL)
        goto oom;
    herold_free(jr->cursor);
    jr->cursor = next;
    next = NULL;
    /* Ask for the next page now, so Redis reads it while this one is
     * resolved here (the page counts against pages_ahead already); but
     * not for an urgent job's first page, whose deliveries must not wait
     * behind the second page's reply. */
    jr->npages++;
    if (!jr->exhausted && jr->npages < (size_t)jr->f->cfg->audience.pages_ahead &&
        redisq_is_up(jr->f->rq) && !(fanout_urgent(jr) && jr->npages_read == 0))
        fanout_read_page(jr);
    jr->npages--;
    for (size_t i = 0; i < nrc; i++) {
        size_t idlen;
        const char *id = redisq_reply_str(redisq_reply_elem(r, 2 + 3 * i), &idlen);
        if (fanout_build(pg, id, idlen, redisq_reply_elem(r, 3 + 3 * i),
                         redisq_reply_elem(r, 4 + 3 * i), -1, NULL, 0,
                         j->audience == AUD_RECIPIENTS ? &j->rcpts[start + i] : NULL) != 0)
            goto oom;
    }
    jr->citizens += nrc;
    jr->npages_read++;
    if (jr->tail)
        jr->tail->next = pg;
    else
        jr->pages = pg;
    jr->tail = pg;
    jr->npages++;
    fanout_admit(pg);
    return;
oom:
    herold_free(next);
    page_free(pg);
    LOG(LOG_ERROR, "fanout", "out_of_memory", "job=%s action=abandon_run", j->id);
    jr->abandoned = true;
}

/* fanout_read_page - ask for the next main page of jr. */
static void fanout_read_page(struct job_run *jr)
{
    struct fanout *f = jr->f;
    const struct job *j = jr->job;
    size_t size = (size_t)f->cfg->audience.page, nch = jr->aj.nch, argc = 0, start = 0, nids = 0;
    const char **argv;
    char sz[16], nc[8];

    if (j->audience == AUD_RECIPIENTS || j->audience == AUD_CITIZENS) {
        start = (size_t)strtoul(jr->cursor, NULL, 10);
        if (start >= j->nrcpts) {
            jr->exhausted = true;
            return;
        }
        nids = j->nrcpts - start < size ? j->nrcpts - start : size;
    } else if (j->audience == AUD_TOPICS) {
        nids = j->ntopics;
    } else if (j->audience == AUD_REACHED) {
        nids = 1;
    }
    argv = herold_malloc((7 + nch + nids) * sizeof *argv);
    if (argv == NULL)
        return;
    snprintf(sz, sizeof sz, "%zu", size);
    snprintf(nc, sizeof nc, "%zu", nch);
    argv[argc++] = jr->units_key;
    argv[argc++] = f->cfg->redis.prefix;
    argv[argc++] = jr->mode;
    argv[argc++] = jr->cursor;
    argv[argc++] = sz;
    argv[argc++] = nc;
    for (size_t c = 0; c < nch; c++)
        argv[argc++] = j->channels[c];
    if (j->audience == AUD_TOPICS)
        for (size_t i = 0; i < j->ntopics; i++)
            argv[argc++] = j->topics[i];
    else if (j->audience == AUD_REACHED)
        argv[argc++] = jr->aud_set;
    else if (j->audience != AUD_ALL)
        for (size_t i = 0; i < nids; i++)
            argv[argc++] = j->rcpts[start + i].id;
    if (redisq_eval(f->rq, &script_page, fanout_on_page, jr, 1, (int)argc, argv, NULL) == 0)
        jr->loading = true;
    herold_free(argv);
}

/* ---- admission: bounce list, daily cap, quiet hours ---- */

/* fanout_unit_email - is unit un an e-mail unit still to be sent? */
static bool fanout_unit_email(const struct job_run *jr, const struct unit *un)
{
    return un->plan == PLAN_SEND && jr->aj.contact[un->ch] == AUD_BY_EMAIL;
}

static void fanout_on_admit(struct redisq *q, const struct redisq_reply *r, void *arg)
{
    struct page *pg = arg;
    struct job_run *jr = pg->jr;
    size_t k = 0;

    (void)q;
    pg->admitting = false;
    if (r == NULL || redisq_reply_type(r) != REDISQ_ARRAY) {
        char qb[160];
        LOG(LOG_WARN, "fanout", "admit_failed", "job=%s error=%s retry_in_ms=500", jr->job->id,
            log_quote(r ? redisq_reply_str(r, NULL) : "no reply", qb, sizeof qb));
        jr->hold_until = clock_mono() + 0.5;
        return;   /* the pump asks again after the pause */
    }
    for (size_t i = 0; i < pg->nrc; i++) {
        const struct rcpt *rc = &pg->rc[i];
        bool asked = false;
        long long v;
        for (size_t u = 0; u < pg->nu; u++)
            if (pg->u[u].rc == i && pg->u[u].plan == PLAN_SEND)
                asked = true;
        if (!asked || (rc->bounce[0] == '\0' && rc->capday[0] == '\0'))
            continue;
        v = redisq_reply_int(redisq_reply_elem(r, k++));
        for (size_t u = 0; u < pg->nu; u++) {
            struct unit *un = &pg->u[u];
            if (un->rc != i || un->plan != PLAN_SEND)
                continue;
            if ((v & 1) && fanout_unit_email(jr, un)) {
                un->plan = PLAN_SUPPRESS;
                un->reason = "address bounced before";
            }
            if ((v & 2) && un->plan == PLAN_SEND) {
                un->plan = PLAN_SUPPRESS;
                un->reason = "daily cap reached";
            }
        }
    }
    fanout_page_ready(pg);
}

/* fanout_admit - check the page's recipients against the bounce list and
 * the daily cap (one script call), then make the page ready. */
static void fanout_admit(struct page *pg)
{
    struct job_run *jr = pg->jr;
    struct fanout *f = jr->f;
    const char **argv;
    char capn[16], ttl[16], capk[TRACK_KEY_MAX], bk[TRACK_KEY_MAX];
    size_t argc = 0, asks = 0;

    if (pg->later) {
        /* counted and checked when first resolved */
        fanout_page_ready(pg);
        return;
    }
    argv = herold_malloc((5 + 4 * pg->nrc) * sizeof *argv);
    if (argv == NULL)
        return;
    snprintf(capn, sizeof capn, "%d", f->cfg->audience.daily_cap);
    snprintf(ttl, sizeof ttl, "%d", 2 * 86400);
    snprintf(capk, sizeof capk, "%scap:", f->cfg->redis.prefix);
    argv[argc++] = track_key(bk, f->cfg->redis.prefix, "contacts:bounced");
    argv[argc++] = jr->job->id;
    argv[argc++] = capn;
    argv[argc++] = capk;
    argv[argc++] = ttl;
    for (size_t i = 0; i < pg->nrc; i++) {
        const struct rcpt *rc = &pg->rc[i];
        bool other = false, asked = false;
        for (size_t u = 0; u < pg->nu; u++) {
            const struct unit *un = &pg->u[u];
            if (un->rc != i || un->plan != PLAN_SEND)
                continue;
            asked = true;
            if (!fanout_unit_email(jr, un) || rc->bounce[0] == '\0')
                other = true;
        }
        if (!asked || (rc->bounce[0] == '\0' && rc->capday[0] == '\0'))
            continue;
        argv[argc++] = rc->id;
        argv[argc++] = rc->bounce[0] ? rc->bounce : "-";
        argv[argc++] = rc->capday[0] ? rc->capday : "-";
        argv[argc++] = other ? "1" : "0";
        asks++;
    }
    if (asks == 0) {
        herold_free(argv);
        fanout_page_ready(pg);
        return;
    }
    if (redisq_eval(f->rq, &script_admit, fanout_on_admit, pg, 1, (int)argc, argv, NULL) == 0)
        pg->admitting = true;
    herold_free(argv);
}

/* fanout_page_ready - the page is resolved: record what needs no
 * provider (suppressed, deferred); the rest waits for the pump. */
static void fanout_page_ready(struct page *pg)
{
    struct job_run *jr = pg->jr;
    bool urgent = fanout_urgent(jr);

    pg->ready = true;
    jr->units += pg->nu;
    for (uint32_t u = 0; u < pg->nu; u++) {
        struct unit *un = &pg->u[u];
        const struct rcpt *rc = &pg->rc[un->rc];
        if (un->plan == PLAN_SEND && !urgent && rc->quiet_end > 0)
            un->plan = PLAN_DEFER;
        if (un->plan == PLAN_SUPPRESS)
            fanout_decide(pg, u, UNIT_SUPPRESSED, un->reason, 0);
        else if (un->plan == PLAN_DEFER && jr->cancelled)
            fanout_decide(pg, u, UNIT_CANCELLED, "job cancelled", 0);
        else if (un->plan == PLAN_DEFER && jr->expires_at > 0 && rc->quiet_end >= jr->expires_at)
            fanout_decide(pg, u, UNIT_EXPIRED, "expires_at comes before the quiet hours end", 0);
        else if (un->plan == PLAN_DEFER)
            fanout_decide(pg, u, UNIT_DEFERRED, "quiet hours", rc->quiet_end);
    }
}

/* ---- the later set: retries and quiet hours ---- */

/* fanout_closing - jr delivers nothing more: cancelled or expired. */
static bool fanout_closing(struct job_run *jr)
{
    return jr->cancelled || (jr->expires_at > 0 && clock_wall() >= jr->expires_at);
}

static void fanout_on_take(struct redisq *q, const struct redisq_reply *r, void *arg)
{
    struct job_run *jr = arg;
    struct fanout *f = jr->f;
    struct page *pg = NULL;
    size_t n, nm;
    double now = clock_wall();

    (void)q;
    jr->taking = false;
    if (r == NULL || redisq_reply_type(r) != REDISQ_ARRAY || redisq_reply_len(r) < 2) {
        jr->later_due = now + 1;
        return;
    }
    n = redisq_reply_len(r);
    nm = (n - 2) / 3;
    jr->later_left = (long)redisq_reply_int(redisq_reply_elem(r, 0));
    {
        const char *nx = redisq_reply_str(redisq_reply_elem(r, 1), NULL);
        jr->later_due = nx[0] ? strtod(nx, NULL) : HUGE_VAL;
    }
    if (nm == (size_t)f->cfg->audience.page)
        jr->later_due = now;   /* more may be due */
    if (jr->abandoned || jr->ended || nm == 0) {
        fanout_maybe_end(jr);
        return;
    }
    pg = fanout_page_new(jr, nm, true);
    if (pg == NULL)
        goto oom;
    for (size_t i = 0; i < nm; i++) {
        size_t mlen, vlen;
        const char *m = redisq_reply_str(redisq_reply_elem(r, 2 + 3 * i), &mlen);
        const char *v = redisq_reply_str(redisq_reply_elem(r, 3 + 3 * i), &vlen);
        const char *colon = memchr(m, ':', mlen);
        int ch = -1;
        if (colon == NULL)
            continue;
        for (size_t c = 0; c < jr->aj.nch; c++)
            if (strlen(jr->job->channels[c]) == (size_t)(colon - m) &&
                memcmp(jr->job->channels[c], m, (size_t)(colon - m)) == 0)
                ch = (int)c;
        if (ch < 0)
            continue;
        if (fanout_build(pg, colon + 1, mlen - (size_t)(colon + 1 - m),
                         redisq_reply_elem(r, 4 + 3 * i), NULL, ch, v, vlen, NULL) != 0)
            goto oom;
    }
    pg->next = jr->lpages;
    jr->lpages = pg;
    jr->nlpages++;
    fanout_admit(pg);
    return;
oom:
    page_free(pg);
    LOG(LOG_ERROR, "fanout", "out_of_memory", "job=%s action=abandon_run", jr->job->id);
    jr->abandoned = true;
}

/* fanout_take - ask for the units of jr's later set that are due. */
static void fanout_take(struct job_run *jr)
{
    struct fanout *f = jr->f;
    char now[32], lease[32], lim[16], ck[TRACK_KEY_MAX];
    double t = clock_wall();
    const char *argv[6];

    /* a cancelled or expired job takes everything: it is all final now */
    snprintf(now, sizeof now, "%s", fanout_closing(jr) ? "+inf" : "");
    if (now[0] == '\0')
        snprintf(now, sizeof now, "%.3f", t);
    snprintf(lease, sizeof lease, "%.3f", t + f->cfg->audience.sending_lease_s);
    snprintf(lim, sizeof lim, "%d", f->cfg->audience.page);
    snprintf(ck, sizeof ck, "%scitizen:", f->cfg->redis.prefix);
    argv[0] = jr->later_key;
    argv[1] = jr->units_key;
    argv[2] = now;
    argv[3] = lease;
    argv[4] = lim;
    argv[5] = jr->job->audience == AUD_RECIPIENTS ? "" : ck;
    jr->later_writes_seen = jr->later_writes;
    if (redisq_eval(f->rq, &script_take, fanout_on_take, jr, 2, 6, argv, NULL) == 0)
        jr->taking = true;
}

/* ---- pump ---- */

/* fanout_checkpoint - free the settled pages at the head of jr's main
 * pages and record the position after the last of them; free settled
 * later pages. */
static void fanout_checkpoint(struct job_run *jr)
{
    struct fanout *f = jr->f;
    const char *cursor = NULL;
    char *keep = NULL;

    while (jr->pages && jr->pages->ready && jr->pages->open == 0) {
        struct page *pg = jr->pages;
        herold_free(keep);
        keep = pg->cursor;
        pg->cursor = NULL;
        cursor = keep;
        jr->pages = pg->next;
        if (jr->pages == NULL)
            jr->tail = NULL;
        jr->npages--;
        page_free(pg);
    }
    if (cursor != NULL && !jr->abandoned) {
        const char *argv[] = {"HSET", jr->job_key, "cursor", cursor};
        redisq_argv(f->rq, redisq_ignore, NULL, 0, 4, argv, NULL);
    }
    herold_free(keep);
    for (struct page **pp = &jr->lpages; *pp;) {
        struct page *pg = *pp;
        if (pg->ready && pg->open == 0) {
            *pp = pg->next;
            jr->nlpages--;
            page_free(pg);
            jr->later_due = 0;   /* look again: the set may be empty now */
        } else {
            pp = &pg->next;
        }
    }
}

static void fanout_on_cancel_mark(struct redisq *q, const struct redisq_reply *r, void *arg)
{
    struct job_run *jr = arg;
    size_t n = 0;

    (void)q;
    jr->cancel_asking = false;
    jr->cancel_check_at = clock_mono() + FANOUT_CANCEL_POLL;
    if (r != NULL && redisq_reply_type(r) == REDISQ_STR && redisq_reply_str(r, &n) && n > 0 &&
        !jr->cancelled) {
        LOG(LOG_INFO, "fanout", "job_cancelled", "job=%s action=record_rest", jr->job->id);
        jr->cancelled = true;
    }
    fanout_maybe_end(jr);
}

/* fanout_check_cancel - look at the job record's cancel mark. */
static void fanout_check_cancel(struct job_run *jr)
{
    const char *argv[] = {"HGET", jr->job_key, "cancel"};

    if (redisq_argv(jr->f->rq, fanout_on_cancel_mark, jr, 0, 3, argv, NULL) == 0)
        jr->cancel_asking = true;
}

/* fanout_feed - keep jr's pages coming: the next main page, admission
 * retries, due units from the later set. */
static void fanout_feed(struct job_run *jr)
{
    struct fanout *f = jr->f;
    size_t ahead = (size_t)f->cfg->audience.pages_ahead;

    if (jr->abandoned || jr->ended || !redisq_is_up(f->rq) || clock_mono() < jr->hold_until)
        return;
    for (struct page *pg = jr->pages; pg; pg = pg->next)
        if (!pg->ready && !pg->admitting)
            fanout_admit(pg);
    for (struct page *pg = jr->lpages; pg; pg = pg->next)
        if (!pg->ready && !pg->admitting)
            fanout_admit(pg);
    if (!jr->exhausted && !jr->loading && jr->npages < ahead)
        fanout_read_page(jr);
    if (!jr->taking && jr->nlpages < ahead &&
        (clock_wall() >= jr->later_due || (fanout_closing(jr) && jr->later_left != 0)) &&
        (jr->later_left != 0 || jr->later_writes_seen != jr->later_writes))
        fanout_take(jr);
    if (!jr->cancelled && !jr->cancel_asking && clock_mono() >= jr->cancel_check_at)
        fanout_check_cancel(jr);
}

/* ---- flow: tokens, priorities ---- */

static void fanout_on_grant(struct redisq *q, const struct redisq_reply *r, void *arg)
{
    struct provider *p = arg;

    (void)q;
    p->asking = false;
    if (r == NULL || redisq_reply_type(r) != REDISQ_ARRAY || redisq_reply_len(r) < 2) {
        p->ask_after = clock_mono() + 0.1;
        return;
    }
    p->granted = (double)redisq_reply_int(redisq_reply_elem(r, 0));
    p->grant_at = clock_mono();
    if (p->granted < 1)
        p->ask_after = p->grant_at + redisq_reply_int(redisq_reply_elem(r, 1)) / 1e6;
    /* the prepare watcher runs the pump before the loop sleeps again */
}

/* fanout_ask_tokens - ask the shared limit for what this pump missed. */
static void fanout_ask_tokens(struct fanout *f, struct provider *p, double now)
{
    char rate[32], burst[32], n[16];
    unsigned want = p->want;

    if (p->asking || now < p->ask_after || !redisq_is_up(f->rq))
        return;
    if (want > (unsigned)p->cp->burst)
        want = (unsigned)p->cp->burst;
    if (want < 1)
        want = 1;
    snprintf(rate, sizeof rate, "%.6f", p->cp->rate);
    snprintf(burst, sizeof burst, "%.6f", p->cp->burst);
    snprintf(n, sizeof n, "%u", want);
    const char *argv[] = {p->key, rate, burst, n};
    if (redisq_eval(f->rq, &script_gcra, fanout_on_grant, p, 1, 4, argv, NULL) == 0)
        p->asking = true;
}

/* fanout_token - may a unit of lane start on provider p now?  Takes the
 * token if so.  Urgent units pass a pause (never the rate limit); others
 * wait while an urgent unit waits for the same provider. */
static bool fanout_token(struct provider *p, bool urgent, double now)
{
    const struct config_provider *cp = p->cp;

    if (p->blocked || (!urgent && p->urgent_waits))
        return false;
    if (!urgent && now < p->paused_until) {
        p->blocked = true;
        return false;
    }
    if (cp == NULL || cp->rate <= 0)
        return true;
    if (!cp->shared) {
        if (rl_take(&p->bucket, now))
            return true;
    } else {
        if (p->granted >= 1 && now - p->grant_at <= FANOUT_GRANT_TTL) {
            p->granted -= 1;
            return true;
        }
        p->granted = 0;
        /* count the demand up to a burst, so one grant serves it */
        if (++p->want < (unsigned)cp->burst) {
            if (urgent)
                p->urgent_waits = true;
            return false;
        }
    }
    p->blocked = true;
    if (urgent)
        p->urgent_waits = true;
    return false;
}

/* fanout_may_start - may a unit of jr's lane start on provider p now?
 * Not while p is paused (urgent units excepted) or an urgent unit waits
 * for p; for a rate-limited p, while fewer than its burst are between
 * their start and their hand-over. */
static bool fanout_may_start(struct provider *p, bool urgent, double now)
{
    size_t cap;

    if (p->blocked && !urgent)
        return false;
    if (!urgent && (p->urgent_waits || now < p->paused_until)) {
        p->blocked = true;
        return false;
    }
    if (!fanout_limited(p))
        return true;
    cap = p->cp->burst < 1 ? 1 : (size_t)p->cp->burst;
    if (p->pipe[urgent ? 1 : 0] < cap)
        return true;
    if (urgent)
        p->urgent_waits = true;
    else
        p->blocked = true;
    return false;
}

/* fanout_drain_rings - hand staged units to their rate-limited providers
 * while tokens last, urgent first; units of a job that expired meanwhile
 * are recorded so instead.  A cancel does not stop them: their `sending`
 * is on record, and a cancellation to the citizens an alert reached
 * counts them as reached (script reach), so they must go out. */
static void fanout_drain_rings(struct fanout *f, double now)
{
    for (size_t i = 0; i < f->nchannels; i++) {
        struct provider *p = &f->prov[i];
        if (!fanout_limited(p))
            continue;
        for (int lane = 0; lane < LANE_COUNT; lane++) {
            struct stage_ring *r = &p->ring[lane];
            while (r->n > 0) {
                struct staged st = r->v[r->head];
                struct job_run *jr = st.pg->jr;
                bool closing = jr->expires_at > 0 && clock_wall() >= jr->expires_at;
                if (!closing && !fanout_token(p, lane == LANE_URGENT, now))
                    break;
                r->head = (r->head + 1) % r->cap;
                r->n--;
                fanout_unpipe(st.pg, st.unit);
                if (closing) {
                    f->inflight--;
                    fanout_record(st.pg, st.unit, UNIT_EXPIRED, ACT_FINAL, 0,
                                  "expires_at passed", 0, false);
                    continue;
                }
                fanout_submit(st.pg, st.unit);
            }
            if (r->n > 0)
                break;   /* no token: the lanes after this one wait too */
        }
    }
}

/* fanout_unstage_all - draining: staged units are not handed over any
 * more; they go back to the later set (not counted as an attempt). */
static void fanout_unstage_all(struct fanout *f)
{
    for (size_t i = 0; i < f->nchannels; i++) {
        struct provider *p = &f->prov[i];
        for (int lane = 0; lane < LANE_COUNT && fanout_limited(p); lane++) {
            struct stage_ring *r = &p->ring[lane];
            while (r->n > 0) {
                struct staged st = r->v[r->head];
                struct unit *un = &st.pg->u[st.unit];
                r->head = (r->head + 1) % r->cap;
                r->n--;
                fanout_unpipe(st.pg, st.unit);
                f->inflight--;
                if (un->attempts > 0)
                    un->attempts--;
                fanout_record(st.pg, st.unit, UNIT_RETRY, ACT_LATER, 0, "not sent: shutting down",
                              clock_wall(), false);
            }
        }
    }
}

/* fanout_job_blocked - no channel of jr can start a unit in this pump. */
static bool fanout_job_blocked(const struct job_run *jr)
{
    for (size_t c = 0; c < jr->job->nchannels; c++) {
        const struct provider *p = fanout_provider(jr->f, jr->job->channels[c]);
        if (p == NULL || !p->blocked)
            return false;
    }
    return true;
}

/* fanout_warming - jr is urgent and still reading its audience: its first
 * deliveries are not known yet, so nothing else may start. */
static bool fanout_warming(const struct job_run *jr)
{
    if (jr->abandoned || jr->ended || jr->cancelled)
        return false;
    for (const struct page *pg = jr->pages; pg; pg = pg->next)
        if (!pg->ready)
            return true;
    return !jr->exhausted && jr->pages == NULL;
}

/* fanout_run_units - start up to budget of jr's ready units while the
 * window (cap in total) has room and providers have tokens; decide the
 * units of a cancelled or expired job.  Returns the units started. */
static size_t fanout_run_units(struct job_run *jr, size_t cap, size_t budget, double now)
{
    struct fanout *f = jr->f;
    bool urgent = jr->lane == LANE_URGENT;
    double wall = clock_wall();
    size_t started = 0;

    if (jr->abandoned || jr->ended)
        return 0;
    for (int pass = 0; pass < 2; pass++) {
        for (struct page *pg = pass ? jr->lpages : jr->pages; pg; pg = pg->next) {
            if (!pg->ready)
                continue;
            while (pg->scan < pg->nu && pg->u[pg->scan].started)
                pg->scan++;
            for (size_t u = pg->scan; u < pg->nu; u++) {
                struct unit *un = &pg->u[u];
                struct provider *p;
                if (un->started || un->plan != PLAN_SEND)
                    continue;
                if (jr->cancelled) {
                    fanout_decide(pg, (uint32_t)u, UNIT_CANCELLED, "job cancelled", 0);
                    continue;
                }
                if (jr->expires_at > 0 && wall >= jr->expires_at) {
                    fanout_decide(pg, (uint32_t)u, UNIT_EXPIRED, "expires_at passed", 0);
                    continue;
                }
                if (f->inflight >= cap || started >= budget)
                    return started;
                p = fanout_provider(f, unit_channel(pg, (uint32_t)u));
                if (p != NULL && !fanout_may_start(p, urgent, now)) {
                    if (fanout_job_blocked(jr))
                        return started;
                    continue;
                }
                fanout_start_unit(pg, (uint32_t)u);
                started++;
            }
        }
    }
    return started;
}

/* fanout_start_lane - fanout_run_units over the runs of lane, oldest
 * first, within one budget. */
static size_t fanout_start_lane(struct fanout *f, enum track_lane lane, size_t cap, size_t budget,
                              double now)
{
    size_t started = 0;

    for (struct job_run *jr = f->runs[lane]; jr && started < budget; jr = jr->nextrun)
        started += fanout_run_units(jr, cap, budget - started, now);
    return started;
}

/* fanout_wake_at - arm the wake timer for the earliest moment a blocked
 * provider may have a token again. */
static void fanout_wake_at(struct fanout *f, double now)
{
    double next = HUGE_VAL;

    for (size_t i = 0; i < f->nchannels; i++) {
        struct provider *p = &f->prov[i];
        double t = now;
        size_t staged = 0;
        for (int l = 0; l < LANE_COUNT && fanout_limited(p); l++)
            staged += p->ring[l].n;
        /* units waiting for a token, or for the end of a pause; a full
         * pipe needs no timer: the ledger's reply wakes the loop */
        if (staged == 0 && p->want == 0 && !(p->blocked && now < p->paused_until))
            continue;
        if (now < p->paused_until)
            t = p->paused_until;
        if (p->cp && p->cp->rate > 0) {
            /* shared: a grant being asked for wakes the loop by itself */
            double w = p->cp->shared ? (p->asking ? HUGE_VAL : p->ask_after)
                                     : now + rl_wait(&p->bucket, now);
            if (w > t)
                t = w;
        }
        if (t < next)
            next = t;
    }
    if (next == HUGE_VAL)
        return;
    next -= now;
    if (next < 0.002)
        next = 0.002;
    if (ev_is_active(&f->wake) && ev_timer_remaining(f->loop, &f->wake) <= next)
        return;
    ev_timer_stop(f->loop, &f->wake);
    ev_timer_set(&f->wake, next, 0.);
    ev_timer_start(f->loop, &f->wake);
}

/* fanout_pump - start units while the window has room (docs/flow.md,
 * "Priorities"): urgent first and strictly; bulk keeps its share of the
 * window against normal; a reserve of the window is urgent's alone. */
static void fanout_pump(struct fanout *f)
{
    size_t window = (size_t)f->cfg->delivery.window;
    size_t lim = window - (size_t)f->cfg->flow.urgent_reserve;
    size_t share = (size_t)f->cfg->flow.bulk_share;
    bool warming = false;
    double now = clock_mono();

    for (int lane = 0; lane < LANE_COUNT; lane++)
        for (struct job_run *jr = f->runs[lane]; jr; jr = jr->nextrun)
            fanout_checkpoint(jr);
    if (f->draining) {
        fanout_unstage_all(f);
        return;
    }
    for (size_t i = 0; i < f->nchannels; i++) {
        f->prov[i].blocked = false;
        f->prov[i].urgent_waits = false;
        f->prov[i].want = 0;
    }
    fanout_drain_rings(f, now);
    /* the token check above decided who waits; starts only fill the rings */
    for (size_t i = 0; i < f->nchannels; i++)
        f->prov[i].blocked = false;
    for (struct job_run *jr = f->runs[LANE_URGENT]; jr; jr = jr->nextrun) {
        fanout_run_units(jr, window, SIZE_MAX, now);
        warming |= fanout_warming(jr);
    }
    /* Normal before bulk, but of every bulk_share units started while
     * both have work, one is bulk's: counted in starts, not in units in
     * flight, so a rate-limited provider's tokens are shared the same way. */
    while (!warming && f->inflight < lim) {
        size_t n, quota;
        if (f->since_bulk + 1 >= share) {
            /* bulk's turn: one unit, if it has one ready */
            fanout_start_lane(f, LANE_BULK, lim, 1, now);
            f->since_bulk = 0;
        }
        quota = share - 1 > f->since_bulk ? share - 1 - f->since_bulk : 1;
        n = fanout_start_lane(f, LANE_NORMAL, lim, quota, now);
        f->since_bulk += n;
        if (n < quota) {
            /* normal has nothing more to start now: bulk may fill up */
            fanout_start_lane(f, LANE_BULK, lim, SIZE_MAX, now);
            break;
        }
    }
    for (size_t i = 0; i < f->nchannels; i++)
        if (f->prov[i].want > 0 && f->prov[i].cp && f->prov[i].cp->shared)
            fanout_ask_tokens(f, &f->prov[i], now);
    fanout_wake_at(f, now);
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
    /* Start units, send their ledger writes, and only then ask for more
     * pages: a page read queued before the `sending` writes would delay
     * the first deliveries of an urgent job by its reply. */
    fanout_pump(f);
    fanout_flush_all(f);
    if (!f->draining)
        for (int lane = 0; lane < LANE_COUNT; lane++)
            for (struct job_run *jr = f->runs[lane]; jr; jr = jr->nextrun)
                fanout_feed(jr);
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

static void fanout_on_wake(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    /* like the tick: the prepare watcher runs the pump */
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

/* fanout_free_prov - the first n providers' rings, and the array. */
static void fanout_free_prov(struct fanout *f, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (int l = 0; l < LANE_COUNT; l++)
            herold_free(f->prov[i].ring[l].v);
    herold_free(f->prov);
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
    f->prov = herold_calloc(nchannels ? nchannels : 1, sizeof *f->prov);
    if (f->prov == NULL) {
        herold_free(f);
        return NULL;
    }
    for (size_t i = 0; i < nchannels; i++) {
        struct provider *p = &f->prov[i];
        p->cp = config_provider(cfg, channels[i].ops->name);
        if (p->cp)
            rl_init(&p->bucket, p->cp->rate, p->cp->burst, clock_mono());
        for (int l = 0; l < LANE_COUNT && fanout_limited(p); l++) {
            p->ring[l].cap = (size_t)cfg->delivery.window;
            p->ring[l].v = herold_calloc(p->ring[l].cap, sizeof *p->ring[l].v);
            if (p->ring[l].v == NULL) {
                fanout_free_prov(f, i + 1);
                herold_free(f);
                return NULL;
            }
        }
        snprintf(p->key, sizeof p->key, "%srl:%s", cfg->redis.prefix, channels[i].ops->name);
    }
    track_key(f->dlq_index_key, cfg->redis.prefix, "dlq");
    ev_init(&f->wake, fanout_on_wake);
    f->wake.data = f;
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
    ev_timer_stop(f->loop, &f->wake);
    fanout_free_prov(f, f->nchannels);
    herold_free(f);
}

/* fanout_sort_cmp - order of explicit recipients by id (qsort_r-free:
 * the job is passed through a file-static pointer, set just before). */
static const struct job *fanout_sort_job;

static int fanout_sort_cmp(const void *a, const void *b)
{
    const struct job *j = fanout_sort_job;

    return strcmp(j->rcpts[*(const uint32_t *)a].id, j->rcpts[*(const uint32_t *)b].id);
}

struct job_run *fanout_add(struct fanout *f, struct job *job, enum track_lane lane,
                           const char *entry, const char *cursor, bool fresh,
                           double accepted_ts, bool cancelled)
{
    struct job_run *jr = herold_calloc(1, sizeof *jr), **pp;
    enum aud_contact contact[JOB_MAX_CHANNELS];

    if (jr == NULL)
        goto fail;
    jr->f = f;
    jr->job = job;
    jr->lane = lane;
    snprintf(jr->entry, sizeof jr->entry, "%s", entry);
    track_key_job(jr->job_key, f->cfg->redis.prefix, job->id);
    track_key_units(jr->units_key, f->cfg->redis.prefix, job->id);
    track_key_later(jr->later_key, f->cfg->redis.prefix, job->id);
    track_key_dlq(jr->dlq_key, f->cfg->redis.prefix, job->id);
    jr->accepted_ts = accepted_ts > 0 ? accepted_ts : clock_wall();
    jr->cancelled = cancelled;
    jr->expires_at = job->expires_at;
    if (jr->expires_at <= 0 && strcmp(job->kind, "alert") == 0)
        jr->expires_at = jr->accepted_ts + f->cfg->flow.alert_expiry_s;
    if (cursor != NULL && strcmp(cursor, "$end") == 0) {
        /* queued again for its later set only (herold dlq retry) */
        jr->exhausted = true;
        cursor = "";
    }
    for (size_t c = 0; c < job->nchannels; c++)
        contact[c] = fanout_contact_kind(f, job->channels[c]);
    aud_job_init(&jr->aj, job, contact);
    switch (job->audience) {
    case AUD_RECIPIENTS: snprintf(jr->mode, sizeof jr->mode, "explicit"); break;
    case AUD_CITIZENS:   snprintf(jr->mode, sizeof jr->mode, "ids"); break;
    case AUD_TOPICS:     snprintf(jr->mode, sizeof jr->mode, "topics"); break;
    case AUD_ALL:        snprintf(jr->mode, sizeof jr->mode, "all"); break;
    case AUD_REACHED:
        snprintf(jr->mode, sizeof jr->mode, "set");
        track_key_aud(jr->aud_set, "", job->id);
        break;
    }
    if (fresh)
        strcat(jr->mode, "+fresh");
    if ((cursor == NULL || cursor[0] == '\0') &&
        (job->audience == AUD_RECIPIENTS || job->audience == AUD_CITIZENS))
        cursor = "0";
    jr->cursor = herold_strdup(cursor ? cursor : "");
    if (jr->cursor == NULL)
        goto fail;
    if (job->audience == AUD_RECIPIENTS && job->nrcpts > 0) {
        jr->sorted = herold_malloc(job->nrcpts * sizeof *jr->sorted);
        if (jr->sorted == NULL)
            goto fail;
        for (size_t i = 0; i < job->nrcpts; i++)
            jr->sorted[i] = (uint32_t)i;
        fanout_sort_job = job;
        qsort(jr->sorted, job->nrcpts, sizeof *jr->sorted, fanout_sort_cmp);
    }
    jr->later_left = -1;        /* unknown until the first take */
    jr->later_due = 0;
    jr->t0 = clock_mono();
    /* append: within a lane, older jobs first */
    for (pp = &f->runs[lane]; *pp; pp = &(*pp)->nextrun)
        ;
    *pp = jr;
    LOG(LOG_INFO, "fanout", "job_started", "job=%s lane=%s audience=%s resume=%s", job->id,
        track_lane_names[lane], jr->mode, cursor && cursor[0] && strcmp(cursor, "0") ? "yes" : "no");
    ev_feed_event(f->loop, &f->tick, EV_TIMER);
    return jr;
fail:
    if (jr) {
        herold_free(jr->cursor);
        herold_free(jr->sorted);
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
        batch_free(b);   /* runs end only with no batch outstanding */
    }
    while (jr->pages) {
        struct page *pg = jr->pages;
        jr->pages = pg->next;
        page_free(pg);
    }
    while (jr->lpages) {
        struct page *pg = jr->lpages;
        jr->lpages = pg->next;
        page_free(pg);
    }
    for (size_t i = 0; i < jr->nvar; i++)
        for (int p = 0; p < JOB_PARTS; p++)
            herold_free(jr->var[i].job.parts[p]);
    herold_free(jr->var);
    job_free(jr->job);
    herold_free(jr->cursor);
    herold_free(jr->sorted);
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

void fanout_set_render(struct fanout *f, fanout_render_fn *fn, void *arg)
{
    f->render = fn;
    f->render_arg = arg;
}

void fanout_redis_up(struct fanout *f)
{
    fanout_flush_all(f);
}
