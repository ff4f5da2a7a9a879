// SPDX-License-Identifier: MIT
/* RFC 6455 server side: handshake, client frame decoding, server frames. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "websocket.h"

static void test_accept_key_rfc(void **state)
{
	char acc[KD_WS_ACCEPT_LEN + 1];
	(void)state;

	/* RFC 6455 §1.3 */
	assert_int_equal(kd_ws_accept_key(acc, "dGhlIHNhbXBsZSBub25jZQ==", 24), 0);
	assert_string_equal(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	/* RFC 6455 §4.2.2 is byte-for-byte on the key: a different key differs */
	assert_int_equal(kd_ws_accept_key(acc, "x3JJHMbDL1EzLkh9GBhXDw==", 24), 0);
	assert_string_equal(acc, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
}

static void check(const char *raw, struct kd_ws_handshake *hs)
{
	static struct kd_http_request req;

	assert_int_equal(kd_http_parse_request(raw, strlen(raw), &req), (int)strlen(raw));
	assert_int_equal(kd_ws_check_handshake(&req, hs), 0);
}

#define WS_BASE "GET /derp HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n" \
		"Sec-WebSocket-Version: 13\r\n"

static void test_handshake_checks(void **state)
{
	struct kd_ws_handshake hs;
	char out[512];
	size_t n;
	(void)state;

	check(WS_BASE "Sec-WebSocket-Key:  dGhlIHNhbXBsZSBub25jZQ== \r\nSec-WebSocket-Protocol: foo, DERP\r\n\r\n", &hs);
	assert_int_equal(hs.status, 101);
	assert_int_equal(hs.key_len, 24);
	assert_non_null(hs.subprotocol);
	assert_memory_equal(hs.subprotocol, "DERP", 4);
	assert_int_equal(kd_ws_handshake_response(out, sizeof(out) - 1, &n, &hs), 0);
	out[n] = '\0';
	assert_string_equal(out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
				 "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
				 "Sec-WebSocket-Protocol: DERP\r\n\r\n");
	assert_int_equal(kd_ws_handshake_response(out, 40, &n, &hs), -ENOSPC);
	assert_int_equal(n, 0);

	check(WS_BASE "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", &hs);
	assert_int_equal(hs.status, 101);
	assert_null(hs.subprotocol);

	check(WS_BASE "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\n\r\n", &hs);
	assert_int_equal(hs.status, 400);
	assert_string_equal(hs.error, "WebSocket protocol violation: invalid Sec-WebSocket-Key\n");
	assert_int_equal(kd_ws_handshake_response(out, sizeof(out), &n, &hs), -EINVAL);
	check(WS_BASE "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub2!jZQ==\r\n\r\n", &hs);
	assert_int_equal(hs.status, 400);
	check(WS_BASE "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
	      &hs);
	assert_int_equal(hs.status, 400);
	assert_string_equal(hs.error, "WebSocket protocol violation: multiple Sec-WebSocket-Key headers\n");
	check(WS_BASE "\r\n", &hs);
	assert_int_equal(hs.status, 400);
	assert_string_equal(hs.error, "WebSocket protocol violation: missing Sec-WebSocket-Key\n");

	check("GET /derp HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
	      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", &hs);
	assert_int_equal(hs.status, 400);
	assert_string_equal(hs.extra, "Sec-WebSocket-Version: 13\r\n");
	check("POST /derp HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
	      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", &hs);
	assert_int_equal(hs.status, 405);
	check("GET /derp HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
	      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", &hs);
	assert_int_equal(hs.status, 426);
	check("GET /derp HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
	      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", &hs);
	assert_int_equal(hs.status, 426);
}

/* A masked client frame: header + mask + masked payload into out. */
static size_t client_frame(uint8_t *out, uint8_t b0, const uint8_t *payload, size_t len, const uint8_t mask[4])
{
	size_t n = 0;

	out[n++] = b0;
	if (len < 126) {
		out[n++] = (uint8_t)(0x80 | len);
	} else if (len <= 0xffff) {
		out[n++] = 0x80 | 126;
		out[n++] = (uint8_t)(len >> 8);
		out[n++] = (uint8_t)len;
	} else {
		out[n++] = 0x80 | 127;
		for (int i = 0; i < 8; i++)
			out[n++] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
	}
	memcpy(out + n, mask, 4);
	n += 4;
	for (size_t i = 0; i < len; i++)
		out[n + i] = payload[i] ^ mask[i & 3];
	return n + len;
}

static const uint8_t mask1[4] = {0x37, 0xfa, 0x21, 0x3d};

struct collected {
	uint8_t data[300000];
	size_t len;
	enum kd_ws_event events[64];
	size_t nevents;
	uint8_t ctrl[64][KD_WS_MAX_CONTROL_PAYLOAD];
	size_t ctrl_len[64];
};

/* Feeds buf in chunks of `chunk` bytes (0: all at once), collecting data
 * and every non-data event, until the input is used up or the stream ends. */
static void feed(struct kd_ws_decoder *d, uint8_t *buf, size_t len, size_t chunk, struct collected *c)
{
	size_t off = 0;

	while (off < len) {
		size_t end = chunk && off + chunk < len ? off + chunk : len;
		while (off < end) {
			uint8_t *pl;
			size_t pll, used;
			enum kd_ws_event ev = kd_ws_decode(d, buf + off, end - off, &used, &pl, &pll);

			off += used;
			if (ev == KD_WS_DATA) {
				assert_true(pll > 0);
				assert_true(c->len + pll <= sizeof(c->data));
				memcpy(c->data + c->len, pl, pll);
				c->len += pll;
				continue;
			}
			if (ev == KD_WS_NEED_MORE) {
				assert_int_equal(off, end);
				break;
			}
			assert_true(c->nevents < 64);
			memcpy(c->ctrl[c->nevents], pl ? pl : (uint8_t *)"", pll);
			c->ctrl_len[c->nevents] = pll;
			c->events[c->nevents++] = ev;
			if (ev == KD_WS_CLOSE || ev == KD_WS_ERROR)
				return;
		}
	}
}

static void test_decode_rfc_example(void **state)
{
	/* RFC 6455 §5.7 "A single-frame masked text message", as binary */
	uint8_t f[] = {0x82, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
	struct kd_ws_decoder d;
	uint8_t *pl;
	size_t pll, used;
	(void)state;

	kd_ws_decoder_init(&d, 0);
	assert_int_equal(d.max_message, KD_WS_MAX_MESSAGE);
	assert_int_equal(kd_ws_decode(&d, f, sizeof(f), &used, &pl, &pll), KD_WS_DATA);
	assert_int_equal(used, sizeof(f));
	assert_ptr_equal(pl, f + 6); /* in place */
	assert_int_equal(pll, 5);
	assert_memory_equal(pl, "Hello", 5);
	assert_int_equal(kd_ws_decode(&d, f, 0, &used, &pl, &pll), KD_WS_NEED_MORE);

	/* the same bytes as text: 1003 */
	uint8_t t[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
	kd_ws_decoder_init(&d, 0);
	assert_int_equal(kd_ws_decode(&d, t, sizeof(t), &used, &pl, &pll), KD_WS_ERROR);
	assert_int_equal(d.close_code, KD_WS_CLOSE_UNSUPPORTED_DATA);
	assert_int_equal(used, 2); /* refused on the first two bytes */
	/* the stream stays failed */
	assert_int_equal(kd_ws_decode(&d, f, sizeof(f), &used, &pl, &pll), KD_WS_ERROR);
	assert_int_equal(used, 0);

	/* RFC 6455 §5.7 unmasked text from a client: protocol error */
	uint8_t u[] = {0x82, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
	kd_ws_decoder_init(&d, 0);
	assert_int_equal(kd_ws_decode(&d, u, sizeof(u), &used, &pl, &pll), KD_WS_ERROR);
	assert_int_equal(d.close_code, KD_WS_CLOSE_PROTOCOL_ERROR);
	assert_string_equal(d.error, "unmasked client frame");
}

static void test_decode_fragmented_with_ping(void **state)
{
	static struct collected c;
	uint8_t buf[256];
	size_t n = 0;
	struct kd_ws_decoder d;
	(void)state;

	n += client_frame(buf + n, 0x02, (const uint8_t *)"Hel", 3, mask1);        /* binary, !FIN */
	n += client_frame(buf + n, 0x89, (const uint8_t *)"pingdata", 8, mask1);   /* ping in between */
	n += client_frame(buf + n, 0x00, (const uint8_t *)"", 0, mask1);           /* empty continuation */
	n += client_frame(buf + n, 0x8a, (const uint8_t *)"", 0, mask1);           /* pong */
	n += client_frame(buf + n, 0x80, (const uint8_t *)"lo", 2, mask1);         /* continuation, FIN */
	n += client_frame(buf + n, 0x82, (const uint8_t *)"!", 1, mask1);          /* new message */
	n += client_frame(buf + n, 0x88, (const uint8_t *)"\x03\xe8" "bye", 5, mask1); /* close 1000 */

	for (size_t chunk = 0; chunk <= 7; chunk++) {
		uint8_t copy[256];

		memcpy(copy, buf, n);
		memset(&c, 0, sizeof(c));
		kd_ws_decoder_init(&d, 0);
		feed(&d, copy, n, chunk, &c);
		assert_int_equal(c.len, 6);
		assert_memory_equal(c.data, "Hello!", 6);
		assert_int_equal(c.nevents, 3);
		assert_int_equal(c.events[0], KD_WS_PING);
		assert_int_equal(c.ctrl_len[0], 8);
		assert_memory_equal(c.ctrl[0], "pingdata", 8);
		assert_int_equal(c.events[1], KD_WS_PONG);
		assert_int_equal(c.events[2], KD_WS_CLOSE);
		assert_int_equal(d.close_code, 1000);
		assert_int_equal(c.ctrl_len[2], 3);
		assert_memory_equal(c.ctrl[2], "bye", 3);
	}
}

static void test_decode_lengths_any_split(void **state)
{
	static const size_t sizes[] = {0, 1, 125, 126, 127, 65535, 65536, 65573, 70000};
	static uint8_t stream[400000], copy[400000], want[300000];
	static struct collected c;
	struct kd_ws_decoder d;
	size_t n = 0, wl = 0;
	(void)state;

	srand(1);
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		uint8_t mask[4] = {(uint8_t)rand(), (uint8_t)rand(), (uint8_t)rand(), (uint8_t)rand()};
		for (size_t i = 0; i < sizes[k]; i++)
			want[wl + i] = (uint8_t)rand();
		n += client_frame(stream + n, 0x82, want + wl, sizes[k], mask);
		wl += sizes[k];
	}
	static const size_t chunks[] = {0, 1, 2, 3, 5, 13, 4096};
	for (size_t k = 0; k < sizeof(chunks) / sizeof(chunks[0]); k++) {
		memcpy(copy, stream, n);
		memset(&c, 0, sizeof(c));
		kd_ws_decoder_init(&d, 0);
		feed(&d, copy, n, chunks[k], &c);
		assert_int_equal(c.nevents, 0);
		assert_int_equal(c.len, wl);
		assert_memory_equal(c.data, want, wl);
	}
}

static enum kd_ws_event decode_all(struct kd_ws_decoder *d, uint8_t *buf, size_t len)
{
	static struct collected c;

	memset(&c, 0, sizeof(c));
	feed(d, buf, len, 0, &c);
	return c.nevents ? c.events[c.nevents - 1] : KD_WS_NEED_MORE;
}

static void test_decode_violations(void **state)
{
	static uint8_t big[70000], buf[140100];
	struct kd_ws_decoder d;
	size_t n;
	(void)state;

	/* one message over the limit: refused on the header, before the payload */
	kd_ws_decoder_init(&d, 0);
	n = client_frame(buf, 0x82, big, 0, mask1);
	buf[1] = 0x80 | 127;
	memcpy(buf + 2, "\x00\x00\x00\x00\x00\x02\x00\x01", 8); /* 131073 */
	memcpy(buf + 10, mask1, 4);
	assert_int_equal(decode_all(&d, buf, 14), KD_WS_ERROR);
	assert_int_equal(d.close_code, KD_WS_CLOSE_TOO_BIG);

	/* exactly the limit is fine; fragments add up to it */
	kd_ws_decoder_init(&d, 70000);
	n = client_frame(buf, 0x82, big, 70000, mask1);
	assert_int_equal(decode_all(&d, buf, n), KD_WS_NEED_MORE);
	n = client_frame(buf, 0x02, big, 35000, mask1);
	n += client_frame(buf + n, 0x80, big, 35001, mask1);
	assert_int_equal(decode_all(&d, buf, n), KD_WS_ERROR);
	assert_int_equal(d.close_code, KD_WS_CLOSE_TOO_BIG);

	/* 64-bit length with the top bit set */
	kd_ws_decoder_init(&d, 0);
	memcpy(buf, "\x82\xff\x80\x00\x00\x00\x00\x00\x00\x01\x01\x02\x03\x04", 14);
	assert_int_equal(decode_all(&d, buf, 14), KD_WS_ERROR);
	assert_int_equal(d.close_code, KD_WS_CLOSE_PROTOCOL_ERROR);

	static const struct {
		uint8_t b0;
		size_t len;
		const char *why;
	} bad[] = {
		{0x80, 1, "continuation frame without a message"},
		{0xc2, 1, "reserved bits set (no extension negotiated)"},
		{0x83, 1, "unknown opcode"},
		{0x8b, 1, "unknown opcode"},
		{0x09, 1, "fragmented or oversized control frame"},
		{0x89, 126, "fragmented or oversized control frame"},
	};
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		kd_ws_decoder_init(&d, 0);
		n = client_frame(buf, bad[k].b0, big, bad[k].len, mask1);
		assert_int_equal(decode_all(&d, buf, n), KD_WS_ERROR);
		assert_int_equal(d.close_code, KD_WS_CLOSE_PROTOCOL_ERROR);
		assert_string_equal(d.error, bad[k].why);
	}

	/* a new message inside a fragmented one */
	kd_ws_decoder_init(&d, 0);
	n = client_frame(buf, 0x02, big, 3, mask1);
	n += client_frame(buf + n, 0x82, big, 3, mask1);
	assert_int_equal(decode_all(&d, buf, n), KD_WS_ERROR);
	assert_int_equal(d.close_code, KD_WS_CLOSE_PROTOCOL_ERROR);
	/* text after a fragment start is also 1002, not 1003 */
	kd_ws_decoder_init(&d, 0);
	n = client_frame(buf, 0x02, big, 3, mask1);
	n += client_frame(buf + n, 0x81, big, 3, mask1);
	assert_int_equal(decode_all(&d, buf, n), KD_WS_ERROR);
	assert_int_equal(d.close_code, KD_WS_CLOSE_PROTOCOL_ERROR);
}

static void test_decode_close(void **state)
{
	struct kd_ws_decoder d;
	uint8_t buf[64], *pl;
	size_t n, used, pll;
	(void)state;

	kd_ws_decoder_init(&d, 0);
	n = client_frame(buf, 0x88, (const uint8_t *)"", 0, mask1);
	assert_int_equal(kd_ws_decode(&d, buf, n, &used, &pl, &pll), KD_WS_CLOSE);
	assert_int_equal(d.close_code, KD_WS_CLOSE_NO_STATUS);
	assert_int_equal(pll, 0);
	/* further input is not read */
	assert_int_equal(kd_ws_decode(&d, buf, n, &used, &pl, &pll), KD_WS_CLOSE);
	assert_int_equal(used, 0);

	kd_ws_decoder_init(&d, 0);
	n = client_frame(buf, 0x88, (const uint8_t *)"\x03\xe9", 2, mask1);
	assert_int_equal(kd_ws_decode(&d, buf, n, &used, &pl, &pll), KD_WS_CLOSE);
	assert_int_equal(d.close_code, KD_WS_CLOSE_GOING_AWAY);

	static const char *const bad[] = {"\x03", "\x03\xed", "\x03\xee", "\x03\xf7", "\x00\x00", "\x13\x88"};
	static const size_t bad_len[] = {1, 2, 2, 2, 2, 2}; /* 1-byte, 1005, 1006, 1015, 0, 5000 */
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		kd_ws_decoder_init(&d, 0);
		n = client_frame(buf, 0x88, (const uint8_t *)bad[k], bad_len[k], mask1);
		assert_int_equal(kd_ws_decode(&d, buf, n, &used, &pl, &pll), KD_WS_ERROR);
		assert_int_equal(d.close_code, KD_WS_CLOSE_PROTOCOL_ERROR);
	}
	kd_ws_decoder_init(&d, 0);
	n = client_frame(buf, 0x88, (const uint8_t *)"\x0f\xa0", 2, mask1); /* 4000: private use */
	assert_int_equal(kd_ws_decode(&d, buf, n, &used, &pl, &pll), KD_WS_CLOSE);
	assert_int_equal(d.close_code, 4000);
}

static void test_encoders(void **state)
{
	uint8_t h[KD_WS_MAX_SERVER_HEADER], f[KD_WS_MAX_CONTROL_FRAME], big[200];
	char reason[200];
	(void)state;

	assert_int_equal(kd_ws_encode_header(h, 0), 2);
	assert_memory_equal(h, "\x82\x00", 2);
	assert_int_equal(kd_ws_encode_header(h, 125), 2);
	assert_memory_equal(h, "\x82\x7d", 2);
	assert_int_equal(kd_ws_encode_header(h, 126), 4);
	assert_memory_equal(h, "\x82\x7e\x00\x7e", 4);
	assert_int_equal(kd_ws_encode_header(h, 65535), 4);
	assert_memory_equal(h, "\x82\x7e\xff\xff", 4);
	assert_int_equal(kd_ws_encode_header(h, 65536), 10);
	assert_memory_equal(h, "\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10);
	assert_int_equal(kd_ws_encode_frame_header(h, KD_WS_OP_BINARY, false, 5), 2);
	assert_memory_equal(h, "\x02\x05", 2);

	assert_int_equal(kd_ws_encode_pong(f, (const uint8_t *)"abc", 3), 5);
	assert_memory_equal(f, "\x8a\x03" "abc", 5);
	memset(big, 'x', sizeof(big));
	assert_int_equal(kd_ws_encode_pong(f, big, sizeof(big)), 127);
	assert_int_equal(f[1], 125);

	assert_int_equal(kd_ws_encode_close(f, KD_WS_CLOSE_NORMAL, NULL), 4);
	assert_memory_equal(f, "\x88\x02\x03\xe8", 4);
	assert_int_equal(kd_ws_encode_close(f, KD_WS_CLOSE_TOO_BIG, "big"), 7);
	assert_memory_equal(f, "\x88\x05\x03\xf1" "big", 7);
	assert_int_equal(kd_ws_encode_close(f, KD_WS_CLOSE_NO_STATUS, "ignored"), 2);
	assert_memory_equal(f, "\x88\x00", 2);
	memset(reason, 'r', sizeof(reason) - 1);
	reason[sizeof(reason) - 1] = '\0';
	assert_int_equal(kd_ws_encode_close(f, KD_WS_CLOSE_NORMAL, reason), 127);
	assert_int_equal(f[1], 125);
}

/* A server frame decodes as what was encoded, once masked as a client would. */
static void test_encode_decode_roundtrip(void **state)
{
	static uint8_t payload[70000], frame[70100];
	uint8_t h[KD_WS_MAX_SERVER_HEADER];
	static const size_t sizes[] = {3, 200, 70000};
	(void)state;

	for (size_t k = 0; k < 3; k++) {
		static struct collected c;
		struct kd_ws_decoder d;
		size_t hl = kd_ws_encode_header(h, sizes[k]), n;

		for (size_t i = 0; i < sizes[k]; i++)
			payload[i] = (uint8_t)(i * 7);
		n = client_frame(frame, h[0], payload, sizes[k], mask1);
		assert_int_equal(n, hl + 4 + sizes[k]);
		assert_memory_equal(frame + 2, h + 2, hl - 2); /* same extended length bytes */
		memset(&c, 0, sizeof(c));
		kd_ws_decoder_init(&d, 0);
		feed(&d, frame, n, 0, &c);
		assert_int_equal(c.len, sizes[k]);
		assert_memory_equal(c.data, payload, sizes[k]);
	}
}

static void test_unwrap(void **state)
{
	uint8_t buf[512], reply[2 * KD_WS_MAX_CONTROL_FRAME];
	size_t n = 0, used, dl, rl = 0;
	struct kd_ws_decoder d;
	(void)state;

	n += client_frame(buf + n, 0x02, (const uint8_t *)"\x04\x00", 2, mask1);
	n += client_frame(buf + n, 0x89, (const uint8_t *)"p1", 2, mask1);
	n += client_frame(buf + n, 0x80, (const uint8_t *)"\x00\x00\x22", 3, mask1);
	n += client_frame(buf + n, 0x89, (const uint8_t *)"p2", 2, mask1);
	n += client_frame(buf + n, 0x89, (const uint8_t *)"p3", 2, mask1);
	n += client_frame(buf + n, 0x82, (const uint8_t *)"xyz", 3, mask1);
	n += client_frame(buf + n, 0x88, (const uint8_t *)"\x03\xe9", 2, mask1);
	n += client_frame(buf + n, 0x82, (const uint8_t *)"after", 5, mask1);

	kd_ws_decoder_init(&d, 0);
	/* room for one full control frame and a bit: stops after the second ping */
	assert_int_equal(kd_ws_unwrap(&d, buf, n, &used, &dl, reply, KD_WS_MAX_CONTROL_FRAME + 4, &rl), 0);
	assert_true(used < n);
	assert_int_equal(dl, 5);
	assert_memory_equal(buf, "\x04\x00\x00\x00\x22", 5);
	assert_int_equal(rl, 8);
	assert_memory_equal(reply, "\x8a\x02p1\x8a\x02p2", 8);

	rl = 0;
	assert_int_equal(kd_ws_unwrap(&d, buf + used, n - used, &used, &dl, reply, sizeof(reply), &rl), 1);
	assert_int_equal(dl, 3);
	assert_int_equal(rl, 8);
	assert_memory_equal(reply, "\x8a\x02p3\x88\x02\x03\xe9", 8); /* pong, close echo 1001 */
	/* after the close nothing more is read or answered */
	rl = 0;
	assert_int_equal(kd_ws_unwrap(&d, buf, 7, &used, &dl, reply, sizeof(reply), &rl), 1);
	assert_int_equal(used, 7);
	assert_int_equal(dl, 0);
	assert_int_equal(rl, 0);

	/* a violation leaves the close frame to send */
	kd_ws_decoder_init(&d, 0);
	n = client_frame(buf, 0x82, (const uint8_t *)"ok", 2, mask1);
	n += client_frame(buf + n, 0x81, (const uint8_t *)"text", 4, mask1);
	rl = 0;
	assert_int_equal(kd_ws_unwrap(&d, buf, n, &used, &dl, reply, sizeof(reply), &rl), -EPROTO);
	assert_int_equal(used, n);
	assert_int_equal(dl, 2);
	assert_memory_equal(buf, "ok", 2);
	assert_int_equal(reply[0], 0x88);
	assert_int_equal(reply[2] << 8 | reply[3], KD_WS_CLOSE_UNSUPPORTED_DATA);
	assert_memory_equal(reply + 4, "text messages are not supported", reply[1] - 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accept_key_rfc),
		cmocka_unit_test(test_handshake_checks),
		cmocka_unit_test(test_decode_rfc_example),
		cmocka_unit_test(test_decode_fragmented_with_ping),
		cmocka_unit_test(test_decode_lengths_any_split),
		cmocka_unit_test(test_decode_violations),
		cmocka_unit_test(test_decode_close),
		cmocka_unit_test(test_encoders),
		cmocka_unit_test(test_encode_decode_roundtrip),
		cmocka_unit_test(test_unwrap),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
