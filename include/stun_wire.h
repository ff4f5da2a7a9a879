/* SPDX-License-Identifier: MIT */
/* STUN as Tailscale speaks it (spec §9), plus the structs the XDP responder
 * shares with its loader. Included by bpf/ and user/: fixed-width types only. */
#ifndef STUN_WIRE_H
#define STUN_WIRE_H

#include "kd_types.h"

#define STUN_MAGIC_COOKIE 0x2112A442u
#define STUN_HDR_LEN 20
#define STUN_TXID_LEN 12
#define STUN_ATTR_HDR_LEN 4
#define STUN_DEFAULT_PORT 3478

#define STUN_BINDING_REQUEST 0x0001
#define STUN_BINDING_SUCCESS 0x0101

#define STUN_ATTR_MAPPED_ADDRESS 0x0001
#define STUN_ATTR_XOR_MAPPED_ADDRESS 0x0020
#define STUN_ATTR_XOR_MAPPED_ADDRESS_ALT 0x8020 /* non-standard, some servers */
#define STUN_ATTR_SOFTWARE 0x8022
#define STUN_ATTR_FINGERPRINT 0x8028

#define STUN_FAMILY_IPV4 0x01
#define STUN_FAMILY_IPV6 0x02

#define STUN_SOFTWARE "tailnode"
#define STUN_SOFTWARE_LEN 8
#define STUN_FINGERPRINT_XOR 0x5354554Eu
#define STUN_FINGERPRINT_LEN 4

/* Tailscale's request: header + SOFTWARE(8) + FINGERPRINT(4), spec §9.1.1 */
#define STUN_REQUEST_LEN (STUN_HDR_LEN + STUN_ATTR_HDR_LEN + STUN_SOFTWARE_LEN + \
			  STUN_ATTR_HDR_LEN + STUN_FINGERPRINT_LEN)
/* offset of the FINGERPRINT attribute: the CRC covers everything before it */
#define STUN_REQUEST_FP_OFF (STUN_HDR_LEN + STUN_ATTR_HDR_LEN + STUN_SOFTWARE_LEN)
/* Responses carry only XOR-MAPPED-ADDRESS (spec §9.1.3) */
#define STUN_XMA_V4_LEN 8
#define STUN_XMA_V6_LEN 20
#define STUN_RESPONSE_V4_LEN (STUN_HDR_LEN + STUN_ATTR_HDR_LEN + STUN_XMA_V4_LEN)
#define STUN_RESPONSE_V6_LEN (STUN_HDR_LEN + STUN_ATTR_HDR_LEN + STUN_XMA_V6_LEN)
#define STUN_RESPONSE_MAX_LEN STUN_RESPONSE_V6_LEN

struct stun_hdr {
	__be16 type;
	__be16 len;    /* bytes after this header */
	__be32 cookie;
	__u8 txid[STUN_TXID_LEN];
};
KD_STATIC_ASSERT(sizeof(struct stun_hdr) == STUN_HDR_LEN, "STUN header is 20 bytes");

struct stun_attr_hdr {
	__be16 type;
	__be16 len;    /* value length, without the padding to 4 */
};
KD_STATIC_ASSERT(sizeof(struct stun_attr_hdr) == STUN_ATTR_HDR_LEN, "attr header is 4 bytes");

/* --- XDP responder: shared with user/stun_xdp.c -------------------------- */

#define KD_BPF_PIN_DIR "/sys/fs/bpf/kderp"
#define KD_STUN_PIN_CONFIG "stun_config"
#define KD_STUN_PIN_COUNTERS "stun_counters"

/* One entry, key 0. Host byte order. Written by the loader at attach and by
 * kd_stun_xdp_set_drop() at runtime; the program re-reads it per packet. */
struct stun_xdp_config {
	__u16 dst_port;
	__u8 enabled;   /* 0: pass everything to the kernel (userspace answers) */
	__u8 drop_stun; /* maintenance: drop requests so clients pick another DERP */
};
KD_STATIC_ASSERT(sizeof(struct stun_xdp_config) == 4, "config value is 4 bytes");

enum stun_xdp_af {
	STUN_XDP_AF_UNKNOWN = 0,
	STUN_XDP_AF_IPV4,
	STUN_XDP_AF_IPV6,
	STUN_XDP_AF_MAX,
};
#define STUN_XDP_AF_NAMES {"unknown", "ipv4", "ipv6"}

/* Same order as enum xdp_action so the program can index by its verdict. */
enum stun_xdp_action {
	STUN_XDP_ACT_ABORTED = 0,
	STUN_XDP_ACT_DROP,
	STUN_XDP_ACT_PASS,
	STUN_XDP_ACT_TX,
	STUN_XDP_ACT_MAX,
};
#define STUN_XDP_ACTION_NAMES {"aborted", "drop", "pass", "tx"}

/* Every exit of the program. The reference's prog_end labels keep their
 * spelling; the rest name the exits it lumps into "unspecified". */
#define STUN_XDP_REASONS(X)                                                    \
	X(UNSPECIFIED, "unspecified")                                          \
	X(ANSWERED, "answered")                   /* XDP_TX */                 \
	X(TRUNCATED, "truncated")                 /* a header does not fit */  \
	X(NOT_IP, "not_ip")                       /* other EtherType */        \
	X(VLAN, "vlan")                           /* tagged: left to the stack */ \
	X(IP_OPTIONS, "ip_options")               /* IHL != 5 or bad version */ \
	X(IP_FRAGMENT, "ip_fragment")                                          \
	X(NOT_UDP, "not_udp")                     /* incl. IPv6 ext headers */ \
	X(INVALID_IP_CSUM, "invalid_ip_csum")                                  \
	X(IP_LEN_MISMATCH, "ip_len_mismatch")                                  \
	X(UDP_LEN_MISMATCH, "udp_len_mismatch")                                \
	X(NO_CONFIG, "no_config")                                              \
	X(DISABLED, "disabled")                                                \
	X(NOT_STUN_PORT, "not_stun_port")                                      \
	X(DROP_STUN, "drop_stun")                                              \
	X(UNEXPECTED_STUN_LAYOUT, "unexpected_stun_layout") /* not 40 bytes */ \
	X(INVALID_UDP_CSUM, "invalid_udp_csum")                                \
	X(NOT_BINDING_REQUEST, "not_binding_request")                          \
	X(BAD_COOKIE, "bad_cookie")                                            \
	X(STUN_LEN_MISMATCH, "stun_len_mismatch")                              \
	X(UNEXPECTED_FIRST_STUN_ATTR, "unexpected_first_stun_attr")            \
	X(INVALID_SW_ATTR_VAL, "invalid_sw_attr_val")                          \
	X(UNEXPECTED_LAST_STUN_ATTR, "unexpected_last_stun_attr")              \
	X(INVALID_FINGERPRINT, "invalid_fingerprint")                          \
	X(ADJUST_TAIL_FAILED, "adjust_tail_failed")                            \
	X(REWRITE_BOUNDS, "rewrite_bounds")       /* XDP_ABORTED */

enum stun_xdp_reason {
#define KD_X(id, name) STUN_XDP_R_##id,
	STUN_XDP_REASONS(KD_X)
#undef KD_X
	STUN_XDP_R_MAX,
};

/* Enums (4 bytes each) rather than u8 so `bpftool map dump` prints the
 * enumerator names, not just numbers. */
struct stun_xdp_counter_key {
	enum stun_xdp_af af;
	enum stun_xdp_action action;
	enum stun_xdp_reason reason;
};
KD_STATIC_ASSERT(sizeof(struct stun_xdp_counter_key) == 12, "counter key is 12 bytes");

struct stun_xdp_counter_val {
	__u64 packets;
	__u64 bytes;   /* frame bytes as received */
};
KD_STATIC_ASSERT(sizeof(struct stun_xdp_counter_val) == 16, "counter value is 16 bytes");

#define STUN_XDP_COUNTER_ENTRIES (STUN_XDP_AF_MAX * STUN_XDP_ACT_MAX * STUN_XDP_R_MAX)

#endif /* STUN_WIRE_H */
