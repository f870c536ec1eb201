/*
 * heroldd - the herold daemon: one libev loop that reads jobs from Redis
 * and delivers them through the configured channels.
 *
 *   heroldd -c /etc/herold/herold.json
 *   heroldd --check-config /etc/herold/herold.json
 *
 * Owns the loop, the configuration, the two Redis connections (commands,
 * and the blocking read), the HTTP transport, the channel instances, the
 * consumer and the fanout.  SIGTERM or SIGINT: stop reading, drain in-flight
 * deliveries within delivery.drain_timeout_ms, let Redis confirm what was
 * recorded, exit 0.  SIGHUP: reload the message set (templates/); a set
 * with errors is reported and the old one kept.  Never exits because
 * Redis went away.  Never dumps
 * core (secrets live in its memory).
 *
 * Test fault points (environment HEROLD_FAULTPOINT):
 *   after_provider_ok:N   abort() right after the N-th provider success,
 *                         before it is recorded (fault matrix row 2)
 *   crash_on_job:ID       abort() whenever job ID is started (row 5)
 */
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "../channels/channel.h"
#include "../channels/http.h"
#include "../config/config.h"
#include "alloc.h"
#include "clock.h"
#include "consumer.h"
#include "fanout.h"
#include "log.h"
#include "redisq.h"
#include "scripts.h"
#include "../templates/msgset.h"

#define HEROLDD_MAX_CHANNELS 16

struct heroldd {
    struct ev_loop *loop;
    struct herold_config *cfg;
    struct redisq_config rconf;
    struct redisq *rq, *rqb;
    struct http_transport *http;
    struct fanout_channel channels[HEROLDD_MAX_CHANNELS];
    size_t nchannels;
    struct consumer *consumer;
    struct fanout *fanout;
    struct msgset *templates;
    ev_signal sigterm, sigint, sighup;
    ev_timer settle;
    ev_tstamp settle_deadline;
    bool stopping;
};

static void heroldd_usage(FILE *out)
{
    fprintf(out,
            "usage: heroldd -c CONFIG.json      run the daemon\n"
            "       heroldd --check-config FILE validate FILE and exit (0 valid, 1 not)\n"
            "       heroldd --version\n");
}

/* heroldd_channels_init - init every configured channel; -1 and err. */
static int heroldd_channels_init(struct heroldd *h, struct http_transport *http,
                                 struct herr *err)
{
    struct channel_env env = {h->loop, http, http == NULL};
    const char *name;
    json_t *conf;

    if (channel_registry_check(err) != 0)
        return -1;
    if (h->cfg->channels == NULL || json_object_size(h->cfg->channels) == 0)
        return herr_set(err, HERR_INPUT, "channels", "expected at least one channel");
    json_object_foreach(h->cfg->channels, name, conf) {
        const struct channel_ops *ops = channel_find(name);
        char path[64];

        snprintf(path, sizeof path, "channels.%s", name);
        if (ops == NULL)
            return herr_set(err, HERR_INPUT, path, "unknown channel");
        if (h->nchannels == HEROLDD_MAX_CHANNELS)
            return herr_set(err, HERR_INPUT, path, "too many channels");
        if (ops->init(&env, conf, err, &h->channels[h->nchannels].state) != 0)
            return -1;
        h->channels[h->nchannels++].ops = ops;
    }
    return 0;
}

static void heroldd_channels_free(struct heroldd *h)
{
    for (size_t i = 0; i < h->nchannels; i++)
        h->channels[i].ops->destroy(h->channels[i].state);
    h->nchannels = 0;
}

/* heroldd_on_settle - after draining: wait until Redis confirmed every
 * ledger write and finish, or the grace period ends. */
static void heroldd_on_settle(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct heroldd *h = w->data;

    (void)revents;
    if ((fanout_inflight(h->fanout) == 0 && consumer_settled(h->consumer) &&
         redisq_outstanding(h->rq) == 0) ||
        clock_mono() > h->settle_deadline) {
        ev_timer_stop(loop, w);
        ev_break(loop, EVBREAK_ALL);
    }
}

static void heroldd_on_drained(void *arg)
{
    struct heroldd *h = arg;

    /* Whatever is still at a provider is cut off now; each abort records
     * the unit for a retry by the next start. */
    if (h->http)
        http_abort_all(h->http);
    h->settle_deadline = clock_mono() + 2.0;
    ev_timer_init(&h->settle, heroldd_on_settle, 0.02, 0.05);
    h->settle.data = h;
    ev_timer_start(h->loop, &h->settle);
}

/* heroldd_load_templates - load the configured message set; logs what
 * went wrong with file, line and column.  -1 on failure. */
static int heroldd_load_templates(const struct herold_config *cfg, struct msgset **out)
{
    struct tmpl_error te;
    bool failed;
    char buf[200];

    *out = msgset_load_configured(cfg, &failed, &te);
    if (failed) {
        LOG(LOG_ERROR, "heroldd", "templates_invalid", "dir=%s file=%s line=%d col=%d error=%s",
            cfg->templates.dir, te.name, te.line, te.col, log_quote(te.msg, buf, sizeof buf));
        return -1;
    }
    if (*out == NULL)
        LOG(LOG_WARN, "heroldd", "templates_absent",
            "dir=%s reason=\"no message set; jobs with inline content only\"",
            cfg->templates.dir);
    else
        LOG(LOG_INFO, "heroldd", "templates_loaded", "dir=%s templates=%zu",
            cfg->templates.dir, msgset_count(*out));
    return 0;
}

/* heroldd_on_sighup - reload the message set; jobs already accepted keep
 * what they rendered, and a broken set leaves the old one in place. */
static void heroldd_on_sighup(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct heroldd *h = w->data;
    struct msgset *fresh;

    (void)loop;
    (void)revents;
    if (heroldd_load_templates(h->cfg, &fresh) != 0) {
        LOG(LOG_WARN, "heroldd", "templates_kept", "reason=\"reload failed\"");
        return;
    }
    /* Rendering happens synchronously when a job is taken, so nothing
     * holds the old set between loop iterations. */
    consumer_set_templates(h->consumer, fresh);
    msgset_free(h->templates);
    h->templates = fresh;
}

static void heroldd_on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct heroldd *h = w->data;

    (void)loop;
    (void)revents;
    if (h->stopping) {
        LOG(LOG_WARN, "heroldd", "signal_again", "signal=%d action=exit_now", w->signum);
        ev_break(h->loop, EVBREAK_ALL);
        return;
    }
    h->stopping = true;
    LOG(LOG_INFO, "heroldd", "stopping", "signal=%d inflight=%zu", w->signum,
        fanout_inflight(h->fanout));
    consumer_stop(h->consumer);
    fanout_drain(h->fanout, h->cfg->delivery.drain_timeout_ms / 1000.0, heroldd_on_drained, h);
}

/* heroldd_faultpoints - parse HEROLD_FAULTPOINT (tests only). */
static void heroldd_faultpoints(long *after_ok, const char **crash_job)
{
    const char *fp = getenv("HEROLD_FAULTPOINT");

    *after_ok = 0;
    *crash_job = NULL;
    if (fp == NULL)
        return;
    if (strncmp(fp, "after_provider_ok:", 18) == 0)
        *after_ok = strtol(fp + 18, NULL, 10);
    else if (strncmp(fp, "crash_on_job:", 13) == 0)
        *crash_job = fp + 13;
    LOG(LOG_WARN, "heroldd", "faultpoint_armed", "point=%s", fp);
}

static int heroldd_check_config(const char *path)
{
    struct heroldd h = {0};
    struct herr err;
    char buf[512];
    int rc = 0;

    herr_clear(&err);
    h.loop = ev_default_loop(0);
    h.cfg = config_load(path, &err);
    if (h.cfg == NULL || heroldd_channels_init(&h, NULL, &err) != 0) {
        fprintf(stderr, "heroldd: %s: %s\n", path, herr_format(&err, buf, sizeof buf));
        rc = 1;
    } else {
        struct tmpl_error te;
        bool failed;
        h.templates = msgset_load_configured(h.cfg, &failed, &te);
        if (failed) {
            fprintf(stderr, "heroldd: %s: templates: %s/%s:%d:%d: %s\n", path,
                    h.cfg->templates.dir, te.name, te.line, te.col, te.msg);
            rc = 1;
        } else {
            printf("%s: configuration is valid (%zu channel%s, %zu template%s)\n", path,
                   h.nchannels, h.nchannels == 1 ? "" : "s", msgset_count(h.templates),
                   msgset_count(h.templates) == 1 ? "" : "s");
        }
        msgset_free(h.templates);
    }
    heroldd_channels_free(&h);
    config_free(h.cfg);
    ev_loop_destroy(h.loop);
    return rc;
}

int main(int argc, char **argv)
{
    struct heroldd h = {0};
    const char *config_path = NULL, *crash_job;
    struct herr err;
    char buf[512], qbuf[600];
    long after_ok;
    int rc = 0;
    enum log_level lvl;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            config_path = argv[++i];
        } else if (strcmp(argv[i], "--check-config") == 0 && i + 1 < argc) {
            return heroldd_check_config(argv[i + 1]);
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("heroldd 0.1.0 (job format v1)\n");
            return 0;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            heroldd_usage(stdout);
            return 0;
        } else {
            heroldd_usage(stderr);
            return 2;
        }
    }
    if (config_path == NULL) {
        heroldd_usage(stderr);
        return 2;
    }
    /* Secrets live in this process: no core dumps, no ptrace by others. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    herr_clear(&err);

    h.cfg = config_load(config_path, &err);
    if (h.cfg == NULL) {
        LOG(LOG_FATAL, "heroldd", "bad_config", "file=%s error=%s", config_path,
            log_quote(herr_format(&err, buf, sizeof buf), qbuf, sizeof qbuf));
        return 1;
    }
    if (log_parse_level(h.cfg->log.level, &lvl) == 0)
        log_min_level = lvl;
    if (h.cfg->log.pseudonym_key)
        log_set_pseudonym_key((const unsigned char *)h.cfg->log.pseudonym_key,
                              strlen(h.cfg->log.pseudonym_key));
    heroldd_faultpoints(&after_ok, &crash_job);

    h.loop = ev_default_loop(EVFLAG_AUTO);
    struct http_config hc = {
        .connect_timeout_ms = h.cfg->http.connect_timeout_ms,
        .timeout_ms = h.cfg->http.timeout_ms,
        .low_speed_bytes = 1,
        .low_speed_time_s = h.cfg->http.low_speed_time_s,
        .max_host_connections = h.cfg->http.max_host_connections,
        .max_total_connections = h.cfg->http.max_total_connections,
        .max_response_bytes = (size_t)h.cfg->http.max_response_bytes,
        .ca_file = h.cfg->http.ca_file,
    };
    h.http = http_transport_new(h.loop, &hc, &err);
    if (h.http == NULL || heroldd_channels_init(&h, h.http, &err) != 0) {
        LOG(LOG_FATAL, "heroldd", "bad_config", "file=%s error=%s", config_path,
            log_quote(herr_format(&err, buf, sizeof buf), qbuf, sizeof qbuf));
        rc = 1;
        goto out;
    }

    if (heroldd_load_templates(h.cfg, &h.templates) != 0) {
        rc = 1;
        goto out;
    }

    h.rconf = redisq_config_from(&h.cfg->redis, "heroldd");
    h.rq = redisq_new(h.loop, &h.rconf, "main", consumer_on_redis, NULL);
    h.rqb = redisq_new(h.loop, &h.rconf, "read", consumer_on_redis, NULL);
    if (h.rq == NULL || h.rqb == NULL)
        goto oom;
    scripts_register(h.rq);
    h.consumer = consumer_new(h.loop, h.cfg, h.rq, h.rqb, crash_job);
    if (h.consumer == NULL)
        goto oom;
    h.fanout = fanout_new(h.loop, h.cfg, h.rq, h.channels, h.nchannels,
                          consumer_on_fanout_end, h.consumer, after_ok);
    if (h.fanout == NULL)
        goto oom;
    consumer_attach(h.consumer, h.fanout);
    consumer_set_templates(h.consumer, h.templates);
    /* the state callbacks need the consumer, which needs the connections */
    redisq_set_state_cb(h.rq, consumer_on_redis, h.consumer);
    redisq_set_state_cb(h.rqb, consumer_on_redis, h.consumer);

    ev_signal_init(&h.sigterm, heroldd_on_signal, SIGTERM);
    h.sigterm.data = &h;
    ev_signal_start(h.loop, &h.sigterm);
    ev_signal_init(&h.sigint, heroldd_on_signal, SIGINT);
    h.sigint.data = &h;
    ev_signal_start(h.loop, &h.sigint);
    ev_signal_init(&h.sighup, heroldd_on_sighup, SIGHUP);
    h.sighup.data = &h;
    ev_signal_start(h.loop, &h.sighup);

    LOG(LOG_INFO, "heroldd", "starting", "version=0.1.0 channels=%zu consumer=%s",
        h.nchannels, h.cfg->queue.consumer);
    redisq_start(h.rq);
    redisq_start(h.rqb);
    ev_run(h.loop, 0);
    rc = consumer_fatal(h.consumer);
    goto out;
oom:
    LOG(LOG_FATAL, "heroldd", "out_of_memory", "phase=start");
    rc = 1;
out:
    /* Connections first: their pending callbacks (NULL replies) still see
     * a live consumer and fanout. */
    redisq_stop(h.rq);
    redisq_stop(h.rqb);
    if (h.http)
        http_abort_all(h.http);
    consumer_free(h.consumer);
    fanout_free(h.fanout);
    heroldd_channels_free(&h);
    http_transport_free(h.http);
    redisq_free(h.rq);
    redisq_free(h.rqb);
    if (h.loop) {
        ev_signal_stop(h.loop, &h.sigterm);
        ev_signal_stop(h.loop, &h.sigint);
        ev_signal_stop(h.loop, &h.sighup);
    }
    msgset_free(h.templates);
    LOG(LOG_INFO, "heroldd", "stopped", "status=%d", rc);
    config_free(h.cfg);
    return rc;
}
