/* VMM versions: parse what `BINARY --version` or the API prints, and remember in a snapshot
 * directory which VMM version wrote its device state, so a restore on a VMM that cannot
 * load it is refused before it is attempted. */
#ifndef VMSNAP_VMM_VERSION_H
#define VMSNAP_VMM_VERSION_H

#include <stdbool.h>
#include <stddef.h>

#include <vmsnap/error.h>

#define VMM_VERSION_FILE "vmm.version" /* "<driver name> <X.Y.Z>\n" in the state directory */

struct vmm_version {
        unsigned major, minor, patch;
};

/* Finds the first "X.Y" or "X.Y.Z" in text ("Firecracker v1.12.1", "cloud-hypervisor
 * v43.0-dirty", "43.0.0") and returns 0, or -EINVAL when there is none. */
int vmm_version_parse(const char *text, struct vmm_version *ret);

/* Writes "X.Y.Z" into out. */
void vmm_version_format(const struct vmm_version *v, char *out, size_t size);

/* Runs `binary --version` (binary NULL: default_binary from $PATH), parses the output and
 * writes "X.Y.Z" into ret_version. Returns 0, -ENOENT when the binary is missing (d says
 * what to install: `install_hint`), or -errno. */
int vmm_version_probe(const char *binary, const char *default_binary, const char *install_hint,
                      char *ret_version, size_t size, struct vmsnap_diag *d);

/* Records in state_dir that `driver` at `version` wrote the state there (atomic write).
 * Returns 0 or -errno (with d). */
int vmm_version_write(const char *state_dir, const char *driver, const char *version,
                      struct vmsnap_diag *d);

/* Reads the record of state_dir into ret_version. Returns 0, -ENOENT when there is none,
 * -EMEDIUMTYPE when another driver wrote the state (d names it), or -EBADMSG. */
int vmm_version_read(const char *state_dir, const char *driver, char *ret_version, size_t size,
                     struct vmsnap_diag *d);

#endif
