/* `vmsnap sandbox` arguments: messages, value parsers (sizes, durations), and getopt_long
 * over the options every verb shares. */
#include "cli/sandbox.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- messages ----------------------------------------------------------------------------- */

int fail(const struct args *a, const char *fmt, ...)
{
        va_list ap;
        fprintf(stderr, "vmsnap sandbox %s: ", a->verb);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return CLI_FAIL;
}

int usage_error(const struct args *a, const char *fmt, ...)
{
        va_list ap;
        fprintf(stderr, "vmsnap sandbox %s: ", a->verb);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, " (see `vmsnap sandbox %s --help`)\n", a->verb);
        return CLI_USAGE;
}

/* ---- value parsers ------------------------------------------------------------------------ */

/* "512" (MiB), "512M", "512MiB", "2G", "2GiB" → MiB. Returns 0 or -EINVAL. */
int parse_mib(const char *s, uint64_t *ret)
{
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s || s[0] == '-')
                return -EINVAL;
        unsigned shift = 0;
        if (toupper((unsigned char)*end) == 'G')
                shift = 10;
        else if (*end && toupper((unsigned char)*end) != 'M')
                return -EINVAL;
        if (*end && strcasecmp(end + 1, "") && strcasecmp(end + 1, "iB") &&
            strcasecmp(end + 1, "B"))
                return -EINVAL;
        if (v == 0 || v > (UINT64_MAX >> 20 >> shift))
                return -EINVAL;
        *ret = (uint64_t)v << shift;
        return 0;
}

/* "90" (seconds), "500ms", "90s", "15m", "1h", "1d" → milliseconds. Returns 0 or -EINVAL. */
int parse_duration_ms(const char *s, uint64_t *ret)
{
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s || s[0] == '-')
                return -EINVAL;
        uint64_t mult;
        if (strcmp(end, "ms") == 0)
                mult = 1;
        else if (!*end || strcmp(end, "s") == 0)
                mult = 1000;
        else if (strcmp(end, "m") == 0)
                mult = 60000;
        else if (strcmp(end, "h") == 0)
                mult = 3600000;
        else if (strcmp(end, "d") == 0)
                mult = 86400000;
        else
                return -EINVAL;
        if (v > UINT64_MAX / mult)
                return -EINVAL;
        *ret = v * mult;
        return 0;
}

/* ---- options ------------------------------------------------------------------------------ */


static const struct option all_options[] = {
        {"root", required_argument, NULL, OPT_ROOT},
        {"socket", required_argument, NULL, OPT_SOCKET},
        {"url", required_argument, NULL, OPT_URL},
        {"token", required_argument, NULL, OPT_TOKEN},
        {"json", no_argument, NULL, OPT_JSON},
        {"all", no_argument, NULL, OPT_ALL},
        {"name", required_argument, NULL, OPT_NAME},
        {"vcpus", required_argument, NULL, OPT_VCPUS},
        {"memory", required_argument, NULL, OPT_MEMORY},
        {"vmm", required_argument, NULL, OPT_VMM},
        {"idle-timeout", required_argument, NULL, OPT_IDLE},
        {"template", required_argument, NULL, OPT_TEMPLATE},
        {"host", required_argument, NULL, OPT_HOST},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"shell", no_argument, NULL, OPT_SHELL},
        {"keep-name", no_argument, NULL, OPT_KEEP},
        {"signal", required_argument, NULL, OPT_SIGNAL},
        {"egress", required_argument, NULL, OPT_EGRESS},
        {"network", required_argument, NULL, OPT_NETWORK},
        {"interactive", no_argument, NULL, OPT_INTERACTIVE},
        {"tty", no_argument, NULL, OPT_TTY},
        {"detach", no_argument, NULL, OPT_DETACH},
        {"env", required_argument, NULL, OPT_ENV},
        {"workdir", required_argument, NULL, OPT_CWD},
        {"cwd", required_argument, NULL, OPT_CWD},
        {"help", no_argument, NULL, 'h'},
        {0},
};

static int set_value(struct args *a, int c, const char *v)
{
        uint64_t n;
        switch (c) {
        case OPT_VCPUS:
                n = strspn(v, "0123456789") == strlen(v) && strlen(v) <= 3 ? strtoul(v, NULL, 10)
                                                                           : 0;
                if (n == 0 || n > 256)
                        return usage_error(a, "--vcpus must be 1..256, not '%s'", v);
                a->vcpus = (uint32_t)n;
                return 0;
        case OPT_MEMORY:
                if (parse_mib(v, &a->memory_mib) < 0)
                        return usage_error(a,
                                           "--memory takes MiB or a size like 512M or 2G, "
                                           "not '%s'",
                                           v);
                return 0;
        case OPT_IDLE:
                if (parse_duration_ms(v, &n) < 0 || n / 1000 > UINT32_MAX)
                        return usage_error(a,
                                           "--idle-timeout takes a duration like 0, 300, "
                                           "15m or 1h, not '%s'",
                                           v);
                a->idle_set = true;
                a->idle_timeout = n / 1000;
                return 0;
        case OPT_TIMEOUT:
                if (parse_duration_ms(v, &a->timeout_ms) < 0 || a->timeout_ms == 0)
                        return usage_error(a,
                                           "--timeout takes a duration like 500ms, 30s or "
                                           "5m, not '%s'",
                                           v);
                return 0;
        }
        return 0;
}

/* The options of exec, shell, rm and kill. */
static int set_flag(struct args *a, int c, const char *v)
{
        switch (c) {
        case OPT_INTERACTIVE:
                a->interactive = true;
                return 0;
        case OPT_TTY:
                a->tty = true;
                return 0;
        case OPT_DETACH:
                a->detach = true;
                return 0;
        case OPT_SHELL:
                a->shell = true;
                return 0;
        case OPT_KEEP:
                a->keep = true;
                return 0;
        case OPT_CWD:
                a->cwd = v;
                return 0;
        case OPT_SIGNAL:
                a->signal_name = v;
                return 0;
        case OPT_ENV:
                if (!strchr(v, '=') || v[0] == '=')
                        return usage_error(a, "--env takes NAME=value, not '%s'", v);
                if (a->nenv == (int)(sizeof(a->env) / sizeof(a->env[0])))
                        return usage_error(a, "at most %zu --env", sizeof(a->env) / sizeof(a->env[0]));
                a->env[a->nenv++] = v;
                return 0;
        }
        return set_value(a, c, v);
}

static int set_option(struct args *a, int c, const char *v)
{
        switch (c) {
        case OPT_ROOT:
                a->root = v;
                break;
        case OPT_SOCKET:
                a->socket = v;
                break;
        case OPT_URL:
                a->url = v;
                break;
        case OPT_TOKEN:
                a->token = v;
                break;
        case OPT_JSON:
                a->json = true;
                break;
        case OPT_ALL:
                a->all = true;
                break;
        case OPT_NAME:
                a->name = v;
                break;
        case OPT_VMM:
                a->vmm = v;
                break;
        case OPT_TEMPLATE:
                a->template_ref = v;
                break;
        case OPT_HOST:
                if (!*v)
                        return usage_error(a, "--host takes a cluster host's id");
                a->host = v;
                break;
        case OPT_EGRESS:
                if (!*v)
                        return usage_error(a, "--egress takes allow, deny or CIDR[,CIDR...]");
                a->egress = v;
                if (a->no_network)
                        return usage_error(a, "--egress and --network none exclude each other");
                break;
        case OPT_NETWORK:
                if (strcmp(v, "none") != 0)
                        return usage_error(a, "--network takes only 'none' (a sandbox gets a "
                                              "network by default when vmsnapd has --network)");
                a->no_network = true;
                if (a->egress)
                        return usage_error(a, "--egress and --network none exclude each other");
                break;
        default:
                return set_flag(a, c, v);
        }
        return 0;
}

/* The long name of option c (short options have one too). */
static const char *option_name(int c)
{
        for (const struct option *o = all_options; o->name; o++)
                if (o->val == c)
                        return o->name;
        return "?";
}

/* True when option c applies to a verb that accepts the options in ok (0-terminated). */
static bool allowed(const int *ok, int c)
{
        if (c == 'h' || (c >= OPT_ROOT && c <= OPT_JSON))
                return true;
        for (; *ok; ok++)
                if (*ok == c)
                        return true;
        return false;
}

/* Returns 0, -1 after --help, or the usage exit code. */
int parse(int argc, char **argv, const int *ok, const char *usage, struct args *a)
{
        int c, idx;
        optind = 1;
        opterr = 1;
        while ((c = getopt_long(argc, argv, "hitde:w:", all_options, &idx)) != -1) {
                if (c == '?')
                        return CLI_USAGE;
                if (c == 'h') {
                        fputs(usage, stdout);
                        return -1;
                }
                if (!allowed(ok, c))
                        return usage_error(a, "option --%s does not apply here", option_name(c));
                int r = set_option(a, c, optarg);
                if (r)
                        return r;
        }
        a->nargs = argc - optind;
        a->args = argv + optind;
        return 0;
}

