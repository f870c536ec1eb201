/*
 * config - herold's one JSON configuration file: load, validate, resolve
 * secrets.
 *
 * Every error names the JSON path of the field and what was expected, e.g.
 *   channels.webhook.endpoints[1].url: expected an https:// or http:// URL
 * Unknown keys are errors too (a typo must not silently fall back to a
 * default).  Secrets are given as "${ENV_NAME}", "@file:/path" or inline
 * text, resolved here, and never logged.  Secret files must not be
 * readable by group or others.
 */
#ifndef HEROLD_CONFIG_H
#define HEROLD_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "../dispatcher/herr.h"

struct config_redis {
    char *host;                 /* default "127.0.0.1" */
    int port;                   /* default 6379 */
    char *unix_socket;          /* NULL unless set; wins over host/port */
    char *username;             /* ACL user, NULL = none */
    char *password;             /* secret, NULL = none */
    char *prefix;               /* key prefix, default "herold:" */
    int connect_timeout_ms;     /* default 2000 */
    int command_timeout_ms;     /* default 5000: a reply slower than this is a hung Redis */
    int reconnect_min_ms;       /* default 100 */
    int reconnect_max_ms;       /* default 5000 */
    bool allow_unsafe_persistence; /* default false: refuse without AOF and noeviction */
};

struct config_queue {
    char *group;                /* consumer group, default "heroldd" */
    char *consumer;             /* consumer name, default the host name */
    int block_ms;               /* XREADGROUP BLOCK, default 1000 */
    int claim_idle_ms;          /* XAUTOCLAIM min idle, default 60000 */
    int max_deliveries;         /* poison threshold, default 3 */
    int max_active_jobs;        /* normal and bulk jobs in progress at once, default 8 */
    int max_urgent_jobs;        /* urgent jobs in progress at once, default 64 */
    int trim_interval_ms;       /* MINID trim and retention sweep, default 60000 */
};

struct config_jobs {
    long max_bytes;             /* job JSON size limit, default 1048576 */
    int max_recipients;         /* explicit recipients per job, default 10000 */
    int max_subject_chars;      /* default 998 */
    long max_text_bytes;        /* default 65536 */
    int retention_days;         /* job records and ledger, default 30 */
    int rejected_retention_days;/* rejected and dead entries, default 7 */
    long events_maxlen;         /* events stream cap, default 100000 */
};

struct config_delivery {
    int window;                 /* deliveries in flight at once, default 256 */
    int max_attempts;           /* per unit, default 5 */
    int backoff_base_ms;        /* first retry delay, default 1000 */
    int backoff_max_ms;         /* cap, default 300000 */
    int drain_timeout_ms;       /* SIGTERM deadline, default 10000 */
    int batch;                  /* ledger writes per Redis call, default 128 */
};

struct config_audience {
    int page;                   /* citizens read per Redis call, default 256 */
    int pages_ahead;            /* pages resolved ahead of delivery, default 4 */
    int daily_cap;              /* non-urgent jobs per citizen and local day, 0 = none; default 5 */
    char *default_tz;           /* quiet hours zone, default "Europe/Berlin" */
    int sending_lease_s;        /* a unit retried from `later` is retaken after this, default 300 */
};

struct config_citizens {
    int optin_ttl_hours;        /* double opt-in token lifetime, default 72 */
    char *confirm_url;          /* https URL with "{token}", NULL: no link in the message */
    char *optin_template;       /* template of the confirmation message, default "optin-bestaetigung" */
    char *unsubscribe_key;      /* secret: checks List-Unsubscribe tokens; NULL: channels.email's */
};

struct config_http {
    int connect_timeout_ms;     /* default 5000 */
    int timeout_ms;             /* default 15000 */
    int low_speed_time_s;       /* default 10 */
    int max_host_connections;   /* default 64 */
    int max_total_connections;  /* default 256 */
    long max_response_bytes;    /* default 65536 */
    char *ca_file;              /* NULL: system CA store */
};

struct config_templates {
    char *dir;                  /* the message set, default HEROLD_TEMPLATE_DIR */
    char *default_lang;         /* last language fallback, default "de" */
    int sms_max_segments;       /* default 3 */
    int push_title_max;         /* characters, default 50 */
    int push_body_max;          /* characters, default 180 */
    int max_partial_depth;      /* default 8 */
    long max_output_bytes;      /* per rendered part, default 262144 */
};

/* One provider's flow limits: flow.providers.<channel> (docs/flow.md). */
#define CONFIG_MAX_PROVIDERS 16
#define CONFIG_MAX_MANDATORY 8
struct config_provider {
    char name[33];              /* the channel name */
    double rate;                /* tokens per second, 0 = unlimited */
    double burst;               /* default rate, at least 1 */
    bool shared;                /* one GCRA limit in Redis for all instances */
    int max_attempts;           /* 0: delivery.max_attempts */
    int max_age_s;              /* 0: no limit */
};

struct config_flow {
    int urgent_reserve;         /* window slots only urgent units may use, default window/4 */
    int bulk_share;             /* bulk keeps window/bulk_share slots against normal, default 8 */
    int max_pause_s;            /* cap of a provider pause (Retry-After), default 300 */
    int circuit_failures;       /* transient failures in a row that pause a provider, default 5 */
    int schedule_poll_ms;       /* promotion timer, default 1000 */
    int alert_expiry_s;         /* default expiry of alerts, default 21600 */
    struct config_provider providers[CONFIG_MAX_PROVIDERS];
    size_t nproviders;
    char mandatory[CONFIG_MAX_MANDATORY][33];   /* channels every urgent alert uses */
    size_t nmandatory;
};

struct config_log {
    char *level;                /* debug|info|warn|error, default "info" */
    char *pseudonym_key;        /* secret; NULL: random per process */
};

struct herold_config {
    struct config_redis redis;
    struct config_queue queue;
    struct config_jobs jobs;
    struct config_delivery delivery;
    struct config_audience audience;
    struct config_citizens citizens;
    struct config_http http;
    struct config_templates templates;
    struct config_log log;
    struct config_flow flow;
    json_t *channels;           /* "channels" object borrowed from root, NULL if absent;
                                 * each channel validates its own subtree */
    json_t *root;               /* whole document, owned */
};

/* config_load - read and validate the file at path.  Returns a new config
 * (free with config_free) or NULL with err naming the JSON path. */
struct herold_config *config_load(const char *path, struct herr *err);

/* config_from_json - like config_load for an already parsed document;
 * takes a reference of its own to root. */
struct herold_config *config_from_json(json_t *root, struct herr *err);

/* config_defaults - a config with every default and no channels (used by
 * the CLI when only Redis settings matter).  Free with config_free. */
struct herold_config *config_defaults(void);

/* config_secret - resolve a secret reference found at JSON path `path`:
 * "${NAME}" from the environment, "@file:/path" from a file that is not
 * group- or world-accessible (trailing newline dropped), anything else
 * verbatim.  Returns a new string (free with herold_free_secret) or NULL
 * and err.  Never puts the secret or its value into err. */
char *config_secret(const char *ref, const char *path, struct herr *err);

/* config_provider - the flow limits of channel name (flow.providers),
 * or NULL when it has none. */
const struct config_provider *config_provider(const struct herold_config *c,
                                              const char *name);

/* config_free - free c, its strings, its secrets (cleared first) and its
 * reference to root, which ends c->channels too.  NULL is a no-op. */
void config_free(struct herold_config *c);

#endif
