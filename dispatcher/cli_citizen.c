/*
 * cli_citizen - `herold citizen ...`, `citizens import`, `topic ...`,
 * `confirm` and `unsubscribe`: argument parsing and output for people;
 * the work is done in citizen.c (and csvimport.c).
 *
 * Contact points appear only in the output of `citizen show` and
 * `citizen export`, whose purpose that is; errors name fields and never
 * quote values.  Synchronous Redis: the CLI may block.
 */
#include "cli_citizen.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "citizen.h"
#include "csvimport.h"
#include "herr.h"
#include "redisq.h"

enum { CC_OK = 0, CC_INVALID = 1, CC_ERROR = 2, CC_NOSUCH = 4, CC_USAGE = 64 };

void cli_citizen_usage(FILE *out)
{
    fprintf(out,
            "       herold [-c CONFIG] citizen add ID [--email A] [--phone E164] [--lang L]\n"
            "              [--tz ZONE] [--quiet HH:MM-HH:MM] [--topic NAME=CH,CH]...\n"
            "              [--consent CH:METHOD:TEXTVERSION]... [--push PLATFORM:TOKEN]...\n"
            "       herold [-c CONFIG] citizen update ID [same options] [--drop-topic NAME]...\n"
            "              [--withdraw CH]... [--no-email] [--no-phone] [--no-push]\n"
            "       herold [-c CONFIG] citizen show ID [--json]\n"
            "       herold [-c CONFIG] citizen export ID    everything held (Art. 15 DSGVO)\n"
            "       herold [-c CONFIG] citizen erase ID     delete everything (Art. 17 DSGVO)\n"
            "       herold [-c CONFIG] citizens import FILE.csv [--skip-invalid] [--dry-run]\n"
            "       herold [-c CONFIG] topic list | topic show NAME\n"
            "       herold [-c CONFIG] confirm TOKEN        redeem a double opt-in token\n"
            "       herold [-c CONFIG] unsubscribe TOKEN    a List-Unsubscribe token\n");
}

bool cli_citizen_handles(const char *cmd)
{
    static const char *const cmds[] = {"citizen", "citizens", "topic", "confirm",
                                       "unsubscribe"};

    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(cmd, cmds[i]) == 0)
            return true;
    return false;
}

/* cc_connect - the synchronous connection, or NULL with a message. */
static struct redisq_sync *cc_connect(const struct herold_config *cfg)
{
    return redisq_sync_open(&cfg->redis, "herold-cli", NULL);
}

/* cc_fail - print err and map it to an exit status. */
static int cc_fail(const char *what, const struct herr *err)
{
    char buf[512];

    fprintf(stderr, "herold: %s: %s\n", what, herr_format(err, buf, sizeof buf));
    if (strcmp(err->msg, CITIZEN_NO_SUCH) == 0)
        return CC_NOSUCH;
    return err->kind == HERR_INPUT ? CC_INVALID : CC_ERROR;
}

/* cc_print_json - j on stdout, indented, keys sorted. */
static void cc_print_json(const json_t *j)
{
    char *txt = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);

    if (txt != NULL)
        puts(txt);
    free(txt);
}

/* ---- add / update ---- */

/* cc_split - s split at the first sep: *a points into s (NUL written),
 * returns the rest, or NULL when sep is missing or either side empty. */
static char *cc_split(char *s, char sep)
{
    char *p = strchr(s, sep);

    if (p == NULL || p == s || p[1] == '\0')
        return NULL;
    *p = '\0';
    return p + 1;
}

/* cc_put - citizen add / update. */
static int cc_put(const struct herold_config *cfg, int argc, char **argv, enum citizen_mode mode)
{
    struct citizen_in in;
    struct citizen_put_result res;
    struct redisq_sync *s = NULL;
    struct herr err;
    json_t *push = NULL;
    char *pushtxt = NULL, *own[2 * CITIZEN_MAX_TOPICS] = {NULL};
    size_t nown = 0;
    int rc = CC_USAGE;
    bool upd = mode == CITIZEN_UPDATE;

    memset(&in, 0, sizeof in);
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "herold: citizen %s: expected an ID\n", argv[0]);
        return CC_USAGE;
    }
    in.id = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *o = argv[i];
        bool flag = strcmp(o, "--no-email") == 0 || strcmp(o, "--no-phone") == 0 ||
                    strcmp(o, "--no-push") == 0;
        char *v;

        if (flag) {
            if (!upd) {
                fprintf(stderr, "herold: %s is only for citizen update\n", o);
                goto out;
            }
            if (strcmp(o, "--no-email") == 0)
                in.email = "";
            else if (strcmp(o, "--no-phone") == 0)
                in.phone = "";
            else
                in.push_json = "";
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "herold: %s needs a value\n", o);
            goto out;
        }
        v = argv[++i];
        if (strcmp(o, "--email") == 0) {
            in.email = v;
        } else if (strcmp(o, "--phone") == 0) {
            in.phone = v;
        } else if (strcmp(o, "--lang") == 0) {
            in.lang = v;
        } else if (strcmp(o, "--tz") == 0) {
            in.tz = v;
        } else if (strcmp(o, "--quiet") == 0) {
            in.quiet = v;
        } else if (strcmp(o, "--topic") == 0) {
            char *c = nown < 2 * CITIZEN_MAX_TOPICS ? herold_strdup(v) : NULL, *chans;
            if (in.ntopics >= CITIZEN_MAX_TOPICS || c == NULL) {
                herold_free(c);
                fprintf(stderr, "herold: at most %d --topic\n", CITIZEN_MAX_TOPICS);
                rc = CC_INVALID;
                goto out;
            }
            own[nown++] = c;
            if ((chans = cc_split(c, '=')) == NULL) {
                fprintf(stderr, "herold: topics[%zu]: expected --topic NAME=CH,CH\n",
                        in.ntopics);
                rc = CC_INVALID;
                goto out;
            }
            in.topics[in.ntopics++] = (struct citizen_topic_in){c, chans};
        } else if (strcmp(o, "--consent") == 0) {
            char *c = nown < 2 * CITIZEN_MAX_TOPICS ? herold_strdup(v) : NULL, *method, *tv;
            if (in.nconsents >= CITIZEN_MAX_CONSENTS || c == NULL) {
                herold_free(c);
                fprintf(stderr, "herold: at most %d --consent\n", CITIZEN_MAX_CONSENTS);
                rc = CC_INVALID;
                goto out;
            }
            own[nown++] = c;
            if ((method = cc_split(c, ':')) == NULL || (tv = cc_split(method, ':')) == NULL) {
                fprintf(stderr, "herold: consents[%zu]: expected --consent "
                                "CHANNEL:METHOD:TEXTVERSION, e.g. email:form:2026-01\n",
                        in.nconsents);
                rc = CC_INVALID;
                goto out;
            }
            in.consents[in.nconsents++] = (struct citizen_consent_in){c, method, tv, NULL, NULL};
        } else if (strcmp(o, "--push") == 0) {
            const char *colon = strchr(v, ':');
            if (colon == NULL || colon == v || colon[1] == '\0') {
                fprintf(stderr, "herold: push: expected --push PLATFORM:TOKEN\n");
                rc = CC_INVALID;
                goto out;
            }
            if (push == NULL)
                push = json_array();
            json_array_append_new(push, json_pack("{s:s%,s:s}", "platform", v,
                                                  (size_t)(colon - v), "token", colon + 1));
        } else if (upd && strcmp(o, "--drop-topic") == 0) {
            if (in.ndrop >= CITIZEN_MAX_TOPICS) {
                fprintf(stderr, "herold: at most %d --drop-topic\n", CITIZEN_MAX_TOPICS);
                rc = CC_INVALID;
                goto out;
            }
            in.drop_topics[in.ndrop++] = v;
        } else if (upd && strcmp(o, "--withdraw") == 0) {
            if (in.nwithdraw >= CITIZEN_MAX_CONSENTS) {
                fprintf(stderr, "herold: at most %d --withdraw\n", CITIZEN_MAX_CONSENTS);
                rc = CC_INVALID;
                goto out;
            }
            in.withdraw[in.nwithdraw++] = v;
        } else {
            fprintf(stderr, "herold: citizen %s: unknown option %s\n", argv[0], o);
            goto out;
        }
    }
    if (push != NULL) {
        pushtxt = json_dumps(push, JSON_COMPACT);
        in.push_json = pushtxt;
    }
    /* check everything before touching Redis: nothing is written on bad input */
    if (citizen_validate(&in, &err) != 0) {
        rc = cc_fail("invalid citizen", &err);
        goto out;
    }
    if ((s = cc_connect(cfg)) == NULL) {
        rc = CC_ERROR;
        goto out;
    }
    if (citizen_put(s, cfg, &in, mode, &res, &err) != 0) {
        rc = cc_fail(in.id, &err);
        goto out;
    }
    printf("%s %s\n", res.created ? "created" : res.changed ? "updated" : "unchanged", in.id);
    if (res.optins_sent > 0)
        printf("confirmation e-mail queued: the consent stays pending until the citizen "
               "confirms (within %d hours)\n", cfg->citizens.optin_ttl_hours);
    rc = CC_OK;
out:
    free(pushtxt);      /* json_dumps memory */
    json_decref(push);
    for (size_t i = 0; i < nown; i++)
        herold_free(own[i]);
    redisq_sync_free(s);
    return rc;
}

/* ---- show ---- */

static const char *cc_str(const json_t *o, const char *k, const char *dflt)
{
    const char *v = json_string_value(json_object_get(o, k));

    return v ? v : dflt;
}

/* cc_show_human - the record for people. */
static void cc_show_human(const char *id, const json_t *rec, size_t nhist)
{
    const char *k;
    json_t *v, *push = json_object_get(rec, "push");
    size_t i;
    bool any = false;

    printf("Citizen %s\n", id);
    printf("  created      %s\n", cc_str(rec, "created_at", "?"));
    printf("  updated      %s\n", cc_str(rec, "updated_at", "?"));
    printf("  language     %s%s\n", cc_str(rec, "lang", "de"),
           json_object_get(rec, "lang") ? "" : " (default)");
    printf("  time zone    %s\n",
           json_object_get(rec, "tz") ? cc_str(rec, "tz", "") : "(default)");
    printf("  quiet hours  %s\n", cc_str(rec, "quiet", "none"));
    if (json_object_get(rec, "email"))
        printf("  e-mail       %s (%s)\n", cc_str(rec, "email", ""),
               cc_str(rec, "email_state", "unverified"));
    else
        printf("  e-mail       none\n");
    if (json_object_get(rec, "phone"))
        printf("  phone        %s (%s)\n", cc_str(rec, "phone", ""),
               cc_str(rec, "phone_state", "unverified"));
    else
        printf("  phone        none\n");
    if (json_array_size(push) == 0)
        printf("  push         none\n");
    json_array_foreach(push, i, v)
        printf("  push         %s %s (%s)\n", cc_str(v, "platform", "?"), cc_str(v, "token", "?"),
               cc_str(v, "state", "?"));
    printf("Topics:\n");
    json_object_foreach((json_t *)rec, k, v)
        if (strncmp(k, "topic:", 6) == 0) {
            printf("  %-24s %s\n", k + 6, json_string_value(v));
            any = true;
        }
    if (!any)
        printf("  none\n");
    printf("Consent:\n");
    any = false;
    json_object_foreach((json_t *)rec, k, v)
        if (strncmp(k, "consent:", 8) == 0 && json_is_object(v)) {
            const char *st = cc_str(v, "state", "?");
            printf("  %-8s %-10s by %s, text %s, requested %s", k + 8, st,
                   cc_str(v, "method", "?"), cc_str(v, "text_version", "?"),
                   cc_str(v, "requested_at", "?"));
            if (json_object_get(v, "confirmed_at"))
                printf(", confirmed %s%s", cc_str(v, "confirmed_at", ""),
                       json_is_true(json_object_get(v, "double_opt_in")) ? " (double opt-in)"
                                                                          : "");
            if (json_object_get(v, "optin_expires_at"))
                printf(", confirmation link valid until %s", cc_str(v, "optin_expires_at", ""));
            if (json_object_get(v, "withdrawn_at"))
                printf(", withdrawn %s", cc_str(v, "withdrawn_at", ""));
            printf("\n");
            any = true;
        }
    if (!any)
        printf("  none\n");
    printf("History: %zu event%s (herold citizen export %s shows them)\n", nhist,
           nhist == 1 ? "" : "s", id);
}

static int cc_show(const struct herold_config *cfg, int argc, char **argv)
{
    bool as_json = argc == 3 && strcmp(argv[2], "--json") == 0;
    struct redisq_sync *s;
    struct herr err;
    json_t *rec;
    int rc;

    if (argc < 2 || argc > 3 || (argc == 3 && !as_json) || argv[1][0] == '-') {
        fprintf(stderr, "herold: usage: citizen show ID [--json]\n");
        return CC_USAGE;
    }
    if (!citizen_id_ok(argv[1])) {
        fprintf(stderr, "herold: id: expected 1-64 characters of A-Z a-z 0-9 . _ : -\n");
        return CC_INVALID;
    }
    if ((s = cc_connect(cfg)) == NULL)
        return CC_ERROR;
    rec = citizen_get(s, cfg, argv[1], &err);
    if (rec == NULL) {
        rc = cc_fail(argv[1], &err);
    } else {
        if (as_json) {
            cc_print_json(rec);
        } else {
            /* the history length, not the events: export has those */
            char key[600];
            const char *a[] = {"LLEN", key};
            struct redisq_reply *r;
            snprintf(key, sizeof key, "%scitizen:%s:history", cfg->redis.prefix, argv[1]);
            r = redisq_sync_argv(s, 2, a, NULL, &err);
            cc_show_human(argv[1], rec,
                          r && redisq_reply_type(r) == REDISQ_INT ? (size_t)redisq_reply_int(r)
                                                                  : 0);
            redisq_sync_reply_free(r);
        }
        rc = CC_OK;
    }
    json_decref(rec);
    redisq_sync_free(s);
    return rc;
}

/* ---- export / erase ---- */

static int cc_export(const struct herold_config *cfg, int argc, char **argv)
{
    struct redisq_sync *s;
    struct herr err;
    json_t *out;
    int rc = CC_OK;

    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "herold: usage: citizen export ID\n");
        return CC_USAGE;
    }
    if (!citizen_id_ok(argv[1])) {
        fprintf(stderr, "herold: id: expected 1-64 characters of A-Z a-z 0-9 . _ : -\n");
        return CC_INVALID;
    }
    if ((s = cc_connect(cfg)) == NULL)
        return CC_ERROR;
    out = citizen_export(s, cfg, argv[1], &err);
    if (out == NULL)
        rc = cc_fail(argv[1], &err);
    else
        cc_print_json(out);
    json_decref(out);
    redisq_sync_free(s);
    return rc;
}

/* cc_aof_idle - wait (at most ~60 s) until no AOF rewrite runs. */
static void cc_aof_idle(struct redisq_sync *s)
{
    for (int i = 0; i < 300; i++) {
        const char *a[] = {"INFO", "persistence"};
        struct herr err;
        struct redisq_reply *r = redisq_sync_argv(s, 2, a, NULL, &err);
        bool busy = r != NULL && strstr(redisq_reply_str(r, NULL),
                                        "aof_rewrite_in_progress:1") != NULL;
        struct timespec ts = {0, 200 * 1000 * 1000};

        redisq_sync_reply_free(r);
        if (!busy)
            return;
        nanosleep(&ts, NULL);
    }
}

static int cc_erase(const struct herold_config *cfg, int argc, char **argv)
{
    struct citizen_erase_result er;
    struct redisq_sync *s;
    struct herr err;
    int rc = CC_OK;

    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "herold: usage: citizen erase ID\n");
        return CC_USAGE;
    }
    if (!citizen_id_ok(argv[1])) {
        fprintf(stderr, "herold: id: expected 1-64 characters of A-Z a-z 0-9 . _ : -\n");
        return CC_INVALID;
    }
    if ((s = cc_connect(cfg)) == NULL)
        return CC_ERROR;
    if (citizen_erase(s, cfg, argv[1], &er, &err) != 0) {
        rc = cc_fail(argv[1], &err);
        if (rc != CC_NOSUCH)
            fprintf(stderr, "herold: the erasure is incomplete; run it again\n");
        redisq_sync_free(s);
        return rc;
    }
    if (!er.aof_rewrite_started && strstr(er.aof_msg, "already in progress") != NULL) {
        /* a rewrite that began before the deletions would still hold the
         * citizen: wait for it, then start one of our own */
        const char *a[] = {"BGREWRITEAOF"};
        struct redisq_reply *r;
        cc_aof_idle(s);
        r = redisq_sync_argv(s, 1, a, NULL, &err);
        if (r != NULL && redisq_reply_type(r) != REDISQ_ERROR)
            er.aof_rewrite_started = true;
        else
            snprintf(er.aof_msg, sizeof er.aof_msg, "%.120s",
                     r ? redisq_reply_str(r, NULL) : err.msg);
        redisq_sync_reply_free(r);
    }
    printf("erased citizen %s\n", argv[1]);
    printf("  record                 %ld\n", er.record);
    printf("  history                %ld\n", er.history);
    printf("  everyone index         %ld\n", er.index);
    printf("  topic memberships      %ld\n", er.topics);
    printf("  pending opt-ins        %ld\n", er.optins);
    printf("  daily-cap marks        %ld\n", er.caps);
    printf("  delivery ledger fields %ld\n", er.ledger);
    printf("  waiting or dead units  %ld\n", er.later);
    printf("  bounce marks           %ld\n", er.bounced);
    printf("  rejected jobs          %ld\n", er.rejected);
    printf("  dead jobs              %ld\n", er.dead);
    printf("  queued jobs            %ld\n", er.queued);
    if (er.queued_shared > 0)
        printf("note: %ld queued job(s) name this citizen among other recipients; they were "
               "kept, and their payload is deleted when they finish\n", er.queued_shared);
    if (er.aof_rewrite_started) {
        printf("AOF rewrite started: the append-only file forgets the citizen when it "
               "finishes\n");
    } else {
        fprintf(stderr, "herold: erased in Redis, but the AOF rewrite could not be started "
                        "(%s): the append-only file still holds the citizen until "
                        "BGREWRITEAOF runs\n", er.aof_msg);
        rc = CC_ERROR;
    }
    redisq_sync_free(s);
    return rc;
}

/* ---- topics ---- */

static int cc_topic_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cc_topic_list(const struct herold_config *cfg)
{
    struct redisq_sync *s = cc_connect(cfg);
    char key[600], cursor[32] = "0";
    json_t *names = json_array();
    const char **sorted = NULL;
    struct herr err;
    int rc = CC_ERROR;

    if (s == NULL)
        goto out;
    snprintf(key, sizeof key, "%stopics", cfg->redis.prefix);
    do {
        const char *a[] = {"SSCAN", key, cursor, "COUNT", "1000"};
        struct redisq_reply *r = redisq_sync_argv(s, 5, a, NULL, &err);
        const struct redisq_reply *m;
        if (r == NULL || redisq_reply_type(r) != REDISQ_ARRAY) {
            fprintf(stderr, "herold: %s\n", r ? redisq_reply_str(r, NULL) : err.msg);
            redisq_sync_reply_free(r);
            goto out;
        }
        snprintf(cursor, sizeof cursor, "%s", redisq_reply_str(redisq_reply_elem(r, 0), NULL));
        m = redisq_reply_elem(r, 1);
        for (size_t i = 0; i < redisq_reply_len(m); i++)
            json_array_append_new(names, json_string(redisq_reply_str(redisq_reply_elem(m, i),
                                                                      NULL)));
        redisq_sync_reply_free(r);
    } while (strcmp(cursor, "0") != 0);
    sorted = herold_calloc(json_array_size(names) + 1, sizeof *sorted);
    if (sorted == NULL)
        goto out;
    for (size_t i = 0; i < json_array_size(names); i++)
        sorted[i] = json_string_value(json_array_get(names, i));
    qsort(sorted, json_array_size(names), sizeof *sorted, cc_topic_cmp);
    for (size_t i = 0; i < json_array_size(names); i++) {
        char tk[600];
        const char *a[] = {"ZCARD", tk};
        struct redisq_reply *r;
        if (i > 0 && strcmp(sorted[i], sorted[i - 1]) == 0)
            continue;
        snprintf(tk, sizeof tk, "%stopic:%s", cfg->redis.prefix, sorted[i]);
        r = redisq_sync_argv(s, 2, a, NULL, &err);
        if (r == NULL || redisq_reply_type(r) != REDISQ_INT) {
            fprintf(stderr, "herold: %s\n", r ? redisq_reply_str(r, NULL) : err.msg);
            redisq_sync_reply_free(r);
            goto out;
        }
        printf("%-32s %lld subscriber%s\n", sorted[i], redisq_reply_int(r),
               redisq_reply_int(r) == 1 ? "" : "s");
        redisq_sync_reply_free(r);
    }
    if (json_array_size(names) == 0)
        printf("no topics yet\n");
    rc = CC_OK;
out:
    herold_free(sorted);
    json_decref(names);
    redisq_sync_free(s);
    return rc;
}

static int cc_topic(const struct herold_config *cfg, int argc, char **argv)
{
    struct citizen_topic_stats st;
    struct redisq_sync *s;
    struct herr err;

    if (argc == 2 && strcmp(argv[1], "list") == 0)
        return cc_topic_list(cfg);
    if (argc != 3 || strcmp(argv[1], "show") != 0) {
        fprintf(stderr, "herold: usage: topic list | topic show NAME\n");
        return CC_USAGE;
    }
    if (!citizen_topic_ok(argv[2])) {
        fprintf(stderr, "herold: topic: expected 1-64 characters of a-z 0-9 _ -\n");
        return CC_INVALID;
    }
    if ((s = cc_connect(cfg)) == NULL)
        return CC_ERROR;
    if (citizen_topic_stats(s, cfg, argv[2], &st, &err) != 0) {
        redisq_sync_free(s);
        return cc_fail(argv[2], &err);
    }
    redisq_sync_free(s);
    printf("Topic %s: %ld subscriber%s\n", argv[2], st.subscribers,
           st.subscribers == 1 ? "" : "s");
    printf("  email    %ld\n  sms      %ld\n  push     %ld\n  webhook  %ld\n", st.email,
           st.sms, st.push, st.webhook);
    if (st.other > 0)
        printf("  other    %ld\n", st.other);
    if (st.no_record > 0)
        printf("  (%ld member%s without a matching record)\n", st.no_record,
               st.no_record == 1 ? "" : "s");
    return CC_OK;
}

/* ---- confirm / unsubscribe / import ---- */

static int cc_confirm(const struct herold_config *cfg, int argc, char **argv)
{
    struct redisq_sync *s;
    struct herr err;
    char *id = NULL;
    const char *ch = "?";
    int rc;

    if (argc != 2) {
        fprintf(stderr, "herold: usage: confirm TOKEN\n");
        return CC_USAGE;
    }
    if ((s = cc_connect(cfg)) == NULL)
        return CC_ERROR;
    if (citizen_confirm(s, cfg, argv[1], &id, &ch, &err) != 0) {
        rc = cc_fail("confirm", &err);
    } else {
        printf("confirmed: %s consent of citizen %s\n", ch, id);
        rc = CC_OK;
    }
    herold_free(id);
    redisq_sync_free(s);
    return rc;
}

static int cc_unsubscribe(const struct herold_config *cfg, int argc, char **argv)
{
    struct redisq_sync *s;
    struct herr err;
    int removed = 0, rc;

    if (argc != 2) {
        fprintf(stderr, "herold: usage: unsubscribe TOKEN\n");
        return CC_USAGE;
    }
    if ((s = cc_connect(cfg)) == NULL)
        return CC_ERROR;
    if (citizen_unsubscribe(s, cfg, argv[1], &removed, &err) != 0) {
        rc = cc_fail("unsubscribe", &err);
    } else {
        if (removed == 0)
            printf("nothing to unsubscribe: not subscribed (any more)\n");
        else
            printf("unsubscribed from %d topic%s\n", removed, removed == 1 ? "" : "s");
        rc = CC_OK;
    }
    redisq_sync_free(s);
    return rc;
}

static int cc_import(const struct herold_config *cfg, int argc, char **argv)
{
    bool skip = false, dry = false;
    const char *path = NULL;
    struct redisq_sync *s;
    int rc;

    if (argc < 2 || strcmp(argv[1], "import") != 0) {
        fprintf(stderr, "herold: usage: citizens import FILE.csv [--skip-invalid] [--dry-run]\n");
        return CC_USAGE;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--skip-invalid") == 0) {
            skip = true;
        } else if (strcmp(argv[i], "--dry-run") == 0) {
            dry = true;
        } else if (argv[i][0] != '-' && path == NULL) {
            path = argv[i];
        } else {
            fprintf(stderr,
                    "herold: usage: citizens import FILE.csv [--skip-invalid] [--dry-run]\n");
            return CC_USAGE;
        }
    }
    if (path == NULL) {
        fprintf(stderr, "herold: usage: citizens import FILE.csv [--skip-invalid] [--dry-run]\n");
        return CC_USAGE;
    }
    if ((s = cc_connect(cfg)) == NULL)
        return CC_ERROR;
    rc = csvimport_run(cfg, s, path, skip, dry);
    redisq_sync_free(s);
    return rc;
}

int cli_citizen_main(const struct herold_config *cfg, int argc, char **argv)
{
    const char *cmd = argv[0];

    if (strcmp(cmd, "citizen") == 0 && argc >= 2) {
        if (strcmp(argv[1], "add") == 0)
            return cc_put(cfg, argc - 1, argv + 1, CITIZEN_ADD);
        if (strcmp(argv[1], "update") == 0)
            return cc_put(cfg, argc - 1, argv + 1, CITIZEN_UPDATE);
        if (strcmp(argv[1], "show") == 0)
            return cc_show(cfg, argc - 1, argv + 1);
        if (strcmp(argv[1], "export") == 0)
            return cc_export(cfg, argc - 1, argv + 1);
        if (strcmp(argv[1], "erase") == 0)
            return cc_erase(cfg, argc - 1, argv + 1);
    }
    if (strcmp(cmd, "citizens") == 0)
        return cc_import(cfg, argc, argv);
    if (strcmp(cmd, "topic") == 0)
        return cc_topic(cfg, argc, argv);
    if (strcmp(cmd, "confirm") == 0)
        return cc_confirm(cfg, argc, argv);
    if (strcmp(cmd, "unsubscribe") == 0)
        return cc_unsubscribe(cfg, argc, argv);
    cli_citizen_usage(stderr);
    return CC_USAGE;
}
