/*
 * test_ratelimit - token bucket and GCRA with an injected clock: burst,
 * refill, clock jumps, and the bound "at most rate * L + burst in any
 * interval L" under random demand, for one bucket and for several
 * instances sharing one GCRA state.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "dispatcher/ratelimit.h"

static void bucket_burst_then_rate(void **state)
{
    struct rl_bucket b;
    int n = 0;

    (void)state;
    rl_init(&b, 10, 5, 100.0);
    while (rl_take(&b, 100.0))
        n++;
    assert_int_equal(n, 5);                 /* the burst at once */
    assert_false(rl_take(&b, 100.05));      /* half a token accrued */
    assert_true(rl_wait(&b, 100.05) > 0.049 && rl_wait(&b, 100.05) < 0.051);
    assert_true(rl_take(&b, 100.1));        /* one token per 100 ms */
    assert_false(rl_take(&b, 100.1));
    /* a long idle period refills to the burst, not beyond */
    n = 0;
    while (rl_take(&b, 1000.0))
        n++;
    assert_int_equal(n, 5);
}

static void bucket_clock_back(void **state)
{
    struct rl_bucket b;

    (void)state;
    rl_init(&b, 10, 1, 50.0);
    assert_true(rl_take(&b, 50.0));
    /* the clock goes back 10 min: nothing accrues, nothing is owed */
    assert_false(rl_take(&b, -550.0));
    assert_false(rl_take(&b, -550.05));
    assert_true(rl_take(&b, -549.9));
}

static void bucket_unlimited(void **state)
{
    struct rl_bucket b;

    (void)state;
    rl_init(&b, 0, 1, 0);
    for (int i = 0; i < 1000; i++)
        assert_true(rl_take(&b, 0));
    assert_true(rl_wait(&b, 0) == 0);
}

static void gcra_batches(void **state)
{
    double tat = 0, wait;

    (void)state;
    /* rate 50/s, burst 10: ten at once from idle, then one per 20 ms */
    assert_int_equal(rl_gcra(&tat, 10.0, 50, 10, 4, &wait), 4);
    assert_int_equal(rl_gcra(&tat, 10.0, 50, 10, 100, &wait), 6);
    assert_int_equal(rl_gcra(&tat, 10.0, 50, 10, 1, &wait), 0);
    assert_true(wait > 0.0199 && wait < 0.0201);
    assert_int_equal(rl_gcra(&tat, 10.0 + wait, 50, 10, 5, &wait), 1);
    /* after 1 s idle: the burst again, never more */
    assert_int_equal(rl_gcra(&tat, 12.0, 50, 10, 100, &wait), 10);
}

/* max_in_window - the most events of t[0..n) (sorted) in any [a, a+len]. */
static int max_in_window(const double *t, int n, double len)
{
    int best = 0, lo = 0;

    for (int hi = 0; hi < n; hi++) {
        while (t[hi] - t[lo] > len)
            lo++;
        if (hi - lo + 1 > best)
            best = hi - lo + 1;
    }
    return best;
}

/* The bound under random demand: a simulated clock in 1 ms steps, demand
 * arriving in random clumps, for a bucket (one instance) and for three
 * instances asking one GCRA state for random batch sizes. */
static void bound_under_random_demand(void **state)
{
    enum { STEPS = 60000, MAX = 200000 };
    double *tb = malloc(MAX * sizeof *tb), *tg = malloc(MAX * sizeof *tg);
    struct rl_bucket b;
    double tat = 0;
    int nb = 0, ng = 0;
    const double rate = 50, burst = 10;

    (void)state;
    assert_non_null(tb);
    assert_non_null(tg);
    srand(4711);
    rl_init(&b, rate, burst, 0);
    for (int step = 0; step < STEPS; step++) {
        double now = step / 1000.0;
        int demand = rand() % 100 < 20 ? rand() % 30 : 0;
        for (int i = 0; i < demand && nb < MAX; i++)
            if (rl_take(&b, now))
                tb[nb++] = now;
        for (int inst = 0; inst < 3; inst++) {
            if (rand() % 100 < 30) {
                int got = rl_gcra(&tat, now, rate, burst, 1 + rand() % 10, NULL);
                for (int i = 0; i < got && ng < MAX; i++)
                    tg[ng++] = now;
            }
        }
    }
    for (double len = 0.1; len <= 5.0; len *= 2) {
        assert_true(max_in_window(tb, nb, len) <= rate * len + burst + 1e-9);
        assert_true(max_in_window(tg, ng, len) <= rate * len + burst + 1e-9);
    }
    assert_true(max_in_window(tg, ng, 1.0) <= 60);
    /* and the limit is actually used: close to the rate over the minute */
    assert_true(ng > 0.9 * rate * 60);
    free(tb);
    free(tg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bucket_burst_then_rate),
        cmocka_unit_test(bucket_clock_back),
        cmocka_unit_test(bucket_unlimited),
        cmocka_unit_test(gcra_batches),
        cmocka_unit_test(bound_under_random_demand),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
