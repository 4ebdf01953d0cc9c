/* vmsnap: the command-line front end. Dispatches `vmsnap GROUP ...` to the group's file. */
#include "cli/cli.h"
#include "util/log.h"

#include <string.h>

struct command {
        const char *name;
        int (*run)(int argc, char **argv);
        const char *summary;
};

static const struct command commands[] = {
        {"mem", cmd_mem, "memory snapshots: process, diff, merge, materialize, verify, inspect"},
        {"snapshot", cmd_snapshot, "snapshot store: ls, inspect, add, rm, export, import, gc, reindex"},
        {"sandbox", cmd_sandbox, "sandboxes through vmsnapd: create, ls, get, pause, resume, exec,\n"
                                 "               shell, cp, ps, kill, snapshot, spawn, rm"},
        {"uffd-serve", cmd_uffd_serve, "lazy-restore page server for a VMM's userfaultfd"},
        {"mem-serve", cmd_mem_serve, "a snapshot's memory as a read-only FUSE file (QEMU)"},
};

static void usage(FILE *out)
{
        fprintf(out, "usage: vmsnap COMMAND [ARGS...]\n\n"
                     "vmsnap — microVM snapshot engine and sandbox host.\n\ncommands:\n");
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
        fprintf(out, "\nRun `vmsnap COMMAND --help` for a command's options.\n"
                     "Environment: VMSNAP_LOG=error|warn|info|debug sets the log level.\n");
}

bool cli_wants_help(int argc, char **argv)
{
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--") == 0)
                        return false;
                if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
                        return true;
        }
        return false;
}

int main(int argc, char **argv)
{
        vmsnap_log_set_ident("vmsnap");
        if (argc < 2) {
                usage(stderr);
                return CLI_USAGE;
        }
        if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
            strcmp(argv[1], "help") == 0) {
                usage(stdout);
                return CLI_OK;
        }
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                if (strcmp(argv[1], commands[i].name) == 0)
                        return commands[i].run(argc - 1, argv + 1);
        fprintf(stderr, "vmsnap: unknown command '%s'\n\n", argv[1]);
        usage(stderr);
        return CLI_USAGE;
}
