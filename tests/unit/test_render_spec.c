/*
 * test_render_spec - the official Mustache spec against templates/render.c.
 *
 * Reads the spec's JSON files directly (comments, delimiters,
 * interpolation, inverted, partials, sections) from $HEROLD_SPEC_DIR, else
 * tests/fixtures/mustache-spec (a copy of the official spec, with its MIT
 * LICENSE and VERSION, so a bare clone tests itself), else
 * ../shared/testdata/mustache-spec (the shared folder beside the repo,
 * where `make test` runs from the repo root), else
 * /work/shared/testdata/mustache-spec.  Every case is compiled, rendered
 * with its data and its partials (through opts->partial) and compared with
 * "expected"; it is rendered twice, because a compiled template is shared
 * by many renders and must come out the same each time.  Each case prints
 * one PASS or FAIL line, and the run ends with "mustache spec: N passed,
 * N failed".  A missing spec directory, a missing file or a case count
 * other than SPEC_CASES fails loudly: the spec is never skipped.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "templates/render.h"

/* Cases in the six files of spec VERSION 9cb20c3d (update with the spec). */
#define SPEC_CASES 136

static const char *const spec_files[] = {
    "comments", "delimiters", "interpolation", "inverted", "partials", "sections",
};

static int spec_passed, spec_failed, spec_files_done;

/* spec_dir - the spec directory, or NULL when none is found. */
static const char *spec_dir(void)
{
    static const char *const tries[] = {
        "tests/fixtures/mustache-spec",          /* the copy in the repository */
        "../shared/testdata/mustache-spec",
        "/work/shared/testdata/mustache-spec",
    };
    const char *env = getenv("HEROLD_SPEC_DIR");
    struct stat st;

    if (env != NULL && env[0] != '\0')
        return stat(env, &st) == 0 && S_ISDIR(st.st_mode) ? env : NULL;
    for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++)
        if (stat(tries[i], &st) == 0 && S_ISDIR(st.st_mode))
            return tries[i];
    return NULL;
}

/* spec_partial - the case's "partials" object as the partial callback. */
static const char *spec_partial(const char *name, void *arg)
{
    const json_t *partials = arg;

    return json_string_value(json_object_get(partials, name));
}

/* spec_quote - s as a JSON string literal, for FAIL lines; free() it. */
static char *spec_quote(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    char *q = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;

    json_decref(j);
    return q;
}

/* spec_case - run one case; true when it passes (both renders). */
static bool spec_case(const char *file, const json_t *c)
{
    const char *name = json_string_value(json_object_get(c, "name"));
    const json_t *jt = json_object_get(c, "template");
    const json_t *jexp = json_object_get(c, "expected");
    json_t *partials = json_object_get(c, "partials");
    const json_t *data = json_object_get(c, "data");
    struct tmpl_render_opts opts = {
        .partial = spec_partial,
        .partial_arg = partials,
    };
    struct tmpl_error err;
    struct tmpl *t;
    bool ok = true;

    if (name == NULL || !json_is_string(jt) || !json_is_string(jexp)) {
        printf("FAIL %s: malformed case\n", file);
        return false;
    }
    t = tmpl_compile(json_string_value(jt), json_string_length(jt), name, &err);
    if (t == NULL) {
        printf("FAIL %s: %s: compile error %s:%d:%d: %s\n", file, name, err.name, err.line,
               err.col, err.msg);
        return false;
    }
    for (int round = 0; round < 2 && ok; round++) {
        struct tmpl_buf out = {0};

        if (tmpl_render(t, data, &opts, &out, &err) != 0) {
            printf("FAIL %s: %s: render error %s:%d:%d: %s\n", file, name, err.name, err.line,
                   err.col, err.msg);
            ok = false;
        } else if (out.len != json_string_length(jexp) ||
                   memcmp(out.data, json_string_value(jexp), out.len) != 0) {
            char *want = spec_quote(json_string_value(jexp), json_string_length(jexp));
            char *got = spec_quote(out.data, out.len);

            printf("FAIL %s: %s: expected %s got %s%s\n", file, name, want ? want : "?",
                   got ? got : "?", round ? " (second render)" : "");
            free(want);
            free(got);
            ok = false;
        }
        tmpl_buf_free(&out);
    }
    tmpl_free(t);
    if (ok)
        printf("PASS %s: %s\n", file, name);
    return ok;
}

/* spec_run_file - every case of <dir>/<file>.json; fails on any failure. */
static void spec_run_file(const char *file)
{
    const char *dir = spec_dir();
    char path[1024];
    json_error_t jerr;
    json_t *doc, *tests;
    int failed = 0;
    size_t i;
    json_t *c;

    if (dir == NULL)
        fail_msg("mustache spec directory not found: set HEROLD_SPEC_DIR, or put the spec "
                 "at tests/fixtures/mustache-spec");
    snprintf(path, sizeof path, "%s/%s.json", dir, file);
    doc = json_load_file(path, 0, &jerr);
    if (doc == NULL)
        fail_msg("cannot load %s: %s (line %d)", path, jerr.text, jerr.line);
    tests = json_object_get(doc, "tests");
    if (!json_is_array(tests) || json_array_size(tests) == 0) {
        json_decref(doc);
        fail_msg("%s has no tests", path);
    }
    json_array_foreach(tests, i, c) {
        if (spec_case(file, c))
            spec_passed++;
        else
            failed++;
    }
    spec_failed += failed;
    spec_files_done++;
    json_decref(doc);
    if (failed > 0)
        fail_msg("%s: %d case(s) failed", file, failed);
}

static void test_spec_comments(void **state)
{
    (void)state;
    spec_run_file(spec_files[0]);
}

static void test_spec_delimiters(void **state)
{
    (void)state;
    spec_run_file(spec_files[1]);
}

static void test_spec_interpolation(void **state)
{
    (void)state;
    spec_run_file(spec_files[2]);
}

static void test_spec_inverted(void **state)
{
    (void)state;
    spec_run_file(spec_files[3]);
}

static void test_spec_partials(void **state)
{
    (void)state;
    spec_run_file(spec_files[4]);
}

static void test_spec_sections(void **state)
{
    (void)state;
    spec_run_file(spec_files[5]);
}

/* The summary, and proof that every file and every case ran. */
static void test_spec_summary(void **state)
{
    (void)state;
    printf("mustache spec: %d passed, %d failed\n", spec_passed, spec_failed);
    if (spec_files_done != (int)(sizeof spec_files / sizeof spec_files[0]))
        fail_msg("only %d of 6 spec files ran", spec_files_done);
    if (spec_passed + spec_failed != SPEC_CASES)
        fail_msg("%d spec cases ran, expected %d", spec_passed + spec_failed, SPEC_CASES);
    assert_int_equal(spec_failed, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_comments),
        cmocka_unit_test(test_spec_delimiters),
        cmocka_unit_test(test_spec_interpolation),
        cmocka_unit_test(test_spec_inverted),
        cmocka_unit_test(test_spec_partials),
        cmocka_unit_test(test_spec_sections),
        cmocka_unit_test(test_spec_summary),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
