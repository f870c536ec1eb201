/*
 * render - herold's Mustache renderer (no C Mustache library is packaged
 * in Debian).  Implements the official spec's required modules:
 * interpolation (escaped and unescaped, dotted names, implicit iterator),
 * sections (lists, objects, falsy values), inverted sections, comments,
 * partials (with standalone-line indentation) and set delimiters.
 *
 * A template is compiled once (tmpl_compile) into an immutable tree that
 * many renders share; rendering walks it with a jansson value as data.
 * Rendering is bounded: partial nesting depth and output size are capped,
 * so no template and no data can make it loop, recurse or grow without
 * limit.  Errors carry the template's name, line and column.
 *
 * Escaping is the caller's choice per output context, because one variable
 * lands in different places (HTML body, plain text, SMS, a header): the
 * escape function given to tmpl_render is applied to every {{x}}, never
 * to {{{x}}} or {{& x}}.  Partial names come only from template sources,
 * never from data; the partial callback decides what exists.
 */
#ifndef HEROLD_RENDER_H
#define HEROLD_RENDER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct tmpl;

struct tmpl_error {
    char name[64];     /* template (file) name given to tmpl_compile */
    int line;          /* 1-based; 0 when not tied to a position */
    int col;           /* 1-based, in bytes */
    char msg[160];     /* e.g. "unclosed section \"items\"" */
};

/* A growing output buffer; text is NUL-terminated. */
struct tmpl_buf {
    char *data;
    size_t len, cap;
};

/* Appends the escaped form of s (len bytes) to out; -1 on failure. */
typedef int tmpl_escape_fn(struct tmpl_buf *out, const char *s, size_t len);

/* Returns the source of partial `name` (borrowed until the render ends) or
 * NULL if there is none (it then renders as empty, as the spec says). */
typedef const char *tmpl_partial_fn(const char *name, void *arg);

struct tmpl_render_opts {
    tmpl_escape_fn *escape;        /* NULL: HTML escaping (the spec's) */
    tmpl_partial_fn *partial;      /* NULL: no partials */
    void *partial_arg;
    int max_depth;                 /* partial nesting, 0: 16 */
    size_t max_output;             /* bytes, 0: 1 MiB */
    /* Called for each variable or section name looked up and not found
     * (for strict checking and "required" lists); may be NULL. */
    void (*on_missing)(const char *name, void *arg);
    void *missing_arg;
};

/* tmpl_compile - parse src (len bytes) named name (for errors).  Returns a
 * new template (free with tmpl_free) or NULL with err set. */
struct tmpl *tmpl_compile(const char *src, size_t len, const char *name,
                          struct tmpl_error *err);

/* tmpl_render - render t with data into out (appended; the caller owns
 * out->data and frees it with tmpl_buf_free).  Returns 0, or -1 with err
 * (output limit, depth limit, a partial that fails to compile, memory). */
int tmpl_render(const struct tmpl *t, const json_t *data,
                const struct tmpl_render_opts *opts, struct tmpl_buf *out,
                struct tmpl_error *err);

/* tmpl_names - call fn for every variable and section name t uses
 * (top-level names of dotted paths included), for "required" checks. */
void tmpl_names(const struct tmpl *t, void (*fn)(const char *name, void *arg), void *arg);

void tmpl_free(struct tmpl *t);
void tmpl_buf_free(struct tmpl_buf *b);

/* Escapers for the output contexts herold uses. */
int tmpl_escape_html(struct tmpl_buf *out, const char *s, size_t len);  /* & < > " ' */
int tmpl_escape_none(struct tmpl_buf *out, const char *s, size_t len);  /* text, SMS */

#endif
