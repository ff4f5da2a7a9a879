// SPDX-License-Identifier: MIT
/* DERP over WebSocket (spec §3.7), the browser/wasm transport, over a real
 * socket: the RFC 6455 handshake with subprotocol "derp", masked binary
 * messages from the client (fragmented, with pings in between), one binary
 * message per server batch, close handling. */
#include <errno.h>
#include <setjmp.h>
#include <sodium.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "clients.h"
#include "derp_crypto.h"
#include "derp_wire.h"

/* A masked client frame. */
static size_t ws_frame(uint8_t *out, uint8_t opcode, bool fin, const void *payload, size_t len)
{
	static const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
	size_t o = 0;

	out[o++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
	if (len < 126) {
		out[o++] = (uint8_t)(0x80 | len);
	} else {
		out[o++] = 0x80 | 126;
		out[o++] = (uint8_t)(len >> 8);
		out[o++] = (uint8_t)len;
	}
	memcpy(out + o, mask, 4);
	o += 4;
	for (size_t i = 0; i < len; i++)
		out[o + i] = ((const uint8_t *)payload)[i] ^ mask[i % 4];
	return o + len;
}

/* Reads one server frame (never masked); returns opcode, payload in buf. */
static int ws_read(int fd, uint8_t *buf, size_t cap, size_t *len)
{
	uint8_t h[2];
	if (ts_read_exact(fd, h, 2, 3000) != 0)
		return -1;
	assert_int_equal(h[1] & 0x80, 0); /* servers never mask */
	size_t n = h[1] & 0x7f;
	if (n == 126) {
		uint8_t e[2];
		assert_int_equal(ts_read_exact(fd, e, 2, 3000), 0);
		n = (size_t)e[0] << 8 | e[1];
	} else if (n == 127) {
		uint8_t e[8];
		assert_int_equal(ts_read_exact(fd, e, 8, 3000), 0);
		n = 0;
		for (int i = 0; i < 8; i++)
			n = n << 8 | e[i];
	}
	assert_true(n <= cap);
	assert_int_equal(ts_read_exact(fd, buf, n, 3000), 0);
	*len = n;
	return h[0] & 0x0f;
}

/* DERP bytes from the server, across as many binary messages as it takes. */
struct derp_in {
	uint8_t buf[1 << 17];
	size_t len;
};

static void derp_frame(int fd, struct derp_in *in, uint8_t *type, uint8_t **payload, uint32_t *plen)
{
	for (;;) {
		if (in->len >= 5) {
			uint32_t n = derp_hdr_len((const struct derp_frame_hdr *)in->buf);
			if (in->len >= 5 + n) {
				static uint8_t out[1 << 17];
				*type = in->buf[0];
				memcpy(out, in->buf + 5, n);
				*payload = out;
				*plen = n;
				memmove(in->buf, in->buf + 5 + n, in->len - 5 - n);
				in->len -= 5 + n;
				return;
			}
		}
		size_t n;
		int op = ws_read(fd, in->buf + in->len, sizeof(in->buf) - in->len, &n);
		assert_int_equal(op, 2); /* binary */
		in->len += n;
	}
}

static int ws_login(struct ts_server *ts, struct kd_keypair *kp, struct derp_in *in)
{
	int fd = ts_connect(ts->port);
	assert_true(fd >= 0);
	static const char req[] = "GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
				  "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
				  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
				  "Sec-WebSocket-Protocol: derp\r\nOrigin: https://login.example\r\n\r\n";
	assert_int_equal(ts_write_all(fd, req, sizeof(req) - 1), 0);
	char resp[1024];
	size_t n = 0;
	while (n < sizeof(resp) - 1) {
		assert_int_equal(ts_read_exact(fd, resp + n, 1, 3000), 0);
		n++;
		if (n >= 4 && !memcmp(resp + n - 4, "\r\n\r\n", 4))
			break;
	}
	resp[n] = '\0';
	assert_non_null(strstr(resp, "HTTP/1.1 101 "));
	assert_non_null(strstr(resp, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
	assert_non_null(strstr(resp, "Sec-WebSocket-Protocol: derp\r\n"));
	assert_null(strstr(resp, "deflate"));

	uint8_t type, *p;
	uint32_t plen;
	in->len = 0;
	derp_frame(fd, in, &type, &p, &plen);
	assert_int_equal(type, DERP_FRAME_SERVER_KEY);
	assert_memory_equal(p + 8, ts->cfg.keys.pub, 32);

	/* ClientInfo, split over a fragmented message with a ping in between */
	kd_keypair_generate(kp);
	static const char json[] = "{\"version\":2,\"CanAckPings\":true}";
	uint8_t ci[5 + 32 + KD_BOX_OVERHEAD + sizeof(json) - 1];
	derp_hdr_put((struct derp_frame_hdr *)ci, DERP_FRAME_CLIENT_INFO, sizeof(ci) - 5);
	memcpy(ci + 5, kp->pub, 32);
	assert_int_equal(kd_box_seal(ci + 37, sizeof(ci) - 37, (const uint8_t *)json, sizeof(json) - 1,
				     ts->cfg.keys.pub, kp->priv),
			 0);
	uint8_t wire[512];
	size_t o = ws_frame(wire, 0x2, false, ci, 20);
	o += ws_frame(wire + o, 0x9, true, "hi", 2);
	o += ws_frame(wire + o, 0x0, true, ci + 20, sizeof(ci) - 20);
	assert_int_equal(ts_write_all(fd, wire, o), 0);
	/* the pong comes back raw, then ServerInfo inside a binary message */
	int op = ws_read(fd, (uint8_t *)resp, sizeof(resp), &n);
	assert_int_equal(op, 0xA);
	assert_int_equal(n, 2);
	assert_memory_equal(resp, "hi", 2);
	derp_frame(fd, in, &type, &p, &plen);
	assert_int_equal(type, DERP_FRAME_SERVER_INFO);
	return fd;
}

static void test_websocket_relay(void **state)
{
	struct ts_server ts;
	struct kd_keypair ka, kb = {0};
	struct derp_in *in = calloc(1, sizeof(*in));
	struct kd_client_msg m;
	uint8_t type, *p;
	uint32_t plen;
	(void)state;

	assert_int_equal(ts_start(&ts, NULL, NULL), 0);
	int fd = ws_login(&ts, &ka, in);
	struct kd_client *b = tc_login(&ts, &kb, NULL);
	assert_non_null(b);
	/* B -> A: a RecvPacket inside a binary message */
	uint8_t big[3000];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)i;
	assert_int_equal(kd_client_send_packet(b, ka.pub, big, sizeof(big)), 0);
	derp_frame(fd, in, &type, &p, &plen);
	assert_int_equal(type, DERP_FRAME_RECV_PACKET);
	assert_int_equal(plen, 32 + sizeof(big));
	assert_memory_equal(p, kb.pub, 32);
	assert_memory_equal(p + 32, big, sizeof(big));
	/* A -> B: SendPacket split across two messages at an odd offset */
	uint8_t sp[5 + 32 + 5];
	derp_hdr_put((struct derp_frame_hdr *)sp, DERP_FRAME_SEND_PACKET, 37);
	memcpy(sp + 5, kb.pub, 32);
	memcpy(sp + 37, "hello", 5);
	uint8_t wire[256];
	size_t o = ws_frame(wire, 0x2, true, sp, 7);
	o += ws_frame(wire + o, 0x2, true, sp + 7, sizeof(sp) - 7);
	assert_int_equal(ts_write_all(fd, wire, o), 0);
	assert_int_equal(tc_recv_type(b, DERP_FRAME_RECV_PACKET, &m, 3000), 0);
	assert_memory_equal(m.key, ka.pub, 32);
	assert_memory_equal(m.data, "hello", 5);
	assert_int_equal(ts_metric(&ts, "derp_websocket_accepts"), 1);
	/* close: the server echoes it and hangs up */
	uint8_t code[2] = {0x03, 0xe8};
	o = ws_frame(wire, 0x8, true, code, 2);
	assert_int_equal(ts_write_all(fd, wire, o), 0);
	size_t n;
	int op;
	do
		op = ws_read(fd, wire, sizeof(wire), &n);
	while (op == 2);
	assert_int_equal(op, 0x8);
	assert_true(ts_wait_closed(fd, 3000));
	close(fd);
	kd_client_close(b);
	ts_stop(&ts);
	free(in);
}

static void test_websocket_text_frame_closes(void **state)
{
	struct ts_server ts;
	struct kd_keypair ka;
	struct derp_in *in = calloc(1, sizeof(*in));
	uint8_t wire[64], buf[256];
	size_t n;
	(void)state;

	assert_int_equal(ts_start(&ts, NULL, NULL), 0);
	int fd = ws_login(&ts, &ka, in);
	size_t o = ws_frame(wire, 0x1, true, "text", 4);
	assert_int_equal(ts_write_all(fd, wire, o), 0);
	int op = ws_read(fd, buf, sizeof(buf), &n);
	assert_int_equal(op, 0x8);
	assert_true(n >= 2);
	assert_int_equal(buf[0] << 8 | buf[1], 1003); /* unsupported data */
	assert_true(ts_wait_closed(fd, 3000));
	close(fd);
	ts_stop(&ts);
	free(in);
}

int main(void)
{
	if (sodium_init() < 0)
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_websocket_relay),
		cmocka_unit_test(test_websocket_text_frame_closes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
