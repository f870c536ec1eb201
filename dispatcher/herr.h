/*
 * herr - the error value every fallible herold function fills in.
 *
 * A function that can fail returns 0 or -1 (or a pointer or NULL) and,
 * on failure, writes what went wrong into a caller-supplied struct herr:
 * a message for a person, the JSON path of the offending field when there
 * is one, and the kind, which says who has to act.  It is a value handed
 * back, never a global (hiredis's errstr).  It never holds personal data:
 * callers describe fields, not their contents.
 */
#ifndef HEROLD_HERR_H
#define HEROLD_HERR_H

#include <stdarg.h>

enum herr_kind {
    HERR_NONE = 0,
    HERR_INPUT,      /* bad job, config or provider reply: reject with reason */
    HERR_TRANSIENT,  /* try again later */
    HERR_RESOURCE,   /* out of memory or descriptors: defer, never drop */
    HERR_SYSTEM      /* an OS call failed; errno_saved says which */
};

struct herr {
    enum herr_kind kind;
    int errno_saved;
    char path[128];   /* e.g. "channels.webhook.endpoints[1].url" */
    char msg[256];    /* e.g. "expected an https:// or http:// URL" */
};

/* herr_set - fill err (if non-NULL) with kind, path (may be NULL) and a
 * printf-style message.  Always returns -1 so callers can
 * `return herr_set(...)`. */
int herr_set(struct herr *err, enum herr_kind kind, const char *path,
             const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* herr_sys - like herr_set for a failed OS call: copies errno first. */
int herr_sys(struct herr *err, const char *what);

/* herr_format - "path: msg" (or just msg) into buf; returns buf. */
const char *herr_format(const struct herr *err, char *buf, unsigned long size);

void herr_clear(struct herr *err);

#endif
