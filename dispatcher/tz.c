/*
 * tz - time zones read from compiled TZif files (RFC 8536), and quiet hours.
 *
 * Owns a process-wide list of loaded zones, guarded by one mutex, that is
 * never freed: a struct tz handed out by tz_get stays valid and immutable
 * for the life of the process, so callers may keep and share the pointer
 * across threads.  The list holds at most TZ_CACHE_MAX zones, so a stream
 * of odd names cannot grow it without bound.
 *
 * It never touches TZ, tzset() or localtime(): those are process-global.
 * All calendar arithmetic is done here on plain integers (days since
 * 1970-01-01, proleptic Gregorian).  It reads files only in tz_get; every
 * other function is pure and lock-free.
 *
 * Leap-second zones ("right/...") are refused: their transition times do
 * not count POSIX seconds.
 */
#include "dispatcher/tz.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dispatcher/alloc.h"

#ifndef TZ_CACHE_MAX
#define TZ_CACHE_MAX 256          /* distinct zones kept per process */
#endif
#define TZ_NAME_MAX 64
#define TZ_FILE_MAX (1L << 20)    /* real TZif files are a few KiB */
#define TZ_DEFAULT_DIR "/usr/share/zoneinfo"

#define DAY 86400LL
/* The Gregorian calendar, weekdays included, repeats every 400 years:
 * 146097 days, exactly 20871 weeks. */
#define CYCLE_DAYS 146097LL
#define CYCLE (CYCLE_DAYS * DAY)

/* RFC 8536 3.2: utoff SHOULD lie in [-89999, 93599]; we insist. */
#define UTOFF_MIN (-89999L)
#define UTOFF_MAX 93599L

/* quiet_until does not look at instants further than this from 1970. */
#define QUIET_T_MAX (1000000000LL * 366 * DAY)

/* One date of a POSIX TZ rule: "Jn" (1-365, no Feb 29), "n" (0-365) or
 * "Mm.w.d"; time is seconds after local midnight (may be negative or
 * beyond 24 h, RFC 8536 3.3.1). */
struct tz_date {
    char kind;                 /* 'J', 'n' or 'M' */
    int day;                   /* J and n forms */
    int month, week, wday;     /* M form */
    long time;
};

/* The TZif footer: std offset, and optionally DST with its two dates.
 * Offsets are seconds east of UTC (POSIX writes them west-positive). */
struct tz_rule {
    long std_off, dst_off;
    bool has_dst;
    struct tz_date start;      /* in local standard time */
    struct tz_date end;        /* in local daylight time */
};

struct tz {
    struct tz *next;           /* the cache list */
    char name[TZ_NAME_MAX + 1];
    size_t ntrans;
    int64_t *trans;            /* transition instants, strictly ascending */
    long *trans_off;           /* offset in effect from trans[i] on */
    long first_off;            /* before trans[0]: time type 0 */
    bool has_rule;             /* footer rule for instants after the last */
    struct tz_rule rule;
};

static pthread_mutex_t tz_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tz *tz_list;     /* guarded by tz_lock */
static int tz_count;           /* guarded by tz_lock */

/* ---- calendar arithmetic ------------------------------------------------ */

/* floor_div - a / b rounded towards minus infinity (b > 0). */
static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;

    return (a % b < 0) ? q - 1 : q;
}

/* is_leap - Gregorian leap year. */
static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* month_days - length of month m (1-12) of year y. */
static int month_days(int64_t y, int m)
{
    static const int len[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    return m == 2 && is_leap(y) ? 29 : len[m - 1];
}

/*
 * days_from_civil - days since 1970-01-01 of the date y-m-d.
 *
 * Years are counted from March, so that February, with its leap day, is
 * the last month of a year; then a 400-year era has a fixed length and
 * the day of the year follows from a linear formula of the month.
 */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;
    int mar = m > 2 ? m - 3 : m + 9;        /* 0 = March ... 11 = February */

    if (m <= 2)
        y--;
    era = floor_div(y, 400);
    yoe = y - era * 400;                    /* 0..399 */
    doy = (153 * mar + 2) / 5 + d - 1;      /* 0..365, from March 1 */
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    /* 719468 days lie between 0000-03-01 and 1970-01-01. */
    return era * CYCLE_DAYS + doe - 719468;
}

/* civil_from_days - the inverse of days_from_civil. */
static void civil_from_days(int64_t days, int64_t *y, int *m, int *d)
{
    int64_t z = days + 719468, era, doe, yoe, doy, mp;

    era = floor_div(z, CYCLE_DAYS);
    doe = z - era * CYCLE_DAYS;                                  /* 0..146096 */
    /* Remove the leap days before this day of the era, then divide. */
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* 0..399 */
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* 0..365 */
    mp = (5 * doy + 2) / 153;                                    /* 0 = March */
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* weekday - 0 = Sunday for a day count since 1970-01-01 (a Thursday). */
static int weekday(int64_t days)
{
    return (int)(days + 4 - floor_div(days + 4, 7) * 7);
}

/* ---- the POSIX TZ footer rule -------------------------------------------- */

/* date_day - the day (since 1970-01-01) on which d falls in year y. */
static int64_t date_day(const struct tz_date *d, int64_t y)
{
    int64_t jan1 = days_from_civil(y, 1, 1), first, day;

    switch (d->kind) {
    case 'J':   /* 1-365, February 29 is never counted */
        return jan1 + d->day - 1 + (is_leap(y) && d->day >= 60);
    case 'n':   /* 0-365, February 29 counted */
        return jan1 + d->day;
    default:    /* 'M': the week-th wday of month; week 5 is the last */
        first = days_from_civil(y, d->month, 1);
        day = first + (d->wday - weekday(first) + 7) % 7 + 7 * (d->week - 1);
        while (day >= first + month_days(y, d->month))
            day -= 7;
        return day;
    }
}

/* rule_events - the two DST changes of year y as instants: [0] the start
 * (given in standard time), [1] the end (given in daylight time). */
static void rule_events(const struct tz_rule *r, int64_t y, int64_t ev[2])
{
    ev[0] = date_day(&r->start, y) * DAY + r->start.time - r->std_off;
    ev[1] = date_day(&r->end, y) * DAY + r->end.time - r->dst_off;
}

/* cycle_reduce - t moved by whole 400-year cycles into [1970, 2370);
 * *shift (if shift) receives what was subtracted.  The rule gives the
 * same answer there, and year arithmetic cannot overflow. */
static int64_t cycle_reduce(int64_t t, int64_t *shift)
{
    int64_t k = floor_div(t, CYCLE);

    if (shift)
        *shift = k * CYCLE;
    return t - k * CYCLE;
}

/* year_of - the UTC calendar year of an instant. */
static int64_t year_of(int64_t t)
{
    int64_t y;
    int m, d;

    civil_from_days(floor_div(t, DAY), &y, &m, &d);
    return y;
}

/*
 * rule_offset - the offset the rule gives at t.
 *
 * The state at t is set by the latest change at or before t.  Changes of
 * the two previous years are included because a rule time may reach a
 * week past the year's end.  When a start and an end coincide (DST all
 * year, RFC 8536 3.3.1: "J365/25" ending as "0/0" begins), the start wins.
 */
static long rule_offset(const struct tz_rule *r, int64_t t)
{
    int64_t x, y, ev[2], best = INT64_MIN;
    bool dst = false;
    int k;

    if (!r->has_dst)
        return r->std_off;
    x = cycle_reduce(t, NULL);
    y = year_of(x);
    for (int64_t yy = y - 2; yy <= y + 1; yy++) {
        rule_events(r, yy, ev);
        for (k = 0; k < 2; k++) {
            if (ev[k] > x)
                continue;
            if (ev[k] > best || (ev[k] == best && k == 0)) {
                best = ev[k];
                dst = (k == 0);
            }
        }
    }
    return dst ? r->dst_off : r->std_off;
}

/* rule_next - the first rule change after t into *out; false if none
 * (no DST, or t so late that the answer does not fit). */
static bool rule_next(const struct tz_rule *r, int64_t t, int64_t *out)
{
    int64_t shift, x, y, ev[2], best = INT64_MAX;
    int k;

    /* Changes are at most two years apart; keep t + 2 years in range. */
    if (!r->has_dst || t > INT64_MAX - 3 * 366 * DAY)
        return false;
    x = cycle_reduce(t, &shift);
    y = year_of(x);
    for (int64_t yy = y - 1; yy <= y + 2; yy++) {
        rule_events(r, yy, ev);
        for (k = 0; k < 2; k++)
            if (ev[k] > x && ev[k] < best)
                best = ev[k];
    }
    *out = best + shift;
    return true;
}

/* ---- parsing the footer -------------------------------------------------- */

/* parse_num - decimal digits at *p into *v, within [lo, hi]; false if none
 * or out of range.  At most 3 digits: every field of a TZ string is short. */
static bool parse_num(const char **p, int lo, int hi, int *v)
{
    int n = 0, digits = 0;

    while (**p >= '0' && **p <= '9' && digits < 3) {
        n = n * 10 + (**p - '0');
        (*p)++;
        digits++;
    }
    if (digits == 0 || n < lo || n > hi)
        return false;
    *v = n;
    return true;
}

/* parse_hms - "[+-]hh[:mm[:ss]]" with hh up to max_h, into seconds. */
static bool parse_hms(const char **p, int max_h, long *secs)
{
    int sign = 1, h, m = 0, s = 0;

    if (**p == '+' || **p == '-')
        sign = *(*p)++ == '-' ? -1 : 1;
    if (!parse_num(p, 0, max_h, &h))
        return false;
    if (**p == ':') {
        (*p)++;
        if (!parse_num(p, 0, 59, &m))
            return false;
        if (**p == ':') {
            (*p)++;
            if (!parse_num(p, 0, 59, &s))
                return false;
        }
    }
    *secs = sign * (h * 3600L + m * 60L + s);
    return true;
}

/* parse_name - a zone abbreviation: 3+ letters, or "<...>" of 3+ of
 * [A-Za-z0-9+-]. */
static bool parse_name(const char **p)
{
    const char *s = *p;
    size_t n = 0;

    if (*s == '<') {
        for (s++; (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
                  (*s >= '0' && *s <= '9') || *s == '+' || *s == '-'; s++)
            n++;
        if (*s != '>' || n < 3)
            return false;
        *p = s + 1;
        return true;
    }
    for (; (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z'); s++)
        n++;
    if (n < 3)
        return false;
    *p = s;
    return true;
}

/* parse_date - ",date[/time]" of a rule; the default time is 02:00. */
static bool parse_date(const char **p, struct tz_date *d)
{
    if (**p != ',')
        return false;
    (*p)++;
    if (**p == 'J') {
        (*p)++;
        d->kind = 'J';
        if (!parse_num(p, 1, 365, &d->day))
            return false;
    } else if (**p == 'M') {
        (*p)++;
        d->kind = 'M';
        if (!parse_num(p, 1, 12, &d->month) || *(*p)++ != '.' ||
            !parse_num(p, 1, 5, &d->week) || *(*p)++ != '.' ||
            !parse_num(p, 0, 6, &d->wday))
            return false;
    } else {
        d->kind = 'n';
        if (!parse_num(p, 0, 365, &d->day))
            return false;
    }
    d->time = 2 * 3600;
    if (**p == '/') {
        (*p)++;
        /* RFC 8536 3.3.1 extends POSIX: -167 to 167 hours. */
        if (!parse_hms(p, 167, &d->time))
            return false;
    }
    return true;
}

/*
 * rule_parse - the TZ string of a TZif footer ("CET-1CEST,M3.5.0,M10.5.0/3",
 * "IST-5:30", "<+0545>-5:45") into r; false if it is not one.
 *
 * A DST name without a rule (POSIX leaves the dates to the implementation)
 * is refused: zic never writes one, so such a file is not trusted.
 */
static bool rule_parse(const char *s, struct tz_rule *r)
{
    const char *p = s;
    long off;

    memset(r, 0, sizeof *r);
    if (!parse_name(&p) || !parse_hms(&p, 24, &off))
        return false;
    r->std_off = -off;
    if (*p == '\0')
        return true;
    if (!parse_name(&p))
        return false;
    r->has_dst = true;
    r->dst_off = r->std_off + 3600;
    if (*p != ',') {
        if (!parse_hms(&p, 24, &off))
            return false;
        r->dst_off = -off;
    }
    return parse_date(&p, &r->start) && parse_date(&p, &r->end) && *p == '\0';
}

/* ---- reading TZif -------------------------------------------------------- */

/* be32 - a big-endian 32-bit field. */
static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* sbe32 - a big-endian signed 32-bit field (two's complement). */
static long sbe32(const unsigned char *p)
{
    uint32_t v = be32(p);

    return v <= INT32_MAX ? (long)v : -(long)(~v) - 1;
}

/* be64 - a big-endian signed 64-bit field. */
static int64_t be64(const unsigned char *p)
{
    uint64_t v = (uint64_t)be32(p) << 32 | be32(p + 4);

    /* Two's complement without an implementation-defined conversion. */
    return v <= INT64_MAX ? (int64_t)v : -(int64_t)(~v) - 1;
}

/* The counts of a TZif header (RFC 8536 3.1). */
struct tzif_counts {
    uint32_t isut, isstd, leap, time, type, chars;
};

/* tzif_header - the header at p (len bytes left) into c and its version
 * byte into *version; false if it is not one. */
static bool tzif_header(const unsigned char *p, size_t len,
                        struct tzif_counts *c, int *version)
{
    if (len < 44 || memcmp(p, "TZif", 4) != 0)
        return false;
    *version = p[4];
    c->isut = be32(p + 20);
    c->isstd = be32(p + 24);
    c->leap = be32(p + 28);
    c->time = be32(p + 32);
    c->type = be32(p + 36);
    c->chars = be32(p + 40);
    return true;
}

/* tzif_block_len - bytes of the data block after a header, for 4- or
 * 8-byte times. Counts are 32-bit, so 64-bit arithmetic cannot overflow. */
static uint64_t tzif_block_len(const struct tzif_counts *c, unsigned tsize)
{
    return (uint64_t)c->time * (tsize + 1) + (uint64_t)c->type * 6 + c->chars +
           (uint64_t)c->leap * (tsize + 4) + c->isstd + c->isut;
}

/* tzif_data - the transitions and types of the block at p into z.
 * Returns 0, or -1 with a reason in *why (malformed) or errno ENOMEM. */
static int tzif_data(const unsigned char *p, const struct tzif_counts *c,
                     unsigned tsize, struct tz *z, const char **why)
{
    const unsigned char *idx = p + (size_t)c->time * tsize;
    const unsigned char *types = idx + c->time;
    size_t i;

    if (c->type == 0 || c->type > 256 || c->chars == 0 ||
        (c->isstd != 0 && c->isstd != c->type) ||
        (c->isut != 0 && c->isut != c->type)) {
        *why = "inconsistent header counts";
        return -1;
    }
    if (c->leap != 0) {
        *why = "leap-second zones are not supported";
        return -1;
    }
    for (i = 0; i < c->type; i++) {
        const unsigned char *tt = types + 6 * i;
        long off = sbe32(tt);

        if (off < UTOFF_MIN || off > UTOFF_MAX || tt[4] > 1 || tt[5] >= c->chars) {
            *why = "bad local time type";
            return -1;
        }
    }
    z->first_off = sbe32(types);
    z->ntrans = c->time;
    if (z->ntrans == 0)
        return 0;
    z->trans = herold_malloc(z->ntrans * sizeof *z->trans);
    z->trans_off = herold_malloc(z->ntrans * sizeof *z->trans_off);
    if (z->trans == NULL || z->trans_off == NULL)
        return -1;
    for (i = 0; i < z->ntrans; i++) {
        z->trans[i] = tsize == 8 ? be64(p + 8 * i) : sbe32(p + 4 * i);
        if (idx[i] >= c->type || (i > 0 && z->trans[i] <= z->trans[i - 1])) {
            *why = "bad transition";
            return -1;
        }
        z->trans_off[i] = sbe32(types + 6 * idx[i]);
    }
    return 0;
}

/* tzif_parse - the TZif image buf (len bytes) into z: the v1 block of a
 * version-1 file, else the 64-bit block and the footer.  Returns 0, or -1
 * with *why set (malformed) or with errno ENOMEM and *why NULL. */
static int tzif_parse(const unsigned char *buf, size_t len, struct tz *z,
                      const char **why)
{
    struct tzif_counts c;
    int version;
    uint64_t block;
    size_t pos = 44, end;
    char footer[128];

    *why = "not a TZif file";
    if (!tzif_header(buf, len, &c, &version) ||
        (version != 0 && (version < '2' || version > '9')))
        return -1;
    *why = "truncated";
    block = tzif_block_len(&c, 4);
    if (block > len - pos)
        return -1;
    if (version == 0) {
        *why = NULL;
        return tzif_data(buf + pos, &c, 4, z, why);
    }
    /* Version 2 and later: skip the 32-bit block, use the 64-bit one. */
    pos += (size_t)block;
    *why = "no 64-bit header";
    if (!tzif_header(buf + pos, len - pos, &c, &version))
        return -1;
    pos += 44;
    *why = "truncated";
    block = tzif_block_len(&c, 8);
    if (block > len - pos)
        return -1;
    *why = NULL;
    if (tzif_data(buf + pos, &c, 8, z, why) != 0)
        return -1;
    pos += (size_t)block;
    /* The footer: "\n" TZ-string "\n"; an empty string means no rule. */
    *why = "bad footer";
    if (pos >= len || buf[pos] != '\n')
        return -1;
    pos++;
    for (end = pos; end < len && buf[end] != '\n'; end++)
        ;
    if (end == len || end - pos >= sizeof footer)
        return -1;
    memcpy(footer, buf + pos, end - pos);
    footer[end - pos] = '\0';
    if (footer[0] != '\0') {
        if (!rule_parse(footer, &z->rule))
            return -1;
        z->has_rule = true;
    }
    *why = NULL;
    return 0;
}

/* read_file - the whole regular file at path into a new buffer (free with
 * herold_free) of *len bytes; NULL with errno set.  Not a regular file:
 * ENOENT; larger than TZ_FILE_MAX: EFBIG. */
static unsigned char *read_file(const char *path, size_t *len)
{
    struct stat st;
    unsigned char *buf = NULL;
    size_t got = 0;
    ssize_t n;
    int fd, saved;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) != 0)
        goto fail;
    if (!S_ISREG(st.st_mode)) {
        errno = ENOENT;
        goto fail;
    }
    if (st.st_size > TZ_FILE_MAX) {
        errno = EFBIG;
        goto fail;
    }
    buf = herold_malloc((size_t)st.st_size);
    if (buf == NULL)
        goto fail;
    /* Read what fstat promised; a file that shrinks meanwhile is short. */
    while (got < (size_t)st.st_size) {
        n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto fail;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    *len = got;
    return buf;
fail:
    saved = errno;
    herold_free(buf);
    close(fd);
    errno = saved;
    return NULL;
}

/* name_ok - a zone name we are willing to turn into a path: 1-64 of
 * [A-Za-z0-9_+/-], no leading, trailing or double '/', no "..". */
static bool name_ok(const char *name)
{
    size_t n;

    if (name == NULL)
        return false;
    n = strnlen(name, TZ_NAME_MAX + 1);
    if (n == 0 || n > TZ_NAME_MAX || name[0] == '/' || name[n - 1] == '/' ||
        strstr(name, "..") != NULL || strstr(name, "//") != NULL)
        return false;
    for (const char *p = name; *p != '\0'; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
              (*p >= '0' && *p <= '9') || *p == '_' || *p == '+' ||
              *p == '-' || *p == '/'))
            return false;
    return true;
}

/* tz_free - a zone that never made it into the list. */
static void tz_free(struct tz *z)
{
    if (z == NULL)
        return;
    herold_free(z->trans);
    herold_free(z->trans_off);
    herold_free(z);
}

/* tz_load - read zone name from $TZDIR or TZ_DEFAULT_DIR into a new
 * struct tz (free with tz_free); NULL with err. */
static struct tz *tz_load(const char *name, struct herr *err)
{
    const char *dir = getenv("TZDIR");
    char path[PATH_MAX];
    unsigned char *buf = NULL;
    size_t len = 0;
    const char *why = NULL;
    struct tz *z;

    if (dir == NULL || dir[0] == '\0')
        dir = TZ_DEFAULT_DIR;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) {
        herr_set(err, HERR_INPUT, NULL, "%s: unknown time zone", name);
        return NULL;
    }
    z = herold_calloc(1, sizeof *z);
    if (z == NULL)
        goto nomem;
    buf = read_file(path, &len);
    if (buf == NULL) {
        if (errno == ENOMEM)
            goto nomem;
        if (errno == ENOENT || errno == ENOTDIR || errno == EISDIR ||
            errno == ENAMETOOLONG || errno == ELOOP)
            herr_set(err, HERR_INPUT, NULL, "%s: unknown time zone", name);
        else
            herr_sys(err, name);
        goto fail;
    }
    if (tzif_parse(buf, len, z, &why) != 0) {
        if (why == NULL)
            goto nomem;
        herr_set(err, HERR_INPUT, NULL, "%s: unusable zone file (%s)", name, why);
        goto fail;
    }
    memcpy(z->name, name, strlen(name) + 1);
    herold_free(buf);
    return z;
nomem:
    herr_set(err, HERR_RESOURCE, NULL, "%s: out of memory loading time zone", name);
fail:
    herold_free(buf);
    tz_free(z);
    return NULL;
}

/* ---- public functions ---------------------------------------------------- */

const struct tz *tz_get(const char *name, struct herr *err)
{
    struct tz *z;

    if (!name_ok(name)) {
        herr_set(err, HERR_INPUT, NULL, "invalid time zone name");
        return NULL;
    }
    /* Loading under the lock is deliberate: it happens once per zone, and
     * two threads asking for a new zone at once then load it once. */
    pthread_mutex_lock(&tz_lock);
    for (z = tz_list; z != NULL; z = z->next)
        if (strcmp(z->name, name) == 0)
            goto out;
    if (tz_count >= TZ_CACHE_MAX) {
        herr_set(err, HERR_RESOURCE, NULL,
                 "%s: too many time zones in use (at most %d)", name, TZ_CACHE_MAX);
        goto out;
    }
    z = tz_load(name, err);
    if (z != NULL) {
        z->next = tz_list;
        tz_list = z;
        tz_count++;
    }
out:
    pthread_mutex_unlock(&tz_lock);
    return z;
}

long tz_offset(const struct tz *z, time_t t)
{
    int64_t x = (int64_t)t;
    size_t lo, hi;

    if (z->ntrans == 0)
        return z->has_rule ? rule_offset(&z->rule, x) : z->first_off;
    if (x < z->trans[0])
        return z->first_off;
    if (x > z->trans[z->ntrans - 1] && z->has_rule)
        return rule_offset(&z->rule, x);
    /* The last transition at or before x: trans[lo] <= x < trans[hi]. */
    lo = 0;
    hi = z->ntrans;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;

        if (z->trans[mid] <= x)
            lo = mid;
        else
            hi = mid;
    }
    return z->trans_off[lo];
}

/* tz_next_change - the first transition of z after t into *out; false if
 * there is none. */
static bool tz_next_change(const struct tz *z, int64_t t, int64_t *out)
{
    size_t lo = 0, hi;

    if (z->ntrans > 0 && t < z->trans[z->ntrans - 1]) {
        /* The first transition after t: trans[hi] > t >= trans[hi - 1]. */
        hi = z->ntrans - 1;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;

            if (z->trans[mid] > t)
                hi = mid;
            else
                lo = mid + 1;
        }
        *out = z->trans[hi];
        return true;
    }
    return z->has_rule && rule_next(&z->rule, t, out);
}

/* local_seconds - t + offset as local seconds since 1970-01-01 "local",
 * clamped so that it cannot overflow. */
static int64_t local_seconds(const struct tz *z, time_t t)
{
    int64_t x = (int64_t)t;
    long off = tz_offset(z, t);

    if (off > 0 && x > INT64_MAX - off)
        return INT64_MAX;
    if (off < 0 && x < INT64_MIN - off)
        return INT64_MIN;
    return x + off;
}

/* put_digits - n (>= 0) as exactly width decimal digits at out. */
static void put_digits(char *out, int64_t n, int width)
{
    while (width-- > 0) {
        out[width] = (char)('0' + n % 10);
        n /= 10;
    }
}

void tz_local_day(const struct tz *z, time_t t, char out[11])
{
    int64_t y;
    int m, d;

    civil_from_days(floor_div(local_seconds(z, t), DAY), &y, &m, &d);
    /* Four digits cannot say other years; clamp to the ends of 0000-9999. */
    if (y < 0) {
        y = 0;
        m = d = 1;
    } else if (y > 9999) {
        y = 9999;
        m = 12;
        d = 31;
    }
    put_digits(out, y, 4);
    out[4] = '-';
    put_digits(out + 5, m, 2);
    out[7] = '-';
    put_digits(out + 8, d, 2);
    out[10] = '\0';
}

/* parse_hhmm - exactly "HH:MM" (two digits each, 00:00-23:59) at s into
 * minutes after midnight; -1 if not. */
static int parse_hhmm(const char *s)
{
    int h, m;

    if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9' || s[2] != ':' ||
        s[3] < '0' || s[3] > '9' || s[4] < '0' || s[4] > '9')
        return -1;
    h = (s[0] - '0') * 10 + (s[1] - '0');
    m = (s[3] - '0') * 10 + (s[4] - '0');
    return h > 23 || m > 59 ? -1 : h * 60 + m;
}

int quiet_parse(const char *s, struct quiet *q)
{
    int start, end;

    /* Check the length first: parse_hhmm reads five bytes at a time. */
    if (s == NULL || strnlen(s, 12) != 11 || s[5] != '-')
        return -1;
    start = parse_hhmm(s);
    end = parse_hhmm(s + 6);
    if (start < 0 || end < 0 || start == end)
        return -1;
    q->start = start;
    q->end = end;
    return 0;
}

time_t quiet_until(const struct quiet *q, const struct tz *z, time_t t)
{
    int64_t local, day, minute, end, seg, next = 0, x;
    int i;

    /* Beyond a billion years either way, day arithmetic could overflow. */
    if ((int64_t)t > QUIET_T_MAX || (int64_t)t < -QUIET_T_MAX)
        return 0;
    local = local_seconds(z, t);
    day = floor_div(local, DAY);
    minute = (local - day * DAY) / 60;
    if (q->start < q->end) {
        if (minute < q->start || minute >= q->end)
            return 0;
        end = day * DAY + q->end * 60LL;
    } else if (minute >= q->start) {
        end = (day + 1) * DAY + q->end * 60LL;      /* ends tomorrow */
    } else if (minute < q->end) {
        end = day * DAY + q->end * 60LL;            /* began yesterday */
    } else {
        return 0;
    }
    /*
     * The first instant after t whose local time is at least `end`.  Walk
     * the stretches of constant offset from t on: within one, local time
     * runs with real time, so it reaches `end` at end - offset, unless the
     * stretch is over first.  A stretch that begins already past `end`
     * begins right after a gap (spring forward): its first instant is the
     * answer.  In a repeated hour (fall back) the first pass after t
     * counts.
     */
    seg = (int64_t)t;
    for (i = 0; i < 16; i++) {
        x = end - tz_offset(z, (time_t)seg);
        if (x < seg)
            x = seg;
        if (!tz_next_change(z, seg, &next) || x < next)
            return (time_t)x;
        seg = next;
    }
    return (time_t)seg;   /* 16 changes within a day: no real zone */
}
