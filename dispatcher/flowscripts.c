/*
 * flowscripts - Lua sources of cancel, dead-letter retry and purge.
 *
 * Dead-letter ledger values are "dead|attempts|code|reason" (as every
 * ledger value, "state|attempts|code|reason").  A script that refuses
 * checks everything before its first write, so a refusal changes nothing.
 * Job data (the payload) is only ever stored as a value, never used to
 * build a command or a key.
 */
#include "flowscripts.h"

#include <stddef.h>

/* cancel - KEYS: job hash, scheduled set, events stream.  ARGV: job id,
 * ts (ISO), retention seconds, events maxlen.
 * A scheduled job is taken out of the scheduled set, its payload deleted,
 * its state set to cancelled (final, expiring after the retention) and
 * {"unscheduled"} returned.  A queued or running job gets the field
 * `cancel` (first request wins; later ones change nothing) and
 * {"cancelling"} is returned: the fan-out that runs it does the rest.  A
 * finished job returns {"final", state}, a missing record {"unknown"}. */
struct redisq_script script_cancel = {"cancel",
    "local st = redis.call('HGET', KEYS[1], 'state')\n"
    "if not st then return {'unknown'} end\n"
    "if st == 'scheduled' then\n"
    "  redis.call('ZREM', KEYS[2], ARGV[1])\n"
    "  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', ARGV[2])\n"
    "  redis.call('HDEL', KEYS[1], 'payload')\n"
    "  redis.call('EXPIRE', KEYS[1], ARGV[3])\n"
    "  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'ts', ARGV[2],\n"
    "    'event', 'cancelled', 'job', ARGV[1])\n"
    "  return {'unscheduled'}\n"
    "end\n"
    "if st == 'queued' or st == 'running' then\n"
    "  if redis.call('HSETNX', KEYS[1], 'cancel', ARGV[2]) == 1 then\n"
    "    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'ts', ARGV[2],\n"
    "      'event', 'cancel_requested', 'job', ARGV[1])\n"
    "  end\n"
    "  return {'cancelling'}\n"
    "end\n"
    "return {'final', st}\n", {0}};

/* dlq_retry - KEYS: job hash, units hash, later set, job dlq set, dlq
 * index, events.  ARGV: job id, now (unix seconds), lane stream key prefix
 * ("<P>jobs:"), member ("<channel>:<recipient>", or "" for all), ts,
 * events maxlen.  An operator's retry is recorded as event dlq_retry.
 * Each selected dead letter whose ledger value is still "dead|..." goes
 * back to "retry|0|<code>|dlq retry", into the later set due now, out of
 * the job's dlq; c:<channel>:dead is decremented.  Members whose ledger
 * no longer says dead are left alone and counted as skipped.  The index
 * loses the job when its dlq is empty, else gets the latest remaining
 * time.  A finished job (state done) is queued again: a new entry on its
 * lane stream with fields job=<payload> and resume=1, state queued, entry
 * the new id, cursor "$end", no finished_at, and no expiry on its keys.
 * Queued and running jobs pick the units up from the later set.
 * Refused: no record (NOJOB); state cancelled, being cancelled, dead or
 * scheduled; a done job without payload or lane (REFUSED).
 * Returns {retried, "requeued", skipped, entry}, {retried, "running",
 * skipped} or, when nothing matched, {0, "nothing", skipped}. */
struct redisq_script script_dlq_retry = {"dlq_retry",
    "local st = redis.call('HGET', KEYS[1], 'state')\n"
    "if not st then\n"
    "  return redis.error_reply('NOJOB no record of this job (never accepted, or expired)')\n"
    "end\n"
    "if st == 'cancelled' then\n"
    "  return redis.error_reply('REFUSED the job was cancelled')\n"
    "end\n"
    "if st ~= 'done' and st ~= 'queued' and st ~= 'running' then\n"
    "  return redis.error_reply('REFUSED the job is ' .. st)\n"
    "end\n"
    "if st ~= 'done' and redis.call('HEXISTS', KEYS[1], 'cancel') == 1 then\n"
    "  return redis.error_reply('REFUSED the job is being cancelled')\n"
    "end\n"
    "local payload, lane\n"
    "if st == 'done' then\n"
    "  payload = redis.call('HGET', KEYS[1], 'payload')\n"
    "  if not payload then\n"
    "    return redis.error_reply('REFUSED the finished job has no payload any more; '\n"
    "      .. 'it cannot be sent again')\n"
    "  end\n"
    "  lane = redis.call('HGET', KEYS[1], 'lane')\n"
    "  if lane ~= 'urgent' and lane ~= 'normal' and lane ~= 'bulk' then\n"
    "    return redis.error_reply('REFUSED the job record has no valid lane')\n"
    "  end\n"
    "end\n"
    "local members\n"
    "if ARGV[4] ~= '' then\n"
    "  members = {}\n"
    "  if redis.call('ZSCORE', KEYS[4], ARGV[4]) then members[1] = ARGV[4] end\n"
    "else\n"
    "  members = redis.call('ZRANGE', KEYS[4], 0, -1)\n"
    "end\n"
    "local n, skipped, dec = 0, 0, {}\n"
    "for _, m in ipairs(members) do\n"
    "  local v = redis.call('HGET', KEYS[2], m)\n"
    "  local code = v and string.match(v, '^dead|[^|]*|([^|]*)')\n"
    "  if code then\n"
    "    redis.call('HSET', KEYS[2], m, 'retry|0|' .. code .. '|dlq retry')\n"
    "    redis.call('ZADD', KEYS[3], ARGV[2], m)\n"
    "    redis.call('ZREM', KEYS[4], m)\n"
    "    local ch = string.match(m, '^([^:]*)')\n"
    "    dec[ch] = (dec[ch] or 0) + 1\n"
    "    n = n + 1\n"
    "  else\n"
    "    skipped = skipped + 1\n"
    "  end\n"
    "end\n"
    "for ch, k in pairs(dec) do\n"
    "  redis.call('HINCRBY', KEYS[1], 'c:' .. ch .. ':dead', -k)\n"
    "end\n"
    "local top = redis.call('ZREVRANGE', KEYS[4], 0, 0, 'WITHSCORES')\n"
    "if top[1] then redis.call('ZADD', KEYS[5], top[2], ARGV[1])\n"
    "else redis.call('ZREM', KEYS[5], ARGV[1]) end\n"
    "if n == 0 then return {0, 'nothing', skipped} end\n"
    "redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[6], '*', 'ts', ARGV[5],\n"
    "  'event', 'dlq_retry', 'job', ARGV[1], 'units', n)\n"
    "if st ~= 'done' then return {n, 'running', skipped} end\n"
    "-- heroldd's begin script accepts the new entry because `entry` names it\n"
    "local e = redis.call('XADD', ARGV[3] .. lane, '*', 'job', payload, 'resume', '1')\n"
    "redis.call('HSET', KEYS[1], 'state', 'queued', 'entry', e, 'cursor', '$end')\n"
    "redis.call('HDEL', KEYS[1], 'finished_at')\n"
    "redis.call('PERSIST', KEYS[1])\n"
    "redis.call('PERSIST', KEYS[2])\n"
    "redis.call('PERSIST', KEYS[3])\n"
    "redis.call('PERSIST', KEYS[4])\n"
    "return {n, 'requeued', skipped, e}\n", {0}};

/* dlq_purge - KEYS: job dlq set, dlq index, job hash, events.  ARGV: job
 * id, member ("<channel>:<recipient>", or "" for all), ts, events maxlen;
 * recorded as event dlq_purge.  Drops the dead
 * letter(s) from the job's dlq; the ledger keeps them as dead.  When the
 * dlq is empty afterwards the index loses the job and, unless the job is
 * still to run (queued, running, scheduled), its kept payload is deleted;
 * otherwise the index gets the latest remaining time.  Returns the number
 * removed. */
struct redisq_script script_dlq_purge = {"dlq_purge",
    "local n\n"
    "if ARGV[2] ~= '' then\n"
    "  n = redis.call('ZREM', KEYS[1], ARGV[2])\n"
    "else\n"
    "  n = redis.call('ZCARD', KEYS[1])\n"
    "  redis.call('DEL', KEYS[1])\n"
    "end\n"
    "local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
    "if n > 0 then\n"
    "  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'ts', ARGV[3],\n"
    "    'event', 'dlq_purge', 'job', ARGV[1], 'units', n)\n"
    "end\n"
    "if top[1] then\n"
    "  redis.call('ZADD', KEYS[2], top[2], ARGV[1])\n"
    "  return n\n"
    "end\n"
    "redis.call('ZREM', KEYS[2], ARGV[1])\n"
    "local st = redis.call('HGET', KEYS[3], 'state')\n"
    "if st ~= 'queued' and st ~= 'running' and st ~= 'scheduled' then\n"
    "  redis.call('HDEL', KEYS[3], 'payload')\n"
    "end\n"
    "return n\n", {0}};
