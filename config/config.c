/*
 * config - herold's configuration file: load it with jansson, check every
 * field's type and range against a table, fill in the defaults, resolve
 * the secrets.
 *
 * Owns the parsed document (root) and every string in struct
 * herold_config.  The "channels" subtree stays inside root and is only
 * borrowed by c->channels: each channel validates its own part at init.
 *
 * Errors name the JSON path and what was expected, never the value found,
 * because any value may be a secret; for the same reason jansson's own
 * parse messages are cut before the token they quote.  Secret values are
 * cleared before they are freed.  Never logs, never opens a socket and has
 * no side effects: `heroldd --check-config` runs exactly this code.
 */
#include "config.h"

#ifndef HEROLD_TEMPLATE_DIR
#define HEROLD_TEMPLATE_DIR "/usr/local/share/herold/templates"
#endif

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../dispatcher/alloc.h"

#define CONFIG_SECRET_MAX   65536   /* bytes in a secret file */
#define CONFIG_PSEUDONYM_MIN 16     /* bytes of log.pseudonym_key */
#define CONFIG_NAME_MAX     64      /* queue.group, queue.consumer */
#define CONFIG_CHANNEL_MAX  32      /* channel names */
#define CONFIG_PATH_SIZE    128     /* as struct herr's path */

enum config_type {
    CONFIG_INT,      /* int, range checked */
    CONFIG_LONG,     /* long, range checked */
    CONFIG_BOOL,     /* bool */
    CONFIG_STRING,   /* char *, checked by check */
    CONFIG_SECRET    /* char *, resolved by config_secret, then checked */
};

/* A check returns NULL when s is acceptable, else what was expected. */
typedef const char *config_check_fn(const char *s);

struct config_field {
    const char *name;
    enum config_type type;
    size_t offset;            /* into struct herold_config */
    long long min, max;       /* CONFIG_INT, CONFIG_LONG */
    config_check_fn *check;   /* CONFIG_STRING, CONFIG_SECRET; NULL: any */
};

struct config_section {
    const char *name;
    const struct config_field *fields;   /* ends with a NULL name */
};

#define CONFIG_NUM(type, sec, f, lo, hi) \
    {#f, type, offsetof(struct herold_config, sec.f), lo, hi, NULL}
#define CONFIG_STR(type, sec, f, chk) \
    {#f, type, offsetof(struct herold_config, sec.f), 0, 0, chk}
#define CONFIG_BOOLEAN(sec, f) \
    {#f, CONFIG_BOOL, offsetof(struct herold_config, sec.f), 0, 0, NULL}
#define CONFIG_END {NULL, CONFIG_INT, 0, 0, 0, NULL}

static config_check_fn config_check_host, config_check_socket,
    config_check_username, config_check_prefix, config_check_name,
    config_check_file, config_check_level, config_check_pseudonym_key,
    config_check_lang, config_check_tz, config_check_url;

static const struct config_field config_redis_fields[] = {
    CONFIG_STR(CONFIG_STRING, redis, host, config_check_host),
    CONFIG_NUM(CONFIG_INT, redis, port, 1, 65535),
    CONFIG_STR(CONFIG_STRING, redis, unix_socket, config_check_socket),
    CONFIG_STR(CONFIG_STRING, redis, username, config_check_username),
    CONFIG_STR(CONFIG_SECRET, redis, password, NULL),
    CONFIG_STR(CONFIG_STRING, redis, prefix, config_check_prefix),
    CONFIG_NUM(CONFIG_INT, redis, connect_timeout_ms, 1, 600000),
    CONFIG_NUM(CONFIG_INT, redis, command_timeout_ms, 1, 600000),
    CONFIG_NUM(CONFIG_INT, redis, reconnect_min_ms, 1, 600000),
    CONFIG_NUM(CONFIG_INT, redis, reconnect_max_ms, 1, 600000),
    CONFIG_BOOLEAN(redis, allow_unsafe_persistence),
    CONFIG_END
};

static const struct config_field config_queue_fields[] = {
    CONFIG_STR(CONFIG_STRING, queue, group, config_check_name),
    CONFIG_STR(CONFIG_STRING, queue, consumer, config_check_name),
    CONFIG_NUM(CONFIG_INT, queue, block_ms, 1, 600000),
    CONFIG_NUM(CONFIG_INT, queue, claim_idle_ms, 1000, 86400000),
    CONFIG_NUM(CONFIG_INT, queue, max_deliveries, 1, 1000),
    CONFIG_NUM(CONFIG_INT, queue, max_active_jobs, 1, 1024),
    CONFIG_NUM(CONFIG_INT, queue, max_urgent_jobs, 1, 1024),
    CONFIG_NUM(CONFIG_INT, queue, trim_interval_ms, 1000, 86400000),
    CONFIG_END
};

static const struct config_field config_jobs_fields[] = {
    CONFIG_NUM(CONFIG_LONG, jobs, max_bytes, 1024, 67108864),
    CONFIG_NUM(CONFIG_INT, jobs, max_recipients, 1, 1000000),
    CONFIG_NUM(CONFIG_INT, jobs, max_subject_chars, 1, 998),
    CONFIG_NUM(CONFIG_LONG, jobs, max_text_bytes, 1, 16777216),
    CONFIG_NUM(CONFIG_INT, jobs, retention_days, 1, 3650),
    CONFIG_NUM(CONFIG_INT, jobs, rejected_retention_days, 1, 3650),
    CONFIG_NUM(CONFIG_LONG, jobs, events_maxlen, 1000, 100000000),
    CONFIG_END
};

static const struct config_field config_delivery_fields[] = {
    CONFIG_NUM(CONFIG_INT, delivery, window, 1, 100000),
    CONFIG_NUM(CONFIG_INT, delivery, max_attempts, 1, 100),
    CONFIG_NUM(CONFIG_INT, delivery, backoff_base_ms, 1, 600000),
    CONFIG_NUM(CONFIG_INT, delivery, backoff_max_ms, 1, 3600000),
    CONFIG_NUM(CONFIG_INT, delivery, drain_timeout_ms, 1, 600000),
    CONFIG_NUM(CONFIG_INT, delivery, batch, 1, 10000),
    CONFIG_END
};

static const struct config_field config_audience_fields[] = {
    CONFIG_NUM(CONFIG_INT, audience, page, 1, 10000),
    CONFIG_NUM(CONFIG_INT, audience, pages_ahead, 1, 64),
    CONFIG_NUM(CONFIG_INT, audience, daily_cap, 0, 1000),
    CONFIG_STR(CONFIG_STRING, audience, default_tz, config_check_tz),
    CONFIG_NUM(CONFIG_INT, audience, sending_lease_s, 10, 86400),
    CONFIG_END
};

static const struct config_field config_citizens_fields[] = {
    CONFIG_NUM(CONFIG_INT, citizens, optin_ttl_hours, 1, 720),
    CONFIG_STR(CONFIG_STRING, citizens, confirm_url, config_check_url),
    CONFIG_STR(CONFIG_STRING, citizens, optin_template, config_check_name),
    CONFIG_STR(CONFIG_SECRET, citizens, unsubscribe_key, config_check_pseudonym_key),
    CONFIG_END
};

static const struct config_field config_http_fields[] = {
    CONFIG_NUM(CONFIG_INT, http, connect_timeout_ms, 1, 600000),
    CONFIG_NUM(CONFIG_INT, http, timeout_ms, 1, 600000),
    CONFIG_NUM(CONFIG_INT, http, low_speed_time_s, 1, 600),
    CONFIG_NUM(CONFIG_INT, http, max_host_connections, 1, 10000),
    CONFIG_NUM(CONFIG_INT, http, max_total_connections, 1, 100000),
    CONFIG_NUM(CONFIG_LONG, http, max_response_bytes, 1024, 16777216),
    CONFIG_STR(CONFIG_STRING, http, ca_file, config_check_file),
    CONFIG_END
};

static const struct config_field config_templates_fields[] = {
    CONFIG_STR(CONFIG_STRING, templates, dir, config_check_file),
    CONFIG_STR(CONFIG_STRING, templates, default_lang, config_check_lang),
    CONFIG_NUM(CONFIG_INT, templates, sms_max_segments, 1, 10),
    CONFIG_NUM(CONFIG_INT, templates, push_title_max, 10, 1000),
    CONFIG_NUM(CONFIG_INT, templates, push_body_max, 10, 4000),
    CONFIG_NUM(CONFIG_INT, templates, max_partial_depth, 1, 64),
    CONFIG_NUM(CONFIG_LONG, templates, max_output_bytes, 1024, 16777216),
    CONFIG_END
};

static const struct config_field config_log_fields[] = {
    CONFIG_STR(CONFIG_STRING, log, level, config_check_level),
    CONFIG_STR(CONFIG_SECRET, log, pseudonym_key, config_check_pseudonym_key),
    CONFIG_END
};

static const struct config_field config_flow_fields[] = {
    CONFIG_NUM(CONFIG_INT, flow, urgent_reserve, 0, 100000),
    CONFIG_NUM(CONFIG_INT, flow, bulk_share, 1, 1024),
    CONFIG_NUM(CONFIG_INT, flow, max_pause_s, 1, 86400),
    CONFIG_NUM(CONFIG_INT, flow, circuit_failures, 1, 1000),
    CONFIG_NUM(CONFIG_INT, flow, schedule_poll_ms, 50, 60000),
    CONFIG_NUM(CONFIG_INT, flow, alert_expiry_s, 1, 30 * 86400),
    CONFIG_END
};

/* "channels" is not in this table: its subtrees belong to the channels. */
static const struct config_section config_sections[] = {
    {"redis", config_redis_fields},
    {"queue", config_queue_fields},
    {"jobs", config_jobs_fields},
    {"delivery", config_delivery_fields},
    {"audience", config_audience_fields},
    {"citizens", config_citizens_fields},
    {"http", config_http_fields},
    {"templates", config_templates_fields},
    {"log", config_log_fields},
    {NULL, NULL}
};

/* config_oom - report an allocation failure at path; returns -1. */
static int config_oom(struct herr *err, const char *path)
{
    return herr_set(err, HERR_RESOURCE, path, "out of memory");
}

/* config_wipe - clear len bytes of a buffer that may hold a secret. */
static void config_wipe(char *buf, size_t len)
{
    /* volatile so the compiler cannot drop stores to memory about to be freed */
    for (volatile char *v = buf; len > 0; len--)
        *v++ = '\0';
}

/* config_ascii_ok - s has min..max bytes, all printable ASCII but space. */
static bool config_ascii_ok(const char *s, size_t min, size_t max)
{
    size_t n = strlen(s);

    if (n < min || n > max)
        return false;
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    }
    return true;
}

/* config_name_char - c is one of A-Z a-z 0-9 . _ : - */
static bool config_name_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
           c == '-';
}

/* config_check_host - a host name or address for Redis. */
static const char *config_check_host(const char *s)
{
    return config_ascii_ok(s, 1, 255)
        ? NULL : "expected 1-255 printable ASCII characters without spaces";
}

/* config_check_socket - an absolute path that fits sockaddr_un.sun_path. */
static const char *config_check_socket(const char *s)
{
    return s[0] == '/' && config_ascii_ok(s, 2, 107)
        ? NULL : "expected an absolute path of at most 107 characters";
}

/* config_check_username - a Redis ACL user name. */
static const char *config_check_username(const char *s)
{
    return config_ascii_ok(s, 1, 128)
        ? NULL : "expected 1-128 printable ASCII characters without spaces";
}

/* config_check_prefix - the Redis key prefix, with an optional {hash tag}. */
static const char *config_check_prefix(const char *s)
{
    const char *open, *close;

    if (!config_ascii_ok(s, 1, 64))
        return "expected 1-64 printable ASCII characters without spaces";
    /* Redis Cluster hashes only what lies between the first '{' and the
     * next '}'; a brace without a non-empty tag would scatter herold's
     * keys over slots and break every multi-key command. */
    open = strchr(s, '{');
    if (open == NULL)
        return strchr(s, '}') == NULL ? NULL
            : "expected a non-empty {hash tag} closed by }";
    close = strchr(open + 1, '}');
    if (close == NULL || close == open + 1)
        return "expected a non-empty {hash tag} closed by }";
    return NULL;
}

/* config_check_name - queue group or consumer name. */
static const char *config_check_name(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > CONFIG_NAME_MAX)
        goto bad;
    for (; *s != '\0'; s++) {
        if (!config_name_char(*s))
            goto bad;
    }
    return NULL;
bad:
    return "expected 1-64 characters of A-Z a-z 0-9 . _ : -";
}

/* config_check_lang - a language tag like "de", "en" or "de-x-ls". */
static const char *config_check_lang(const char *s)
{
    size_t n = strlen(s), i = 0;

    if (n < 2 || n > 35)
        return "expected a language tag such as \"de\" or \"de-x-ls\"";
    for (; i < n && s[i] >= 'a' && s[i] <= 'z'; i++)
        ;
    if (i < 2 || i > 3)
        return "expected a language tag such as \"de\" or \"de-x-ls\"";
    for (; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return "expected a language tag such as \"de\" or \"de-x-ls\"";
    return NULL;
}

/* config_check_tz - an IANA zone name present in the system's zoneinfo. */
static const char *config_check_tz(const char *s)
{
    char path[300];

    if (!config_ascii_ok(s, 1, 64) || s[0] == '/' || strstr(s, "..") != NULL)
        return "expected an IANA time zone such as \"Europe/Berlin\"";
    snprintf(path, sizeof path, "/usr/share/zoneinfo/%s", s);
    if (access(path, R_OK) != 0)
        return "expected an IANA time zone such as \"Europe/Berlin\" (not in /usr/share/zoneinfo)";
    return NULL;
}

/* config_check_url - an https URL with a "{token}" placeholder. */
static const char *config_check_url(const char *s)
{
    if (strncmp(s, "https://", 8) != 0 || strstr(s, "{token}") == NULL ||
        !config_ascii_ok(s, 10, 2000))
        return "expected an https:// URL containing {token}";
    return NULL;
}

/* config_check_file - an absolute file path (http.ca_file, templates.dir). */
static const char *config_check_file(const char *s)
{
    size_t n = strlen(s);

    if (s[0] != '/' || n > 4095)
        return "expected an absolute file path";
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
            return "expected an absolute file path";
    }
    return NULL;
}

/* config_check_level - one of the four configurable log levels. */
static const char *config_check_level(const char *s)
{
    static const char *const levels[] = {"debug", "info", "warn", "error"};

    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        if (strcmp(s, levels[i]) == 0)
            return NULL;
    }
    return "expected one of debug, info, warn, error";
}

/* config_check_pseudonym_key - long enough that pseudonyms of phone
 * numbers cannot be reversed by trying every number under guessed keys. */
static const char *config_check_pseudonym_key(const char *s)
{
    return strlen(s) >= CONFIG_PSEUDONYM_MIN
        ? NULL : "expected a key of at least 16 bytes";
}

/* config_channel_name_ok - [a-z0-9_-]{1,32} */
static bool config_channel_name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > CONFIG_CHANNEL_MAX)
        return false;
    for (; *s != '\0'; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '-'))
            return false;
    }
    return true;
}

/* config_path - "section.key" (or "key") into buf, control bytes as '?'. */
static void config_path(char *buf, size_t size, const char *section,
                        const char *key)
{
    int n = 0;
    size_t i;

    if (section != NULL)
        n = snprintf(buf, size, "%s.", section);
    if (n < 0 || (size_t)n >= size)
        n = 0;
    for (i = (size_t)n; *key != '\0' && i + 1 < size; key++, i++)
        buf[i] = ((unsigned char)*key < 0x20 || *key == 0x7f) ? '?' : *key;
    buf[i] = '\0';
}

/* config_default_consumer - the host name mapped into the name charset. */
static char *config_default_consumer(void)
{
    char host[256];
    size_t i;

    if (gethostname(host, sizeof host) < 0)
        host[0] = '\0';
    /* POSIX leaves a truncated name unterminated */
    host[sizeof host - 1] = '\0';
    host[CONFIG_NAME_MAX] = '\0';
    for (i = 0; host[i] != '\0'; i++) {
        if (!config_name_char(host[i]))
            host[i] = '-';
    }
    return herold_strdup(i > 0 ? host : "heroldd");
}

/* config_set_defaults - every default of config.h into c (zeroed). */
static int config_set_defaults(struct herold_config *c)
{
    c->redis.port = 6379;
    c->redis.connect_timeout_ms = 2000;
    c->redis.command_timeout_ms = 5000;
    c->redis.reconnect_min_ms = 100;
    c->redis.reconnect_max_ms = 5000;
    c->redis.allow_unsafe_persistence = false;

    c->queue.block_ms = 1000;
    c->queue.claim_idle_ms = 60000;
    c->queue.max_deliveries = 3;
    c->queue.max_active_jobs = 8;
    c->queue.max_urgent_jobs = 64;
    c->queue.trim_interval_ms = 60000;

    c->jobs.max_bytes = 1048576;
    c->jobs.max_recipients = 10000;
    c->jobs.max_subject_chars = 998;
    c->jobs.max_text_bytes = 65536;
    c->jobs.retention_days = 30;
    c->jobs.rejected_retention_days = 7;
    c->jobs.events_maxlen = 100000;

    c->delivery.window = 64;
    c->delivery.max_attempts = 5;
    c->delivery.backoff_base_ms = 1000;
    c->delivery.backoff_max_ms = 300000;
    c->delivery.drain_timeout_ms = 10000;
    c->delivery.batch = 128;

    c->audience.page = 256;
    c->audience.pages_ahead = 4;
    c->audience.daily_cap = 5;
    c->audience.sending_lease_s = 300;
    c->citizens.optin_ttl_hours = 72;

    c->http.connect_timeout_ms = 5000;
    c->http.timeout_ms = 15000;
    c->http.low_speed_time_s = 10;
    c->http.max_host_connections = 64;
    c->http.max_total_connections = 256;
    c->http.max_response_bytes = 65536;

    c->flow.urgent_reserve = -1;   /* window / 4, set after loading */
    c->flow.bulk_share = 8;
    c->flow.max_pause_s = 300;
    c->flow.circuit_failures = 5;
    c->flow.schedule_poll_ms = 1000;
    c->flow.alert_expiry_s = 21600;

    c->templates.sms_max_segments = 3;
    c->templates.push_title_max = 50;
    c->templates.push_body_max = 180;
    c->templates.max_partial_depth = 8;
    c->templates.max_output_bytes = 262144;

    c->redis.host = herold_strdup("127.0.0.1");
    c->redis.prefix = herold_strdup("herold:");
    c->queue.group = herold_strdup("heroldd");
    c->queue.consumer = config_default_consumer();
    c->log.level = herold_strdup("info");
    c->templates.dir = herold_strdup(HEROLD_TEMPLATE_DIR);
    c->templates.default_lang = herold_strdup("de");
    c->audience.default_tz = herold_strdup("Europe/Berlin");
    c->citizens.optin_template = herold_strdup("optin-bestaetigung");
    if (c->audience.default_tz == NULL || c->citizens.optin_template == NULL ||
        c->redis.host == NULL || c->redis.prefix == NULL ||
        c->queue.group == NULL || c->queue.consumer == NULL ||
        c->log.level == NULL || c->templates.dir == NULL || c->templates.default_lang == NULL)
        return -1;
    return 0;
}

/* config_new - a zeroed config with defaults; NULL when memory runs out. */
static struct herold_config *config_new(void)
{
    struct herold_config *c = herold_calloc(1, sizeof *c);

    if (c == NULL)
        return NULL;
    if (config_set_defaults(c) < 0) {
        config_free(c);
        return NULL;
    }
    return c;
}

/* config_field_find - the entry for key in fields, or NULL. */
static const struct config_field *config_field_find(
    const struct config_field *fields, const char *key)
{
    for (; fields->name != NULL; fields++) {
        if (strcmp(fields->name, key) == 0)
            return fields;
    }
    return NULL;
}

/* config_field_set - check v against f and store it in c. */
static int config_field_set(struct herold_config *c,
                            const struct config_field *f, const json_t *v,
                            const char *path, struct herr *err)
{
    char *slot = (char *)c + f->offset;
    const char *why;
    char *s;
    json_int_t n;

    switch (f->type) {
    case CONFIG_INT:
    case CONFIG_LONG:
        if (!json_is_integer(v) || (n = json_integer_value(v)) < f->min ||
            n > f->max)
            return herr_set(err, HERR_INPUT, path,
                            "expected an integer between %lld and %lld",
                            f->min, f->max);
        if (f->type == CONFIG_INT)
            *(int *)(void *)slot = (int)n;
        else
            *(long *)(void *)slot = (long)n;
        return 0;
    case CONFIG_BOOL:
        if (!json_is_boolean(v))
            return herr_set(err, HERR_INPUT, path, "expected true or false");
        *(bool *)(void *)slot = json_is_true(v);
        return 0;
    case CONFIG_STRING:
        if (!json_is_string(v))
            return herr_set(err, HERR_INPUT, path, "expected a string");
        if (f->check != NULL && (why = f->check(json_string_value(v))) != NULL)
            return herr_set(err, HERR_INPUT, path, "%s", why);
        if ((s = herold_strdup(json_string_value(v))) == NULL)
            return config_oom(err, path);
        herold_free(*(char **)(void *)slot);
        *(char **)(void *)slot = s;
        return 0;
    case CONFIG_SECRET:
        if (!json_is_string(v))
            return herr_set(err, HERR_INPUT, path, "expected a string");
        if ((s = config_secret(json_string_value(v), path, err)) == NULL)
            return -1;
        /* checked after resolution: the rule is about the secret itself */
        if (f->check != NULL && (why = f->check(s)) != NULL) {
            herold_free_secret(s);
            return herr_set(err, HERR_INPUT, path, "%s", why);
        }
        herold_free_secret(*(char **)(void *)slot);
        *(char **)(void *)slot = s;
        return 0;
    }
    assert(!"unknown config field type");
    return -1;
}

/* config_section_load - every key of obj, a section of the file, into c. */
static int config_section_load(struct herold_config *c,
                               const struct config_section *sec,
                               const json_t *obj, struct herr *err)
{
    char path[CONFIG_PATH_SIZE];
    const struct config_field *f;
    const char *key;
    json_t *v;

    if (!json_is_object(obj))
        return herr_set(err, HERR_INPUT, sec->name, "expected an object");
    json_object_foreach((json_t *)obj, key, v) {
        config_path(path, sizeof path, sec->name, key);
        if ((f = config_field_find(sec->fields, key)) == NULL)
            return herr_set(err, HERR_INPUT, path, "unknown field");
        if (config_field_set(c, f, v, path, err) < 0)
            return -1;
    }
    return 0;
}

/* config_channels_load - check channel names; borrow the object. */
static int config_channels_load(struct herold_config *c, json_t *obj,
                                struct herr *err)
{
    char path[CONFIG_PATH_SIZE];
    const char *key;
    json_t *v;

    if (!json_is_object(obj))
        return herr_set(err, HERR_INPUT, "channels", "expected an object");
    json_object_foreach(obj, key, v) {
        (void)v;   /* each channel validates its own subtree at init */
        if (!config_channel_name_ok(key)) {
            config_path(path, sizeof path, "channels", key);
            return herr_set(err, HERR_INPUT, path,
                            "invalid channel name: expected 1-32 characters "
                            "of a-z 0-9 _ -");
        }
    }
    c->channels = obj;
    return 0;
}

/* config_flow_provider - one flow.providers.<name> object into p. */
static int config_flow_provider(struct config_provider *p, const char *name, json_t *obj,
                                struct herr *err)
{
    char path[CONFIG_PATH_SIZE];
    const char *key;
    json_t *v;
    bool burst_given = false;

    config_path(path, sizeof path, "flow.providers", name);
    if (!config_channel_name_ok(name))
        return herr_set(err, HERR_INPUT, path,
                        "invalid channel name: expected 1-32 characters of a-z 0-9 _ -");
    if (!json_is_object(obj))
        return herr_set(err, HERR_INPUT, path, "expected an object");
    snprintf(p->name, sizeof p->name, "%s", name);
    json_object_foreach(obj, key, v) {
        snprintf(path, sizeof path, "flow.providers.%s.%.40s", name, key);
        if (strcmp(key, "rate") == 0 || strcmp(key, "burst") == 0) {
            double d = json_number_value(v);
            if (!json_is_number(v) || d < 0 || d > 1e6)
                return herr_set(err, HERR_INPUT, path, "expected a number from 0 to 1000000");
            if (key[0] == 'r') {
                p->rate = d;
            } else {
                p->burst = d;
                burst_given = true;
            }
        } else if (strcmp(key, "shared") == 0) {
            if (!json_is_boolean(v))
                return herr_set(err, HERR_INPUT, path, "expected true or false");
            p->shared = json_is_true(v);
        } else if (strcmp(key, "max_attempts") == 0 || strcmp(key, "max_age_s") == 0) {
            bool att = strcmp(key, "max_attempts") == 0;
            long long n = json_integer_value(v), lo = att ? 1 : 0;
            long long hi = att ? 100 : 365LL * 86400;
            if (!json_is_integer(v) || n < lo || n > hi)
                return herr_set(err, HERR_INPUT, path, "expected an integer from %lld to %lld",
                                lo, hi);
            if (att)
                p->max_attempts = (int)n;
            else
                p->max_age_s = (int)n;
        } else {
            return herr_set(err, HERR_INPUT, path, "unknown field");
        }
    }
    if (!burst_given)
        p->burst = p->rate;
    if (p->burst < 1)
        p->burst = 1;
    return 0;
}

/* config_flow_load - the flow section: scalars from the table, then the
 * providers object and the mandatory channel list. */
static int config_flow_load(struct herold_config *c, json_t *obj, struct herr *err)
{
    static const struct config_section scalars = {"flow", config_flow_fields};
    json_t *copy, *prov, *mand, *v;
    const char *key;
    char path[CONFIG_PATH_SIZE];
    size_t i;
    int rc;

    if (!json_is_object(obj))
        return herr_set(err, HERR_INPUT, "flow", "expected an object");
    prov = json_object_get(obj, "providers");
    mand = json_object_get(obj, "mandatory_channels");
    if ((copy = json_copy(obj)) == NULL)
        return config_oom(err, "flow");
    json_object_del(copy, "providers");
    json_object_del(copy, "mandatory_channels");
    rc = config_section_load(c, &scalars, copy, err);
    json_decref(copy);
    if (rc < 0)
        return -1;
    if (prov != NULL) {
        if (!json_is_object(prov))
            return herr_set(err, HERR_INPUT, "flow.providers", "expected an object");
        json_object_foreach(prov, key, v) {
            if (c->flow.nproviders == CONFIG_MAX_PROVIDERS)
                return herr_set(err, HERR_INPUT, "flow.providers", "at most %d providers",
                                CONFIG_MAX_PROVIDERS);
            if (config_flow_provider(&c->flow.providers[c->flow.nproviders++], key, v,
                                     err) < 0)
                return -1;
        }
    }
    if (mand != NULL) {
        if (!json_is_array(mand) || json_array_size(mand) > CONFIG_MAX_MANDATORY)
            return herr_set(err, HERR_INPUT, "flow.mandatory_channels",
                            "expected a list of at most %d channel names",
                            CONFIG_MAX_MANDATORY);
        json_array_foreach(mand, i, v) {
            snprintf(path, sizeof path, "flow.mandatory_channels[%zu]", i);
            if (!json_is_string(v) || !config_channel_name_ok(json_string_value(v)))
                return herr_set(err, HERR_INPUT, path, "expected a channel name");
            snprintf(c->flow.mandatory[c->flow.nmandatory++], sizeof c->flow.mandatory[0],
                     "%s", json_string_value(v));
        }
    }
    return 0;
}

/* config_provider - the flow limits of channel name, or NULL. */
const struct config_provider *config_provider(const struct herold_config *c, const char *name)
{
    for (size_t i = 0; i < c->flow.nproviders; i++)
        if (strcmp(c->flow.providers[i].name, name) == 0)
            return &c->flow.providers[i];
    return NULL;
}

/* config_cross_check - rules that relate two fields, after all are read. */
static int config_cross_check(const struct herold_config *c, struct herr *err)
{
    if (c->redis.reconnect_min_ms > c->redis.reconnect_max_ms)
        return herr_set(err, HERR_INPUT, "redis.reconnect_max_ms",
                        "expected a value not less than redis.reconnect_min_ms");
    /* A blocked XREADGROUP that outlasts the command timeout would be
     * taken for a hung Redis on every idle read. */
    if (c->queue.block_ms >= c->redis.command_timeout_ms)
        return herr_set(err, HERR_INPUT, "queue.block_ms",
                        "expected a value less than redis.command_timeout_ms");
    if (c->flow.urgent_reserve >= c->delivery.window)
        return herr_set(err, HERR_INPUT, "flow.urgent_reserve",
                        "expected a value less than delivery.window");
    if (c->delivery.backoff_base_ms > c->delivery.backoff_max_ms)
        return herr_set(err, HERR_INPUT, "delivery.backoff_max_ms",
                        "expected a value not less than delivery.backoff_base_ms");
    if (c->http.connect_timeout_ms > c->http.timeout_ms)
        return herr_set(err, HERR_INPUT, "http.connect_timeout_ms",
                        "expected a value not greater than http.timeout_ms");
    if (c->http.max_host_connections > c->http.max_total_connections)
        return herr_set(err, HERR_INPUT, "http.max_host_connections",
                        "expected a value not greater than "
                        "http.max_total_connections");
    return 0;
}

/* config_parse_error - "file:line:column: what" from jansson's error,
 * cut before the " near '...'" part, which quotes the file's text and so
 * may quote an inline secret. */
static void config_parse_error(struct herr *err, const char *file,
                               const json_error_t *jerr)
{
    char text[JSON_ERROR_TEXT_LENGTH];
    char *near;

    snprintf(text, sizeof text, "%s", jerr->text);
    if ((near = strstr(text, " near '")) != NULL)
        *near = '\0';
    herr_set(err, HERR_INPUT, NULL, "%s:%d:%d: %s", file, jerr->line,
             jerr->column, text);
}

/*
 * config_load - read the JSON file at path and build a config from it.
 *
 * The file is parsed with duplicate keys rejected, then handed to
 * config_from_json.  Returns a new config, free with config_free, or NULL
 * with err filled: a file that cannot be opened gives an empty path and
 * "cannot open FILE: reason" (errno_saved set); a syntax error gives an
 * empty path and "FILE:LINE:COLUMN: what jansson expected"; a bad field
 * gives its JSON path.  Kind is HERR_INPUT, or HERR_RESOURCE when memory
 * ran out.  Nothing is logged and nothing else is opened but secret files.
 */
struct herold_config *config_load(const char *path, struct herr *err)
{
    struct herold_config *c;
    json_error_t jerr;
    struct stat st;
    json_t *root;
    FILE *fp;
    int saved;

    herr_clear(err);
    if ((fp = fopen(path, "re")) == NULL) {
        saved = errno;
        herr_set(err, HERR_INPUT, NULL, "cannot open %s: %s", path,
                 strerror(saved));
        if (err != NULL)
            err->errno_saved = saved;
        return NULL;
    }
    /* fopen succeeds on a directory; jansson would then report a
     * puzzling "expected near end of file". */
    if (fstat(fileno(fp), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(fp);
        herr_set(err, HERR_INPUT, NULL, "cannot read %s: is a directory",
                 path);
        if (err != NULL)
            err->errno_saved = EISDIR;
        return NULL;
    }
    root = json_loadf(fp, JSON_REJECT_DUPLICATES, &jerr);
    fclose(fp);
    if (root == NULL) {
        config_parse_error(err, path, &jerr);
        return NULL;
    }
    c = config_from_json(root, err);
    json_decref(root);
    return c;
}

/*
 * config_from_json - build a config from an already parsed document.
 *
 * Takes a reference of its own to root (the caller keeps its own and may
 * drop it at once).  Every top-level section is optional and so is every
 * field; a missing one keeps the default documented in config.h.  Unknown
 * keys are errors at every level this module owns.  "channels" must be an
 * object keyed by valid channel names; its subtrees are left to the
 * channels and c->channels borrows it from c->root (NULL when absent).
 * Secrets (redis.password, log.pseudonym_key) are resolved here, so a
 * missing environment variable fails the load.  Fields are checked in
 * document order and the first bad one is reported; rules relating two
 * fields are checked last.  Returns a new config (free with config_free)
 * or NULL with err: HERR_INPUT and the JSON path, or HERR_RESOURCE.
 */
struct herold_config *config_from_json(json_t *root, struct herr *err)
{
    const struct config_section *sec;
    struct herold_config *c;
    char path[CONFIG_PATH_SIZE];
    const char *key;
    json_t *v;

    herr_clear(err);
    if (!json_is_object(root)) {
        herr_set(err, HERR_INPUT, NULL,
                 "expected a JSON object at the top level");
        return NULL;
    }
    if ((c = config_new()) == NULL) {
        config_oom(err, NULL);
        return NULL;
    }
    c->root = json_incref(root);
    json_object_foreach(root, key, v) {
        if (strcmp(key, "channels") == 0) {
            if (config_channels_load(c, v, err) < 0)
                goto fail;
            continue;
        }
        if (strcmp(key, "flow") == 0) {
            if (config_flow_load(c, v, err) < 0)
                goto fail;
            continue;
        }
        for (sec = config_sections; sec->name != NULL; sec++) {
            if (strcmp(sec->name, key) == 0)
                break;
        }
        if (sec->name == NULL) {
            config_path(path, sizeof path, NULL, key);
            herr_set(err, HERR_INPUT, path, "unknown field");
            goto fail;
        }
        if (config_section_load(c, sec, v, err) < 0)
            goto fail;
    }
    if (config_cross_check(c, err) < 0)
        goto fail;
    if (c->flow.urgent_reserve < 0)
        c->flow.urgent_reserve = c->delivery.window / 4;
    return c;
fail:
    config_free(c);
    return NULL;
}

/*
 * config_defaults - a config holding every default of config.h.
 *
 * No channels (c->channels and c->root are NULL) and no secrets; the
 * consumer name is the host name mapped into the allowed characters.
 * Used by the CLI when only the Redis settings matter.  Returns a new
 * config, free with config_free, or NULL when memory ran out.
 */
struct herold_config *config_defaults(void)
{
    struct herold_config *c = config_new();

    if (c != NULL)
        c->flow.urgent_reserve = c->delivery.window / 4;
    return c;
}

/* config_env_name_ok - n bytes of s form a shell variable name. */
static bool config_env_name_ok(const char *s, size_t n)
{
    if (n == 0 || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];

        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
              (ch >= '0' && ch <= '9') || ch == '_'))
            return false;
    }
    return true;
}

/* config_secret_env - the value of the variable named by "${NAME}". */
static char *config_secret_env(const char *ref, const char *path,
                               struct herr *err)
{
    size_t len = strlen(ref);
    char name[128];
    const char *value;
    char *s;

    if (len < 4 || ref[len - 1] != '}' || len - 3 >= sizeof name ||
        !config_env_name_ok(ref + 2, len - 3)) {
        herr_set(err, HERR_INPUT, path,
                 "expected ${NAME} with NAME of A-Z a-z 0-9 _ "
                 "not starting with a digit");
        return NULL;
    }
    memcpy(name, ref + 2, len - 3);
    name[len - 3] = '\0';
    if ((value = getenv(name)) == NULL) {
        herr_set(err, HERR_INPUT, path, "environment variable %s is not set",
                 name);
        return NULL;
    }
    if (value[0] == '\0') {
        herr_set(err, HERR_INPUT, path, "environment variable %s is empty",
                 name);
        return NULL;
    }
    if ((s = herold_strdup(value)) == NULL)
        config_oom(err, path);
    return s;
}

/* config_secret_file_fail - fill err for file and errno e; returns -1. */
static int config_secret_file_fail(struct herr *err, const char *path,
                                   const char *what, const char *file, int e)
{
    herr_set(err, HERR_INPUT, path, "cannot %s secret file %s: %s", what,
             file, strerror(e));
    if (err != NULL)
        err->errno_saved = e;
    return -1;
}

/* config_secret_file - the contents of file, which only its owner may
 * access, less one trailing newline. */
static char *config_secret_file(const char *file, const char *path,
                                struct herr *err)
{
    char *buf = NULL;
    size_t cap = 0, len = 0;
    struct stat st;
    ssize_t r;
    char extra;
    int fd;

    if (file[0] != '/') {
        herr_set(err, HERR_INPUT, path, "expected an absolute path after @file:");
        return NULL;
    }
    /* O_NONBLOCK: a FIFO must not hang the start; fstat rejects it below. */
    fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        config_secret_file_fail(err, path, "open", file, errno);
        return NULL;
    }
    /* Checked on the open descriptor, so the file judged is the file read. */
    if (fstat(fd, &st) < 0) {
        config_secret_file_fail(err, path, "stat", file, errno);
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        herr_set(err, HERR_INPUT, path, "secret file is not a regular file");
        goto fail;
    }
    if ((st.st_mode & 077) != 0) {
        herr_set(err, HERR_INPUT, path, "secret file must not be accessible "
                 "by group or others (chmod 600)");
        goto fail;
    }
    if (st.st_size > CONFIG_SECRET_MAX) {
        herr_set(err, HERR_INPUT, path, "secret file is larger than 64 KiB");
        goto fail;
    }
    /* Read straight into the heap buffer that is returned: no copy of the
     * secret is left on the stack or in a freed intermediate buffer. */
    cap = (size_t)st.st_size + 1;
    if ((buf = herold_malloc(cap)) == NULL) {
        config_oom(err, path);
        goto fail;
    }
    while (len < cap - 1) {
        r = read(fd, buf + len, cap - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            config_secret_file_fail(err, path, "read", file, errno);
            goto fail;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    if (len == cap - 1) {
        do
            r = read(fd, &extra, 1);
        while (r < 0 && errno == EINTR);
        if (r != 0) {
            config_wipe(&extra, 1);
            herr_set(err, HERR_INPUT, path,
                     "secret file changed while being read");
            goto fail;
        }
    }
    if (len > 0 && buf[len - 1] == '\n') {
        len--;
        if (len > 0 && buf[len - 1] == '\r')
            len--;
    }
    if (memchr(buf, '\0', len) != NULL) {
        herr_set(err, HERR_INPUT, path, "secret file contains a NUL byte");
        goto fail;
    }
    if (len == 0) {
        herr_set(err, HERR_INPUT, path, "secret file is empty");
        goto fail;
    }
    buf[len] = '\0';
    close(fd);
    return buf;
fail:
    if (buf != NULL) {
        config_wipe(buf, cap);
        herold_free(buf);
    }
    close(fd);
    return NULL;
}

/*
 * config_secret - resolve the secret reference ref found at JSON path path.
 *
 * "${NAME}" is the value of environment variable NAME, which must be set
 * and non-empty.  "@file:/abs/path" is the contents of a regular file of
 * at most 64 KiB that neither group nor others may access (mode & 077 ==
 * 0, as libESMTP demands of key files), less one trailing "\n" or "\r\n";
 * it must not be empty or hold a NUL byte.  Anything else is the secret
 * itself, verbatim, and must not be empty.  A string starting with "${"
 * is always a reference, so a malformed one is an error rather than a
 * password.  Returns a new string, free with herold_free_secret, or NULL
 * with err (path set, kind HERR_INPUT or HERR_RESOURCE); err may name the
 * variable or the file, never the value.  Borrows ref and path.
 */
char *config_secret(const char *ref, const char *path, struct herr *err)
{
    char *s;

    assert(ref != NULL);
    if (strncmp(ref, "${", 2) == 0)
        return config_secret_env(ref, path, err);
    if (strncmp(ref, "@file:", 6) == 0)
        return config_secret_file(ref + 6, path, err);
    if (ref[0] == '\0') {
        herr_set(err, HERR_INPUT, path, "expected a non-empty secret");
        return NULL;
    }
    if ((s = herold_strdup(ref)) == NULL)
        config_oom(err, path);
    return s;
}

/*
 * config_free - free c and everything it owns: its strings, its secrets
 * (cleared first) and its reference to the document, which ends every
 * borrowed pointer into it, c->channels included.  NULL is a no-op.
 */
void config_free(struct herold_config *c)
{
    if (c == NULL)
        return;
    herold_free(c->redis.host);
    herold_free(c->redis.unix_socket);
    herold_free(c->redis.username);
    herold_free_secret(c->redis.password);
    herold_free(c->redis.prefix);
    herold_free(c->queue.group);
    herold_free(c->queue.consumer);
    herold_free(c->http.ca_file);
    herold_free(c->log.level);
    herold_free(c->templates.dir);
    herold_free(c->templates.default_lang);
    herold_free_secret(c->log.pseudonym_key);
    herold_free(c->audience.default_tz);
    herold_free(c->citizens.confirm_url);
    herold_free(c->citizens.optin_template);
    herold_free_secret(c->citizens.unsubscribe_key);
    json_decref(c->root);
    herold_free(c);
}
