/* Placement: which host gets a new sandbox (docs/cluster.md §4). Pure: no I/O. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include <vmsnap/cluster.h>

/* Free amount of a resource (0 when over-committed). */
static uint64_t free_of(uint64_t capacity, uint64_t used)
{
        return used >= capacity ? 0 : capacity - used;
}

static bool fits(const struct vmsnap_cluster_host *h, const struct vmsnap_cluster_request *r)
{
        return r->vcpus <= free_of(h->vcpus, h->used_vcpus) &&
               r->memory_mib <= free_of(h->memory_mib, h->used_memory_mib) &&
               r->disk_mib <= free_of(h->disk_mib, h->used_disk_mib);
}

/* Free share of a capacity in [0, 1]. */
static double share(uint64_t capacity, uint64_t used)
{
        return capacity ? (double)free_of(capacity, used) / (double)capacity : 0.0;
}

/* True when a is a better choice than b: template locality, then the larger free share of
 * memory, then of vCPUs, then the smaller id (deterministic). */
static bool better(const struct vmsnap_cluster_host *a, const struct vmsnap_cluster_host *b)
{
        if (a->has_template != b->has_template)
                return a->has_template;
        double ma = share(a->memory_mib, a->used_memory_mib);
        double mb = share(b->memory_mib, b->used_memory_mib);
        if (ma != mb)
                return ma > mb;
        double ca = share(a->vcpus, a->used_vcpus), cb = share(b->vcpus, b->used_vcpus);
        if (ca != cb)
                return ca > cb;
        return strcmp(a->id, b->id) < 0;
}

/* The pinned host: chosen when alive and it fits, never a fallback. */
static int place_pinned(const struct vmsnap_cluster_host *hosts, size_t n,
                        const struct vmsnap_cluster_request *r, size_t *ret_index,
                        struct vmsnap_diag *d)
{
        for (size_t i = 0; i < n; i++) {
                if (strcmp(hosts[i].id, r->pin_host) != 0)
                        continue;
                if (!hosts[i].alive)
                        return vmsnap_diag(d, -ENOENT, "host %s is lost", r->pin_host);
                if (!fits(&hosts[i], r))
                        return vmsnap_diag(d, -ENOSPC,
                                           "host %s has no room for %" PRIu32 " vCPUs, %" PRIu64
                                           " MiB memory, %" PRIu64 " MiB disk",
                                           r->pin_host, r->vcpus, r->memory_mib, r->disk_mib);
                *ret_index = i;
                return 0;
        }
        return vmsnap_diag(d, -ENOENT, "host %s is not registered", r->pin_host);
}

int vmsnap_cluster_place(const struct vmsnap_cluster_host *hosts, size_t n,
                         const struct vmsnap_cluster_request *r, size_t *ret_index,
                         struct vmsnap_diag *d)
{
        if ((!hosts && n) || !r || !ret_index || r->vcpus == 0 || r->memory_mib == 0)
                return vmsnap_diag(d, -EINVAL, "placement: a request needs vCPUs and memory");
        if (r->pin_host)
                return place_pinned(hosts, n, r, ret_index, d);

        size_t best = n;
        uint64_t most_free_mem = 0;
        for (size_t i = 0; i < n; i++) {
                if (!hosts[i].alive)
                        continue;
                uint64_t fm = free_of(hosts[i].memory_mib, hosts[i].used_memory_mib);
                most_free_mem = fm > most_free_mem ? fm : most_free_mem;
                if (fits(&hosts[i], r) && (best == n || better(&hosts[i], &hosts[best])))
                        best = i;
        }
        if (best == n)
                return vmsnap_diag(d, -ENOSPC,
                                   "no alive host has room for %" PRIu32 " vCPUs, %" PRIu64
                                   " MiB memory, %" PRIu64 " MiB disk (most free memory: %" PRIu64
                                   " MiB)",
                                   r->vcpus, r->memory_mib, r->disk_mib, most_free_mem);
        *ret_index = best;
        return 0;
}
