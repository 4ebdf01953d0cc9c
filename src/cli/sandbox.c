/* `vmsnap sandbox …`: a client of vmsnapd's REST API (docs/api.md) over its Unix socket
 * (libcurl CURLOPT_UNIX_SOCKET_PATH) or TCP with a bearer token. Tables for people, --json
 * for programs; exit codes 0 / 1 / 2, and `exec` exits with the command's exit code. No
 * total timeout on a request: a pause of a large guest may take long, and the daemon
 * finishes it even if this client goes away. */
#include "cli/sandbox.h"
#include "util/cleanup.h"

#include <vmsnap/store.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char main_usage[] =
        "usage: vmsnap sandbox VERB [OPTIONS] ARGS...\n\n"
        "Sandboxes (microVMs) through the vmsnapd daemon.\n\n"
        "verbs:\n"
        "  create [--name N] [--vcpus N] [--memory SIZE] [--vmm NAME] [--idle-timeout DUR]\n"
        "         [--template REF] [--egress POLICY | --network none] [--host ID]\n"
        "                               boot a sandbox (or spawn one from a template)\n"
        "  ls [--all]                   list sandboxes (--all: stopped ones too)\n"
        "  get REF (or inspect REF)     show one sandbox (its accelerator: kvm|tcg, and why)\n"
        "  pause REF                    snapshot a sandbox and free its host resources\n"
        "  resume REF                   resume a paused sandbox\n"
        "  exec [-i] [-t] [-d] [--shell] [-e NAME=VALUE]... [-w DIR] [--timeout DUR]\n"
        "       REF -- COMMAND [ARGS...] run a program in a sandbox (argv exactly as given)\n"
        "  shell REF [-- COMMAND...]    an interactive shell (a PTY) in a sandbox\n"
        "  cp SRC DEST                  copy files between the host and a sandbox\n"
        "                               (one of them SANDBOX:/PATH)\n"
        "  ps REF                       processes started in a sandbox (background ones too)\n"
        "  kill REF PID [--signal SIG]  signal such a process\n"
        "  snapshot REF --name NAME     make a template from a sandbox\n"
        "  spawn TEMPLATE [--name N] [--idle-timeout DUR] [--egress POLICY | --network none]\n"
        "        [--host ID]            start a sandbox from a template\n"
        "  port REF GUEST_PORT          the host address:port that reaches a guest port\n"
        "  rm [--keep-name] REF...      destroy sandboxes (and free their names)\n\n"
        "A REF is an id, a name, or a unique id prefix of at least 3 characters.\n\n"
        "connection (every verb):\n"
        "  --socket PATH   the daemon's Unix socket (default: <root>/" SOCKET_NAME ")\n"
        "  --root DIR      the daemon's root (default: $VMSNAP_ROOT, "
        "else " VMSNAP_STORE_DEFAULT_ROOT ")\n"
        "  --url URL       use TCP instead, e.g. http://127.0.0.1:7420\n"
        "  --token TOKEN   bearer token for --url (default: $VMSNAP_TOKEN, else <root>/token\n"
        "                  when readable)\n"
        "  --json          print JSON (the API's objects) instead of tables\n\n"
        "SIZE: MiB, or with a unit: 512M, 2G.  DUR: seconds, or 500ms, 90s, 15m, 1h.\n"
        "POLICY (egress of a networked sandbox): allow, deny, or CIDR[,CIDR...].\n"
        "exit codes: 0 ok, 1 failure (message on stderr), 2 usage error; exec and shell exit\n"
        "with the command's exit code (128+N when signal N killed it, 124 when --timeout\n"
        "fired).\n"
        "Run `vmsnap sandbox VERB --help` for a verb's options.\n";

/* ---- output ------------------------------------------------------------------------------- */

const char *sget(json_t *o, const char *key)
{
        const char *s = json_string_value(json_object_get(o, key));
        return s ? s : "-";
}

long long iget(json_t *o, const char *key)
{
        return json_integer_value(json_object_get(o, key));
}

void print_json(json_t *j)
{
        char *s = json_dumps(j, JSON_INDENT(2));
        if (s)
                printf("%s\n", s);
        free(s);
}

/* "2025-11-26T08:31:00Z" → local "2025-11-26 09:31". */
static void local_time(const char *rfc3339, char out[20])
{
        struct tm tm = {0};
        const char *end = rfc3339 ? strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ", &tm) : NULL;
        time_t t = end && !*end ? timegm(&tm) : (time_t)-1;
        struct tm lt;
        if (t == (time_t)-1 || !localtime_r(&t, &lt) ||
            strftime(out, 20, "%Y-%m-%d %H:%M", &lt) == 0)
                snprintf(out, 20, "-");
}

static void print_sandbox_row(json_t *s)
{
        char created[20], mem[24];
        local_time(json_string_value(json_object_get(s, "created")), created);
        snprintf(mem, sizeof(mem), "%lldM", iget(s, "memory_mib"));
        printf("%-12.12s  %-20.20s  %-9s  %5lld  %7s  %-6s  %4lld  %s\n", sget(s, "id"),
               sget(s, "name"), sget(s, "state"), iget(s, "vcpus"), mem, sget(s, "vmm"),
               iget(s, "generation"), created);
}

static void print_sandbox(json_t *s)
{
        const char *keys[] = {"id",          "name",    "state",   "vmm",        "template_id",
                              "snapshot_id", "created", "updated", "last_active"};
        for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
                printf("%-13s %s\n", keys[i], sget(s, keys[i]));
        printf("%-13s %lld\n", "vcpus", iget(s, "vcpus"));
        printf("%-13s %lld MiB\n", "memory", iget(s, "memory_mib"));
        printf("%-13s %lld\n", "generation", iget(s, "generation"));
        if (json_is_integer(json_object_get(s, "pid")))
                printf("%-13s %lld\n", "pid", iget(s, "pid"));
        if (iget(s, "idle_timeout"))
                printf("%-13s %llds\n", "idle_timeout", iget(s, "idle_timeout"));
        else
                printf("%-13s never\n", "idle_timeout");
        if (json_is_string(json_object_get(s, "accelerator")))
                printf("%-13s %s (%s)\n", "accelerator", sget(s, "accelerator"),
                       sget(s, "accelerator_reason"));
        print_network(s);
        if (json_is_string(json_object_get(s, "error")))
                printf("%-13s %s\n", "error", sget(s, "error"));
}

/* One line for people after a state change, or the object with --json. */
static void print_changed(const struct args *a, const char *what, json_t *s)
{
        if (a->json) {
                print_json(s);
                return;
        }
        const char *name = json_string_value(json_object_get(s, "name"));
        printf("%s %s%s%s%s: %s", what, sget(s, "id"), name ? " (" : "", name ? name : "",
               name ? ")" : "", sget(s, "state"));
        if (json_is_integer(json_object_get(s, "pid")))
                printf(", pid %lld", iget(s, "pid"));
        if (iget(s, "generation"))
                printf(", generation %lld", iget(s, "generation"));
        putchar('\n');
}

/* ---- verbs -------------------------------------------------------------------------------- */

int need_args(const struct args *a, int min, int max, const char *what)
{
        if (a->nargs < min || (max >= 0 && a->nargs > max))
                return usage_error(a, "expected %s", what);
        return 0;
}

/* The body of create and spawn from the options. */
static json_t *sandbox_body(const struct args *a, bool with_template)
{
        json_t *b = json_object();
        if (a->name)
                json_object_set_new(b, "name", json_string(a->name));
        if (a->vcpus)
                json_object_set_new(b, "vcpus", json_integer(a->vcpus));
        if (a->memory_mib)
                json_object_set_new(b, "memory_mib", json_integer((json_int_t)a->memory_mib));
        if (a->vmm)
                json_object_set_new(b, "vmm", json_string(a->vmm));
        if (a->idle_set)
                json_object_set_new(b, "idle_timeout", json_integer((json_int_t)a->idle_timeout));
        if (with_template && a->template_ref)
                json_object_set_new(b, "template", json_string(a->template_ref));
        net_body(a, b);
        return b;
}

/* path, with ?host=ID when --host pins a cluster host. */
static int with_host(struct client *c, const struct args *a, const char *path, char *out,
                     size_t size)
{
        char prefix[512];
        if (!a->host) {
                snprintf(out, size, "%s", path);
                return CLI_OK;
        }
        snprintf(prefix, sizeof(prefix), "%s?host=", path);
        int r = ref_path(c, prefix, a->host, "", out, size); /* writes prefix/ESCAPED */
        if (r == CLI_OK) { /* drop the '/' ref_path puts before the escaped id */
                char *slash = out + strlen(prefix);
                memmove(slash, slash + 1, strlen(slash + 1) + 1);
        }
        return r;
}

static int run_create(struct client *c, const struct args *a)
{
        char path[600];
        int r = need_args(a, 0, 0, "no arguments (options only)");
        if (r || (r = with_host(c, a, "/v1/sandboxes", path, sizeof(path))))
                return r;
        json_t *body = sandbox_body(a, true), *res = NULL;
        client_progress(c, "%s %s", a->template_ref ? "spawning" : "booting",
                        a->name ? a->name : "a sandbox");
        r = call(c, "POST", path, body, &res);
        json_decref(body);
        if (r == CLI_OK)
                print_changed(a, a->template_ref ? "spawned" : "created", res);
        json_decref(res);
        return r;
}

static int run_spawn(struct client *c, const struct args *a)
{
        char base[512], path[600];
        int r = need_args(a, 1, 1, "TEMPLATE (a template's id or name)");
        if (r || (r = ref_path(c, "/v1/snapshots", a->args[0], "/sandboxes", base, sizeof(base))) ||
            (r = with_host(c, a, base, path, sizeof(path))))
                return r;
        json_t *body = sandbox_body(a, false), *res = NULL;
        client_progress(c, "spawning from %s", a->args[0]);
        r = call(c, "POST", path, body, &res);
        json_decref(body);
        if (r == CLI_OK)
                print_changed(a, "spawned", res);
        json_decref(res);
        return r;
}

static int run_ls(struct client *c, const struct args *a)
{
        int r = need_args(a, 0, 0, "no arguments");
        json_t *res = NULL;
        if (r || (r = call(c, "GET", a->all ? "/v1/sandboxes?all=1" : "/v1/sandboxes", NULL, &res)))
                return r;
        json_t *list = json_object_get(res, "sandboxes");
        if (a->json) {
                print_json(list);
        } else {
                printf("%-12s  %-20s  %-9s  %5s  %7s  %-6s  %4s  %s\n", "ID", "NAME", "STATE",
                       "VCPUS", "MEMORY", "VMM", "GEN", "CREATED");
                size_t i;
                json_t *s;
                json_array_foreach(list, i, s) print_sandbox_row(s);
        }
        json_decref(res);
        return CLI_OK;
}

static int run_get(struct client *c, const struct args *a)
{
        char path[512];
        int r = need_args(a, 1, 1, "REF");
        json_t *res = NULL;
        if (r || (r = ref_path(c, "/v1/sandboxes", a->args[0], "", path, sizeof(path))) ||
            (r = call(c, "GET", path, NULL, &res)))
                return r;
        if (a->json)
                print_json(res);
        else
                print_sandbox(res);
        json_decref(res);
        return CLI_OK;
}

static int run_pause_resume(struct client *c, const struct args *a)
{
        char path[512];
        bool pause = strcmp(a->verb, "pause") == 0;
        int r = need_args(a, 1, 1, "REF");
        json_t *res = NULL;
        if (r ||
            (r = ref_path(c, "/v1/sandboxes", a->args[0], pause ? "/pause" : "/resume", path,
                          sizeof(path))))
                return r;
        client_progress(c, "%s %s", pause ? "pausing" : "resuming", a->args[0]);
        if ((r = call(c, "POST", path, NULL, &res)))
                return r;
        print_changed(a, pause ? "paused" : "resumed", res);
        json_decref(res);
        return CLI_OK;
}

static int run_snapshot(struct client *c, const struct args *a)
{
        char path[512];
        int r = need_args(a, 1, 2, "REF --name NAME");
        if (r)
                return r;
        const char *name = a->nargs == 2 ? a->args[1] : a->name;
        if (!name)
                return usage_error(a, "the template needs a name: --name NAME");
        if ((r = ref_path(c, "/v1/sandboxes", a->args[0], "/snapshot", path, sizeof(path))))
                return r;
        json_t *body = json_pack("{s:s}", "name", name), *res = NULL;
        client_progress(c, "making template %s from %s", name, a->args[0]);
        r = call(c, "POST", path, body, &res);
        json_decref(body);
        if (r == CLI_OK && a->json)
                print_json(res);
        else if (r == CLI_OK)
                printf("made template %s (%s) from sandbox %s: %lld vCPU, %lld MiB\n",
                       sget(res, "name"), sget(res, "id"), a->args[0], iget(res, "vcpus"),
                       iget(res, "memory_mib"));
        json_decref(res);
        return r;
}

/* Removes one sandbox: its id and name first (for the message), then DELETE, which frees
 * the name unless --keep-name. */
static int remove_one(struct client *c, const struct args *a, const char *ref, json_t *done)
{
        char path[512];
        json_t *sb = NULL, *res = NULL;
        int r = ref_path(c, "/v1/sandboxes", ref, "", path, sizeof(path));
        if (r || (r = call(c, "GET", path, NULL, &sb)))
                return r;
        if (a->keep)
                strncat(path, "?keep_name=1", sizeof(path) - strlen(path) - 1);
        r = call(c, "DELETE", path, NULL, &res);
        json_decref(res);
        if (r == CLI_OK && a->json) {
                json_array_append_new(done, json_pack("{s:s, s:O, s:b}", "id", sget(sb, "id"),
                                                      "name", json_object_get(sb, "name"),
                                                      "name_kept", a->keep));
        } else if (r == CLI_OK) {
                const char *name = json_string_value(json_object_get(sb, "name"));
                printf("removed %s%s%s%s%s\n", sget(sb, "id"), name ? " (" : "", name ? name : "",
                       name ? ")" : "",
                       !name ? "" : a->keep ? "; it keeps its name (--keep-name)"
                                            : "; its name is free again");
        }
        json_decref(sb);
        return r;
}

static int run_rm(struct client *c, const struct args *a)
{
        int r = need_args(a, 1, -1, "REF...");
        if (r)
                return r;
        int ret = CLI_OK;
        json_t *done = json_array();
        for (int i = 0; i < a->nargs; i++)
                if (remove_one(c, a, a->args[i], done) != CLI_OK)
                        ret = CLI_FAIL;
        if (a->json)
                print_json(done);
        json_decref(done);
        return ret;
}

/* ---- dispatch ----------------------------------------------------------------------------- */

static const int create_opts[] = {OPT_NAME,     OPT_VCPUS,  OPT_MEMORY,  OPT_VMM, OPT_IDLE,
                                  OPT_TEMPLATE, OPT_EGRESS, OPT_NETWORK, OPT_HOST, 0};
static const int spawn_opts[] = {OPT_NAME, OPT_VCPUS,  OPT_MEMORY,  OPT_VMM,
                                 OPT_IDLE, OPT_EGRESS, OPT_NETWORK, OPT_HOST, 0};
static const int ls_opts[] = {OPT_ALL, 0};
static const int exec_opts[] = {OPT_TIMEOUT, OPT_INTERACTIVE, OPT_TTY, OPT_DETACH,
                                OPT_SHELL,   OPT_ENV,         OPT_CWD, 0};
static const int shell_opts[] = {OPT_ENV, OPT_CWD, OPT_TTY, 0};
static const int kill_opts[] = {OPT_SIGNAL, 0};
static const int rm_opts[] = {OPT_KEEP, 0};
static const int snapshot_opts[] = {OPT_NAME, 0};
static const int no_opts[] = {0};

/* The cluster option of create and spawn, for their --help. */
#define HOST_HELP                                                                          \
        "--host ID (a vmsnapd --cluster): the new sandbox goes to that host, or fails; without\n" \
        "it the cluster places it (docs/cluster.md).\n"

/* The network options of create and spawn, for their --help. */
#define NETWORK_HELP                                                                       \
        "\nNetwork (when vmsnapd runs with --network; docs/network.md):\n"                   \
        "  --egress allow        the guest reaches anything outside (the default)\n"         \
        "  --egress deny         the guest reaches nothing outside\n"                         \
        "  --egress CIDR[,CIDR...]  only these ranges, e.g. 10.0.0.0/8,192.0.2.0/24\n"       \
        "  --network none        no network at all\n"                                        \
        "The host reaches the guest at its own address (see `vmsnap sandbox port`).\n"       \
        "Another sandbox, the host itself and 169.254.0.0/16 are never reachable.\n"

static const struct verb {
        const char *name;
        int (*run)(struct client *c, const struct args *a);
        const int *options;
        const char *usage;
} verbs[] = {
        {"create", run_create, create_opts,
         "usage: vmsnap sandbox create [--name N] [--vcpus N] [--memory SIZE] [--vmm NAME]\n"
         "                             [--idle-timeout DUR] [--template REF]\n"
         "                             [--egress POLICY | --network none] [--host ID]\n\n"
         "Boots a sandbox from the host's guest image, or with --template starts one from a\n"
         "template's frozen state (its vCPUs and memory are the template's; asking for others\n"
         "is refused). --idle-timeout pauses it after that long without activity (0: never).\n"
         HOST_HELP NETWORK_HELP},
        {"ls", run_ls, ls_opts,
         "usage: vmsnap sandbox ls [--all] [--json]\n\nLists sandboxes; --all includes stopped "
         "ones.\n"},
        {"get", run_get, no_opts,
         "usage: vmsnap sandbox get REF [--json]\n\nShows one sandbox, with the accelerator its "
         "VMM runs under (kvm or tcg)\nand why. `inspect` is another name for it.\n"},
        {"inspect", run_get, no_opts,
         "usage: vmsnap sandbox inspect REF [--json]\n\nThe same as `get`: shows one sandbox, "
         "with the accelerator its VMM runs under\n(kvm or tcg) and why.\n"},
        {"pause", run_pause_resume, no_opts,
         "usage: vmsnap sandbox pause REF\n\nSnapshots a running sandbox and frees its VMM "
         "process and memory.\n"},
        {"resume", run_pause_resume, no_opts,
         "usage: vmsnap sandbox resume REF\n\nResumes a paused sandbox from its newest "
         "snapshot.\n"},
        {"exec", run_exec, exec_opts,
         "usage: vmsnap sandbox exec [OPTIONS] REF -- COMMAND [ARGS...]\n\n"
         "Runs COMMAND with exactly these arguments in a running sandbox (no shell: quoting\n"
         "survives, bytes that are not UTF-8 too), prints its stdout and stderr as they come,\n"
         "and exits with its exit code: 128+N when signal N killed it, 124 when --timeout\n"
         "fired, 1 when vmsnap itself failed. Ctrl-C and other signals to vmsnap go to the\n"
         "command (a third Ctrl-C leaves it behind; leaving hangs it up).\n\n"
         "  -i, --interactive   send this stdin to the command (without it, it gets an empty one)\n"
         "  -t, --tty           run it on a terminal (a PTY in the guest); with -i this terminal\n"
         "                      is raw: keys, Ctrl-C and Ctrl-D go to the guest, as in ssh\n"
         "  -d, --detach        start it in the background and return; its output goes to a log\n"
         "                      file in the guest (see `ps`, `kill`)\n"
         "      --shell         COMMAND is one shell line (the words joined with spaces) for\n"
         "                      /bin/sh -c, e.g. --shell -- 'ls | wc -l'\n"
         "  -e, --env NAME=VALUE  set a variable (repeat for more)\n"
         "  -w, --workdir DIR   its working directory in the guest (default /)\n"
         "      --timeout DUR   kill it (SIGKILL to its process group) after DUR\n"
         "      --json          print the result as JSON once it ended (no streaming)\n"},
        {"shell", run_shell, shell_opts,
         "usage: vmsnap sandbox shell REF [-e NAME=VALUE]... [-w DIR] [-- COMMAND...]\n\n"
         "An interactive shell (/bin/sh, or COMMAND) on a PTY in the sandbox, as `ssh` gives:\n"
         "this terminal is raw while it runs, Ctrl-C interrupts the job in the guest, Ctrl-D or\n"
         "`exit` leaves; window size changes follow. Exits with the shell's exit code.\n"},
        {"cp", run_cp, no_opts,
         "usage: vmsnap sandbox cp SRC DEST\n\n"
         "Copies a file or a directory (recursively, modes and symlinks kept) between the host\n"
         "and a running sandbox; exactly one of SRC and DEST is SANDBOX:/PATH. Into an existing\n"
         "directory the copy keeps its name; otherwise it takes DEST's. Any size, streamed.\n"
         "What comes out of a sandbox is checked entry by entry: nothing is written outside\n"
         "DEST and no symlink the guest sent is followed. A summary goes to stderr (--json:\n"
         "stdout).\n\n"
         "  vmsnap sandbox cp ./src web-1:/root/      vmsnap sandbox cp web-1:/var/log ./logs\n"},
        {"ps", run_ps, no_opts,
         "usage: vmsnap sandbox ps REF [--json]\n\n"
         "Lists the processes started in the sandbox through vmsnap: running commands and\n"
         "background ones (`exec -d`); one that ended is listed once more with its exit code.\n"},
        {"kill", run_kill, kill_opts,
         "usage: vmsnap sandbox kill REF PID [--signal SIG]\n\n"
         "Sends SIG (a number or a name: TERM, the default, KILL, INT, HUP...) to the process\n"
         "group of PID, a process `vmsnap sandbox ps` lists.\n"},
        {"snapshot", run_snapshot, snapshot_opts,
         "usage: vmsnap sandbox snapshot REF --name NAME\n\n"
         "Makes a named template from a running or paused sandbox (which stays as it is).\n"},
        {"spawn", run_spawn, spawn_opts,
         "usage: vmsnap sandbox spawn TEMPLATE [--name N] [--idle-timeout DUR]\n"
         "                            [--egress POLICY | --network none] [--host ID]\n\n"
         "Starts a sandbox from a template (same as create --template). It inherits the\n"
         "network of the sandbox the template was made from (its egress policy, or none)\n"
         "unless --egress or --network says otherwise.\n"
         HOST_HELP NETWORK_HELP},
        {"port", run_port, no_opts,
         "usage: vmsnap sandbox port SANDBOX GUEST_PORT [--json]\n\n"
         "Prints the host address:port that reaches GUEST_PORT (1..65535) of a networked\n"
         "sandbox, e.g. 10.201.0.2:8080. It is the sandbox's own address, reachable from this\n"
         "host only, stable across pause and resume; every clone has its own.\n"},
        {"rm", run_rm, rm_opts,
         "usage: vmsnap sandbox rm [--keep-name] REF...\n\n"
         "Destroys sandboxes in any state, with the pause snapshots only they own. A removed\n"
         "sandbox stays listed (`ls --all`, state stopped) under its id; its name is freed for\n"
         "a new sandbox unless --keep-name (then `create --name` with that name is refused\n"
         "until it is removed without the flag).\n"},
};

static int run_verb(const struct verb *v, int argc, char **argv)
{
        struct args a = {.verb = v->name};
        char prog[48];
        snprintf(prog, sizeof(prog), "vmsnap sandbox %s", v->name);
        char *saved = argv[0];
        argv[0] = prog; /* what getopt names in its messages */
        int r = parse(argc, argv, v->options, v->usage, &a);
        argv[0] = saved;
        if (r)
                return r < 0 ? CLI_OK : r;
        if (a.token && !a.url)
                return usage_error(&a, "--token goes with --url (the Unix socket needs none)");
        if (a.url && a.socket)
                return usage_error(&a, "--url and --socket exclude each other");
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                return fail(&a, "cannot initialize libcurl");
        struct client c = {0};
        r = client_open(&c, &a);
        if (r == CLI_OK)
                r = v->run(&c, &a);
        client_close(&c);
        curl_global_cleanup();
        return r;
}

int cmd_sandbox(int argc, char **argv)
{
        if (argc < 2) {
                fputs(main_usage, stderr);
                return CLI_USAGE;
        }
        if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
            strcmp(argv[1], "help") == 0) {
                fputs(main_usage, stdout);
                return CLI_OK;
        }
        for (size_t i = 0; i < ARRAY_SIZE(verbs); i++)
                if (strcmp(argv[1], verbs[i].name) == 0)
                        return run_verb(&verbs[i], argc - 1, argv + 1);
        fprintf(stderr, "vmsnap sandbox: unknown verb '%s'\n\n%s", argv[1], main_usage);
        return CLI_USAGE;
}
