/*
 * fuzz_job - libFuzzer target for job_parse (job format v1).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_job.c \
 *       dispatcher/job.c dispatcher/herr.c dispatcher/alloc.c -ljansson \
 *       -o build/fuzz_job
 *   build/fuzz_job -max_total_time=60 -max_len=65536 CORPUS_DIR
 *
 * The first input byte picks the lane (none, urgent, normal, bulk); the
 * rest is the job.  Beyond "no crash, no sanitizer report" it checks the
 * oracle of RELIABILITY.md 3.4: the answer is deterministic (a second
 * parse agrees), a rejection is HERR_INPUT or HERR_RESOURCE with a
 * non-empty reason, and the reason is printable ASCII only, so raw input
 * bytes (which could be personal data or control characters) never reach
 * it.  Any violation aborts, which libFuzzer reports as a crash.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dispatcher/job.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const fuzz_lanes[] = {NULL, "urgent", "normal", "bulk"};

/* fuzz_channel_ok - a few configured channels, as heroldd would have. */
static bool fuzz_channel_ok(const char *name, void *arg)
{
    (void)arg;
    return strcmp(name, "webhook") == 0 || strcmp(name, "email") == 0 ||
           strcmp(name, "sms") == 0;
}

/* fuzz_printable - every byte of s is printable ASCII. */
static bool fuzz_printable(const char *s)
{
    for (; *s != '\0'; s++)
        if (*s < 0x20 || *s > 0x7e)
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Generous limits, so the validator rather than the size check runs. */
    static const struct job_limits lim = {
        .max_bytes = 4 * 1024 * 1024,
        .max_recipients = 100000,
        .max_subject_chars = 998,
        .max_text_bytes = 1024 * 1024,
    };
    const double now = 1772000000.0;
    struct herr e1, e2;
    struct job *j1, *j2;
    const char *lane;
    const char *buf;

    if (size < 1)
        return 0;
    lane = fuzz_lanes[data[0] & 3];
    buf = (const char *)data + 1;
    size--;

    j1 = job_parse(buf, size, lane, &lim, fuzz_channel_ok, NULL, now, &e1);
    j2 = job_parse(buf, size, lane, &lim, fuzz_channel_ok, NULL, now, &e2);

    if ((j1 == NULL) != (j2 == NULL))
        abort();
    if (j1 == NULL) {
        if (e1.kind != e2.kind || strcmp(e1.path, e2.path) != 0 ||
            strcmp(e1.msg, e2.msg) != 0)
            abort();
        if (e1.kind != HERR_INPUT && e1.kind != HERR_RESOURCE)
            abort();
        if (e1.msg[0] == '\0' || !fuzz_printable(e1.msg) || !fuzz_printable(e1.path))
            abort();
    } else {
        if (j1->id == NULL || j1->kind == NULL || j1->priority == NULL ||
            j1->lang == NULL ||
            (j1->template == NULL && (j1->subject == NULL || j1->text == NULL)) ||
            (j1->template != NULL && (j1->subject != NULL || j1->text != NULL)) ||
            j1->nchannels < 1 || j1->nchannels > JOB_MAX_CHANNELS || e1.kind != HERR_NONE)
            abort();
        /* every audience form names someone */
        if ((j1->audience == AUD_RECIPIENTS || j1->audience == AUD_CITIZENS) &&
            (j1->nrcpts < 1 || j1->rcpts == NULL))
            abort();
        if (j1->audience == AUD_TOPICS && (j1->ntopics < 1 || j1->ntopics > JOB_MAX_TOPICS))
            abort();
        if (j1->audience != AUD_RECIPIENTS && j1->audience != AUD_CITIZENS && j1->nrcpts != 0)
            abort();
        if (lane != NULL && strcmp(lane, j1->priority) != 0)
            abort();
        for (size_t i = 0; i < j1->nrcpts; i++)
            if (!job_id_ok(j1->rcpts[i].id, 64))
                abort();
    }
    job_free(j1);
    job_free(j2);
    return 0;
}
