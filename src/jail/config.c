/* The host-wide jail settings: defaults (docs/jail.md explains the uid range), checks, the
 * parsers the programs share for their flags, and where the jailer program lives. */
#include "jail/internal.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The uids a jail range may never contain: root, nobody, the 16-bit and 32-bit -1. */
static const uint64_t forbidden_ids[] = {0, 65534, 65535, 0xffffffffull};

/* uids end below 2^31: some programs still treat uid_t as signed. */
#define JAIL_ID_LIMIT 0x80000000ull

static int check_range(const struct jail_conf *c, struct vmsnap_diag *d)
{
        uint64_t first = c->uid_first, end = first + c->uid_count;
        if (c->uid_count == 0 || end > JAIL_ID_LIMIT)
                return vmsnap_diag(d, -EINVAL,
                                   "jail uid range %llu:%u must be non-empty and "
                                   "end below 2147483648",
                                   (unsigned long long)first, c->uid_count);
        for (size_t i = 0; i < sizeof(forbidden_ids) / sizeof(forbidden_ids[0]); i++)
                if (forbidden_ids[i] >= first && forbidden_ids[i] < end)
                        return vmsnap_diag(d, -EINVAL,
                                           "jail uid range %llu:%u contains uid "
                                           "%llu, which no jail may use",
                                           (unsigned long long)first, c->uid_count,
                                           (unsigned long long)forbidden_ids[i]);
        if (c->shared_gid == 0 || (c->shared_gid >= first && c->shared_gid < end))
                return vmsnap_diag(d, -EINVAL,
                                   "jail shared gid %u must be non-zero and outside "
                                   "the uid range %llu:%u",
                                   (unsigned)c->shared_gid, (unsigned long long)first,
                                   c->uid_count);
        return 0;
}

int jail_conf_resolve(const struct vmsnap_jail_config *c, struct jail_conf *ret,
                      struct vmsnap_diag *d)
{
        static const struct vmsnap_jail_config none = {0};
        if (!c)
                c = &none;
        struct jail_conf r = {
                .uid_first = c->uid_first ? c->uid_first : VMSNAP_JAIL_DEFAULT_UID_FIRST,
                .uid_count = c->uid_count ? c->uid_count : VMSNAP_JAIL_DEFAULT_UID_COUNT,
                .shared_gid = c->shared_gid ? c->shared_gid : VMSNAP_JAIL_DEFAULT_SHARED_GID,
                .cgroup_version = c->cgroup_version,
                .cgroup_root = c->cgroup_root ? c->cgroup_root : VMSNAP_JAIL_DEFAULT_CGROUP_ROOT,
                .cgroup_parent =
                        c->cgroup_parent ? c->cgroup_parent : VMSNAP_JAIL_DEFAULT_CGROUP_PARENT,
                .jailer = c->jailer,
        };
        if (r.cgroup_version != VMSNAP_CGROUP_AUTO && r.cgroup_version != VMSNAP_CGROUP_V1 &&
            r.cgroup_version != VMSNAP_CGROUP_V2)
                return vmsnap_diag(d, -EINVAL, "cgroup version %d: give auto, 1 or 2",
                                   (int)r.cgroup_version);
        if (!jail_path_ok(r.cgroup_root))
                return vmsnap_diag(d, -EINVAL,
                                   "cgroup root '%s' must be an absolute path "
                                   "without . or .. components",
                                   r.cgroup_root);
        /* The parent is a relative path of plain components ("vmsnap", "a/b"). */
        char abs_parent[PATH_MAX];
        if (snprintf(abs_parent, sizeof(abs_parent), "/%s", r.cgroup_parent) >=
                    (int)sizeof(abs_parent) ||
            !jail_path_ok(abs_parent))
                return vmsnap_diag(d, -EINVAL,
                                   "cgroup parent '%s' must be a relative path of "
                                   "plain components",
                                   r.cgroup_parent);
        if (r.jailer && !jail_path_ok(r.jailer))
                return vmsnap_diag(d, -EINVAL, "jailer '%s' must be an absolute path", r.jailer);
        int e = check_range(&r, d);
        if (e < 0)
                return e;
        *ret = r;
        return 0;
}

bool jail_uid_in_range(const struct jail_conf *c, uid_t uid)
{
        return uid >= c->uid_first && (uint64_t)uid < (uint64_t)c->uid_first + c->uid_count;
}

int jail_jailer_path(const struct jail_conf *c, char out[PATH_MAX], struct vmsnap_diag *d)
{
        if (c->jailer) {
                snprintf(out, PATH_MAX, "%s", c->jailer);
                return 0;
        }
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n <= 0)
                return vmsnap_diag(d, n < 0 ? -errno : -ENOENT,
                                   "cannot find the jailer: "
                                   "/proc/self/exe: %s",
                                   n < 0 ? strerror(errno) : "empty");
        self[n] = '\0';
        if (snprintf(out, PATH_MAX, "%s/%s", dirname(self), VMSNAP_JAIL_JAILER_NAME) >= PATH_MAX)
                return vmsnap_diag(d, -ENAMETOOLONG, "jailer path too long");
        return 0;
}

/* Parses a decimal unsigned number into *ret (no sign, no junk); false when malformed. */
static bool parse_u64(const char *s, uint64_t *ret)
{
        if (!s || *s < '0' || *s > '9')
                return false;
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || *end)
                return false;
        *ret = v;
        return true;
}

int vmsnap_jail_parse_uids(const char *s, uid_t *ret_first, uint32_t *ret_count,
                           struct vmsnap_diag *d)
{
        const char *colon = s ? strchr(s, ':') : NULL;
        char first_str[32];
        uint64_t first, count;
        if (!colon || (size_t)(colon - s) >= sizeof(first_str))
                return vmsnap_diag(d, -EINVAL, "uid range '%s': expected FIRST:COUNT", s ? s : "");
        memcpy(first_str, s, (size_t)(colon - s));
        first_str[colon - s] = '\0';
        if (!parse_u64(first_str, &first) || !parse_u64(colon + 1, &count) || first == 0 ||
            count == 0 || first >= JAIL_ID_LIMIT || count > UINT32_MAX)
                return vmsnap_diag(d, -EINVAL,
                                   "uid range '%s': expected FIRST:COUNT with "
                                   "FIRST > 0 and COUNT > 0",
                                   s);
        *ret_first = (uid_t)first;
        *ret_count = (uint32_t)count;
        return 0;
}

int vmsnap_jail_parse_cgroup_version(const char *s, enum vmsnap_cgroup_version *ret,
                                     struct vmsnap_diag *d)
{
        if (s && strcmp(s, "auto") == 0)
                *ret = VMSNAP_CGROUP_AUTO;
        else if (s && (strcmp(s, "1") == 0 || strcmp(s, "v1") == 0))
                *ret = VMSNAP_CGROUP_V1;
        else if (s && (strcmp(s, "2") == 0 || strcmp(s, "v2") == 0))
                *ret = VMSNAP_CGROUP_V2;
        else
                return vmsnap_diag(d, -EINVAL, "cgroup version '%s': give auto, 1 or 2",
                                   s ? s : "");
        return 0;
}
