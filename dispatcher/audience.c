/*
 * audience - the per-citizen part of the fan-out: which of the job's
 * channels a citizen chose, consented to and can be reached on.
 */
#include "audience.h"

#include <jansson.h>
#include <string.h>

#include "contact.h"

void aud_job_init(struct aud_job *aj, const struct job *job,
                  const enum aud_contact *contact)
{
    memset(aj, 0, sizeof *aj);
    aj->nch = job->nchannels;
    for (size_t i = 0; i < job->nchannels; i++) {
        aj->ch[i] = job->channels[i];
        aj->contact[i] = contact[i];
        aj->sms[i] = strcmp(job->channels[i], "sms") == 0;
    }
    if (job->audience == AUD_TOPICS) {
        for (size_t i = 0; i < job->ntopics; i++)
            aj->topics[i] = job->topics[i];
        aj->ntopics = job->ntopics;
    } else if (job->topic != NULL) {
        aj->topics[0] = job->topic;
        aj->ntopics = 1;
    }
}

/* aud_eq - does the counted string (s, n) equal the C string z? */
static bool aud_eq(const char *s, size_t n, const char *z)
{
    return strlen(z) == n && memcmp(s, z, n) == 0;
}

/* aud_wanted_topic - is topic (s, n) one the job's choice comes from? */
static bool aud_wanted_topic(const struct aud_job *aj, const char *s, size_t n)
{
    if (aj->ntopics == 0)
        return true;
    for (size_t i = 0; i < aj->ntopics; i++)
        if (aud_eq(s, n, aj->topics[i]))
            return true;
    return false;
}

/* aud_choice - add the channels of a comma list (v, n) to *mask. */
static void aud_choice(const struct aud_job *aj, const char *v, size_t n, unsigned *mask)
{
    size_t i = 0;

    while (i < n) {
        size_t j = i;
        while (j < n && v[j] != ',')
            j++;
        for (size_t c = 0; c < aj->nch; c++)
            if (aud_eq(v + i, j - i, aj->ch[c]))
                *mask |= 1u << c;
        i = j + 1;
    }
}

/* aud_consent - NULL if the consent record (v, n) is confirmed, else why not. */
static const char *aud_consent(const struct aud_kv *rec)
{
    json_t *o;
    const char *st, *why = "no consent";

    if (rec == NULL || rec->v == NULL)
        return "no consent";
    o = json_loadb(rec->v, rec->vlen, JSON_REJECT_DUPLICATES, NULL);
    st = json_string_value(json_object_get(o, "state"));
    if (st != NULL && strcmp(st, "confirmed") == 0)
        why = NULL;
    else if (st != NULL && strcmp(st, "pending") == 0)
        why = "consent pending";
    else if (st != NULL && strcmp(st, "withdrawn") == 0)
        why = "consent withdrawn";
    json_decref(o);
    return why;
}

/* aud_copy - the counted string as a C string in buf; false if too long. */
static bool aud_copy(const struct aud_kv *f, char *buf, size_t size)
{
    if (f->v == NULL || f->vlen >= size)
        return false;
    memcpy(buf, f->v, f->vlen);
    buf[f->vlen] = '\0';
    return true;
}

/* aud_push_active - does the push array (JSON) hold an active token? */
static bool aud_push_active(const struct aud_kv *push)
{
    json_t *a, *t;
    size_t i;
    bool ok = false;

    if (push->v == NULL)
        return false;
    a = json_loadb(push->v, push->vlen, 0, NULL);
    json_array_foreach(a, i, t) {
        const char *st = json_string_value(json_object_get(t, "state"));
        if (st == NULL || strcmp(st, "active") == 0)
            ok = true;
    }
    json_decref(a);
    return ok;
}

/* aud_contact_why - NULL if the citizen can be reached on channel c. */
static const char *aud_contact_why(const struct aud_job *aj, size_t c,
                                   const struct aud_result *r, const struct aud_kv *email_state,
                                   const struct aud_kv *phone_state, const struct aud_kv *push)
{
    char buf[CONTACT_EMAIL_MAX + 2];
    enum phone_kind kind;

    switch (aj->contact[c]) {
    case AUD_BY_ID:
        return NULL;
    case AUD_BY_EMAIL:
        if (r->email.v == NULL || r->email.vlen == 0)
            return "no contact point for channel";
        if (email_state->v && aud_eq(email_state->v, email_state->vlen, "bounced"))
            return "address bounced before";
        if (!aud_copy(&r->email, buf, sizeof buf) || !contact_email_ok(buf, NULL))
            return "invalid contact point";
        return NULL;
    case AUD_BY_PHONE:
        if (r->phone.v == NULL || r->phone.vlen == 0)
            return "no contact point for channel";
        if (phone_state->v && aud_eq(phone_state->v, phone_state->vlen, "invalid"))
            return "invalid contact point";
        if (!aud_copy(&r->phone, buf, sizeof buf) || !contact_phone_ok(buf, &kind, NULL))
            return "invalid contact point";
        if (aj->sms[c] && kind == PHONE_LANDLINE)
            return "landline cannot receive SMS";
        return NULL;
    case AUD_BY_PUSH:
        return aud_push_active(push) ? NULL : "no contact point for channel";
    }
    return "no contact point for channel";
}

size_t aud_resolve(const struct aud_job *aj, const struct aud_kv *kv, size_t n, int only_ch,
                   struct aud_result *out)
{
    struct aud_kv none = {NULL, NULL, 0, 0};
    struct aud_kv email_state = none, phone_state = none, push = none;
    const struct aud_kv *consent[JOB_MAX_CHANNELS] = {NULL};
    unsigned mask = 0;
    size_t units = 0;

    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < n; i++) {
        const struct aud_kv *f = &kv[i];
        if (aud_eq(f->k, f->klen, "email"))
            out->email = *f;
        else if (aud_eq(f->k, f->klen, "email_state"))
            email_state = *f;
        else if (aud_eq(f->k, f->klen, "phone"))
            out->phone = *f;
        else if (aud_eq(f->k, f->klen, "phone_state"))
            phone_state = *f;
        else if (aud_eq(f->k, f->klen, "push"))
            push = *f;
        else if (aud_eq(f->k, f->klen, "lang"))
            out->lang = *f;
        else if (aud_eq(f->k, f->klen, "tz"))
            out->tz = *f;
        else if (aud_eq(f->k, f->klen, "quiet"))
            out->quiet = *f;
        else if (f->klen > 6 && memcmp(f->k, "topic:", 6) == 0) {
            if (aud_wanted_topic(aj, f->k + 6, f->klen - 6))
                aud_choice(aj, f->v, f->vlen, &mask);
        } else if (f->klen > 8 && memcmp(f->k, "consent:", 8) == 0) {
            for (size_t c = 0; c < aj->nch; c++)
                if (aud_eq(f->k + 8, f->klen - 8, aj->ch[c]))
                    consent[c] = f;
        }
    }
    for (size_t c = 0; c < aj->nch; c++) {
        const char *why;
        if (!(mask & (1u << c)) || (only_ch >= 0 && (size_t)only_ch != c))
            continue;
        why = aud_consent(consent[c]);
        if (why == NULL)
            why = aud_contact_why(aj, c, out, &email_state, &phone_state, &push);
        out->verdict[c] = why ? AUD_SUPPRESS : AUD_DELIVER;
        out->reason[c] = why;
        units++;
    }
    return units;
}
