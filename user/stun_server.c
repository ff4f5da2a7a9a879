// SPDX-License-Identifier: MIT
/* Userspace STUN server. Requests are 40 bytes and answers at most 44, so a
 * batch of small buffers per recvmmsg covers a burst without the reference's
 * 64 KiB buffer; anything larger is truncated by the kernel and, being no
 * Tailscale request, counted as not_stun. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "stun.h"
#include "stun_server.h"
#include "upgrade.h"

#define STUN_BATCH 64
#define STUN_RX_BUF 512

struct kd_stun_server {
	int fd;
	int port;
	struct kd_stun_counters c;
	struct kd_ratelimit err_rl;
	struct mmsghdr rx[STUN_BATCH], tx[STUN_BATCH];
	struct iovec rx_iov[STUN_BATCH], tx_iov[STUN_BATCH];
	struct sockaddr_storage peer[STUN_BATCH];
	uint8_t rx_buf[STUN_BATCH][STUN_RX_BUF];
	uint8_t tx_buf[STUN_BATCH][STUN_RESPONSE_MAX_LEN];
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int bind_one(const struct addrinfo *ai, bool dual)
{
	int fd, off = 0;

	fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (dual && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)) < 0)
		goto fail;
	/* No SO_REUSEADDR: UDP has no TIME_WAIT to wait out, and on Linux it
	 * would let a second daemon bind the same port and silently take the
	 * traffic; a loud EADDRINUSE is what we want. */
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0)
		goto fail;
	return fd;
fail:;
	int err = -errno;

	close(fd);
	return err;
}

struct kd_stun_server *kd_stun_server_open(const char *host, int port)
{
	struct addrinfo hints = {.ai_socktype = SOCK_DGRAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	bool wildcard = !host || !*host;
	char portstr[8];
	int fd = -EINVAL, rc;

	if (port < 0 || port > 65535) {
		pr_err("stun: port %d out of range", port);
		errno = EINVAL;
		return NULL;
	}
	snprintf(portstr, sizeof(portstr), "%d", port);
	char key[300];
	snprintf(key, sizeof(key), "%s:%d", wildcard ? "" : host, port);
	/* a binary upgrade hands over the bound socket: no gap in answers */
	fd = kd_upgrade_take("udp", key);
	if (fd >= 0)
		goto bound;
	if (wildcard)
		hints.ai_family = AF_INET6;
	rc = getaddrinfo(wildcard ? "::" : host, portstr, &hints, &res);
	if (rc) {
		pr_err("stun: resolving listen address \"%s\": %s", wildcard ? "::" : host,
		       gai_strerror(rc));
		errno = EINVAL;
		return NULL;
	}
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = bind_one(ai, wildcard);
		if (fd >= 0)
			break;
	}
	freeaddrinfo(res);
	if (wildcard && fd == -EAFNOSUPPORT) {
		/* IPv6 disabled on this host: IPv4 only */
		struct sockaddr_in any4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
		struct addrinfo ai4 = {.ai_family = AF_INET, .ai_socktype = SOCK_DGRAM,
				       .ai_addr = (struct sockaddr *)&any4, .ai_addrlen = sizeof(any4)};

		fd = bind_one(&ai4, false);
	}
	if (fd < 0) {
		pr_err("stun: bind udp [%s]:%d: %s", wildcard ? "::" : host, port, strerror(-fd));
		errno = -fd;
		return NULL;
	}
bound:;

	struct kd_stun_server *s = calloc(1, sizeof(*s));

	if (!s) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	s->fd = fd;
	s->err_rl = (struct kd_ratelimit)KD_RATELIMIT_INIT(5, 1000);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
							: ((struct sockaddr_in *)&ss)->sin_port);
	for (int i = 0; i < STUN_BATCH; i++) {
		s->rx_iov[i] = (struct iovec){s->rx_buf[i], STUN_RX_BUF};
		s->tx_iov[i].iov_base = s->tx_buf[i];
	}
	pr_info("STUN server listening on [%s]:%d", wildcard ? "::" : host, s->port);
	return s;
}

void kd_stun_server_close(struct kd_stun_server *s)
{
	if (!s)
		return;
	close(s->fd);
	free(s);
}

int kd_stun_server_fd(const struct kd_stun_server *s)
{
	return s->fd;
}

int kd_stun_server_port(const struct kd_stun_server *s)
{
	return s->port;
}

static bool is_ipv4_source(const struct sockaddr_storage *ss)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

	return ss->ss_family == AF_INET ||
	       (ss->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr));
}

/* Sends tx[0..n); a short count means the socket buffer is full or the
 * peer's address is unusable: skip that one datagram and keep going. */
static void send_batch(struct kd_stun_server *s, unsigned n)
{
	unsigned done = 0;

	while (done < n) {
		int r = sendmmsg(s->fd, s->tx + done, n - done, MSG_DONTWAIT);

		if (r > 0) {
			s->c.success += (unsigned)r;
			done += (unsigned)r;
			continue;
		}
		int err = r < 0 ? errno : EIO;

		if (err == EINTR)
			continue;
		s->c.write_error++;
		uint64_t n_log = kd_ratelimit_ok(&s->err_rl, now_ms());

		if (n_log)
			pr_warn("stun: sendmmsg: %s (%llu similar)", strerror(err),
				(unsigned long long)(n_log - 1));
		done++;
	}
}

void kd_stun_server_on_readable(struct kd_stun_server *s)
{
	for (;;) {
		for (int i = 0; i < STUN_BATCH; i++) {
			s->rx[i].msg_hdr = (struct msghdr){
				.msg_name = &s->peer[i],
				.msg_namelen = sizeof(s->peer[i]),
				.msg_iov = &s->rx_iov[i],
				.msg_iovlen = 1,
			};
		}
		int n = recvmmsg(s->fd, s->rx, STUN_BATCH, MSG_DONTWAIT, NULL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			/* ICMP errors surface here on some kernels; count,
			 * log rarely and let the loop call us again */
			s->c.read_error++;
			uint64_t n_log = kd_ratelimit_ok(&s->err_rl, now_ms());

			if (n_log)
				pr_warn("stun: recvmmsg: %s (%llu similar)", strerror(errno),
					(unsigned long long)(n_log - 1));
			return;
		}
		unsigned out = 0;

		for (int i = 0; i < n; i++) {
			uint8_t txid[STUN_TXID_LEN];
			struct msghdr *h = &s->rx[i].msg_hdr;

			if ((h->msg_flags & MSG_TRUNC) ||
			    kd_stun_parse_request(s->rx_buf[i], s->rx[i].msg_len, txid) != KD_STUN_OK) {
				s->c.not_stun++;
				continue;
			}
			if (is_ipv4_source(&s->peer[i]))
				s->c.ipv4++;
			else
				s->c.ipv6++;
			size_t len = kd_stun_build_response(s->tx_buf[out], STUN_RESPONSE_MAX_LEN, txid,
							    (struct sockaddr *)&s->peer[i]);

			if (!len) {
				s->c.write_error++;
				continue;
			}
			s->tx_iov[out].iov_len = len;
			s->tx[out].msg_hdr = (struct msghdr){
				.msg_name = &s->peer[i],
				.msg_namelen = h->msg_namelen,
				.msg_iov = &s->tx_iov[out],
				.msg_iovlen = 1,
			};
			out++;
		}
		if (out)
			send_batch(s, out);
		if (n < STUN_BATCH)
			return;
	}
}

void kd_stun_server_counters(const struct kd_stun_server *s, struct kd_stun_counters *out)
{
	*out = s->c;
}

int kd_stun_server_metrics(const struct kd_stun_server *s, char *out, size_t cap)
{
	int n = snprintf(out, cap,
			 "# TYPE stun_requests counter\n"
			 "stun_requests{disposition=\"success\"} %llu\n"
			 "stun_requests{disposition=\"not_stun\"} %llu\n"
			 "stun_requests{disposition=\"read_error\"} %llu\n"
			 "stun_requests{disposition=\"write_error\"} %llu\n"
			 "# TYPE stun_addrfamily counter\n"
			 "stun_addrfamily{family=\"ipv4\"} %llu\n"
			 "stun_addrfamily{family=\"ipv6\"} %llu\n",
			 (unsigned long long)s->c.success, (unsigned long long)s->c.not_stun,
			 (unsigned long long)s->c.read_error, (unsigned long long)s->c.write_error,
			 (unsigned long long)s->c.ipv4, (unsigned long long)s->c.ipv6);

	if (n < 0 || (size_t)n >= cap)
		return -ENOSPC;
	return n;
}
