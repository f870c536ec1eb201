/*
 * ratelimit - the arithmetic of provider rate limits, with the clock
 * passed in (so unit tests inject it).
 *
 * A token bucket for one heroldd, and GCRA (the generic cell rate
 * algorithm) for a limit shared by several: the Lua script `gcra` in
 * scripts.c runs the same steps as rl_gcra on a theoretical arrival time
 * kept in Redis.  Both let at most rate * L + burst tokens out in any
 * interval of length L.
 */
#ifndef HEROLD_RATELIMIT_H
#define HEROLD_RATELIMIT_H

#include <stdbool.h>

struct rl_bucket {
    double rate;      /* tokens per second; <= 0: unlimited */
    double burst;     /* capacity, at least 1 */
    double tokens;
    double last;      /* clock of the last refill */
};

/* rl_init - a full bucket at time now. */
void rl_init(struct rl_bucket *b, double rate, double burst, double now);

/* rl_take - take one token at time now; false when none is there. */
bool rl_take(struct rl_bucket *b, double now);

/* rl_wait - seconds from now until a token is there (0: now). */
double rl_wait(struct rl_bucket *b, double now);

/* rl_gcra - grant up to n tokens at time now against the theoretical
 * arrival time *tat (0 for a fresh limit), moving it on by 1/rate per
 * token.  A token is granted while *tat - now <= (burst - 1) / rate.
 * Returns the number granted; *wait (when not NULL) is the seconds until
 * the next token could be granted (0 if one could be now). */
int rl_gcra(double *tat, double now, double rate, double burst, int n, double *wait);

#endif
