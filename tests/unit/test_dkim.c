/*
 * test_dkim - the DKIM signer, checked by an independent verifier.
 *
 * The group setup makes a fresh directory with mkdtemp and generates, with
 * the openssl command line, a 2048-bit RSA key (and a 512-bit one that
 * must be refused, and a P-256 key).  Signed messages are written to that directory and
 * verified by Debian's python3-dkim (dkim.verify) with a DNS function that
 * serves "v=DKIM1; k=rsa; p=<public key>" for
 * sel2026._domainkey.example-gemeinde.de, so nothing here trusts herold's
 * or libopendkim's own idea of a valid signature.  Tampering with the
 * body, the subject, or adding a second Subject must make the verifier
 * fail; refolding header whitespace must not (relaxed canonicalization).
 *
 * Also: the error table for bad domain, selector and key (a bad key fails
 * in dkim_signer_new), allocator failures, and eight threads signing with
 * one shared signer at once, every result verified.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include "channels/dkim.h"
#include "dispatcher/alloc.h"

#define DOMAIN "example-gemeinde.de"
#define SELECTOR "sel2026"
#define PYTHON "/usr/bin/python3"

static char tmpdir[] = "/tmp/herold-dkim-XXXXXX";
static char *key_pem;        /* the 2048-bit private key */
static char *key_pem_short;  /* a 512-bit private key, must be refused */
static char *pub_pem;        /* the public key, PEM; not a private key */
static char *key_pem_ec;     /* a P-256 key: not RSA */

/* The message: an RFC 2047 subject with umlauts (folded over two lines),
 * the bulk-sender headers, and a multipart/alternative body in
 * quoted-printable whose text part has a line starting with a dot (the
 * signer sees the message before dot-stuffing). */
static const char sample_msg[] =
    "From: =?UTF-8?Q?Stadt_M=C3=BCnchen?= <info@example-gemeinde.de>\r\n"
    "To: <buerger@example.org>\r\n"
    "Subject: =?UTF-8?Q?Abfuhrtermine_f=C3=BCr_die_Stra=C3=9Fe_am_Gr?=\r\n"
    " =?UTF-8?Q?=C3=BCnen_Weg_=E2=80=93_=C3=84nderung?=\r\n"
    "Date: Sun, 01 Mar 2026 07:00:02 +0100\r\n"
    "Message-ID: <abfuhr-0312.p3f9a1c2b@example-gemeinde.de>\r\n"
    "MIME-Version: 1.0\r\n"
    "List-Id: Abfuhrkalender <abfuhr.example-gemeinde.de>\r\n"
    "List-Unsubscribe: <https://example-gemeinde.de/u/3f9a1c2b>,\r\n"
    " <mailto:unsubscribe@example-gemeinde.de?subject=3f9a1c2b>\r\n"
    "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    "Precedence: bulk\r\n"
    "X-Herold-Job: abfuhr-0312\r\n"
    "Content-Type: multipart/alternative; boundary=\"=_herold_b1\"\r\n"
    "\r\n"
    "--=_herold_b1\r\n"
    "Content-Type: text/plain; charset=UTF-8\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "Gr=C3=BC=C3=9F Gott,\r\n"
    "die Restm=C3=BClltonne wird am Dienstag geleert.\r\n"
    ".Punkt am Zeilenanfang\r\n"
    "\r\n"
    "--=_herold_b1\r\n"
    "Content-Type: text/html; charset=UTF-8\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "<p>Gr=C3=BC=C3=9F Gott,</p><p>die Restm=C3=BClltonne wird am Dienstag =\r\n"
    "geleert.</p>\r\n"
    "\r\n"
    "--=_herold_b1--\r\n";

/* ---- helpers */

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf != NULL)
        buf[n] = '\0';
    fclose(f);
    return buf;
}

static void write_file(const char *path, const char *a, size_t alen,
                       const char *b, size_t blen)
{
    FILE *f = fopen(path, "wb");

    assert_non_null(f);
    assert_int_equal(fwrite(a, 1, alen, f), alen);
    if (blen > 0)
        assert_int_equal(fwrite(b, 1, blen, f), blen);
    assert_int_equal(fclose(f), 0);
}

static int run(const char *cmd)
{
    int st = system(cmd);

    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* verify_files - run python3-dkim over the signed files named in `files`
 * (space-separated, relative to tmpdir); 0 if every one verifies. */
static int verify_files(const char *files)
{
    char cmd[8192];

    snprintf(cmd, sizeof cmd, "cd %s && " PYTHON " verify.py pub.b64 %s",
             tmpdir, files);
    return run(cmd);
}

/* replace - a new copy of msg with the first `from` replaced by `to`. */
static char *replace(const char *msg, const char *from, const char *to)
{
    const char *at = strstr(msg, from);
    size_t n;
    char *out;

    assert_non_null(at);
    n = strlen(msg) - strlen(from) + strlen(to);
    out = malloc(n + 1);
    assert_non_null(out);
    memcpy(out, msg, (size_t)(at - msg));
    strcpy(out + (at - msg), to);
    strcat(out, at + strlen(from));
    return out;
}

/* unfold - a copy of a header field with CRLF+WSP folds removed. */
static char *unfold(const char *h)
{
    char *out = malloc(strlen(h) + 1), *o = out;

    assert_non_null(out);
    for (const char *p = h; *p; p++) {
        if (p[0] == '\r' && p[1] == '\n' && (p[2] == ' ' || p[2] == '\t')) {
            p += 1;
            continue;
        }
        *o++ = *p == '\t' ? ' ' : *p;
    }
    *o = '\0';
    return out;
}

/* tag - the value of DKIM tag `name` in unfolded header h, whitespace
 * removed, into buf. */
static const char *tag(const char *h, const char *name, char *buf, size_t size)
{
    char pat[16];
    const char *p;
    size_t n = 0;

    snprintf(pat, sizeof pat, " %s=", name);
    p = strstr(h, pat);
    if (p == NULL) {
        snprintf(pat, sizeof pat, ";%s=", name);
        p = strstr(h, pat);
    }
    assert_non_null(p);
    for (p += strlen(pat); *p && *p != ';' && *p != '\r' && n + 1 < size; p++)
        if (!isspace((unsigned char)*p))
            buf[n++] = *p;
    buf[n] = '\0';
    return buf;
}

/* ---- group setup: keys and the verifier script */

/* Exit 0: every file verifies; 1: one does not; 2: the script itself
 * failed (so a crash never passes for a refused signature). */
static const char verify_py[] =
    "import sys\n"
    "try:\n"
    "    import dkim\n"
    "    pub = open(sys.argv[1], 'rb').read().strip()\n"
    "    want = b'" SELECTOR "._domainkey." DOMAIN "'\n"
    "    def dns(name, timeout=5):\n"
    "        if name.rstrip(b'.') != want:\n"
    "            return None\n"
    "        return b'v=DKIM1; k=rsa; p=' + pub\n"
    "    bad = 0\n"
    "    for f in sys.argv[2:]:\n"
    "        if not dkim.verify(open(f, 'rb').read(), dnsfunc=dns):\n"
    "            bad += 1\n"
    "except Exception as e:\n"
    "    print('verify.py:', type(e).__name__, e, file=sys.stderr)\n"
    "    sys.exit(2)\n"
    "sys.exit(1 if bad else 0)\n";

static int setup(void **state)
{
    char cmd[1024], path[512];

    (void)state;
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(cmd, sizeof cmd,
             "cd %s && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 "
             "-out key.pem 2>/dev/null && "
             "openssl pkey -in key.pem -pubout -out pub.pem 2>/dev/null && "
             "openssl pkey -in key.pem -pubout -outform DER 2>/dev/null | base64 -w0 > pub.b64 && "
             "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:512 "
             "-out short.pem 2>/dev/null && "
             "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
             "-out ec.pem 2>/dev/null", tmpdir);
    if (run(cmd) != 0) {
        fprintf(stderr, "test_dkim: openssl key generation failed\n");
        return -1;
    }
    snprintf(path, sizeof path, "%s/verify.py", tmpdir);
    write_file(path, verify_py, strlen(verify_py), NULL, 0);
    snprintf(path, sizeof path, "%s/key.pem", tmpdir);
    key_pem = read_file(path);
    snprintf(path, sizeof path, "%s/short.pem", tmpdir);
    key_pem_short = read_file(path);
    snprintf(path, sizeof path, "%s/pub.pem", tmpdir);
    pub_pem = read_file(path);
    snprintf(path, sizeof path, "%s/ec.pem", tmpdir);
    key_pem_ec = read_file(path);
    return key_pem && key_pem_short && pub_pem && key_pem_ec ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[512];

    (void)state;
    free(key_pem);
    free(key_pem_short);
    free(pub_pem);
    free(key_pem_ec);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return run(cmd) == 0 ? 0 : -1;
}

/* ---- tests */

static void test_sign_verifies(void **state)
{
    struct herr err = {0};
    struct dkim_signer *s = dkim_signer_new(DOMAIN, SELECTOR, key_pem, &err);
    char *hdr = NULL, *u, buf[512];

    (void)state;
    assert_non_null(s);
    assert_int_equal(dkim_signer_sign(s, sample_msg, sizeof sample_msg - 1, &hdr, &err), 0);

    /* Form: one folded header field, CRLF only, ends in CRLF. */
    assert_non_null(hdr);
    assert_int_equal(strncmp(hdr, "DKIM-Signature: v=1;", 20), 0);
    assert_int_equal(strcmp(hdr + strlen(hdr) - 2, "\r\n"), 0);
    for (const char *p = hdr, *line = hdr; *p; p++) {
        if (*p == '\n') {
            assert_true(p > hdr && p[-1] == '\r');
            assert_true(p[1] == '\0' || p[1] == '\t' || p[1] == ' ');
            assert_true(p - line <= 80);
            line = p + 1;
        } else if (*p == '\r') {
            assert_int_equal(p[1], '\n');
        }
    }

    u = unfold(hdr);
    assert_string_equal(tag(u, "a", buf, sizeof buf), "rsa-sha256");
    assert_string_equal(tag(u, "c", buf, sizeof buf), "relaxed/relaxed");
    assert_string_equal(tag(u, "d", buf, sizeof buf), DOMAIN);
    assert_string_equal(tag(u, "s", buf, sizeof buf), SELECTOR);
    assert_null(strstr(u, " l="));
    tag(u, "h", buf, sizeof buf);
    {
        static const char *const want[] = {
            "from", "to", "subject", "date", "message-id", "mime-version",
            "content-type", "list-unsubscribe", "list-unsubscribe-post",
            "list-id", "precedence"
        };
        char low[512];
        size_t i;

        for (i = 0; buf[i] && i + 1 < sizeof low; i++)
            low[i] = (char)tolower((unsigned char)buf[i]);
        low[i] = '\0';
        for (i = 0; i < sizeof want / sizeof want[0]; i++) {
            char needle[64];

            snprintf(needle, sizeof needle, ":%s:", want[i]);
            char padded[560];
            snprintf(padded, sizeof padded, ":%s:", low);
            if (strstr(padded, needle) == NULL)
                fail_msg("h=%s lacks %s", low, want[i]);
        }
        /* Only fields the message has; X-Herold-Job is not signed. */
        assert_null(strstr(low, "x-herold-job"));
        assert_null(strstr(low, "sender"));
        assert_null(strstr(low, "cc"));
    }
    free(u);

    write_file(strcat(strcpy(buf, tmpdir), "/good.eml"), hdr, strlen(hdr),
               sample_msg, sizeof sample_msg - 1);
    herold_free(hdr);
    assert_int_equal(verify_files("good.eml"), 0);
    dkim_signer_free(s);
}

static void test_tamper_fails(void **state)
{
    struct herr err = {0};
    struct dkim_signer *s = dkim_signer_new(DOMAIN, SELECTOR, key_pem, &err);
    char *hdr = NULL, path[512];
    static const struct {
        const char *label, *from, *to;
        int want_rc;     /* 0: still verifies, 1: verifier must refuse */
    } cases[] = {
        { "body word", "Dienstag geleert.\r\n", "Mittwoch geleert.\r\n", 1 },
        { "subject", "Abfuhrtermine_f", "Abfuhrtermin__f", 1 },
        { "added Subject", "Date: ", "Subject: Gewinnspiel\r\nDate: ", 1 },
        { "unsubscribe link", "u/3f9a1c2b", "u/00000000", 1 },
        { "line added to body", "--=_herold_b1--\r\n", "--=_herold_b1--\r\nPS\r\n", 1 },
        { "header refolded (relaxed)", "Precedence: bulk", "Precedence:   bulk ", 0 },
        { "trailing blank lines (relaxed)", "--=_herold_b1--\r\n",
          "--=_herold_b1--\r\n\r\n\r\n", 0 },
    };

    (void)state;
    assert_non_null(s);
    assert_int_equal(dkim_signer_sign(s, sample_msg, sizeof sample_msg - 1, &hdr, &err), 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *m = replace(sample_msg, cases[i].from, cases[i].to);
        int rc;

        snprintf(path, sizeof path, "%s/tampered%zu.eml", tmpdir, i);
        write_file(path, hdr, strlen(hdr), m, strlen(m));
        snprintf(path, sizeof path, "tampered%zu.eml", i);
        rc = verify_files(path);
        if (rc != cases[i].want_rc)
            fail_msg("%s: verifier exit %d, want %d", cases[i].label, rc,
                     cases[i].want_rc);
        free(m);
    }
    herold_free(hdr);
    dkim_signer_free(s);
}

static void test_bad_config(void **state)
{
    struct herr err;
    char corrupt[4096], truncated[4096];
    static const char *const bad_pem =
        "-----BEGIN PRIVATE KEY-----\n"
        "bm90IGEga2V5IGF0IGFsbCwganVzdCBzb21lIGJ5dGVzIGluIGJhc2U2NA==\n"
        "-----END PRIVATE KEY-----\n";
    struct {
        const char *label, *domain, *selector, *key;
        const char *want_path, *want_msg;
    } cases[] = {
        { "empty domain", "", SELECTOR, NULL,
          DKIM_CONF ".domain", "expected the signing domain, got an empty string" },
        { "NULL domain", NULL, SELECTOR, NULL,
          DKIM_CONF ".domain", "expected the signing domain, got an empty string" },
        { "one label", "localhost", SELECTOR, NULL,
          DKIM_CONF ".domain", "expected a domain with at least two labels" },
        { "space in domain", "example gemeinde.de", SELECTOR, NULL,
          DKIM_CONF ".domain", "expected a domain name of dot-separated labels" },
        { "empty label", "example..de", SELECTOR, NULL,
          DKIM_CONF ".domain", "expected a domain name of dot-separated labels" },
        { "trailing dot", "example.de.", SELECTOR, NULL,
          DKIM_CONF ".domain", "expected a domain name of dot-separated labels" },
        { "leading hyphen", "-example.de", SELECTOR, NULL,
          DKIM_CONF ".domain", "expected a domain name of dot-separated labels" },
        { "umlaut domain", "m\xc3\xbcnchen.de", SELECTOR, NULL,
          DKIM_CONF ".domain", "expected a domain name of dot-separated labels" },
        { "empty selector", DOMAIN, "", NULL,
          DKIM_CONF ".selector", "expected a selector, got an empty string" },
        { "selector with dot", DOMAIN, "sel.2026", NULL,
          DKIM_CONF ".selector", "expected one DNS label" },
        { "selector with space", DOMAIN, "sel 2026", NULL,
          DKIM_CONF ".selector", "expected one DNS label" },
        { "selector with CRLF", DOMAIN, "sel\r\nBcc: x", NULL,
          DKIM_CONF ".selector", "expected one DNS label" },
        { "empty key", DOMAIN, SELECTOR, "",
          DKIM_CONF ".key", "expected a PEM private key, got an empty string" },
        { "not PEM", DOMAIN, SELECTOR, "/etc/herold/dkim.pem",
          DKIM_CONF ".key", "expected a PEM private key (-----BEGIN" },
        { "public key", DOMAIN, SELECTOR, pub_pem,
          DKIM_CONF ".key", "expected a PEM private key (-----BEGIN" },
        { "garbage PEM", DOMAIN, SELECTOR, bad_pem,
          DKIM_CONF ".key", "cannot read the PEM private key" },
        { "damaged key", DOMAIN, SELECTOR, corrupt,
          DKIM_CONF ".key", "the RSA private key fails its consistency check" },
        { "truncated PEM", DOMAIN, SELECTOR, truncated,
          DKIM_CONF ".key", "cannot read the PEM private key" },
        { "512-bit key", DOMAIN, SELECTOR, key_pem_short,
          DKIM_CONF ".key", "expected an RSA key of at least 1024 bits, got 512" },
        { "EC key", DOMAIN, SELECTOR, key_pem_ec,
          DKIM_CONF ".key", "expected an RSA private key" },
    };
    char *p;

    (void)state;
    /* A real key with a few base64 characters changed in the middle. */
    snprintf(corrupt, sizeof corrupt, "%s", key_pem);
    p = strchr(corrupt, '\n') + 200;
    memcpy(p, "AAAAAAAAAAAAAAAA", 16);
    /* The same key cut off in the middle, END line included. */
    snprintf(truncated, sizeof truncated, "%.*s\n-----END PRIVATE KEY-----\n",
             (int)(strlen(key_pem) / 2), key_pem);

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *key = cases[i].key ? cases[i].key : key_pem;
        struct dkim_signer *s;

        herr_clear(&err);
        s = dkim_signer_new(cases[i].domain, cases[i].selector, key, &err);
        if (s != NULL)
            fail_msg("%s: accepted", cases[i].label);
        if (err.kind != HERR_INPUT || strcmp(err.path, cases[i].want_path) != 0 ||
            strncmp(err.msg, cases[i].want_msg, strlen(cases[i].want_msg)) != 0)
            fail_msg("%s: got kind %d %s: %s", cases[i].label, err.kind,
                     err.path, err.msg);
        /* Never the key in the message. */
        assert_null(strstr(err.msg, "MII"));
    }
}

static void test_sign_errors(void **state)
{
    struct herr err = {0};
    struct dkim_signer *s = dkim_signer_new(DOMAIN, SELECTOR, key_pem, &err);
    static const char no_from[] =
        "To: <buerger@example.org>\r\nSubject: geheim\r\n\r\nText\r\n";
    char *hdr = (char *)"untouched";

    (void)state;
    assert_non_null(s);
    assert_int_equal(dkim_signer_sign(s, no_from, sizeof no_from - 1, &hdr, &err), -1);
    assert_null(hdr);
    assert_int_equal(err.kind, HERR_INPUT);
    assert_non_null(strstr(err.msg, "DKIM: "));
    assert_null(strstr(err.msg, "geheim"));
    assert_null(strstr(err.msg, "buerger"));

    herr_clear(&err);
    assert_int_equal(dkim_signer_sign(s, sample_msg, 0, &hdr, &err), -1);
    assert_null(hdr);
    assert_int_equal(err.kind, HERR_INPUT);
    assert_string_equal(err.msg, "DKIM: empty message");

    herr_clear(&err);
    assert_int_equal(dkim_signer_sign(s, sample_msg, sizeof sample_msg - 3, &hdr, &err), -1);
    assert_null(hdr);
    assert_int_equal(err.kind, HERR_INPUT);
    assert_string_equal(err.msg, "DKIM: message does not end in CRLF");
    dkim_signer_free(s);
    dkim_signer_free(NULL);
}

static void test_alloc_failures(void **state)
{
    struct herr err;
    struct dkim_signer *s = NULL;
    char *hdr;
    long n;

    (void)state;
    for (n = 0; n < 100; n++) {
        herr_clear(&err);
        herold_alloc_fail_after = n;
        s = dkim_signer_new(DOMAIN, SELECTOR, key_pem, &err);
        herold_alloc_fail_after = -1;
        if (s != NULL)
            break;
        assert_int_equal(err.kind, HERR_RESOURCE);
        assert_string_equal(err.msg, "out of memory");
    }
    assert_non_null(s);
    assert_true(n > 0);

    herr_clear(&err);
    herold_alloc_fail_after = 0;
    assert_int_equal(dkim_signer_sign(s, sample_msg, sizeof sample_msg - 1, &hdr, &err), -1);
    herold_alloc_fail_after = -1;
    assert_null(hdr);
    assert_int_equal(err.kind, HERR_RESOURCE);
    dkim_signer_free(s);
}

/* ---- threads: one signer, many signers at once */

#define NTHREADS 8
#define PER_THREAD 12

struct worker {
    struct dkim_signer *s;
    int id, failures;
    char *msg;
    size_t len;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    for (int i = 0; i < PER_THREAD; i++) {
        struct herr err = {0};
        char *hdr = NULL, path[512];
        FILE *f;

        if (dkim_signer_sign(w->s, w->msg, w->len, &hdr, &err) != 0) {
            w->failures++;
            continue;
        }
        snprintf(path, sizeof path, "%s/t%d-%d.eml", tmpdir, w->id, i);
        f = fopen(path, "wb");
        if (f == NULL || fwrite(hdr, 1, strlen(hdr), f) != strlen(hdr) ||
            fwrite(w->msg, 1, w->len, f) != w->len)
            w->failures++;
        if (f != NULL && fclose(f) != 0)
            w->failures++;
        herold_free(hdr);
    }
    return NULL;
}

static void test_threads(void **state)
{
    struct herr err = {0};
    struct dkim_signer *s = dkim_signer_new(DOMAIN, SELECTOR, key_pem, &err);
    struct worker w[NTHREADS];
    pthread_t th[NTHREADS];
    char files[8192] = "", name[32];

    (void)state;
    assert_non_null(s);
    for (int t = 0; t < NTHREADS; t++) {
        char to[64];

        /* A different recipient (and so body hash input) per thread. */
        snprintf(to, sizeof to, "To: <buerger%d@example.org>", t);
        w[t] = (struct worker){ .s = s, .id = t };
        w[t].msg = replace(sample_msg, "To: <buerger@example.org>", to);
        w[t].len = strlen(w[t].msg);
        assert_int_equal(pthread_create(&th[t], NULL, worker_main, &w[t]), 0);
    }
    for (int t = 0; t < NTHREADS; t++) {
        assert_int_equal(pthread_join(th[t], NULL), 0);
        assert_int_equal(w[t].failures, 0);
        free(w[t].msg);
        for (int i = 0; i < PER_THREAD; i++) {
            snprintf(name, sizeof name, " t%d-%d.eml", t, i);
            strcat(files, name);
        }
    }
    dkim_signer_free(s);
    assert_int_equal(verify_files(files), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_verifies),
        cmocka_unit_test(test_tamper_fails),
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_sign_errors),
        cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_threads),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
