/* The demo: create a sandbox, write a file and start a counter in it, pause (the VMM process
 * and its memory are released), resume, and show that the file and the counter survived.
 * It calls libvmsnap directly, like the handlers do, and prints each step with its time on
 * stdout; the sandbox is left running for the reader to poke at with `vmsnap sandbox`. */
#include "api/demo.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEMO_FILE_CMD                                                                              \
        "f=/mnt/data/demo.txt; [ -d /mnt/data ] || f=/tmp/demo.txt; "                              \
        "echo \"written before the pause\" > $f && echo $f"
#define DEMO_COUNTER_CMD                                                                           \
        "(i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 1; done) "                 \
        ">/dev/null 2>&1 &"

struct demo {
        struct api_server *srv;
        char socket_path[256];
        char id[VMSNAP_ID_LEN + 1];
        char file[128];
};

static bool stopping(const struct demo *dm)
{
        return __atomic_load_n(&dm->srv->shutting_down, __ATOMIC_SEQ_CST);
}

/* Sleeps ms milliseconds in short steps; false when the daemon began to shut down. */
static bool demo_sleep(const struct demo *dm, unsigned ms)
{
        for (unsigned slept = 0; slept < ms && !stopping(dm); slept += 100)
                nanosleep(&(struct timespec){.tv_nsec = 100 * 1000000L}, NULL);
        return !stopping(dm);
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void say(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        fputs("demo: ", stdout);
        vprintf(fmt, ap);
        fputc('\n', stdout);
        fflush(stdout);
        va_end(ap);
}

static bool failed(const char *step, int r, const struct vmsnap_diag *d)
{
        say("%s failed: %s; the daemon keeps serving", step, d->msg[0] ? d->msg : strerror(-r));
        return false;
}

/* Runs cmd in the demo sandbox; on success *out is its stdout (malloc'd, trailing newline
 * removed). */
static bool demo_exec(struct demo *dm, const char *cmd, char **out)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_exec_result res = {0};
        int r = vmsnap_sandbox_exec(dm->srv->host, dm->id, cmd, 30000, &res, &d);
        if (r < 0)
                return failed("exec", r, &d);
        if (res.exit_code != 0) {
                say("exec `%s` exited %d: %s", cmd, res.exit_code, res.err ? res.err : "");
                vmsnap_exec_result_free(&res);
                return false;
        }
        size_t n = res.out ? strlen(res.out) : 0;
        while (n && res.out[n - 1] == '\n')
                res.out[--n] = '\0';
        *out = res.out;
        res.out = NULL;
        vmsnap_exec_result_free(&res);
        return true;
}

static bool read_counter(struct demo *dm, unsigned long *ret)
{
        char *out = NULL;
        if (!demo_exec(dm, "cat /tmp/counter", &out))
                return false;
        *ret = strtoul(out, NULL, 10);
        free(out);
        return true;
}

static bool step_create(struct demo *dm)
{
        struct vmsnap_diag d = {0};
        char name[32];
        snprintf(name, sizeof(name), "demo-%lld", (long long)time(NULL));
        struct vmsnap_sandbox_spec spec = {.name = name};
        struct vmsnap_sandbox sb;
        struct timespec t0;
        say("creating sandbox %s (the host's defaults: 1 vCPU, 256 MiB) ...", name);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int r = vmsnap_sandbox_create(dm->srv->host, &spec, &sb, &d);
        if (r < 0)
                return failed("create", r, &d);
        memcpy(dm->id, sb.id, sizeof(dm->id));
        say("created %s in %.0f ms: %s, %s, VMM pid %d", sb.id, api_elapsed(&t0) * 1000,
            vmsnap_sandbox_state_name(sb.state), sb.vmm, (int)sb.pid);
        return true;
}

static bool step_start_work(struct demo *dm)
{
        char *out = NULL;
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (!demo_exec(dm, DEMO_FILE_CMD, &out))
                return false;
        snprintf(dm->file, sizeof(dm->file), "%s", out);
        free(out);
        if (!demo_exec(dm, DEMO_COUNTER_CMD, &out))
                return false;
        free(out);
        say("exec: wrote %s and started a counter in /tmp/counter (+1 a second) in %.0f ms",
            dm->file, api_elapsed(&t0) * 1000);
        return true;
}

static bool step_pause_resume(struct demo *dm, bool pause)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_sandbox sb;
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int r = pause ? vmsnap_sandbox_pause(dm->srv->host, dm->id, &sb, &d)
                      : vmsnap_sandbox_resume(dm->srv->host, dm->id, &sb, &d);
        if (r < 0)
                return failed(pause ? "pause" : "resume", r, &d);
        if (pause)
                say("paused in %.0f ms: state %s, snapshot generation %llu, VMM process %s",
                    api_elapsed(&t0) * 1000, vmsnap_sandbox_state_name(sb.state),
                    (unsigned long long)sb.generation, sb.pid ? "still there (!)" : "gone");
        else
                say("resumed in %.0f ms: state %s, new VMM pid %d", api_elapsed(&t0) * 1000,
                    vmsnap_sandbox_state_name(sb.state), (int)sb.pid);
        return true;
}

static bool step_check(struct demo *dm, unsigned long before)
{
        char cmd[160], *out = NULL;
        unsigned long after, later;
        snprintf(cmd, sizeof(cmd), "cat %s", dm->file);
        if (!demo_exec(dm, cmd, &out))
                return false;
        if (!read_counter(dm, &after)) {
                free(out);
                return false;
        }
        say("after resume: %s says \"%s\"; the counter reads %lu (it read %lu before the pause)",
            dm->file, out, after, before);
        free(out);
        if (!demo_sleep(dm, 2000) || !read_counter(dm, &later))
                return false;
        bool ok = after >= before && later > after;
        say("two seconds later the counter reads %lu: %s", later,
            ok ? "the guest went on from where it was paused"
               : "UNEXPECTED: the counter did not continue");
        return ok;
}

static void *demo_main(void *p)
{
        struct demo *dm = p;
        unsigned long before = 0;
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        bool ok = step_create(dm) && step_start_work(dm) && demo_sleep(dm, 2500) &&
                  read_counter(dm, &before) && step_pause_resume(dm, true) &&
                  demo_sleep(dm, 2000) && step_pause_resume(dm, false) && step_check(dm, before);
        if (ok)
                say("done in %.1f s. The sandbox keeps running; try\n"
                    "  vmsnap sandbox exec --socket %s %s -- cat /tmp/counter\n"
                    "  vmsnap sandbox rm --socket %s %s",
                    api_elapsed(&t0), dm->socket_path, dm->id, dm->socket_path, dm->id);
        free(dm);
        return NULL;
}

int api_demo_start(struct api_server *srv, const char *socket_path, pthread_t *ret)
{
        struct demo *dm = calloc(1, sizeof(*dm));
        if (!dm)
                return -ENOMEM;
        dm->srv = srv;
        snprintf(dm->socket_path, sizeof(dm->socket_path), "%s", socket_path);
        int r = pthread_create(ret, NULL, demo_main, dm);
        if (r) {
                free(dm);
                return -r;
        }
        return 0;
}
