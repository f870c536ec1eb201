/*
 * test_csvimport - pass 1 of the CSV import, without Redis: the line
 * reader (byte-order mark, CR LF, blank lines, no final line end, a line
 * too long), the header rules, each kind of invalid row with the exact
 * line and column reported, duplicate ids, the cap on the report, and the
 * static helpers (UTF-8 check, the column of a field path, the topics and
 * consent cells).
 *
 * The import runs as dry runs (csvimport_run with dry_run, no Redis
 * connection: pass 2 never starts), with stdout and stderr captured.
 * Bad values carry the canary "Zq9Canary", and no output may contain it:
 * reports name lines and columns, never values.
 *
 * csvimport.c is CLI-only (not among the objects unit tests link), and
 * its helpers are static, so it is #included here (STYLE 8).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "dispatcher/csvimport.c"

#define CANARY "Zq9Canary"

static struct herold_config *test_cfg;

struct capture {
    int rc;
    char *out, *err;
};

/* slurp - the whole of f as a string (f rewound first). */
static char *slurp(FILE *f)
{
    long n;
    char *s;

    fflush(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    s = calloc(1, (size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    return s;
}

/* run_file - csvimport_run on path with stdout and stderr captured. */
static struct capture run_file(const char *path, bool skip, bool dry)
{
    struct capture c;
    FILE *fo = tmpfile(), *fe = tmpfile();
    int o, e;

    assert_true(fo != NULL && fe != NULL);
    fflush(stdout);
    fflush(stderr);
    o = dup(STDOUT_FILENO);
    e = dup(STDERR_FILENO);
    dup2(fileno(fo), STDOUT_FILENO);
    dup2(fileno(fe), STDERR_FILENO);
    c.rc = csvimport_run(test_cfg, NULL, path, skip, dry);
    fflush(stdout);
    fflush(stderr);
    dup2(o, STDOUT_FILENO);
    dup2(e, STDERR_FILENO);
    close(o);
    close(e);
    c.out = slurp(fo);
    c.err = slurp(fe);
    fclose(fo);
    fclose(fe);
    return c;
}

/* run_import - csv (len bytes) through csvimport_run as a file. */
static struct capture run_import(const char *csv, size_t len, bool skip, bool dry)
{
    char path[] = "/tmp/test_csvimport.XXXXXX";
    int fd = mkstemp(path);
    struct capture c;

    assert_true(fd >= 0);
    assert_int_equal(write(fd, csv, len), (ssize_t)len);
    close(fd);
    c = run_file(path, skip, dry);
    unlink(path);
    return c;
}

static void capture_free(struct capture *c)
{
    free(c->out);
    free(c->err);
}

/* reported_lines - the line numbers of "herold: line N" in err, as
 * "N,N,..." into buf. */
static const char *reported_lines(const char *err, char *buf, size_t size)
{
    const char *p = err;
    size_t k = 0;

    buf[0] = '\0';
    while ((p = strstr(p, "herold: line ")) != NULL) {
        unsigned long n = strtoul(p + 13, NULL, 10);

        k += (size_t)snprintf(buf + k, size - k, "%s%lu", k ? "," : "", n);
        p += 13;
    }
    return buf;
}

#define H "id,email,phone,topics,consent\n"

struct import_case {
    const char *label;
    const char *csv;
    int want_rc;
    const char *want_lines;     /* reported lines, in order */
    const char *want_err;       /* substring of stderr, or NULL */
    const char *want_out;       /* substring of stdout, or NULL */
};

static const struct import_case import_cases[] = {
    { "valid rows", H "a-1,a1@example.org,+4915112345678,abfall:email+sms,"
                      "email:letter:2026-01;sms:counter:2026-01\n"
                      "a-2,,,,\n",
      0, "", NULL, "2 rows: 2 valid, 0 invalid (dry run, nothing written)" },
    { "BOM, CR LF, blank lines, no final line end",
      "\xef\xbb\xbf" "id,email\r\n\r\na-1,a1@example.org\r\n   \r\na-2,bad." CANARY "\r\na-3,",
      1, "5", "line 5, column email: ", "3 rows: 2 valid, 1 invalid" },
    { "header case and spaces", " ID , Email ,TOPICS\nb-1, b1@example.org , abfall : email \n",
      0, "", NULL, "1 rows: 1 valid" },
    { "quoted cells", H "\"c-1\",\"c1@example.org\",\"\",\"abfall:email;kultur:email\",\"\"\n"
                        "c-2,\"\",,\"\",\"\"\n",
      0, "", NULL, "2 rows: 2 valid" },
    { "wrong column count", H "d-1,d1@example.org\nd-2,,,,,\nd-3,,,,\n",
      1, "2,3", "line 2: 2 cells, but the header has 5 columns", NULL },
    { "quote inside an unquoted cell", H "e-1,e1" CANARY "\"@example.org,,,\n",
      1, "2", "line 2: bad quoting", NULL },
    { "text after a closing quote", H "e-2,\"e2" CANARY "@example.org\"x,,,\n",
      1, "2", "line 2: bad quoting", NULL },
    { "unclosed quote spoils one line only", H "e-3,\"e3" CANARY "@example.org,,,\n"
                                               "e-4,e4@example.org,,,\n",
      1, "2", "not closed on its line", "2 rows: 1 valid, 1 invalid" },
    { "control character", H "f-1,f1" CANARY "\t@example.org,,,\n", 1, "2",
      "line 2, column email: control character", NULL },
    { "CR inside a line", H "f-2,f2@example.org,,abfall:email\r,x\n", 1, "2",
      "column topics: control character", NULL },
    { "not UTF-8", H "f-3,,,abfall:email,\nf-4,f4\xff" CANARY "@example.org,,,\n", 1, "3",
      "line 3, column email: not UTF-8", NULL },
    { "bad e-mail", H "g-1,g1." CANARY "@localhost,,,\n", 1, "2", "line 2, column email: ",
      NULL },
    { "premium-rate phone", H "g-2,,+49 900 123,,\ng-3,,+4990012345678,,\n", 1, "2,3",
      "line 3, column phone: ", NULL },
    { "unknown channel", H "g-4,,,abfall:email+fax,\n", 1, "2",
      "line 2, column topics, item 1 (channels): ", NULL },
    { "second topic bad", H "g-5,,,abfall:email;Kultur!:email,\n", 1, "2",
      "line 2, column topics, item 2", NULL },
    { "topic without channels", H "g-6,,,abfall,\n", 1, "2",
      "column topics, item 1: expected topic:channels", NULL },
    { "topic with empty channels", H "g-7,,,abfall:,\n", 1, "2", "no channel after", NULL },
    { "consent with two parts", H "g-8,g8@example.org,,,email:letter\n", 1, "2",
      "column consent, item 1: expected channel:method:text_version", NULL },
    { "consent method unknown", H "g-9,g9@example.org,,,email:fax:2026-01\n", 1, "2",
      "column consent, item 1 (method)", NULL },
    { "missing id", H ",h1@example.org,,,\n", 1, "2", "line 2, column id: missing", NULL },
    { "bad id", H "h-" CANARY "@x,,,,\n", 1, "2", "line 2, column id: ", NULL },
    { "duplicate ids: every occurrence", H "i-1,,,,\ni-2,,,,\ni-1,,,,\ni-1,,,,\n",
      1, "2,4,5", "line 2, column id: the same id as on line 4", "4 rows: 1 valid, 3 invalid" },
    { "duplicate of an invalid row", H "i-3,bad" CANARY ",,,\ni-3,,,,\n",
      1, "2,3", "line 3, column id: the same id as on line 2", NULL },
    { "consent_at without consent", "id,consent_at\nj-1,2026-01-01T00:00:00Z\n", 1, "2",
      "line 2, column consent_at: given, but the row has no consent", NULL },
    { "confirmed_at without import", "id,email,consent,confirmed_at\n"
                                     "j-2,j2@example.org,email:letter:2026-01,2026-01-01T00:00:00Z\n",
      1, "2", "column confirmed_at: only for a consent with method import", NULL },
    { "import with its times", "id,email,consent,consent_at,confirmed_at\n"
                               "j-3,j3@example.org,email:import:2019-03,2019-03-02T08:00:00Z,"
                               "2019-03-02T08:05:00Z\n",
      0, "", NULL, "1 rows: 1 valid" },
    { "bad consent_at", "id,email,consent,consent_at\nj-4,j4@example.org,email:letter:2026-01,"
                        "yesterday\n",
      1, "2", "line 2, column consent_at: ", NULL },
    { "header: unknown column", "id,colour\nk-1,red\n", 1, "1", "unknown column \"colour\"",
      NULL },
    { "header: missing", "k-1,k1." CANARY "@example.org\n", 1, "1", "is the header row missing?",
      NULL },
    { "header: twice", "id,email,Email\n", 1, "1", "\"email\" named twice", NULL },
    { "header: no id", "email\nk2@example.org\n", 1, "1", "no column \"id\"", NULL },
    { "header: empty name", "id,,email\n", 1, "1", "column 2 has no name", NULL },
    { "header: semicolons", "id;email\nk-3;k3@example.org\n", 1, "1", "separated by ';'",
      NULL },
    { "header: blank lines first", "\n\nid\nk-4\n", 0, "", NULL, "1 rows: 1 valid" },
    { "empty file", "", 1, "", "the file is empty", NULL },
    { "header only", "id,email\n", 0, "", NULL, "0 rows: 0 valid, 0 invalid" },
};

static void test_import_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof import_cases / sizeof import_cases[0]; i++) {
        const struct import_case *tc = &import_cases[i];
        struct capture c = run_import(tc->csv, strlen(tc->csv), false, true);
        char lines[256];

        reported_lines(c.err, lines, sizeof lines);
        if (c.rc != tc->want_rc || strcmp(lines, tc->want_lines) != 0 ||
            (tc->want_err && strstr(c.err, tc->want_err) == NULL) ||
            (tc->want_out && strstr(c.out, tc->want_out) == NULL) ||
            strstr(c.err, CANARY) != NULL || strstr(c.out, CANARY) != NULL)
            fail_msg("%s: rc %d (want %d), lines \"%s\" (want \"%s\")\nstdout: %s\nstderr: %s",
                     tc->label, c.rc, tc->want_rc, lines, tc->want_lines, c.out, c.err);
        capture_free(&c);
    }
}

/* Invalid rows without --dry-run: nothing is written (no connection is
 * even touched), the report says so. */
static void test_invalid_imports_nothing(void **state)
{
    static const char csv[] = H "a-1,a1@example.org,,,\na-2,bad,,,\n";
    struct capture c;

    (void)state;
    c = run_import(csv, sizeof csv - 1, false, false);
    assert_int_equal(c.rc, 1);
    assert_non_null(strstr(c.err, "herold: line 3, column email: "));
    assert_non_null(strstr(c.err, "1 of 2 rows invalid; nothing imported"));
    assert_string_equal(c.out, "");
    capture_free(&c);
}

static void test_missing_file(void **state)
{
    struct capture c;

    (void)state;
    c = run_file("/nonexistent/citizens.csv", false, true);
    assert_int_equal(c.rc, 2);
    assert_non_null(strstr(c.err, "No such file"));
    capture_free(&c);
    c = run_file("/tmp", false, true);
    assert_int_equal(c.rc, 2);
    assert_non_null(strstr(c.err, "not a regular file"));
    capture_free(&c);
}

/* A line of exactly CSVIMPORT_LINE_MAX bytes is read whole (and judged on
 * its content); one byte more is refused as too long. */
static void test_line_limit(void **state)
{
    size_t n = strlen("id,topics\n") + 2 * (CSVIMPORT_LINE_MAX + 1) + 64;
    char *csv = malloc(n), lines[64];
    size_t k;
    struct capture c;

    (void)state;
    assert_non_null(csv);
    for (int extra = 0; extra <= 1; extra++) {
        k = (size_t)sprintf(csv, "id,topics\n");
        for (int row = 0; row < 2; row++) {
            size_t start = k;

            k += (size_t)sprintf(csv + k, "l-%d%d,", extra, row);
            while (k - start < (size_t)CSVIMPORT_LINE_MAX + (size_t)extra * (size_t)row)
                csv[k++] = 'a';
            csv[k++] = '\n';
        }
        c = run_import(csv, k, false, true);
        reported_lines(c.err, lines, sizeof lines);
        if (extra == 0) {
            /* both lines fit: the cell is one (bad) topic item, not a long line */
            assert_string_equal(lines, "2,3");
            assert_null(strstr(c.err, "longer than"));
        } else {
            assert_string_equal(lines, "2,3");
            assert_non_null(strstr(c.err, "line 3: longer than 16384 bytes"));
        }
        capture_free(&c);
    }
    free(csv);
}

/* The first 100 invalid rows are printed, then how many more. */
static void test_report_cap(void **state)
{
    size_t n = 16 + 150 * 32;
    char *csv = malloc(n), lines[1024], want[1024];
    size_t k = (size_t)sprintf(csv, "id,email\n"), w = 0;
    struct capture c;

    (void)state;
    for (int i = 0; i < 150; i++)
        k += (size_t)sprintf(csv + k, "m-%d,bad%d\n", i, i);
    c = run_import(csv, k, true, true);
    reported_lines(c.err, lines, sizeof lines);
    for (int i = 0; i < CSVIMPORT_REPORT_MAX; i++)
        w += (size_t)snprintf(want + w, sizeof want - w, "%s%d", i ? "," : "", i + 2);
    assert_string_equal(lines, want);
    assert_non_null(strstr(c.err, "herold: ... and 50 more invalid rows\n"));
    assert_non_null(strstr(c.out, "150 rows: 0 valid, 150 invalid"));
    capture_free(&c);
    free(csv);
}

/* A duplicate found late reports an earlier line: with the report full,
 * it replaces the highest line printed. */
static void test_report_cap_keeps_lowest_lines(void **state)
{
    size_t n = 32 + 120 * 32;
    char *csv = malloc(n), lines[1024];
    size_t k = (size_t)sprintf(csv, "id,email\nn-dup,\n");
    struct capture c;

    (void)state;
    for (int i = 0; i < 110; i++)
        k += (size_t)sprintf(csv + k, "n-%d,bad\n", i);
    k += (size_t)sprintf(csv + k, "n-dup,\n");
    c = run_import(csv, k, true, true);
    reported_lines(c.err, lines, sizeof lines);
    assert_true(strncmp(lines, "2,3,4,", 6) == 0);
    assert_non_null(strstr(c.err, "line 2, column id: the same id as on line 113"));
    assert_non_null(strstr(c.err, "and 12 more invalid rows"));
    capture_free(&c);
    free(csv);
}

/* Many ids: the fingerprint table grows and finds a duplicate at the end. */
static void test_many_ids(void **state)
{
    size_t n = 16 + 20001 * 16;
    char *csv = malloc(n);
    size_t k = (size_t)sprintf(csv, "id\n");
    struct capture c;

    (void)state;
    for (int i = 0; i < 20000; i++)
        k += (size_t)sprintf(csv + k, "p-%d\n", i);
    c = run_import(csv, k, false, true);
    assert_int_equal(c.rc, 0);
    assert_non_null(strstr(c.out, "20000 rows: 20000 valid, 0 invalid"));
    capture_free(&c);
    k += (size_t)sprintf(csv + k, "p-7777\n");
    c = run_import(csv, k, false, true);
    assert_int_equal(c.rc, 1);
    assert_non_null(strstr(c.err, "line 7779, column id: the same id as on line 20002"));
    assert_non_null(strstr(c.err, "line 20002, column id: the same id as on line 7779"));
    capture_free(&c);
    free(csv);
}

static void test_text_ok(void **state)
{
    static const struct {
        const char *s;
        bool ok;
    } cases[] = {
        { "abc", true }, { "Stra\xc3\x9f" "e", true }, { "\xf0\x9f\x9a\xae", true },
        { "\xe2\x82\xac", true }, { "a\tb", false }, { "\x7f", false },
        { "\xc2\x85", false },          /* C1 control */
        { "\xff", false }, { "\xc3", false }, { "\xc0\xaf", false },  /* overlong */
        { "\xe0\x80\xaf", false }, { "\xed\xa0\x80", false },        /* surrogate */
        { "\xf4\x90\x80\x80", false },  /* beyond U+10FFFF */
        { "\xe2\x82", false },
    };
    const char *why;

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (csvimport_text_ok((const unsigned char *)cases[i].s, strlen(cases[i].s), &why) !=
            cases[i].ok)
            fail_msg("case %zu: want %s", i, cases[i].ok ? "ok" : "refused");
    assert_false(csvimport_text_ok((const unsigned char *)"a\0b", 3, &why));
}

static void test_where(void **state)
{
    static const char *const cases[][2] = {
        { "email", "column email" },
        { "id", "column id" },
        { "topics", "column topics" },
        { "topics[0]", "column topics, item 1" },
        { "topics[2].channels", "column topics, item 3 (channels)" },
        { "consents[1].method", "column consent, item 2 (method)" },
        { "consents[0].given_at", "column consent_at" },
        { "consents[3].confirmed_at", "column confirmed_at" },
        { "consent_at", "column consent_at" },
        { "push", "field push" },
        { "", "" },
    };
    char out[96];

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        csvimport_where(cases[i][0], out, sizeof out);
        assert_string_equal(out, cases[i][1]);
    }
}

static void test_cells(void **state)
{
    char topics[] = " abfall : email + sms ;; kultur:webhook; ";
    char consents[] = "email:letter:2026-01; sms : import : v:2 ";
    struct citizen_in in;
    struct herr err;

    (void)state;
    memset(&in, 0, sizeof in);
    assert_int_equal(csvimport_topics(topics, &in, &err), 0);
    assert_int_equal(in.ntopics, 2);
    assert_string_equal(in.topics[0].topic, "abfall");
    assert_string_equal(in.topics[0].channels, "email,sms");
    assert_string_equal(in.topics[1].topic, "kultur");
    assert_string_equal(in.topics[1].channels, "webhook");
    assert_int_equal(csvimport_consents(consents, "2019-01-01T00:00:00Z", "2019-01-02T00:00:00Z",
                                        &in, &err), 0);
    assert_int_equal(in.nconsents, 2);
    assert_string_equal(in.consents[0].method, "letter");
    assert_null(in.consents[0].confirmed_at);
    assert_string_equal(in.consents[1].channel, "sms");
    assert_string_equal(in.consents[1].method, "import");
    assert_string_equal(in.consents[1].text_version, "v:2");
    assert_string_equal(in.consents[1].given_at, "2019-01-01T00:00:00Z");
    assert_string_equal(in.consents[1].confirmed_at, "2019-01-02T00:00:00Z");
}

static void test_too_many_topics(void **state)
{
    char cell[CITIZEN_MAX_TOPICS * 16 + 32];
    size_t k = 0;
    struct citizen_in in;
    struct herr err;

    (void)state;
    for (int i = 0; i <= CITIZEN_MAX_TOPICS; i++)
        k += (size_t)sprintf(cell + k, "t%d:email;", i);
    memset(&in, 0, sizeof in);
    assert_int_equal(csvimport_topics(cell, &in, &err), -1);
    assert_string_equal(err.path, "topics");
    assert_string_equal(err.msg, "more than 64 topics");
}

static int setup(void **state)
{
    (void)state;
    test_cfg = config_defaults();
    return test_cfg == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    config_free(test_cfg);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_import_table),
        cmocka_unit_test(test_invalid_imports_nothing),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_line_limit),
        cmocka_unit_test(test_report_cap),
        cmocka_unit_test(test_report_cap_keeps_lowest_lines),
        cmocka_unit_test(test_many_ids),
        cmocka_unit_test(test_text_ok),
        cmocka_unit_test(test_where),
        cmocka_unit_test(test_cells),
        cmocka_unit_test(test_too_many_topics),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
