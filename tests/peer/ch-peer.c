/* ch-peer: stands in for Cloud Hypervisor in the driver tests. Cloud Hypervisor needs KVM,
 * which this machine does not have, so the tests start this program as spec->vmm_binary
 * instead. It implements the documented contract (docs/api.md, the openapi
 * cloud-hypervisor.yaml, docs/snapshot_restore.md), not a VM:
 *
 *   - `ch-peer --api-socket path=PATH` serves the REST API under /api/v1/ on a Unix socket
 *     (libmicrohttpd); `--version` prints "cloud-hypervisor vX.Y".
 *   - Bodies are checked against the schema: unknown fields, missing required ones and wrong
 *     types are a 400 whose body is Cloud Hypervisor's error chain, a JSON array of strings
 *     (["Failed to deserialize JSON", "unknown field `x`, ..."]). This is stricter than
 *     Cloud Hypervisor, which ignores unknown fields: a misspelt or too-new field (e.g.
 *     memory_restore_mode before v52) fails the test instead of being dropped silently.
 *   - The state machine: not created -> Created (vm.create) -> Running (vm.boot) <-> Paused;
 *     404 when the VM is not created, 405 when it is in the wrong state (openapi codes),
 *     vm.restore only on a bare process (404 once a VM exists).
 *   - Guest memory is real memory; vm.boot copies the kernel to 1 MiB and PUT /peer/write
 *     plays the guest writing.
 *   - vm.snapshot (paused, destination_url file:///dir, the directory must exist) writes
 *     config.json (the VM config), state.json (with the MemoryRangeTable) and memory-ranges
 *     (the ranges' bytes back to back, no header; created exclusively, as Cloud Hypervisor
 *     opens it create_new).
 *   - vm.restore {source_url, prefault, memory_restore_mode (v52+), resume (v52+)} reads the
 *     three files, checks memory-ranges against the table, and fills memory: Copy reads the
 *     file into fresh memory; OnDemand (strict, like Cloud Hypervisor: it needs a
 *     userfaultfd and refuses prefault) maps the file lazily. The VM is left Paused unless
 *     resume is true.
 *   - The vsock device proxies "CONNECT <port>\n" on its socket; port 1024 answers
 *     "OK <n>\n" and then every request line with {"ok":true} (exec: exit 0, no output),
 *     a stand-in for the guest agent. With CH_PEER_AGENT=PATH the port is instead relayed
 *     byte for byte to the Unix socket PATH, where a real guest agent built for the host
 *     serves (`vmsnap-agent --listen-unix`, protocol 2; api-conformance confines it).
 *
 * Test-only endpoints: PUT /peer/write {"offset","length","seed"|"fill"}, PUT /peer/dump
 * {"path"}. Environment: CH_PEER_VERSION (default 52.0) sets the release it plays;
 * CH_PEER_NO_SOCKET=1 never creates the API socket (writes peer.pid into the working
 * directory and waits to be killed). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

#define PAGE        4096ull
#define RAM_32_END  (0xC0000000ull) /* x86_64: RAM below the 32-bit reserved area */
#define RAM_64BIT   (1ull << 32)
#define AGENT_PORT  1024u
#define KERNEL_LOAD (1ull << 20)
#define MAX_BODY    (1u << 20)
#define PREFIX      "/api/v1/"

enum vm_state { NOT_CREATED, CREATED, RUNNING, PAUSED };
static const char *const state_names[] = {"NotCreated", "Created", "Running", "Paused"};

static struct {
        unsigned major, minor;
        char version[32];
        enum vm_state state;
        json_t *config; /* the VmConfig */
        uint8_t *mem;
        uint64_t mem_size;
        bool exit_after_reply;
        int exit_pipe[2];
} vm;

static bool since(unsigned major)
{
        return vm.major >= major;
}

/* ---- replies: Cloud Hypervisor's error chain ---------------------------------------------- */

struct reply {
        unsigned status;
        char *body;
};

static struct reply ok(void)
{
        return (struct reply){204, NULL};
}

static struct reply json_reply(json_t *j)
{
        struct reply r = {200, json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY)};
        json_decref(j);
        return r;
}

/* An error: status and the chain outer: ... : root, given as a '|'-separated string. */
static struct reply error_chain(unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static struct reply error_chain(unsigned status, const char *fmt, ...)
{
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        json_t *arr = json_array();
        for (char *save = NULL, *part = strtok_r(msg, "|", &save); part;
             part = strtok_r(NULL, "|", &save))
                json_array_append_new(arr, json_string(part));
        struct reply r = json_reply(arr);
        r.status = status;
        return r;
}

static struct reply bad_json(const char *what)
{
        return error_chain(400, "Failed to deserialize JSON|%s", what);
}

static struct reply not_created(const char *action)
{
        return error_chain(404, "Error from API|The VM could not %s|VM is not created", action);
}

static struct reply wrong_state(const char *action)
{
        return error_chain(405,
                           "Error from API|The VM could not %s|Invalid VM state "
                           "transition: %s to the requested state",
                           action, state_names[vm.state]);
}

/* ---- body schemas -------------------------------------------------------------------------- */

enum ftype { T_STR, T_BOOL, T_UINT, T_OBJ, T_ARR };

struct field {
        const char *name;
        enum ftype type;
        bool required;
        const char *const *one_of;
        unsigned since_major;
        const struct field *sub; /* T_OBJ: its fields; T_ARR: each element's fields */
};

static const char *json_kind(const json_t *v)
{
        switch (json_typeof(v)) {
        case JSON_OBJECT:
                return "map";
        case JSON_ARRAY:
                return "sequence";
        case JSON_STRING:
                return "string";
        case JSON_INTEGER:
                return "integer";
        case JSON_REAL:
                return "floating point";
        case JSON_TRUE:
        case JSON_FALSE:
                return "boolean";
        default:
                return "null";
        }
}

static bool type_ok(enum ftype t, const json_t *v)
{
        switch (t) {
        case T_STR:
                return json_is_string(v);
        case T_BOOL:
                return json_is_boolean(v);
        case T_UINT:
                return json_is_integer(v) && json_integer_value(v) >= 0;
        case T_OBJ:
                return json_is_object(v);
        case T_ARR:
                return json_is_array(v);
        }
        return false;
}

static bool check_fields(const json_t *body, const struct field *fields, char *err, size_t size);

static bool check_value(const struct field *f, const json_t *v, char *err, size_t size)
{
        static const char *const expect[] = {"a string", "a boolean", "u64", "struct",
                                             "a sequence"};
        if (!type_ok(f->type, v)) {
                snprintf(err, size, "invalid type: %s, expected %s for `%s`", json_kind(v),
                         expect[f->type], f->name);
                return false;
        }
        if (f->type == T_STR && f->one_of) {
                for (const char *const *o = f->one_of; *o; o++)
                        if (strcmp(*o, json_string_value(v)) == 0)
                                return true;
                snprintf(err, size, "unknown variant `%s` for `%s`", json_string_value(v), f->name);
                return false;
        }
        if (f->type == T_OBJ && f->sub)
                return check_fields(v, f->sub, err, size);
        if (f->type != T_ARR || !f->sub)
                return true;
        for (size_t i = 0; i < json_array_size(v); i++)
                if (!check_fields(json_array_get(v, i), f->sub, err, size))
                        return false;
        return true;
}

static bool check_fields(const json_t *body, const struct field *fields, char *err, size_t size)
{
        if (!json_is_object(body)) {
                snprintf(err, size, "invalid type: %s, expected struct", json_kind(body));
                return false;
        }
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)body, key, v)
        {
                const struct field *f = fields;
                while (f->name && !(strcmp(f->name, key) == 0 && since(f->since_major)))
                        f++;
                if (!f->name) {
                        snprintf(err, size, "unknown field `%s`", key);
                        return false;
                }
                if (!check_value(f, v, err, size))
                        return false;
        }
        for (const struct field *f = fields; f->name; f++)
                if (f->required && since(f->since_major) && !json_object_get(body, f->name)) {
                        snprintf(err, size, "missing field `%s`", f->name);
                        return false;
                }
        return true;
}

/* clang-format off */
static const char *const console_modes[] = {"Off", "Pty", "Tty", "File", "Socket", "Null", NULL};
static const char *const restore_modes[] = {"Copy", "OnDemand", NULL};

#define END {NULL, 0, false, NULL, 0, NULL}
static const struct field cpus_fields[] = {
        {"boot_vcpus", T_UINT, true, NULL, 0, NULL},
        {"max_vcpus", T_UINT, true, NULL, 0, NULL},
        {"topology", T_OBJ, false, NULL, 0, NULL},
        {"kvm_hyperv", T_BOOL, false, NULL, 0, NULL},
        {"max_phys_bits", T_UINT, false, NULL, 0, NULL},
        {"affinity", T_ARR, false, NULL, 0, NULL},
        {"features", T_OBJ, false, NULL, 0, NULL},
        END,
};
static const struct field memory_fields[] = {
        {"size", T_UINT, true, NULL, 0, NULL},
        {"mergeable", T_BOOL, false, NULL, 0, NULL},
        {"shared", T_BOOL, false, NULL, 0, NULL},
        {"hugepages", T_BOOL, false, NULL, 0, NULL},
        {"hugepage_size", T_UINT, false, NULL, 0, NULL},
        {"prefault", T_BOOL, false, NULL, 0, NULL},
        {"thp", T_BOOL, false, NULL, 0, NULL},
        {"hotplug_size", T_UINT, false, NULL, 0, NULL},
        {"hotplugged_size", T_UINT, false, NULL, 0, NULL},
        {"hotplug_method", T_STR, false, NULL, 0, NULL},
        {"zones", T_ARR, false, NULL, 0, NULL},
        END,
};
static const struct field payload_fields[] = {
        {"kernel", T_STR, false, NULL, 0, NULL},
        {"cmdline", T_STR, false, NULL, 0, NULL},
        {"initramfs", T_STR, false, NULL, 0, NULL},
        {"firmware", T_STR, false, NULL, 0, NULL},
        END,
};
static const struct field disk_fields[] = {
        {"path", T_STR, false, NULL, 0, NULL},
        {"readonly", T_BOOL, false, NULL, 0, NULL},
        {"direct", T_BOOL, false, NULL, 0, NULL},
        {"iommu", T_BOOL, false, NULL, 0, NULL},
        {"num_queues", T_UINT, false, NULL, 0, NULL},
        {"queue_size", T_UINT, false, NULL, 0, NULL},
        {"vhost_user", T_BOOL, false, NULL, 0, NULL},
        {"vhost_socket", T_STR, false, NULL, 0, NULL},
        {"id", T_STR, false, NULL, 0, NULL},
        {"serial", T_STR, false, NULL, 0, NULL},
        {"pci_segment", T_UINT, false, NULL, 0, NULL},
        {"rate_limiter_config", T_OBJ, false, NULL, 0, NULL},
        END,
};
static const struct field vsock_fields[] = {
        {"cid", T_UINT, true, NULL, 0, NULL},
        {"socket", T_STR, true, NULL, 0, NULL},
        {"iommu", T_BOOL, false, NULL, 0, NULL},
        {"id", T_STR, false, NULL, 0, NULL},
        {"pci_segment", T_UINT, false, NULL, 0, NULL},
        END,
};
static const struct field console_fields[] = {
        {"mode", T_STR, true, console_modes, 0, NULL},
        {"file", T_STR, false, NULL, 0, NULL},
        {"socket", T_STR, false, NULL, 0, NULL},
        {"iommu", T_BOOL, false, NULL, 0, NULL},
        END,
};
static const struct field vm_config_fields[] = {
        {"cpus", T_OBJ, false, NULL, 0, cpus_fields},
        {"memory", T_OBJ, false, NULL, 0, memory_fields},
        {"payload", T_OBJ, true, NULL, 0, payload_fields},
        {"disks", T_ARR, false, NULL, 0, disk_fields},
        {"net", T_ARR, false, NULL, 0, NULL},
        {"rng", T_OBJ, false, NULL, 0, NULL},
        {"balloon", T_OBJ, false, NULL, 0, NULL},
        {"fs", T_ARR, false, NULL, 0, NULL},
        {"pmem", T_ARR, false, NULL, 0, NULL},
        {"serial", T_OBJ, false, NULL, 0, console_fields},
        {"console", T_OBJ, false, NULL, 0, console_fields},
        {"devices", T_ARR, false, NULL, 0, NULL},
        {"vsock", T_OBJ, false, NULL, 0, vsock_fields},
        {"iommu", T_BOOL, false, NULL, 0, NULL},
        {"watchdog", T_BOOL, false, NULL, 0, NULL},
        {"pvpanic", T_BOOL, false, NULL, 0, NULL},
        {"platform", T_OBJ, false, NULL, 0, NULL},
        END,
};
static const struct field snapshot_fields[] = {
        {"destination_url", T_STR, true, NULL, 0, NULL},
        END,
};
static const struct field restore_fields[] = {
        {"source_url", T_STR, true, NULL, 0, NULL},
        {"prefault", T_BOOL, false, NULL, 0, NULL},
        {"memory_restore_mode", T_STR, false, restore_modes, 52, NULL},
        {"resume", T_BOOL, false, NULL, 52, NULL},
        {"net_fds", T_ARR, false, NULL, 0, NULL},
        END,
};
static const struct field peer_write_fields[] = {
        {"offset", T_UINT, true, NULL, 0, NULL},
        {"length", T_UINT, true, NULL, 0, NULL},
        {"seed", T_UINT, false, NULL, 0, NULL},
        {"fill", T_UINT, false, NULL, 0, NULL},
        END,
};
static const struct field peer_dump_fields[] = {
        {"path", T_STR, true, NULL, 0, NULL},
        END,
};

/* clang-format on */

#define CHECK(body, fields)                                                                        \
        do {                                                                                       \
                char err_[512];                                                                    \
                if (!check_fields(body, fields, err_, sizeof(err_)))                               \
                        return bad_json(err_);                                                     \
        } while (0)

static const char *str(const json_t *o, const char *key)
{
        return json_string_value(json_object_get(o, key));
}

static uint64_t num(const json_t *o, const char *key)
{
        return (uint64_t)json_integer_value(json_object_get(o, key));
}

/* ---- guest memory -------------------------------------------------------------------------- */

/* The MemoryRangeTable of an x86_64 guest: RAM below 3 GiB, the rest above 4 GiB. */
static json_t *memory_ranges(uint64_t size)
{
        uint64_t low = size < RAM_32_END ? size : RAM_32_END;
        json_t *t = json_pack("[{s:I, s:I}]", "gpa", (json_int_t)0, "length", (json_int_t)low);
        if (size > low)
                json_array_append_new(t, json_pack("{s:I, s:I}", "gpa", (json_int_t)RAM_64BIT,
                                                   "length", (json_int_t)(size - low)));
        return t;
}

static bool memory_alloc(uint64_t size)
{
        vm.mem = mmap(NULL, size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        vm.mem_size = size;
        return vm.mem != MAP_FAILED;
}

static uint64_t xorshift(uint64_t *s)
{
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        return *s;
}

/* ---- the vsock device ---------------------------------------------------------------------- */

static bool read_line(int fd, char *line, size_t size)
{
        size_t n = 0;
        char c;
        while (read(fd, &c, 1) == 1) {
                if (c == '\n') {
                        line[n] = '\0';
                        return true;
                }
                if (n + 1 < size)
                        line[n++] = c;
        }
        return false;
}

/* Copies what one end sends to the other; false once either end is done. */
static bool pump(int from, int to)
{
        char buf[65536];
        ssize_t n = read(from, buf, sizeof(buf));
        if (n <= 0)
                return false;
        for (ssize_t off = 0; off < n;) {
                ssize_t w = send(to, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
                if (w <= 0)
                        return false;
                off += w;
        }
        return true;
}

/* Connects to the agent's Unix socket, waiting up to 30 s for it to listen (the agent
 * starts with the VMM, as a guest's would; slowly on a loaded host); -1 if it never does. */
static int agent_connect(const char *path)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        for (int i = 0; i < 1500; i++) {
                int a = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (a < 0)
                        return -1;
                if (connect(a, (struct sockaddr *)&sa, sizeof(sa)) == 0)
                        return a;
                int err = errno;
                close(a);
                if (err != ENOENT && err != ECONNREFUSED)
                        return -1;
                usleep(20 * 1000);
        }
        return -1;
}

/* The real agent behind the port: connects to its Unix socket, answers the CONNECT once it
 * is reachable and relays both ways until either end closes (the vsock device's job). */
static void relay_to(int c, const char *path, const char *ok_line)
{
        int a = agent_connect(path);
        if (a < 0 || send(c, ok_line, strlen(ok_line), MSG_NOSIGNAL) < 0) {
                if (a >= 0)
                        close(a);
                return;
        }
        struct pollfd p[2] = {{.fd = c, .events = POLLIN}, {.fd = a, .events = POLLIN}};
        while (poll(p, 2, -1) >= 0) {
                if (p[0].revents && !pump(c, a))
                        break;
                if (p[1].revents && !pump(a, c))
                        break;
        }
        close(a);
}

static void vsock_serve(int c)
{
        char line[4096];
        unsigned port = 0;
        if (!read_line(c, line, sizeof(line)) || sscanf(line, "CONNECT %u", &port) != 1 ||
            port != AGENT_PORT)
                return;
        const char ok_line[] = "OK 1073741824\n";
        const char *agent = getenv("CH_PEER_AGENT");
        if (agent && *agent) {
                relay_to(c, agent, ok_line);
                return;
        }
        if (send(c, ok_line, sizeof(ok_line) - 1, MSG_NOSIGNAL) < 0)
                return;
        /* The stand-in agent answers in the agent's protocol (docs/guest.md) so that the
         * sandbox layer can drive a "guest" here: every op succeeds; exec runs nothing. */
        while (read_line(c, line, sizeof(line))) {
                const char *reply = strstr(line, "\"op\":\"exec\"")
                                            ? "{\"ok\":true,\"exit\":0,\"stdout\":\"\","
                                              "\"stderr\":\"\",\"truncated\":false}\n"
                                            : "{\"ok\":true}\n";
                if (send(c, reply, strlen(reply), MSG_NOSIGNAL) < 0)
                        return;
        }
}

static void *vsock_conn(void *arg)
{
        int c = (int)(intptr_t)arg;
        vsock_serve(c);
        close(c);
        return NULL;
}

/* One thread per connection: the host may hold one while it opens another. */
static void *vsock_main(void *arg)
{
        int lfd = (int)(intptr_t)arg;
        for (;;) {
                int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                pthread_t t;
                if (c < 0)
                        continue;
                if (pthread_create(&t, NULL, vsock_conn, (void *)(intptr_t)c) != 0) {
                        close(c);
                        continue;
                }
                pthread_detach(t);
        }
        return NULL;
}

static bool vsock_start(char *err, size_t size)
{
        const json_t *vs = json_object_get(vm.config, "vsock");
        if (!vs)
                return true;
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", str(vs, "socket"));
        unlink(sa.sun_path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        pthread_t t;
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0 ||
            pthread_create(&t, NULL, vsock_main, (void *)(intptr_t)fd) != 0) {
                snprintf(err, size, "Error creating vsock device: %s", strerror(errno));
                return false;
        }
        pthread_detach(t);
        return true;
}

/* ---- the VM -------------------------------------------------------------------------------- */

static struct reply vm_create(const json_t *b)
{
        CHECK(b, vm_config_fields);
        if (vm.state != NOT_CREATED)
                return error_chain(500, "Error from API|The VM could not be created|VM is "
                                        "already created");
        const json_t *mem = json_object_get(b, "memory");
        if (mem && (num(mem, "size") == 0 || num(mem, "size") % PAGE))
                return error_chain(400, "Error from API|The VM could not be created|Invalid "
                                        "memory size");
        vm.config = json_deep_copy(b);
        vm.state = CREATED;
        return ok();
}

/* Copies the kernel image into guest memory as the loader would. */
static bool load_kernel(const char *path, char *err, size_t size)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                snprintf(err, size, "Cannot open kernel file %s: %s (os error %d)", path,
                         strerror(errno), errno);
                return false;
        }
        ssize_t n = pread(fd, vm.mem + KERNEL_LOAD, vm.mem_size - KERNEL_LOAD, 0);
        close(fd);
        return n >= 0;
}

/* Cloud Hypervisor detects a disk's image type from its first bytes (and before v51 follows
 * a qcow2 header's backing file): the peer does the same detection and refuses what would be
 * taken for qcow2, so that a driver handing it anything but a raw disk fails here. */
static bool looks_qcow2(const char *path)
{
        char magic[4] = {0};
        FILE *f = fopen(path, "rb");
        size_t n = f ? fread(magic, 1, sizeof(magic), f) : 0;
        if (f)
                fclose(f);
        return n == sizeof(magic) && memcmp(magic, "QFI\xfb", 4) == 0;
}

static struct reply vm_boot(void)
{
        char err[512];
        if (vm.state == NOT_CREATED)
                return not_created("boot");
        if (vm.state != CREATED)
                return wrong_state("boot");
        const json_t *mem = json_object_get(vm.config, "memory");
        uint64_t size = mem ? num(mem, "size") : 512ull << 20;
        const char *kernel = str(json_object_get(vm.config, "payload"), "kernel");
        if (!kernel)
                return error_chain(500, "Error from API|The VM could not boot|No kernel or "
                                        "firmware given");
        size_t i;
        json_t *d;
        json_array_foreach(
            json_object_get(vm.config, "disks"), i,
            d) if (str(d, "path") &&
                   access(str(d, "path"), R_OK | W_OK) <
                       0) return error_chain(500,
                                             "Error from API|The VM could not boot|Cannot "
                                             "open disk path %s: %s",
                                             str(d, "path"), strerror(errno));
        json_array_foreach(json_object_get(vm.config, "disks"), i, d) if (
            str(d, "path") && looks_qcow2(str(d, "path"))) return error_chain(500,
                                                                 "Error from API|The VM could "
                                                                 "not boot|%s: image type "
                                                                 "detected as qcow2; vmsnap "
                                                                 "promises raw disks only",
                                                                 str(d, "path"));
        if (!memory_alloc(size) || size <= KERNEL_LOAD || !load_kernel(kernel, err, sizeof(err)) ||
            !vsock_start(err, sizeof(err)))
                return error_chain(500, "Error from API|The VM could not boot|%s", err);
        vm.state = RUNNING;
        return ok();
}

static struct reply vm_pause(void)
{
        if (vm.state == NOT_CREATED)
                return not_created("pause");
        if (vm.state != RUNNING)
                return wrong_state("pause");
        vm.state = PAUSED;
        return ok();
}

static struct reply vm_resume(void)
{
        if (vm.state == NOT_CREATED)
                return not_created("resume");
        if (vm.state != PAUSED)
                return wrong_state("resume");
        vm.state = RUNNING;
        return ok();
}

static struct reply vm_info(void)
{
        if (vm.state == NOT_CREATED)
                return not_created("be queried");
        return json_reply(json_pack("{s:O, s:s, s:I}", "config", vm.config, "state",
                                    state_names[vm.state], "memory_actual_size",
                                    (json_int_t)vm.mem_size));
}

/* "file:///dir" -> "/dir" */
static const char *file_url_path(const char *url)
{
        return url && strncmp(url, "file://", 7) == 0 && url[7] == '/' ? url + 7 : NULL;
}

static bool write_json(const char *dir, const char *name, const json_t *j)
{
        char path[4200];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        return json_dump_file(j, path, JSON_INDENT(2)) == 0;
}

/* memory-ranges: opened create_new, the ranges' bytes back to back. */
static bool write_ranges(const char *dir, char *err, size_t size)
{
        char path[4200];
        snprintf(path, sizeof(path), "%s/memory-ranges", dir);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        bool good = fd >= 0;
        for (uint64_t off = 0; good && off < vm.mem_size;) {
                ssize_t n = pwrite(fd, vm.mem + off, vm.mem_size - off, (off_t)off);
                good = n > 0;
                off += n > 0 ? (uint64_t)n : 0;
        }
        if (!good)
                snprintf(err, size, "Failed to write %.300s: %s (os error %d)", path,
                         strerror(errno), errno);
        if (fd >= 0)
                close(fd);
        return good;
}

static struct reply vm_snapshot(const json_t *b)
{
        char err[512];
        CHECK(b, snapshot_fields);
        if (vm.state == NOT_CREATED)
                return not_created("be snapshotted");
        if (vm.state != PAUSED)
                return wrong_state("be snapshotted");
        const char *dir = file_url_path(str(b, "destination_url"));
        struct stat st;
        if (!dir || stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
                return error_chain(500,
                                   "Error from API|The VM could not be snapshotted|"
                                   "Invalid destination URL %s",
                                   str(b, "destination_url"));
        json_t *state = json_pack("{s:{s:o}, s:s}", "memory_manager", "memory_ranges",
                                  memory_ranges(vm.mem_size), "vm_state", "Paused");
        bool good =
            write_json(dir, "config.json", vm.config) && write_json(dir, "state.json", state);
        json_decref(state);
        if (!good)
                snprintf(err, sizeof(err), "Failed to write the VM state: %s", strerror(errno));
        if (!good || !write_ranges(dir, err, sizeof(err)))
                return error_chain(500, "Error from API|The VM could not be snapshotted|%s", err);
        return ok();
}

/* Reads memory-ranges per the table in state.json: Copy fills fresh memory, OnDemand maps
 * the file so pages come in on first touch. */
static bool restore_memory(const char *dir, const json_t *state, bool on_demand, char *err,
                           size_t size)
{
        char path[4200];
        snprintf(path, sizeof(path), "%s/memory-ranges", dir);
        uint64_t total = 0;
        size_t i;
        json_t *r;
        json_array_foreach(
            json_object_get(json_object_get(state, "memory_manager"), "memory_ranges"), i, r)
            total += num(r, "length");
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0 || (uint64_t)st.st_size != total || total == 0) {
                snprintf(err, size,
                         "%.300s does not hold the %llu bytes of the memory range table: %s", path,
                         (unsigned long long)total, fd < 0 ? strerror(errno) : "size");
                if (fd >= 0)
                        close(fd);
                return false;
        }
        vm.mem_size = total;
        if (on_demand)
                vm.mem = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        bool good = on_demand ? vm.mem != MAP_FAILED : memory_alloc(total);
        for (uint64_t off = 0; good && !on_demand && off < total;) {
                ssize_t n = pread(fd, vm.mem + off, total - off, (off_t)off);
                good = n > 0;
                off += n > 0 ? (uint64_t)n : 0;
        }
        close(fd);
        if (!good)
                snprintf(err, size, "Cannot restore guest memory from %.300s: %s", path,
                         strerror(errno));
        return good;
}

/* OnDemand is strict: without a userfaultfd the restore fails instead of copying. */
static bool uffd_available(void)
{
        int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        int fd = dev >= 0 ? ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK) : -1;
        if (dev >= 0)
                close(dev);
        if (fd < 0)
                fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        if (fd >= 0)
                close(fd);
        return fd >= 0;
}

static json_t *load_json(const char *dir, const char *name, char *err, size_t size)
{
        char path[4200];
        json_error_t e;
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        json_t *j = json_load_file(path, 0, &e);
        if (!j)
                snprintf(err, size, "Cannot read %.300s: %.150s", path, e.text);
        return j;
}

static struct reply vm_restore(const json_t *b)
{
        char err[512];
        CHECK(b, restore_fields);
        if (vm.state != NOT_CREATED)
                return error_chain(404, "Error from API|The VM could not be restored|VM is "
                                        "already created");
        const char *mode = str(b, "memory_restore_mode");
        bool on_demand = mode && strcmp(mode, "OnDemand") == 0;
        if (on_demand && json_is_true(json_object_get(b, "prefault")))
                return error_chain(400, "Error from API|The VM could not be restored|prefault "
                                        "cannot be used with memory_restore_mode=OnDemand");
        if (on_demand && !uffd_available())
                return error_chain(500,
                                   "Error from API|The VM could not be restored|"
                                   "OnDemand restore needs a userfaultfd: %s",
                                   strerror(errno));
        const char *dir = file_url_path(str(b, "source_url"));
        if (!dir)
                return error_chain(400,
                                   "Error from API|The VM could not be restored|Invalid "
                                   "source URL %s",
                                   str(b, "source_url"));
        json_t *config = load_json(dir, "config.json", err, sizeof(err));
        json_t *state = config ? load_json(dir, "state.json", err, sizeof(err)) : NULL;
        bool good = state && check_fields(config, vm_config_fields, err, sizeof(err)) &&
                    restore_memory(dir, state, on_demand, err, sizeof(err));
        json_decref(state);
        if (good) {
                vm.config = config;
                good = vsock_start(err, sizeof(err));
        } else {
                json_decref(config);
        }
        if (!good)
                return error_chain(500, "Error from API|The VM could not be restored|%s", err);
        vm.state = json_is_true(json_object_get(b, "resume")) ? RUNNING : PAUSED;
        fprintf(stderr, "ch-peer: vm.restore memory_restore_mode=%s\n", mode ? mode : "(default)");
        return ok();
}

static struct reply vmm_ping(void)
{
        char build[40];
        snprintf(build, sizeof(build), "v%u.%u", vm.major, vm.minor);
        return json_reply(json_pack("{s:s, s:s, s:i, s:[s]}", "build_version", build, "version",
                                    vm.version, "pid", (int)getpid(), "features", "kvm"));
}

/* ---- test-only endpoints ------------------------------------------------------------------- */

static struct reply peer_write(const json_t *b)
{
        CHECK(b, peer_write_fields);
        uint64_t off = num(b, "offset"), len = num(b, "length");
        const json_t *seed = json_object_get(b, "seed"), *fill = json_object_get(b, "fill");
        if (vm.state != RUNNING)
                return error_chain(405, "peer: the guest is not running (%s)",
                                   state_names[vm.state]);
        if (!seed == !fill || off > vm.mem_size || len > vm.mem_size - off)
                return error_chain(400, "peer: give one of seed and fill, inside guest memory");
        if (fill) {
                memset(vm.mem + off, (int)json_integer_value(fill), len);
                return ok();
        }
        uint64_t s = (uint64_t)json_integer_value(seed) | 1;
        for (uint64_t i = 0; i < len; i += 8) {
                uint64_t v = xorshift(&s);
                memcpy(vm.mem + off + i, &v, len - i < 8 ? len - i : 8);
        }
        return ok();
}

static struct reply peer_dump(const json_t *b)
{
        CHECK(b, peer_dump_fields);
        if (!vm.mem || vm.mem == MAP_FAILED)
                return error_chain(405, "peer: no guest memory yet");
        int fd = open(str(b, "path"), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        bool good = fd >= 0;
        for (uint64_t off = 0; good && off < vm.mem_size;) {
                ssize_t n = pwrite(fd, vm.mem + off, vm.mem_size - off, (off_t)off);
                good = n > 0;
                off += n > 0 ? (uint64_t)n : 0;
        }
        if (fd >= 0)
                close(fd);
        return good ? ok() : error_chain(500, "peer: cannot write %s", str(b, "path"));
}

/* ---- routing ------------------------------------------------------------------------------- */

static struct reply route_put(const char *name, const json_t *b)
{
        if (strcmp(name, "vm.pause") == 0)
                return vm_pause();
        if (strcmp(name, "vm.resume") == 0)
                return vm_resume();
        if (strcmp(name, "vm.boot") == 0)
                return vm_boot();
        if (strcmp(name, "vmm.shutdown") == 0) {
                vm.exit_after_reply = true;
                return ok();
        }
        if (!b)
                return error_chain(400, "Bad Request|request body required");
        if (strcmp(name, "vm.create") == 0)
                return vm_create(b);
        if (strcmp(name, "vm.snapshot") == 0)
                return vm_snapshot(b);
        if (strcmp(name, "vm.restore") == 0)
                return vm_restore(b);
        return error_chain(404, "Not Found");
}

static struct reply route(const char *method, const char *url, const char *buf, size_t len)
{
        bool peer = strncmp(url, "/peer/", 6) == 0;
        if (!peer && strncmp(url, PREFIX, strlen(PREFIX)) != 0)
                return error_chain(404, "Not Found");
        const char *name = peer ? url + 6 : url + strlen(PREFIX);
        if (strcmp(method, "GET") == 0) {
                if (strcmp(name, "vmm.ping") == 0)
                        return vmm_ping();
                if (strcmp(name, "vm.info") == 0)
                        return vm_info();
                return error_chain(404, "Not Found");
        }
        if (strcmp(method, "PUT") != 0)
                return (struct reply){400, NULL};
        json_t *b = NULL;
        json_error_t e;
        if (len && !(b = json_loadb(buf, len, JSON_DECODE_ANY, &e))) {
                char what[300];
                snprintf(what, sizeof(what), "%s at line %d column %d", e.text, e.line, e.column);
                return bad_json(what);
        }
        struct reply r = !peer                        ? route_put(name, b)
                         : !b                         ? error_chain(400, "peer: body required")
                         : strcmp(name, "write") == 0 ? peer_write(b)
                         : strcmp(name, "dump") == 0  ? peer_dump(b)
                                                      : error_chain(404, "Not Found");
        json_decref(b);
        return r;
}

/* ---- HTTP server --------------------------------------------------------------------------- */

struct conn {
        char *buf;
        size_t len;
        bool too_big;
};

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *size, void **con_cls)
{
        (void)cls;
        (void)version;
        struct conn *k = *con_cls;
        if (!k) {
                *con_cls = k = calloc(1, sizeof(*k));
                return k ? MHD_YES : MHD_NO;
        }
        if (*size) {
                char *nb = k->len + *size <= MAX_BODY ? realloc(k->buf, k->len + *size) : NULL;
                if (nb) {
                        memcpy(nb + k->len, data, *size);
                        k->buf = nb;
                        k->len += *size;
                } else {
                        k->too_big = true;
                }
                *size = 0;
                return MHD_YES;
        }
        struct reply r =
            k->too_big ? error_chain(413, "Payload Too Large") : route(method, url, k->buf, k->len);
        const char *body = r.body ? r.body : "";
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
        MHD_add_response_header(resp, "Server", "Cloud Hypervisor API");
        MHD_add_response_header(resp, "Content-Type", "application/json");
        enum MHD_Result ret = MHD_queue_response(c, r.status, resp);
        MHD_destroy_response(resp);
        free(r.body);
        return ret;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
        (void)cls;
        (void)c;
        (void)toe;
        struct conn *k = *con_cls;
        if (k) {
                free(k->buf);
                free(k);
        }
        *con_cls = NULL;
        if (vm.exit_after_reply && write(vm.exit_pipe[1], "x", 1) < 0)
                _exit(0);
}

static int listen_unix(const char *path)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof(sa.sun_path))
                return -1;
        strcpy(sa.sun_path, path);
        unlink(path); /* Cloud Hypervisor removes a stale socket under its lock */
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0)) {
                close(fd);
                return -1;
        }
        return fd;
}

static void wait_to_be_killed(void)
{
        FILE *f = fopen("peer.pid", "we");
        if (f) {
                fprintf(f, "%d\n", (int)getpid());
                fclose(f);
        }
        for (;;)
                pause();
}

static void set_release(const char *text)
{
        if (sscanf(text[0] == 'v' ? text + 1 : text, "%u.%u", &vm.major, &vm.minor) != 2) {
                fprintf(stderr, "ch-peer: bad CH_PEER_VERSION %s\n", text);
                exit(2);
        }
        snprintf(vm.version, sizeof(vm.version), "%u.%u.0", vm.major, vm.minor);
}

int main(int argc, char **argv)
{
        const char *sock = NULL;
        set_release(getenv("CH_PEER_VERSION") ? getenv("CH_PEER_VERSION") : "52.0");
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
                        printf("cloud-hypervisor v%u.%u\n", vm.major, vm.minor);
                        return 0;
                }
                if (strcmp(argv[i], "--seccomp") == 0 && i + 1 < argc) { /* true|false|log */
                        const char *v = argv[++i];
                        if (strcmp(v, "true") && strcmp(v, "false") && strcmp(v, "log")) {
                                fprintf(stderr, "Error parsing arguments: --seccomp %s\n", v);
                                return 1;
                        }
                        continue;
                }
                if (strcmp(argv[i], "--api-socket") == 0 && i + 1 < argc) {
                        sock = argv[++i];
                        if (strncmp(sock, "path=", 5) == 0)
                                sock += 5;
                        continue;
                }
                fprintf(stderr, "Error parsing arguments: unexpected argument '%s'\n", argv[i]);
                return 1;
        }
        if (!sock) {
                fprintf(stderr, "ch-peer: --api-socket path=PATH is required\n");
                return 1;
        }
        if (getenv("CH_PEER_NO_SOCKET"))
                wait_to_be_killed();
        int lfd = listen_unix(sock);
        if (lfd < 0 || pipe2(vm.exit_pipe, O_CLOEXEC) < 0) {
                fprintf(stderr, "Error creating API socket %s: %s\n", sock, strerror(errno));
                return 1;
        }
        struct MHD_Daemon *daemon =
            MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, on_request, NULL,
                             MHD_OPTION_LISTEN_SOCKET, lfd, MHD_OPTION_NOTIFY_COMPLETED,
                             on_completed, NULL, MHD_OPTION_END);
        if (!daemon) {
                fprintf(stderr, "ch-peer: cannot start the HTTP server\n");
                return 1;
        }
        fprintf(stderr, "ch-peer: cloud-hypervisor v%u.%u API on %s\n", vm.major, vm.minor, sock);
        char x;
        while (read(vm.exit_pipe[0], &x, 1) < 0 && errno == EINTR)
                ;
        MHD_stop_daemon(daemon);
        return 0;
}
