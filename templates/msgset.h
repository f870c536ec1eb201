/*
 * msgset - the message set: every template on disk, compiled, and the
 * rules that turn a job into the parts each channel sends.
 *
 * Layout (docs/templates.md):
 *   DIR/<template>/template.json         description, required, over_limit
 *   DIR/<template>/example.json          sample data (optional)
 *   DIR/<template>/<lang>/<part>         email.subject, email.txt, ...
 *   DIR/_partials/<lang>/<name>.mustache shared partials
 *
 * Loading compiles every part and renders every template with its
 * example.json in every language, so a broken template (syntax, a missing
 * partial, an over-limit text with the "reject" policy) is found when the
 * set is loaded, at start and on SIGHUP, with file, line and column; a set
 * with errors is never installed.  A loaded set is immutable.
 *
 * Rendering: the language is the job's, else the citizen's, else the
 * configured default.  {{x}} escapes HTML in email.html and nothing in the
 * text parts; data is only ever values, never template text.  Missing
 * parts are derived (push.title <- email.subject; sms.txt <- push.body <-
 * email.subject; push.body <- sms.txt <- email.subject; social.txt <-
 * sms.txt <- push.body <- email.subject), then the channel limits apply
 * (templates/limits.h) with the template's over_limit policy.
 */
#ifndef HEROLD_MSGSET_H
#define HEROLD_MSGSET_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "../config/config.h"
#include "../dispatcher/herr.h"
#include "../dispatcher/job.h"
#include "render.h"

struct msgset;

struct msgset_opts {
    const char *default_lang;      /* borrowed */
    int sms_max_segments;
    int push_title_max;            /* characters */
    int push_body_max;             /* characters */
    int max_subject_chars;
    int max_partial_depth;
    size_t max_output;             /* bytes per part */
};

/* What rendering produced: the parts (new strings, NULL = none) and how
 * they measure.  Free with msgset_result_fini. */
struct msgset_result {
    char *parts[JOB_PARTS];
    bool derived[JOB_PARTS];       /* taken from another part */
    bool truncated[JOB_PARTS];     /* shortened to fit its channel */
    char lang[36];                 /* the language rendered */
};

/* msgset_opts_from_config - the options the configuration sets. */
void msgset_opts_from_config(const struct herold_config *c, struct msgset_opts *o);

/* msgset_load_configured - the set at c->templates.dir.  Returns it, or
 * NULL: with *failed false when the directory is the built-in default and
 * does not exist (herold then runs with inline content only), with *failed
 * true and err filled when loading failed. */
struct msgset *msgset_load_configured(const struct herold_config *c, bool *failed,
                                      struct tmpl_error *err);

/* msgset_load - load and check every template under dir.  Returns a new
 * set (free with msgset_free) or NULL with err: err->name is the file
 * (relative to dir), line and col are set for template syntax errors. */
struct msgset *msgset_load(const char *dir, const struct msgset_opts *o,
                           struct tmpl_error *err);
void msgset_free(struct msgset *s);

size_t msgset_count(const struct msgset *s);
/* msgset_name - name of the i-th template (sorted); NULL past the end. */
const char *msgset_name(const struct msgset *s, size_t i);
/* msgset_describe - template.json's description of name, or NULL. */
const char *msgset_describe(const struct msgset *s, const char *name);
/* msgset_example - the template's example data (borrowed), or NULL. */
const json_t *msgset_example(const struct msgset *s, const char *name);

/* msgset_render - render template `name` with data in the first of langs
 * (NULL entries skipped) the template has, else the default language.
 * Returns 0 and fills out, or -1 with err (HERR_INPUT: no such template,
 * a required variable missing from data, a text over its limit with the
 * "reject" policy, a line break in the subject; HERR_RESOURCE: memory). */
int msgset_render(const struct msgset *s, const char *name, const char *const langs[3],
                  const json_t *data, struct msgset_result *out, struct herr *err);

/* msgset_inline - the parts of inline content (subject, text, html): the
 * same derivation and limits as a template with the "truncate" policy.
 * s may be NULL (only opts are used). */
int msgset_inline(const struct msgset_opts *o, const char *subject, const char *text,
                  const char *html, struct msgset_result *out, struct herr *err);

/* msgset_apply - fill job->parts (and point job->subject/text/html at
 * them) from its template or inline content.  s may be NULL when the job
 * has inline content.  citizen_lang may be NULL.  Errors as msgset_render,
 * with err->path "template" or "data.<name>". */
int msgset_apply(const struct msgset *s, const struct msgset_opts *o, struct job *job,
                 const char *citizen_lang, struct herr *err);

/* msgset_fit - apply the channel limits to out's parts with the policies
 * given ("truncate" or "reject" for sms, push, social).  Used by render,
 * inline and the preview of ad-hoc templates. */
int msgset_fit(const struct msgset_opts *o, const char *sms_policy,
               const char *push_policy, const char *social_policy,
               struct msgset_result *out, struct herr *err);

/* msgset_derive - fill missing parts from the others (rules above). */
int msgset_derive(struct msgset_result *out);

void msgset_result_fini(struct msgset_result *r);

#endif
