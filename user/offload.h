/* SPDX-License-Identifier: MIT */
/* Kernel data plane: loads bpf/relay.bpf.c, pins its maps, and offloads
 * established plain-TCP client sockets to the sockmap relay.
 *
 * Lifecycle for one client socket (the daemon owns the fd throughout):
 *   1. handshake in userspace; flush everything queued for the client with
 *      write() and consume every complete frame already read (the daemon's
 *      read buffer must be empty: bytes still in the kernel are fine);
 *   2. kd_offload_add(): from here on, never write() to the fd again; send
 *      daemon frames (KeepAlive, Pong, PeerGone, ...) with kd_offload_inject();
 *      keep reading the fd: frames the kernel does not relay (control frames,
 *      SendPacket to clients that are not offloaded) arrive there as usual;
 *   3. on EPOLLERR/EPOLLHUP check SO_ERROR and close (an oversized frame
 *      aborts the socket with EMSGSIZE);
 *   4. kd_offload_remove() before close(), else the cookie entry leaks.
 * Not thread safe except kd_offload_inject(), which serialises itself. */
#ifndef KD_OFFLOAD_H
#define KD_OFFLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "relay_maps.h"

struct kd_offload;

struct kd_offload_opts {
	const char *pin_dir;  /* NULL: KD_RELAY_PIN_DIR; "": do not pin */
	uint32_t queue_bytes; /* per-destination backlog bound; 0: default */
	int rcvbuf;           /* SO_RCVBUF for offloaded sockets; 0: default */
	/* egress tuning of offloaded sockets, for measuring (bpf/README.md:
	 * none of them won, so the defaults are all off) */
	int sndbuf;           /* SO_SNDBUF(FORCE); 0: kernel autotuning */
	bool cork;            /* TCP_CORK on */
	bool nagle;           /* TCP_NODELAY off */
	bool disabled;        /* load with relaying off (all frames to userspace) */
};

/* A copy of one socket's kernel-side state, for metrics and tests. */
struct kd_offload_sock_stats {
	uint64_t redirected_bytes; /* relayed or injected to this socket */
	uint64_t redirected_frames;
	uint64_t dropped_frames;   /* over the queue bound */
};

/* Loads and attaches the programs, pins the maps under pin_dir (removing
 * stale pins first) and creates the injector. opts may be NULL. */
int kd_offload_open(struct kd_offload **out, const struct kd_offload_opts *opts);
/* Detaches, unpins, closes the injector. NULL-safe. Offloaded sockets stay
 * open (they are the daemon's) and fall back to plain TCP. */
void kd_offload_close(struct kd_offload *o);

/* Offloads a connected TCP socket whose client owns key and routes key to
 * it (the last socket added for a key gets its frames). Bytes already
 * queued in the socket's receive queue are parsed in order. */
int kd_offload_add(struct kd_offload *o, int fd, const uint8_t key[static DERP_KEY_LEN]);
/* The same with choices, for keys with several connections: route = route
 * key to fd now; relay = the kernel relays fd's SendPackets (false: every
 * frame fd sends goes to userspace, see kd_offload_set_relay). *cookie_out
 * (may be NULL) gets the socket cookie that kd_offload_inject_sock takes. */
int kd_offload_attach(struct kd_offload *o, int fd, const uint8_t key[static DERP_KEY_LEN], bool route,
		      bool relay, uint64_t *cookie_out);
/* Points key's route at offloaded socket fd, or deletes it (fd < 0: the
 * kernel then passes SendPackets for key to userspace). The socket that
 * lost the route keeps its queued frames and its input: routes live in a
 * map without programs (bpf/README.md). */
int kd_offload_route(struct kd_offload *o, const uint8_t key[static DERP_KEY_LEN], int fd);
/* Stops relaying to and from fd. -ENOENT if fd was not offloaded. Frames
 * still queued toward fd are dropped: call it on teardown only. */
int kd_offload_remove(struct kd_offload *o, int fd, const uint8_t key[static DERP_KEY_LEN]);

/* Whether the kernel relayed a frame from src to key dst since the last
 * call for this pair: 1 and *dst_cookie = the receiving socket (the entry is
 * deleted), 0 when not (or its entry was evicted from the LRU), -errno. */
int kd_offload_pair_take(struct kd_offload *o, const uint8_t src[static DERP_KEY_LEN],
			 const uint8_t dst[static DERP_KEY_LEN], uint64_t *dst_cookie);

/* Per-flow plane choice without leaving the map: relay=false hands every
 * frame fd sends to userspace (whole, in order: the kernel keeps framing),
 * relay=true lets the kernel relay its SendPackets again. Frames *to* fd are
 * unaffected; the daemon keeps reaching fd through kd_offload_inject(). */
int kd_offload_set_relay(struct kd_offload *o, int fd, bool relay);

/* Queues one whole DERP frame (header included) for an offloaded
 * destination, in order with the frames the kernel relays to it. -EAGAIN
 * when the injector is full (nothing was written), -EINVAL if frame is not
 * exactly one frame. A frame for a key that is not offloaded is dropped and
 * counted (inject_unknown_dest). */
int kd_offload_inject(struct kd_offload *o, const uint8_t dst[static DERP_KEY_LEN],
		      const void *frame, size_t len);
/* The same for one socket by cookie (kd_offload_attach): what the daemon
 * uses, since each connection of a duplicated key gets its own frames. */
int kd_offload_inject_sock(struct kd_offload *o, uint64_t dst_cookie, const void *frame, size_t len);

/* Runtime switches; take effect for the next frame. */
int kd_offload_set_enabled(struct kd_offload *o, bool enabled);
int kd_offload_set_queue_bytes(struct kd_offload *o, uint32_t bytes);

/* Frames per exit reason, summed over CPUs. */
int kd_offload_counters(struct kd_offload *o, uint64_t out[KD_RELAY_REASON_MAX]);
int kd_offload_sock_stats(struct kd_offload *o, int fd, struct kd_offload_sock_stats *st);
/* Prometheus text, one kderp_offload_frames_total{reason="..."} line per
 * reason. Returns the length written (NUL excluded) or -ENOSPC. */
int kd_offload_metrics(struct kd_offload *o, char *out, size_t cap);
const char *kd_offload_reason_name(enum kd_relay_reason r);

/* Bytes in fd's TCP receive queue that nothing has consumed (for an
 * offloaded socket: not yet read by the kernel parser), via sock_diag. */
int kd_offload_unread(int fd, uint32_t *unread);

/* Whether this process can run the kernel plane here; on false, why says
 * why (one line). */
bool kd_offload_supported(char *why, size_t cap);

#endif
