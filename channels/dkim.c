/*
 * dkim - the DKIM signer: herold's only glue to libopendkim.
 *
 * Owns one DKIM_LIB instance per signer (configured once, read-only
 * afterwards) and a private copy of the signing key, cleared before it is
 * freed.  Each signature is made on a fresh DKIM handle that lives only
 * inside dkim_signer_sign(), so worker threads share nothing mutable.
 * DKIM_STAT values are converted to struct herr here and nowhere else.
 * OpenSSL is used only to check the key once at start (libopendkim signs
 * happily with a damaged key and the damage shows only at the receiver).
 *
 * Never logs, and never copies the key, a header value or body text into
 * an error: errors carry the stage and libopendkim's status string only
 * (libopendkim's own message text is used solely for the built-in probe
 * message in dkim_signer_new(), where it can only describe the key's
 * format, never its contents).  Never signs with hand-made crypto.
 */
#include "channels/dkim.h"

#include <opendkim/dkim.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "dispatcher/alloc.h"

#define DKIM_MAX_DOMAIN 253
#define DKIM_MAX_LABEL 63
#define DKIM_MIN_KEY_BITS 1024u

struct dkim_signer {
    DKIM_LIB *lib;
    char *domain;
    char *selector;
    char *key;        /* base64 DER (libopendkim's other key form); cleared on free */
};

/* Header fields to sign when present (DKIM_OPTS_SIGNHDRS).  libopendkim
 * matches them case-insensitively and always adds From itself. */
static const char *const dkim_sign_hdrs[] = {
    "from", "sender", "reply-to", "to", "cc", "subject", "date",
    "message-id", "in-reply-to", "references", "mime-version",
    "content-type", "content-transfer-encoding", "list-id",
    "list-unsubscribe", "list-unsubscribe-post", "precedence",
    "auto-submitted", NULL
};

/* Header fields named once more in h= than they occur, so that an added
 * instance invalidates the signature (DKIM_OPTS_OVERSIGNHDRS). */
static const char *const dkim_oversign_hdrs[] = {
    "from", "reply-to", "to", "subject", "list-unsubscribe",
    "list-unsubscribe-post", NULL
};

/* A minimal message that dkim_signer_new() signs to prove the key. */
static const char dkim_probe_msg[] =
    "From: <dkim-probe@herold.invalid>\r\n"
    "Subject: herold DKIM key check\r\n"
    "Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n"
    "\r\n"
    "key check\r\n";

/* dkim_is_ldh_label - true if s[0..len) is a DNS label of letters, digits
 * and inner hyphens, 1..63 long. */
static bool dkim_is_ldh_label(const char *s, size_t len)
{
    if (len == 0 || len > DKIM_MAX_LABEL || s[0] == '-' || s[len - 1] == '-')
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    return true;
}

/* dkim_check_domain - validate the signing domain; fills err. */
static int dkim_check_domain(const char *domain, struct herr *err)
{
    const char *p = domain;
    size_t len = domain ? strlen(domain) : 0;
    int labels = 0;

    if (len == 0)
        return herr_set(err, HERR_INPUT, DKIM_CONF ".domain",
                        "expected the signing domain, got an empty string");
    if (len > DKIM_MAX_DOMAIN)
        return herr_set(err, HERR_INPUT, DKIM_CONF ".domain",
                        "expected a domain of at most %d characters",
                        DKIM_MAX_DOMAIN);
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);

        if (!dkim_is_ldh_label(p, n))
            return herr_set(err, HERR_INPUT, DKIM_CONF ".domain",
                            "expected a domain name of dot-separated labels "
                            "(letters, digits, inner hyphens; IDN as xn--)");
        labels++;
        if (dot == NULL)
            break;
        p = dot + 1;
    }
    if (labels < 2)
        return herr_set(err, HERR_INPUT, DKIM_CONF ".domain",
                        "expected a domain with at least two labels");
    return 0;
}

/* dkim_check_selector - validate the selector (one DNS label); fills err. */
static int dkim_check_selector(const char *selector, struct herr *err)
{
    size_t len = selector ? strlen(selector) : 0;

    if (len == 0)
        return herr_set(err, HERR_INPUT, DKIM_CONF ".selector",
                        "expected a selector, got an empty string");
    if (!dkim_is_ldh_label(selector, len))
        return herr_set(err, HERR_INPUT, DKIM_CONF ".selector",
                        "expected one DNS label of at most %d letters, digits "
                        "and inner hyphens (no dots, no spaces)",
                        DKIM_MAX_LABEL);
    return 0;
}

/* dkim_check_key - parse the PEM with OpenSSL, run its full RSA
 * consistency check (a damaged key would sign, but with signatures nobody
 * can verify), and return the key as base64 DER in a new string (free
 * with herold_free_secret) in *b64; fills err. */
static int dkim_check_key(const char *pem, char **b64, struct herr *err)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    unsigned char *der = NULL;
    int derlen = 0, rc = -1;

    if (bio == NULL) {
        herr_set(err, HERR_RESOURCE, DKIM_CONF, "out of memory");
        goto done;
    }
    /* No passphrase callback: an encrypted key is refused, not prompted. */
    pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)(uintptr_t)"");
    if (pkey == NULL) {
        herr_set(err, HERR_INPUT, DKIM_CONF ".key",
                 "cannot read the PEM private key (damaged, encrypted or not a key)");
        goto done;
    }
    if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA) {
        herr_set(err, HERR_INPUT, DKIM_CONF ".key",
                 "expected an RSA private key (DKIM a=rsa-sha256)");
        goto done;
    }
    if (EVP_PKEY_get_bits(pkey) < (int)DKIM_MIN_KEY_BITS) {
        herr_set(err, HERR_INPUT, DKIM_CONF ".key",
                 "expected an RSA key of at least %u bits, got %d (2048 recommended)",
                 DKIM_MIN_KEY_BITS, EVP_PKEY_get_bits(pkey));
        goto done;
    }
    ctx = EVP_PKEY_CTX_new(pkey, NULL);
    if (ctx == NULL) {
        herr_set(err, HERR_RESOURCE, DKIM_CONF, "out of memory");
        goto done;
    }
    if (EVP_PKEY_check(ctx) != 1) {
        herr_set(err, HERR_INPUT, DKIM_CONF ".key",
                 "the RSA private key fails its consistency check (damaged key)");
        goto done;
    }
    /* libopendkim parses the key string on every message; its PEM path
     * costs about twice the RSA signature itself, base64 DER far less. */
    derlen = i2d_PrivateKey(pkey, &der);
    if (derlen <= 0) {
        herr_set(err, HERR_RESOURCE, DKIM_CONF, "out of memory");
        goto done;
    }
    *b64 = herold_malloc(4 * (((size_t)derlen + 2) / 3) + 1);
    if (*b64 == NULL) {
        herr_set(err, HERR_RESOURCE, DKIM_CONF, "out of memory");
        goto done;
    }
    EVP_EncodeBlock((unsigned char *)*b64, der, derlen);
    rc = 0;
done:
    /* OpenSSL's error queue is per thread; leave nothing for the next user. */
    ERR_clear_error();
    if (der != NULL)
        OPENSSL_clear_free(der, (size_t)derlen);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    return rc;
}

/* dkim_stat_kind - who must act on a failed DKIM_STAT. */
static enum herr_kind dkim_stat_kind(DKIM_STAT st)
{
    switch (st) {
    case DKIM_STAT_NORESOURCE:
        return HERR_RESOURCE;
    case DKIM_STAT_SYNTAX:
    case DKIM_STAT_INVALID:
        return HERR_INPUT;
    default:
        return HERR_TRANSIENT;
    }
}

/* dkim_stat_str - libopendkim's name for st, never NULL. */
static const char *dkim_stat_str(DKIM_STAT st)
{
    const char *s = dkim_getresultstr(st);

    return s ? s : "unknown status";
}

/* dkim_copy_header - "DKIM-Signature: " + value + CRLF into a new string,
 * turning libopendkim's LF folds into CRLF folds. */
static char *dkim_copy_header(const unsigned char *val, size_t len)
{
    static const char name[] = DKIM_SIGNHEADER ": ";
    size_t lfs = 0, n = 0;
    char *out;

    for (size_t i = 0; i < len; i++)
        if (val[i] == '\n')
            lfs++;
    out = herold_malloc(sizeof name - 1 + len + lfs + 3);
    if (out == NULL)
        return NULL;
    memcpy(out, name, sizeof name - 1);
    n = sizeof name - 1;
    for (size_t i = 0; i < len; i++) {
        if (val[i] == '\r')
            continue;       /* every fold is rebuilt as CRLF below */
        if (val[i] == '\n')
            out[n++] = '\r';
        out[n++] = (char)val[i];
    }
    out[n++] = '\r';
    out[n++] = '\n';
    out[n] = '\0';
    return out;
}

/* dkim_run - sign msg on a fresh handle; on success *out is the header.
 * With probe set, libopendkim's error text goes into err (see top). */
static int dkim_run(const struct dkim_signer *s, const char *msg, size_t len,
                    bool probe, char **out, struct herr *err)
{
    const char *path = probe ? DKIM_CONF ".key" : NULL;
    const char *stage;
    DKIM_STAT st = DKIM_STAT_OK;
    DKIM *d;
    unsigned char *sig = NULL;
    size_t siglen = 0;
    int rc = -1;

    d = dkim_sign(s->lib, (const unsigned char *)"herold", NULL,
                  (unsigned char *)s->key, (const unsigned char *)s->selector,
                  (const unsigned char *)s->domain, DKIM_CANON_RELAXED,
                  DKIM_CANON_RELAXED, DKIM_SIGN_RSASHA256, -1, &st);
    if (d == NULL)
        return herr_set(err, st == DKIM_STAT_OK ? HERR_RESOURCE : dkim_stat_kind(st),
                        path, "DKIM: cannot start signing: %s", dkim_stat_str(st));

    /* libopendkim takes a non-const buffer but only reads it.  The empty
     * chunk tells it that the message is complete. */
    stage = "reading the message";
    st = dkim_chunk(d, (unsigned char *)(uintptr_t)msg, len);
    if (st == DKIM_STAT_OK)
        st = dkim_chunk(d, NULL, 0);
    if (st == DKIM_STAT_OK) {
        stage = "computing the signature";
        st = dkim_eom(d, NULL);
    }
    if (st == DKIM_STAT_OK) {
        stage = "formatting the signature";
        st = dkim_getsighdr_d(d, sizeof DKIM_SIGNHEADER + 1, &sig, &siglen);
    }
    if (st != DKIM_STAT_OK) {
        const char *why = probe ? dkim_geterror(d) : NULL;

        if (probe)
            herr_set(err, HERR_INPUT, path,
                     "DKIM: the private key does not sign (%s: %s%s%s)", stage,
                     dkim_stat_str(st), why ? "; " : "", why ? why : "");
        else
            herr_set(err, dkim_stat_kind(st), path, "DKIM: %s failed: %s",
                     stage, dkim_stat_str(st));
        goto done;
    }

    /* sig belongs to the handle and dies with dkim_free(): copy it. */
    *out = dkim_copy_header(sig, siglen);
    if (*out == NULL) {
        herr_set(err, HERR_RESOURCE, path, "out of memory");
        goto done;
    }
    rc = 0;
done:
    dkim_free(d);
    return rc;
}

struct dkim_signer *dkim_signer_new(const char *domain, const char *selector,
                                    const char *key_pem, struct herr *err)
{
    struct dkim_signer *s = NULL;
    unsigned int minbits = DKIM_MIN_KEY_BITS;
    char *probe = NULL;

    if (dkim_check_domain(domain, err) < 0 || dkim_check_selector(selector, err) < 0)
        return NULL;
    /* libopendkim reads anything not starting with "-----" as base64 DER;
     * herold's contract is PEM, so say so here rather than let a pasted
     * public key or a file path reach OpenSSL. */
    if (key_pem == NULL || key_pem[0] == '\0')
        goto bad_key_empty;
    if (strncmp(key_pem, "-----BEGIN ", 11) != 0 || strstr(key_pem, "PRIVATE KEY-----") == NULL)
        goto bad_key_format;

    s = herold_calloc(1, sizeof *s);
    if (s == NULL)
        goto oom;
    if (dkim_check_key(key_pem, &s->key, err) < 0)
        goto fail;
    s->domain = herold_strdup(domain);
    s->selector = herold_strdup(selector);
    if (s->domain == NULL || s->selector == NULL)
        goto oom;

    /* libopendkim's own allocations use malloc; only herold's go through
     * herold_malloc, so failure injection never reaches the library. */
    s->lib = dkim_init(NULL, NULL);
    if (s->lib == NULL)
        goto oom;
    /* List options take the NULL-terminated array itself as data and the
     * size of one pointer as length; libopendkim copies or compiles them. */
    if (dkim_options(s->lib, DKIM_OP_SETOPT, DKIM_OPTS_SIGNHDRS,
                     (void *)(uintptr_t)dkim_sign_hdrs, sizeof(char **)) != DKIM_STAT_OK ||
        dkim_options(s->lib, DKIM_OP_SETOPT, DKIM_OPTS_OVERSIGNHDRS,
                     (void *)(uintptr_t)dkim_oversign_hdrs, sizeof(char **)) != DKIM_STAT_OK ||
        dkim_options(s->lib, DKIM_OP_SETOPT, DKIM_OPTS_MINKEYBITS,
                     &minbits, sizeof minbits) != DKIM_STAT_OK) {
        herr_set(err, HERR_RESOURCE, DKIM_CONF, "DKIM: cannot configure libopendkim");
        goto fail;
    }

    /* libopendkim parses the key only when it signs; sign once now so a
     * bad or short key stops the start, not the first delivery. */
    if (dkim_run(s, dkim_probe_msg, sizeof dkim_probe_msg - 1, true, &probe, err) < 0)
        goto fail;
    herold_free(probe);
    return s;

bad_key_empty:
    herr_set(err, HERR_INPUT, DKIM_CONF ".key", "expected a PEM private key, got an empty string");
    return NULL;
bad_key_format:
    herr_set(err, HERR_INPUT, DKIM_CONF ".key",
             "expected a PEM private key (-----BEGIN ... PRIVATE KEY-----)");
    return NULL;
oom:
    herr_set(err, HERR_RESOURCE, DKIM_CONF, "out of memory");
fail:
    dkim_signer_free(s);
    return NULL;
}

int dkim_signer_sign(struct dkim_signer *s, const char *msg, size_t len,
                     char **header_out, struct herr *err)
{
    *header_out = NULL;
    if (len == 0)   /* a zero-length chunk would mean "end of message" */
        return herr_set(err, HERR_INPUT, NULL, "DKIM: empty message");
    /* libopendkim answers a last line without CRLF with a bare "Syntax
     * error" from dkim_eom(); say what is wrong instead. */
    if (len < 2 || msg[len - 2] != '\r' || msg[len - 1] != '\n')
        return herr_set(err, HERR_INPUT, NULL, "DKIM: message does not end in CRLF");
    return dkim_run(s, msg, len, false, header_out, err);
}

void dkim_signer_free(struct dkim_signer *s)
{
    if (s == NULL)
        return;
    if (s->lib != NULL)
        dkim_close(s->lib);
    herold_free_secret(s->key);
    herold_free(s->domain);
    herold_free(s->selector);
    herold_free(s);
}
