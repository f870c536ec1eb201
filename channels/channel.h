/*
 * channel - the one small interface every delivery channel implements.
 *
 * A channel is a Postfix delivery agent shrunk to a table of function
 * pointers.  The dispatcher knows channels only through this table; a
 * channel knows the dispatcher only through struct delivery and the
 * completion callback.
 *
 * Contract:
 *  - init() reads the channel's config subtree (conf, at JSON path
 *    "channels.<name>"), resolves its secrets, keeps what it needs from env
 *    and opens no sockets.  On error it fills err with the JSON path of the
 *    offending field and returns -1.  init() is also what
 *    `heroldd --check-config` runs, so it must have no side effects.
 *  - submit() returns 0 for "accepted": done then runs exactly once, on the
 *    loop thread, never before submit() returns (instant results are
 *    deferred through a zero timer).  -1 means "refused": err is filled,
 *    done never runs, and the dispatcher treats the unit as transient.
 *  - The dispatcher owns d until done fires; the channel copies what it
 *    needs to keep.  The channel owns only its per-delivery context.
 *  - classify() is pure (no I/O), so unit tests drive it from a table.
 *  - drain() stops new work and ends every in-flight delivery by the
 *    deadline, each with a done; unfinished ones are DELIVERY_TRANSIENT.
 *  - destroy() frees the state; no done runs after it returns.
 */
#ifndef HEROLD_CHANNEL_H
#define HEROLD_CHANNEL_H

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>

#include "../dispatcher/herr.h"

struct http_transport;

enum delivery_status { DELIVERY_OK, DELIVERY_TRANSIENT, DELIVERY_PERMANENT };

struct delivery_result {
    enum delivery_status status;
    long retry_after_ms;      /* -1: no hint from the provider */
    int provider_code;        /* HTTP status or SMTP reply code, 0 if none */
    bool in_doubt;            /* the provider may have acted (timeout after send) */
    char reason[160];         /* for operators; never personal data */
};

typedef void channel_done_fn(void *arg, const struct delivery_result *res);

/* What the loop offers every channel. */
struct channel_env {
    struct ev_loop *loop;
    struct http_transport *http;   /* shared HTTP transport (curl multi) */
    bool check_only;               /* --check-config: validate, start nothing */
};

/* One unit of work: one recipient on one channel for one job.  All strings
 * are borrowed from the dispatcher and valid until done fires. */
struct delivery {
    const char *job_id;
    const char *kind;         /* alert | announcement | newsletter | notice */
    const char *priority;     /* urgent | normal | bulk */
    const char *rcpt_id;      /* opaque recipient id from the job */
    const char *address;      /* this channel's contact point, or NULL */
    const char *idem_key;     /* stable per (job, recipient, channel) */
    int attempt;              /* 1 for the first try */
    const char *lang;
    const char *topic;        /* the job's topic, or NULL */
    const char *references;   /* an update/cancel: the earlier alert's job id, or NULL */
    const char *msg_type;     /* "alert", "update" or "cancel" */
    const char *subject;
    const char *text;
    const char *html;         /* may be NULL */
    char *const *parts;       /* the job's rendered parts, indexed by enum
                                 job_part (dispatcher/job.h); NULL = absent */
    const json_t *options;    /* the job's options for this channel, or NULL */
};

/* What a transport saw; the input to classify(). */
enum transport_kind {
    TRANSPORT_DONE,          /* a complete reply arrived */
    TRANSPORT_TIMEOUT,       /* no complete reply within the deadline */
    TRANSPORT_CONNECT,       /* could not connect or resolve */
    TRANSPORT_TLS,           /* TLS handshake or verification failed */
    TRANSPORT_PROTOCOL,      /* garbage, oversize or broken reply */
    TRANSPORT_ABORTED,       /* cut short by drain */
    TRANSPORT_LOCAL          /* local error (memory, descriptors) */
};

struct transport_outcome {
    enum transport_kind kind;
    int code;                 /* HTTP status or SMTP reply code, 0 if none */
    long retry_after_ms;      /* parsed Retry-After, -1 if absent */
    bool request_sent;        /* the whole request reached the peer */
    const char *body;         /* reply body (capped), borrowed, may be NULL */
    size_t body_len;
    char detail[120];         /* transport's own words, no personal data */
};

struct render_limits {
    int max_subject;          /* characters, 0 = none */
    int max_text;             /* characters, 0 = none */
};

struct channel_ops {
    const char *name;
    int  (*init)(const struct channel_env *env, const json_t *conf,
                 struct herr *err, void **state);
    int  (*validate_address)(void *state, const char *addr, struct herr *err);
    void (*limits)(void *state, struct render_limits *out);
    int  (*submit)(void *state, const struct delivery *d,
                   channel_done_fn *done, void *arg, struct herr *err);
    void (*classify)(void *state, const struct transport_outcome *t,
                     struct delivery_result *out);
    void (*drain)(void *state, ev_tstamp deadline);
    void (*destroy)(void *state);
    /* The recipient field that holds this channel's address: "email" or
     * "phone"; NULL means the recipient id itself (webhook). */
    const char *contact;
};

/* channel_classify_http - the shared HTTP mapping: 2xx delivered; 429 and
 * 5xx transient (with Retry-After); 408 and 425 transient; other 4xx
 * permanent; timeouts, connection and TLS errors transient; a timeout or
 * broken reply after the request was sent is marked in_doubt. */
void channel_classify_http(const struct transport_outcome *t,
                           struct delivery_result *out);

/* registry: the static table of known channels (registry.c). */
const struct channel_ops *channel_find(const char *name);
/* channel_registry_check - -1 and err if two entries share a name. */
int channel_registry_check(struct herr *err);
/* channel_each - call fn for each registered channel in table order. */
void channel_each(void (*fn)(const struct channel_ops *ops, void *arg), void *arg);

#endif
