/*
 * mime - one complete RFC 5322 / MIME message as bytes, ready for SMTP DATA.
 *
 * mime_build() turns a struct mime_message (addresses, subject, a text
 * body and an optional HTML body, the message id, the date and the
 * bulk-sender headers) into one buffer that:
 *
 *   - uses CRLF line ends everywhere and never contains a bare CR or LF
 *     (body line ends LF, CR and CRLF are normalised before encoding, so
 *     SMTP smuggling through "<LF>.<LF>" cannot start here);
 *   - has no line longer than 998 octets, and header lines folded at 78
 *     where the grammar allows it (an address or URL is never split);
 *   - encodes the subject and display names as RFC 2047 encoded-words
 *     (UTF-8; Q, or B when that is much shorter; each word at most 75
 *     characters, never splitting a UTF-8 character) when they are not
 *     plain ASCII words;
 *   - encodes bodies as quoted-printable (or base64 when QP is much larger),
 *     with text/plain and text/html in multipart/alternative when both
 *     exist, under a random boundary checked not to occur in any part.
 *
 * The result is NOT dot-stuffed: libESMTP dot-stuffs on the wire, and
 * stuffing twice would corrupt every line that starts with a dot.  A
 * transport that writes DATA itself (or a test that imitates one) calls
 * mime_dot_stuff() on the result.
 *
 * Header injection is refused, never repaired: a CR, LF, NEL, U+2028 or
 * U+2029 (or any other control character but TAB) in a header-bound field
 * makes mime_build() return -1 with HERR_INPUT and the field's name as the
 * error path ("subject: must not contain line breaks").  Fields are C
 * strings, so a NUL byte ends a field before this module sees it (the job
 * parser rejects "\u0000"); the overlong form C0 80 is invalid UTF-8 and
 * refused as such.  Error messages never quote field contents.
 *
 * Address grammar (mime_address_ok): local-part as an RFC 5321 dot-atom,
 * or a quoted-string without backslashes, spaces, '<', '>' or ','; domain
 * of at least two LDH labels (each 1-63 octets, no leading or trailing
 * hyphen, top label not all digits), IDNs only in ACE ("xn--") form;
 * local-part at most 64, domain at most 255, whole address at most 254
 * octets.  "a@b" (no dot) and "user@localhost" are refused: herold sends
 * only to the public Internet.  Address literals ("a@[192.0.2.1]") and
 * SMTPUTF8 local parts are refused too.
 */
#ifndef HEROLD_MIME_H
#define HEROLD_MIME_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "dispatcher/herr.h"

/* Input of mime_build().  All strings are borrowed for the duration of the
 * call and are UTF-8.  NULL (or "") marks an optional field as absent. */
struct mime_message {
    const char *from_addr;     /* required; mime_address_ok() */
    const char *from_name;     /* optional display name */
    const char *to_addr;       /* required; mime_address_ok() */
    const char *to_name;       /* optional display name */
    const char *reply_to;      /* optional address */
    const char *subject;       /* required; "" allowed */
    const char *text;          /* required text/plain body */
    const char *html;          /* optional text/html body */
    const char *message_id;    /* required "<left@right>", see mime_message_id() */
    time_t date;               /* the Date header */
    bool date_local;           /* local offset instead of +0000 */
    const char *list_id;       /* optional list identifier, "abfuhr.musterstadt.de" */
    const char *list_name;     /* optional List-Id description (needs list_id) */
    const char *unsub_https;   /* optional one-click https URL (RFC 8058) */
    const char *unsub_mailto;  /* optional "mailto:..." URL */
    bool bulk;                 /* Precedence: bulk, Auto-Submitted: auto-generated */
};

/* The longest accepted Message-ID, angle brackets included. */
#define MIME_MSGID_MAX 250

/* The longest accepted List-Unsubscribe URL. */
#define MIME_URL_MAX 900

/*
 * mime_build - build the complete message described by m.
 *
 * On success returns 0 and stores in *out a new NUL-terminated buffer of
 * *out_len bytes (the NUL not counted); the caller frees it with
 * herold_free().  The buffer is ready for SMTP DATA through libESMTP,
 * which dot-stuffs it; it is not dot-stuffed here.  On failure returns -1,
 * leaves *out NULL and fills err: HERR_INPUT with the field name as path
 * for a bad field (header injection, bad address, invalid UTF-8, over-long
 * value), HERR_RESOURCE when memory ran out (defer the delivery), and
 * HERR_TRANSIENT when no random boundary could be drawn.
 */
int mime_build(const struct mime_message *m, char **out, size_t *out_len,
               struct herr *err);

/*
 * mime_address_ok - 1 if addr is a mailbox address herold will send to
 * (the grammar in the comment at the top of this file), else 0.  Anything
 * accepted is safe in an SMTP "RCPT TO:<...>" line and in a header: it has
 * no space, comma, angle bracket, control character or non-ASCII byte.
 * The e-mail channel's validate_address uses it.
 */
int mime_address_ok(const char *addr);

/*
 * mime_message_id - write "<key@domain>" for the idempotency key idem_key
 * into out (size bytes).  The same key and domain always give the same id,
 * so a resend after a connection lost past the final dot keeps its
 * Message-ID and the receiver can discard the duplicate.  Bytes of the key
 * outside RFC 5322 atext (and '.', '=') are written as "=XX" (upper-case
 * hex), which keeps the mapping one-to-one.  Returns 0, or -1 when the key
 * is empty, the domain is not a valid domain (see mime_address_ok), or the
 * id would not fit in out or exceed MIME_MSGID_MAX.
 */
int mime_message_id(char *out, size_t size, const char *idem_key,
                    const char *domain);

/*
 * mime_dot_stuff - SMTP transparency (RFC 5321 4.5.2): a copy of the len
 * bytes at in with a '.' added before every line that starts with '.'.
 * The input must use CRLF line ends only (as mime_build() output does); a
 * bare CR or LF makes it return -1 with HERR_INPUT.  The terminating
 * "CRLF . CRLF" is not appended.  On success returns 0 and a new buffer
 * in *out (NUL-terminated, *out_len bytes), freed with herold_free();
 * HERR_RESOURCE when memory ran out.
 */
int mime_dot_stuff(const char *in, size_t len, char **out, size_t *out_len,
                   struct herr *err);

/*
 * Random source for MIME boundaries: fill n bytes at buf, return 0 or -1.
 * The default wraps OpenSSL's RAND_bytes.  mime_set_random() replaces it
 * (NULL restores the default); it exists for tests, which use it to force
 * a boundary collision, and is not thread-safe: call it before any build.
 */
typedef int mime_random_fn(unsigned char *buf, size_t n);

void mime_set_random(mime_random_fn *fn);

#endif
