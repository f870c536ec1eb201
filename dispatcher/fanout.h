/*
 * fanout - turns an accepted job into deliveries: one unit per (recipient,
 * channel), submitted to the channels within a bounded window, recorded in
 * the ledger before and after each provider call.
 *
 * Streaming: the audience (explicit recipients, citizen ids, topics or
 * everyone) is read in pages of audience.page recipients, at most
 * audience.pages_ahead pages per job in memory, so memory does not grow
 * with the audience.  Each page is resolved (docs/citizens.md: choice,
 * consent, contact point, bounce list, daily cap, quiet hours) and its
 * units recorded.  When every unit of the oldest pages is settled (final,
 * or parked in the job's `later` set with a due time), the position after
 * them is checkpointed in the job record (`cursor`); a restarted daemon,
 * or another instance that claims the job, starts from there and skips
 * units the ledger already has as final or parked.  Units that wait (a
 * retry, quiet hours) live in Redis, not in memory: the `later` set is
 * polled for due units, which are leased (their due time moves ahead by
 * audience.sending_lease_s) while they are being delivered.
 *
 * Unit life (the ledger states of docs/redis-layout.md):
 *
 *   accepted --(ledger: sending, attempt n)--> handed to the channel
 *   handed   --done OK-------------------------> sent        (terminal)
 *            --done PERMANENT------------------> failed      (terminal)
 *            --done TRANSIENT, attempts left---> retry --backoff--> sending
 *            --done TRANSIENT, none left-------> failed      (terminal)
 *   accepted --expires_at passed---------------> expired     (terminal)
 *   accepted --no usable contact point---------> suppressed  (terminal)
 *   accepted --no consent, bounced, over cap---> suppressed  (terminal)
 *   accepted --quiet hours (not urgent)--------> deferred (later set) --due--> sending
 *
 * Ordering: the `sending` mark is durable in Redis before the channel is
 * called, and the outcome is written after the channel's done.  A crash
 * between them leaves the unit in `sending`: on resume it is in doubt and
 * is resent with the same idempotency key (webhook-id), and counted.  So a
 * crash can duplicate at most the units in flight: delivery.window (the
 * guarantee is at-least-once; docs/citizens.md states the bound).
 *
 * Ledger writes are batched per job (delivery.batch units per script
 * call, flushed before the loop sleeps).  A batch Redis did not confirm is
 * resent until it is (the ledger script is compare-and-set, so a replay is
 * a no-op); the actions that follow a write (calling the provider, arming
 * a retry, counting a unit final) run only after confirmation.
 *
 * Priority: units of urgent jobs are always submitted before normal ones,
 * normal before bulk.  Never blocks the loop; never logs contact points.
 */
#ifndef HEROLD_FANOUT_H
#define HEROLD_FANOUT_H

#include <ev.h>
#include <stdbool.h>

#include "../channels/channel.h"
#include "../config/config.h"
#include "job.h"
#include "redisq.h"
#include "track.h"

struct fanout;
struct job_run;

enum fanout_end { FANOUT_DONE, FANOUT_RELEASED };

/* Called once per job run: FANOUT_DONE when every unit is final in the
 * ledger (the consumer then finishes the job), FANOUT_RELEASED when an
 * abandoned run has wound down.  The run stays valid until fanout_free_run. */
typedef void fanout_end_fn(struct job_run *jr, enum fanout_end how, void *arg);

struct fanout_channel {
    const struct channel_ops *ops;
    void *state;
};

/* fanout_new - borrows loop, cfg, rq and the channels array (nchannels
 * entries) for its lifetime.  abort_after_ok > 0 is the test fault point
 * "abort() right after the N-th provider success, before recording it". */
struct fanout *fanout_new(struct ev_loop *loop, const struct herold_config *cfg,
                          struct redisq *rq, const struct fanout_channel *channels,
                          size_t nchannels, fanout_end_fn *on_end, void *arg,
                          long abort_after_ok);
void fanout_free(struct fanout *f);

/* fanout_add - start delivering job (ownership passes to the run), read
 * from lane at stream entry `entry`, from the checkpoint cursor ("" at the
 * start) the begin script returned; fresh when the job's ledger was empty
 * then (its pages need no ledger lookups).  Cursor "$end": the audience was
 * read before; only the later set is left.  accepted_ts (unix seconds, 0
 * unknown) dates the job for max_age_s and the alert expiry; cancelled
 * when the job record already carries its cancel mark.  Returns the run, or NULL when memory
 * ran out (job is then freed; the stream entry stays pending and is
 * retried). */
struct job_run *fanout_add(struct fanout *f, struct job *job, enum track_lane lane,
                           const char *entry, const char *cursor, bool fresh,
                           double accepted_ts, bool cancelled);

/* Renders job (a copy whose parts are empty) for a citizen's language
 * lang; 0 or -1 with err.  Set by the owner of the message set. */
typedef int fanout_render_fn(void *arg, struct job *copy, const char *lang, struct herr *err);

/* fanout_set_render - messages of template jobs without a fixed "lang"
 * are rendered per citizen language through fn. */
void fanout_set_render(struct fanout *f, fanout_render_fn *fn, void *arg);

/* fanout_abandon - stop submitting units of jr (another instance owns its
 * entry now); FANOUT_RELEASED follows once its in-flight units are done. */
void fanout_abandon(struct fanout *f, struct job_run *jr);

/* fanout_free_run - free a run after its end callback. */
void fanout_free_run(struct fanout *f, struct job_run *jr);

const struct job *fanout_run_job(const struct job_run *jr);
const char *fanout_run_entry(const struct job_run *jr);
enum track_lane fanout_run_lane(const struct job_run *jr);

/* fanout_drain - submit nothing new; done_fn runs once no delivery is in
 * flight and every ledger write is confirmed, or at deadline (seconds from
 * now) after in-flight deliveries were aborted, whichever is first. */
void fanout_drain(struct fanout *f, double deadline_s, void (*done_fn)(void *), void *arg);

/* fanout_inflight - deliveries handed to channels and not yet done. */
size_t fanout_inflight(const struct fanout *f);

/* fanout_redis_up - Redis is back: resend unconfirmed ledger batches. */
void fanout_redis_up(struct fanout *f);

#endif
