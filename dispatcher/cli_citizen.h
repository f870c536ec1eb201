/*
 * cli_citizen - the `herold` commands about citizens, topics and consent:
 *
 *   herold citizen add|update|show|export|erase ID ...
 *   herold citizens import FILE.csv [--skip-invalid] [--dry-run]
 *   herold topic list | topic show NAME
 *   herold confirm TOKEN | unsubscribe TOKEN
 *
 * Exit status as the rest of the CLI: 0 ok, 1 invalid input, 2 Redis or
 * system error, 4 no such citizen, 64 usage.
 */
#ifndef HEROLD_CLI_CITIZEN_H
#define HEROLD_CLI_CITIZEN_H

#include <stdbool.h>
#include <stdio.h>

#include "../config/config.h"

/* cli_citizen_handles - true when cmd is one of the commands above. */
bool cli_citizen_handles(const char *cmd);

/* cli_citizen_main - run the command argv[0] (one for which
 * cli_citizen_handles is true) with its arguments argv[1..argc-1].
 * Returns the exit status. */
int cli_citizen_main(const struct herold_config *cfg, int argc, char **argv);

/* cli_citizen_usage - the usage lines of these commands. */
void cli_citizen_usage(FILE *out);

#endif
