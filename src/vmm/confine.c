/* A VMM's jail spec, built by its driver (see confine.h). */
#include "vmm/confine.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

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
