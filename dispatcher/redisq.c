/*
 * redisq - hiredis glue: one asynchronous, self-healing Redis connection on
 * the libev loop, plus a blocking variant for the CLI.
 *
 * Owns the redisAsyncContext, the reconnect timer and the watchdog timer.
 * Every command carries a small record (struct redisq_cmd) in a FIFO,
 * because Redis answers in order on one connection: the head of the FIFO
 * is the oldest outstanding command, and the watchdog compares its
 * deadline with the clock.  hiredis conventions (REDIS_OK, redisReply)
 * are converted here and nowhere else.
 *
 * Never blocks the loop; never logs command arguments (they may hold job
 * payloads with personal data); never exits because Redis blinked.
 */
#include "redisq.h"

#include <hiredis/adapters/libev.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "../config/config.h"
#include "alloc.h"
#include "clock.h"
#include "log.h"

#define REDISQ_MAX_SCRIPTS 32

enum redisq_state { REDISQ_DOWN, REDISQ_CONNECTING, REDISQ_HANDSHAKE, REDISQ_UP, REDISQ_STOPPED };

struct redisq_cmd {
    struct redisq *q;
    redisq_reply_fn *fn;
    void *arg;
    ev_tstamp deadline;
    bool internal;            /* handshake step: fn is internal */
    struct redisq_cmd *next;
};

struct redisq {
    struct ev_loop *loop;
    const struct redisq_config *conf;
    const char *label;
    redisq_state_fn *on_state;
    void *state_arg;
    redisAsyncContext *ac;
    enum redisq_state state;
    ev_timer reconnect;
    ev_timer watchdog;
    ev_tstamp connect_deadline;
    int failures;             /* consecutive, for backoff */
    struct redisq_cmd *head, *tail;
    size_t outstanding;
    struct redisq_script *scripts[REDISQ_MAX_SCRIPTS];
    int nscripts;
    int handshake_left;
    bool handshake_failed;
};

static void redisq_teardown(struct redisq *q, const char *why);

/* redisq_backoff_ms - capped exponential backoff with +-25% jitter. */
static double redisq_backoff_s(struct redisq *q)
{
    double ms = q->conf->reconnect_min_ms;
    for (int i = 0; i < q->failures && ms < q->conf->reconnect_max_ms; i++)
        ms *= 2;
    if (ms > q->conf->reconnect_max_ms)
        ms = q->conf->reconnect_max_ms;
    ms *= 0.75 + 0.5 * ((double)rand() / RAND_MAX);
    return ms / 1000.0;
}

/* redisq_schedule_reconnect - arm the reconnect timer unless stopped. */
static void redisq_schedule_reconnect(struct redisq *q)
{
    if (q->state == REDISQ_STOPPED)
        return;
    q->state = REDISQ_DOWN;
    ev_timer_stop(q->loop, &q->reconnect);
    ev_timer_set(&q->reconnect, redisq_backoff_s(q), 0.);
    ev_timer_start(q->loop, &q->reconnect);
    q->failures++;
}

/* redisq_fifo_pop - remove and return the oldest command record. */
static struct redisq_cmd *redisq_fifo_pop(struct redisq *q)
{
    struct redisq_cmd *c = q->head;

    if (c == NULL)
        return NULL;
    q->head = c->next;
    if (q->head == NULL)
        q->tail = NULL;
    q->outstanding--;
    return c;
}

/* redisq_on_reply - hiredis callback for every command we sent. */
static void redisq_on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct redisq_cmd *c = privdata;
    struct redisq *q = c->q;
    redisReply *reply = r;

    (void)ac;
    /* Replies come in order, so c is the head; pop it defensively by
     * identity in case hiredis ever delivers out of order. */
    if (q->head == c) {
        redisq_fifo_pop(q);
    } else {
        struct redisq_cmd **pp = &q->head, *prev = NULL;
        while (*pp && *pp != c) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        if (*pp) {
            *pp = c->next;
            if (q->tail == c)
                q->tail = prev;
            q->outstanding--;
        }
    }
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0 && !c->internal) {
        c->fn(q, NULL, c->arg);
        herold_free(c);
        redisq_teardown(q, "script cache lost");
        return;
    }
    c->fn(q, (const struct redisq_reply *)reply, c->arg);
    herold_free(c);
}

/* redisq_send - queue one command on the live context. */
static int redisq_send(struct redisq *q, redisq_reply_fn *fn, void *arg, long extra_ms,
                       bool internal, int argc, const char **argv, const size_t *lens)
{
    struct redisq_cmd *c;
    size_t *owned_lens = NULL;
    int rc;

    if (q->ac == NULL)
        return -1;
    c = herold_malloc(sizeof *c);
    if (c == NULL)
        return -1;
    if (lens == NULL) {
        owned_lens = herold_malloc(sizeof *owned_lens * (size_t)(argc > 0 ? argc : 1));
        if (owned_lens == NULL) {
            herold_free(c);
            return -1;
        }
        for (int i = 0; i < argc; i++)
            owned_lens[i] = strlen(argv[i]);
        lens = owned_lens;
    }
    c->q = q;
    c->fn = fn;
    c->arg = arg;
    c->internal = internal;
    c->next = NULL;
    c->deadline = clock_mono() + (q->conf->command_timeout_ms + extra_ms) / 1000.0;
    rc = redisAsyncCommandArgv(q->ac, redisq_on_reply, c, argc, argv, lens);
    herold_free(owned_lens);
    if (rc != REDIS_OK) {
        herold_free(c);
        return -1;
    }
    if (q->tail)
        q->tail->next = c;
    else
        q->head = c;
    q->tail = c;
    q->outstanding++;
    return 0;
}

/* redisq_handshake_step - one AUTH/SETNAME/SCRIPT LOAD reply. */
static void redisq_handshake_step(struct redisq *q, const struct redisq_reply *r, void *arg)
{
    const char *what = arg;
    const redisReply *reply = (const redisReply *)r;

    if (reply == NULL)
        return; /* teardown already under way */
    if (reply->type == REDIS_REPLY_ERROR) {
        char buf[200];
        LOG(LOG_ERROR, "redisq", "handshake_failed", "conn=%s step=%s error=%s", q->label,
            what, log_quote(reply->str, buf, sizeof buf));
        q->handshake_failed = true;
    }
    if (--q->handshake_left > 0)
        return;
    if (q->handshake_failed) {
        q->handshake_failed = false;
        redisq_teardown(q, "handshake failed");
        return;
    }
    q->state = REDISQ_UP;
    q->failures = 0;
    LOG(LOG_INFO, "redisq", "connected", "conn=%s", q->label);
    if (q->on_state)
        q->on_state(q, true, q->state_arg);
}

/* redisq_handshake - AUTH, CLIENT SETNAME and SCRIPT LOAD, pipelined. */
static void redisq_handshake(struct redisq *q)
{
    const char *argv[4];
    int ok = 0;

    q->state = REDISQ_HANDSHAKE;
    q->handshake_left = 0;
    q->handshake_failed = false;
    if (q->conf->password) {
        int n = 0;
        argv[n++] = "AUTH";
        if (q->conf->username)
            argv[n++] = q->conf->username;
        argv[n++] = q->conf->password;
        q->handshake_left++;
        ok |= redisq_send(q, redisq_handshake_step, (void *)"auth", 0, true, n, argv, NULL);
    }
    argv[0] = "CLIENT";
    argv[1] = "SETNAME";
    argv[2] = q->conf->client_name ? q->conf->client_name : "heroldd";
    q->handshake_left++;
    ok |= redisq_send(q, redisq_handshake_step, (void *)"setname", 0, true, 3, argv, NULL);
    for (int i = 0; i < q->nscripts; i++) {
        argv[0] = "SCRIPT";
        argv[1] = "LOAD";
        argv[2] = q->scripts[i]->source;
        q->handshake_left++;
        ok |= redisq_send(q, redisq_handshake_step, (void *)q->scripts[i]->name, 0, true,
                          3, argv, NULL);
    }
    if (ok != 0)
        redisq_teardown(q, "could not queue handshake");
}

static void redisq_on_connect(const redisAsyncContext *ac, int status)
{
    struct redisq *q = ac->data;

    if (q == NULL || q->ac != ac)
        return;
    if (status != REDIS_OK) {
        char buf[160];
        /* hiredis frees the context itself after a failed connect. */
        LOG(LOG_WARN, "redisq", "connect_failed", "conn=%s error=%s retry=yes", q->label,
            log_quote(ac->errstr, buf, sizeof buf));
        q->ac = NULL;
        redisq_schedule_reconnect(q);
        return;
    }
    redisEnableKeepAlive(&q->ac->c);
    redisq_handshake(q);
}

static void redisq_on_disconnect(const redisAsyncContext *ac, int status)
{
    struct redisq *q = ac->data;
    bool was_up;

    if (q == NULL || q->ac != ac)
        return;   /* we tore it down ourselves */
    was_up = q->state == REDISQ_UP;
    q->ac = NULL;
    if (status != REDIS_OK) {
        char buf[160];
        LOG(LOG_WARN, "redisq", "disconnected", "conn=%s error=%s", q->label,
            log_quote(ac->errstr, buf, sizeof buf));
    }
    redisq_schedule_reconnect(q);
    if (was_up && q->on_state)
        q->on_state(q, false, q->state_arg);
}

/* redisq_teardown - free the context now (pending callbacks get NULL),
 * then reconnect after backoff unless stopped. */
static void redisq_teardown(struct redisq *q, const char *why)
{
    redisAsyncContext *ac = q->ac;
    bool was_up = q->state == REDISQ_UP;

    if (ac == NULL)
        return;
    LOG(LOG_WARN, "redisq", "teardown", "conn=%s reason=\"%s\" outstanding=%zu", q->label,
        why, q->outstanding);
    q->ac = NULL;
    ac->data = NULL;
    if (q->state != REDISQ_STOPPED)
        q->state = REDISQ_DOWN;
    redisAsyncFree(ac);
    redisq_schedule_reconnect(q);
    if (was_up && q->on_state)
        q->on_state(q, false, q->state_arg);
}

/* redisq_connect - start a non-blocking connect. */
static void redisq_connect(struct redisq *q)
{
    redisAsyncContext *ac;

    if (q->conf->unix_socket)
        ac = redisAsyncConnectUnix(q->conf->unix_socket);
    else
        ac = redisAsyncConnect(q->conf->host, q->conf->port);
    if (ac == NULL || ac->err) {
        char buf[160];
        LOG(LOG_WARN, "redisq", "connect_failed", "conn=%s error=%s retry=yes", q->label,
            log_quote(ac ? ac->errstr : "out of memory", buf, sizeof buf));
        if (ac)
            redisAsyncFree(ac);
        redisq_schedule_reconnect(q);
        return;
    }
    ac->data = q;
    q->ac = ac;
    q->state = REDISQ_CONNECTING;
    q->connect_deadline = clock_mono() + q->conf->connect_timeout_ms / 1000.0;
    redisLibevAttach(q->loop, ac);
    redisAsyncSetConnectCallback(ac, redisq_on_connect);
    redisAsyncSetDisconnectCallback(ac, redisq_on_disconnect);
}

static void redisq_on_reconnect_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct redisq *q = w->data;

    (void)loop;
    (void)revents;
    if (q->state == REDISQ_DOWN)
        redisq_connect(q);
}

/* redisq_on_watchdog - the timeouts hiredis 0.14 does not have. */
static void redisq_on_watchdog(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct redisq *q = w->data;
    ev_tstamp now = clock_mono();   /* a wall-clock jump must not fire or hide a timeout */

    (void)loop;
    (void)revents;
    if (q->state == REDISQ_CONNECTING && now > q->connect_deadline) {
        redisq_teardown(q, "connect timeout");
        return;
    }
    if (q->head != NULL && now > q->head->deadline)
        redisq_teardown(q, "command timeout: Redis does not answer");
}

struct redisq *redisq_new(struct ev_loop *loop, const struct redisq_config *conf,
                          const char *label, redisq_state_fn *on_state, void *arg)
{
    struct redisq *q = herold_calloc(1, sizeof *q);
    double tick;

    if (q == NULL)
        return NULL;
    q->loop = loop;
    q->conf = conf;
    q->label = label;
    q->on_state = on_state;
    q->state_arg = arg;
    q->state = REDISQ_STOPPED;
    ev_timer_init(&q->reconnect, redisq_on_reconnect_timer, 0., 0.);
    q->reconnect.data = q;
    tick = conf->command_timeout_ms / 4000.0;
    if (tick > 0.25)
        tick = 0.25;
    if (tick < 0.02)
        tick = 0.02;
    ev_timer_init(&q->watchdog, redisq_on_watchdog, tick, tick);
    q->watchdog.data = q;
    return q;
}

void redisq_set_state_cb(struct redisq *q, redisq_state_fn *on_state, void *arg)
{
    q->on_state = on_state;
    q->state_arg = arg;
}

void redisq_add_script(struct redisq *q, struct redisq_script *s)
{
    unsigned char md[SHA_DIGEST_LENGTH];
    static const char hex[] = "0123456789abcdef";

    SHA1((const unsigned char *)s->source, strlen(s->source), md);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++) {
        s->sha[2 * i] = hex[md[i] >> 4];
        s->sha[2 * i + 1] = hex[md[i] & 15];
    }
    s->sha[40] = '\0';
    if (q != NULL && q->nscripts < REDISQ_MAX_SCRIPTS)
        q->scripts[q->nscripts++] = s;
}

void redisq_start(struct redisq *q)
{
    q->state = REDISQ_DOWN;
    q->failures = 0;
    ev_timer_start(q->loop, &q->watchdog);
    ev_unref(q->loop);   /* the watchdog alone must not keep the loop alive */
    redisq_connect(q);
}

void redisq_stop(struct redisq *q)
{
    if (q == NULL || q->state == REDISQ_STOPPED)
        return;
    q->state = REDISQ_STOPPED;
    ev_timer_stop(q->loop, &q->reconnect);
    ev_ref(q->loop);
    ev_timer_stop(q->loop, &q->watchdog);
    if (q->ac) {
        redisAsyncContext *ac = q->ac;
        q->ac = NULL;
        ac->data = NULL;
        redisAsyncFree(ac);
    }
}

void redisq_free(struct redisq *q)
{
    if (q == NULL)
        return;
    redisq_stop(q);
    herold_free(q);
}

bool redisq_is_up(const struct redisq *q)
{
    return q->state == REDISQ_UP;
}

size_t redisq_outstanding(const struct redisq *q)
{
    return q->outstanding;
}

void redisq_reset(struct redisq *q, const char *why)
{
    redisq_teardown(q, why);
}

int redisq_argv(struct redisq *q, redisq_reply_fn *fn, void *arg, long extra_ms,
                int argc, const char **argv, const size_t *lens)
{
    if (q->state != REDISQ_UP)
        return -1;
    return redisq_send(q, fn, arg, extra_ms, false, argc, argv, lens);
}

void redisq_ignore(struct redisq *q, const struct redisq_reply *r, void *arg)
{
    (void)q;
    (void)r;
    (void)arg;
}

int redisq_eval(struct redisq *q, const struct redisq_script *s,
                redisq_reply_fn *fn, void *arg, int nkeys,
                int argc, const char **argv, const size_t *lens)
{
    const char *stack_argv[64];
    size_t stack_lens[64];
    const char **av = stack_argv;
    size_t *lv = stack_lens;
    char nk[16];
    int rc;

    if (argc + 3 > 64) {
        av = herold_malloc(sizeof *av * (size_t)(argc + 3));
        lv = herold_malloc(sizeof *lv * (size_t)(argc + 3));
        if (av == NULL || lv == NULL) {
            herold_free(av);
            herold_free(lv);
            return -1;
        }
    }
    snprintf(nk, sizeof nk, "%d", nkeys);
    av[0] = "EVALSHA";
    lv[0] = 7;
    av[1] = s->sha;
    lv[1] = 40;
    av[2] = nk;
    lv[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        av[3 + i] = argv[i];
        lv[3 + i] = lens ? lens[i] : strlen(argv[i]);
    }
    rc = redisq_argv(q, fn, arg, 0, argc + 3, av, lv);
    if (av != stack_argv) {
        herold_free(av);
        herold_free(lv);
    }
    return rc;
}

enum redisq_type redisq_reply_type(const struct redisq_reply *r)
{
    const redisReply *x = (const redisReply *)r;

    switch (x->type) {
    case REDIS_REPLY_INTEGER: return REDISQ_INT;
    case REDIS_REPLY_STRING:  return REDISQ_STR;
    case REDIS_REPLY_ARRAY:   return REDISQ_ARRAY;
    case REDIS_REPLY_STATUS:  return REDISQ_STATUS;
    case REDIS_REPLY_ERROR:   return REDISQ_ERROR;
    default:                  return REDISQ_NIL;
    }
}

long long redisq_reply_int(const struct redisq_reply *r)
{
    const redisReply *x = (const redisReply *)r;

    if (x->type == REDIS_REPLY_INTEGER)
        return x->integer;
    if (x->type == REDIS_REPLY_STRING || x->type == REDIS_REPLY_STATUS)
        return strtoll(x->str, NULL, 10);
    return 0;
}

const char *redisq_reply_str(const struct redisq_reply *r, size_t *len)
{
    const redisReply *x = (const redisReply *)r;

    if (x->type == REDIS_REPLY_STRING || x->type == REDIS_REPLY_STATUS ||
        x->type == REDIS_REPLY_ERROR) {
        if (len)
            *len = x->len;
        return x->str;
    }
    if (len)
        *len = 0;
    return "";
}

size_t redisq_reply_len(const struct redisq_reply *r)
{
    const redisReply *x = (const redisReply *)r;

    return x->type == REDIS_REPLY_ARRAY ? x->elements : 0;
}

const struct redisq_reply *redisq_reply_elem(const struct redisq_reply *r, size_t i)
{
    const redisReply *x = (const redisReply *)r;

    if (x->type != REDIS_REPLY_ARRAY || i >= x->elements)
        return NULL;
    return (const struct redisq_reply *)x->element[i];
}

bool redisq_reply_is_error(const struct redisq_reply *r, const char *prefix)
{
    const redisReply *x = (const redisReply *)r;

    return x != NULL && x->type == REDIS_REPLY_ERROR &&
           strncmp(x->str, prefix, strlen(prefix)) == 0;
}

struct redisq_config redisq_config_from(const struct config_redis *c, const char *client)
{
    return (struct redisq_config){
        .host = c->host, .port = c->port, .unix_socket = c->unix_socket,
        .username = c->username, .password = c->password, .client_name = client,
        .connect_timeout_ms = c->connect_timeout_ms,
        .command_timeout_ms = c->command_timeout_ms,
        .reconnect_min_ms = c->reconnect_min_ms, .reconnect_max_ms = c->reconnect_max_ms,
    };
}

/* ---- synchronous connection (CLI) ---- */

struct redisq_sync {
    redisContext *c;
};

struct redisq_sync *redisq_sync_open(const struct config_redis *c, const char *client,
                                     struct herr *err)
{
    struct redisq_config rc = redisq_config_from(c, client);
    struct herr own;
    struct redisq_sync *s = redisq_sync_connect(&rc, err ? err : &own);

    if (s == NULL && err == NULL)
        fprintf(stderr, "herold: %s\n", own.msg);
    return s;
}

struct redisq_sync *redisq_sync_connect(const struct redisq_config *conf, struct herr *err)
{
    struct timeval tv = {conf->connect_timeout_ms / 1000,
                         (conf->connect_timeout_ms % 1000) * 1000};
    struct timeval ctv = {conf->command_timeout_ms / 1000,
                          (conf->command_timeout_ms % 1000) * 1000};
    struct redisq_sync *s = herold_calloc(1, sizeof *s);
    redisReply *r;

    if (s == NULL) {
        herr_set(err, HERR_RESOURCE, NULL, "out of memory");
        return NULL;
    }
    if (conf->unix_socket)
        s->c = redisConnectUnixWithTimeout(conf->unix_socket, tv);
    else
        s->c = redisConnectWithTimeout(conf->host, conf->port, tv);
    if (s->c == NULL || s->c->err) {
        herr_set(err, HERR_TRANSIENT, NULL, "cannot connect to Redis: %s",
                 s->c ? s->c->errstr : "out of memory");
        goto fail;
    }
    redisSetTimeout(s->c, ctv);
    if (conf->password) {
        if (conf->username)
            r = redisCommand(s->c, "AUTH %s %s", conf->username, conf->password);
        else
            r = redisCommand(s->c, "AUTH %s", conf->password);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            herr_set(err, HERR_INPUT, "redis.password", "Redis refused the credentials");
            if (r)
                freeReplyObject(r);
            goto fail;
        }
        freeReplyObject(r);
    }
    return s;
fail:
    redisq_sync_free(s);
    return NULL;
}

struct redisq_reply *redisq_sync_argv(struct redisq_sync *s, int argc, const char **argv,
                                      const size_t *lens, struct herr *err)
{
    redisReply *r = redisCommandArgv(s->c, argc, argv, lens);

    if (r == NULL)
        herr_set(err, HERR_TRANSIENT, NULL, "Redis connection failed: %s", s->c->errstr);
    return (struct redisq_reply *)r;
}

struct redisq_reply *redisq_sync_eval(struct redisq_sync *s, const struct redisq_script *script,
                                      int nkeys, int argc, const char **argv,
                                      const size_t *lens, struct herr *err)
{
    const char **av = herold_malloc(sizeof *av * (size_t)(argc + 3));
    size_t *lv = herold_malloc(sizeof *lv * (size_t)(argc + 3));
    struct redisq_reply *r = NULL;
    char nk[16];

    if (av == NULL || lv == NULL) {
        herr_set(err, HERR_RESOURCE, NULL, "out of memory");
        goto out;
    }
    snprintf(nk, sizeof nk, "%d", nkeys);
    av[0] = "EVAL";
    av[1] = script->source;
    av[2] = nk;
    for (int i = 0; i < 3; i++)
        lv[i] = strlen(av[i]);
    for (int i = 0; i < argc; i++) {
        av[3 + i] = argv[i];
        lv[3 + i] = lens ? lens[i] : strlen(argv[i]);
    }
    r = redisq_sync_argv(s, argc + 3, av, lv, err);
out:
    herold_free(av);
    herold_free(lv);
    return r;
}

void redisq_sync_reply_free(struct redisq_reply *r)
{
    if (r)
        freeReplyObject(r);
}

void redisq_sync_free(struct redisq_sync *s)
{
    if (s == NULL)
        return;
    if (s->c)
        redisFree(s->c);
    herold_free(s);
}
