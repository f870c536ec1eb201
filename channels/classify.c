/*
 * classify - the shared mapping from an HTTP transport outcome to a
 * delivery result, used by every HTTP channel's classify().
 *
 * Pure: no I/O, no clock, no allocation.  Decides only three things: is
 * the delivery final (OK or PERMANENT) or to be retried (TRANSIENT), may
 * the provider already have acted (in_doubt: the request went out and no
 * final 2xx/4xx answer came back), and what an operator should read.
 * Never copies the reply body into the reason: providers echo input.
 */
#include <stdio.h>
#include <string.h>

#include "channel.h"

/* classify_set - fill out in one statement. */
static void classify_set(struct delivery_result *out, enum delivery_status st,
                         bool in_doubt, const char *reason)
{
    out->status = st;
    out->in_doubt = in_doubt;
    snprintf(out->reason, sizeof out->reason, "%s", reason);
}

/* classify_reply - a complete HTTP reply with status code c. */
static void classify_reply(const struct transport_outcome *t,
                           struct delivery_result *out)
{
    int c = t->code;
    char reason[64];

    snprintf(reason, sizeof reason, "http %d", c);
    if (c >= 200 && c <= 299) {
        classify_set(out, DELIVERY_OK, false, reason);
    } else if (c == 429) {
        classify_set(out, DELIVERY_TRANSIENT, false, reason);
        out->retry_after_ms = t->retry_after_ms;
    } else if (c == 408 || c == 425) {
        classify_set(out, DELIVERY_TRANSIENT, false, reason);
    } else if (c >= 400 && c <= 499) {
        classify_set(out, DELIVERY_PERMANENT, false, reason);
    } else if (c >= 500 && c <= 599) {
        /* 502 and 504 come from a proxy: the upstream may have acted */
        classify_set(out, DELIVERY_TRANSIENT, c == 502 || c == 504, reason);
        out->retry_after_ms = t->retry_after_ms;
    } else if (c >= 300 && c <= 399) {
        snprintf(reason, sizeof reason, "http %d unexpected redirect", c);
        classify_set(out, DELIVERY_PERMANENT, false, reason);
    } else if (c >= 100 && c <= 199) {
        snprintf(reason, sizeof reason, "http %d unexpected informational reply", c);
        classify_set(out, DELIVERY_PERMANENT, false, reason);
    } else {
        /* no valid status line: treat like a broken reply */
        snprintf(reason, sizeof reason, "http %d invalid status", c);
        classify_set(out, DELIVERY_TRANSIENT, t->request_sent, reason);
    }
}

/*
 * channel_classify_http - map t onto out.  A complete reply: 2xx
 * delivered; 429 transient with its Retry-After; 408, 425 and 5xx
 * transient (5xx keeps Retry-After; 502/504 are in_doubt); other 4xx
 * permanent; 1xx and 3xx permanent (redirects are never followed).  No
 * complete reply (timeout, connect, TLS, protocol, aborted, local):
 * transient, in_doubt exactly when the request had been sent.  reason is
 * short operator text ("http 503", "timeout after request sent",
 * "tls: certificate verify failed") built from the code and t->detail,
 * never from the body.  Pure; borrows t only during the call.
 */
void channel_classify_http(const struct transport_outcome *t,
                           struct delivery_result *out)
{
    const char *d = t->detail;
    const char *sep = d[0] != '\0' ? ": " : "";
    const char *when = t->request_sent ? "after request sent" : "before request sent";
    char reason[sizeof out->reason];

    memset(out, 0, sizeof *out);
    out->retry_after_ms = -1;
    out->provider_code = t->code;
    switch (t->kind) {
    case TRANSPORT_DONE:
        classify_reply(t, out);
        return;
    case TRANSPORT_TIMEOUT:
        snprintf(reason, sizeof reason, "timeout %s", when);
        break;
    case TRANSPORT_CONNECT:
        snprintf(reason, sizeof reason, "connect%s%s", sep, d);
        break;
    case TRANSPORT_TLS:
        snprintf(reason, sizeof reason, "tls%s%s", sep, d);
        break;
    case TRANSPORT_PROTOCOL:
        snprintf(reason, sizeof reason, "protocol%s%s", sep, d);
        break;
    case TRANSPORT_ABORTED:
        snprintf(reason, sizeof reason, "aborted %s", when);
        break;
    case TRANSPORT_LOCAL:
    default:
        snprintf(reason, sizeof reason, "local%s%s", sep, d);
        break;
    }
    classify_set(out, DELIVERY_TRANSIENT, t->request_sent, reason);
}
