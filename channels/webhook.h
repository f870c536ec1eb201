/*
 * webhook - the webhook channel: one signed JSON POST per delivery to a
 * configured endpoint, in the Standard Webhooks format (docs/webhook.md).
 *
 * Config subtree "channels.webhook":
 *   {"endpoints": [{"name": "app-backend",
 *                   "url": "https://example.org/hooks/herold",
 *                   "secret": "${HEROLD_WEBHOOK_SECRET}"}],
 *    "max_inflight": 256}
 * A secret starting with "whsec_" is base64 for the key (Standard
 * Webhooks); any other secret is the key itself.  Keys are 16-256 bytes.
 *
 * Every request carries webhook-id ("msg_" + the delivery's idempotency
 * key, so a resend after a crash carries the same id), webhook-timestamp
 * (unix seconds), webhook-signature ("v1,<base64 HMAC-SHA256(key,
 * id "." timestamp "." body)>") and Idempotency-Key (= webhook-id).
 */
#ifndef HEROLD_WEBHOOK_H
#define HEROLD_WEBHOOK_H

#include <stddef.h>

#include "channel.h"

/* "v1," + 44 base64 characters + NUL */
#define WEBHOOK_SIG_SIZE 48

extern const struct channel_ops webhook_channel;

/* webhook_sign - write "v1,<base64 HMAC-SHA256(key, msg_id "." ts "."
 * body)>" into out (at least WEBHOOK_SIG_SIZE bytes).  Returns 0, or -1
 * if outsize is too small or the crypto library failed.  Borrows all. */
int webhook_sign(const unsigned char *key, size_t keylen, const char *msg_id,
                 long ts, const char *body, size_t body_len,
                 char *out, size_t outsize);

/* webhook_secret_key - turn a resolved secret into the signing key:
 * "whsec_<base64>" decodes, anything else is taken as bytes.  Returns 0
 * with *key a new buffer of *keylen bytes (clear and free it with
 * webhook_key_free), or -1 with err at path (HERR_INPUT: bad base64 or a
 * key outside 16..256 bytes; HERR_RESOURCE: out of memory). */
int webhook_secret_key(const char *secret, const char *path,
                       unsigned char **key, size_t *keylen, struct herr *err);

/* webhook_key_free - overwrite len bytes of key with zeros and free it. */
void webhook_key_free(unsigned char *key, size_t len);

#endif
