/*
 * smtp_pool - libESMTP worker threads that deliver e-mail for the loop.
 *
 * libESMTP runs a whole SMTP dialogue inside one blocking call
 * (smtp_start_session).  The pool keeps that away from the event loop:
 * the loop hands messages to a bounded queue, worker threads take them
 * in batches, each batch goes out over one SMTP connection, and the
 * results come back to the loop through an ev_async watcher.
 *
 * Life of one message:
 *
 *   queued     smtp_pool_submit() accepted it; it waits in the queue.
 *              The queue is bounded: when it is full, submit refuses
 *              with HERR_TRANSIENT (backpressure; nothing is dropped).
 *   sending    a worker took it with up to max_per_session-1 others and
 *              runs one SMTP session for all of them.
 *   reported   the worker wrote its result and woke the loop.
 *   done       the loop ran done(arg, result) exactly once and freed the
 *              message.
 *
 * Crash or stop at each step: a queued message has reached nobody.  A
 * message in "sending" may have reached the relay: its result says
 * in_doubt when the final dot went out and no reply came back (the
 * RFC 1047 gap), and the caller must resend it with the same Message-ID.
 * Only an SMTP 2xx to the final dot is OK; only a 5xx is PERMANENT;
 * everything else (4xx, connection loss, timeouts, TLS failures, a
 * draining pool) is TRANSIENT.
 *
 * Threads: every function here runs on the loop thread; done runs on
 * the loop thread too, never inside smtp_pool_submit().  Workers never
 * touch loop data.
 */
#ifndef HEROLD_SMTP_POOL_H
#define HEROLD_SMTP_POOL_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>

#include "../dispatcher/herr.h"

enum smtp_starttls {
    SMTP_STARTTLS_REQUIRED = 0,  /* default: no TLS, no session */
    SMTP_STARTTLS_OPPORTUNISTIC, /* TLS when offered; AUTH only over TLS */
    SMTP_STARTTLS_OFF            /* plaintext; AUTH only to loopback */
};

/* Optional signing hook (DKIM), run on a worker thread just before a
 * message joins a session: given the complete message, set *header to
 * a new herold_malloc'd string of one or more header lines ending in
 * CRLF, which the pool sends in front of the message and frees.
 * Returns 0, or -1 with err filled: the message then ends TRANSIENT.
 * Must be thread-safe (it runs on several workers at once). */
typedef int smtp_sign_fn(void *arg, const char *data, size_t len,
                         char **header, struct herr *err);

/* The relay and the pool's limits.  Strings are borrowed during
 * smtp_pool_new(), which copies them.  Zero means "default". */
struct smtp_pool_config {
    const char *host;            /* relay host name (required) */
    int port;                    /* default 587 */
    enum smtp_starttls starttls; /* default SMTP_STARTTLS_REQUIRED */
    const char *ehlo_name;       /* NULL: the system's host name */
    const char *username;        /* NULL: no AUTH */
    const char *password;        /* with username; cleared when freed */
    const char *ca_file;         /* NULL: the system's trust store */
    int workers;                 /* threads = parallel sessions; default 4 */
    int queue_max;               /* waiting messages; default 1000 */
    int max_per_session;         /* messages per connection; default 100 */
    long connect_timeout_ms;     /* TCP connect; default 30000 */
    long command_timeout_ms;     /* greeting, EHLO, envelope, data writes;
                                    default 300000 (RFC 5321 4.5.3.2) */
    long data_timeout_ms;        /* wait for the reply to the final dot;
                                    default 600000 (RFC 5321: 10 min; a
                                    shorter one turns slow 250s into
                                    duplicates) */
    bool keep_nagle;             /* benchmarks only: skip TCP_NODELAY */
    smtp_sign_fn *sign;          /* NULL: messages go out unsigned */
    void *sign_arg;              /* borrowed; outlives the pool */
};

/* One message to one recipient, as the relay will see it. */
struct smtp_message;

enum smtp_class { SMTP_OK, SMTP_TRANSIENT, SMTP_PERMANENT };

struct smtp_result {
    enum smtp_class cls;
    int code;          /* SMTP reply code that decided it, 0 if none */
    bool in_doubt;     /* the final dot went out, no reply came back */
    char reason[120];  /* for operators: never addresses or content */
};

/* Runs once per accepted message on the loop thread.  res is borrowed
 * for the duration of the call. */
typedef void smtp_done_fn(void *arg, const struct smtp_result *res);

struct smtp_pool;

/* smtp_message_new - a message from envelope sender (may be "" for the
 * null reverse path), one recipient and the complete message bytes
 * (headers, empty line, body).  data must use CRLF line ends only and
 * must NOT be dot-stuffed: libESMTP dot-stuffs on the wire, and it
 * splits lines only at CRLF, so a bare LF or CR would let a "." line
 * through unstuffed (SMTP smuggling); both are refused, as are NUL
 * bytes and CR, LF, '<', '>' or spaces in the addresses.  Headers the
 * message lacks are added by libESMTP (Date, From, Message-ID); the MIME
 * builder supplies them so nothing is changed.  Copies everything.
 * Returns a new message (free with smtp_message_free()) or NULL with
 * err filled (HERR_INPUT or HERR_RESOURCE). */
struct smtp_message *smtp_message_new(const char *sender, const char *rcpt,
                                      const char *data, size_t len,
                                      struct herr *err);

/* smtp_message_free - free msg; NULL is a no-op. */
void smtp_message_free(struct smtp_message *msg);

/* smtp_pool_new - validate cfg, build the TLS context and start the
 * worker threads and the ev_async watcher on loop.  Opens no
 * connection.  Refuses (HERR_INPUT, err->path names the field):
 * no host; AUTH with STARTTLS off unless host is loopback (127.0.0.0/8,
 * ::1, localhost), because the password would cross the network in
 * plaintext; an IP-literal host with STARTTLS on, because libESMTP
 * matches certificates against DNS names only.  Returns a new pool
 * (free with smtp_pool_free()) or NULL with err filled. */
struct smtp_pool *smtp_pool_new(struct ev_loop *loop,
                                const struct smtp_pool_config *cfg,
                                struct herr *err);

/* smtp_pool_submit - queue msg for delivery.  Returns 0: the pool owns
 * msg, and done(arg, result) runs exactly once on the loop thread, never
 * before this returns.  Returns -1 with err filled: the caller keeps msg
 * and done never runs; HERR_TRANSIENT when the queue is full or the
 * pool is draining (retry later), HERR_RESOURCE when out of memory. */
int smtp_pool_submit(struct smtp_pool *pool, struct smtp_message *msg,
                     smtp_done_fn *done, void *arg, struct herr *err);

/* smtp_pool_drain - stop taking new messages.  Queued messages end at
 * once as TRANSIENT ("pool draining"); sessions still running at
 * deadline (absolute, in ev_now() time) have their connection shut
 * down, so each of their messages ends TRANSIENT (in_doubt if its dot
 * was out).  All these done calls run from the loop later; keep the
 * loop running until smtp_pool_pending() is 0.  A worker stuck in DNS
 * resolution is not interrupted (connect is bounded by its timeout). */
void smtp_pool_drain(struct smtp_pool *pool, ev_tstamp deadline);

/* smtp_pool_pending - accepted messages whose done has not run yet. */
size_t smtp_pool_pending(const struct smtp_pool *pool);

/* smtp_pool_free - stop the workers (running sessions are cut off),
 * run done for every message not yet reported (TRANSIENT, "pool
 * stopped"), so each accepted message still gets exactly one done, then
 * free everything.  No done runs after it returns.  NULL is a no-op. */
void smtp_pool_free(struct smtp_pool *pool);

#endif
