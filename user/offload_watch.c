// SPDX-License-Identifier: MIT
/* How many bytes of an offloaded socket's TCP receive queue nobody has
 * consumed, for the stuck-flow watchdog. Not SIOCINQ: on a socket in a
 * sockmap that ioctl reports the psock's queue of frames passed to the
 * reader (6.18 here returns 0 while 10 bytes sit in the TCP queue, so a
 * watchdog built on it never fired). sock_diag's idiag_rqueue is
 * rcv_nxt - copied_seq on every kernel: exactly the bytes the parser has
 * not read. Without sock_diag (tcp_diag is a module, and an initramfs may
 * have no modprobe to load it) SIOCINQ is the fallback: right on kernels
 * before the sockmap FIONREAD change (6.1 and 6.12 in the VM matrix),
 * blind after it. */
#include <errno.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>

#include "offload.h"

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

static int diag_rqueue(int fd, uint32_t *unread)
{
	struct sockaddr_storage l, p;
	socklen_t ll = sizeof(l), pl = sizeof(p);
	uint64_t cookie;
	socklen_t cl = sizeof(cookie);
	struct {
		struct nlmsghdr nh;
		struct inet_diag_req_v2 r;
	} req = {
		.nh = {.nlmsg_len = sizeof(req), .nlmsg_type = SOCK_DIAG_BY_FAMILY, .nlmsg_flags = NLM_F_REQUEST},
		.r = {.sdiag_protocol = IPPROTO_TCP, .idiag_states = ~0u},
	};
	union {
		struct nlmsghdr nh;
		char b[1024];
	} resp;
	int nl, err = 0;
	ssize_t n;

	if (getsockname(fd, (struct sockaddr *)&l, &ll) < 0 || getpeername(fd, (struct sockaddr *)&p, &pl) < 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &cl) < 0)
		return -errno;
	req.r.sdiag_family = (uint8_t)l.ss_family;
	if (l.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)&l, *b = (const void *)&p;
		req.r.id.idiag_sport = a->sin_port;
		req.r.id.idiag_dport = b->sin_port;
		memcpy(req.r.id.idiag_src, &a->sin_addr, 4);
		memcpy(req.r.id.idiag_dst, &b->sin_addr, 4);
	} else if (l.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)&l, *b = (const void *)&p;
		req.r.id.idiag_sport = a->sin6_port;
		req.r.id.idiag_dport = b->sin6_port;
		memcpy(req.r.id.idiag_src, &a->sin6_addr, 16);
		memcpy(req.r.id.idiag_dst, &b->sin6_addr, 16);
	} else {
		return -EAFNOSUPPORT;
	}
	memcpy(req.r.id.idiag_cookie, &cookie, sizeof(cookie)); /* this socket, not a reused tuple */

	nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (nl < 0)
		return -errno;
	if (send(nl, &req, sizeof(req), 0) < 0) {
		err = -errno;
		goto out;
	}
	n = recv(nl, &resp, sizeof(resp), 0);
	if (n < 0) {
		err = -errno;
		goto out;
	}
	if (!NLMSG_OK(&resp.nh, (size_t)n)) {
		err = -EPROTO;
		goto out;
	}
	if (resp.nh.nlmsg_type == NLMSG_ERROR) {
		const struct nlmsgerr *e = NLMSG_DATA(&resp.nh);
		err = e->error ? e->error : -ENOENT;
		goto out;
	}
	if (resp.nh.nlmsg_type != SOCK_DIAG_BY_FAMILY ||
	    resp.nh.nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg))) {
		err = -EPROTO;
		goto out;
	}
	*unread = ((const struct inet_diag_msg *)NLMSG_DATA(&resp.nh))->idiag_rqueue;
out:
	close(nl);
	return err;
}

int kd_offload_unread(int fd, uint32_t *unread)
{
	int inq = 0;

	if (diag_rqueue(fd, unread) == 0)
		return 0;
	if (ioctl(fd, SIOCINQ, &inq) < 0)
		return -errno;
	*unread = inq > 0 ? (uint32_t)inq : 0;
	return 0;
}
