/*
 * test_webhook - the webhook channel: signatures against vectors computed
 * outside herold, whsec_ decoding, every config error path, address
 * checks, allocator failures, the registry, and real deliveries to a
 * small capture server on 127.0.0.1 that records the last request.
 *
 * The signature vectors were computed with the openssl command line, e.g.
 *   printf '%s' 'msg_x.1700000000.{"a":1}' |
 *     openssl dgst -sha256 -hmac 'herold-test-key-0123456789' -binary | base64
 * and the Standard Webhooks specification's own example.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "channels/http.h"
#include "channels/webhook.h"
#include "dispatcher/alloc.h"

#define SECRET_ENV "HEROLD_TEST_WEBHOOK_SECRET"
#define SECRET_VALUE "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
#define SECRET_KEY "0123456789abcdef0123456789abcdef"

/* ---- capture server: answers /hook 200, /busy 503, keeps the last request */

struct cap {
    int lfd, port, stop[2];
    pthread_t thread;
    pthread_mutex_t mu;
    char last[8192];      /* head and body of the last complete request */
    int nreq;
    int fds[16];
    char buf[16][8192];
    size_t len[16];
};

static void cap_send(int fd, const char *s)
{
    size_t len = strlen(s);

    while (len > 0) {
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL);

        if (n <= 0)
            return;
        s += n;
        len -= (size_t)n;
    }
}

/* cap_consume - answer complete requests in slot i; false: close it. */
static bool cap_consume(struct cap *c, int i)
{
    for (;;) {
        char *b = c->buf[i], *end, *cl;
        size_t head, body = 0, total;

        b[c->len[i]] = '\0';
        if ((end = strstr(b, "\r\n\r\n")) == NULL)
            return c->len[i] < sizeof c->buf[i] - 1;
        head = (size_t)(end - b) + 4;
        for (cl = b; (cl = strchr(cl, '\n')) != NULL && cl < end; cl++)
            if (strncasecmp(cl + 1, "Content-Length:", 15) == 0)
                body = strtoul(cl + 16, NULL, 10);
        total = head + body;
        if (total >= sizeof c->buf[i])
            return false;
        if (c->len[i] < total)
            return true;
        pthread_mutex_lock(&c->mu);
        memcpy(c->last, b, total);
        c->last[total] = '\0';
        c->nreq++;
        pthread_mutex_unlock(&c->mu);
        if (strncmp(b, "POST /busy ", 11) == 0)
            cap_send(c->fds[i], "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\n"
                                "Content-Length: 0\r\n\r\n");
        else if (strncmp(b, "POST /slow ", 11) != 0)
            cap_send(c->fds[i], "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        memmove(b, b + total, c->len[i] - total);
        c->len[i] -= total;
    }
}

static void *cap_main(void *arg)
{
    struct cap *c = arg;

    for (;;) {
        struct pollfd p[18];
        int map[18];
        nfds_t n = 0;

        p[n] = (struct pollfd){.fd = c->stop[0], .events = POLLIN};
        map[n++] = -1;
        p[n] = (struct pollfd){.fd = c->lfd, .events = POLLIN};
        map[n++] = -1;
        for (int i = 0; i < 16; i++)
            if (c->fds[i] >= 0) {
                p[n] = (struct pollfd){.fd = c->fds[i], .events = POLLIN};
                map[n++] = i;
            }
        if (poll(p, n, -1) < 0)
            continue;
        if (p[0].revents)
            break;
        if (p[1].revents) {
            int fd = accept(c->lfd, NULL, NULL);

            for (int i = 0; fd >= 0 && i < 16; i++)
                if (c->fds[i] < 0) {
                    c->fds[i] = fd;
                    c->len[i] = 0;
                    fd = -1;
                }
            if (fd >= 0)
                close(fd);
        }
        for (nfds_t k = 2; k < n; k++) {
            int i = map[k];
            ssize_t r;

            if (!p[k].revents)
                continue;
            r = recv(c->fds[i], c->buf[i] + c->len[i], sizeof c->buf[i] - 1 - c->len[i], 0);
            if (r > 0) {
                c->len[i] += (size_t)r;
                if (cap_consume(c, i))
                    continue;
            }
            close(c->fds[i]);
            c->fds[i] = -1;
        }
    }
    for (int i = 0; i < 16; i++)
        if (c->fds[i] >= 0)
            close(c->fds[i]);
    return NULL;
}

static struct cap *cap_start(void)
{
    struct cap *c = calloc(1, sizeof *c);
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t alen = sizeof a;

    assert_non_null(c);
    for (int i = 0; i < 16; i++)
        c->fds[i] = -1;
    pthread_mutex_init(&c->mu, NULL);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(c->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(c->lfd, 16), 0);
    assert_int_equal(getsockname(c->lfd, (struct sockaddr *)&a, &alen), 0);
    c->port = ntohs(a.sin_port);
    assert_int_equal(pipe(c->stop), 0);
    assert_int_equal(pthread_create(&c->thread, NULL, cap_main, c), 0);
    return c;
}

static void cap_stop(struct cap *c)
{
    assert_int_equal(write(c->stop[1], "x", 1), 1);
    pthread_join(c->thread, NULL);
    close(c->stop[0]);
    close(c->stop[1]);
    close(c->lfd);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* cap_header - the value of header name in c->last into out ("" if absent). */
static const char *cap_header(struct cap *c, const char *name, char *out, size_t size)
{
    size_t n = strlen(name);
    const char *end = strstr(c->last, "\r\n\r\n");

    out[0] = '\0';
    for (const char *l = strstr(c->last, "\r\n"); l != NULL && l < end;
         l = strstr(l + 2, "\r\n")) {
        if (strncasecmp(l + 2, name, n) == 0 && l[2 + n] == ':') {
            const char *v = l + 3 + n;

            while (*v == ' ')
                v++;
            snprintf(out, size, "%.*s", (int)strcspn(v, "\r"), v);
            break;
        }
    }
    return out;
}

/* ---- signatures ----------------------------------------------------------- */

struct sign_case {
    const char *label;
    const char *key;      /* raw key bytes as a string */
    size_t keylen;
    const char *msg_id;
    long ts;
    const char *body;
    const char *want;
};

/* Standard Webhooks example key: base64 "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" */
static const char spec_key[] = "\x31\xf2\x90\xf6\xbf\x06\x29\x8a\xab\x4f\x08\xd4"
                               "\x3c\x3f\x08\x2c\xf6\x48\xa3\x62\xda\x2d\xa4\xb0";

static const struct sign_case sign_cases[] = {
    {"raw key", "herold-test-key-0123456789", 26, "msg_x", 1700000000, "{\"a\":1}",
     "v1,D887iqp87o1vX5U7uiOn433nfSCLMeJVJUSO3HhniHE="},
    {"whsec key bytes", SECRET_KEY, 32, "msg_x", 1700000000, "{\"a\":1}",
     "v1,VFZaLXG+WEL1pckRNvRk09pJRK53kqEE0/u9OPQbhrw="},
    {"standard webhooks example", spec_key, 24, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
     "{\"test\": 2432232314}", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="},
};

static void test_sign_vectors(void **state)
{
    char out[WEBHOOK_SIG_SIZE];

    (void)state;
    for (size_t i = 0; i < sizeof sign_cases / sizeof sign_cases[0]; i++) {
        const struct sign_case *c = &sign_cases[i];
        int rc = webhook_sign((const unsigned char *)c->key, c->keylen, c->msg_id, c->ts,
                              c->body, strlen(c->body), out, sizeof out);

        if (rc != 0 || strcmp(out, c->want) != 0)
            fail_msg("case %s: rc=%d got \"%s\", want \"%s\"", c->label, rc, out, c->want);
    }
    /* too small a buffer is refused, not truncated */
    assert_int_equal(webhook_sign((const unsigned char *)SECRET_KEY, 32, "msg_x", 1, "{}", 2,
                                  out, WEBHOOK_SIG_SIZE - 1), -1);
    assert_string_equal(out, "");
}

struct secret_case {
    const char *label;
    const char *secret;
    int want_rc;
    const char *want_key;   /* want_rc 0 */
    size_t want_len;
    const char *want_msg;   /* want_rc -1 */
};

static char long_secret[258];

static const struct secret_case secret_cases[] = {
    {"whsec padded", "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", 0, SECRET_KEY, 32, NULL},
    {"whsec unpadded", "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY", 0, SECRET_KEY, 32, NULL},
    {"whsec spec example", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 0, spec_key, 24, NULL},
    {"raw 16 bytes", "0123456789abcdef", 0, "0123456789abcdef", 16, NULL},
    {"raw too short", "0123456789abcde", -1, NULL, 0, "expected a signing key of 16 to 256 bytes"},
    {"whsec too short", "whsec_MDEyMzQ1Njc4", -1, NULL, 0,
     "expected a signing key of 16 to 256 bytes"},
    {"whsec empty", "whsec_", -1, NULL, 0, "expected base64 after \"whsec_\""},
    {"whsec bad char", "whsec_MDEyMzQ1Njc4OWFiY2RlZjAx!jM0NTY3ODlhYmNkZWY=", -1, NULL, 0,
     "expected base64 after \"whsec_\""},
    {"whsec url-safe alphabet", "whsec_MDEyMzQ1Njc4OWFiY2RlZjAx_jM0NTY3ODlhYmNkZWY=", -1, NULL, 0,
     "expected base64 after \"whsec_\""},
    {"whsec pad in middle", "whsec_MDEy=zQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", -1, NULL, 0,
     "expected base64 after \"whsec_\""},
    {"whsec bad length", "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYx=", -1, NULL, 0,
     "expected base64 after \"whsec_\""},
};

static void test_secret_key(void **state)
{
    unsigned char *key;
    size_t len;
    struct herr err;

    (void)state;
    for (size_t i = 0; i < sizeof secret_cases / sizeof secret_cases[0]; i++) {
        const struct secret_case *c = &secret_cases[i];
        int rc;

        key = NULL;
        len = 0;
        herr_clear(&err);
        rc = webhook_secret_key(c->secret, "p.secret", &key, &len, &err);
        if (rc != c->want_rc)
            fail_msg("case %s: rc=%d msg=\"%s\"", c->label, rc, err.msg);
        if (rc == 0) {
            if (len != c->want_len || memcmp(key, c->want_key, len) != 0)
                fail_msg("case %s: wrong key (len %zu)", c->label, len);
            webhook_key_free(key, len);
        } else if (strcmp(err.msg, c->want_msg) != 0 || strcmp(err.path, "p.secret") != 0 ||
                   err.kind != HERR_INPUT) {
            fail_msg("case %s: got %s: %s", c->label, err.path, err.msg);
        }
    }
    /* 256 bytes is the largest key, 257 too many */
    memset(long_secret, 'k', 257);
    assert_int_equal(webhook_secret_key(long_secret, "p", &key, &len, &err), -1);
    assert_string_equal(err.msg, "expected a signing key of 16 to 256 bytes");
    long_secret[256] = '\0';
    assert_int_equal(webhook_secret_key(long_secret, "p", &key, &len, &err), 0);
    assert_int_equal(len, 256);
    webhook_key_free(key, len);
}

/* ---- configuration ----------------------------------------------------------- */

#define EP(n, u) "{\"name\":\"" n "\",\"url\":\"" u "\",\"secret\":\"${" SECRET_ENV "}\"}"
#define EPS(...) "{\"endpoints\":[" __VA_ARGS__ "]}"

struct conf_case {
    const char *label;
    const char *json;
    const char *want_path;    /* NULL: init succeeds */
    const char *want_msg;
};

static const struct conf_case conf_cases[] = {
    {"minimal", EPS(EP("app-backend", "https://example.org/hooks/herold")), NULL, NULL},
    {"two endpoints, max_inflight",
     "{\"endpoints\":[" EP("a", "https://example.org/a") "," EP("b-2", "http://10.0.0.1:8080/b")
     "],\"max_inflight\":8}", NULL, NULL},
    {"at sign in path is fine", EPS(EP("a", "https://example.org/u@x")), NULL, NULL},
    {"not an object", "[]", "channels.webhook", "expected an object"},
    {"unknown top-level field", "{\"endpoints\":[" EP("a", "https://e.org/") "],\"foo\":1}",
     "channels.webhook.foo", "unknown field"},
    {"endpoints missing", "{}", "channels.webhook.endpoints", "missing required field"},
    {"endpoints not an array", "{\"endpoints\":{}}", "channels.webhook.endpoints",
     "expected an array"},
    {"endpoints empty", "{\"endpoints\":[]}", "channels.webhook.endpoints",
     "expected at least one endpoint"},
    {"max_inflight zero", "{\"endpoints\":[" EP("a", "https://e.org/") "],\"max_inflight\":0}",
     "channels.webhook.max_inflight", "expected an integer from 1 to 65536"},
    {"max_inflight string", "{\"endpoints\":[" EP("a", "https://e.org/") "],\"max_inflight\":\"8\"}",
     "channels.webhook.max_inflight", "expected an integer from 1 to 65536"},
    {"endpoint not an object", EPS("\"https://e.org/\""), "channels.webhook.endpoints[0]",
     "expected an object"},
    {"unknown endpoint field",
     EPS("{\"name\":\"a\",\"url\":\"https://e.org/\",\"secret\":\"x\",\"foo\":1}"),
     "channels.webhook.endpoints[0].foo", "unknown field"},
    {"name missing", EPS("{\"url\":\"https://e.org/\",\"secret\":\"x\"}"),
     "channels.webhook.endpoints[0].name", "missing required field"},
    {"name not a string", EPS("{\"name\":1,\"url\":\"https://e.org/\",\"secret\":\"x\"}"),
     "channels.webhook.endpoints[0].name", "expected a string"},
    {"name upper case", EPS(EP("App", "https://e.org/")),
     "channels.webhook.endpoints[0].name", "expected 1-32 characters of a-z 0-9 -"},
    {"name empty", EPS(EP("", "https://e.org/")),
     "channels.webhook.endpoints[0].name", "expected 1-32 characters of a-z 0-9 -"},
    {"name too long", EPS(EP("abcdefghijklmnopqrstuvwxyz0123456", "https://e.org/")),
     "channels.webhook.endpoints[0].name", "expected 1-32 characters of a-z 0-9 -"},
    {"duplicate name", EPS(EP("a", "https://e.org/") "," EP("a", "https://e.org/")),
     "channels.webhook.endpoints[1].name", "duplicate endpoint name (also endpoints[0])"},
    {"url missing", EPS("{\"name\":\"a\",\"secret\":\"x\"}"),
     "channels.webhook.endpoints[0].url", "missing required field"},
    {"url not a string", EPS("{\"name\":\"a\",\"url\":5,\"secret\":\"x\"}"),
     "channels.webhook.endpoints[0].url", "expected a string"},
    {"url ftp", EPS(EP("a", "https://e.org/") "," EP("b", "ftp://e.org/")),
     "channels.webhook.endpoints[1].url", "expected an https:// or http:// URL"},
    {"url no host", EPS(EP("a", "https:///x")),
     "channels.webhook.endpoints[0].url", "expected an https:// or http:// URL"},
    {"url credentials", EPS(EP("a", "https://user:pw@e.org/")),
     "channels.webhook.endpoints[0].url", "expected a URL without credentials (user@)"},
    {"url space", EPS(EP("a", "https://e.org/a b")),
     "channels.webhook.endpoints[0].url", "expected a URL without spaces or control characters"},
    {"url crlf", EPS(EP("a", "https://e.org/a\\r\\nX: y")),
     "channels.webhook.endpoints[0].url", "expected a URL without spaces or control characters"},
    {"secret missing", EPS("{\"name\":\"a\",\"url\":\"https://e.org/\"}"),
     "channels.webhook.endpoints[0].secret", "missing required field"},
    {"secret variable unset",
     EPS("{\"name\":\"a\",\"url\":\"https://e.org/\",\"secret\":\"${HEROLD_TEST_UNSET_VAR}\"}"),
     "channels.webhook.endpoints[0].secret", "environment variable HEROLD_TEST_UNSET_VAR is not set"},
    {"secret too short", EPS("{\"name\":\"a\",\"url\":\"https://e.org/\",\"secret\":\"short\"}"),
     "channels.webhook.endpoints[0].secret", "expected a signing key of 16 to 256 bytes"},
    {"secret bad whsec", EPS("{\"name\":\"a\",\"url\":\"https://e.org/\",\"secret\":\"whsec_@@\"}"),
     "channels.webhook.endpoints[0].secret", "expected base64 after \"whsec_\""},
};

static int setup_env(void **state)
{
    (void)state;
    setenv(SECRET_ENV, SECRET_VALUE, 1);
    unsetenv("HEROLD_TEST_UNSET_VAR");
    return 0;
}

static json_t *parse(const char *s)
{
    json_error_t je;
    json_t *j = json_loads(s, 0, &je);

    if (j == NULL)
        fail_msg("bad test JSON at %d: %s", je.position, je.text);
    return j;
}

static void test_config_table(void **state)
{
    const struct channel_env env = {0};

    (void)state;
    for (size_t i = 0; i < sizeof conf_cases / sizeof conf_cases[0]; i++) {
        const struct conf_case *c = &conf_cases[i];
        json_t *conf = parse(c->json);
        void *st = NULL;
        struct herr err;
        int rc;

        herr_clear(&err);
        rc = webhook_channel.init(&env, conf, &err, &st);
        json_decref(conf);
        if (c->want_path == NULL) {
            if (rc != 0)
                fail_msg("case %s: unexpected error %s: %s", c->label, err.path, err.msg);
            webhook_channel.destroy(st);
            continue;
        }
        if (rc != -1 || err.kind != HERR_INPUT || strcmp(err.path, c->want_path) != 0 ||
            strcmp(err.msg, c->want_msg) != 0)
            fail_msg("case %s: got rc=%d kind=%d \"%s: %s\"", c->label, rc, (int)err.kind,
                     err.path, err.msg);
    }
}

/* every allocation in init may fail: -1 and HERR_RESOURCE, nothing leaks. */
static void test_init_alloc_failure(void **state)
{
    json_t *conf = parse("{\"endpoints\":[" EP("a", "https://e.org/a") ","
                         EP("b", "https://e.org/b") "]}");
    void *st = NULL;
    int rc = -1;

    (void)state;
    for (long n = 0; rc != 0 && n < 100; n++) {
        struct herr err;

        herold_alloc_fail_after = n;
        rc = webhook_channel.init(NULL, conf, &err, &st);
        herold_alloc_fail_after = -1;
        if (rc != 0) {
            assert_int_equal(err.kind, HERR_RESOURCE);
            assert_string_equal(err.msg, "out of memory");
        }
    }
    assert_int_equal(rc, 0);
    webhook_channel.destroy(st);
    json_decref(conf);
}

/* --check-config: no transport; init works, submit refuses. */
static void test_check_config_mode(void **state)
{
    json_t *conf = parse(EPS(EP("a", "https://e.org/a")));
    const struct channel_env env = {.loop = NULL, .http = NULL};
    struct delivery d = {.job_id = "j1", .rcpt_id = "r1", .idem_key = "j1:r1:webhook"};
    void *st = NULL;
    struct herr err;

    (void)state;
    assert_int_equal(webhook_channel.init(&env, conf, &err, &st), 0);
    assert_int_equal(webhook_channel.submit(st, &d, NULL, NULL, &err), -1);
    assert_string_equal(err.msg, "no HTTP transport (configuration check only)");
    webhook_channel.destroy(st);
    json_decref(conf);
}

struct addr_case {
    const char *label;
    const char *addr;
    int want;
};

static const struct addr_case addr_cases[] = {
    {"simple", "r1", 0},
    {"all classes", "Az09._:-", 0},
    {"64 chars", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0},
    {"65 chars", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", -1},
    {"empty", "", -1},
    {"null", NULL, -1},
    {"e-mail", "a@b.org", -1},
    {"space", "a b", -1},
    {"slash", "a/b", -1},
};

static void test_validate_address(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof addr_cases / sizeof addr_cases[0]; i++) {
        const struct addr_case *c = &addr_cases[i];
        struct herr err;
        int rc;

        herr_clear(&err);
        rc = webhook_channel.validate_address(NULL, c->addr, &err);
        if (rc != c->want)
            fail_msg("case %s: rc=%d", c->label, rc);
        if (rc < 0 && (err.kind != HERR_INPUT ||
                       strcmp(err.msg, "expected 1-64 characters of A-Z a-z 0-9 . _ : -") != 0))
            fail_msg("case %s: msg \"%s\"", c->label, err.msg);
    }
}

static void count_channel(const struct channel_ops *ops, void *arg)
{
    (void)ops;
    (*(int *)arg)++;
}

static void test_registry(void **state)
{
    struct herr err;
    int n = 0;

    (void)state;
    assert_ptr_equal(channel_find("webhook"), &webhook_channel);
    assert_non_null(channel_find("email"));
    assert_null(channel_find("carrier-pigeon"));
    assert_int_equal(channel_registry_check(&err), 0);
    channel_each(count_channel, &n);
    assert_int_equal(n, 2);   /* webhook and email */
}

/* ---- deliveries against the capture server ------------------------------------ */

struct wfx {
    struct cap *cap;
    struct ev_loop *loop;
    struct http_transport *http;
    void *st;
    ev_timer tick;
};

struct wdone {
    int calls;
    struct delivery_result res;
};

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

static void on_wdone(void *arg, const struct delivery_result *res)
{
    struct wdone *d = arg;

    d->calls++;
    d->res = *res;
}

/* wfx_new - server, loop, transport and a channel with endpoints "main"
 * (/hook), "busy" (/busy) and "slow" (/slow); max_inflight as given. */
static struct wfx *wfx_new(int max_inflight)
{
    struct wfx *f = calloc(1, sizeof *f);
    struct channel_env env;
    char conf[1024];
    json_t *j;
    struct herr err;

    f->cap = cap_start();
    f->loop = ev_loop_new(EVFLAG_AUTO);
    ev_timer_init(&f->tick, on_tick, 0.02, 0.02);
    ev_timer_start(f->loop, &f->tick);
    f->http = http_transport_new(f->loop, NULL, &err);
    assert_non_null(f->http);
    env = (struct channel_env){.loop = f->loop, .http = f->http};
    snprintf(conf, sizeof conf,
             "{\"endpoints\":[" EP("main", "http://127.0.0.1:%d/hook") ","
             EP("busy", "http://127.0.0.1:%d/busy") "," EP("slow", "http://127.0.0.1:%d/slow")
             "],\"max_inflight\":%d}", f->cap->port, f->cap->port, f->cap->port, max_inflight);
    j = parse(conf);
    assert_int_equal(webhook_channel.init(&env, j, &err, &f->st), 0);
    json_decref(j);
    return f;
}

static void wfx_free(struct wfx *f)
{
    http_transport_free(f->http);
    webhook_channel.destroy(f->st);
    ev_timer_stop(f->loop, &f->tick);
    ev_loop_destroy(f->loop);
    cap_stop(f->cap);
    free(f);
}

static void wfx_run_until(struct wfx *f, const int *count, int want)
{
    ev_tstamp deadline = ev_time() + 10.0;

    while (*count < want && ev_time() < deadline)
        ev_run(f->loop, EVRUN_ONCE);
    assert_int_equal(*count, want);
}

static const struct delivery base_delivery = {
    .job_id = "abfuhr-0312", .kind = "notice", .priority = "normal",
    .rcpt_id = "r-17", .address = "r-17", .idem_key = "abfuhr-0312:r-17:webhook",
    .attempt = 2, .lang = "de", .subject = "Abfuhr", .text = "Morgen: Papier",
    .html = NULL, .options = NULL,
};

static void test_submit_delivers_signed(void **state)
{
    struct wfx *f = wfx_new(8);
    struct wdone w = {0};
    struct herr err;
    char id[128], idem[128], ts[32], sig[96], want[WEBHOOK_SIG_SIZE], buf[64];
    const char *body;
    json_t *j, *data;
    unsigned char mac[32];
    unsigned int maclen = 0;
    char signed_msg[4096], b64[64];
    long now = (long)time(NULL);

    (void)state;
    assert_int_equal(webhook_channel.submit(f->st, &base_delivery, on_wdone, &w, &err), 0);
    assert_int_equal(w.calls, 0);      /* never from inside submit */
    wfx_run_until(f, &w.calls, 1);
    assert_int_equal(w.res.status, DELIVERY_OK);
    assert_int_equal(w.res.provider_code, 200);
    assert_string_equal(w.res.reason, "http 200");

    assert_int_equal(strncmp(f->cap->last, "POST /hook HTTP/1.1\r\n", 21), 0);
    assert_string_equal(cap_header(f->cap, "Content-Type", buf, sizeof buf), "application/json");
    assert_string_equal(cap_header(f->cap, "User-Agent", buf, sizeof buf), "herold/0.1");
    assert_string_equal(cap_header(f->cap, "webhook-id", id, sizeof id),
                        "msg_abfuhr-0312:r-17:webhook");
    assert_string_equal(cap_header(f->cap, "Idempotency-Key", idem, sizeof idem), id);
    cap_header(f->cap, "webhook-timestamp", ts, sizeof ts);
    assert_true(labs(atol(ts) - now) <= 5);
    cap_header(f->cap, "webhook-signature", sig, sizeof sig);

    body = strstr(f->cap->last, "\r\n\r\n") + 4;
    /* the channel's own signer and an independent HMAC agree */
    assert_int_equal(webhook_sign((const unsigned char *)SECRET_KEY, 32, id, atol(ts), body,
                                  strlen(body), want, sizeof want), 0);
    assert_string_equal(sig, want);
    snprintf(signed_msg, sizeof signed_msg, "%s.%s.%s", id, ts, body);
    HMAC(EVP_sha256(), SECRET_KEY, 32, (const unsigned char *)signed_msg, strlen(signed_msg),
         mac, &maclen);
    EVP_EncodeBlock((unsigned char *)b64, mac, 32);
    assert_string_equal(sig + 3, b64);

    j = parse(body);
    assert_string_equal(json_string_value(json_object_get(j, "type")), "herold.message");
    assert_int_equal(strlen(json_string_value(json_object_get(j, "timestamp"))), 20);
    data = json_object_get(j, "data");
    assert_string_equal(json_string_value(json_object_get(data, "job")), "abfuhr-0312");
    assert_string_equal(json_string_value(json_object_get(data, "kind")), "notice");
    assert_string_equal(json_string_value(json_object_get(data, "priority")), "normal");
    assert_string_equal(json_string_value(json_object_get(data, "recipient")), "r-17");
    assert_int_equal(json_integer_value(json_object_get(data, "attempt")), 2);
    assert_string_equal(json_string_value(json_object_get(data, "lang")), "de");
    assert_string_equal(json_string_value(json_object_get(data, "subject")), "Abfuhr");
    assert_string_equal(json_string_value(json_object_get(data, "text")), "Morgen: Papier");
    assert_null(json_object_get(data, "html"));
    json_decref(j);
    wfx_free(f);
    assert_int_equal(w.calls, 1);
}

static void test_submit_endpoint_option(void **state)
{
    struct wfx *f = wfx_new(8);
    struct wdone w = {0};
    struct delivery d = base_delivery;
    json_t *opt = parse("{\"endpoint\":\"busy\"}");
    json_t *bad = parse("{\"endpoint\":\"nope\"}");
    struct herr err;
    json_t *j;

    (void)state;
    d.html = "<p>Morgen</p>";
    d.options = opt;
    assert_int_equal(webhook_channel.submit(f->st, &d, on_wdone, &w, &err), 0);
    wfx_run_until(f, &w.calls, 1);
    assert_int_equal(strncmp(f->cap->last, "POST /busy ", 11), 0);
    assert_int_equal(w.res.status, DELIVERY_TRANSIENT);
    assert_int_equal(w.res.provider_code, 503);
    assert_int_equal(w.res.retry_after_ms, 7000);
    j = parse(strstr(f->cap->last, "\r\n\r\n") + 4);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "data"), "html")),
                        "<p>Morgen</p>");
    json_decref(j);

    d.options = bad;
    herr_clear(&err);
    assert_int_equal(webhook_channel.submit(f->st, &d, on_wdone, &w, &err), -1);
    assert_int_equal(err.kind, HERR_INPUT);
    assert_string_equal(err.path, "options.webhook.endpoint");
    assert_string_equal(err.msg, "expected a configured endpoint name");
    json_decref(opt);
    json_decref(bad);
    wfx_free(f);
    assert_int_equal(w.calls, 1);
}

/* max_inflight and drain refuse with HERR_TRANSIENT; aborts end in-flight
 * deliveries transient and in doubt. */
static void test_submit_refusals_and_abort(void **state)
{
    struct wfx *f = wfx_new(1);
    struct wdone w = {0}, w2 = {0};
    struct delivery d = base_delivery;
    json_t *slow = parse("{\"endpoint\":\"slow\"}");
    struct herr err;

    (void)state;
    d.options = slow;
    assert_int_equal(webhook_channel.submit(f->st, &d, on_wdone, &w, &err), 0);
    assert_int_equal(webhook_channel.submit(f->st, &base_delivery, on_wdone, &w2, &err), -1);
    assert_int_equal(err.kind, HERR_TRANSIENT);
    assert_string_equal(err.msg, "too many webhook requests in flight");

    d.idem_key = "bad key";
    assert_int_equal(webhook_channel.submit(f->st, &d, on_wdone, &w2, &err), -1);
    assert_int_equal(err.kind, HERR_INPUT);
    assert_string_equal(err.path, "idem_key");

    /* wait until the server holds the request, then drain and abort */
    {
        ev_tstamp deadline = ev_time() + 10.0;
        int n = 0;

        while (n < 1 && ev_time() < deadline) {
            ev_run(f->loop, EVRUN_ONCE);
            pthread_mutex_lock(&f->cap->mu);
            n = f->cap->nreq;
            pthread_mutex_unlock(&f->cap->mu);
        }
        assert_int_equal(n, 1);
    }
    webhook_channel.drain(f->st, ev_now(f->loop) + 1.0);
    assert_int_equal(webhook_channel.submit(f->st, &base_delivery, on_wdone, &w2, &err), -1);
    assert_int_equal(err.kind, HERR_TRANSIENT);
    assert_string_equal(err.msg, "draining");
    http_abort_all(f->http);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.res.status, DELIVERY_TRANSIENT);
    assert_true(w.res.in_doubt);
    assert_string_equal(w.res.reason, "aborted after request sent");
    json_decref(slow);
    wfx_free(f);
    assert_int_equal(w2.calls, 0);
}

/* destroy with a request in flight: its done never runs, nothing leaks. */
static void test_destroy_inflight(void **state)
{
    struct wfx *f = wfx_new(8);
    struct wdone w = {0};
    struct herr err;

    (void)state;
    assert_int_equal(webhook_channel.submit(f->st, &base_delivery, on_wdone, &w, &err), 0);
    webhook_channel.destroy(f->st);
    f->st = NULL;
    http_abort_all(f->http);
    assert_int_equal(w.calls, 0);
    wfx_free(f);
}

/* every allocation in submit may fail: -1 with HERR_RESOURCE and no done,
 * or 0 and exactly one done. */
static void test_submit_alloc_failure(void **state)
{
    struct wfx *f = wfx_new(8);
    bool accepted = false;

    (void)state;
    for (long n = 0; !accepted && n < 50; n++) {
        struct wdone w = {0};
        struct herr err;
        int rc;

        herold_alloc_fail_after = n;
        rc = webhook_channel.submit(f->st, &base_delivery, on_wdone, &w, &err);
        herold_alloc_fail_after = -1;
        if (rc < 0) {
            assert_int_equal(err.kind, HERR_RESOURCE);
            continue;
        }
        accepted = true;
        wfx_run_until(f, &w.calls, 1);
        assert_int_equal(w.res.status, DELIVERY_OK);
    }
    assert_true(accepted);
    wfx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_vectors),
        cmocka_unit_test(test_secret_key),
        cmocka_unit_test(test_config_table),
        cmocka_unit_test(test_init_alloc_failure),
        cmocka_unit_test(test_check_config_mode),
        cmocka_unit_test(test_validate_address),
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_submit_delivers_signed),
        cmocka_unit_test(test_submit_endpoint_option),
        cmocka_unit_test(test_submit_refusals_and_abort),
        cmocka_unit_test(test_destroy_inflight),
        cmocka_unit_test(test_submit_alloc_failure),
    };

    return cmocka_run_group_tests(tests, setup_env, NULL);
}
