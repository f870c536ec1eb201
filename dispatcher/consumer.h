/*
 * consumer - reads jobs from the three lane streams with a consumer group
 * and owns each stream entry's lifecycle:
 *
 *   read (own PEL first, then XAUTOCLAIM of idle entries, then new ones;
 *         urgent before normal before bulk)
 *   -> invalid:   rejected stream, XACK, XDEL            (script reject)
 *   -> duplicate: XACK, XDEL, event                      (script begin)
 *   -> poison:    dead stream, XACK, XDEL                (script begin)
 *   -> run:       fanout until every unit is final, heartbeat meanwhile
 *   -> finish:    XACK, XDEL, record done                (script finish)
 *
 * An entry is acknowledged only once Redis holds its outcome (R2).  The
 * consumer also checks Redis's persistence at every connect, trims the
 * lane streams by MINID and the rejected/dead streams by age, and raises a
 * lost-job alarm when XAUTOCLAIM reports entries deleted while pending.
 */
#ifndef HEROLD_CONSUMER_H
#define HEROLD_CONSUMER_H

#include <ev.h>
#include <stdbool.h>

#include "../config/config.h"
#include "fanout.h"
#include "redisq.h"
#include "../templates/msgset.h"

struct consumer;

/* consumer_new - borrows everything.  rq carries commands and scripts; rqb
 * only the blocking XREADGROUP.  crash_on_job (test fault point, may be
 * NULL) makes the daemon abort() whenever it starts that job. */
struct consumer *consumer_new(struct ev_loop *loop, const struct herold_config *cfg,
                              struct redisq *rq, struct redisq *rqb,
                              const char *crash_on_job);
/* consumer_set_templates - the message set new jobs are rendered with
 * (borrowed until the next call; NULL: inline content only). */
void consumer_set_templates(struct consumer *c, const struct msgset *set);

/* consumer_attach - the fanout that runs accepted jobs. */
void consumer_attach(struct consumer *c, struct fanout *f);

/* Callbacks to wire into redisq_new and fanout_new. */
void consumer_on_redis(struct redisq *q, bool up, void *arg);
void consumer_on_fanout_end(struct job_run *jr, enum fanout_end how, void *arg);

/* consumer_stop - stop reading and claiming; jobs in progress continue. */
void consumer_stop(struct consumer *c);

/* consumer_settled - true when no job start or finish is waiting on Redis. */
bool consumer_settled(const struct consumer *c);

/* consumer_fatal - non-zero when the daemon must exit (e.g. unsafe Redis
 * persistence at start); the value is the exit status. */
int consumer_fatal(const struct consumer *c);

void consumer_free(struct consumer *c);

#endif
