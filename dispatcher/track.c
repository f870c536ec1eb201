/*
 * track - key names, ledger value encoding, and the status report.
 *
 * The status report reads the job record and pages through the ledger with
 * HSCAN (never HGETALL on a ledger of unknown size), on the CLI's blocking
 * connection.  It reports recipient ids and channels, never contact points.
 */
#include "track.h"

#include <ctype.h>
#include <openssl/sha.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const track_lane_names[LANE_COUNT] = {"urgent", "normal", "bulk"};
const char *const track_state_names[] = {"accepted", "sending", "retry", "deferred", "sent",
                                         "failed", "suppressed", "expired", "dead",
                                         "cancelled"};

int track_lane_from_name(const char *name)
{
    for (int i = 0; i < LANE_COUNT; i++)
        if (strcmp(name, track_lane_names[i]) == 0)
            return i;
    return -1;
}

const char *track_key(char *buf, const char *prefix, const char *name)
{
    snprintf(buf, TRACK_KEY_MAX, "%s%s", prefix, name);
    return buf;
}

const char *track_key_lane(char *buf, const char *prefix, enum track_lane lane)
{
    snprintf(buf, TRACK_KEY_MAX, "%sjobs:%s", prefix, track_lane_names[lane]);
    return buf;
}

const char *track_key_job(char *buf, const char *prefix, const char *job_id)
{
    snprintf(buf, TRACK_KEY_MAX, "%sjob:%s", prefix, job_id);
    return buf;
}

const char *track_key_later(char *buf, const char *prefix, const char *job_id)
{
    snprintf(buf, TRACK_KEY_MAX, "%sjob:%s:later", prefix, job_id);
    return buf;
}

const char *track_key_dlq(char *buf, const char *prefix, const char *job_id)
{
    snprintf(buf, TRACK_KEY_MAX, "%sjob:%s:dlq", prefix, job_id);
    return buf;
}

const char *track_key_aud(char *buf, const char *prefix, const char *job_id)
{
    snprintf(buf, TRACK_KEY_MAX, "%sjob:%s:aud", prefix, job_id);
    return buf;
}

const char *track_key_units(char *buf, const char *prefix, const char *job_id)
{
    snprintf(buf, TRACK_KEY_MAX, "%sjob:%s:units", prefix, job_id);
    return buf;
}

const char *track_unit_value(char *buf, size_t size, enum unit_state s, int attempts,
                             int code, const char *reason)
{
    int n = snprintf(buf, size, "%s|%d|%d|", track_state_names[s], attempts, code);

    if (n < 0 || (size_t)n >= size)
        return buf;
    for (const char *p = reason ? reason : ""; *p && (size_t)n + 1 < size; p++)
        buf[n++] = *p == '|' ? '/' : ((unsigned char)*p < 0x20 ? ' ' : *p);
    buf[n] = '\0';
    return buf;
}

int track_unit_parse(const char *v, size_t len, enum unit_state *s, int *attempts)
{
    const char *bar = memchr(v, '|', len);
    size_t n;

    if (bar == NULL)
        return -1;
    n = (size_t)(bar - v);
    for (int i = UNIT_SENDING; i <= UNIT_CANCELLED; i++) {
        if (strlen(track_state_names[i]) == n && memcmp(v, track_state_names[i], n) == 0) {
            *s = (enum unit_state)i;
            *attempts = atoi(bar + 1);
            return 0;
        }
    }
    return -1;
}

const char *track_contact_field(char *out, const char *kind, const char *addr)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[SHA256_DIGEST_LENGTH];
    char low[256];
    size_t n = strlen(addr), k;

    if (n >= sizeof low)
        n = sizeof low - 1;
    for (size_t i = 0; i < n; i++)
        low[i] = (char)tolower((unsigned char)addr[i]);
    SHA256((const unsigned char *)low, n, md);
    k = (size_t)snprintf(out, TRACK_CONTACT_MAX, "%.8s:", kind);
    for (int i = 0; i < 16 && k + 2 < TRACK_CONTACT_MAX; i++) {
        out[k++] = hex[md[i] >> 4];
        out[k++] = hex[md[i] & 15];
    }
    out[k] = '\0';
    return out;
}

/* track_status_counts - fold "c:<channel>:<status>" fields into counts. */
static void track_status_counts(json_t *counts, const char *field, long long v)
{
    char ch[64];
    const char *colon;
    json_t *o;

    if (strncmp(field, "c:", 2) != 0)
        return;
    colon = strrchr(field + 2, ':');
    if (colon == NULL || (size_t)(colon - field - 2) >= sizeof ch)
        return;
    memcpy(ch, field + 2, (size_t)(colon - field - 2));
    ch[colon - field - 2] = '\0';
    o = json_object_get(counts, ch);
    if (o == NULL) {
        o = json_pack("{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i}", "sent", 0, "failed", 0,
                      "suppressed", 0, "expired", 0, "dead", 0, "cancelled", 0, "retries", 0,
                      "in_doubt", 0);
        json_object_set_new(counts, ch, o);
    }
    json_object_set_new(o, colon + 1, json_integer(v));
}

/* track_status_unit - add one ledger entry to the failure list if it is
 * not (yet) sent. */
static void track_status_unit(json_t *fails, const char *field, const char *val,
                              size_t max)
{
    char state[16] = "", reason[160] = "";
    int attempts = 0, code = 0;
    const char *colon = strchr(field, ':');
    json_t *f;

    if (json_array_size(fails) >= max || colon == NULL)
        return;
    if (sscanf(val, "%15[a-z]|%d|%d|%159[^\n]", state, &attempts, &code, reason) < 3)
        return;
    if (strcmp(state, "sent") == 0)
        return;
    f = json_pack("{s:s%,s:s,s:s,s:i,s:i,s:s}", "channel", field, (size_t)(colon - field),
                  "recipient", colon + 1, "state", state, "attempts", attempts, "code", code,
                  "reason", reason);
    json_array_append_new(fails, f);
}

json_t *track_status(struct redisq_sync *s, const char *prefix, const char *job_id,
                     size_t max_failures, struct herr *err)
{
    char jk[TRACK_KEY_MAX], uk[TRACK_KEY_MAX], cursor[32] = "0";
    const char *argv[6];
    struct redisq_reply *r;
    json_t *out = NULL, *counts = json_object(), *fails = json_array();

    argv[0] = "HGETALL";
    argv[1] = track_key_job(jk, prefix, job_id);
    r = redisq_sync_argv(s, 2, argv, NULL, err);
    if (r == NULL)
        goto fail;
    if (redisq_reply_type(r) != REDISQ_ARRAY || redisq_reply_len(r) == 0) {
        redisq_sync_reply_free(r);
        herr_set(err, HERR_INPUT, NULL, "no such job");
        goto fail;
    }
    out = json_object();
    for (size_t i = 0; i + 1 < redisq_reply_len(r); i += 2) {
        const char *k = redisq_reply_str(redisq_reply_elem(r, i), NULL);
        const char *v = redisq_reply_str(redisq_reply_elem(r, i + 1), NULL);
        if (strncmp(k, "c:", 2) == 0)
            track_status_counts(counts, k, strtoll(v, NULL, 10));
        else if (strcmp(k, "units") == 0)
            json_object_set_new(out, k, json_integer(strtoll(v, NULL, 10)));
        else if (strcmp(k, "payload") == 0)
            json_object_set_new(out, "payload_kept", json_true());   /* personal data */
        else
            json_object_set_new(out, k, json_string(v));
    }
    redisq_sync_reply_free(r);
    do {
        argv[0] = "HSCAN";
        argv[1] = track_key_units(uk, prefix, job_id);
        argv[2] = cursor;
        argv[3] = "COUNT";
        argv[4] = "1000";
        r = redisq_sync_argv(s, 5, argv, NULL, err);
        if (r == NULL)
            goto fail;
        if (redisq_reply_type(r) != REDISQ_ARRAY || redisq_reply_len(r) != 2) {
            redisq_sync_reply_free(r);
            break;
        }
        snprintf(cursor, sizeof cursor, "%s", redisq_reply_str(redisq_reply_elem(r, 0), NULL));
        const struct redisq_reply *kv = redisq_reply_elem(r, 1);
        for (size_t i = 0; i + 1 < redisq_reply_len(kv); i += 2)
            track_status_unit(fails, redisq_reply_str(redisq_reply_elem(kv, i), NULL),
                              redisq_reply_str(redisq_reply_elem(kv, i + 1), NULL),
                              max_failures);
        redisq_sync_reply_free(r);
        /* the counters come from the job record; the scan only fills the
         * failure list, so a million-unit ledger is not read to the end */
    } while (strcmp(cursor, "0") != 0 && json_array_size(fails) < max_failures);
    json_object_set_new(out, "counts", counts);
    json_object_set_new(out, "failures", fails);
    return out;
fail:
    json_decref(out);
    json_decref(counts);
    json_decref(fails);
    return NULL;
}
