/*
 * vmsnap-agent (main.c): the guest half of the host <-> guest control channel.
 *
 * Runs inside the microVM (normally as PID 1, exec'd by the initramfs /init) and
 * serves newline-delimited JSON requests on the virtio-serial port named
 * "org.vmsnap.agent". One request per line, one response per line, in order:
 *
 *   {"op":"health"}                               -> {"ok":true,"uptime_ms":N}
 *   {"op":"exec","cmd":"...","timeout_ms":N}      -> {"ok":true,"exit":N,"stdout":"..",...}
 *   {"op":"write_file","path":"..","data_b64":".."}
 *   {"op":"read_file","path":".."}                -> {"ok":true,"data_b64":".."}
 *   {"op":"sync"}
 *   {"op":"restore_hook","time_ns":N,"seed_b64":".."}
 *   {"op":"random"}                               -> {"ok":true,"hex":"<32 hex digits>"}
 *
 * A request's "id" (string, number, bool or null) is echoed in its response.
 * Failures answer {"ok":false,"error":"..."}. docs/guest.md has the full contract.
 *
 * It must stay static and dependency-free (it is the only program in the initramfs
 * besides busybox), hence the small hand-written JSON and base64 in json.c. It must
 * also survive snapshot/restore: after a restore the host reconnects to a *new*
 * QEMU's socket, which the guest sees as the port's host side closing and opening
 * again, so every "host went away" condition is a wait-and-retry, never an exit.
 */
#include "agent.h"

#include <dirent.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sys/un.h>
#include <linux/vm_sockets.h>

/* ---------------------------------------------------------------- the port */

/* Finds the device node of our virtio-serial port. udev would make
 * /dev/virtio-ports/<name>; busybox does not, so fall back to matching
 * /sys/class/virtio-ports/vportNpM/name ourselves. */
static int find_port(char *path, size_t size)
{
	static const char sys[] = "/sys/class/virtio-ports";
	struct dirent *e;
	DIR *d;
	int ret = -ENOENT;

	if (access("/dev/virtio-ports/" PORT_NAME, F_OK) == 0) {
		snprintf(path, size, "/dev/virtio-ports/%s", PORT_NAME);
		return 0;
	}
	d = opendir(sys);
	if (!d)
		return -errno;
	while (ret < 0 && (e = readdir(d))) {
		char name_path[512], name[128] = "";
		FILE *f;
		if (e->d_name[0] == '.')
			continue;
		snprintf(name_path, sizeof(name_path), "%s/%s/name", sys, e->d_name);
		f = fopen(name_path, "re");
		if (!f)
			continue;
		if (fgets(name, sizeof(name), f))
			name[strcspn(name, "\n")] = '\0';
		fclose(f);
		if (strcmp(name, PORT_NAME) == 0) {
			snprintf(path, size, "/dev/%s", e->d_name);
			ret = 0;
		}
	}
	closedir(d);
	return ret;
}

/* Opens the port, waiting for it to appear (modules may still be probing). */
static int open_port(const char *override)
{
	char path[512];
	bool warned = false;

	for (;;) {
		int fd = -1;
		if (override)
			snprintf(path, sizeof(path), "%s", override);
		if (override || find_port(path, sizeof(path)) == 0)
			fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
		if (fd >= 0) {
			logmsg("serving on %s", path);
			return fd;
		}
		if (!warned)
			logmsg("waiting for virtio port %s", override ? override : PORT_NAME);
		warned = true;
		sleep_ms(200);
	}
}

/* Serves the port forever. A vanished device (or a read error) makes us reopen it. */
static void serve_port(const char *override, struct line_reader *in)
{
	struct conn c = { .fd = open_port(override), .is_port = true, .in = *in };

	for (;;) {
		conn_serve(&c);
		logmsg("the port failed (%s); reopening it", strerror(errno));
		conn_reset(&c);
		close(c.fd);
		sleep_ms(200);
		c.fd = open_port(override);
		c.host_gone = false;
	}
}

/* ---- vsock (Firecracker, Cloud Hypervisor) ---- */

#define AGENT_VSOCK_PORT 1024 /* the port the host's VMM drivers connect to */

/* Serves the connections of a listening socket one at a time. */
static void serve_listener(int fd, struct line_reader *in)
{
	for (;;) {
		struct conn c = { .fd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK),
				  .in = *in };
		if (c.fd < 0) {
			if (errno != EINTR)
				sleep_ms(100);
			continue;
		}
		conn_serve(&c);
		conn_reset(&c);
		buf_free(&c.out);
		close(c.fd);
	}
}

/* Serves the same protocol on vsock port 1024, one connection at a time, for VMMs that give
 * the guest a vsock device instead of a virtio-serial port. Runs in a child process; quietly
 * ends when the guest has no vsock transport (QEMU microvm here). */
static void serve_vsock(struct line_reader *in)
{
	struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY,
				  .svm_port = AGENT_VSOCK_PORT };
	int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);

	prctl(PR_SET_CHILD_SUBREAPER, 1); /* not inherited across fork */
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0) {
		logmsg("no vsock listener (%s); serving the virtio-serial port only", strerror(errno));
		_exit(0);
	}
	logmsg("listening on vsock port %d", AGENT_VSOCK_PORT);
	serve_listener(fd, in);
}

/* `--listen-unix PATH` (tests on the host, no VM): the protocol on a Unix socket. */
static int serve_unix(const char *path, struct line_reader *in)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "vmsnap-agent: %s: socket path too long\n", path);
		return 2;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	unlink(path);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0) {
		fprintf(stderr, "vmsnap-agent: %s: %s\n", path, strerror(errno));
		return 1;
	}
	logmsg("listening on %s", path);
	serve_listener(fd, in);
	return 0;
}

/* `vmsnap-agent --vsock-selftest`: asks the agent over vsock loopback (CID 1) for its health
 * and prints the answer, so a test can prove the vsock listener works inside a guest. */
static int vsock_selftest(void)
{
	struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_LOCAL,
				  .svm_port = AGENT_VSOCK_PORT };
	const char req[] = "{\"op\":\"health\"}\n";
	char buf[256];
	ssize_t n;
	int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    write(fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1) {
		fprintf(stderr, "vsock selftest: %s\n", strerror(errno));
		return 1;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0) {
		fprintf(stderr, "vsock selftest: no answer\n");
		return 1;
	}
	buf[n] = '\0';
	fputs(buf, stdout);
	close(fd);
	return strstr(buf, "\"ok\":true") ? 0 : 1;
}

bool host_mode;

/* Makes sure fds 0-2 exist, so that pipes and the port never land on them. */
static void ensure_std_fds(void)
{
	for (int i = 0; i < 3; i++)
		if (fcntl(i, F_GETFD) < 0 && open("/dev/null", O_RDWR) < 0)
			break;
}

int main(int argc, char **argv)
{
	const char *override = NULL, *unix_path = NULL;
	struct line_reader lr = { 0 };

	if (argc == 3 && strcmp(argv[1], "--port") == 0) {
		override = argv[2];
	} else if (argc == 3 && strcmp(argv[1], "--listen-unix") == 0) {
		unix_path = argv[2];
		host_mode = true;
	} else if (argc == 2 && strcmp(argv[1], "--vsock-selftest") == 0) {
		return vsock_selftest();
	} else if (argc != 1) {
		fprintf(stderr, "usage: vmsnap-agent [--port DEVICE | --listen-unix PATH | "
				"--vsock-selftest]\n");
		return 2;
	}
	ensure_std_fds();
	signal(SIGPIPE, SIG_IGN);
	/* Outside PID 1, still collect background jobs the commands leave behind. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	if (!getenv("PATH"))
		setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin", 1);
	lr.data = malloc(MAX_LINE);
	while (!lr.data) {
		/* As PID 1, exiting would panic the guest: wait for memory instead. */
		logmsg("cannot allocate the request buffer; retrying");
		sleep_ms(1000);
		lr.data = malloc(MAX_LINE);
	}
	logmsg("started (pid %d)", (int)getpid());
	if (unix_path)
		return serve_unix(unix_path, &lr);
	if (fork() == 0)
		serve_vsock(&lr); /* a copy of the buffer: the child has its own */
	serve_port(override, &lr);
	return 0;
}
