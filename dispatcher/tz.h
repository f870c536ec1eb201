/*
 * tz - time zones from the system's compiled zoneinfo (TZif files from
 * Debian's tzdata), without touching the process-wide TZ, so any number of
 * zones can be used at once and from any thread; and quiet hours.
 *
 * Zones are loaded once by name and kept for the life of the process
 * (tz_get); lookups are a binary search over the transitions, with the
 * TZif footer's POSIX rule for instants after the last transition.
 */
#ifndef HEROLD_TZ_H
#define HEROLD_TZ_H

#include <stdbool.h>
#include <time.h>

#include "herr.h"

struct tz;

/* tz_get - the zone called name ("Europe/Berlin"), loaded from $TZDIR or
 * /usr/share/zoneinfo on first use and cached (thread-safe).  NULL with err
 * (HERR_INPUT "<name>: unknown time zone") when there is no such zone. */
const struct tz *tz_get(const char *name, struct herr *err);

/* tz_offset - seconds east of UTC in z at instant t. */
long tz_offset(const struct tz *z, time_t t);

/* tz_local_day - the local calendar date of t in z as "YYYY-MM-DD". */
void tz_local_day(const struct tz *z, time_t t, char out[11]);

/* Quiet hours: a daily local interval [start, end) in minutes after
 * midnight; start > end wraps midnight ("22:00-07:00").  start == end is
 * refused (it would mean never or always). */
struct quiet {
    int start, end;
};

/* quiet_parse - "HH:MM-HH:MM" into q; -1 if malformed. */
int quiet_parse(const char *s, struct quiet *q);

/* quiet_until - 0 when t is outside the quiet hours q in z; otherwise the
 * instant (unix seconds) they end, computed in local time so a DST change
 * inside the interval is right (a local end time that does not exist
 * moves to the first instant after the gap). */
time_t quiet_until(const struct quiet *q, const struct tz *z, time_t t);

#endif
