/*
 * citizen - the citizen record, topics and consent (docs/citizens.md):
 * validation, the atomic write script, double opt-in and unsubscribe
 * tokens, the Art. 15 export and the Art. 17 erasure.
 *
 * Owns the Lua that writes a citizen (script_put, built once from its
 * body and script_enqueue's own source, so the opt-in message is queued
 * by exactly the code `herold enqueue` uses, inside the same atomic
 * step), the confirm and unsubscribe scripts, and the stream purge.
 *
 * It must never put a contact point, a token or a secret into an error
 * message or a log line: errors name fields.  Only the export returns
 * contact points, to the caller, because that is its purpose.
 */
#include "citizen.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "alloc.h"
#include "clock.h"
#include "contact.h"
#include "job.h"
#include "scripts.h"
#include "track.h"
#include "tz.h"

#define CZ_KEY_MAX 512
#define CZ_PUSH_MAX 16
#define CZ_SCAN_COUNT "1000"

static const char *const cz_channels[] = {"email", "sms", "push", "webhook"};
#define CZ_NCHANNELS (sizeof cz_channels / sizeof cz_channels[0])

/* ======================================================================
 * syntax
 * ====================================================================== */

bool citizen_id_ok(const char *id)
{
    size_t n = 0;

    if (id == NULL)
        return false;
    for (; id[n]; n++) {
        unsigned char c = (unsigned char)id[n];
        if (!(isalnum(c) || c == '.' || c == '_' || c == ':' || c == '-') || c > 127)
            return false;
    }
    return n >= 1 && n <= CITIZEN_ID_MAX;
}

bool citizen_topic_ok(const char *t)
{
    size_t n = 0;

    if (t == NULL)
        return false;
    for (; t[n]; n++) {
        char c = t[n];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && !(n > 0 && (c == '_' || c == '-')))
            return false;
    }
    return n >= 1 && n <= 64;
}

bool citizen_channel_ok(const char *ch)
{
    for (size_t i = 0; ch != NULL && i < CZ_NCHANNELS; i++)
        if (strcmp(ch, cz_channels[i]) == 0)
            return true;
    return false;
}

/* cz_channel_index - index of ch in cz_channels, -1 if none. */
static int cz_channel_index(const char *ch, size_t len)
{
    for (size_t i = 0; i < CZ_NCHANNELS; i++)
        if (strlen(cz_channels[i]) == len && memcmp(cz_channels[i], ch, len) == 0)
            return (int)i;
    return -1;
}

/* cz_lang_ok - a language tag as in jobs: 2-3 lowercase letters, then
 * subtags of 1-8 letters or digits (a one-letter subtag is followed by
 * another), at most 35 characters. */
static bool cz_lang_ok(const char *s)
{
    size_t n = strlen(s), i = 0, len;
    bool single = false;

    if (n > 35)
        return false;
    while (i < n && s[i] >= 'a' && s[i] <= 'z')
        i++;
    if (i < 2 || i > 3)
        return false;
    while (i < n) {
        if (s[i] != '-')
            return false;
        i++;
        len = 0;
        while (i < n && (isalnum((unsigned char)s[i])))
            i++, len++;
        if (len < 1 || len > 8)
            return false;
        single = len == 1;
    }
    return !single;
}

/* cz_text_version_ok - 1-64 printable ASCII characters, no blank at
 * either end. */
static bool cz_text_version_ok(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > 64 || s[0] == ' ' || s[n - 1] == ' ')
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

/* cz_channels_norm - "email,sms" into its canonical order (email, sms,
 * push, webhook) in out; -1 on an unknown, duplicate or empty entry. */
static int cz_channels_norm(const char *in, char *out, size_t size)
{
    bool seen[CZ_NCHANNELS] = {false};
    const char *p = in;
    size_t k = 0;

    if (*in == '\0')
        return -1;
    for (;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        int i = cz_channel_index(p, len);
        if (i < 0 || seen[i])
            return -1;
        seen[i] = true;
        if (e == NULL)
            break;
        p = e + 1;
    }
    out[0] = '\0';
    for (size_t i = 0; i < CZ_NCHANNELS; i++)
        if (seen[i]) {
            int n = snprintf(out + k, size - k, "%s%s", k ? "," : "", cz_channels[i]);
            if (n < 0 || (size_t)n >= size - k)
                return -1;
            k += (size_t)n;
        }
    return 0;
}

/* cz_push_norm - validate a push array (docs/citizens.md) and return it
 * as compact JSON with "state" filled in ("active"), or NULL with err.
 * "" and "[]" come back as "". */
static char *cz_push_norm(const char *txt, struct herr *err)
{
    static const char *const platforms[] = {"fcm", "apns", "webpush"};
    json_t *root = NULL, *out = NULL, *o;
    char *res = NULL;
    size_t i;

    if (*txt == '\0')
        return herold_strdup("");
    root = json_loads(txt, JSON_REJECT_DUPLICATES, NULL);
    if (root == NULL || !json_is_array(root)) {
        herr_set(err, HERR_INPUT, "push",
                 "expected a JSON array of {\"platform\", \"token\", \"state\"}");
        goto out;
    }
    if (json_array_size(root) > CZ_PUSH_MAX) {
        herr_set(err, HERR_INPUT, "push", "at most %d push tokens", CZ_PUSH_MAX);
        goto out;
    }
    out = json_array();
    json_array_foreach(root, i, o) {
        char path[64];
        const char *key, *pf, *tok, *st = "active", *why = NULL;
        json_t *v;
        bool pf_ok = false;

        snprintf(path, sizeof path, "push[%zu]", i);
        if (!json_is_object(o)) {
            herr_set(err, HERR_INPUT, path, "expected an object");
            goto out;
        }
        json_object_foreach(o, key, v) {
            if (strcmp(key, "platform") && strcmp(key, "token") && strcmp(key, "state")) {
                snprintf(path, sizeof path, "push[%zu]", i);
                herr_set(err, HERR_INPUT, path, "unknown field (platform, token, state)");
                goto out;
            }
        }
        pf = json_string_value(json_object_get(o, "platform"));
        tok = json_string_value(json_object_get(o, "token"));
        for (size_t k = 0; pf && k < 3; k++)
            pf_ok |= strcmp(pf, platforms[k]) == 0;
        if (!pf_ok) {
            snprintf(path, sizeof path, "push[%zu].platform", i);
            herr_set(err, HERR_INPUT, path, "expected fcm, apns or webpush");
            goto out;
        }
        if (tok == NULL || !contact_push_ok(pf, tok, &why)) {
            snprintf(path, sizeof path, "push[%zu].token", i);
            herr_set(err, HERR_INPUT, path, "expected a %s push token%s%s", pf,
                     why ? ": " : "", why ? why : "");
            goto out;
        }
        if ((v = json_object_get(o, "state")) != NULL) {
            st = json_string_value(v);
            if (st == NULL || (strcmp(st, "active") && strcmp(st, "dead"))) {
                snprintf(path, sizeof path, "push[%zu].state", i);
                herr_set(err, HERR_INPUT, path, "expected active or dead");
                goto out;
            }
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp(tok, json_string_value(json_object_get(json_array_get(root, k),
                                                              "token"))) == 0) {
                snprintf(path, sizeof path, "push[%zu].token", i);
                herr_set(err, HERR_INPUT, path, "the same token is listed twice");
                goto out;
            }
        json_array_append_new(out, json_pack("{s:s,s:s,s:s}", "platform", pf, "token", tok,
                                             "state", st));
    }
    if (json_array_size(out) == 0) {
        res = herold_strdup("");
    } else {
        char *d = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER);
        res = d ? herold_strdup(d) : NULL;
        free(d);
    }
    if (res == NULL)
        herr_set(err, HERR_RESOURCE, "push", "out of memory");
out:
    json_decref(root);
    json_decref(out);
    return res;
}

/* cz_time_ok - an RFC 3339 time not after now + 5 minutes; *t gets it. */
static bool cz_time_ok(const char *s, double *t)
{
    return job_parse_time(s, t) == 0 && *t <= (double)time(NULL) + 300;
}

int citizen_validate(const struct citizen_in *in, struct herr *err)
{
    char path[64], buf[64];
    const char *why = NULL;

    herr_clear(err);
    if (in == NULL || !citizen_id_ok(in->id))
        return herr_set(err, HERR_INPUT, "id",
                        "expected 1-64 characters of A-Z a-z 0-9 . _ : -");
    if (in->email && *in->email && !contact_email_ok(in->email, &why))
        return herr_set(err, HERR_INPUT, "email", "expected an e-mail address%s%s",
                        why ? ": " : "", why ? why : "");
    if (in->phone && *in->phone && !contact_phone_ok(in->phone, NULL, &why))
        return herr_set(err, HERR_INPUT, "phone",
                        "expected an E.164 number such as +4915112345678%s%s",
                        why ? ": " : "", why ? why : "");
    if (in->lang && *in->lang && !cz_lang_ok(in->lang))
        return herr_set(err, HERR_INPUT, "lang",
                        "expected a language tag such as de, en or de-x-ls");
    if (in->tz && *in->tz) {
        struct herr e2;
        if (tz_get(in->tz, &e2) == NULL)
            return herr_set(err, e2.kind == HERR_INPUT ? HERR_INPUT : e2.kind, "tz",
                            "expected an IANA time zone such as Europe/Berlin");
    }
    if (in->quiet && *in->quiet) {
        struct quiet q;
        if (quiet_parse(in->quiet, &q) != 0)
            return herr_set(err, HERR_INPUT, "quiet",
                            "expected quiet hours HH:MM-HH:MM with different start and end, "
                            "e.g. 22:00-07:00");
    }
    if (in->push_json) {
        char *p = cz_push_norm(in->push_json, err);
        if (p == NULL)
            return -1;
        herold_free(p);
    }
    if (in->ntopics > CITIZEN_MAX_TOPICS)
        return herr_set(err, HERR_INPUT, "topics", "at most %d topics", CITIZEN_MAX_TOPICS);
    if (in->ndrop > CITIZEN_MAX_TOPICS)
        return herr_set(err, HERR_INPUT, "drop_topics", "at most %d topics",
                        CITIZEN_MAX_TOPICS);
    if (in->nconsents > CITIZEN_MAX_CONSENTS)
        return herr_set(err, HERR_INPUT, "consents", "at most %d consents",
                        CITIZEN_MAX_CONSENTS);
    if (in->nwithdraw > CITIZEN_MAX_CONSENTS)
        return herr_set(err, HERR_INPUT, "withdraw", "at most %d channels",
                        CITIZEN_MAX_CONSENTS);
    for (size_t i = 0; i < in->ntopics; i++) {
        const struct citizen_topic_in *t = &in->topics[i];
        snprintf(path, sizeof path, "topics[%zu].topic", i);
        if (!citizen_topic_ok(t->topic))
            return herr_set(err, HERR_INPUT, path,
                            "expected 1-64 characters of a-z 0-9 _ -, starting with a "
                            "letter or digit");
        if (strcmp(t->topic, "all") == 0)
            return herr_set(err, HERR_INPUT, path,
                            "\"all\" is reserved (it means every topic when unsubscribing)");
        for (size_t k = 0; k < i; k++)
            if (strcmp(in->topics[k].topic, t->topic) == 0)
                return herr_set(err, HERR_INPUT, path, "topic given twice");
        for (size_t k = 0; k < in->ndrop; k++)
            if (in->drop_topics[k] && strcmp(in->drop_topics[k], t->topic) == 0)
                return herr_set(err, HERR_INPUT, path,
                                "topic both subscribed and dropped");
        snprintf(path, sizeof path, "topics[%zu].channels", i);
        if (t->channels == NULL || cz_channels_norm(t->channels, buf, sizeof buf) != 0)
            return herr_set(err, HERR_INPUT, path,
                            "expected distinct channels of email, sms, push, webhook, "
                            "comma-separated");
    }
    for (size_t i = 0; i < in->ndrop; i++) {
        snprintf(path, sizeof path, "drop_topics[%zu]", i);
        if (!citizen_topic_ok(in->drop_topics[i]))
            return herr_set(err, HERR_INPUT, path,
                            "expected 1-64 characters of a-z 0-9 _ -, starting with a "
                            "letter or digit");
        for (size_t k = 0; k < i; k++)
            if (strcmp(in->drop_topics[k], in->drop_topics[i]) == 0)
                return herr_set(err, HERR_INPUT, path, "topic given twice");
    }
    for (size_t i = 0; i < in->nconsents; i++) {
        const struct citizen_consent_in *c = &in->consents[i];
        double given = 0, confirmed = 0;

        snprintf(path, sizeof path, "consents[%zu].channel", i);
        if (!citizen_channel_ok(c->channel))
            return herr_set(err, HERR_INPUT, path, "expected email, sms, push or webhook");
        for (size_t k = 0; k < i; k++)
            if (strcmp(in->consents[k].channel, c->channel) == 0)
                return herr_set(err, HERR_INPUT, path, "channel given twice");
        for (size_t k = 0; k < in->nwithdraw; k++)
            if (in->withdraw[k] && strcmp(in->withdraw[k], c->channel) == 0)
                return herr_set(err, HERR_INPUT, path,
                                "consent both given and withdrawn");
        snprintf(path, sizeof path, "consents[%zu].method", i);
        if (c->method == NULL ||
            (strcmp(c->method, "form") && strcmp(c->method, "letter") &&
             strcmp(c->method, "counter") && strcmp(c->method, "import")))
            return herr_set(err, HERR_INPUT, path,
                            "expected form, letter, counter or import");
        snprintf(path, sizeof path, "consents[%zu].text_version", i);
        if (c->text_version == NULL || !cz_text_version_ok(c->text_version))
            return herr_set(err, HERR_INPUT, path,
                            "expected the version of the consent text shown: 1-64 printable "
                            "characters, e.g. 2026-01");
        snprintf(path, sizeof path, "consents[%zu].given_at", i);
        if (c->given_at && !cz_time_ok(c->given_at, &given))
            return herr_set(err, HERR_INPUT, path,
                            "expected an RFC 3339 time, not in the future");
        snprintf(path, sizeof path, "consents[%zu].confirmed_at", i);
        if (c->confirmed_at) {
            if (strcmp(c->method, "import") != 0)
                return herr_set(err, HERR_INPUT, path,
                                "only for method import (herold confirms the others itself)");
            if (!cz_time_ok(c->confirmed_at, &confirmed))
                return herr_set(err, HERR_INPUT, path,
                                "expected an RFC 3339 time, not in the future");
            if (c->given_at && confirmed < given)
                return herr_set(err, HERR_INPUT, path, "earlier than given_at");
        }
    }
    for (size_t i = 0; i < in->nwithdraw; i++) {
        snprintf(path, sizeof path, "withdraw[%zu]", i);
        if (!citizen_channel_ok(in->withdraw[i]))
            return herr_set(err, HERR_INPUT, path, "expected email, sms, push or webhook");
        for (size_t k = 0; k < i; k++)
            if (strcmp(in->withdraw[k], in->withdraw[i]) == 0)
                return herr_set(err, HERR_INPUT, path, "channel given twice");
    }
    return 0;
}

/* ======================================================================
 * Redis helpers
 * ====================================================================== */

/* cz_cmdv - one command; an error reply becomes err (HERR_TRANSIENT). */
static struct redisq_reply *cz_cmdv(struct redisq_sync *s, struct herr *err, int argc,
                                    const char **argv, const size_t *lens)
{
    struct redisq_reply *r = redisq_sync_argv(s, argc, argv, lens, err);

    if (r != NULL && redisq_reply_type(r) == REDISQ_ERROR) {
        herr_set(err, HERR_TRANSIENT, NULL, "Redis: %.200s", redisq_reply_str(r, NULL));
        redisq_sync_reply_free(r);
        return NULL;
    }
    return r;
}

#define CZ_ARGS(...) (const char *[]){__VA_ARGS__}
#define CZ_NARGS(...) ((int)(sizeof(CZ_ARGS(__VA_ARGS__)) / sizeof(const char *)))
#define CZ_CMD(s, err, ...) cz_cmdv((s), (err), CZ_NARGS(__VA_ARGS__), CZ_ARGS(__VA_ARGS__), NULL)

/* cz_eval - run script; an error reply becomes err. */
static struct redisq_reply *cz_eval(struct redisq_sync *s, const struct redisq_script *sc,
                                    int nkeys, int argc, const char **argv, struct herr *err)
{
    struct redisq_reply *r = redisq_sync_eval(s, sc, nkeys, argc, argv, NULL, err);

    if (r != NULL && redisq_reply_type(r) == REDISQ_ERROR) {
        herr_set(err, HERR_TRANSIENT, NULL, "Redis refused the %s script: %.160s", sc->name,
                 redisq_reply_str(r, NULL));
        redisq_sync_reply_free(r);
        return NULL;
    }
    return r;
}

/* cz_key - "<prefix><a><b>" into buf (CZ_KEY_MAX). */
static const char *cz_key(char *buf, const struct herold_config *cfg, const char *a,
                          const char *b)
{
    snprintf(buf, CZ_KEY_MAX, "%s%s%s", cfg->redis.prefix, a, b ? b : "");
    return buf;
}

/* cz_glob - prefix with SCAN glob characters escaped, then suffix. */
static const char *cz_glob(char *buf, const char *prefix, const char *suffix)
{
    size_t k = 0;

    for (const char *p = prefix; *p && k + 3 < CZ_KEY_MAX; p++) {
        if (strchr("*?[]\\", *p))
            buf[k++] = '\\';
        buf[k++] = *p;
    }
    snprintf(buf + k, CZ_KEY_MAX - k, "%s", suffix);
    return buf;
}

typedef int cz_key_fn(struct redisq_sync *s, const char *key, void *arg, struct herr *err);

/* cz_scan - call fn for every key matching pattern (SCAN ... COUNT 1000;
 * a key may come twice, so fn must be idempotent). */
static int cz_scan(struct redisq_sync *s, const char *pattern, cz_key_fn *fn, void *arg,
                   struct herr *err)
{
    char cursor[32] = "0";

    do {
        struct redisq_reply *r = CZ_CMD(s, err, "SCAN", cursor, "MATCH", pattern, "COUNT",
                                        CZ_SCAN_COUNT);
        const struct redisq_reply *keys;
        if (r == NULL)
            return -1;
        if (redisq_reply_type(r) != REDISQ_ARRAY || redisq_reply_len(r) != 2) {
            redisq_sync_reply_free(r);
            return herr_set(err, HERR_TRANSIENT, NULL, "Redis: unexpected SCAN reply");
        }
        snprintf(cursor, sizeof cursor, "%s", redisq_reply_str(redisq_reply_elem(r, 0), NULL));
        keys = redisq_reply_elem(r, 1);
        for (size_t i = 0; i < redisq_reply_len(keys); i++)
            if (fn(s, redisq_reply_str(redisq_reply_elem(keys, i), NULL), arg, err) != 0) {
                redisq_sync_reply_free(r);
                return -1;
            }
        redisq_sync_reply_free(r);
    } while (strcmp(cursor, "0") != 0);
    return 0;
}

/* cz_hgetall - the hash at key as a JSON object of strings (empty when
 * the key does not exist), or NULL with err. */
static json_t *cz_hgetall(struct redisq_sync *s, const char *key, struct herr *err)
{
    struct redisq_reply *r = CZ_CMD(s, err, "HGETALL", key);
    json_t *o;

    if (r == NULL)
        return NULL;
    o = json_object();
    for (size_t i = 0; i + 1 < redisq_reply_len(r); i += 2) {
        size_t vl;
        const char *v = redisq_reply_str(redisq_reply_elem(r, i + 1), &vl);
        json_object_set_new(o, redisq_reply_str(redisq_reply_elem(r, i), NULL),
                            json_stringn(v, vl));
    }
    redisq_sync_reply_free(r);
    return o;
}

/* ======================================================================
 * tokens
 * ====================================================================== */

/* cz_hex - n bytes as lowercase hex into out (2n+1). */
static void cz_hex(const unsigned char *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* cz_b64url - n bytes as unpadded base64url into out (4n/3+4). */
static void cz_b64url(const unsigned char *in, size_t n, char *out)
{
    static const char al[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t k = 0, i = 0;

    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[k++] = al[v >> 18 & 63];
        out[k++] = al[v >> 12 & 63];
        out[k++] = al[v >> 6 & 63];
        out[k++] = al[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[k++] = al[v >> 18 & 63];
        out[k++] = al[v >> 12 & 63];
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[k++] = al[v >> 18 & 63];
        out[k++] = al[v >> 12 & 63];
        out[k++] = al[v >> 6 & 63];
    }
    out[k] = '\0';
}

/* cz_sha256_hex - SHA-256 of s as 64 hex digits into out (65). */
static int cz_sha256_hex(const char *s, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    if (EVP_Digest(s, strlen(s), md, &n, EVP_sha256(), NULL) != 1 || n != 32)
        return -1;
    cz_hex(md, 32, out);
    return 0;
}

void citizen_unsubscribe_mac(const unsigned char *key, size_t keylen, const char *id,
                             const char *topic, char out[25])
{
    unsigned char mac[EVP_MAX_MD_SIZE], in[CITIZEN_ID_MAX + 70];
    unsigned int maclen = 0;
    int n = snprintf((char *)in, sizeof in, "%s%c%s", id, 0, topic);

    if (n < 0 || (size_t)n >= sizeof in)
        n = (int)sizeof in - 1;
    HMAC(EVP_sha256(), key, (int)keylen, in, (size_t)n, mac, &maclen);
    cz_hex(mac, 12, out);
    OPENSSL_cleanse(mac, sizeof mac);
}

char *citizen_unsubscribe_key(const struct herold_config *cfg, struct herr *err)
{
    const char *ref;

    if (cfg->citizens.unsubscribe_key != NULL)
        return herold_strdup(cfg->citizens.unsubscribe_key);
    ref = json_string_value(json_object_get(
        json_object_get(json_object_get(cfg->channels, "email"), "unsubscribe"), "key"));
    if (ref == NULL) {
        herr_set(err, HERR_INPUT, "citizens.unsubscribe_key",
                 "no key to check unsubscribe tokens: set citizens.unsubscribe_key or "
                 "channels.email.unsubscribe.key");
        return NULL;
    }
    return config_secret(ref, "channels.email.unsubscribe.key", err);
}

/* ======================================================================
 * citizen_put
 * ====================================================================== */

/* The write script, appended to script_enqueue's source wrapped as a
 * function (cz_put_script builds it).  Two phases: everything is decided
 * from the record as it is (no writes), then written at once, so a refusal
 * (exists, missing, no address for the opt-in) leaves Redis untouched.
 *
 * KEYS: 1 citizen hash, 2 history, 3 citizens zset, 4 topics set, 5 the
 * normal lane stream, 6 the opt-in job's hash, 7 the opt-in key, then one
 * topic zset per input topic, then one per dropped topic.
 * ARGV: 1 mode (add|update|upsert), 2 id, 3 now, 4 input JSON, 5 token,
 * 6 opt-in key suffix (SHA-256 hex of the token), 7 its expiry (RFC 3339,
 * compared as text with now: same format), 8 its TTL seconds, 9 opt-in
 * job id, 10 template, 11 confirm URL with the token ("" none), 12 hours,
 * 13 job retention seconds, 14 sender name for the message ("" none).
 * Returns {"ok", created, changed, optins} or {"exists"}, {"missing"},
 * {"noemail"}. */
static const char cz_put_body[] =
    "local id, now = ARGV[2], ARGV[3]\n"
    "local inp = cjson.decode(ARGV[4])\n"
    "local exists = redis.call('EXISTS', KEYS[1]) == 1\n"
    "if ARGV[1] == 'add' and exists then return {'exists'} end\n"
    "if ARGV[1] == 'update' and not exists then return {'missing'} end\n"
    "local rec = {}\n"
    "if exists then\n"
    "  local h = redis.call('HGETALL', KEYS[1])\n"
    "  for i = 1, #h, 2 do rec[h[i]] = h[i + 1] end\n"
    "end\n"
    "local set, del, hist = {}, {}, {}\n"
    "local function put(f, v) if rec[f] ~= v then set[f] = v; del[f] = nil; rec[f] = v end end\n"
    "local function drop(f) if rec[f] ~= nil then del[f] = true; set[f] = nil; rec[f] = nil end end\n"
    "local function event(e) e.at = now; hist[#hist + 1] = cjson.encode(e) end\n"
    "local function dec(f) if rec[f] then return cjson.decode(rec[f]) end return nil end\n"
    "if not exists then event({event = 'created'}) end\n"
    "local old_email = rec.email\n"
    "local s = inp.set or {}\n"
    "for _, f in ipairs({'email', 'phone'}) do\n"
    "  local v = s[f]\n"
    "  if v == '' then drop(f); drop(f .. '_state')\n"
    "  elseif v and v ~= rec[f] then put(f, v); put(f .. '_state', 'unverified') end\n"
    "end\n"
    "for _, f in ipairs({'lang', 'tz', 'quiet', 'push'}) do\n"
    "  local v = s[f]\n"
    "  if v == '' then drop(f) elseif v then put(f, v) end\n"
    "end\n"
    "local k = 8\n"
    "local zadd, zrem = {}, {}\n"
    "for _, t in ipairs(inp.topics or {}) do\n"
    "  local f = 'topic:' .. t[1]\n"
    "  if rec[f] == nil then event({event = 'subscribed', topic = t[1], channels = t[2]})\n"
    "  elseif rec[f] ~= t[2] then event({event = 'channels_changed', topic = t[1], channels = t[2]}) end\n"
    "  put(f, t[2])\n"
    "  zadd[#zadd + 1] = {KEYS[k], t[1]}\n"
    "  k = k + 1\n"
    "end\n"
    "for _, name in ipairs(inp.drop or {}) do\n"
    "  local f = 'topic:' .. name\n"
    "  if rec[f] ~= nil then event({event = 'unsubscribed', topic = name, via = 'staff'}); drop(f) end\n"
    "  zrem[#zrem + 1] = KEYS[k]\n"
    "  k = k + 1\n"
    "end\n"
    "local optin = false\n"
    "local function live(c)\n"
    "  return c.state == 'pending' and c.optin_expires_at ~= nil and c.optin_expires_at > now\n"
    "end\n"
    "local function request(ch, method, tv, given, why)\n"
    "  put('consent:' .. ch, cjson.encode({state = 'pending', method = method, text_version = tv,\n"
    "    requested_at = given, double_opt_in = false, optin = ARGV[6],\n"
    "    optin_expires_at = ARGV[7]}))\n"
    "  event({event = 'consent_requested', channel = ch, method = method, text_version = tv,\n"
    "    reason = why})\n"
    "  optin = true\n"
    "end\n"
    "for _, c in ipairs(inp.consents or {}) do\n"
    "  local f = 'consent:' .. c.channel\n"
    "  local cur = dec(f)\n"
    "  local given = c.given_at or now\n"
    "  local same = cur and cur.text_version == c.text_version\n"
    "  if c.double then\n"
    "    if not (same and (cur.state == 'confirmed' or live(cur))) then\n"
    "      request(c.channel, c.method, c.text_version, given, nil)\n"
    "    end\n"
    "  elseif not (same and cur.state == 'confirmed') then\n"
    "    put(f, cjson.encode({state = 'confirmed', method = c.method, text_version = c.text_version,\n"
    "      requested_at = given, confirmed_at = c.confirmed_at or given, double_opt_in = false}))\n"
    "    event({event = 'consent_given', channel = c.channel, method = c.method,\n"
    "      text_version = c.text_version})\n"
    "  end\n"
    "end\n"
    "if not optin and old_email and rec.email and rec.email ~= old_email then\n"
    "  local cur = dec('consent:email')\n"
    "  if cur and cur.state ~= 'withdrawn' and (cur.method == 'form' or cur.double_opt_in) then\n"
    "    request('email', cur.method, cur.text_version, now, 'address changed')\n"
    "  end\n"
    "end\n"
    "for _, ch in ipairs(inp.withdraw or {}) do\n"
    "  local cur = dec('consent:' .. ch)\n"
    "  if cur and cur.state ~= 'withdrawn' then\n"
    "    cur.state = 'withdrawn'; cur.withdrawn_at = now\n"
    "    cur.optin = nil; cur.optin_expires_at = nil\n"
    "    put('consent:' .. ch, cjson.encode(cur))\n"
    "    event({event = 'consent_withdrawn', channel = ch})\n"
    "  end\n"
    "end\n"
    "if optin and not rec.email then return {'noemail'} end\n"
    /* phase two: write */
    "local changed = next(set) ~= nil or next(del) ~= nil or #hist > 0\n"
    "if redis.call('ZADD', KEYS[3], 0, id) == 1 then changed = true end\n"
    "for _, z in ipairs(zadd) do\n"
    "  if redis.call('ZADD', z[1], 0, id) == 1 then changed = true end\n"
    "  redis.call('SADD', KEYS[4], z[2])\n"
    "end\n"
    "for _, key in ipairs(zrem) do\n"
    "  if redis.call('ZREM', key, id) == 1 then changed = true end\n"
    "end\n"
    "if not exists then set.created_at = now end\n"
    "if changed then set.updated_at = now end\n"
    "local hs, hd = {}, {}\n"
    "for f, v in pairs(set) do hs[#hs + 1] = f; hs[#hs + 1] = v end\n"
    "for f in pairs(del) do hd[#hd + 1] = f end\n"
    "if #hs > 0 then redis.call('HSET', KEYS[1], unpack(hs)) end\n"
    "if #hd > 0 then redis.call('HDEL', KEYS[1], unpack(hd)) end\n"
    "if #hist > 0 then redis.call('RPUSH', KEYS[2], unpack(hist)) end\n"
    "if optin then\n"
    "  redis.call('HSET', KEYS[7], 'citizen', id, 'channel', 'email', 'created_at', now)\n"
    "  redis.call('EXPIRE', KEYS[7], ARGV[8])\n"
    "  local data = {token = ARGV[5], hours = tonumber(ARGV[12])}\n"
    "  if ARGV[11] ~= '' then data.confirm_url = ARGV[11] end\n"
    "  if ARGV[14] ~= '' then data.absender = {name = ARGV[14]} end\n"
    "  local topics = {}\n"
    "  for f, v in pairs(rec) do\n"
    "    if string.sub(f, 1, 6) == 'topic:' and string.find(',' .. v .. ',', ',email,', 1, true) then\n"
    "      topics[#topics + 1] = string.sub(f, 7)\n"
    "    end\n"
    "  end\n"
    "  table.sort(topics)\n"
    "  if #topics > 0 then data.topics = topics end\n"
    "  local job = {v = 1, id = ARGV[9], kind = 'notice', priority = 'normal',\n"
    "    channels = {'email'}, audience = {recipients = {{id = id, email = rec.email}}},\n"
    "    template = ARGV[10], lang = rec.lang or 'de', data = data}\n"
    "  herold_enqueue({KEYS[6], KEYS[5]},\n"
    "    {cjson.encode(job), now, ARGV[9], 'normal', 'notice', ARGV[13]})\n"
    "end\n"
    "return {'ok', exists and 0 or 1, changed and 1 or 0, optin and 1 or 0}\n";

/* cz_put_script - the put script, built on first use: script_enqueue's
 * source as the local function herold_enqueue(KEYS, ARGV), then the body.
 * Lives for the process. */
static const struct redisq_script *cz_put_script(void)
{
    static struct redisq_script sc = {"citizen_put", NULL, {0}};
    static char *src;

    if (src == NULL) {
        static const char head[] = "local function herold_enqueue(KEYS, ARGV)\n";
        static const char tail[] = "end\n";
        size_t n = sizeof head + strlen(script_enqueue.source) + sizeof tail + sizeof cz_put_body;
        src = herold_malloc(n);
        if (src == NULL)
            return NULL;
        snprintf(src, n, "%s%s%s%s", head, script_enqueue.source, tail, cz_put_body);
        sc.source = src;
    }
    return &sc;
}

/* cz_email_norm - the address with its domain lower-cased (new string). */
static char *cz_email_norm(const char *e)
{
    char *c = herold_strdup(e), *at;

    if (c != NULL && (at = strrchr(c, '@')) != NULL)
        for (char *p = at + 1; *p; p++)
            *p = (char)tolower((unsigned char)*p);
    return c;
}

/* cz_put_input - the validated input as the JSON the script reads. */
static json_t *cz_put_input(const struct citizen_in *in, struct herr *err)
{
    json_t *o = json_object(), *set = json_object(), *a;
    char buf[64];

    json_object_set_new(o, "set", set);
    if (in->email) {
        char *e = cz_email_norm(in->email);
        if (e == NULL)
            goto oom;
        json_object_set_new(set, "email", json_string(e));
        herold_free(e);
    }
    if (in->phone)
        json_object_set_new(set, "phone", json_string(in->phone));
    if (in->lang)
        json_object_set_new(set, "lang", json_string(in->lang));
    if (in->tz)
        json_object_set_new(set, "tz", json_string(in->tz));
    if (in->quiet)
        json_object_set_new(set, "quiet", json_string(in->quiet));
    if (in->push_json) {
        char *p = cz_push_norm(in->push_json, err);
        if (p == NULL) {
            json_decref(o);
            return NULL;
        }
        json_object_set_new(set, "push", json_string(p));
        herold_free(p);
    }
    a = json_array();
    for (size_t i = 0; i < in->ntopics; i++) {
        cz_channels_norm(in->topics[i].channels, buf, sizeof buf);
        json_array_append_new(a, json_pack("[s,s]", in->topics[i].topic, buf));
    }
    json_object_set_new(o, "topics", a);
    a = json_array();
    for (size_t i = 0; i < in->ndrop; i++)
        json_array_append_new(a, json_string(in->drop_topics[i]));
    json_object_set_new(o, "drop", a);
    a = json_array();
    for (size_t i = 0; i < in->nconsents; i++) {
        const struct citizen_consent_in *c = &in->consents[i];
        /* e-mail consent needs the address proven, unless it was proven
         * elsewhere (an import with confirmed_at) or staff saw it signed */
        bool dbl = strcmp(c->channel, "email") == 0 &&
                   (strcmp(c->method, "form") == 0 ||
                    (strcmp(c->method, "import") == 0 && c->confirmed_at == NULL));
        json_t *co = json_pack("{s:s,s:s,s:s,s:b}", "channel", c->channel, "method", c->method,
                               "text_version", c->text_version, "double", dbl);
        if (c->given_at)
            json_object_set_new(co, "given_at", json_string(c->given_at));
        if (c->confirmed_at)
            json_object_set_new(co, "confirmed_at", json_string(c->confirmed_at));
        json_array_append_new(a, co);
    }
    json_object_set_new(o, "consents", a);
    a = json_array();
    for (size_t i = 0; i < in->nwithdraw; i++)
        json_array_append_new(a, json_string(in->withdraw[i]));
    json_object_set_new(o, "withdraw", a);
    return o;
oom:
    json_decref(o);
    herr_set(err, HERR_RESOURCE, NULL, "out of memory");
    return NULL;
}

/* cz_replace_token - url with every "{token}" replaced (new string). */
static char *cz_replace_token(const char *url, const char *token)
{
    size_t n = strlen(url) + 1, tl = strlen(token), k = 0;
    char *out;

    for (const char *p = url; (p = strstr(p, "{token}")) != NULL; p += 7)
        n += tl;
    out = herold_malloc(n);
    if (out == NULL)
        return NULL;
    for (const char *p = url; *p;) {
        if (strncmp(p, "{token}", 7) == 0) {
            memcpy(out + k, token, tl);
            k += tl;
            p += 7;
        } else {
            out[k++] = *p++;
        }
    }
    out[k] = '\0';
    return out;
}

/* cz_sender - the e-mail channel's From name (the message's absender),
 * "" when none is configured. */
static const char *cz_sender(const struct herold_config *cfg)
{
    const char *n = json_string_value(json_object_get(
        json_object_get(json_object_get(cfg->channels, "email"), "from"), "name"));

    return n ? n : "";
}

/* cz_iso - t as RFC 3339 UTC with milliseconds. */
static const char *cz_iso(double t, char *buf, size_t size)
{
    return clock_iso(t, buf, size);
}

int citizen_put(struct redisq_sync *s, const struct herold_config *cfg,
                const struct citizen_in *in, enum citizen_mode mode,
                struct citizen_put_result *res, struct herr *err)
{
    static const char *const modes[] = {"add", "update", "upsert"};
    const struct redisq_script *sc = cz_put_script();
    unsigned char raw[32], jid[8];
    char token[64], sha[65], jidhex[17], jobid[32], now[40], exp[40], ttl[24], hours[16],
        ret[24];
    char *keys[7 + 2 * CITIZEN_MAX_TOPICS] = {NULL};
    const char **argv = NULL;
    char *input = NULL, *url = NULL;
    json_t *ij = NULL;
    struct redisq_reply *r = NULL;
    size_t nkeys = 7 + in->ntopics + in->ndrop, argc;
    double t = clock_wall();
    bool input_ok = true;
    int rc = -1;

    if (res)
        *res = (struct citizen_put_result){false, false, 0};
    if (citizen_validate(in, err) != 0)
        return -1;
    if (sc == NULL)
        return herr_set(err, HERR_RESOURCE, NULL, "out of memory");
    ij = cz_put_input(in, err);
    if (ij == NULL)
        return -1;
    input = json_dumps(ij, JSON_COMPACT);
    /* a fresh token each time: it is used only when the script decides an
     * opt-in is due, and never stored (only its SHA-256 names the key) */
    if (RAND_bytes(raw, sizeof raw) != 1 || RAND_bytes(jid, sizeof jid) != 1) {
        herr_set(err, HERR_SYSTEM, NULL, "no random bytes for the opt-in token");
        goto out;
    }
    cz_b64url(raw, sizeof raw, token);
    OPENSSL_cleanse(raw, sizeof raw);
    cz_hex(jid, sizeof jid, jidhex);
    snprintf(jobid, sizeof jobid, "optin-%s", jidhex);
    if (cz_sha256_hex(token, sha) != 0) {
        herr_set(err, HERR_SYSTEM, NULL, "SHA-256 failed");
        goto out;
    }
    if (cfg->citizens.confirm_url &&
        (url = cz_replace_token(cfg->citizens.confirm_url, token)) == NULL) {
        herr_set(err, HERR_RESOURCE, NULL, "out of memory");
        goto out;
    }
    cz_iso(t, now, sizeof now);
    cz_iso(t + cfg->citizens.optin_ttl_hours * 3600.0, exp, sizeof exp);
    snprintf(ttl, sizeof ttl, "%d", cfg->citizens.optin_ttl_hours * 3600);
    snprintf(hours, sizeof hours, "%d", cfg->citizens.optin_ttl_hours);
    snprintf(ret, sizeof ret, "%ld", cfg->jobs.retention_days * 86400L);
    argc = nkeys + 14;
    argv = herold_calloc(argc, sizeof *argv);
    for (size_t i = 0; i < nkeys; i++)
        if ((keys[i] = herold_malloc(CZ_KEY_MAX)) == NULL)
            input_ok = false;
    if (input == NULL || argv == NULL || !input_ok) {
        herr_set(err, HERR_RESOURCE, NULL, "out of memory");
        goto out;
    }
    cz_key(keys[0], cfg, "citizen:", in->id);
    snprintf(keys[1], CZ_KEY_MAX, "%scitizen:%s:history", cfg->redis.prefix, in->id);
    cz_key(keys[2], cfg, "citizens", NULL);
    cz_key(keys[3], cfg, "topics", NULL);
    track_key_lane(keys[4], cfg->redis.prefix, LANE_NORMAL);
    track_key_job(keys[5], cfg->redis.prefix, jobid);
    cz_key(keys[6], cfg, "optin:", sha);
    for (size_t i = 0; i < in->ntopics; i++)
        cz_key(keys[7 + i], cfg, "topic:", in->topics[i].topic);
    for (size_t i = 0; i < in->ndrop; i++)
        cz_key(keys[7 + in->ntopics + i], cfg, "topic:", in->drop_topics[i]);
    for (size_t i = 0; i < nkeys; i++)
        argv[i] = keys[i];
    {
        const char *a[] = {modes[mode], in->id, now, input, token, sha, exp, ttl, jobid,
                           cfg->citizens.optin_template, url ? url : "", hours, ret,
                           cz_sender(cfg)};
        memcpy(argv + nkeys, a, sizeof a);
    }
    r = cz_eval(s, sc, (int)nkeys, (int)argc, argv, err);
    if (r == NULL)
        goto out;
    {
        const char *v = redisq_reply_str(redisq_reply_elem(r, 0), NULL);
        if (redisq_reply_type(r) != REDISQ_ARRAY || redisq_reply_len(r) < 1) {
            herr_set(err, HERR_TRANSIENT, NULL, "Redis: unexpected reply to citizen_put");
        } else if (strcmp(v, "exists") == 0) {
            herr_set(err, HERR_INPUT, "id", "citizen exists");
        } else if (strcmp(v, "missing") == 0) {
            herr_set(err, HERR_INPUT, "id", CITIZEN_NO_SUCH);
        } else if (strcmp(v, "noemail") == 0) {
            herr_set(err, HERR_INPUT, "email",
                     "an e-mail consent must be confirmed by the citizen, and there is no "
                     "e-mail address to send the confirmation to");
        } else if (strcmp(v, "ok") == 0 && redisq_reply_len(r) == 4) {
            if (res) {
                res->created = redisq_reply_int(redisq_reply_elem(r, 1)) == 1;
                res->changed = redisq_reply_int(redisq_reply_elem(r, 2)) == 1;
                res->optins_sent = (int)redisq_reply_int(redisq_reply_elem(r, 3));
            }
            rc = 0;
        } else {
            herr_set(err, HERR_TRANSIENT, NULL, "Redis: unexpected reply to citizen_put");
        }
    }
out:
    OPENSSL_cleanse(token, sizeof token);
    if (url)
        herold_free_secret(url);
    redisq_sync_reply_free(r);
    for (size_t i = 0; i < nkeys; i++)
        herold_free(keys[i]);
    herold_free(argv);
    free(input);
    json_decref(ij);
    return rc;
}

/* ======================================================================
 * reading
 * ====================================================================== */

/* cz_parse_record - HGETALL as JSON with consent records and push parsed. */
static void cz_parse_record(json_t *rec)
{
    const char *k;
    json_t *v;
    void *tmp;

    json_object_foreach_safe(rec, tmp, k, v) {
        if (strncmp(k, "consent:", 8) == 0 || strcmp(k, "push") == 0) {
            json_t *p = json_loads(json_string_value(v), 0, NULL);
            if (p != NULL) {
                json_object_del(p, "optin");    /* names the token's key; not for people */
                json_object_set_new(rec, k, p);
            }
        }
    }
}

json_t *citizen_get(struct redisq_sync *s, const struct herold_config *cfg, const char *id,
                    struct herr *err)
{
    char key[CZ_KEY_MAX];
    json_t *rec;

    if (!citizen_id_ok(id)) {
        herr_set(err, HERR_INPUT, "id", "expected 1-64 characters of A-Z a-z 0-9 . _ : -");
        return NULL;
    }
    rec = cz_hgetall(s, cz_key(key, cfg, "citizen:", id), err);
    if (rec == NULL)
        return NULL;
    if (json_object_size(rec) == 0) {
        json_decref(rec);
        herr_set(err, HERR_INPUT, "id", CITIZEN_NO_SUCH);
        return NULL;
    }
    cz_parse_record(rec);
    return rec;
}

/* cz_history - the history list parsed, in pages of 1000. */
static json_t *cz_history(struct redisq_sync *s, const struct herold_config *cfg,
                          const char *id, struct herr *err)
{
    char key[CZ_KEY_MAX], a[24], b[24];
    json_t *out = json_array();

    snprintf(key, sizeof key, "%scitizen:%s:history", cfg->redis.prefix, id);
    for (long start = 0;; start += 1000) {
        struct redisq_reply *r;
        size_t n;
        snprintf(a, sizeof a, "%ld", start);
        snprintf(b, sizeof b, "%ld", start + 999);
        r = CZ_CMD(s, err, "LRANGE", key, a, b);
        if (r == NULL) {
            json_decref(out);
            return NULL;
        }
        n = redisq_reply_len(r);
        for (size_t i = 0; i < n; i++) {
            const char *txt = redisq_reply_str(redisq_reply_elem(r, i), NULL);
            json_t *e = json_loads(txt, 0, NULL);
            json_array_append_new(out, e ? e : json_string(txt));
        }
        redisq_sync_reply_free(r);
        if (n < 1000)
            break;
    }
    return out;
}

/* The channel names a ledger field of a citizen can start with: the
 * per-citizen channels, every configured channel, and (per job) those
 * its counters name. */
struct cz_chans {
    const char *names[64];
    size_t n;
};

/* cz_chans_add - add name unless present (borrowed, must outlive c). */
static void cz_chans_add(struct cz_chans *c, const char *name)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->names[i], name) == 0)
            return;
    if (c->n < sizeof c->names / sizeof c->names[0])
        c->names[c->n++] = name;
}

/* cz_chans_base - the per-citizen and the configured channels. */
static void cz_chans_base(struct cz_chans *c, const struct herold_config *cfg)
{
    const char *k;
    json_t *v;

    c->n = 0;
    for (size_t i = 0; i < CZ_NCHANNELS; i++)
        cz_chans_add(c, cz_channels[i]);
    json_object_foreach(cfg->channels, k, v)
        cz_chans_add(c, k);
}

/* State shared by the export and erase key walks. */
struct cz_walk {
    const struct herold_config *cfg;
    const char *id;
    const char *email, *phone;
    json_t *out;                /* export: what was found */
    struct citizen_erase_result *er;   /* erase: counts */
    bool erase;
    char names[64][40];         /* channel names from job counters, per job */
};

static int cz_streams(struct redisq_sync *s, struct cz_walk *w, struct herr *err);

/* cz_job_id - the job id inside "<prefix>job:<id><suffix>" into buf. */
static const char *cz_job_id(const struct cz_walk *w, const char *key, const char *suffix,
                             char *buf)
{
    size_t pl = strlen(w->cfg->redis.prefix) + 4, kl = strlen(key), sl = strlen(suffix);

    if (kl < pl + sl + 1)
        return NULL;
    snprintf(buf, CZ_KEY_MAX, "%.*s", (int)(kl - pl - sl), key + pl);
    return buf;
}

/* cz_job_chans - base channels plus those named by c:<ch>:* counters of
 * the job record jobkey; *meta (if meta) gets its kind and topic. */
static int cz_job_chans(struct redisq_sync *s, struct cz_walk *w, const char *jobkey,
                        struct cz_chans *c, json_t **meta, struct herr *err)
{
    json_t *h = cz_hgetall(s, jobkey, err), *v;
    const char *k;
    size_t n = 0;

    if (h == NULL)
        return -1;
    cz_chans_base(c, w->cfg);
    json_object_foreach(h, k, v) {
        const char *e;
        if (strncmp(k, "c:", 2) == 0 && (e = strchr(k + 2, ':')) != NULL && n < 64 &&
            (size_t)(e - k - 2) < sizeof w->names[0]) {
            snprintf(w->names[n], sizeof w->names[0], "%.*s", (int)(e - k - 2), k + 2);
            cz_chans_add(c, w->names[n++]);
        }
    }
    if (meta) {
        *meta = json_object();
        if ((v = json_object_get(h, "kind")) != NULL)
            json_object_set(*meta, "kind", v);
        if ((v = json_object_get(h, "topic")) != NULL)
            json_object_set(*meta, "topic", v);
    }
    json_decref(h);
    return 0;
}

/* cz_walk_units - one "P job:<id>:units" ledger: export or delete the
 * citizen's fields <channel>:<id>. */
static int cz_walk_units(struct redisq_sync *s, const char *key, void *arg, struct herr *err)
{
    struct cz_walk *w = arg;
    struct cz_chans c;
    char jid[CZ_KEY_MAX], jk[TRACK_KEY_MAX], fields[64][CZ_KEY_MAX / 4];
    const char *argv[2 + 64];
    json_t *meta = NULL;
    struct redisq_reply *r;

    if (cz_job_id(w, key, ":units", jid) == NULL)
        return 0;
    if (cz_job_chans(s, w, track_key_job(jk, w->cfg->redis.prefix, jid), &c,
                     w->erase ? NULL : &meta, err) != 0)
        return -1;
    argv[0] = w->erase ? "HDEL" : "HMGET";
    argv[1] = key;
    for (size_t i = 0; i < c.n; i++) {
        snprintf(fields[i], sizeof fields[i], "%s:%s", c.names[i], w->id);
        argv[2 + i] = fields[i];
    }
    r = cz_cmdv(s, err, (int)(2 + c.n), argv, NULL);
    if (r == NULL) {
        json_decref(meta);
        return -1;
    }
    if (w->erase) {
        w->er->ledger += redisq_reply_int(r);
    } else {
        for (size_t i = 0; i < c.n; i++) {
            const struct redisq_reply *e = redisq_reply_elem(r, i);
            const char *v;
            char st[16] = "";
            int att = 0;
            json_t *d;
            if (redisq_reply_type(e) != REDISQ_STR)
                continue;
            v = redisq_reply_str(e, NULL);
            sscanf(v, "%15[a-z]|%d", st, &att);
            d = json_pack("{s:s,s:s,s:s,s:s}", "job", jid, "channel", c.names[i], "state", st,
                          "ledger", v);
            json_object_update(d, meta);
            json_array_append_new(json_object_get(w->out, "deliveries"), d);
        }
    }
    redisq_sync_reply_free(r);
    json_decref(meta);
    return 0;
}

/* cz_walk_later - one "P job:<id>:later" set (units waiting for a time)
 * or "P job:<id>:dlq" set (dead letters): members "<channel>:<id>". */
static int cz_walk_later(struct redisq_sync *s, const char *key, void *arg, struct herr *err)
{
    struct cz_walk *w = arg;
    struct cz_chans c;
    char jid[CZ_KEY_MAX], jk[TRACK_KEY_MAX], m[CZ_KEY_MAX];
    size_t kl = strlen(key);
    bool dlq = kl > 4 && strcmp(key + kl - 4, ":dlq") == 0;

    if (cz_job_id(w, key, dlq ? ":dlq" : ":later", jid) == NULL)
        return 0;
    if (cz_job_chans(s, w, track_key_job(jk, w->cfg->redis.prefix, jid), &c, NULL, err) != 0)
        return -1;
    for (size_t i = 0; i < c.n; i++) {
        struct redisq_reply *r;
        snprintf(m, sizeof m, "%s:%s", c.names[i], w->id);
        r = w->erase ? CZ_CMD(s, err, "ZREM", key, m) : CZ_CMD(s, err, "ZSCORE", key, m);
        if (r == NULL)
            return -1;
        if (w->erase) {
            w->er->later += redisq_reply_int(r);
        } else if (redisq_reply_type(r) == REDISQ_STR) {
            double due = atof(redisq_reply_str(r, NULL));
            char iso[40];
            json_array_append_new(json_object_get(w->out, "waiting"),
                                  json_pack("{s:s,s:s,s:s}", "job", jid, "channel",
                                            c.names[i], dlq ? "dead_letter_since" : "until",
                                            cz_iso(due, iso, sizeof iso)));
        }
        redisq_sync_reply_free(r);
    }
    return 0;
}

/* cz_walk_aud - one "P job:<id>:aud" set: the citizens an alert reached,
 * kept as the audience of its cancellation. */
static int cz_walk_aud(struct redisq_sync *s, const char *key, void *arg, struct herr *err)
{
    struct cz_walk *w = arg;
    struct redisq_reply *r = w->erase ? CZ_CMD(s, err, "ZREM", key, w->id)
                                      : CZ_CMD(s, err, "ZSCORE", key, w->id);

    if (r == NULL)
        return -1;
    if (w->erase)
        w->er->later += redisq_reply_int(r);
    redisq_sync_reply_free(r);
    return 0;
}

/* cz_walk_cap - one "P cap:<day>" hash: the jobs counted for the day. */
static int cz_walk_cap(struct redisq_sync *s, const char *key, void *arg, struct herr *err)
{
    struct cz_walk *w = arg;
    struct redisq_reply *r = w->erase ? CZ_CMD(s, err, "HDEL", key, w->id)
                                      : CZ_CMD(s, err, "HGET", key, w->id);
    size_t pl = strlen(w->cfg->redis.prefix) + 4;

    if (r == NULL)
        return -1;
    if (w->erase)
        w->er->caps += redisq_reply_int(r);
    else if (redisq_reply_type(r) == REDISQ_STR && strlen(key) > pl)
        json_object_set_new(json_object_get(w->out, "daily_cap"), key + pl,
                            json_string(redisq_reply_str(r, NULL)));
    redisq_sync_reply_free(r);
    return 0;
}

/* cz_walk_optin - one "P optin:<sha>" hash: a pending opt-in if it is
 * this citizen's. */
static int cz_walk_optin(struct redisq_sync *s, const char *key, void *arg, struct herr *err)
{
    struct cz_walk *w = arg;
    json_t *h = cz_hgetall(s, key, err);
    struct redisq_reply *r = NULL;

    if (h == NULL)
        return -1;
    if (strcmp(json_string_value(json_object_get(h, "citizen")) ?
               json_string_value(json_object_get(h, "citizen")) : "", w->id) != 0) {
        json_decref(h);
        return 0;
    }
    if (w->erase) {
        r = CZ_CMD(s, err, "DEL", key);
        if (r)
            w->er->optins += redisq_reply_int(r);
    } else {
        r = CZ_CMD(s, err, "TTL", key);
        if (r) {
            /* the key name is the token's hash: leave it out */
            json_object_set_new(h, "expires_in_s", json_integer(redisq_reply_int(r)));
            json_array_append(json_object_get(w->out, "pending_optins"), h);
        }
    }
    json_decref(h);
    if (r == NULL)
        return -1;
    redisq_sync_reply_free(r);
    return 0;
}

/* cz_walk_topic - one "P topic:<name>" set, found through `P topics`. */
static int cz_walk_topic(struct redisq_sync *s, const char *key, void *arg, struct herr *err)
{
    struct cz_walk *w = arg;
    struct redisq_reply *r = w->erase ? CZ_CMD(s, err, "ZREM", key, w->id)
                                      : CZ_CMD(s, err, "ZSCORE", key, w->id);
    size_t pl = strlen(w->cfg->redis.prefix) + 6;

    if (r == NULL)
        return -1;
    if (w->erase)
        w->er->topics += redisq_reply_int(r);
    else if (redisq_reply_type(r) == REDISQ_STR && strlen(key) > pl)
        json_array_append_new(json_object_get(w->out, "member_of"), json_string(key + pl));
    redisq_sync_reply_free(r);
    return 0;
}

/* cz_topic_keys - every topic name in `P topics` (SSCAN) and in the
 * record's topic fields, each passed to fn as its key. */
static int cz_topic_keys(struct redisq_sync *s, struct cz_walk *w, const json_t *rec,
                         struct herr *err)
{
    char cursor[32] = "0", key[CZ_KEY_MAX], tk[CZ_KEY_MAX];
    const char *k;
    json_t *v, *seen = json_object();
    int rc = -1;

    json_object_foreach((json_t *)rec, k, v)
        if (strncmp(k, "topic:", 6) == 0)
            json_object_set_new(seen, k + 6, json_true());
    cz_key(tk, w->cfg, "topics", NULL);
    do {
        struct redisq_reply *r = CZ_CMD(s, err, "SSCAN", tk, cursor, "COUNT", CZ_SCAN_COUNT);
        const struct redisq_reply *m;
        if (r == NULL)
            goto out;
        snprintf(cursor, sizeof cursor, "%s", redisq_reply_str(redisq_reply_elem(r, 0), NULL));
        m = redisq_reply_elem(r, 1);
        for (size_t i = 0; i < redisq_reply_len(m); i++)
            json_object_set_new(seen, redisq_reply_str(redisq_reply_elem(m, i), NULL),
                                json_true());
        redisq_sync_reply_free(r);
    } while (strcmp(cursor, "0") != 0);
    json_object_foreach(seen, k, v)
        if (cz_walk_topic(s, cz_key(key, w->cfg, "topic:", k), w, err) != 0)
            goto out;
    rc = 0;
out:
    json_decref(seen);
    return rc;
}

/* cz_bounced - the contacts:bounced fields of the citizen's address. */
static int cz_bounced(struct redisq_sync *s, struct cz_walk *w, struct herr *err)
{
    char key[CZ_KEY_MAX], f[TRACK_CONTACT_MAX];
    struct redisq_reply *r;

    if (w->email == NULL)
        return 0;
    cz_key(key, w->cfg, "contacts:bounced", NULL);
    track_contact_field(f, "email", w->email);
    r = w->erase ? CZ_CMD(s, err, "HDEL", key, f) : CZ_CMD(s, err, "HGET", key, f);
    if (r == NULL)
        return -1;
    if (w->erase) {
        w->er->bounced += redisq_reply_int(r);
    } else if (redisq_reply_type(r) == REDISQ_STR) {
        json_object_set_new(w->out, "bounced",
                            json_pack("{s:s,s:s}", "field", f, "value",
                                      redisq_reply_str(r, NULL)));
    }
    redisq_sync_reply_free(r);
    return 0;
}

json_t *citizen_export(struct redisq_sync *s, const struct herold_config *cfg, const char *id,
                       struct herr *err)
{
    struct cz_walk *w;
    json_t *rec = citizen_get(s, cfg, id, err), *out = NULL, *hist, *topics;
    char pat[CZ_KEY_MAX], ts[40];
    const char *k;
    json_t *v;

    if (rec == NULL)
        return NULL;
    w = herold_calloc(1, sizeof *w);
    if (w == NULL) {
        json_decref(rec);
        herr_set(err, HERR_RESOURCE, NULL, "out of memory");
        return NULL;
    }
    out = json_pack("{s:s,s:s,s:O,s:{},s:[],s:[],s:n,s:{},s:[],s:[],s:[]}", "id", id,
                    "exported_at", cz_iso(clock_wall(), ts, sizeof ts), "record", rec, "topics",
                    "member_of", "pending_optins", "bounced", "daily_cap", "deliveries",
                    "waiting", "stream_entries");
    topics = json_object_get(out, "topics");
    json_object_foreach(rec, k, v)
        if (strncmp(k, "topic:", 6) == 0 && json_is_string(v))
            json_object_set_new(topics, k + 6, json_string(json_string_value(v)));
    *w = (struct cz_walk){.cfg = cfg, .id = id, .out = out,
                          .email = json_string_value(json_object_get(rec, "email")),
                          .phone = json_string_value(json_object_get(rec, "phone"))};
    if ((hist = cz_history(s, cfg, id, err)) == NULL)
        goto fail;
    json_object_set_new(out, "history", hist);
    if (cz_topic_keys(s, w, rec, err) != 0 || cz_bounced(s, w, err) != 0 ||
        cz_scan(s, cz_glob(pat, cfg->redis.prefix, "optin:*"), cz_walk_optin, w, err) != 0 ||
        cz_scan(s, cz_glob(pat, cfg->redis.prefix, "cap:*"), cz_walk_cap, w, err) != 0 ||
        cz_scan(s, cz_glob(pat, cfg->redis.prefix, "job:*:units"), cz_walk_units, w, err) != 0 ||
        cz_scan(s, cz_glob(pat, cfg->redis.prefix, "job:*:later"), cz_walk_later, w, err) != 0 ||
        cz_scan(s, cz_glob(pat, cfg->redis.prefix, "job:*:dlq"), cz_walk_later, w, err) != 0 ||
        cz_streams(s, w, err) != 0)
        goto fail;
    herold_free(w);
    json_decref(rec);
    return out;
fail:
    herold_free(w);
    json_decref(rec);
    json_decref(out);
    return NULL;
}

/* ======================================================================
 * erasure
 * ====================================================================== */

/* purge - KEYS: stream, scratch key.  ARGV: entry ids to delete.  Deletes
 * them; then, when the stream has no consumer group, copies what is left
 * into the scratch key with the same ids and renames it over the stream:
 * XDEL only flags an entry inside its node, and the node (with the
 * flagged bytes) would otherwise live on in memory and in the RDB
 * preamble of every AOF rewrite.  Returns {deleted, rebuilt}. */
static struct redisq_script cz_purge_script = {"citizen_purge",
    "local n = 0\n"
    "for i = 1, #ARGV do n = n + redis.call('XDEL', KEYS[1], ARGV[i]) end\n"
    "if n == 0 or redis.call('EXISTS', KEYS[1]) == 0 then return {n, 0} end\n"
    "if #redis.call('XINFO', 'GROUPS', KEYS[1]) > 0 then return {n, 0} end\n"
    "local info = redis.call('XINFO', 'STREAM', KEYS[1])\n"
    "local last\n"
    "for i = 1, #info, 2 do if info[i] == 'last-generated-id' then last = info[i + 1] end end\n"
    "redis.call('DEL', KEYS[2])\n"
    "local from, copied = '-', 0\n"
    "while true do\n"
    "  local batch = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', 500)\n"
    "  if #batch == 0 then break end\n"
    "  for _, e in ipairs(batch) do\n"
    "    redis.call('XADD', KEYS[2], e[1], unpack(e[2]))\n"
    "    copied = copied + 1\n"
    "  end\n"
    "  from = '(' .. batch[#batch][1]\n"
    "end\n"
    "if copied == 0 then redis.call('DEL', KEYS[1]); return {n, 1} end\n"
    "redis.call('XSETID', KEYS[2], last)\n"
    "redis.call('RENAME', KEYS[2], KEYS[1])\n"
    "return {n, 1}\n", {0}};

/* cz_ci_contains - case-insensitive substring test. */
static bool cz_ci_contains(const char *hay, size_t hl, const char *needle)
{
    size_t nl = strlen(needle);

    for (size_t i = 0; nl && i + nl <= hl; i++) {
        size_t k = 0;
        while (k < nl && tolower((unsigned char)hay[i + k]) == tolower((unsigned char)needle[k]))
            k++;
        if (k == nl)
            return true;
    }
    return false;
}

/* cz_mentions - does a stream payload name the citizen: its address or
 * number anywhere, or its id as a JSON string? */
static bool cz_mentions(const struct cz_walk *w, const char *p, size_t len)
{
    char q[CITIZEN_ID_MAX + 3];

    snprintf(q, sizeof q, "\"%s\"", w->id);
    return (w->email && cz_ci_contains(p, len, w->email)) ||
           (w->phone && cz_ci_contains(p, len, w->phone)) || cz_ci_contains(p, len, q);
}

/* cz_only_citizen - is job JSON p addressed to this citizen alone (its
 * recipients or citizens all are the citizen)? */
static bool cz_only_citizen(const struct cz_walk *w, const char *p, size_t len)
{
    json_t *j = json_loadb(p, len, 0, NULL), *aud, *list, *e;
    size_t i, n = 0;
    bool only = true;

    aud = json_object_get(j, "audience");
    list = json_object_get(aud, "recipients");
    if (list == NULL)
        list = json_object_get(aud, "citizens");
    json_array_foreach(list, i, e) {
        const char *rid = json_is_string(e) ? json_string_value(e)
                                            : json_string_value(json_object_get(e, "id"));
        n++;
        if (rid == NULL || strcmp(rid, w->id) != 0)
            only = false;
    }
    json_decref(j);
    return only && n > 0;
}

/* cz_stream_note - export: an entry of stream key that names the
 * citizen, without its payload (it may name other people too). */
static void cz_stream_note(struct cz_walk *w, const char *key, const char *eid,
                           const struct redisq_reply *f, bool alone)
{
    json_t *o = json_pack("{s:s,s:s,s:b}", "stream", key + strlen(w->cfg->redis.prefix),
                          "entry", eid, "citizen_alone", alone);

    for (size_t k = 0; k + 1 < redisq_reply_len(f); k += 2) {
        const char *name = redisq_reply_str(redisq_reply_elem(f, k), NULL);
        if (strcmp(name, "reason") == 0 || strcmp(name, "ts") == 0)
            json_object_set_new(o, name,
                                json_string(redisq_reply_str(redisq_reply_elem(f, k + 1), NULL)));
    }
    json_array_append_new(json_object_get(w->out, "stream_entries"), o);
}

/* cz_purge_stream - delete the entries of stream key that name the
 * citizen (field `field`); lane streams (job=true) only lose jobs
 * addressed to the citizen alone, the others are counted in *shared.
 * For the export (w->erase false) it only notes them. */
static int cz_purge_stream(struct redisq_sync *s, struct cz_walk *w, const char *key,
                           const char *field, bool job, long *deleted, long *shared,
                           struct herr *err)
{
    char from[64] = "-", scratch[CZ_KEY_MAX + 16];
    json_t *ids = json_array();
    int rc = -1;

    for (;;) {
        struct redisq_reply *r = CZ_CMD(s, err, "XRANGE", key, from, "+", "COUNT", "1000");
        size_t n;
        if (r == NULL)
            goto out;
        n = redisq_reply_len(r);
        for (size_t i = 0; i < n; i++) {
            const struct redisq_reply *e = redisq_reply_elem(r, i);
            const struct redisq_reply *f = redisq_reply_elem(e, 1);
            const char *eid = redisq_reply_str(redisq_reply_elem(e, 0), NULL);
            for (size_t k = 0; k + 1 < redisq_reply_len(f); k += 2) {
                size_t pl;
                const char *p;
                if (strcmp(redisq_reply_str(redisq_reply_elem(f, k), NULL), field) != 0)
                    continue;
                p = redisq_reply_str(redisq_reply_elem(f, k + 1), &pl);
                if (!cz_mentions(w, p, pl))
                    continue;
                if (!w->erase)
                    cz_stream_note(w, key, eid, f, job ? cz_only_citizen(w, p, pl) : true);
                else if (job && !cz_only_citizen(w, p, pl))
                    (*shared)++;
                else
                    json_array_append_new(ids, json_string(eid));
            }
            if (i + 1 == n)
                snprintf(from, sizeof from, "(%s", eid);
        }
        redisq_sync_reply_free(r);
        if (n < 1000)
            break;
    }
    snprintf(scratch, sizeof scratch, "%s:erase-scratch", key);
    for (size_t i = 0; i < json_array_size(ids); i += 500) {
        const char *argv[2 + 500];
        size_t m = 0;
        struct redisq_reply *r;
        argv[0] = key;
        argv[1] = scratch;
        for (size_t k = i; k < json_array_size(ids) && m < 500; k++)
            argv[2 + m++] = json_string_value(json_array_get(ids, k));
        r = cz_eval(s, &cz_purge_script, 2, (int)(2 + m), argv, err);
        if (r == NULL)
            goto out;
        *deleted += redisq_reply_int(redisq_reply_elem(r, 0));
        redisq_sync_reply_free(r);
    }
    rc = 0;
out:
    json_decref(ids);
    return rc;
}

/* cz_streams - the rejected, dead and lane streams: note (export) or
 * delete (erase) the entries that name the citizen. */
static int cz_streams(struct redisq_sync *s, struct cz_walk *w, struct herr *err)
{
    struct citizen_erase_result dummy = {0};
    struct citizen_erase_result *er = w->er ? w->er : &dummy;
    char key[CZ_KEY_MAX];
    long shared = 0;

    if (cz_purge_stream(s, w, cz_key(key, w->cfg, "rejected", NULL), "payload", false,
                        &er->rejected, &shared, err) != 0 ||
        cz_purge_stream(s, w, cz_key(key, w->cfg, "dead", NULL), "payload", false, &er->dead,
                        &shared, err) != 0)
        return -1;
    for (int l = 0; l < LANE_COUNT; l++)
        if (cz_purge_stream(s, w, track_key_lane(key, w->cfg->redis.prefix, (enum track_lane)l),
                            "job", true, &er->queued, &er->queued_shared, err) != 0)
            return -1;
    return 0;
}

int citizen_erase(struct redisq_sync *s, const struct herold_config *cfg, const char *id,
                  struct citizen_erase_result *res, struct herr *err)
{
    struct cz_walk w;
    json_t *rec = citizen_get(s, cfg, id, err);
    char key[CZ_KEY_MAX], pat[CZ_KEY_MAX], hk[CZ_KEY_MAX];
    struct redisq_reply *r = NULL;
    int rc = -1;

    memset(res, 0, sizeof *res);
    if (rec == NULL)
        return -1;
    w = (struct cz_walk){.cfg = cfg, .id = id, .er = res, .erase = true,
                         .email = json_string_value(json_object_get(rec, "email")),
                         .phone = json_string_value(json_object_get(rec, "phone"))};
    /* First out of every audience, so no new fan-out reaches the citizen;
     * the record goes last, so an erase cut short can simply be run
     * again (it still finds the citizen). */
    r = CZ_CMD(s, err, "ZREM", cz_key(key, cfg, "citizens", NULL), id);
    if (r == NULL)
        goto out;
    res->index = redisq_reply_int(r);
    redisq_sync_reply_free(r);
    if (cz_topic_keys(s, &w, rec, err) != 0 ||
        cz_scan(s, cz_glob(pat, cfg->redis.prefix, "optin:*"), cz_walk_optin, &w, err) != 0 ||
        cz_scan(s, cz_glob(pat, cfg->redis.prefix, "cap:*"), cz_walk_cap, &w, err) != 0 ||
        cz_scan(s, cz_glob(pat, cfg->redis.prefix, "job:*:units"), cz_walk_units, &w, err) != 0 ||
        cz_scan(s, cz_glob(pat, cfg->redis.prefix, "job:*:later"), cz_walk_later, &w, err) != 0 ||
        cz_scan(s, cz_glob(pat, cfg->redis.prefix, "job:*:dlq"), cz_walk_later, &w, err) != 0 ||
        cz_scan(s, cz_glob(pat, cfg->redis.prefix, "job:*:aud"), cz_walk_aud, &w, err) != 0 ||
        cz_bounced(s, &w, err) != 0)
        goto out;
    if (cz_streams(s, &w, err) != 0)
        goto out;
    snprintf(hk, sizeof hk, "%scitizen:%s:history", cfg->redis.prefix, id);
    r = CZ_CMD(s, err, "DEL", hk);
    if (r == NULL)
        goto out;
    res->history = redisq_reply_int(r);
    redisq_sync_reply_free(r);
    r = CZ_CMD(s, err, "DEL", cz_key(key, cfg, "citizen:", id));
    if (r == NULL)
        goto out;
    res->record = redisq_reply_int(r);
    redisq_sync_reply_free(r);
    /* The append-only file still holds every write that ever named the
     * citizen; only a rewrite forgets them. */
    r = redisq_sync_argv(s, 1, CZ_ARGS("BGREWRITEAOF"), NULL, err);
    if (r == NULL) {
        snprintf(res->aof_msg, sizeof res->aof_msg, "%.120s", err->msg);
    } else if (redisq_reply_type(r) == REDISQ_ERROR) {
        snprintf(res->aof_msg, sizeof res->aof_msg, "%.120s", redisq_reply_str(r, NULL));
    } else {
        res->aof_rewrite_started = true;
    }
    redisq_sync_reply_free(r);
    r = NULL;
    herr_clear(err);
    rc = 0;
out:
    json_decref(rec);
    return rc;
}

/* ======================================================================
 * confirm and unsubscribe
 * ====================================================================== */

/* confirm - KEYS: opt-in key, citizen hash, history.  ARGV: citizen id
 * (as read before), the key's SHA-256 suffix, now.  Deletes the opt-in key
 * in any case (single use), then confirms the consent it names if that
 * consent still waits for exactly this token.  Returns {"ok", channel},
 * {"unknown"} or {"stale", state}. */
static struct redisq_script cz_confirm_script = {"citizen_confirm",
    "local ch = redis.call('HGET', KEYS[1], 'channel')\n"
    "local who = redis.call('HGET', KEYS[1], 'citizen')\n"
    "if not ch or who ~= ARGV[1] then return {'unknown'} end\n"
    "redis.call('DEL', KEYS[1])\n"
    "local f = 'consent:' .. ch\n"
    "local raw = redis.call('HGET', KEYS[2], f)\n"
    "if not raw then return {'stale', 'none'} end\n"
    "local c = cjson.decode(raw)\n"
    "if c.state ~= 'pending' or c.optin ~= ARGV[2] then return {'stale', c.state} end\n"
    "c.state = 'confirmed'; c.confirmed_at = ARGV[3]; c.double_opt_in = true\n"
    "c.optin = nil; c.optin_expires_at = nil\n"
    "redis.call('HSET', KEYS[2], f, cjson.encode(c), 'updated_at', ARGV[3])\n"
    "if ch == 'email' and redis.call('HEXISTS', KEYS[2], 'email') == 1 then\n"
    "  redis.call('HSET', KEYS[2], 'email_state', 'verified')\n"
    "end\n"
    "redis.call('RPUSH', KEYS[3], cjson.encode({at = ARGV[3], event = 'consent_confirmed',\n"
    "  channel = ch, method = c.method, text_version = c.text_version, double_opt_in = true}))\n"
    "return {'ok', ch}\n", {0}};

int citizen_confirm(struct redisq_sync *s, const struct herold_config *cfg, const char *token,
                    char **id_out, const char **channel_out, struct herr *err)
{
    char sha[65], ok[CZ_KEY_MAX], ck[CZ_KEY_MAX], hk[CZ_KEY_MAX], now[40], *who = NULL;
    struct redisq_reply *r;
    size_t n = strlen(token);
    int rc = -1;

    if (id_out)
        *id_out = NULL;
    /* 32 random bytes in base64url: 43 characters of A-Z a-z 0-9 - _ */
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)token[i]) && token[i] != '-' && token[i] != '_')
            n = 0;
    if (n != 43 || cz_sha256_hex(token, sha) != 0)
        return herr_set(err, HERR_INPUT, "token", "not a confirmation token");
    cz_key(ok, cfg, "optin:", sha);
    r = CZ_CMD(s, err, "HGET", ok, "citizen");
    if (r == NULL)
        return -1;
    if (redisq_reply_type(r) == REDISQ_STR && citizen_id_ok(redisq_reply_str(r, NULL)))
        who = herold_strdup(redisq_reply_str(r, NULL));
    redisq_sync_reply_free(r);
    if (who == NULL)
        return herr_set(err, HERR_INPUT, "token",
                        "unknown, expired or already used confirmation token");
    cz_key(ck, cfg, "citizen:", who);
    snprintf(hk, sizeof hk, "%scitizen:%s:history", cfg->redis.prefix, who);
    r = cz_eval(s, &cz_confirm_script, 3,
                6, CZ_ARGS(ok, ck, hk, who, sha, cz_iso(clock_wall(), now, sizeof now)), err);
    if (r == NULL)
        goto out;
    {
        const char *v = redisq_reply_str(redisq_reply_elem(r, 0), NULL);
        if (strcmp(v, "ok") == 0) {
            const char *ch = redisq_reply_str(redisq_reply_elem(r, 1), NULL);
            for (size_t i = 0; i < CZ_NCHANNELS; i++)
                if (strcmp(ch, cz_channels[i]) == 0 && channel_out)
                    *channel_out = cz_channels[i];
            if (id_out) {
                *id_out = who;
                who = NULL;
            }
            rc = 0;
        } else if (strcmp(v, "stale") == 0) {
            herr_set(err, HERR_INPUT, "token",
                     "this confirmation token was replaced by a newer request or the "
                     "consent was withdrawn (consent state: %.20s); it is used up now",
                     redisq_reply_str(redisq_reply_elem(r, 1), NULL));
        } else {
            herr_set(err, HERR_INPUT, "token",
                     "unknown, expired or already used confirmation token");
        }
    }
    redisq_sync_reply_free(r);
out:
    herold_free(who);
    return rc;
}

/* unsubscribe - KEYS: citizen hash, history, then one topic zset per
 * topic in ARGV[4..].  ARGV: id, now, "one" or "all", topic names.  With
 * "all" the names must be every topic of the record (else {"retry"}: the
 * record changed since it was read).  Returns {"ok", removed} or
 * {"missing"}. */
static struct redisq_script cz_unsub_script = {"citizen_unsubscribe",
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end\n"
    "if ARGV[3] == 'all' then\n"
    "  local want = {}\n"
    "  for i = 4, #ARGV do want['topic:' .. ARGV[i]] = true end\n"
    "  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do\n"
    "    if string.sub(f, 1, 6) == 'topic:' and not want[f] then return {'retry'} end\n"
    "  end\n"
    "end\n"
    "local n = 0\n"
    "for i = 4, #ARGV do\n"
    "  local gone = redis.call('HDEL', KEYS[1], 'topic:' .. ARGV[i])\n"
    "  redis.call('ZREM', KEYS[i - 1], ARGV[1])\n"
    "  if gone == 1 then\n"
    "    n = n + 1\n"
    "    redis.call('RPUSH', KEYS[2], cjson.encode({at = ARGV[2], event = 'unsubscribed',\n"
    "      topic = ARGV[i], via = 'link'}))\n"
    "  end\n"
    "end\n"
    "if n > 0 then redis.call('HSET', KEYS[1], 'updated_at', ARGV[2]) end\n"
    "return {'ok', n}\n", {0}};

int citizen_unsubscribe(struct redisq_sync *s, const struct herold_config *cfg,
                        const char *token, int *removed, struct herr *err)
{
    char id[CITIZEN_ID_MAX + 1], topic[65], mac[25], want[25], now[40];
    const char *d2, *d1;
    char *key = NULL;
    int rc = -1;

    *removed = 0;
    d2 = strrchr(token, '.');
    if (d2 == NULL || strlen(d2 + 1) != 24)
        return herr_set(err, HERR_INPUT, "token", "invalid unsubscribe token");
    d1 = d2 - 1;
    while (d1 > token && *d1 != '.')
        d1--;
    if (d1 <= token || (size_t)(d1 - token) > CITIZEN_ID_MAX || (size_t)(d2 - d1 - 1) > 64)
        return herr_set(err, HERR_INPUT, "token", "invalid unsubscribe token");
    snprintf(id, sizeof id, "%.*s", (int)(d1 - token), token);
    snprintf(topic, sizeof topic, "%.*s", (int)(d2 - d1 - 1), d1 + 1);
    snprintf(mac, sizeof mac, "%s", d2 + 1);
    if (!citizen_id_ok(id) || !citizen_topic_ok(topic))
        return herr_set(err, HERR_INPUT, "token", "invalid unsubscribe token");
    if ((key = citizen_unsubscribe_key(cfg, err)) == NULL)
        return -1;
    citizen_unsubscribe_mac((const unsigned char *)key, strlen(key), id, topic, want);
    herold_free_secret(key);
    if (CRYPTO_memcmp(want, mac, 24) != 0)
        return herr_set(err, HERR_INPUT, "token", "invalid unsubscribe token");
    for (int attempt = 0; attempt < 5; attempt++) {
        json_t *names = json_array(), *rec = NULL;
        const char *argv[5 + 2 * (CITIZEN_MAX_TOPICS + 8)];
        char keys[2 + CITIZEN_MAX_TOPICS + 8][CZ_KEY_MAX];
        struct redisq_reply *r;
        size_t n = 0;
        const char *k;
        json_t *v;
        const char *verdict;
        bool retry;

        if (strcmp(topic, "all") == 0) {
            rec = cz_hgetall(s, cz_key(keys[0], cfg, "citizen:", id), err);
            if (rec == NULL) {
                json_decref(names);
                return -1;
            }
            json_object_foreach(rec, k, v)
                if (strncmp(k, "topic:", 6) == 0 && json_array_size(names) < CITIZEN_MAX_TOPICS + 8)
                    json_array_append_new(names, json_string(k + 6));
        } else {
            json_array_append_new(names, json_string(topic));
        }
        n = json_array_size(names);
        cz_key(keys[0], cfg, "citizen:", id);
        snprintf(keys[1], CZ_KEY_MAX, "%scitizen:%s:history", cfg->redis.prefix, id);
        argv[0] = keys[0];
        argv[1] = keys[1];
        for (size_t i = 0; i < n; i++) {
            argv[2 + i] = cz_key(keys[2 + i], cfg, "topic:",
                                 json_string_value(json_array_get(names, i)));
        }
        argv[2 + n] = id;
        argv[3 + n] = cz_iso(clock_wall(), now, sizeof now);
        argv[4 + n] = strcmp(topic, "all") == 0 ? "all" : "one";
        for (size_t i = 0; i < n; i++)
            argv[5 + n + i] = json_string_value(json_array_get(names, i));
        r = cz_eval(s, &cz_unsub_script, (int)(2 + n), (int)(5 + 2 * n), argv, err);
        json_decref(rec);
        if (r == NULL) {
            json_decref(names);
            return -1;
        }
        verdict = redisq_reply_str(redisq_reply_elem(r, 0), NULL);
        retry = strcmp(verdict, "retry") == 0;
        if (strcmp(verdict, "ok") == 0) {
            *removed = (int)redisq_reply_int(redisq_reply_elem(r, 1));
            rc = 0;
        } else if (strcmp(verdict, "missing") == 0) {
            herr_set(err, HERR_INPUT, "id", CITIZEN_NO_SUCH);
        } else if (!retry) {
            herr_set(err, HERR_TRANSIENT, NULL, "Redis: unexpected reply to unsubscribe");
        }
        redisq_sync_reply_free(r);
        json_decref(names);
        if (!retry)
            return rc;
    }
    return herr_set(err, HERR_TRANSIENT, NULL, "the record kept changing; try again");
}

/* ======================================================================
 * topics
 * ====================================================================== */

/* topic_channels - KEYS: citizen hashes.  ARGV: field.  Returns the
 * field's value of each (false when absent). */
static struct redisq_script cz_topic_script = {"citizen_topic_channels",
    "local out = {}\n"
    "for i = 1, #KEYS do out[i] = redis.call('HGET', KEYS[i], ARGV[1]) end\n"
    "return out\n", {0}};

int citizen_topic_stats(struct redisq_sync *s, const struct herold_config *cfg,
                        const char *topic, struct citizen_topic_stats *st, struct herr *err)
{
    char key[CZ_KEY_MAX], from[CITIZEN_ID_MAX + 2] = "-", field[80];
    const char **argv = herold_calloc(1001, sizeof *argv);
    char (*keys)[CZ_KEY_MAX / 2] = herold_calloc(1000, sizeof *keys);
    int rc = -1;

    memset(st, 0, sizeof *st);
    if (argv == NULL || keys == NULL) {
        herr_set(err, HERR_RESOURCE, NULL, "out of memory");
        goto out;
    }
    if (!citizen_topic_ok(topic)) {
        herr_set(err, HERR_INPUT, "topic", "expected 1-64 characters of a-z 0-9 _ -");
        goto out;
    }
    cz_key(key, cfg, "topic:", topic);
    snprintf(field, sizeof field, "topic:%s", topic);
    for (;;) {
        struct redisq_reply *r = CZ_CMD(s, err, "ZRANGEBYLEX", key, from, "+", "LIMIT", "0",
                                        "1000"), *c;
        size_t n;
        if (r == NULL)
            goto out;
        n = redisq_reply_len(r);
        for (size_t i = 0; i < n; i++) {
            snprintf(keys[i], sizeof keys[i], "%scitizen:%s", cfg->redis.prefix,
                     redisq_reply_str(redisq_reply_elem(r, i), NULL));
            argv[i] = keys[i];
        }
        if (n > 0)
            snprintf(from, sizeof from, "(%s",
                     redisq_reply_str(redisq_reply_elem(r, n - 1), NULL));
        redisq_sync_reply_free(r);
        if (n == 0)
            break;
        argv[n] = field;
        c = cz_eval(s, &cz_topic_script, (int)n, (int)n + 1, argv, err);
        if (c == NULL)
            goto out;
        st->subscribers += (long)n;
        for (size_t i = 0; i < redisq_reply_len(c); i++) {
            const struct redisq_reply *e = redisq_reply_elem(c, i);
            const char *v, *p;
            if (redisq_reply_type(e) != REDISQ_STR) {
                st->no_record++;
                continue;
            }
            v = redisq_reply_str(e, NULL);
            for (p = v; *p;) {
                const char *q = strchr(p, ',');
                size_t len = q ? (size_t)(q - p) : strlen(p);
                switch (cz_channel_index(p, len)) {
                case 0: st->email++; break;
                case 1: st->sms++; break;
                case 2: st->push++; break;
                case 3: st->webhook++; break;
                default: st->other++; break;
                }
                p += len + (q != NULL);
            }
        }
        redisq_sync_reply_free(c);
        if (n < 1000)
            break;
    }
    rc = 0;
out:
    herold_free(argv);
    herold_free(keys);
    return rc;
}
