/* Internals shared by the files of `vmsnap snapshot` (src/cli/snapshot*.c): the parsed
 * arguments, the verbs and their usage texts, and the output helpers every verb uses. */
#ifndef VMSNAP_CLI_SNAPSHOT_H
#define VMSNAP_CLI_SNAPSHOT_H

#include "cli/cli.h"

#include <vmsnap/store.h>

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define MAX_LABELS 64

/* Option ids (getopt_long values) of every verb. */
enum {
        OPT_ROOT = 1000,
        OPT_JSON,
        OPT_ALL,
        OPT_KIND,
        OPT_NO_TRUNC,
        OPT_NAME,
        OPT_PARENT,
        OPT_SNAPFILE,
        OPT_DESCRIPTION,
        OPT_LABEL,
        OPT_VMM,
        OPT_VMM_VERSION,
        OPT_VCPUS,
        OPT_BLOCK_SIZE,
        OPT_SOURCE,
        OPT_FORCE,
        OPT_OUTPUT,
        OPT_TO_DIR,
        OPT_COMPRESSION,
        OPT_LEVEL,
        OPT_MAX_SIZE,
        OPT_DRY_RUN,
        OPT_GRACE,
        OPT_BUDGET,
        OPT_VERIFY,
        OPT_NO_BASE,
        OPT_MAX_LOGICAL,
        OPT_REMOTE,
};

/* The parsed command line of one verb. */
struct args {
        const char *verb;
        const char *root;
        bool json, all, no_trunc, force, dry_run, verify;
        const char *name, *parent, *snapfile, *description, *vmm, *vmm_version, *output, *to_dir;
        const char *labels[MAX_LABELS];
        int n_labels;
        bool kind_set;
        enum vmsnap_snapshot_kind kind;
        uint32_t vcpus;
        struct vmsnap_mem_opts mem;
        struct vmsnap_export_opts exp;
        uint64_t max_size, max_logical, budget;
        int64_t grace;
        bool remote;             /* --remote[=NAME] given */
        const char *remote_name; /* NAME, or NULL: the default remote */
        int nargs;
        char **args;
};

/* Prints "vmsnap snapshot VERB: <message> (see --help)" on stderr; returns CLI_USAGE. */
int snapshot_usage_error(const struct args *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prints the diagnostic on stderr; returns CLI_FAIL. */
int snapshot_fail(const struct args *a, const struct vmsnap_diag *d);

/* A record as the JSON object `ls --json` and `inspect --json` print (new reference). */
json_t *snapshot_record_json(struct vmsnap_store *s, const struct vmsnap_snapshot *r);

/* Prints j indented on stdout and drops the reference. */
void snapshot_print_json(json_t *j);

/* "added <id> (<name>) (...)" or, with --json, the record. */
void snapshot_print_added(struct vmsnap_store *s, const struct args *a,
                          const struct vmsnap_snapshot *r, const char *verb);

/* The verbs (one per `vmsnap snapshot VERB`) and their --help texts. */
int snapshot_ls(struct vmsnap_store *s, struct args *a);
int snapshot_inspect(struct vmsnap_store *s, struct args *a);
int snapshot_verify(struct vmsnap_store *s, struct args *a);
int snapshot_add(struct vmsnap_store *s, struct args *a);
int snapshot_rm(struct vmsnap_store *s, struct args *a);
int snapshot_export(struct vmsnap_store *s, struct args *a);
int snapshot_import(struct vmsnap_store *s, struct args *a);
int snapshot_gc(struct vmsnap_store *s, struct args *a);
int snapshot_reindex(struct vmsnap_store *s, struct args *a);
int snapshot_push(struct vmsnap_store *s, struct args *a);
int snapshot_pull(struct vmsnap_store *s, struct args *a);
int snapshot_remote_ls(struct vmsnap_store *s, struct args *a);
int snapshot_remote_rm(struct vmsnap_store *s, struct args *a);
int snapshot_remote_gc(struct vmsnap_store *s, struct args *a);
extern const char snapshot_ls_usage[], snapshot_inspect_usage[], snapshot_verify_usage[],
    snapshot_add_usage[], snapshot_rm_usage[], snapshot_export_usage[], snapshot_import_usage[],
    snapshot_gc_usage[], snapshot_reindex_usage[], snapshot_push_usage[], snapshot_pull_usage[];

#endif
