/* SPDX-License-Identifier: MIT */
/* DERP wire format, shared by the daemon, the tools and the BPF programs.
 * Source of truth: shared/spec/DERP-SPEC.md §4–§7 and Appendix B. */
#ifndef DERP_WIRE_H
#define DERP_WIRE_H

#include "kd_types.h"

#define DERP_PROTOCOL_VERSION 2
#define DERP_KEY_LEN 32
#define DERP_NONCE_LEN 24
#define DERP_MAC_LEN 16
#define DERP_FRAME_HDR_LEN 5
#define DERP_MAX_PACKET 65536u           /* SendPacket/RecvPacket payload cap */
#define DERP_MAX_INFO_LEN 1048576u       /* largest frame a client accepts */
#define DERP_MAX_CLIENT_INFO 262144u     /* server-side ClientInfo cap */
#define DERP_MIN_CLIENT_INFO (DERP_KEY_LEN + DERP_NONCE_LEN)
#define DERP_MAX_SERVER_KEY_FRAME 1024u
#define DERP_MAX_PING 1000u
#define DERP_PING_LEN 8
/* kderp deviation (spec §13.5): unknown frames are capped, not read forever */
#define DERP_MAX_UNKNOWN_FRAME 1048576u

#define DERP_MAGIC "DERP\xf0\x9f\x94\x91"
#define DERP_MAGIC_LEN 8
#define DERP_SERVER_KEY_PAYLOAD (DERP_MAGIC_LEN + DERP_KEY_LEN)

/* "TS💬": disco packets start with it and are at least 62 bytes long */
#define DERP_DISCO_MAGIC "TS\xf0\x9f\x92\xac"
#define DERP_DISCO_MAGIC_LEN 6
#define DERP_DISCO_MIN_LEN 62

enum derp_frame_type {
	DERP_FRAME_SERVER_KEY = 0x01,     /* 8B magic + 32B server public key */
	DERP_FRAME_CLIENT_INFO = 0x02,    /* 32B pub + 24B nonce + box(json) */
	DERP_FRAME_SERVER_INFO = 0x03,    /* 24B nonce + box(json) */
	DERP_FRAME_SEND_PACKET = 0x04,    /* 32B dst key + packet */
	DERP_FRAME_RECV_PACKET = 0x05,    /* 32B src key + packet */
	DERP_FRAME_KEEP_ALIVE = 0x06,     /* empty */
	DERP_FRAME_NOTE_PREFERRED = 0x07, /* 1B: 0x01 preferred */
	DERP_FRAME_PEER_GONE = 0x08,      /* 32B key + 1B reason */
	DERP_FRAME_PEER_PRESENT = 0x09,   /* 32B key + 16B ip + 2B port + 1B flags */
	DERP_FRAME_FORWARD_PACKET = 0x0a, /* 32B src + 32B dst + packet */
	DERP_FRAME_WATCH_CONNS = 0x10,    /* empty */
	DERP_FRAME_CLOSE_PEER = 0x11,     /* 32B key */
	DERP_FRAME_PING = 0x12,           /* 8B data */
	DERP_FRAME_PONG = 0x13,           /* 8B data */
	DERP_FRAME_HEALTH = 0x14,         /* utf-8 text, empty = healthy */
	DERP_FRAME_RESTARTING = 0x15,     /* u32 reconnect-in ms + u32 try-for ms */
};

enum derp_peer_gone_reason {
	DERP_PEER_GONE_DISCONNECTED = 0x00,
	DERP_PEER_GONE_NOT_HERE = 0x01,
	DERP_PEER_GONE_MESH_CONN_BROKE = 0xf0, /* local only, never on the wire */
};

enum derp_peer_present_flags {
	DERP_PEER_PRESENT_REGULAR = 0x01,
	DERP_PEER_PRESENT_MESH_PEER = 0x02,
	DERP_PEER_PRESENT_PROBER = 0x04,
	DERP_PEER_PRESENT_NOT_IDEAL = 0x08,
};

#define DERP_PEER_GONE_LEN (DERP_KEY_LEN + 1)
#define DERP_PEER_PRESENT_LEN (DERP_KEY_LEN + 16 + 2 + 1)
#define DERP_RESTARTING_LEN 8

/* The frame header as it sits on the wire. Packed because the length is not
 * aligned; decode it with derp_hdr_len() so the byte order is explicit. */
struct derp_frame_hdr {
	__u8 type;
	__u8 len_be[4];
} __attribute__((packed));
KD_STATIC_ASSERT(sizeof(struct derp_frame_hdr) == DERP_FRAME_HDR_LEN, "derp header is 5 bytes");

/* The prefix of a SendPacket/RecvPacket frame: what the relay rewrites. */
struct derp_packet_hdr {
	struct derp_frame_hdr h;
	__u8 key[DERP_KEY_LEN];
} __attribute__((packed));
KD_STATIC_ASSERT(sizeof(struct derp_packet_hdr) == DERP_FRAME_HDR_LEN + DERP_KEY_LEN,
		 "packet header is 37 bytes");

static inline __u32 derp_hdr_len(const struct derp_frame_hdr *h)
{
	return ((__u32)h->len_be[0] << 24) | ((__u32)h->len_be[1] << 16) |
	       ((__u32)h->len_be[2] << 8) | (__u32)h->len_be[3];
}

static inline void derp_hdr_put(struct derp_frame_hdr *h, __u8 type, __u32 len)
{
	h->type = type;
	h->len_be[0] = (__u8)(len >> 24);
	h->len_be[1] = (__u8)(len >> 16);
	h->len_be[2] = (__u8)(len >> 8);
	h->len_be[3] = (__u8)len;
}

/* Packet kinds label drops and received packets (spec §7.11). */
enum derp_kind {
	DERP_KIND_DISCO = 0,
	DERP_KIND_OTHER = 1,
	DERP_KIND_MAX,
};
#define DERP_KIND_NAMES {"disco", "other"}

/* Drop reasons, spelled like the reference's metric labels (spec §7.4). */
#define DERP_DROP_REASONS(X)                                                   \
	X(UNKNOWN_DEST, "unknown_dest")                                        \
	X(UNKNOWN_DEST_ON_FWD, "unknown_dest_on_fwd")                          \
	X(GONE_DISCONNECTED, "gone_disconnected")                              \
	X(QUEUE_HEAD, "queue_head")                                            \
	X(QUEUE_TAIL, "queue_tail")                                            \
	X(WRITE_ERROR, "write_error")                                          \
	X(DUP_CLIENT, "dup_client")

enum derp_drop_reason {
#define KD_X(id, name) DERP_DROP_##id,
	DERP_DROP_REASONS(KD_X)
#undef KD_X
	DERP_DROP_MAX,
};

#endif /* DERP_WIRE_H */
