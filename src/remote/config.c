/* Remote configuration: endpoint, bucket, region and keys from <root>/remotes/NAME.conf
 * (private files only) or the VMSNAP_S3_* environment (docs/remote.md "Configuration"). */
#include "util/cleanup.h"
#include "util/fs.h"

#include <vmsnap/remote.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void vmsnap_remote_config_clear(struct vmsnap_remote_config *c)
{
        if (c)
                explicit_bzero(c, sizeof(*c));
}

static bool remote_name_valid(const char *name)
{
        size_t n = strlen(name);
        if (n == 0 || n > 64)
                return false;
        for (size_t i = 0; i < n; i++) {
                char ch = name[i];
                if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                      ch == '_' || ch == '-'))
                        return false;
        }
        return true;
}

/* Copies value into the field key names; -EINVAL for an unknown key or a value too long. */
static int set_field(struct vmsnap_remote_config *c, const char *key, const char *value)
{
        struct {
                const char *key;
                char *dst;
                size_t size;
        } f[] = {
                {"endpoint", c->endpoint, sizeof(c->endpoint)},
                {"bucket", c->bucket, sizeof(c->bucket)},
                {"region", c->region, sizeof(c->region)},
                {"access_key", c->access_key, sizeof(c->access_key)},
                {"secret_key", c->secret_key, sizeof(c->secret_key)},
        };
        for (size_t i = 0; i < ARRAY_SIZE(f); i++) {
                if (strcmp(f[i].key, key) != 0)
                        continue;
                if (strlen(value) >= f[i].size)
                        return -E2BIG;
                strcpy(f[i].dst, value);
                return 0;
        }
        return -EINVAL;
}

/* Checks the fields every config needs; names the missing one (where: file or "environment"). */
static int config_check(struct vmsnap_remote_config *c, const char *where, struct vmsnap_diag *d)
{
        if (!c->region[0])
                strcpy(c->region, "us-east-1");
        size_t n = strlen(c->endpoint);
        while (n > 0 && c->endpoint[n - 1] == '/')
                c->endpoint[--n] = 0;
        if (strncmp(c->endpoint, "http://", 7) != 0 && strncmp(c->endpoint, "https://", 8) != 0)
                return vmsnap_diag(d, -EINVAL, "%s: endpoint must start with http:// or https://",
                                   where);
        const char *missing = !c->bucket[0] ? "bucket" : !c->access_key[0] ? "access key"
                              : !c->secret_key[0] ? "secret key" : NULL;
        if (missing)
                return vmsnap_diag(d, -EINVAL, "%s: no %s", where, missing);
        for (const char *p = c->bucket; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'))
                        return vmsnap_diag(d, -EINVAL, "%s: bucket '%s' is not a valid S3 bucket name",
                                           where, c->bucket);
        for (const char *p = c->region; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
                        return vmsnap_diag(d, -EINVAL, "%s: region '%s' is not valid", where,
                                           c->region);
        return 0;
}

static int from_env(struct vmsnap_remote_config *c, struct vmsnap_diag *d)
{
        const char *vars[][2] = {
                {"VMSNAP_S3_ENDPOINT", "endpoint"},     {"VMSNAP_S3_BUCKET", "bucket"},
                {"VMSNAP_S3_REGION", "region"},         {"VMSNAP_S3_ACCESS_KEY", "access_key"},
                {"VMSNAP_S3_SECRET_KEY", "secret_key"},
        };
        for (size_t i = 0; i < ARRAY_SIZE(vars); i++) {
                const char *v = getenv(vars[i][0]);
                if (v && set_field(c, vars[i][1], v) < 0)
                        return vmsnap_diag(d, -EINVAL, "%s is too long", vars[i][0]);
        }
        return config_check(c, "environment (VMSNAP_S3_*)", d);
}

/* Parses key = value lines; line numbers in messages, never values. */
static int parse_conf(struct vmsnap_remote_config *c, char *text, const char *path,
                      struct vmsnap_diag *d)
{
        unsigned lineno = 0;
        for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save)) {
                lineno++;
                line += strspn(line, " \t");
                if (!*line || *line == '#')
                        continue;
                char *eq = strchr(line, '=');
                if (!eq)
                        return vmsnap_diag(d, -EINVAL, "%s: line %u: expected key = value", path,
                                           lineno);
                char *kend = eq;
                while (kend > line && (kend[-1] == ' ' || kend[-1] == '\t'))
                        kend--;
                *kend = 0;
                char *v = eq + 1;
                v += strspn(v, " \t");
                size_t vn = strlen(v);
                while (vn > 0 && (v[vn - 1] == ' ' || v[vn - 1] == '\t' || v[vn - 1] == '\r'))
                        v[--vn] = 0;
                int r = set_field(c, line, v);
                if (r == -EINVAL)
                        return vmsnap_diag(d, r, "%s: line %u: unknown key '%.64s'", path, lineno,
                                           line);
                if (r < 0)
                        return vmsnap_diag(d, -EINVAL, "%s: line %u: value too long", path, lineno);
        }
        return config_check(c, path, d);
}

static int from_file(const char *root, const char *name, struct vmsnap_remote_config *c,
                     struct vmsnap_diag *d)
{
        char path[4096];
        if (!remote_name_valid(name))
                return vmsnap_diag(d, -EINVAL, "'%.64s' is not a valid remote name "
                                   "([A-Za-z0-9_-], at most 64)", name);
        if (snprintf(path, sizeof(path), "%s/remotes/%s.conf", root, name) >= (int)sizeof(path))
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: root path too long", root);
        struct stat st;
        _cleanup_close_ int fd = vmsnap_fs_open_regular(AT_FDCWD, path, &st, false);
        if (fd < 0)
                return vmsnap_diag(d, fd, "%s: %s%s", path, fd == -ENOENT ? "no such remote" :
                                   vmsnap_fs_open_error(fd),
                                   fd == -ENOENT ? " (or set VMSNAP_S3_ENDPOINT etc.)" : "");
        if (st.st_uid != geteuid() || (st.st_mode & 077))
                return vmsnap_diag(d, -EPERM, "%s: refused: it holds a secret key, so it must be "
                                   "owned by you and private (chmod 600)", path);
        if (st.st_size > 65536)
                return vmsnap_diag(d, -EFBIG, "%s: larger than 64 KiB", path);
        char text[65537];
        ssize_t n = vmsnap_fs_pread_full(fd, text, sizeof(text) - 1, 0);
        if (n < 0)
                return vmsnap_diag(d, (int)n, "%s: %s", path, strerror((int)-n));
        text[n] = 0;
        int r = parse_conf(c, text, path, d);
        explicit_bzero(text, sizeof(text));
        return r;
}

int vmsnap_remote_config_load(const char *root, const char *name,
                              struct vmsnap_remote_config *ret, struct vmsnap_diag *d)
{
        struct vmsnap_remote_config c = {0};
        int r;
        if (name)
                r = from_file(root, name, &c, d);
        else if (getenv("VMSNAP_S3_ENDPOINT") && getenv("VMSNAP_S3_ENDPOINT")[0])
                r = from_env(&c, d);
        else
                r = from_file(root, "default", &c, d);
        if (r == 0)
                *ret = c;
        vmsnap_remote_config_clear(&c);
        return r;
}
