/*
 * webhook - the webhook channel: each delivery becomes one JSON POST to a
 * configured endpoint, signed the Standard Webhooks way, sent through the
 * shared HTTP transport (http.c).
 *
 * Owns: the endpoint table (names, URLs, signing keys, cleared before
 * they are freed) and one small context per request in flight.  Borrows
 * the loop and the transport from the channel_env given to init.
 *
 * Never opens a socket in init (it also runs for --check-config), never
 * logs URLs, keys, bodies or recipients, and calls each done exactly once
 * from the transport's completion, never from submit.
 */
#include "webhook.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../config/config.h"
#include "../dispatcher/alloc.h"
#include "../dispatcher/log.h"
#include "http.h"

#define WEBHOOK_CONF "channels.webhook"
#define WEBHOOK_NAME_MAX 32
#define WEBHOOK_URL_MAX 2048
#define WEBHOOK_KEY_MIN 16
#define WEBHOOK_KEY_MAX 256
#define WEBHOOK_IDEM_MAX 200
#define WEBHOOK_INFLIGHT_DEFAULT 4096
#define WEBHOOK_INFLIGHT_MAX 65536

struct webhook_endpoint {
    char *name;
    char *url;
    unsigned char *key;
    size_t keylen;
    EVP_MAC_CTX *mac;             /* keyed once, duplicated per signature */
};

/* The parts of a body that every recipient of a job shares, serialised
 * once: "job":..,"kind":..,"priority":..,"lang":..,"subject":..,"text":..
 * (and "html").  Valid while all the strings it was made from compare
 * equal, so a reused address can never serve a stale body. */
struct webhook_shared {
    char *job_id, *kind, *priority, *lang, *subject, *text, *html;
    char *json;
    size_t json_len;
};

#define WEBHOOK_SHARED_SLOTS 4

static void webhook_shared_clear(struct webhook_shared *sh);

/* One request in flight; w is NULL once the channel was destroyed. */
struct webhook_call {
    struct webhook *w;
    const char *endpoint;         /* borrowed from w->eps */
    channel_done_fn *done;
    void *arg;
    struct webhook_call *prev, *next;
};

struct webhook {
    struct http_transport *http;  /* borrowed; NULL under --check-config */
    struct webhook_endpoint *eps;
    size_t neps;
    size_t max_inflight;
    size_t inflight;
    struct webhook_call *calls;
    bool draining;
    struct webhook_shared shared[WEBHOOK_SHARED_SLOTS];
    unsigned next_slot;
};

/* webhook_b64_value - the 6-bit value of a standard base64 digit, or -1. */
static int webhook_b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* webhook_b64_decode - strict standard base64 (padding optional) of s
 * into out (room for strlen(s) / 4 * 3 + 3 bytes); -1 if malformed. */
static int webhook_b64_decode(const char *s, unsigned char *out, size_t *outlen)
{
    size_t len = strlen(s), n = len, o = 0;
    unsigned int acc = 0;
    int bits = 0;

    while (n > 0 && s[n - 1] == '=')
        n--;
    if (len - n > 2 || (len != n && len % 4 != 0) || n % 4 == 1 || n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int v = webhook_b64_value(s[i]);

        if (v < 0)
            return -1;
        acc = ((acc << 6) | (unsigned int)v) & 0xffffffu;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    *outlen = o;
    return 0;
}

/*
 * webhook_key_free - clear len bytes of key, then free it.  NULL is a
 * no-op.
 */
void webhook_key_free(unsigned char *key, size_t len)
{
    if (key == NULL)
        return;
    OPENSSL_cleanse(key, len);
    herold_free(key);
}

/*
 * webhook_secret_key - the signing key for a resolved secret.  A secret
 * starting with "whsec_" is the Standard Webhooks form and the key is the
 * base64-decoded rest; any other secret is the key, byte for byte.  The
 * key must be 16 to 256 bytes.  Returns 0 with *key a new buffer of
 * *keylen bytes (free with webhook_key_free), or -1 with err at path:
 * HERR_INPUT for bad base64 or a bad length, HERR_RESOURCE for memory.
 * Borrows secret; never copies it into err.
 */
int webhook_secret_key(const char *secret, const char *path,
                       unsigned char **key, size_t *keylen, struct herr *err)
{
    size_t slen = strlen(secret);
    unsigned char *k = herold_malloc(slen + 3);
    size_t klen = 0;

    if (k == NULL)
        return herr_set(err, HERR_RESOURCE, path, "out of memory");
    if (strncmp(secret, "whsec_", 6) == 0) {
        if (webhook_b64_decode(secret + 6, k, &klen) < 0) {
            webhook_key_free(k, slen + 3);
            return herr_set(err, HERR_INPUT, path,
                            "expected base64 after \"whsec_\"");
        }
    } else {
        memcpy(k, secret, slen);
        klen = slen;
    }
    if (klen < WEBHOOK_KEY_MIN || klen > WEBHOOK_KEY_MAX) {
        webhook_key_free(k, slen + 3);
        return herr_set(err, HERR_INPUT, path,
                        "expected a signing key of %d to %d bytes",
                        WEBHOOK_KEY_MIN, WEBHOOK_KEY_MAX);
    }
    *key = k;
    *keylen = klen;
    return 0;
}

/*
 * webhook_sign - the Standard Webhooks signature: "v1," followed by the
 * base64 of HMAC-SHA256(key, msg_id "." ts "." body) into out, which
 * must hold WEBHOOK_SIG_SIZE bytes.  Returns 0, or -1 when outsize is too
 * small or OpenSSL failed (out is then an empty string if it has room).
 * Borrows every argument.
 */
/* webhook_mac_new - an HMAC-SHA256 context keyed with key; NULL on failure. */
static EVP_MAC_CTX *webhook_mac_new(const unsigned char *key, size_t keylen)
{
    static char digest[] = "SHA256";
    OSSL_PARAM params[2];
    EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *c = m != NULL ? EVP_MAC_CTX_new(m) : NULL;

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    params[1] = OSSL_PARAM_construct_end();
    if (c != NULL && !EVP_MAC_init(c, key, keylen, params)) {
        EVP_MAC_CTX_free(c);
        c = NULL;
    }
    EVP_MAC_free(m);   /* the context keeps its own reference */
    return c;
}

/* webhook_sign_keyed - webhook_sign with a context from webhook_mac_new:
 * duplicating it skips the algorithm lookup and the key schedule. */
static int webhook_sign_keyed(const EVP_MAC_CTX *keyed, const char *msg_id, long ts,
                              const char *body, size_t body_len, char *out, size_t outsize)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t maclen = 0;
    char tsbuf[32];
    EVP_MAC_CTX *c;
    int ok;

    if (outsize > 0)
        out[0] = '\0';
    if (outsize < WEBHOOK_SIG_SIZE || keyed == NULL)
        return -1;
    snprintf(tsbuf, sizeof tsbuf, "%ld", ts);
    c = EVP_MAC_CTX_dup(keyed);
    ok = c != NULL &&
         EVP_MAC_update(c, (const unsigned char *)msg_id, strlen(msg_id)) &&
         EVP_MAC_update(c, (const unsigned char *)".", 1) &&
         EVP_MAC_update(c, (const unsigned char *)tsbuf, strlen(tsbuf)) &&
         EVP_MAC_update(c, (const unsigned char *)".", 1) &&
         EVP_MAC_update(c, (const unsigned char *)body, body_len) &&
         EVP_MAC_final(c, mac, &maclen, sizeof mac) && maclen == 32;
    EVP_MAC_CTX_free(c);
    if (!ok)
        return -1;
    memcpy(out, "v1,", 3);
    EVP_EncodeBlock((unsigned char *)out + 3, mac, (int)maclen);
    OPENSSL_cleanse(mac, sizeof mac);
    return 0;
}

int webhook_sign(const unsigned char *key, size_t keylen, const char *msg_id,
                 long ts, const char *body, size_t body_len,
                 char *out, size_t outsize)
{
    EVP_MAC_CTX *c;
    int rc;

    if (outsize > 0)
        out[0] = '\0';
    if (outsize < WEBHOOK_SIG_SIZE)
        return -1;
    c = webhook_mac_new(key, keylen);
    rc = webhook_sign_keyed(c, msg_id, ts, body, body_len, out, outsize);
    EVP_MAC_CTX_free(c);
    return rc;
}

/* webhook_name_ok - [a-z0-9-]{1,32}. */
static bool webhook_name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > WEBHOOK_NAME_MAX)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-'))
            return false;
    return true;
}

/* webhook_check_url - http(s), a host, no credentials, no blanks. */
static int webhook_check_url(const char *url, const char *path, struct herr *err)
{
    const char *host;
    size_t hostlen;

    if (strncmp(url, "https://", 8) == 0)
        host = url + 8;
    else if (strncmp(url, "http://", 7) == 0)
        host = url + 7;
    else
        return herr_set(err, HERR_INPUT, path, "expected an https:// or http:// URL");
    if (strlen(url) > WEBHOOK_URL_MAX)
        return herr_set(err, HERR_INPUT, path, "expected a URL of at most %d characters",
                        WEBHOOK_URL_MAX);
    for (const unsigned char *p = (const unsigned char *)url; *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            return herr_set(err, HERR_INPUT, path,
                            "expected a URL without spaces or control characters");
    hostlen = strcspn(host, "/?#");
    if (hostlen == 0)
        return herr_set(err, HERR_INPUT, path, "expected an https:// or http:// URL");
    if (memchr(host, '@', hostlen) != NULL)
        return herr_set(err, HERR_INPUT, path, "expected a URL without credentials (user@)");
    return 0;
}

/* webhook_unknown_keys - -1 and err at the first key of obj not in known. */
static int webhook_unknown_keys(const json_t *obj, const char *const *known,
                                const char *path, struct herr *err)
{
    const char *key;
    json_t *v;
    char kpath[sizeof err->path];

    json_object_foreach((json_t *)obj, key, v) {
        bool found = false;

        for (size_t i = 0; known[i] != NULL && !found; i++)
            found = strcmp(key, known[i]) == 0;
        if (!found) {
            snprintf(kpath, sizeof kpath, "%s.%s", path, key);
            return herr_set(err, HERR_INPUT, kpath, "unknown field");
        }
    }
    return 0;
}

/* webhook_field_string - the string at obj.name, or NULL with err. */
static const char *webhook_field_string(const json_t *obj, const char *name,
                                        const char *path, struct herr *err)
{
    char fpath[sizeof err->path];
    const json_t *v = json_object_get(obj, name);

    snprintf(fpath, sizeof fpath, "%s.%s", path, name);
    if (v == NULL) {
        herr_set(err, HERR_INPUT, fpath, "missing required field");
        return NULL;
    }
    if (!json_is_string(v)) {
        herr_set(err, HERR_INPUT, fpath, "expected a string");
        return NULL;
    }
    return json_string_value(v);
}

/* webhook_conf_endpoint - validate endpoints[i] into w->eps[i]. */
static int webhook_conf_endpoint(struct webhook *w, const json_t *obj, size_t i,
                                 struct herr *err)
{
    static const char *const known[] = {"name", "url", "secret", NULL};
    struct webhook_endpoint *ep = &w->eps[i];
    char path[64], fpath[sizeof err->path];
    const char *name, *url, *ref;
    char *secret;
    int rc;

    snprintf(path, sizeof path, WEBHOOK_CONF ".endpoints[%zu]", i);
    if (!json_is_object(obj))
        return herr_set(err, HERR_INPUT, path, "expected an object");
    if (webhook_unknown_keys(obj, known, path, err) < 0)
        return -1;

    if ((name = webhook_field_string(obj, "name", path, err)) == NULL)
        return -1;
    snprintf(fpath, sizeof fpath, "%s.name", path);
    if (!webhook_name_ok(name))
        return herr_set(err, HERR_INPUT, fpath, "expected 1-32 characters of a-z 0-9 -");
    for (size_t j = 0; j < i; j++)
        if (strcmp(w->eps[j].name, name) == 0)
            return herr_set(err, HERR_INPUT, fpath,
                            "duplicate endpoint name (also endpoints[%zu])", j);

    if ((url = webhook_field_string(obj, "url", path, err)) == NULL)
        return -1;
    snprintf(fpath, sizeof fpath, "%s.url", path);
    if (webhook_check_url(url, fpath, err) < 0)
        return -1;

    if ((ref = webhook_field_string(obj, "secret", path, err)) == NULL)
        return -1;
    snprintf(fpath, sizeof fpath, "%s.secret", path);
    if ((secret = config_secret(ref, fpath, err)) == NULL)
        return -1;
    rc = webhook_secret_key(secret, fpath, &ep->key, &ep->keylen, err);
    if (rc == 0 && (ep->mac = webhook_mac_new(ep->key, ep->keylen)) == NULL)
        rc = herr_set(err, HERR_RESOURCE, fpath, "cannot set up HMAC-SHA256");
    herold_free_secret(secret);
    if (rc < 0)
        return -1;

    ep->name = herold_strdup(name);
    ep->url = herold_strdup(url);
    if (ep->name == NULL || ep->url == NULL)
        return herr_set(err, HERR_RESOURCE, path, "out of memory");
    return 0;
}

/* webhook_conf - validate the "channels.webhook" subtree into w. */
static int webhook_conf(struct webhook *w, const json_t *conf, struct herr *err)
{
    static const char *const known[] = {"endpoints", "max_inflight", NULL};
    const json_t *eps, *mi;

    if (!json_is_object(conf))
        return herr_set(err, HERR_INPUT, WEBHOOK_CONF, "expected an object");
    if (webhook_unknown_keys(conf, known, WEBHOOK_CONF, err) < 0)
        return -1;

    w->max_inflight = WEBHOOK_INFLIGHT_DEFAULT;
    mi = json_object_get(conf, "max_inflight");
    if (mi != NULL) {
        if (!json_is_integer(mi) || json_integer_value(mi) < 1 ||
            json_integer_value(mi) > WEBHOOK_INFLIGHT_MAX)
            return herr_set(err, HERR_INPUT, WEBHOOK_CONF ".max_inflight",
                            "expected an integer from 1 to %d", WEBHOOK_INFLIGHT_MAX);
        w->max_inflight = (size_t)json_integer_value(mi);
    }

    eps = json_object_get(conf, "endpoints");
    if (eps == NULL)
        return herr_set(err, HERR_INPUT, WEBHOOK_CONF ".endpoints", "missing required field");
    if (!json_is_array(eps))
        return herr_set(err, HERR_INPUT, WEBHOOK_CONF ".endpoints", "expected an array");
    if (json_array_size(eps) == 0)
        return herr_set(err, HERR_INPUT, WEBHOOK_CONF ".endpoints",
                        "expected at least one endpoint");
    w->eps = herold_calloc(json_array_size(eps), sizeof *w->eps);
    if (w->eps == NULL)
        return herr_set(err, HERR_RESOURCE, WEBHOOK_CONF ".endpoints", "out of memory");
    /* count each endpoint as soon as it exists, so destroy frees a partial one */
    for (size_t i = 0; i < json_array_size(eps); i++) {
        w->neps = i + 1;
        if (webhook_conf_endpoint(w, json_array_get(eps, i), i, err) < 0)
            return -1;
    }
    return 0;
}

/* webhook_destroy - free state; calls still in flight are orphaned. */
static void webhook_destroy(void *state)
{
    struct webhook *w = state;

    if (w == NULL)
        return;
    if (w->inflight > 0)
        LOG(LOG_WARN, "webhook", "destroy_inflight", "inflight=%zu", w->inflight);
    /* their completions then free the context and tell nobody */
    for (struct webhook_call *c = w->calls; c != NULL; c = c->next)
        c->w = NULL;
    for (size_t i = 0; i < w->neps; i++) {
        herold_free(w->eps[i].name);
        herold_free(w->eps[i].url);
        webhook_key_free(w->eps[i].key, w->eps[i].keylen);
        EVP_MAC_CTX_free(w->eps[i].mac);
    }
    for (unsigned i = 0; i < WEBHOOK_SHARED_SLOTS; i++)
        webhook_shared_clear(&w->shared[i]);
    herold_free(w->eps);
    herold_free(w);
}

/* webhook_init - see channel.h; env may be NULL or lack http (check only). */
static int webhook_init(const struct channel_env *env, const json_t *conf,
                        struct herr *err, void **state)
{
    struct webhook *w = herold_calloc(1, sizeof *w);

    if (w == NULL)
        return herr_set(err, HERR_RESOURCE, WEBHOOK_CONF, "out of memory");
    w->http = env != NULL ? env->http : NULL;
    if (webhook_conf(w, conf, err) < 0) {
        webhook_destroy(w);
        return -1;
    }
    *state = w;
    return 0;
}

/* webhook_validate_address - the address is the opaque recipient id. */
static int webhook_validate_address(void *state, const char *addr, struct herr *err)
{
    size_t n = addr != NULL ? strlen(addr) : 0;

    (void)state;
    if (n < 1 || n > 64 ||
        strspn(addr, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                     "0123456789._:-") != n)
        return herr_set(err, HERR_INPUT, NULL,
                        "expected 1-64 characters of A-Z a-z 0-9 . _ : -");
    return 0;
}

/* webhook_limits - a webhook imposes no length limits of its own. */
static void webhook_limits(void *state, struct render_limits *out)
{
    (void)state;
    out->max_subject = 0;
    out->max_text = 0;
}

/* webhook_classify - the shared HTTP mapping; receivers speak plain HTTP. */
static void webhook_classify(void *state, const struct transport_outcome *t,
                             struct delivery_result *out)
{
    (void)state;
    channel_classify_http(t, out);
}

/* webhook_drain - refuse new work; the dispatcher aborts the transport
 * at the deadline, which ends what is still in flight. */
static void webhook_drain(void *state, ev_tstamp deadline)
{
    struct webhook *w = state;

    (void)deadline;
    w->draining = true;
}

/* webhook_pick - the endpoint named by options {"endpoint": name}, else
 * the first. */
static const struct webhook_endpoint *webhook_pick(const struct webhook *w,
                                                   const json_t *options,
                                                   struct herr *err)
{
    const json_t *v;

    if (options == NULL || json_is_null(options))
        return &w->eps[0];
    if (!json_is_object(options)) {
        herr_set(err, HERR_INPUT, "options.webhook", "expected an object");
        return NULL;
    }
    v = json_object_get(options, "endpoint");
    if (v == NULL)
        return &w->eps[0];
    if (json_is_string(v))
        for (size_t i = 0; i < w->neps; i++)
            if (strcmp(w->eps[i].name, json_string_value(v)) == 0)
                return &w->eps[i];
    herr_set(err, HERR_INPUT, "options.webhook.endpoint", "expected a configured endpoint name");
    return NULL;
}

/* webhook_str - s as a JSON string, or null when s is NULL. */
static json_t *webhook_str(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

static bool webhook_same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* webhook_shared_clear - free one cache slot. */
static void webhook_shared_clear(struct webhook_shared *sh)
{
    herold_free(sh->job_id);
    herold_free(sh->kind);
    herold_free(sh->priority);
    herold_free(sh->lang);
    herold_free(sh->subject);
    herold_free(sh->text);
    herold_free(sh->html);
    free(sh->json);
    memset(sh, 0, sizeof *sh);
}

static char *webhook_dup(const char *s)
{
    return s != NULL ? herold_strdup(s) : NULL;
}

/* webhook_shared_build - serialise the shared part of d into sh; -1 when
 * out of memory or a text is not UTF-8. */
static int webhook_shared_build(struct webhook_shared *sh, const struct delivery *d)
{
    json_t *o = json_object();
    int rc = 0;
    char *txt;

    webhook_shared_clear(sh);
    if (o == NULL)
        return -1;
    rc |= json_object_set_new(o, "job", webhook_str(d->job_id));
    rc |= json_object_set_new(o, "kind", webhook_str(d->kind));
    rc |= json_object_set_new(o, "priority", webhook_str(d->priority));
    rc |= json_object_set_new(o, "lang", webhook_str(d->lang));
    rc |= json_object_set_new(o, "subject", webhook_str(d->subject));
    rc |= json_object_set_new(o, "text", webhook_str(d->text));
    if (d->html != NULL)
        rc |= json_object_set_new(o, "html", json_string(d->html));
    /* an update or cancel names the alert it replaces (same for every
     * delivery of a job, so the cache keyed on the job id holds) */
    if (d->references != NULL) {
        rc |= json_object_set_new(o, "references", webhook_str(d->references));
        rc |= json_object_set_new(o, "msg_type", webhook_str(d->msg_type));
    }
    txt = rc == 0 ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    if (txt == NULL || strlen(txt) < 2) {
        free(txt);
        return -1;
    }
    /* keep the members without the enclosing braces */
    sh->json_len = strlen(txt) - 2;
    memmove(txt, txt + 1, sh->json_len);
    txt[sh->json_len] = '\0';
    sh->json = txt;
    sh->job_id = webhook_dup(d->job_id);
    sh->kind = webhook_dup(d->kind);
    sh->priority = webhook_dup(d->priority);
    sh->lang = webhook_dup(d->lang);
    sh->subject = webhook_dup(d->subject);
    sh->text = webhook_dup(d->text);
    sh->html = webhook_dup(d->html);
    if ((d->job_id && !sh->job_id) || (d->kind && !sh->kind) ||
        (d->priority && !sh->priority) || (d->lang && !sh->lang) ||
        (d->subject && !sh->subject) || (d->text && !sh->text) || (d->html && !sh->html)) {
        webhook_shared_clear(sh);
        return -1;
    }
    return 0;
}

/* webhook_shared_get - the cached shared part for d, building it if new. */
static const struct webhook_shared *webhook_shared_get(struct webhook *w,
                                                       const struct delivery *d)
{
    struct webhook_shared *sh;

    for (unsigned i = 0; i < WEBHOOK_SHARED_SLOTS; i++) {
        sh = &w->shared[i];
        if (sh->json != NULL && webhook_same(sh->job_id, d->job_id) &&
            webhook_same(sh->kind, d->kind) && webhook_same(sh->priority, d->priority) &&
            webhook_same(sh->lang, d->lang) && webhook_same(sh->subject, d->subject) &&
            webhook_same(sh->text, d->text) && webhook_same(sh->html, d->html))
            return sh;
    }
    sh = &w->shared[w->next_slot++ % WEBHOOK_SHARED_SLOTS];
    return webhook_shared_build(sh, d) == 0 ? sh : NULL;
}

/* webhook_plain_id - true if s needs no JSON escaping (opaque ids do not). */
static bool webhook_plain_id(const char *s)
{
    for (; *s; s++)
        if (*s < ' ' || *s > '~' || *s == '"' || *s == '\\')
            return false;
    return true;
}

/* webhook_body - the compact JSON body for d at now (herold_malloc'd,
 * free with herold_free); NULL when out of memory or a text is not UTF-8.
 * The members shared by all recipients of a job come from the cache. */
static char *webhook_body(struct webhook *w, const struct delivery *d, time_t now,
                          size_t *len)
{
    const struct webhook_shared *sh = webhook_shared_get(w, d);
    char ts[32];
    struct tm tm;
    size_t cap;
    char *out;
    int n;

    if (sh == NULL || d->rcpt_id == NULL || !webhook_plain_id(d->rcpt_id))
        return NULL;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    cap = sh->json_len + strlen(d->rcpt_id) + 128;
    out = herold_malloc(cap);
    if (out == NULL)
        return NULL;
    n = snprintf(out, cap,
                 "{\"type\":\"herold.message\",\"timestamp\":\"%s\",\"data\":{%s,"
                 "\"recipient\":\"%s\",\"attempt\":%d}}",
                 ts, sh->json, d->rcpt_id, d->attempt);
    if (n < 0 || (size_t)n >= cap) {
        herold_free(out);
        return NULL;
    }
    *len = (size_t)n;
    return out;
}

/* webhook_idem_ok - printable ASCII without blanks, 1..WEBHOOK_IDEM_MAX. */
static bool webhook_idem_ok(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;

    if (n < 1 || n > WEBHOOK_IDEM_MAX)
        return false;
    for (; *s; s++)
        if (*s <= ' ' || *s > '~')
            return false;
    return true;
}

/* webhook_on_http_done - the transport finished: classify, tell the
 * dispatcher once, free the context. */
static void webhook_on_http_done(void *arg, const struct transport_outcome *o)
{
    struct webhook_call *call = arg;
    struct webhook *w = call->w;
    channel_done_fn *done = call->done;
    void *darg = call->arg;
    struct delivery_result res;

    if (w == NULL) {
        herold_free(call);
        return;
    }
    webhook_classify(w, o, &res);
    LOG(LOG_DEBUG, "webhook", "http_done", "endpoint=%s http=%d status=%d in_doubt=%d",
        call->endpoint, res.provider_code, (int)res.status, (int)res.in_doubt);
    if (call->prev != NULL)
        call->prev->next = call->next;
    else
        w->calls = call->next;
    if (call->next != NULL)
        call->next->prev = call->prev;
    w->inflight--;
    /* free first: done may destroy the channel or submit again */
    herold_free(call);
    done(darg, &res);
}

/* webhook_submit - see channel.h and the file comment. */
static int webhook_submit(void *state, const struct delivery *d,
                          channel_done_fn *done, void *arg, struct herr *err)
{
    struct webhook *w = state;
    const struct webhook_endpoint *ep;
    struct webhook_call *call = NULL;
    char h_id[WEBHOOK_IDEM_MAX + 32], h_idem[WEBHOOK_IDEM_MAX + 32];
    char h_ts[48], h_sig[WEBHOOK_SIG_SIZE + 32], sig[WEBHOOK_SIG_SIZE];
    const char *msg_id = h_id + strlen("webhook-id: ");
    const char *headers[] = {"Content-Type: application/json", "User-Agent: herold/0.1",
                             h_id, h_ts, h_sig, h_idem, NULL};
    struct http_request req;
    time_t now = time(NULL);
    char *body = NULL;
    size_t body_len = 0;

    if (w->draining)
        return herr_set(err, HERR_TRANSIENT, NULL, "draining");
    if (w->http == NULL)
        return herr_set(err, HERR_TRANSIENT, NULL, "no HTTP transport (configuration check only)");
    /* bad input first: retrying it later would not help */
    if (!webhook_idem_ok(d->idem_key))
        return herr_set(err, HERR_INPUT, "idem_key", "expected 1-%d printable characters",
                        WEBHOOK_IDEM_MAX);
    if ((ep = webhook_pick(w, d->options, err)) == NULL)
        return -1;
    if (w->inflight >= w->max_inflight)
        return herr_set(err, HERR_TRANSIENT, NULL, "too many webhook requests in flight");

    snprintf(h_id, sizeof h_id, "webhook-id: msg_%s", d->idem_key);
    snprintf(h_idem, sizeof h_idem, "Idempotency-Key: msg_%s", d->idem_key);
    snprintf(h_ts, sizeof h_ts, "webhook-timestamp: %lld", (long long)now);
    body = webhook_body(w, d, now, &body_len);
    if (body == NULL)
        return herr_set(err, HERR_RESOURCE, NULL, "cannot build the webhook body");
    if (webhook_sign_keyed(ep->mac, msg_id, (long)now, body, body_len, sig, sizeof sig) < 0) {
        herr_set(err, HERR_RESOURCE, NULL, "cannot sign the webhook body");
        goto fail;
    }
    snprintf(h_sig, sizeof h_sig, "webhook-signature: %s", sig);
    call = herold_calloc(1, sizeof *call);
    if (call == NULL) {
        herr_set(err, HERR_RESOURCE, NULL, "out of memory");
        goto fail;
    }
    call->w = w;
    call->endpoint = ep->name;
    call->done = done;
    call->arg = arg;
    req = (struct http_request){.method = "POST", .url = ep->url, .headers = headers,
                                .body = body, .body_len = body_len};
    /* the transport copies url, headers and body; ours go right after */
    if (http_submit(w->http, &req, webhook_on_http_done, call, err) < 0)
        goto fail;
    call->next = w->calls;
    if (w->calls != NULL)
        w->calls->prev = call;
    w->calls = call;
    w->inflight++;
    herold_free(body);
    return 0;

fail:
    herold_free(call);
    herold_free(body);
    return -1;
}

const struct channel_ops webhook_channel = {
    .name = "webhook",
    .init = webhook_init,
    .validate_address = webhook_validate_address,
    .limits = webhook_limits,
    .submit = webhook_submit,
    .classify = webhook_classify,
    .drain = webhook_drain,
    .destroy = webhook_destroy,
};
