/*
 * test_http - the HTTP transport: Retry-After parsing and header checks
 * from tables, then real requests against a tiny HTTP/1.1 server that
 * runs on a thread of this process on 127.0.0.1 (ephemeral port).
 *
 * The server answers by path: /ok 200 "ok" (keep-alive), /busy 503 with
 * Retry-After: 7, /big a 100000-byte body with Content-Length, /bigclose
 * the same without it (ends by closing), /slow never answers.  It counts
 * accepted connections and requests, so tests can assert reuse.
 * No timing assertions: the loop runs until a condition, with a generous
 * deadline that fails the test instead of hanging it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "channels/http.h"
#include "dispatcher/alloc.h"

/* ---- the loopback server ---------------------------------------------- */

#define SRV_MAX_CLIENTS 64
#define SRV_BUF 16384

struct srv_client {
    int fd;
    size_t len;
    char buf[SRV_BUF];
};

struct srv {
    int lfd;
    int port;
    int stop[2];
    pthread_t thread;
    atomic_int accepted;
    atomic_int requests;
    struct srv_client *clients[SRV_MAX_CLIENTS];
};

/* srv_send - write all of s (len bytes) to fd; errors end quietly. */
static void srv_send(int fd, const char *s, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL);

        if (n <= 0)
            return;
        s += n;
        len -= (size_t)n;
    }
}

/* srv_big - a 200 reply with a 100000-byte body; closes when asked. */
static void srv_big(int fd, bool with_length)
{
    static char chunk[10000];
    char head[128];

    memset(chunk, 'x', sizeof chunk);
    if (with_length)
        snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
    else
        snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
    srv_send(fd, head, strlen(head));
    for (int i = 0; i < 10; i++)
        srv_send(fd, chunk, sizeof chunk);
}

/* srv_answer - one complete request (head at c->buf) by its path.
 * Returns false when the connection must be closed. */
static bool srv_answer(struct srv_client *c)
{
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\n"
                               "Content-Length: 0\r\n\r\n";
    static const char nf[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    const char *path = strchr(c->buf, ' ');

    if (path == NULL)
        return false;
    path++;
    if (strncmp(path, "/ok ", 4) == 0)
        srv_send(c->fd, ok, sizeof ok - 1);
    else if (strncmp(path, "/busy ", 6) == 0)
        srv_send(c->fd, busy, sizeof busy - 1);
    else if (strncmp(path, "/big ", 5) == 0)
        srv_big(c->fd, true);
    else if (strncmp(path, "/bigclose ", 10) == 0) {
        srv_big(c->fd, false);
        return false;
    } else if (strncmp(path, "/slow ", 6) != 0)
        srv_send(c->fd, nf, sizeof nf - 1);
    return true;
}

/* srv_consume - answer every complete request in c's buffer. */
static bool srv_consume(struct srv *s, struct srv_client *c)
{
    for (;;) {
        char *end, *cl;
        size_t head, body = 0, total;

        c->buf[c->len] = '\0';
        end = strstr(c->buf, "\r\n\r\n");
        if (end == NULL)
            return c->len < SRV_BUF - 1;
        head = (size_t)(end - c->buf) + 4;
        for (cl = c->buf; (cl = strchr(cl, '\n')) != NULL && cl < end; cl++)
            if (strncasecmp(cl + 1, "Content-Length:", 15) == 0)
                body = strtoul(cl + 16, NULL, 10);
        total = head + body;
        if (total >= SRV_BUF)
            return false;
        if (c->len < total)
            return true;
        atomic_fetch_add(&s->requests, 1);
        if (!srv_answer(c))
            return false;
        memmove(c->buf, c->buf + total, c->len - total);
        c->len -= total;
    }
}

/* srv_main - the server thread: poll the listener, clients and stop pipe. */
static void *srv_main(void *arg)
{
    struct srv *s = arg;

    for (;;) {
        struct pollfd pfd[SRV_MAX_CLIENTS + 2];
        int map[SRV_MAX_CLIENTS + 2];
        nfds_t n = 0;

        pfd[n] = (struct pollfd){.fd = s->stop[0], .events = POLLIN};
        map[n++] = -1;
        pfd[n] = (struct pollfd){.fd = s->lfd, .events = POLLIN};
        map[n++] = -1;
        for (int i = 0; i < SRV_MAX_CLIENTS; i++) {
            if (s->clients[i] != NULL) {
                pfd[n] = (struct pollfd){.fd = s->clients[i]->fd, .events = POLLIN};
                map[n++] = i;
            }
        }
        if (poll(pfd, n, -1) < 0)
            continue;
        if (pfd[0].revents)
            break;
        if (pfd[1].revents & POLLIN) {
            int fd = accept(s->lfd, NULL, NULL);

            for (int i = 0; fd >= 0 && i < SRV_MAX_CLIENTS; i++) {
                if (s->clients[i] == NULL) {
                    s->clients[i] = calloc(1, sizeof *s->clients[i]);
                    s->clients[i]->fd = fd;
                    atomic_fetch_add(&s->accepted, 1);
                    fd = -1;
                }
            }
            if (fd >= 0)
                close(fd);
        }
        for (nfds_t k = 2; k < n; k++) {
            struct srv_client *c = s->clients[map[k]];
            ssize_t r;

            if (!pfd[k].revents)
                continue;
            r = recv(c->fd, c->buf + c->len, SRV_BUF - 1 - c->len, 0);
            if (r > 0) {
                c->len += (size_t)r;
                if (srv_consume(s, c))
                    continue;
            }
            close(c->fd);
            free(c);
            s->clients[map[k]] = NULL;
        }
    }
    for (int i = 0; i < SRV_MAX_CLIENTS; i++) {
        if (s->clients[i] != NULL) {
            close(s->clients[i]->fd);
            free(s->clients[i]);
        }
    }
    return NULL;
}

/* srv_start - listen on 127.0.0.1:0 and start the thread. */
static void srv_start(struct srv *s)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t alen = sizeof a;
    int one = 1;

    memset(s, 0, sizeof *s);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->lfd >= 0);
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s->lfd, 128), 0);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &alen), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pipe(s->stop), 0);
    assert_int_equal(pthread_create(&s->thread, NULL, srv_main, s), 0);
}

/* srv_stop - stop the thread and close everything. */
static void srv_stop(struct srv *s)
{
    assert_int_equal(write(s->stop[1], "x", 1), 1);
    pthread_join(s->thread, NULL);
    close(s->stop[0]);
    close(s->stop[1]);
    close(s->lfd);
}

/* ---- fixture: server, loop, transport ----------------------------------- */

struct fx {
    struct srv srv;
    struct ev_loop *loop;
    struct http_transport *t;
    ev_timer tick;
    char url[64];
};

static bool in_submit;          /* set while http_submit runs */
static int done_inside_submit;  /* done callbacks that broke the rule */

static void fx_on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

/* fx_new - a fixture with transport options conf (NULL: defaults). */
static struct fx *fx_new(const struct http_config *conf)
{
    struct fx *f = calloc(1, sizeof *f);
    struct herr err;

    assert_non_null(f);
    srv_start(&f->srv);
    f->loop = ev_loop_new(EVFLAG_AUTO);
    ev_timer_init(&f->tick, fx_on_tick, 0.02, 0.02);
    ev_timer_start(f->loop, &f->tick);
    f->t = http_transport_new(f->loop, conf, &err);
    assert_non_null(f->t);
    done_inside_submit = 0;
    return f;
}

static void fx_free(struct fx *f)
{
    http_transport_free(f->t);
    ev_timer_stop(f->loop, &f->tick);
    ev_loop_destroy(f->loop);
    srv_stop(&f->srv);
    free(f);
}

/* fx_url - "http://127.0.0.1:<port><path>" in f->url. */
static const char *fx_url(struct fx *f, const char *path)
{
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%d%s", f->srv.port, path);
    return f->url;
}

/* fx_run_until - run the loop until *count reaches want (10 s deadline). */
static void fx_run_until(struct fx *f, const int *count, int want)
{
    ev_tstamp deadline = ev_time() + 10.0;

    while (*count < want && ev_time() < deadline)
        ev_run(f->loop, EVRUN_ONCE);
    assert_int_equal(*count, want);
}

/* fx_run_until_atomic - the same for a counter the server thread bumps. */
static void fx_run_until_atomic(struct fx *f, atomic_int *count, int want)
{
    ev_tstamp deadline = ev_time() + 10.0;

    while (atomic_load(count) < want && ev_time() < deadline)
        ev_run(f->loop, EVRUN_ONCE);
    assert_int_equal(atomic_load(count), want);
}

/* ---- completion records --------------------------------------------------- */

enum rec_action { REC_NONE, REC_CHAIN, REC_ABORT_AGAIN, REC_FREE, REC_SUBMIT };

struct rec {
    int calls;
    struct transport_outcome o;
    char body[64];
    enum rec_action action;
    struct fx *f;
    struct rec *next;             /* REC_CHAIN / REC_ABORT_AGAIN: submit this */
    int submit_rc;                /* REC_SUBMIT: what http_submit returned */
    struct herr submit_err;
};

static int total_done;

static int submit_to(struct fx *f, const char *method, const char *path,
                     const char *const *headers, struct rec *r, struct herr *err);

static void on_done(void *arg, const struct transport_outcome *o)
{
    struct rec *r = arg;
    struct herr err;

    if (in_submit)
        done_inside_submit++;
    r->calls++;
    total_done++;
    r->o = *o;
    r->o.body = NULL;
    snprintf(r->body, sizeof r->body, "%.*s", (int)(o->body_len < 63 ? o->body_len : 63),
             o->body ? o->body : "");
    switch (r->action) {
    case REC_NONE:
        break;
    case REC_CHAIN:
        if (r->next != NULL)
            assert_int_equal(submit_to(r->f, "POST", "/ok", NULL, r->next, &err), 0);
        break;
    case REC_ABORT_AGAIN:
        /* once: a new request, then a nested abort that must end it too */
        if (r->next->f == NULL) {
            assert_int_equal(submit_to(r->f, "POST", "/ok", NULL, r->next, &err), 0);
            http_abort_all(r->f->t);
        }
        break;
    case REC_FREE:
        http_transport_free(r->f->t);
        r->f->t = NULL;
        break;
    case REC_SUBMIT:
        r->submit_rc = submit_to(r->f, "POST", "/ok", NULL, r->next, &r->submit_err);
        break;
    }
}

static int submit_to(struct fx *f, const char *method, const char *path,
                     const char *const *headers, struct rec *r, struct herr *err)
{
    static const char *const dflt[] = {"Content-Type: application/json", NULL};
    struct http_request req = {.method = method, .url = fx_url(f, path),
                               .headers = headers ? headers : dflt,
                               .body = "{\"a\":1}", .body_len = 7};
    int rc;

    if (strcmp(method, "GET") == 0) {
        req.body = NULL;
        req.body_len = 0;
    }
    r->f = f;
    in_submit = true;
    rc = http_submit(f->t, &req, on_done, r, err);
    in_submit = false;
    return rc;
}

/* ---- tables ---------------------------------------------------------------- */

struct retry_case {
    const char *label;
    const char *value;
    long cap_ms;
    long want;
};

/* now = 1700000000 = Tue, 14 Nov 2023 22:13:20 GMT */
#define NOW 1700000000L
#define HOUR 3600000L

static const struct retry_case retry_cases[] = {
    {"seconds", "7", HOUR, 7000},
    {"zero", "0", HOUR, 0},
    {"blanks around", " \t7 ", HOUR, 7000},
    {"exactly the cap", "3600", HOUR, HOUR},
    {"over the cap", "3601", HOUR, HOUR},
    {"absurd", "1000000000", HOUR, HOUR},
    {"absurder", "99999999999999999999", HOUR, HOUR},
    {"absurd, no cap", "99999999999999999999", -1, LONG_MAX},
    {"no cap", "5", -1, 5000},
    {"null", NULL, HOUR, -1},
    {"empty", "", HOUR, -1},
    {"blank", "   ", HOUR, -1},
    {"garbage", "soon", HOUR, -1},
    {"negative", "-5", HOUR, -1},
    {"plus sign", "+5", HOUR, -1},
    {"unit", "7s", HOUR, -1},
    {"fraction", "1.5", HOUR, -1},
    {"imf-fixdate", "Tue, 14 Nov 2023 22:15:20 GMT", HOUR, 120000},
    {"rfc 850", "Tuesday, 14-Nov-23 22:15:20 GMT", HOUR, 120000},
    {"asctime", "Tue Nov 14 22:15:20 2023", HOUR, 120000},
    {"asctime one-digit day", "Sun Nov  6 08:49:37 1994", HOUR, 0},
    {"date in the past", "Sun, 06 Nov 1994 08:49:37 GMT", HOUR, 0},
    {"date far ahead", "Fri, 31 Dec 9999 23:59:59 GMT", HOUR, HOUR},
    {"date now", "Tue, 14 Nov 2023 22:13:20 GMT", HOUR, 0},
    {"bad month", "Tue, 14 Foo 2023 22:15:20 GMT", HOUR, -1},
    {"bad hour", "Tue, 14 Nov 2023 25:15:20 GMT", HOUR, -1},
    {"no GMT", "Tue, 14 Nov 2023 22:15:20", HOUR, -1},
    {"trailing junk", "Tue, 14 Nov 2023 22:15:20 GMT x", HOUR, -1},
    {"short year", "Tue, 14 Nov 23 22:15:20 GMT", HOUR, -1},
};

static void test_retry_after_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof retry_cases / sizeof retry_cases[0]; i++) {
        const struct retry_case *c = &retry_cases[i];
        long got = http_parse_retry_after(c->value, NOW, c->cap_ms);

        if (got != c->want)
            fail_msg("case %s: got %ld, want %ld", c->label, got, c->want);
    }
}

struct header_case {
    const char *label;
    const char *value;
    int want;
};

static const struct header_case header_cases[] = {
    {"plain", "X-Id: abc", 1},
    {"empty", "", 1},
    {"null", NULL, 0},
    {"crlf injection", "X-Id: a\r\nX-Evil: 1", 0},
    {"lone lf", "X-Id: a\nb", 0},
    {"lone cr", "X-Id: a\rb", 0},
    {"trailing crlf", "X-Id: a\r\n", 0},
};

static void test_header_value_ok_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof header_cases / sizeof header_cases[0]; i++) {
        const struct header_case *c = &header_cases[i];

        if (http_header_value_ok(c->value) != c->want)
            fail_msg("case %s: want %d", c->label, c->want);
    }
}

/* ---- loopback tests -------------------------------------------------------- */

static void test_http_ok(void **state)
{
    struct fx *f = fx_new(NULL);
    struct rec r = {0};
    struct herr err;

    (void)state;
    assert_int_equal(submit_to(f, "POST", "/ok", NULL, &r, &err), 0);
    assert_int_equal(r.calls, 0);
    assert_int_equal(http_inflight(f->t), 1);
    fx_run_until(f, &r.calls, 1);
    assert_int_equal(r.o.kind, TRANSPORT_DONE);
    assert_int_equal(r.o.code, 200);
    assert_true(r.o.request_sent);
    assert_int_equal(r.o.retry_after_ms, -1);
    assert_string_equal(r.body, "ok");
    assert_int_equal(http_inflight(f->t), 0);
    assert_int_equal(done_inside_submit, 0);
    fx_free(f);
    assert_int_equal(r.calls, 1);
}

static void test_http_get(void **state)
{
    struct fx *f = fx_new(NULL);
    struct rec r = {0};
    struct herr err;

    (void)state;
    assert_int_equal(submit_to(f, "GET", "/ok", NULL, &r, &err), 0);
    fx_run_until(f, &r.calls, 1);
    assert_int_equal(r.o.kind, TRANSPORT_DONE);
    assert_int_equal(r.o.code, 200);
    fx_free(f);
}

static void test_http_503_retry_after(void **state)
{
    struct fx *f = fx_new(NULL);
    struct rec r = {0};
    struct herr err;

    (void)state;
    assert_int_equal(submit_to(f, "POST", "/busy", NULL, &r, &err), 0);
    fx_run_until(f, &r.calls, 1);
    assert_int_equal(r.o.kind, TRANSPORT_DONE);
    assert_int_equal(r.o.code, 503);
    assert_int_equal(r.o.retry_after_ms, 7000);
    assert_true(r.o.request_sent);
    fx_free(f);
}

/* 100 requests, each submitted from the previous one's done: one
 * kept-alive connection carries them all (at most the host cap). */
static void test_http_sequential_reuse(void **state)
{
    struct http_config conf = {.max_host_connections = 2};
    struct fx *f = fx_new(&conf);
    struct rec *r = calloc(100, sizeof *r);
    struct herr err;

    (void)state;
    total_done = 0;
    for (int i = 0; i < 100; i++) {
        r[i].action = REC_CHAIN;
        r[i].next = i < 99 ? &r[i + 1] : NULL;
    }
    assert_int_equal(submit_to(f, "POST", "/ok", NULL, &r[0], &err), 0);
    fx_run_until(f, &r[99].calls, 1);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].o.code, 200);
    }
    assert_int_equal(total_done, 100);
    assert_int_equal(atomic_load(&f->srv.requests), 100);
    assert_true(atomic_load(&f->srv.accepted) <= 2);
    assert_int_equal(done_inside_submit, 0);
    fx_free(f);
    free(r);
}

/* 50 at once: excess requests queue inside curl, never over the cap. */
static void test_http_parallel_cap(void **state)
{
    struct http_config conf = {.max_host_connections = 4};
    struct fx *f = fx_new(&conf);
    struct rec r[50];
    struct herr err;

    (void)state;
    memset(r, 0, sizeof r);
    total_done = 0;
    for (int i = 0; i < 50; i++)
        assert_int_equal(submit_to(f, "POST", "/ok", NULL, &r[i], &err), 0);
    assert_int_equal(http_inflight(f->t), 50);
    fx_run_until(f, &total_done, 50);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].o.code, 200);
    }
    assert_true(atomic_load(&f->srv.accepted) <= 4);
    fx_free(f);
}

struct refuse_case {
    const char *label;
    const char *method;
    const char *url;
    const char *header;
    const char *want_msg;
};

static const struct refuse_case refuse_cases[] = {
    {"crlf in header", "POST", NULL, "X-Id: a\r\nX-Evil: 1",
     "headers[1]: expected \"Name: value\" without CR or LF"},
    {"lf in header", "POST", NULL, "X-Id: a\n", "headers[1]: expected \"Name: value\" without CR or LF"},
    {"header without colon", "POST", NULL, "X-Id", "headers[1]: expected \"Name: value\" without CR or LF"},
    {"ftp url", "POST", "ftp://127.0.0.1/x", NULL, "url: expected an http:// or https:// URL"},
    {"url with space", "POST", "http://127.0.0.1/a b", NULL, "url: expected an http:// or https:// URL"},
    {"bad method", "post", NULL, NULL, "method: expected an HTTP method token"},
};

static void test_http_refused(void **state)
{
    struct fx *f = fx_new(NULL);
    struct rec r = {0};

    (void)state;
    for (size_t i = 0; i < sizeof refuse_cases / sizeof refuse_cases[0]; i++) {
        const struct refuse_case *c = &refuse_cases[i];
        const char *headers[] = {"Content-Type: application/json", c->header, NULL};
        struct http_request req = {.method = c->method,
                                   .url = c->url ? c->url : fx_url(f, "/ok"),
                                   .headers = headers, .body = "{}", .body_len = 2};
        struct herr err;

        herr_clear(&err);
        if (http_submit(f->t, &req, on_done, &r, &err) != -1 || err.kind != HERR_INPUT ||
            strcmp(err.msg, c->want_msg) != 0)
            fail_msg("case %s: got kind=%d msg=\"%s\"", c->label, (int)err.kind, err.msg);
    }
    assert_int_equal(http_inflight(f->t), 0);
    fx_free(f);
    assert_int_equal(r.calls, 0);
}

static void test_http_reply_too_large(void **state)
{
    struct http_config conf = {.max_response_bytes = 1000};
    struct fx *f = fx_new(&conf);
    struct rec a = {0}, b = {0};
    struct herr err;

    (void)state;
    total_done = 0;
    assert_int_equal(submit_to(f, "POST", "/big", NULL, &a, &err), 0);
    assert_int_equal(submit_to(f, "POST", "/bigclose", NULL, &b, &err), 0);
    fx_run_until(f, &total_done, 2);
    assert_int_equal(a.o.kind, TRANSPORT_PROTOCOL);
    assert_string_equal(a.o.detail, "reply too large");
    assert_int_equal(b.o.kind, TRANSPORT_PROTOCOL);
    assert_string_equal(b.o.detail, "reply too large");
    assert_true(b.o.request_sent);
    fx_free(f);
}

static void test_http_timeout(void **state)
{
    struct http_config conf = {.timeout_ms = 300};
    struct fx *f = fx_new(&conf);
    struct rec r = {0};
    struct herr err;

    (void)state;
    assert_int_equal(submit_to(f, "POST", "/slow", NULL, &r, &err), 0);
    fx_run_until(f, &r.calls, 1);
    assert_int_equal(r.o.kind, TRANSPORT_TIMEOUT);
    assert_true(r.o.request_sent);
    assert_int_equal(r.o.code, 0);
    fx_free(f);
}

static void test_http_connect_refused(void **state)
{
    struct fx *f = fx_new(NULL);
    struct rec r = {0};
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t alen = sizeof a;
    struct http_request req = {.method = "POST", .body = "x", .body_len = 1};
    char url[64];
    struct herr err;
    int fd;

    (void)state;
    /* a port that was just free: bind, read it back, close */
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/ok", ntohs(a.sin_port));
    req.url = url;
    assert_int_equal(http_submit(f->t, &req, on_done, &r, &err), 0);
    fx_run_until(f, &r.calls, 1);
    assert_int_equal(r.o.kind, TRANSPORT_CONNECT);
    assert_false(r.o.request_sent);
    fx_free(f);
}

/* abort_all ends each request once; a done that submits and aborts again
 * (nested) ends its new request too, and nothing twice. */
static void test_http_abort_all(void **state)
{
    struct fx *f = fx_new(NULL);
    struct rec r[4];
    struct herr err;

    (void)state;
    memset(r, 0, sizeof r);
    total_done = 0;
    for (int i = 0; i < 3; i++)
        assert_int_equal(submit_to(f, "POST", "/slow", NULL, &r[i], &err), 0);
    fx_run_until_atomic(f, &f->srv.requests, 3);
    /* whichever is ended first re-enters */
    for (int i = 0; i < 3; i++) {
        r[i].action = REC_ABORT_AGAIN;
        r[i].next = &r[3];
    }
    http_abort_all(f->t);
    assert_int_equal(total_done, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].o.kind, TRANSPORT_ABORTED);
    }
    for (int i = 0; i < 3; i++)
        assert_true(r[i].o.request_sent);
    assert_int_equal(http_inflight(f->t), 0);
    /* the transport still works afterwards */
    memset(&r[0], 0, sizeof r[0]);
    assert_int_equal(submit_to(f, "POST", "/ok", NULL, &r[0], &err), 0);
    fx_run_until(f, &r[0].calls, 1);
    assert_int_equal(r[0].o.code, 200);
    fx_free(f);
}

/* free aborts what is in flight; submits from those dones are refused. */
static void test_http_free_inflight(void **state)
{
    struct fx *f = fx_new(NULL);
    struct rec r[3];
    struct herr err;

    (void)state;
    memset(r, 0, sizeof r);
    for (int i = 0; i < 2; i++) {
        r[i].action = REC_SUBMIT;
        r[i].next = &r[2];
        assert_int_equal(submit_to(f, "POST", "/slow", NULL, &r[i], &err), 0);
    }
    /* f->t stays set while the dones run: they submit through it */
    http_transport_free(f->t);
    f->t = NULL;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].o.kind, TRANSPORT_ABORTED);
        assert_int_equal(r[i].submit_rc, -1);
        assert_int_equal(r[i].submit_err.kind, HERR_TRANSIENT);
        assert_string_equal(r[i].submit_err.msg, "http transport is closing");
    }
    assert_int_equal(r[2].calls, 0);
    fx_free(f);
}

/* a done callback may free the transport while another request is in
 * flight: that one is aborted, and memory goes once the stack unwinds. */
static void test_http_free_from_done(void **state)
{
    struct fx *f = fx_new(NULL);
    struct rec slow = {0}, ok = {0};
    struct herr err;

    (void)state;
    ok.action = REC_FREE;
    assert_int_equal(submit_to(f, "POST", "/slow", NULL, &slow, &err), 0);
    assert_int_equal(submit_to(f, "POST", "/ok", NULL, &ok, &err), 0);
    fx_run_until(f, &ok.calls, 1);
    assert_null(f->t);
    assert_int_equal(ok.o.code, 200);
    assert_int_equal(slow.calls, 1);
    assert_int_equal(slow.o.kind, TRANSPORT_ABORTED);
    fx_free(f);
}

/* every allocation in http_submit may fail: -1 with HERR_RESOURCE and no
 * done, or 0 and exactly one done. */
static void test_http_submit_alloc_failure(void **state)
{
    struct fx *f = fx_new(NULL);
    bool accepted = false;

    (void)state;
    for (long n = 0; !accepted && n < 50; n++) {
        struct rec r = {0};
        struct herr err;
        int rc;

        herold_alloc_fail_after = n;
        rc = submit_to(f, "POST", "/ok", NULL, &r, &err);
        herold_alloc_fail_after = -1;
        if (rc < 0) {
            assert_int_equal(err.kind, HERR_RESOURCE);
            assert_string_equal(err.msg, "out of memory");
            assert_int_equal(http_inflight(f->t), 0);
            continue;
        }
        accepted = true;
        fx_run_until(f, &r.calls, 1);
        assert_int_equal(r.o.code, 200);
    }
    assert_true(accepted);
    fx_free(f);
}

static void test_http_new_alloc_failure(void **state)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct http_config conf = {.ca_file = "/etc/ssl/certs/ca-certificates.crt"};
    struct http_transport *t = NULL;

    (void)state;
    for (long n = 0; t == NULL && n < 50; n++) {
        struct herr err;

        herold_alloc_fail_after = n;
        t = http_transport_new(loop, &conf, &err);
        herold_alloc_fail_after = -1;
        if (t == NULL) {
            assert_int_equal(err.kind, HERR_RESOURCE);
            assert_string_equal(err.msg, "cannot create the HTTP transport: out of memory");
        }
    }
    assert_non_null(t);
    http_transport_free(t);
    ev_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retry_after_table),
        cmocka_unit_test(test_header_value_ok_table),
        cmocka_unit_test(test_http_ok),
        cmocka_unit_test(test_http_get),
        cmocka_unit_test(test_http_503_retry_after),
        cmocka_unit_test(test_http_sequential_reuse),
        cmocka_unit_test(test_http_parallel_cap),
        cmocka_unit_test(test_http_refused),
        cmocka_unit_test(test_http_reply_too_large),
        cmocka_unit_test(test_http_timeout),
        cmocka_unit_test(test_http_connect_refused),
        cmocka_unit_test(test_http_abort_all),
        cmocka_unit_test(test_http_free_inflight),
        cmocka_unit_test(test_http_free_from_done),
        cmocka_unit_test(test_http_submit_alloc_failure),
        cmocka_unit_test(test_http_new_alloc_failure),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
