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
 *
 * Values: strings as they are, integers in decimal, reals in the shortest
 * form that reads back as the same double ("1.21"), true and false as
 * words; null, a missing name, objects and lists interpolate as nothing.
 * Falsy for sections: false, null, a missing name, the empty list and the
 * empty string (the spec leaves "" open); everything else, 0 included, is
 * true.
 * Names never print themselves: an unknown {{x}} renders empty (and calls
 * on_missing).
 */
#ifndef HEROLD_RENDER_H
#define HEROLD_RENDER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct tmpl;

/* Sections nested deeper than this in one template fail to compile. */
#define TMPL_MAX_NESTING 100
/* Longest template (or partial) source tmpl_compile accepts, in bytes. */
#define TMPL_MAX_SOURCE (16 * 1024 * 1024)

struct tmpl_error {
    char name[64];     /* template (file) name given to tmpl_compile */
    int line;          /* 1-based; 0 when not tied to a position */
    int col;           /* 1-based, in bytes */
    char msg[160];     /* e.g. "unclosed section \"items\""; quotes only the
                        * template's own names, never data */
    bool nomem;        /* out of memory: not the template's fault, retry */
};

/* A growing output buffer; start it as {0}.  Once anything has been
 * appended (or a render succeeded), data is non-NULL and NUL-terminated. */
struct tmpl_buf {
    char *data;
    size_t len, cap;
};

/* Appends the escaped form of s (len bytes) to out with tmpl_buf_append;
 * -1 on failure (errno ENOMEM when out of memory). */
typedef int tmpl_escape_fn(struct tmpl_buf *out, const char *s, size_t len);

/* Returns the NUL-terminated source of partial `name` (borrowed until the
 * render ends) or NULL if there is none: it then renders as empty, as the
 * spec says, so a caller that wants strictness records the miss here.
 * Called at most once per partial name and indentation per render. */
typedef const char *tmpl_partial_fn(const char *name, void *arg);

struct tmpl_render_opts {
    tmpl_escape_fn *escape;        /* NULL: HTML escaping (the spec's) */
    tmpl_partial_fn *partial;      /* NULL: no partials */
    void *partial_arg;
    int max_depth;                 /* partial nesting, 0: 16 */
    size_t max_output;             /* bytes, 0: 1 MiB */
    /* Called for each variable or section name looked up and not found
     * (for strict checking and "required" lists); may be NULL.  name is
     * the whole dotted name as written ("a.b.c"); called once per lookup
     * (so once per list item inside a section), never for a name found
     * with a falsy value, never for names in sections not rendered. */
    void (*on_missing)(const char *name, void *arg);
    void *missing_arg;
    /* Work bound in steps (one per node visited, list item started or
     * body finished), 0: 1048576.  Output and depth limits alone do not
     * stop a template that loops over lists without printing, such as
     * {{#l}}{{#l}}...{{/l}}{{/l}} nested ten deep over ten items. */
    size_t max_steps;
};

/* tmpl_compile - parse src (len bytes) named name (for errors).  Returns a
 * new template (free with tmpl_free) or NULL with err set: unclosed tag,
 * unclosed section, mismatched close tag, empty or bad tag name, bad
 * delimiter change, sections nested deeper than TMPL_MAX_NESTING, source
 * longer than TMPL_MAX_SOURCE, memory.  Borrows src only during the call.
 * The template is immutable: any number of renders may share it. */
struct tmpl *tmpl_compile(const char *src, size_t len, const char *name,
                          struct tmpl_error *err);

/* tmpl_render - render t with data into out (appended; the caller owns
 * out->data and frees it with tmpl_buf_free).  opts may be NULL (all
 * defaults); data may be NULL (no context).  Returns 0, or -1 with err
 * (output limit, depth limit, step limit, a partial that fails to compile,
 * memory); on -1, out->len is back where it was, so no partial output is
 * left behind, but out->data may have grown and must still be freed.
 * err->name, line and col point at the tag (or text) where it stopped. */
int tmpl_render(const struct tmpl *t, const json_t *data,
                const struct tmpl_render_opts *opts, struct tmpl_buf *out,
                struct tmpl_error *err);

/* tmpl_names - call fn once per occurrence of a variable, section or
 * inverted-section name in t, in template order, section bodies included:
 * the name as written ("person.name"; the top-level key is the part
 * before the first dot).  Not for "." (the current item), close tags,
 * comments, partial names or the contents of partials.  Names inside a
 * section are looked up in that section's context first. */
void tmpl_names(const struct tmpl *t, void (*fn)(const char *name, void *arg), void *arg);

/* tmpl_free - free t; NULL is a no-op. */
void tmpl_free(struct tmpl *t);

/* tmpl_buf_append - append s (len bytes) to b, keeping it NUL-terminated;
 * 0, or -1 (errno ENOMEM) with b unchanged.  For custom escapers. */
int tmpl_buf_append(struct tmpl_buf *b, const char *s, size_t len);

/* tmpl_buf_free - free b's text and reset it to {0}. */
void tmpl_buf_free(struct tmpl_buf *b);

/* Escapers for the output contexts herold uses. */
int tmpl_escape_html(struct tmpl_buf *out, const char *s, size_t len);  /* & < > " ' */
int tmpl_escape_none(struct tmpl_buf *out, const char *s, size_t len);  /* text, SMS */

#endif
