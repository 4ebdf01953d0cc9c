/* POST /v1/sandboxes/{ref}/exec in its four answers (docs/api.md, Exec): JSON once it ended,
 * a stream of frames, an upgraded connection, a background process; and the processes
 * routes. Everything that can fail before the command starts is an ordinary JSON error. */
#include "api/exec-routes.h"
#include "api/forward.h"
#include "api/forward-stream.h"
#include "api/forward-upgrade.h"
#include "api/body.h"
#include "api/exec-body.h"
#include "api/exec-frames.h"
#include "api/json.h"
#include "api/model.h"
#include "api/server.h"
#include "api/stream.h"
#include "util/cleanup.h"

#include <vmsnap/exec.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum exec_answer { ANSWER_JSON, ANSWER_FRAMES, ANSWER_UPGRADE };

/* ---- helpers shared with files.c ---------------------------------------------------------- */

int api_guest_errno(int err)
{
        switch (-err) {
        case ENOENT:
        case ESRCH:
                return -ENOENT;
        case EISDIR:
        case ENOTDIR:
        case ENOTEMPTY:
        case ELOOP:
        case ENAMETOOLONG:
        case EINVAL:
        case EACCES:
        case EPERM:
        case EROFS:
        case ETXTBSY:
        case EXDEV:
        case E2BIG:
                return -EINVAL;
        case EDQUOT:
        case EFBIG:
        case ENOSPC:
                return -ENOSPC;
        case EPROTONOSUPPORT:
                return -EOPNOTSUPP;
        case ECONNRESET:
        case EPIPE:
        case ECANCELED:
                return -ENOTCONN;
        case EEXIST:
        case EBUSY:
        case ENOTCONN:
        case ETIMEDOUT:
        case ENOMEM:
        case EAGAIN:
        case EPROTO:
        case ENOTUNIQ:
        case EOPNOTSUPP:
                return err;
        }
        return -EPROTO;
}

void api_reply_guest_error(struct api_reply *rep, int err, const struct vmsnap_diag *d)
{
        api_reply_errno(rep, api_guest_errno(err), d);
}

/* ---- exec --------------------------------------------------------------------------------- */

static bool header_has(const struct api_call *call, const char *name, const char *token)
{
        const char *v = call->header ? call->header(call->query_ctx, name) : NULL;
        size_t n = strlen(token);
        for (; v && *v; v++)
                if (strncasecmp(v, token, n) == 0)
                        return true;
        return false;
}

static enum exec_answer answer_of(const struct api_call *call)
{
        if (header_has(call, "Upgrade", API_EXEC_UPGRADE) &&
            header_has(call, "Connection", "upgrade"))
                return ANSWER_UPGRADE;
        if (header_has(call, "Accept", API_EXEC_FRAMES_TYPE))
                return ANSWER_FRAMES;
        return ANSWER_JSON;
}

static struct vmsnap_exec_spec spec_of(const struct api_exec_body *b)
{
        return (struct vmsnap_exec_spec){
                .argv = (const char *const *)b->argv,
                .env = (const char *const *)b->env,
                .cwd = b->cwd,
                .timeout_ms = b->timeout_ms,
                .tty = b->tty,
                .with_stdin = b->in != NULL,
                .detach = b->background,
                .rows = b->rows,
                .cols = b->cols,
        };
}

/* A body that is just {"cmd"}: what a protocol-1 agent can still run. */
static bool plain_cmd(const struct api_exec_body *b)
{
        return b->argv[0] && strcmp(b->argv[0], "/bin/sh") == 0 && b->argv[1] &&
               strcmp(b->argv[1], "-c") == 0 && b->argv[2] && !b->argv[3] && !b->env &&
               !b->cwd && !b->in && !b->tty;
}

static void answer_json(struct api_server *srv, const struct api_call *call,
                        struct api_exec_body *b, struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_exec_spec spec = spec_of(b);
        struct vmsnap_exec_result res = {0};
        if (!b->has_timeout)
                spec.timeout_ms = API_EXEC_TIMEOUT_MS;
        int r = vmsnap_exec_collect(srv->host, call->ref, &spec, b->in, b->in_len, &res, &d);
        if (r == -EPROTONOSUPPORT && plain_cmd(b)) {
                vmsnap_diag_clear(&d);
                r = vmsnap_sandbox_exec(srv->host, call->ref, b->argv[2], spec.timeout_ms, &res, &d);
        }
        if (r < 0) {
                api_reply_guest_error(rep, r, &d);
                return;
        }
        api_reply_json(rep, 200, api_exec_json(&res));
        vmsnap_exec_result_free(&res);
}

static void answer_background(struct api_server *srv, const struct api_call *call,
                              struct api_exec_body *b, struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_exec_spec spec = spec_of(b);
        struct vmsnap_exec_started st;
        struct vmsnap_stream *s = NULL;
        int r = vmsnap_exec_start(srv->host, call->ref, &spec, &s, &st, &d);
        if (r < 0) {
                api_reply_guest_error(rep, r, &d);
                return;
        }
        vmsnap_stream_free(s);
        api_reply_json(rep, 201, json_pack("{s:i, s:s}", "pid", st.pid, "log", st.log));
}

static ssize_t frames_read(void *ctx, char *buf, size_t max)
{
        return (ssize_t)exec_out_read(ctx, buf, max);
}

static void frames_free(void *ctx)
{
        exec_out_free(ctx);
}

static void upgraded(void *ctx, int fd, const char *extra, size_t extra_len)
{
        exec_upgraded_run(ctx, fd, extra, extra_len);
}

static void upgraded_free(void *ctx)
{
        (void)ctx; /* exec_upgraded_run freed it */
}

/* Starts the command and answers with a stream of frames or an upgrade. */
static void answer_stream(struct api_server *srv, const struct api_call *call,
                          struct api_exec_body *b, enum exec_answer how, struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_exec_spec spec = spec_of(b);
        struct exec_out *o = calloc(1, sizeof(*o));
        struct api_stream *st = calloc(1, sizeof(*st));
        struct vmsnap_exec_started started;
        int r = o && st ? 0 : vmsnap_diag(&d, -ENOMEM, "out of memory");
        spec.with_stdin = spec.with_stdin || how == ANSWER_UPGRADE;
        if (r == 0)
                r = vmsnap_exec_start(srv->host, call->ref, &spec, &o->s, &started, &d);
        if (r == 0 && b->in) /* fits the first window: never waits */
                r = vmsnap_stream_write(o->s, b->in, b->in_len, &d);
        if (r == 0 && how == ANSWER_FRAMES)
                r = vmsnap_stream_close_input(o->s, &d);
        if (r < 0) {
                exec_out_free(o);
                free(st);
                api_reply_guest_error(rep, r, &d);
                return;
        }
        o->pid = started.pid;
        st->ctx = o;
        if (how == ANSWER_UPGRADE) {
                st->run_upgraded = upgraded;
                st->upgrade = API_EXEC_UPGRADE;
                st->free = upgraded_free;
                api_reply_stream(rep, 101, st);
        } else {
                st->read = frames_read;
                st->free = frames_free;
                st->content_type = API_EXEC_FRAMES_TYPE;
                api_reply_stream(rep, 200, st);
        }
}

void api_exec_handle(struct api_server *srv, const struct api_call *call, struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        struct api_exec_body b = {0};
        int r = api_parse_exec_body(call->body, call->body_len, &b, &d);
        if (r < 0) {
                api_reply_body_error(rep, r, &d);
                return;
        }
        enum exec_answer how = answer_of(call);
        struct vmsnap_sandbox sb;
        if ((b.background || how == ANSWER_JSON) &&
            vmsnap_sandbox_get(srv->host, call->ref, &sb, NULL) == -ENOENT &&
            api_forward(srv, call, "POST", NULL, rep)) {
                api_exec_body_clear(&b); /* another host's (cluster mode) */
                return;
        }
        if (!b.background && ((how == ANSWER_FRAMES && api_forward_stream(srv, call, rep)) ||
                              (how == ANSWER_UPGRADE && api_forward_upgrade(srv, call, rep)))) {
                api_exec_body_clear(&b); /* frames or the upgraded session, relayed */
                return;
        }
        if (b.background)
                answer_background(srv, call, &b, rep);
        else if (how == ANSWER_JSON)
                answer_json(srv, call, &b, rep);
        else
                answer_stream(srv, call, &b, how, rep);
        api_exec_body_clear(&b);
}

/* ---- processes ---------------------------------------------------------------------------- */

int api_agent_call(struct api_server *srv, const char *ref, json_t *req, json_t **ret,
                   struct vmsnap_diag *d)
{
        _cleanup_free_ char *text = json_dumps(req, JSON_COMPACT), *answer = NULL;
        json_decref(req);
        if (!text)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        int r = vmsnap_sandbox_agent_call(srv->host, ref, text, &answer, d);
        if (r < 0)
                return r;
        *ret = json_loads(answer, 0, NULL);
        return *ret ? 0 : vmsnap_diag(d, -EPROTO, "the guest agent answered something unreadable");
}

/* A process of the agent's table, in the API's shape (started as RFC 3339). */
static json_t *process_json(json_t *p)
{
        json_t *o = json_object();
        static const char *const keys[] = {"pid", "command", "detached", "tty", "running",
                                           "exit_code", "signal", "log"};
        for (size_t i = 0; o && i < sizeof(keys) / sizeof(keys[0]); i++) {
                json_t *v = json_object_get(p, keys[i]);
                api_json_set(o, keys[i], v ? json_incref(v) : json_null());
        }
        api_json_set(o, "started", api_json_time(json_integer_value(json_object_get(p, "started"))));
        return o;
}

void api_process_list(struct api_server *srv, const struct api_call *call, struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        json_t *answer = NULL, *list = json_array(), *p;
        size_t i;
        int r = api_agent_call(srv, call->ref, json_pack("{s:s}", "op", "ps"), &answer, &d);
        if (r < 0) {
                json_decref(list);
                api_reply_guest_error(rep, r, &d);
                return;
        }
        json_array_foreach(json_object_get(answer, "processes"), i, p)
                json_array_append_new(list, process_json(p));
        json_decref(answer);
        api_reply_json(rep, 200, json_pack("{s:o}", "processes", list));
}

/* "TERM", "SIGTERM", "term" or 15 → 15; 0 when it is none of 1..64 or a known name. */
static int signal_of(json_t *v)
{
        static const struct {
                const char *name;
                int sig;
        } names[] = {{"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"KILL", SIGKILL},
                     {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"TERM", SIGTERM}, {"CONT", SIGCONT},
                     {"STOP", SIGSTOP}, {"WINCH", SIGWINCH}, {"ALRM", SIGALRM}};
        if (!v || json_is_null(v))
                return SIGTERM;
        if (json_is_integer(v))
                return json_integer_value(v) >= 1 && json_integer_value(v) <= 64
                               ? (int)json_integer_value(v)
                               : 0;
        const char *s = json_string_value(v);
        if (s && strncasecmp(s, "SIG", 3) == 0)
                s += 3;
        for (size_t i = 0; s && i < sizeof(names) / sizeof(names[0]); i++)
                if (strcasecmp(s, names[i].name) == 0)
                        return names[i].sig;
        return 0;
}

/* The body of POST …/processes/kill: {"pid", "signal"?}. */
static int parse_kill(const struct api_call *call, int *ret_pid, int *ret_sig,
                      struct vmsnap_diag *d)
{
        json_error_t je;
        json_auto_t *o = json_loadb(call->body, call->body_len, JSON_REJECT_DUPLICATES, &je);
        if (!json_is_object(o))
                return vmsnap_diag(d, -EBADMSG, "request body must be a JSON object");
        const char *key;
        json_t *v;
        json_object_foreach(o, key, v)
        {
                if (strcmp(key, "pid") != 0 && strcmp(key, "signal") != 0)
                        return vmsnap_diag(d, -EINVAL, "unknown field '%.40s' (known fields: "
                                           "pid, signal)", key);
        }
        json_int_t pid = json_integer_value(json_object_get(o, "pid"));
        if (!json_is_integer(json_object_get(o, "pid")) || pid < 1 || pid > INT32_MAX)
                return vmsnap_diag(d, -EINVAL, "field 'pid' must be a process id (see GET "
                                   "…/processes)");
        if (!(*ret_sig = signal_of(json_object_get(o, "signal"))))
                return vmsnap_diag(d, -EINVAL, "field 'signal' must be 1..64 or a name such as "
                                   "TERM, KILL, INT, HUP");
        *ret_pid = (int)pid;
        return 0;
}

void api_process_kill(struct api_server *srv, const struct api_call *call, struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        int pid = 0, sig = 0;
        int r = parse_kill(call, &pid, &sig, &d);
        if (r < 0) {
                api_reply_body_error(rep, r, &d);
                return;
        }
        json_t *answer = NULL;
        r = api_agent_call(srv, call->ref,
                           json_pack("{s:s, s:i, s:i}", "op", "kill", "pid", pid, "signal", sig),
                           &answer, &d);
        json_decref(answer);
        if (r < 0) {
                api_reply_guest_error(rep, r, &d);
                return;
        }
        api_reply_json(rep, 204, NULL);
}
