/*
 * msgset - loading the template set from disk and rendering jobs with it.
 *
 * Owns the compiled templates, their template.json settings, example data
 * and the partial sources.  A loaded set never changes; heroldd replaces
 * it whole on SIGHUP.  Reads files only in msgset_load (never while a job
 * is rendered), refuses names that could leave the set's directory, and
 * never puts data values into error messages (they may be personal data):
 * errors name files, positions, variables and limits.
 */
#include "msgset.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../dispatcher/alloc.h"
#include "limits.h"

#define MSGSET_FILE_MAX (256 * 1024)
#define MSGSET_NAME_MAX 64
#define MSGSET_LANGS_MAX 16

enum policy { POLICY_TRUNCATE, POLICY_REJECT };

struct msg_lang {
    char lang[36];
    struct tmpl *part[JOB_PARTS];
};

struct msg_template {
    char name[MSGSET_NAME_MAX + 1];
    char *description;
    char **required;
    size_t nrequired;
    enum policy sms, push, social;
    json_t *example;
    struct msg_lang langs[MSGSET_LANGS_MAX];
    size_t nlangs;
};

struct msg_partial {
    char lang[36];
    char name[MSGSET_NAME_MAX + 1];
    char *src;
};

struct msgset {
    struct msgset_opts o;
    char default_lang[36];
    struct msg_template *t;
    size_t n;
    struct msg_partial *p;
    size_t np;
};

static const char *const policy_names[] = {"truncate", "reject"};

/* ---- helpers ---- */

/* msgset_name_ok - [a-z0-9_-]{1,64}: names that cannot leave the dir. */
static bool msgset_name_ok(const char *s, bool underscore)
{
    size_t n = strlen(s);

    if (n < 1 || n > MSGSET_NAME_MAX)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' ||
              (underscore && *s == '_')))
            return false;
    return true;
}

/* msgset_lang_ok - "de", "en", "de-x-ls": letters, digits and dashes. */
static bool msgset_lang_ok(const char *s)
{
    size_t n = strlen(s), i = 0;

    for (; i < n && s[i] >= 'a' && s[i] <= 'z'; i++)
        ;
    if (i < 2 || i > 3 || n > 35)
        return false;
    for (; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

static int msgset_fail(struct tmpl_error *err, const char *file, int line, int col,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int msgset_fail(struct tmpl_error *err, const char *file, int line, int col,
                       const char *fmt, ...)
{
    va_list ap;

    snprintf(err->name, sizeof err->name, "%s", file);
    err->line = line;
    err->col = col;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* msgset_read - a whole file, at most MSGSET_FILE_MAX bytes, with one final
 * newline (LF or CRLF) removed.  NULL and errno when it cannot be read. */
static char *msgset_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t n;

    if (f == NULL)
        return NULL;
    buf = herold_malloc(MSGSET_FILE_MAX + 2);
    if (buf == NULL) {
        fclose(f);
        errno = ENOMEM;
        return NULL;
    }
    n = fread(buf, 1, MSGSET_FILE_MAX + 1, f);
    fclose(f);
    if (n > MSGSET_FILE_MAX) {
        herold_free(buf);
        errno = EFBIG;
        return NULL;
    }
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* msgset_join - "a/b" or "a/b/c" into buf; -1 if it does not fit. */
static int msgset_join(char *buf, size_t size, const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = c ? strlen(c) : 0;

    if (la + 1 + lb + (c ? 1 + lc : 0) + 1 > size) {
        if (size > 0)
            buf[0] = '\0';
        return -1;
    }
    memcpy(buf, a, la);
    buf[la] = '/';
    memcpy(buf + la + 1, b, lb + 1);
    if (c) {
        buf[la + 1 + lb] = '/';
        memcpy(buf + la + 2 + lb, c, lc + 1);
    }
    return 0;
}

static int msgset_cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* msgset_list - the entries of dir (no dot files), sorted; NULL on error. */
static char **msgset_list(const char *dir, size_t *n)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char **v = NULL;
    size_t cap = 0;

    *n = 0;
    if (d == NULL)
        return NULL;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (*n == cap) {
            char **nv = herold_realloc(v, (cap = cap ? cap * 2 : 16) * sizeof *v);
            if (nv == NULL)
                goto fail;
            v = nv;
        }
        if ((v[*n] = herold_strdup(de->d_name)) == NULL)
            goto fail;
        (*n)++;
    }
    closedir(d);
    if (v == NULL)
        v = herold_calloc(1, sizeof *v);
    if (*n > 1)
        qsort(v, *n, sizeof *v, msgset_cmp_names);
    return v;
fail:
    closedir(d);
    for (size_t i = 0; i < *n; i++)
        herold_free(v[i]);
    herold_free(v);
    return NULL;
}

static void msgset_list_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        herold_free(v[i]);
    herold_free(v);
}

static bool msgset_is_dir(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ---- loading ---- */

/* msgset_load_partials - DIR/_partials/<lang>/<name>.mustache sources. */
static int msgset_load_partials(struct msgset *s, const char *dir, struct tmpl_error *err)
{
    char path[4096], rel[256];
    char **langs;
    size_t nl;

    msgset_join(path, sizeof path, dir, "_partials", NULL);
    if (!msgset_is_dir(path))
        return 0;
    if ((langs = msgset_list(path, &nl)) == NULL)
        return msgset_fail(err, "_partials", 0, 0, "cannot read: %s", strerror(errno));
    for (size_t i = 0; i < nl; i++) {
        char **files;
        size_t nf;

        snprintf(rel, sizeof rel, "_partials/%s", langs[i]);
        if (!msgset_lang_ok(langs[i])) {
            msgset_list_free(langs, nl);
            return msgset_fail(err, rel, 0, 0, "expected a language folder such as de or de-x-ls");
        }
        msgset_join(path, sizeof path, dir, rel, NULL);
        if ((files = msgset_list(path, &nf)) == NULL) {
            msgset_list_free(langs, nl);
            return msgset_fail(err, rel, 0, 0, "cannot read: %s", strerror(errno));
        }
        for (size_t k = 0; k < nf; k++) {
            const char *dot = strrchr(files[k], '.');
            struct msg_partial *p;
            size_t len;
            char name[MSGSET_NAME_MAX + 1];

            snprintf(rel, sizeof rel, "_partials/%s/%s", langs[i], files[k]);
            if (dot == NULL || strcmp(dot, ".mustache") != 0 ||
                (size_t)(dot - files[k]) > MSGSET_NAME_MAX) {
                msgset_list_free(files, nf);
                msgset_list_free(langs, nl);
                return msgset_fail(err, rel, 0, 0, "expected <name>.mustache");
            }
            memcpy(name, files[k], (size_t)(dot - files[k]));
            name[dot - files[k]] = '\0';
            if (!msgset_name_ok(name, true)) {
                msgset_list_free(files, nf);
                msgset_list_free(langs, nl);
                return msgset_fail(err, rel, 0, 0, "partial names are 1-64 of a-z 0-9 _ -");
            }
            p = herold_realloc(s->p, (s->np + 1) * sizeof *s->p);
            if (p == NULL) {
                msgset_list_free(files, nf);
                msgset_list_free(langs, nl);
                return msgset_fail(err, rel, 0, 0, "out of memory");
            }
            s->p = p;
            p = &s->p[s->np];
            memset(p, 0, sizeof *p);
            snprintf(p->lang, sizeof p->lang, "%s", langs[i]);
            snprintf(p->name, sizeof p->name, "%s", name);
            msgset_join(path, sizeof path, dir, rel, NULL);
            if ((p->src = msgset_read(path, &len)) == NULL) {
                msgset_list_free(files, nf);
                msgset_list_free(langs, nl);
                return msgset_fail(err, rel, 0, 0, "cannot read: %s", strerror(errno));
            }
            s->np++;
        }
        msgset_list_free(files, nf);
    }
    msgset_list_free(langs, nl);
    return 0;
}

/* msgset_policy - "truncate" or "reject" at over_limit.<key>. */
static int msgset_policy(const json_t *ol, const char *key, enum policy *out,
                         const char *rel, struct tmpl_error *err)
{
    json_t *v = ol ? json_object_get(ol, key) : NULL;

    *out = POLICY_TRUNCATE;
    if (v == NULL)
        return 0;
    if (json_is_string(v) && strcmp(json_string_value(v), "truncate") == 0)
        return 0;
    if (json_is_string(v) && strcmp(json_string_value(v), "reject") == 0) {
        *out = POLICY_REJECT;
        return 0;
    }
    return msgset_fail(err, rel, 0, 0, "over_limit.%s: expected \"truncate\" or \"reject\"", key);
}

/* msgset_load_meta - template.json and example.json of t. */
static int msgset_load_meta(struct msg_template *t, const char *tdir, struct tmpl_error *err)
{
    char path[4096], rel[160];
    json_error_t je;
    json_t *m, *v, *ol;
    const char *key;

    snprintf(rel, sizeof rel, "%s/template.json", t->name);
    msgset_join(path, sizeof path, tdir, "template.json", NULL);
    m = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (m == NULL)
        return msgset_fail(err, rel, je.line, je.column, "%s", je.text);
    if (!json_is_object(m)) {
        json_decref(m);
        return msgset_fail(err, rel, 0, 0, "expected a JSON object");
    }
    json_object_foreach(m, key, v) {
        if (strcmp(key, "description") != 0 && strcmp(key, "required") != 0 &&
            strcmp(key, "over_limit") != 0) {
            json_decref(m);
            return msgset_fail(err, rel, 0, 0, "unknown field (expected description, "
                               "required, over_limit)");
        }
    }
    v = json_object_get(m, "description");
    if (v != NULL && !json_is_string(v)) {
        json_decref(m);
        return msgset_fail(err, rel, 0, 0, "description: expected a string");
    }
    t->description = herold_strdup(v ? json_string_value(v) : "");
    v = json_object_get(m, "required");
    if (v != NULL && !json_is_array(v)) {
        json_decref(m);
        return msgset_fail(err, rel, 0, 0, "required: expected an array of variable names");
    }
    t->required = herold_calloc(json_array_size(v) + 1, sizeof *t->required);
    for (size_t i = 0; v && i < json_array_size(v); i++) {
        json_t *r = json_array_get(v, i);
        if (!json_is_string(r) || json_string_length(r) < 1 || json_string_length(r) > 64) {
            json_decref(m);
            return msgset_fail(err, rel, 0, 0, "required[%zu]: expected a variable name", i);
        }
        t->required[t->nrequired++] = herold_strdup(json_string_value(r));
    }
    ol = json_object_get(m, "over_limit");
    if (ol != NULL && !json_is_object(ol)) {
        json_decref(m);
        return msgset_fail(err, rel, 0, 0, "over_limit: expected an object");
    }
    if (msgset_policy(ol, "sms", &t->sms, rel, err) ||
        msgset_policy(ol, "push", &t->push, rel, err) ||
        msgset_policy(ol, "social", &t->social, rel, err)) {
        json_decref(m);
        return -1;
    }
    json_decref(m);

    msgset_join(path, sizeof path, tdir, "example.json", NULL);
    snprintf(rel, sizeof rel, "%s/example.json", t->name);
    if (access(path, F_OK) == 0) {
        t->example = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
        if (t->example == NULL)
            return msgset_fail(err, rel, je.line, je.column, "%s", je.text);
        if (!json_is_object(t->example))
            return msgset_fail(err, rel, 0, 0, "expected a JSON object");
    }
    return 0;
}

/* msgset_load_lang - the parts of one language folder. */
static int msgset_load_lang(const struct msgset *s, struct msg_template *t, const char *tdir,
                            const char *lang, struct tmpl_error *err)
{
    struct msg_lang *l;
    char path[4096], rel[200];
    char **files;
    size_t nf;

    (void)s;
    snprintf(rel, sizeof rel, "%s/%s", t->name, lang);
    if (!msgset_lang_ok(lang))
        return msgset_fail(err, rel, 0, 0, "expected a language folder such as de or de-x-ls");
    if (t->nlangs == MSGSET_LANGS_MAX)
        return msgset_fail(err, rel, 0, 0, "more than %d languages", MSGSET_LANGS_MAX);
    l = &t->langs[t->nlangs++];
    snprintf(l->lang, sizeof l->lang, "%s", lang);
    msgset_join(path, sizeof path, tdir, lang, NULL);
    if ((files = msgset_list(path, &nf)) == NULL)
        return msgset_fail(err, rel, 0, 0, "cannot read: %s", strerror(errno));
    for (size_t k = 0; k < nf; k++) {
        int part = -1;
        char *src;
        size_t len;

        for (int i = 0; i < JOB_PARTS; i++)
            if (strcmp(files[k], job_part_names[i]) == 0)
                part = i;
        snprintf(rel, sizeof rel, "%s/%s/%s", t->name, lang, files[k]);
        if (part < 0) {
            msgset_list_free(files, nf);
            return msgset_fail(err, rel, 0, 0, "unknown part (expected email.subject, "
                               "email.txt, email.html, sms.txt, push.title, push.body or "
                               "social.txt)");
        }
        msgset_join(path, sizeof path, tdir, lang, files[k]);
        if ((src = msgset_read(path, &len)) == NULL) {
            msgset_list_free(files, nf);
            return msgset_fail(err, rel, 0, 0, "cannot read: %s", strerror(errno));
        }
        l->part[part] = tmpl_compile(src, len, rel, err);
        herold_free(src);
        if (l->part[part] == NULL) {
            msgset_list_free(files, nf);
            return -1;   /* err names the file, line and column */
        }
    }
    msgset_list_free(files, nf);
    if (l->part[JOB_PART_EMAIL_SUBJECT] == NULL || l->part[JOB_PART_EMAIL_TXT] == NULL) {
        snprintf(rel, sizeof rel, "%s/%s", t->name, lang);
        return msgset_fail(err, rel, 0, 0, "missing %s (every language needs email.subject "
                           "and email.txt)",
                           l->part[JOB_PART_EMAIL_SUBJECT] == NULL ? "email.subject"
                                                                   : "email.txt");
    }
    return 0;
}

/* msgset_load_template - one template folder. */
static int msgset_load_template(struct msgset *s, const char *dir, const char *name,
                                struct tmpl_error *err)
{
    struct msg_template *t;
    char tdir[4096];
    char **langs;
    size_t nl;
    int rc = 0;

    if (!msgset_name_ok(name, false))
        return msgset_fail(err, name, 0, 0, "template names are 1-64 of a-z 0-9 -");
    t = herold_realloc(s->t, (s->n + 1) * sizeof *s->t);
    if (t == NULL)
        return msgset_fail(err, name, 0, 0, "out of memory");
    s->t = t;
    t = &s->t[s->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    msgset_join(tdir, sizeof tdir, dir, name, NULL);
    if (msgset_load_meta(t, tdir, err) != 0)
        return -1;
    if ((langs = msgset_list(tdir, &nl)) == NULL)
        return msgset_fail(err, name, 0, 0, "cannot read: %s", strerror(errno));
    for (size_t i = 0; i < nl && rc == 0; i++) {
        char p[4200];
        msgset_join(p, sizeof p, tdir, langs[i], NULL);
        if (!msgset_is_dir(p)) {
            if (strcmp(langs[i], "template.json") != 0 && strcmp(langs[i], "example.json") != 0)
                rc = msgset_fail(err, name, 0, 0, "unexpected file \"%s\" (expected "
                                 "template.json, example.json and language folders)",
                                 msgset_name_ok(langs[i], true) ? langs[i] : "?");
            continue;
        }
        rc = msgset_load_lang(s, t, tdir, langs[i], err);
    }
    msgset_list_free(langs, nl);
    if (rc == 0 && t->nlangs == 0)
        rc = msgset_fail(err, name, 0, 0, "no language folder");
    return rc;
}

/* msgset_check_examples - render each template with its example data in
 * every language: missing partials and over-limit texts show up now. */
static int msgset_check_examples(const struct msgset *s, struct tmpl_error *err)
{
    for (size_t i = 0; i < s->n; i++) {
        const struct msg_template *t = &s->t[i];
        if (t->example == NULL)
            continue;
        for (size_t l = 0; l < t->nlangs; l++) {
            const char *langs[3] = {t->langs[l].lang, NULL, NULL};
            struct msgset_result r;
            struct herr he;
            if (msgset_render(s, t->name, langs, t->example, &r, &he) != 0) {
                char rel[160];
                snprintf(rel, sizeof rel, "%s/%s", t->name, t->langs[l].lang);
                return msgset_fail(err, rel, 0, 0, "with example.json: %s%s%s", he.path,
                                   he.path[0] ? ": " : "", he.msg);
            }
            msgset_result_fini(&r);
        }
    }
    return 0;
}

struct msgset *msgset_load(const char *dir, const struct msgset_opts *o, struct tmpl_error *err)
{
    struct msgset *s = herold_calloc(1, sizeof *s);
    char **names = NULL;
    size_t n = 0;

    memset(err, 0, sizeof *err);
    if (s == NULL) {
        msgset_fail(err, "", 0, 0, "out of memory");
        return NULL;
    }
    s->o = *o;
    snprintf(s->default_lang, sizeof s->default_lang, "%s", o->default_lang);
    s->o.default_lang = s->default_lang;
    if (!msgset_is_dir(dir)) {
        msgset_fail(err, dir, 0, 0, "not a directory");
        goto fail;
    }
    if (msgset_load_partials(s, dir, err) != 0)
        goto fail;
    if ((names = msgset_list(dir, &n)) == NULL) {
        msgset_fail(err, dir, 0, 0, "cannot read: %s", strerror(errno));
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        char p[4200];
        msgset_join(p, sizeof p, dir, names[i], NULL);
        if (strcmp(names[i], "_partials") == 0 || !msgset_is_dir(p))
            continue;   /* READMEs and such may sit beside the templates */
        if (msgset_load_template(s, dir, names[i], err) != 0)
            goto fail;
    }
    for (size_t i = 0; i < s->n; i++) {
        bool has_default = false;
        for (size_t l = 0; l < s->t[i].nlangs; l++)
            has_default |= strcmp(s->t[i].langs[l].lang, s->default_lang) == 0;
        if (!has_default) {
            msgset_fail(err, s->t[i].name, 0, 0, "no folder for the default language \"%s\"",
                        s->default_lang);
            goto fail;
        }
    }
    if (msgset_check_examples(s, err) != 0)
        goto fail;
    msgset_list_free(names, n);
    return s;
fail:
    msgset_list_free(names, n);
    msgset_free(s);
    return NULL;
}

void msgset_opts_from_config(const struct herold_config *c, struct msgset_opts *o)
{
    o->default_lang = c->templates.default_lang;
    o->sms_max_segments = c->templates.sms_max_segments;
    o->push_title_max = c->templates.push_title_max;
    o->push_body_max = c->templates.push_body_max;
    o->max_subject_chars = c->jobs.max_subject_chars;
    o->max_partial_depth = c->templates.max_partial_depth;
    o->max_output = (size_t)c->templates.max_output_bytes;
}

struct msgset *msgset_load_configured(const struct herold_config *c, bool *failed,
                                      struct tmpl_error *err)
{
    struct msgset_opts o;
    json_t *t = c->root ? json_object_get(c->root, "templates") : NULL;
    bool explicit_dir = t != NULL && json_object_get(t, "dir") != NULL;
    struct msgset *s;

    memset(err, 0, sizeof *err);
    *failed = false;
    if (!explicit_dir && !msgset_is_dir(c->templates.dir))
        return NULL;
    msgset_opts_from_config(c, &o);
    s = msgset_load(c->templates.dir, &o, err);
    *failed = s == NULL;
    return s;
}

void msgset_free(struct msgset *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++) {
        struct msg_template *t = &s->t[i];
        for (size_t l = 0; l < t->nlangs; l++)
            for (int p = 0; p < JOB_PARTS; p++)
                tmpl_free(t->langs[l].part[p]);
        for (size_t r = 0; r < t->nrequired; r++)
            herold_free(t->required[r]);
        herold_free(t->required);
        herold_free(t->description);
        json_decref(t->example);
    }
    for (size_t i = 0; i < s->np; i++)
        herold_free(s->p[i].src);
    herold_free(s->p);
    herold_free(s->t);
    herold_free(s);
}

size_t msgset_count(const struct msgset *s)
{
    return s ? s->n : 0;
}

const char *msgset_name(const struct msgset *s, size_t i)
{
    return s && i < s->n ? s->t[i].name : NULL;
}

static const struct msg_template *msgset_find(const struct msgset *s, const char *name)
{
    for (size_t i = 0; s && i < s->n; i++)
        if (strcmp(s->t[i].name, name) == 0)
            return &s->t[i];
    return NULL;
}

const char *msgset_describe(const struct msgset *s, const char *name)
{
    const struct msg_template *t = msgset_find(s, name);

    return t ? t->description : NULL;
}

const json_t *msgset_example(const struct msgset *s, const char *name)
{
    const struct msg_template *t = msgset_find(s, name);

    return t ? t->example : NULL;
}

/* ---- rendering ---- */

struct partial_ctx {
    const struct msgset *s;
    const char *lang;
    char missing[MSGSET_NAME_MAX + 1];
};

/* msgset_partial - partial sources of the rendering language, then of the
 * default language; records the first name not found. */
static const char *msgset_partial(const char *name, void *arg)
{
    struct partial_ctx *pc = arg;

    for (int pass = 0; pass < 2; pass++) {
        const char *lang = pass == 0 ? pc->lang : pc->s->default_lang;
        for (size_t i = 0; i < pc->s->np; i++)
            if (strcmp(pc->s->p[i].lang, lang) == 0 && strcmp(pc->s->p[i].name, name) == 0)
                return pc->s->p[i].src;
    }
    if (pc->missing[0] == '\0')
        snprintf(pc->missing, sizeof pc->missing, "%s", msgset_name_ok(name, true) ? name : "?");
    return NULL;
}

void msgset_result_fini(struct msgset_result *r)
{
    for (int i = 0; i < JOB_PARTS; i++) {
        herold_free(r->parts[i]);
        r->parts[i] = NULL;
    }
}

/* msgset_copy_part - part `to` becomes a copy of part `from` (if any). */
static int msgset_copy_part(struct msgset_result *r, int to, int from)
{
    if (r->parts[from] == NULL)
        return 0;
    r->parts[to] = herold_strdup(r->parts[from]);
    r->derived[to] = true;
    return r->parts[to] ? 0 : -1;
}

int msgset_derive(struct msgset_result *r)
{
    bool had[JOB_PARTS];
    int rc = 0;

    for (int i = 0; i < JOB_PARTS; i++)
        had[i] = r->parts[i] != NULL;
    if (!had[JOB_PART_PUSH_TITLE])
        rc |= msgset_copy_part(r, JOB_PART_PUSH_TITLE, JOB_PART_EMAIL_SUBJECT);
    if (!had[JOB_PART_SMS])
        rc |= msgset_copy_part(r, JOB_PART_SMS, had[JOB_PART_PUSH_BODY]
                                                    ? JOB_PART_PUSH_BODY
                                                    : JOB_PART_EMAIL_SUBJECT);
    if (!had[JOB_PART_PUSH_BODY])
        rc |= msgset_copy_part(r, JOB_PART_PUSH_BODY, had[JOB_PART_SMS]
                                                          ? JOB_PART_SMS
                                                          : JOB_PART_EMAIL_SUBJECT);
    if (!had[JOB_PART_SOCIAL])
        rc |= msgset_copy_part(r, JOB_PART_SOCIAL, had[JOB_PART_SMS]         ? JOB_PART_SMS
                                                   : had[JOB_PART_PUSH_BODY] ? JOB_PART_PUSH_BODY
                                                                             : JOB_PART_EMAIL_SUBJECT);
    return rc ? -1 : 0;
}

/* msgset_replace - put new text into part p (freeing the old one). */
static void msgset_replace(struct msgset_result *r, int p, char *text)
{
    herold_free(r->parts[p]);
    r->parts[p] = text;
    r->truncated[p] = true;
}

/* msgset_adopt - a herold_malloc copy of s, which limits malloc'd; frees s. */
static char *msgset_adopt(char *s)
{
    char *d = s ? herold_strdup(s) : NULL;

    free(s);
    return d;
}

static bool msgset_reject(const char *policy)
{
    return policy != NULL && strcmp(policy, "reject") == 0;
}

int msgset_fit(const struct msgset_opts *o, const char *sms_policy, const char *push_policy,
               const char *social_policy, struct msgset_result *r, struct herr *err)
{
    const char *subj = r->parts[JOB_PART_EMAIL_SUBJECT];
    bool cut;

    if (subj != NULL) {
        for (const char *p = subj; *p; p++)
            if (*p == '\r' || *p == '\n')
                return herr_set(err, HERR_INPUT, "email.subject",
                                "the rendered subject contains a line break");
        if (o->max_subject_chars > 0 && limits_chars(subj) > (size_t)o->max_subject_chars)
            return herr_set(err, HERR_INPUT, "email.subject",
                            "the rendered subject has %zu characters; the limit is %d",
                            limits_chars(subj), o->max_subject_chars);
    }
    if (r->parts[JOB_PART_SMS] != NULL) {
        struct sms_info si;
        limits_sms(r->parts[JOB_PART_SMS], &si);
        if (si.segments > (size_t)o->sms_max_segments) {
            if (msgset_reject(sms_policy))
                return herr_set(err, HERR_INPUT, "sms.txt",
                                "%zu SMS segments (%s); the limit is %d", si.segments,
                                si.encoding == SMS_GSM7 ? "GSM-7" : "UCS-2",
                                o->sms_max_segments);
            char *t = msgset_adopt(limits_sms_fit(r->parts[JOB_PART_SMS],
                                                  (size_t)o->sms_max_segments, &cut));
            if (t == NULL)
                return herr_set(err, HERR_RESOURCE, "sms.txt", "out of memory");
            msgset_replace(r, JOB_PART_SMS, t);
        }
    }
    for (int k = 0; k < 2; k++) {
        int p = k == 0 ? JOB_PART_PUSH_TITLE : JOB_PART_PUSH_BODY;
        size_t max = (size_t)(k == 0 ? o->push_title_max : o->push_body_max);
        if (r->parts[p] == NULL || limits_chars(r->parts[p]) <= max)
            continue;
        if (msgset_reject(push_policy))
            return herr_set(err, HERR_INPUT, job_part_names[p],
                            "%zu characters; the limit is %zu", limits_chars(r->parts[p]), max);
        char *t = msgset_adopt(limits_fit(r->parts[p], LIMITS_CHARS, max, &cut));
        if (t == NULL)
            return herr_set(err, HERR_RESOURCE, job_part_names[p], "out of memory");
        msgset_replace(r, p, t);
    }
    if (r->parts[JOB_PART_SOCIAL] != NULL) {
        const char *so = r->parts[JOB_PART_SOCIAL];
        size_t g = limits_graphemes(so), m = limits_mastodon_len(so);
        if (g > 300 || m > 500) {
            if (msgset_reject(social_policy))
                return herr_set(err, HERR_INPUT, "social.txt",
                                "%zu graphemes (Bluesky allows 300), %zu characters as "
                                "Mastodon counts them (500 allowed)", g, m);
            char *t = msgset_adopt(limits_fit(so, LIMITS_GRAPHEMES, 300, &cut));
            if (t != NULL && limits_mastodon_len(t) > 500) {
                char *t2 = msgset_adopt(limits_fit(t, LIMITS_MASTODON, 500, &cut));
                herold_free(t);
                t = t2;
            }
            if (t == NULL)
                return herr_set(err, HERR_RESOURCE, "social.txt", "out of memory");
            msgset_replace(r, JOB_PART_SOCIAL, t);
        }
    }
    return 0;
}

/* msgset_required - each required variable present (not null) in data;
 * dotted names are followed through objects. */
static int msgset_required(const struct msg_template *t, const json_t *data, struct herr *err)
{
    for (size_t i = 0; i < t->nrequired; i++) {
        const char *name = t->required[i];
        const json_t *v = data;
        char seg[65];
        const char *p = name;

        while (v != NULL && *p) {
            size_t n = strcspn(p, ".");
            if (n >= sizeof seg)
                n = sizeof seg - 1;
            memcpy(seg, p, n);
            seg[n] = '\0';
            v = json_is_object(v) ? json_object_get(v, seg) : NULL;
            p += n;
            if (*p == '.')
                p++;
        }
        if (v == NULL || json_is_null(v)) {
            char path[96];
            snprintf(path, sizeof path, "data.%s", name);
            return herr_set(err, HERR_INPUT, path, "required by template \"%s\"", t->name);
        }
    }
    return 0;
}

int msgset_render(const struct msgset *s, const char *name, const char *const langs[3],
                  const json_t *data, struct msgset_result *out, struct herr *err)
{
    const struct msg_template *t = msgset_find(s, name);
    const struct msg_lang *l = NULL;
    struct partial_ctx pc = {s, NULL, ""};
    json_t *empty = NULL;

    memset(out, 0, sizeof *out);
    if (t == NULL)
        return herr_set(err, HERR_INPUT, "template", "no template \"%s\" in the message set",
                        name);
    for (int k = 0; k < 3 && l == NULL; k++)
        for (size_t i = 0; langs[k] && i < t->nlangs && l == NULL; i++)
            if (strcmp(t->langs[i].lang, langs[k]) == 0)
                l = &t->langs[i];
    for (size_t i = 0; i < t->nlangs && l == NULL; i++)
        if (strcmp(t->langs[i].lang, s->default_lang) == 0)
            l = &t->langs[i];
    if (l == NULL)
        l = &t->langs[0];
    snprintf(out->lang, sizeof out->lang, "%s", l->lang);
    pc.lang = l->lang;
    if (data == NULL)
        data = empty = json_object();
    if (msgset_required(t, data, err) != 0)
        goto fail;
    for (int p = 0; p < JOB_PARTS; p++) {
        struct tmpl_render_opts ro = {
            .escape = p == JOB_PART_EMAIL_HTML ? tmpl_escape_html : tmpl_escape_none,
            .partial = msgset_partial,
            .partial_arg = &pc,
            .max_depth = s->o.max_partial_depth,
            .max_output = s->o.max_output,
        };
        struct tmpl_buf b = {0};
        struct tmpl_error te;

        if (l->part[p] == NULL)
            continue;
        if (tmpl_render(l->part[p], data, &ro, &b, &te) != 0) {
            tmpl_buf_free(&b);
            /* out of memory defers the job; anything else is its fault */
            herr_set(err, te.nomem ? HERR_RESOURCE : HERR_INPUT, "template", "%s:%d:%d: %s",
                     te.name, te.line, te.col, te.msg);
            goto fail;
        }
        if (pc.missing[0] != '\0') {
            tmpl_buf_free(&b);
            herr_set(err, HERR_INPUT, "template", "%s/%s/%s: partial \"%s\" not found",
                     t->name, l->lang, job_part_names[p], pc.missing);
            goto fail;
        }
        out->parts[p] = herold_strdup(b.data ? b.data : "");
        tmpl_buf_free(&b);
        if (out->parts[p] == NULL) {
            herr_set(err, HERR_RESOURCE, "template", "out of memory");
            goto fail;
        }
    }
    json_decref(empty);
    if (msgset_derive(out) != 0) {
        herr_set(err, HERR_RESOURCE, "template", "out of memory");
        msgset_result_fini(out);
        return -1;
    }
    return msgset_fit(&s->o, policy_names[t->sms], policy_names[t->push],
                      policy_names[t->social], out, err) == 0
               ? 0
               : (msgset_result_fini(out), -1);
fail:
    json_decref(empty);
    msgset_result_fini(out);
    return -1;
}

int msgset_inline(const struct msgset_opts *o, const char *subject, const char *text,
                  const char *html, struct msgset_result *out, struct herr *err)
{
    memset(out, 0, sizeof *out);
    out->parts[JOB_PART_EMAIL_SUBJECT] = herold_strdup(subject);
    out->parts[JOB_PART_EMAIL_TXT] = herold_strdup(text);
    if (html != NULL)
        out->parts[JOB_PART_EMAIL_HTML] = herold_strdup(html);
    if (out->parts[JOB_PART_EMAIL_SUBJECT] == NULL || out->parts[JOB_PART_EMAIL_TXT] == NULL ||
        (html != NULL && out->parts[JOB_PART_EMAIL_HTML] == NULL) || msgset_derive(out) != 0) {
        msgset_result_fini(out);
        return herr_set(err, HERR_RESOURCE, NULL, "out of memory");
    }
    if (msgset_fit(o, "truncate", "truncate", "truncate", out, err) != 0) {
        msgset_result_fini(out);
        return -1;
    }
    return 0;
}

int msgset_apply(const struct msgset *s, const struct msgset_opts *o, struct job *job,
                 const char *citizen_lang, struct herr *err)
{
    struct msgset_result r;
    int rc;

    if (job->template != NULL) {
        const char *langs[3] = {job->lang, citizen_lang, NULL};
        if (s == NULL)
            return herr_set(err, HERR_INPUT, "template", "no message set is loaded");
        rc = msgset_render(s, job->template, langs, job->data, &r, err);
    } else {
        rc = msgset_inline(o, job->subject, job->text, job->html, &r, err);
        snprintf(r.lang, sizeof r.lang, "%s", job->lang);
    }
    if (rc != 0)
        return -1;
    for (int i = 0; i < JOB_PARTS; i++) {
        herold_free(job->parts[i]);
        job->parts[i] = r.parts[i];
    }
    snprintf(job->render_lang, sizeof job->render_lang, "%s", r.lang);
    job->subject = job->parts[JOB_PART_EMAIL_SUBJECT];
    job->text = job->parts[JOB_PART_EMAIL_TXT];
    job->html = job->parts[JOB_PART_EMAIL_HTML];
    return 0;
}
