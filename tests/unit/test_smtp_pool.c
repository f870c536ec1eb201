/*
 * test_smtp_pool - the libESMTP worker pool against a real SMTP server.
 *
 * Each test starts tests/harness/smtpsink.py (aiosmtpd) with its own
 * behaviour flags in a fresh mkdtemp directory, waits until its port
 * accepts connections, drives smtp_pool on a libev loop and then reads
 * the sink's JSON log.  Certificates (test CA, good, wrong host, expired,
 * self-signed) are made once per run by the sink's --make-certs.
 * No timing assertions: the loop runs until a condition holds, with a
 * generous deadline that fails the test instead of hanging it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "channels/smtp_pool.h"
#include "dispatcher/alloc.h"

extern char **environ;

#define SINK "tests/harness/smtpsink.py"
#define PYTHON "/usr/bin/python3"
#define MAXMSG 64

static char certdir[64];

struct sink {
    char dir[128];
    char portfile[200];
    char log[200];
    char store[200];
    pid_t pid;
    int port;
};

struct got {
    int n;
    int order[MAXMSG];
    struct smtp_result res[MAXMSG];
};

struct fixture {
    struct ev_loop *loop;
    struct sink sink;
    struct got got;
    ev_timer ticker;
    long ticks;
};

/* ---- helpers -------------------------------------------------------------- */

static double now_mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* spawn_wait - run argv to completion; its exit status. */
static int spawn_wait(char *const argv[])
{
    pid_t pid;
    int st = -1;

    if (posix_spawn(&pid, argv[0], NULL, NULL, argv, environ) != 0)
        return -1;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* port_open - something accepts TCP on 127.0.0.1:port. */
static bool port_open(int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port) };
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bool ok;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* rm_tree - remove a test directory. */
static void rm_tree(const char *dir)
{
    char *argv[] = { (char *)"/bin/rm", (char *)"-rf", (char *)dir, NULL };

    spawn_wait(argv);
}

/* sink_start - start the sink with extra flags (NULL-terminated). */
static void sink_start(struct sink *s, ...)
{
    char *argv[40];
    int argc = 0;
    const char *a;
    va_list ap;
    double deadline;
    FILE *f;

    snprintf(s->dir, sizeof s->dir, "/tmp/herold-smtp-XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    snprintf(s->portfile, sizeof s->portfile, "%s/port", s->dir);
    snprintf(s->log, sizeof s->log, "%s/log.jsonl", s->dir);
    snprintf(s->store, sizeof s->store, "%s/store", s->dir);
    argv[argc++] = (char *)PYTHON;
    argv[argc++] = (char *)SINK;
    argv[argc++] = (char *)"--port";
    argv[argc++] = (char *)"0";
    argv[argc++] = (char *)"--portfile";
    argv[argc++] = s->portfile;
    argv[argc++] = (char *)"--store";
    argv[argc++] = s->store;
    argv[argc++] = (char *)"--log";
    argv[argc++] = s->log;
    va_start(ap, s);
    while ((a = va_arg(ap, const char *)) != NULL && argc < 39)
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    assert_int_equal(posix_spawn(&s->pid, PYTHON, NULL, NULL, argv, environ),
                     0);

    /* Readiness is polled, never slept for. */
    s->port = 0;
    deadline = now_mono() + 15;
    while (now_mono() < deadline) {
        if (s->port == 0 && (f = fopen(s->portfile, "r")) != NULL) {
            if (fscanf(f, "%d", &s->port) != 1)
                s->port = 0;
            fclose(f);
        }
        if (s->port > 0 && port_open(s->port))
            break;
        if (waitpid(s->pid, NULL, WNOHANG) == s->pid)
            fail_msg("smtpsink exited early");
        usleep(10000);
    }
    assert_true(s->port > 0);
}

static void sink_stop(struct sink *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
    if (s->dir[0] != '\0' && getenv("KEEP_SINK") == NULL)
        rm_tree(s->dir);
}

/* sink_count - lines of the sink log that contain every needle. */
static int sink_count(const struct sink *s, const char *n1, const char *n2)
{
    char line[4096];
    int c = 0;
    FILE *f = fopen(s->log, "r");

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof line, f) != NULL)
        if (strstr(line, n1) && (n2 == NULL || strstr(line, n2)))
            c++;
    fclose(f);
    return c;
}

/* sink_file - the bytes of the sink's n-th stored message. */
static char *sink_file(const struct sink *s, int n, size_t *len)
{
    char path[256];
    FILE *f;
    char *buf;
    long sz;

    snprintf(path, sizeof path, "%s/%d.eml", s->store, n);
    f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)sz + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)sz, f), (size_t)sz);
    buf[sz] = '\0';
    fclose(f);
    *len = (size_t)sz;
    return buf;
}

static void on_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct fixture *fx = t->data;

    (void)loop;
    (void)revents;
    fx->ticks++;
}

static void on_done(void *arg, const struct smtp_result *res)
{
    struct fixture *fx = *(struct fixture **)arg;
    int idx = (int)(((intptr_t *)arg)[1]);

    assert_true(fx->got.n < MAXMSG);
    fx->got.order[fx->got.n] = idx;
    fx->got.res[idx] = *res;
    fx->got.n++;
    free(arg);
}

/* submit - queue message idx; returns smtp_pool_submit's value. */
static int submit(struct fixture *fx, struct smtp_pool *pool, int idx,
                  const char *rcpt, const char *data, struct herr *err)
{
    struct smtp_message *m;
    intptr_t *arg;
    int rc;

    m = smtp_message_new("sender@herold.test", rcpt, data, strlen(data), err);
    assert_non_null(m);
    arg = malloc(2 * sizeof *arg);
    assert_non_null(arg);
    arg[0] = (intptr_t)fx;
    arg[1] = idx;
    rc = smtp_pool_submit(pool, m, on_done, arg, err);
    if (rc < 0) {
        smtp_message_free(m);
        free(arg);
    }
    return rc;
}

/* run_until - run the loop until want results arrived (or 30 s). */
static void run_until(struct fixture *fx, int want)
{
    double deadline = now_mono() + 30;

    while (fx->got.n < want && now_mono() < deadline)
        ev_run(fx->loop, EVRUN_ONCE);
    assert_int_equal(fx->got.n, want);
}

static char *make_msg(int i, size_t body)
{
    size_t cap = body + 512;
    char *m = malloc(cap);
    size_t off;

    assert_non_null(m);
    off = (size_t)snprintf(m, cap,
                           "Date: Mon, 02 Mar 2026 07:00:00 +0100\r\n"
                           "From: Gemeinde <sender@herold.test>\r\n"
                           "To: <rcpt@herold.test>\r\n"
                           "Message-ID: <m%d@herold.test>\r\n"
                           "Subject: Test %d\r\n"
                           "\r\n"
                           ".leading dot line\r\n",
                           i, i);
    static const char line[] = "abcdefghijklmnopqrstuvwxyz0123456789"
                               "abcdefghijklmnopqrstuvwxyz0123456789\r\n";

    while (off + sizeof line < cap - 64 && off < body) {
        memcpy(m + off, line, sizeof line - 1);
        off += sizeof line - 1;
    }
    memcpy(m + off, ".\r\nend\r\n", 9);
    return m;
}

static struct smtp_pool_config plain_cfg(const struct fixture *fx)
{
    struct smtp_pool_config c = {
        .host = "127.0.0.1",
        .port = fx->sink.port,
        .starttls = SMTP_STARTTLS_OFF,
        .workers = 1,
        .queue_max = 100,
        .max_per_session = 100,
        .connect_timeout_ms = 2000,
        .command_timeout_ms = 5000,
        .data_timeout_ms = 5000,
    };
    return c;
}

static struct smtp_pool *pool_new_ok(struct fixture *fx,
                                     const struct smtp_pool_config *c)
{
    struct herr err = { 0 };
    struct smtp_pool *p = smtp_pool_new(fx->loop, c, &err);

    if (p == NULL)
        fail_msg("smtp_pool_new: %s: %s", err.path, err.msg);
    return p;
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);

    if (fx == NULL)
        return -1;
    fx->loop = ev_loop_new(EVFLAG_AUTO);
    ev_timer_init(&fx->ticker, on_tick, 0.01, 0.01);
    fx->ticker.data = fx;
    ev_timer_start(fx->loop, &fx->ticker);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;

    sink_stop(&fx->sink);
    ev_timer_stop(fx->loop, &fx->ticker);
    ev_loop_destroy(fx->loop);
    free(fx);
    return 0;
}

static int group_setup(void **state)
{
    char *argv[] = { (char *)PYTHON, (char *)SINK, (char *)"--make-certs",
                     certdir, NULL };

    (void)state;
    signal(SIGPIPE, SIG_IGN);
    snprintf(certdir, sizeof certdir, "/tmp/herold-certs-XXXXXX");
    if (mkdtemp(certdir) == NULL)
        return -1;
    return spawn_wait(argv) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    rm_tree(certdir);
    return 0;
}

static const char *cert(const char *name)
{
    static char buf[8][160];
    static int i;

    i = (i + 1) % 8;
    snprintf(buf[i], sizeof buf[i], "%s/%s", certdir, name);
    return buf[i];
}

/* ---- tests ----------------------------------------------------------------- */

/* Several messages, one session, bytes arrive exactly as handed over:
 * libESMTP dot-stuffs on the wire (the sink un-stuffs) and adds no
 * header when Date, From and Message-ID are present. */
static void test_delivery_one_session(void **state)
{
    struct fixture *fx = *state;
    struct herr err = { 0 };
    struct smtp_pool_config c;
    struct smtp_pool *pool;
    char *msgs[5];
    char *got;
    size_t len;

    sink_start(&fx->sink, NULL);
    c = plain_cfg(fx);
    pool = pool_new_ok(fx, &c);
    for (int i = 0; i < 5; i++) {
        msgs[i] = make_msg(i, i == 0 ? 5000 : 300);
        assert_int_equal(submit(fx, pool, i, "rcpt@herold.test", msgs[i],
                                &err), 0);
    }
    /* done never runs inside submit. */
    assert_int_equal(fx->got.n, 0);
    run_until(fx, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(fx->got.res[i].cls, SMTP_OK);
        assert_int_equal(fx->got.res[i].code, 250);
        assert_false(fx->got.res[i].in_doubt);
    }
    assert_int_equal(sink_count(&fx->sink, "\"event\": \"message\"", NULL), 5);
    /* One connect is sink_start's readiness probe.  The first message
     * may leave alone; the other four then share one session. */
    assert_true(sink_count(&fx->sink, "\"event\": \"connect\"", NULL) - 1 <= 2);
    for (int i = 0; i < 5; i++) {
        char want[64];
        snprintf(want, sizeof want, "\"message_id\": \"<m%d@herold.test>\"", i);
        assert_int_equal(sink_count(&fx->sink, want, NULL), 1);
    }
    got = sink_file(&fx->sink, 1, &len);
    assert_int_equal(len, strlen(msgs[0]));
    assert_memory_equal(got, msgs[0], len);
    free(got);
    smtp_pool_free(pool);
    for (int i = 0; i < 5; i++)
        free(msgs[i]);
}

/* max_per_session bounds what one libESMTP session holds. */
static void test_session_bound(void **state)
{
    struct fixture *fx = *state;
    struct herr err = { 0 };
    struct smtp_pool_config c;
    struct smtp_pool *pool;
    char *m = make_msg(1, 100);

    sink_start(&fx->sink, NULL);
    c = plain_cfg(fx);
    c.max_per_session = 2;
    pool = pool_new_ok(fx, &c);
    for (int i = 0; i < 6; i++)
        assert_int_equal(submit(fx, pool, i, "rcpt@herold.test", m, &err), 0);
    run_until(fx, 6);
    for (int i = 0; i < 6; i++)
        assert_int_equal(fx->got.res[i].cls, SMTP_OK);
    /* 6 messages, 2 per session: at least 3 sessions (plus the probe). */
    assert_true(sink_count(&fx->sink, "\"event\": \"connect\"", NULL) - 1 >= 3);
    smtp_pool_free(pool);
    free(m);
}

static void test_550_permanent(void **state)
{
    struct fixture *fx = *state;
    struct herr err = { 0 };
    struct smtp_pool_config c;
    struct smtp_pool *pool;
    char *m = make_msg(1, 100);

    sink_start(&fx->sink, "--reject", "gone@herold.test", NULL);
    c = plain_cfg(fx);
    pool = pool_new_ok(fx, &c);
    assert_int_equal(submit(fx, pool, 0, "gone@herold.test", m, &err), 0);
    assert_int_equal(submit(fx, pool, 1, "rcpt@herold.test", m, &err), 0);
    run_until(fx, 2);
    assert_int_equal(fx->got.res[0].cls, SMTP_PERMANENT);
    assert_int_equal(fx->got.res[0].code, 550);
    assert_non_null(strstr(fx->got.res[0].reason, "550"));
    assert_null(strstr(fx->got.res[0].reason, "@"));
    assert_int_equal(fx->got.res[1].cls, SMTP_OK);
    assert_int_equal(sink_count(&fx->sink, "\"event\": \"message\"", NULL), 1);
    smtp_pool_free(pool);
    free(m);
}

static void test_450_transient_then_ok(void **state)
{
    struct fixture *fx = *state;
    struct herr err = { 0 };
    struct smtp_pool_config c;
    struct smtp_pool *pool;
    char *m = make_msg(1, 100);

    sink_start(&fx->sink, "--greylist", NULL);
    c = plain_cfg(fx);
    pool = pool_new_ok(fx, &c);
    assert_int_equal(submit(fx, pool, 0, "rcpt@herold.test", m, &err), 0);
    run_until(fx, 1);
    assert_int_equal(fx->got.res[0].cls, SMTP_TRANSIENT);
    assert_int_equal(fx->got.res[0].code, 450);
    assert_false(fx->got.res[0].in_doubt);
    assert_int_equal(submit(fx, pool, 1, "rcpt@herold.test", m, &err), 0);
    run_until(fx, 2);
    assert_int_equal(fx->got.res[1].cls, SMTP_OK);
    smtp_pool_free(pool);
    free(m);
}

static void test_421_greeting(void **state)
{
    struct fixture *fx = *state;
    struct herr err = { 0 };
    struct smtp_pool_config c;
    struct smtp_pool *pool;
    char *m = make_msg(1, 100);

    sink_start(&fx->sink, "--greet-421", NULL);
    c = plain_cfg(fx);
    pool = pool_new_ok(fx, &c);
    for (int i = 0; i < 3; i++)
        assert_int_equal(submit(fx, pool, i, "rcpt@herold.test", m, &err), 0);
    run_until(fx, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fx->got.res[i].cls, SMTP_TRANSIENT);
        assert_false(fx->got.res[i].in_doubt);
    }
    smtp_pool_free(pool);
    free(m);
}

/* 421 mid-session: what was accepted stays OK, the rest is deferred. */
static void test_421_after_two(void **state)
{
    struct fixture *fx = *state;
    struct herr err = { 0 };
    struct smtp_pool_config c;
    struct smtp_pool *pool;
    char *m = make_msg(1, 100);
    int ok = 0, tr = 0;

    sink_start(&fx->sink, "--421-after", "2", NULL);
    c = plain_cfg(fx);
    pool = pool_new_ok(fx, &c);
    for (int i = 0; i < 4; i++)
        assert_int_equal(submit(fx, pool, i, "rcpt@herold.test", m, &err), 0);
    run_until(fx, 4);
    for (int i = 0; i < 4; i++) {
        ok += fx->got.res[i].cls == SMTP_OK;
        tr += fx->got.res[i].cls == SMTP_TRANSIENT;
        assert_false(fx->got.res[i].in_doubt);
    }
    assert_int_equal(ok, 2);
    assert_int_equal(tr, 2);
    assert_int_equal(sink_count(&fx->sink, "\"event\": \"message\"", NULL), 2);
    smtp_pool_free(pool);
    free(m);
}

static void test_drop_after_dot_in_doubt(void **state)
{
    struct fixture *fx = *state;
    struct herr err = { 0 };
    struct smtp_pool_config c;
    struct smtp_pool *pool;
    char *m = make_msg(1, 3000);

    sink_start(&fx->sink, "--drop-after-dot", NULL);
    c = plain_cfg(fx);
    pool = pool_new_ok(fx, &c);
    assert_int_equal(submit(fx, pool, 0, "rcpt@herold.test", m, &err), 0);
    run_until(fx, 1);
    assert_int_equal(fx->got.res[0].cls, SMTP_TRANSIENT);
    assert_true(fx->got.res[0].in_doubt);
    assert_int_equal(fx->got.res[0].code, 0);
    /* The relay did get it: that is exactly why it is in doubt. */
    assert_int_equal(sink_count(&fx->sink, "\"event\": \"message\"", NULL), 1);
    smtp_pool_free(pool);
    free(m);
}

/* A server that never greets stalls only the worker; the loop ticks. */
static void test_tarpit_timeout(void **state)
{
    struct fixture *fx = *state;
    struct herr err = { 0 };
    struct smtp_pool_config c;
    struct smtp_pool *pool;
    char *m = make_msg(1, 100);
    long before;

    sink_start(&fx->sink, "--tarpit", NULL);
    c = plain_cfg(fx);
    c.command_timeout_ms = 700;
    pool = pool_new_ok(fx, &c);
    before = fx->ticks;
    assert_int_equal(submit(fx, pool, 0, "rcpt@herold.test", m, &err), 0);
    run_until(fx, 1);
    assert_int_equal(fx->got.res[0].cls, SMTP_TRANSIENT);
    assert_false(fx->got.res[0].in_doubt);
    /* The 10 ms ticker ran while the worker waited out the timeout. */
    assert_true(fx->ticks - before >= 10);
    smtp_pool_free(pool);
    free(m);
}

/* TLS failure cases: a bad certificate aborts before any AUTH or MAIL. */
static void tls_refused(struct fixture *fx, const char *certname,
                        const char *want_reason)
{
    char pem[64], key[64];
    struct herr err = { 0 };
    struct smtp_pool_config c;
    struct smtp_pool *pool;
    char *m = make_msg(1, 100);

    snprintf(pem, sizeof pem, "%s.pem", certname);
    snprintf(key, sizeof key, "%s.key", certname);
    sink_start(&fx->sink, "--tls-cert", cert(pem), "--tls-key", cert(key),
               "--auth", "herold:s3cret", NULL);
    c = plain_cfg(fx);
    c.host = "localhost";
    c.starttls = SMTP_STARTTLS_REQUIRED;
    c.ca_file = cert("ca.pem");
    c.username = "herold";
    c.password = "s3cret";
    pool = pool_new_ok(fx, &c);
    assert_int_equal(submit(fx, pool, 0, "rcpt@herold.test", m, &err), 0);
    run_until(fx, 1);
    assert_int_equal(fx->got.res[0].cls, SMTP_TRANSIENT);
    assert_false(fx->got.res[0].in_doubt);
    if (strstr(fx->got.res[0].reason, want_reason) == NULL)
        fail_msg("reason \"%s\" lacks \"%s\"", fx->got.res[0].reason,
                 want_reason);
    printf("# %s certificate: %s\n", certname, fx->got.res[0].reason);
    assert_int_equal(sink_count(&fx->sink, "\"event\": \"message\"", NULL), 0);
    assert_int_equal(sink_count(&fx->sink, "\"event\": \"auth\"", NULL), 0);
    smtp_pool_free(pool);
    free(m);
}

static void test_tls_self_signed(void **state)
{
    tls_refused(*state, "self", "TLS");
}

static void test_tls_expired(void **state)
{
    tls_refused(*state, "expired", "expired");
}

static void test_tls_wrong_host(void **state)
{
    tls_refused(*state, "wrong", "TLS");
}

/* With the test CA as ca_file the same setup delivers, AUTH over TLS. */
static void test_tls_good_with_auth(void **state)
{
    struct fixture *fx = *state;
    struct herr err = { 0 };
    struct smtp_pool_config c;
    struct smtp_pool *pool;
    char *m = make_msg(1, 100);

    sink_start(&fx->sink, "--tls-cert", cert("good.pem"), "--tls-key",
               cert("good.key"), "--auth", "herold:s3cret", NULL);
    c = plain_cfg(fx);
    c.host = "localhost";
    c.starttls = SMTP_STARTTLS_REQUIRED;
    c.ca_file = cert("ca.pem");
    c.username = "herold";
    c.password = "s3cret";
    pool = pool_new_ok(fx, &c);
    assert_int_equal(submit(fx, pool, 0, "rcpt@herold.test", m, &err), 0);
    run_until(fx, 1);
    for (int k = 1; k < 3 && fx->got.res[k - 1].cls == SMTP_TRANSIENT; k++) {
        /* The Python sink's TLS handshake hangs now and then (measured:
         * about 2 in 30 sessions, on the server side, after STARTTLS; see
         * smtpsink.py).  TRANSIENT is herold's right answer to that, and
         * the dispatcher would retry, so the test does too, twice. */
        printf("# tls good: attempt %d %s; retrying\n", k, fx->got.res[k - 1].reason);
        assert_int_equal(submit(fx, pool, k, "rcpt@herold.test", m, &err), 0);
        run_until(fx, k + 1);
        fx->got.res[0] = fx->got.res[k];
    }
    if (fx->got.res[0].cls != SMTP_OK)
        fail_msg("not delivered: %s", fx->got.res[0].reason);
    assert_int_equal(sink_count(&fx->sink, "\"event\": \"message\"",
                                "\"tls\": true"), 1);
    assert_int_equal(sink_count(&fx->sink, "\"auth\": \"herold\"", NULL), 1);
    assert_int_equal(sink_count(&fx->sink, "\"event\": \"auth\"",
                                "\"tls\": false"), 0);
    smtp_pool_free(pool);
    free(m);
}

/* STARTTLS required but not offered: nothing goes out, not even AUTH. */
static void test_starttls_not_offered(void **state)
{
    struct fixture *fx = *state;
    struct herr err = { 0 };
    struct smtp_pool_config c;
    struct smtp_pool *pool;
    char *m = make_msg(1, 100);

    sink_start(&fx->sink, "--no-starttls", "--auth", "herold:s3cret",
               "--auth-plaintext", NULL);
    c = plain_cfg(fx);
    c.host = "localhost";
    c.starttls = SMTP_STARTTLS_REQUIRED;
    c.username = "herold";
    c.password = "s3cret";
    pool = pool_new_ok(fx, &c);
    assert_int_equal(submit(fx, pool, 0, "rcpt@herold.test", m, &err), 0);
    run_until(fx, 1);
    assert_int_equal(fx->got.res[0].cls, SMTP_TRANSIENT);
    assert_non_null(strstr(fx->got.res[0].reason, "STARTTLS"));
    assert_int_equal(sink_count(&fx->sink, "\"event\": \"message\"", NULL), 0);
    assert_int_equal(sink_count(&fx->sink, "\"event\": \"auth\"", NULL), 0);
    smtp_pool_free(pool);
    free(m);
}

/* Opportunistic TLS to a relay without STARTTLS: credentials withheld. */
static void test_opportunistic_withholds_auth(void **state)
{
    struct fixture *fx = *state;
    struct herr err = { 0 };
    struct smtp_pool_config c;
    struct smtp_pool *pool;
    char *m = make_msg(1, 100);

    sink_start(&fx->sink, "--no-starttls", "--auth", "herold:s3cret",
               "--auth-plaintext", NULL);
    c = plain_cfg(fx);
    c.host = "localhost";
    c.starttls = SMTP_STARTTLS_OPPORTUNISTIC;
    c.username = "herold";
    c.password = "s3cret";
    pool = pool_new_ok(fx, &c);
    assert_int_equal(submit(fx, pool, 0, "rcpt@herold.test", m, &err), 0);
    run_until(fx, 1);
    assert_int_equal(fx->got.res[0].cls, SMTP_TRANSIENT);
    assert_int_equal(sink_count(&fx->sink, "\"event\": \"message\"", NULL), 0);
    /* No AUTH line ever carried credentials, and none succeeded. */
    assert_int_equal(sink_count(&fx->sink, "\"initial\": true", NULL), 0);
    assert_int_equal(sink_count(&fx->sink, "\"auth\": \"herold\"", NULL), 0);
    smtp_pool_free(pool);
    free(m);
}

/* Backpressure: a full queue refuses with HERR_TRANSIENT, keeps msg. */
static void test_queue_full(void **state)
{
    struct fixture *fx = *state;
    struct herr err = { 0 };
    struct smtp_pool_config c;
    struct smtp_pool *pool;
    char *m = make_msg(1, 100);
    int accepted = 0, refused = 0;

    sink_start(&fx->sink, "--tarpit", NULL);
    c = plain_cfg(fx);
    c.queue_max = 2;
    c.max_per_session = 1;
    c.command_timeout_ms = 500;
    pool = pool_new_ok(fx, &c);
    for (int i = 0; i < 10; i++) {
        if (submit(fx, pool, i, "rcpt@herold.test", m, &err) == 0) {
            accepted++;
        } else {
            refused++;
            assert_int_equal(err.kind, HERR_TRANSIENT);
        }
    }
    assert_true(accepted <= 3);
    assert_true(refused >= 7);
    assert_int_equal(smtp_pool_pending(pool), (size_t)accepted);
    run_until(fx, accepted);
    for (int i = 0; i < fx->got.n; i++)
        assert_int_equal(fx->got.res[fx->got.order[i]].cls, SMTP_TRANSIENT);
    smtp_pool_free(pool);
    free(m);
}

/* Drain: queued messages end at once, the stuck session at the deadline,
 * and new submits are refused. */
static void test_drain(void **state)
{
    struct fixture *fx = *state;
    struct herr err = { 0 };
    struct smtp_pool_config c;
    struct smtp_pool *pool;
    char *m = make_msg(1, 100);
    double t0;

    sink_start(&fx->sink, "--tarpit", NULL);
    c = plain_cfg(fx);
    c.max_per_session = 1;
    c.command_timeout_ms = 20000;
    pool = pool_new_ok(fx, &c);
    for (int i = 0; i < 3; i++)
        assert_int_equal(submit(fx, pool, i, "rcpt@herold.test", m, &err), 0);
    /* Let the worker take the first one into its tarpitted session. */
    while (fx->ticks < 20)
        ev_run(fx->loop, EVRUN_ONCE);
    t0 = now_mono();
    smtp_pool_drain(pool, ev_now(fx->loop) + 0.3);
    assert_int_equal(submit(fx, pool, 9, "rcpt@herold.test", m, &err), -1);
    assert_int_equal(err.kind, HERR_TRANSIENT);
    run_until(fx, 3);
    assert_true(now_mono() - t0 < 10);
    for (int i = 0; i < 3; i++)
        assert_int_equal(fx->got.res[i].cls, SMTP_TRANSIENT);
    assert_int_equal(smtp_pool_pending(pool), 0);
    smtp_pool_free(pool);
    free(m);
}

/* Free with work in flight: every accepted message still gets one done. */
static void test_free_in_flight(void **state)
{
    struct fixture *fx = *state;
    struct herr err = { 0 };
    struct smtp_pool_config c;
    struct smtp_pool *pool;
    char *m = make_msg(1, 100);

    sink_start(&fx->sink, "--tarpit", NULL);
    c = plain_cfg(fx);
    c.command_timeout_ms = 20000;
    pool = pool_new_ok(fx, &c);
    for (int i = 0; i < 3; i++)
        assert_int_equal(submit(fx, pool, i, "rcpt@herold.test", m, &err), 0);
    smtp_pool_free(pool);
    assert_int_equal(fx->got.n, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(fx->got.res[i].cls, SMTP_TRANSIENT);
    free(m);
}

static void test_config_rules(void **state)
{
    static const struct {
        const char *label, *host;
        enum smtp_starttls tls;
        const char *user;
        const char *want_path;
    } cases[] = {
        { "no host", NULL, SMTP_STARTTLS_OFF, NULL, "host" },
        { "auth plaintext remote", "mail.example.org", SMTP_STARTTLS_OFF,
          "u", "starttls" },
        { "tls to ip literal", "192.0.2.1", SMTP_STARTTLS_REQUIRED, NULL,
          "host" },
        { "crlf in host", "a\r\nb", SMTP_STARTTLS_REQUIRED, NULL, "host" },
    };
    struct fixture *fx = *state;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct smtp_pool_config c = { .host = cases[i].host,
                                      .starttls = cases[i].tls,
                                      .username = cases[i].user,
                                      .password = cases[i].user };
        struct herr err = { 0 };

        if (smtp_pool_new(fx->loop, &c, &err) != NULL)
            fail_msg("%s: accepted", cases[i].label);
        assert_int_equal(err.kind, HERR_INPUT);
        assert_string_equal(err.path, cases[i].want_path);
    }
}

static void test_message_rules(void **state)
{
    static const struct {
        const char *label, *rcpt, *data;
        const char *want_path;
    } cases[] = {
        { "bare lf", "a@b.test", "S: x\r\n\r\nline\n.\nmore\r\n", "data" },
        { "bare cr", "a@b.test", "S: x\r\n\r\nline\r.\r\n", "data" },
        { "crlf in rcpt", "a@b.test>\r\nRCPT TO:<c@d.test", "S: x\r\n\r\nb\r\n",
          "rcpt" },
        { "empty rcpt", "", "S: x\r\n\r\nb\r\n", "rcpt" },
        { "empty data", "a@b.test", "", "data" },
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct herr err = { 0 };
        struct smtp_message *m = smtp_message_new(
            "s@b.test", cases[i].rcpt, cases[i].data, strlen(cases[i].data),
            &err);

        if (m != NULL)
            fail_msg("%s: accepted", cases[i].label);
        assert_int_equal(err.kind, HERR_INPUT);
        assert_string_equal(err.path, cases[i].want_path);
    }
    herold_alloc_fail_after = 0;
    {
        struct herr err = { 0 };
        assert_null(smtp_message_new("s@b.test", "a@b.test", "x\r\n", 3, &err));
        assert_int_equal(err.kind, HERR_RESOURCE);
    }
    herold_alloc_fail_after = -1;
}

static int fake_sign(void *arg, const char *data, size_t len, char **header,
                     struct herr *err)
{
    (void)data;
    (void)len;
    if (arg != NULL)
        return herr_set(err, HERR_INPUT, NULL, "no key");
    *header = herold_strdup("X-Test-Sig: a=1;\r\n b=2\r\n");
    return *header ? 0 : -1;
}

/* The sign hook's header goes out in front of the message, unchanged;
 * a failing hook ends the message TRANSIENT without sending it. */
static void test_sign_hook(void **state)
{
    struct fixture *fx = *state;
    struct herr err = { 0 };
    struct smtp_pool_config c;
    struct smtp_pool *pool;
    char *m = make_msg(1, 100);
    char *got;
    size_t len;
    static const char sig[] = "X-Test-Sig: a=1;\r\n b=2\r\n";

    sink_start(&fx->sink, NULL);
    c = plain_cfg(fx);
    c.sign = fake_sign;
    pool = pool_new_ok(fx, &c);
    assert_int_equal(submit(fx, pool, 0, "rcpt@herold.test", m, &err), 0);
    run_until(fx, 1);
    assert_int_equal(fx->got.res[0].cls, SMTP_OK);
    smtp_pool_free(pool);
    got = sink_file(&fx->sink, 1, &len);
    assert_int_equal(len, strlen(sig) + strlen(m));
    assert_memory_equal(got, sig, strlen(sig));
    assert_memory_equal(got + strlen(sig), m, strlen(m));
    free(got);

    c.sign_arg = fx; /* makes fake_sign fail */
    pool = pool_new_ok(fx, &c);
    assert_int_equal(submit(fx, pool, 1, "rcpt@herold.test", m, &err), 0);
    run_until(fx, 2);
    assert_int_equal(fx->got.res[1].cls, SMTP_TRANSIENT);
    assert_non_null(strstr(fx->got.res[1].reason, "signing failed"));
    assert_int_equal(sink_count(&fx->sink, "\"event\": \"message\"", NULL), 1);
    smtp_pool_free(pool);
    free(m);
}

/* Nagle measurement (issue 4 item 7): 20 messages of 5 KB in one session
 * with and without TCP_NODELAY.  Printed, not asserted. */
static double send_batch(struct fixture *fx, bool keep_nagle)
{
    struct herr err = { 0 };
    struct smtp_pool_config c = plain_cfg(fx);
    struct smtp_pool *pool;
    char *m = make_msg(1, 5120);
    double t0;
    int base = fx->got.n;

    c.keep_nagle = keep_nagle;
    pool = pool_new_ok(fx, &c);
    t0 = now_mono();
    for (int i = 0; i < 20; i++)
        assert_int_equal(submit(fx, pool, base + i, "rcpt@herold.test", m,
                                &err), 0);
    run_until(fx, base + 20);
    t0 = now_mono() - t0;
    for (int i = 0; i < 20; i++)
        assert_int_equal(fx->got.res[base + i].cls, SMTP_OK);
    smtp_pool_free(pool);
    free(m);
    return t0;
}

static void test_nagle_measure(void **state)
{
    struct fixture *fx = *state;
    double with_nagle, nodelay;

    sink_start(&fx->sink, NULL);
    send_batch(fx, false); /* warm up the sink */
    with_nagle = send_batch(fx, true);
    nodelay = send_batch(fx, false);
    printf("# nagle: 20 x 5 KB in one session: Nagle on %.1f ms "
           "(%.2f ms/msg), TCP_NODELAY %.1f ms (%.2f ms/msg)\n",
           with_nagle * 1e3, with_nagle * 1e3 / 20, nodelay * 1e3,
           nodelay * 1e3 / 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_message_rules),
        cmocka_unit_test_setup_teardown(test_config_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delivery_one_session, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_session_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_550_permanent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_450_transient_then_ok, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_421_greeting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_421_after_two, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drop_after_dot_in_doubt, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tarpit_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_self_signed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_expired, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_wrong_host, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_good_with_auth, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_starttls_not_offered, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_opportunistic_withholds_auth,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sign_hook, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nagle_measure, setup, teardown),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
