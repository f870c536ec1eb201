/*
 * fuzz_render - libFuzzer target for templates/render.c.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_render.c \
 *       templates/render.c dispatcher/alloc.c dispatcher/herr.c -ljansson \
 *       -o build/fuzz_render
 *   build/fuzz_render -max_total_time=60 -max_len=65536 CORPUS_DIR
 *
 * The input is a template, a NUL byte, then JSON data (any value; invalid
 * JSON renders with no data).  Partials come from a fixed table that
 * includes unbounded recursion, recursion through data, growing
 * indentation and a partial that does not compile.  Beyond "no crash, no
 * sanitizer report, no hang" (depth, output and steps are bounded), the
 * oracle checks only what must hold:
 *  - compiling is deterministic, and an error has a message without
 *    control characters, a sane position, and is never "out of memory";
 *  - a render never exceeds max_output, leaves out->len untouched on
 *    failure, and renders the same text twice from one compiled template;
 *  - plain text never comes out longer than HTML, and fails only if HTML
 *    fails (escaping never shrinks; nothing else differs);
 *  - when the template cannot contain an unescaped tag (no '&', no '=',
 *    no "{{" followed by '{'), HTML output holds exactly as many '<' and
 *    '>' as the same render with every '<' and '>' in the data's strings
 *    replaced by 'x': so no '<' or '>' from data survives unescaped.
 * Any violation aborts, which libFuzzer reports as a crash.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "templates/render.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_OUTPUT 65536

/* No partial has an unescaped tag, so the '<' check stays sound. */
static const char *const fuzz_partials[][2] = {
    {"self", "{{>self}}"},
    {"tree", "{{#c}}{{>tree}}{{>tree}}{{/c}}<{{v}}>"},
    {"node", "{{name}}({{#kids}}{{>node}}{{/kids}})"},
    {"ind", "  <{{v}}>\n  {{>ind}}\n"},
    {"bad", "x\n{{#a}}"},
    {"delim", "{{=<% %>=}}<%v%>|<%#l%><%.%><%/l%>"},
    {"list", "{{#.}}<li>{{.}}</li>{{/.}}"},
    {"empty", ""},
};

/* fuzz_partial - the fixed table. */
static const char *fuzz_partial(const char *name, void *arg)
{
    (void)arg;
    for (size_t i = 0; i < sizeof fuzz_partials / sizeof fuzz_partials[0]; i++)
        if (strcmp(fuzz_partials[i][0], name) == 0)
            return fuzz_partials[i][1];
    return NULL;
}

/* fuzz_may_raw - whether src could hold an unescaped tag. */
static bool fuzz_may_raw(const char *src, size_t len)
{
    if (memchr(src, '&', len) != NULL || memchr(src, '=', len) != NULL)
        return true;
    for (size_t i = 0; i + 1 < len; i++) {
        size_t k = i + 2;

        if (src[i] != '{' || src[i + 1] != '{')
            continue;
        while (k < len && (src[k] == ' ' || src[k] == '\t' || src[k] == '\r' || src[k] == '\n'))
            k++;
        if (k < len && src[k] == '{')
            return true;
    }
    return false;
}

/* fuzz_defang - in v (a deep copy), every '<' and '>' in string values
 * becomes 'x'; keys stay, so every lookup and truth value stays. */
static void fuzz_defang(json_t *v)
{
    const char *key;
    json_t *child;
    size_t i;

    if (json_is_string(v)) {
        size_t len = json_string_length(v);
        char *s = malloc(len + 1);

        if (s == NULL)
            abort();
        memcpy(s, json_string_value(v), len + 1);
        for (i = 0; i < len; i++)
            if (s[i] == '<' || s[i] == '>')
                s[i] = 'x';
        if (json_string_setn(v, s, len) != 0)
            abort();
        free(s);
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, child)
            fuzz_defang(child);
    } else if (json_is_object(v)) {
        json_object_foreach(v, key, child)
            fuzz_defang(child);
    }
}

/* fuzz_count - occurrences of c in s[0, len). */
static size_t fuzz_count(const char *s, size_t len, char c)
{
    size_t n = 0;

    for (size_t i = 0; i < len; i++)
        n += s[i] == c;
    return n;
}

/* fuzz_error_ok - an error a fuzzed input may legitimately produce. */
static bool fuzz_error_ok(const struct tmpl_error *e)
{
    if (e->msg[0] == '\0' || e->nomem || e->line < 0 || e->col < 0 ||
        (e->line > 0 && e->col < 1))
        return false;
    for (const char *p = e->msg; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

/* fuzz_render - render t twice with escape; the output (out) or -1. */
static int fuzz_render(const struct tmpl *t, const json_t *d, tmpl_escape_fn *escape,
                       struct tmpl_buf *out)
{
    const struct tmpl_render_opts o = {
        .escape = escape,
        .partial = fuzz_partial,
        .max_depth = 8,
        .max_output = FUZZ_MAX_OUTPUT,
        .max_steps = 100000,
    };
    struct tmpl_buf again = {0};
    struct tmpl_error e;
    int rc;

    /* Start with text in the buffer: a render appends, or leaves it be. */
    if (tmpl_buf_append(out, "#", 1) != 0)
        abort();
    rc = tmpl_render(t, d, &o, out, &e);
    if (rc != 0) {
        if (rc != -1 || out->len != 1 || !fuzz_error_ok(&e))
            abort();
        return -1;
    }
    if (out->len - 1 > FUZZ_MAX_OUTPUT || out->data[out->len] != '\0')
        abort();
    if (tmpl_render(t, d, &o, &again, &e) != 0 || again.len != out->len - 1 ||
        memcmp(again.data, out->data + 1, again.len) != 0)
        abort();
    tmpl_buf_free(&again);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *src = (const char *)data;
    const uint8_t *nul = memchr(data, '\0', size);
    size_t len = nul ? (size_t)(nul - data) : size;
    struct tmpl_buf html = {0}, text = {0}, safe = {0};
    struct tmpl_error e1, e2;
    struct tmpl *t, *t2;
    json_t *d = NULL, *dsafe;
    int rh, rt;

    t = tmpl_compile(src, len, "fuzz", &e1);
    t2 = tmpl_compile(src, len, "fuzz", &e2);
    if ((t == NULL) != (t2 == NULL))
        abort();
    tmpl_free(t2);
    if (t == NULL) {
        if (!fuzz_error_ok(&e1) || e1.line != e2.line || e1.col != e2.col ||
            strcmp(e1.msg, e2.msg) != 0 || strcmp(e1.name, "fuzz") != 0)
            abort();
        return 0;
    }
    if (nul != NULL)
        d = json_loadb((const char *)nul + 1, size - len - 1, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                       NULL);

    rh = fuzz_render(t, d, tmpl_escape_html, &html);
    rt = fuzz_render(t, d, tmpl_escape_none, &text);
    if (rh == 0 && (rt != 0 || text.len > html.len))
        abort();

    if (rh == 0 && !fuzz_may_raw(src, len)) {
        dsafe = json_deep_copy(d);
        if (d != NULL && dsafe == NULL)
            abort();
        fuzz_defang(dsafe);
        if (fuzz_render(t, dsafe, tmpl_escape_html, &safe) != 0 ||
            fuzz_count(html.data, html.len, '<') != fuzz_count(safe.data, safe.len, '<') ||
            fuzz_count(html.data, html.len, '>') != fuzz_count(safe.data, safe.len, '>'))
            abort();
        json_decref(dsafe);
    }
    tmpl_buf_free(&html);
    tmpl_buf_free(&text);
    tmpl_buf_free(&safe);
    json_decref(d);
    tmpl_free(t);
    return 0;
}
