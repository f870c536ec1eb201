/*
 * email - the e-mail channel: each delivery becomes one MIME message
 * (mime.c) to the recipient's address, optionally DKIM-signed (dkim.c, in
 * the worker thread), sent through the libESMTP worker pool (smtp_pool.c).
 *
 * Owns the pool, the DKIM signer and its settings.  Newsletters and
 * announcements carry a per-recipient List-Unsubscribe (https one-click,
 * RFC 8058, and mailto) with a signed token, a List-Id and the bulk
 * headers; urgent alerts carry no unsubscribe for the alert topic but a
 * note on how to change preferences.  The Message-ID is derived from the
 * delivery's idempotency key, so a resend after a connection lost past
 * the final dot keeps it and the receiver can discard the copy.
 *
 * Never logs addresses, bodies or secrets; never builds SMTP command lines
 * (libESMTP does, from addresses mime_address_ok accepted).
 */
#include "email.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../config/config.h"
#include "../dispatcher/alloc.h"
#include "../dispatcher/job.h"
#include "../dispatcher/log.h"
#include "dkim.h"
#include "mime.h"
#include "smtp_pool.h"

#define EMAIL_CONF "channels.email"

struct email {
    struct smtp_pool *pool;
    struct dkim_signer *dkim;
    char *from_addr, *from_name, *reply_to, *envelope_from, *msgid_domain;
    char *list_id, *list_name;
    char *unsub_url, *unsub_mailto;   /* url holds "{token}" */
    char *unsub_key;                  /* secret */
    char *alert_note;
    bool destroyed;
};

struct email_call {
    struct email *e;
    channel_done_fn *done;
    void *arg;
};

static const char *email_str(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* email_field - copy the optional string o.k into *out; -1 and err when
 * it is there but not a string. */
static int email_field(const json_t *o, const char *k, const char *path, char **out,
                       struct herr *err)
{
    json_t *v = json_object_get(o, k);
    char p[160];

    *out = NULL;
    if (v == NULL)
        return 0;
    snprintf(p, sizeof p, "%s.%s", path, k);
    if (!json_is_string(v) || json_string_length(v) == 0)
        return herr_set(err, HERR_INPUT, p, "expected a non-empty string");
    *out = herold_strdup(json_string_value(v));
    return *out ? 0 : herr_set(err, HERR_RESOURCE, p, "out of memory");
}

/* email_known - every key of o is in the NULL-terminated list. */
static int email_known(const json_t *o, const char *path, const char *const *known,
                       struct herr *err)
{
    const char *k;
    json_t *v;

    json_object_foreach((json_t *)o, k, v) {
        bool ok = false;
        for (size_t i = 0; known[i]; i++)
            ok |= strcmp(known[i], k) == 0;
        if (!ok) {
            char p[200];
            snprintf(p, sizeof p, "%s.%.60s", path, k);
            return herr_set(err, HERR_INPUT, p, "unknown field");
        }
    }
    return 0;
}

static int email_int(const json_t *o, const char *k, const char *path, long lo, long hi,
                     long *out, struct herr *err)
{
    json_t *v = json_object_get(o, k);
    char p[160];

    if (v == NULL)
        return 0;
    snprintf(p, sizeof p, "%s.%s", path, k);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return herr_set(err, HERR_INPUT, p, "expected an integer from %ld to %ld", lo, hi);
    *out = (long)json_integer_value(v);
    return 0;
}

/* email_secret - resolve the secret reference at o.k (optional). */
static int email_secret(const json_t *o, const char *k, const char *path, char **out,
                        struct herr *err)
{
    const char *ref = email_str(o, k);
    char p[160];

    *out = NULL;
    snprintf(p, sizeof p, "%s.%s", path, k);
    if (json_object_get(o, k) != NULL && ref == NULL)
        return herr_set(err, HERR_INPUT, p, "expected a string");
    if (ref == NULL)
        return 0;
    *out = config_secret(ref, p, err);
    return *out ? 0 : -1;
}

static void email_free(struct email *e)
{
    if (e == NULL)
        return;
    herold_free(e->from_addr);
    herold_free(e->from_name);
    herold_free(e->reply_to);
    herold_free(e->envelope_from);
    herold_free(e->msgid_domain);
    herold_free(e->list_id);
    herold_free(e->list_name);
    herold_free(e->unsub_url);
    herold_free(e->unsub_mailto);
    herold_free_secret(e->unsub_key);
    herold_free(e->alert_note);
    herold_free(e);
}

/* email_relay - the "relay" object into a pool configuration. */
static int email_relay(const json_t *conf, struct smtp_pool_config *pc, char **password,
                       struct herr *err)
{
    static const char *const known[] = {"host", "port", "starttls", "ehlo", "username",
                                        "password", "ca_file", NULL};
    const json_t *r = json_object_get(conf, "relay");
    const char *path = EMAIL_CONF ".relay";
    const char *tls;
    long port = 587;

    if (r == NULL || !json_is_object(r))
        return herr_set(err, HERR_INPUT, path, "expected an object with at least \"host\"");
    if (email_known(r, path, known, err) != 0)
        return -1;
    pc->host = email_str(r, "host");
    if (pc->host == NULL)
        return herr_set(err, HERR_INPUT, EMAIL_CONF ".relay.host", "expected a host name");
    if (email_int(r, "port", path, 1, 65535, &port, err) != 0)
        return -1;
    pc->port = (int)port;
    tls = email_str(r, "starttls");
    if (tls == NULL || strcmp(tls, "required") == 0)
        pc->starttls = SMTP_STARTTLS_REQUIRED;
    else if (strcmp(tls, "opportunistic") == 0)
        pc->starttls = SMTP_STARTTLS_OPPORTUNISTIC;
    else if (strcmp(tls, "off") == 0)
        pc->starttls = SMTP_STARTTLS_OFF;
    else
        return herr_set(err, HERR_INPUT, EMAIL_CONF ".relay.starttls",
                        "expected \"required\", \"opportunistic\" or \"off\"");
    pc->ehlo_name = email_str(r, "ehlo");
    pc->username = email_str(r, "username");
    pc->ca_file = email_str(r, "ca_file");
    if (email_secret(r, "password", path, password, err) != 0)
        return -1;
    pc->password = *password;
    if ((pc->username == NULL) != (*password == NULL))
        return herr_set(err, HERR_INPUT, EMAIL_CONF ".relay.password",
                        "username and password go together");
    return 0;
}

/* email_conf - everything but the relay. */
static int email_conf(struct email *e, const json_t *conf, struct smtp_pool_config *pc,
                      struct herr *err)
{
    static const char *const known[] = {"relay", "from", "reply_to", "envelope_from",
                                        "message_id_domain", "list_id", "list_name",
                                        "unsubscribe", "alert_note", "dkim", "workers",
                                        "queue_max", "max_per_session", "connect_timeout_ms",
                                        "command_timeout_ms", "data_timeout_ms", NULL};
    static const char *const unsub_known[] = {"url", "mailto", "key", NULL};
    const json_t *from = json_object_get(conf, "from"), *u;
    long v;

    if (email_known(conf, EMAIL_CONF, known, err) != 0)
        return -1;
    if (from == NULL || !json_is_object(from))
        return herr_set(err, HERR_INPUT, EMAIL_CONF ".from",
                        "expected {\"address\": ..., \"name\": ...}");
    if (email_field(from, "address", EMAIL_CONF ".from", &e->from_addr, err) ||
        email_field(from, "name", EMAIL_CONF ".from", &e->from_name, err))
        return -1;
    if (e->from_addr == NULL || !mime_address_ok(e->from_addr))
        return herr_set(err, HERR_INPUT, EMAIL_CONF ".from.address",
                        "expected an e-mail address");
    if (email_field(conf, "reply_to", EMAIL_CONF, &e->reply_to, err) ||
        email_field(conf, "envelope_from", EMAIL_CONF, &e->envelope_from, err) ||
        email_field(conf, "message_id_domain", EMAIL_CONF, &e->msgid_domain, err) ||
        email_field(conf, "list_id", EMAIL_CONF, &e->list_id, err) ||
        email_field(conf, "list_name", EMAIL_CONF, &e->list_name, err) ||
        email_field(conf, "alert_note", EMAIL_CONF, &e->alert_note, err))
        return -1;
    if (e->reply_to && !mime_address_ok(e->reply_to))
        return herr_set(err, HERR_INPUT, EMAIL_CONF ".reply_to", "expected an e-mail address");
    if (e->envelope_from && !mime_address_ok(e->envelope_from))
        return herr_set(err, HERR_INPUT, EMAIL_CONF ".envelope_from",
                        "expected an e-mail address");
    if (e->msgid_domain == NULL &&
        (e->msgid_domain = herold_strdup(strchr(e->from_addr, '@') + 1)) == NULL)
        return herr_set(err, HERR_RESOURCE, EMAIL_CONF, "out of memory");
    if (e->alert_note == NULL &&
        (e->alert_note = herold_strdup("Sie erhalten diese Warnung, weil Sie Warnungen "
                                       "abonniert haben. Ihre Einstellungen können Sie "
                                       "jederzeit im Bürgerservice ändern.")) == NULL)
        return herr_set(err, HERR_RESOURCE, EMAIL_CONF, "out of memory");
    u = json_object_get(conf, "unsubscribe");
    if (u != NULL) {
        if (!json_is_object(u))
            return herr_set(err, HERR_INPUT, EMAIL_CONF ".unsubscribe", "expected an object");
        if (email_known(u, EMAIL_CONF ".unsubscribe", unsub_known, err) != 0)
            return -1;
        if (email_field(u, "url", EMAIL_CONF ".unsubscribe", &e->unsub_url, err) ||
            email_field(u, "mailto", EMAIL_CONF ".unsubscribe", &e->unsub_mailto, err) ||
            email_secret(u, "key", EMAIL_CONF ".unsubscribe", &e->unsub_key, err))
            return -1;
        if (e->unsub_url == NULL || strncmp(e->unsub_url, "https://", 8) != 0 ||
            strstr(e->unsub_url, "{token}") == NULL)
            return herr_set(err, HERR_INPUT, EMAIL_CONF ".unsubscribe.url",
                            "expected an https:// URL containing {token}");
        if (e->unsub_mailto != NULL && !mime_address_ok(e->unsub_mailto))
            return herr_set(err, HERR_INPUT, EMAIL_CONF ".unsubscribe.mailto",
                            "expected an e-mail address");
        if (e->unsub_key == NULL || strlen(e->unsub_key) < 16)
            return herr_set(err, HERR_INPUT, EMAIL_CONF ".unsubscribe.key",
                            "expected a secret of at least 16 bytes");
    }
    v = 0;
    if (email_int(conf, "workers", EMAIL_CONF, 1, 256, &v, err))
        return -1;
    pc->workers = (int)v;
    v = 0;
    if (email_int(conf, "queue_max", EMAIL_CONF, 1, 1000000, &v, err))
        return -1;
    pc->queue_max = (int)v;
    v = 0;
    if (email_int(conf, "max_per_session", EMAIL_CONF, 1, 10000, &v, err))
        return -1;
    pc->max_per_session = (int)v;
    if (email_int(conf, "connect_timeout_ms", EMAIL_CONF, 100, 600000, &pc->connect_timeout_ms,
                  err) ||
        email_int(conf, "command_timeout_ms", EMAIL_CONF, 100, 3600000,
                  &pc->command_timeout_ms, err) ||
        email_int(conf, "data_timeout_ms", EMAIL_CONF, 100, 3600000, &pc->data_timeout_ms, err))
        return -1;
    return 0;
}

/* email_dkim - the optional signer from "dkim": {domain, selector, key}. */
static int email_dkim(struct email *e, const json_t *conf, struct herr *err)
{
    static const char *const known[] = {"domain", "selector", "key", NULL};
    const json_t *d = json_object_get(conf, "dkim");
    char *key = NULL;

    if (d == NULL)
        return 0;
    if (!json_is_object(d))
        return herr_set(err, HERR_INPUT, EMAIL_CONF ".dkim", "expected an object");
    if (email_known(d, EMAIL_CONF ".dkim", known, err) ||
        email_secret(d, "key", EMAIL_CONF ".dkim", &key, err))
        return -1;
    if (key == NULL)
        return herr_set(err, HERR_INPUT, EMAIL_CONF ".dkim.key", "expected a PEM private key");
    e->dkim = dkim_signer_new(email_str(d, "domain") ? email_str(d, "domain") : "",
                              email_str(d, "selector") ? email_str(d, "selector") : "", key,
                              err);
    herold_free_secret(key);
    return e->dkim ? 0 : -1;
}

/* email_sign - the pool's signing hook, run in a worker thread. */
static int email_sign(void *arg, const char *data, size_t len, char **header, struct herr *err)
{
    return dkim_signer_sign(arg, data, len, header, err);
}

static int email_init(const struct channel_env *env, const json_t *conf, struct herr *err,
                      void **state)
{
    struct email *e = herold_calloc(1, sizeof *e);
    struct smtp_pool_config pc = {0};
    char *password = NULL;

    *state = NULL;
    if (e == NULL)
        return herr_set(err, HERR_RESOURCE, EMAIL_CONF, "out of memory");
    if (!json_is_object(conf)) {
        herr_set(err, HERR_INPUT, EMAIL_CONF, "expected an object");
        goto fail;
    }
    if (email_conf(e, conf, &pc, err) != 0 || email_relay(conf, &pc, &password, err) != 0 ||
        email_dkim(e, conf, err) != 0)
        goto fail;
    if (e->dkim) {
        pc.sign = email_sign;
        pc.sign_arg = e->dkim;
    }
    /* --check-config runs init too: validate, but start no threads */
    if (env != NULL && !env->check_only) {
        e->pool = smtp_pool_new(env->loop, &pc, err);
        if (e->pool == NULL)
            goto fail;
    }
    herold_free_secret(password);
    *state = e;
    return 0;
fail:
    herold_free_secret(password);
    dkim_signer_free(e->dkim);
    email_free(e);
    return -1;
}

static int email_validate_address(void *state, const char *addr, struct herr *err)
{
    (void)state;
    if (addr == NULL || !mime_address_ok(addr))
        return herr_set(err, HERR_INPUT, "address", "not a deliverable e-mail address");
    return 0;
}

static void email_limits(void *state, struct render_limits *out)
{
    (void)state;
    out->max_subject = 998;
    out->max_text = 0;
}

/* email_token - the unsubscribe token for recipient rid and topic:
 * "<rid>.<topic>.<24 hex of HMAC-SHA256(key, rid NUL topic)>".  The
 * unsubscribe endpoint recomputes the MAC; nothing is stored per mail. */
static void email_token(const struct email *e, const char *rid, const char *topic,
                        char *out, size_t size)
{
    unsigned char mac[EVP_MAX_MD_SIZE], in[200];
    unsigned int maclen = 0;
    static const char hex[] = "0123456789abcdef";
    int n = snprintf((char *)in, sizeof in, "%s%c%s", rid, 0, topic);
    char h[25];

    HMAC(EVP_sha256(), e->unsub_key, (int)strlen(e->unsub_key), in, (size_t)n, mac, &maclen);
    for (int i = 0; i < 12; i++) {
        h[2 * i] = hex[mac[i] >> 4];
        h[2 * i + 1] = hex[mac[i] & 15];
    }
    h[24] = '\0';
    snprintf(out, size, "%s.%s.%s", rid, topic, h);
}

/* email_replace - s with the first "{token}" replaced by token. */
static char *email_replace(const char *s, const char *token)
{
    const char *at = strstr(s, "{token}");
    size_t n = strlen(s) + strlen(token) + 1;
    char *out = herold_malloc(n);

    if (out == NULL || at == NULL) {
        herold_free(out);
        return NULL;
    }
    snprintf(out, n, "%.*s%s%s", (int)(at - s), s, token, at + 7);
    return out;
}

/* email_with_note - text followed by the alert note (a new string). */
static char *email_with_note(const char *text, const char *note, bool html)
{
    size_t n = strlen(text) + strlen(note) * 6 + 64;
    char *out = herold_malloc(n), *o;

    if (out == NULL)
        return NULL;
    o = out + snprintf(out, n, "%s%s", text, html ? "\n<hr>\n<p>" : "\n\n-- \n");
    for (const char *p = note; *p; p++) {
        const char *rep = NULL;
        if (html && *p == '<') rep = "&lt;";
        else if (html && *p == '>') rep = "&gt;";
        else if (html && *p == '&') rep = "&amp;";
        else if (html && *p == '"') rep = "&quot;";
        if (rep) {
            memcpy(o, rep, strlen(rep));
            o += strlen(rep);
        } else {
            *o++ = *p;
        }
    }
    strcpy(o, html ? "</p>\n" : "\n");
    return out;
}

static void email_on_done(void *arg, const struct smtp_result *r)
{
    struct email_call *c = arg;
    struct delivery_result res = {DELIVERY_TRANSIENT, -1, r->code, r->in_doubt, ""};

    if (c->e->destroyed) {       /* the dispatcher is gone: tell nobody */
        herold_free(c);
        return;
    }
    res.status = r->cls == SMTP_OK ? DELIVERY_OK
                 : r->cls == SMTP_PERMANENT ? DELIVERY_PERMANENT : DELIVERY_TRANSIENT;
    snprintf(res.reason, sizeof res.reason, "%s", r->reason);
    if (res.status == DELIVERY_PERMANENT)
        LOG(LOG_INFO, "email", "bounced", "code=%d", r->code);
    channel_done_fn *done = c->done;
    void *darg = c->arg;
    herold_free(c);
    done(darg, &res);
}

static int email_submit(void *state, const struct delivery *d, channel_done_fn *done,
                        void *arg, struct herr *err)
{
    struct email *e = state;
    bool alert = d->kind != NULL && strcmp(d->kind, "alert") == 0;
    char msgid[MIME_MSGID_MAX + 1], token[200];
    char *text = NULL, *html = NULL, *unsub = NULL, *mailto = NULL, *data = NULL;
    size_t len = 0;
    struct smtp_message *msg = NULL;
    struct email_call *call = NULL;
    struct mime_message m = {0};
    const char *subject = d->parts ? d->parts[JOB_PART_EMAIL_SUBJECT] : d->subject;
    const char *body = d->parts ? d->parts[JOB_PART_EMAIL_TXT] : d->text;
    const char *hbody = d->parts ? d->parts[JOB_PART_EMAIL_HTML] : d->html;
    int rc = -1;

    if (e->pool == NULL)
        return herr_set(err, HERR_TRANSIENT, NULL, "no SMTP pool (configuration check only)");
    if (d->address == NULL || !mime_address_ok(d->address))
        return herr_set(err, HERR_INPUT, "address", "not a deliverable e-mail address");
    if (mime_message_id(msgid, sizeof msgid, d->idem_key, e->msgid_domain) != 0)
        return herr_set(err, HERR_INPUT, "idem_key", "cannot form a Message-ID");
    m.from_addr = e->from_addr;
    m.from_name = e->from_name;
    m.to_addr = d->address;
    m.reply_to = e->reply_to;
    m.subject = subject ? subject : "";
    m.text = body ? body : "";
    m.html = hbody;
    m.message_id = msgid;
    m.date = time(NULL);
    m.list_id = e->list_id;
    m.list_name = e->list_name;
    m.bulk = !alert;
    if (alert) {
        /* no unsubscribe from warnings, but how to change preferences */
        text = email_with_note(m.text, e->alert_note, false);
        html = hbody ? email_with_note(hbody, e->alert_note, true) : NULL;
        if (text == NULL || (hbody && html == NULL))
            goto oom;
        m.text = text;
        m.html = html;
    } else if (e->unsub_url != NULL) {
        /* the link ends this topic's messages; without one, all of them */
        email_token(e, d->rcpt_id, d->topic ? d->topic : "all", token, sizeof token);
        unsub = email_replace(e->unsub_url, token);
        if (unsub == NULL)
            goto oom;
        m.unsub_https = unsub;
        if (e->unsub_mailto) {
            size_t n = strlen(e->unsub_mailto) + strlen(token) + 40;
            if ((mailto = herold_malloc(n)) == NULL)
                goto oom;
            snprintf(mailto, n, "mailto:%s?subject=unsubscribe%%20%s", e->unsub_mailto, token);
            m.unsub_mailto = mailto;
        }
    }
    if (mime_build(&m, &data, &len, err) != 0)
        goto out;
    msg = smtp_message_new(e->envelope_from ? e->envelope_from : e->from_addr, d->address,
                           data, len, err);
    if (msg == NULL)
        goto out;
    call = herold_calloc(1, sizeof *call);
    if (call == NULL)
        goto oom;
    call->e = e;
    call->done = done;
    call->arg = arg;
    if (smtp_pool_submit(e->pool, msg, email_on_done, call, err) != 0)
        goto out;
    msg = NULL;
    call = NULL;
    rc = 0;
    goto out;
oom:
    herr_set(err, HERR_RESOURCE, NULL, "out of memory");
out:
    smtp_message_free(msg);
    herold_free(call);
    herold_free(data);
    herold_free(text);
    herold_free(html);
    herold_free(unsub);
    herold_free(mailto);
    return rc;
}

static void email_classify(void *state, const struct transport_outcome *t,
                           struct delivery_result *out)
{
    (void)state;
    memset(out, 0, sizeof *out);
    out->retry_after_ms = -1;
    out->provider_code = t->code;
    if (t->kind == TRANSPORT_DONE && t->code >= 200 && t->code < 300)
        out->status = DELIVERY_OK;
    else if (t->kind == TRANSPORT_DONE && t->code >= 500 && t->code < 600)
        out->status = DELIVERY_PERMANENT;
    else
        out->status = DELIVERY_TRANSIENT;
    out->in_doubt = t->kind != TRANSPORT_DONE && t->request_sent;
    snprintf(out->reason, sizeof out->reason, "smtp %d", t->code);
}

static void email_drain(void *state, ev_tstamp deadline)
{
    struct email *e = state;

    if (e->pool)
        smtp_pool_drain(e->pool, deadline);
}

static void email_destroy(void *state)
{
    struct email *e = state;

    if (e == NULL)
        return;
    e->destroyed = true;        /* pool_free still runs our done: tell nobody */
    smtp_pool_free(e->pool);
    dkim_signer_free(e->dkim);
    email_free(e);
}

const struct channel_ops email_channel = {
    .name = "email",
    .init = email_init,
    .validate_address = email_validate_address,
    .limits = email_limits,
    .submit = email_submit,
    .classify = email_classify,
    .drain = email_drain,
    .destroy = email_destroy,
    .contact = "email",
};
