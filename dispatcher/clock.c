/*
 * clock - wall time and its RFC 3339 rendering.  Owns nothing.
 */
#include "clock.h"

#include <stdio.h>
#include <time.h>

double clock_wall(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

double clock_mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

const char *clock_iso(double t, char *buf, size_t size)
{
    time_t s = (time_t)t;
    struct tm tm;
    size_t n;

    gmtime_r(&s, &tm);
    n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, size - n, ".%03dZ", (int)((t - (double)s) * 1000) % 1000);
    return buf;
}
