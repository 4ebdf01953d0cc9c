/* Control requests on the page server's socket: any connection whose first message is a JSON
 * object (the VMM sends an array). One request per line or per object, one JSON line back:
 *   {"request":"stats"}                  -> the stats object (vmsnap_uffd_stats_json)
 *   {"request":"save-ws"[,"dir":"D"]}    -> {"ok":true,"path":"D/memfile.ws"}
 *   {"request":"stop"}                   -> {"ok":true}, then the server shuts down
 * Errors answer {"ok":false,"error":"..."}. Replies are small and written without blocking;
 * a client that does not read them loses its connection, never the loop its progress. */
#include "uffd/server.h"
#include "util/cleanup.h"
#include "util/fs.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static void reply(int fd, const char *line)
{
        size_t len = strlen(line);
        char buf[8192];
        if (len + 1 > sizeof(buf))
                return;
        memcpy(buf, line, len);
        buf[len++] = '\n';
        ssize_t n = send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)n; /* a short or failed send leaves the client without an answer; it asked */
}

static void reply_error(int fd, const char *msg)
{
        json_t *o = json_pack("{s:b, s:s}", "ok", 0, "error", msg);
        char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        reply(fd, s ? s : "{\"ok\":false,\"error\":\"out of memory\"}");
        free(s);
        json_decref(o);
}

static void do_stats(struct vmsnap_uffd_server *s, int fd)
{
        struct vmsnap_uffd_stats st;
        vmsnap_uffd_server_stats(s, &st);
        _cleanup_free_ char *json = NULL;
        if (vmsnap_uffd_stats_json(&st, &json) < 0) {
                reply_error(fd, "out of memory");
                return;
        }
        /* The phase is added here: it matters to a client, not to the stats struct. */
        static const char *const phases[] = {"waiting", "serving", "done"};
        char line[4096];
        snprintf(line, sizeof(line), "{\"phase\":\"%s\",%s", phases[atomic_load(&s->phase)],
                 json + 1);
        reply(fd, line);
}

static void do_save_ws(struct vmsnap_uffd_server *s, int fd, json_t *req)
{
        const char *dir = json_string_value(json_object_get(req, "dir"));
        struct vmsnap_diag d = {0};
        if (vmsnap_uffd_server_save_ws(s, dir, &d) < 0) {
                reply_error(fd, d.msg);
                return;
        }
        json_t *o = json_pack("{s:b, s:s++}", "ok", 1, "path", dir ? dir : s->snapdir, "/",
                              VMSNAP_UFFD_WS_NAME);
        char *line = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        reply(fd, line ? line : "{\"ok\":true}");
        free(line);
        json_decref(o);
}

void control_handle(struct vmsnap_uffd_server *s, int fd, const char *buf, size_t len)
{
        json_error_t jerr;
        json_t *req = json_loadb(buf, len, 0, &jerr);
        const char *what = json_string_value(json_object_get(req, "request"));
        if (!json_is_object(req) || !what)
                reply_error(fd, "expected {\"request\": \"stats\" | \"save-ws\" | \"stop\"}");
        else if (strcmp(what, "stats") == 0)
                do_stats(s, fd);
        else if (strcmp(what, "save-ws") == 0)
                do_save_ws(s, fd, req);
        else if (strcmp(what, "stop") == 0) {
                reply(fd, "{\"ok\":true}");
                server_note(s, VMSNAP_UFFD_NOTE_INFO, "stop requested over the control socket");
                vmsnap_uffd_server_stop(s);
        } else
                reply_error(fd, "unknown request (expected stats, save-ws or stop)");
        json_decref(req);
}
