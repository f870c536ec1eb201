/*
 * test_config - unit tests for config/config.c through config.h.
 *
 * Table-driven: each case is a JSON text written to a file in a fresh
 * temporary directory and loaded with config_load, and the exact error
 * path and message are compared.  Secrets get their own table (inline,
 * environment, files with various modes and contents).  Allocation
 * failures are injected through herold_alloc_fail_after at every
 * allocation the loader makes.  Run from the source root, or set
 * HEROLD_SRCDIR, so config/herold.example.json is found.  Never leaves
 * files behind and never prints a secret value.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "dispatcher/alloc.h"
#include "dispatcher/herr.h"

#define PSEUDONYM_KEY "test-pseudonym-key-0123456789abcdef"
#define WEBHOOK_SECRET "test-webhook-secret"

static char tmpdir[64];

/* tmp_path - dir/name into buf. */
static const char *tmp_path(char *buf, size_t size, const char *name)
{
    int n = snprintf(buf, size, "%s/%s", tmpdir, name);

    assert_true(n > 0 && (size_t)n < size);
    return buf;
}

/* write_file - create dir/name with len bytes of data and mode; its path
 * goes into buf. */
static const char *write_file(char *buf, size_t size, const char *name,
                              const char *data, size_t len, mode_t mode)
{
    int fd;

    tmp_path(buf, size, name);
    unlink(buf);
    fd = open(buf, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    /* explicit, so the umask cannot decide the case */
    assert_int_equal(fchmod(fd, mode), 0);
    assert_int_equal(close(fd), 0);
    return buf;
}

/* replace_dir - copy s into buf with every "@DIR@" replaced by tmpdir. */
static const char *replace_dir(char *buf, size_t size, const char *s)
{
    size_t n = 0;
    const char *hit;

    buf[0] = '\0';
    while ((hit = strstr(s, "@DIR@")) != NULL) {
        n += (size_t)snprintf(buf + n, size - n, "%.*s%s", (int)(hit - s), s,
                              tmpdir);
        assert_true(n < size);
        s = hit + 5;
    }
    n += (size_t)snprintf(buf + n, size - n, "%s", s);
    assert_true(n < size);
    return buf;
}

/* example_path - config/herold.example.json under HEROLD_SRCDIR or ".". */
static const char *example_path(char *buf, size_t size)
{
    const char *src = getenv("HEROLD_SRCDIR");

    snprintf(buf, size, "%s/config/herold.example.json", src ? src : ".");
    return buf;
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/herold-test-config-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    unsetenv("HEROLD_TEST_UNSET");
    return 0;
}

static int group_teardown(void **state)
{
    static const char *const names[] = {
        "config.json", "secret", "fifo", "example-nokey.json"
    };
    char path[256];

    (void)state;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        unlink(tmp_path(path, sizeof path, names[i]));
    return rmdir(tmpdir);
}

/* ---- the table of documents ------------------------------------------ */

struct load_case {
    const char *label;
    const char *json;
    const char *want_path;   /* NULL: the document is valid */
    const char *want_msg;    /* "@FILE@" at the start: the config file's path */
};

#define RANGE_1_65535 "expected an integer between 1 and 65535"
#define NAME_CHARS "expected 1-64 characters of A-Z a-z 0-9 . _ : -"
#define PRINTABLE_64 "expected 1-64 printable ASCII characters without spaces"
#define PRINTABLE_255 "expected 1-255 printable ASCII characters without spaces"
#define HASH_TAG "expected a non-empty {hash tag} closed by }"
#define CHANNEL_NAME \
    "invalid channel name: expected 1-32 characters of a-z 0-9 _ -"
#define S65 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static const struct load_case load_cases[] = {
    /* valid documents */
    {"empty object", "{}", NULL, NULL},
    {"empty sections",
     "{\"redis\":{},\"queue\":{},\"jobs\":{},\"delivery\":{},\"http\":{},"
     "\"log\":{},\"channels\":{}}", NULL, NULL},
    {"port bounds", "{\"redis\":{\"port\":1}}", NULL, NULL},
    {"port upper bound", "{\"redis\":{\"port\":65535}}", NULL, NULL},
    {"cluster prefix", "{\"redis\":{\"prefix\":\"{herold}:\"}}", NULL, NULL},
    /* flow (docs/flow.md) */
    {"flow providers", "{\"flow\":{\"urgent_reserve\":8,\"mandatory_channels\":[\"email\"],"
     "\"providers\":{\"webhook\":{\"rate\":50,\"burst\":10,\"shared\":true,"
     "\"max_attempts\":3,\"max_age_s\":3600},\"email\":{\"rate\":0.5}}}}", NULL, NULL},
    {"flow unknown field", "{\"flow\":{\"speed\":1}}", "flow.speed", "unknown field"},
    {"flow provider bad name", "{\"flow\":{\"providers\":{\"Web Hook\":{}}}}",
     "flow.providers.Web Hook", CHANNEL_NAME},
    {"flow provider unknown field", "{\"flow\":{\"providers\":{\"webhook\":{\"ratee\":1}}}}",
     "flow.providers.webhook.ratee", "unknown field"},
    {"flow negative rate", "{\"flow\":{\"providers\":{\"webhook\":{\"rate\":-1}}}}",
     "flow.providers.webhook.rate", "expected a number from 0 to 1000000"},
    {"flow shared not boolean", "{\"flow\":{\"providers\":{\"webhook\":{\"shared\":1}}}}",
     "flow.providers.webhook.shared", "expected true or false"},
    {"flow max_attempts 0", "{\"flow\":{\"providers\":{\"webhook\":{\"max_attempts\":0}}}}",
     "flow.providers.webhook.max_attempts", "expected an integer from 1 to 100"},
    {"flow mandatory not a list", "{\"flow\":{\"mandatory_channels\":\"email\"}}",
     "flow.mandatory_channels", "expected a list of at most 8 channel names"},
    {"flow mandatory bad name", "{\"flow\":{\"mandatory_channels\":[\"email\",7]}}",
     "flow.mandatory_channels[1]", "expected a channel name"},
    {"flow reserve is the whole window", "{\"delivery\":{\"window\":8},"
     "\"flow\":{\"urgent_reserve\":8}}", "flow.urgent_reserve",
     "expected a value less than delivery.window"},
    {"tagged prefix", "{\"redis\":{\"prefix\":\"app:{h}:x\"}}", NULL, NULL},
    {"unix socket", "{\"redis\":{\"unix_socket\":\"/run/redis/redis.sock\"}}",
     NULL, NULL},
    {"username and inline password",
     "{\"redis\":{\"username\":\"herold\",\"password\":\"inline-pw\"}}",
     NULL, NULL},
    {"allow unsafe", "{\"redis\":{\"allow_unsafe_persistence\":true}}",
     NULL, NULL},
    {"names",
     "{\"queue\":{\"group\":\"g.1_a:b-c\",\"consumer\":\"vm-01.musterstadt\"}}",
     NULL, NULL},
    {"channel subtrees not checked here",
     "{\"channels\":{\"webhook\":42,\"sms_x-1\":{\"any\":[]}}}", NULL, NULL},
    {"all upper bounds",
     "{\"redis\":{\"connect_timeout_ms\":600000,\"command_timeout_ms\":600000,"
     "\"reconnect_min_ms\":600000,\"reconnect_max_ms\":600000},"
     "\"queue\":{\"block_ms\":599999,\"claim_idle_ms\":86400000,"
     "\"max_deliveries\":1000,\"max_active_jobs\":1024,"
     "\"trim_interval_ms\":86400000},"
     "\"jobs\":{\"max_bytes\":67108864,\"max_recipients\":1000000,"
     "\"max_subject_chars\":998,\"max_text_bytes\":16777216,"
     "\"retention_days\":3650,\"rejected_retention_days\":3650,"
     "\"events_maxlen\":100000000},"
     "\"delivery\":{\"window\":100000,\"max_attempts\":100,"
     "\"backoff_base_ms\":600000,\"backoff_max_ms\":3600000,"
     "\"drain_timeout_ms\":600000,\"batch\":10000},"
     "\"http\":{\"connect_timeout_ms\":600000,\"timeout_ms\":600000,"
     "\"low_speed_time_s\":600,\"max_host_connections\":10000,"
     "\"max_total_connections\":100000,\"max_response_bytes\":16777216,"
     "\"ca_file\":\"/etc/ssl/certs/ca-certificates.crt\"},"
     "\"log\":{\"level\":\"debug\"}}", NULL, NULL},
    {"all lower bounds",
     "{\"redis\":{\"connect_timeout_ms\":1,\"command_timeout_ms\":2,"
     "\"reconnect_min_ms\":1,\"reconnect_max_ms\":1},"
     "\"queue\":{\"block_ms\":1,\"claim_idle_ms\":1000,\"max_deliveries\":1,"
     "\"max_active_jobs\":1,\"trim_interval_ms\":1000},"
     "\"jobs\":{\"max_bytes\":1024,\"max_recipients\":1,"
     "\"max_subject_chars\":1,\"max_text_bytes\":1,\"retention_days\":1,"
     "\"rejected_retention_days\":1,\"events_maxlen\":1000},"
     "\"delivery\":{\"window\":1,\"max_attempts\":1,\"backoff_base_ms\":1,"
     "\"backoff_max_ms\":1,\"drain_timeout_ms\":1,\"batch\":1},"
     "\"http\":{\"connect_timeout_ms\":1,\"timeout_ms\":1,"
     "\"low_speed_time_s\":1,\"max_host_connections\":1,"
     "\"max_total_connections\":1,\"max_response_bytes\":1024},"
     "\"log\":{\"level\":\"error\"}}", NULL, NULL},

    /* document shape */
    {"array at top", "[]", "", "expected a JSON object at the top level"},
    {"unknown section", "{\"redsi\":{}}", "redsi", "unknown field"},
    {"section not an object", "{\"redis\":1}", "redis", "expected an object"},
    {"section null", "{\"log\":null}", "log", "expected an object"},
    {"unknown field", "{\"redis\":{\"hots\":\"x\"}}", "redis.hots",
     "unknown field"},
    {"unknown field in log", "{\"log\":{\"file\":\"/var/log/h\"}}", "log.file",
     "unknown field"},
    {"unknown field after good ones",
     "{\"jobs\":{\"max_bytes\":2048,\"max_byte\":2048}}", "jobs.max_byte",
     "unknown field"},
    {"control byte in key", "{\"redis\":{\"a\\u0001b\":1}}", "redis.a?b",
     "unknown field"},
    {"first error in document order",
     "{\"queue\":{\"block_ms\":0},\"redis\":{\"port\":0}}", "queue.block_ms",
     "expected an integer between 1 and 600000"},

    /* redis */
    {"port zero", "{\"redis\":{\"port\":0}}", "redis.port", RANGE_1_65535},
    {"port too big", "{\"redis\":{\"port\":65536}}", "redis.port",
     RANGE_1_65535},
    {"port negative", "{\"redis\":{\"port\":-1}}", "redis.port", RANGE_1_65535},
    {"port huge", "{\"redis\":{\"port\":9223372036854775807}}", "redis.port",
     RANGE_1_65535},
    {"port as string", "{\"redis\":{\"port\":\"6379\"}}", "redis.port",
     RANGE_1_65535},
    {"port as real", "{\"redis\":{\"port\":6379.0}}", "redis.port",
     RANGE_1_65535},
    {"port as bool", "{\"redis\":{\"port\":true}}", "redis.port",
     RANGE_1_65535},
    {"host empty", "{\"redis\":{\"host\":\"\"}}", "redis.host", PRINTABLE_255},
    {"host with space", "{\"redis\":{\"host\":\"a b\"}}", "redis.host",
     PRINTABLE_255},
    {"host not a string", "{\"redis\":{\"host\":5}}", "redis.host",
     "expected a string"},
    {"socket relative", "{\"redis\":{\"unix_socket\":\"redis.sock\"}}",
     "redis.unix_socket", "expected an absolute path of at most 107 characters"},
    {"socket too long",
     "{\"redis\":{\"unix_socket\":\"/" S65 S65 "\"}}", "redis.unix_socket",
     "expected an absolute path of at most 107 characters"},
    {"username with space", "{\"redis\":{\"username\":\"a b\"}}",
     "redis.username", "expected 1-128 printable ASCII characters without spaces"},
    {"password not a string", "{\"redis\":{\"password\":42}}",
     "redis.password", "expected a string"},
    {"password empty", "{\"redis\":{\"password\":\"\"}}", "redis.password",
     "expected a non-empty secret"},
    {"password env unset",
     "{\"redis\":{\"password\":\"${HEROLD_TEST_UNSET}\"}}", "redis.password",
     "environment variable HEROLD_TEST_UNSET is not set"},
    {"password env malformed", "{\"redis\":{\"password\":\"${1X}\"}}",
     "redis.password",
     "expected ${NAME} with NAME of A-Z a-z 0-9 _ not starting with a digit"},
    {"prefix empty", "{\"redis\":{\"prefix\":\"\"}}", "redis.prefix",
     PRINTABLE_64},
    {"prefix too long", "{\"redis\":{\"prefix\":\"" S65 "\"}}", "redis.prefix",
     PRINTABLE_64},
    {"prefix with space", "{\"redis\":{\"prefix\":\"her old:\"}}",
     "redis.prefix", PRINTABLE_64},
    {"prefix with tab", "{\"redis\":{\"prefix\":\"her\\told:\"}}",
     "redis.prefix", PRINTABLE_64},
    {"prefix non-ASCII", "{\"redis\":{\"prefix\":\"h\\u00e9rold:\"}}",
     "redis.prefix", PRINTABLE_64},
    {"prefix unclosed tag", "{\"redis\":{\"prefix\":\"{herold:\"}}",
     "redis.prefix", HASH_TAG},
    {"prefix empty tag", "{\"redis\":{\"prefix\":\"{}herold:\"}}",
     "redis.prefix", HASH_TAG},
    {"prefix stray close", "{\"redis\":{\"prefix\":\"herold}:\"}}",
     "redis.prefix", HASH_TAG},
    {"connect timeout zero", "{\"redis\":{\"connect_timeout_ms\":0}}",
     "redis.connect_timeout_ms", "expected an integer between 1 and 600000"},
    {"command timeout too big", "{\"redis\":{\"command_timeout_ms\":600001}}",
     "redis.command_timeout_ms", "expected an integer between 1 and 600000"},
    {"reconnect min > max",
     "{\"redis\":{\"reconnect_min_ms\":6000,\"reconnect_max_ms\":5000}}",
     "redis.reconnect_max_ms",
     "expected a value not less than redis.reconnect_min_ms"},
    {"unsafe as string", "{\"redis\":{\"allow_unsafe_persistence\":\"no\"}}",
     "redis.allow_unsafe_persistence", "expected true or false"},
    {"unsafe as number", "{\"redis\":{\"allow_unsafe_persistence\":0}}",
     "redis.allow_unsafe_persistence", "expected true or false"},

    /* queue */
    {"group empty", "{\"queue\":{\"group\":\"\"}}", "queue.group", NAME_CHARS},
    {"group with space", "{\"queue\":{\"group\":\"a b\"}}", "queue.group",
     NAME_CHARS},
    {"group with slash", "{\"queue\":{\"group\":\"a/b\"}}", "queue.group",
     NAME_CHARS},
    {"consumer non-ASCII", "{\"queue\":{\"consumer\":\"h\\u00f6st\"}}",
     "queue.consumer", NAME_CHARS},
    {"consumer too long", "{\"queue\":{\"consumer\":\"" S65 "\"}}",
     "queue.consumer", NAME_CHARS},
    {"block zero", "{\"queue\":{\"block_ms\":0}}", "queue.block_ms",
     "expected an integer between 1 and 600000"},
    {"block not below command timeout", "{\"queue\":{\"block_ms\":5000}}",
     "queue.block_ms", "expected a value less than redis.command_timeout_ms"},
    {"claim idle too small", "{\"queue\":{\"claim_idle_ms\":999}}",
     "queue.claim_idle_ms", "expected an integer between 1000 and 86400000"},
    {"max deliveries zero", "{\"queue\":{\"max_deliveries\":0}}",
     "queue.max_deliveries", "expected an integer between 1 and 1000"},
    {"max deliveries too big", "{\"queue\":{\"max_deliveries\":1001}}",
     "queue.max_deliveries", "expected an integer between 1 and 1000"},
    {"max active jobs too big", "{\"queue\":{\"max_active_jobs\":1025}}",
     "queue.max_active_jobs", "expected an integer between 1 and 1024"},
    {"trim interval too small", "{\"queue\":{\"trim_interval_ms\":999}}",
     "queue.trim_interval_ms", "expected an integer between 1000 and 86400000"},

    /* jobs */
    {"max bytes too small", "{\"jobs\":{\"max_bytes\":1023}}", "jobs.max_bytes",
     "expected an integer between 1024 and 67108864"},
    {"max bytes too big", "{\"jobs\":{\"max_bytes\":67108865}}",
     "jobs.max_bytes", "expected an integer between 1024 and 67108864"},
    {"max recipients zero", "{\"jobs\":{\"max_recipients\":0}}",
     "jobs.max_recipients", "expected an integer between 1 and 1000000"},
    {"max recipients too big", "{\"jobs\":{\"max_recipients\":1000001}}",
     "jobs.max_recipients", "expected an integer between 1 and 1000000"},
    {"subject too long", "{\"jobs\":{\"max_subject_chars\":999}}",
     "jobs.max_subject_chars", "expected an integer between 1 and 998"},
    {"text zero", "{\"jobs\":{\"max_text_bytes\":0}}", "jobs.max_text_bytes",
     "expected an integer between 1 and 16777216"},
    {"retention zero", "{\"jobs\":{\"retention_days\":0}}",
     "jobs.retention_days", "expected an integer between 1 and 3650"},
    {"retention too long", "{\"jobs\":{\"retention_days\":3651}}",
     "jobs.retention_days", "expected an integer between 1 and 3650"},
    {"rejected retention too long",
     "{\"jobs\":{\"rejected_retention_days\":3651}}",
     "jobs.rejected_retention_days", "expected an integer between 1 and 3650"},
    {"events maxlen too small", "{\"jobs\":{\"events_maxlen\":999}}",
     "jobs.events_maxlen", "expected an integer between 1000 and 100000000"},
    {"events maxlen too big", "{\"jobs\":{\"events_maxlen\":100000001}}",
     "jobs.events_maxlen", "expected an integer between 1000 and 100000000"},

    /* delivery */
    {"window zero", "{\"delivery\":{\"window\":0}}", "delivery.window",
     "expected an integer between 1 and 100000"},
    {"window too big", "{\"delivery\":{\"window\":100001}}", "delivery.window",
     "expected an integer between 1 and 100000"},
    {"attempts zero", "{\"delivery\":{\"max_attempts\":0}}",
     "delivery.max_attempts", "expected an integer between 1 and 100"},
    {"attempts too many", "{\"delivery\":{\"max_attempts\":101}}",
     "delivery.max_attempts", "expected an integer between 1 and 100"},
    {"backoff base zero", "{\"delivery\":{\"backoff_base_ms\":0}}",
     "delivery.backoff_base_ms", "expected an integer between 1 and 600000"},
    {"backoff max too big", "{\"delivery\":{\"backoff_max_ms\":3600001}}",
     "delivery.backoff_max_ms", "expected an integer between 1 and 3600000"},
    {"backoff base > max",
     "{\"delivery\":{\"backoff_base_ms\":2000,\"backoff_max_ms\":1000}}",
     "delivery.backoff_max_ms",
     "expected a value not less than delivery.backoff_base_ms"},
    {"drain too long", "{\"delivery\":{\"drain_timeout_ms\":600001}}",
     "delivery.drain_timeout_ms", "expected an integer between 1 and 600000"},
    {"batch zero", "{\"delivery\":{\"batch\":0}}", "delivery.batch",
     "expected an integer between 1 and 10000"},
    {"batch too big", "{\"delivery\":{\"batch\":10001}}", "delivery.batch",
     "expected an integer between 1 and 10000"},

    /* http */
    {"http connect too long", "{\"http\":{\"connect_timeout_ms\":600001}}",
     "http.connect_timeout_ms", "expected an integer between 1 and 600000"},
    {"http timeout zero", "{\"http\":{\"timeout_ms\":0}}", "http.timeout_ms",
     "expected an integer between 1 and 600000"},
    {"http connect > total", "{\"http\":{\"connect_timeout_ms\":20000}}",
     "http.connect_timeout_ms",
     "expected a value not greater than http.timeout_ms"},
    {"low speed too long", "{\"http\":{\"low_speed_time_s\":601}}",
     "http.low_speed_time_s", "expected an integer between 1 and 600"},
    {"host conns zero", "{\"http\":{\"max_host_connections\":0}}",
     "http.max_host_connections", "expected an integer between 1 and 10000"},
    {"total conns too many", "{\"http\":{\"max_total_connections\":100001}}",
     "http.max_total_connections",
     "expected an integer between 1 and 100000"},
    {"host conns > total", "{\"http\":{\"max_total_connections\":10}}",
     "http.max_host_connections",
     "expected a value not greater than http.max_total_connections"},
    {"response cap too small", "{\"http\":{\"max_response_bytes\":1023}}",
     "http.max_response_bytes", "expected an integer between 1024 and 16777216"},
    {"ca file relative", "{\"http\":{\"ca_file\":\"ca.pem\"}}", "http.ca_file",
     "expected an absolute file path"},
    {"ca file not a string", "{\"http\":{\"ca_file\":true}}", "http.ca_file",
     "expected a string"},

    /* log */
    {"level unknown", "{\"log\":{\"level\":\"verbose\"}}", "log.level",
     "expected one of debug, info, warn, error"},
    {"level fatal", "{\"log\":{\"level\":\"fatal\"}}", "log.level",
     "expected one of debug, info, warn, error"},
    {"level upper case", "{\"log\":{\"level\":\"INFO\"}}", "log.level",
     "expected one of debug, info, warn, error"},
    {"level not a string", "{\"log\":{\"level\":1}}", "log.level",
     "expected a string"},
    {"pseudonym key short", "{\"log\":{\"pseudonym_key\":\"short-key\"}}",
     "log.pseudonym_key", "expected a key of at least 16 bytes"},
    {"pseudonym key env unset",
     "{\"log\":{\"pseudonym_key\":\"${HEROLD_TEST_UNSET}\"}}",
     "log.pseudonym_key", "environment variable HEROLD_TEST_UNSET is not set"},

    /* channels */
    {"channels not an object", "{\"channels\":[]}", "channels",
     "expected an object"},
    {"channel name upper case", "{\"channels\":{\"Webhook\":{}}}",
     "channels.Webhook", CHANNEL_NAME},
    {"channel name empty", "{\"channels\":{\"\":{}}}", "channels.",
     CHANNEL_NAME},
    {"channel name with dot", "{\"channels\":{\"a.b\":{}}}", "channels.a.b",
     CHANNEL_NAME},
    {"channel name too long",
     "{\"channels\":{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\":{}}}",
     "channels.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", CHANNEL_NAME},

    /* files jansson refuses */
    {"duplicate key", "{\"redis\": {\"port\": 1, \"port\": 2}}", "",
     "@FILE@:1:28: duplicate object key"},
    {"duplicate section", "{\n\"log\": {},\n\"log\": {}\n}", "",
     "@FILE@:3:5: duplicate object key"},
    {"missing colon", "{\n  \"redis\": {\n    \"port\" 6379\n  }\n}", "",
     "@FILE@:3:15: ':' expected"},
    {"bad literal", "{\"redis\": {\"allow_unsafe_persistence\": tru}}", "",
     "@FILE@:1:42: invalid token"},
    {"truncated", "{\"redis\": {", "",
     "@FILE@:1:11: string or '}' expected near end of file"},
    {"empty file", "", "", "@FILE@:1:0: '[' or '{' expected near end of file"},
    {"trailing garbage", "{} x", "", "@FILE@:1:4: end of file expected"},
    {"integer beyond jansson", "{\"jobs\":{\"max_bytes\":99999999999999999999}}",
     "", "@FILE@:1:41: too big integer"},
    {"NUL in string", "{\"redis\":{\"host\":\"a\\u0000b\"}}", "",
     "@FILE@:1:27: \\u0000 is not allowed without JSON_ALLOW_NUL"},
};

static void test_load_table(void **state)
{
    char file[256], want[512];
    struct herr err;
    int failed = 0;

    (void)state;
    /* every case runs; each mismatch is printed, the test fails at the end */
    for (size_t i = 0; i < sizeof load_cases / sizeof load_cases[0]; i++) {
        const struct load_case *tc = &load_cases[i];
        struct herold_config *c;

        write_file(file, sizeof file, "config.json", tc->json,
                   strlen(tc->json), 0600);
        c = config_load(file, &err);
        if (tc->want_path == NULL) {
            if (c == NULL || err.kind != HERR_NONE) {
                print_error("%s: unexpected error \"%s\" \"%s\"\n",
                            tc->label, err.path, err.msg);
                failed++;
            }
            config_free(c);
            continue;
        }
        if (strncmp(tc->want_msg, "@FILE@", 6) == 0)
            snprintf(want, sizeof want, "%s%s", file, tc->want_msg + 6);
        else
            snprintf(want, sizeof want, "%s", tc->want_msg);
        if (c != NULL) {
            print_error("%s: loaded, want \"%s\" \"%s\"\n", tc->label,
                        tc->want_path, want);
            config_free(c);
            failed++;
        } else if (err.kind != HERR_INPUT ||
                   strcmp(err.path, tc->want_path) != 0 ||
                   strcmp(err.msg, want) != 0) {
            print_error("%s: got kind %d \"%s\" \"%s\", want \"%s\" \"%s\"\n",
                        tc->label, (int)err.kind, err.path, err.msg,
                        tc->want_path, want);
            failed++;
        }
    }
    assert_int_equal(failed, 0);
}

static void test_name_of_64(void **state)
{
    char file[256], json[256];
    struct herold_config *c;
    struct herr err;
    static const char name64[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:";

    (void)state;
    assert_int_equal(strlen(name64), 64);
    snprintf(json, sizeof json, "{\"queue\":{\"consumer\":\"%s\"}}", name64);
    write_file(file, sizeof file, "config.json", json, strlen(json), 0600);
    c = config_load(file, &err);
    assert_non_null(c);
    assert_string_equal(c->queue.consumer, name64);
    config_free(c);
}

/* assert_defaults - every default of config.h. */
static void assert_defaults(const struct herold_config *c)
{
    assert_string_equal(c->redis.host, "127.0.0.1");
    assert_int_equal(c->redis.port, 6379);
    assert_null(c->redis.unix_socket);
    assert_null(c->redis.username);
    assert_null(c->redis.password);
    assert_string_equal(c->redis.prefix, "herold:");
    assert_int_equal(c->redis.connect_timeout_ms, 2000);
    assert_int_equal(c->redis.command_timeout_ms, 5000);
    assert_int_equal(c->redis.reconnect_min_ms, 100);
    assert_int_equal(c->redis.reconnect_max_ms, 5000);
    assert_false(c->redis.allow_unsafe_persistence);

    assert_string_equal(c->queue.group, "heroldd");
    assert_non_null(c->queue.consumer);
    assert_true(strlen(c->queue.consumer) >= 1 &&
                strlen(c->queue.consumer) <= 64);
    assert_true(strspn(c->queue.consumer,
                       "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                       "0123456789._:-") == strlen(c->queue.consumer));
    assert_int_equal(c->queue.block_ms, 1000);
    assert_int_equal(c->queue.claim_idle_ms, 60000);
    assert_int_equal(c->queue.max_deliveries, 3);
    assert_int_equal(c->queue.max_active_jobs, 8);
    assert_int_equal(c->queue.trim_interval_ms, 60000);

    assert_int_equal(c->jobs.max_bytes, 1048576);
    assert_int_equal(c->jobs.max_recipients, 10000);
    assert_int_equal(c->jobs.max_subject_chars, 998);
    assert_int_equal(c->jobs.max_text_bytes, 65536);
    assert_int_equal(c->jobs.retention_days, 30);
    assert_int_equal(c->jobs.rejected_retention_days, 7);
    assert_int_equal(c->jobs.events_maxlen, 100000);

    assert_int_equal(c->delivery.window, 64);
    assert_int_equal(c->delivery.max_attempts, 5);
    assert_int_equal(c->delivery.backoff_base_ms, 1000);
    assert_int_equal(c->delivery.backoff_max_ms, 300000);
    assert_int_equal(c->delivery.drain_timeout_ms, 10000);
    assert_int_equal(c->delivery.batch, 128);

    assert_int_equal(c->http.connect_timeout_ms, 5000);
    assert_int_equal(c->http.timeout_ms, 15000);
    assert_int_equal(c->http.low_speed_time_s, 10);
    assert_int_equal(c->http.max_host_connections, 64);
    assert_int_equal(c->http.max_total_connections, 256);
    assert_int_equal(c->http.max_response_bytes, 65536);
    assert_null(c->http.ca_file);

    assert_string_equal(c->log.level, "info");
    assert_null(c->log.pseudonym_key);
}

static void test_minimal(void **state)
{
    char file[256];
    struct herold_config *c;
    struct herr err;

    (void)state;
    write_file(file, sizeof file, "config.json", "{}\n", 3, 0600);
    c = config_load(file, &err);
    assert_non_null(c);
    assert_defaults(c);
    assert_null(c->channels);
    assert_non_null(c->root);
    config_free(c);
}

static void test_defaults(void **state)
{
    struct herold_config *c, *d;
    struct herr err;
    json_t *root;

    (void)state;
    c = config_defaults();
    assert_non_null(c);
    assert_defaults(c);
    assert_null(c->channels);
    assert_null(c->root);
    /* the host-name consumer is the same whichever way a config is made */
    root = json_object();
    d = config_from_json(root, &err);
    json_decref(root);
    assert_non_null(d);
    assert_string_equal(d->queue.consumer, c->queue.consumer);
    config_free(d);
    config_free(c);
    config_free(NULL);
}

static void test_example(void **state)
{
    char file[256];
    struct herold_config *c;
    struct herr err;
    json_t *ep;

    (void)state;
    setenv("HEROLD_WEBHOOK_SECRET", WEBHOOK_SECRET, 1);
    setenv("HEROLD_PSEUDONYM_KEY", PSEUDONYM_KEY, 1);
    c = config_load(example_path(file, sizeof file), &err);
    if (c == NULL)
        fail_msg("%s: %s: %s", file, err.path, err.msg);
    assert_string_equal(c->redis.prefix, "herold:");
    assert_int_equal(c->redis.port, 6379);
    assert_false(c->redis.allow_unsafe_persistence);
    assert_string_equal(c->queue.group, "heroldd");
    assert_int_equal(c->delivery.window, 64);
    assert_string_equal(c->log.level, "info");
    assert_string_equal(c->log.pseudonym_key, PSEUDONYM_KEY);
    assert_non_null(c->channels);
    assert_ptr_equal(c->channels, json_object_get(c->root, "channels"));
    ep = json_array_get(json_object_get(json_object_get(c->channels, "webhook"),
                                        "endpoints"), 0);
    assert_string_equal(json_string_value(json_object_get(ep, "url")),
                        "https://app.musterstadt.example/hooks/herold");
    /* the channel resolves its own secret; config leaves it as written */
    assert_string_equal(json_string_value(json_object_get(ep, "secret")),
                        "${HEROLD_WEBHOOK_SECRET}");
    config_free(c);

    unsetenv("HEROLD_PSEUDONYM_KEY");
    c = config_load(file, &err);
    assert_null(c);
    assert_int_equal(err.kind, HERR_INPUT);
    assert_string_equal(err.path, "log.pseudonym_key");
    assert_string_equal(err.msg,
                        "environment variable HEROLD_PSEUDONYM_KEY is not set");
    unsetenv("HEROLD_WEBHOOK_SECRET");
}

static void test_from_json(void **state)
{
    struct herold_config *c;
    struct herr err;
    json_t *root;

    (void)state;
    root = json_pack("{s:{s:i, s:s}, s:{s:{}}}", "redis", "port", 6380,
                     "prefix", "{herold}:", "channels", "webhook");
    assert_non_null(root);
    c = config_from_json(root, &err);
    assert_non_null(c);
    /* the config holds its own reference: the caller's may go at once */
    json_decref(root);
    assert_int_equal(c->redis.port, 6380);
    assert_string_equal(c->redis.prefix, "{herold}:");
    assert_non_null(json_object_get(c->channels, "webhook"));
    config_free(c);

    root = json_array();
    c = config_from_json(root, &err);
    assert_null(c);
    assert_int_equal(err.kind, HERR_INPUT);
    assert_string_equal(err.path, "");
    assert_string_equal(err.msg, "expected a JSON object at the top level");
    /* a failed load keeps no reference */
    assert_int_equal(root->refcount, 1);
    json_decref(root);

    root = json_pack("{s:{s:i}}", "redis", "port", 0);
    c = config_from_json(root, &err);
    assert_null(c);
    assert_string_equal(err.path, "redis.port");
    assert_int_equal(root->refcount, 1);
    json_decref(root);
}

static void test_load_unreadable(void **state)
{
    char file[256], want[512];
    struct herr err;

    (void)state;
    tmp_path(file, sizeof file, "no-such-config.json");
    assert_null(config_load(file, &err));
    snprintf(want, sizeof want, "cannot open %s: %s", file, strerror(ENOENT));
    assert_int_equal(err.kind, HERR_INPUT);
    assert_int_equal(err.errno_saved, ENOENT);
    assert_string_equal(err.path, "");
    assert_string_equal(err.msg, want);

    assert_null(config_load(tmpdir, &err));
    snprintf(want, sizeof want, "cannot read %s: is a directory", tmpdir);
    assert_int_equal(err.kind, HERR_INPUT);
    assert_string_equal(err.path, "");
    assert_string_equal(err.msg, want);
}

/* ---- secrets ------------------------------------------------------------ */

struct secret_case {
    const char *label;
    const char *ref;          /* "@DIR@" is replaced by the temp dir */
    const char *env_value;    /* HEROLD_TEST_SECRET: NULL unset */
    const char *file_data;    /* NULL: no file dir/secret is written */
    size_t file_len;
    mode_t file_mode;
    const char *want_value;   /* NULL: an error is expected */
    const char *want_msg;     /* "@DIR@" is replaced by the temp dir */
};

#define MODE_MSG "secret file must not be accessible by group or others (chmod 600)"
#define ENV_MSG "expected ${NAME} with NAME of A-Z a-z 0-9 _ not starting with a digit"

static const struct secret_case secret_cases[] = {
    {"inline", "inline-secret", NULL, NULL, 0, 0, "inline-secret", NULL},
    {"inline empty", "", NULL, NULL, 0, 0, NULL, "expected a non-empty secret"},
    {"inline with dollar", "pa$$word", NULL, NULL, 0, 0, "pa$$word", NULL},
    {"env set", "${HEROLD_TEST_SECRET}", "from-env", NULL, 0, 0, "from-env",
     NULL},
    {"env unset", "${HEROLD_TEST_SECRET}", NULL, NULL, 0, 0, NULL,
     "environment variable HEROLD_TEST_SECRET is not set"},
    {"env empty", "${HEROLD_TEST_SECRET}", "", NULL, 0, 0, NULL,
     "environment variable HEROLD_TEST_SECRET is empty"},
    {"env no name", "${}", NULL, NULL, 0, 0, NULL, ENV_MSG},
    {"env unclosed", "${HEROLD_TEST_SECRET", "env-value-123", NULL, 0, 0, NULL, ENV_MSG},
    {"env leading digit", "${1X}", NULL, NULL, 0, 0, NULL, ENV_MSG},
    {"env with space", "${A B}", NULL, NULL, 0, 0, NULL, ENV_MSG},
    {"env with suffix", "${HEROLD_TEST_SECRET}x", "env-value-123", NULL, 0, 0, NULL,
     ENV_MSG},
    {"file 0600", "@file:@DIR@/secret", NULL, "s3cret", 6, 0600, "s3cret",
     NULL},
    {"file 0400", "@file:@DIR@/secret", NULL, "s3cret", 6, 0400, "s3cret",
     NULL},
    {"file newline stripped", "@file:@DIR@/secret", NULL, "s3cret\n", 7, 0600,
     "s3cret", NULL},
    {"file CRLF stripped", "@file:@DIR@/secret", NULL, "s3cret\r\n", 8, 0600,
     "s3cret", NULL},
    {"file only one newline stripped", "@file:@DIR@/secret", NULL,
     "s3cret\n\n", 8, 0600, "s3cret\n", NULL},
    {"file lone CR kept", "@file:@DIR@/secret", NULL, "s3cret\r", 7, 0600,
     "s3cret\r", NULL},
    {"file 0644", "@file:@DIR@/secret", NULL, "s3cret\n", 7, 0644, NULL,
     MODE_MSG},
    {"file 0640", "@file:@DIR@/secret", NULL, "s3cret\n", 7, 0640, NULL,
     MODE_MSG},
    {"file 0604", "@file:@DIR@/secret", NULL, "s3cret\n", 7, 0604, NULL,
     MODE_MSG},
    {"file 0610", "@file:@DIR@/secret", NULL, "s3cret\n", 7, 0610, NULL,
     MODE_MSG},
    {"file empty", "@file:@DIR@/secret", NULL, "", 0, 0600, NULL,
     "secret file is empty"},
    {"file only newline", "@file:@DIR@/secret", NULL, "\n", 1, 0600, NULL,
     "secret file is empty"},
    {"file with NUL", "@file:@DIR@/secret", NULL, "s3\0cret", 7, 0600, NULL,
     "secret file contains a NUL byte"},
    {"file missing", "@file:@DIR@/missing", NULL, NULL, 0, 0, NULL,
     "cannot open secret file @DIR@/missing: No such file or directory"},
    {"file relative", "@file:secret", NULL, NULL, 0, 0, NULL,
     "expected an absolute path after @file:"},
    {"file empty path", "@file:", NULL, NULL, 0, 0, NULL,
     "expected an absolute path after @file:"},
    {"file is a directory", "@file:@DIR@", NULL, NULL, 0, 0, NULL,
     "secret file is not a regular file"},
    {"file is a device", "@file:/dev/null", NULL, NULL, 0, 0, NULL,
     "secret file is not a regular file"},
};

/* check_secret_case - run one case at JSON path "t.secret". */
static void check_secret_case(const struct secret_case *tc)
{
    char ref[512], want[512], file[256];
    struct herr err;
    char *s;

    if (tc->env_value != NULL)
        setenv("HEROLD_TEST_SECRET", tc->env_value, 1);
    else
        unsetenv("HEROLD_TEST_SECRET");
    if (tc->file_data != NULL)
        write_file(file, sizeof file, "secret", tc->file_data, tc->file_len,
                   tc->file_mode);
    replace_dir(ref, sizeof ref, tc->ref);
    herr_clear(&err);
    s = config_secret(ref, "t.secret", &err);
    if (tc->want_value != NULL) {
        if (s == NULL)
            fail_msg("%s: unexpected error %s", tc->label, err.msg);
        assert_string_equal(s, tc->want_value);
        herold_free_secret(s);
    } else {
        if (s != NULL)
            fail_msg("%s: resolved, want \"%s\"", tc->label, tc->want_msg);
        replace_dir(want, sizeof want, tc->want_msg);
        if (err.kind != HERR_INPUT || strcmp(err.path, "t.secret") != 0 ||
            strcmp(err.msg, want) != 0)
            fail_msg("%s: got kind %d \"%s\" \"%s\", want \"%s\"", tc->label,
                     (int)err.kind, err.path, err.msg, want);
        /* whatever was refused, none of it reaches the error */
        if (tc->file_data != NULL && tc->file_len >= 2)
            assert_null(strstr(err.msg, "s3"));
        if (tc->env_value != NULL && tc->env_value[0] != '\0')
            assert_null(strstr(err.msg, tc->env_value));
    }
    if (tc->file_data != NULL)
        unlink(file);
    unsetenv("HEROLD_TEST_SECRET");
}

static void test_secret_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof secret_cases / sizeof secret_cases[0]; i++)
        check_secret_case(&secret_cases[i]);
}

static void test_secret_sizes(void **state)
{
    char file[256], ref[300];
    struct herr err;
    char *data, *s;

    (void)state;
    data = malloc(65537);
    assert_non_null(data);
    memset(data, 'k', 65537);
    snprintf(ref, sizeof ref, "@file:%s/secret", tmpdir);

    /* 64 KiB exactly is allowed */
    write_file(file, sizeof file, "secret", data, 65536, 0600);
    s = config_secret(ref, "t.secret", &err);
    assert_non_null(s);
    assert_int_equal(strlen(s), 65536);
    herold_free_secret(s);

    write_file(file, sizeof file, "secret", data, 65537, 0600);
    assert_null(config_secret(ref, "t.secret", &err));
    assert_int_equal(err.kind, HERR_INPUT);
    assert_string_equal(err.msg, "secret file is larger than 64 KiB");
    unlink(file);
    free(data);
}

static void test_secret_fifo(void **state)
{
    char file[256], ref[300];
    struct herr err;

    (void)state;
    /* a FIFO without a writer must be refused, not block the start */
    tmp_path(file, sizeof file, "fifo");
    unlink(file);
    assert_int_equal(mkfifo(file, 0600), 0);
    snprintf(ref, sizeof ref, "@file:%s", file);
    assert_null(config_secret(ref, "t.secret", &err));
    assert_string_equal(err.msg, "secret file is not a regular file");
    unlink(file);
}

static void test_config_secrets(void **state)
{
    char file[256], secret[256], json[512];
    struct herold_config *c;
    struct herr err;

    (void)state;
    write_file(secret, sizeof secret, "secret", "redis-pw-from-file\n", 19,
               0600);
    setenv("HEROLD_TEST_KEY", PSEUDONYM_KEY, 1);
    snprintf(json, sizeof json,
             "{\"redis\":{\"username\":\"herold\",\"password\":\"@file:%s\"},"
             "\"log\":{\"pseudonym_key\":\"${HEROLD_TEST_KEY}\"}}", secret);
    write_file(file, sizeof file, "config.json", json, strlen(json), 0600);
    c = config_load(file, &err);
    if (c == NULL)
        fail_msg("%s: %s", err.path, err.msg);
    assert_string_equal(c->redis.username, "herold");
    assert_string_equal(c->redis.password, "redis-pw-from-file");
    assert_string_equal(c->log.pseudonym_key, PSEUDONYM_KEY);
    config_free(c);

    /* the same file made group-readable is refused at its JSON path */
    assert_int_equal(chmod(secret, 0640), 0);
    assert_null(config_load(file, &err));
    assert_string_equal(err.path, "redis.password");
    assert_string_equal(err.msg, MODE_MSG);
    unlink(secret);
    unsetenv("HEROLD_TEST_KEY");
}

static void test_secret_not_in_errors(void **state)
{
    static const char *const docs[] = {
        /* jansson quotes the token it choked on: here the secret itself */
        "{\"redis\":{\"password\" \"hunter2-inline\"}}",
        "{\"redis\":{\"password\":\"hunter2-inline\" \"x\"}}",
        "{\"redis\":{\"password\":\"hunter2-inline\"x}}",
        "{\"redis\":{\"password\":\"hunter2-inline\",\"password\":\"y\"}}",
        "{\"log\":{\"pseudonym_key\":\"hunter2-inline\"}}",
    };
    char file[256];
    struct herr err;

    (void)state;
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        write_file(file, sizeof file, "config.json", docs[i], strlen(docs[i]),
                   0600);
        assert_null(config_load(file, &err));
        if (strstr(err.msg, "hunter2") != NULL ||
            strstr(err.path, "hunter2") != NULL)
            fail_msg("case %zu: secret in error: %s", i, err.msg);
    }
}

/* ---- allocation failures ------------------------------------------------ */

static void test_alloc_defaults(void **state)
{
    struct herold_config *c = NULL;
    long n;

    (void)state;
    for (n = 0; n < 100; n++) {
        herold_alloc_fail_after = n;
        c = config_defaults();
        herold_alloc_fail_after = -1;
        if (c != NULL)
            break;
    }
    assert_non_null(c);
    /* calloc plus five strings: every one of them was made to fail once */
    assert_true(n >= 6);
    config_free(c);
}

/* alloc_load - load file with allocation n failing, until one succeeds;
 * every failure must be an orderly HERR_RESOURCE.  Returns the count of
 * allocations the successful load made. */
static long alloc_load(const char *file)
{
    struct herold_config *c = NULL;
    struct herr err;
    long n;

    for (n = 0; n < 1000; n++) {
        herold_alloc_fail_after = n;
        c = config_load(file, &err);
        herold_alloc_fail_after = -1;
        if (c != NULL)
            break;
        if (err.kind != HERR_RESOURCE || strcmp(err.msg, "out of memory") != 0)
            fail_msg("%s: allocation %ld: kind %d %s: %s", file, n,
                     (int)err.kind, err.path, err.msg);
    }
    assert_non_null(c);
    config_free(c);
    return n;
}

static void test_alloc_load(void **state)
{
    char file[256], secret[256], json[1024];

    (void)state;
    setenv("HEROLD_WEBHOOK_SECRET", WEBHOOK_SECRET, 1);
    setenv("HEROLD_PSEUDONYM_KEY", PSEUDONYM_KEY, 1);
    assert_true(alloc_load(example_path(file, sizeof file)) >= 7);

    /* every string field set, the password from a file */
    write_file(secret, sizeof secret, "secret", "pw\n", 3, 0600);
    snprintf(json, sizeof json,
             "{\"redis\":{\"host\":\"redis.musterstadt.example\","
             "\"unix_socket\":\"/run/redis/redis.sock\",\"username\":\"herold\","
             "\"password\":\"@file:%s\",\"prefix\":\"{herold}:\"},"
             "\"queue\":{\"group\":\"g\",\"consumer\":\"c\"},"
             "\"http\":{\"ca_file\":\"/etc/ssl/ca.pem\"},"
             "\"log\":{\"level\":\"warn\","
             "\"pseudonym_key\":\"${HEROLD_PSEUDONYM_KEY}\"}}", secret);
    write_file(file, sizeof file, "config.json", json, strlen(json), 0600);
    assert_true(alloc_load(file) >= 16);
    unlink(secret);
    unsetenv("HEROLD_WEBHOOK_SECRET");
    unsetenv("HEROLD_PSEUDONYM_KEY");
}

static void test_alloc_secret(void **state)
{
    static const char *const refs[] = {
        "inline", "${HEROLD_TEST_SECRET}", "@file:@DIR@/secret"
    };
    char file[256], ref[300];
    struct herr err;
    char *s;

    (void)state;
    setenv("HEROLD_TEST_SECRET", "from-env", 1);
    write_file(file, sizeof file, "secret", "from-file\n", 10, 0600);
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) {
        replace_dir(ref, sizeof ref, refs[i]);
        herold_alloc_fail_after = 0;
        s = config_secret(ref, "t.secret", &err);
        herold_alloc_fail_after = -1;
        assert_null(s);
        assert_int_equal(err.kind, HERR_RESOURCE);
        assert_string_equal(err.path, "t.secret");
        assert_string_equal(err.msg, "out of memory");
    }
    unlink(file);
    unsetenv("HEROLD_TEST_SECRET");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_table),
        cmocka_unit_test(test_name_of_64),
        cmocka_unit_test(test_minimal),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_example),
        cmocka_unit_test(test_from_json),
        cmocka_unit_test(test_load_unreadable),
        cmocka_unit_test(test_secret_table),
        cmocka_unit_test(test_secret_sizes),
        cmocka_unit_test(test_secret_fifo),
        cmocka_unit_test(test_config_secrets),
        cmocka_unit_test(test_secret_not_in_errors),
        cmocka_unit_test(test_alloc_defaults),
        cmocka_unit_test(test_alloc_load),
        cmocka_unit_test(test_alloc_secret),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
