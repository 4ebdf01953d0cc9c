/* The vmsnap CLI: one file per command group, each exporting one entry point. */
#ifndef VMSNAP_CLI_H
#define VMSNAP_CLI_H

#include <stdbool.h>
#include <stdio.h>

/* Exit codes of every command: success, failure, usage error. */
enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

/* Entry points: argv[0] is the group name ("mem", "snapshot", ...). Return an exit code. */
int cmd_mem(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_sandbox(int argc, char **argv);
int cmd_uffd_serve(int argc, char **argv);
int cmd_mem_serve(int argc, char **argv);

/* `vmsnap mem inspect DIR` (mem-inspect.c). */
int cmd_mem_inspect(const char *dir, bool json);

/* True when argv holds -h or --help before any "--". */
bool cli_wants_help(int argc, char **argv);

#endif
