/*
 * flowscripts - the Lua scripts behind the operator's flow control:
 * cancelling a job and retrying or purging its dead letters.  The CLI
 * runs them with redisq_sync_eval; heroldd registers script_cancel
 * (redisq_add_script) to cancel the job an alert `references`.
 *
 * Each script is documented where it is defined (flowscripts.c) with its
 * KEYS, ARGV and reply.  Refusals are error replies whose first word is a
 * code: "NOJOB" (no job record) or "REFUSED" (the job's state forbids it),
 * followed by a reason for people.  A refused script has changed nothing.
 *
 * script_dlq_retry builds one key itself (the lane stream of a finished
 * job, from the prefix in ARGV), so on a Redis Cluster the prefix must
 * carry a hash tag ("{herold}:"), as for the audience scripts.
 */
#ifndef HEROLD_FLOWSCRIPTS_H
#define HEROLD_FLOWSCRIPTS_H

#include "redisq.h"

extern struct redisq_script script_cancel;     /* unschedule or mark cancel */
extern struct redisq_script script_dlq_retry;  /* dead letters -> retry */
extern struct redisq_script script_dlq_purge;  /* drop dead letters */

#endif
