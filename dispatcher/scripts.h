/*
 * scripts - the Lua scripts that make herold's Redis state transitions
 * atomic.  Each one is documented where it is defined (scripts.c) with its
 * KEYS and ARGV; every key a script touches is passed in KEYS so that a
 * Redis Cluster can check slots (use a "{herold}:" prefix there).
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
extern struct redisq_script script_finish;    /* all units final -> ack, delete */
extern struct redisq_script script_heartbeat; /* renew the lease on our entries */
extern struct redisq_script script_trim;      /* XTRIM MINID below the PEL */

/* scripts_register - compute SHAs and register all scripts with q (q may be
 * NULL to only compute SHAs). */
void scripts_register(struct redisq *q);

#endif
