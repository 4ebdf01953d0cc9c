/* Files in the guest (docs/guest.md §2.1, §2.3): stat, list and remove calls, and the read
 * and write streams. A write lands in a temporary file next to the path that is fsync'd and
 * renamed over it at the end, so the path is always either the old file or the whole new
 * one. Guest paths are the guest's business: the agent runs as root in its own VM. */
#include "agent.h"

#include <ftw.h>
#include <libgen.h>

#define CREDIT_BATCH (64u << 10)

static unsigned char chunk[FRAME_MAX];

static const char *type_name(mode_t m)
{
	return S_ISREG(m) ? "file" : S_ISDIR(m) ? "dir" : S_ISLNK(m) ? "symlink" : "other";
}

/* Appends the members of a file entry (no braces) from st. */
static void put_entry_members(struct buf *b, const char *path, const char *name,
			      const struct stat *st)
{
	buf_puts(b, "\"name\":");
	put_json_cstr(b, name);
	buf_puts(b, ",\"path\":");
	put_json_cstr(b, path);
	buf_printf(b, ",\"type\":\"%s\",\"mode\":%u,\"size\":%" PRIu64 ",\"mtime\":%" PRId64,
		   type_name(st->st_mode), (unsigned)(st->st_mode & 07777), (uint64_t)st->st_size,
		   (int64_t)st->st_mtime);
	buf_puts(b, ",\"target\":");
	if (S_ISLNK(st->st_mode)) {
		char target[4096];
		ssize_t n = readlink(path, target, sizeof(target) - 1);
		target[n > 0 ? n : 0] = '\0';
		put_json_cstr(b, target);
	} else {
		buf_puts(b, "null");
	}
}

/* The last component of path (for the entry's name). */
static const char *base_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash && slash[1] ? slash + 1 : path;
}

int put_file_entry(struct buf *b, const char *path, const char *name, struct reply *r)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return fail(r, -errno, "%s: %s", path, strerror(errno));
	put_entry_members(b, path, name, &st);
	return 0;
}

int op_stat(const struct request *rq, struct reply *r)
{
	if (!rq->path)
		return fail(r, -EINVAL, "stat needs \"path\"");
	buf_puts(&r->fields, ",");
	return put_file_entry(&r->fields, rq->path, base_of(rq->path), r);
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads up to LIST_MAX names of dir (without . and ..), sorted. */
static int read_names(const char *dir, char ***ret, size_t *ret_n, bool *truncated,
		      struct reply *r)
{
	DIR *d = opendir(dir);
	char **names = NULL;
	size_t n = 0;
	struct dirent *e;

	if (!d)
		return fail(r, -errno, "%s: %s", dir, strerror(errno));
	*truncated = false;
	names = malloc(LIST_MAX * sizeof(char *));
	while (names && (e = readdir(d))) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (n == LIST_MAX) {
			*truncated = true;
			break;
		}
		if (!(names[n] = strdup(e->d_name))) {
			*truncated = true; /* out of memory: what fitted */
			break;
		}
		n++;
	}
	closedir(d);
	if (!names)
		return fail(r, -ENOMEM, "out of memory");
	qsort(names, n, sizeof(char *), compare_names);
	*ret = names;
	*ret_n = n;
	return 0;
}

int op_list(const struct request *rq, struct reply *r)
{
	char **names = NULL, path[4096];
	size_t n = 0;
	bool truncated = false;
	int ret;

	if (!rq->path)
		return fail(r, -EINVAL, "list needs \"path\"");
	if ((ret = read_names(rq->path, &names, &n, &truncated, r)) < 0)
		return ret;
	buf_puts(&r->fields, ",\"path\":");
	put_json_cstr(&r->fields, rq->path);
	buf_puts(&r->fields, ",\"entries\":[");
	for (size_t i = 0, out = 0; i < n; i++) {
		struct stat st;
		snprintf(path, sizeof(path), "%s%s%s", rq->path,
			 rq->path[strlen(rq->path) - 1] == '/' ? "" : "/", names[i]);
		if (lstat(path, &st) == 0) { /* it may have gone since readdir */
			buf_puts(&r->fields, out++ ? ",{" : "{");
			put_entry_members(&r->fields, path, names[i], &st);
			buf_puts(&r->fields, "}");
		}
		free(names[i]);
	}
	free(names);
	buf_puts(&r->fields, "]");
	put_field_bool(r, "truncated", truncated);
	return 0;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	return (flag == FTW_DP ? rmdir(path) : unlink(path)) < 0 ? -1 : 0;
}

int op_remove(const struct request *rq, struct reply *r)
{
	struct stat st;

	if (!rq->path)
		return fail(r, -EINVAL, "remove needs \"path\"");
	if (lstat(rq->path, &st) < 0)
		return fail(r, -errno, "%s: %s", rq->path, strerror(errno));
	if (S_ISDIR(st.st_mode) && rq->recursive) {
		if (nftw(rq->path, remove_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
			return fail(r, -errno, "%s: %s", rq->path, strerror(errno));
	} else if ((S_ISDIR(st.st_mode) ? rmdir(rq->path) : unlink(rq->path)) < 0) {
		return fail(r, -errno, "%s: %s%s", rq->path, strerror(errno),
			    errno == ENOTEMPTY ? " (remove it with recursive)" : "");
	}
	return 0;
}

/* ---- streams ---- */

static void send_entry(struct conn *c, struct stream *s, const struct stat *st)
{
	struct buf json = { 0 };

	buf_puts(&json, "{");
	put_entry_members(&json, s->path, base_of(s->path), st);
	buf_puts(&json, "}");
	conn_send_json(c, FRAME_STARTED, s->id, &json);
	buf_free(&json);
}

/* Ends a file stream with ERROR (the temporary file of a write is removed by stream_free). */
static void file_error(struct conn *c, struct stream *s, int err, const char *what)
{
	conn_send_error(c, s->id, err, "%s: %s%s%s", s->path, what, *what ? ": " : "",
			strerror(-err));
	s->dead = true;
}

static void start_read(struct conn *c, struct stream *s)
{
	struct stat st;

	s->file_fd = open(s->path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (s->file_fd < 0 || fstat(s->file_fd, &st) < 0) {
		file_error(c, s, -errno, "");
		return;
	}
	if (S_ISDIR(st.st_mode)) {
		file_error(c, s, -EISDIR, "");
		return;
	}
	send_entry(c, s, &st);
}

static void start_write(struct conn *c, struct stream *s, uint32_t mode)
{
	size_t len = strlen(s->path) + sizeof(".vmsnap-XXXXXX");

	if (mode > 07777) {
		file_error(c, s, -EINVAL, "mode over 07777");
		return;
	}
	s->tmp_path = malloc(len);
	if (!s->tmp_path) {
		file_error(c, s, -ENOMEM, "");
		return;
	}
	snprintf(s->tmp_path, len, "%s.vmsnap-XXXXXX", s->path);
	s->file_fd = mkostemp(s->tmp_path, O_CLOEXEC);
	if (s->file_fd < 0) {
		int err = -errno;
		free(s->tmp_path);
		s->tmp_path = NULL;
		file_error(c, s, err, "");
		return;
	}
	if (fchmod(s->file_fd, (mode_t)mode) < 0) {
		file_error(c, s, -errno, "chmod");
		return;
	}
	conn_send(c, FRAME_STARTED, s->id, 0, "{}", 2);
}

void file_stream_start(struct conn *c, struct stream *s, const char *path, uint32_t mode)
{
	if (!path[0] || !(s->path = strdup(path))) {
		conn_send_error(c, s->id, path[0] ? -ENOMEM : -EINVAL, "%s",
				path[0] ? "out of memory" : "an empty path");
		s->dead = true;
		return;
	}
	if (s->kind == START_READ)
		start_read(c, s);
	else
		start_write(c, s, mode);
}

void file_stream_pump(struct conn *c, struct stream *s)
{
	while (!s->dead && s->credit > FRAME_COST) {
		size_t want = s->credit - FRAME_COST;
		ssize_t n;

		if (want > sizeof(chunk))
			want = sizeof(chunk);
		if (!conn_room(c, want))
			return;
		n = read(s->file_fd, chunk, want);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			file_error(c, s, -errno, "read");
			return;
		}
		if (n == 0) {
			struct buf json = { 0 };
			buf_printf(&json, "{\"size\":%" PRIu64 "}", s->size);
			conn_send_json(c, FRAME_EXIT, s->id, &json);
			buf_free(&json);
			s->dead = true;
			return;
		}
		conn_send(c, FRAME_STDOUT, s->id, 0, chunk, (size_t)n);
		s->credit -= (uint32_t)n + FRAME_COST;
		s->size += (uint64_t)n;
	}
}

void file_stream_write(struct conn *c, struct stream *s, const unsigned char *p, size_t n)
{
	int ret;

	if (s->file_fd < 0)
		return;
	if ((ret = write_all(s->file_fd, p, n)) < 0) {
		file_error(c, s, ret, "write");
		return;
	}
	s->size += n;
	s->uncredited += (uint32_t)n + FRAME_COST;
	if (s->uncredited >= CREDIT_BATCH) {
		unsigned char credit[4];
		wire_put32(credit, s->uncredited);
		conn_send(c, FRAME_CREDIT, s->id, 0, credit, sizeof(credit));
		s->uncredited = 0;
	}
}

/* fsync of the directory holding path, so that a rename into it is durable. */
static int sync_parent(const char *path)
{
	char *copy = strdup(path);
	int fd, ret = 0;

	if (!copy)
		return -ENOMEM;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		ret = -errno;
	if (fd >= 0)
		close(fd);
	free(copy);
	return ret;
}

void file_stream_finish(struct conn *c, struct stream *s)
{
	struct buf json = { 0 };
	int ret;

	if (s->file_fd < 0 || s->dead)
		return;
	if (fsync(s->file_fd) < 0) {
		file_error(c, s, -errno, "fsync");
		return;
	}
	close(s->file_fd);
	s->file_fd = -1;
	if (rename(s->tmp_path, s->path) < 0) {
		file_error(c, s, -errno, "rename");
		return;
	}
	free(s->tmp_path);
	s->tmp_path = NULL;
	if ((ret = sync_parent(s->path)) < 0) {
		file_error(c, s, ret, "fsync of its directory");
		return;
	}
	buf_printf(&json, "{\"size\":%" PRIu64 "}", s->size);
	conn_send_json(c, FRAME_EXIT, s->id, &json);
	buf_free(&json);
	s->dead = true;
}
