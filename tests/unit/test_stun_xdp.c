// SPDX-License-Identifier: MIT
/* The XDP STUN responder under BPF_PROG_TEST_RUN: a table of frames, each
 * with the action, the output bytes and the counter it must move. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include "stun.h"
#include "stun_xdp.skel.h"

#define PORT 3478

struct frame_spec {
	bool v6;
	bool vlan;
	bool ip_options;
	bool fragment;
	bool bad_ip_csum;
	bool bad_udp_csum;
	bool zero_udp_csum;
	bool swapped;     /* build the response direction: MACs, IPs, ports swapped */
	uint8_t ttl;
	uint8_t proto;
	uint16_t ethertype; /* override, 0 = from family */
	uint16_t sport, dport;
	const uint8_t *payload;
	size_t payload_len;
};

static const uint8_t mac_a[6] = {2, 0, 0, 0, 0, 1}, mac_b[6] = {2, 0, 0, 0, 0, 2};

static uint32_t sum16(const uint8_t *p, size_t n, uint32_t s)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		s += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	return s;
}

static uint16_t fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* Client 192.0.2.1:41641 / [2001:db8::1]:41641 → server .2 / ::2. */
static size_t build_frame(uint8_t *buf, const struct frame_spec *f)
{
	uint8_t src4[4] = {192, 0, 2, 1}, dst4[4] = {192, 0, 2, 2};
	uint8_t src6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1}, dst6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 2};
	size_t off = 0, ip_off, ip_len, udp_off, udp_len = 8 + f->payload_len;
	uint8_t *sa, *da;
	uint32_t s;

	memcpy(buf, f->swapped ? mac_a : mac_b, 6);
	memcpy(buf + 6, f->swapped ? mac_b : mac_a, 6);
	off = 12;
	if (f->vlan) {
		put16(buf + off, 0x8100);
		put16(buf + off + 2, 7);
		off += 4;
	}
	put16(buf + off, f->ethertype ? f->ethertype : f->v6 ? 0x86dd : 0x0800);
	off += 2;
	ip_off = off;
	if (!f->v6) {
		ip_len = f->ip_options ? 24 : 20;
		memset(buf + off, 0, ip_len);
		buf[off] = (uint8_t)(0x40 | (ip_len / 4));
		put16(buf + off + 2, (uint16_t)(ip_len + udp_len));
		put16(buf + off + 4, 0x1234);
		put16(buf + off + 6, f->fragment ? 0x2000 : 0x4000);
		buf[off + 8] = f->ttl ? f->ttl : 17;
		buf[off + 9] = f->proto ? f->proto : 17;
		memcpy(buf + off + 12, f->swapped ? dst4 : src4, 4);
		memcpy(buf + off + 16, f->swapped ? src4 : dst4, 4);
		if (f->ip_options)
			memset(buf + off + 20, 1, 4); /* NOPs */
		put16(buf + off + 10, fold(sum16(buf + off, ip_len, 0)) ^ (f->bad_ip_csum ? 1 : 0));
		sa = buf + off + 12;
		da = buf + off + 16;
	} else {
		ip_len = 40;
		memset(buf + off, 0, ip_len);
		buf[off] = 0x60;
		put16(buf + off + 4, (uint16_t)udp_len);
		buf[off + 6] = f->proto ? f->proto : 17;
		buf[off + 7] = f->ttl ? f->ttl : 17;
		memcpy(buf + off + 8, f->swapped ? dst6 : src6, 16);
		memcpy(buf + off + 24, f->swapped ? src6 : dst6, 16);
		sa = buf + off + 8;
		da = buf + off + 24;
	}
	udp_off = ip_off + ip_len;
	put16(buf + udp_off, f->swapped ? f->dport : f->sport);
	put16(buf + udp_off + 2, f->swapped ? f->sport : f->dport);
	put16(buf + udp_off + 4, (uint16_t)udp_len);
	put16(buf + udp_off + 6, 0);
	memcpy(buf + udp_off + 8, f->payload, f->payload_len);
	s = sum16(sa, f->v6 ? 16 : 4, 0);
	s = sum16(da, f->v6 ? 16 : 4, s);
	s += 17 + (uint32_t)udp_len;
	uint16_t c = fold(sum16(buf + udp_off, udp_len, s));

	if (!c)
		c = 0xffff;
	if (f->zero_udp_csum)
		c = 0;
	else if (f->bad_udp_csum)
		c ^= 0x0101;
	put16(buf + udp_off + 6, c);
	return udp_off + udp_len;
}

static struct stun_xdp_bpf *skel;
static const uint8_t txid[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

static void set_config(uint16_t port, bool enabled, bool drop)
{
	struct stun_xdp_config c = {.dst_port = port, .enabled = enabled, .drop_stun = drop};
	__u32 k = 0;

	assert_int_equal(bpf_map__update_elem(skel->maps.stun_config, &k, sizeof(k), &c, sizeof(c), 0), 0);
}

static int setup(void **state)
{
	skel = stun_xdp_bpf__open_and_load();
	if (!skel)
		return 0; /* each test skips loudly */
	set_config(PORT, true, false);
	return 0;
}

static int teardown(void **state)
{
	stun_xdp_bpf__destroy(skel);
	skel = NULL;
	return 0;
}

#define NEED_BPF()                                                             \
	do {                                                                   \
		if (!skel) {                                                   \
			printf("# SKIP cannot load the XDP program (BPF unavailable: %s)\n", \
			       strerror(errno));                               \
			skip();                                                \
		}                                                              \
	} while (0)

static struct stun_xdp_counter_val counter(enum stun_xdp_af af, enum stun_xdp_action act,
					   enum stun_xdp_reason r)
{
	struct stun_xdp_counter_key k = {.af = af, .action = act, .reason = r};
	int ncpu = libbpf_num_possible_cpus();
	struct stun_xdp_counter_val vals[ncpu > 0 ? ncpu : 1], sum = {0};

	assert_true(ncpu > 0);
	if (bpf_map__lookup_elem(skel->maps.stun_counters, &k, sizeof(k), vals,
				 sizeof(vals[0]) * (size_t)ncpu, 0))
		return sum;
	for (int i = 0; i < ncpu; i++) {
		sum.packets += vals[i].packets;
		sum.bytes += vals[i].bytes;
	}
	return sum;
}

static int run(const uint8_t *in, size_t len, uint8_t *out, uint32_t *out_len)
{
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = in, .data_size_in = (uint32_t)len,
		    .data_out = out, .data_size_out = *out_len, .repeat = 1);

	assert_int_equal(bpf_prog_test_run_opts(bpf_program__fd(skel->progs.kd_stun_xdp), &o), 0);
	*out_len = o.data_size_out;
	return (int)o.retval;
}

/* Runs one frame; checks action, counter delta and (for non-TX) that the
 * frame left untouched. */
static void expect(const char *what, const uint8_t *in, size_t len, int want_act,
		   enum stun_xdp_af af, enum stun_xdp_reason reason)
{
	uint8_t out[512];
	uint32_t out_len = sizeof(out);
	struct stun_xdp_counter_val before = counter(af, (enum stun_xdp_action)want_act, reason), after;
	int act = run(in, len, out, &out_len);

	after = counter(af, (enum stun_xdp_action)want_act, reason);
	if (act != want_act || after.packets != before.packets + 1 || after.bytes != before.bytes + len)
		fail_msg("%s: action %d (want %d), counter af=%d reason=%d moved %llu pkts %llu bytes",
			 what, act, want_act, af, reason,
			 (unsigned long long)(after.packets - before.packets),
			 (unsigned long long)(after.bytes - before.bytes));
	if (act != XDP_TX && (out_len != len || memcmp(out, in, len)))
		fail_msg("%s: frame modified on a non-TX path", what);
}

static size_t request(uint8_t *p)
{
	return kd_stun_build_request(p, 64, txid);
}

static void check_answer(bool v6, bool zero_csum)
{
	uint8_t req[64], resp[64], in[256], want[256], out[512];
	struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_port = htons(41641)};
	struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_port = htons(41641)};
	struct frame_spec f = {.v6 = v6, .sport = 41641, .dport = PORT, .zero_udp_csum = zero_csum};
	uint32_t out_len = sizeof(out);
	size_t rlen, in_len, want_len;
	enum stun_xdp_af af = v6 ? STUN_XDP_AF_IPV6 : STUN_XDP_AF_IPV4;

	inet_pton(AF_INET, "192.0.2.1", &s4.sin_addr);
	inet_pton(AF_INET6, "2001:db8::1", &s6.sin6_addr);
	f.payload = req;
	f.payload_len = request(req);
	in_len = build_frame(in, &f);
	rlen = kd_stun_build_response(resp, sizeof(resp), txid,
				      v6 ? (struct sockaddr *)&s6 : (struct sockaddr *)&s4);
	f = (struct frame_spec){.v6 = v6, .sport = 41641, .dport = PORT, .swapped = true,
				.ttl = 64, .payload = resp, .payload_len = rlen};
	want_len = build_frame(want, &f);

	struct stun_xdp_counter_val before = counter(af, STUN_XDP_ACT_TX, STUN_XDP_R_ANSWERED), after;

	assert_int_equal(run(in, in_len, out, &out_len), XDP_TX);
	assert_int_equal(out_len, want_len);
	assert_memory_equal(out, want, want_len);
	after = counter(af, STUN_XDP_ACT_TX, STUN_XDP_R_ANSWERED);
	assert_int_equal(after.packets - before.packets, 1);
	assert_int_equal(after.bytes - before.bytes, in_len);
}

static void test_answers_ipv4(void **state)
{
	NEED_BPF();
	check_answer(false, false);
	/* IPv4 may omit the UDP checksum; the answer carries one anyway */
	check_answer(false, true);
}

static void test_answers_ipv6(void **state)
{
	NEED_BPF();
	check_answer(true, false);
}

static void test_reject_table(void **state)
{
	uint8_t req[64], in[256];
	struct frame_spec base = {.sport = 41641, .dport = PORT, .payload = req};
	const enum stun_xdp_af V4 = STUN_XDP_AF_IPV4, V6 = STUN_XDP_AF_IPV6;

	NEED_BPF();
	base.payload_len = request(req);

	struct {
		const char *what;
		struct frame_spec f;
		int stun_byte;        /* STUN byte to flip (xor 0x01), -1 none */
		int cut;              /* frame length, 0 = whole */
		int extra;            /* trailing junk bytes beyond the IP length */
		int act;
		enum stun_xdp_af af;
		enum stun_xdp_reason r;
	} cases[] = {
		{"wrong port", {.dport = 3479}, -1, 0, 0, XDP_PASS, V4, STUN_XDP_R_NOT_STUN_PORT},
		{"bad cookie", {0}, 4, 0, 0, XDP_PASS, V4, STUN_XDP_R_BAD_COOKIE},
		{"bad cookie v6", {.v6 = true}, 7, 0, 0, XDP_PASS, V6, STUN_XDP_R_BAD_COOKIE},
		{"bad fingerprint", {0}, 39, 0, 0, XDP_PASS, V4, STUN_XDP_R_INVALID_FINGERPRINT},
		{"bad fingerprint v6", {.v6 = true}, 36, 0, 0, XDP_PASS, V6, STUN_XDP_R_INVALID_FINGERPRINT},
		{"txid changed, crc stale", {0}, 9, 0, 0, XDP_PASS, V4, STUN_XDP_R_INVALID_FINGERPRINT},
		{"software value", {0}, 24, 0, 0, XDP_PASS, V4, STUN_XDP_R_INVALID_SW_ATTR_VAL},
		{"first attr not software", {0}, 21, 0, 0, XDP_PASS, V4, STUN_XDP_R_UNEXPECTED_FIRST_STUN_ATTR},
		{"last attr not fingerprint", {0}, 33, 0, 0, XDP_PASS, V4, STUN_XDP_R_UNEXPECTED_LAST_STUN_ATTR},
		{"binding indication", {0}, 1, 0, 0, XDP_PASS, V4, STUN_XDP_R_NOT_BINDING_REQUEST},
		{"stun length field", {0}, 3, 0, 0, XDP_PASS, V4, STUN_XDP_R_STUN_LEN_MISMATCH},
		{"truncated eth", {0}, -1, 14 + 10, 0, XDP_PASS, V4, STUN_XDP_R_TRUNCATED},
		{"truncated v6", {.v6 = true}, -1, 14 + 30, 0, XDP_PASS, V6, STUN_XDP_R_TRUNCATED},
		{"truncated stun", {0}, -1, 14 + 20 + 8 + 30, 0, XDP_PASS, V4, STUN_XDP_R_IP_LEN_MISMATCH},
		{"trailing bytes", {0}, -1, 0, 4, XDP_PASS, V4, STUN_XDP_R_IP_LEN_MISMATCH},
		{"ip options", {.ip_options = true}, -1, 0, 0, XDP_PASS, V4, STUN_XDP_R_IP_OPTIONS},
		{"vlan", {.vlan = true}, -1, 0, 0, XDP_PASS, STUN_XDP_AF_UNKNOWN, STUN_XDP_R_VLAN},
		{"fragment", {.fragment = true}, -1, 0, 0, XDP_PASS, V4, STUN_XDP_R_IP_FRAGMENT},
		{"bad ip csum", {.bad_ip_csum = true}, -1, 0, 0, XDP_PASS, V4, STUN_XDP_R_INVALID_IP_CSUM},
		{"bad udp csum", {.bad_udp_csum = true}, -1, 0, 0, XDP_PASS, V4, STUN_XDP_R_INVALID_UDP_CSUM},
		{"bad udp csum v6", {.v6 = true, .bad_udp_csum = true}, -1, 0, 0, XDP_PASS, V6,
		 STUN_XDP_R_INVALID_UDP_CSUM},
		{"zero udp csum v6", {.v6 = true, .zero_udp_csum = true}, -1, 0, 0, XDP_PASS, V6,
		 STUN_XDP_R_INVALID_UDP_CSUM},
		{"tcp", {.proto = 6}, -1, 0, 0, XDP_PASS, V4, STUN_XDP_R_NOT_UDP},
		{"v6 ext header", {.v6 = true, .proto = 0}, -1, 0, 0, XDP_PASS, V6, STUN_XDP_R_NOT_UDP},
		{"arp", {.ethertype = 0x0806}, -1, 0, 0, XDP_PASS, STUN_XDP_AF_UNKNOWN, STUN_XDP_R_NOT_IP},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct frame_spec f = cases[i].f;
		uint8_t pl[64];

		f.sport = base.sport;
		if (!f.dport)
			f.dport = base.dport;
		memcpy(pl, req, base.payload_len);
		if (cases[i].stun_byte >= 0)
			pl[cases[i].stun_byte] ^= 0x01;
		f.payload = pl;
		f.payload_len = base.payload_len;
		size_t len = build_frame(in, &f);

		if (!strcmp(cases[i].what, "v6 ext header"))
			in[14 + 6] = 0; /* next header: hop-by-hop options */
		if (cases[i].cut)
			len = (size_t)cases[i].cut;
		if (cases[i].extra) {
			memset(in + len, 0, (size_t)cases[i].extra);
			len += (size_t)cases[i].extra;
		}
		expect(cases[i].what, in, len, cases[i].act, cases[i].af, cases[i].r);
	}
}

static void test_non_tailscale_stun_passes(void **state)
{
	/* a valid request with one more attribute in front: userspace accepts
	 * it, XDP leaves it to userspace */
	uint8_t pl[64], in[256];
	struct frame_spec f = {.sport = 41641, .dport = PORT, .payload = pl};

	NEED_BPF();
	memset(pl, 0, sizeof(pl));
	pl[1] = 0x01;
	pl[3] = 28;
	pl[4] = 0x21; pl[5] = 0x12; pl[6] = 0xa4; pl[7] = 0x42;
	memcpy(pl + 8, txid, 12);
	pl[20] = 0x00; pl[21] = 0x24; pl[22] = 0; pl[23] = 4; /* PRIORITY */
	pl[28] = 0x80; pl[29] = 0x22; pl[31] = 8;
	memcpy(pl + 32, "tailnode", 8);
	uint32_t crc = kd_stun_crc32(pl, 40) ^ STUN_FINGERPRINT_XOR;

	pl[40] = 0x80; pl[41] = 0x28; pl[43] = 4;
	pl[44] = (uint8_t)(crc >> 24); pl[45] = (uint8_t)(crc >> 16);
	pl[46] = (uint8_t)(crc >> 8); pl[47] = (uint8_t)crc;
	f.payload_len = 48;
	uint8_t id[12];

	assert_int_equal(kd_stun_parse_request(pl, 48, id), KD_STUN_OK);
	size_t len = build_frame(in, &f);

	expect("extra attribute", in, len, XDP_PASS, STUN_XDP_AF_IPV4, STUN_XDP_R_UNEXPECTED_STUN_LAYOUT);
}

static void test_switches(void **state)
{
	uint8_t req[64], in[256];
	struct frame_spec f = {.sport = 41641, .dport = PORT, .payload = req};
	size_t len;

	NEED_BPF();
	f.payload_len = request(req);
	len = build_frame(in, &f);

	set_config(PORT, true, true);
	expect("drop stun", in, len, XDP_DROP, STUN_XDP_AF_IPV4, STUN_XDP_R_DROP_STUN);
	f.dport = 53;
	size_t len2 = build_frame(in + 128, &f);

	expect("drop stun, other port", in + 128, len2, XDP_PASS, STUN_XDP_AF_IPV4,
	       STUN_XDP_R_NOT_STUN_PORT);
	set_config(PORT, false, false);
	expect("disabled", in, len, XDP_PASS, STUN_XDP_AF_IPV4, STUN_XDP_R_DISABLED);
	set_config(PORT, true, false);
	expect("back on", in, len, XDP_TX, STUN_XDP_AF_IPV4, STUN_XDP_R_ANSWERED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_answers_ipv4),
		cmocka_unit_test(test_answers_ipv6),
		cmocka_unit_test(test_reject_table),
		cmocka_unit_test(test_non_tailscale_stun_passes),
		cmocka_unit_test(test_switches),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
