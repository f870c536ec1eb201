/*
 * contact - validation of a citizen's contact points (docs/citizens.md).
 *
 * Pure functions, no I/O.  Shared by the CLI (herold citizen add, import),
 * which refuses bad input with the reason, and heroldd, which records a
 * unit `suppressed` with the reason when a stored contact point is not
 * usable for its channel.  Reasons never quote the value.
 */
#ifndef HEROLD_CONTACT_H
#define HEROLD_CONTACT_H

#include <stdbool.h>
#include <stddef.h>

#define CONTACT_EMAIL_MAX 254
#define CONTACT_TOKEN_MAX 4096

enum phone_kind {
    PHONE_MOBILE,       /* can receive SMS */
    PHONE_LANDLINE,     /* German fixed line: no SMS */
    PHONE_UNKNOWN,      /* outside Germany: assumed able to receive SMS */
};

/* contact_email_ok - an address herold may send to: ASCII (IDN domains in
 * their xn-- A-label form), local@domain, at most 254 characters, local
 * part at most 64, a domain of at least two labels with an alphabetic TLD,
 * no quoted local parts, no control characters or spaces.  On false,
 * *why (if why) is set to a static reason. */
bool contact_email_ok(const char *s, const char **why);

/* contact_phone_ok - an E.164 number: '+', country code, 8-15 digits in
 * total, no spaces.  German (+49) premium-rate, service and shared-cost
 * ranges (900, 137, 180, 118xx, 116) are refused, as is a trunk 0 after
 * +49; a German number has 6-13 digits after +49.  *kind (if kind) tells
 * whether SMS can reach it, set only when true is returned: +49 15x,
 * 16x, 17x are PHONE_MOBILE, other German numbers (freephone 800
 * included) PHONE_LANDLINE, other countries PHONE_UNKNOWN.  On false,
 * *why (if why) is set to a static reason. */
bool contact_phone_ok(const char *s, enum phone_kind *kind, const char **why);

/* contact_push_ok - a push token for platform "fcm", "apns" or "webpush"
 * (APNs: 64 hex digits; FCM: 20-4096 of [A-Za-z0-9_:-]; Web Push: an https
 * endpoint URL of at most 4096 characters, "https://" in lower case, a
 * host name, an optional port, a path; no user info, fragment, spaces or
 * non-ASCII).  On false, *why (if why) is set to a static reason. */
bool contact_push_ok(const char *platform, const char *token, const char **why);

#endif
