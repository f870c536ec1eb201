/*
 * render - herold's Mustache renderer: compiles template text into an
 * immutable node tree, then renders that tree against jansson data.
 *
 * A compiled template is one allocation: the struct, its nodes in
 * document order (a section node records where its body ends, so the tree
 * is stored flat) and an arena holding the text and the names.  Comments
 * and set-delimiter tags leave nothing behind; standalone lines are cut
 * at compile time; a partial's indentation is compiled into the partial,
 * which is compiled when a render first needs it and cached for the rest
 * of that render under its name and indentation.
 *
 * Owns the templates it compiles and, during one render, the partials
 * compiled for it; borrows the data, the partial sources and the output
 * buffer.  It never evaluates data as template text, never takes a partial
 * name from data, never recurses on a depth that input controls (the
 * parser keeps an explicit section stack, the renderer an explicit frame
 * stack, both bounded) and never copies data into an error message: errors
 * quote only the template's own tag names and delimiters.
 */
#include "render.h"

#include <assert.h>
#include <errno.h>
#include <locale.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../dispatcher/alloc.h"

#define RENDER_DEFAULT_DEPTH 16
#define RENDER_DEFAULT_OUTPUT ((size_t)1 << 20)
#define RENDER_DEFAULT_STEPS ((size_t)1 << 20)
#define RENDER_SMALL_FRAMES 16
#define RENDER_SMALL_CTX 32
#define NO_NODE SIZE_MAX

enum tmpl_kind {
    TMPL_TEXT,        /* literal bytes */
    TMPL_VAR,         /* {{x}}: escaped */
    TMPL_RAW,         /* {{{x}}} and {{&x}}: not escaped */
    TMPL_SECTION,     /* {{#x}}...{{/x}} */
    TMPL_INVERTED,    /* {{^x}}...{{/x}} */
    TMPL_PARTIAL      /* {{>x}} */
};

struct tmpl_node {
    enum tmpl_kind kind;
    int line, col;       /* of the tag, or of the text's first byte */
    size_t off, len;     /* TEXT: its bytes in the arena; else the name, NUL-terminated */
    size_t parts;        /* VAR..INVERTED: the name's parts, each NUL-terminated */
    size_t nparts;       /* 0 for ".", the current item */
    size_t end;          /* SECTION, INVERTED: index of the first node after the body */
    size_t ind, ind_len; /* PARTIAL: indentation for each of its lines */
    uint32_t hash;       /* PARTIAL: of name and indentation, for the render cache */
};

struct tmpl {
    char name[64];
    struct tmpl_node *nodes;
    size_t nnodes;
    char *arena;
    size_t text_bytes;   /* sum of the text nodes: a guess at the output size */
};

/* ---- errors ---- */

/* tmpl_fail - fill err (if any) and return -1. */
static int tmpl_fail(struct tmpl_error *err, const char *name, int line, int col,
                     bool nomem, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static int tmpl_fail(struct tmpl_error *err, const char *name, int line, int col,
                     bool nomem, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return -1;
    snprintf(err->name, sizeof err->name, "%s", name ? name : "");
    err->line = line;
    err->col = col;
    err->nomem = nomem;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- output buffer ---- */

/* buf_reserve - make room for `more` bytes plus the terminating NUL. */
static int buf_reserve(struct tmpl_buf *b, size_t more)
{
    size_t need, cap;
    char *p;

    if (more < b->cap - b->len)
        return 0;
    if (more > SIZE_MAX - b->len - 1) {
        errno = ENOMEM;
        return -1;
    }
    need = b->len + more + 1;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    p = herold_realloc(b->data, cap);
    if (p == NULL) {
        errno = ENOMEM;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

/*
 * tmpl_buf_append appends len bytes of s to b and keeps b NUL-terminated.
 * It returns 0, or -1 with errno ENOMEM and b unchanged when the buffer
 * cannot grow.  Escape functions use it to write their output; b's text
 * stays the caller's, freed with tmpl_buf_free.
 */
int tmpl_buf_append(struct tmpl_buf *b, const char *s, size_t len)
{
    if (buf_reserve(b, len) != 0)
        return -1;
    if (len > 0)
        memcpy(b->data + b->len, s, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

/*
 * tmpl_buf_free releases b's text and resets b to the empty buffer {0}, so
 * it can be reused or freed again.  A NULL b is a no-op.
 */
void tmpl_buf_free(struct tmpl_buf *b)
{
    if (b == NULL)
        return;
    herold_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/*
 * tmpl_escape_html appends s with the five characters that matter in HTML
 * text and attribute values replaced: & < > " ' become &amp; &lt; &gt;
 * &quot; &#39;.  Every other byte passes unchanged, so the output is never
 * shorter than the input.  Returns 0, or -1 (errno ENOMEM) when out cannot
 * grow; out may then hold part of the escaped text.
 */
int tmpl_escape_html(struct tmpl_buf *out, const char *s, size_t len)
{
    size_t run = 0;

    if (buf_reserve(out, len) != 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        const char *rep;
        size_t rlen;

        switch (s[i]) {
        case '&': rep = "&amp;"; rlen = 5; break;
        case '<': rep = "&lt;"; rlen = 4; break;
        case '>': rep = "&gt;"; rlen = 4; break;
        case '"': rep = "&quot;"; rlen = 6; break;
        case '\'': rep = "&#39;"; rlen = 5; break;
        default: continue;
        }
        if (tmpl_buf_append(out, s + run, i - run) != 0 ||
            tmpl_buf_append(out, rep, rlen) != 0)
            return -1;
        run = i + 1;
    }
    return tmpl_buf_append(out, s + run, len - run);
}

/*
 * tmpl_escape_none appends s verbatim: for plain text, SMS and other
 * contexts where no character is special.  Returns 0, or -1 (errno ENOMEM)
 * when out cannot grow.
 */
int tmpl_escape_none(struct tmpl_buf *out, const char *s, size_t len)
{
    return tmpl_buf_append(out, s, len);
}

/* ---- compiling ---- */

struct parse {
    const char *src;
    size_t len;
    const char *name;          /* for errors and the template */
    const char *ind;           /* indentation for every line (partials) */
    size_t ind_len;
    struct tmpl_error *err;

    struct tmpl_node *nodes;
    size_t nnodes, nodes_cap;
    char *arena;
    size_t alen, acap;
    size_t text_bytes;
    size_t last_text;          /* a text node the next text may extend, or NO_NODE */

    const char *otag, *ctag;   /* current delimiters (point into src) */
    size_t olen, clen;
    size_t pos;                /* next byte to scan */
    bool line_tagged;          /* a tag already sits on the current source line */
    bool line_start;           /* nothing of the current line emitted yet */

    size_t at;                 /* line and column counted up to here */
    int line;
    size_t line_off;

    size_t open[TMPL_MAX_NESTING];   /* node indices of the open sections */
    size_t nopen;
};

/* parse_where - line and column of src offset off (offsets only grow). */
static void parse_where(struct parse *p, size_t off, int *line, int *col)
{
    while (p->at < off) {
        const char *nl = memchr(p->src + p->at, '\n', off - p->at);

        if (nl == NULL) {
            p->at = off;
            break;
        }
        p->line++;
        p->at = (size_t)(nl - p->src) + 1;
        p->line_off = p->at;
    }
    *line = p->line;
    *col = (int)(off - p->line_off) + 1;
}

/* parse_nomem - the out-of-memory error. */
static int parse_nomem(struct parse *p)
{
    return tmpl_fail(p->err, p->name, 0, 0, true, "out of memory");
}

/* parse_arena - append n bytes to the arena; their offset into *off. */
static int parse_arena(struct parse *p, const char *s, size_t n, size_t *off)
{
    if (n >= p->acap - p->alen) {
        size_t cap = p->acap ? p->acap : 256;
        char *a;

        while (cap - p->alen <= n)
            cap *= 2;
        a = herold_realloc(p->arena, cap);
        if (a == NULL)
            return parse_nomem(p);
        p->arena = a;
        p->acap = cap;
    }
    if (n > 0)
        memcpy(p->arena + p->alen, s, n);
    *off = p->alen;
    p->alen += n;
    return 0;
}

/* parse_node - a new zeroed node of kind at line:col; NULL when out of memory. */
static struct tmpl_node *parse_node(struct parse *p, enum tmpl_kind kind, int line, int col)
{
    struct tmpl_node *n;

    if (p->nnodes == p->nodes_cap) {
        size_t cap = p->nodes_cap ? p->nodes_cap * 2 : 16;
        struct tmpl_node *v = herold_realloc(p->nodes, cap * sizeof *v);

        if (v == NULL) {
            parse_nomem(p);
            return NULL;
        }
        p->nodes = v;
        p->nodes_cap = cap;
    }
    n = &p->nodes[p->nnodes++];
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->line = line;
    n->col = col;
    p->last_text = kind == TMPL_TEXT ? p->nnodes - 1 : NO_NODE;
    return n;
}

/* parse_bytes - emit literal bytes, growing the previous text node when
 * they follow it directly in the arena. */
static int parse_bytes(struct parse *p, const char *s, size_t n, size_t src_off)
{
    struct tmpl_node *t;
    size_t off;
    int line, col;

    if (n == 0)
        return 0;
    if (parse_arena(p, s, n, &off) != 0)
        return -1;
    p->text_bytes += n;
    if (p->last_text != NO_NODE && p->last_text == p->nnodes - 1 &&
        p->nodes[p->last_text].off + p->nodes[p->last_text].len == off) {
        p->nodes[p->last_text].len += n;
        return 0;
    }
    parse_where(p, src_off, &line, &col);
    t = parse_node(p, TMPL_TEXT, line, col);
    if (t == NULL)
        return -1;
    t->off = off;
    t->len = n;
    return 0;
}

/* parse_indent - at the start of an output line, emit the partial's
 * indentation (source offset off, for positions). */
static int parse_indent(struct parse *p, size_t off)
{
    if (!p->line_start)
        return 0;
    p->line_start = false;
    return parse_bytes(p, p->ind, p->ind_len, off);
}

/* parse_text - emit src[from, to) line by line, each line indented. */
static int parse_text(struct parse *p, size_t from, size_t to)
{
    while (from < to) {
        const char *nl = memchr(p->src + from, '\n', to - from);
        size_t stop = nl ? (size_t)(nl - p->src) + 1 : to;

        if (parse_indent(p, from) != 0 || parse_bytes(p, p->src + from, stop - from, from) != 0)
            return -1;
        if (nl != NULL) {
            p->line_start = true;
            p->line_tagged = false;
        }
        from = stop;
    }
    return 0;
}

/* find - first offset >= from where `pre` (if non-zero) followed by
 * tag[0, n) starts in src[0, len); SIZE_MAX if none. */
static size_t find(const char *src, size_t len, size_t from, char pre, const char *tag, size_t n)
{
    size_t want = n + (pre != '\0');
    char first = pre != '\0' ? pre : tag[0];

    while (from < len && len - from >= want) {
        const char *c = memchr(src + from, first, len - from - want + 1);

        if (c == NULL)
            return SIZE_MAX;
        from = (size_t)(c - src);
        if (memcmp(src + from + (pre != '\0'), tag, n) == 0)
            return from;
        from++;
    }
    return SIZE_MAX;
}

/* is_space - whitespace inside tags. */
static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* trim - shrink [*s, *e) past surrounding whitespace. */
static void trim(const char *src, size_t *s, size_t *e)
{
    while (*s < *e && is_space(src[*s]))
        (*s)++;
    while (*e > *s && is_space(src[*e - 1]))
        (*e)--;
}

/* quote_width - how much of s (len bytes) an error message quotes: at
 * most 60 bytes, never ending inside a UTF-8 sequence. */
static int quote_width(const char *s, size_t len)
{
    size_t w = len > 60 ? 60 : len;

    while (w < len && w > 0 && ((unsigned char)s[w] & 0xc0) == 0x80)
        w--;
    return (int)w;
}

/* bad_char - a byte that may not appear in a name or delimiter. */
static bool bad_char(unsigned char c)
{
    return c <= 0x20 || c == 0x7f;
}

/* parse_name - check the tag name src[s, e) and store it (and, unless
 * partial, its dot-separated parts) in node n. */
static int parse_name(struct parse *p, struct tmpl_node *n, size_t s, size_t e, bool partial)
{
    const char *name = p->src + s;
    size_t len = e - s;
    size_t off, dummy;
    int w = quote_width(name, len);

    if (len == 0)
        return tmpl_fail(p->err, p->name, n->line, n->col, false, "empty tag name");
    for (size_t i = 0; i < len; i++)
        if (bad_char((unsigned char)name[i]))
            return tmpl_fail(p->err, p->name, n->line, n->col, false,
                             "bad tag name (space or control character in it)");
    if (!partial && !(len == 1 && name[0] == '.')) {
        bool empty_part = name[0] == '.' || name[len - 1] == '.';

        for (size_t i = 1; i < len && !empty_part; i++)
            empty_part = name[i] == '.' && name[i - 1] == '.';
        if (empty_part)
            return tmpl_fail(p->err, p->name, n->line, n->col, false,
                             "bad tag name \"%.*s\" (empty part between dots)", w, name);
    }
    if (parse_arena(p, name, len, &off) != 0 || parse_arena(p, "", 1, &dummy) != 0)
        return -1;
    n->off = off;
    n->len = len;
    if (partial)
        return 0;
    if (len == 1 && name[0] == '.') {
        n->nparts = 0;
        return 0;
    }
    n->nparts = 1;
    n->parts = off;
    if (memchr(name, '.', len) == NULL)
        return 0;
    /* "a.b.c" again as "a\0b\0c\0": each part a key for json_object_get. */
    if (parse_arena(p, name, len, &off) != 0 || parse_arena(p, "", 1, &dummy) != 0)
        return -1;
    n->parts = off;
    for (size_t i = 0; i < len; i++)
        if (p->arena[off + i] == '.') {
            p->arena[off + i] = '\0';
            n->nparts++;
        }
    return 0;
}

/* fnv1a - 32-bit FNV-1a of s[0, n), continuing from h. */
static uint32_t fnv1a(uint32_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

/* parse_partial - a partial node; own_ind is the standalone tag's own
 * indentation (src offsets), or NULL when the tag is inline. */
static int parse_partial(struct parse *p, struct tmpl_node *n, size_t s, size_t e,
                         const size_t own_ind[2])
{
    size_t off, off2;

    if (parse_name(p, n, s, e, true) != 0)
        return -1;
    n->ind = p->alen;
    n->ind_len = 0;
    if (own_ind != NULL) {
        /* Inside an indented partial, a standalone partial's lines get
         * both indentations, as if the outer one were in its source. */
        if (parse_arena(p, p->ind, p->ind_len, &off) != 0 ||
            parse_arena(p, p->src + own_ind[0], own_ind[1] - own_ind[0], &off2) != 0)
            return -1;
        n->ind = off;
        n->ind_len = p->ind_len + own_ind[1] - own_ind[0];
    }
    n->hash = fnv1a(fnv1a(2166136261u, p->arena + n->off, n->len + 1),
                    p->arena + n->ind, n->ind_len);
    return 0;
}

/* parse_delims - apply the set-delimiter tag body src[s, e). */
static int parse_delims(struct parse *p, size_t s, size_t e, int line, int col)
{
    size_t a, b, c, d;

    trim(p->src, &s, &e);
    a = s;
    b = a;
    while (b < e && !is_space(p->src[b]))
        b++;
    c = b;
    while (c < e && is_space(p->src[c]))
        c++;
    d = c;
    while (d < e && !is_space(p->src[d]))
        d++;
    if (b == a || d == c || d != e)
        return tmpl_fail(p->err, p->name, line, col, false,
                         "bad delimiter change (want two delimiters, as in {{=<%% %%>=}})");
    for (size_t i = a; i < e; i++)
        if (i < b || i >= c) {
            if (p->src[i] == '=' || bad_char((unsigned char)p->src[i]))
                return tmpl_fail(p->err, p->name, line, col, false,
                                 "bad delimiter change (\"=\" or a control character in a delimiter)");
        }
    p->otag = p->src + a;
    p->olen = b - a;
    p->ctag = p->src + c;
    p->clen = d - c;
    return 0;
}

/* parse_tag - handle one tag: sigil, content [cs, ce), tag at line:col;
 * own_ind is the standalone line's indentation or NULL. */
static int parse_tag(struct parse *p, char sigil, size_t cs, size_t ce, int line, int col,
                     const size_t own_ind[2])
{
    struct tmpl_node *n;
    enum tmpl_kind kind;

    switch (sigil) {
    case '!':
        return 0;
    case '=':
        return parse_delims(p, cs, ce, line, col);
    case '/': {
        struct tmpl_node *o;
        int w;

        trim(p->src, &cs, &ce);
        w = quote_width(p->src + cs, ce - cs);
        if (cs == ce)
            return tmpl_fail(p->err, p->name, line, col, false, "empty tag name");
        /* Checked before it is quoted: messages carry no control characters. */
        for (size_t i = cs; i < ce; i++)
            if (bad_char((unsigned char)p->src[i]))
                return tmpl_fail(p->err, p->name, line, col, false,
                                 "bad tag name (space or control character in it)");
        if (p->nopen == 0)
            return tmpl_fail(p->err, p->name, line, col, false,
                             "close tag \"%.*s\" without an open section", w, p->src + cs);
        o = &p->nodes[p->open[p->nopen - 1]];
        if (o->len != ce - cs || memcmp(p->arena + o->off, p->src + cs, o->len) != 0)
            return tmpl_fail(p->err, p->name, line, col, false,
                             "section \"%.*s\" closed by \"%.*s\"",
                             quote_width(p->arena + o->off, o->len), p->arena + o->off, w,
                             p->src + cs);
        o->end = p->nnodes;
        p->nopen--;
        p->last_text = NO_NODE;
        return 0;
    }
    case '#':
    case '^':
        if (p->nopen == TMPL_MAX_NESTING)
            return tmpl_fail(p->err, p->name, line, col, false,
                             "sections nested deeper than %d", TMPL_MAX_NESTING);
        kind = sigil == '#' ? TMPL_SECTION : TMPL_INVERTED;
        break;
    case '>':
        kind = TMPL_PARTIAL;
        break;
    case '&':
    case '{':
        kind = TMPL_RAW;
        break;
    default:
        kind = TMPL_VAR;
        break;
    }
    trim(p->src, &cs, &ce);
    n = parse_node(p, kind, line, col);
    if (n == NULL)
        return -1;
    if (kind == TMPL_PARTIAL)
        return parse_partial(p, n, cs, ce, own_ind);
    if (parse_name(p, n, cs, ce, false) != 0)
        return -1;
    if (kind == TMPL_SECTION || kind == TMPL_INVERTED) {
        p->open[p->nopen++] = p->nnodes - 1;
        p->last_text = NO_NODE;
    }
    return 0;
}

/* parse_step - find and handle the next tag; 1 when the source is done. */
static int parse_step(struct parse *p)
{
    const char *src = p->src;
    size_t len = p->len;
    size_t ts = find(src, len, p->pos, '\0', p->otag, p->olen);
    size_t s, cs, ce, te, ws = ts, eol = 0;
    char sigil = '\0', close_pre = '\0';
    bool standalone = false;
    int line, col;

    if (ts == SIZE_MAX) {
        if (parse_text(p, p->pos, len) != 0)
            return -1;
        p->pos = len;
        return 1;
    }
    s = ts + p->olen;
    while (s < len && is_space(src[s]))
        s++;
    if (s < len && src[s] != '\0' && strchr("#^/!=>&{", src[s]) != NULL) {
        sigil = src[s];
        cs = s + 1;
    } else {
        cs = ts + p->olen;
    }
    if (sigil == '{')
        close_pre = '}';
    else if (sigil == '=')
        close_pre = '=';
    ce = find(src, len, cs, close_pre, p->ctag, p->clen);
    if (ce == SIZE_MAX) {
        parse_where(p, ts, &line, &col);
        return tmpl_fail(p->err, p->name, line, col, false, "unclosed tag (no \"%s%.*s\" after it)",
                         close_pre == '}' ? "}" : close_pre == '=' ? "=" : "",
                         quote_width(p->ctag, p->clen), p->ctag);
    }
    te = ce + (close_pre != '\0') + p->clen;

    /* Standalone: the only thing on its line but whitespace.  The line,
     * its indentation and its line break then vanish from the output. */
    if (sigil != '\0' && sigil != '&' && sigil != '{') {
        ws = ts;
        while (ws > p->pos && (src[ws - 1] == ' ' || src[ws - 1] == '\t'))
            ws--;
        if (ws > p->pos ? src[ws - 1] == '\n' : !p->line_tagged) {
            eol = te;
            while (eol < len && (src[eol] == ' ' || src[eol] == '\t'))
                eol++;
            if (eol == len)
                standalone = true;
            else if (src[eol] == '\n')
                standalone = true, eol++;
            else if (src[eol] == '\r' && eol + 1 < len && src[eol + 1] == '\n')
                standalone = true, eol += 2;
        }
    }
    /* Text first: positions are counted forwards only. */
    if (standalone) {
        size_t own[2] = {ws, ts};

        if (parse_text(p, p->pos, ws) != 0)
            return -1;
        parse_where(p, ts, &line, &col);
        if (parse_tag(p, sigil, cs, ce, line, col, own) != 0)
            return -1;
        p->pos = eol;
        p->line_tagged = false;
        p->line_start = true;
        return 0;
    }
    if (parse_text(p, p->pos, ts) != 0 || parse_indent(p, ts) != 0)
        return -1;
    parse_where(p, ts, &line, &col);
    if (parse_tag(p, sigil, cs, ce, line, col, NULL) != 0)
        return -1;
    p->pos = te;
    p->line_tagged = true;
    return 0;
}

/* compile - tmpl_compile with an indentation for every line (partials). */
static struct tmpl *compile(const char *src, size_t len, const char *name, const char *ind,
                            size_t ind_len, struct tmpl_error *err)
{
    struct parse *p = NULL;
    struct tmpl *t = NULL;
    size_t nodes_size;
    int rc;

    if (name == NULL)
        name = "";
    if (len > TMPL_MAX_SOURCE) {
        tmpl_fail(err, name, 0, 0, false, "template larger than %d bytes", TMPL_MAX_SOURCE);
        return NULL;
    }
    /* The parser state holds the section stack: on the heap, not the C stack. */
    p = herold_calloc(1, sizeof *p);
    if (p == NULL) {
        tmpl_fail(err, name, 0, 0, true, "out of memory");
        return NULL;
    }
    p->src = src ? src : "";
    p->len = src ? len : 0;
    p->name = name;
    p->ind = ind;
    p->ind_len = ind_len;
    p->err = err;
    p->last_text = NO_NODE;
    p->otag = "{{";
    p->ctag = "}}";
    p->olen = p->clen = 2;
    p->line_start = true;
    p->line = 1;
    while ((rc = parse_step(p)) == 0)
        ;
    if (rc < 0)
        goto fail;
    if (p->nopen > 0) {
        const struct tmpl_node *o = &p->nodes[p->open[p->nopen - 1]];

        tmpl_fail(err, name, o->line, o->col, false, "unclosed section \"%.*s\"",
                  quote_width(p->arena + o->off, o->len), p->arena + o->off);
        goto fail;
    }
    /* One block: the struct, then the nodes, then the arena. */
    nodes_size = p->nnodes * sizeof(struct tmpl_node);
    t = herold_malloc(sizeof *t + nodes_size + p->alen + 1);
    if (t == NULL) {
        parse_nomem(p);
        goto fail;
    }
    snprintf(t->name, sizeof t->name, "%s", name);
    t->nodes = (struct tmpl_node *)(t + 1);
    t->nnodes = p->nnodes;
    t->arena = (char *)(t + 1) + nodes_size;
    t->text_bytes = p->text_bytes;
    if (nodes_size > 0)
        memcpy(t->nodes, p->nodes, nodes_size);
    if (p->alen > 0)
        memcpy(t->arena, p->arena, p->alen);
    t->arena[p->alen] = '\0';
fail:
    herold_free(p->nodes);
    herold_free(p->arena);
    herold_free(p);
    return t;
}

/*
 * tmpl_compile parses the Mustache source src (len bytes, need not be
 * NUL-terminated) into a new immutable template named name, which errors
 * from this call and from rendering it quote.  It returns the template,
 * owned by the caller and freed with tmpl_free, or NULL with err filled:
 * the message, the name, and the line and column (1-based, in bytes) of
 * the offending tag; err->nomem when memory ran out.  src is borrowed only
 * for the call.  Nesting is bounded (TMPL_MAX_NESTING) and parsing is
 * iterative, so no source can exhaust the stack.
 */
struct tmpl *tmpl_compile(const char *src, size_t len, const char *name, struct tmpl_error *err)
{
    return compile(src, len, name, "", 0, err);
}

/*
 * tmpl_free releases a template from tmpl_compile.  Renders using it must
 * have returned.  NULL is a no-op.
 */
void tmpl_free(struct tmpl *t)
{
    herold_free(t);
}

/*
 * tmpl_names calls fn(name, arg) once for each variable, section and
 * inverted-section tag of t in template order, section bodies included,
 * with the name as written (a dotted name whole).  "." (the current item),
 * close tags, comments, partial names and the contents of partials are not
 * reported.  It allocates nothing and cannot fail; t or fn NULL is a no-op.
 */
void tmpl_names(const struct tmpl *t, void (*fn)(const char *name, void *arg), void *arg)
{
    if (t == NULL || fn == NULL)
        return;
    for (size_t i = 0; i < t->nnodes; i++) {
        const struct tmpl_node *n = &t->nodes[i];

        if (n->kind != TMPL_TEXT && n->kind != TMPL_PARTIAL && n->nparts > 0)
            fn(t->arena + n->off, arg);
    }
}

/* ---- rendering ---- */

struct render_frame {
    const struct tmpl *t;
    size_t pc, end;            /* next node, and the end of this body */
    size_t body;               /* first node of a list section's body */
    const json_t *list;        /* list being iterated, or NULL */
    size_t idx;
    bool pushed;               /* pushed a context entry */
    bool partial;              /* counts towards max_depth */
};

struct render_cached {
    uint32_t hash;
    const char *name, *ind;    /* borrowed from the tag's template */
    size_t ind_len;
    struct tmpl *t;            /* NULL: no such partial */
};

struct render {
    const struct tmpl_render_opts *o;
    tmpl_escape_fn *escape;
    int max_depth;
    size_t max_output, max_steps, steps;
    struct tmpl_buf *out;
    size_t base;
    struct tmpl_error *err;
    int depth;

    const json_t **ctx;
    size_t nctx, ctx_cap;
    struct render_frame *fr;
    size_t nfr, fr_cap;
    struct render_cached *cache;
    size_t ncache, cache_cap;

    const json_t *ctx_small[RENDER_SMALL_CTX];
    struct render_frame fr_small[RENDER_SMALL_FRAMES];
};

/* render_fail - an error at node n of t. */
static int render_fail(struct render *r, const struct tmpl *t, const struct tmpl_node *n,
                       bool nomem, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int render_fail(struct render *r, const struct tmpl *t, const struct tmpl_node *n,
                       bool nomem, const char *fmt, ...)
{
    struct tmpl_error *e = r->err;
    va_list ap;

    if (e == NULL)
        return -1;
    snprintf(e->name, sizeof e->name, "%s", t->name);
    e->line = n && !nomem ? n->line : 0;
    e->col = n && !nomem ? n->col : 0;
    e->nomem = nomem;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* render_grow - array v (cap elements of size sz, perhaps the in-struct
 * array small) doubled; NULL when out of memory, v then unchanged. */
static void *render_grow(void *v, size_t *cap, const void *small, size_t sz)
{
    size_t ncap = *cap * 2;
    void *p;

    if (v == small) {
        p = herold_malloc(ncap * sz);
        if (p != NULL)
            memcpy(p, small, *cap * sz);
    } else {
        p = herold_realloc(v, ncap * sz);
    }
    if (p != NULL)
        *cap = ncap;
    return p;
}

/* render_push_ctx - push v onto the context stack. */
static int render_push_ctx(struct render *r, const json_t *v)
{
    if (r->nctx == r->ctx_cap) {
        const json_t **c = render_grow(r->ctx, &r->ctx_cap, r->ctx_small, sizeof *r->ctx);

        if (c == NULL)
            return -1;
        r->ctx = c;
    }
    r->ctx[r->nctx++] = v;
    return 0;
}

/* render_push_frame - a new frame for t's nodes [pc, end); NULL when out of memory. */
static struct render_frame *render_push_frame(struct render *r, const struct tmpl *t,
                                              size_t pc, size_t end)
{
    struct render_frame *f;

    if (r->nfr == r->fr_cap) {
        f = render_grow(r->fr, &r->fr_cap, r->fr_small, sizeof *r->fr);
        if (f == NULL)
            return NULL;
        r->fr = f;
    }
    f = &r->fr[r->nfr++];
    memset(f, 0, sizeof *f);
    f->t = t;
    f->pc = pc;
    f->end = end;
    return f;
}

/* render_put - append n bytes for node n, within max_output. */
static int render_put(struct render *r, const struct tmpl *t, const struct tmpl_node *n,
                      const char *s, size_t len)
{
    if (len > r->max_output - (r->out->len - r->base))
        return render_fail(r, t, n, false, "output larger than %zu bytes", r->max_output);
    if (tmpl_buf_append(r->out, s, len) != 0)
        return render_fail(r, t, n, true, "out of memory");
    return 0;
}

/* render_real - d in the shortest %g form that reads back as d. */
static size_t render_real(char *buf, size_t size, double d)
{
    const char *dp = localeconv()->decimal_point;
    size_t dplen = dp ? strlen(dp) : 0;
    char *at;

    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    /* A locale's decimal comma would turn 1.21 into "1,21": undo it. */
    if (dplen > 0 && strcmp(dp, ".") != 0 && (at = strstr(buf, dp)) != NULL) {
        *at = '.';
        memmove(at + 1, at + dplen, strlen(at + dplen) + 1);
    }
    return strlen(buf);
}

/* render_value - interpolate v at node n, escaped or not. */
static int render_value(struct render *r, const struct tmpl *t, const struct tmpl_node *n,
                        const json_t *v)
{
    char num[64];
    const char *s;
    size_t len, room;

    switch (json_typeof(v)) {
    case JSON_STRING:
        s = json_string_value(v);
        len = json_string_length(v);
        break;
    case JSON_INTEGER:
        len = (size_t)snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        s = num;
        break;
    case JSON_REAL:
        len = render_real(num, sizeof num, json_real_value(v));
        s = num;
        break;
    case JSON_TRUE:
        s = "true";
        len = 4;
        break;
    case JSON_FALSE:
        s = "false";
        len = 5;
        break;
    default:
        return 0;   /* null, objects and lists print nothing */
    }
    if (n->kind == TMPL_RAW || r->escape == tmpl_escape_none)
        return render_put(r, t, n, s, len);
    room = r->max_output - (r->out->len - r->base);
    /* HTML escaping never shrinks text: refuse before growing the buffer. */
    if (r->escape == tmpl_escape_html && len > room)
        return render_fail(r, t, n, false, "output larger than %zu bytes", r->max_output);
    errno = 0;
    if (r->escape(r->out, s, len) != 0) {
        if (errno == ENOMEM)
            return render_fail(r, t, n, true, "out of memory");
        return render_fail(r, t, n, false, "escaping a value failed");
    }
    if (r->out->len - r->base > r->max_output)
        return render_fail(r, t, n, false, "output larger than %zu bytes", r->max_output);
    return 0;
}

/* render_lookup - the value node n names, or NULL when nothing resolves. */
static const json_t *render_lookup(const struct render *r, const struct tmpl *t,
                                   const struct tmpl_node *n)
{
    const char *part = t->arena + n->parts;
    const json_t *v = NULL;

    if (n->nparts == 0)
        return r->nctx > 0 ? r->ctx[r->nctx - 1] : NULL;
    /* The first part: the innermost context that has it. */
    for (size_t i = r->nctx; i-- > 0;)
        if (json_is_object(r->ctx[i]) && (v = json_object_get(r->ctx[i], part)) != NULL)
            break;
    /* Later parts: only in what the part before resolved to. */
    for (size_t k = 1; v != NULL && k < n->nparts; k++) {
        part += strlen(part) + 1;
        v = json_is_object(v) ? json_object_get(v, part) : NULL;
    }
    return v;
}

/* render_resolve - render_lookup, reporting a miss to on_missing. */
static const json_t *render_resolve(const struct render *r, const struct tmpl *t,
                                    const struct tmpl_node *n)
{
    const json_t *v = render_lookup(r, t, n);

    if (v == NULL && r->o->on_missing != NULL)
        r->o->on_missing(t->arena + n->off, r->o->missing_arg);
    return v;
}

/* render_truthy - Mustache truth: all but missing, false, null, [] and "".
 * The spec leaves "" open; treating it as false lets a template write
 * {{#hinweis}}Hinweis: {{hinweis}}{{/hinweis}} and print nothing for an
 * empty note, which is what staff expect.  0 stays true ("0 Grad"). */
static bool render_truthy(const json_t *v)
{
    return v != NULL && !json_is_false(v) && !json_is_null(v) &&
           !(json_is_array(v) && json_array_size(v) == 0) &&
           !(json_is_string(v) && json_string_length(v) == 0);
}

/* render_partial - the compiled partial for tag n of t (NULL: none). */
static int render_partial(struct render *r, const struct tmpl *t, const struct tmpl_node *n,
                          const struct tmpl **out)
{
    const char *name = t->arena + n->off;
    const char *ind = t->arena + n->ind;
    const char *src;
    struct tmpl *pt = NULL;
    struct render_cached *c;

    for (size_t i = 0; i < r->ncache; i++) {
        c = &r->cache[i];
        if (c->hash == n->hash && c->ind_len == n->ind_len && strcmp(c->name, name) == 0 &&
            memcmp(c->ind, ind, n->ind_len) == 0) {
            *out = c->t;
            return 0;
        }
    }
    src = r->o->partial != NULL ? r->o->partial(name, r->o->partial_arg) : NULL;
    if (src != NULL) {
        pt = compile(src, strlen(src), name, ind, n->ind_len, r->err);
        if (pt == NULL)
            return -1;
    }
    if (r->ncache == r->cache_cap) {
        size_t cap = r->cache_cap ? r->cache_cap * 2 : 8;
        struct render_cached *v = herold_realloc(r->cache, cap * sizeof *v);

        if (v == NULL) {
            tmpl_free(pt);
            return render_fail(r, t, n, true, "out of memory");
        }
        r->cache = v;
        r->cache_cap = cap;
    }
    c = &r->cache[r->ncache++];
    c->hash = n->hash;
    c->name = name;
    c->ind = ind;
    c->ind_len = n->ind_len;
    c->t = pt;
    *out = pt;
    return 0;
}

/* render_pop - the innermost frame's body is done: start its list's next
 * item, or leave the frame. */
static void render_pop(struct render *r)
{
    struct render_frame *f = &r->fr[r->nfr - 1];

    if (f->list != NULL && ++f->idx < json_array_size(f->list)) {
        r->ctx[r->nctx - 1] = json_array_get(f->list, f->idx);
        f->pc = f->body;
        return;
    }
    if (f->pushed)
        r->nctx--;
    if (f->partial)
        r->depth--;
    r->nfr--;
}

/* render_node - render one node of the innermost frame. */
static int render_node(struct render *r)
{
    struct render_frame *f = &r->fr[r->nfr - 1];
    const struct tmpl *t = f->t;
    size_t i = f->pc;
    const struct tmpl_node *n = &t->nodes[i];
    const struct tmpl *pt = NULL;
    const json_t *v;

    switch (n->kind) {
    case TMPL_TEXT:
        f->pc++;
        return render_put(r, t, n, t->arena + n->off, n->len);
    case TMPL_VAR:
    case TMPL_RAW:
        f->pc++;
        v = render_resolve(r, t, n);
        return v != NULL ? render_value(r, t, n, v) : 0;
    case TMPL_SECTION:
        /* Set the parent's next node first: pushing may move the frames. */
        f->pc = n->end;
        v = render_resolve(r, t, n);
        if (!render_truthy(v) || n->end == i + 1)
            return 0;
        f = render_push_frame(r, t, i + 1, n->end);
        if (f == NULL)
            return render_fail(r, t, n, true, "out of memory");
        if (json_is_array(v)) {
            f->list = v;
            f->body = i + 1;
            v = json_array_get(v, 0);
        }
        if (render_push_ctx(r, v) != 0) {
            r->nfr--;
            return render_fail(r, t, n, true, "out of memory");
        }
        f->pushed = true;
        return 0;
    case TMPL_INVERTED:
        f->pc = n->end;
        v = render_resolve(r, t, n);
        if (render_truthy(v) || n->end == i + 1)
            return 0;
        return render_push_frame(r, t, i + 1, n->end) != NULL
                   ? 0
                   : render_fail(r, t, n, true, "out of memory");
    case TMPL_PARTIAL:
        f->pc++;
        if (render_partial(r, t, n, &pt) != 0)
            return -1;
        if (pt == NULL || pt->nnodes == 0)
            return 0;
        if (r->depth >= r->max_depth)
            return render_fail(r, t, n, false, "partial nesting deeper than %d", r->max_depth);
        f = render_push_frame(r, pt, 0, pt->nnodes);
        if (f == NULL)
            return render_fail(r, t, n, true, "out of memory");
        f->partial = true;
        r->depth++;
        return 0;
    }
    return 0;
}

/*
 * tmpl_render renders t against data (borrowed; NULL means no context at
 * all) and appends the text to out, which the caller owns and frees with
 * tmpl_buf_free.  opts may be NULL for the defaults: HTML escaping, no
 * partials, partial nesting 16, output 1 MiB, 1048576 steps.  Partials are
 * fetched through opts->partial when first used and compiled for this
 * render only.  Returns 0 with out->data non-NULL; or -1 with err filled
 * (position of the tag or text where rendering stopped; err->nomem for
 * memory) and out->len reset to its value on entry.  on_missing and
 * partial run synchronously, on the caller's thread.
 */
int tmpl_render(const struct tmpl *t, const json_t *data, const struct tmpl_render_opts *opts,
                struct tmpl_buf *out, struct tmpl_error *err)
{
    static const struct tmpl_render_opts defaults;
    struct render rs;
    struct render *r = &rs;
    size_t guess;
    int rc = -1;

    assert(t != NULL && out != NULL);
    if (opts == NULL)
        opts = &defaults;
    /* Frames and contexts start in the small arrays inside rs (a fixed
     * 1.5 KiB of stack), and move to the heap only for deep nesting. */
    memset(r, 0, offsetof(struct render, ctx_small));
    r->o = opts;
    r->escape = opts->escape ? opts->escape : tmpl_escape_html;
    r->max_depth = opts->max_depth > 0 ? opts->max_depth : RENDER_DEFAULT_DEPTH;
    r->max_output = opts->max_output > 0 ? opts->max_output : RENDER_DEFAULT_OUTPUT;
    r->max_steps = opts->max_steps > 0 ? opts->max_steps : RENDER_DEFAULT_STEPS;
    r->out = out;
    r->base = out->len;
    r->err = err;
    r->ctx = r->ctx_small;
    r->ctx_cap = RENDER_SMALL_CTX;
    r->fr = r->fr_small;
    r->fr_cap = RENDER_SMALL_FRAMES;

    guess = t->text_bytes + t->text_bytes / 4 + 64;
    if (buf_reserve(out, guess < r->max_output ? guess : r->max_output) != 0) {
        render_fail(r, t, NULL, true, "out of memory");
        goto done;
    }
    out->data[out->len] = '\0';
    if (data != NULL)
        r->ctx[r->nctx++] = data;
    render_push_frame(r, t, 0, t->nnodes);   /* fits in fr_small */
    while (r->nfr > 0) {
        struct render_frame *f = &r->fr[r->nfr - 1];

        if (++r->steps > r->max_steps) {
            const struct tmpl_node *n = f->pc < f->end ? &f->t->nodes[f->pc] : NULL;

            render_fail(r, f->t, n, false, "rendering took more than %zu steps", r->max_steps);
            goto done;
        }
        if (f->pc >= f->end) {
            render_pop(r);
            continue;
        }
        if (render_node(r) != 0)
            goto done;
    }
    rc = 0;
done:
    if (rc != 0) {
        out->len = r->base;
        if (out->data != NULL)
            out->data[out->len] = '\0';
    }
    for (size_t i = 0; i < r->ncache; i++)
        tmpl_free(r->cache[i].t);
    herold_free(r->cache);
    if (r->ctx != r->ctx_small)
        herold_free(r->ctx);
    if (r->fr != r->fr_small)
        herold_free(r->fr);
    return rc;
}
