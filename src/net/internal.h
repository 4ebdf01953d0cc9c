/* Internals of src/net/: derived names, namespaces, netlink, the TAP, nftables. */
#ifndef VMSNAP_NET_INTERNAL_H
#define VMSNAP_NET_INTERNAL_H

#include <net/if.h>
#include <stdbool.h>
#include <stddef.h>

#include <vmsnap/net.h>

struct nl_sock;

#define NET_NS_PREFIX     "vmsnap-"     /* <netns_dir>/vmsnap-<id> */
#define NET_TABLE_PREFIX  "vmsnap-"     /* host table inet vmsnap-<id> */
#define NET_SANDBOX_TABLE "vmsnap"      /* the table inside each sandbox namespace */
#define NET_LINK_PREFIX   "vmsn"        /* host link vmsn<11 hex of XXH3(id)> */
#define NET_ALIAS_PREFIX  "vmsnap-net:" /* ifalias of the host link, for people */
#define NET_LINK_HEX      11

/* A NULL-terminated array of strings; net_strv_free accepts NULL. */
void net_strv_free(char **v);
int net_strv_push(char ***v, size_t *n, const char *s);

/* names.c */
int net_id_check(const char *id, struct vmsnap_diag *d);
void net_link_name(const char *id, char out[IFNAMSIZ]);
bool net_is_link_name(const char *name);
void net_config_resolve(const struct vmsnap_net_config *in, struct vmsnap_net_config *ret);
int net_config_check(const struct vmsnap_net_config *cfg, struct vmsnap_diag *d);
int net_addrs_check(const struct vmsnap_net_config *cfg, const struct vmsnap_net_addrs *a,
                    struct vmsnap_diag *d);
void net_addr_format(struct in_addr a, char out[INET_ADDRSTRLEN]);

/* netns.c: pins under dir, entering and leaving, sysctls of the current namespace. */
int net_ns_pin(const char *dir, const char *id, struct vmsnap_diag *d);
int net_ns_open(const char *dir, const char *id, int *ret_fd, struct vmsnap_diag *d);
int net_ns_enter(int nsfd, int *ret_orig_fd, struct vmsnap_diag *d);
void net_ns_leave(int orig_fd);
int net_ns_unpin(const char *dir, const char *id, struct vmsnap_diag *d);
int net_ns_list(const char *dir, char ***ret_ids, size_t *ret_n, struct vmsnap_diag *d);
int net_sysctl_write(const char *path, const char *value, bool missing_ok, struct vmsnap_diag *d);

/* link.c: rtnetlink through libnl, in the namespace the socket was opened in. */
int net_nl_open(struct nl_sock **ret, struct vmsnap_diag *d);
void net_nl_close(struct nl_sock *sk);
/* A veth pair: name here, peer_name created directly inside the namespace peer_nsfd. */
int net_veth_create(struct nl_sock *sk, const char *name, const char *peer_name, int peer_nsfd,
                    struct vmsnap_diag *d);
/* Sets the MAC and the alias (each when non-NULL) and brings the link up. */
int net_link_configure(struct nl_sock *sk, const char *name, const char *mac, const char *alias,
                       struct vmsnap_diag *d);
int net_addr_add(struct nl_sock *sk, const char *ifname, struct in_addr addr, int prefix,
                 struct vmsnap_diag *d);
int net_route_default(struct nl_sock *sk, const char *ifname, struct in_addr gateway,
                      struct vmsnap_diag *d);
int net_link_delete(struct nl_sock *sk, const char *name, struct vmsnap_diag *d);
/* 0 with *ret_alias (malloc'd, NULL when none), -ENODEV when the link does not exist. */
int net_link_alias(struct nl_sock *sk, const char *name, char **ret_alias, struct vmsnap_diag *d);
int net_link_list(struct nl_sock *sk, char ***ret_names, size_t *ret_n, struct vmsnap_diag *d);

/* tap.c */
int net_tap_create(const char *name, uid_t owner, bool multi_queue, struct vmsnap_diag *d);

/* rules.c: the text of the nftables batches. */
char *net_rules_host(const char *id, const char *link, const struct vmsnap_net_addrs *a,
                     const struct vmsnap_cidr *pool, const struct vmsnap_net_egress *e);
char *net_rules_sandbox(const struct vmsnap_net_addrs *a);
char *net_rules_host_delete(const char *id);

/* nft.c: libnftables in the current namespace. */
int net_nft_run(const char *batch, const char *what, struct vmsnap_diag *d);
int net_nft_tables(char ***ret_names, size_t *ret_n, struct vmsnap_diag *d);

#endif
