/* Streams in a running sandbox (include/vmsnap/exec.h): commands started with argv exactly as
 * given, files read and written, and the agent calls that go with them (stat, list,
 * remove, ps, kill). Each start takes the sandbox's operation lock only to check that it
 * runs and to send the START; the stream then lives on the agent channel without it. */
#include "sandbox/channel-internal.h"
#include "util/cleanup.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define START_TIMEOUT_MS 30000 /* a START is answered as soon as the process forked */
#define CALL_TIMEOUT_MS  30000

struct vmsnap_stream {
        struct chan_stream *cs;
};

/* "name (id)" or "id", for messages. */
static const char *label(const struct vmsnap_sandbox *sb, char out[VMSNAP_NAME_MAX + 48])
{
        if (sb->name[0])
                snprintf(out, VMSNAP_NAME_MAX + 48, "%s (%s)", sb->name, sb->id);
        else
                snprintf(out, VMSNAP_NAME_MAX + 48, "%s", sb->id);
        return out;
}

/* ---- the START payload -------------------------------------------------------------------- */

struct payload {
        uint8_t data[FRAME_MAX];
        size_t len;
};

static bool put_string(struct payload *p, const char *s)
{
        size_t n = strlen(s) + 1;
        if (p->len + n > sizeof(p->data))
                return false;
        memcpy(p->data + p->len, s, n);
        p->len += n;
        return true;
}

static size_t count(const char *const *v)
{
        size_t n = 0;
        while (v && v[n])
                n++;
        return n;
}

/* Encodes a START (docs/guest.md §2.2): the fixed part, argv, env, then last (cwd or path). */
static int encode_start(struct payload *p, const struct start_fixed *f, const char *const *argv,
                        const char *const *env, const char *last, struct vmsnap_diag *d)
{
        start_fixed_put(p->data, f);
        p->len = START_FIXED;
        for (size_t i = 0; i < f->argc; i++)
                if (!put_string(p, argv[i]))
                        goto too_long;
        for (size_t i = 0; i < f->envc; i++)
                if (!put_string(p, env[i]))
                        goto too_long;
        if (put_string(p, last ? last : ""))
                return 0;
too_long:
        return vmsnap_diag(d, -EINVAL, "the command line, environment and directory are over "
                           "%u bytes together", FRAME_MAX - START_FIXED);
}

static int check_spec(const struct vmsnap_exec_spec *spec, struct vmsnap_diag *d)
{
        if (!spec || !spec->argv || !spec->argv[0] || !spec->argv[0][0])
                return vmsnap_diag(d, -EINVAL, "exec: no program given");
        if (count(spec->argv) > UINT16_MAX || count(spec->env) > UINT16_MAX)
                return vmsnap_diag(d, -EINVAL, "exec: more than 65535 arguments or variables");
        for (size_t i = 0; spec->env && spec->env[i]; i++)
                if (!strchr(spec->env[i], '=') || spec->env[i][0] == '=')
                        return vmsnap_diag(d, -EINVAL, "exec: '%s' is not NAME=value",
                                           spec->env[i]);
        if (spec->detach && (spec->tty || spec->with_stdin))
                return vmsnap_diag(d, -EINVAL, "exec: a background process has no terminal "
                                   "and no stdin");
        return 0;
}

/* ---- opening a stream --------------------------------------------------------------------- */

/* Under the sandbox's lock: checks that it runs, opens a stream on its channel and sends
 * START. The stream is answered later, without the lock. */
static int open_stream(struct vmsnap_host *h, const char *ref, const struct payload *start,
                       bool with_data, struct chan_stream **ret, struct vmsnap_diag *d)
{
        struct live *l;
        struct vmsnap_sandbox sb;
        char name[VMSNAP_NAME_MAX + 48];
        int r = op_begin(h, ref, &l, &sb, d);
        if (r < 0)
                return r;
        struct chan *c = NULL;
        struct chan_stream *cs = NULL;
        if (sb.state != VMSNAP_SANDBOX_RUNNING || !l->vm)
                r = vmsnap_diag(d, -EBUSY, "sandbox %s is %s, not running", label(&sb, name),
                                vmsnap_sandbox_state_name(sb.state));
        else if ((r = chan_get(l, label(&sb, name), START_TIMEOUT_MS, &c, d)) < 0)
                ; /* d says why */
        else if (!(cs = chan_stream_new(c, with_data)))
                r = vmsnap_diag(d, -ENOMEM, "out of memory");
        else if ((r = chan_stream_send(cs, FRAME_START, start->data, start->len, d)) == 0) {
                sb.last_active = (int64_t)time(NULL);
                db_put(h, &sb, NULL);
        }
        chan_put(c);
        op_end(l);
        if (r < 0) {
                chan_stream_free(cs);
                return r;
        }
        *ret = cs;
        return 0;
}

/* Opens a stream and waits for STARTED; returns its JSON text (malloc'd). */
static int start_stream(struct vmsnap_host *h, const char *ref, const struct payload *start,
                        bool with_data, struct chan_stream **ret, char **ret_started,
                        struct vmsnap_diag *d)
{
        struct chan_stream *cs = NULL;
        int r = open_stream(h, ref, start, with_data, &cs, d);
        if (r < 0)
                return r;
        if ((r = chan_stream_started(cs, START_TIMEOUT_MS, ret_started, d)) < 0) {
                chan_stream_free(cs);
                return r;
        }
        *ret = cs;
        return 0;
}

static struct vmsnap_stream *wrap(struct chan_stream *cs, struct vmsnap_diag *d)
{
        struct vmsnap_stream *s = malloc(sizeof(*s));
        if (!s) {
                chan_stream_free(cs);
                vmsnap_diag(d, -ENOMEM, "out of memory");
                return NULL;
        }
        s->cs = cs;
        return s;
}

int vmsnap_exec_start(struct vmsnap_host *h, const char *ref, const struct vmsnap_exec_spec *spec,
                      struct vmsnap_stream **ret, struct vmsnap_exec_started *ret_started,
                      struct vmsnap_diag *d)
{
        int r = check_spec(spec, d);
        if (r < 0)
                return r;
        _cleanup_free_ struct payload *p = malloc(sizeof(*p));
        if (!p)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        struct start_fixed f = {
                .kind = START_EXEC,
                .flags = (uint8_t)((spec->tty ? START_TTY : 0) |
                                   (spec->with_stdin ? START_STDIN : 0) |
                                   (spec->detach ? START_DETACH : 0)),
                .rows = spec->rows,
                .cols = spec->cols,
                .argc = (uint16_t)count(spec->argv),
                .envc = (uint16_t)count(spec->env),
                .arg = spec->timeout_ms,
        };
        if ((r = encode_start(p, &f, spec->argv, spec->env, spec->cwd, d)) < 0)
                return r;
        struct chan_stream *cs = NULL;
        _cleanup_free_ char *started = NULL;
        if ((r = start_stream(h, ref, p, !spec->detach, &cs, &started, d)) < 0)
                return r;
        json_t *o = json_loads(started, 0, NULL);
        struct vmsnap_exec_started st = {.pid = (int)json_integer_value(json_object_get(o, "pid"))};
        const char *log = json_string_value(json_object_get(o, "log"));
        snprintf(st.log, sizeof(st.log), "%s", log ? log : "");
        json_decref(o);
        if (ret_started)
                *ret_started = st;
        if (spec->detach) { /* the agent ended the stream with STARTED */
                chan_stream_free(cs);
                *ret = NULL;
                return 0;
        }
        return (*ret = wrap(cs, d)) ? 0 : -ENOMEM;
}

/* Opens a file stream of kind START_READ or START_WRITE. */
static int file_start(struct vmsnap_host *h, const char *ref, const char *path, uint8_t kind,
                      unsigned mode, struct vmsnap_stream **ret, struct vmsnap_diag *d)
{
        if (!path || path[0] != '/')
                return vmsnap_diag(d, -EINVAL, "a guest path must be absolute, not '%s'",
                                   path ? path : "");
        if (mode > 07777)
                return vmsnap_diag(d, -EINVAL, "mode %o is over 07777", mode);
        _cleanup_free_ struct payload *p = malloc(sizeof(*p));
        if (!p)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        struct start_fixed f = {.kind = kind, .arg = mode};
        int r = encode_start(p, &f, NULL, NULL, path, d);
        struct chan_stream *cs = NULL;
        _cleanup_free_ char *started = NULL;
        if (r == 0)
                r = start_stream(h, ref, p, kind == START_READ, &cs, &started, d);
        if (r < 0)
                return r;
        return (*ret = wrap(cs, d)) ? 0 : -ENOMEM;
}

int vmsnap_file_read_start(struct vmsnap_host *h, const char *ref, const char *path,
                           struct vmsnap_stream **ret, struct vmsnap_diag *d)
{
        return file_start(h, ref, path, START_READ, 0, ret, d);
}

int vmsnap_file_write_start(struct vmsnap_host *h, const char *ref, const char *path,
                            unsigned mode, struct vmsnap_stream **ret, struct vmsnap_diag *d)
{
        return file_start(h, ref, path, START_WRITE, mode, ret, d);
}

/* ---- using a stream ----------------------------------------------------------------------- */

int vmsnap_stream_next(struct vmsnap_stream *s, struct vmsnap_stream_event *ret,
                       struct vmsnap_diag *d)
{
        return chan_stream_next(s->cs, ret, d);
}

int vmsnap_stream_write(struct vmsnap_stream *s, const void *p, size_t n, struct vmsnap_diag *d)
{
        return chan_stream_write(s->cs, p, n, d);
}

int vmsnap_stream_close_input(struct vmsnap_stream *s, struct vmsnap_diag *d)
{
        return chan_stream_send(s->cs, FRAME_STDIN_EOF, NULL, 0, d);
}

int vmsnap_stream_resize(struct vmsnap_stream *s, uint16_t rows, uint16_t cols,
                         struct vmsnap_diag *d)
{
        uint8_t p[4];
        if (!rows || !cols)
                return vmsnap_diag(d, -EINVAL, "a window size needs rows and columns");
        wire_put16(p, rows);
        wire_put16(p + 2, cols);
        return chan_stream_send(s->cs, FRAME_RESIZE, p, sizeof(p), d);
}

int vmsnap_stream_signal(struct vmsnap_stream *s, int signo, struct vmsnap_diag *d)
{
        uint8_t p[4];
        if (signo <= 0 || signo > 64)
                return vmsnap_diag(d, -EINVAL, "signal %d is not 1..64", signo);
        wire_put32(p, (uint32_t)signo);
        return chan_stream_send(s->cs, FRAME_SIGNAL, p, sizeof(p), d);
}

void vmsnap_stream_cancel(struct vmsnap_stream *s)
{
        chan_stream_cancel(s->cs);
}

void vmsnap_stream_free(struct vmsnap_stream *s)
{
        if (!s)
                return;
        chan_stream_free(s->cs);
        free(s);
}

/* ---- agent calls -------------------------------------------------------------------------- */

static bool call_allowed(const char *op)
{
        static const char *const ops[] = {"stat", "list", "remove", "ps", "kill", "health"};
        for (size_t i = 0; op && i < ARRAY_SIZE(ops); i++)
                if (strcmp(op, ops[i]) == 0)
                        return true;
        return false;
}

int vmsnap_sandbox_agent_call(struct vmsnap_host *h, const char *ref, const char *request,
                              char **ret, struct vmsnap_diag *d)
{
        json_t *req = request ? json_loads(request, 0, NULL) : NULL;
        bool ok = call_allowed(json_string_value(json_object_get(req, "op")));
        json_decref(req);
        if (!ok)
                return vmsnap_diag(d, -EINVAL, "agent call: op must be one of stat, list, "
                                   "remove, ps, kill, health");
        struct live *l;
        struct vmsnap_sandbox sb;
        char name[VMSNAP_NAME_MAX + 48];
        int r = op_begin(h, ref, &l, &sb, d);
        if (r < 0)
                return r;
        struct chan *c = NULL;
        json_t *answer = NULL;
        if (sb.state != VMSNAP_SANDBOX_RUNNING || !l->vm)
                r = vmsnap_diag(d, -EBUSY, "sandbox %s is %s, not running", label(&sb, name),
                                vmsnap_sandbox_state_name(sb.state));
        else if ((r = chan_get(l, label(&sb, name), CALL_TIMEOUT_MS, &c, d)) == 0)
                r = chan_call(c, label(&sb, name), request, CALL_TIMEOUT_MS, &answer, d);
        chan_put(c);
        op_end(l);
        if (r < 0)
                return r;
        json_object_del(answer, "ok");
        *ret = json_dumps(answer, JSON_COMPACT);
        json_decref(answer);
        return *ret ? 0 : vmsnap_diag(d, -ENOMEM, "out of memory");
}
