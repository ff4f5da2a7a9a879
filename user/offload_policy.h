/* SPDX-License-Identifier: MIT */
/* Which plain-TCP clients the kernel plane takes (-offload=sockmap: all;
 * -offload=auto: those whose packets are large enough for the sockmap path
 * to cost less CPU than this userspace relay, bpf/README.md "auto"). */
#ifndef KD_OFFLOAD_POLICY_H
#define KD_OFFLOAD_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Packets (sent and received) a client is watched for before auto decides. */
#define KD_AUTO_SAMPLE 64
/* Mean payload at or above which auto offloads a client on loopback:
 * scripts/bench-offload.sh on this host (bpf/README.md "auto") measured
 * the kernel path cheaper in CPU per delivered Gbit/s at 16 KiB and 64 KiB
 * x 8 pairs, dearer at 100 B, 1400 B and 4 KiB. Over a veth with MTU 1500
 * (what a NIC looks like) it was dearer at every size, so clients that are
 * not on loopback stay in userspace whatever their packets. */
#define KD_AUTO_MIN_MEAN 16384u

#define KD_AUTO_DECISIONS(X)                                                   \
	X(KERNEL_LARGE_PACKETS, "kernel_large_packets")                        \
	X(USERSPACE_SMALL_PACKETS, "userspace_small_packets")                  \
	X(USERSPACE_NOT_LOOPBACK, "userspace_not_loopback")                    \
	X(USERSPACE_NOT_PLAIN_TCP, "userspace_not_plain_tcp")

enum kd_auto_decision {
#define KD_X(id, name) KD_AUTO_##id,
	KD_AUTO_DECISIONS(KD_X)
#undef KD_X
	KD_AUTO_DECISION_MAX
};

const char *kd_auto_decision_name(enum kd_auto_decision d);

/* What auto has seen of one client: a pure function of the sizes, so it is
 * unit-testable without sockets. */
struct kd_auto_obs {
	uint32_t n;
	uint64_t bytes;
};

/* Adds one packet's payload size. Returns 1 when the sample is complete
 * and *d says where the client goes, 0 while still watching. loopback:
 * the client's connection goes over lo (the only place the kernel won). */
int kd_auto_observe(struct kd_auto_obs *ob, size_t payload, uint32_t min_mean, bool loopback,
		    enum kd_auto_decision *d);

struct kd_server;
struct kd_conn;

/* Opens the kernel plane for -offload=sockmap or auto (server start); the
 * server relays in userspace when it cannot. KDERP_OFFLOAD_SOCKOPTS
 * ("cork,nagle,sndbuf=N", for measuring) tunes offloaded sockets. */
void kd_offload_policy_open(struct kd_server *s);
/* At the end of a client's handshake: sockmap wants it now, auto starts
 * watching it, off does nothing. */
void kd_offload_policy_client(struct kd_conn *c);
/* A packet of payload bytes the client sent (SendPacket) or is about to
 * receive; cheap when the client is not being watched. */
void kd_offload_policy_note(struct kd_conn *c, size_t payload);

#endif
