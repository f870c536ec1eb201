/*
 * herold - the command-line tool for staff, operators and scripts.
 *
 *   herold [-c CONFIG] enqueue FILE|-        validate a job and add it
 *   herold [-c CONFIG] status JOB_ID [--json]
 *   herold [-c CONFIG] pseudonym CONTACT     the pseudonym heroldd logs
 *   herold [-c CONFIG] templates             list the message set
 *   herold [-c CONFIG] render TEMPLATE|--file PATH|--string TEXT
 *          [--data FILE|-] [--lang LANG] [--channel CH] [--part PART] [--json]
 *
 * Validates jobs with the daemon's own job.c and writes through the same
 * scripts, so `herold enqueue` accepts exactly what heroldd accepts.  It
 * may block (it is not the event loop).  Prints recipient ids, never
 * contact points.
 *
 * Exit status: 0 ok, 1 invalid input, 2 Redis or system error,
 * 3 duplicate job id, 4 no such job, 64 usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../channels/channel.h"
#include "../config/config.h"
#include "alloc.h"
#include "cli_citizen.h"
#include "cli_flow.h"
#include "clock.h"
#include "job.h"
#include "log.h"
#include "redisq.h"
#include "scripts.h"
#include "track.h"
#include "../templates/limits.h"
#include "../templates/msgset.h"

#define CLI_DEFAULT_CONFIG "/etc/herold/herold.json"

enum { CLI_OK = 0, CLI_INVALID = 1, CLI_ERROR = 2, CLI_DUPLICATE = 3, CLI_NOJOB = 4,
       CLI_USAGE = 64 };

static void cli_usage(FILE *out)
{
    fprintf(out,
            "usage: herold [-c CONFIG] enqueue FILE|-     validate a job and queue it\n"
            "       herold [-c CONFIG] status JOB_ID [--json]\n"
            "       herold [-c CONFIG] pseudonym CONTACT  the log pseudonym of a contact\n"
            "       herold [-c CONFIG] templates          list the message set\n"
            "       herold [-c CONFIG] render TEMPLATE|--file PATH|--string TEXT\n"
            "              [--data FILE|-] [--lang LANG] [--channel email|sms|push|social|all]\n"
            "              [--part PART] [--json]   preview a message with its lengths\n");
    cli_citizen_usage(out);
    cli_flow_usage(out);
    fprintf(out,
            "CONFIG defaults to $HEROLD_CONFIG, then " CLI_DEFAULT_CONFIG
            ", then built-in defaults (Redis on 127.0.0.1:6379).\n");
}

/* cli_read_all - read at most max+1 bytes of path ("-" = stdin). */
static char *cli_read_all(const char *path, long max, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    size_t cap = 65536, n = 0;
    char *buf;

    if (f == NULL)
        return NULL;
    buf = herold_malloc(cap);
    while (buf != NULL) {
        size_t got;
        if (n == cap) {
            char *nb;
            if ((long)cap > max + 1)
                break;
            cap *= 2;
            nb = herold_realloc(buf, cap);
            if (nb == NULL) {
                herold_free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (f != stdin)
        fclose(f);
    *len = n;
    return buf;
}

static bool cli_channel_ok(const char *name, void *arg)
{
    const struct herold_config *cfg = arg;

    if (channel_find(name) == NULL)
        return false;
    /* with a real configuration, the channel must be configured there */
    return cfg->channels == NULL || json_object_get(cfg->channels, name) != NULL;
}

static struct redisq_sync *cli_connect(const struct herold_config *cfg)
{
    return redisq_sync_open(&cfg->redis, "herold-cli", NULL);
}

/* cli_load_templates - the configured message set, or NULL (with a message
 * when it exists but is broken: *failed). */
static struct msgset *cli_load_templates(const struct herold_config *cfg, bool *failed)
{
    struct tmpl_error te;
    struct msgset *s = msgset_load_configured(cfg, failed, &te);

    if (*failed)
        fprintf(stderr, "herold: templates: %s/%s:%d:%d: %s\n", cfg->templates.dir, te.name,
                te.line, te.col, te.msg);
    return s;
}

/* cli_check_content - render the job's content as heroldd will, so a
 * missing template or variable is refused here already.  Without a local
 * message set, template jobs are left to heroldd to check. */
static int cli_check_content(const struct herold_config *cfg, struct job *job,
                             struct herr *err)
{
    struct msgset_opts o;
    bool failed;
    struct msgset *s = NULL;
    int rc;

    msgset_opts_from_config(cfg, &o);
    if (job->template != NULL) {
        s = cli_load_templates(cfg, &failed);
        if (failed)
            return herr_set(err, HERR_INPUT, "template", "the message set does not load");
        if (s == NULL)
            return 0;
    }
    rc = msgset_apply(s, &o, job, NULL, err);
    msgset_free(s);
    return rc;
}

static int cli_enqueue(const struct herold_config *cfg, const char *path)
{
    struct job_limits lim = {cfg->jobs.max_bytes, cfg->jobs.max_recipients,
                             cfg->jobs.max_subject_chars, cfg->jobs.max_text_bytes};
    struct redisq_sync *s = NULL;
    struct redisq_reply *r = NULL;
    struct job *job = NULL;
    struct herr err;
    char buf[512], jk[TRACK_KEY_MAX], lk[TRACK_KEY_MAX], ts[40], ttl[24];
    size_t len = 0;
    char *data = cli_read_all(path, cfg->jobs.max_bytes, &len);
    int rc_exit = CLI_ERROR;

    if (data == NULL) {
        fprintf(stderr, "herold: cannot read %s\n", path);
        return CLI_ERROR;
    }
    job = job_parse(data, len, NULL, &lim, cli_channel_ok, (void *)cfg, clock_wall(), &err);
    if (job == NULL) {
        fprintf(stderr, "herold: invalid job: %s\n", herr_format(&err, buf, sizeof buf));
        rc_exit = err.kind == HERR_INPUT ? CLI_INVALID : CLI_ERROR;
        goto out;
    }
    if (cli_check_content(cfg, job, &err) != 0) {
        fprintf(stderr, "herold: invalid job: %s\n", herr_format(&err, buf, sizeof buf));
        rc_exit = err.kind == HERR_INPUT ? CLI_INVALID : CLI_ERROR;
        goto out;
    }
    s = cli_connect(cfg);
    if (s == NULL)
        goto out;
    snprintf(ttl, sizeof ttl, "%ld", cfg->jobs.retention_days * 86400L);
    const char *argv[] = {track_key_job(jk, cfg->redis.prefix, job->id),
                          track_key_lane(lk, cfg->redis.prefix,
                                         (enum track_lane)track_lane_from_name(job->priority)),
                          data, clock_iso(clock_wall(), ts, sizeof ts), job->id,
                          job->priority, job->kind, ttl};
    size_t lens[8];
    for (int i = 0; i < 8; i++)
        lens[i] = strlen(argv[i]);
    lens[2] = len;
    r = redisq_sync_eval(s, &script_enqueue, 2, 8, argv, lens, &err);
    if (r == NULL) {
        fprintf(stderr, "herold: %s\n", err.msg);
        goto out;
    }
    if (redisq_reply_type(r) != REDISQ_ARRAY || redisq_reply_len(r) != 2) {
        fprintf(stderr, "herold: Redis refused the job: %s\n", redisq_reply_str(r, NULL));
        goto out;
    }
    const char *verdict = redisq_reply_str(redisq_reply_elem(r, 0), NULL);
    printf("%s %s %s\n", verdict, job->id, redisq_reply_str(redisq_reply_elem(r, 1), NULL));
    rc_exit = strcmp(verdict, "accepted") == 0 ? CLI_OK : CLI_DUPLICATE;
out:
    redisq_sync_reply_free(r);
    redisq_sync_free(s);
    job_free(job);
    herold_free(data);
    return rc_exit;
}

/* cli_str - string member of o, or "?". */
static const char *cli_str(const json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));

    return v ? v : "?";
}

/* cli_print_status - the report for people. */
static void cli_print_status(const json_t *st)
{
    const char *ch;
    json_t *c, *f;
    size_t i;
    json_int_t units = json_integer_value(json_object_get(st, "units")), final = 0;

    printf("Job %s (%s, lane %s): %s\n", json_string_value(json_object_get(st, "id")),
           cli_str(st, "kind"),
           cli_str(st, "lane"),
           cli_str(st, "state"));
    if (json_object_get(st, "accepted_at"))
        printf("  accepted  %s\n", json_string_value(json_object_get(st, "accepted_at")));
    if (json_object_get(st, "finished_at"))
        printf("  finished  %s\n", json_string_value(json_object_get(st, "finished_at")));
    json_object_foreach(json_object_get(st, "counts"), ch, c) {
        json_int_t sent = json_integer_value(json_object_get(c, "sent"));
        json_int_t failed = json_integer_value(json_object_get(c, "failed"));
        json_int_t supp = json_integer_value(json_object_get(c, "suppressed"));
        json_int_t exp = json_integer_value(json_object_get(c, "expired"));
        json_int_t dead = json_integer_value(json_object_get(c, "dead"));
        json_int_t canc = json_integer_value(json_object_get(c, "cancelled"));
        final += sent + failed + supp + exp + dead + canc;
        printf("  %-10s %" JSON_INTEGER_FORMAT " sent, %" JSON_INTEGER_FORMAT " failed, %"
               JSON_INTEGER_FORMAT " suppressed, %" JSON_INTEGER_FORMAT " expired, %"
               JSON_INTEGER_FORMAT " dead letters, %" JSON_INTEGER_FORMAT " cancelled"
               " (retries %" JSON_INTEGER_FORMAT ", resent in doubt %" JSON_INTEGER_FORMAT ")\n",
               ch, sent, failed, supp, exp, dead, canc,
               json_integer_value(json_object_get(c, "retries")),
               json_integer_value(json_object_get(c, "in_doubt")));
    }
    printf("  %" JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT " deliveries final\n", final,
           units);
    if (json_array_size(json_object_get(st, "failures")) > 0)
        printf("Not delivered (yet):\n");
    json_array_foreach(json_object_get(st, "failures"), i, f) {
        const char *reason = json_string_value(json_object_get(f, "reason"));
        printf("  %-10s %-20s %-10s attempts %" JSON_INTEGER_FORMAT "%s%s\n",
               json_string_value(json_object_get(f, "channel")),
               json_string_value(json_object_get(f, "recipient")),
               json_string_value(json_object_get(f, "state")),
               json_integer_value(json_object_get(f, "attempts")),
               reason && *reason ? "  " : "", reason ? reason : "");
    }
}

static int cli_status(const struct herold_config *cfg, const char *id, bool as_json)
{
    struct redisq_sync *s;
    struct herr err;
    json_t *st;

    if (!job_id_ok(id, JOB_ID_MAX)) {
        fprintf(stderr, "herold: not a job id\n");
        return CLI_INVALID;
    }
    s = cli_connect(cfg);
    if (s == NULL)
        return CLI_ERROR;
    st = track_status(s, cfg->redis.prefix, id, 1000, &err);
    redisq_sync_free(s);
    if (st == NULL) {
        fprintf(stderr, "herold: %s: %s\n", id, err.msg);
        return err.kind == HERR_INPUT ? CLI_NOJOB : CLI_ERROR;
    }
    if (as_json) {
        char *txt = json_dumps(st, JSON_INDENT(2) | JSON_SORT_KEYS);
        if (txt) {
            puts(txt);
            free(txt);
        }
    } else {
        cli_print_status(st);
    }
    json_decref(st);
    return CLI_OK;
}

static const char *const cli_channel_parts[][4] = {
    {"email", "email.subject", "email.txt", "email.html"},
    {"sms", "sms.txt", NULL, NULL},
    {"push", "push.title", "push.body", NULL},
    {"social", "social.txt", NULL, NULL},
};

/* cli_part_wanted - is part p shown for --channel ch ("all": every one)? */
static bool cli_part_wanted(const char *ch, int p)
{
    if (strcmp(ch, "all") == 0)
        return true;
    for (size_t i = 0; i < sizeof cli_channel_parts / sizeof cli_channel_parts[0]; i++)
        if (strcmp(cli_channel_parts[i][0], ch) == 0)
            for (int k = 1; k < 4 && cli_channel_parts[i][k]; k++)
                if (strcmp(cli_channel_parts[i][k], job_part_names[p]) == 0)
                    return true;
    return false;
}

/* cli_measure - a part's lengths as JSON: characters always, the SMS
 * encoding and segments for sms.txt, graphemes and Mastodon's count for
 * social.txt. */
static json_t *cli_measure(int p, const char *text, bool derived, bool truncated)
{
    json_t *o = json_pack("{s:s,s:I,s:b,s:b}", "text", text, "chars",
                          (json_int_t)limits_chars(text), "derived", derived, "truncated",
                          truncated);

    if (p == JOB_PART_SMS) {
        struct sms_info si;
        limits_sms(text, &si);
        json_object_set_new(o, "sms", json_pack("{s:s,s:I,s:I}", "encoding",
                                                si.encoding == SMS_GSM7 ? "GSM-7" : "UCS-2",
                                                "units", (json_int_t)si.units, "segments",
                                                (json_int_t)si.segments));
    }
    if (p == JOB_PART_SOCIAL) {
        json_object_set_new(o, "graphemes", json_integer((json_int_t)limits_graphemes(text)));
        json_object_set_new(o, "mastodon", json_integer((json_int_t)limits_mastodon_len(text)));
    }
    return o;
}

/* cli_print_part - one part for people: a header line with lengths, then
 * the text. */
static void cli_print_part(const char *name, const json_t *m)
{
    const json_t *sms = json_object_get(m, "sms");

    printf("--- %s: %" JSON_INTEGER_FORMAT " characters", name,
           json_integer_value(json_object_get(m, "chars")));
    if (sms)
        printf(", %s, %" JSON_INTEGER_FORMAT " %s, %" JSON_INTEGER_FORMAT " SMS",
               json_string_value(json_object_get(sms, "encoding")),
               json_integer_value(json_object_get(sms, "units")),
               strcmp(json_string_value(json_object_get(sms, "encoding")), "GSM-7") == 0
                   ? "septets" : "UTF-16 units",
               json_integer_value(json_object_get(sms, "segments")));
    if (json_object_get(m, "graphemes"))
        printf(", %" JSON_INTEGER_FORMAT " graphemes (Bluesky), %" JSON_INTEGER_FORMAT
               " as Mastodon counts",
               json_integer_value(json_object_get(m, "graphemes")),
               json_integer_value(json_object_get(m, "mastodon")));
    if (json_is_true(json_object_get(m, "derived")))
        printf(" [derived]");
    if (json_is_true(json_object_get(m, "truncated")))
        printf(" [truncated]");
    printf("\n%s\n", json_string_value(json_object_get(m, "text")));
}

/* cli_adhoc - render an ad-hoc template (from --file or --string) as one
 * part, with the partials of the configured set when there is one. */
static int cli_adhoc(const struct herold_config *cfg, const char *src, size_t len,
                     const char *name, int part, const json_t *data,
                     struct msgset_result *res, struct herr *err)
{
    struct tmpl_error te;
    struct tmpl *t = tmpl_compile(src, len, name, &te);
    struct tmpl_render_opts ro = {
        .escape = part == JOB_PART_EMAIL_HTML ? tmpl_escape_html : tmpl_escape_none,
        .max_depth = cfg->templates.max_partial_depth,
        .max_output = (size_t)cfg->templates.max_output_bytes,
    };
    struct tmpl_buf b = {0};
    struct msgset_opts o;

    memset(res, 0, sizeof *res);
    if (t == NULL)
        return herr_set(err, HERR_INPUT, NULL, "%s:%d:%d: %s", te.name, te.line, te.col, te.msg);
    if (tmpl_render(t, data, &ro, &b, &te) != 0) {
        tmpl_free(t);
        tmpl_buf_free(&b);
        return herr_set(err, HERR_INPUT, NULL, "%s:%d:%d: %s", te.name, te.line, te.col, te.msg);
    }
    tmpl_free(t);
    res->parts[part] = herold_strdup(b.data ? b.data : "");
    tmpl_buf_free(&b);
    snprintf(res->lang, sizeof res->lang, "%s", cfg->templates.default_lang);
    msgset_opts_from_config(cfg, &o);
    return msgset_fit(&o, "truncate", "truncate", "truncate", res, err);
}

static int cli_render(const struct herold_config *cfg, int argc, char **argv)
{
    const char *tname = NULL, *file = NULL, *string = NULL, *datafile = NULL;
    const char *lang = NULL, *channel = "all", *partname = "email.txt";
    bool as_json = false, failed = false;
    struct msgset *set = NULL;
    struct msgset_result res;
    json_t *data = NULL, *out = NULL, *parts;
    struct herr err;
    char buf[512];
    char *src = NULL;
    size_t len = 0;
    int part = -1, rc = CLI_INVALID;

    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--json") == 0) { as_json = true; continue; }
        if (v == NULL && a[0] == '-' && a[1] == '-') { cli_usage(stderr); return CLI_USAGE; }
        if (strcmp(a, "--file") == 0) file = argv[++i];
        else if (strcmp(a, "--string") == 0) string = argv[++i];
        else if (strcmp(a, "--data") == 0) datafile = argv[++i];
        else if (strcmp(a, "--lang") == 0) lang = argv[++i];
        else if (strcmp(a, "--channel") == 0) channel = argv[++i];
        else if (strcmp(a, "--part") == 0) partname = argv[++i];
        else if (a[0] != '-' && tname == NULL) tname = a;
        else { cli_usage(stderr); return CLI_USAGE; }
    }
    if ((tname != NULL) + (file != NULL) + (string != NULL) != 1) {
        fprintf(stderr, "herold: render needs exactly one of TEMPLATE, --file or --string\n");
        return CLI_USAGE;
    }
    if (strcmp(channel, "all") != 0 && strcmp(channel, "email") != 0 &&
        strcmp(channel, "sms") != 0 && strcmp(channel, "push") != 0 &&
        strcmp(channel, "social") != 0) {
        fprintf(stderr, "herold: --channel: expected email, sms, push, social or all\n");
        return CLI_USAGE;
    }
    for (int p = 0; p < JOB_PARTS; p++)
        if (strcmp(job_part_names[p], partname) == 0)
            part = p;
    if (part < 0) {
        fprintf(stderr, "herold: --part: expected one of email.subject, email.txt, email.html, "
                        "sms.txt, push.title, push.body, social.txt\n");
        return CLI_USAGE;
    }
    if (datafile != NULL) {
        json_error_t je;
        data = strcmp(datafile, "-") == 0 ? json_loadf(stdin, JSON_REJECT_DUPLICATES, &je)
                                          : json_load_file(datafile, JSON_REJECT_DUPLICATES, &je);
        if (data == NULL || !json_is_object(data)) {
            fprintf(stderr, "herold: --data %s:%d:%d: %s\n", datafile, je.line, je.column,
                    data ? "expected a JSON object" : je.text);
            json_decref(data);
            return CLI_INVALID;
        }
    }
    if (tname != NULL) {
        const char *langs[3] = {lang, NULL, NULL};
        set = cli_load_templates(cfg, &failed);
        if (set == NULL) {
            if (!failed)
                fprintf(stderr, "herold: no message set at %s (templates.dir)\n",
                        cfg->templates.dir);
            goto out;
        }
        if (data == NULL && msgset_example(set, tname) != NULL)
            data = json_deep_copy(msgset_example(set, tname));
        if (msgset_render(set, tname, langs, data, &res, &err) != 0) {
            fprintf(stderr, "herold: %s\n", herr_format(&err, buf, sizeof buf));
            goto out;
        }
    } else {
        if (file != NULL) {
            src = cli_read_all(file, cfg->templates.max_output_bytes, &len);
            if (src == NULL) {
                fprintf(stderr, "herold: cannot read %s\n", file);
                rc = CLI_ERROR;
                goto out;
            }
        }
        if (data == NULL)
            data = json_object();
        if (cli_adhoc(cfg, file ? src : string, file ? len : strlen(string),
                      file ? file : "string", part, data, &res, &err) != 0) {
            fprintf(stderr, "herold: %s\n", herr_format(&err, buf, sizeof buf));
            msgset_result_fini(&res);
            goto out;
        }
    }
    out = json_pack("{s:s?,s:s}", "template", tname, "lang", res.lang);
    parts = json_object();
    for (int p = 0; p < JOB_PARTS; p++)
        if (res.parts[p] != NULL && cli_part_wanted(channel, p))
            json_object_set_new(parts, job_part_names[p],
                                cli_measure(p, res.parts[p], res.derived[p], res.truncated[p]));
    json_object_set_new(out, "parts", parts);
    if (as_json) {
        char *txt = json_dumps(out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (txt)
            puts(txt);
        free(txt);
    } else {
        const char *k;
        json_t *m;
        printf("%s%s, language %s\n", tname ? "Template " : "Ad-hoc template",
               tname ? tname : "", res.lang);
        json_object_foreach(parts, k, m)
            cli_print_part(k, m);
    }
    msgset_result_fini(&res);
    rc = CLI_OK;
out:
    json_decref(out);
    json_decref(data);
    herold_free(src);
    msgset_free(set);
    return rc;
}

/* cli_templates - list the message set with descriptions. */
static int cli_templates(const struct herold_config *cfg)
{
    bool failed;
    struct msgset *s = cli_load_templates(cfg, &failed);

    if (s == NULL) {
        if (!failed)
            fprintf(stderr, "herold: no message set at %s (templates.dir)\n",
                    cfg->templates.dir);
        return CLI_INVALID;
    }
    for (size_t i = 0; i < msgset_count(s); i++)
        printf("%-24s %s\n", msgset_name(s, i), msgset_describe(s, msgset_name(s, i)));
    msgset_free(s);
    return CLI_OK;
}

int main(int argc, char **argv)
{
    const char *config_path = getenv("HEROLD_CONFIG");
    struct herold_config *cfg;
    struct herr err;
    char buf[512];
    int i = 1, rc;

    if (i + 1 < argc && strcmp(argv[i], "-c") == 0) {
        config_path = argv[i + 1];
        i += 2;
    }
    if (i >= argc || strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
        cli_usage(i >= argc ? stderr : stdout);
        return i >= argc ? CLI_USAGE : CLI_OK;
    }
    if (strcmp(argv[i], "--version") == 0) {
        printf("herold 0.1.0 (job format v1)\n");
        return CLI_OK;
    }
    if (config_path == NULL && access(CLI_DEFAULT_CONFIG, R_OK) == 0)
        config_path = CLI_DEFAULT_CONFIG;
    cfg = config_path ? config_load(config_path, &err) : config_defaults();
    if (cfg == NULL) {
        fprintf(stderr, "herold: %s: %s\n", config_path ? config_path : "defaults",
                herr_format(&err, buf, sizeof buf));
        return CLI_INVALID;
    }
    if (cfg->log.pseudonym_key)
        log_set_pseudonym_key((const unsigned char *)cfg->log.pseudonym_key,
                              strlen(cfg->log.pseudonym_key));
    if (strcmp(argv[i], "enqueue") == 0 && i + 2 == argc) {
        rc = cli_enqueue(cfg, argv[i + 1]);
    } else if (strcmp(argv[i], "status") == 0 && (i + 2 == argc || i + 3 == argc)) {
        bool as_json = i + 3 == argc && strcmp(argv[i + 2], "--json") == 0;
        if (i + 3 == argc && !as_json) {
            cli_usage(stderr);
            rc = CLI_USAGE;
        } else {
            rc = cli_status(cfg, argv[i + 1], as_json);
        }
    } else if (strcmp(argv[i], "render") == 0) {
        rc = cli_render(cfg, argc - i - 1, argv + i + 1);
    } else if (strcmp(argv[i], "templates") == 0 && i + 1 == argc) {
        rc = cli_templates(cfg);
    } else if (cli_citizen_handles(argv[i])) {
        rc = cli_citizen_main(cfg, argc - i, argv + i);
    } else if (cli_flow_handles(argv[i])) {
        rc = cli_flow_main(cfg, argc - i, argv + i);
    } else if (strcmp(argv[i], "pseudonym") == 0 && i + 2 == argc) {
        char p[16];
        if (cfg->log.pseudonym_key == NULL)
            fprintf(stderr, "herold: warning: log.pseudonym_key is not set; heroldd then "
                            "uses a random key per process and this value will not match\n");
        printf("%s\n", log_pseudonym(argv[i + 1], p));
        rc = CLI_OK;
    } else {
        cli_usage(stderr);
        rc = CLI_USAGE;
    }
    config_free(cfg);
    return rc;
}
