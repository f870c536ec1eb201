/*
 * test_msgset - the message set: loading (with file, line and column on
 * errors), language fallback, derivation of missing parts, channel limits
 * with their policies, required variables, escaping per part, and the
 * shipped default set rendering for every template, language and part.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "templates/limits.h"
#include "templates/msgset.h"

static char tmpdir[256];

static const struct msgset_opts opts = {
    .default_lang = "de",
    .sms_max_segments = 2,
    .push_title_max = 50,
    .push_body_max = 180,
    .max_subject_chars = 998,
    .max_partial_depth = 8,
    .max_output = 65536,
};

/* put - write text to tmpdir/rel, creating folders. */
static void put(const char *rel, const char *text)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", tmpdir, rel);
    for (char *p = path + strlen(tmpdir) + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0700);
            *p = '/';
        }
    }
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void rm_tree(void)
{
    char cmd[300];

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fail_msg("cannot remove %s", tmpdir);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/herold-msgset-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    rm_tree();
    return 0;
}

/* a small valid set: t1 in de and en, a partial, and t2 with push.body */
static void put_valid_set(void)
{
    put("t1/template.json", "{\"description\": \"Test\", \"required\": [\"name\"],"
                            " \"over_limit\": {\"sms\": \"reject\"}}");
    put("t1/example.json", "{\"name\": \"Anna\"}");
    put("t1/de/email.subject", "Hallo {{name}}\n");
    put("t1/de/email.txt", "Text {{name}}\n{{> fuss}}\n");
    put("t1/de/email.html", "<p>{{name}}</p>");
    put("t1/en/email.subject", "Hello {{name}}");
    put("t1/en/email.txt", "Text {{name}}");
    put("t1/de/sms.txt", "{{sms}}");
    put("_partials/de/fuss.mustache", "Gruss");
    put("t2/template.json", "{}");
    put("t2/de/email.subject", "Betreff");
    put("t2/de/email.txt", "Text");
    put("t2/de/push.body", "Kurz {{x}}");
}

static struct msgset *load_ok(void)
{
    struct tmpl_error te;
    struct msgset *s = msgset_load(tmpdir, &opts, &te);

    if (s == NULL)
        fail_msg("load failed: %s:%d:%d: %s", te.name, te.line, te.col, te.msg);
    return s;
}

static void test_render_and_derive(void **state)
{
    struct msgset *s;
    struct msgset_result r;
    struct herr err;
    const char *langs[3] = {"de", NULL, NULL};
    json_t *data = json_pack("{s:s,s:s}", "name", "<b>Anna</b>", "sms", "Kurz");

    (void)state;
    put_valid_set();
    s = load_ok();
    assert_int_equal(msgset_count(s), 2);
    assert_string_equal(msgset_name(s, 0), "t1");
    assert_int_equal(msgset_render(s, "t1", langs, data, &r, &err), 0);
    assert_string_equal(r.lang, "de");
    assert_string_equal(r.parts[JOB_PART_EMAIL_SUBJECT], "Hallo <b>Anna</b>");
    assert_string_equal(r.parts[JOB_PART_EMAIL_TXT], "Text <b>Anna</b>\nGruss");
    /* HTML escaping only where the output is HTML */
    assert_string_equal(r.parts[JOB_PART_EMAIL_HTML], "<p>&lt;b&gt;Anna&lt;/b&gt;</p>");
    /* derived: push.title <- subject; push.body <- sms; social <- sms */
    assert_string_equal(r.parts[JOB_PART_PUSH_TITLE], "Hallo <b>Anna</b>");
    assert_true(r.derived[JOB_PART_PUSH_TITLE]);
    assert_string_equal(r.parts[JOB_PART_PUSH_BODY], "Kurz");
    assert_string_equal(r.parts[JOB_PART_SOCIAL], "Kurz");
    assert_false(r.derived[JOB_PART_SMS]);
    msgset_result_fini(&r);

    /* t2: sms <- push.body, push.body stays; social <- push.body */
    json_object_set_new(data, "x", json_string("eins"));
    assert_int_equal(msgset_render(s, "t2", langs, data, &r, &err), 0);
    assert_string_equal(r.parts[JOB_PART_SMS], "Kurz eins");
    assert_true(r.derived[JOB_PART_SMS]);
    assert_string_equal(r.parts[JOB_PART_SOCIAL], "Kurz eins");
    assert_null(r.parts[JOB_PART_EMAIL_HTML]);
    msgset_result_fini(&r);
    json_decref(data);
    msgset_free(s);
}

static void test_language_fallback(void **state)
{
    struct msgset *s;
    struct msgset_result r;
    struct herr err;
    json_t *data = json_pack("{s:s}", "name", "A");
    const char *en[3] = {"en", NULL, NULL};
    const char *fr[3] = {"fr", NULL, NULL};
    const char *citizen[3] = {"fr", "en", NULL};

    (void)state;
    put_valid_set();
    s = load_ok();
    assert_int_equal(msgset_render(s, "t1", en, data, &r, &err), 0);
    assert_string_equal(r.lang, "en");
    assert_string_equal(r.parts[JOB_PART_EMAIL_SUBJECT], "Hello A");
    msgset_result_fini(&r);
    assert_int_equal(msgset_render(s, "t1", fr, data, &r, &err), 0);
    assert_string_equal(r.lang, "de");
    msgset_result_fini(&r);
    assert_int_equal(msgset_render(s, "t1", citizen, data, &r, &err), 0);
    assert_string_equal(r.lang, "en");
    msgset_result_fini(&r);
    json_decref(data);
    msgset_free(s);
}

static void test_render_rejects(void **state)
{
    struct msgset *s;
    struct msgset_result r;
    struct herr err;
    const char *de[3] = {"de", NULL, NULL};
    json_t *data;
    char long_sms[1200];

    (void)state;
    put_valid_set();
    s = load_ok();
    assert_int_equal(msgset_render(s, "nope", de, NULL, &r, &err), -1);
    assert_int_equal(err.kind, HERR_INPUT);
    assert_string_equal(err.path, "template");
    assert_string_equal(err.msg, "no template \"nope\" in the message set");

    data = json_pack("{s:s}", "other", "x");
    assert_int_equal(msgset_render(s, "t1", de, data, &r, &err), -1);
    assert_string_equal(err.path, "data.name");
    assert_string_equal(err.msg, "required by template \"t1\"");
    json_decref(data);

    data = json_pack("{s:n}", "name");
    assert_int_equal(msgset_render(s, "t1", de, data, &r, &err), -1);
    assert_string_equal(err.path, "data.name");
    json_decref(data);

    /* header injection through data: rejected, not stripped */
    data = json_pack("{s:s,s:s}", "name", "A\r\nBcc: x@example.org", "sms", "k");
    assert_int_equal(msgset_render(s, "t1", de, data, &r, &err), -1);
    assert_string_equal(err.path, "email.subject");
    assert_string_equal(err.msg, "the rendered subject contains a line break");
    json_decref(data);

    /* t1 rejects an over-long SMS (2 segments allowed) */
    memset(long_sms, 'a', sizeof long_sms - 1);
    long_sms[sizeof long_sms - 1] = '\0';
    data = json_pack("{s:s,s:s}", "name", "A", "sms", long_sms);
    assert_int_equal(msgset_render(s, "t1", de, data, &r, &err), -1);
    assert_string_equal(err.path, "sms.txt");
    assert_non_null(strstr(err.msg, "SMS segments"));
    json_decref(data);
    msgset_free(s);
}

static void test_truncate_policy(void **state)
{
    struct msgset *s;
    struct msgset_result r;
    struct herr err;
    const char *de[3] = {"de", NULL, NULL};
    json_t *data;
    char text[2000];
    struct sms_info si;

    (void)state;
    put_valid_set();
    s = load_ok();
    /* t2 truncates (the default policy): words of "wort " */
    for (size_t i = 0; i + 5 < sizeof text; i += 5)
        memcpy(text + i, "wort ", 5);
    text[sizeof text - 5] = '\0';
    data = json_pack("{s:s}", "x", text);
    assert_int_equal(msgset_render(s, "t2", de, data, &r, &err), 0);
    assert_true(r.truncated[JOB_PART_SMS]);
    limits_sms(r.parts[JOB_PART_SMS], &si);
    assert_true(si.segments <= 2);
    assert_true(r.truncated[JOB_PART_PUSH_BODY]);
    assert_true(limits_chars(r.parts[JOB_PART_PUSH_BODY]) <= 180);
    assert_true(r.truncated[JOB_PART_SOCIAL]);
    assert_true(limits_graphemes(r.parts[JOB_PART_SOCIAL]) <= 300);
    msgset_result_fini(&r);
    json_decref(data);
    msgset_free(s);
}

struct load_case {
    const char *label;
    const char *file, *text;     /* added to (or replacing in) the valid set */
    const char *want_name;
    int want_line;
    const char *want_msg;        /* substring */
};

static const struct load_case load_cases[] = {
    {"unclosed section", "t1/de/email.txt", "Zeile\n{{#a}} offen", "t1/de/email.txt", 2,
     "a"},
    {"unknown part", "t1/de/sms.text", "x", "t1/de/sms.text", 0, "unknown part"},
    {"bad template name", "Bad_Name/template.json", "{}", "Bad_Name", 0, "template names"},
    {"bad json", "t2/template.json", "{\"required\": [", "t2/template.json", 1, ""},
    {"unknown meta field", "t2/template.json", "{\"requird\": []}", "t2/template.json", 0,
     "unknown field"},
    {"bad policy", "t2/template.json", "{\"over_limit\": {\"sms\": \"cut\"}}",
     "t2/template.json", 0, "truncate"},
    {"missing partial", "t1/de/email.subject", "Hallo {{> nirgends}}", "t1/de", 0,
     "partial \"nirgends\" not found"},
    {"recursive partial", "_partials/de/fuss.mustache", "x{{> fuss}}", "t1/de", 0,
     "partial"},
    {"missing subject", "t3/de/email.txt", "x", "t3/de", 0, "missing email.subject"},
    {"no default language", "t4/en/email.subject", "x", "t4", 0, "default language"},
};

static void test_load_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof load_cases / sizeof load_cases[0]; i++) {
        const struct load_case *c = &load_cases[i];
        struct tmpl_error te;
        struct msgset *s;

        rm_tree();
        assert_non_null(mkdtemp(strcpy(tmpdir, "/tmp/herold-msgset-XXXXXX")));
        put_valid_set();
        if (strcmp(c->label, "no default language") == 0) {
            put("t4/template.json", "{}");
            put("t4/en/email.txt", "x");
        }
        if (strcmp(c->label, "missing subject") == 0)
            put("t3/template.json", "{}");
        put(c->file, c->text);
        s = msgset_load(tmpdir, &opts, &te);
        if (s != NULL) {
            msgset_free(s);
            fail_msg("%s: loaded, want an error", c->label);
        }
        if (strcmp(te.name, c->want_name) != 0 || (c->want_line && te.line != c->want_line) ||
            strstr(te.msg, c->want_msg) == NULL)
            fail_msg("%s: got %s:%d:%d: %s", c->label, te.name, te.line, te.col, te.msg);
    }
}

static void test_inline(void **state)
{
    struct msgset_result r;
    struct herr err;

    (void)state;
    assert_int_equal(msgset_inline(&opts, "Betreff", "Langer Text", NULL, &r, &err), 0);
    assert_string_equal(r.parts[JOB_PART_EMAIL_TXT], "Langer Text");
    assert_string_equal(r.parts[JOB_PART_SMS], "Betreff");
    assert_string_equal(r.parts[JOB_PART_PUSH_TITLE], "Betreff");
    assert_null(r.parts[JOB_PART_EMAIL_HTML]);
    msgset_result_fini(&r);
}

/* the shipped set: every template, language and part renders */
static void test_default_set(void **state)
{
    const char *src = getenv("HEROLD_SRCDIR");
    char dir[512];
    struct tmpl_error te;
    struct msgset *s;
    static const char *const langs[] = {"de", "en", "de-x-ls"};
    size_t rendered = 0;

    (void)state;
    snprintf(dir, sizeof dir, "%s/templates/default", src ? src : ".");
    s = msgset_load(dir, &opts, &te);
    if (s == NULL)
        fail_msg("default set: %s:%d:%d: %s", te.name, te.line, te.col, te.msg);
    assert_true(msgset_count(s) >= 5);
    for (size_t i = 0; i < msgset_count(s); i++) {
        const char *name = msgset_name(s, i);
        for (size_t l = 0; l < 3; l++) {
            const char *lv[3] = {langs[l], NULL, NULL};
            struct msgset_result r;
            struct herr err;
            if (msgset_render(s, name, lv, msgset_example(s, name), &r, &err) != 0)
                fail_msg("%s/%s: %s: %s", name, langs[l], err.path, err.msg);
            if (strcmp(r.lang, langs[l]) != 0)
                fail_msg("%s has no %s", name, langs[l]);
            for (int p = 0; p < JOB_PARTS; p++) {
                if (p == JOB_PART_EMAIL_HTML && r.parts[p] == NULL)
                    continue;
                if (r.parts[p] == NULL || r.parts[p][0] == '\0' || strstr(r.parts[p], "{{"))
                    fail_msg("%s/%s/%s: empty or unrendered", name, langs[l], job_part_names[p]);
            }
            msgset_result_fini(&r);
            rendered++;
        }
    }
    assert_true(rendered >= 15);
    msgset_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_render_and_derive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_language_fallback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_rejects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncate_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_errors, setup, teardown),
        cmocka_unit_test(test_inline),
        cmocka_unit_test(test_default_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
