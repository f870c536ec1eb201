/*
 * citizen - the citizen record, its topics and its consent (Redis layout
 * v1, docs/citizens.md): validation, atomic writes, double opt-in and
 * unsubscribe tokens, the Art. 15 export and the Art. 17 erasure.
 *
 * Used by the CLI (herold citizen ..., herold citizens import, herold
 * confirm, herold unsubscribe), which may block: every Redis call here is
 * synchronous.  heroldd never writes citizens through this module.
 *
 * Errors name the field ("email", "topics[1].channels",
 * "consents[0].method") and what is expected, never the value: contact
 * points do not go into error messages or logs.
 */
#ifndef HEROLD_CITIZEN_H
#define HEROLD_CITIZEN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "../config/config.h"
#include "herr.h"
#include "redisq.h"

#define CITIZEN_ID_MAX 64
#define CITIZEN_MAX_TOPICS 64
#define CITIZEN_MAX_CONSENTS 8

struct citizen_consent_in {
    const char *channel;        /* "email", "sms", "push", "webhook" */
    const char *method;         /* form | letter | counter | import */
    const char *text_version;   /* version of the consent text shown, 1-64 printable chars */
    const char *given_at;       /* RFC 3339, NULL: now */
    const char *confirmed_at;   /* RFC 3339 or NULL; only for method import (already confirmed elsewhere) */
};

struct citizen_topic_in { const char *topic; const char *channels; /* "email,sms" */ };

struct citizen_in {
    const char *id;
    const char *email, *phone, *lang, *tz, *quiet;  /* NULL: unchanged (update) / absent (add); "" removes */
    const char *push_json;                          /* JSON array per docs/citizens.md, NULL unchanged */
    struct citizen_topic_in topics[CITIZEN_MAX_TOPICS]; size_t ntopics;     /* subscribe / set channels */
    const char *drop_topics[CITIZEN_MAX_TOPICS]; size_t ndrop;              /* unsubscribe */
    struct citizen_consent_in consents[CITIZEN_MAX_CONSENTS]; size_t nconsents;
    const char *withdraw[CITIZEN_MAX_CONSENTS]; size_t nwithdraw;           /* channels */
};

enum citizen_mode { CITIZEN_ADD, CITIZEN_UPDATE, CITIZEN_UPSERT };

/* err->msg of a failure because the citizen does not exist (UPDATE,
 * citizen_get, export, erase, unsubscribe): the CLI exits 4 on it. */
#define CITIZEN_NO_SUCH "no such citizen"

struct citizen_put_result { bool created, changed; int optins_sent; };

/* citizen_validate - every field; err->path names it ("email", "topics[1].channels", "consents[0].method"), msg says what is expected; never quotes the value. */
int citizen_validate(const struct citizen_in *in, struct herr *err);

/* citizen_put - write in atomically (one Lua script: hash fields, topic sorted sets, `P topics`, `P citizens`, history entries, opt-in token); idempotent: putting the same input twice changes nothing the second time (changed=false, no second opt-in while one is pending or consent is confirmed with the same text_version). ADD fails (HERR_INPUT "citizen exists") when it exists, UPDATE fails when it does not. An e-mail consent by method "form" starts pending and enqueues the confirmation job (below). */
int citizen_put(struct redisq_sync *s, const struct herold_config *cfg, const struct citizen_in *in, enum citizen_mode mode, struct citizen_put_result *res, struct herr *err);

/* ---- further operations (used by the CLI) ---- */

/* citizen_id_ok / citizen_topic_ok / citizen_channel_ok - the syntax of a
 * citizen id, a topic name and a per-citizen channel name
 * (docs/citizens.md). */
bool citizen_id_ok(const char *id);
bool citizen_topic_ok(const char *topic);
bool citizen_channel_ok(const char *ch);

/* citizen_get - the record of id as a JSON object: the hash fields as
 * strings, except `consent:<ch>` and `push`, which are parsed.  Returns a
 * new reference, or NULL with err: HERR_INPUT "no such citizen" when it
 * does not exist, HERR_TRANSIENT on a Redis error. */
json_t *citizen_get(struct redisq_sync *s, const struct herold_config *cfg,
                    const char *id, struct herr *err);

/* citizen_export - everything herold holds about id (Art. 15 DSGVO):
 * {"id", "exported_at", "record", "topics", "member_of", "history",
 * "pending_optins", "bounced", "daily_cap", "deliveries", "waiting",
 * "stream_entries"} (docs/citizens.md, "Export and erasure").  Pending
 * opt-ins are listed without token or key; stream entries without their
 * payload.  Walks the keyspace with SCAN.  Returns a new reference or
 * NULL with err as citizen_get. */
json_t *citizen_export(struct redisq_sync *s, const struct herold_config *cfg,
                       const char *id, struct herr *err);

/* What citizen_erase removed, per kind. */
struct citizen_erase_result {
    long record, history, index, topics, optins, caps, ledger, later, bounced,
         rejected, dead;
    long queued;                /* queued jobs addressed to the citizen alone, deleted */
    long queued_shared;         /* queued jobs naming the citizen among others: kept
                                 * (their payload is deleted when they finish) */
    bool aof_rewrite_started;
    char aof_msg[128];          /* why BGREWRITEAOF did not start, "" if it did */
};

/* citizen_erase - delete everything herold holds about id (Art. 17 DSGVO,
 * docs/citizens.md "Export and erasure"), scanning with SCAN, never KEYS;
 * the record goes last, so an erase cut short can be run again.  Then
 * asks Redis for BGREWRITEAOF so the append-only file forgets it too
 * (res->aof_rewrite_started, else res->aof_msg says why not).  Returns 0
 * and the counts in res, or -1 with err (HERR_INPUT CITIZEN_NO_SUCH when
 * there is no record: nothing is removed then). */
int citizen_erase(struct redisq_sync *s, const struct herold_config *cfg,
                  const char *id, struct citizen_erase_result *res, struct herr *err);

/* citizen_confirm - redeem a double opt-in token: atomically read and
 * delete `P optin:<sha256(token)>` and confirm the consent it names.
 * On success *id_out (if id_out) receives the citizen id (a new string,
 * free with herold_free) and *channel_out the channel (static name).
 * Unknown, expired or used tokens: -1, HERR_INPUT. */
int citizen_confirm(struct redisq_sync *s, const struct herold_config *cfg,
                    const char *token, char **id_out, const char **channel_out,
                    struct herr *err);

/* citizen_unsubscribe - check an unsubscribe token
 * "<id>.<topic>.<24 hex of HMAC-SHA256(key, id NUL topic)>" (the e-mail
 * channel's List-Unsubscribe token) and remove the subscription (topic
 * "all": every one), with a history event.  *removed gets the number of
 * topics left.  A bad MAC: -1, HERR_INPUT "invalid unsubscribe token". */
int citizen_unsubscribe(struct redisq_sync *s, const struct herold_config *cfg,
                        const char *token, int *removed, struct herr *err);

/* citizen_unsubscribe_mac - the 24 hex characters of the MAC above into
 * out (25 bytes).  Pure; for tests and for the e-mail channel. */
void citizen_unsubscribe_mac(const unsigned char *key, size_t keylen, const char *id,
                             const char *topic, char out[25]);

/* citizen_unsubscribe_key - the key used to check unsubscribe tokens:
 * citizens.unsubscribe_key, else channels.email.unsubscribe.key, resolved
 * with config_secret.  Returns a new string (free with herold_free_secret)
 * or NULL with err. */
char *citizen_unsubscribe_key(const struct herold_config *cfg, struct herr *err);

/* Topic statistics for `herold topic show`. */
struct citizen_topic_stats {
    long subscribers;
    long email, sms, push, webhook, other;
    long no_record;             /* in the set, but no topic field in the record */
};

/* citizen_topic_stats - count the subscribers of topic and, per channel,
 * how many chose it, paging with ZRANGEBYLEX in batches of 1000.
 * -1 with err on a Redis error. */
int citizen_topic_stats(struct redisq_sync *s, const struct herold_config *cfg,
                        const char *topic, struct citizen_topic_stats *st,
                        struct herr *err);

#endif
