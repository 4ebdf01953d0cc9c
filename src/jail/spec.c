/* Checks of a jail spec before anything is changed: a bad spec is refused whole. */
#include "jail/internal.h"

#include <errno.h>
#include <string.h>

bool jail_path_ok(const char *p)
{
        if (!p || p[0] != '/' || strlen(p) >= PATH_MAX)
                return false;
        if (p[1] == '\0')
                return true; /* "/" */
        for (const char *c = p + 1;;) {
                const char *slash = strchr(c, '/');
                size_t len = slash ? (size_t)(slash - c) : strlen(c);
                if (len == 0 || (len == 1 && c[0] == '.') ||
                    (len == 2 && c[0] == '.' && c[1] == '.'))
                        return false;
                if (!slash)
                        return true;
                c = slash + 1;
        }
}

bool jail_name_ok(const char *name)
{
        size_t n = name ? strlen(name) : 0;
        if (n == 0 || n > JAIL_NAME_MAX || name[0] == '.')
                return false;
        return strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") ==
               n;
}

/* True when path is dir itself or lies below it. */
static bool path_within(const char *path, const char *dir)
{
        size_t n = strlen(dir);
        if (strcmp(dir, "/") == 0)
                return true;
        return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* Directories the jail builds itself: no bind may land in or on them. */
static const char *const built_dirs[] = {"/dev", "/proc"};
static const char *const system_dirs[] = {"/usr",   "/bin",   "/sbin",  "/lib",
                                          "/lib32", "/lib64", "/libx32"};

static int check_target(const struct vmsnap_jail_spec *s, size_t i, struct vmsnap_diag *d)
{
        const char *t = s->binds[i].target;
        if (!jail_path_ok(t) || strcmp(t, "/") == 0)
                return vmsnap_diag(d, -EINVAL,
                                   "jail %s: bind target '%s' must be an absolute "
                                   "path below / without . or .. components",
                                   s->name, t ? t : "");
        for (size_t k = 0; k < sizeof(built_dirs) / sizeof(built_dirs[0]); k++)
                if (path_within(t, built_dirs[k]))
                        return vmsnap_diag(d, -EINVAL,
                                           "jail %s: bind target %s lies in %s, "
                                           "which the jail builds itself",
                                           s->name, t, built_dirs[k]);
        for (size_t k = 0; s->system_dirs && k < sizeof(system_dirs) / sizeof(system_dirs[0]); k++)
                if (path_within(t, system_dirs[k]))
                        return vmsnap_diag(d, -EINVAL,
                                           "jail %s: bind target %s lies in %s, "
                                           "which system_dirs binds read-only",
                                           s->name, t, system_dirs[k]);
        for (size_t j = 0; j < s->n_binds; j++)
                if (j != i && s->binds[j].target && path_within(t, s->binds[j].target))
                        return vmsnap_diag(d, -EINVAL,
                                           "jail %s: bind target %s lies in (or is) "
                                           "target %s: targets may not nest",
                                           s->name, t, s->binds[j].target);
        return 0;
}

static int check_binds(const struct vmsnap_jail_spec *s, struct vmsnap_diag *d)
{
        if (s->n_binds && !s->binds)
                return vmsnap_diag(d, -EINVAL, "jail %s: binds missing", s->name);
        for (size_t i = 0; i < s->n_binds; i++) {
                if (!jail_path_ok(s->binds[i].source))
                        return vmsnap_diag(d, -EINVAL,
                                           "jail %s: bind source '%s' must be an "
                                           "absolute path without . or .. components",
                                           s->name, s->binds[i].source ? s->binds[i].source : "");
                int r = check_target(s, i, d);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* readonly_memory names the target of a read-only bind: the VMM is handed a descriptor of
 * a file it could open read-only itself, nothing else. */
static int check_readonly_memory(const struct vmsnap_jail_spec *s, struct vmsnap_diag *d)
{
        if (!s->readonly_memory)
                return 0;
        for (size_t i = 0; i < s->n_binds; i++)
                if (s->binds[i].target && strcmp(s->binds[i].target, s->readonly_memory) == 0 &&
                    !s->binds[i].writable)
                        return 0;
        return vmsnap_diag(d, -EINVAL,
                           "jail %s: read-only memory '%s' is not the target of a read-only "
                           "bind",
                           s->name, s->readonly_memory);
}

static int check_devices_env(const struct vmsnap_jail_spec *s, struct vmsnap_diag *d)
{
        for (size_t i = 0; s->devices && s->devices[i]; i++) {
                const char *p = s->devices[i];
                if (!jail_path_ok(p) || strncmp(p, "/dev/", 5) != 0)
                        return vmsnap_diag(d, -EINVAL,
                                           "jail %s: device '%s' must be a path "
                                           "under /dev/",
                                           s->name, p);
                for (size_t j = 0; j < i; j++)
                        if (path_within(p, s->devices[j]) || path_within(s->devices[j], p))
                                return vmsnap_diag(d, -EINVAL,
                                                   "jail %s: device %s given twice "
                                                   "or nested in %s",
                                                   s->name, p, s->devices[j]);
        }
        for (size_t i = 0; s->env && s->env[i]; i++) {
                const char *eq = strchr(s->env[i], '=');
                if (!eq || eq == s->env[i])
                        return vmsnap_diag(d, -EINVAL,
                                           "jail %s: environment entry '%s' is not "
                                           "NAME=VALUE",
                                           s->name, s->env[i]);
        }
        return 0;
}

int jail_spec_check(const struct vmsnap_jail_spec *s, const struct jail_conf *c,
                    struct vmsnap_diag *d)
{
        if (!s)
                return vmsnap_diag(d, -EINVAL, "jail: no spec");
        if (!jail_name_ok(s->name))
                return vmsnap_diag(d, -EINVAL,
                                   "jail name '%s' must be 1 to %d of "
                                   "[A-Za-z0-9._-], not starting with '.'",
                                   s->name ? s->name : "", JAIL_NAME_MAX);
        if (!jail_path_ok(s->root_dir) || strcmp(s->root_dir, "/") == 0)
                return vmsnap_diag(d, -EINVAL,
                                   "jail %s: root directory '%s' must be an "
                                   "absolute path without . or .. components",
                                   s->name, s->root_dir ? s->root_dir : "");
        if (s->uid == 0 || !jail_uid_in_range(c, s->uid))
                return vmsnap_diag(d, -EPERM,
                                   "jail %s: uid %u is outside the jail range "
                                   "%u-%llu",
                                   s->name, (unsigned)s->uid, (unsigned)c->uid_first,
                                   (unsigned long long)c->uid_first + c->uid_count - 1);
        if (s->netns_path && !jail_path_ok(s->netns_path))
                return vmsnap_diag(d, -EINVAL,
                                   "jail %s: network namespace '%s' must be an absolute "
                                   "path without . or .. components",
                                   s->name, s->netns_path);
        int r = check_binds(s, d);
        if (r == 0)
                r = check_readonly_memory(s, d);
        return r < 0 ? r : check_devices_env(s, d);
}
