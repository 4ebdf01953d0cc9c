/* What the files of `vmsnap sandbox` share (sandbox.c: verbs and dispatch; sandbox-args.c;
 * sandbox-client.c; sandbox-exec.c: exec and shell; sandbox-cp.c: cp, ps, kill). */
#ifndef VMSNAP_CLI_SANDBOX_H
#define VMSNAP_CLI_SANDBOX_H

#include "cli/cli.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/un.h>

#define SOCKET_NAME       "vmsnapd.sock"
#define RESPONSE_MAX      (64u << 20)
#define CONNECT_TIMEOUT_S 10L

struct args {
        const char *verb;
        const char *root, *socket, *url, *token;
        bool json, all;
        const char *name, *vmm, *template_ref;
        const char *host;    /* --host ID: a cluster's host the new sandbox must go to */
        uint32_t vcpus;
        uint64_t memory_mib;
        bool idle_set;
        uint64_t idle_timeout;
        uint64_t timeout_ms;
        bool interactive, tty, detach, shell, keep;
        const char *cwd, *signal_name;
        const char *egress;  /* --egress allow|deny|CIDR[,CIDR...] */
        bool no_network;     /* --network none */
        const char *env[256]; /* -e NAME=value, in order */
        int nenv;
        int nargs;
        char **args;
};

struct client {
        CURL *curl;
        char base[512];   /* http://localhost or the --url */
        char where[4200]; /* for messages: unix:PATH or the URL */
        char auth[256];   /* "Authorization: Bearer …" or "" */
        char socket[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* "" with --url */
        const struct args *a;
        char progress[256];       /* "pausing web-1": shown on a TTY while a request runs long */
};

struct response {
        long status;
        char *body;
        size_t len;
        bool too_big;
};

/* ---- options ------------------------------------------------------------------------------ */

enum {
        OPT_ROOT = 1000,
        OPT_SOCKET,
        OPT_URL,
        OPT_TOKEN,
        OPT_JSON,
        OPT_ALL,
        OPT_NAME,
        OPT_VCPUS,
        OPT_MEMORY,
        OPT_VMM,
        OPT_IDLE,
        OPT_TEMPLATE,
        OPT_TIMEOUT,
        OPT_SHELL,
        OPT_KEEP,
        OPT_SIGNAL,
        OPT_EGRESS,
        OPT_NETWORK,
        OPT_HOST,
        OPT_INTERACTIVE = 'i', /* short options are their own letters */
        OPT_TTY = 't',
        OPT_DETACH = 'd',
        OPT_ENV = 'e',
        OPT_CWD = 'w',
};


/* ---- sandbox-args.c ---- */

/* Prints "vmsnap sandbox VERB: message" on stderr; returns CLI_FAIL. */
int fail(const struct args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same with a pointer to --help; returns CLI_USAGE. */
int usage_error(const struct args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "512" (MiB), "512M", "2G" → MiB. Returns 0 or -EINVAL. */
int parse_mib(const char *s, uint64_t *ret);
/* "90" (seconds), "500ms", "90s", "15m", "1h", "1d" → milliseconds. Returns 0 or -EINVAL. */
int parse_duration_ms(const char *s, uint64_t *ret);
/* Parses the options a verb accepts (ok: 0-terminated). Returns 0, -1 after --help, or the
 * usage exit code. */
int parse(int argc, char **argv, const int *ok, const char *usage, struct args *a);

/* ---- sandbox-client.c ---- */

int client_open(struct client *c, const struct args *a);
void client_close(struct client *c);
/* Sends one request (body: JSON or NULL). Returns 0 when a response came back (any status),
 * or CLI_FAIL with the message printed. */
int request(struct client *c, const char *method, const char *path, json_t *body,
            struct response *ret);
/* Names the next request's step for the progress line (stderr, TTY only, after 1 s). */
void client_progress(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints an error response {"error":{"code","message"}} (any other body as text). */
int report_error(struct client *c, const struct response *r);
/* Runs a request and parses a JSON 2xx response into *ret (NULL for 204). Returns CLI_OK or
 * CLI_FAIL with the message printed. */
int call(struct client *c, const char *method, const char *path, json_t *body, json_t **ret);
/* path prefix + escaped ref + suffix. */
int ref_path(struct client *c, const char *prefix, const char *ref, const char *suffix,
             char *out, size_t size);

/* ---- sandbox-upgrade.c ---- */

/* POSTs body to path asking to upgrade to proto. On 101 returns CLI_OK, the connected fd and
 * the bytes already read after the headers (malloc'd); any other answer is reported as an
 * error (CLI_FAIL). */
int client_upgrade(struct client *c, const char *path, json_t *body, const char *proto,
                   int *ret_fd, char **ret_extra, size_t *ret_extra_len);

/* ---- sandbox-net.c ---- */

/* Adds "network" to a create/spawn body from --network none / --egress (nothing without
 * them: the daemon's default, or the template's policy for a spawn). */
void net_body(const struct args *a, json_t *body);
/* The "network" line(s) of `get` for people. */
void print_network(json_t *sandbox);

/* ---- the verbs in their own files ---- */

int run_exec(struct client *c, const struct args *a);  /* sandbox-exec.c */
int run_shell(struct client *c, const struct args *a);
int run_cp(struct client *c, const struct args *a);    /* sandbox-cp.c */
int run_ps(struct client *c, const struct args *a);
int run_kill(struct client *c, const struct args *a);
int run_port(struct client *c, const struct args *a);  /* sandbox-net.c */

/* ---- sandbox.c ---- */

const char *sget(json_t *o, const char *key);
long long iget(json_t *o, const char *key);
void print_json(json_t *j);
int need_args(const struct args *a, int min, int max, const char *what);

#endif
