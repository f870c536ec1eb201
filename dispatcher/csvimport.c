/*
 * csvimport - the CSV import of citizens (docs/import.md): a bounded line
 * reader, libcsv for the quoting of one line, the mapping of the cells
 * onto a struct citizen_in, and the two passes (check everything, then
 * write).  The only file that includes <csv.h>.
 *
 * Owns the open file, one line and one row buffer, the error report (the
 * first CSVIMPORT_REPORT_MAX invalid rows by line), a bitmap of invalid
 * rows, the fingerprints of the ids seen, and during pass 2 the writer
 * processes it forks (each reports every row of its share through a pipe;
 * all are reaped before csvimport_run returns).  A record is exactly one
 * line: no cell may hold a line break, so a quoted line break is refused
 * as a quoting error, and an unclosed quote spoils one line, not the rest
 * of the file.
 *
 * Never prints a cell's value, which may be personal data: reports name
 * the line, the column and the reason only.
 */
#include "csvimport.h"

#include <csv.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "citizen.h"
#include "herr.h"

enum { CSVIMPORT_OK = 0, CSVIMPORT_INVALID = 1, CSVIMPORT_ERROR = 2 };

enum csvimport_col {
    COL_ID, COL_EMAIL, COL_PHONE, COL_LANG, COL_TZ, COL_QUIET, COL_TOPICS,
    COL_CONSENT, COL_CONSENT_AT, COL_CONFIRMED_AT, COL_N
};

static const char *const csvimport_col_name[COL_N] = {
    "id", "email", "phone", "lang", "tz", "quiet", "topics", "consent",
    "consent_at", "confirmed_at",
};

#define CSVIMPORT_OPTIONS (CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL | CSV_EMPTY_IS_NULL)
#define CSVIMPORT_CHUNK 65536
#define CSVIMPORT_REDRAW_S 0.1
#define CSVIMPORT_WRITERS 8             /* writer processes for a big file */
#define CSVIMPORT_PARALLEL_MIN 500      /* valid rows from which they are used */

/* One line of the file, without its line end (LF or CR LF). */
struct csvimport_reader {
    FILE *f;
    unsigned char chunk[CSVIMPORT_CHUNK];
    size_t pos, len;
    bool eof;
    long long offset;                   /* bytes consumed (progress of pass 1) */
    unsigned long line;                 /* number of the line in buf, from 1 */
    char buf[CSVIMPORT_LINE_MAX + 1];
    size_t n;
    bool too_long;                      /* longer than CSVIMPORT_LINE_MAX; buf holds its start */
};

/* The cells of one line, copied out of libcsv's buffer. */
struct csvimport_row {
    char buf[CSVIMPORT_LINE_MAX + COL_N + 2];
    size_t used;
    char *cell[COL_N + 1];              /* by position; NULL: empty */
    size_t cap;                         /* positions stored */
    size_t ncells;                      /* cells seen, also beyond cap */
    int records;                        /* records ended on the line */
    long bad_cell;                      /* first cell with a bad byte, -1: none */
    const char *bad_why;
};

struct csvimport_error {
    unsigned long line;
    char where[96];                     /* "column email", "column topics, item 2"; "" */
    char msg[256];
};

/* Fingerprints of the ids seen (open addressing; hash 0 marks a free
 * slot).  Ids are compared by a 64-bit hash, not kept: two different ids
 * share one with a chance of about rows^2 / 2^65 (3e-8 for a million
 * rows), and then both rows are reported as duplicates: the error is on
 * the safe side. */
struct csvimport_id {
    uint64_t hash;
    uint32_t row, line;
};

struct csvimport {
    const struct herold_config *cfg;
    struct redisq_sync *s;
    struct csvimport_reader rd;
    struct csv_parser parser;
    struct csvimport_row row;
    enum csvimport_col colmap[COL_N];   /* column of each position */
    size_t ncols;
    struct stat st;

    long rows, invalid;                 /* pass 1 */
    struct csvimport_error errors[CSVIMPORT_REPORT_MAX];
    size_t nerrors;
    unsigned char *bad;                 /* bit per row index: do not write it */
    struct csvimport_id *ids;
    size_t ids_cap, ids_n;

    long done, created, changed, unchanged, skipped, optins;    /* pass 2 */
    bool failed;                        /* pass 2 stopped: */
    unsigned long fail_line;            /* where (0: not at a row) */
    struct herr fail;                   /* and why */
    int out_fd;                         /* a writer process's pipe to the importer */

    bool tty;
    double t0, last_draw;
};

/* csvimport_now - monotonic seconds. */
static double csvimport_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- the line reader ---- */

/* csvimport_reader_next - the next line into r->buf; 1 a line, 0 the end
 * of the file, -1 a read error (err). */
static int csvimport_reader_next(struct csvimport_reader *r, struct herr *err)
{
    bool any = false;

    r->n = 0;
    r->too_long = false;
    for (;;) {
        const unsigned char *start, *nl;
        size_t take, room;

        if (r->pos == r->len) {
            if (r->eof)
                break;
            r->pos = 0;
            r->len = fread(r->chunk, 1, sizeof r->chunk, r->f);
            if (r->len == 0) {
                if (ferror(r->f))
                    return herr_sys(err, "read");
                r->eof = true;
                break;
            }
        }
        any = true;
        start = r->chunk + r->pos;
        nl = memchr(start, '\n', r->len - r->pos);
        take = nl != NULL ? (size_t)(nl - start) : r->len - r->pos;
        room = CSVIMPORT_LINE_MAX - r->n;
        if (take > room)
            r->too_long = true;
        memcpy(r->buf + r->n, start, take < room ? take : room);
        r->n += take < room ? take : room;
        r->pos += take + (nl != NULL);
        r->offset += (long long)(take + (nl != NULL));
        if (nl != NULL)
            break;
    }
    if (!any)
        return 0;
    r->line++;
    if (r->line == 1 && r->n >= 3 && memcmp(r->buf, "\xef\xbb\xbf", 3) == 0) {
        memmove(r->buf, r->buf + 3, r->n - 3);
        r->n -= 3;
    }
    if (!r->too_long && r->n > 0 && r->buf[r->n - 1] == '\r')
        r->n--;
    r->buf[r->n] = '\0';
    return 1;
}

/* ---- one line into cells (libcsv) ---- */

/* csvimport_text_ok - valid UTF-8 without control characters. */
static bool csvimport_text_ok(const unsigned char *s, size_t n, const char **why)
{
    size_t i = 0;

    while (i < n) {
        unsigned c = s[i];
        size_t k, len;
        unsigned long cp;

        if (c < 0x20 || c == 0x7f) {
            *why = "control character (tab, line break, NUL ...) in the cell";
            return false;
        }
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            len = 2, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            len = 3, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            len = 4, cp = c & 0x07;
        else
            len = 0, cp = 0;
        if (len == 0 || i + len > n)
            goto bad;
        for (k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                goto bad;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        /* overlong forms, UTF-16 surrogates, beyond U+10FFFF */
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
            goto bad;
        if (cp >= 0x80 && cp < 0xa0) {
            *why = "control character in the cell";
            return false;
        }
        i += len;
    }
    return true;
bad:
    *why = "not UTF-8 (save the file as UTF-8)";
    return false;
}

/* csvimport_on_cell - libcsv's end-of-cell callback. */
static void csvimport_on_cell(void *s, size_t len, void *arg)
{
    struct csvimport_row *row = arg;
    size_t i = row->ncells++;
    const char *why;

    if (i >= row->cap)
        return;
    row->cell[i] = NULL;
    if (s == NULL || len == 0)
        return;
    if (row->bad_cell < 0 && !csvimport_text_ok(s, len, &why)) {
        row->bad_cell = (long)i;
        row->bad_why = why;
    }
    /* The cells of a line are never longer than the line itself. */
    if (row->used + len + 1 > sizeof row->buf)
        abort();
    memcpy(row->buf + row->used, s, len);
    row->buf[row->used + len] = '\0';
    row->cell[i] = row->buf + row->used;
    row->used += len + 1;
}

/* csvimport_on_record - libcsv's end-of-record callback. */
static void csvimport_on_record(int c, void *arg)
{
    struct csvimport_row *row = arg;

    (void)c;
    row->records++;
}

/* csvimport_never_term - no character ends a record inside a line (the
 * reader has split the lines); a CR inside a line is then a cell's
 * content, and refused as a control character. */
static int csvimport_never_term(unsigned char c)
{
    (void)c;
    return 0;
}

static int csvimport_parser_init(struct csv_parser *p)
{
    if (csv_init(p, CSVIMPORT_OPTIONS) != 0)
        return -1;
    csv_set_term_func(p, csvimport_never_term);
    return 0;
}

/* csvimport_split - the cells of im->rd's line into im->row, storing at
 * most cap positions.  0 ok (row->records is 0 for a blank line); -1 a
 * quoting error (*why); -2 out of memory. */
static int csvimport_split(struct csvimport *im, size_t cap, const char **why)
{
    struct csvimport_row *row = &im->row;
    struct csv_parser *p = &im->parser;
    size_t n = im->rd.n;

    row->used = 0;
    row->cap = cap;
    row->ncells = 0;
    row->records = 0;
    row->bad_cell = -1;
    if (csv_parse(p, im->rd.buf, n, csvimport_on_cell, csvimport_on_record, row) != n ||
        csv_error(p) != CSV_SUCCESS) {
        *why = "bad quoting: a \" inside an unquoted cell, or text after a closing \" "
               "(quote the whole cell and double the quotes inside it)";
        goto reset;
    }
    if (csv_fini(p, csvimport_on_cell, csvimport_on_record, row) != 0) {
        *why = "bad quoting: a quoted cell is not closed on its line "
               "(a cell cannot hold a line break)";
        goto reset;
    }
    return 0;
reset:
    if (csv_error(p) == CSV_ENOMEM) {
        *why = "out of memory";
        return -2;
    }
    /* After a parse error the parser is mid-cell: start afresh. */
    csv_free(p);
    if (csvimport_parser_init(p) != 0)
        return -2;
    return -1;
}

/* ---- the header ---- */

/* csvimport_col_find - the column called name (case-insensitive), or -1. */
static int csvimport_col_find(const char *name)
{
    for (int c = 0; c < COL_N; c++)
        if (strcasecmp(name, csvimport_col_name[c]) == 0)
            return c;
    return -1;
}

/* csvimport_printable_name - whether an unknown header cell may be quoted
 * in a message: a word, not something that could be a contact point (a
 * file without a header row has its first citizen there). */
static bool csvimport_printable_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 32)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              s[i] == '_' || s[i] == '-' || s[i] == ' '))
            return false;
    return true;
}

/* csvimport_header - read the header row (skipping blank lines before
 * it) into im->colmap.  0, or -1 with err: HERR_INPUT for a bad header
 * (err->path "header", or empty for an empty file), else a read or
 * memory error. */
static int csvimport_header(struct csvimport *im, struct herr *err)
{
    struct csvimport_row *row = &im->row;
    bool seen[COL_N] = { false };
    const char *why;
    int rc;

    do {
        rc = csvimport_reader_next(&im->rd, err);
        if (rc < 0)
            return -1;
        if (rc == 0)
            return herr_set(err, HERR_INPUT, NULL,
                            "the file is empty: the first line must name the columns, "
                            "e.g. id,email,phone,topics");
        if (im->rd.too_long)
            return herr_set(err, HERR_INPUT, "header",
                            "longer than %d bytes", CSVIMPORT_LINE_MAX);
        rc = csvimport_split(im, COL_N + 1, &why);
        if (rc == -2)
            return herr_set(err, HERR_RESOURCE, NULL, "out of memory");
        if (rc == -1)
            return herr_set(err, HERR_INPUT, "header", "%s", why);
    } while (row->records == 0);

    if (row->ncells > COL_N)
        return herr_set(err, HERR_INPUT, "header",
                        "%zu columns, but there are only %d known ones", row->ncells, COL_N);
    if (row->bad_cell >= 0)
        return herr_set(err, HERR_INPUT, "header", "column %ld: %s", row->bad_cell + 1,
                        row->bad_why);
    /* German spreadsheet settings write ';' between cells */
    if (row->ncells == 1 && row->cell[0] != NULL &&
        strchr(row->cell[0], ';') != NULL)
        return herr_set(err, HERR_INPUT, "header",
                        "cells are separated by ';', but herold reads comma-separated "
                        "files (choose ',' as the field delimiter when saving)");
    for (size_t i = 0; i < row->ncells; i++) {
        const char *name = row->cell[i];
        int c;

        if (name == NULL)
            return herr_set(err, HERR_INPUT, "header", "column %zu has no name", i + 1);
        c = csvimport_col_find(name);
        if (c < 0 && csvimport_printable_name(name))
            return herr_set(err, HERR_INPUT, "header",
                            "column %zu: unknown column \"%s\" (known: id, email, phone, "
                            "lang, tz, quiet, topics, consent, consent_at, confirmed_at)",
                            i + 1, name);
        if (c < 0)
            return herr_set(err, HERR_INPUT, "header",
                            "column %zu: unknown column name (known: id, email, phone, "
                            "lang, tz, quiet, topics, consent, consent_at, confirmed_at; "
                            "is the header row missing?)", i + 1);
        if (seen[c])
            return herr_set(err, HERR_INPUT, "header", "column %zu: \"%s\" named twice",
                            i + 1, csvimport_col_name[c]);
        seen[c] = true;
        im->colmap[i] = (enum csvimport_col)c;
    }
    if (!seen[COL_ID])
        return herr_set(err, HERR_INPUT, "header", "no column \"id\" (every row needs an id)");
    im->ncols = row->ncells;
    return 0;
}

/* ---- one row into a struct citizen_in ---- */

/* csvimport_trim - s without surrounding spaces (in place). */
static char *csvimport_trim(char *s)
{
    size_t n;

    while (*s == ' ')
        s++;
    n = strlen(s);
    while (n > 0 && s[n - 1] == ' ')
        s[--n] = '\0';
    return s;
}

/* csvimport_next_item - the next sep-separated, trimmed item of *cursor
 * (in place), NULL after the last. */
static char *csvimport_next_item(char **cursor, char sep)
{
    char *s = *cursor, *e;

    if (s == NULL)
        return NULL;
    e = strchr(s, sep);
    if (e != NULL) {
        *e = '\0';
        *cursor = e + 1;
    } else {
        *cursor = NULL;
    }
    return csvimport_trim(s);
}

/* csvimport_topics - "abfall:email+sms;kultur:email" into in->topics. */
static int csvimport_topics(char *cell, struct citizen_in *in, struct herr *err)
{
    char *cur = cell, *item;

    while ((item = csvimport_next_item(&cur, ';')) != NULL) {
        char path[32], *colon, *topic, *ch, *w;

        if (*item == '\0')
            continue;
        snprintf(path, sizeof path, "topics[%zu]", in->ntopics);
        if (in->ntopics == CITIZEN_MAX_TOPICS)
            return herr_set(err, HERR_INPUT, "topics", "more than %d topics",
                            CITIZEN_MAX_TOPICS);
        colon = strchr(item, ':');
        if (colon == NULL)
            return herr_set(err, HERR_INPUT, path,
                            "expected topic:channels, e.g. abfall:email+sms");
        *colon = '\0';
        topic = csvimport_trim(item);
        /* "email + sms" -> "email,sms": channel names hold no spaces */
        for (ch = w = colon + 1; *ch != '\0'; ch++)
            if (*ch != ' ')
                *w++ = *ch == '+' ? ',' : *ch;
        *w = '\0';
        if (*topic == '\0')
            return herr_set(err, HERR_INPUT, path, "no topic before the ':'");
        if (colon[1] == '\0')
            return herr_set(err, HERR_INPUT, path,
                            "no channel after the ':' (e.g. abfall:email+sms)");
        in->topics[in->ntopics].topic = topic;
        in->topics[in->ntopics].channels = colon + 1;
        in->ntopics++;
    }
    return 0;
}

/* csvimport_consents - "email:letter:2026-01;sms:counter:2026-01" into
 * in->consents, with consent_at and confirmed_at (either may be NULL). */
static int csvimport_consents(char *cell, const char *consent_at, const char *confirmed_at,
                              struct citizen_in *in, struct herr *err)
{
    char *cur = cell, *item;

    while ((item = csvimport_next_item(&cur, ';')) != NULL) {
        char path[32], *parts, *channel, *method, *version;
        struct citizen_consent_in *c;

        if (*item == '\0')
            continue;
        snprintf(path, sizeof path, "consents[%zu]", in->nconsents);
        if (in->nconsents == CITIZEN_MAX_CONSENTS)
            return herr_set(err, HERR_INPUT, "consents", "more than %d consents",
                            CITIZEN_MAX_CONSENTS);
        parts = item;
        channel = csvimport_next_item(&parts, ':');
        method = csvimport_next_item(&parts, ':');
        version = parts != NULL ? csvimport_trim(parts) : NULL;
        if (method == NULL || version == NULL || *channel == '\0' || *method == '\0' ||
            *version == '\0')
            return herr_set(err, HERR_INPUT, path,
                            "expected channel:method:text_version, e.g. email:letter:2026-01");
        c = &in->consents[in->nconsents++];
        c->channel = channel;
        c->method = method;
        c->text_version = version;
        c->given_at = consent_at;
        c->confirmed_at = strcmp(method, "import") == 0 ? confirmed_at : NULL;
    }
    return 0;
}

/* csvimport_build - im->row (a line of im->ncols cells) into in, which
 * then borrows the row's cells.  0, or -1 with err naming the field. */
static int csvimport_build(struct csvimport *im, struct citizen_in *in, struct herr *err)
{
    char *c[COL_N] = { NULL };
    bool import_consent = false;

    for (size_t i = 0; i < im->ncols; i++)
        c[im->colmap[i]] = im->row.cell[i];
    memset(in, 0, sizeof *in);
    if (c[COL_ID] == NULL)
        return herr_set(err, HERR_INPUT, "id", "missing (every row needs an id)");
    in->id = c[COL_ID];
    in->email = c[COL_EMAIL];
    in->phone = c[COL_PHONE];
    in->lang = c[COL_LANG];
    in->tz = c[COL_TZ];
    in->quiet = c[COL_QUIET];
    if (c[COL_TOPICS] != NULL && csvimport_topics(c[COL_TOPICS], in, err) != 0)
        return -1;
    if (c[COL_CONSENT] != NULL &&
        csvimport_consents(c[COL_CONSENT], c[COL_CONSENT_AT], c[COL_CONFIRMED_AT], in, err) != 0)
        return -1;
    if (c[COL_CONSENT_AT] != NULL && in->nconsents == 0)
        return herr_set(err, HERR_INPUT, "consent_at", "given, but the row has no consent");
    for (size_t i = 0; i < in->nconsents; i++)
        import_consent |= strcmp(in->consents[i].method, "import") == 0;
    if (c[COL_CONFIRMED_AT] != NULL && !import_consent)
        return herr_set(err, HERR_INPUT, "confirmed_at",
                        "only for a consent with method import (taken over from an "
                        "earlier system)");
    return 0;
}

/* csvimport_where - the column (and item) a field path points at, e.g.
 * "consents[1].confirmed_at" -> "column confirmed_at",
 * "topics[0].channels" -> "column topics, item 1 (channels)". */
static void csvimport_where(const char *path, char *out, size_t size)
{
    static const struct { const char *prefix, *column; } lists[] = {
        { "topics", "topics" }, { "consents", "consent" },
    };

    if (path == NULL || path[0] == '\0') {
        out[0] = '\0';
        return;
    }
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        size_t n = strlen(lists[i].prefix);
        const char *rest;
        char *end;
        unsigned long k;

        if (strncmp(path, lists[i].prefix, n) != 0 || (path[n] != '\0' && path[n] != '['))
            continue;
        if (path[n] == '\0') {
            snprintf(out, size, "column %s", lists[i].column);
            return;
        }
        k = strtoul(path + n + 1, &end, 10);
        rest = *end == ']' ? end + 1 : "";
        if (rest[0] == '.')
            rest++;
        if (i == 1 && (strcmp(rest, "given_at") == 0 || strcmp(rest, "confirmed_at") == 0)) {
            snprintf(out, size, "column %s",
                     rest[0] == 'g' ? "consent_at" : "confirmed_at");
            return;
        }
        if (rest[0] != '\0')
            snprintf(out, size, "column %s, item %lu (%s)", lists[i].column, k + 1, rest);
        else
            snprintf(out, size, "column %s, item %lu", lists[i].column, k + 1);
        return;
    }
    if (csvimport_col_find(path) >= 0)
        snprintf(out, size, "column %s", path);
    else
        snprintf(out, size, "field %s", path);
}

/* ---- the report ---- */

/* csvimport_report - record that the row on line is invalid, keeping the
 * CSVIMPORT_REPORT_MAX lowest line numbers. */
static void csvimport_report(struct csvimport *im, unsigned long line, const char *path,
                             const char *msg)
{
    struct csvimport_error *e;

    im->invalid++;
    if (im->nerrors < CSVIMPORT_REPORT_MAX) {
        e = &im->errors[im->nerrors++];
    } else {
        /* full: replace the highest line if this one is lower (duplicates
         * report an earlier line late) */
        e = &im->errors[0];
        for (size_t i = 1; i < im->nerrors; i++)
            if (im->errors[i].line > e->line)
                e = &im->errors[i];
        if (e->line < line)
            return;
    }
    e->line = line;
    csvimport_where(path, e->where, sizeof e->where);
    snprintf(e->msg, sizeof e->msg, "%s", msg);
}

static int csvimport_error_cmp(const void *a, const void *b)
{
    const struct csvimport_error *x = a, *y = b;

    return (x->line > y->line) - (x->line < y->line);
}

static void csvimport_print_error(unsigned long line, const char *where, const char *msg)
{
    if (where[0] != '\0')
        fprintf(stderr, "herold: line %lu, %s: %s\n", line, where, msg);
    else
        fprintf(stderr, "herold: line %lu: %s\n", line, msg);
}

/* csvimport_print_report - the recorded errors by line, then how many more. */
static void csvimport_print_report(struct csvimport *im)
{
    qsort(im->errors, im->nerrors, sizeof im->errors[0], csvimport_error_cmp);
    for (size_t i = 0; i < im->nerrors; i++)
        csvimport_print_error(im->errors[i].line, im->errors[i].where, im->errors[i].msg);
    if ((size_t)im->invalid > im->nerrors)
        fprintf(stderr, "herold: ... and %ld more invalid rows\n",
                im->invalid - (long)im->nerrors);
}

/* ---- ids seen, and invalid rows ---- */

static bool csvimport_is_bad(const struct csvimport *im, long row)
{
    return im->bad[row / 8] & (1u << (row % 8));
}

static void csvimport_set_bad(struct csvimport *im, long row)
{
    im->bad[row / 8] |= (unsigned char)(1u << (row % 8));
}

/* csvimport_id_hash - FNV-1a with a splitmix64 finish; never 0. */
static uint64_t csvimport_id_hash(const char *id)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (; *id != '\0'; id++)
        h = (h ^ (unsigned char)*id) * 0x100000001b3ULL;
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h != 0 ? h : 1;
}

/* csvimport_id_slot - the slot of hash: the one holding it or a free one. */
static struct csvimport_id *csvimport_id_slot(struct csvimport_id *tab, size_t cap,
                                              uint64_t hash)
{
    size_t i = (size_t)hash & (cap - 1);

    while (tab[i].hash != 0 && tab[i].hash != hash)
        i = (i + 1) & (cap - 1);
    return &tab[i];
}

/* csvimport_id_add - remember that row (on line) has id.  *earlier gets
 * the entry of an earlier row with the same id, or NULL when it is new.
 * 0, or -1 when out of memory. */
static int csvimport_id_add(struct csvimport *im, const char *id, long row,
                            unsigned long line, struct csvimport_id **earlier)
{
    uint64_t h = csvimport_id_hash(id);
    struct csvimport_id *e;

    *earlier = NULL;
    if ((im->ids_n + 1) * 4 > im->ids_cap * 3) {
        size_t cap = im->ids_cap != 0 ? im->ids_cap * 2 : 4096;
        struct csvimport_id *tab = herold_calloc(cap, sizeof *tab);

        if (tab == NULL)
            return -1;
        for (size_t i = 0; i < im->ids_cap; i++)
            if (im->ids[i].hash != 0)
                *csvimport_id_slot(tab, cap, im->ids[i].hash) = im->ids[i];
        herold_free(im->ids);
        im->ids = tab;
        im->ids_cap = cap;
    }
    e = csvimport_id_slot(im->ids, im->ids_cap, h);
    if (e->hash == h) {
        *earlier = e;
        return 0;
    }
    e->hash = h;
    e->row = (uint32_t)row;
    e->line = (uint32_t)line;
    im->ids_n++;
    return 0;
}

/* ---- progress on a terminal ---- */

/* csvimport_progress - redraw the progress line, at most ten times a
 * second unless final; only when stderr is a terminal. */
static void csvimport_progress(struct csvimport *im, int pass, bool final)
{
    double now, rate;

    if (!im->tty)
        return;
    now = csvimport_now();
    if (!final && now - im->last_draw < CSVIMPORT_REDRAW_S)
        return;
    im->last_draw = now;
    if (pass == 1) {
        int pct = im->st.st_size > 0 ? (int)(100 * im->rd.offset / im->st.st_size) : 100;

        fprintf(stderr, "\rchecking   %3d%%  %ld rows", pct, im->rows);
    } else {
        char bar[31];
        long total = im->rows > 0 ? im->rows : 1;
        int fill = (int)(30 * im->done / total);

        memset(bar, '#', (size_t)fill);
        memset(bar + fill, '-', (size_t)(30 - fill));
        bar[30] = '\0';
        rate = now > im->t0 ? im->done / (now - im->t0) : 0;
        fprintf(stderr, "\rimporting [%s] %ld/%ld %3d%% %.0f rows/s  ", bar, im->done,
                im->rows, (int)(100 * im->done / total), rate);
    }
    if (final)
        fputc('\n', stderr);
    fflush(stderr);
}

/* csvimport_progress_break - end the progress line before other output. */
static void csvimport_progress_break(struct csvimport *im)
{
    if (im->tty && im->last_draw > 0) {
        fputc('\n', stderr);
        im->last_draw = 0;
    }
}

/* ---- the passes ---- */

enum csvimport_rowkind { ROW_BLANK, ROW_OK, ROW_BAD, ROW_FATAL };

/* csvimport_row - read the current line as a row into in: ROW_BLANK (not
 * a row), ROW_OK, ROW_BAD (err: path and reason), ROW_FATAL (err).
 * Without check, only the CSV is looked at (and in is not filled): enough
 * to tell rows from blank lines. */
static enum csvimport_rowkind csvimport_row(struct csvimport *im, struct citizen_in *in,
                                            bool check, struct herr *err)
{
    const char *why;
    int rc;

    herr_clear(err);
    in->id = NULL;
    if (im->rd.too_long) {
        herr_set(err, HERR_INPUT, NULL, "longer than %d bytes", CSVIMPORT_LINE_MAX);
        return ROW_BAD;
    }
    if (im->rd.n == 0)
        return ROW_BLANK;
    rc = csvimport_split(im, im->ncols, &why);
    if (rc == -2) {
        herr_set(err, HERR_RESOURCE, NULL, "out of memory");
        return ROW_FATAL;
    }
    if (rc == -1) {
        herr_set(err, HERR_INPUT, NULL, "%s", why);
        return ROW_BAD;
    }
    if (im->row.records == 0)
        return ROW_BLANK;
    if (!check)
        return ROW_OK;
    if (im->row.ncells != im->ncols) {
        herr_set(err, HERR_INPUT, NULL, "%zu cells, but the header has %zu columns",
                 im->row.ncells, im->ncols);
        return ROW_BAD;
    }
    if (im->row.bad_cell >= 0) {
        herr_set(err, HERR_INPUT, csvimport_col_name[im->colmap[im->row.bad_cell]], "%s",
                 im->row.bad_why);
        return ROW_BAD;
    }
    if (csvimport_build(im, in, err) != 0 || citizen_validate(in, err) != 0)
        return ROW_BAD;
    return ROW_OK;
}

/* csvimport_optin_address - an e-mail consent by form asks the citizen
 * to confirm by e-mail, so it needs an address: in the row, or already in
 * Redis (one HGET, only for such rows without one).  citizen_put refuses
 * the row otherwise, and pass 1 must find that before anything is
 * written.  0, or -1 with err (HERR_INPUT: the row is invalid). */
static int csvimport_optin_address(struct csvimport *im, const struct citizen_in *in,
                                   struct herr *err)
{
    const char *argv[3];
    char key[512];
    struct redisq_reply *r;
    bool form = false, found;
    size_t len = 0;

    for (size_t i = 0; i < in->nconsents; i++)
        form |= strcmp(in->consents[i].channel, "email") == 0 &&
                strcmp(in->consents[i].method, "form") == 0;
    if (!form || in->email != NULL || im->s == NULL)
        return 0;
    snprintf(key, sizeof key, "%scitizen:%s", im->cfg->redis.prefix, in->id);
    argv[0] = "HGET";
    argv[1] = key;
    argv[2] = "email";
    r = redisq_sync_argv(im->s, 3, argv, NULL, err);
    if (r == NULL)
        return -1;
    if (redisq_reply_type(r) == REDISQ_ERROR) {
        herr_set(err, HERR_TRANSIENT, NULL, "Redis: %.200s", redisq_reply_str(r, NULL));
        redisq_sync_reply_free(r);
        return -1;
    }
    if (redisq_reply_type(r) == REDISQ_STR)
        redisq_reply_str(r, &len);
    found = len > 0;
    redisq_sync_reply_free(r);
    if (!found)
        return herr_set(err, HERR_INPUT, "email",
                        "missing: the e-mail consent by form is confirmed by e-mail "
                        "(double opt-in), and the citizen has no address");
    return 0;
}

/* csvimport_pass1 - check every row: count, report and mark the invalid
 * ones and the ids used twice.  0, or -1 with err when the file cannot be
 * read, is too big, or memory runs out (then there is no report). */
static int csvimport_pass1(struct csvimport *im, struct herr *err)
{
    struct citizen_in in;
    struct herr rowerr;
    int rc;

    while ((rc = csvimport_reader_next(&im->rd, err)) == 1) {
        enum csvimport_rowkind k = csvimport_row(im, &in, true, &rowerr);
        unsigned long line = im->rd.line;
        struct csvimport_id *e;
        long row;

        if (k == ROW_OK && csvimport_optin_address(im, &in, &rowerr) != 0)
            k = rowerr.kind == HERR_INPUT ? ROW_BAD : ROW_FATAL;
        if (k == ROW_FATAL) {
            *err = rowerr;
            return -1;
        }
        if (k == ROW_BLANK)
            continue;
        if (im->rows == CSVIMPORT_ROWS_MAX)
            return herr_set(err, HERR_INPUT, NULL,
                            "more than %d rows: split the file", CSVIMPORT_ROWS_MAX);
        if (line > UINT32_MAX)
            return herr_set(err, HERR_INPUT, NULL, "more than %lu lines",
                            (unsigned long)UINT32_MAX);
        row = im->rows++;
        if (k == ROW_BAD) {
            csvimport_set_bad(im, row);
            csvimport_report(im, line, rowerr.path, rowerr.msg);
        }
        /* Ids are compared on invalid rows too: the same id twice is
         * ambiguous whichever row is wrong, so neither is imported. */
        if (in.id != NULL && citizen_id_ok(in.id)) {
            if (csvimport_id_add(im, in.id, row, line, &e) != 0)
                return herr_set(err, HERR_RESOURCE, NULL, "out of memory");
            if (e != NULL) {
                char msg[96];

                if (!csvimport_is_bad(im, e->row)) {
                    csvimport_set_bad(im, e->row);
                    snprintf(msg, sizeof msg, "the same id as on line %lu", line);
                    csvimport_report(im, e->line, "id", msg);
                }
                if (!csvimport_is_bad(im, row)) {
                    csvimport_set_bad(im, row);
                    snprintf(msg, sizeof msg, "the same id as on line %lu",
                             (unsigned long)e->line);
                    csvimport_report(im, line, "id", msg);
                }
            }
        }
        csvimport_progress(im, 1, false);
    }
    if (rc < 0)
        return -1;
    csvimport_progress(im, 1, true);
    return 0;
}

/* csvimport_same_file - whether f is still the file pass 1 read. */
static bool csvimport_same_file(const struct csvimport *im, FILE *f)
{
    struct stat now;

    return fstat(fileno(f), &now) == 0 && now.st_dev == im->st.st_dev &&
           now.st_ino == im->st.st_ino && now.st_size == im->st.st_size &&
           now.st_mtim.tv_sec == im->st.st_mtim.tv_sec &&
           now.st_mtim.tv_nsec == im->st.st_mtim.tv_nsec;
}

/* csvimport_restart - read f from its start for pass 2. */
static int csvimport_restart(struct csvimport *im, FILE *f, struct herr *err)
{
    if (fseek(f, 0, SEEK_SET) != 0)
        return herr_sys(err, "seek");
    im->rd.f = f;
    im->rd.pos = im->rd.len = 0;
    im->rd.eof = false;
    im->rd.offset = 0;
    im->rd.line = 0;
    return 0;
}

/* ---- pass 2: writing ---- */

enum csvimport_outcome {
    OUT_CREATED, OUT_CHANGED, OUT_UNCHANGED, OUT_SKIPPED,
    OUT_REFUSED,        /* citizen_put refused a row pass 1 passed: reported, skipped */
    OUT_FAILED,         /* Redis or the file failed: the writer stopped */
};

typedef void csvimport_outcome_fn(struct csvimport *im, enum csvimport_outcome o,
                                  unsigned long line, int optins, const struct herr *err);

/* What a writer process sends per row; OUT_REFUSED and OUT_FAILED are
 * followed by a struct herr (which never holds personal data). */
struct csvimport_msg {
    int32_t outcome;
    int32_t optins;
    uint64_t line;
};

/* csvimport_write_share - pass 2 for the rows whose index modulo n is k:
 * read im->rd's file (positioned at its start) again, header first, and
 * write each valid row of the share through s with citizen_put; every row
 * of the share is reported to fn, once.  Returns 0, or -1 after reporting
 * OUT_FAILED (a Redis error, or a file that is no longer what pass 1
 * read). */
static int csvimport_write_share(struct csvimport *im, struct redisq_sync *s, long k, long n,
                                 csvimport_outcome_fn *fn)
{
    struct citizen_in in;
    struct herr err;
    long row = 0;
    int rc;

    herr_clear(&err);
    if (csvimport_header(im, &err) != 0)
        goto failed;
    while ((rc = csvimport_reader_next(&im->rd, &err)) == 1) {
        struct citizen_put_result res = { false, false, 0 };
        /* rows of other shares are only split, to count them as pass 1 did */
        bool mine = row % n == k;
        enum csvimport_rowkind kind = csvimport_row(im, &in, mine, &err);
        long i;

        if (kind == ROW_BLANK)
            continue;
        if (kind == ROW_FATAL)
            goto failed;
        if (row >= im->rows)
            goto changed;
        i = row++;
        if (!mine)
            continue;
        if (csvimport_is_bad(im, i)) {
            fn(im, OUT_SKIPPED, im->rd.line, 0, NULL);
            continue;
        }
        if (kind == ROW_BAD)
            goto changed;
        if (citizen_put(s, im->cfg, &in, CITIZEN_UPSERT, &res, &err) != 0) {
            if (err.kind != HERR_INPUT)
                goto failed;
            fn(im, OUT_REFUSED, im->rd.line, 0, &err);
            continue;
        }
        fn(im, res.created ? OUT_CREATED : res.changed ? OUT_CHANGED : OUT_UNCHANGED,
           im->rd.line, res.optins_sent, NULL);
    }
    if (rc < 0)
        goto failed;
    if (row == im->rows && csvimport_same_file(im, im->rd.f))
        return 0;
changed:
    herr_set(&err, HERR_SYSTEM, NULL, "the file changed during the import");
failed:
    fn(im, OUT_FAILED, im->rd.line, 0, &err);
    return -1;
}

/* csvimport_count - take one row's outcome into the totals (in the
 * importing process). */
static void csvimport_count(struct csvimport *im, enum csvimport_outcome o,
                            unsigned long line, int optins, const struct herr *err)
{
    char where[96];

    switch (o) {
    case OUT_CREATED:
        im->created++;
        break;
    case OUT_CHANGED:
        im->changed++;
        break;
    case OUT_UNCHANGED:
        im->unchanged++;
        break;
    case OUT_SKIPPED:
        im->skipped++;
        break;
    case OUT_REFUSED:
        csvimport_progress_break(im);
        csvimport_where(err->path, where, sizeof where);
        csvimport_print_error(line, where, err->msg);
        im->invalid++;
        im->skipped++;
        break;
    case OUT_FAILED:
        if (!im->failed) {
            im->failed = true;
            im->fail_line = line;
            im->fail = *err;
        }
        return;
    }
    im->optins += optins;
    im->done++;
    csvimport_progress(im, 2, false);
}

/* csvimport_write_all - write a whole buffer to fd. */
static int csvimport_write_all(int fd, const void *buf, size_t n)
{
    const unsigned char *p = buf;

    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* csvimport_send - a writer process's csvimport_outcome_fn: the outcome
 * to the importing process through im->out_fd. */
static void csvimport_send(struct csvimport *im, enum csvimport_outcome o,
                           unsigned long line, int optins, const struct herr *err)
{
    unsigned char buf[sizeof(struct csvimport_msg) + sizeof(struct herr)];
    struct csvimport_msg m = { (int32_t)o, optins, line };
    size_t n = sizeof m;

    memcpy(buf, &m, sizeof m);
    if (o == OUT_REFUSED || o == OUT_FAILED) {
        memcpy(buf + n, err, sizeof *err);
        n += sizeof *err;
    }
    /* the importing process is gone: nobody would count this row */
    if (csvimport_write_all(im->out_fd, buf, n) != 0)
        _exit(CSVIMPORT_ERROR);
}

/* csvimport_connect - a connection of its own for a writer process. */
static struct redisq_sync *csvimport_connect(const struct herold_config *cfg,
                                             struct herr *err)
{
    return redisq_sync_open(&cfg->redis, "herold-import", err);
}

/* csvimport_writer - the body of writer process k of n: its own file
 * handle (a forked one would share the file offset), its own Redis
 * connection, its share of the rows.  Returns the process's exit status. */
static int csvimport_writer(struct csvimport *im, const char *path, long k, long n)
{
    struct redisq_sync *s = NULL;
    struct herr err;
    FILE *f;
    int rc = CSVIMPORT_ERROR;

    im->tty = false;
    f = fopen(path, "rb");
    if (f == NULL) {
        herr_sys(&err, path);
        goto failed;
    }
    if (!csvimport_same_file(im, f)) {
        herr_set(&err, HERR_SYSTEM, NULL, "the file changed during the import");
        goto failed;
    }
    if (csvimport_restart(im, f, &err) != 0 || (s = csvimport_connect(im->cfg, &err)) == NULL)
        goto failed;
    rc = csvimport_write_share(im, s, k, n, csvimport_send) == 0 ? CSVIMPORT_OK
                                                                : CSVIMPORT_ERROR;
    goto out;
failed:
    csvimport_send(im, OUT_FAILED, 0, 0, &err);
out:
    redisq_sync_free(s);
    if (f != NULL)
        fclose(f);
    return rc;
}

/* csvimport_collect - read what writer k sent into its buffer and count
 * every complete message; false at the end of its pipe. */
static bool csvimport_collect(struct csvimport *im, int fd, unsigned char *buf, size_t size,
                              size_t *len)
{
    ssize_t got = read(fd, buf + *len, size - *len);
    size_t used = 0;

    if (got < 0 && (errno == EINTR || errno == EAGAIN))
        return true;
    if (got <= 0)
        return false;
    *len += (size_t)got;
    for (;;) {
        struct csvimport_msg m;
        struct herr err;
        size_t need = sizeof m;

        if (*len - used < need)
            break;
        memcpy(&m, buf + used, sizeof m);
        if (m.outcome == OUT_REFUSED || m.outcome == OUT_FAILED)
            need += sizeof err;
        if (*len - used < need)
            break;
        if (need > sizeof m)
            memcpy(&err, buf + used + sizeof m, sizeof err);
        csvimport_count(im, (enum csvimport_outcome)m.outcome, (unsigned long)m.line,
                        m.optins, &err);
        used += need;
    }
    memmove(buf, buf + used, *len - used);
    *len -= used;
    return true;
}

/* csvimport_parallel - pass 2 by n writer processes (n <=
 * CSVIMPORT_WRITERS), each with its own Redis connection and every n-th
 * row.  Why processes: Redis makes one fsync per event-loop round for all
 * the clients it served in it (appendfsync always), so n clients each
 * waiting for one script get n citizens written per fsync, where one
 * synchronous connection gets one.  Processes, not threads, because
 * citizen_put does not promise to be thread-safe.  Rows are independent:
 * pass 1 made sure no id comes twice.  The outcomes come back through one
 * pipe per writer and are counted here, with the progress line. */
static void csvimport_parallel(struct csvimport *im, const char *path, long n)
{
    struct {
        pid_t pid;
        int fd;
        size_t len;
        unsigned char buf[4 * (sizeof(struct csvimport_msg) + sizeof(struct herr))];
    } *w;
    struct herr err;
    long started = 0, open = 0;
    bool stopping = false;

    w = herold_calloc((size_t)n, sizeof *w);
    if (w == NULL) {
        herr_set(&err, HERR_RESOURCE, NULL, "out of memory");
        csvimport_count(im, OUT_FAILED, 0, 0, &err);
        return;
    }
    fflush(stdout);
    fflush(stderr);
    for (long k = 0; k < n; k++) {
        int p[2];

        if (pipe(p) != 0) {
            herr_sys(&err, "pipe");
            csvimport_count(im, OUT_FAILED, 0, 0, &err);
            break;
        }
        w[k].pid = fork();
        if (w[k].pid == 0) {
            /* the writer: only its own pipe's write end stays open */
            close(p[0]);
            for (long j = 0; j < k; j++)
                close(w[j].fd);
            im->out_fd = p[1];
            _exit(csvimport_writer(im, path, k, n));
        }
        close(p[1]);
        if (w[k].pid < 0) {
            herr_sys(&err, "fork");
            close(p[0]);
            csvimport_count(im, OUT_FAILED, 0, 0, &err);
            break;
        }
        w[k].fd = p[0];
        started++;
        open++;
    }
    while (open > 0) {
        struct pollfd pfd[CSVIMPORT_WRITERS];
        long idx[CSVIMPORT_WRITERS];
        int m = 0, r;

        for (long k = 0; k < started; k++)
            if (w[k].fd >= 0) {
                pfd[m] = (struct pollfd){ .fd = w[k].fd, .events = POLLIN };
                idx[m++] = k;
            }
        r = poll(pfd, (nfds_t)m, 100);
        if (r < 0 && errno != EINTR) {
            herr_sys(&err, "poll");
            csvimport_count(im, OUT_FAILED, 0, 0, &err);
            break;
        }
        for (int i = 0; r > 0 && i < m; i++) {
            long k = idx[i];

            if (pfd[i].revents == 0)
                continue;
            if (!csvimport_collect(im, w[k].fd, w[k].buf, sizeof w[k].buf, &w[k].len)) {
                close(w[k].fd);
                w[k].fd = -1;
                open--;
            }
        }
        /* one writer failed (Redis gone, the file changed): stop the rest */
        if (im->failed && !stopping) {
            stopping = true;
            for (long k = 0; k < started; k++)
                if (w[k].fd >= 0)
                    kill(w[k].pid, SIGTERM);
        }
        csvimport_progress(im, 2, false);
    }
    for (long k = 0; k < started; k++) {
        int st = 0;
        pid_t got;

        if (w[k].fd >= 0) {
            kill(w[k].pid, SIGTERM);
            close(w[k].fd);
        }
        while ((got = waitpid(w[k].pid, &st, 0)) < 0 && errno == EINTR)
            ;
        if (got == w[k].pid && !stopping && !im->failed &&
            !(WIFEXITED(st) && WEXITSTATUS(st) == CSVIMPORT_OK)) {
            herr_set(&err, HERR_SYSTEM, NULL, "a writer process ended unexpectedly (%s %d)",
                     WIFSIGNALED(st) ? "signal" : "status",
                     WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
            csvimport_count(im, OUT_FAILED, 0, 0, &err);
        }
    }
    herold_free(w);
}

static void csvimport_summary(const struct csvimport *im)
{
    printf("%ld rows: %ld created, %ld changed, %ld unchanged, %ld skipped, "
           "%ld opt-in messages enqueued\n", im->rows, im->created, im->changed,
           im->unchanged, im->skipped, im->optins);
    fflush(stdout);
}

int csvimport_run(const struct herold_config *cfg, struct redisq_sync *s,
                  const char *path, bool skip_invalid, bool dry_run)
{
    struct csvimport *im;
    struct herr err;
    bool parser_ready = false;
    int rc = CSVIMPORT_ERROR;

    herr_clear(&err);
    im = herold_calloc(1, sizeof *im);
    if (im == NULL) {
        fprintf(stderr, "herold: out of memory\n");
        return CSVIMPORT_ERROR;
    }
    im->cfg = cfg;
    im->s = s;
    im->tty = isatty(STDERR_FILENO) == 1;
    im->bad = herold_calloc(CSVIMPORT_ROWS_MAX / 8 + 1, 1);
    if (im->bad == NULL || csvimport_parser_init(&im->parser) != 0) {
        fprintf(stderr, "herold: out of memory\n");
        goto out;
    }
    parser_ready = true;
    im->rd.f = fopen(path, "rb");
    if (im->rd.f == NULL || fstat(fileno(im->rd.f), &im->st) != 0) {
        herr_sys(&err, path);
        fprintf(stderr, "herold: %s\n", err.msg);
        goto out;
    }
    if (!S_ISREG(im->st.st_mode)) {
        fprintf(stderr, "herold: %s: not a regular file (the import reads it twice)\n", path);
        goto out;
    }

    /* Pass 1: check everything; nothing is written. */
    if (csvimport_header(im, &err) != 0) {
        rc = err.kind == HERR_INPUT ? CSVIMPORT_INVALID : CSVIMPORT_ERROR;
        if (err.kind == HERR_INPUT && err.path[0] != '\0')
            fprintf(stderr, "herold: line %lu (the header): %s; nothing imported\n",
                    im->rd.line, err.msg);
        else
            fprintf(stderr, "herold: %s%s\n", err.msg,
                    err.kind == HERR_INPUT ? "; nothing imported" : "");
        goto out;
    }
    if (csvimport_pass1(im, &err) != 0) {
        csvimport_progress_break(im);
        if (err.kind == HERR_INPUT) {
            rc = CSVIMPORT_INVALID;
            fprintf(stderr, "herold: line %lu: %s; nothing imported\n", im->rd.line, err.msg);
        } else {
            fprintf(stderr, "herold: %s; nothing imported\n", err.msg);
        }
        goto out;
    }
    csvimport_print_report(im);
    if (dry_run) {
        printf("%ld rows: %ld valid, %ld invalid (dry run, nothing written)\n",
               im->rows, im->rows - im->invalid, im->invalid);
        rc = im->invalid > 0 ? CSVIMPORT_INVALID : CSVIMPORT_OK;
        goto out;
    }
    if (im->invalid > 0 && !skip_invalid) {
        fprintf(stderr, "herold: %ld of %ld rows invalid; nothing imported "
                "(correct them, or import the valid rows with --skip-invalid)\n",
                im->invalid, im->rows);
        rc = CSVIMPORT_INVALID;
        goto out;
    }

    /* Pass 2: the same file again, writing the valid rows one citizen at
     * a time; by several writer processes when there are many. */
    if (s == NULL) {
        fprintf(stderr, "herold: no Redis connection to import into\n");
        goto out;
    }
    if (!csvimport_same_file(im, im->rd.f)) {
        fprintf(stderr, "herold: the file changed while it was checked; nothing imported\n");
        goto out;
    }
    im->t0 = csvimport_now();
    im->last_draw = 0;
    if (im->rows - im->invalid >= CSVIMPORT_PARALLEL_MIN) {
        csvimport_parallel(im, path, CSVIMPORT_WRITERS);
    } else if (csvimport_restart(im, im->rd.f, &err) != 0) {
        csvimport_count(im, OUT_FAILED, 0, 0, &err);
    } else {
        csvimport_write_share(im, s, 0, 1, csvimport_count);
    }
    if (im->failed) {
        csvimport_progress_break(im);
        csvimport_summary(im);
        if (im->fail_line > 0)
            fprintf(stderr, "herold: import stopped at line %lu: %s\n", im->fail_line,
                    im->fail.msg);
        else
            fprintf(stderr, "herold: import stopped: %s\n", im->fail.msg);
        fprintf(stderr, "herold: %ld of the %ld valid rows are written; importing the file "
                "again is safe and writes the rest\n",
                im->created + im->changed + im->unchanged, im->rows - im->invalid);
        goto out;
    }
    csvimport_progress(im, 2, true);
    csvimport_summary(im);
    rc = im->invalid > 0 ? CSVIMPORT_INVALID : CSVIMPORT_OK;
out:
    if (im->rd.f != NULL)
        fclose(im->rd.f);
    if (parser_ready)
        csv_free(&im->parser);
    herold_free(im->ids);
    herold_free(im->bad);
    herold_free(im);
    return rc;
}
