/* The jailer's command line (docs/jail.md, "The jailer"): written by vmsnap_jail_argv with
 * every setting explicit, read back by jail_cmdline_parse in vmsnap-jailer. One format, one
 * file, so the two cannot drift apart. */
#include "jail/internal.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A growing NULL-terminated array of malloc'd strings; oom remembers a failed push. */
struct strv {
        char **v;
        size_t n, cap;
        bool oom;
};

static void push(struct strv *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void push(struct strv *a, const char *fmt, ...)
{
        if (a->oom)
                return;
        if (a->n + 2 > a->cap) {
                size_t cap = a->cap ? a->cap * 2 : 32;
                char **v = realloc(a->v, cap * sizeof(*v));
                if (!v) {
                        a->oom = true;
                        return;
                }
                a->v = v;
                a->cap = cap;
        }
        va_list ap;
        va_start(ap, fmt);
        int r = vasprintf(&a->v[a->n], fmt, ap);
        va_end(ap);
        if (r < 0) {
                a->oom = true;
                return;
        }
        a->v[++a->n] = NULL;
}

void vmsnap_jail_argv_free(char **argv)
{
        for (size_t i = 0; argv && argv[i]; i++)
                free(argv[i]);
        free(argv);
}

static int check_for_argv(const struct vmsnap_jail_spec *s, char *const vmm_argv[],
                          struct vmsnap_diag *d)
{
        if (s->seccomp)
                return vmsnap_diag(d, -EINVAL,
                                   "jail %s: vmsnap's seccomp filter is the page "
                                   "server's; a VMM brings its own",
                                   s->name);
        if (!vmm_argv || !jail_path_ok(vmm_argv[0]))
                return vmsnap_diag(d, -EINVAL,
                                   "jail %s: the VMM's path '%s' must be absolute "
                                   "(as seen inside the jail)",
                                   s->name, vmm_argv && vmm_argv[0] ? vmm_argv[0] : "");
        for (size_t i = 0; i < s->n_binds; i++)
                if (strchr(s->binds[i].source, ':') || strchr(s->binds[i].target, ':'))
                        return vmsnap_diag(d, -EINVAL,
                                           "jail %s: bind %s -> %s: a path with "
                                           "':' cannot be passed to the jailer",
                                           s->name, s->binds[i].source, s->binds[i].target);
        return 0;
}

static void push_config(struct strv *a, const struct jail_conf *c, int version)
{
        push(a, "--uids");
        push(a, "%u:%u", (unsigned)c->uid_first, c->uid_count);
        push(a, "--gid");
        push(a, "%u", (unsigned)c->shared_gid);
        push(a, "--cgroup-version");
        push(a, "%d", version);
        push(a, "--cgroup-root");
        push(a, "%s", c->cgroup_root);
        push(a, "--cgroup-parent");
        push(a, "%s", c->cgroup_parent);
}

static void push_spec(struct strv *a, const struct vmsnap_jail_spec *s)
{
        push(a, "--name");
        push(a, "%s", s->name);
        push(a, "--root");
        push(a, "%s", s->root_dir);
        push(a, "--uid");
        push(a, "%u", (unsigned)s->uid);
        if (s->limits.memory_max) {
                push(a, "--memory");
                push(a, "%llu", (unsigned long long)s->limits.memory_max);
        }
        if (s->limits.cpus) {
                push(a, "--cpus");
                push(a, "%u", s->limits.cpus);
        }
        if (s->limits.pids_max) {
                push(a, "--pids");
                push(a, "%u", s->limits.pids_max);
        }
        for (size_t i = 0; i < s->n_binds; i++) {
                push(a, s->binds[i].writable ? "--bind-rw" : "--bind");
                push(a, "%s:%s", s->binds[i].source, s->binds[i].target);
        }
        for (size_t i = 0; s->devices && s->devices[i]; i++) {
                push(a, "--dev");
                push(a, "%s", s->devices[i]);
        }
        for (size_t i = 0; s->env && s->env[i]; i++) {
                push(a, "--env");
                push(a, "%s", s->env[i]);
        }
        if (s->netns_path) {
                push(a, "--netns");
                push(a, "%s", s->netns_path);
        }
        if (s->readonly_memory) {
                push(a, "--memory-readonly");
                push(a, "%s", s->readonly_memory);
        }
        if (s->system_dirs)
                push(a, "--system-dirs");
        if (s->proc)
                push(a, "--proc");
        if (s->keep_fds)
                push(a, "--keep-fds");
}

int jail_argv_build(const struct vmsnap_jail_spec *s, char *const vmm_argv[], char ***ret,
                    struct vmsnap_diag *d)
{
        struct jail_conf c;
        if (!s || !s->config || s->config->disabled || !ret)
                return vmsnap_diag(d, -EINVAL, "jail: no spec, no config, or jails disabled");
        static char *const probe_argv[] = {"/", NULL};
        int r = jail_conf_resolve(s->config, &c, d);
        if (r == 0)
                r = jail_spec_check(s, &c, d);
        if (r == 0)
                r = check_for_argv(s, vmm_argv ? vmm_argv : probe_argv, d);
        if (r < 0)
                return r;
        int version = jail_cgroup_resolve(&c, d);
        if (version < 0)
                return version;
        char jailer[PATH_MAX];
        r = jail_jailer_path(&c, jailer, d);
        if (r < 0)
                return r;
        struct strv a = {0};
        push(&a, "%s", jailer);
        push_config(&a, &c, version);
        push_spec(&a, s);
        if (!vmm_argv)
                push(&a, "--probe");
        else
                push(&a, "--");
        for (size_t i = 0; vmm_argv && vmm_argv[i]; i++)
                push(&a, "%s", vmm_argv[i]);
        if (a.oom) {
                vmsnap_jail_argv_free(a.v);
                return vmsnap_diag(d, -ENOMEM, "jail %s: out of memory", s->name);
        }
        *ret = a.v;
        return 0;
}

int vmsnap_jail_argv(const struct vmsnap_jail_spec *s, char *const vmm_argv[], char ***ret,
                     struct vmsnap_diag *d)
{
        if (!vmm_argv || !vmm_argv[0])
                return vmsnap_diag(d, -EINVAL, "jail: no VMM command line");
        return jail_argv_build(s, vmm_argv, ret, d);
}

/* --- parsing (vmsnap-jailer) --- */

static int parse_u64(const char *opt, const char *s, uint64_t max, uint64_t *ret,
                     struct vmsnap_diag *d)
{
        char *end;
        errno = 0;
        unsigned long long v = s[0] >= '0' && s[0] <= '9' ? strtoull(s, &end, 10) : 0;
        if (s[0] < '0' || s[0] > '9' || errno || *end || v > max)
                return vmsnap_diag(d, -EINVAL, "%s '%s': expected a number up to %llu", opt, s,
                                   (unsigned long long)max);
        *ret = v;
        return 0;
}

/* Appends to a NULL-terminated array of borrowed strings. */
static int append(const char ***arr, size_t *n, const char *s)
{
        const char **v = realloc(*arr, (*n + 2) * sizeof(*v));
        if (!v)
                return -ENOMEM;
        v[(*n)++] = s;
        v[*n] = NULL;
        *arr = v;
        return 0;
}

/* "SRC:TARGET" with exactly one ':' (vmsnap_jail_argv refuses paths that hold one). */
static int add_bind(struct jail_cmdline *cl, char *arg, bool writable, struct vmsnap_diag *d)
{
        char *colon = strchr(arg, ':');
        if (!colon || strchr(colon + 1, ':'))
                return vmsnap_diag(d, -EINVAL, "--bind '%s': expected SOURCE:TARGET", arg);
        struct vmsnap_jail_bind *v = realloc(cl->binds, (cl->spec.n_binds + 1) * sizeof(*v));
        if (!v)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        *colon = '\0';
        cl->binds = v;
        cl->binds[cl->spec.n_binds++] = (struct vmsnap_jail_bind){arg, colon + 1, writable};
        return 0;
}

enum {
        OPT_NAME = 256,
        OPT_ROOT,
        OPT_UID,
        OPT_UIDS,
        OPT_GID,
        OPT_CG_VERSION,
        OPT_CG_ROOT,
        OPT_CG_PARENT,
        OPT_MEMORY,
        OPT_CPUS,
        OPT_PIDS,
        OPT_BIND,
        OPT_BIND_RW,
        OPT_DEV,
        OPT_ENV,
        OPT_NETNS,
        OPT_MEMORY_RO,
        OPT_SYSTEM_DIRS,
        OPT_PROC,
        OPT_KEEP_FDS,
        OPT_PROBE,
        OPT_PROBE_HANDOVER,
        OPT_HELP,
};

static const struct option options[] = {
        {"name", required_argument, NULL, OPT_NAME},
        {"root", required_argument, NULL, OPT_ROOT},
        {"uid", required_argument, NULL, OPT_UID},
        {"uids", required_argument, NULL, OPT_UIDS},
        {"gid", required_argument, NULL, OPT_GID},
        {"cgroup-version", required_argument, NULL, OPT_CG_VERSION},
        {"cgroup-root", required_argument, NULL, OPT_CG_ROOT},
        {"cgroup-parent", required_argument, NULL, OPT_CG_PARENT},
        {"memory", required_argument, NULL, OPT_MEMORY},
        {"cpus", required_argument, NULL, OPT_CPUS},
        {"pids", required_argument, NULL, OPT_PIDS},
        {"bind", required_argument, NULL, OPT_BIND},
        {"bind-rw", required_argument, NULL, OPT_BIND_RW},
        {"dev", required_argument, NULL, OPT_DEV},
        {"env", required_argument, NULL, OPT_ENV},
        {"netns", required_argument, NULL, OPT_NETNS},
        {"memory-readonly", required_argument, NULL, OPT_MEMORY_RO},
        {"system-dirs", no_argument, NULL, OPT_SYSTEM_DIRS},
        {"proc", no_argument, NULL, OPT_PROC},
        {"keep-fds", no_argument, NULL, OPT_KEEP_FDS},
        {"probe", no_argument, NULL, OPT_PROBE},
        {"probe-handover", no_argument, NULL, OPT_PROBE_HANDOVER},
        {"help", no_argument, NULL, OPT_HELP},
        {0},
};

static size_t count_strings(const char **v)
{
        size_t n = 0;
        while (v && v[n])
                n++;
        return n;
}

/* Options with a number. */
static int parse_number_option(struct jail_cmdline *cl, int opt, const char *arg,
                               struct vmsnap_diag *d)
{
        uint64_t v = 0;
        uint64_t max = opt == OPT_MEMORY                  ? UINT64_MAX
                       : opt == OPT_UID || opt == OPT_GID ? 0xfffffffeu
                                                          : UINT32_MAX;
        int r = parse_u64(opt == OPT_UID      ? "--uid"
                          : opt == OPT_GID    ? "--gid"
                          : opt == OPT_MEMORY ? "--memory"
                          : opt == OPT_CPUS   ? "--cpus"
                                              : "--pids",
                          arg, max, &v, d);
        if (r < 0)
                return r;
        if (opt == OPT_UID)
                cl->spec.uid = (uid_t)v;
        else if (opt == OPT_GID)
                cl->config.shared_gid = (gid_t)v;
        else if (opt == OPT_MEMORY)
                cl->spec.limits.memory_max = v;
        else if (opt == OPT_CPUS)
                cl->spec.limits.cpus = (uint32_t)v;
        else
                cl->spec.limits.pids_max = (uint32_t)v;
        return 0;
}

static int parse_option(struct jail_cmdline *cl, int opt, char *arg, struct vmsnap_diag *d)
{
        size_t n;
        switch (opt) {
        case OPT_NAME:
                cl->spec.name = arg;
                return 0;
        case OPT_ROOT:
                cl->spec.root_dir = arg;
                return 0;
        case OPT_UIDS:
                return vmsnap_jail_parse_uids(arg, &cl->config.uid_first, &cl->config.uid_count, d);
        case OPT_CG_VERSION:
                return vmsnap_jail_parse_cgroup_version(arg, &cl->config.cgroup_version, d);
        case OPT_CG_ROOT:
                cl->config.cgroup_root = arg;
                return 0;
        case OPT_CG_PARENT:
                cl->config.cgroup_parent = arg;
                return 0;
        case OPT_UID:
        case OPT_GID:
        case OPT_MEMORY:
        case OPT_CPUS:
        case OPT_PIDS:
                return parse_number_option(cl, opt, arg, d);
        case OPT_BIND:
        case OPT_BIND_RW:
                return add_bind(cl, arg, opt == OPT_BIND_RW, d);
        case OPT_DEV:
                n = count_strings(cl->devices);
                return append(&cl->devices, &n, arg) < 0 ? vmsnap_diag(d, -ENOMEM, "oom") : 0;
        case OPT_ENV:
                n = count_strings(cl->env);
                return append(&cl->env, &n, arg) < 0 ? vmsnap_diag(d, -ENOMEM, "oom") : 0;
        case OPT_NETNS:
                cl->spec.netns_path = arg;
                return 0;
        case OPT_MEMORY_RO:
                cl->spec.readonly_memory = arg;
                return 0;
        case OPT_SYSTEM_DIRS:
                cl->spec.system_dirs = true;
                return 0;
        case OPT_PROC:
                cl->spec.proc = true;
                return 0;
        case OPT_KEEP_FDS:
                cl->spec.keep_fds = true;
                return 0;
        case OPT_PROBE:
                cl->probe = true;
                return 0;
        case OPT_PROBE_HANDOVER:
                cl->probe_handover = true;
                return 0;
        case OPT_HELP:
                cl->help = true;
                return 0;
        default:
                return vmsnap_diag(d, -EINVAL, "unknown option (see --help)");
        }
}

int jail_cmdline_parse(int argc, char **argv, struct jail_cmdline *ret, struct vmsnap_diag *d)
{
        struct jail_cmdline cl = {0};
        int opt, r = 0;
        optind = 0; /* glibc: start afresh (the tests parse several command lines) */
        opterr = 0;
        while (r == 0 && (opt = getopt_long(argc, argv, "+", options, NULL)) != -1)
                r = opt == '?' ? vmsnap_diag(d, -EINVAL,
                                             "unknown option or missing value: "
                                             "'%s' (see --help)",
                                             argv[optind - 1])
                               : parse_option(&cl, opt, optarg, d);
        if (r == 0 && !cl.help && !cl.probe && !cl.probe_handover) {
                if (optind < 2 || optind > argc || strcmp(argv[optind - 1], "--") != 0 ||
                    optind == argc)
                        r = vmsnap_diag(d, -EINVAL,
                                        "expected '-- VMM [ARG]...' after the "
                                        "options");
                else
                        cl.vmm_argv = argv + optind;
        } else if (r == 0 && optind < argc)
                r = vmsnap_diag(d, -EINVAL, "unexpected argument '%s'", argv[optind]);
        if (r < 0) {
                jail_cmdline_free(&cl);
                return r;
        }
        cl.spec.config = &ret->config;
        cl.spec.binds = cl.binds;
        cl.spec.devices = cl.devices;
        cl.spec.env = cl.env;
        *ret = cl;
        return 0;
}

void jail_cmdline_free(struct jail_cmdline *cl)
{
        free(cl->binds);
        free(cl->devices);
        free(cl->env);
        cl->binds = NULL;
        cl->devices = cl->env = NULL;
}
