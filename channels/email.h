/*
 * email - the e-mail channel (channels.email in the configuration):
 * MIME (mime.c), optional DKIM (dkim.c) and the libESMTP worker pool
 * (smtp_pool.c) behind the channel interface.  See email.c and
 * docs/email.md.
 */
#ifndef HEROLD_EMAIL_H
#define HEROLD_EMAIL_H

#include "channel.h"

extern const struct channel_ops email_channel;

#endif
