/*
 * smtp_pool - libESMTP sessions on worker threads, results on the loop.
 *
 * Owns: the bounded submit queue, the worker threads, one SSL_CTX shared
 * by all sessions, and every queued or in-flight message.  This is the
 * only file that includes libesmtp.h; everything else sees herold types.
 *
 * Never: blocks the loop (smtp_start_session runs only on workers);
 * accepts a bad certificate (the event callback never sets *ok and the
 * SSL_CTX verifies the peer itself); sends AUTH over plaintext to a
 * non-loopback host; logs an address, a reply text or message content
 * (libESMTP's monitor callback stays unset).
 *
 * Three libESMTP 1.1 facts shape this file:
 *
 * 1. One smtp_start_session() is one TCP connection, and every message
 *    added to the session stays in memory until the session is
 *    destroyed.  So a worker takes at most max_per_session messages from
 *    the queue, adds them all to one fresh session, runs it once and
 *    destroys it: memory is bounded by workers * max_per_session
 *    messages plus the queue, and a failed session (421, lost
 *    connection) simply ends; the next batch connects anew.
 *
 * 2. libESMTP writes message data through a 2048-byte buffer onto a
 *    socket it never shows us, and sets no TCP_NODELAY.  With Nagle on
 *    and the receiver's delayed ACK, every message over about 2 KB then
 *    waits about 40 ms for an ACK before its last segment may leave.
 *    We interpose connect(): this file defines connect(), which the
 *    dynamic linker binds before libc's for every library in the
 *    process, including libesmtp.so.  Outside a worker's
 *    smtp_start_session() call (a thread-local pointer is NULL) it is
 *    a plain tail call to the real connect() from dlsym(RTLD_NEXT), so
 *    hiredis, curl and the rest are untouched.  Inside, for TCP sockets
 *    only, it sets TCP_NODELAY, SO_RCVTIMEO/SO_SNDTIMEO (a backstop for
 *    reads libESMTP does not poll first, e.g. the TLS handshake),
 *    bounds the connect itself by connect_timeout_ms (libESMTP has no
 *    connect timeout), and keeps a dup() of the socket so that drain
 *    and free can shutdown() a hung session from the loop thread.
 *
 * 3. libESMTP dot-stuffs and adds the final dot itself, and splits lines
 *    only at CRLF; messages are therefore handed over unstuffed and
 *    smtp_message_new() refuses bare CR or LF.
 */
#define _GNU_SOURCE /* RTLD_NEXT, SO_DOMAIN */

#include "smtp_pool.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <auth-client.h>
#include <libesmtp.h>

#include "../dispatcher/alloc.h"
#include "../dispatcher/log.h"

#define SMTP_DEFAULT_PORT 587
#define SMTP_DEFAULT_WORKERS 4
#define SMTP_DEFAULT_QUEUE 1000
#define SMTP_DEFAULT_PER_SESSION 100
#define SMTP_DEFAULT_CONNECT_MS 30000L
#define SMTP_DEFAULT_COMMAND_MS 300000L
#define SMTP_DEFAULT_DATA_MS 600000L

struct smtp_message {
    char *sender;
    char *rcpt;
    char *data;
    size_t len;
};

/* One accepted message and what happened to it. */
struct smtp_job {
    struct smtp_job *next;
    struct smtp_message *msg;
    smtp_done_fn *done;
    void *arg;
    struct smtp_result res;
    /* Worker-side state for one session; only the worker touches it. */
    smtp_message_t m;
    smtp_recipient_t r;
    char *prefix;        /* signature header lines from the sign hook */
    size_t prefix_len;
    size_t off;          /* read position in prefix, then in data */
    bool eof;            /* libESMTP has read all data: the dot follows */
    bool reply_seen;     /* a reply to DATA or to the final dot arrived */
    bool settled;        /* res was set before the session ran */
};

struct smtp_worker {
    struct smtp_pool *pool;
    pthread_t thread;
    bool started;
    int id;
    int sock_dup;             /* dup of libESMTP's socket; pool->mu */
    struct smtp_job **batch;
    /* Per-session findings, reset before each session. */
    bool connected;
    bool tls_ok;
    bool starttls_missing;
    bool auth_refused;
    char tls_problem[96];
};

struct smtp_pool {
    struct ev_loop *loop;
    ev_async async;
    ev_timer drain_timer;
    size_t pending;           /* accepted, done not yet run (loop thread) */
    bool draining;            /* loop thread */

    pthread_mutex_t mu;       /* guards everything below */
    pthread_cond_t cv;
    struct smtp_job *q_head, *q_tail;
    size_t q_len;
    struct smtp_job *done_head, *done_tail;
    bool stopping;
    bool aborting;            /* cut running sessions, refuse connects */

    /* Immutable after smtp_pool_new(). */
    char *host;
    char *hostport;
    char *ehlo_name;
    char *username;
    char *password;
    enum smtp_starttls starttls;
    bool plaintext_auth_ok;   /* loopback relay with STARTTLS off */
    bool keep_nagle;
    smtp_sign_fn *sign;
    void *sign_arg;
    int nworkers;
    size_t queue_max;
    int per_session;
    long connect_ms, command_ms, data_ms;
    SSL_CTX *ssl_ctx;
    struct smtp_worker *workers;
};

/* The worker whose smtp_start_session() runs on this thread, or NULL.
 * connect() and the TLS verify callback find their context here. */
static _Thread_local struct smtp_worker *smtp_current_worker;

/* ---- connect() interposition ------------------------------------------ */

typedef int smtp_connect_fn(int, __CONST_SOCKADDR_ARG, socklen_t);

static smtp_connect_fn *smtp_real_connect;
static pthread_once_t smtp_real_connect_once = PTHREAD_ONCE_INIT;

/* smtp_real_connect_init - find the connect() we interpose (libc's, or a
 * sanitizer's interceptor in front of it). */
static void smtp_real_connect_init(void)
{
    smtp_real_connect = (smtp_connect_fn *)dlsym(RTLD_NEXT, "connect");
}

/* smtp_worker_connect - connect for libESMTP inside a worker session:
 * TCP_NODELAY, I/O timeouts, a bounded connect, and a dup for abort. */
static int smtp_worker_connect(struct smtp_worker *w, int fd,
                               __CONST_SOCKADDR_ARG addr, socklen_t len)
{
    struct smtp_pool *pool = w->pool;
    int type = 0, domain = 0, flags, rc, saved, one = 1;
    socklen_t sl = sizeof type;
    long io_ms = pool->command_ms > pool->data_ms ? pool->command_ms
                                                  : pool->data_ms;
    struct timeval tv = { .tv_sec = io_ms / 1000,
                          .tv_usec = (io_ms % 1000) * 1000 };

    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &sl) < 0
        || type != SOCK_STREAM)
        return smtp_real_connect(fd, addr, len);
    sl = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &sl) < 0
        || (domain != AF_INET && domain != AF_INET6))
        return smtp_real_connect(fd, addr, len);

    /* Before the first byte, so no segment is ever held back by Nagle. */
    if (!pool->keep_nagle)
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);

    flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return smtp_real_connect(fd, addr, len);
    rc = smtp_real_connect(fd, addr, len);
    if (rc < 0 && errno == EINPROGRESS) {
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        int n, soerr = 0;
        socklen_t el = sizeof soerr;

        do
            n = poll(&p, 1, pool->connect_ms > INT_MAX ? INT_MAX
                                                       : (int)pool->connect_ms);
        while (n < 0 && errno == EINTR);
        if (n == 0) {
            errno = ETIMEDOUT;
        } else if (n > 0) {
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &el) == 0
                && soerr == 0)
                rc = 0;
            else
                errno = soerr != 0 ? soerr : errno;
        }
    }
    saved = errno;
    /* libESMTP expects a blocking socket. */
    (void)fcntl(fd, F_SETFL, flags);

    if (rc == 0) {
        /* Check and record under the lock, so a concurrent abort either
         * sees our dup or makes us refuse: no session slips through. */
        pthread_mutex_lock(&pool->mu);
        if (pool->aborting) {
            rc = -1;
            saved = ECONNABORTED;
        } else {
            if (w->sock_dup >= 0)
                close(w->sock_dup);
            w->sock_dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        }
        pthread_mutex_unlock(&pool->mu);
    }
    errno = saved;
    return rc;
}

/* connect - see the file comment, point 2: transparent except inside a
 * worker's smtp_start_session() call. */
int connect(int fd, __CONST_SOCKADDR_ARG addr, socklen_t len)
{
    struct smtp_worker *w = smtp_current_worker;

    pthread_once(&smtp_real_connect_once, smtp_real_connect_init);
    if (smtp_real_connect == NULL) {
        errno = ENOSYS;
        return -1;
    }
    if (w == NULL)
        return smtp_real_connect(fd, addr, len);
    return smtp_worker_connect(w, fd, addr, len);
}

/* smtp_worker_close_dup - drop our dup of the session socket. */
static void smtp_worker_close_dup(struct smtp_worker *w)
{
    pthread_mutex_lock(&w->pool->mu);
    if (w->sock_dup >= 0) {
        close(w->sock_dup);
        w->sock_dup = -1;
    }
    pthread_mutex_unlock(&w->pool->mu);
}

/* smtp_pool_abort_locked - shut down every running session's socket;
 * libESMTP's next read or write fails and the session ends. */
static void smtp_pool_abort_locked(struct smtp_pool *pool)
{
    pool->aborting = true;
    for (int i = 0; i < pool->nworkers; i++)
        if (pool->workers[i].sock_dup >= 0)
            (void)shutdown(pool->workers[i].sock_dup, SHUT_RDWR);
}

/* ---- messages ----------------------------------------------------------- */

/* smtp_address_ok - no bytes that could break out of "<...>" or a line. */
static bool smtp_address_ok(const char *a)
{
    for (const unsigned char *p = (const unsigned char *)a; *p; p++)
        if (*p <= ' ' || *p == '<' || *p == '>' || *p == 0x7f)
            return false;
    return true;
}

struct smtp_message *smtp_message_new(const char *sender, const char *rcpt,
                                      const char *data, size_t len,
                                      struct herr *err)
{
    struct smtp_message *msg;
    size_t slen, rlen;
    char *p;

    if (sender == NULL || !smtp_address_ok(sender) || strlen(sender) > 320) {
        herr_set(err, HERR_INPUT, "sender", "invalid envelope sender");
        return NULL;
    }
    if (rcpt == NULL || rcpt[0] == '\0' || !smtp_address_ok(rcpt)
        || strlen(rcpt) > 320) {
        herr_set(err, HERR_INPUT, "rcpt", "invalid envelope recipient");
        return NULL;
    }
    if (data == NULL || len == 0 || len > (size_t)INT_MAX) {
        herr_set(err, HERR_INPUT, "data", "message empty or too large");
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\0') {
            herr_set(err, HERR_INPUT, "data", "NUL byte at offset %zu", i);
            return NULL;
        }
        if (data[i] == '\r' && (i + 1 == len || data[i + 1] != '\n')) {
            herr_set(err, HERR_INPUT, "data", "bare CR at offset %zu", i);
            return NULL;
        }
        if (data[i] == '\n' && (i == 0 || data[i - 1] != '\r')) {
            herr_set(err, HERR_INPUT, "data", "bare LF at offset %zu", i);
            return NULL;
        }
    }
    slen = strlen(sender);
    rlen = strlen(rcpt);
    /* One block: the message is freed with one call wherever it ends. */
    msg = herold_malloc(sizeof *msg + slen + 1 + rlen + 1 + len);
    if (msg == NULL) {
        herr_set(err, HERR_RESOURCE, NULL, "out of memory");
        return NULL;
    }
    p = (char *)(msg + 1);
    msg->sender = memcpy(p, sender, slen + 1);
    p += slen + 1;
    msg->rcpt = memcpy(p, rcpt, rlen + 1);
    p += rlen + 1;
    msg->data = memcpy(p, data, len);
    msg->len = len;
    return msg;
}

void smtp_message_free(struct smtp_message *msg)
{
    herold_free(msg);
}

/* ---- libESMTP callbacks (worker thread) -------------------------------- */

static void smtp_set_result(struct smtp_result *res, enum smtp_class cls,
                            int code, bool in_doubt, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* smtp_job_on_read - libESMTP's message callback: len == NULL rewinds;
 * otherwise hand over the rest of the message, then end of data.  *ctx
 * stays NULL (libESMTP would free() it). */
static const char *smtp_job_on_read(void **ctx, int *len, void *arg)
{
    struct smtp_job *j = arg;

    (void)ctx;
    if (len == NULL) {
        j->off = 0;
        j->eof = false;
        return NULL;
    }
    if (j->off < j->prefix_len) {
        *len = (int)(j->prefix_len - j->off);
        j->off = j->prefix_len;
        return j->prefix + (j->prefix_len - (size_t)*len);
    }
    if (j->off >= j->prefix_len + j->msg->len) {
        /* libESMTP writes the final dot right after this. */
        j->eof = true;
        *len = 0;
        return NULL;
    }
    *len = (int)(j->prefix_len + j->msg->len - j->off);
    j->off = j->prefix_len + j->msg->len;
    return j->msg->data + (j->msg->len - (size_t)*len);
}

/* smtp_job_sign - run the sign hook; false (and a result) on failure. */
static bool smtp_job_sign(struct smtp_pool *pool, struct smtp_job *j)
{
    struct herr err = { 0 };
    char *h = NULL;
    size_t n;

    if (pool->sign(pool->sign_arg, j->msg->data, j->msg->len, &h, &err) != 0
        || h == NULL) {
        herold_free(h);
        smtp_set_result(&j->res, SMTP_TRANSIENT, 0, false,
                        "signing failed: %s", err.msg);
        return false;
    }
    n = strlen(h);
    /* Same line rules as smtp_message_new(): CRLF only, CRLF at the end. */
    for (size_t i = 0; i < n; i++)
        if ((h[i] == '\r' && h[i + 1] != '\n')
            || (h[i] == '\n' && (i == 0 || h[i - 1] != '\r'))) {
            n = 0;
            break;
        }
    if (n < 2 || h[n - 2] != '\r' || h[n - 1] != '\n') {
        herold_free(h);
        smtp_set_result(&j->res, SMTP_TRANSIENT, 0, false,
                        "signing hook returned a malformed header");
        return false;
    }
    j->prefix = h;
    j->prefix_len = n;
    return true;
}

/* smtp_worker_on_event - record what the session did.  For every
 * certificate event libESMTP passes int *ok = 0 and continues only if we
 * set it to 1; we never touch it, so the session aborts. */
static void smtp_worker_on_event(smtp_session_t session, int event_no,
                                 void *arg, ...)
{
    struct smtp_worker *w = arg;
    struct smtp_job *j;
    smtp_message_t m;
    va_list ap;

    (void)session;
    va_start(ap, arg);
    switch (event_no) {
    case SMTP_EV_CONNECT:
        w->connected = true;
        break;
    case SMTP_EV_DISCONNECT:
        /* libESMTP has closed its descriptor: let the FIN go now. */
        smtp_worker_close_dup(w);
        break;
    case SMTP_EV_MESSAGESENT:
        /* Fired only after a reply to DATA or to the final dot was read. */
        m = va_arg(ap, smtp_message_t);
        j = smtp_message_get_application_data(m);
        if (j != NULL)
            j->reply_seen = true;
        break;
    case SMTP_EV_STARTTLS_OK:
        w->tls_ok = true;
        break;
    case SMTP_EV_INVALID_PEER_CERTIFICATE: {
        long vr = va_arg(ap, long);
        if (w->tls_problem[0] == '\0')
            snprintf(w->tls_problem, sizeof w->tls_problem,
                     "TLS: invalid peer certificate (%s)",
                     X509_verify_cert_error_string(vr));
        break;
    }
    case SMTP_EV_NO_PEER_CERTIFICATE:
        snprintf(w->tls_problem, sizeof w->tls_problem,
                 "TLS: no peer certificate");
        break;
    case SMTP_EV_WRONG_PEER_CERTIFICATE:
        snprintf(w->tls_problem, sizeof w->tls_problem,
                 "TLS: certificate does not match the relay host");
        break;
    case SMTP_EV_WEAK_CIPHER:
        snprintf(w->tls_problem, sizeof w->tls_problem, "TLS: weak cipher");
        break;
    case SMTP_EV_UNUSABLE_CLIENT_CERTIFICATE:
    case SMTP_EV_UNUSABLE_CA_LIST:
        snprintf(w->tls_problem, sizeof w->tls_problem,
                 "TLS: unusable local certificate or CA list");
        break;
    case SMTP_EV_EXTNA_STARTTLS:
        w->starttls_missing = true;
        break;
    default:
        /* Other events' out-parameters keep libESMTP's defaults. */
        break;
    }
    va_end(ap);
}

/* smtp_pool_on_verify - OpenSSL verify callback: note why a chain
 * failed, for the reason text; never changes the verdict. */
static int smtp_pool_on_verify(int preverify_ok, X509_STORE_CTX *store)
{
    struct smtp_worker *w = smtp_current_worker;

    if (!preverify_ok && w != NULL && w->tls_problem[0] == '\0')
        snprintf(w->tls_problem, sizeof w->tls_problem,
                 "TLS: certificate verify failed (%s)",
                 X509_verify_cert_error_string(
                     X509_STORE_CTX_get_error(store)));
    return preverify_ok;
}

/* smtp_worker_on_auth - libESMTP asks for credentials.  Refuse unless
 * the channel is TLS (or a loopback relay with STARTTLS off), so the
 * password never crosses the network in plaintext, whatever the server
 * offers. */
static int smtp_worker_on_auth(auth_client_request_t req, char **result,
                               int fields, void *arg)
{
    struct smtp_worker *w = arg;
    struct smtp_pool *pool = w->pool;

    if (!w->tls_ok && !pool->plaintext_auth_ok) {
        w->auth_refused = true;
        return 0;
    }
    for (int i = 0; i < fields; i++) {
        if (req[i].flags & AUTH_USER)
            result[i] = pool->username;
        else if (req[i].flags & AUTH_PASS)
            result[i] = pool->password;
        else
            result[i] = (char *)"";
    }
    return 1;
}

/* ---- one session --------------------------------------------------------- */

/* smtp_set_result - fill a result. */
static void smtp_set_result(struct smtp_result *res, enum smtp_class cls,
                            int code, bool in_doubt, const char *fmt, ...)
{
    va_list ap;

    res->cls = cls;
    res->code = code;
    res->in_doubt = in_doubt;
    va_start(ap, fmt);
    vsnprintf(res->reason, sizeof res->reason, fmt, ap);
    va_end(ap);
}

/* smtp_class_of - 2xx OK, 5xx PERMANENT, everything else TRANSIENT. */
static enum smtp_class smtp_class_of(int code)
{
    if (code >= 200 && code < 300)
        return SMTP_OK;
    if (code >= 500 && code < 600)
        return SMTP_PERMANENT;
    return SMTP_TRANSIENT;
}

/* smtp_status_words - "550 5.1.1" from a status; the text is dropped
 * because relays echo addresses in it. */
static const char *smtp_status_words(const smtp_status_t *st, char *buf,
                                     size_t size)
{
    if (st->enh_class > 0)
        snprintf(buf, size, "%d %d.%d.%d", st->code, st->enh_class,
                 st->enh_subject, st->enh_detail);
    else
        snprintf(buf, size, "%d", st->code);
    return buf;
}

/* smtp_job_classify - decide one message's result after its session.
 *
 * Order: the MAIL FROM reply, then the RCPT reply, then the reply to
 * DATA or to the final dot.  With no reply at all the session failed
 * under the message; in_doubt is the RFC 1047 heuristic: libESMTP read
 * the whole message through our callback (it writes the final dot next)
 * but no reply to the dot arrived (SMTP_EV_MESSAGESENT never fired,
 * transfer status code 0).  A drop in the middle of the body is not in
 * doubt: without the dot the relay cannot have accepted the message.
 * The heuristic errs toward in_doubt when the dot was still in our send
 * buffer, which costs at most a duplicate, never a loss. */
static void smtp_job_classify(struct smtp_worker *w, struct smtp_job *j,
                              const char *session_err)
{
    const smtp_status_t *mail = smtp_reverse_path_status(j->m);
    const smtp_status_t *rcpt = j->r ? smtp_recipient_status(j->r) : NULL;
    const smtp_status_t *xfer = smtp_message_transfer_status(j->m);
    char words[32];

    if (mail != NULL && mail->code != 0 && mail->code / 100 != 2) {
        if (mail->code == 530 || mail->code == 535 || mail->code == 538)
            smtp_set_result(&j->res, SMTP_TRANSIENT, mail->code, false,
                            "relay requires authentication (%s)%s",
                            smtp_status_words(mail, words, sizeof words),
                            w->auth_refused ? "; AUTH withheld without TLS"
                                            : "");
        else
            smtp_set_result(&j->res, smtp_class_of(mail->code), mail->code,
                            false, "sender rejected (%s)",
                            smtp_status_words(mail, words, sizeof words));
        return;
    }
    if (rcpt != NULL && rcpt->code != 0 && rcpt->code / 100 != 2) {
        smtp_set_result(&j->res, smtp_class_of(rcpt->code), rcpt->code,
                        false, "recipient %s (%s)",
                        rcpt->code / 100 == 5 ? "rejected" : "deferred",
                        smtp_status_words(rcpt, words, sizeof words));
        return;
    }
    if (j->reply_seen && xfer != NULL && xfer->code != 0) {
        enum smtp_class cls = smtp_class_of(xfer->code);

        smtp_set_result(&j->res, cls, xfer->code, false, "%s (%s)",
                        cls == SMTP_OK ? "accepted"
                        : cls == SMTP_PERMANENT ? "message rejected"
                                                : "message deferred",
                        smtp_status_words(xfer, words, sizeof words));
        return;
    }
    if (j->eof) {
        smtp_set_result(&j->res, SMTP_TRANSIENT, 0, true,
                        "no reply to the final dot (%s); in doubt",
                        session_err);
        return;
    }
    if (w->tls_problem[0] != '\0')
        smtp_set_result(&j->res, SMTP_TRANSIENT, 0, false, "%s",
                        w->tls_problem);
    else if (w->starttls_missing)
        smtp_set_result(&j->res, SMTP_TRANSIENT, 0, false,
                        "TLS: relay does not offer STARTTLS, required");
    else if (!w->connected)
        smtp_set_result(&j->res, SMTP_TRANSIENT, 0, false,
                        "connect failed (%s)", session_err);
    else
        smtp_set_result(&j->res, SMTP_TRANSIENT, 0, false,
                        "session ended before this message (%s)",
                        session_err);
}

/* smtp_worker_drain_sigpipe - consume a SIGPIPE a write to a closed
 * socket raised on this thread (blocked here, so it only pends). */
static void smtp_worker_drain_sigpipe(void)
{
    sigset_t set;
    struct timespec zero = { 0, 0 };

    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    while (sigtimedwait(&set, NULL, &zero) == SIGPIPE)
        ;
}

/* smtp_worker_session - send batch[0..n) over one SMTP connection and
 * set every job's result. */
static void smtp_worker_session(struct smtp_worker *w,
                                struct smtp_job **batch, int n)
{
    struct smtp_pool *pool = w->pool;
    smtp_session_t s;
    auth_context_t auth = NULL;
    char errbuf[96];
    const char *session_err = "no error";
    int ok, serr;
    int flag = Timeout_OVERRIDE_RFC2822_MINIMUM;

    w->connected = w->tls_ok = w->starttls_missing = w->auth_refused = false;
    w->tls_problem[0] = '\0';

    s = smtp_create_session();
    if (s == NULL)
        goto fail_all;
    if (!smtp_set_server(s, pool->hostport)
        || (pool->ehlo_name && !smtp_set_hostname(s, pool->ehlo_name))
        || !smtp_set_eventcb(s, smtp_worker_on_event, w))
        goto fail_all;
    /* libESMTP would raise short values to the RFC 5321 minimums (5 and
     * 10 minutes); the override lets configuration (and tests) decide. */
    smtp_set_timeout(s, Timeout_GREETING | flag, pool->command_ms);
    smtp_set_timeout(s, Timeout_ENVELOPE | flag, pool->command_ms);
    smtp_set_timeout(s, Timeout_DATA | flag, pool->command_ms);
    smtp_set_timeout(s, Timeout_TRANSFER | flag, pool->command_ms);
    smtp_set_timeout(s, Timeout_DATA2 | flag, pool->data_ms);

    if (pool->starttls == SMTP_STARTTLS_OFF) {
        smtp_starttls_enable(s, Starttls_DISABLED);
    } else {
        smtp_starttls_enable(s, pool->starttls == SMTP_STARTTLS_REQUIRED
                                    ? Starttls_REQUIRED : Starttls_ENABLED);
        smtp_starttls_set_ctx(s, pool->ssl_ctx);
    }
    if (pool->username != NULL) {
        auth = auth_create_context();
        if (auth == NULL)
            goto fail_all;
        /* PLAIN and LOGIN are "plaintext password" mechanisms; allow them
         * (smtp_worker_on_auth still withholds them outside TLS). */
        auth_set_mechanism_flags(auth, AUTH_PLUGIN_PLAIN, 0);
        auth_set_interact_cb(auth, smtp_worker_on_auth, w);
        smtp_auth_set_context(s, auth);
    }

    for (int i = 0; i < n; i++) {
        struct smtp_job *j = batch[i];

        j->m = NULL;
        j->r = NULL;
        j->eof = j->reply_seen = j->settled = false;
        if (pool->sign != NULL && !smtp_job_sign(pool, j)) {
            j->settled = true;
            continue;
        }
        j->m = smtp_add_message(s);
        if (j->m == NULL
            || !smtp_set_reverse_path(j->m, j->msg->sender)
            || !smtp_set_messagecb(j->m, smtp_job_on_read, j)
            || (j->r = smtp_add_recipient(j->m, j->msg->rcpt)) == NULL) {
            /* A message without recipients is skipped by libESMTP. */
            smtp_set_result(&j->res, SMTP_TRANSIENT, 0, false,
                            "out of memory building the session");
            j->settled = true;
            continue;
        }
        smtp_message_set_application_data_release(j->m, j, NULL);
    }

    smtp_current_worker = w;
    ok = smtp_start_session(s);
    serr = smtp_errno();
    smtp_current_worker = NULL;
    smtp_worker_close_dup(w);
    smtp_worker_drain_sigpipe();
    ERR_clear_error();

    if (!ok || serr != 0)
        session_err = smtp_strerror(serr, errbuf, sizeof errbuf);
    if (session_err == NULL)
        session_err = "unknown error";
    pthread_mutex_lock(&pool->mu);
    if (pool->aborting)
        session_err = "session cut off by drain";
    pthread_mutex_unlock(&pool->mu);

    for (int i = 0; i < n; i++) {
        if (!batch[i]->settled)
            smtp_job_classify(w, batch[i], session_err);
        herold_free(batch[i]->prefix);
        batch[i]->prefix = NULL;
        batch[i]->prefix_len = 0;
    }
    LOG(LOG_DEBUG, "smtp_pool", "session_end", "worker=%d msgs=%d ok=%d",
        w->id, n, ok);
    if (w->tls_problem[0] != '\0' || w->starttls_missing)
        LOG(LOG_WARN, "smtp_pool", "tls_refused", "worker=%d msgs=%d", w->id,
            n);
    smtp_destroy_session(s);
    if (auth != NULL)
        auth_destroy_context(auth);
    return;

fail_all:
    for (int i = 0; i < n; i++) {
        smtp_set_result(&batch[i]->res, SMTP_TRANSIENT, 0, false,
                        "out of memory setting up the session");
        herold_free(batch[i]->prefix);
        batch[i]->prefix = NULL;
        batch[i]->prefix_len = 0;
    }
    if (s != NULL)
        smtp_destroy_session(s);
    if (auth != NULL)
        auth_destroy_context(auth);
}

/* smtp_worker_main - take batches until the pool stops. */
static void *smtp_worker_main(void *arg)
{
    struct smtp_worker *w = arg;
    struct smtp_pool *pool = w->pool;

    for (;;) {
        int n = 0;

        pthread_mutex_lock(&pool->mu);
        while (pool->q_head == NULL && !pool->stopping)
            pthread_cond_wait(&pool->cv, &pool->mu);
        if (pool->stopping) {
            pthread_mutex_unlock(&pool->mu);
            break;
        }
        /* Take what is there, up to the per-session bound: no waiting
         * for a full batch, so a lone urgent message leaves at once. */
        while (n < pool->per_session && pool->q_head != NULL) {
            struct smtp_job *j = pool->q_head;

            pool->q_head = j->next;
            j->next = NULL;
            w->batch[n++] = j;
        }
        if (pool->q_head == NULL)
            pool->q_tail = NULL;
        pool->q_len -= (size_t)n;
        pthread_mutex_unlock(&pool->mu);

        smtp_worker_session(w, w->batch, n);

        pthread_mutex_lock(&pool->mu);
        for (int i = 0; i < n; i++) {
            if (pool->done_tail)
                pool->done_tail->next = w->batch[i];
            else
                pool->done_head = w->batch[i];
            pool->done_tail = w->batch[i];
        }
        pthread_mutex_unlock(&pool->mu);
        ev_async_send(pool->loop, &pool->async);
    }
    return NULL;
}

/* ---- loop side ----------------------------------------------------------- */

/* smtp_pool_finish - run one job's done and free it (loop thread). */
static void smtp_pool_finish(struct smtp_pool *pool, struct smtp_job *j)
{
    /* Count down first: done may submit again. */
    pool->pending--;
    if (pool->pending == 0) {
        ev_unref(pool->loop);
        if (ev_is_active(&pool->drain_timer))
            ev_timer_stop(pool->loop, &pool->drain_timer);
    }
    j->done(j->arg, &j->res);
    smtp_message_free(j->msg);
    herold_free(j);
}

/* smtp_pool_take_done - detach the list of reported jobs. */
static struct smtp_job *smtp_pool_take_done(struct smtp_pool *pool)
{
    struct smtp_job *list;

    pthread_mutex_lock(&pool->mu);
    list = pool->done_head;
    pool->done_head = pool->done_tail = NULL;
    pthread_mutex_unlock(&pool->mu);
    return list;
}

/* smtp_pool_on_async - workers reported results: run their done. */
static void smtp_pool_on_async(struct ev_loop *loop, ev_async *w,
                               int revents)
{
    struct smtp_pool *pool = w->data;
    struct smtp_job *j, *next;

    (void)loop;
    (void)revents;
    for (j = smtp_pool_take_done(pool); j != NULL; j = next) {
        next = j->next;
        smtp_pool_finish(pool, j);
    }
}

/* smtp_pool_on_drain_deadline - cut the sessions still running. */
static void smtp_pool_on_drain_deadline(struct ev_loop *loop, ev_timer *t,
                                        int revents)
{
    struct smtp_pool *pool = t->data;

    (void)loop;
    (void)revents;
    pthread_mutex_lock(&pool->mu);
    smtp_pool_abort_locked(pool);
    pthread_mutex_unlock(&pool->mu);
}

/* smtp_pool_fail_queued_locked - move every queued job to the done list
 * as TRANSIENT with reason. */
static void smtp_pool_fail_queued_locked(struct smtp_pool *pool,
                                         const char *reason)
{
    struct smtp_job *j;

    while ((j = pool->q_head) != NULL) {
        pool->q_head = j->next;
        j->next = NULL;
        smtp_set_result(&j->res, SMTP_TRANSIENT, 0, false, "%s", reason);
        if (pool->done_tail)
            pool->done_tail->next = j;
        else
            pool->done_head = j;
        pool->done_tail = j;
    }
    pool->q_tail = NULL;
    pool->q_len = 0;
}

int smtp_pool_submit(struct smtp_pool *pool, struct smtp_message *msg,
                     smtp_done_fn *done, void *arg, struct herr *err)
{
    struct smtp_job *j;

    if (pool->draining)
        return herr_set(err, HERR_TRANSIENT, NULL, "smtp pool draining");
    j = herold_calloc(1, sizeof *j);
    if (j == NULL)
        return herr_set(err, HERR_RESOURCE, NULL, "out of memory");
    j->msg = msg;
    j->done = done;
    j->arg = arg;

    pthread_mutex_lock(&pool->mu);
    if (pool->q_len >= pool->queue_max) {
        pthread_mutex_unlock(&pool->mu);
        herold_free(j);
        return herr_set(err, HERR_TRANSIENT, NULL,
                        "smtp queue full (%zu waiting)", pool->queue_max);
    }
    if (pool->q_tail)
        pool->q_tail->next = j;
    else
        pool->q_head = j;
    pool->q_tail = j;
    pool->q_len++;
    pthread_cond_signal(&pool->cv);
    pthread_mutex_unlock(&pool->mu);

    /* In flight: keep the loop alive until done has run. */
    if (pool->pending++ == 0)
        ev_ref(pool->loop);
    return 0;
}

void smtp_pool_drain(struct smtp_pool *pool, ev_tstamp deadline)
{
    ev_tstamp in;

    pool->draining = true;
    pthread_mutex_lock(&pool->mu);
    smtp_pool_fail_queued_locked(pool, "smtp pool draining");
    pthread_mutex_unlock(&pool->mu);
    ev_async_send(pool->loop, &pool->async);

    if (pool->pending > 0 && !ev_is_active(&pool->drain_timer)) {
        in = deadline - ev_now(pool->loop);
        ev_timer_set(&pool->drain_timer, in > 0 ? in : 0, 0);
        ev_timer_start(pool->loop, &pool->drain_timer);
    }
}

size_t smtp_pool_pending(const struct smtp_pool *pool)
{
    return pool->pending;
}

/* smtp_is_ip_literal - host is an IPv4 or IPv6 address. */
static bool smtp_is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1
           || inet_pton(AF_INET6, host, buf) == 1;
}

/* smtp_is_loopback - localhost, 127.0.0.0/8 or ::1. */
static bool smtp_is_loopback(const char *host)
{
    struct in_addr a4;

    if (strcmp(host, "localhost") == 0 || strcmp(host, "::1") == 0)
        return true;
    return inet_pton(AF_INET, host, &a4) == 1
           && (ntohl(a4.s_addr) >> 24) == 127;
}

/* smtp_pool_make_ssl_ctx - the one client context: system trust store
 * or ca_file, TLS 1.2 or later, peer verified with the relay's name. */
static SSL_CTX *smtp_pool_make_ssl_ctx(const struct smtp_pool_config *cfg,
                                       struct herr *err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    X509_VERIFY_PARAM *param;

    if (ctx == NULL) {
        herr_set(err, HERR_RESOURCE, NULL, "SSL_CTX_new failed");
        return NULL;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
        herr_set(err, HERR_RESOURCE, NULL, "cannot set TLS 1.2 minimum");
        goto fail;
    }
    /* libESMTP loads no CAs into an application context. */
    if (cfg->ca_file != NULL) {
        if (!SSL_CTX_load_verify_locations(ctx, cfg->ca_file, NULL)) {
            herr_set(err, HERR_INPUT, "ca_file", "cannot load CA file");
            goto fail;
        }
    } else if (!SSL_CTX_set_default_verify_paths(ctx)) {
        herr_set(err, HERR_RESOURCE, NULL, "cannot load system CA store");
        goto fail;
    }
    /* Verify in the handshake too, with OpenSSL's hostname check, so a
     * bad certificate fails even before libESMTP's own check (which
     * reports to our event callback and aborts as well). */
    param = SSL_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_hostflags(param,
                                    X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (!X509_VERIFY_PARAM_set1_host(param, cfg->host, 0)) {
        herr_set(err, HERR_RESOURCE, NULL, "cannot set verify host");
        goto fail;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, smtp_pool_on_verify);
    ERR_clear_error();
    return ctx;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

/* smtp_pool_validate - the configuration rules in smtp_pool.h. */
static int smtp_pool_validate(const struct smtp_pool_config *cfg,
                              struct herr *err)
{
    if (cfg->host == NULL || cfg->host[0] == '\0' || strlen(cfg->host) > 253
        || strchr(cfg->host, ':') != NULL || !smtp_address_ok(cfg->host))
        return herr_set(err, HERR_INPUT, "host",
                        "expected a relay host name or IPv4 address");
    if (cfg->port < 0 || cfg->port > 65535)
        return herr_set(err, HERR_INPUT, "port", "port out of range");
    if (cfg->starttls != SMTP_STARTTLS_REQUIRED
        && cfg->starttls != SMTP_STARTTLS_OPPORTUNISTIC
        && cfg->starttls != SMTP_STARTTLS_OFF)
        return herr_set(err, HERR_INPUT, "starttls", "unknown mode");
    if ((cfg->username == NULL) != (cfg->password == NULL))
        return herr_set(err, HERR_INPUT, "username",
                        "username and password go together");
    if (cfg->username != NULL && cfg->starttls == SMTP_STARTTLS_OFF
        && !smtp_is_loopback(cfg->host))
        return herr_set(err, HERR_INPUT, "starttls",
                        "AUTH without STARTTLS is allowed only to a "
                        "loopback relay");
    if (cfg->starttls != SMTP_STARTTLS_OFF && smtp_is_ip_literal(cfg->host))
        return herr_set(err, HERR_INPUT, "host",
                        "STARTTLS needs a host name: libESMTP checks "
                        "certificates against DNS names only");
    if (cfg->ehlo_name != NULL && !smtp_address_ok(cfg->ehlo_name))
        return herr_set(err, HERR_INPUT, "ehlo_name", "invalid EHLO name");
    if (cfg->workers < 0 || cfg->workers > 256)
        return herr_set(err, HERR_INPUT, "workers", "expected 1..256");
    if (cfg->queue_max < 0 || cfg->max_per_session < 0
        || cfg->max_per_session > 10000)
        return herr_set(err, HERR_INPUT, "max_per_session",
                        "expected 1..10000");
    if (cfg->connect_timeout_ms < 0 || cfg->command_timeout_ms < 0
        || cfg->data_timeout_ms < 0)
        return herr_set(err, HERR_INPUT, "timeouts", "negative timeout");
    return 0;
}

static pthread_once_t smtp_auth_once = PTHREAD_ONCE_INIT;

/* smtp_auth_init - libESMTP's SASL client, once per process. */
static void smtp_auth_init(void)
{
    auth_client_init();
}

struct smtp_pool *smtp_pool_new(struct ev_loop *loop,
                                const struct smtp_pool_config *cfg,
                                struct herr *err)
{
    struct smtp_pool *pool;
    char hp[300];
    sigset_t all, old;

    if (smtp_pool_validate(cfg, err) < 0)
        return NULL;
    pool = herold_calloc(1, sizeof *pool);
    if (pool == NULL)
        goto oom;
    pool->loop = loop;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->cv, NULL);
    pool->starttls = cfg->starttls;
    pool->plaintext_auth_ok = cfg->starttls == SMTP_STARTTLS_OFF
                              && smtp_is_loopback(cfg->host);
    pool->keep_nagle = cfg->keep_nagle;
    pool->sign = cfg->sign;
    pool->sign_arg = cfg->sign_arg;
    pool->nworkers = cfg->workers > 0 ? cfg->workers : SMTP_DEFAULT_WORKERS;
    pool->queue_max = cfg->queue_max > 0 ? (size_t)cfg->queue_max
                                         : SMTP_DEFAULT_QUEUE;
    pool->per_session = cfg->max_per_session > 0 ? cfg->max_per_session
                                                  : SMTP_DEFAULT_PER_SESSION;
    pool->connect_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms
                                                   : SMTP_DEFAULT_CONNECT_MS;
    pool->command_ms = cfg->command_timeout_ms > 0 ? cfg->command_timeout_ms
                                                   : SMTP_DEFAULT_COMMAND_MS;
    pool->data_ms = cfg->data_timeout_ms > 0 ? cfg->data_timeout_ms
                                             : SMTP_DEFAULT_DATA_MS;
    snprintf(hp, sizeof hp, "%s:%d", cfg->host,
             cfg->port > 0 ? cfg->port : SMTP_DEFAULT_PORT);
    pool->host = herold_strdup(cfg->host);
    pool->hostport = herold_strdup(hp);
    if (pool->host == NULL || pool->hostport == NULL)
        goto oom;
    if (cfg->ehlo_name != NULL
        && (pool->ehlo_name = herold_strdup(cfg->ehlo_name)) == NULL)
        goto oom;
    if (cfg->username != NULL
        && ((pool->username = herold_strdup(cfg->username)) == NULL
            || (pool->password = herold_strdup(cfg->password)) == NULL))
        goto oom;
    if (cfg->starttls != SMTP_STARTTLS_OFF
        && (pool->ssl_ctx = smtp_pool_make_ssl_ctx(cfg, err)) == NULL)
        goto fail;
    pool->workers = herold_calloc((size_t)pool->nworkers,
                                  sizeof *pool->workers);
    if (pool->workers == NULL)
        goto oom;
    for (int i = 0; i < pool->nworkers; i++) {
        pool->workers[i].pool = pool;
        pool->workers[i].id = i;
        pool->workers[i].sock_dup = -1;
    }
    for (int i = 0; i < pool->nworkers; i++) {
        struct smtp_worker *w = &pool->workers[i];

        w->batch = herold_calloc((size_t)pool->per_session, sizeof *w->batch);
        if (w->batch == NULL)
            goto oom;
    }
    pthread_once(&smtp_auth_once, smtp_auth_init);

    ev_async_init(&pool->async, smtp_pool_on_async);
    pool->async.data = pool;
    ev_async_start(loop, &pool->async);
    /* An idle pool does not keep the loop alive; submit takes a ref. */
    ev_unref(loop);
    ev_timer_init(&pool->drain_timer, smtp_pool_on_drain_deadline, 0, 0);
    pool->drain_timer.data = pool;

    /* Workers block every signal: signals go to the loop thread, and a
     * write to a closed socket leaves a pending SIGPIPE on the worker
     * (consumed after each session) instead of killing the process. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (int i = 0; i < pool->nworkers; i++) {
        int rc = pthread_create(&pool->workers[i].thread, NULL,
                                smtp_worker_main, &pool->workers[i]);
        if (rc != 0) {
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            errno = rc;
            herr_sys(err, "pthread_create");
            smtp_pool_free(pool);
            return NULL;
        }
        pool->workers[i].started = true;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return pool;

oom:
    herr_set(err, HERR_RESOURCE, NULL, "out of memory");
fail:
    smtp_pool_free(pool);
    return NULL;
}

void smtp_pool_free(struct smtp_pool *pool)
{
    struct smtp_job *j, *next;

    if (pool == NULL)
        return;
    if (pool->workers != NULL) {
        /* Stop, then cut running sessions, then join: a worker inside
         * smtp_start_session returns soon after its socket is shut. */
        pthread_mutex_lock(&pool->mu);
        pool->stopping = true;
        smtp_pool_abort_locked(pool);
        smtp_pool_fail_queued_locked(pool, "smtp pool stopped");
        pthread_cond_broadcast(&pool->cv);
        pthread_mutex_unlock(&pool->mu);
        for (int i = 0; i < pool->nworkers; i++)
            if (pool->workers[i].started)
                pthread_join(pool->workers[i].thread, NULL);
    }
    if (ev_is_active(&pool->async)) {
        /* Every accepted message gets its one done, here at the latest. */
        for (j = smtp_pool_take_done(pool); j != NULL; j = next) {
            next = j->next;
            smtp_pool_finish(pool, j);
        }
        if (ev_is_active(&pool->drain_timer))
            ev_timer_stop(pool->loop, &pool->drain_timer);
        ev_ref(pool->loop);
        ev_async_stop(pool->loop, &pool->async);
    }
    if (pool->workers != NULL)
        for (int i = 0; i < pool->nworkers; i++)
            herold_free(pool->workers[i].batch);
    herold_free(pool->workers);
    if (pool->ssl_ctx != NULL)
        SSL_CTX_free(pool->ssl_ctx);
    herold_free(pool->host);
    herold_free(pool->hostport);
    herold_free(pool->ehlo_name);
    herold_free(pool->username);
    herold_free_secret(pool->password);
    pthread_cond_destroy(&pool->cv);
    pthread_mutex_destroy(&pool->mu);
    herold_free(pool);
}
