// SPDX-License-Identifier: MIT
/* STUN codec: spec Appendix A byte for byte, and the rejection table. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "key.h"
#include "stun.h"

static const uint8_t txid[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

static size_t unhex(uint8_t *out, size_t cap, const char *hex)
{
	size_t n = strlen(hex) / 2;

	assert_true(n <= cap);
	assert_int_equal(kd_hex_decode(out, n, hex, strlen(hex)), 0);
	return n;
}

#define REQ_HEX "000100142112a4420102030405060708090a0b0c802200087461696c6e6f646580280004b32c370f"

static void test_request_vector(void **state)
{
	uint8_t want[64], got[64];
	size_t n = unhex(want, sizeof(want), REQ_HEX);

	assert_int_equal(n, STUN_REQUEST_LEN);
	assert_int_equal(kd_stun_build_request(got, sizeof(got), txid), STUN_REQUEST_LEN);
	assert_memory_equal(got, want, n);
	assert_int_equal(kd_stun_build_request(got, STUN_REQUEST_LEN - 1, txid), 0);
}

static void test_parse_request_vector(void **state)
{
	uint8_t pkt[64], id[12] = {0};
	size_t n = unhex(pkt, sizeof(pkt), REQ_HEX);

	assert_int_equal(kd_stun_parse_request(pkt, n, id), KD_STUN_OK);
	assert_memory_equal(id, txid, 12);
}

static void sa4(struct sockaddr_in *s, const char *ip, uint16_t port)
{
	memset(s, 0, sizeof(*s));
	s->sin_family = AF_INET;
	s->sin_port = htons(port);
	assert_int_equal(inet_pton(AF_INET, ip, &s->sin_addr), 1);
}

static void sa6(struct sockaddr_in6 *s, const char *ip, uint16_t port)
{
	memset(s, 0, sizeof(*s));
	s->sin6_family = AF_INET6;
	s->sin6_port = htons(port);
	assert_int_equal(inet_pton(AF_INET6, ip, &s->sin6_addr), 1);
}

#define RESP_V4_HEX "0101000c2112a4420102030405060708090a0b0c00200008000183bbe112a643"
#define RESP_V6_HEX "010100182112a4420102030405060708090a0b0c00200014000283bb0113a9fa0102030405060708090a0b0d"
#define RESP_MAPPED_HEX "010100182112a4420102030405060708090a0b0c00200014000283bb2112a442010203040506f8f7c90a090d"

static void check_response(const struct sockaddr *src, const char *hex)
{
	uint8_t want[64], got[64];
	size_t n = unhex(want, sizeof(want), hex);

	assert_int_equal(kd_stun_build_response(got, sizeof(got), txid, src), n);
	assert_memory_equal(got, want, n);
	assert_int_equal(kd_stun_build_response(got, n - 1, txid, src), 0);
}

static void test_response_vectors(void **state)
{
	struct sockaddr_in s4;
	struct sockaddr_in6 s6, m6;

	sa4(&s4, "192.0.2.1", 41641);
	check_response((struct sockaddr *)&s4, RESP_V4_HEX);
	sa6(&s6, "2001:db8::1", 41641);
	check_response((struct sockaddr *)&s6, RESP_V6_HEX);
	/* our deviation: an IPv4-mapped source on a dual-stack socket is
	 * answered exactly like the plain IPv4 source */
	sa6(&m6, "::ffff:192.0.2.1", 41641);
	check_response((struct sockaddr *)&m6, RESP_V4_HEX);
}

static void parse_to_str(const char *hex, char *out, size_t cap, uint16_t *port)
{
	uint8_t pkt[64];
	struct sockaddr_storage ss;
	size_t n = unhex(pkt, sizeof(pkt), hex);

	assert_int_equal(kd_stun_parse_response(pkt, n, txid, &ss), 0);
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *s = (struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &s->sin_addr, out, (socklen_t)cap);
		*port = ntohs(s->sin_port);
	} else {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;

		assert_int_equal(ss.ss_family, AF_INET6);
		inet_ntop(AF_INET6, &s->sin6_addr, out, (socklen_t)cap);
		*port = ntohs(s->sin6_port);
	}
}

static void test_parse_response_vectors(void **state)
{
	char ip[64];
	uint16_t port = 0;

	parse_to_str(RESP_V4_HEX, ip, sizeof(ip), &port);
	assert_string_equal(ip, "192.0.2.1");
	assert_int_equal(port, 41641);
	parse_to_str(RESP_V6_HEX, ip, sizeof(ip), &port);
	assert_string_equal(ip, "2001:db8::1");
	assert_int_equal(port, 41641);
	/* the reference's quirk form must still parse for our clients */
	parse_to_str(RESP_MAPPED_HEX, ip, sizeof(ip), &port);
	assert_string_equal(ip, "::ffff:192.0.2.1");
	assert_int_equal(port, 41641);
}

static void test_parse_response_rejects(void **state)
{
	uint8_t pkt[80], other[12];
	struct sockaddr_storage ss;
	size_t n = unhex(pkt, sizeof(pkt), RESP_V4_HEX);

	memcpy(other, txid, 12);
	other[11] ^= 1;
	assert_int_equal(kd_stun_parse_response(pkt, n, other, &ss), -ESRCH);
	assert_int_equal(kd_stun_parse_response(pkt, 19, txid, &ss), -EBADMSG);
	/* header length beyond the datagram */
	assert_int_equal(kd_stun_parse_response(pkt, n - 1, txid, &ss), -EBADMSG);
	/* trailing bytes beyond the header length are ignored */
	pkt[n] = 0xaa;
	assert_int_equal(kd_stun_parse_response(pkt, n + 1, txid, &ss), 0);
	/* not a success response */
	pkt[1] = 0x11;
	assert_int_equal(kd_stun_parse_response(pkt, n, txid, &ss), -EBADMSG);
	pkt[1] = 0x01;
	/* unknown family */
	pkt[25] = 7;
	assert_int_equal(kd_stun_parse_response(pkt, n, txid, &ss), -EBADMSG);
	/* no address attribute: rename it to SOFTWARE */
	pkt[25] = 1;
	pkt[20] = 0x80;
	pkt[21] = 0x22;
	assert_int_equal(kd_stun_parse_response(pkt, n, txid, &ss), -ENOENT);
}

static void test_parse_response_fallbacks(void **state)
{
	/* MAPPED-ADDRESS only: plain (not XORed) 192.0.2.1:41641 */
	const char *ma = "0101000c2112a4420102030405060708090a0b0c00010008" "0001a2a9c0000201";
	/* MAPPED first, then the non-standard 0x8020 XOR form: XOR wins */
	const char *both = "010100182112a4420102030405060708090a0b0c00010008" "0001000102030405"
			   "80200008000183bbe112a643";
	char ip[64];
	uint16_t port = 0;

	parse_to_str(ma, ip, sizeof(ip), &port);
	assert_string_equal(ip, "192.0.2.1");
	assert_int_equal(port, 41641);
	parse_to_str(both, ip, sizeof(ip), &port);
	assert_string_equal(ip, "192.0.2.1");
	assert_int_equal(port, 41641);
}

/* A request with extra attributes in front still passes if SOFTWARE is
 * somewhere and FINGERPRINT last and correct: the reference's rule. */
static size_t build_custom(uint8_t *p, bool with_sw, const char *sw, bool with_fp, bool good_fp,
			   bool extra_first)
{
	size_t off = 20;

	memset(p, 0, 20);
	p[1] = 0x01;
	p[4] = 0x21; p[5] = 0x12; p[6] = 0xa4; p[7] = 0x42;
	memcpy(p + 8, txid, 12);
	if (extra_first) {
		/* PRIORITY-like 0x0024 with a 3-byte value: exercises padding */
		p[off++] = 0x00; p[off++] = 0x24; p[off++] = 0x00; p[off++] = 0x03;
		p[off++] = 1; p[off++] = 2; p[off++] = 3; p[off++] = 0;
	}
	if (with_sw) {
		size_t l = strlen(sw);

		p[off++] = 0x80; p[off++] = 0x22; p[off++] = 0; p[off++] = (uint8_t)l;
		memcpy(p + off, sw, l);
		off += (l + 3) & ~(size_t)3;
	}
	/* the CRC covers the header, so its length field must be final */
	p[3] = (uint8_t)(off - 20 + (with_fp ? 8 : 0));
	if (with_fp) {
		uint32_t crc = kd_stun_crc32(p, off) ^ STUN_FINGERPRINT_XOR;

		if (!good_fp)
			crc ^= 0x10000;
		p[off++] = 0x80; p[off++] = 0x28; p[off++] = 0; p[off++] = 4;
		p[off++] = (uint8_t)(crc >> 24); p[off++] = (uint8_t)(crc >> 16);
		p[off++] = (uint8_t)(crc >> 8); p[off++] = (uint8_t)crc;
	}
	return off;
}

static void test_reject_table(void **state)
{
	uint8_t base[64], p[128], id[12];
	size_t n = unhex(base, sizeof(base), REQ_HEX);
	struct {
		const char *what;
		size_t off;    /* byte to change, or SIZE_MAX */
		uint8_t val;
		size_t len;    /* datagram length to parse */
		int want;
	} cases[] = {
		{"empty", SIZE_MAX, 0, 0, KD_STUN_TOO_SHORT},
		{"19 bytes", SIZE_MAX, 0, 19, KD_STUN_TOO_SHORT},
		{"top bits set", 0, 0x40, 40, KD_STUN_NOT_STUN},
		{"bad cookie", 7, 0x43, 40, KD_STUN_BAD_COOKIE},
		{"binding indication", 1, 0x11, 40, KD_STUN_NOT_BINDING},
		{"binding response", 0, 0x01, 40, KD_STUN_NOT_BINDING},
		{"cut inside fingerprint", SIZE_MAX, 0, 39, KD_STUN_TRUNCATED_ATTR},
		{"cut inside attr header", SIZE_MAX, 0, 22, KD_STUN_TRUNCATED_ATTR},
		{"software value", 24, 'T', 40, KD_STUN_BAD_SOFTWARE},
		{"software renamed", 21, 0x23, 40, KD_STUN_NO_SOFTWARE},
		{"fingerprint value", 39, 0x0e, 40, KD_STUN_BAD_FINGERPRINT},
		{"fingerprint renamed", 33, 0x29, 40, KD_STUN_NO_FINGERPRINT},
		{"fingerprint len 8", 35, 0x08, 40, KD_STUN_TRUNCATED_ATTR},
		{"txid changed, crc stale", 10, 0xff, 40, KD_STUN_BAD_FINGERPRINT},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memcpy(p, base, n);
		if (cases[i].off != SIZE_MAX)
			p[cases[i].off] = cases[i].val;
		int got = kd_stun_parse_request(p, cases[i].len, id);

		if (got != cases[i].want)
			fail_msg("%s: got %s want %s", cases[i].what, kd_stun_verdict_name(got),
				 kd_stun_verdict_name(cases[i].want));
	}

	/* trailing junk after FINGERPRINT: the walk goes to the datagram end */
	memcpy(p, base, n);
	memset(p + n, 0, 4);
	assert_int_equal(kd_stun_parse_request(p, n + 4, id), KD_STUN_NO_FINGERPRINT);

	n = build_custom(p, true, "tailnode", true, true, true);
	assert_int_equal(kd_stun_parse_request(p, n, id), KD_STUN_OK);
	n = build_custom(p, false, "", true, true, true);
	assert_int_equal(kd_stun_parse_request(p, n, id), KD_STUN_NO_SOFTWARE);
	n = build_custom(p, true, "tailnodes", true, true, false);
	assert_int_equal(kd_stun_parse_request(p, n, id), KD_STUN_BAD_SOFTWARE);
	n = build_custom(p, true, "tailnode", false, false, false);
	assert_int_equal(kd_stun_parse_request(p, n, id), KD_STUN_NO_FINGERPRINT);
	n = build_custom(p, true, "tailnode", true, false, true);
	assert_int_equal(kd_stun_parse_request(p, n, id), KD_STUN_BAD_FINGERPRINT);
}

static void test_roundtrip_random(void **state)
{
	/* build_request → parse_request → build_response → parse_response for
	 * varied txids and ports, both families */
	for (unsigned i = 0; i < 64; i++) {
		uint8_t id[12], got[12], req[64], resp[64];
		struct sockaddr_in6 s6;
		struct sockaddr_storage mapped;

		for (int j = 0; j < 12; j++)
			id[j] = (uint8_t)(i * 37 + j * 11);
		assert_int_equal(kd_stun_build_request(req, sizeof(req), id), 40);
		assert_int_equal(kd_stun_parse_request(req, 40, got), KD_STUN_OK);
		assert_memory_equal(got, id, 12);
		sa6(&s6, "2001:db8::1", (uint16_t)(i * 1021));
		s6.sin6_addr.s6_addr[7] = (uint8_t)i;
		size_t n = kd_stun_build_response(resp, sizeof(resp), got, (struct sockaddr *)&s6);

		assert_int_equal(n, STUN_RESPONSE_V6_LEN);
		assert_int_equal(kd_stun_parse_response(resp, n, id, &mapped), 0);
		assert_int_equal(mapped.ss_family, AF_INET6);
		assert_memory_equal(&((struct sockaddr_in6 *)&mapped)->sin6_addr, &s6.sin6_addr, 16);
		assert_int_equal(((struct sockaddr_in6 *)&mapped)->sin6_port, s6.sin6_port);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_vector),
		cmocka_unit_test(test_parse_request_vector),
		cmocka_unit_test(test_response_vectors),
		cmocka_unit_test(test_parse_response_vectors),
		cmocka_unit_test(test_parse_response_rejects),
		cmocka_unit_test(test_parse_response_fallbacks),
		cmocka_unit_test(test_reject_table),
		cmocka_unit_test(test_roundtrip_random),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
