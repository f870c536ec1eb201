/*
 * scripts - Lua sources of herold's atomic Redis transitions.
 *
 * Unit values in the ledger hash are "state|attempts|code|reason".  The
 * terminal states are sent, failed, suppressed, expired, dead and
 * cancelled; a transition
 * out of a terminal state is refused (compare-and-set), so a replayed or
 * stale write is a no-op and the job counters stay exact.
 */
#include "scripts.h"

#include <stddef.h>

#include "flowscripts.h"

/* enqueue - KEYS: job hash, lane stream.  ARGV: payload, ts, id, lane,
 * kind, ttl seconds.  Returns {"accepted", entry} or {"duplicate", entry}.
 * The job record's existence is the "already accepted" mark (R6). */
struct redisq_script script_enqueue = {"enqueue",
    "local e = redis.call('HGET', KEYS[1], 'entry')\n"
    "if e then return {'duplicate', e} end\n"
    "local id = redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])\n"
    "redis.call('HSET', KEYS[1], 'id', ARGV[3], 'state', 'queued', 'lane', ARGV[4],\n"
    "  'entry', id, 'kind', ARGV[5], 'submitted_at', ARGV[2])\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[6])\n"
    "return {'accepted', id}\n", {0}};

/* reject - KEYS: lane stream, rejected stream, events.  ARGV: group,
 * entry, lane, payload, reason, ts, events maxlen.  Records first, then
 * acknowledges and deletes the entry: nothing is acked before it is kept. */
struct redisq_script script_reject = {"reject",
    "redis.call('XADD', KEYS[2], '*', 'payload', ARGV[4], 'reason', ARGV[5],\n"
    "  'lane', ARGV[3], 'entry', ARGV[2], 'ts', ARGV[6])\n"
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('XDEL', KEYS[1], ARGV[2])\n"
    "redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'ts', ARGV[6],\n"
    "  'event', 'rejected', 'lane', ARGV[3], 'entry', ARGV[2])\n"
    "return 1\n", {0}};

/* begin - KEYS: job hash, units hash, lane stream, dead stream, events.
 * ARGV: group, entry, lane, ts, units, max deliveries, kind, events maxlen,
 * payload, job id, consumer, retention seconds, now (unix seconds).
 * Returns {"gone"} when the entry is no longer pending for this consumer,
 * {"dup", entry} when the job id was accepted from another entry (this one
 * is acked and deleted), {"dead", deliveries} when it was delivered more
 * than max times since it last made progress (moved to the dead stream;
 * progress is a change of the ledger size, the counters or the cursor, so
 * a long fan-out that survives several crashes is not a poison job), else {"run", cursor, units}:
 * the fan-out's checkpoint (field `cursor`, "" when none) to resume from,
 * the number of ledger fields so far ("0": a fresh start), the unix time
 * the job was first accepted (`accepted_ts`), and its cancel mark ("" none). */
struct redisq_script script_begin = {"begin",
    "local p = redis.call('XPENDING', KEYS[3], ARGV[1], ARGV[2], ARGV[2], 1)\n"
    "if not p[1] or p[1][2] ~= ARGV[11] then return {'gone'} end\n"
    "local deliveries = tonumber(p[1][4])\n"
    "local cur = redis.call('HGET', KEYS[1], 'entry')\n"
    "if cur and cur ~= ARGV[2] then\n"
    "  redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])\n"
    "  redis.call('XDEL', KEYS[3], ARGV[2])\n"
    "  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[8], '*', 'ts', ARGV[4],\n"
    "    'event', 'duplicate', 'job', ARGV[10], 'entry', ARGV[2], 'original', cur)\n"
    "  return {'dup', cur}\n"
    "end\n"
    "local prog, units, cursor = 0, '0', ''\n"
    "local rec = redis.call('HGETALL', KEYS[1])\n"
    "local pmark, pat = nil, 0\n"
    "for i = 1, #rec, 2 do\n"
    "  local k = rec[i]\n"
    "  if string.sub(k, 1, 2) == 'c:' then prog = prog + tonumber(rec[i + 1])\n"
    "  elseif k == 'units' then units = rec[i + 1]\n"
    "  elseif k == 'cursor' then cursor = rec[i + 1]\n"
    "  elseif k == 'progress' then pmark = rec[i + 1]\n"
    "  elseif k == 'progress_at' then pat = tonumber(rec[i + 1]) end\n"
    "end\n"
    "local mark = units .. '|' .. prog .. '|' .. cursor\n"
    "if mark ~= pmark then\n"
    "  pat = deliveries - 1\n"
    "  redis.call('HSET', KEYS[1], 'progress', mark, 'progress_at', pat)\n"
    "end\n"
    "if deliveries - pat > tonumber(ARGV[6]) then\n"
    "  local reason = 'delivered ' .. deliveries .. ' times without progress (poison job)'\n"
    "  redis.call('XADD', KEYS[4], '*', 'payload', ARGV[9], 'reason', reason,\n"
    "    'lane', ARGV[3], 'entry', ARGV[2], 'deliveries', deliveries, 'ts', ARGV[4])\n"
    "  redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])\n"
    "  redis.call('XDEL', KEYS[3], ARGV[2])\n"
    "  redis.call('HSET', KEYS[1], 'id', ARGV[10], 'state', 'dead', 'entry', ARGV[2],\n"
    "    'lane', ARGV[3], 'finished_at', ARGV[4])\n"
    "  redis.call('EXPIRE', KEYS[1], ARGV[12])\n"
    "  redis.call('EXPIRE', KEYS[2], ARGV[12])\n"
    "  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[8], '*', 'ts', ARGV[4],\n"
    "    'event', 'dead', 'job', ARGV[10], 'entry', ARGV[2])\n"
    "  return {'dead', tostring(deliveries)}\n"
    "end\n"
    "if not cur then\n"
    "  redis.call('HSET', KEYS[1], 'id', ARGV[10], 'entry', ARGV[2], 'lane', ARGV[3],\n"
    "    'kind', ARGV[7], 'submitted_at', ARGV[4])\n"
    "end\n"
    "redis.call('HSETNX', KEYS[1], 'accepted_ts', ARGV[13])\n"
    "if redis.call('HSETNX', KEYS[1], 'accepted_at', ARGV[4]) == 1 then\n"
    "  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[8], '*', 'ts', ARGV[4],\n"
    "    'event', 'accepted', 'job', ARGV[10], 'entry', ARGV[2], 'units', ARGV[5])\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'state', 'running')\n"
    "redis.call('PERSIST', KEYS[1])\n"
    "return {'run', cursor, units, redis.call('HGET', KEYS[1], 'accepted_ts'),\n"
    "  redis.call('HGET', KEYS[1], 'cancel') or ''}\n", {0}};

/* ledger - KEYS: job hash, units hash, later set, job dlq, dlq index.
 * ARGV: now (unix seconds), job id, then quadruples of field
 * ("<channel>:<recipient>"), value ("state|attempts|code|reason"), flags
 * ("d": count one in-doubt resend, "-": none) and the unit's place in the
 * later set ("-": leave, "x": remove, a number: add with that due time).
 * Compare-and-set: a unit already in a terminal state is left alone.  A
 * new field bumps `units`; terminal transitions bump c:<channel>:<state>;
 * retry and deferred bump c:<channel>:retries and c:<channel>:deferred.
 * A `dead` unit joins the job's dead letters and the job the dlq index.
 * Once the job record has `cancel`, a `sending` value is recorded as
 * `cancelled` instead (and leaves the later set): no provider is called
 * for a cancelled job, whichever instance runs it.  Returns {applied,
 * cancelled (0/1), then the 1-based positions turned into `cancelled`}. */
struct redisq_script script_ledger = {"ledger",
    "local term = {sent=true, failed=true, suppressed=true, expired=true, dead=true,\n"
    "  cancelled=true}\n"
    "local function chunked(cmd, key, list)\n"
    "  local out = {}\n"
    "  for a = 1, #list, 1000 do\n"
    "    local r = redis.call(cmd, key, unpack(list, a, math.min(a + 999, #list)))\n"
    "    if type(r) == 'table' then for _, x in ipairs(r) do out[#out + 1] = x end end\n"
    "  end\n"
    "  return out\n"
    "end\n"
    "local cancel = redis.call('HEXISTS', KEYS[1], 'cancel') == 1\n"
    "local fields = {}\n"
    "for i = 3, #ARGV, 4 do fields[#fields + 1] = ARGV[i] end\n"
    "local olds = chunked('HMGET', KEYS[2], fields)\n"
    "local set, incr, zadd, zrem, dead, applied = {}, {}, {}, {}, {}, 0\n"
    "local res = {0, cancel and 1 or 0}\n"
    "for k = 1, #fields do\n"
    "  local i = (k - 1) * 4 + 3\n"
    "  local old = olds[k]\n"
    "  local olds_ = old and string.match(old, '^([a-z]+)')\n"
    "  if not (olds_ and term[olds_]) then\n"
    "    local v = ARGV[i + 1]\n"
    "    local s = string.match(v, '^([a-z]+)')\n"
    "    local z = ARGV[i + 3]\n"
    "    if cancel and s == 'sending' then\n"
    "      local att = string.match(v, '^[a-z]+|(%d+)|') or '0'\n"
    "      v = 'cancelled|' .. att .. '|0|job cancelled'\n"
    "      s = 'cancelled'\n"
    "      z = 'x'\n"
    "      res[#res + 1] = k\n"
    "    end\n"
    "    set[#set + 1] = ARGV[i]\n"
    "    set[#set + 1] = v\n"
    "    local ch = string.match(ARGV[i], '^([^:]+)')\n"
    "    local c = nil\n"
    "    if term[s] then c = 'c:' .. ch .. ':' .. s\n"
    "    elseif s == 'retry' then c = 'c:' .. ch .. ':retries'\n"
    "    elseif s == 'deferred' then c = 'c:' .. ch .. ':deferred' end\n"
    "    if c then incr[c] = (incr[c] or 0) + 1 end\n"
    "    if not old then incr['units'] = (incr['units'] or 0) + 1 end\n"
    "    if ARGV[i + 2] == 'd' then\n"
    "      local d = 'c:' .. ch .. ':in_doubt'\n"
    "      incr[d] = (incr[d] or 0) + 1\n"
    "    end\n"
    "    if s == 'dead' then dead[#dead + 1] = ARGV[1]; dead[#dead + 1] = ARGV[i] end\n"
    "    if z == 'x' then zrem[#zrem + 1] = ARGV[i]\n"
    "    elseif z ~= '-' then zadd[#zadd + 1] = z; zadd[#zadd + 1] = ARGV[i] end\n"
    "    applied = applied + 1\n"
    "  elseif ARGV[i + 3] ~= '-' then\n"
    "    zrem[#zrem + 1] = ARGV[i]\n"
    "  end\n"
    "end\n"
    "if #set > 0 then chunked('HSET', KEYS[2], set) end\n"
    "if #zrem > 0 then chunked('ZREM', KEYS[3], zrem) end\n"
    "if #zadd > 0 then chunked('ZADD', KEYS[3], zadd) end\n"
    "if #dead > 0 then\n"
    "  chunked('ZADD', KEYS[4], dead)\n"
    "  redis.call('ZADD', KEYS[5], ARGV[1], ARGV[2])\n"
    "end\n"
    "for c, n in pairs(incr) do redis.call('HINCRBY', KEYS[1], c, n) end\n"
    "res[1] = applied\n"
    "return res\n", {0}};

/* page - KEYS: units hash.  ARGV: prefix, mode ("topics", "all", "ids" or
 * "explicit"; with "+fresh" when the job's ledger was empty when this run
 * began, so there is nothing to look up in it), cursor, page size, channel count n, n channel names, then
 * the topic names ("topics") or this page's ids ("ids", "explicit").
 * ("set": one key suffix, e.g. "job:<id>:aud", instead of topic names).
 * Reads the next page of the audience in a stable order: ZRANGEBYLEX over
 * each topic's set in turn (a citizen also in an earlier topic of the job
 * is skipped there) or over `citizens`; the cursor is "<set>|<last id>".
 * Returns {next cursor, done (0/1), id, record (HGETALL, or empty for
 * "explicit"), ledger values (one per channel, nil when none), id, ...}. */
struct redisq_script script_page = {"page",
    "local prefix, mode, cursor = ARGV[1], ARGV[2], ARGV[3]\n"
    "local fresh = string.sub(mode, -6) == '+fresh'\n"
    "if fresh then mode = string.sub(mode, 1, -7) end\n"
    "local size, nch = tonumber(ARGV[4]), tonumber(ARGV[5])\n"
    "local rest = 6 + nch\n"
    "local ids, out = {}, {'', 0}\n"
    "if mode == 'topics' or mode == 'all' or mode == 'set' then\n"
    "  local sets = {}\n"
    "  if mode == 'all' then sets[1] = prefix .. 'citizens'\n"
    "  elseif mode == 'set' then sets[1] = prefix .. ARGV[rest]\n"
    "  else for i = rest, #ARGV do sets[#sets + 1] = prefix .. 'topic:' .. ARGV[i] end end\n"
    "  local si, last = 1, ''\n"
    "  if cursor ~= '' then\n"
    "    local a, b = string.match(cursor, '^(%d+)|(.*)$')\n"
    "    si, last = tonumber(a), b\n"
    "  end\n"
    "  while #ids < size and si <= #sets do\n"
    "    local want = size - #ids\n"
    "    local from = '-'\n"
    "    if last ~= '' then from = '(' .. last end\n"
    "    local got = redis.call('ZRANGEBYLEX', sets[si], from, '+', 'LIMIT', 0, want)\n"
    "    for _, id in ipairs(got) do\n"
    "      local dup = false\n"
    "      for j = 1, si - 1 do\n"
    "        if redis.call('ZSCORE', sets[j], id) then dup = true; break end\n"
    "      end\n"
    "      if not dup then ids[#ids + 1] = id end\n"
    "      last = id\n"
    "    end\n"
    "    if #got < want then si, last = si + 1, '' end\n"
    "  end\n"
    "  out[1] = si .. '|' .. last\n"
    "  if si > #sets then out[2] = 1 end\n"
    "else\n"
    "  for i = rest, #ARGV do ids[#ids + 1] = ARGV[i] end\n"
    "end\n"
    "local none, n = {}, #out\n"
    "local ckey = prefix .. 'citizen:'\n"
    "for _, id in ipairs(ids) do\n"
    "  out[n + 1] = id\n"
    "  if mode == 'explicit' then out[n + 2] = none\n"
    "  else out[n + 2] = redis.call('HGETALL', ckey .. id) end\n"
    "  if fresh then out[n + 3] = none\n"
    "  else\n"
    "    local fields = {}\n"
    "    for c = 1, nch do fields[c] = ARGV[5 + c] .. ':' .. id end\n"
    "    out[n + 3] = redis.call('HMGET', KEYS[1], unpack(fields))\n"
    "  end\n"
    "  n = n + 3\n"
    "end\n"
    "return out\n", {0}};

/* admit - KEYS: contacts:bounced.  ARGV: job id, daily cap, cap key
 * prefix ("<P>cap:"), cap key lifetime, then quadruples per recipient:
 * id, bounce field of its e-mail unit or "-", local day for the cap or
 * "-", "1" if it has other units to deliver or "0".  A recipient with a
 * unit left after the bounce check takes one place of its day's cap
 * (idempotent: the job id is kept in the field).  Returns per recipient
 * 1 (bounced) + 2 (over the cap). */
struct redisq_script script_admit = {"admit",
    "local res = {}\n"
    "local cap = tonumber(ARGV[2])\n"
    "for i = 5, #ARGV, 4 do\n"
    "  local id, bf, day, other = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]\n"
    "  local r = 0\n"
    "  if bf ~= '-' and redis.call('HEXISTS', KEYS[1], bf) == 1 then r = 1 end\n"
    "  if day ~= '-' and (other == '1' or (bf ~= '-' and r == 0)) then\n"
    "    local key = ARGV[3] .. day\n"
    "    local v = redis.call('HGET', key, id)\n"
    "    local n, found = 0, false\n"
    "    if v then\n"
    "      for j in string.gmatch(v, '[^,]+') do\n"
    "        n = n + 1\n"
    "        if j == ARGV[1] then found = true end\n"
    "      end\n"
    "    end\n"
    "    if not found then\n"
    "      if n >= cap then r = r + 2\n"
    "      else\n"
    "        if v then v = v .. ',' .. ARGV[1] else v = ARGV[1] end\n"
    "        redis.call('HSET', key, id, v)\n"
    "        redis.call('EXPIRE', key, ARGV[4])\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  res[#res + 1] = r\n"
    "end\n"
    "return res\n", {0}};

/* take - KEYS: later set, units hash.  ARGV: now, lease until, limit,
 * citizen key prefix ("<P>citizen:", or "" for explicit recipients).
 * Takes the units due by now: each gets the lease as its new due time (so
 * a crash before it is final brings it back then) and is returned with
 * its ledger value and, for citizens, the record.  Members already final
 * (or erased) are dropped.  Returns {members left (leased ones included),
 * earliest due or "", member, value, record, ...}. */
struct redisq_script script_take = {"take",
    "local term = {sent=true, failed=true, suppressed=true, expired=true, dead=true,\n"
    "  cancelled=true}\n"
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0,\n"
    "  tonumber(ARGV[3]))\n"
    "local out = {0, ''}\n"
    "for _, m in ipairs(due) do\n"
    "  local v = redis.call('HGET', KEYS[2], m)\n"
    "  local st = v and string.match(v, '^([a-z]+)')\n"
    "  if not v or term[st] then\n"
    "    redis.call('ZREM', KEYS[1], m)\n"
    "  else\n"
    "    redis.call('ZADD', KEYS[1], ARGV[2], m)\n"
    "    local h = {}\n"
    "    if ARGV[4] ~= '' then\n"
    "      h = redis.call('HGETALL', ARGV[4] .. string.match(m, '^[^:]+:(.*)$'))\n"
    "    end\n"
    "    out[#out + 1] = m\n"
    "    out[#out + 1] = v\n"
    "    out[#out + 1] = h\n"
    "  end\n"
    "end\n"
    "out[1] = redis.call('ZCARD', KEYS[1])\n"
    "local nx = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
    "if nx[2] then out[2] = nx[2] end\n"
    "return out\n", {0}};

/* finish - KEYS: job hash, units hash, lane stream, events, later set,
 * job dlq.  ARGV: group, entry, ts, retention seconds, events maxlen, job
 * id.  Every unit the run knew of is final.  If the later set is not
 * empty after all (a `herold dlq retry` raced with the end of the run),
 * the job is queued again instead (a new entry with `resume`, cursor
 * "$end") and {"requeued", entry} returned.  Else: acknowledge the entry,
 * delete its payload (personal data) unless the job has dead letters (then
 * the payload stays in the record for `herold dlq retry`), set the state
 * (`cancelled` when the job was cancelled, else `done`) and let the record
 * expire after the retention period.  Returns {"done"}. */
struct redisq_script script_finish = {"finish",
    "local function payload()\n"
    "  local e = redis.call('XRANGE', KEYS[3], ARGV[2], ARGV[2])\n"
    "  if e[1] then\n"
    "    local f = e[1][2]\n"
    "    for i = 1, #f, 2 do if f[i] == 'job' then return f[i + 1] end end\n"
    "  end\n"
    "  return redis.call('HGET', KEYS[1], 'payload')\n"
    "end\n"
    "if redis.call('ZCARD', KEYS[5]) > 0 and redis.call('HEXISTS', KEYS[1], 'cancel') == 0 then\n"
    "  local p = payload()\n"
    "  if p then\n"
    "    local id = redis.call('XADD', KEYS[3], '*', 'job', p, 'resume', '1')\n"
    "    redis.call('HSET', KEYS[1], 'entry', id, 'state', 'queued', 'cursor', '$end')\n"
    "    redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])\n"
    "    redis.call('XDEL', KEYS[3], ARGV[2])\n"
    "    return {'requeued', id}\n"
    "  end\n"
    "end\n"
    "local state = 'done'\n"
    "if redis.call('HEXISTS', KEYS[1], 'cancel') == 1 then state = 'cancelled' end\n"
    "if redis.call('ZCARD', KEYS[6]) > 0 then\n"
    "  local p = payload()\n"
    "  if p then redis.call('HSET', KEYS[1], 'payload', p) end\n"
    "else\n"
    "  redis.call('HDEL', KEYS[1], 'payload')\n"
    "end\n"
    "redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])\n"
    "redis.call('XDEL', KEYS[3], ARGV[2])\n"
    "redis.call('HSET', KEYS[1], 'state', state, 'finished_at', ARGV[3])\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[4])\n"
    "redis.call('EXPIRE', KEYS[2], ARGV[4])\n"
    "redis.call('EXPIRE', KEYS[6], ARGV[4])\n"
    "redis.call('DEL', KEYS[5])\n"
    "redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'ts', ARGV[3],\n"
    "  'event', state, 'job', ARGV[6], 'entry', ARGV[2])\n"
    "return {'done'}\n", {0}};

/* park - KEYS: job hash, lane stream, scheduled set, events.  ARGV:
 * group, entry, payload, send_at (unix seconds), lane, job id, kind, ts,
 * events maxlen, consumer.  A job due later: its payload goes into the
 * record (state `scheduled`), its id into the scheduled set, and the
 * entry is acknowledged and deleted, in one step.  Returns {"gone"} when
 * the entry is not pending for this consumer, {"dup", entry} when the
 * job id was accepted from another entry, else {"parked"}. */
struct redisq_script script_park = {"park",
    "local p = redis.call('XPENDING', KEYS[2], ARGV[1], ARGV[2], ARGV[2], 1)\n"
    "if not p[1] or p[1][2] ~= ARGV[10] then return {'gone'} end\n"
    "local cur = redis.call('HGET', KEYS[1], 'entry')\n"
    "redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])\n"
    "redis.call('XDEL', KEYS[2], ARGV[2])\n"
    "if cur and cur ~= ARGV[2] then\n"
    "  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[9], '*', 'ts', ARGV[8],\n"
    "    'event', 'duplicate', 'job', ARGV[6], 'entry', ARGV[2], 'original', cur)\n"
    "  return {'dup', cur}\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'id', ARGV[6], 'state', 'scheduled', 'lane', ARGV[5],\n"
    "  'kind', ARGV[7], 'entry', ARGV[2], 'payload', ARGV[3], 'send_at', ARGV[4],\n"
    "  'submitted_at', ARGV[8])\n"
    "redis.call('PERSIST', KEYS[1])\n"
    "redis.call('ZADD', KEYS[3], ARGV[4], ARGV[6])\n"
    "redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[9], '*', 'ts', ARGV[8],\n"
    "  'event', 'scheduled', 'job', ARGV[6], 'entry', ARGV[2])\n"
    "return {'parked'}\n", {0}};

/* promote - KEYS: scheduled set, events.  ARGV: prefix, now (unix
 * seconds), limit, ts, events maxlen.  Moves the jobs due by now to their
 * lane streams (fields `job` and `promoted`), state `queued` with the new
 * entry.  ZREM decides: of several instances, only the one whose script
 * removed an id adds its entry.  Returns {promoted, next due or ""}. */
struct redisq_script script_promote = {"promote",
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0,\n"
    "  tonumber(ARGV[3]))\n"
    "local n = 0\n"
    "for _, id in ipairs(due) do\n"
    "  if redis.call('ZREM', KEYS[1], id) == 1 then\n"
    "    local jk = ARGV[1] .. 'job:' .. id\n"
    "    local r = redis.call('HMGET', jk, 'state', 'payload', 'lane')\n"
    "    if r[1] == 'scheduled' and r[2] and r[3] then\n"
    "      local e = redis.call('XADD', ARGV[1] .. 'jobs:' .. r[3], '*', 'job', r[2],\n"
    "        'promoted', '1')\n"
    "      redis.call('HSET', jk, 'state', 'queued', 'entry', e)\n"
    "      redis.call('HDEL', jk, 'payload')\n"
    "      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'ts', ARGV[4],\n"
    "        'event', 'promoted', 'job', id, 'entry', e)\n"
    "      n = n + 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local nx = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
    "return {n, nx[2] or ''}\n", {0}};

/* gcra - KEYS: the provider's limit key.  ARGV: rate (per second), burst,
 * tokens wanted.  The shared rate limit (docs/flow.md): the key holds the
 * theoretical arrival time in microseconds of Redis's clock (TIME), one
 * clock for every instance.  Grants while TAT - now <= (burst - 1) / rate,
 * moving TAT on by 1/rate per token (ratelimit.c, rl_gcra, is the same
 * arithmetic).  Returns {granted, microseconds until the next token}. */
struct redisq_script script_gcra = {"gcra",
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local rate, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local step = 1000000 / rate\n"
    "local tau = (burst - 1) * step\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "if tat < now then tat = now end\n"
    "local k = 0\n"
    "while k < n and tat - now <= tau do tat = tat + step; k = k + 1 end\n"
    "if k > 0 then\n"
    "  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX',\n"
    "    math.floor((tat - now) / 1000) + 1000)\n"
    "end\n"
    "local wait = 0\n"
    "if tat - now > tau then wait = tat - tau - now end\n"
    "return {k, math.floor(wait)}\n", {0}};

/* reach - KEYS: the referenced job's units hash, the new job's audience
 * set.  ARGV: HSCAN cursor, count.  Adds to the set every citizen whose
 * unit of the referenced job may have reached them: `sent`, `sending`,
 * or waiting/dead after an attempt without a provider answer (code 0).
 * Not `cancelled`: the ledger records that instead of `sending`, so such
 * a unit never reached a provider.
 * Returns the next cursor ("0": done). */
struct redisq_script script_reach = {"reach",
    "local r = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', tonumber(ARGV[2]))\n"
    "local add = {}\n"
    "local f = r[2]\n"
    "for i = 1, #f, 2 do\n"
    "  local s, att, code = string.match(f[i + 1], '^([a-z]+)|(%d+)|(%d+)|')\n"
    "  local maybe = s == 'sent' or s == 'sending' or ((s == 'retry' or s == 'dead') and\n"
    "    tonumber(att or '0') > 0 and code == '0')\n"
    "  if maybe then\n"
    "    add[#add + 1] = 0\n"
    "    add[#add + 1] = string.match(f[i], '^[^:]+:(.*)$')\n"
    "  end\n"
    "end\n"
    "if #add > 0 then redis.call('ZADD', KEYS[2], unpack(add)) end\n"
    "return r[1]\n", {0}};

/* heartbeat - KEYS: lane stream.  ARGV: group, consumer, entries...
 * Resets the idle time of each entry this consumer still owns (XCLAIM
 * with JUSTID does not count a delivery) so XAUTOCLAIM elsewhere leaves a
 * live job alone.  Returns the entries that are no longer ours. */
struct redisq_script script_heartbeat = {"heartbeat",
    "local lost = {}\n"
    "for i = 3, #ARGV do\n"
    "  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)\n"
    "  if p[1] and p[1][2] == ARGV[2] then\n"
    "    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')\n"
    "  else\n"
    "    table.insert(lost, ARGV[i])\n"
    "  end\n"
    "end\n"
    "return lost\n", {0}};

/* trim - KEYS: lane stream.  Trims by MINID at the lowest of, over all
 * consumer groups, the oldest pending entry or (none pending) the last
 * delivered one: never an entry that is pending or not yet read.  Never
 * trims a stream without groups.  Returns the number of entries removed. */
struct redisq_script script_trim = {"trim",
    "local function lt(a, b)\n"
    "  local am, as = string.match(a, '^(%d+)-(%d+)$')\n"
    "  local bm, bs = string.match(b, '^(%d+)-(%d+)$')\n"
    "  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)\n"
    "  return am < bm or (am == bm and as < bs)\n"
    "end\n"
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n"
    "local groups = redis.call('XINFO', 'GROUPS', KEYS[1])\n"
    "local minid = nil\n"
    "for _, g in ipairs(groups) do\n"
    "  local info = {}\n"
    "  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end\n"
    "  local cand = info['last-delivered-id']\n"
    "  if tonumber(info['pending']) > 0 then\n"
    "    cand = redis.call('XPENDING', KEYS[1], info['name'])[2]\n"
    "  end\n"
    "  if minid == nil or lt(cand, minid) then minid = cand end\n"
    "end\n"
    "if minid == nil then return 0 end\n"
    "return redis.call('XTRIM', KEYS[1], 'MINID', minid)\n", {0}};

void scripts_register(struct redisq *q)
{
    redisq_add_script(q, &script_enqueue);
    redisq_add_script(q, &script_reject);
    redisq_add_script(q, &script_begin);
    redisq_add_script(q, &script_ledger);
    redisq_add_script(q, &script_page);
    redisq_add_script(q, &script_admit);
    redisq_add_script(q, &script_take);
    redisq_add_script(q, &script_finish);
    redisq_add_script(q, &script_heartbeat);
    redisq_add_script(q, &script_trim);
    redisq_add_script(q, &script_park);
    redisq_add_script(q, &script_promote);
    redisq_add_script(q, &script_gcra);
    redisq_add_script(q, &script_reach);
    redisq_add_script(q, &script_cancel);
}
