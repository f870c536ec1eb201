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
 * /usr/share/zoneinfo on first use and cached (thread-safe).  The zone
 * belongs to the cache and lives as long as the process; never free it.
 * NULL with err when:
 *  - name is not 1-64 of [A-Za-z0-9_+/-] with no leading, trailing or
 *    double '/' (HERR_INPUT "invalid time zone name"; never a path);
 *  - there is no such zone (HERR_INPUT "<name>: unknown time zone");
 *  - the file is not usable TZif, or has leap seconds (HERR_INPUT
 *    "<name>: unusable zone file (<why>)");
 *  - 256 zones are already cached (HERR_RESOURCE "<name>: too many time
 *    zones in use (at most 256)"), or memory ran out (HERR_RESOURCE).
 * Failures are not cached: a later call tries again. */
const struct tz *tz_get(const char *name, struct herr *err);

/* tz_offset - seconds east of UTC in z at instant t: the transition
 * table, then the TZif footer's POSIX rule after its last entry; before
 * the first entry, the zone's first local time type (local mean time). */
long tz_offset(const struct tz *z, time_t t);

/* tz_local_day - the local calendar date of t in z as "YYYY-MM-DD"
 * (proleptic Gregorian; clamped to 0000-01-01 .. 9999-12-31). */
void tz_local_day(const struct tz *z, time_t t, char out[11]);

/* Quiet hours: a daily local interval [start, end) in minutes after
 * midnight; start > end wraps midnight ("22:00-07:00").  start == end is
 * refused (it would mean never or always). */
struct quiet {
    int start, end;
};

/* quiet_parse - "HH:MM-HH:MM" into q; -1 if malformed, q untouched.
 * Exactly two digits each, 00:00-23:59: "7:00-8:00" and "24:00" are
 * refused, as are spaces, seconds and start == end. */
int quiet_parse(const char *s, struct quiet *q);

/* quiet_until - 0 when t is outside the quiet hours q in z; otherwise the
 * instant (unix seconds) they end, computed in local time so a DST change
 * inside the interval is right (a local end time that does not exist
 * moves to the first instant after the gap; one that occurs twice ends
 * at its first occurrence after t).  Quiet 22:00-07:00 in Europe/Berlin
 * at 2026-03-28 23:30 CET ends 2026-03-29 07:00 CEST, 05:00Z.  The start
 * minute is inside, the end minute is not.  Instants more than a billion
 * years from 1970 are never quiet. */
time_t quiet_until(const struct quiet *q, const struct tz *z, time_t t);

#endif
