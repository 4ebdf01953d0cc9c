/* Sandbox networking: a network namespace per sandbox with the same guest side in every one
 * (so clones need no reconfiguration), a veth to the host with a unique address from a pool,
 * NAT, and a per-sandbox egress policy enforced on the host side. See docs/network.md. */
#ifndef VMSNAP_NET_H
#define VMSNAP_NET_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <vmsnap/error.h>

/* The guest side, identical in every sandbox (templates bake it in: never change it). */
#define VMSNAP_NET_TAP_NAME     "tap0"
#define VMSNAP_NET_GATEWAY_IP   "192.168.241.1" /* on tap0, inside the sandbox namespace */
#define VMSNAP_NET_GUEST_IP     "192.168.241.2"
#define VMSNAP_NET_GUEST_PREFIX 30
#define VMSNAP_NET_GATEWAY_MAC  "06:00:c0:a8:f1:01"
#define VMSNAP_NET_GUEST_MAC    "06:00:c0:a8:f1:02"
#define VMSNAP_NET_PEER_NAME    "veth0" /* the sandbox end of the veth */

/* All calls are synchronous, need root, and leave the calling thread in the network
 * namespace it was in. Callers serialize create/destroy/sweep (the sandbox layer holds its
 * lock): the module keeps no state, but libnftables' thread safety is not documented. */

#define VMSNAP_NET_ID_MAX       64 /* sandbox ids: [A-Za-z0-9_-]{1,64}, not starting with '-' */
#define VMSNAP_NET_EGRESS_MAX   64 /* CIDRs in one egress list */
#define VMSNAP_CIDR_STRLEN      19 /* "255.255.255.255/32" + NUL */
#define VMSNAP_NET_HOSTPORT_LEN 22 /* "255.255.255.255:65535" + NUL */
#define VMSNAP_NET_DEFAULT_POOL "10.201.0.0/16"
#define VMSNAP_NET_DEFAULT_DIR  "/run/netns"

/* An IPv4 network: addr in network byte order with every host bit zero, prefix 0..32. */
struct vmsnap_cidr {
        struct in_addr addr;
        uint8_t prefix;
};

enum vmsnap_net_egress_kind {
        VMSNAP_NET_EGRESS_ALLOW = 0, /* the default */
        VMSNAP_NET_EGRESS_DENY,
        VMSNAP_NET_EGRESS_CIDRS, /* only destinations in cidrs[] */
};

/* Egress policy of one sandbox (a value: copy it freely, store it with the sandbox). */
struct vmsnap_net_egress {
        enum vmsnap_net_egress_kind kind;
        size_t n_cidrs;
        struct vmsnap_cidr cidrs[VMSNAP_NET_EGRESS_MAX];
};

/* One sandbox's slot of the pool: the host end of its veth and its unique address (the
 * sandbox end, where the host reaches the guest). The caller stores it. */
struct vmsnap_net_addrs {
        struct in_addr host;
        struct in_addr sandbox;
        uint8_t prefix; /* 30 or 31 */
};

/* Host-wide settings; zero fields take the defaults (docs/network.md). */
struct vmsnap_net_config {
        const char *netns_dir;   /* where the namespace pins live; NULL = /run/netns */
        struct vmsnap_cidr pool; /* prefix 0 = 10.201.0.0/16 */
        uint8_t slot_prefix;     /* 30 or 31; 0 = 30 */
};

/* What vmsnap_net_create builds for one sandbox. */
struct vmsnap_net_spec {
        const char *id;                /* the sandbox id: names every object */
        struct vmsnap_net_addrs addrs; /* from vmsnap_net_alloc, stored by the caller */
        struct vmsnap_net_egress egress;
        uid_t tap_uid;        /* the jail uid that may attach to tap0 (the VMM's) */
        bool tap_multi_queue; /* IFF_MULTI_QUEUE: must match what the VMM asks for */
};

/* Parses "a.b.c.d/p" strictly (decimal octets, no leading zeros, prefix 0..32, host bits
 * zero) into *ret; -EINVAL with a message naming the text and the problem. */
int vmsnap_cidr_parse(const char *text, struct vmsnap_cidr *ret, struct vmsnap_diag *d);

/* Writes "a.b.c.d/p" plus NUL into out. */
void vmsnap_cidr_format(const struct vmsnap_cidr *c, char out[VMSNAP_CIDR_STRLEN]);

/* True when addr (network order) lies inside c. */
bool vmsnap_cidr_contains(const struct vmsnap_cidr *c, struct in_addr addr);

/* Parses "allow", "deny" or a comma-separated list of CIDRs ("10.0.0.0/8,192.0.2.0/24")
 * into *ret; -EINVAL naming the bad item, -E2BIG past VMSNAP_NET_EGRESS_MAX. */
int vmsnap_net_egress_parse(const char *text, struct vmsnap_net_egress *ret, struct vmsnap_diag *d);

/* Appends one CIDR to e (making it a CIDR list); -EINVAL on bad text, -E2BIG when full.
 * e is unchanged on error. */
int vmsnap_net_egress_add(struct vmsnap_net_egress *e, const char *cidr, struct vmsnap_diag *d);

/* Picks the lowest free slot of cfg's pool given every allocation still held (paused
 * sandboxes included); pure: remembers nothing. -ENOSPC when the pool is full, -EINVAL on a
 * bad config. */
int vmsnap_net_alloc(const struct vmsnap_net_config *cfg, const struct vmsnap_net_addrs *in_use,
                     size_t n_in_use, struct vmsnap_net_addrs *ret, struct vmsnap_diag *d);

/* Writes "U:P" (the sandbox's unique address, guest port P) into out; -ERANGE unless
 * 1 <= P <= 65535. */
int vmsnap_net_port(const struct vmsnap_net_addrs *a, long guest_port,
                    char out[VMSNAP_NET_HOSTPORT_LEN], struct vmsnap_diag *d);

/* Builds the whole network of one sandbox (namespace, veth, TAP, addresses, routes, both
 * nftables tables). On any error removes whatever it made; -EEXIST when the sandbox's
 * namespace already exists. Root only. */
int vmsnap_net_create(const struct vmsnap_net_config *cfg, const struct vmsnap_net_spec *spec,
                      struct vmsnap_diag *d);

/* Removes every object this module owns for id (host table, host link and its peer, the
 * namespace pin). Idempotent: missing pieces are fine. Kill the VMM first. */
int vmsnap_net_destroy(const struct vmsnap_net_config *cfg, const char *id, struct vmsnap_diag *d);

/* True when id's namespace pin exists (e.g. false after a host reboot). */
bool vmsnap_net_exists(const struct vmsnap_net_config *cfg, const char *id);

/* Recovery: destroys every pin, host link and host table of this module whose id is not in
 * known_ids[0..n_known); *ret_removed (may be NULL) counts the ids removed. Run it before any
 * create starts (it takes a half-made network of an unknown id for a leftover). */
int vmsnap_net_sweep(const struct vmsnap_net_config *cfg, const char *const *known_ids,
                     size_t n_known, size_t *ret_removed, struct vmsnap_diag *d);

/* Writes the path of id's namespace pin (what the jail joins with setns) into buf;
 * -EINVAL on a bad id, -ENAMETOOLONG when buf is too small. */
int vmsnap_net_netns_path(const struct vmsnap_net_config *cfg, const char *id, char *buf,
                          size_t size, struct vmsnap_diag *d);

#endif
