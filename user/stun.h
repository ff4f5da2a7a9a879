/* SPDX-License-Identifier: MIT */
/* STUN binding requests and responses as Tailscale speaks them (spec §9.1).
 * Pure: bytes in, verdict out; no allocation, logging or I/O. */
#ifndef KD_STUN_H
#define KD_STUN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "stun_wire.h"

/* Why a datagram is not a request we answer; all count as "not_stun". */
enum kd_stun_verdict {
	KD_STUN_OK = 0,
	KD_STUN_TOO_SHORT,          /* < 20 bytes */
	KD_STUN_NOT_STUN,           /* top two bits of byte 0 set */
	KD_STUN_BAD_COOKIE,
	KD_STUN_NOT_BINDING,        /* type != Binding Request */
	KD_STUN_TRUNCATED_ATTR,     /* attribute runs past the datagram */
	KD_STUN_NO_SOFTWARE,        /* no SOFTWARE attribute */
	KD_STUN_BAD_SOFTWARE,       /* SOFTWARE present but not "tailnode" */
	KD_STUN_NO_FINGERPRINT,     /* last attribute is not a 4-byte FINGERPRINT */
	KD_STUN_BAD_FINGERPRINT,    /* CRC mismatch */
	KD_STUN_VERDICT_MAX,
};

/* Validates like the reference (spec §9.1.2): attributes are walked to the
 * end of the datagram, SOFTWARE must be "tailnode", the last attribute must
 * be a correct FINGERPRINT. Returns KD_STUN_OK and fills txid, or a verdict. */
int kd_stun_parse_request(const uint8_t *pkt, size_t len, uint8_t txid[static STUN_TXID_LEN]);

/* A Binding Success carrying only XOR-MAPPED-ADDRESS for src (sockaddr_in or
 * sockaddr_in6; an IPv4-mapped IPv6 source is answered as family 0x01).
 * Returns the length written (32 or 44), 0 if cap is too small or the family
 * is unsupported. */
size_t kd_stun_build_response(uint8_t *out, size_t cap, const uint8_t txid[static STUN_TXID_LEN],
			      const struct sockaddr *src);

/* The 40-byte request a Tailscale client sends. Returns 40, or 0 if cap is
 * too small. */
size_t kd_stun_build_request(uint8_t *out, size_t cap, const uint8_t txid[static STUN_TXID_LEN]);

/* Client side (spec §9.1.3, "client-side parser"): a Binding Success whose
 * transaction ID is txid; XOR-MAPPED-ADDRESS (0x0020 or 0x8020) preferred,
 * MAPPED-ADDRESS as fallback. Writes a sockaddr_in or sockaddr_in6 into
 * mapped. Returns 0, -EBADMSG (malformed / not a success), -ESRCH (txid
 * mismatch), -ENOENT (no address attribute). */
int kd_stun_parse_response(const uint8_t *pkt, size_t len, const uint8_t txid[static STUN_TXID_LEN],
			   struct sockaddr_storage *mapped);

/* CRC-32/IEEE as FINGERPRINT uses it (before the XOR). */
uint32_t kd_stun_crc32(const uint8_t *p, size_t n);

const char *kd_stun_verdict_name(int verdict);

#endif
