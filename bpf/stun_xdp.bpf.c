// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/* XDP STUN responder (spec §9.2). Answers exactly the 40-byte request
 * Tailscale clients send, in place, with XDP_TX; anything it is not sure of
 * goes up the stack (XDP_PASS) where the userspace server on the same port
 * answers or rejects it. Every exit is counted under a named reason.
 *
 * Unlike the reference's XDP program this one checks FINGERPRINT: the
 * userspace server does, and a client must get the same answer whichever
 * plane sees its packet (with XDP on, a request with a bad CRC would
 * otherwise be answered, with XDP off it would not). It costs a 32-byte table
 * CRC, small next to the checksums. */
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "stun_wire.h"
#include "stun_crc32.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define IP_MF 0x2000
#define IP_OFFMASK 0x1fff
#define STUN_UDP_REQ_LEN (sizeof(struct udphdr) + STUN_REQUEST_LEN)
#define RESP_TTL 64

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stun_xdp_config);
} stun_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, STUN_XDP_COUNTER_ENTRIES);
	__type(key, struct stun_xdp_counter_key);
	__type(value, struct stun_xdp_counter_val);
} stun_counters SEC(".maps");

struct verdict {
	enum stun_xdp_af af;
	enum stun_xdp_reason reason;
};

static __always_inline int pass(struct verdict *v, enum stun_xdp_reason r)
{
	v->reason = r;
	return XDP_PASS;
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* One's-complement sum of n 16-bit words; byte order independent, so the
 * result can be stored as is. The caller has bounds-checked p + 2n. */
#define SUM16(p, n)                                                            \
	({                                                                     \
		const __u16 *w_ = (const __u16 *)(p);                          \
		__u32 s_ = 0;                                                  \
		_Pragma("unroll") for (int i_ = 0; i_ < (n); i_++) s_ += w_[i_]; \
		s_;                                                            \
	})

static __always_inline void swap_bytes(__u8 *a, __u8 *b, int n)
{
#pragma unroll
	for (int i = 0; i < n; i++) {
		__u8 t = a[i];

		a[i] = b[i];
		b[i] = t;
	}
}

static __always_inline int answer(struct xdp_md *ctx, struct verdict *v, bool v6);

static __always_inline int process(struct xdp_md *ctx, struct verdict *v)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct udphdr *udp;
	__u32 pseudo;
	bool v6;

	if ((void *)(eth + 1) > data_end)
		return pass(v, STUN_XDP_R_TRUNCATED);
	if (eth->h_proto == bpf_htons(ETH_P_8021Q) || eth->h_proto == bpf_htons(ETH_P_8021AD))
		return pass(v, STUN_XDP_R_VLAN);
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		v->af = STUN_XDP_AF_IPV4;
		v6 = false;
		if ((void *)(ip + 1) > data_end)
			return pass(v, STUN_XDP_R_TRUNCATED);
		if (ip->version != 4 || ip->ihl != 5)
			return pass(v, STUN_XDP_R_IP_OPTIONS);
		if (ip->frag_off & bpf_htons(IP_MF | IP_OFFMASK))
			return pass(v, STUN_XDP_R_IP_FRAGMENT);
		if (ip->protocol != IPPROTO_UDP)
			return pass(v, STUN_XDP_R_NOT_UDP);
		if (csum_fold(SUM16(ip, 10)) != 0)
			return pass(v, STUN_XDP_R_INVALID_IP_CSUM);
		if (bpf_ntohs(ip->tot_len) != data_end - (void *)ip)
			return pass(v, STUN_XDP_R_IP_LEN_MISMATCH);
		udp = (void *)(ip + 1);
		pseudo = SUM16(&ip->saddr, 4);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		v->af = STUN_XDP_AF_IPV6;
		v6 = true;
		if ((void *)(ip6 + 1) > data_end)
			return pass(v, STUN_XDP_R_TRUNCATED);
		if (ip6->version != 6)
			return pass(v, STUN_XDP_R_IP_OPTIONS);
		/* extension headers: rare for STUN, left to the stack */
		if (ip6->nexthdr != IPPROTO_UDP)
			return pass(v, STUN_XDP_R_NOT_UDP);
		if (bpf_ntohs(ip6->payload_len) != data_end - (void *)(ip6 + 1))
			return pass(v, STUN_XDP_R_IP_LEN_MISMATCH);
		udp = (void *)(ip6 + 1);
		pseudo = SUM16(&ip6->saddr, 16);
	} else {
		return pass(v, STUN_XDP_R_NOT_IP);
	}
	if ((void *)(udp + 1) > data_end)
		return pass(v, STUN_XDP_R_TRUNCATED);
	if (bpf_ntohs(udp->len) != data_end - (void *)udp)
		return pass(v, STUN_XDP_R_UDP_LEN_MISMATCH);

	__u32 zero = 0;
	struct stun_xdp_config *cfg = bpf_map_lookup_elem(&stun_config, &zero);

	if (!cfg)
		return pass(v, STUN_XDP_R_NO_CONFIG);
	if (!cfg->enabled)
		return pass(v, STUN_XDP_R_DISABLED);
	if (udp->dest != bpf_htons(cfg->dst_port))
		return pass(v, STUN_XDP_R_NOT_STUN_PORT);
	if (cfg->drop_stun) {
		v->reason = STUN_XDP_R_DROP_STUN;
		return XDP_DROP;
	}
	/* Only the one shape Tailscale sends is answered here; other STUN
	 * (extra attributes, different order) is the userspace server's job. */
	if (bpf_ntohs(udp->len) != STUN_UDP_REQ_LEN)
		return pass(v, STUN_XDP_R_UNEXPECTED_STUN_LAYOUT);
	/* redundant with the length checks above, but it is what tells the
	 * verifier the fixed-size reads below are in bounds */
	if ((void *)udp + STUN_UDP_REQ_LEN > data_end)
		return pass(v, STUN_XDP_R_TRUNCATED);

	/* IPv4 may omit the UDP checksum (0); IPv6 may not, so a zero there
	 * fails the sum and the stack drops it */
	if (v6 || udp->check) {
		__u32 sum = pseudo + bpf_htons(IPPROTO_UDP) + udp->len + SUM16(udp, STUN_UDP_REQ_LEN / 2);

		if (csum_fold(sum) != 0)
			return pass(v, STUN_XDP_R_INVALID_UDP_CSUM);
	}

	__u8 *stun = (__u8 *)(udp + 1);
	struct stun_hdr *sh = (struct stun_hdr *)stun;
	struct stun_attr_hdr *a1 = (struct stun_attr_hdr *)(stun + STUN_HDR_LEN);
	struct stun_attr_hdr *a2 = (struct stun_attr_hdr *)(stun + STUN_REQUEST_FP_OFF);

	if (sh->type != bpf_htons(STUN_BINDING_REQUEST))
		return pass(v, STUN_XDP_R_NOT_BINDING_REQUEST);
	if (sh->cookie != bpf_htonl(STUN_MAGIC_COOKIE))
		return pass(v, STUN_XDP_R_BAD_COOKIE);
	if (bpf_ntohs(sh->len) != STUN_REQUEST_LEN - STUN_HDR_LEN)
		return pass(v, STUN_XDP_R_STUN_LEN_MISMATCH);
	if (a1->type != bpf_htons(STUN_ATTR_SOFTWARE) || a1->len != bpf_htons(STUN_SOFTWARE_LEN))
		return pass(v, STUN_XDP_R_UNEXPECTED_FIRST_STUN_ATTR);

	const char sw[STUN_SOFTWARE_LEN] = STUN_SOFTWARE;
	__u8 diff = 0;

#pragma unroll
	for (int i = 0; i < STUN_SOFTWARE_LEN; i++)
		diff |= stun[STUN_HDR_LEN + STUN_ATTR_HDR_LEN + i] ^ (__u8)sw[i];
	if (diff)
		return pass(v, STUN_XDP_R_INVALID_SW_ATTR_VAL);
	if (a2->type != bpf_htons(STUN_ATTR_FINGERPRINT) || a2->len != bpf_htons(STUN_FINGERPRINT_LEN))
		return pass(v, STUN_XDP_R_UNEXPECTED_LAST_STUN_ATTR);

	__u32 crc = 0xffffffff, fp;

#pragma unroll
	for (int i = 0; i < STUN_REQUEST_FP_OFF; i++)
		crc = stun_crc32_step(crc, stun[i]);
	__builtin_memcpy(&fp, stun + STUN_REQUEST_FP_OFF + STUN_ATTR_HDR_LEN, sizeof(fp));
	if ((~crc ^ STUN_FINGERPRINT_XOR) != bpf_ntohl(fp))
		return pass(v, STUN_XDP_R_INVALID_FINGERPRINT);

	return answer(ctx, v, v6);
}

/* Rewrites the validated request into the response. Up to the tail
 * adjustment the packet is untouched, so failing there can still pass it
 * to userspace; after it only XDP_ABORTED is honest. */
static __always_inline int answer(struct xdp_md *ctx, struct verdict *v, bool v6)
{
	const int resp_len = v6 ? STUN_RESPONSE_V6_LEN : STUN_RESPONSE_V4_LEN;
	const int l3_len = v6 ? (int)sizeof(struct ipv6hdr) : (int)sizeof(struct iphdr);

	if (bpf_xdp_adjust_tail(ctx, resp_len - STUN_REQUEST_LEN))
		return pass(v, STUN_XDP_R_ADJUST_TAIL_FAILED);

	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	const int total = sizeof(*eth) + l3_len + sizeof(struct udphdr) + resp_len;

	v->reason = STUN_XDP_R_REWRITE_BOUNDS;
	if (data + total > data_end)
		return XDP_ABORTED;

	struct udphdr *udp = data + sizeof(*eth) + l3_len;
	__u8 *stun = (__u8 *)(udp + 1);
	__u8 *xma = stun + STUN_HDR_LEN + STUN_ATTR_HDR_LEN;
	__u16 udp_len = sizeof(*udp) + resp_len;
	__u32 sum;

	swap_bytes(eth->h_dest, eth->h_source, 6);

	/* XOR-MAPPED-ADDRESS value: reserved, family, port, address */
	xma[0] = 0;
	xma[1] = v6 ? STUN_FAMILY_IPV6 : STUN_FAMILY_IPV4;
	*(__u16 *)(xma + 2) = udp->source ^ bpf_htons(STUN_MAGIC_COOKIE >> 16);
	if (v6) {
		struct ipv6hdr *ip6 = data + sizeof(*eth);
		__u8 *src = (__u8 *)&ip6->saddr;

		/* address XOR (cookie || txid); the txid is still in place */
#pragma unroll
		for (int i = 0; i < 4; i++)
			xma[4 + i] = src[i] ^ (__u8)(STUN_MAGIC_COOKIE >> (24 - 8 * i));
#pragma unroll
		for (int i = 0; i < 12; i++)
			xma[8 + i] = src[4 + i] ^ stun[8 + i];
		swap_bytes((__u8 *)&ip6->saddr, (__u8 *)&ip6->daddr, 16);
		ip6->hop_limit = RESP_TTL;
		ip6->payload_len = bpf_htons(udp_len);
		sum = SUM16(&ip6->saddr, 16);
	} else {
		struct iphdr *ip = data + sizeof(*eth);
		__u32 saddr = ip->saddr;

		*(__u32 *)(xma + 4) = saddr ^ bpf_htonl(STUN_MAGIC_COOKIE);
		ip->saddr = ip->daddr;
		ip->daddr = saddr;
		ip->ttl = RESP_TTL;
		ip->tot_len = bpf_htons(sizeof(*ip) + udp_len);
		ip->check = 0;
		ip->check = csum_fold(SUM16(ip, 10));
		sum = SUM16(&ip->saddr, 4);
	}

	struct stun_hdr *sh = (struct stun_hdr *)stun;
	struct stun_attr_hdr *a = (struct stun_attr_hdr *)(stun + STUN_HDR_LEN);

	sh->type = bpf_htons(STUN_BINDING_SUCCESS);
	sh->len = bpf_htons(resp_len - STUN_HDR_LEN);
	a->type = bpf_htons(STUN_ATTR_XOR_MAPPED_ADDRESS);
	a->len = bpf_htons(v6 ? STUN_XMA_V6_LEN : STUN_XMA_V4_LEN);

	__be16 port = udp->source;

	udp->source = udp->dest;
	udp->dest = port;
	udp->len = bpf_htons(udp_len);
	udp->check = 0;
	sum += bpf_htons(IPPROTO_UDP) + udp->len;
	if (v6)
		sum += SUM16(udp, (sizeof(*udp) + STUN_RESPONSE_V6_LEN) / 2);
	else
		sum += SUM16(udp, (sizeof(*udp) + STUN_RESPONSE_V4_LEN) / 2);
	udp->check = csum_fold(sum);
	if (!udp->check)
		udp->check = 0xffff; /* 0 means "no checksum" on the wire */

	v->reason = STUN_XDP_R_ANSWERED;
	return XDP_TX;
}

static __always_inline void count(const struct verdict *v, int action, __u64 bytes)
{
	struct stun_xdp_counter_key k = {
		.af = v->af,
		.action = (enum stun_xdp_action)action,
		.reason = v->reason,
	};
	struct stun_xdp_counter_val *c = bpf_map_lookup_elem(&stun_counters, &k);

	if (!c) {
		struct stun_xdp_counter_val z = {};

		bpf_map_update_elem(&stun_counters, &k, &z, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&stun_counters, &k);
		if (!c)
			return;
	}
	/* per-CPU value: no atomics needed */
	c->packets++;
	c->bytes += bytes;
}

SEC("xdp")
int kd_stun_xdp(struct xdp_md *ctx)
{
	__u64 bytes = ctx->data_end - ctx->data;
	struct verdict v = {.af = STUN_XDP_AF_UNKNOWN, .reason = STUN_XDP_R_UNSPECIFIED};
	int action = process(ctx, &v);

	count(&v, action, bytes);
	return action;
}
