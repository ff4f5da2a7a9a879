/* SPDX-License-Identifier: MIT */
/* The relay's framing decisions as pure functions over header bytes, shared
 * by bpf/relay.bpf.c (which copies the bytes out of the skb first) and
 * userspace (unit tests, fuzzer). No helpers, no libc. */
#ifndef RELAY_PARSE_H
#define RELAY_PARSE_H

#include "relay_maps.h"

/* Bytes of the whole frame whose 5-byte header is h, or 0 when it is larger
 * than an offloaded socket may send (the parser then aborts the socket). */
static inline __u32 kd_relay_frame_len(const struct derp_frame_hdr *h)
{
	__u32 len = derp_hdr_len(h);

	if (len > KD_RELAY_MAX_FRAME - DERP_FRAME_HDR_LEN)
		return 0;
	return DERP_FRAME_HDR_LEN + len;
}

/* What a client socket's frame is, from its header alone: a candidate for
 * the kernel relay (KD_RELAY_REDIRECTED) or the reason it goes to userspace. */
static inline enum kd_relay_reason kd_relay_classify(const struct derp_frame_hdr *h)
{
	if (h->type != DERP_FRAME_SEND_PACKET)
		return KD_RELAY_PASSED_CONTROL;
	if (derp_hdr_len(h) < DERP_KEY_LEN)
		return KD_RELAY_PASSED_SHORT_FRAME;
	return KD_RELAY_REDIRECTED;
}

/* Whether an injector frame is a route frame (names the next frame's
 * destination) rather than a frame to deliver. */
static inline int kd_relay_is_route(const struct derp_frame_hdr *h)
{
	return h->type == KD_RELAY_ROUTE_TYPE && derp_hdr_len(h) == KD_RELAY_ROUTE_BODY;
}

/* The RecvPacket prefix that replaces a SendPacket's: same length, the
 * SENDER's key where the destination's was. */
static inline void kd_relay_recv_prefix(struct derp_packet_hdr *out, const struct derp_frame_hdr *send,
					const __u8 src[DERP_KEY_LEN])
{
	out->h.type = DERP_FRAME_RECV_PACKET;
	out->h.len_be[0] = send->len_be[0];
	out->h.len_be[1] = send->len_be[1];
	out->h.len_be[2] = send->len_be[2];
	out->h.len_be[3] = send->len_be[3];
	__builtin_memcpy(out->key, src, DERP_KEY_LEN);
}

#endif /* RELAY_PARSE_H */
