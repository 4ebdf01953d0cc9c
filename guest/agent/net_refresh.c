/* restore_hook, network part (docs/network.md "Guest side"): a restored guest forgets the
 * neighbours its snapshot remembered and announces itself. Every clone has the same
 * address, MAC and gateway, so what it remembered is right in form, but the entries carry
 * the template's timers and states (a STALE or FAILED gateway, a neighbour of the network the
 * template was made in): flushing makes the first packet resolve afresh instead of going to
 * a remembered address. The gratuitous ARP tells the gateway side (tap0, a new namespace for
 * a clone) where the guest is before any traffic. Without eth0 both are skipped. */
#include "agent.h"

#include <linux/if_packet.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>

#define IFACE "eth0"
#define MAX_NEIGH 256

/* One dump of eth0's IPv4 neighbours (not permanent ones) into dst[]; returns the count. */
static int neigh_dump(int nl, int ifindex, struct in_addr *dst, int max)
{
	struct {
		struct nlmsghdr h;
		struct ndmsg n;
	} req = { .h = { .nlmsg_len = sizeof(req), .nlmsg_type = RTM_GETNEIGH,
			 .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = 1 },
		  .n = { .ndm_family = AF_INET } };
	static char buf[16384];
	int n = 0;

	if (send(nl, &req, sizeof(req), 0) < 0)
		return -errno;
	for (;;) {
		ssize_t len = recv(nl, buf, sizeof(buf), 0);
		if (len < 0)
			return -errno;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)len);
		     h = NLMSG_NEXT(h, len)) {
			if (h->nlmsg_type == NLMSG_DONE)
				return n;
			if (h->nlmsg_type == NLMSG_ERROR)
				return -EIO;
			struct ndmsg *nd = NLMSG_DATA(h);
			if (h->nlmsg_type != RTM_NEWNEIGH || nd->ndm_ifindex != ifindex ||
			    (nd->ndm_state & (NUD_PERMANENT | NUD_NOARP)))
				continue;
			int alen = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*nd)));
			for (struct rtattr *a = (struct rtattr *)((char *)nd + NLMSG_ALIGN(sizeof(*nd)));
			     RTA_OK(a, alen); a = RTA_NEXT(a, alen))
				if (a->rta_type == NDA_DST && RTA_PAYLOAD(a) == 4 && n < max)
					memcpy(&dst[n++], RTA_DATA(a), 4);
		}
	}
}

/* Deletes each of them; returns how many went. */
static int neigh_delete(int nl, int ifindex, const struct in_addr *dst, int n)
{
	int done = 0;
	for (int i = 0; i < n; i++) {
		struct {
			struct nlmsghdr h;
			struct ndmsg n;
			struct rtattr a;
			struct in_addr dst;
		} req = { .h = { .nlmsg_len = sizeof(req), .nlmsg_type = RTM_DELNEIGH,
				 .nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK, .nlmsg_seq = 2 + (unsigned)i },
			  .n = { .ndm_family = AF_INET, .ndm_ifindex = ifindex },
			  .a = { .rta_len = RTA_LENGTH(4), .rta_type = NDA_DST },
			  .dst = dst[i] };
		char ack[512];
		if (send(nl, &req, sizeof(req), 0) < 0 || recv(nl, ack, sizeof(ack), 0) < 0)
			continue;
		struct nlmsghdr *h = (struct nlmsghdr *)ack;
		if (h->nlmsg_type == NLMSG_ERROR &&
		    ((struct nlmsgerr *)NLMSG_DATA(h))->error == 0)
			done++;
	}
	return done;
}

static int neigh_flush(int ifindex)
{
	struct in_addr dst[MAX_NEIGH];
	int nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (nl < 0)
		return -errno;
	struct timeval tv = { .tv_sec = 2 };
	setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	int n = neigh_dump(nl, ifindex, dst, MAX_NEIGH);
	if (n > 0)
		n = neigh_delete(nl, ifindex, dst, n);
	close(nl);
	return n;
}

/* A gratuitous ARP request (sender = target = our address) to the broadcast MAC. */
static int announce(int ifindex)
{
	struct ifreq ifr = { 0 };
	struct {
		struct arphdr h;
		unsigned char sha[ETH_ALEN], spa[4], tha[ETH_ALEN], tpa[4];
	} __attribute__((packed)) arp = { .h = { .ar_hrd = htons(ARPHRD_ETHER),
						 .ar_pro = htons(ETH_P_IP), .ar_hln = ETH_ALEN,
						 .ar_pln = 4, .ar_op = htons(ARPOP_REQUEST) } };
	int fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_ARP));
	int ret = 0;

	if (fd < 0)
		return -errno;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", IFACE);
	if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) {
		ret = -errno;
		goto out;
	}
	memcpy(arp.sha, ifr.ifr_hwaddr.sa_data, ETH_ALEN);
	ifr.ifr_addr.sa_family = AF_INET;
	if (ioctl(fd, SIOCGIFADDR, &ifr) < 0) {
		ret = -errno; /* no address (yet): nothing to announce */
		goto out;
	}
	memcpy(arp.spa, &((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr, 4);
	memcpy(arp.tpa, arp.spa, 4);
	struct sockaddr_ll to = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ARP),
				  .sll_ifindex = ifindex, .sll_halen = ETH_ALEN };
	memset(to.sll_addr, 0xff, ETH_ALEN);
	if (sendto(fd, &arp, sizeof(arp), 0, (struct sockaddr *)&to, sizeof(to)) < 0)
		ret = -errno;
out:
	close(fd);
	return ret;
}

void net_refresh(struct reply *r)
{
	int ifindex = (int)if_nametoindex(IFACE);
	int flushed = ifindex > 0 ? neigh_flush(ifindex) : 0;
	bool announced = ifindex > 0 && announce(ifindex) == 0;

	put_field_u64(r, "neigh_flushed", flushed > 0 ? (uint64_t)flushed : 0);
	put_field_bool(r, "arp_announced", announced);
}
