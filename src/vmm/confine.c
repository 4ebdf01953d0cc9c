/* A VMM's jail spec, built by its driver (see confine.h). */
#include "vmm/confine.h"

#include "util/cleanup.h"
#include "util/fs.h"
#include "vmm/process.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int vmm_confine_init(struct vmm_confine *c, const struct vmsnap_jail_spec *tmpl,
                     const char *run_dir, struct vmsnap_diag *d)
{
        memset(c, 0, sizeof(*c));
        c->spec = *tmpl;
        c->spec.binds = c->binds;
        c->spec.n_binds = 0;
        c->spec.devices = c->devices;
        if (snprintf(c->run_dir, sizeof(c->run_dir), "%s", run_dir) >= (int)sizeof(c->run_dir))
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", run_dir);
        return vmm_confine_bind(c, run_dir, VMM_JAIL_RUN, true, d);
}

int vmm_confine_bind(struct vmm_confine *c, const char *source, const char *target,
                     bool writable, struct vmsnap_diag *d)
{
        size_t i = c->spec.n_binds;
        if (i >= VMM_CONFINE_MAX_BINDS)
                return vmsnap_diag(d, -E2BIG, "jail %s: more than %d binds", c->spec.name,
                                   VMM_CONFINE_MAX_BINDS);
        if (snprintf(c->sources[i], PATH_MAX, "%s", source) >= PATH_MAX ||
            snprintf(c->targets[i], sizeof(c->targets[i]), "%s", target) >=
                (int)sizeof(c->targets[i]))
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", source);
        c->binds[i] = (struct vmsnap_jail_bind){
            .source = c->sources[i], .target = c->targets[i], .writable = writable};
        c->spec.n_binds = i + 1;
        return 0;
}

int vmm_confine_device(struct vmm_confine *c, const char *dev, struct vmsnap_diag *d)
{
        size_t n = 0;
        while (c->devices[n])
                n++;
        if (n >= VMM_CONFINE_MAX_DEVICES)
                return vmsnap_diag(d, -E2BIG, "jail %s: more than %d devices", c->spec.name,
                                   VMM_CONFINE_MAX_DEVICES);
        c->devices[n] = dev;
        return 0;
}

int vmm_confine_path(struct vmm_confine *c, const char *host, const char *target,
                     bool writable, char *out, size_t size, struct vmsnap_diag *d)
{
        size_t n = strlen(c->run_dir);
        int w;
        if (strncmp(host, c->run_dir, n) == 0 && host[n] == '/' && !strchr(host + n + 1, '/'))
                w = snprintf(out, size, "%s/%s", VMM_JAIL_RUN, host + n + 1);
        else if (vmm_confine_bind(c, host, target, writable, d) == 0)
                w = snprintf(out, size, "%s", target);
        else
                return -E2BIG;
        return w < 0 || (size_t)w >= size
                   ? vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long in the jail", host)
                   : 0;
}

/* Finds name in $PATH (what posix_spawnp would run) into out. */
static int find_in_path(const char *name, char *out, size_t size, struct vmsnap_diag *d)
{
        const char *path = getenv("PATH");
        _cleanup_free_ char *copy = strdup(path && *path ? path : "/usr/bin:/bin");
        char *save = NULL;
        for (char *dir = copy ? strtok_r(copy, ":", &save) : NULL; dir;
             dir = strtok_r(NULL, ":", &save)) {
                int n = snprintf(out, size, "%s/%s", dir, name);
                if (dir[0] == '/' && n > 0 && (size_t)n < size && access(out, X_OK) == 0)
                        return 0;
        }
        return vmsnap_diag(d, -ENOENT, "%s is not in $PATH: install it or give its path", name);
}

/* True when path is an ELF executable with a program interpreter (dynamically linked). */
static bool is_dynamic(const char *path)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        Elf64_Ehdr eh;
        if (fd < 0 || vmsnap_fs_pread_full(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh) ||
            memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
            eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum > 256)
                return true; /* not what we can read: give it the system dirs */
        for (unsigned i = 0; i < eh.e_phnum; i++) {
                Elf64_Phdr ph;
                if (vmsnap_fs_pread_full(fd, &ph, sizeof(ph), eh.e_phoff + i * sizeof(ph)) !=
                    (ssize_t)sizeof(ph))
                        return true;
                if (ph.p_type == PT_INTERP)
                        return true;
        }
        return false;
}

/* True, with the prefix, when host is <prefix>/bin/NAME beside a <prefix>/lib directory
 * (a relocatable install such as the release tarball) and the prefix is not the root. */
static bool relocatable_prefix(const char *host, char *prefix, size_t size)
{
        char bin[PATH_MAX], lib[PATH_MAX + 8];
        snprintf(bin, sizeof(bin), "%s", host);
        char *slash = strrchr(bin, '/');
        if (!slash)
                return false;
        *slash = '\0';
        slash = strrchr(bin, '/');
        if (!slash || slash == bin || strcmp(slash, "/bin") != 0)
                return false;
        *slash = '\0';
        snprintf(lib, sizeof(lib), "%s/lib", bin);
        struct stat st;
        if (lstat(lib, &st) < 0 || !S_ISDIR(st.st_mode))
                return false;
        snprintf(prefix, size, "%s", bin);
        return true;
}

int vmm_confine_binary(struct vmm_confine *c, const char *binary, const char *default_name,
                       char *out, size_t size, struct vmsnap_diag *d)
{
        char host[PATH_MAX];
        int r = binary && strchr(binary, '/')
                    ? (snprintf(host, sizeof(host), "%s", binary), 0)
                    : find_in_path(binary ? binary : default_name, host, sizeof(host), d);
        if (r < 0)
                return r;
        char real[PATH_MAX]; /* the admin's binary: a symlink to it is followed here, once */
        if (!realpath(host, real))
                return vmsnap_diag(d, -errno, "%s: %s", host, strerror(errno));
        snprintf(host, sizeof(host), "%s", real);
        if (is_dynamic(host))
                c->spec.system_dirs = true;
        if (strncmp(host, "/usr/", 5) == 0 && c->spec.system_dirs) {
                snprintf(out, size, "%s", host);
                return 0;
        }
        char prefix[PATH_MAX];
        if (c->spec.system_dirs && relocatable_prefix(host, prefix, sizeof(prefix))) {
                /* A release's own QEMU (<prefix>/bin, <prefix>/lib by $ORIGIN, its firmware
                 * and modules in <prefix>/share, <prefix>/lib): the prefix, read-only, where
                 * it is on the host, so that it finds them as it would outside. */
                /* No /proc in the jail: the loader cannot find the program's own $ORIGIN
                 * (it reads /proc/self/exe), so its library directory is named outright. */
                snprintf(c->library_path, sizeof(c->library_path), "LD_LIBRARY_PATH=%s/lib",
                         prefix);
                c->env[0] = c->library_path;
                c->env[1] = NULL;
                c->spec.env = c->env;
                snprintf(out, size, "%s", host);
                return vmm_confine_bind(c, prefix, prefix, false, d);
        }
        snprintf(out, size, "%s", VMM_JAIL_VMM);
        return vmm_confine_bind(c, host, VMM_JAIL_VMM, false, d);
}

void vmm_confine_attach_needle(const struct vmsnap_jail_spec *jail, char *out, size_t size)
{
        const char *parent = jail->config && jail->config->cgroup_parent
                                 ? jail->config->cgroup_parent
                                 : VMSNAP_JAIL_DEFAULT_CGROUP_PARENT;
        snprintf(out, size, "%s/%s/%s ", VMM_ATTACH_CGROUP, parent, jail->name);
}

int vmm_confine_share(const struct vmm_confine *c, const char *path, struct vmsnap_diag *d)
{
        gid_t gid = c->spec.config && c->spec.config->shared_gid ? c->spec.config->shared_gid
                                                                  : VMSNAP_JAIL_DEFAULT_SHARED_GID;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0 || fchown(fd, 0, gid) < 0 || fchmod(fd, 0640) < 0)
                return vmsnap_diag(d, -errno, "%s: cannot share it with the jails (root:%u "
                                   "0640): %s", path, (unsigned)gid, strerror(errno));
        return 0;
}

int vmm_confine_take_file(const char *run_dir, const char *name, const char *state_dir,
                      struct vmsnap_diag *d)
{
        /* The last component may be the VMM's to replace (run_dir/save): never a symlink. */
        _cleanup_close_ int from = open(run_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        _cleanup_close_ int to = vmsnap_fs_open_dir(state_dir);
        if (from < 0 || to < 0)
                return vmsnap_diag(d, -ENOENT, "%s: cannot open", from < 0 ? run_dir : state_dir);
        if (renameat(from, name, to, name) < 0)
                return vmsnap_diag(d, -errno, "%s/%s: cannot move into %s: %s", run_dir, name,
                                   state_dir, strerror(errno));
        /* Checked where the VMM can no longer swap it: the state dir is root's. */
        _cleanup_close_ int fd = openat(to, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        struct stat st;
        int e = 0;
        if (fd < 0 || fstat(fd, &st) < 0)
                e = errno;
        else if (!S_ISREG(st.st_mode))
                e = EPERM;
        else if (fchown(fd, 0, 0) < 0 || fchmod(fd, 0600) < 0)
                e = errno;
        if (e) {
                unlinkat(to, name, 0);
                return vmsnap_diag(d, -e, "%s/%s: what the VMM wrote is not a regular file",
                                   run_dir, name);
        }
        return 0;
}
