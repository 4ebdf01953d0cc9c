/* exec with collected output: a command's stdout and stderr gathered (up to 1 MiB each) into
 * a vmsnap_exec_result, on top of the streams of session.c. A sandbox whose agent speaks only
 * protocol 1 (a template made before protocol 2) runs a shell line through the old `exec`. */
#include "sandbox/internal.h"
#include "util/cleanup.h"

#include <vmsnap/exec.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COLLECT_MAX (1u << 20) /* bytes kept per stream; the rest is read and dropped */

struct collected {
        char *data;
        size_t len;
};

/* Keeps up to COLLECT_MAX bytes of p. Returns false when it had to drop some. */
static bool keep(struct collected *c, const void *p, size_t n)
{
        size_t room = COLLECT_MAX - c->len, take = MIN(n, room);
        if (take) {
                char *grown = realloc(c->data, c->len + take + 1);
                if (!grown)
                        return false;
                memcpy(grown + c->len, p, take);
                c->data = grown;
                c->len += take;
                c->data[c->len] = '\0';
        }
        return take == n;
}

/* Feeds stdin (all of it, then EOF) and reads events until the end. */
static int pump(struct vmsnap_stream *s, const void *in, size_t in_len,
                struct vmsnap_exec_result *ret, struct collected out[2], struct vmsnap_diag *d)
{
        int r = 0;
        if (in_len)
                r = vmsnap_stream_write(s, in, in_len, d);
        if (r == 0 || r == -EPIPE)
                r = vmsnap_stream_close_input(s, d);
        for (;;) {
                struct vmsnap_stream_event ev;
                if (r < 0 || (r = vmsnap_stream_next(s, &ev, d)) < 0)
                        return r;
                if (ev.kind == VMSNAP_STREAM_STDOUT || ev.kind == VMSNAP_STREAM_STDERR) {
                        if (!keep(&out[ev.kind == VMSNAP_STREAM_STDERR], ev.data, ev.len))
                                ret->truncated = true;
                        continue;
                }
                if (ev.kind == VMSNAP_STREAM_ERROR)
                        return vmsnap_diag(d, ev.err, "%s", ev.message);
                ret->exit_code = ev.exit_code;
                ret->signal = ev.signal;
                ret->timed_out = ev.timed_out;
                return 0;
        }
}

int vmsnap_exec_collect(struct vmsnap_host *h, const char *ref, const struct vmsnap_exec_spec *spec,
                        const void *in, size_t in_len, struct vmsnap_exec_result *ret,
                        struct vmsnap_diag *d)
{
        if (!ret || spec->detach)
                return vmsnap_diag(d, -EINVAL, "exec: collecting needs an attached command");
        memset(ret, 0, sizeof(*ret));
        struct vmsnap_exec_spec with_stdin = *spec;
        with_stdin.with_stdin = spec->with_stdin || in_len > 0;
        struct vmsnap_stream *s;
        int r = vmsnap_exec_start(h, ref, &with_stdin, &s, NULL, d);
        if (r < 0)
                return r;
        struct collected out[2] = {{0}};
        r = pump(s, in, in_len, ret, out, d);
        vmsnap_stream_free(s);
        ret->out = out[0].data ? out[0].data : strdup("");
        ret->err = out[1].data ? out[1].data : strdup("");
        ret->out_len = out[0].len;
        ret->err_len = out[1].len;
        if (r == 0 && (!ret->out || !ret->err))
                r = vmsnap_diag(d, -ENOMEM, "out of memory");
        if (r < 0)
                vmsnap_exec_result_free(ret);
        return r;
}

/* The old exec of protocol 1: a shell line, its output as JSON strings. */
static int exec_lines(struct vmsnap_host *h, struct live *l, struct vmsnap_sandbox *sb,
                      const char *cmd, unsigned timeout_ms, struct vmsnap_exec_result *ret,
                      struct vmsnap_diag *d)
{
        if (sb->state != VMSNAP_SANDBOX_RUNNING || !l->vm)
                return vmsnap_diag(d, -EBUSY, "sandbox %s is %s, not running", sb->id,
                                   vmsnap_sandbox_state_name(sb->state));
        json_t *resp = NULL;
        json_t *req = json_pack("{s:s, s:s, s:i}", "op", "exec", "cmd", cmd, "timeout_ms",
                                (int)timeout_ms);
        int r = agent_call(l, req, (int)timeout_ms + 5000, &resp, d);
        json_decref(req);
        if (r < 0)
                return r;
        const char *out = json_string_value(json_object_get(resp, "stdout"));
        const char *err = json_string_value(json_object_get(resp, "stderr"));
        ret->exit_code = (int)json_integer_value(json_object_get(resp, "exit"));
        ret->signal = (int)json_integer_value(json_object_get(resp, "signal"));
        ret->timed_out = json_is_true(json_object_get(resp, "timed_out"));
        ret->truncated = json_is_true(json_object_get(resp, "truncated"));
        ret->out = strdup(out ? out : "");
        ret->err = strdup(err ? err : "");
        ret->out_len = ret->out ? strlen(ret->out) : 0;
        ret->err_len = ret->err ? strlen(ret->err) : 0;
        json_decref(resp);
        sb->last_active = (int64_t)time(NULL);
        db_put(h, sb, NULL);
        return ret->out && ret->err ? 0 : vmsnap_diag(d, -ENOMEM, "out of memory");
}

static int exec_protocol1(struct vmsnap_host *h, const char *ref, const char *cmd,
                          unsigned timeout_ms, struct vmsnap_exec_result *ret,
                          struct vmsnap_diag *d)
{
        struct live *l;
        struct vmsnap_sandbox sb;
        int r = op_begin(h, ref, &l, &sb, d);
        if (r < 0)
                return r;
        r = exec_lines(h, l, &sb, cmd, timeout_ms, ret, d);
        op_end(l);
        return r;
}

int vmsnap_sandbox_exec(struct vmsnap_host *h, const char *ref, const char *cmd,
                        unsigned timeout_ms, struct vmsnap_exec_result *ret,
                        struct vmsnap_diag *d)
{
        if (!cmd || !ret)
                return vmsnap_diag(d, -EINVAL, "exec: missing command");
        const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
        struct vmsnap_exec_spec spec = {.argv = argv, .timeout_ms = timeout_ms ? timeout_ms
                                                                                : 30000};
        int r = vmsnap_exec_collect(h, ref, &spec, NULL, 0, ret, d);
        if (r == -EPROTONOSUPPORT) {
                memset(ret, 0, sizeof(*ret));
                vmsnap_diag_clear(d);
                r = exec_protocol1(h, ref, cmd, spec.timeout_ms, ret, d);
                if (r < 0)
                        vmsnap_exec_result_free(ret);
        }
        return r;
}

void vmsnap_exec_result_free(struct vmsnap_exec_result *r)
{
        if (!r)
                return;
        free(r->out);
        free(r->err);
        r->out = r->err = NULL;
}
