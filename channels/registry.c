/*
 * registry - the static table of delivery channels herold knows.
 *
 * Adding a channel means adding one line to channel_table.  Owns nothing
 * and allocates nothing; startup calls channel_registry_check once and
 * refuses to run if two entries share a name (redis connTypeRegister).
 */
#include <stddef.h>
#include <string.h>

#include "channel.h"
#include "email.h"
#include "webhook.h"

static const struct channel_ops *const channel_table[] = {
    &webhook_channel,
    &email_channel,
};

#define CHANNEL_COUNT (sizeof channel_table / sizeof channel_table[0])

/*
 * channel_find - the channel registered as name, or NULL if none is.
 * The returned table is static and lives as long as the program.
 */
const struct channel_ops *channel_find(const char *name)
{
    for (size_t i = 0; i < CHANNEL_COUNT; i++)
        if (strcmp(channel_table[i]->name, name) == 0)
            return channel_table[i];
    return NULL;
}

/*
 * channel_registry_check - 0 if every registered name is unique; -1 with
 * err (HERR_INPUT, naming the channel) at the first duplicate.
 */
int channel_registry_check(struct herr *err)
{
    for (size_t i = 0; i < CHANNEL_COUNT; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(channel_table[i]->name, channel_table[j]->name) == 0)
                return herr_set(err, HERR_INPUT, NULL,
                                "channel \"%s\" is registered twice",
                                channel_table[i]->name);
    return 0;
}

/*
 * channel_each - call fn(ops, arg) for each registered channel, in table
 * order.  fn borrows ops; it is static.
 */
void channel_each(void (*fn)(const struct channel_ops *ops, void *arg), void *arg)
{
    for (size_t i = 0; i < CHANNEL_COUNT; i++)
        fn(channel_table[i], arg);
}
