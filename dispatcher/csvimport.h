/*
 * csvimport - `herold citizens import FILE.csv`: many citizens from one
 * CSV file (format: docs/import.md), all or nothing.
 *
 * The file is read twice, streaming, never whole.  Pass 1 parses and
 * validates every row (the CSV itself, then citizen_validate) and finds
 * ids used twice; nothing is written.  Pass 2 runs only when pass 1 found
 * no invalid row, or when the caller allows skipping them, and writes each
 * valid row with citizen_put(CITIZEN_UPSERT): one atomic script per
 * citizen, so importing the same file again changes nothing.  A big file
 * is written by several processes, each with its own connection and a
 * share of the rows, so that Redis commits several citizens per fsync.
 *
 * Memory is bounded whatever the file: one line (at most
 * CSVIMPORT_LINE_MAX bytes) at a time, the first CSVIMPORT_REPORT_MAX
 * errors, one bit per row and a 16-byte fingerprint per row for the
 * duplicate check, for at most CSVIMPORT_ROWS_MAX rows.
 *
 * Error reports name the line and the column, never the cell's value: a
 * cell may hold an e-mail address or a phone number.
 */
#ifndef HEROLD_CSVIMPORT_H
#define HEROLD_CSVIMPORT_H

#include <stdbool.h>

#include "../config/config.h"
#include "redisq.h"

#define CSVIMPORT_LINE_MAX 16384        /* bytes per line, without the line end */
#define CSVIMPORT_ROWS_MAX 1000000      /* data rows per file */
#define CSVIMPORT_REPORT_MAX 100        /* invalid rows printed; the rest are counted */

/* csvimport_run - import the CSV file at path (a regular file: it is read
 * twice) into Redis through s, which is borrowed.  Pass 1 only reads
 * Redis (for a row with an e-mail consent by form and no address: is
 * there one already?); s may be NULL for a dry run, and that check is
 * then left out (without dry_run, pass 2 then fails with status 2).  skip_invalid: import the valid rows even when some are
 * invalid; dry_run: only check (pass 1), never write.  Prints the invalid
 * rows to stderr, a progress bar to stderr when it is a terminal, and one
 * summary line to stdout.  Writer processes it forks are reaped before it
 * returns.
 *
 * Returns the CLI exit status: 0 every row valid (and imported unless
 * dry_run); 1 invalid input (a bad header, or invalid rows: with
 * skip_invalid the valid ones were imported, without it nothing was);
 * 2 the file could not be read or changed, or Redis failed (the summary
 * says how many rows are written; importing the file again is safe). */
int csvimport_run(const struct herold_config *cfg, struct redisq_sync *s,
                  const char *path, bool skip_invalid, bool dry_run);

#endif
