/*
 * http - the shared HTTP transport: curl's multi socket-action API driven
 * by libev.
 *
 * curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION: one ev_io
 * per socket) and when to wake it up (CURLMOPT_TIMERFUNCTION: one
 * ev_timer); we tell curl what happened with curl_multi_socket_action and
 * collect finished transfers with curl_multi_info_read.  Connections stay
 * in the multi handle's pool and are reused per host; requests beyond the
 * connection caps queue inside curl.  Easy handles and socket watchers
 * are recycled through small free lists.  Requests carry an empty
 * "Expect:" so curl never stalls a POST waiting for 100-continue.
 *
 * Owns: the multi handle, every in-flight request (its copies of url,
 * headers and body, its reply buffer) and the socket watchers.
 *
 * Never blocks the loop, never runs a done callback from inside
 * http_submit, never follows redirects, never turns TLS verification off,
 * never enables verbose traces, and never logs URLs, headers or bodies.
 * This is the only file that includes curl: CURLcode and CURLMcode are
 * converted to herold terms here and nowhere else.
 */
#include "http.h"

#include <curl/curl.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "../dispatcher/alloc.h"
#include "../dispatcher/log.h"

#define HTTP_SPARE_MAX 64                 /* recycled easy handles kept */
#define HTTP_RETRY_AFTER_CAP_MS 3600000L  /* never wait longer than 1 h */
#define HTTP_REPLY_MAX (64u << 20)        /* hard ceiling on the reply cap */

/* One socket curl asked us to watch; linked so free can find leftovers. */
struct http_sock {
    ev_io io;                     /* first member: the callback casts back */
    struct http_transport *t;
    struct http_sock *prev, *next;
};

/* One request from http_submit until its done callback returns. */
struct http_req {
    struct http_transport *t;
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    size_t body_len;
    char *reply;                  /* NUL-terminated, reply_len bytes */
    size_t reply_len, reply_cap;
    bool reply_too_large;
    bool reply_oom;
    long retry_after_ms;
    http_done_fn *done;
    void *arg;
    struct http_req *prev, *next; /* t->reqs, or an abort batch */
};

struct http_transport {
    struct ev_loop *loop;
    CURLM *multi;
    ev_timer timer;               /* curl's single timeout */
    struct http_config conf;      /* defaults filled in */
    char *ca_file;                /* owned copy of conf.ca_file */
    struct http_req *reqs;        /* in flight, newest first */
    size_t inflight;              /* submitted and done not yet called */
    struct http_sock *socks;      /* watched now */
    struct http_sock *spare_socks;/* recycled, linked through next */
    CURL *spare[HTTP_SPARE_MAX];
    size_t nspare;
    int busy;                     /* our callbacks currently on the stack */
    bool closing;                 /* http_transport_free was called */
};

static void http_destroy(struct http_transport *t);

/* http_enter - note that one of our callbacks is on the stack. */
static void http_enter(struct http_transport *t)
{
    t->busy++;
}

/* http_leave - leave a callback; free the transport if that was asked
 * for while we were busy (hiredis REDIS_FREEING). */
static void http_leave(struct http_transport *t)
{
    if (--t->busy == 0 && t->closing)
        http_destroy(t);
}

/* http_link - put r at the head of t's in-flight list. */
static void http_link(struct http_transport *t, struct http_req *r)
{
    r->prev = NULL;
    r->next = t->reqs;
    if (t->reqs != NULL)
        t->reqs->prev = r;
    t->reqs = r;
}

/* http_unlink - take r out of the list whose head is *head. */
static void http_unlink(struct http_req **head, struct http_req *r)
{
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        *head = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static int http_setup_base(struct http_transport *t, CURL *e);

/* http_easy_get - an easy handle with the transport's base options set:
 * recycled if one is spare (it keeps them), else a new one. */
static CURL *http_easy_get(struct http_transport *t)
{
    CURL *e;

    if (t->nspare > 0)
        return t->spare[--t->nspare];
    e = curl_easy_init();
    if (e != NULL && http_setup_base(t, e) < 0) {
        curl_easy_cleanup(e);
        e = NULL;
    }
    return e;
}

/* http_easy_put - keep e for the next request, or clean it up when the
 * free list is full.  A kept handle still holds this request's pointers
 * (headers, body, context); curl never reads them while the handle is
 * idle, and http_setup_easy overwrites every one before the next use.
 * Not resetting saves the base options' setup on every request. */
static void http_easy_put(struct http_transport *t, CURL *e)
{
    if (e == NULL)
        return;
    if (t->nspare < HTTP_SPARE_MAX && !t->closing)
        t->spare[t->nspare++] = e;
    else
        curl_easy_cleanup(e);
}

/* http_req_release - detach r from curl and free everything but the reply. */
static void http_req_release(struct http_req *r)
{
    http_easy_put(r->t, r->easy);
    r->easy = NULL;
    curl_slist_free_all(r->headers);
    r->headers = NULL;
    herold_free(r->body);
    r->body = NULL;
}

/* http_request_sent - did the whole request reach the peer, as observed? */
static bool http_request_sent(const struct http_req *r, long status)
{
    curl_off_t up = 0;

    if (status > 0)
        return true;
    if (curl_easy_getinfo(r->easy, CURLINFO_SIZE_UPLOAD_T, &up) != CURLE_OK)
        return false;
    return r->body_len > 0 && up >= (curl_off_t)r->body_len;
}

/* http_is_tls_error - CURLcodes that mean the TLS layer refused. */
static bool http_is_tls_error(CURLcode rc)
{
    switch (rc) {
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CLIENTCERT:
    case CURLE_USE_SSL_FAILED:
        return true;
    default:
        return false;
    }
}

/* http_outcome - convert a finished transfer (curl's rc) into herold's
 * transport_outcome.  detail holds fixed words only: no URL, no body. */
static void http_outcome(struct http_req *r, CURLcode rc,
                         struct transport_outcome *o)
{
    long status = 0;
    const char *detail = curl_easy_strerror(rc);

    memset(o, 0, sizeof *o);
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    o->code = (int)status;
    o->retry_after_ms = r->retry_after_ms;
    o->request_sent = http_request_sent(r, status);
    o->body = r->reply;
    o->body_len = r->reply_len;

    if (rc == CURLE_OK) {
        o->kind = TRANSPORT_DONE;
        detail = "";
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
        o->kind = TRANSPORT_TIMEOUT;
        detail = "timeout";
    } else if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
               rc == CURLE_COULDNT_RESOLVE_PROXY ||
               (rc == CURLE_SEND_ERROR && !o->request_sent)) {
        o->kind = TRANSPORT_CONNECT;
    } else if (rc == CURLE_PEER_FAILED_VERIFICATION) {
        o->kind = TRANSPORT_TLS;
        detail = "certificate verify failed";
    } else if (http_is_tls_error(rc)) {
        o->kind = TRANSPORT_TLS;
    } else if (r->reply_too_large || rc == CURLE_FILESIZE_EXCEEDED) {
        o->kind = TRANSPORT_PROTOCOL;
        detail = "reply too large";
    } else if (r->reply_oom || rc == CURLE_OUT_OF_MEMORY) {
        o->kind = TRANSPORT_LOCAL;
        detail = "out of memory";
    } else {
        o->kind = TRANSPORT_PROTOCOL;
    }
    snprintf(o->detail, sizeof o->detail, "%s", detail);
}

/* http_finish - end r: take it out of curl, hand o to its done callback
 * exactly once, then free r.  r must already be off every list. */
static void http_finish(struct http_req *r, struct transport_outcome *o)
{
    struct http_transport *t = r->t;

    /* Remove before done runs: done may submit, abort or free, and curl
     * must no longer know this handle by then.  Removing also drops any
     * completion message curl still queues for it. */
    curl_multi_remove_handle(t->multi, r->easy);
    http_req_release(r);
    t->inflight--;
    r->done(r->arg, o);
    herold_free(r->reply);
    herold_free(r);
}

/* http_check_done - deliver every transfer curl reports as finished. */
static void http_check_done(struct http_transport *t)
{
    struct transport_outcome o;
    CURLMsg *m;
    int left;

    while (!t->closing && (m = curl_multi_info_read(t->multi, &left)) != NULL) {
        struct http_req *r;
        char *priv = NULL;

        if (m->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        r = (struct http_req *)(void *)priv;
        http_outcome(r, m->data.result, &o);
        http_unlink(&t->reqs, r);
        http_finish(r, &o);
    }
}

/* http_action - tell curl about activity on fd (or a timeout) and collect
 * what finished. */
static void http_action(struct http_transport *t, curl_socket_t fd, int flags)
{
    int running = 0;
    CURLMcode mc;

    http_enter(t);
    mc = curl_multi_socket_action(t->multi, fd, flags, &running);
    if (mc != CURLM_OK)
        LOG(LOG_WARN, "http", "multi_error", "error=%s", curl_multi_strerror(mc));
    http_check_done(t);
    http_leave(t);
}

/* http_on_io - libev saw activity on a socket curl asked us to watch. */
static void http_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct http_sock *hs = (struct http_sock *)w;
    int flags = 0;

    (void)loop;
    if (revents & EV_READ)
        flags |= CURL_CSELECT_IN;
    if (revents & EV_WRITE)
        flags |= CURL_CSELECT_OUT;
    if (revents & EV_ERROR)
        flags |= CURL_CSELECT_ERR;
    /* hs may be freed inside the call (CURL_POLL_REMOVE): pass fd by value */
    http_action(hs->t, w->fd, flags);
}

/* http_on_timer - curl's timeout expired. */
static void http_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    http_action(w->data, CURL_SOCKET_TIMEOUT, 0);
}

/* http_on_curl_socket - CURLMOPT_SOCKETFUNCTION: (re)arm or drop an ev_io. */
static int http_on_curl_socket(CURL *easy, curl_socket_t s, int what,
                               void *userp, void *socketp)
{
    struct http_transport *t = userp;
    struct http_sock *hs = socketp;
    int events = 0;

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (hs != NULL) {
            /* stop before curl closes the descriptor */
            ev_io_stop(t->loop, &hs->io);
            if (hs->prev != NULL)
                hs->prev->next = hs->next;
            else
                t->socks = hs->next;
            if (hs->next != NULL)
                hs->next->prev = hs->prev;
            curl_multi_assign(t->multi, s, NULL);
            /* keep it: connections come and go, the peak count is bounded */
            hs->prev = NULL;
            hs->next = t->spare_socks;
            t->spare_socks = hs;
        }
        return 0;
    }
    if (hs == NULL) {
        if (t->spare_socks != NULL) {
            hs = t->spare_socks;
            t->spare_socks = hs->next;
        } else if ((hs = herold_malloc(sizeof *hs)) == NULL) {
            /* -1 makes curl fail the transfers in progress (documented
             * for CURLMOPT_SOCKETFUNCTION); each still ends with a done */
            LOG(LOG_WARN, "http", "socket_watch_failed", "error=%s", "out of memory");
            return -1;
        }
        memset(hs, 0, sizeof *hs);
        hs->t = t;
        hs->next = t->socks;
        if (t->socks != NULL)
            t->socks->prev = hs;
        t->socks = hs;
        ev_io_init(&hs->io, http_on_io, s, 0);
        curl_multi_assign(t->multi, s, hs);
    }
    if (what & CURL_POLL_IN)
        events |= EV_READ;
    if (what & CURL_POLL_OUT)
        events |= EV_WRITE;
    if (ev_is_active(&hs->io) && (hs->io.events & (EV_READ | EV_WRITE)) == events)
        return 0;
    ev_io_stop(t->loop, &hs->io);
    ev_io_set(&hs->io, s, events);
    if (events != 0)
        ev_io_start(t->loop, &hs->io);
    return 0;
}

/* http_on_curl_timer - CURLMOPT_TIMERFUNCTION: rearm our one ev_timer.
 * Never calls into curl: a zero timeout fires on the next loop turn. */
static int http_on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct http_transport *t = userp;

    (void)multi;
    ev_timer_stop(t->loop, &t->timer);
    if (timeout_ms >= 0) {
        ev_timer_set(&t->timer, (ev_tstamp)timeout_ms / 1000.0, 0.0);
        ev_timer_start(t->loop, &t->timer);
    }
    return 0;
}

/* http_on_header - CURLOPT_HEADERFUNCTION: find Retry-After. */
static size_t http_on_header(char *p, size_t size, size_t n, void *ud)
{
    struct http_req *r = ud;
    size_t len = size * n;
    static const char name[] = "retry-after:";
    char value[128];
    size_t vlen;

    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        r->retry_after_ms = -1;   /* a new (final or interim) reply starts */
        return len;
    }
    if (len < sizeof name - 1 || strncasecmp(p, name, sizeof name - 1) != 0)
        return len;
    vlen = len - (sizeof name - 1);
    if (vlen >= sizeof value)
        return len;               /* absurdly long: not a value we use */
    memcpy(value, p + sizeof name - 1, vlen);
    while (vlen > 0 && (value[vlen - 1] == '\r' || value[vlen - 1] == '\n'))
        vlen--;
    value[vlen] = '\0';
    r->retry_after_ms = http_parse_retry_after(value, (long)time(NULL),
                                               HTTP_RETRY_AFTER_CAP_MS);
    return len;
}

/* http_on_write - CURLOPT_WRITEFUNCTION: keep the reply, up to the cap.
 * Returning less than len makes curl abort the transfer. */
static size_t http_on_write(char *p, size_t size, size_t n, void *ud)
{
    struct http_req *r = ud;
    size_t len = size * n;
    size_t max = r->t->conf.max_response_bytes;

    if (len > max - r->reply_len) {
        r->reply_too_large = true;
        return 0;
    }
    if (r->reply_len + len + 1 > r->reply_cap) {
        size_t cap = r->reply_cap ? r->reply_cap : 1024;
        char *nr;

        while (cap < r->reply_len + len + 1)
            cap *= 2;
        if (cap > max + 1)
            cap = max + 1;
        nr = herold_realloc(r->reply, cap);
        if (nr == NULL) {
            r->reply_oom = true;
            return 0;
        }
        r->reply = nr;
        r->reply_cap = cap;
    }
    memcpy(r->reply + r->reply_len, p, len);
    r->reply_len += len;
    r->reply[r->reply_len] = '\0';
    return len;
}

/* http_url_ok - http:// or https://, no whitespace or control bytes. */
static bool http_url_ok(const char *url)
{
    if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0)
        return false;
    for (const unsigned char *p = (const unsigned char *)url; *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            return false;
    return true;
}

/* http_method_ok - an upper-case token such as POST or PATCH. */
static bool http_method_ok(const char *m)
{
    if (m[0] == '\0' || strlen(m) > 16)
        return false;
    for (; *m; m++)
        if (*m < 'A' || *m > 'Z')
            return false;
    return true;
}

/* http_check_request - refuse what we will not send (all HERR_INPUT). */
static int http_check_request(const struct http_request *req, struct herr *err)
{
    if (req->url == NULL || !http_url_ok(req->url))
        return herr_set(err, HERR_INPUT, NULL, "url: expected an http:// or https:// URL");
    if (req->method == NULL || !http_method_ok(req->method))
        return herr_set(err, HERR_INPUT, NULL, "method: expected an HTTP method token");
    if (req->body_len > 0 && req->body == NULL)
        return herr_set(err, HERR_INPUT, NULL, "body: body_len without body");
    for (size_t i = 0; req->headers != NULL && req->headers[i] != NULL; i++) {
        if (!http_header_value_ok(req->headers[i]) || strchr(req->headers[i], ':') == NULL)
            return herr_set(err, HERR_INPUT, NULL,
                            "headers[%zu]: expected \"Name: value\" without CR or LF", i);
    }
    return 0;
}

/* http_build_headers - copy req's headers into r->headers; -1 on OOM.
 * Adds an empty "Expect:" so curl never waits for 100-continue. */
static int http_build_headers(struct http_req *r, const struct http_request *req)
{
    bool has_expect = false;
    struct curl_slist *l;

    for (size_t i = 0; req->headers != NULL && req->headers[i] != NULL; i++) {
        if (strncasecmp(req->headers[i], "Expect:", 7) == 0)
            has_expect = true;
        l = curl_slist_append(r->headers, req->headers[i]);
        if (l == NULL)
            return -1;
        r->headers = l;
    }
    if (!has_expect) {
        l = curl_slist_append(r->headers, "Expect:");
        if (l == NULL)
            return -1;
        r->headers = l;
    }
    return 0;
}

/* http_setup_base - the options every transfer of t shares; set once per
 * easy handle.  -1 if curl refused one. */
static int http_setup_base(struct http_transport *t, CURL *e)
{
    const struct http_config *c = &t->conf;
    bool ok = true;

    ok = ok && curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms) == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->timeout_ms) == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, c->low_speed_bytes) == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, c->low_speed_time_s) == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE,
                                (curl_off_t)c->max_response_bytes) == CURLE_OK;
    if (t->ca_file != NULL)
        ok = ok && curl_easy_setopt(e, CURLOPT_CAINFO, t->ca_file) == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, http_on_header) == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_on_write) == CURLE_OK;
    return ok ? 0 : -1;
}

/* http_setup_easy - the options of one transfer on a handle that has the
 * base options; every per-request pointer is overwritten here. */
static int http_setup_easy(struct http_transport *t, struct http_req *r,
                           const struct http_request *req)
{
    CURL *e = r->easy;
    bool ok = true;

    (void)t;
    ok = ok && curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)r) == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_URL, req->url) == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers) == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_HEADERDATA, (void *)r) == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)r) == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, (char *)NULL) == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_NOBODY, 0L) == CURLE_OK;

    if (strcmp(req->method, "GET") == 0 && r->body_len == 0) {
        ok = ok && curl_easy_setopt(e, CURLOPT_HTTPGET, 1L) == CURLE_OK;
    } else if (strcmp(req->method, "HEAD") == 0 && r->body_len == 0) {
        ok = ok && curl_easy_setopt(e, CURLOPT_NOBODY, 1L) == CURLE_OK;
    } else {
        /* POST and anything with a body; body points at our own copy */
        ok = ok && curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                                    (curl_off_t)r->body_len) == CURLE_OK;
        ok = ok && curl_easy_setopt(e, CURLOPT_POSTFIELDS,
                                    r->body ? r->body : "") == CURLE_OK;
        if (strcmp(req->method, "POST") != 0)
            ok = ok && curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method) == CURLE_OK;
    }
    return ok ? 0 : -1;
}

/*
 * http_submit - start req on t.  url, headers and body are copied, so req
 * and everything it points to may be freed when this returns.  Returns 0
 * when accepted: done then runs exactly once, on the loop thread, from a
 * libev callback (never from inside http_submit), with an outcome whose
 * body is borrowed for the duration of the call.  Returns -1 with err
 * filled when refused, and done never runs: HERR_INPUT for a URL that is
 * not http(s), a bad method or a header containing CR or LF;
 * HERR_RESOURCE when memory ran out; HERR_TRANSIENT once the transport is
 * closing.
 */
int http_submit(struct http_transport *t, const struct http_request *req,
                http_done_fn *done, void *arg, struct herr *err)
{
    struct http_req *r;
    CURLMcode mc;

    if (t->closing)
        return herr_set(err, HERR_TRANSIENT, NULL, "http transport is closing");
    if (http_check_request(req, err) < 0)
        return -1;
    r = herold_calloc(1, sizeof *r);
    if (r == NULL)
        return herr_set(err, HERR_RESOURCE, NULL, "out of memory");
    r->t = t;
    r->done = done;
    r->arg = arg;
    r->retry_after_ms = -1;
    r->body_len = req->body_len;
    if (req->body_len > 0) {
        r->body = herold_malloc(req->body_len);
        if (r->body == NULL)
            goto oom;
        memcpy(r->body, req->body, req->body_len);
    }
    if (http_build_headers(r, req) < 0)
        goto oom;
    r->easy = http_easy_get(t);
    if (r->easy == NULL || http_setup_easy(t, r, req) < 0)
        goto oom;
    /* Adding only arms curl's timer (a zero ev_timer); the transfer
     * starts, and can finish, only from a libev callback. */
    mc = curl_multi_add_handle(t->multi, r->easy);
    if (mc != CURLM_OK) {
        herr_set(err, HERR_RESOURCE, NULL, "curl: %s", curl_multi_strerror(mc));
        goto fail;
    }
    http_link(t, r);
    t->inflight++;
    return 0;

oom:
    herr_set(err, HERR_RESOURCE, NULL, "out of memory");
fail:
    http_req_release(r);
    herold_free(r);
    return -1;
}

/* http_config_defaults - c with every zero field replaced by its default. */
static struct http_config http_config_defaults(const struct http_config *c)
{
    struct http_config d = {0};

    if (c != NULL)
        d = *c;
    if (d.connect_timeout_ms <= 0)
        d.connect_timeout_ms = 5000;
    if (d.timeout_ms <= 0)
        d.timeout_ms = 15000;
    if (d.low_speed_bytes <= 0)
        d.low_speed_bytes = 1;
    if (d.low_speed_time_s <= 0)
        d.low_speed_time_s = 10;
    if (d.max_host_connections <= 0)
        d.max_host_connections = 64;
    if (d.max_total_connections <= 0)
        d.max_total_connections = 256;
    if (d.max_response_bytes == 0)
        d.max_response_bytes = 65536;
    if (d.max_response_bytes > HTTP_REPLY_MAX)
        d.max_response_bytes = HTTP_REPLY_MAX;
    return d;
}

/*
 * http_transport_new - a new transport on loop, configured by conf (NULL
 * or zero fields: defaults; conf->ca_file is copied).  Opens no sockets
 * until the first request.  Returns the transport, owned by the caller
 * (free with http_transport_free), or NULL with err: HERR_RESOURCE when
 * curl or memory failed.
 */
struct http_transport *http_transport_new(struct ev_loop *loop,
                                          const struct http_config *conf,
                                          struct herr *err)
{
    struct http_transport *t;
    bool ok = true;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        herr_set(err, HERR_RESOURCE, NULL, "curl_global_init failed");
        return NULL;
    }
    t = herold_calloc(1, sizeof *t);
    if (t == NULL)
        goto fail;
    t->loop = loop;
    t->conf = http_config_defaults(conf);
    if (t->conf.ca_file != NULL) {
        t->ca_file = herold_strdup(t->conf.ca_file);
        if (t->ca_file == NULL)
            goto fail;
    }
    t->conf.ca_file = NULL;       /* only our copy is used */
    ev_timer_init(&t->timer, http_on_timer, 0.0, 0.0);
    t->timer.data = t;
    t->multi = curl_multi_init();
    if (t->multi == NULL)
        goto fail;
    ok = ok && curl_multi_setopt(t->multi, CURLMOPT_SOCKETFUNCTION, http_on_curl_socket) == CURLM_OK;
    ok = ok && curl_multi_setopt(t->multi, CURLMOPT_SOCKETDATA, (void *)t) == CURLM_OK;
    ok = ok && curl_multi_setopt(t->multi, CURLMOPT_TIMERFUNCTION, http_on_curl_timer) == CURLM_OK;
    ok = ok && curl_multi_setopt(t->multi, CURLMOPT_TIMERDATA, (void *)t) == CURLM_OK;
    ok = ok && curl_multi_setopt(t->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                                 t->conf.max_host_connections) == CURLM_OK;
    ok = ok && curl_multi_setopt(t->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                                 t->conf.max_total_connections) == CURLM_OK;
    /* keep as many idle connections as we may open, for reuse */
    ok = ok && curl_multi_setopt(t->multi, CURLMOPT_MAXCONNECTS,
                                 t->conf.max_total_connections) == CURLM_OK;
    if (!ok)
        goto fail;
    return t;

fail:
    herr_set(err, HERR_RESOURCE, NULL, "cannot create the HTTP transport: out of memory");
    if (t != NULL) {
        if (t->multi != NULL)
            curl_multi_cleanup(t->multi);
        herold_free(t->ca_file);
        herold_free(t);
    }
    curl_global_cleanup();
    return NULL;
}

/*
 * http_inflight - how many requests were accepted by http_submit and have
 * not yet had their done callback run (queued inside curl included).
 */
size_t http_inflight(const struct http_transport *t)
{
    return t->inflight;
}

/*
 * http_abort_all - end every request in flight now: each done runs once,
 * from inside this call, with TRANSPORT_ABORTED and request_sent as
 * observed.  A done may submit new requests (they stay in flight) or call
 * http_abort_all again (it then aborts only what was submitted since);
 * the batch taken here is private, so nothing is ended twice.
 */
void http_abort_all(struct http_transport *t)
{
    struct http_req *batch = t->reqs;
    struct transport_outcome o;

    t->reqs = NULL;
    http_enter(t);
    while (batch != NULL) {
        struct http_req *r = batch;
        long status = 0;

        http_unlink(&batch, r);
        memset(&o, 0, sizeof o);
        o.kind = TRANSPORT_ABORTED;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
        o.code = (int)status;
        o.request_sent = http_request_sent(r, status);
        o.retry_after_ms = r->retry_after_ms;
        o.body = r->reply;
        o.body_len = r->reply_len;
        snprintf(o.detail, sizeof o.detail, "%s", "aborted");
        http_finish(r, &o);
    }
    http_leave(t);
}

/* http_destroy - release everything; nothing may be in flight. */
static void http_destroy(struct http_transport *t)
{
    ev_timer_stop(t->loop, &t->timer);
    while (t->nspare > 0)
        curl_easy_cleanup(t->spare[--t->nspare]);
    /* cleanup closes pooled connections and may report CURL_POLL_REMOVE */
    curl_multi_cleanup(t->multi);
    while (t->socks != NULL) {
        struct http_sock *hs = t->socks;

        t->socks = hs->next;
        ev_io_stop(t->loop, &hs->io);
        herold_free(hs);
    }
    while (t->spare_socks != NULL) {
        struct http_sock *hs = t->spare_socks;

        t->spare_socks = hs->next;
        herold_free(hs);
    }
    herold_free(t->ca_file);
    herold_free(t);
    curl_global_cleanup();
}

/*
 * http_transport_free - abort what is in flight (each done runs once with
 * TRANSPORT_ABORTED; submits from those callbacks are refused) and free
 * t.  NULL is a no-op.  May be called from inside a done callback: the
 * memory is then released once the outermost transport callback returns.
 */
void http_transport_free(struct http_transport *t)
{
    if (t == NULL || t->closing)
        return;
    http_enter(t);
    t->closing = true;
    http_abort_all(t);
    http_leave(t);
}

/* http_digits - exactly n decimal digits at *p into *out; advances *p. */
static bool http_digits(const char **p, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if ((*p)[i] < '0' || (*p)[i] > '9')
            return false;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return true;
}

/* http_lit - the literal s at *p; advances *p. */
static bool http_lit(const char **p, const char *s)
{
    size_t n = strlen(s);

    if (strncmp(*p, s, n) != 0)
        return false;
    *p += n;
    return true;
}

/* http_month - "Jan".."Dec" at *p into tm_mon (0-11); advances *p. */
static bool http_month(const char **p, int *mon)
{
    static const char names[] = "JanFebMarAprMayJunJulAugSepOctNovDec";

    for (int i = 0; i < 12; i++) {
        if (strncmp(*p, names + 3 * i, 3) == 0) {
            *p += 3;
            *mon = i;
            return true;
        }
    }
    return false;
}

/* http_hms - "HH:MM:SS" at *p into tm; advances *p. */
static bool http_hms(const char **p, struct tm *tm)
{
    return http_digits(p, 2, &tm->tm_hour) && http_lit(p, ":") &&
           http_digits(p, 2, &tm->tm_min) && http_lit(p, ":") &&
           http_digits(p, 2, &tm->tm_sec) &&
           tm->tm_hour <= 23 && tm->tm_min <= 59 && tm->tm_sec <= 60;
}

/* http_dayname - a known day name, short ("Sun") or long ("Sunday"). */
static bool http_dayname(const char **p, bool *is_long)
{
    static const char *const days[] = {"Sunday", "Monday", "Tuesday", "Wednesday",
                                       "Thursday", "Friday", "Saturday"};

    for (int i = 0; i < 7; i++) {
        if (http_lit(p, days[i])) {
            *is_long = true;
            return true;
        }
        if (strncmp(*p, days[i], 3) == 0) {
            *p += 3;
            *is_long = false;
            return true;
        }
    }
    return false;
}

/* http_parse_date - an RFC 9110 HTTP-date (IMF-fixdate, RFC 850 or
 * asctime) at *p into unix seconds; advances *p. */
static bool http_parse_date(const char **p, long now, long long *out)
{
    struct tm tm;
    bool is_long = false;
    int year = 0;
    time_t t;

    memset(&tm, 0, sizeof tm);
    if (!http_dayname(p, &is_long))
        return false;
    if (!is_long && http_lit(p, ", ")) {            /* Sun, 06 Nov 1994 08:49:37 GMT */
        if (!(http_digits(p, 2, &tm.tm_mday) && http_lit(p, " ") &&
              http_month(p, &tm.tm_mon) && http_lit(p, " ") &&
              http_digits(p, 4, &year) && http_lit(p, " ") &&
              http_hms(p, &tm) && http_lit(p, " GMT")))
            return false;
    } else if (is_long && http_lit(p, ", ")) {      /* Sunday, 06-Nov-94 08:49:37 GMT */
        time_t nt = (time_t)now;
        struct tm ntm;
        int yy = 0;

        if (!(http_digits(p, 2, &tm.tm_mday) && http_lit(p, "-") &&
              http_month(p, &tm.tm_mon) && http_lit(p, "-") &&
              http_digits(p, 2, &yy) && http_lit(p, " ") &&
              http_hms(p, &tm) && http_lit(p, " GMT")))
            return false;
        /* RFC 9110 5.6.7: a two-digit year more than 50 years ahead is
         * the most recent past year with those digits */
        if (gmtime_r(&nt, &ntm) == NULL)
            return false;
        year = (ntm.tm_year + 1900) / 100 * 100 + yy;
        if (year > ntm.tm_year + 1900 + 50)
            year -= 100;
    } else if (!is_long && http_lit(p, " ")) {      /* Sun Nov  6 08:49:37 1994 */
        if (!http_month(p, &tm.tm_mon) || !http_lit(p, " "))
            return false;
        if (**p == ' ') {
            (*p)++;
            if (!http_digits(p, 1, &tm.tm_mday))
                return false;
        } else if (!http_digits(p, 2, &tm.tm_mday)) {
            return false;
        }
        if (!(http_lit(p, " ") && http_hms(p, &tm) && http_lit(p, " ") &&
              http_digits(p, 4, &year)))
            return false;
    } else {
        return false;
    }
    if (tm.tm_mday < 1 || tm.tm_mday > 31)
        return false;
    tm.tm_year = year - 1900;
    t = timegm(&tm);
    if (t == (time_t)-1)
        return false;
    *out = (long long)t;
    return true;
}

/*
 * http_parse_retry_after - parse an RFC 9110 Retry-After value: either
 * delay-seconds or an HTTP-date (IMF-fixdate, RFC 850, asctime), the
 * latter relative to now (unix seconds).  Surrounding blanks are allowed.
 * Returns the delay in milliseconds, clamped to 0..cap_ms (cap_ms < 0
 * means no cap); a date in the past gives 0.  Absurd values never
 * overflow: they saturate at the cap.  Returns -1 when value is NULL,
 * empty or not one of the two forms.
 */
long http_parse_retry_after(const char *value, long now, long cap_ms)
{
    const char *p = value;
    long long secs = 0;
    long cap = cap_ms < 0 ? LONG_MAX : cap_ms;
    long long cap_s = cap / 1000 + 1;   /* saturation point for digits */

    if (p == NULL)
        return -1;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p >= '0' && *p <= '9') {
        for (; *p >= '0' && *p <= '9'; p++) {
            if (secs <= cap_s)
                secs = secs * 10 + (*p - '0');
        }
    } else if (http_parse_date(&p, now, &secs)) {
        secs -= now;
        if (secs < 0)
            secs = 0;
    } else {
        return -1;
    }
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p != '\0')
        return -1;
    if (secs >= cap_s || secs * 1000 > cap)
        return cap;
    return (long)(secs * 1000);
}

/*
 * http_header_value_ok - 1 if the header line s may be sent as one line:
 * it contains no CR and no LF (a C string cannot smuggle a NUL), so no
 * caller-supplied value can start a second header or end the head.
 * 0 for NULL or any CR/LF.
 */
int http_header_value_ok(const char *s)
{
    if (s == NULL)
        return 0;
    return strpbrk(s, "\r\n") == NULL;
}
