/*
 * cli_flow - `herold dlq ...`, `schedule list` and `cancel`: argument
 * parsing, reading the dead-letter and schedule sets, and output for
 * people (or JSON).  State changes are the scripts in flowscripts.c.
 *
 * Prints job ids, channels and recipient ids, never contact points: it
 * reads the ledger, the dead-letter sets and job records, never citizen
 * records or payloads.  Synchronous Redis: the CLI may block.
 */
#include "cli_flow.h"

#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "flowscripts.h"
#include "herr.h"
#include "job.h"
#include "redisq.h"
#include "track.h"

enum { CF_OK = 0, CF_INVALID = 1, CF_ERROR = 2, CF_NOJOB = 4, CF_USAGE = 64 };

/* replies are read in pages of this many members */
#define CF_PAGE 500
/* a channel name in a dead letter's member */
#define CF_CHANNEL_MAX 32

void cli_flow_usage(FILE *out)
{
    fprintf(out,
            "       herold [-c CONFIG] dlq list [--json]     jobs with dead letters\n"
            "       herold [-c CONFIG] dlq show JOB_ID [--json]\n"
            "       herold [-c CONFIG] dlq retry JOB_ID [CHANNEL:RECIPIENT]\n"
            "       herold [-c CONFIG] dlq purge JOB_ID [CHANNEL:RECIPIENT]\n"
            "       herold [-c CONFIG] schedule list [--json]\n"
            "       herold [-c CONFIG] cancel JOB_ID\n");
}

bool cli_flow_handles(const char *cmd)
{
    return strcmp(cmd, "dlq") == 0 || strcmp(cmd, "schedule") == 0 ||
           strcmp(cmd, "cancel") == 0;
}

/* cf_connect - the synchronous connection, or NULL with a message. */
static struct redisq_sync *cf_connect(const struct herold_config *cfg)
{
    return redisq_sync_open(&cfg->redis, "herold-cli", NULL);
}

/* cf_cmd - run one command; a new reply, or NULL with a message when the
 * connection failed or Redis answered an error. */
static struct redisq_reply *cf_cmd(struct redisq_sync *s, int argc, const char **argv)
{
    struct herr err;
    struct redisq_reply *r = redisq_sync_argv(s, argc, argv, NULL, &err);

    if (r == NULL) {
        fprintf(stderr, "herold: %s\n", err.msg);
        return NULL;
    }
    if (redisq_reply_type(r) == REDISQ_ERROR) {
        fprintf(stderr, "herold: Redis: %s %s: %s\n", argv[0], argv[1],
                redisq_reply_str(r, NULL));
        redisq_sync_reply_free(r);
        return NULL;
    }
    return r;
}

/* cf_eval - run a flow script; a new reply (error replies included), or
 * NULL with a message when the connection failed. */
static struct redisq_reply *cf_eval(struct redisq_sync *s, const struct redisq_script *sc,
                                    int nkeys, int argc, const char **argv)
{
    struct herr err;
    struct redisq_reply *r = redisq_sync_eval(s, sc, nkeys, argc, argv, NULL, &err);

    if (r == NULL)
        fprintf(stderr, "herold: %s\n", err.msg);
    return r;
}

/* cf_refused - print a script's error reply and map its code to an exit
 * status: NOJOB 4, REFUSED 1, anything else (a Redis error) 2. */
static int cf_refused(const char *id, const struct redisq_reply *r)
{
    const char *t = redisq_reply_str(r, NULL);

    if (strncmp(t, "NOJOB ", 6) == 0) {
        fprintf(stderr, "herold: %s: %s\n", id, t + 6);
        return CF_NOJOB;
    }
    if (strncmp(t, "REFUSED ", 8) == 0) {
        fprintf(stderr, "herold: %s: %s\n", id, t + 8);
        return CF_INVALID;
    }
    fprintf(stderr, "herold: %s: Redis: %s\n", id, t);
    return CF_ERROR;
}

/* cf_int - the integer reply r, or -1 when it is not one. */
static long long cf_int(const struct redisq_reply *r)
{
    return r != NULL && redisq_reply_type(r) == REDISQ_INT ? redisq_reply_int(r) : -1;
}

/* cf_str - the string element i of r, or NULL when missing or nil. */
static const char *cf_str(const struct redisq_reply *r, size_t i)
{
    const struct redisq_reply *e;

    if (i >= redisq_reply_len(r))
        return NULL;
    e = redisq_reply_elem(r, i);
    return redisq_reply_type(e) == REDISQ_STR || redisq_reply_type(e) == REDISQ_STATUS
               ? redisq_reply_str(e, NULL) : NULL;
}

/* cf_iso - a sorted-set score (unix seconds) as an ISO time into buf. */
static const char *cf_iso(const char *score, char *buf, size_t size)
{
    return clock_iso(score ? strtod(score, NULL) : 0, buf, size);
}

/* cf_id_ok - is id a job id?  Prints why not. */
static bool cf_id_ok(const char *id)
{
    if (job_id_ok(id, JOB_ID_MAX))
        return true;
    fprintf(stderr, "herold: job id: expected 1-%d characters of A-Z a-z 0-9 . _ : -\n",
            JOB_ID_MAX);
    return false;
}

/* cf_member_ok - is m "<channel>:<recipient id>"?  Prints why not. */
static bool cf_member_ok(const char *m)
{
    const char *colon = strchr(m, ':');
    size_t n = colon ? (size_t)(colon - m) : 0;
    bool ok = n > 0 && n <= CF_CHANNEL_MAX && job_id_ok(colon + 1, JOB_ID_MAX);

    for (size_t i = 0; ok && i < n; i++)
        ok = (m[i] >= 'a' && m[i] <= 'z') || (m[i] >= '0' && m[i] <= '9') || m[i] == '_' ||
             m[i] == '-';
    if (!ok)
        fprintf(stderr, "herold: expected CHANNEL:RECIPIENT, e.g. email:r-17 (a channel name, "
                        "then a recipient id of A-Z a-z 0-9 . _ : -)\n");
    return ok;
}

/* cf_print_json - j on stdout, indented, keys sorted. */
static void cf_print_json(const json_t *j)
{
    char *txt = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);

    if (txt != NULL)
        puts(txt);
    free(txt);
}

/* cf_or - s, or "-" for a missing value in a table. */
static const char *cf_or(const char *s)
{
    return s != NULL && *s != '\0' ? s : "-";
}

/* cf_json_str - a JSON string of s, null for NULL; invalid UTF-8 is
 * replaced rather than dropped silently. */
static json_t *cf_json_str(const char *s, size_t len)
{
    json_t *j;

    if (s == NULL)
        return json_null();
    j = json_stringn(s, len);
    return j != NULL ? j : json_string("(not UTF-8)");
}

/* ---- ledger values ---- */

/* A dead letter's ledger value "state|attempts|code|reason", parsed.
 * reason borrows from the value. */
struct cf_letter {
    char state[16];           /* "" when the value is missing or malformed */
    long attempts;            /* -1: unknown */
    long code;                /* -1: unknown; 0: none */
    const char *reason;       /* NULL: unknown */
    size_t reason_len;
};

/* cf_ledger_number - the decimal number in [p, end) before a '|': its
 * value, or -1 when empty or not digits.  *next is past the '|'. */
static long cf_ledger_number(const char *p, const char *end, const char **next)
{
    long v = 0;
    const char *q = p;

    while (q < end && *q >= '0' && *q <= '9' && v < 1000000000L)
        v = v * 10 + (*q++ - '0');
    if (q == p || q == end || *q != '|')
        return -1;
    *next = q + 1;
    return v;
}

/* cf_ledger_parse - v (len bytes, may be NULL: no ledger field) into out.
 * Returns 0, or -1 when v is missing or malformed (out then says unknown
 * for every part that could not be read). */
static int cf_ledger_parse(const char *v, size_t len, struct cf_letter *out)
{
    const char *end = v + len, *bar, *p;
    size_t n;

    *out = (struct cf_letter){.attempts = -1, .code = -1};
    if (v == NULL || (bar = memchr(v, '|', len)) == NULL)
        return -1;
    n = (size_t)(bar - v);
    if (n == 0 || n >= sizeof out->state)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (v[i] < 'a' || v[i] > 'z')
            return -1;
    memcpy(out->state, v, n);
    out->state[n] = '\0';
    if ((out->attempts = cf_ledger_number(bar + 1, end, &p)) < 0)
        return -1;
    if ((out->code = cf_ledger_number(p, end, &p)) < 0)
        return -1;
    out->reason = p;
    out->reason_len = (size_t)(end - p);
    return 0;
}

/* cf_put_reason - reason on stdout with control characters as spaces
 * (the daemon stores it clean; the terminal gets no escapes either way). */
static void cf_put_reason(const char *r, size_t len)
{
    for (size_t i = 0; i < len; i++)
        putchar((unsigned char)r[i] < 0x20 || r[i] == 0x7f ? ' ' : r[i]);
}

/* ---- dlq list ---- */

/* cf_dlq_row - the index entry of job id (latest dead letter at score) as
 * a new JSON object, or NULL on a Redis error (printed). */
static json_t *cf_dlq_row(struct redisq_sync *s, const char *prefix, const char *id,
                          const char *score)
{
    char jk[TRACK_KEY_MAX], dk[TRACK_KEY_MAX], ts[40];
    const char *hm[] = {"HMGET", track_key_job(jk, prefix, id), "lane", "kind", "state"};
    const char *zc[] = {"ZCARD", track_key_dlq(dk, prefix, id)};
    struct redisq_reply *h = cf_cmd(s, 5, hm), *z = h ? cf_cmd(s, 2, zc) : NULL;
    json_t *row = NULL;

    if (z != NULL)
        row = json_pack("{s:s,s:s?,s:s?,s:s?,s:I,s:s}", "id", id, "lane", cf_str(h, 0),
                        "kind", cf_str(h, 1), "state", cf_str(h, 2), "dead",
                        (json_int_t)cf_int(z), "latest", cf_iso(score, ts, sizeof ts));
    redisq_sync_reply_free(h);
    redisq_sync_reply_free(z);
    return row;
}

/* A row builder for cf_zset_rows: member and score of one entry, as a
 * new JSON object, or NULL when Redis failed. */
typedef json_t *cf_row_fn(struct redisq_sync *s, const char *prefix, const char *member,
                          const char *score);

/* cf_zset_rows - the rows of every member of sorted set key, read in pages
 * (cmd ZRANGE or ZREVRANGE), into rows; -1 when Redis failed. */
static int cf_zset_rows(struct redisq_sync *s, const char *prefix, const char *cmd,
                        const char *key, cf_row_fn *fn, json_t *rows)
{
    char a[24], b[24];

    for (long start = 0;; start += CF_PAGE) {
        const char *av[] = {cmd, key, a, b, "WITHSCORES"};
        struct redisq_reply *r;
        size_t n;

        snprintf(a, sizeof a, "%ld", start);
        snprintf(b, sizeof b, "%ld", start + CF_PAGE - 1);
        if ((r = cf_cmd(s, 5, av)) == NULL)
            return -1;
        n = redisq_reply_len(r) / 2;
        for (size_t i = 0; i < n; i++) {
            const char *member = cf_str(r, 2 * i);
            json_t *row;
            if (member == NULL)
                continue;
            if ((row = fn(s, prefix, member, cf_str(r, 2 * i + 1))) == NULL) {
                redisq_sync_reply_free(r);
                return -1;
            }
            json_array_append_new(rows, row);
        }
        redisq_sync_reply_free(r);
        if (n < CF_PAGE)
            return 0;
    }
}

/* cf_dlq_list - `dlq list`: the index, newest dead letter first. */
static int cf_dlq_list(const struct herold_config *cfg, bool as_json)
{
    struct redisq_sync *s = cf_connect(cfg);
    json_t *rows = json_array(), *row;
    char ik[TRACK_KEY_MAX];
    int rc = CF_ERROR;
    size_t i;

    if (s == NULL || cf_zset_rows(s, cfg->redis.prefix, "ZREVRANGE",
                                  track_key(ik, cfg->redis.prefix, "dlq"), cf_dlq_row,
                                  rows) != 0)
        goto out;
    if (as_json) {
        cf_print_json(rows);
    } else if (json_array_size(rows) == 0) {
        printf("no dead letters\n");
    } else {
        printf("%-24s %-7s %-13s %-10s %6s  %s\n", "JOB", "LANE", "KIND", "STATE", "DEAD",
               "LATEST");
        json_array_foreach(rows, i, row)
            printf("%-24s %-7s %-13s %-10s %6" JSON_INTEGER_FORMAT "  %s\n",
                   json_string_value(json_object_get(row, "id")),
                   cf_or(json_string_value(json_object_get(row, "lane"))),
                   cf_or(json_string_value(json_object_get(row, "kind"))),
                   cf_or(json_string_value(json_object_get(row, "state"))),
                   json_integer_value(json_object_get(row, "dead")),
                   json_string_value(json_object_get(row, "latest")));
    }
    rc = CF_OK;
out:
    json_decref(rows);
    redisq_sync_free(s);
    return rc;
}

/* ---- dlq show ---- */

/* cf_letter_json - one dead letter as a new JSON object. */
static json_t *cf_letter_json(const char *member, const char *value, size_t vlen,
                              const char *score)
{
    const char *colon = strchr(member, ':');
    struct cf_letter l;
    char ts[40];
    json_t *o;

    cf_ledger_parse(value, vlen, &l);
    o = json_pack("{s:s%,s:s,s:s,s:s}", "channel", member,
                  colon ? (size_t)(colon - member) : strlen(member), "recipient",
                  colon ? colon + 1 : "", "state", l.state[0] ? l.state : "unknown",
                  "dead_at", cf_iso(score, ts, sizeof ts));
    json_object_set_new(o, "attempts",
                        l.attempts >= 0 ? json_integer(l.attempts) : json_null());
    json_object_set_new(o, "code", l.code >= 0 ? json_integer(l.code) : json_null());
    json_object_set_new(o, "reason", cf_json_str(l.reason, l.reason_len));
    return o;
}

/* cf_show_page - the dead letters of one ZRANGE page (r) with their
 * ledger values, appended to letters (JSON) or printed.  -1 on a Redis
 * error (printed). */
static int cf_show_page(struct redisq_sync *s, const char *uk, const struct redisq_reply *r,
                        bool as_json, json_t *letters)
{
    size_t n = redisq_reply_len(r) / 2;
    const char **av = herold_calloc(n + 2, sizeof *av);
    struct redisq_reply *v = NULL;
    int rc = -1;

    if (av == NULL) {
        fprintf(stderr, "herold: out of memory\n");
        return -1;
    }
    av[0] = "HMGET";
    av[1] = uk;
    for (size_t i = 0; i < n; i++)
        av[2 + i] = cf_str(r, 2 * i) ? cf_str(r, 2 * i) : "";
    if ((v = cf_cmd(s, (int)n + 2, av)) == NULL)
        goto out;
    for (size_t i = 0; i < n; i++) {
        const char *m = av[2 + i], *val = cf_str(v, i), *colon = strchr(m, ':');
        size_t vlen = 0;
        struct cf_letter l;
        char ts[40];

        if (val != NULL)
            redisq_reply_str(redisq_reply_elem(v, i), &vlen);
        if (as_json) {
            json_array_append_new(letters, cf_letter_json(m, val, vlen, cf_str(r, 2 * i + 1)));
            continue;
        }
        cf_ledger_parse(val, vlen, &l);
        printf("%-10.*s %-24s %-8s", colon ? (int)(colon - m) : 0, m, colon ? colon + 1 : m,
               l.state[0] ? l.state : "unknown");
        if (l.attempts >= 0)
            printf(" %8ld %5ld", l.attempts, l.code);
        else
            printf(" %8s %5s", "-", "-");
        printf("  %s", cf_iso(cf_str(r, 2 * i + 1), ts, sizeof ts));
        if (l.reason != NULL && l.reason_len > 0) {
            printf("  ");
            cf_put_reason(l.reason, l.reason_len);
        }
        putchar('\n');
    }
    rc = 0;
out:
    redisq_sync_reply_free(v);
    herold_free(av);
    return rc;
}

/* cf_dlq_show - `dlq show`: a job's dead letters, oldest first. */
static int cf_dlq_show(const struct herold_config *cfg, const char *id, bool as_json)
{
    char dk[TRACK_KEY_MAX], uk[TRACK_KEY_MAX], jk[TRACK_KEY_MAX], a[24], b[24];
    const char *zc[] = {"ZCARD", track_key_dlq(dk, cfg->redis.prefix, id)};
    const char *ex[] = {"EXISTS", track_key_job(jk, cfg->redis.prefix, id)};
    struct redisq_sync *s = cf_connect(cfg);
    struct redisq_reply *r = NULL;
    json_t *letters = json_array();
    long long total;
    int rc = CF_ERROR;

    track_key_units(uk, cfg->redis.prefix, id);
    if (s == NULL || (r = cf_cmd(s, 2, zc)) == NULL)
        goto out;
    total = cf_int(r);
    redisq_sync_reply_free(r);
    r = NULL;
    if (total <= 0) {
        /* an empty dlq: an unknown job, or one without dead letters */
        if ((r = cf_cmd(s, 2, ex)) == NULL)
            goto out;
        if (cf_int(r) != 1) {
            fprintf(stderr, "herold: %s: no such job\n", id);
            rc = CF_NOJOB;
            goto out;
        }
    }
    if (!as_json) {
        printf("Job %s: %lld dead letter%s\n", id, total > 0 ? total : 0,
               total == 1 ? "" : "s");
        if (total > 0)
            printf("%-10s %-24s %-8s %8s %5s  %-24s  %s\n", "CHANNEL", "RECIPIENT", "STATE",
                   "ATTEMPTS", "CODE", "DEAD_SINCE", "LAST_ERROR");
    }
    for (long start = 0; start < total; start += CF_PAGE) {
        const char *av[] = {"ZRANGE", dk, a, b, "WITHSCORES"};
        size_t n;

        redisq_sync_reply_free(r);
        snprintf(a, sizeof a, "%ld", start);
        snprintf(b, sizeof b, "%ld", start + CF_PAGE - 1);
        if ((r = cf_cmd(s, 5, av)) == NULL)
            goto out;
        n = redisq_reply_len(r) / 2;
        if (n == 0)
            break;
        if (cf_show_page(s, uk, r, as_json, letters) != 0)
            goto out;
    }
    if (as_json) {
        json_t *o = json_pack("{s:s,s:I,s:O}", "job", id, "count",
                              (json_int_t)json_array_size(letters), "dead_letters", letters);
        cf_print_json(o);
        json_decref(o);
    }
    rc = CF_OK;
out:
    redisq_sync_reply_free(r);
    json_decref(letters);
    redisq_sync_free(s);
    return rc;
}

/* ---- dlq retry / purge ---- */

/* cf_dlq_retry - `dlq retry`: script_dlq_retry, then what happened. */
static int cf_dlq_retry(const struct herold_config *cfg, const char *id, const char *member)
{
    char jk[TRACK_KEY_MAX], uk[TRACK_KEY_MAX], lk[TRACK_KEY_MAX], dk[TRACK_KEY_MAX],
        ik[TRACK_KEY_MAX], ek[TRACK_KEY_MAX], pk[TRACK_KEY_MAX], now[32], ts[40], maxlen[24];
    const char *av[] = {track_key_job(jk, cfg->redis.prefix, id),
                        track_key_units(uk, cfg->redis.prefix, id),
                        track_key_later(lk, cfg->redis.prefix, id),
                        track_key_dlq(dk, cfg->redis.prefix, id),
                        track_key(ik, cfg->redis.prefix, "dlq"),
                        track_key(ek, cfg->redis.prefix, "events"), id, now,
                        track_key(pk, cfg->redis.prefix, "jobs:"), member ? member : "",
                        clock_iso(clock_wall(), ts, sizeof ts), maxlen};
    struct redisq_sync *s = cf_connect(cfg);
    struct redisq_reply *r = NULL;
    const char *verdict;
    long long n, skipped;
    int rc = CF_ERROR;

    /* due now: the daemon takes later-set members due by its own clock */
    snprintf(now, sizeof now, "%.3f", clock_wall());
    snprintf(maxlen, sizeof maxlen, "%ld", cfg->jobs.events_maxlen);
    if (s == NULL || (r = cf_eval(s, &script_dlq_retry, 6, 12, av)) == NULL)
        goto out;
    if (redisq_reply_type(r) == REDISQ_ERROR) {
        rc = cf_refused(id, r);
        goto out;
    }
    if (redisq_reply_type(r) != REDISQ_ARRAY || redisq_reply_len(r) < 3 ||
        (verdict = cf_str(r, 1)) == NULL) {
        fprintf(stderr, "herold: %s: unexpected reply from the dlq_retry script\n", id);
        goto out;
    }
    n = cf_int(redisq_reply_elem(r, 0));
    skipped = cf_int(redisq_reply_elem(r, 2));
    if (strcmp(verdict, "nothing") == 0) {
        fprintf(stderr, "herold: %s: no dead letter%s%s to retry\n", id, member ? " " : "s",
                member ? member : "");
        rc = CF_INVALID;
    } else if (strcmp(verdict, "requeued") == 0) {
        printf("retried %lld dead letter%s of job %s: the finished job is queued again "
               "(entry %s)\n", n, n == 1 ? "" : "s", id, cf_or(cf_str(r, 3)));
        rc = CF_OK;
    } else {
        printf("retried %lld dead letter%s of job %s: the job has not finished, heroldd "
               "picks them up\n", n, n == 1 ? "" : "s", id);
        rc = CF_OK;
    }
    if (skipped > 0)
        printf("skipped %lld: the ledger no longer says dead (herold dlq purge drops them)\n",
               skipped);
out:
    redisq_sync_reply_free(r);
    redisq_sync_free(s);
    return rc;
}

/* cf_dlq_purge - `dlq purge`: script_dlq_purge, then what happened. */
static int cf_dlq_purge(const struct herold_config *cfg, const char *id, const char *member)
{
    char dk[TRACK_KEY_MAX], ik[TRACK_KEY_MAX], jk[TRACK_KEY_MAX], ek[TRACK_KEY_MAX], ts[40],
        maxlen[24];
    const char *av[] = {track_key_dlq(dk, cfg->redis.prefix, id),
                        track_key(ik, cfg->redis.prefix, "dlq"),
                        track_key_job(jk, cfg->redis.prefix, id),
                        track_key(ek, cfg->redis.prefix, "events"), id, member ? member : "",
                        clock_iso(clock_wall(), ts, sizeof ts), maxlen};
    const char *ex[] = {"EXISTS", jk};
    struct redisq_sync *s = cf_connect(cfg);
    struct redisq_reply *r = NULL;
    long long n;
    int rc = CF_ERROR;

    snprintf(maxlen, sizeof maxlen, "%ld", cfg->jobs.events_maxlen);
    if (s == NULL || (r = cf_eval(s, &script_dlq_purge, 4, 8, av)) == NULL)
        goto out;
    if (redisq_reply_type(r) != REDISQ_INT) {
        rc = cf_refused(id, r);
        goto out;
    }
    n = redisq_reply_int(r);
    if (n > 0) {
        printf("purged %lld dead letter%s of job %s (the ledger keeps them as dead)\n", n,
               n == 1 ? "" : "s", id);
        rc = CF_OK;
        goto out;
    }
    /* nothing removed: say whether the job is unknown or just has none */
    redisq_sync_reply_free(r);
    if ((r = cf_cmd(s, 2, ex)) == NULL)
        goto out;
    if (cf_int(r) != 1) {
        fprintf(stderr, "herold: %s: no such job\n", id);
        rc = CF_NOJOB;
    } else {
        fprintf(stderr, "herold: %s: no dead letter%s%s to purge\n", id, member ? " " : "s",
                member ? member : "");
        rc = CF_INVALID;
    }
out:
    redisq_sync_reply_free(r);
    redisq_sync_free(s);
    return rc;
}

/* ---- schedule list ---- */

/* cf_schedule_row - one scheduled job: id, lane, kind and its due time. */
static json_t *cf_schedule_row(struct redisq_sync *s, const char *prefix, const char *id,
                               const char *score)
{
    char jk[TRACK_KEY_MAX], ts[40];
    const char *hm[] = {"HMGET", track_key_job(jk, prefix, id), "lane", "kind"};
    struct redisq_reply *h = cf_cmd(s, 4, hm);
    json_t *row;

    if (h == NULL)
        return NULL;
    row = json_pack("{s:s,s:s?,s:s?,s:s}", "id", id, "lane", cf_str(h, 0), "kind",
                    cf_str(h, 1), "send_at", cf_iso(score, ts, sizeof ts));
    redisq_sync_reply_free(h);
    return row;
}

/* cf_schedule_list - `schedule list`: parked jobs, earliest first. */
static int cf_schedule_list(const struct herold_config *cfg, bool as_json)
{
    struct redisq_sync *s = cf_connect(cfg);
    json_t *rows = json_array(), *row;
    char sk[TRACK_KEY_MAX];
    int rc = CF_ERROR;
    size_t i;

    if (s == NULL || cf_zset_rows(s, cfg->redis.prefix, "ZRANGE",
                                  track_key(sk, cfg->redis.prefix, "scheduled"),
                                  cf_schedule_row, rows) != 0)
        goto out;
    if (as_json) {
        cf_print_json(rows);
    } else if (json_array_size(rows) == 0) {
        printf("no scheduled jobs\n");
    } else {
        printf("%-24s %-7s %-13s %s\n", "JOB", "LANE", "KIND", "SEND_AT");
        json_array_foreach(rows, i, row)
            printf("%-24s %-7s %-13s %s\n", json_string_value(json_object_get(row, "id")),
                   cf_or(json_string_value(json_object_get(row, "lane"))),
                   cf_or(json_string_value(json_object_get(row, "kind"))),
                   json_string_value(json_object_get(row, "send_at")));
    }
    rc = CF_OK;
out:
    json_decref(rows);
    redisq_sync_free(s);
    return rc;
}

/* ---- cancel ---- */

/* cf_cancel - `cancel`: script_cancel, then what happened. */
static int cf_cancel(const struct herold_config *cfg, const char *id)
{
    char jk[TRACK_KEY_MAX], sk[TRACK_KEY_MAX], ek[TRACK_KEY_MAX], ts[40], ttl[24], maxlen[24];
    const char *av[] = {track_key_job(jk, cfg->redis.prefix, id),
                        track_key(sk, cfg->redis.prefix, "scheduled"),
                        track_key(ek, cfg->redis.prefix, "events"), id,
                        clock_iso(clock_wall(), ts, sizeof ts), ttl, maxlen};
    struct redisq_sync *s = cf_connect(cfg);
    struct redisq_reply *r = NULL;
    const char *verdict;
    int rc = CF_ERROR;

    snprintf(ttl, sizeof ttl, "%ld", cfg->jobs.retention_days * 86400L);
    snprintf(maxlen, sizeof maxlen, "%ld", cfg->jobs.events_maxlen);
    if (s == NULL || (r = cf_eval(s, &script_cancel, 3, 7, av)) == NULL)
        goto out;
    if (redisq_reply_type(r) != REDISQ_ARRAY || (verdict = cf_str(r, 0)) == NULL) {
        rc = cf_refused(id, r);
        goto out;
    }
    if (strcmp(verdict, "unscheduled") == 0) {
        printf("cancelled (was scheduled)\n");
        rc = CF_OK;
    } else if (strcmp(verdict, "cancelling") == 0) {
        printf("cancelling: the running fan-out stops and records the rest as cancelled\n");
        rc = CF_OK;
    } else if (strcmp(verdict, "final") == 0) {
        fprintf(stderr, "herold: %s: already finished (%s), nothing to cancel\n", id,
                cf_or(cf_str(r, 1)));
        rc = CF_INVALID;
    } else {
        fprintf(stderr, "herold: %s: no such job\n", id);
        rc = CF_NOJOB;
    }
out:
    redisq_sync_reply_free(r);
    redisq_sync_free(s);
    return rc;
}

/* ---- dispatch ---- */

/* cf_json_flag - argv[i..argc-1] is empty or exactly "--json" (*as_json);
 * false for anything else. */
static bool cf_json_flag(int argc, char **argv, int i, bool *as_json)
{
    *as_json = i < argc && strcmp(argv[i], "--json") == 0;
    return argc == i + (*as_json ? 1 : 0);
}

int cli_flow_main(const struct herold_config *cfg, int argc, char **argv)
{
    const char *cmd = argv[0], *sub = argc > 1 ? argv[1] : "";
    bool as_json;

    if (strcmp(cmd, "cancel") == 0) {
        if (argc != 2 || argv[1][0] == '-') {
            fprintf(stderr, "herold: usage: cancel JOB_ID\n");
            return CF_USAGE;
        }
        return cf_id_ok(argv[1]) ? cf_cancel(cfg, argv[1]) : CF_INVALID;
    }
    if (strcmp(cmd, "schedule") == 0) {
        if (strcmp(sub, "list") != 0 || !cf_json_flag(argc, argv, 2, &as_json)) {
            fprintf(stderr, "herold: usage: schedule list [--json]\n");
            return CF_USAGE;
        }
        return cf_schedule_list(cfg, as_json);
    }
    if (strcmp(cmd, "dlq") == 0) {
        if (strcmp(sub, "list") == 0 && cf_json_flag(argc, argv, 2, &as_json))
            return cf_dlq_list(cfg, as_json);
        if (strcmp(sub, "show") == 0 && argc >= 3 && argv[2][0] != '-' &&
            cf_json_flag(argc, argv, 3, &as_json))
            return cf_id_ok(argv[2]) ? cf_dlq_show(cfg, argv[2], as_json) : CF_INVALID;
        if ((strcmp(sub, "retry") == 0 || strcmp(sub, "purge") == 0) &&
            (argc == 3 || argc == 4) && argv[2][0] != '-') {
            const char *member = argc == 4 ? argv[3] : NULL;
            if (!cf_id_ok(argv[2]) || (member != NULL && !cf_member_ok(member)))
                return CF_INVALID;
            return strcmp(sub, "retry") == 0 ? cf_dlq_retry(cfg, argv[2], member)
                                             : cf_dlq_purge(cfg, argv[2], member);
        }
        fprintf(stderr, "herold: usage: dlq list [--json] | dlq show JOB_ID [--json] |\n"
                        "       dlq retry|purge JOB_ID [CHANNEL:RECIPIENT]\n");
        return CF_USAGE;
    }
    cli_flow_usage(stderr);
    return CF_USAGE;
}
