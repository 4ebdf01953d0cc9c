/* fc-peer: stands in for Firecracker in the driver tests. Firecracker needs KVM, which this
 * machine does not have, so the tests start this program as spec->vmm_binary instead. It
 * implements the documented contract, not a VM:
 *
 *   - `fc-peer --api-sock PATH` serves Firecracker's HTTP API (swagger firecracker.yaml) on a
 *     Unix socket (libmicrohttpd); `--version` prints "Firecracker vX.Y.Z".
 *   - Every body is checked like Firecracker's serde structs with deny_unknown_fields:
 *     unknown fields, missing required ones and wrong types are a 400 with a fault_message.
 *     Fields exist only from the release that added them (network_overrides 1.12,
 *     track_dirty_pages on load 1.13), so a driver that sends the wrong generation fails.
 *   - The state machine: Not started -> Running <-> Paused; boot-time calls after the start
 *     and snapshot loads after any configuration are refused with Firecracker's messages.
 *   - Guest memory is real memory; InstanceStart copies the kernel image to 1 MiB (like the
 *     loader) and /peer/write plays the guest writing. Pages written since the last snapshot
 *     are tracked ("dirty"), as with track_dirty_pages.
 *   - PUT /snapshot/create writes the state file (the x86_64 magic, then JSON with the
 *     snapshot format version of this release) and the memory file: Full = every page,
 *     Diff = a sparse file with only the dirty pages as data. Like Firecracker it does not
 *     truncate a memory file that already has the guest's size (a Diff merges into it).
 *   - PUT /snapshot/load reads the state file (format major must match, minor not newer),
 *     then maps the memory: File = MAP_PRIVATE of the file; Uffd = anonymous memory, a
 *     userfaultfd (EVENT_REMOVE, non-blocking, kernel faults too) registered MISSING over
 *     every region, a connection to backend_path and one message with the regions as JSON
 *     (this release's field names) and the uffd attached with SCM_RIGHTS. A failed load
 *     answers 400 and ends the process, as Firecracker does.
 *   - The vsock device proxies "CONNECT <port>\n" on its uds_path; port 1024 answers
 *     "OK <n>\n" and then every request line with {"ok":true} (exec: exit 0, no output),
 *     a stand-in for the guest agent.
 *
 * Test-only endpoints: PUT /peer/write {"offset","length","seed"|"fill"} (guest writes while
 * running), PUT /peer/dump {"path"} (writes guest memory to a file: with Uffd every page
 * comes from the page server). Environment: FC_PEER_VERSION (default 1.12.1) sets the
 * release it plays; FC_PEER_NO_SOCKET=1 never creates the API socket (writes peer.pid into
 * the working directory and waits to be killed). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/userfaultfd.h>
#include <microhttpd.h>
#include <net/if.h>
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
#define MIB         (1ull << 20)
#define MMIO_START  (0xD0000000ull) /* x86_64: guest RAM stops below the 32-bit gap */
#define RAM_64BIT   (1ull << 32)    /* and continues at 4 GiB */
#define SNAP_MAGIC  0x0710198486640000ull
#define AGENT_PORT  1024u
#define KERNEL_LOAD (1ull << 20)
#define MAX_BODY    (1u << 20)

/* ---- the state of the pretend VMM ---------------------------------------------------------- */

enum vm_state { NOT_STARTED, RUNNING, PAUSED };
static const char *const state_names[] = {"Not started", "Running", "Paused"};

static struct {
        unsigned major, minor, patch;
        char version[32];
        unsigned snap_major, snap_minor; /* snapshot format this release writes and reads */
        enum vm_state state;
        bool configured; /* a boot-time resource was set (no load after) */
        unsigned vcpus;
        uint64_t mem_mib;
        bool track_dirty;
        char *kernel, *initrd, *boot_args;
        json_t *drive; /* the PUT /drives body, or NULL */
        json_t *vsock; /* the PUT /vsock body, or NULL */
        uint8_t *mem;  /* guest memory */
        uint64_t mem_size;
        uint8_t *dirty; /* one byte per page */
        int uffd, uffd_sock;
        bool exit_after_reply; /* a failed load ends the process */
        int exit_pipe[2];
} vm = {.vcpus = 1, .mem_mib = 128, .uffd = -1, .uffd_sock = -1};

static bool since(unsigned major, unsigned minor)
{
        return vm.major > major || (vm.major == major && vm.minor >= minor);
}

/* Firecracker's snapshot format version per release (src/vmm/src/persist.rs at each tag). */
static void set_release(const char *text)
{
        if (sscanf(text, "%u.%u.%u", &vm.major, &vm.minor, &vm.patch) < 2) {
                fprintf(stderr, "fc-peer: bad FC_PEER_VERSION %s\n", text);
                exit(2);
        }
        snprintf(vm.version, sizeof(vm.version), "%u.%u.%u", vm.major, vm.minor, vm.patch);
        static const unsigned fmt[] = {[7] = 1,  [8] = 2,  [9] = 3,  [10] = 3, [11] = 5,
                                       [12] = 6, [13] = 8, [14] = 8, [15] = 9, [16] = 10};
        vm.snap_major = vm.major == 1 && vm.minor < 17 ? fmt[vm.minor] : vm.major * 100 + vm.minor;
        vm.snap_minor = 0;
}

/* ---- replies ------------------------------------------------------------------------------ */

struct reply {
        unsigned status;
        char *body; /* malloc'd JSON or NULL */
};

static struct reply ok(void)
{
        return (struct reply){204, NULL};
}

static struct reply json_reply(json_t *j)
{
        struct reply r = {200, json_dumps(j, JSON_COMPACT)};
        json_decref(j);
        return r;
}

static struct reply fault(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static struct reply fault(const char *fmt, ...)
{
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        struct reply r = json_reply(json_pack("{s:s}", "fault_message", msg));
        r.status = 400;
        return r;
}

/* Every error in a request body reads like Firecracker's serde errors. */
static struct reply bad_body(const char *what)
{
        return fault("An error occurred when deserializing the json body of a request: %s.", what);
}

/* ---- body schemas (serde structs with deny_unknown_fields) --------------------------------- */

enum ftype { T_STR, T_BOOL, T_UINT, T_OBJ, T_ARR };

struct field {
        const char *name;
        enum ftype type;
        bool required;
        const char *const *one_of; /* T_STR: the enum's variants, NULL-terminated */
        uint64_t max;              /* T_UINT: largest value, 0 = u64 */
        unsigned since_major, since_minor;
};

static bool field_exists(const struct field *f)
{
        return since(f->since_major, f->since_minor);
}

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

static const char *type_expected(enum ftype t)
{
        static const char *const names[] = {"a string", "a boolean", "u64", "struct", "a sequence"};
        return names[t];
}

static bool type_ok(const struct field *f, const json_t *v)
{
        switch (f->type) {
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

/* Checks one value against its field; writes serde's message into err. */
static bool check_value(const struct field *f, const json_t *v, char *err, size_t size)
{
        if (!type_ok(f, v)) {
                snprintf(err, size, "invalid type: %s, expected %s for `%s`", json_kind(v),
                         type_expected(f->type), f->name);
                return false;
        }
        if (f->type == T_UINT && f->max && (uint64_t)json_integer_value(v) > f->max) {
                snprintf(err, size, "invalid value: integer `%lld`, expected at most %llu",
                         json_integer_value(v), (unsigned long long)f->max);
                return false;
        }
        if (f->type == T_STR && f->one_of) {
                const char *s = json_string_value(v);
                for (const char *const *o = f->one_of; *o; o++)
                        if (strcmp(*o, s) == 0)
                                return true;
                int n = snprintf(err, size, "unknown variant `%s`, expected one of", s);
                for (const char *const *o = f->one_of; *o && n > 0 && (size_t)n < size; o++)
                        n += snprintf(err + n, size - (size_t)n, "%s `%s`",
                                      o == f->one_of ? "" : ",", *o);
                return false;
        }
        return true;
}

static int unknown_field(const char *key, const struct field *fields, char *err, size_t size)
{
        int n = snprintf(err, size, "unknown field `%s`, expected one of", key);
        bool first = true;
        for (const struct field *f = fields; f->name && n > 0 && (size_t)n < size; f++)
                if (field_exists(f)) {
                        n += snprintf(err + n, size - (size_t)n, "%s `%s`", first ? "" : ",",
                                      f->name);
                        first = false;
                }
        return 0;
}

/* Checks a body object against fields: no unknown keys, right types, required present. */
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
                while (f->name && !(strcmp(f->name, key) == 0 && field_exists(f)))
                        f++;
                if (!f->name) {
                        unknown_field(key, fields, err, size);
                        return false;
                }
                if (!check_value(f, v, err, size))
                        return false;
        }
        for (const struct field *f = fields; f->name; f++)
                if (f->required && field_exists(f) && !json_object_get(body, f->name)) {
                        snprintf(err, size, "missing field `%s`", f->name);
                        return false;
                }
        return true;
}

/* clang-format off */
static const char *const huge_pages_values[] = {"None", "2M", NULL};
static const char *const cache_values[] = {"Unsafe", "Writeback", NULL};
static const char *const engine_values[] = {"Sync", "Async", NULL};
static const char *const action_values[] = {"FlushMetrics", "InstanceStart", "SendCtrlAltDel",
                                            NULL};
static const char *const vm_state_values[] = {"Paused", "Resumed", NULL};
static const char *const snap_type_values[] = {"Full", "Diff", NULL};
static const char *const backend_values[] = {"File", "Uffd", NULL};

static const struct field machine_config_fields[] = {
        {"vcpu_count", T_UINT, true, NULL, 32, 0, 0},
        {"mem_size_mib", T_UINT, true, NULL, 0, 0, 0},
        {"smt", T_BOOL, false, NULL, 0, 0, 0},
        {"cpu_template", T_STR, false, NULL, 0, 0, 0},
        {"track_dirty_pages", T_BOOL, false, NULL, 0, 0, 0},
        {"huge_pages", T_STR, false, huge_pages_values, 0, 1, 7},
        {NULL, 0, false, NULL, 0, 0, 0},
};
static const struct field boot_source_fields[] = {
        {"kernel_image_path", T_STR, true, NULL, 0, 0, 0},
        {"initrd_path", T_STR, false, NULL, 0, 0, 0},
        {"boot_args", T_STR, false, NULL, 0, 0, 0},
        {NULL, 0, false, NULL, 0, 0, 0},
};
static const struct field drive_fields[] = {
        {"drive_id", T_STR, true, NULL, 0, 0, 0},
        {"path_on_host", T_STR, false, NULL, 0, 0, 0},
        {"is_root_device", T_BOOL, true, NULL, 0, 0, 0},
        {"is_read_only", T_BOOL, false, NULL, 0, 0, 0},
        {"partuuid", T_STR, false, NULL, 0, 0, 0},
        {"cache_type", T_STR, false, cache_values, 0, 0, 0},
        {"io_engine", T_STR, false, engine_values, 0, 0, 0},
        {"rate_limiter", T_OBJ, false, NULL, 0, 0, 0},
        {"socket", T_STR, false, NULL, 0, 1, 8},
        {NULL, 0, false, NULL, 0, 0, 0},
};
static const struct field vsock_fields[] = {
        {"vsock_id", T_STR, false, NULL, 0, 0, 0},
        {"guest_cid", T_UINT, true, NULL, UINT32_MAX, 0, 0},
        {"uds_path", T_STR, true, NULL, 0, 0, 0},
        {NULL, 0, false, NULL, 0, 0, 0},
};
static const struct field net_iface_fields[] = {
        {"iface_id", T_STR, true, NULL, 0, 0, 0},
        {"host_dev_name", T_STR, true, NULL, 0, 0, 0},
        {"guest_mac", T_STR, false, NULL, 0, 0, 0},
        {"rx_rate_limiter", T_OBJ, false, NULL, 0, 0, 0},
        {"tx_rate_limiter", T_OBJ, false, NULL, 0, 0, 0},
        {NULL, 0, false, NULL, 0, 0, 0},
};
static const struct field action_fields[] = {
        {"action_type", T_STR, true, action_values, 0, 0, 0},
        {NULL, 0, false, NULL, 0, 0, 0},
};
static const struct field vm_fields[] = {
        {"state", T_STR, true, vm_state_values, 0, 0, 0},
        {NULL, 0, false, NULL, 0, 0, 0},
};
static const struct field create_fields[] = {
        {"snapshot_type", T_STR, false, snap_type_values, 0, 0, 0},
        {"snapshot_path", T_STR, true, NULL, 0, 0, 0},
        {"mem_file_path", T_STR, true, NULL, 0, 0, 0},
        {NULL, 0, false, NULL, 0, 0, 0},
};
static const struct field load_fields[] = {
        {"snapshot_path", T_STR, true, NULL, 0, 0, 0},
        {"mem_file_path", T_STR, false, NULL, 0, 0, 0},
        {"mem_backend", T_OBJ, false, NULL, 0, 1, 1},
        {"enable_diff_snapshots", T_BOOL, false, NULL, 0, 0, 0},
        {"track_dirty_pages", T_BOOL, false, NULL, 0, 1, 13},
        {"resume_vm", T_BOOL, false, NULL, 0, 0, 0},
        {"network_overrides", T_ARR, false, NULL, 0, 1, 12},
        {"clock_realtime", T_BOOL, false, NULL, 0, 1, 14},
        {NULL, 0, false, NULL, 0, 0, 0},
};
static const struct field backend_fields[] = {
        {"backend_type", T_STR, true, backend_values, 0, 0, 0},
        {"backend_path", T_STR, true, NULL, 0, 0, 0},
        {NULL, 0, false, NULL, 0, 0, 0},
};
static const struct field override_fields[] = {
        {"iface_id", T_STR, true, NULL, 0, 0, 0},
        {"host_dev_name", T_STR, true, NULL, 0, 0, 0},
        {NULL, 0, false, NULL, 0, 0, 0},
};
static const struct field peer_write_fields[] = {
        {"offset", T_UINT, true, NULL, 0, 0, 0},
        {"length", T_UINT, true, NULL, 0, 0, 0},
        {"seed", T_UINT, false, NULL, 0, 0, 0},
        {"fill", T_UINT, false, NULL, 255, 0, 0},
        {NULL, 0, false, NULL, 0, 0, 0},
};
static const struct field peer_dump_fields[] = {
        {"path", T_STR, true, NULL, 0, 0, 0},
        {NULL, 0, false, NULL, 0, 0, 0},
};

/* clang-format on */

#define CHECK(body, fields)                                                                        \
        do {                                                                                       \
                char err_[512];                                                                    \
                if (!check_fields(body, fields, err_, sizeof(err_)))                               \
                        return bad_body(err_);                                                     \
        } while (0)

static const char *str(const json_t *o, const char *key)
{
        return json_string_value(json_object_get(o, key));
}

static bool flag(const json_t *o, const char *key)
{
        return json_is_true(json_object_get(o, key));
}

/* ---- guest memory -------------------------------------------------------------------------- */

struct region {
        uint64_t gpa, size, offset; /* offset: in the memory file and in vm.mem */
};

/* Firecracker's x86_64 layout: RAM below the 32-bit MMIO gap, the rest above 4 GiB. */
static unsigned memory_regions(uint64_t size, struct region r[2])
{
        uint64_t low = size < MMIO_START ? size : MMIO_START;
        r[0] = (struct region){0, low, 0};
        if (size == low)
                return 1;
        r[1] = (struct region){RAM_64BIT, size - low, low};
        return 2;
}

static bool memory_alloc(uint64_t size)
{
        vm.mem = mmap(NULL, size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        vm.dirty = calloc(size / PAGE, 1);
        vm.mem_size = size;
        return vm.mem != MAP_FAILED && vm.dirty;
}

static void mark_dirty(uint64_t off, uint64_t len)
{
        for (uint64_t p = off / PAGE; p < (off + len + PAGE - 1) / PAGE; p++)
                vm.dirty[p] = 1;
}

/* Copies the kernel image into guest memory the way a loader would (marks it dirty). */
static void load_kernel(void)
{
        int fd = open(vm.kernel, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return;
        uint64_t room = vm.mem_size > KERNEL_LOAD ? vm.mem_size - KERNEL_LOAD : 0;
        ssize_t n = pread(fd, vm.mem + KERNEL_LOAD, room, 0);
        close(fd);
        if (n > 0)
                mark_dirty(KERNEL_LOAD, (uint64_t)n);
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

/* One host connection: "CONNECT <port>\n"; the pretend agent on AGENT_PORT answers ok. */
static void vsock_serve(int c)
{
        char line[4096];
        unsigned port = 0;
        if (!read_line(c, line, sizeof(line)) || sscanf(line, "CONNECT %u", &port) != 1 ||
            port != AGENT_PORT)
                return; /* nothing listens there: Firecracker closes the connection */
        const char ok_line[] = "OK 1073741824\n";
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

static void *vsock_main(void *arg)
{
        int lfd = (int)(intptr_t)arg;
        for (;;) {
                int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0)
                        continue;
                vsock_serve(c);
                close(c);
        }
        return NULL;
}

/* Listens on the configured uds_path (relative paths resolve in the working directory). */
static bool vsock_start(char *err, size_t size)
{
        static bool started;
        if (!vm.vsock || started)
                return true;
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", str(vm.vsock, "uds_path"));
        unlink(sa.sun_path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        pthread_t t;
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0 ||
            pthread_create(&t, NULL, vsock_main, (void *)(intptr_t)fd) != 0) {
                snprintf(err, size, "Cannot create backend for vsock device: %s", strerror(errno));
                return false;
        }
        pthread_detach(t);
        started = true;
        return true;
}

/* ---- configuration (pre-boot) -------------------------------------------------------------- */

static struct reply not_after_start(void)
{
        return fault("The requested operation is not supported after starting the microVM.");
}

static struct reply not_before_start(void)
{
        return fault("The requested operation is not supported before starting the microVM.");
}

static struct reply put_machine_config(const json_t *b)
{
        CHECK(b, machine_config_fields);
        if (vm.state != NOT_STARTED)
                return not_after_start();
        if (json_integer_value(json_object_get(b, "vcpu_count")) == 0)
                return fault("The vCPU number is invalid: it must be between 1 and 32.");
        if (json_integer_value(json_object_get(b, "mem_size_mib")) == 0)
                return fault("The memory size (MiB) is invalid.");
        vm.vcpus = (unsigned)json_integer_value(json_object_get(b, "vcpu_count"));
        vm.mem_mib = (uint64_t)json_integer_value(json_object_get(b, "mem_size_mib"));
        vm.track_dirty = flag(b, "track_dirty_pages"); /* a PUT resets what it omits */
        vm.configured = true;
        return ok();
}

static struct reply put_boot_source(const json_t *b)
{
        CHECK(b, boot_source_fields);
        if (vm.state != NOT_STARTED)
                return not_after_start();
        const char *kernel = str(b, "kernel_image_path"), *initrd = str(b, "initrd_path");
        if (access(kernel, R_OK) < 0)
                return fault("The kernel file cannot be opened: %s (os error %d)", strerror(errno),
                             errno);
        if (initrd && access(initrd, R_OK) < 0)
                return fault("The initrd file cannot be opened due to invalid path or invalid "
                             "permissions. %s (os error %d)",
                             strerror(errno), errno);
        free(vm.kernel);
        free(vm.initrd);
        free(vm.boot_args);
        vm.kernel = strdup(kernel);
        vm.initrd = initrd ? strdup(initrd) : NULL;
        vm.boot_args = str(b, "boot_args") ? strdup(str(b, "boot_args")) : NULL;
        vm.configured = true;
        return ok();
}

/* The drive's backing file must open the way the guest will use it. */
static bool drive_opens(const json_t *d, char *err, size_t size)
{
        const char *path = str(d, "path_on_host");
        if (!path)
                return true;
        int fd = open(path, (flag(d, "is_read_only") ? O_RDONLY : O_RDWR) | O_CLOEXEC);
        if (fd < 0) {
                snprintf(err, size,
                         "Unable to create the virtio block device: %s: %s (os error %d)", path,
                         strerror(errno), errno);
                return false;
        }
        close(fd);
        return true;
}

static struct reply put_drive(const char *id, const json_t *b)
{
        CHECK(b, drive_fields);
        if (vm.state != NOT_STARTED)
                return not_after_start();
        if (!id || strcmp(id, str(b, "drive_id")) != 0)
                return fault("The id from the path does not match the id from the body!");
        char err[512];
        if (!drive_opens(b, err, sizeof(err)))
                return fault("%s", err);
        json_decref(vm.drive);
        vm.drive = json_deep_copy(b);
        vm.configured = true;
        return ok();
}

/* Firecracker opens the TAP when the interface is configured: the name must exist in the
 * VMM's network namespace and /dev/net/tun must open (the jail's node). */
static struct reply put_net_iface(const char *id, const json_t *b)
{
        CHECK(b, net_iface_fields);
        if (vm.state != NOT_STARTED)
                return not_after_start();
        if (!id || strcmp(id, str(b, "iface_id")) != 0)
                return fault("The id from the path does not match the id from the body!");
        int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return fault("Open tap device failed: Error while creating ifreq structure: %s. "
                             "Invalid TUN/TAP Backend provided by %s.",
                             strerror(errno), str(b, "host_dev_name"));
        close(fd);
        if (!if_nametoindex(str(b, "host_dev_name")))
                return fault("Open tap device failed: no device %s in this namespace.",
                             str(b, "host_dev_name"));
        vm.configured = true;
        return ok();
}

static struct reply put_vsock(const json_t *b)
{
        CHECK(b, vsock_fields);
        if (vm.state != NOT_STARTED)
                return not_after_start();
        if (json_integer_value(json_object_get(b, "guest_cid")) < 3)
                return fault("Invalid vsock CID: the guest CID must be 3 or more.");
        json_decref(vm.vsock);
        vm.vsock = json_deep_copy(b);
        vm.configured = true;
        return ok();
}

static struct reply instance_start(void)
{
        char err[512];
        if (vm.state != NOT_STARTED)
                return not_after_start();
        if (!vm.kernel)
                return fault("Cannot start microvm without kernel configuration.");
        if (!memory_alloc(vm.mem_mib * MIB))
                return fault("Cannot create guest memory: %s", strerror(errno));
        load_kernel();
        if (!vsock_start(err, sizeof(err)))
                return fault("%s", err);
        vm.state = RUNNING;
        return ok();
}

static struct reply put_actions(const json_t *b)
{
        CHECK(b, action_fields);
        const char *a = str(b, "action_type");
        if (strcmp(a, "InstanceStart") == 0)
                return instance_start();
        if (vm.state == NOT_STARTED && strcmp(a, "SendCtrlAltDel") == 0)
                return not_before_start();
        return ok();
}

static struct reply patch_vm(const json_t *b)
{
        CHECK(b, vm_fields);
        if (vm.state == NOT_STARTED)
                return not_before_start();
        vm.state = strcmp(str(b, "state"), "Paused") == 0 ? PAUSED : RUNNING;
        return ok();
}

static struct reply get_instance_info(void)
{
        return json_reply(json_pack("{s:s, s:s, s:s, s:s}", "id", "anonymous-instance", "state",
                                    state_names[vm.state], "vmm_version", vm.version, "app_name",
                                    "Firecracker"));
}

static struct reply get_machine_config(void)
{
        return json_reply(json_pack("{s:i, s:I, s:b, s:b}", "vcpu_count", (int)vm.vcpus,
                                    "mem_size_mib", (json_int_t)vm.mem_mib, "smt", 0,
                                    "track_dirty_pages", vm.track_dirty));
}

/* ---- snapshots ----------------------------------------------------------------------------- */

/* The state file: the x86_64 magic (little endian), then what a load needs, as JSON. */
static bool write_state(const char *path, char *err, size_t size)
{
        char fmt[32];
        snprintf(fmt, sizeof(fmt), "%u.%u.0", vm.snap_major, vm.snap_minor);
        json_t *j = json_pack("{s:s, s:i, s:I, s:O?, s:O?}", "snapshot_version", fmt, "vcpu_count",
                              (int)vm.vcpus, "mem_size_mib", (json_int_t)vm.mem_mib, "drive",
                              vm.drive, "vsock", vm.vsock);
        char *text = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        uint64_t magic = SNAP_MAGIC; /* x86_64 is little endian */
        FILE *f = fopen(path, "we");
        bool good = f && text && fwrite(&magic, 8, 1, f) == 1 && fputs(text, f) >= 0;
        if (f && fclose(f) != 0)
                good = false;
        free(text);
        if (!good)
                snprintf(err, size, "Cannot write the microVM state to %s: %s", path,
                         strerror(errno));
        return good;
}

/* Writes guest memory like Firecracker: pre-sized, only truncated when its size differs;
 * Full writes every page, Diff only dirty runs (clean runs stay holes or old data). */
static bool write_memory(const char *path, bool diff, char *err, size_t size)
{
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        struct stat st;
        bool good = fd >= 0 && fstat(fd, &st) == 0;
        if (good && (uint64_t)st.st_size != vm.mem_size)
                good = ftruncate(fd, 0) == 0 && ftruncate(fd, (off_t)vm.mem_size) == 0;
        uint64_t pages = vm.mem_size / PAGE;
        for (uint64_t p = 0; good && p < pages;) {
                if (diff && !vm.dirty[p]) {
                        p++;
                        continue;
                }
                uint64_t q = p + 1;
                while (q < pages && (!diff || vm.dirty[q]))
                        q++;
                for (uint64_t off = p * PAGE; good && off < q * PAGE;) {
                        ssize_t n = pwrite(fd, vm.mem + off, q * PAGE - off, (off_t)off);
                        good = n > 0;
                        off += n > 0 ? (uint64_t)n : 0;
                }
                p = q;
        }
        if (!good)
                snprintf(err, size, "Cannot dump the guest memory to %s: %s", path,
                         strerror(errno));
        if (fd >= 0)
                close(fd);
        return good;
}

static struct reply snapshot_create(const json_t *b)
{
        char err[512];
        CHECK(b, create_fields);
        if (vm.state == NOT_STARTED)
                return not_before_start();
        if (vm.state != PAUSED)
                return fault("Create snapshot error: Cannot save the microVM state: the microVM "
                             "is running; pause it first (PATCH /vm).");
        const char *type = str(b, "snapshot_type");
        bool diff = type && strcmp(type, "Diff") == 0;
        if (diff && !vm.track_dirty && !since(1, 13))
                return fault("Create snapshot error: Diff snapshots are not enabled: "
                             "set track_dirty_pages in the machine configuration.");
        if (diff && !vm.track_dirty) /* 1.13+: mincore over-approximates: every page */
                memset(vm.dirty, 1, vm.mem_size / PAGE);
        if (!write_state(str(b, "snapshot_path"), err, sizeof(err)) ||
            !write_memory(str(b, "mem_file_path"), diff, err, sizeof(err)))
                return fault("Create snapshot error: %s", err);
        memset(vm.dirty, 0, vm.mem_size / PAGE);
        return ok();
}

/* Reads and checks the state file; returns its JSON or NULL with err. */
static json_t *read_state(const char *path, char *err, size_t size)
{
        FILE *f = fopen(path, "re");
        uint64_t magic = 0;
        if (!f || fread(&magic, 8, 1, f) != 1) {
                snprintf(err, size, "Failed to open snapshot file %s: %s", path, strerror(errno));
                if (f)
                        fclose(f);
                return NULL;
        }
        json_error_t e;
        json_t *j = json_loadf(f, 0, &e);
        fclose(f);
        unsigned maj = 0, min = 0;
        if (magic != SNAP_MAGIC || !j ||
            sscanf(str(j, "snapshot_version") ? str(j, "snapshot_version") : "", "%u.%u", &maj,
                   &min) != 2) {
                snprintf(err, size, "%s is not a Firecracker x86_64 snapshot (bad magic or header)",
                         path);
                json_decref(j);
                return NULL;
        }
        if (maj != vm.snap_major || min > vm.snap_minor) {
                snprintf(err, size,
                         "Unsupported snapshot version %u.%u.0 (this Firecracker %s reads "
                         "%u.%u.0)",
                         maj, min, vm.version, vm.snap_major, vm.snap_minor);
                json_decref(j);
                return NULL;
        }
        return j;
}

/* File backend: the memory file mapped MAP_PRIVATE (reads come from the file, writes stay
 * in this process). */
static bool map_file(const char *path, char *err, size_t size)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0) {
                snprintf(err, size, "Cannot open the memory file %s: %s", path, strerror(errno));
                if (fd >= 0)
                        close(fd);
                return false;
        }
        if ((uint64_t)st.st_size < vm.mem_size) {
                snprintf(err, size, "The memory file %s is smaller (%lld) than guest memory (%llu)",
                         path, (long long)st.st_size, (unsigned long long)vm.mem_size);
                close(fd);
                return false;
        }
        vm.mem = mmap(NULL, vm.mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        close(fd);
        vm.dirty = calloc(vm.mem_size / PAGE, 1);
        if (vm.mem == MAP_FAILED || !vm.dirty) {
                snprintf(err, size, "Cannot map the memory file: %s", strerror(errno));
                return false;
        }
        return true;
}

static int uffd_create(void)
{
        int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        if (dev >= 0) {
                int fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
                close(dev);
                if (fd >= 0)
                        return fd;
        }
        return (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
}

/* The handshake message: Firecracker's GuestRegionUffdMapping array in this release's
 * field names (page_size_kib from 1.7, which carries bytes; page_size from 1.12). */
static char *uffd_regions_json(const struct region *r, unsigned n)
{
        json_t *arr = json_array();
        for (unsigned i = 0; i < n; i++) {
                json_t *o = json_pack("{s:I, s:I, s:I}", "base_host_virt_addr",
                                      (json_int_t)(uintptr_t)(vm.mem + r[i].offset), "size",
                                      (json_int_t)r[i].size, "offset", (json_int_t)r[i].offset);
                if (since(1, 7))
                        json_object_set_new(o, "page_size_kib", json_integer((json_int_t)PAGE));
                if (since(1, 12))
                        json_object_set_new(o, "page_size", json_integer((json_int_t)PAGE));
                json_array_append_new(arr, o);
        }
        char *text = json_dumps(arr, JSON_COMPACT);
        json_decref(arr);
        return text;
}

static bool send_with_fd(int sock, const char *text, int fd)
{
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int))];
        } u;
        memset(&u, 0, sizeof(u));
        struct iovec iov = {.iov_base = (void *)text, .iov_len = strlen(text)};
        struct msghdr m = {.msg_iov = &iov,
                           .msg_iovlen = 1,
                           .msg_control = u.buf,
                           .msg_controllen = sizeof(u.buf)};
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
        return sendmsg(sock, &m, MSG_NOSIGNAL) == (ssize_t)iov.iov_len;
}

/* Uffd backend, as in Firecracker's persist.rs: anonymous memory, a uffd registered over
 * every region, then one message to the page server. */
static bool uffd_backend(const char *sock_path, char *err, size_t size)
{
        struct region r[2];
        unsigned n = memory_regions(vm.mem_size, r);
        if (!memory_alloc(vm.mem_size) || (vm.uffd = uffd_create()) < 0) {
                snprintf(err, size, "Failed to create the userfaultfd: %s", strerror(errno));
                return false;
        }
        struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_EVENT_REMOVE};
        bool good = ioctl(vm.uffd, UFFDIO_API, &api) == 0;
        for (unsigned i = 0; good && i < n; i++) {
                struct uffdio_register reg = {
                    .range = {(uintptr_t)(vm.mem + r[i].offset), r[i].size},
                    .mode = UFFDIO_REGISTER_MODE_MISSING};
                good = ioctl(vm.uffd, UFFDIO_REGISTER, &reg) == 0;
        }
        if (!good) {
                snprintf(err, size, "Failed to set up the userfaultfd: %s", strerror(errno));
                return false;
        }
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
        char *text = uffd_regions_json(r, n);
        vm.uffd_sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        good = text && vm.uffd_sock >= 0 &&
               connect(vm.uffd_sock, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
               send_with_fd(vm.uffd_sock, text, vm.uffd);
        free(text);
        if (!good) {
                snprintf(err, size, "Failed to connect to the page fault handler at %s: %s",
                         sock_path, strerror(errno));
                return false;
        }
        if (!since(1, 12)) { /* 1.12 keeps its end open (a race with the handler's EOF) */
                close(vm.uffd_sock);
                vm.uffd_sock = -1;
        }
        return true;
}

/* A failed load ends the process (after this reply), as Firecracker's does. */
static struct reply load_failed(const char *err)
{
        vm.exit_after_reply = true;
        return fault("Load snapshot error: Failed to restore from snapshot: %s", err);
}

static struct reply check_load_body(const json_t *b)
{
        CHECK(b, load_fields);
        const json_t *be = json_object_get(b, "mem_backend");
        if (be)
                CHECK(be, backend_fields);
        size_t i;
        json_t *o;
        json_array_foreach(json_object_get(b, "network_overrides"), i, o) CHECK(o, override_fields);
        if (be && json_object_get(b, "mem_file_path"))
                return bad_body("too many fields: either `mem_backend` or `mem_file_path` "
                                "exclusively is required");
        if (!be && !json_object_get(b, "mem_file_path"))
                return bad_body("missing field: either `mem_backend` or `mem_file_path` is "
                                "required");
        return ok();
}

static struct reply snapshot_load(const json_t *b)
{
        char err[512];
        struct reply r = check_load_body(b);
        if (r.status != 204)
                return r;
        if (vm.state != NOT_STARTED)
                return not_after_start();
        if (vm.configured)
                return fault("Loading a microVM snapshot not allowed after configuring "
                             "boot-specific resources.");
        json_t *st = read_state(str(b, "snapshot_path"), err, sizeof(err));
        if (!st)
                return load_failed(err);
        vm.vcpus = (unsigned)json_integer_value(json_object_get(st, "vcpu_count"));
        vm.mem_mib = (uint64_t)json_integer_value(json_object_get(st, "mem_size_mib"));
        vm.mem_size = vm.mem_mib * MIB;
        vm.drive = json_incref(json_object_get(st, "drive"));
        vm.vsock = json_incref(json_object_get(st, "vsock"));
        json_decref(st);
        const json_t *be = json_object_get(b, "mem_backend");
        const char *type = be ? str(be, "backend_type") : "File";
        const char *path = be ? str(be, "backend_path") : str(b, "mem_file_path");
        bool mapped = strcmp(type, "Uffd") == 0 ? uffd_backend(path, err, sizeof(err))
                                                : map_file(path, err, sizeof(err));
        if (!mapped || (vm.drive && !drive_opens(vm.drive, err, sizeof(err))) ||
            !vsock_start(err, sizeof(err)))
                return load_failed(err);
        vm.track_dirty = flag(b, "enable_diff_snapshots") || flag(b, "track_dirty_pages");
        vm.state = flag(b, "resume_vm") ? RUNNING : PAUSED;
        return ok();
}

/* ---- test-only endpoints ------------------------------------------------------------------- */

static struct reply peer_write(const json_t *b)
{
        CHECK(b, peer_write_fields);
        uint64_t off = (uint64_t)json_integer_value(json_object_get(b, "offset"));
        uint64_t len = (uint64_t)json_integer_value(json_object_get(b, "length"));
        const json_t *seed = json_object_get(b, "seed"), *fill = json_object_get(b, "fill");
        if (vm.state != RUNNING)
                return fault("peer: the guest is not running (%s)", state_names[vm.state]);
        if (!seed == !fill || off > vm.mem_size || len > vm.mem_size - off)
                return fault("peer: give one of seed and fill, inside guest memory");
        if (fill) {
                memset(vm.mem + off, (int)json_integer_value(fill), len);
        } else {
                uint64_t s = (uint64_t)json_integer_value(seed) | 1;
                for (uint64_t i = 0; i < len; i += 8) {
                        uint64_t v = xorshift(&s);
                        memcpy(vm.mem + off + i, &v, len - i < 8 ? len - i : 8);
                }
        }
        mark_dirty(off, len);
        return ok();
}

static struct reply peer_dump(const json_t *b)
{
        CHECK(b, peer_dump_fields);
        if (!vm.mem || vm.mem == MAP_FAILED)
                return fault("peer: no guest memory yet");
        int fd = open(str(b, "path"), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        static uint8_t bounce[1 << 20]; /* copied in user mode: uffd serves every page */
        bool good = fd >= 0;
        for (uint64_t off = 0; good && off < vm.mem_size; off += sizeof(bounce)) {
                size_t n = vm.mem_size - off < sizeof(bounce) ? vm.mem_size - off : sizeof(bounce);
                memcpy(bounce, vm.mem + off, n);
                good = pwrite(fd, bounce, n, (off_t)off) == (ssize_t)n;
        }
        if (fd >= 0)
                close(fd);
        return good ? ok() : fault("peer: cannot write %s: %s", str(b, "path"), strerror(errno));
}

/* ---- routing ------------------------------------------------------------------------------- */

static struct reply route_put(const char *path, const char *sub, const json_t *b)
{
        if (strcmp(path, "machine-config") == 0 && !sub)
                return put_machine_config(b);
        if (strcmp(path, "boot-source") == 0 && !sub)
                return put_boot_source(b);
        if (strcmp(path, "drives") == 0)
                return put_drive(sub, b);
        if (strcmp(path, "network-interfaces") == 0)
                return put_net_iface(sub, b);
        if (strcmp(path, "vsock") == 0 && !sub)
                return put_vsock(b);
        if (strcmp(path, "actions") == 0 && !sub)
                return put_actions(b);
        if (strcmp(path, "snapshot") == 0 && sub && strcmp(sub, "create") == 0)
                return snapshot_create(b);
        if (strcmp(path, "snapshot") == 0 && sub && strcmp(sub, "load") == 0)
                return snapshot_load(b);
        if (strcmp(path, "peer") == 0 && sub && strcmp(sub, "write") == 0)
                return peer_write(b);
        if (strcmp(path, "peer") == 0 && sub && strcmp(sub, "dump") == 0)
                return peer_dump(b);
        return fault("Invalid request method and/or path: PUT %s.", path);
}

static struct reply route(const char *method, const char *url, const char *buf, size_t len)
{
        char path[256], *sub;
        snprintf(path, sizeof(path), "%s", url[0] == '/' ? url + 1 : url);
        if ((sub = strchr(path, '/')))
                *sub++ = '\0';
        if (strcmp(method, "GET") == 0) {
                if (len)
                        return fault("GET request cannot have a body.");
                if (!path[0])
                        return get_instance_info();
                if (strcmp(path, "version") == 0)
                        return json_reply(json_pack("{s:s}", "firecracker_version", vm.version));
                if (strcmp(path, "machine-config") == 0)
                        return get_machine_config();
                return fault("Invalid request method and/or path: GET %s.", path);
        }
        if (strcmp(method, "PUT") != 0 && strcmp(method, "PATCH") != 0)
                return fault("Invalid request method and/or path: %s %s.", method, path);
        if (!len)
                return fault("Empty %s request.", method);
        json_error_t e;
        json_t *b = json_loadb(buf, len, JSON_DECODE_ANY, &e);
        if (!b)
                return fault("An error occurred when deserializing the json body of a request: "
                             "%s at line %d column %d.",
                             e.text, e.line, e.column);
        struct reply r =
            strcmp(method, "PATCH") == 0
                ? (strcmp(path, "vm") == 0 && !sub ? patch_vm(b)
                                                   : fault("Invalid request method and/or path: "
                                                           "PATCH %s.",
                                                           path))
                : route_put(path, sub, b);
        json_decref(b);
        return r;
}

/* ---- HTTP server (libmicrohttpd on the API socket) ----------------------------------------- */

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
            k->too_big ? fault("Request payload too large.") : route(method, url, k->buf, k->len);
        const char *body = r.body ? r.body : "";
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
        if (r.body)
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
                _exit(1);
}

static int listen_unix(const char *path)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof(sa.sun_path))
                return -1;
        strcpy(sa.sun_path, path);
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

int main(int argc, char **argv)
{
        const char *sock = NULL;
        set_release(getenv("FC_PEER_VERSION") ? getenv("FC_PEER_VERSION") : "1.12.1");
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--version") == 0) {
                        printf("Firecracker v%s\n\n", vm.version);
                        return 0;
                }
                if ((strcmp(argv[i], "--api-sock") == 0 || strcmp(argv[i], "--id") == 0) &&
                    i + 1 < argc) {
                        if (strcmp(argv[i], "--api-sock") == 0)
                                sock = argv[i + 1];
                        i++;
                        continue;
                }
                fprintf(stderr,
                        "Arguments parsing error: Found argument '%s' which wasn't "
                        "expected.\n",
                        argv[i]);
                return 1;
        }
        if (!sock) {
                fprintf(stderr, "fc-peer: --api-sock PATH is required\n");
                return 1;
        }
        if (getenv("FC_PEER_NO_SOCKET"))
                wait_to_be_killed();
        int lfd = listen_unix(sock);
        if (lfd < 0 || pipe2(vm.exit_pipe, O_CLOEXEC) < 0) {
                fprintf(stderr, "Failed to open the API socket %s: %s\n", sock, strerror(errno));
                return 1;
        }
        struct MHD_Daemon *daemon =
            MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, on_request, NULL,
                             MHD_OPTION_LISTEN_SOCKET, lfd, MHD_OPTION_NOTIFY_COMPLETED,
                             on_completed, NULL, MHD_OPTION_END);
        if (!daemon) {
                fprintf(stderr, "fc-peer: cannot start the HTTP server\n");
                return 1;
        }
        fprintf(stderr, "fc-peer: Firecracker v%s API on %s\n", vm.version, sock);
        char x;
        while (read(vm.exit_pipe[0], &x, 1) < 0 && errno == EINTR)
                ;
        fprintf(stderr, "fc-peer: snapshot load failed, exiting\n");
        MHD_stop_daemon(daemon);
        return 1;
}
