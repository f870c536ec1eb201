/*
 * clock - wall-clock helpers.  Timers and timeouts use libev's monotonic
 * clock; wall time is used only for what people read (timestamps) and for
 * comparisons with job times (expires_at).
 */
#ifndef HEROLD_CLOCK_H
#define HEROLD_CLOCK_H

#include <stddef.h>

/* clock_wall - unix seconds with sub-second fraction. */
double clock_wall(void);

/* clock_mono - seconds of the monotonic clock: for rate limits and
 * pauses, which a wall-clock jump must neither burst nor stall. */
double clock_mono(void);

/* clock_iso - t (unix seconds) as "2026-03-01T07:00:02.120Z" into buf
 * (at least 32 bytes); returns buf. */
const char *clock_iso(double t, char *buf, size_t size);

#endif
