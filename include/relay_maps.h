/* SPDX-License-Identifier: MIT */
/* Definitions shared by bpf/relay.bpf.c and user/offload.c: map keys and
 * values, the exit reasons every program path is counted under, the runtime
 * config and the pinned map names. One definition for both sides. */
#ifndef RELAY_MAPS_H
#define RELAY_MAPS_H

#include "kd_types.h"
#include "derp_wire.h"

#define KD_RELAY_PIN_DIR "/sys/fs/bpf/kderp"
#define KD_RELAY_MAP_SOCKS "relay_socks"       /* SOCKHASH: DERP key -> active socket (routing) */
#define KD_RELAY_MAP_MEMBERS "relay_members"   /* SOCKHASH: cookie -> socket (programs) */
#define KD_RELAY_MAP_PAIRS "relay_pairs"       /* LRU_HASH: (src, dst) keys the kernel relayed */
#define KD_RELAY_MAP_INJECT "relay_inject"     /* SOCKMAP[1]: the injector socket */
#define KD_RELAY_MAP_META "relay_meta"         /* HASH: socket cookie -> kd_relay_meta */
#define KD_RELAY_MAP_CONFIG "relay_config"     /* ARRAY[1]: kd_relay_config */
#define KD_RELAY_MAP_COUNTERS "relay_counters" /* PERCPU_ARRAY: reason -> frames */

#define KD_RELAY_MAX_SOCKS 65536
/* (src, dst) pairs remembered for PeerGone: one per offloaded socket at
 * the sockhash's limit, far more per socket below it; 8.9 MB of kernel
 * memory, preallocated (LRU maps are). An evicted pair means its receiver
 * misses one PeerGone(Disconnected), as if it had never received. */
#define KD_RELAY_MAX_PAIRS KD_RELAY_MAX_SOCKS
/* Largest frame the parser accepts from an offloaded socket: ForwardPacket
 * (two keys + the largest packet). Bigger frames only occur before the
 * handshake ends (ClientInfo), when the socket is not offloaded yet. */
#define KD_RELAY_MAX_FRAME (DERP_FRAME_HDR_LEN + 2 * DERP_KEY_LEN + DERP_MAX_PACKET)
/* strparser refuses messages larger than sk_rcvbuf (EMSGSIZE wedges the
 * socket), so offloaded sockets keep at least twice the largest frame. */
#define KD_RELAY_MIN_RCVBUF (2 * KD_RELAY_MAX_FRAME)
/* Default bound on bytes redirected to one destination but not yet taken by
 * its TCP send queue (the psock backlog, which the kernel does not bound). */
#define KD_RELAY_DEFAULT_QUEUE_BYTES (1u << 20)

/* The injector carries [route frame][inner frame]: the route frame names the
 * destination socket of the next frame by cookie (not by key: a key may have
 * several connections, and each gets its own keepalives and pongs) and is
 * consumed by the verdict; the inner frame is redirected untouched. 0xff is
 * not a DERP frame type. */
#define KD_RELAY_ROUTE_TYPE 0xff
#define KD_RELAY_ROUTE_BODY 8 /* socket cookie, little-endian */
#define KD_RELAY_ROUTE_LEN (DERP_FRAME_HDR_LEN + KD_RELAY_ROUTE_BODY)

struct kd_relay_key {
	__u8 b[DERP_KEY_LEN];
};
KD_STATIC_ASSERT(sizeof(struct kd_relay_key) == 32, "sockhash key is the 32-byte DERP key");

/* relay_pairs: the verdict relayed a frame from src to dst, whose socket
 * (the key's active connection then) had cookie dst_cookie. Read and
 * deleted by the daemon when src leaves, to send PeerGone to exactly the
 * connections that received from it. */
struct kd_relay_pair {
	__u8 src[DERP_KEY_LEN];
	__u8 dst[DERP_KEY_LEN];
};
KD_STATIC_ASSERT(sizeof(struct kd_relay_pair) == 64, "kd_relay_pair layout");

struct kd_relay_pair_val {
	__u64 dst_cookie;
};
KD_STATIC_ASSERT(sizeof(struct kd_relay_pair_val) == 8, "kd_relay_pair_val layout");

enum kd_relay_flags {
	KD_RELAY_F_CLIENT = 1u << 0,   /* a client socket in relay_socks */
	KD_RELAY_F_INJECTOR = 1u << 1, /* the daemon's injector socket */
	KD_RELAY_F_ROUTE = 1u << 2,    /* injector: route set for the next frame */
};

/* Per offloaded socket, keyed by socket cookie. The verdict reads the
 * sender's key from here (SendPacket -> RecvPacket carries the SENDER's key)
 * and accounts bytes redirected to this socket as a destination. */
struct kd_relay_meta {
	__u8 key[DERP_KEY_LEN];       /* client: own key; injector: unused */
	__u32 flags;                  /* enum kd_relay_flags */
	__u32 pad;
	__u64 route;                  /* injector: cookie of the next frame's dst */
	/* Destination accounting: bytes queued in the psock backlog are
	 * (seq_base + redirected_bytes) - tcp write_seq. seq_base is 0 until
	 * the first redirect, then (1 << 32) | write_seq at that moment. */
	__u64 seq_base;
	__u64 redirected_bytes;
	__u64 redirected_frames;
	__u64 dropped_frames;
};
KD_STATIC_ASSERT(sizeof(struct kd_relay_meta) == 80, "kd_relay_meta layout");

struct kd_relay_config {
	__u32 enabled;     /* 0: every client frame goes to userspace */
	__u32 queue_bytes; /* per-destination backlog bound; 0 = default */
};
KD_STATIC_ASSERT(sizeof(struct kd_relay_config) == 8, "kd_relay_config layout");

/* Every exit of every program, named: X(ENUM_SUFFIX, metric_name). The
 * counters map's value is a struct with one field per reason, so bpftool
 * prints the names (array maps only accept an int key in BTF, an enum key
 * makes the kernel reject the map's BTF). Metrics use the same names. */
#define KD_RELAY_REASONS(X)                                                    \
	X(REDIRECTED, redirected)                                            \
	X(INJECTED, injected)                                                \
	X(INJECT_ROUTE, inject_route)                                        \
	X(PASSED_CONTROL, passed_control)                                    \
	X(PASSED_UNKNOWN_DEST, passed_unknown_dest)                          \
	X(PASSED_NOT_OFFLOADED, passed_not_offloaded)                        \
	X(PASSED_DISABLED, passed_disabled)                                  \
	X(PASSED_SHORT_FRAME, passed_short_frame)                            \
	X(PASSED_REWRITE_FAILED, passed_rewrite_failed)                      \
	X(DROPPED_OVER_BOUND, dropped_over_bound)                            \
	X(DROPPED_REWRITE_ERROR, dropped_rewrite_error)                      \
	X(PARSE_ERROR, parse_error)                                          \
	X(INJECT_NO_ROUTE, inject_no_route)                                  \
	X(INJECT_UNKNOWN_DEST, inject_unknown_dest)                          \
	X(INJECT_OVER_BOUND, inject_over_bound)                              \
	X(PARSER_FRAME, parser_frame)                                        \
	X(PARSER_SHORT_FRAME, parser_short_frame)                            \
	X(PARSER_TOO_LARGE, parser_too_large)                                \
	X(PARSER_ERROR, parser_error)                                        \
	X(PAIR_NOT_RECORDED, pair_not_recorded)

enum kd_relay_reason {
#define KD_X(id, name) KD_RELAY_##id,
	KD_RELAY_REASONS(KD_X)
#undef KD_X
	KD_RELAY_REASON_MAX,
};

#define KD_RELAY_NAME_X(id, name) #name,
#define KD_RELAY_REASON_NAMES {KD_RELAY_REASONS(KD_RELAY_NAME_X)}

/* Value of the one-entry per-CPU counters map; field i is reason i. */
struct kd_relay_counters {
#define KD_X(id, name) __u64 name;
	KD_RELAY_REASONS(KD_X)
#undef KD_X
};
KD_STATIC_ASSERT(sizeof(struct kd_relay_counters) == 8 * KD_RELAY_REASON_MAX,
		 "one u64 per reason, in enum order");

#endif /* RELAY_MAPS_H */
