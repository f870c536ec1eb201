/*
 * ratelimit - token bucket and GCRA arithmetic; owns nothing, no I/O.
 */
#include "ratelimit.h"

void rl_init(struct rl_bucket *b, double rate, double burst, double now)
{
    b->rate = rate;
    b->burst = burst < 1 ? 1 : burst;
    b->tokens = b->burst;
    b->last = now;
}

/* rl_refill - add what accrued since the last refill; a clock that went
 * back adds nothing (and becomes the new reference). */
static void rl_refill(struct rl_bucket *b, double now)
{
    if (now > b->last) {
        b->tokens += (now - b->last) * b->rate;
        if (b->tokens > b->burst)
            b->tokens = b->burst;
    }
    b->last = now;
}

bool rl_take(struct rl_bucket *b, double now)
{
    if (b->rate <= 0)
        return true;
    rl_refill(b, now);
    if (b->tokens < 1 - 1e-9)   /* 0.1 s * 10/s is 0.999...: rounding, not a refusal */
        return false;
    b->tokens -= 1;
    return true;
}

double rl_wait(struct rl_bucket *b, double now)
{
    if (b->rate <= 0)
        return 0;
    rl_refill(b, now);
    return b->tokens >= 1 - 1e-9 ? 0 : (1 - b->tokens) / b->rate;
}

int rl_gcra(double *tat, double now, double rate, double burst, int n, double *wait)
{
    double t = *tat > now ? *tat : now;
    double step = rate > 0 ? 1 / rate : 0;
    double tau = (burst < 1 ? 0 : burst - 1) * step;
    int k = 0;

    if (rate <= 0) {
        if (wait)
            *wait = 0;
        return n;
    }
    /* a tiny epsilon keeps exact multiples of the step from being refused
     * by rounding */
    while (k < n && t - now <= tau + 1e-9) {
        t += step;
        k++;
    }
    *tat = t;
    if (wait)
        *wait = t - now <= tau + 1e-9 ? 0 : t - tau - now;
    return k;
}
