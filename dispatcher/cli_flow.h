/*
 * cli_flow - the `herold` commands of flow control:
 *
 *   herold dlq list [--json]                   jobs with dead letters
 *   herold dlq show JOB_ID [--json]            a job's dead letters
 *   herold dlq retry JOB_ID [CHANNEL:RECIPIENT] send them again
 *   herold dlq purge JOB_ID [CHANNEL:RECIPIENT] drop them
 *   herold schedule list [--json]              jobs parked until send_at
 *   herold cancel JOB_ID                       stop a job
 *
 * The contract is docs/flow.md.  Exit status as the rest of the CLI:
 * 0 ok, 1 invalid input or refused (nothing to retry, job already
 * finished), 2 Redis or system error, 4 no such job, 64 usage.
 */
#ifndef HEROLD_CLI_FLOW_H
#define HEROLD_CLI_FLOW_H

#include <stdbool.h>
#include <stdio.h>

#include "../config/config.h"

/* cli_flow_handles - true when cmd is one of the commands above. */
bool cli_flow_handles(const char *cmd);

/* cli_flow_main - run the command argv[0] (one for which cli_flow_handles
 * is true) with its arguments argv[1..argc-1].  Returns the exit status. */
int cli_flow_main(const struct herold_config *cfg, int argc, char **argv);

/* cli_flow_usage - the usage lines of these commands. */
void cli_flow_usage(FILE *out);

#endif
