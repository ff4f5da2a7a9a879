/* SPDX-License-Identifier: MIT */
/* Userspace STUN server (spec §9.1): one non-blocking UDP socket, answered
 * from the event loop in batches. */
#ifndef KD_STUN_SERVER_H
#define KD_STUN_SERVER_H

#include <stddef.h>
#include <stdint.h>

struct kd_stun_server;

/* stun_requests{disposition=...} and stun_addrfamily{family=...} (spec §10.3) */
struct kd_stun_counters {
	uint64_t success;
	uint64_t not_stun;
	uint64_t read_error;
	uint64_t write_error;
	uint64_t ipv4;   /* valid requests from IPv4 (incl. v4-mapped) sources */
	uint64_t ipv6;
};

/* Binds a non-blocking UDP socket on host:port. host "" (or NULL) is [::]
 * with IPV6_V6ONLY off, i.e. dual-stack; otherwise a numeric address or a
 * name resolved once, here (call before the loop starts). port 0 picks an
 * ephemeral port (see kd_stun_server_port). Logs and returns NULL with errno
 * set on failure: unlike the reference, a bind failure is loud. */
struct kd_stun_server *kd_stun_server_open(const char *host, int port);
void kd_stun_server_close(struct kd_stun_server *s);

/* Register for EPOLLIN; level- or edge-triggered both work. */
int kd_stun_server_fd(const struct kd_stun_server *s);
/* The bound port (useful after port 0). */
int kd_stun_server_port(const struct kd_stun_server *s);

/* Drains the socket with recvmmsg until EAGAIN, answering valid requests
 * with sendmmsg. Never blocks. */
void kd_stun_server_on_readable(struct kd_stun_server *s);

void kd_stun_server_counters(const struct kd_stun_server *s, struct kd_stun_counters *out);
/* Prometheus text format; returns bytes written (excluding NUL) or -ENOSPC. */
int kd_stun_server_metrics(const struct kd_stun_server *s, char *out, size_t cap);

#endif
