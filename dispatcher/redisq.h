/*
 * redisq - herold's only door to Redis (the only file that includes
 * hiredis).
 *
 * An asynchronous connection on the libev loop that never gives up:
 * connects without blocking, reconnects with capped exponential backoff and
 * jitter whenever Redis goes away, and watches every command with its own
 * timer, because Debian's hiredis 0.14 has no command or connect timeout.
 * A hung Redis (SIGSTOP) is noticed when the oldest outstanding command
 * outlives command_timeout_ms; the context is then torn down.
 *
 * Callback rule (hiredis's): every accepted command's callback runs exactly
 * once, on the loop thread.  A NULL reply means the connection was lost
 * or timed out before a reply arrived: the command may or may not have
 * been executed (in doubt), and the caller must be safe either way.
 *
 * Scripts registered with redisq_add_script are loaded on every connect
 * before the connection is declared up; a NOSCRIPT reply (SCRIPT FLUSH, a
 * restarted Redis) tears the connection down so the next connect reloads
 * them, and the command gets a NULL reply.
 *
 * A synchronous variant serves the CLI, which is allowed to block.
 */
#ifndef HEROLD_REDISQ_H
#define HEROLD_REDISQ_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>

#include "herr.h"

struct config_redis;

struct redisq;
struct redisq_reply;          /* borrowed inside callbacks only */

enum redisq_type {
    REDISQ_NIL, REDISQ_INT, REDISQ_STR, REDISQ_ARRAY, REDISQ_STATUS, REDISQ_ERROR
};

struct redisq_config {
    const char *host;
    int port;
    const char *unix_socket;  /* wins over host/port when set */
    const char *username;     /* ACL user or NULL */
    const char *password;     /* NULL: no AUTH */
    const char *client_name;  /* CLIENT SETNAME */
    int connect_timeout_ms;
    int command_timeout_ms;
    int reconnect_min_ms;
    int reconnect_max_ms;
};

struct redisq_script {
    const char *name;         /* for logs */
    const char *source;       /* Lua */
    char sha[41];             /* filled by redisq_add_script */
};

/* Called with reply NULL when the outcome is unknown (see above). */
typedef void redisq_reply_fn(struct redisq *q, const struct redisq_reply *r, void *arg);
/* Called when the connection comes up (after AUTH and script loading) or
 * goes down. */
typedef void redisq_state_fn(struct redisq *q, bool up, void *arg);

/* redisq_new - a connection object on loop; borrows conf strings for its
 * lifetime.  Does not connect until redisq_start.  Free with redisq_free. */
struct redisq *redisq_new(struct ev_loop *loop, const struct redisq_config *conf,
                          const char *label, redisq_state_fn *on_state, void *arg);

/* redisq_set_state_cb - replace the up/down callback. */
void redisq_set_state_cb(struct redisq *q, redisq_state_fn *on_state, void *arg);

/* redisq_add_script - compute s->sha and load s on every connect.  s is
 * borrowed and must outlive q. */
void redisq_add_script(struct redisq *q, struct redisq_script *s);

/* redisq_start - begin connecting; reconnects forever until redisq_stop. */
void redisq_start(struct redisq *q);

/* redisq_stop - disconnect now; pending callbacks get NULL; no reconnect. */
void redisq_stop(struct redisq *q);

/* redisq_free - stop and free; NULL is a no-op. */
void redisq_free(struct redisq *q);

bool redisq_is_up(const struct redisq *q);
size_t redisq_outstanding(const struct redisq *q);

/* redisq_reset - tear the connection down and reconnect after backoff
 * (used when Redis answered something that means "start over"). */
void redisq_reset(struct redisq *q, const char *why);

/* redisq_argv - send one command.  extra_ms widens the watchdog for
 * blocking commands (XREADGROUP BLOCK).  lens may be NULL (strlen).
 * Returns 0 (fn runs exactly once later) or -1 when not connected or out
 * of memory (fn never runs). */
int redisq_argv(struct redisq *q, redisq_reply_fn *fn, void *arg, long extra_ms,
                int argc, const char **argv, const size_t *lens);

/* redisq_ignore - a reply callback for fire-and-forget writes whose
 * outcome changes nothing (alarms, trims, best-effort records). */
void redisq_ignore(struct redisq *q, const struct redisq_reply *r, void *arg);

/* redisq_eval - EVALSHA s with nkeys keys followed by args in argv. */
int redisq_eval(struct redisq *q, const struct redisq_script *s,
                redisq_reply_fn *fn, void *arg, int nkeys,
                int argc, const char **argv, const size_t *lens);

/* Reply accessors: r is borrowed, valid only during the callback. */
enum redisq_type redisq_reply_type(const struct redisq_reply *r);
long long redisq_reply_int(const struct redisq_reply *r);
/* string, status or error text (NUL-terminated); "" for other types */
const char *redisq_reply_str(const struct redisq_reply *r, size_t *len);
size_t redisq_reply_len(const struct redisq_reply *r);
const struct redisq_reply *redisq_reply_elem(const struct redisq_reply *r, size_t i);
/* true if r is an error reply whose text starts with prefix */
bool redisq_reply_is_error(const struct redisq_reply *r, const char *prefix);

/* redisq_config_from - the connection settings of the redis config
 * section c, announced to Redis as client (CLIENT SETNAME). */
struct redisq_config redisq_config_from(const struct config_redis *c, const char *client);

/* ---- synchronous connection, for the CLI only ---- */
struct redisq_sync;

/* redisq_sync_open - redisq_sync_connect with the settings of section c;
 * on failure, the reason goes to stderr as "herold: ..." when err is NULL. */
struct redisq_sync *redisq_sync_open(const struct config_redis *c, const char *client,
                                     struct herr *err);

/* redisq_sync_connect - connect and AUTH, blocking up to the connect
 * timeout.  NULL and err on failure. */
struct redisq_sync *redisq_sync_connect(const struct redisq_config *conf,
                                        struct herr *err);
/* redisq_sync_argv - run one command; returns a new reply (free with
 * redisq_sync_reply_free) or NULL and err on a connection error.  Error
 * replies are returned as replies. */
struct redisq_reply *redisq_sync_argv(struct redisq_sync *s, int argc,
                                      const char **argv, const size_t *lens,
                                      struct herr *err);
/* redisq_sync_eval - EVAL of s (no caching needed for one-shot calls). */
struct redisq_reply *redisq_sync_eval(struct redisq_sync *s,
                                      const struct redisq_script *script,
                                      int nkeys, int argc, const char **argv,
                                      const size_t *lens, struct herr *err);
void redisq_sync_reply_free(struct redisq_reply *r);
void redisq_sync_free(struct redisq_sync *s);

#endif
