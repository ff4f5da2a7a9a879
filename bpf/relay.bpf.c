// SPDX-License-Identifier: GPL-2.0
/* Kernel data plane: strparser frames DERP on offloaded plain-TCP sockets,
 * the verdict relays SendPacket -> RecvPacket between them and hands every
 * other frame to userspace. The daemon's own frames reach offloaded sockets
 * through the injector socket, so they queue behind relayed frames in the
 * same psock backlog instead of interleaving with them on the wire. */
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "relay_maps.h"
#include "relay_parse.h"

char LICENSE[] SEC("license") = "GPL";

#define SK_DROP 0
#define SK_PASS 1
#define EMSGSIZE 90
#define EINVAL 22

/* Two sockhashes: relay_members holds every offloaded socket for its whole
 * life and carries the programs (a socket's psock, strparser and backlog
 * live as long as it is there); relay_socks has no programs and only routes
 * a key to its active connection, so moving or deleting a key's route (a
 * duplicate connection took over) leaves the old socket's queued frames and
 * half-parsed input alone. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, KD_RELAY_MAX_SOCKS);
	__type(key, struct kd_relay_key);
	__type(value, __u64);
} relay_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, KD_RELAY_MAX_SOCKS);
	__type(key, __u64); /* socket cookie */
	__type(value, __u64);
} relay_members SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, KD_RELAY_MAX_PAIRS);
	__type(key, struct kd_relay_pair);
	__type(value, struct kd_relay_pair_val);
} relay_pairs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} relay_inject SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KD_RELAY_MAX_SOCKS + 1);
	__type(key, __u64); /* socket cookie */
	__type(value, struct kd_relay_meta);
} relay_meta SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kd_relay_config);
} relay_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kd_relay_counters);
} relay_counters SEC(".maps");

static __always_inline void count(enum kd_relay_reason r)
{
	__u32 zero = 0;
	__u64 *c = bpf_map_lookup_elem(&relay_counters, &zero);

	/* r is a constant at every call site, so this is one fixed-offset add */
	if (c && r < KD_RELAY_REASON_MAX)
		c[r] += 1;
}

/* The frame does not start at 0: strparser hands us a clone of the whole TCP
 * skb and the message begins at strp_msg(skb)->offset, which __sk_buff does
 * not expose (reading at 0 corrupts the stream within a few frames).
 * bpf_cast_to_kern_ctx() would read it directly but is a 6.2+ kfunc, and
 * libbpf 1.1 cannot make a kfunc optional (weak kfuncs came in 1.2), so one
 * path for every kernel: the ctx pointer is the sk_buff, read the field at
 * its CO-RE offset. Measured: no cost visible next to the rest of the path. */
static __always_inline __u32 strp_offset(struct __sk_buff *skb)
{
	int off = 0;
	__u64 at = bpf_core_field_offset(struct sk_buff, cb) +
		   bpf_core_field_offset(struct sk_skb_cb, strp) +
		   bpf_core_field_offset(struct _strp_msg, strp) +
		   bpf_core_field_offset(struct strp_msg, offset);

	bpf_probe_read_kernel(&off, sizeof(off), (void *)skb + at);
	return (__u32)off;
}

SEC("sk_skb/stream_parser")
int relay_parser(struct __sk_buff *skb)
{
	struct derp_frame_hdr h;
	__u32 off = strp_offset(skb);
	__u32 len;

	if (off > skb->len || skb->len - off < DERP_FRAME_HDR_LEN) {
		count(KD_RELAY_PARSER_SHORT_FRAME);
		return 0; /* strparser calls again with more bytes */
	}
	if (bpf_skb_load_bytes(skb, off, &h, sizeof(h))) {
		count(KD_RELAY_PARSER_ERROR);
		return -EINVAL;
	}
	len = kd_relay_frame_len(&h);
	if (!len) {
		/* aborts the socket with EMSGSIZE; the daemon sees SO_ERROR */
		count(KD_RELAY_PARSER_TOO_LARGE);
		return -EMSGSIZE;
	}
	count(KD_RELAY_PARSER_FRAME);
	return len;
}

/* Bytes redirected to a socket that its TCP send queue has not taken yet:
 * the psock backlog, which the kernel lets grow without limit. Observed as
 * the bytes we redirected minus how far its write_seq moved since the first
 * redirect. Consumes the reference on sk. Returns the socket's meta (and
 * its cookie) or NULL when it is not ours. */
static __always_inline struct kd_relay_meta *sock_meta(struct bpf_sock *sk, __u32 *queued, __u64 *cookie_out)
{
	struct kd_relay_meta *m;
	struct tcp_sock *tp;
	__u64 cookie, base, old;
	__u32 wseq;

	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp) {
		bpf_sk_release(sk);
		return NULL;
	}
	wseq = tp->write_seq;
	cookie = tp->inet_conn.icsk_inet.sk.__sk_common.skc_cookie.counter;
	bpf_sk_release(sk);

	m = bpf_map_lookup_elem(&relay_meta, &cookie);
	if (!m)
		return NULL;
	base = m->seq_base;
	if (!base) {
		/* One winner sets the base; nothing can be accounted to m
		 * before that, so write_seq here is the empty-backlog point. */
		base = (1ull << 32) | wseq;
		old = __sync_val_compare_and_swap(&m->seq_base, 0, base);
		if (old)
			base = old;
	}
	*queued = (__u32)base + (__u32)m->redirected_bytes - wseq;
	if ((__s32)*queued < 0)
		*queued = 0;
	*cookie_out = cookie;
	return m;
}

/* The active connection of key dst, by its route. */
static __always_inline struct kd_relay_meta *dest_meta(const struct kd_relay_key *dst, __u32 *queued,
							__u64 *cookie)
{
	struct bpf_sock *sk = bpf_map_lookup_elem(&relay_socks, dst);

	return sk ? sock_meta(sk, queued, cookie) : NULL;
}

/* Remembers that src's frames reach dst's connection dst_cookie, for the
 * PeerGone the daemon sends when src leaves. Looked up first: an update
 * per frame would take the bucket lock and move the LRU every time. */
static __always_inline void note_pair(const __u8 *src, const struct kd_relay_key *dst, __u64 dst_cookie)
{
	struct kd_relay_pair_val *v, nv = {.dst_cookie = dst_cookie};
	struct kd_relay_pair p;

	__builtin_memcpy(p.src, src, DERP_KEY_LEN);
	__builtin_memcpy(p.dst, dst, DERP_KEY_LEN);
	v = bpf_map_lookup_elem(&relay_pairs, &p);
	if (v && v->dst_cookie == dst_cookie)
		return;
	if (bpf_map_update_elem(&relay_pairs, &p, &nv, BPF_ANY))
		count(KD_RELAY_PAIR_NOT_RECORDED);
}

static __always_inline __u32 queue_bound(void)
{
	__u32 zero = 0;
	struct kd_relay_config *c = bpf_map_lookup_elem(&relay_config, &zero);

	if (c && c->queue_bytes)
		return c->queue_bytes;
	return KD_RELAY_DEFAULT_QUEUE_BYTES;
}

static __always_inline void account(struct kd_relay_meta *m, __u32 flen)
{
	__sync_fetch_and_add(&m->redirected_bytes, flen);
	__sync_fetch_and_add(&m->redirected_frames, 1);
}

/* The injector's stream is [route][frame][route][frame]...: a route frame
 * names the destination socket (by cookie) of the frame that follows it.
 * One socket's verdicts run one at a time, so the route can live in the
 * injector's own meta. */
static __always_inline int inject_verdict(struct __sk_buff *skb, struct kd_relay_meta *self,
					  __u32 off)
{
	struct kd_relay_meta *m;
	struct derp_frame_hdr h;
	struct bpf_sock *sk;
	__u32 queued = 0, flen;
	__u64 dst, cookie = 0;

	if (bpf_skb_load_bytes(skb, off, &h, sizeof(h))) {
		count(KD_RELAY_PARSE_ERROR);
		return SK_DROP;
	}
	flen = DERP_FRAME_HDR_LEN + derp_hdr_len(&h);
	if (kd_relay_is_route(&h)) {
		if (bpf_skb_load_bytes(skb, off + DERP_FRAME_HDR_LEN, &self->route, sizeof(self->route))) {
			count(KD_RELAY_PARSE_ERROR);
			self->flags &= ~KD_RELAY_F_ROUTE;
			return SK_DROP;
		}
		self->flags |= KD_RELAY_F_ROUTE;
		count(KD_RELAY_INJECT_ROUTE);
		return SK_DROP;
	}
	if (!(self->flags & KD_RELAY_F_ROUTE)) {
		count(KD_RELAY_INJECT_NO_ROUTE);
		return SK_DROP;
	}
	dst = self->route;
	self->flags &= ~KD_RELAY_F_ROUTE;

	sk = bpf_map_lookup_elem(&relay_members, &dst);
	m = sk ? sock_meta(sk, &queued, &cookie) : NULL;
	if (!m) {
		count(KD_RELAY_INJECT_UNKNOWN_DEST);
		return SK_DROP;
	}
	if (queued > queue_bound()) {
		__sync_fetch_and_add(&m->dropped_frames, 1);
		count(KD_RELAY_INJECT_OVER_BOUND);
		return SK_DROP;
	}
	if (bpf_sk_redirect_hash(skb, &relay_members, &dst, 0) != SK_PASS) {
		count(KD_RELAY_INJECT_UNKNOWN_DEST);
		return SK_DROP;
	}
	account(m, flen);
	count(KD_RELAY_INJECTED);
	return SK_PASS;
}

SEC("sk_skb/stream_verdict")
int relay_verdict(struct __sk_buff *skb)
{
	struct derp_packet_hdr ph, orig;
	struct kd_relay_meta *self, *m;
	struct kd_relay_config *cfg;
	struct kd_relay_key dst;
	__u32 off = strp_offset(skb);
	__u32 zero = 0, queued = 0, len;
	enum kd_relay_reason reason;
	__u64 cookie, dst_cookie = 0;

	cookie = bpf_get_socket_cookie(skb);
	self = bpf_map_lookup_elem(&relay_meta, &cookie);
	if (self && (self->flags & KD_RELAY_F_INJECTOR))
		return inject_verdict(skb, self, off);

	if (bpf_skb_load_bytes(skb, off, &ph.h, sizeof(ph.h))) {
		/* cannot happen after the parser read it; let userspace see it */
		count(KD_RELAY_PARSE_ERROR);
		return SK_PASS;
	}
	reason = kd_relay_classify(&ph.h);
	if (reason != KD_RELAY_REDIRECTED) {
		count(reason);
		return SK_PASS;
	}
	len = derp_hdr_len(&ph.h);
	cfg = bpf_map_lookup_elem(&relay_config, &zero);
	if (!cfg || !cfg->enabled) {
		count(KD_RELAY_PASSED_DISABLED);
		return SK_PASS;
	}
	if (!self || !(self->flags & KD_RELAY_F_CLIENT)) {
		count(KD_RELAY_PASSED_NOT_OFFLOADED);
		return SK_PASS;
	}
	if (bpf_skb_load_bytes(skb, off + DERP_FRAME_HDR_LEN, &dst, sizeof(dst))) {
		count(KD_RELAY_PARSE_ERROR);
		return SK_PASS;
	}
	m = dest_meta(&dst, &queued, &dst_cookie);
	if (!m) {
		count(KD_RELAY_PASSED_UNKNOWN_DEST);
		return SK_PASS;
	}
	if (queued > queue_bound()) {
		/* DERP drops for slow readers; the backlog must not grow */
		__sync_fetch_and_add(&m->dropped_frames, 1);
		count(KD_RELAY_DROPPED_OVER_BOUND);
		return SK_DROP;
	}
	/* Rewrite, then redirect: a failed rewrite leaves the frame as it was
	 * (6.1 refuses offsets above 0xffff, which coalesced receive queues
	 * reach under tiny writes; 6.3+ takes any offset), so userspace gets
	 * it intact. */
	orig.h = ph.h;
	__builtin_memcpy(orig.key, &dst, DERP_KEY_LEN);
	kd_relay_recv_prefix(&ph, &ph.h, self->key);
	if (bpf_skb_store_bytes(skb, off, &ph, sizeof(ph), 0)) {
		count(KD_RELAY_PASSED_REWRITE_FAILED);
		return SK_PASS;
	}
	if (bpf_sk_redirect_hash(skb, &relay_socks, &dst, 0) != SK_PASS) {
		/* dst left since dest_meta(): hand userspace its SendPacket back */
		if (bpf_skb_store_bytes(skb, off, &orig, sizeof(orig), 0)) {
			count(KD_RELAY_DROPPED_REWRITE_ERROR);
			return SK_DROP;
		}
		count(KD_RELAY_PASSED_UNKNOWN_DEST);
		return SK_PASS;
	}
	account(m, DERP_FRAME_HDR_LEN + len);
	note_pair(self->key, &dst, dst_cookie);
	count(KD_RELAY_REDIRECTED);
	return SK_PASS;
}
