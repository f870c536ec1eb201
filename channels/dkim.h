/*
 * dkim - DKIM signing of outgoing e-mail (RFC 6376), through libopendkim.
 *
 * A signer holds one domain (d=), one selector (s=) and one RSA private
 * key, and turns a finished message into the "DKIM-Signature:" header to
 * put in front of it: rsa-sha256, relaxed/relaxed canonicalization, the
 * whole body (no l= tag), and h= naming those of the following header
 * fields that the message carries:
 *
 *   From Sender Reply-To To Cc Subject Date Message-ID In-Reply-To
 *   References MIME-Version Content-Type Content-Transfer-Encoding
 *   List-Id List-Unsubscribe List-Unsubscribe-Post Precedence
 *   Auto-Submitted
 *
 * From, Reply-To, To, Subject, List-Unsubscribe and List-Unsubscribe-Post
 * are also "oversigned" (RFC 6376 section 5.4.2): h= names each once more
 * than it occurs, even when it occurs zero times, so a relay that adds
 * one (a second Subject, a Reply-To, a List-Unsubscribe) breaks the
 * signature instead of changing what the citizen sees.  Fields absent
 * from the message and not in this list never appear in h=.
 *
 * Threads.  One signer may be shared by any number of threads, which may
 * call dkim_signer_sign() at the same time without a lock: the signer is
 * read-only after dkim_signer_new() returns, and every call uses its own
 * libopendkim DKIM handle.  libopendkim documents both halves ("a DKIM_LIB
 * handle ... can be used by several threads at once"; DKIM handles share
 * no memory, so "two different handles may be concurrently accessed in
 * separate threads"), and test_dkim signs from several threads at once
 * and verifies every result.  dkim_signer_new() and dkim_signer_free()
 * are not concurrent with anything.
 *
 * Secrets and content.  The key is copied, cleared before it is freed,
 * and never put into an error.  Errors name the stage and libopendkim's
 * status, never header values or body text.
 */
#ifndef HEROLD_DKIM_H
#define HEROLD_DKIM_H

#include <stddef.h>

#include "dispatcher/herr.h"

/* The JSON path used in errors from dkim_signer_new(). */
#define DKIM_CONF "channels.email.dkim"

struct dkim_signer;

/* dkim_signer_new - check domain and selector, load the PEM private key
 * and prove it signs, so that a bad key fails here, at start, and never
 * on the first delivery.
 *
 * `domain` is the signing domain d=: two or more DNS labels of letters,
 * digits and inner hyphens, at most 253 characters, no trailing dot
 * (an internationalized domain must be given as its xn-- A-label).
 * `selector` is one such label (herold does not use dotted selectors).
 * `key_pem` is the private key as a PEM string ("-----BEGIN ... PRIVATE
 * KEY-----"), usually resolved with config_secret(); RSA of at least 1024
 * bits (2048 recommended), unencrypted.  OpenSSL parses it once and runs
 * its RSA consistency check (libopendkim would sign with a damaged key
 * and only receivers would notice); then libopendkim loads it and signs
 * a small built-in probe message with it.
 *
 * Returns a new signer (free with dkim_signer_free()) or NULL with err
 * filled: HERR_INPUT with path DKIM_CONF ".domain", ".selector" or ".key"
 * for bad configuration, HERR_RESOURCE when memory runs out.  Copies all
 * three strings; the caller keeps (and should clear) its own key. */
struct dkim_signer *dkim_signer_new(const char *domain, const char *selector,
                                    const char *key_pem, struct herr *err);

/* dkim_signer_sign - sign the message msg[0..len) and return its
 * DKIM-Signature header.
 *
 * The message is a complete RFC 5322 message (header, empty line, body)
 * with CRLF line ends, the last line included, exactly as it will be
 * handed to SMTP before dot-stuffing.  It must carry a From field.  It is
 * only read.
 *
 * On success *header_out is a new NUL-terminated string (free with
 * herold_free) holding the complete header field
 * "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; ...", folded
 * with CRLF + TAB at about 78 columns and ending in CRLF, to be sent
 * immediately before the message's first header line; returns 0.
 * On failure returns -1, leaves *header_out NULL and fills err:
 * HERR_RESOURCE when memory runs out (defer the delivery), HERR_INPUT when
 * libopendkim refuses the message (no From field, bad syntax).
 * Thread-safe: see the header comment. */
int dkim_signer_sign(struct dkim_signer *s, const char *msg, size_t len,
                     char **header_out, struct herr *err);

/* dkim_signer_free - clear the key and free s.  NULL is a no-op.  No call
 * to dkim_signer_sign() on s may be running. */
void dkim_signer_free(struct dkim_signer *s);

#endif
