/*
 * scripts - the Lua scripts that make herold's Redis state transitions
 * atomic.  Each one is documented where it is defined (scripts.c) with its
 * KEYS and ARGV.  The fixed keys a script touches are passed in KEYS; the
 * audience scripts (page, admit, take) also build citizen, topic and cap
 * keys from the prefix, so on a Redis Cluster the prefix must carry a
 * hash tag ("{herold}:") that puts every herold key in one slot.
 *
 * The scripts never build commands from job data: payloads and reasons are
 * only ever stored as values.
 */
#ifndef HEROLD_SCRIPTS_H
#define HEROLD_SCRIPTS_H

#include "redisq.h"

extern struct redisq_script script_enqueue;   /* herold enqueue: dedupe + XADD */
extern struct redisq_script script_reject;    /* invalid job -> rejected, ack */
extern struct redisq_script script_begin;     /* duplicate / poison / start */
extern struct redisq_script script_ledger;    /* compare-and-set unit states */
extern struct redisq_script script_page;      /* next page of an audience */
extern struct redisq_script script_admit;     /* bounce list + daily cap */
extern struct redisq_script script_take;      /* units due from the later set */
extern struct redisq_script script_finish;    /* all units final -> ack, delete */
extern struct redisq_script script_heartbeat; /* renew the lease on our entries */
extern struct redisq_script script_trim;      /* XTRIM MINID below the PEL */
extern struct redisq_script script_park;      /* a job due later -> scheduled set */
extern struct redisq_script script_promote;   /* due scheduled jobs -> their lanes */
extern struct redisq_script script_gcra;      /* shared provider rate limit */
extern struct redisq_script script_reach;     /* who an earlier alert reached */

/* scripts_register - compute SHAs and register all scripts with q (q may be
 * NULL to only compute SHAs). */
void scripts_register(struct redisq *q);

#endif
