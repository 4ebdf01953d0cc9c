/* exec: a shell command in a running sandbox, through the guest agent. */
#include "sandbox/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int exec_locked(struct vmsnap_host *h, struct live *l, struct vmsnap_sandbox *sb,
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
        ret->truncated = json_is_true(json_object_get(resp, "truncated"));
        ret->out = strdup(out ? out : "");
        ret->err = strdup(err ? err : "");
        json_decref(resp);
        sb->last_active = (int64_t)time(NULL);
        db_put(h, sb, NULL);
        return ret->out && ret->err ? 0 : vmsnap_diag(d, -ENOMEM, "out of memory");
}

int vmsnap_sandbox_exec(struct vmsnap_host *h, const char *ref, const char *cmd,
                        unsigned timeout_ms, struct vmsnap_exec_result *ret,
                        struct vmsnap_diag *d)
{
        if (!cmd || !ret)
                return vmsnap_diag(d, -EINVAL, "exec: missing command");
        memset(ret, 0, sizeof(*ret));
        struct live *l;
        struct vmsnap_sandbox sb;
        int r = op_begin(h, ref, &l, &sb, d);
        if (r < 0)
                return r;
        r = exec_locked(h, l, &sb, cmd, timeout_ms ? timeout_ms : 30000, ret, d);
        op_end(l);
        if (r < 0)
                vmsnap_exec_result_free(ret);
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
