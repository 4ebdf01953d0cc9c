/* VMM versions (see version.h). */
#include "vmm/version.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "vmm/process.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROBE_TIMEOUT_MS 10000

/* Parses a decimal number at *p (at most 6 digits) and advances *p past it. */
static bool number(const char **p, unsigned *ret)
{
        const char *s = *p;
        unsigned v = 0;
        int n = 0;
        while (isdigit((unsigned char)*s) && n < 6) {
                v = v * 10 + (unsigned)(*s++ - '0');
                n++;
        }
        if (n == 0 || isdigit((unsigned char)*s))
                return false;
        *p = s;
        *ret = v;
        return true;
}

/* Tries to read "X.Y[.Z]" at s; a digit right before s means s is inside another number. */
static bool version_at(const char *start, const char *s, struct vmm_version *v)
{
        if (s > start && (isdigit((unsigned char)s[-1]) || s[-1] == '.'))
                return false;
        *v = (struct vmm_version){0};
        if (!number(&s, &v->major) || *s++ != '.' || !number(&s, &v->minor))
                return false;
        if (*s == '.') {
                const char *t = s + 1;
                number(&t, &v->patch); /* "X.Y." or "X.Y.rc1": the patch stays 0 */
        }
        return true;
}

int vmm_version_parse(const char *text, struct vmm_version *ret)
{
        if (!text || !ret)
                return -EINVAL;
        for (const char *s = text; *s; s++) {
                struct vmm_version v;
                if (isdigit((unsigned char)*s) && version_at(text, s, &v)) {
                        *ret = v;
                        return 0;
                }
        }
        return -EINVAL;
}

void vmm_version_format(const struct vmm_version *v, char *out, size_t size)
{
        snprintf(out, size, "%u.%u.%u", v->major, v->minor, v->patch);
}

int vmm_version_probe(const char *binary, const char *default_binary, const char *install_hint,
                      char *ret_version, size_t size, struct vmsnap_diag *d)
{
        const char *bin = binary ? binary : default_binary;
        char *argv[] = {(char *)bin, "--version", NULL};
        char out[2048];
        int r = vmm_process_output(argv, PROBE_TIMEOUT_MS, out, sizeof(out), d);
        if (r == -ENOENT)
                return vmsnap_diag(d, -ENOENT, "%s is not installed: %s", bin, install_hint);
        if (r < 0)
                return r;
        struct vmm_version v;
        if (vmm_version_parse(out, &v) < 0)
                return vmsnap_diag(d, -EBADMSG, "%s --version printed no version: %.120s", bin,
                                   out);
        vmm_version_format(&v, ret_version, size);
        return 0;
}

int vmm_version_write(const char *state_dir, const char *driver, const char *version,
                      struct vmsnap_diag *d)
{
        _cleanup_close_ int dirfd = vmsnap_fs_open_dir(state_dir);
        if (dirfd < 0)
                return vmsnap_diag(d, dirfd, "%s: cannot open: %s", state_dir, strerror(-dirfd));
        char line[128];
        int n = snprintf(line, sizeof(line), "%s %s\n", driver, version);
        if (n < 0 || (size_t)n >= sizeof(line))
                return vmsnap_diag(d, -EINVAL, "version string too long");
        int r = vmsnap_fs_atomic_write(dirfd, VMM_VERSION_FILE, line, (size_t)n, d);
        if (r < 0)
                return vmsnap_diag_prefix(d, "%s", state_dir);
        return 0;
}

int vmm_version_read(const char *state_dir, const char *driver, char *ret_version, size_t size,
                     struct vmsnap_diag *d)
{
        _cleanup_close_ int dirfd = vmsnap_fs_open_dir(state_dir);
        if (dirfd < 0)
                return vmsnap_diag(d, dirfd, "%s: cannot open: %s", state_dir, strerror(-dirfd));
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len = 0;
        int r = vmsnap_fs_read_file(dirfd, VMM_VERSION_FILE, 127, &buf, &len);
        if (r < 0)
                return vmsnap_diag(d, r, "%s/%s: %s", state_dir, VMM_VERSION_FILE,
                                   r == -ENOENT ? "missing: the directory holds no VMM state "
                                                  "saved by vmsnap"
                                                : strerror(-r));
        char text[128], name[64], version[64];
        memcpy(text, buf, len);
        text[len] = '\0';
        if (sscanf(text, "%63s %63s", name, version) != 2)
                return vmsnap_diag(d, -EBADMSG, "%s/%s: not \"<vmm> <version>\"", state_dir,
                                   VMM_VERSION_FILE);
        if (strcmp(name, driver) != 0)
                return vmsnap_diag(d, -EMEDIUMTYPE, "%s: the state was written by %s %s, not by %s",
                                   state_dir, name, version, driver);
        snprintf(ret_version, size, "%s", version);
        return 0;
}
