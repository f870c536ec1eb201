/*
 * herr - filling and formatting struct herr values.  Owns nothing.
 */
#include "herr.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int herr_set(struct herr *err, enum herr_kind kind, const char *path,
             const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return -1;
    err->kind = kind;
    err->errno_saved = 0;
    snprintf(err->path, sizeof err->path, "%s", path ? path : "");
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int herr_sys(struct herr *err, const char *what)
{
    int saved = errno;

    if (err == NULL)
        return -1;
    herr_set(err, HERR_SYSTEM, NULL, "%s: %s", what, strerror(saved));
    err->errno_saved = saved;
    return -1;
}

const char *herr_format(const struct herr *err, char *buf, unsigned long size)
{
    if (err->path[0] != '\0')
        snprintf(buf, size, "%s: %s", err->path, err->msg);
    else
        snprintf(buf, size, "%s", err->msg);
    return buf;
}

void herr_clear(struct herr *err)
{
    if (err == NULL)
        return;
    err->kind = HERR_NONE;
    err->errno_saved = 0;
    err->path[0] = '\0';
    err->msg[0] = '\0';
}
