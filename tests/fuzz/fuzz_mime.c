/*
 * fuzz_mime - libFuzzer target for mime_build (the MIME builder).
 *
 *   clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined \
 *       -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -I. tests/fuzz/fuzz_mime.c \
 *       channels/mime.c dispatcher/herr.c dispatcher/alloc.c -lcrypto \
 *       -o build/fuzz_mime
 *   build/fuzz_mime -max_total_time=60 -max_len=65536 CORPUS_DIR
 *
 * The input is split at NUL bytes into subject, from display name, text
 * body and HTML body (missing pieces: absent; a piece of exactly "-" for
 * the HTML: absent too).  The first byte of the subject piece, if it is
 * one of the markers 1-5, puts the rest of the subject into another
 * header field instead (to address, List-Id, unsubscribe URL, Message-ID,
 * to display name) so those get fuzzed too.
 * Oracle beyond "no crash, no sanitizer report" (RELIABILITY.md 3.4):
 * either -1 with HERR_INPUT and a non-empty reason that never quotes the
 * input, or a message with CRLF line ends only, no line over 998
 * octets, exactly one header line each for From, To, Subject, Message-ID,
 * Date and MIME-Version and none for Bcc, and, when multipart, the
 * boundary only on its own delimiter lines.  Any violation aborts.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "channels/mime.h"
#include "dispatcher/alloc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_check - abort when cond is false. */
static void fuzz_check(bool cond)
{
    if (!cond)
        abort();
}

/* fuzz_header_count - header lines starting "name:" in the header section. */
static int fuzz_header_count(const char *msg, size_t hdr_len, const char *name)
{
    size_t n = strlen(name), i;
    int count = 0;

    for (i = 0; i < hdr_len; i++)
        if ((i == 0 || msg[i - 1] == '\n') && i + n < hdr_len &&
            strncasecmp(msg + i, name, n) == 0 && msg[i + n] == ':')
            count++;
    return count;
}

/* fuzz_check_output - the oracle for a successful build. */
static void fuzz_check_output(const char *msg, size_t len)
{
    const char *end, *b, *p;
    char boundary[64];
    size_t i, line = 0, hdr_len, blen;
    int delims = 0, found = 0;

    fuzz_check(strlen(msg) == len);
    fuzz_check(len >= 2 && msg[len - 2] == '\r' && msg[len - 1] == '\n');
    for (i = 0; i < len; i++) {
        if (msg[i] == '\r') {
            fuzz_check(i + 1 < len && msg[i + 1] == '\n');
            fuzz_check(line <= 998);
            line = 0;
            i++;
        } else {
            fuzz_check(msg[i] != '\n');
            line++;
        }
    }
    end = strstr(msg, "\r\n\r\n");
    fuzz_check(end != NULL);
    hdr_len = (size_t)(end - msg) + 2;
    fuzz_check(fuzz_header_count(msg, hdr_len, "From") == 1);
    fuzz_check(fuzz_header_count(msg, hdr_len, "To") == 1);
    fuzz_check(fuzz_header_count(msg, hdr_len, "Subject") == 1);
    fuzz_check(fuzz_header_count(msg, hdr_len, "Message-ID") == 1);
    fuzz_check(fuzz_header_count(msg, hdr_len, "Date") == 1);
    fuzz_check(fuzz_header_count(msg, hdr_len, "MIME-Version") == 1);
    fuzz_check(fuzz_header_count(msg, hdr_len, "Bcc") == 0);
    fuzz_check(fuzz_header_count(msg, hdr_len, "Content-Type") == 1);

    /* The real parameter: a field value may contain "boundary=" too. */
    b = strstr(msg, "\r\nContent-Type: multipart/alternative;\r\n boundary=\"");
    if (b == NULL || b > end)
        return;
    b += strlen("\r\nContent-Type: multipart/alternative;\r\n boundary=\"");
    p = strchr(b, '"');
    fuzz_check(p != NULL && (size_t)(p - b) < sizeof boundary);
    blen = (size_t)(p - b);
    memcpy(boundary, b, blen);
    boundary[blen] = '\0';
    /* Every occurrence is the parameter or "--boundary" at a line start. */
    for (p = strstr(msg, boundary); p != NULL; p = strstr(p + 1, boundary)) {
        found++;
        if (p == b)
            continue;
        fuzz_check(p - msg >= 4 && p[-1] == '-' && p[-2] == '-' &&
                   p[-3] == '\n' && p[-4] == '\r');
        fuzz_check(strncmp(p + blen, "\r\n", 2) == 0 ||
                   strcmp(p + blen, "--\r\n") == 0);
        delims++;
    }
    fuzz_check(delims == 3 && found == 4);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf, *piece[4] = {NULL, NULL, NULL, NULL}, *p, *out = NULL;
    struct mime_message m = {
        .from_addr = "rathaus@musterstadt.de",
        .to_addr = "erika@example.org",
        .message_id = "<fuzz-1@herold.musterstadt.de>",
        .date = 1772000000,
        .list_id = "abfuhr.musterstadt.de",
        .unsub_https = "https://musterstadt.de/u?t=1",
        .unsub_mailto = "mailto:u@musterstadt.de",
        .bulk = true,
    };
    struct herr err = {0};
    size_t len = 0, i, n = 0;
    int rc;

    buf = malloc(size + 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    for (p = buf; n < 4; n++) {
        piece[n] = p;
        p += strlen(p);
        if (p == buf + size)
            break;
        p++;
    }
    m.subject = piece[0];
    m.from_name = piece[1];
    m.text = piece[2] != NULL ? piece[2] : "";
    m.html = (piece[3] != NULL && strcmp(piece[3], "-") != 0) ? piece[3] : NULL;
    switch (m.subject[0]) {
    case '\x01': m.to_addr = m.subject + 1; break;
    case '\x02': m.list_id = m.subject + 1; break;
    case '\x03': m.unsub_https = m.subject + 1; break;
    case '\x04': m.message_id = m.subject + 1; break;
    case '\x05': m.to_name = m.subject + 1; break;
    default: break;
    }
    if (m.subject[0] >= '\x01' && m.subject[0] <= '\x05')
        m.subject = "Fuzz";

    rc = mime_build(&m, &out, &len, &err);
    if (rc != 0) {
        fuzz_check(rc == -1 && out == NULL);
        fuzz_check(err.kind == HERR_INPUT);
        fuzz_check(err.msg[0] != '\0');
        /* Reasons are fixed text: printable ASCII, nothing from the input. */
        for (i = 0; err.msg[i] != '\0'; i++)
            fuzz_check(err.msg[i] >= 0x20 && err.msg[i] < 0x7f);
    } else {
        fuzz_check_output(out, len);
        herold_free(out);
    }
    free(buf);
    return 0;
}
