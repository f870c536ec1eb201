/*
 * http - the shared HTTP transport: curl's multi socket-action API driven
 * by libev watchers.  Every HTTP channel (webhook, SMS gateways, social,
 * push) submits requests here.  This is the only file that includes curl.
 *
 * Never blocks the loop: no curl_easy_perform, no polling.  Connections are
 * kept alive and reused per host, capped per host and in total.  TLS
 * verification is always on; only a CA file can be configured.  Redirects
 * are never followed.  Reply bodies are capped; headers sent are checked
 * for CR/LF/NUL.  Verbose wire traces are never enabled.
 */
#ifndef HEROLD_HTTP_H
#define HEROLD_HTTP_H

#include <ev.h>
#include <stddef.h>

#include "channel.h"

struct http_config {
    long connect_timeout_ms;   /* default 5000 */
    long timeout_ms;           /* whole request, default 15000 */
    long low_speed_bytes;      /* abort below this many bytes/s ... */
    long low_speed_time_s;     /* ... for this long; default 1 B/s for 10 s */
    long max_host_connections; /* default 64 */
    long max_total_connections;/* default 256 */
    size_t max_response_bytes; /* reply body cap, default 65536 */
    const char *ca_file;       /* NULL: system store */
};

struct http_request {
    const char *method;        /* "POST", "GET", ... */
    const char *url;
    const char *const *headers;/* "Name: value" strings, NULL-terminated */
    const char *body;          /* may be NULL */
    size_t body_len;
};

typedef void http_done_fn(void *arg, const struct transport_outcome *out);

/* http_transport_new - returns a new transport on loop; free with
 * http_transport_free().  NULL and err on failure. */
struct http_transport *http_transport_new(struct ev_loop *loop,
                                          const struct http_config *conf,
                                          struct herr *err);

/* http_submit - start req.  Copies url, headers and body, so req may be
 * freed when this returns.  Returns 0: done runs exactly once on the loop
 * thread, never before http_submit returns, with an outcome whose body is
 * borrowed for the duration of the call.  -1 and err: done never runs. */
int http_submit(struct http_transport *t, const struct http_request *req,
                http_done_fn *done, void *arg, struct herr *err);

/* http_inflight - requests submitted and not yet done. */
size_t http_inflight(const struct http_transport *t);

/* http_abort_all - end every in-flight request now with TRANSPORT_ABORTED
 * (request_sent set as observed).  Each done runs once. */
void http_abort_all(struct http_transport *t);

/* http_transport_free - aborts what is in flight (done runs), frees. */
void http_transport_free(struct http_transport *t);

/* http_parse_retry_after - RFC 9110 Retry-After: delay-seconds or an
 * HTTP-date, relative to now (unix seconds).  Returns milliseconds,
 * capped at cap_ms; -1 if the value is absent or unparseable. */
long http_parse_retry_after(const char *value, long now, long cap_ms);

/* http_header_value_ok - 1 if s has no CR, LF or NUL-terminated trickery
 * (CR, LF are rejected); 0 otherwise. */
int http_header_value_ok(const char *s);

#endif
