/*
 * test_tz - dispatcher/tz from tables: offsets and local days in real
 * zones (both 2026 Berlin transitions to the second, the footer rule in
 * 2090, both hemispheres, half-hour offsets, before the first
 * transition); zone names that must never become paths; hand-made TZif
 * files in a private $TZDIR for version 1, the Jn, n and M rule forms,
 * DST all year, negative and >24 h rule times, and malformed files;
 * allocation failures; quiet hours parsing and their end across midnight
 * and DST changes (gap and repeated hour); and, last, the cache bound.
 *
 * Needs Debian's tzdata in /usr/share/zoneinfo.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dispatcher/alloc.h"
#include "dispatcher/tz.h"

#define H 3600L

/* utc - the instant of a UTC calendar time. */
static time_t utc(int y, int mo, int d, int h, int mi, int s)
{
    struct tm tm = {0};

    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    return timegm(&tm);
}

/* Every distinct zone this program has loaded, to check the cache bound. */
static const struct tz *seen[512];
static int nseen;

/* get - tz_get, remembering each new zone. */
static const struct tz *get(const char *name, struct herr *err)
{
    const struct tz *z = tz_get(name, err);
    int i;

    for (i = 0; z != NULL && i < nseen; i++)
        if (seen[i] == z)
            return z;
    if (z != NULL) {
        assert_true(nseen < 512);
        seen[nseen++] = z;
    }
    return z;
}

/* must_get - a zone that has to load. */
static const struct tz *must_get(const char *name)
{
    struct herr err;
    const struct tz *z;

    herr_clear(&err);
    z = get(name, &err);
    if (z == NULL)
        fail_msg("%s: %s", name, err.msg);
    return z;
}

/* ---- offsets and local days in the system's zones ---------------------- */

struct offset_case {
    const char *label;
    const char *zone;
    int y, mo, d, h, mi, s;    /* UTC */
    long want_off;
    const char *want_day;
};

static const struct offset_case offset_cases[] = {
    {"Berlin winter", "Europe/Berlin", 2026, 1, 15, 12, 0, 0, 1 * H, "2026-01-15"},
    {"Berlin summer", "Europe/Berlin", 2026, 7, 1, 12, 0, 0, 2 * H, "2026-07-01"},
    {"Berlin last CET second", "Europe/Berlin", 2026, 3, 29, 0, 59, 59, 1 * H, "2026-03-29"},
    {"Berlin first CEST second", "Europe/Berlin", 2026, 3, 29, 1, 0, 0, 2 * H, "2026-03-29"},
    {"Berlin last CEST second", "Europe/Berlin", 2026, 10, 25, 0, 59, 59, 2 * H, "2026-10-25"},
    {"Berlin first CET second", "Europe/Berlin", 2026, 10, 25, 1, 0, 0, 1 * H, "2026-10-25"},
    {"Berlin local day ahead of UTC", "Europe/Berlin", 2026, 3, 28, 23, 30, 0, 1 * H, "2026-03-29"},
    {"Berlin New Year", "Europe/Berlin", 2025, 12, 31, 23, 0, 0, 1 * H, "2026-01-01"},
    /* Debian's files list transitions to 2037; later the footer rule. */
    {"Berlin 2090 winter (rule)", "Europe/Berlin", 2090, 1, 10, 12, 0, 0, 1 * H, "2090-01-10"},
    {"Berlin 2090 summer (rule)", "Europe/Berlin", 2090, 7, 10, 12, 0, 0, 2 * H, "2090-07-10"},
    {"Berlin 2090 before spring (rule)", "Europe/Berlin", 2090, 3, 26, 0, 59, 59, 1 * H, "2090-03-26"},
    {"Berlin 2090 spring (rule)", "Europe/Berlin", 2090, 3, 26, 1, 0, 0, 2 * H, "2090-03-26"},
    {"Berlin 2090 before autumn (rule)", "Europe/Berlin", 2090, 10, 29, 0, 59, 59, 2 * H, "2090-10-29"},
    {"Berlin 2090 autumn (rule)", "Europe/Berlin", 2090, 10, 29, 1, 0, 0, 1 * H, "2090-10-29"},
    {"Berlin 2400 leap day (rule)", "Europe/Berlin", 2400, 2, 29, 23, 30, 0, 1 * H, "2400-03-01"},
    /* Before the first transition: local mean time, +0:53:28. */
    {"Berlin 1850 LMT", "Europe/Berlin", 1850, 6, 1, 12, 0, 0, 3208, "1850-06-01"},
    {"New York winter", "America/New_York", 2026, 1, 15, 12, 0, 0, -5 * H, "2026-01-15"},
    {"New York summer", "America/New_York", 2026, 7, 1, 12, 0, 0, -4 * H, "2026-07-01"},
    {"New York before spring", "America/New_York", 2026, 3, 8, 6, 59, 59, -5 * H, "2026-03-08"},
    {"New York spring", "America/New_York", 2026, 3, 8, 7, 0, 0, -4 * H, "2026-03-08"},
    {"New York autumn", "America/New_York", 2026, 11, 1, 6, 0, 0, -5 * H, "2026-11-01"},
    {"New York local day behind UTC", "America/New_York", 2026, 3, 29, 2, 0, 0, -4 * H, "2026-03-28"},
    {"New York 2090 summer (rule)", "America/New_York", 2090, 7, 1, 12, 0, 0, -4 * H, "2090-07-01"},
    {"Sydney January is summer", "Australia/Sydney", 2026, 1, 15, 12, 0, 0, 11 * H, "2026-01-15"},
    {"Sydney July is winter", "Australia/Sydney", 2026, 7, 1, 12, 0, 0, 10 * H, "2026-07-01"},
    {"Sydney before April end", "Australia/Sydney", 2026, 4, 4, 15, 59, 59, 11 * H, "2026-04-05"},
    {"Sydney April end", "Australia/Sydney", 2026, 4, 4, 16, 0, 0, 10 * H, "2026-04-05"},
    {"Sydney October start", "Australia/Sydney", 2026, 10, 3, 16, 0, 0, 11 * H, "2026-10-04"},
    {"Sydney 2090 January (rule)", "Australia/Sydney", 2090, 1, 15, 12, 0, 0, 11 * H, "2090-01-15"},
    {"Sydney 2090 July (rule)", "Australia/Sydney", 2090, 7, 1, 12, 0, 0, 10 * H, "2090-07-01"},
    {"Kolkata +5:30", "Asia/Kolkata", 2026, 1, 15, 20, 0, 0, 19800, "2026-01-16"},
    {"Kolkata +5:30 in 2090", "Asia/Kolkata", 2090, 7, 1, 12, 0, 0, 19800, "2090-07-01"},
    /* M3.4.4/26: 26 h after the fourth Thursday of March. */
    {"Jerusalem 2090, hour 26 (rule)", "Asia/Jerusalem", 2090, 3, 23, 23, 59, 59, 2 * H, "2090-03-24"},
    {"Jerusalem 2090 DST (rule)", "Asia/Jerusalem", 2090, 3, 24, 0, 0, 0, 3 * H, "2090-03-24"},
    /* M3.5.0/-1: an hour before the last Sunday of March begins. */
    {"Nuuk 2090, hour -1 (rule)", "America/Nuuk", 2090, 3, 26, 0, 59, 59, -2 * H, "2090-03-25"},
    {"Nuuk 2090 DST (rule)", "America/Nuuk", 2090, 3, 26, 1, 0, 0, -1 * H, "2090-03-26"},
    {"UTC", "UTC", 2026, 7, 1, 23, 59, 59, 0, "2026-07-01"},
    {"Etc/UTC", "Etc/UTC", 2026, 7, 1, 0, 0, 0, 0, "2026-07-01"},
    {"UTC, the epoch", "UTC", 1970, 1, 1, 0, 0, 0, 0, "1970-01-01"},
    {"UTC, before the epoch", "UTC", 1969, 12, 31, 23, 59, 59, 0, "1969-12-31"},
};

static void test_offset_table(void **state)
{
    size_t k;

    (void)state;
    for (k = 0; k < sizeof offset_cases / sizeof offset_cases[0]; k++) {
        const struct offset_case *c = &offset_cases[k];
        const struct tz *z = must_get(c->zone);
        time_t t = utc(c->y, c->mo, c->d, c->h, c->mi, c->s);
        char day[11];
        long off = tz_offset(z, t);

        tz_local_day(z, t, day);
        if (off != c->want_off || strcmp(day, c->want_day) != 0)
            fail_msg("%s: got %ld %s, want %ld %s", c->label, off, day,
                     c->want_off, c->want_day);
    }
}

/* tz_get caches: the same name gives the same zone. */
static void test_cached(void **state)
{
    const struct tz *a = must_get("Europe/Berlin");

    (void)state;
    assert_ptr_equal(a, must_get("Europe/Berlin"));
    assert_ptr_not_equal(a, must_get("America/New_York"));
}

/* Extreme instants must neither crash nor overflow (UBSan watches). */
static void test_extremes(void **state)
{
    const struct tz *z = must_get("Europe/Berlin");
    struct quiet q = {22 * 60, 7 * 60};
    char day[11];

    (void)state;
    tz_local_day(z, (time_t)INT64_MAX, day);
    assert_string_equal(day, "9999-12-31");
    tz_local_day(z, (time_t)INT64_MIN, day);
    assert_string_equal(day, "0000-01-01");
    assert_int_equal(tz_offset(z, (time_t)INT64_MAX) % 3600, 0);
    assert_int_equal(tz_offset(z, (time_t)INT64_MIN), 3208);
    assert_int_equal(quiet_until(&q, z, (time_t)INT64_MAX), 0);
    assert_int_equal(quiet_until(&q, z, (time_t)INT64_MIN), 0);
}

/* ---- names and unknown zones ---------------------------------------------- */

struct name_case {
    const char *label;
    const char *name;
    const char *want_msg;
};

#define BADNAME "invalid time zone name"
#define A16 "aaaaaaaaaaaaaaaa"
#define NAME64 "B" A16 A16 A16 "aaaaaaaaaaaaaaa"

static const struct name_case name_cases[] = {
    {"parent directory", "../etc/passwd", BADNAME},
    {"parent inside", "Europe/../../etc/passwd", BADNAME},
    {"absolute path", "/etc/passwd", BADNAME},
    {"absolute zone path", "/usr/share/zoneinfo/Europe/Berlin", BADNAME},
    {"empty", "", BADNAME},
    {"double slash", "Europe//Berlin", BADNAME},
    {"trailing slash", "Europe/Berlin/", BADNAME},
    {"dot", "zone1970.tab", BADNAME},
    {"space", "Europe/Berlin ", BADNAME},
    {"newline", "Europe/Berlin\n", BADNAME},
    {"non-ASCII", "Europe/Z\xc3\xbcrich", BADNAME},
    {"65 characters", NAME64 "a", BADNAME},
    {"unknown zone", "Mars/Olympus_Mons", "Mars/Olympus_Mons: unknown time zone"},
    {"64 characters, unknown", NAME64, NAME64 ": unknown time zone"},
    {"a directory", "Europe", "Europe: unknown time zone"},
    {"below a file", "UTC/x", "UTC/x: unknown time zone"},
    {"lower case", "europe/berlin", "europe/berlin: unknown time zone"},
};

static void test_name_table(void **state)
{
    size_t k;

    (void)state;
    for (k = 0; k < sizeof name_cases / sizeof name_cases[0]; k++) {
        const struct name_case *c = &name_cases[k];
        struct herr err;
        const struct tz *z;

        herr_clear(&err);
        z = get(c->name, &err);
        if (z != NULL || err.kind != HERR_INPUT || strcmp(err.msg, c->want_msg) != 0)
            fail_msg("%s: got %p kind %d \"%s\", want \"%s\"", c->label,
                     (const void *)z, err.kind, err.msg, c->want_msg);
    }
    assert_null(tz_get(NULL, NULL));
}

/* ---- hand-made TZif files --------------------------------------------------- */

static char tzdir[64];
static char made[64][128];   /* files and directories to remove, in order */
static int nmade;

/* put_be - n as a big-endian field of size bytes at p. */
static unsigned char *put_be(unsigned char *p, uint64_t n, int size)
{
    for (int i = size - 1; i >= 0; i--) {
        p[i] = (unsigned char)(n & 0xff);
        n >>= 8;
    }
    return p + size;
}

/* A zone to write: transitions (each with a type index), types, footer. */
struct tzif_spec {
    int version;               /* 0 (version 1), '2' or '3' */
    int ntrans;
    int64_t trans[4];
    int idx[4];
    int ntypes;
    long off[3];
    int isdst[3];
    int leap;                  /* write that many leap-second records */
    const char *footer;        /* NULL: none (version 1) */
};

/* tzif_block - one header and data block, 4- or 8-byte times. */
static unsigned char *tzif_block(unsigned char *p, const struct tzif_spec *s, int tsize)
{
    int i;

    memcpy(p, "TZif", 4);
    p[4] = (unsigned char)s->version;
    memset(p + 5, 0, 15);
    p += 20;
    p = put_be(p, 0, 4);                          /* isutcnt */
    p = put_be(p, 0, 4);                          /* isstdcnt */
    p = put_be(p, (uint64_t)s->leap, 4);          /* leapcnt */
    p = put_be(p, (uint64_t)s->ntrans, 4);        /* timecnt */
    p = put_be(p, (uint64_t)s->ntypes, 4);        /* typecnt */
    p = put_be(p, 4, 4);                          /* charcnt: "XXX\0" */
    for (i = 0; i < s->ntrans; i++)
        p = put_be(p, (uint64_t)s->trans[i], tsize);
    for (i = 0; i < s->ntrans; i++)
        *p++ = (unsigned char)s->idx[i];
    for (i = 0; i < s->ntypes; i++) {
        p = put_be(p, (uint64_t)(int64_t)s->off[i], 4);
        *p++ = (unsigned char)s->isdst[i];
        *p++ = 0;
    }
    memcpy(p, "XXX", 4);
    p += 4;
    for (i = 0; i < s->leap; i++) {
        p = put_be(p, 78796800, tsize);
        p = put_be(p, 1, 4);
    }
    return p;
}

/* make_path - tzdir/name, remembering it for cleanup. */
static const char *make_path(const char *name)
{
    assert_true(nmade < 64);
    snprintf(made[nmade], sizeof made[nmade], "%s/%s", tzdir, name);
    return made[nmade++];
}

/* write_raw - len bytes as zone file name (below a subdirectory "Test"). */
static void write_raw(const char *name, const void *buf, size_t len)
{
    FILE *f = fopen(make_path(name), "wb");

    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* write_zone - the TZif file of s as zone name; cut: drop that many bytes. */
static void write_zone(const char *name, const struct tzif_spec *s, size_t cut)
{
    unsigned char buf[1024], *p = tzif_block(buf, s, 4);

    if (s->version != 0) {
        p = tzif_block(p, s, 8);
        p += sprintf((char *)p, "\n%s\n", s->footer);
    }
    write_raw(name, buf, (size_t)(p - buf) - cut);
}

/* The year 2024 is a leap year, 2026 is not. */
static const struct tzif_spec spec_v1 = {
    0, 2, {1000000, 2000000}, {1, 0}, 2, {0, 3600}, {0, 1}, 0, NULL};
static const struct tzif_spec spec_julian = {
    '2', 0, {0}, {0}, 1, {0}, {0}, 0, "AAA0BBB,J60/0,J300/0"};
static const struct tzif_spec spec_zero_based = {
    '2', 0, {0}, {0}, 1, {0}, {0}, 0, "AAA0BBB,59/0,300/0"};
static const struct tzif_spec spec_all_year = {
    '3', 0, {0}, {0}, 1, {-4 * H}, {1}, 0, "EST5EDT,0/0,J365/25"};
static const struct tzif_spec spec_std_only = {
    '2', 0, {0}, {0}, 1, {20700}, {0}, 0, "<+0545>-5:45"};
static const struct tzif_spec spec_southern = {
    '2', 0, {0}, {0}, 1, {10 * H}, {0}, 0, "<+10>-10<+1030>-10:30,M10.1.0,M4.1.0/3"};
/* Transitions up to 2000, the rule afterwards. */
static const struct tzif_spec spec_table_then_rule = {
    '2', 2, {0, 946684800}, {1, 0}, 2, {0, 7200}, {0, 1}, 0, "AAA0BBB,M3.5.0,M10.5.0/3"};

struct file_case {
    const char *label;
    const char *name;
    int y, mo, d, h, mi, s;    /* UTC */
    long want_off;
};

static const struct file_case file_cases[] = {
    {"v1 before the first transition", "Test/V1", 1970, 1, 12, 13, 46, 39, 0},
    {"v1 at the first", "Test/V1", 1970, 1, 12, 13, 46, 40, H},
    {"v1 at the second", "Test/V1", 1970, 1, 24, 3, 33, 20, 0},
    {"v1 long after", "Test/V1", 2090, 1, 1, 0, 0, 0, 0},
    {"J60 is March 1 in a leap year", "Test/Julian", 2024, 2, 29, 23, 59, 59, 0},
    {"J60 starts on March 1", "Test/Julian", 2024, 3, 1, 0, 0, 0, H},
    {"J60 in a common year", "Test/Julian", 2026, 3, 1, 0, 0, 0, H},
    {"J300 is October 27", "Test/Julian", 2024, 10, 26, 22, 59, 59, H},
    {"J300 ends in daylight time", "Test/Julian", 2024, 10, 26, 23, 0, 0, 0},
    {"n59 is February 29 in a leap year", "Test/ZeroBased", 2024, 2, 29, 0, 0, 0, H},
    {"n59 is March 1 in a common year", "Test/ZeroBased", 2026, 2, 28, 23, 59, 59, 0},
    {"n59 in a common year", "Test/ZeroBased", 2026, 3, 1, 0, 0, 0, H},
    {"n300 is October 27 in a leap year", "Test/ZeroBased", 2024, 10, 26, 23, 0, 0, 0},
    {"all-year DST, New Year", "Test/AllYear", 2026, 1, 1, 5, 0, 0, -4 * H},
    {"all-year DST, July", "Test/AllYear", 2026, 7, 1, 0, 0, 0, -4 * H},
    {"all-year DST, year end", "Test/AllYear", 2026, 12, 31, 23, 59, 59, -4 * H},
    {"std only", "Test/StdOnly", 2026, 7, 1, 0, 0, 0, 20700},
    {"southern, January", "Test/Southern", 2026, 1, 15, 0, 0, 0, 10 * H + 1800},
    {"southern, July", "Test/Southern", 2026, 7, 1, 0, 0, 0, 10 * H},
    {"southern, 2:59:59 on April 5", "Test/Southern", 2026, 4, 4, 16, 29, 59, 10 * H + 1800},
    {"southern, 3:00 on April 5", "Test/Southern", 2026, 4, 4, 16, 30, 0, 10 * H},
    {"table, before 2000", "Test/TableRule", 1999, 12, 31, 23, 59, 59, 2 * H},
    {"table, at its last transition", "Test/TableRule", 2000, 1, 1, 0, 0, 0, 0},
    {"rule after the table, summer", "Test/TableRule", 2000, 7, 1, 0, 0, 0, H},
    {"rule after the table, winter", "Test/TableRule", 2000, 12, 1, 0, 0, 0, 0},
};

struct bad_file_case {
    const char *label;
    const char *name;
    const char *want_msg;
};

static const struct bad_file_case bad_file_cases[] = {
    {"text", "Test/Text", "Test/Text: unusable zone file (not a TZif file)"},
    {"empty", "Test/Empty", "Test/Empty: unusable zone file (not a TZif file)"},
    {"version 1 byte", "Test/Version1",
     "Test/Version1: unusable zone file (not a TZif file)"},
    {"truncated v1 block", "Test/Short1", "Test/Short1: unusable zone file (truncated)"},
    {"truncated v2 block", "Test/Short2", "Test/Short2: unusable zone file (truncated)"},
    {"footer without newline", "Test/NoEnd", "Test/NoEnd: unusable zone file (bad footer)"},
    {"DST without a rule", "Test/NoRule", "Test/NoRule: unusable zone file (bad footer)"},
    {"garbage after the rule", "Test/Garbage", "Test/Garbage: unusable zone file (bad footer)"},
    {"month 13", "Test/Month13", "Test/Month13: unusable zone file (bad footer)"},
    {"leap seconds", "Test/Leap",
     "Test/Leap: unusable zone file (leap-second zones are not supported)"},
    {"descending transitions", "Test/Unsorted",
     "Test/Unsorted: unusable zone file (bad transition)"},
    {"type index out of range", "Test/BadIndex",
     "Test/BadIndex: unusable zone file (bad transition)"},
    {"absurd offset", "Test/BadOffset",
     "Test/BadOffset: unusable zone file (bad local time type)"},
    {"no types", "Test/NoTypes",
     "Test/NoTypes: unusable zone file (inconsistent header counts)"},
};

/* setup_files - a private $TZDIR with the zones of both tables above. */
static int setup_files(void **state)
{
    struct tzif_spec s;

    (void)state;
    snprintf(tzdir, sizeof tzdir, "/tmp/herold-test-tz-XXXXXX");
    if (mkdtemp(tzdir) == NULL)
        return -1;
    if (mkdir(make_path("Test"), 0700) != 0)
        return -1;
    write_zone("Test/V1", &spec_v1, 0);
    write_zone("Test/Julian", &spec_julian, 0);
    write_zone("Test/ZeroBased", &spec_zero_based, 0);
    write_zone("Test/AllYear", &spec_all_year, 0);
    write_zone("Test/StdOnly", &spec_std_only, 0);
    write_zone("Test/Southern", &spec_southern, 0);
    write_zone("Test/TableRule", &spec_table_then_rule, 0);
    write_zone("Test/Alloc", &spec_table_then_rule, 0);

    write_raw("Test/Text", "# not a zone\n", 13);
    write_raw("Test/Empty", "", 0);
    s = spec_julian;
    s.version = '1';
    write_zone("Test/Version1", &s, 0);
    write_zone("Test/Short1", &spec_v1, 1);
    write_zone("Test/Short2", &spec_table_then_rule, 40);
    write_zone("Test/NoEnd", &spec_julian, 1);
    s = spec_julian;
    s.footer = "CET-1CEST";
    write_zone("Test/NoRule", &s, 0);
    s.footer = "CET-1CEST,M3.5.0,M10.5.0/3x";
    write_zone("Test/Garbage", &s, 0);
    s.footer = "CET-1CEST,M13.5.0,M10.5.0/3";
    write_zone("Test/Month13", &s, 0);
    s = spec_table_then_rule;
    s.leap = 1;
    write_zone("Test/Leap", &s, 0);
    s = spec_table_then_rule;
    s.trans[1] = -1;
    write_zone("Test/Unsorted", &s, 0);
    s = spec_table_then_rule;
    s.idx[1] = 2;
    write_zone("Test/BadIndex", &s, 0);
    s = spec_table_then_rule;
    s.off[1] = 26 * H;
    write_zone("Test/BadOffset", &s, 0);
    s = spec_julian;
    s.ntypes = 0;
    write_zone("Test/NoTypes", &s, 0);
    return 0;
}

/* teardown_files - remove what setup_files made, newest first. */
static int teardown_files(void **state)
{
    (void)state;
    while (nmade > 0)
        remove(made[--nmade]);
    rmdir(tzdir);
    unsetenv("TZDIR");
    return 0;
}

static void test_file_table(void **state)
{
    size_t k;

    (void)state;
    assert_int_equal(setenv("TZDIR", tzdir, 1), 0);
    for (k = 0; k < sizeof file_cases / sizeof file_cases[0]; k++) {
        const struct file_case *c = &file_cases[k];
        const struct tz *z = must_get(c->name);
        long off = tz_offset(z, utc(c->y, c->mo, c->d, c->h, c->mi, c->s));

        if (off != c->want_off)
            fail_msg("%s: got %ld, want %ld", c->label, off, c->want_off);
    }
    unsetenv("TZDIR");
}

static void test_bad_file_table(void **state)
{
    size_t k;

    (void)state;
    assert_int_equal(setenv("TZDIR", tzdir, 1), 0);
    for (k = 0; k < sizeof bad_file_cases / sizeof bad_file_cases[0]; k++) {
        const struct bad_file_case *c = &bad_file_cases[k];
        struct herr err;
        const struct tz *z;

        herr_clear(&err);
        z = get(c->name, &err);
        if (z != NULL || err.kind != HERR_INPUT || strcmp(err.msg, c->want_msg) != 0)
            fail_msg("%s: got %p kind %d \"%s\", want \"%s\"", c->label,
                     (const void *)z, err.kind, err.msg, c->want_msg);
    }
    unsetenv("TZDIR");
}

/* Every allocation of a load fails in turn: HERR_RESOURCE, nothing cached,
 * and the next attempt loads the zone. */
static void test_alloc_failure(void **state)
{
    struct herr err;
    const struct tz *z = NULL;
    long n;

    (void)state;
    assert_int_equal(setenv("TZDIR", tzdir, 1), 0);
    for (n = 0; n < 10 && z == NULL; n++) {
        herr_clear(&err);
        herold_alloc_fail_after = n;
        z = get("Test/Alloc", &err);
        herold_alloc_fail_after = -1;
        if (z == NULL && (err.kind != HERR_RESOURCE ||
                          strcmp(err.msg, "Test/Alloc: out of memory loading time zone") != 0))
            fail_msg("fail after %ld: kind %d \"%s\"", n, err.kind, err.msg);
    }
    assert_non_null(z);
    assert_true(n >= 4);   /* the zone, the file, two transition arrays */
    assert_int_equal(tz_offset(z, utc(2000, 7, 1, 0, 0, 0)), H);
    unsetenv("TZDIR");
}

/* ---- quiet hours ---------------------------------------------------------- */

struct parse_case {
    const char *label;
    const char *s;
    int want_rc, want_start, want_end;
};

static const struct parse_case parse_cases[] = {
    {"night", "22:00-07:00", 0, 1320, 420},
    {"midday", "12:00-14:00", 0, 720, 840},
    {"all but a minute", "00:00-23:59", 0, 0, 1439},
    {"the last minute", "23:59-00:00", 0, 1439, 0},
    {"hour 25", "25:00-07:00", -1, 0, 0},
    {"hour 24", "24:00-07:00", -1, 0, 0},
    {"minute 60", "22:60-07:00", -1, 0, 0},
    {"end hour 24", "22:00-24:00", -1, 0, 0},
    {"start only", "22:00", -1, 0, 0},
    {"start and dash", "22:00-", -1, 0, 0},
    {"start equals end", "22:00-22:00", -1, 0, 0},
    {"single-digit hours", "7:00-8:00", -1, 0, 0},
    {"single-digit end hour", "22:00-7:00", -1, 0, 0},
    {"single-digit minute", "22:0-07:00", -1, 0, 0},
    {"leading space", " 22:00-07:00", -1, 0, 0},
    {"trailing space", "22:00-07:00 ", -1, 0, 0},
    {"spaces around the dash", "22:00 - 07:00", -1, 0, 0},
    {"en dash", "22:00\xe2\x80\x93" "07:00", -1, 0, 0},
    {"dots", "22.00-07.00", -1, 0, 0},
    {"no colons", "2200-0700", -1, 0, 0},
    {"seconds", "22:00:00-07:00:00", -1, 0, 0},
    {"sign", "+2:00-07:00", -1, 0, 0},
    {"trailing text", "22:00-07:00x", -1, 0, 0},
    {"empty", "", -1, 0, 0},
};

static void test_parse_table(void **state)
{
    size_t k;

    (void)state;
    for (k = 0; k < sizeof parse_cases / sizeof parse_cases[0]; k++) {
        const struct parse_case *c = &parse_cases[k];
        struct quiet q = {-7, -7};
        int rc = quiet_parse(c->s, &q);

        if (rc != c->want_rc)
            fail_msg("%s: got %d, want %d", c->label, rc, c->want_rc);
        if (rc == 0 && (q.start != c->want_start || q.end != c->want_end))
            fail_msg("%s: got %d-%d, want %d-%d", c->label, q.start, q.end,
                     c->want_start, c->want_end);
        if (rc != 0 && (q.start != -7 || q.end != -7))
            fail_msg("%s: q written on failure", c->label);
    }
    assert_int_equal(quiet_parse(NULL, NULL), -1);
}

struct until_case {
    const char *label;
    const char *zone;
    const char *quiet;
    int y, mo, d, h, mi, s;         /* t, UTC */
    int wy, wmo, wd, wh, wmi, ws;   /* the wanted end, UTC; wy 0: not quiet */
};

static const struct until_case until_cases[] = {
    /* Europe/Berlin in January: CET, UTC+1. */
    {"midday, outside", "Europe/Berlin", "22:00-07:00", 2026, 1, 15, 11, 0, 0, 0, 0, 0, 0, 0, 0},
    {"21:59:59, outside", "Europe/Berlin", "22:00-07:00", 2026, 1, 15, 20, 59, 59, 0, 0, 0, 0, 0, 0},
    {"22:00, inside", "Europe/Berlin", "22:00-07:00", 2026, 1, 15, 21, 0, 0, 2026, 1, 16, 6, 0, 0},
    {"23:30, before midnight", "Europe/Berlin", "22:00-07:00", 2026, 1, 15, 22, 30, 0, 2026, 1, 16, 6, 0, 0},
    {"03:00, after midnight", "Europe/Berlin", "22:00-07:00", 2026, 1, 16, 2, 0, 0, 2026, 1, 16, 6, 0, 0},
    {"06:59:59, last second", "Europe/Berlin", "22:00-07:00", 2026, 1, 16, 5, 59, 59, 2026, 1, 16, 6, 0, 0},
    {"07:00, end is outside", "Europe/Berlin", "22:00-07:00", 2026, 1, 16, 6, 0, 0, 0, 0, 0, 0, 0, 0},
    {"New Year's Eve", "Europe/Berlin", "22:00-07:00", 2025, 12, 31, 22, 30, 0, 2026, 1, 1, 6, 0, 0},
    /* Non-wrapping, in summer: CEST, UTC+2. */
    {"12:30 in 12-14", "Europe/Berlin", "12:00-14:00", 2026, 7, 1, 10, 30, 0, 2026, 7, 1, 12, 0, 0},
    {"11:59 before 12-14", "Europe/Berlin", "12:00-14:00", 2026, 7, 1, 9, 59, 0, 0, 0, 0, 0, 0, 0},
    {"14:00 after 12-14", "Europe/Berlin", "12:00-14:00", 2026, 7, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0},
    {"23:00 outside 12-14", "Europe/Berlin", "12:00-14:00", 2026, 7, 1, 21, 0, 0, 0, 0, 0, 0, 0, 0},
    /* Spring forward, 2026-03-29 02:00 CET -> 03:00 CEST at 01:00Z. */
    {"spring: 23:30 CET", "Europe/Berlin", "22:00-07:00", 2026, 3, 28, 22, 30, 0, 2026, 3, 29, 5, 0, 0},
    {"spring: 01:30 CET", "Europe/Berlin", "22:00-07:00", 2026, 3, 29, 0, 30, 0, 2026, 3, 29, 5, 0, 0},
    {"spring: 03:30 CEST", "Europe/Berlin", "22:00-07:00", 2026, 3, 29, 1, 30, 0, 2026, 3, 29, 5, 0, 0},
    {"spring: end in the gap", "Europe/Berlin", "22:00-02:30", 2026, 3, 28, 22, 0, 0, 2026, 3, 29, 1, 0, 0},
    {"spring: end at the gap", "Europe/Berlin", "22:00-02:00", 2026, 3, 28, 22, 0, 0, 2026, 3, 29, 1, 0, 0},
    {"spring: end after the gap", "Europe/Berlin", "22:00-03:00", 2026, 3, 28, 22, 0, 0, 2026, 3, 29, 1, 0, 0},
    {"spring: 01:00-02:30 at 01:59:59", "Europe/Berlin", "01:00-02:30", 2026, 3, 29, 0, 59, 59, 2026, 3, 29, 1, 0, 0},
    /* Fall back, 2026-10-25 03:00 CEST -> 02:00 CET at 01:00Z. */
    {"autumn: 23:30 CEST", "Europe/Berlin", "22:00-07:00", 2026, 10, 24, 21, 30, 0, 2026, 10, 25, 6, 0, 0},
    {"autumn: 02:30 CEST", "Europe/Berlin", "22:00-07:00", 2026, 10, 25, 0, 30, 0, 2026, 10, 25, 6, 0, 0},
    {"autumn: 02:30 CET", "Europe/Berlin", "22:00-07:00", 2026, 10, 25, 1, 30, 0, 2026, 10, 25, 6, 0, 0},
    {"autumn: end in the repeated hour", "Europe/Berlin", "22:00-02:30", 2026, 10, 24, 21, 0, 0, 2026, 10, 25, 0, 30, 0},
    {"autumn: 02:40 CEST, past the end", "Europe/Berlin", "22:00-02:30", 2026, 10, 25, 0, 40, 0, 0, 0, 0, 0, 0, 0},
    {"autumn: 02:10 CET, second pass", "Europe/Berlin", "22:00-02:30", 2026, 10, 25, 1, 10, 0, 2026, 10, 25, 1, 30, 0},
    /* The footer rule: 2090-03-26 and 2090-10-29 are the change days. */
    {"2090 spring (rule)", "Europe/Berlin", "22:00-07:00", 2090, 3, 25, 22, 30, 0, 2090, 3, 26, 5, 0, 0},
    {"2090 autumn (rule)", "Europe/Berlin", "22:00-07:00", 2090, 10, 28, 21, 30, 0, 2090, 10, 29, 6, 0, 0},
    {"2090 spring gap (rule)", "Europe/Berlin", "22:00-02:30", 2090, 3, 25, 22, 30, 0, 2090, 3, 26, 1, 0, 0},
    /* Elsewhere. */
    {"New York spring", "America/New_York", "22:00-07:00", 2026, 3, 8, 4, 0, 0, 2026, 3, 8, 11, 0, 0},
    {"New York autumn", "America/New_York", "22:00-07:00", 2026, 11, 1, 3, 0, 0, 2026, 11, 1, 12, 0, 0},
    {"Sydney April, DST ends", "Australia/Sydney", "22:00-07:00", 2026, 4, 4, 12, 0, 0, 2026, 4, 4, 21, 0, 0},
    {"Sydney October, DST starts", "Australia/Sydney", "22:00-07:00", 2026, 10, 3, 12, 0, 0, 2026, 10, 3, 20, 0, 0},
    {"Kolkata", "Asia/Kolkata", "22:00-07:00", 2026, 1, 15, 17, 30, 0, 2026, 1, 16, 1, 30, 0},
    {"UTC, the last minute", "UTC", "23:59-00:00", 2026, 12, 31, 23, 59, 30, 2027, 1, 1, 0, 0, 0},
    {"UTC, all but a minute", "UTC", "00:00-23:59", 2026, 6, 1, 0, 0, 0, 2026, 6, 1, 23, 59, 0},
};

static void test_until_table(void **state)
{
    size_t k;

    (void)state;
    for (k = 0; k < sizeof until_cases / sizeof until_cases[0]; k++) {
        const struct until_case *c = &until_cases[k];
        const struct tz *z = must_get(c->zone);
        struct quiet q;
        time_t got, want;

        if (quiet_parse(c->quiet, &q) != 0)
            fail_msg("%s: quiet_parse", c->label);
        want = c->wy == 0 ? 0 : utc(c->wy, c->wmo, c->wd, c->wh, c->wmi, c->ws);
        got = quiet_until(&q, z, utc(c->y, c->mo, c->d, c->h, c->mi, c->s));
        if (got != want)
            fail_msg("%s: got %lld, want %lld (off by %lld s)", c->label,
                     (long long)got, (long long)want, (long long)(got - want));
    }
}

/* ---- threads ------------------------------------------------------------ */

#define THREADS 8

/* get_paris - a thread asking for a zone nobody has loaded yet. */
static void *get_paris(void *arg)
{
    struct herr err;

    *(const struct tz **)arg = tz_get("Europe/Paris", &err);
    return NULL;
}

/* Threads racing to load one zone all get the same, single copy. */
static void test_threads(void **state)
{
    pthread_t th[THREADS];
    const struct tz *got[THREADS];
    int i;

    (void)state;
    for (i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, get_paris, &got[i]), 0);
    for (i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_ptr_equal(must_get("Europe/Paris"), got[0]);
    for (i = 1; i < THREADS; i++)
        assert_ptr_equal(got[i], got[0]);
    assert_int_equal(tz_offset(got[0], utc(2026, 7, 1, 0, 0, 0)), 2 * H);
}

/* ---- the cache bound (last: it fills the cache) --------------------------- */

/* At most 256 distinct zones: the next new one is refused with
 * HERR_RESOURCE, while cached ones keep working. */
static void test_cache_bound(void **state)
{
    const struct tz *berlin = must_get("Europe/Berlin"), *first = NULL, *z;
    struct tzif_spec s = spec_std_only;
    char name[96];
    struct herr err;
    int i, before = nseen;

    (void)state;
    assert_int_equal(setenv("TZDIR", tzdir, 1), 0);
    assert_int_equal(mkdir(make_path("Many"), 0700), 0);
    /* 300 files would need 300 cleanup slots: reuse one file by links. */
    write_zone("Many/Z000", &s, 0);
    for (i = 1; i <= 300 - before; i++) {
        snprintf(name, sizeof name, "%s/Many/Z%03d", tzdir, i);
        assert_int_equal(link(made[nmade - 1], name), 0);
    }
    for (i = 0; i <= 300 - before; i++) {
        snprintf(name, sizeof name, "Many/Z%03d", i);
        herr_clear(&err);
        z = get(name, &err);
        if (z == NULL)
            break;
        if (first == NULL)
            first = z;
    }
    /* Clean up the links now; the loaded zones live on in memory. */
    for (int j = 1; j <= 300 - before; j++) {
        snprintf(name, sizeof name, "%s/Many/Z%03d", tzdir, j);
        unlink(name);
    }
    assert_int_equal(nseen, 256);
    assert_int_equal(err.kind, HERR_RESOURCE);
    snprintf(name, sizeof name, "Many/Z%03d: too many", i);
    assert_memory_equal(err.msg, name, strlen(name));
    assert_ptr_equal(must_get("Europe/Berlin"), berlin);
    assert_ptr_equal(must_get("Many/Z000"), first);
    assert_int_equal(tz_offset(first, 0), 20700);
    unsetenv("TZDIR");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_offset_table),
        cmocka_unit_test(test_cached),
        cmocka_unit_test(test_extremes),
        cmocka_unit_test(test_name_table),
        cmocka_unit_test(test_file_table),
        cmocka_unit_test(test_bad_file_table),
        cmocka_unit_test(test_alloc_failure),
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_until_table),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_cache_bound),
    };

    unsetenv("TZDIR");
    return cmocka_run_group_tests(tests, setup_files, teardown_files);
}
