// SPDX-License-Identifier: MIT
/* DERP client: the Tailscale transcripts byte for byte over a socketpair,
 * the frame parser's edge cases, handshake failures, auto-pong. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>

#include "client.h"
#include "client_vectors.h"
#include "key.h"

/* ---- helpers ------------------------------------------------------------ */

static size_t rand_off;

/* The vectors' deterministic crypto/rand: byte i of the stream is i mod 256. */
static void det_random(void *buf, size_t len)
{
	uint8_t *p = buf;

	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(rand_off++ & 0xff);
}

static size_t unhex(uint8_t **out, const char *hex)
{
	size_t n = strlen(hex) / 2;
	uint8_t *b = malloc(n ? n : 1);

	assert_non_null(b);
	assert_int_equal(kd_hex_decode(b, n, hex, 2 * n), 0);
	*out = b;
	return n;
}

static void write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t r = write(fd, p, len);

		assert_true(r > 0);
		p += r;
		len -= (size_t)r;
	}
}

/* Everything the client wrote so far (waits up to 100 ms for the first byte). */
static size_t read_avail(int fd, uint8_t *buf, size_t cap)
{
	size_t n = 0;
	struct pollfd pfd = {.fd = fd, .events = POLLIN};

	while (n < cap && poll(&pfd, 1, n ? 0 : 100) > 0) {
		ssize_t r = read(fd, buf + n, cap - n);

		if (r <= 0)
			break;
		n += (size_t)r;
	}
	return n;
}

/* Drives the non-blocking handshake to its end with a 2 s safety net. */
static int drive(struct kd_client *c)
{
	for (int i = 0; i < 2000; i++) {
		int r = kd_client_step(c);
		struct pollfd pfd = {.fd = kd_client_fd(c),
				     .events = POLLIN | (kd_client_want_write(c) ? POLLOUT : 0)};

		if (r != 0)
			return r;
		poll(&pfd, 1, 1);
	}
	return -ETIMEDOUT;
}

static const uint8_t server_priv_byte = 0x01;

struct fake_server {
	struct kd_keypair kp;
	int sv[2]; /* [0] client side, [1] our side */
};

static void fake_server_init(struct fake_server *s)
{
	uint8_t priv[32];

	memset(priv, 0x07, sizeof(priv));
	assert_int_equal(kd_keypair_from_private(&s->kp, priv), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, s->sv), 0);
}

static void client_opts(struct kd_client_opts *o, uint8_t priv_byte)
{
	uint8_t priv[32];

	memset(o, 0, sizeof(*o));
	memset(priv, priv_byte, sizeof(priv));
	assert_int_equal(kd_keypair_from_private(&o->key, priv), 0);
	o->url = "http://derp.test/derp";
	o->can_ack_pings = true;
	o->timeout_ms = 2000;
}

static void send_frame(int fd, uint8_t type, const void *payload, size_t len)
{
	struct derp_frame_hdr h;

	derp_hdr_put(&h, type, (uint32_t)len);
	write_all(fd, &h, sizeof(h));
	if (len)
		write_all(fd, payload, len);
}

/* 101 + ServerKey + a ServerInfo boxed for the client key */
static void fake_server_hello(struct fake_server *s, const uint8_t client_pub[32], bool good_box)
{
	static const char resp[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\n"
				   "Connection: Upgrade\r\nDerp-Version: 2\r\n\r\n";
	const char json[] = "{\"version\":2}";
	uint8_t sk[DERP_SERVER_KEY_PAYLOAD], si[DERP_NONCE_LEN + crypto_box_MACBYTES + sizeof(json)];

	write_all(s->sv[1], resp, sizeof(resp) - 1);
	memcpy(sk, DERP_MAGIC, DERP_MAGIC_LEN);
	memcpy(sk + DERP_MAGIC_LEN, s->kp.pub, 32);
	send_frame(s->sv[1], DERP_FRAME_SERVER_KEY, sk, sizeof(sk));
	randombytes_buf(si, DERP_NONCE_LEN);
	assert_int_equal(crypto_box_easy(si + DERP_NONCE_LEN, (const uint8_t *)json, sizeof(json) - 1,
					 si, client_pub, s->kp.priv),
			 0);
	if (!good_box)
		si[DERP_NONCE_LEN + 3] ^= 1;
	send_frame(s->sv[1], DERP_FRAME_SERVER_INFO, si, DERP_NONCE_LEN + crypto_box_MACBYTES + sizeof(json) - 1);
}

static struct kd_client *connected_client(struct fake_server *s, struct kd_client_opts *o)
{
	struct kd_client *c;
	uint8_t junk[4096];

	fake_server_init(s);
	assert_int_equal(kd_client_start_fd(&c, o, s->sv[0]), 0);
	fake_server_hello(s, o->key.pub, true);
	assert_int_equal(drive(c), 1);
	read_avail(s->sv[1], junk, sizeof(junk)); /* request + ClientInfo */
	return c;
}

/* ---- transcripts -------------------------------------------------------- */

/* Replays one connection of a transcript: the s2c stream goes in, the client
 * must write the c2s stream byte for byte. After the handshake the c2s frames
 * are re-issued through the API by type, and every s2c frame after
 * ServerInfo must come out of kd_client_poll() intact. */
static void replay(const char *c2s_hex, const char *s2c_hex, uint8_t priv_byte, size_t nonce_off,
		   const char *url, const uint8_t *mesh_key, const char *app_name, bool can_ack)
{
	struct kd_client_opts o;
	struct kd_client *c;
	uint8_t *c2s, *s2c, got[8192], skey[32], spriv[32];
	size_t c2s_len = unhex(&c2s, c2s_hex), s2c_len = unhex(&s2c, s2c_hex), n, off, hs_len;
	struct kd_keypair server;
	int sv[2];

	client_opts(&o, priv_byte);
	o.url = url;
	o.mesh_key = mesh_key;
	o.app_name = app_name;
	o.can_ack_pings = can_ack;
	o.no_auto_pong = true;
	rand_off = nonce_off;
	kd_client_set_random(det_random);

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(kd_client_start_fd(&c, &o, sv[0]), 0);
	write_all(sv[1], s2c, s2c_len);
	assert_int_equal(drive(c), 1);
	assert_false(kd_client_fast_start(c));

	memset(spriv, server_priv_byte, 32);
	assert_int_equal(kd_keypair_from_private(&server, spriv), 0);
	memcpy(skey, kd_client_server_key(c), 32);
	assert_memory_equal(skey, server.pub, 32);
	assert_int_equal(kd_client_server_info(c)->version, 2);
	assert_int_equal(kd_client_server_info(c)->token_bucket_bytes_per_sec, 0);

	/* handshake bytes: the HTTP request and the ClientInfo frame */
	off = (size_t)(strstr((const char *)c2s, "\r\n\r\n") - (const char *)c2s) + 4;
	hs_len = off + 5 + ((size_t)c2s[off + 1] << 24 | (size_t)c2s[off + 2] << 16 |
			    (size_t)c2s[off + 3] << 8 | c2s[off + 4]);
	n = read_avail(sv[1], got, sizeof(got));
	assert_int_equal(n, hs_len);
	assert_memory_equal(got, c2s, hs_len);

	/* the rest of c2s through the API */
	kd_client_cork(c, true);
	for (off = hs_len; off < c2s_len;) {
		uint8_t type = c2s[off];
		uint32_t len = derp_hdr_len((const void *)(c2s + off));
		const uint8_t *p = c2s + off + 5;

		switch (type) {
		case DERP_FRAME_NOTE_PREFERRED:
			assert_int_equal(kd_client_note_preferred(c, p[0] != 0), 0);
			break;
		case DERP_FRAME_SEND_PACKET:
			assert_int_equal(kd_client_send_packet(c, p, p + 32, len - 32), 0);
			break;
		case DERP_FRAME_PING:
			assert_int_equal(kd_client_send_ping(c, p), 0);
			break;
		default:
			fail_msg("unexpected c2s frame type 0x%x", type);
		}
		off += 5 + len;
	}
	assert_true((kd_client_out_pending(c) > 0) == (hs_len < c2s_len));
	assert_int_equal(kd_client_flush(c), 0);
	n = read_avail(sv[1], got, sizeof(got));
	assert_int_equal(n, c2s_len - hs_len);
	assert_memory_equal(got, c2s + hs_len, n);

	/* every s2c frame after ServerInfo, decoded */
	off = (size_t)(strstr((const char *)s2c, "\r\n\r\n") - (const char *)s2c) + 4;
	for (int i = 0; off < s2c_len; i++) {
		uint32_t len = derp_hdr_len((const void *)(s2c + off));
		struct kd_client_msg m;

		if (i >= 2) { /* 0: ServerKey, 1: ServerInfo, consumed by the handshake */
			assert_int_equal(kd_client_poll(c, &m), 0);
			assert_int_equal(m.type, s2c[off]);
			assert_int_equal(m.len, len);
			assert_memory_equal(m.payload, s2c + off + 5, len);
			if (m.type == DERP_FRAME_RECV_PACKET) {
				assert_memory_equal(m.key, s2c + off + 5, 32);
				assert_int_equal(m.data_len, len - 32);
			} else if (m.type == DERP_FRAME_PEER_GONE) {
				assert_memory_equal(m.key, s2c + off + 5, 32);
				assert_int_equal(m.reason, DERP_PEER_GONE_DISCONNECTED);
			}
		}
		off += 5 + len;
	}
	{
		struct kd_client_msg m;

		assert_int_equal(kd_client_poll(c, &m), -EAGAIN);
		close(sv[1]);
		assert_int_equal(kd_client_recv(c, &m, 1000), -EPIPE);
	}
	kd_client_close(c);
	kd_client_set_random(NULL);
	free(c2s);
	free(s2c);
}

static void test_transcript_canackpings(void **state)
{
	for (size_t i = 0; i < sizeof(vec_ack) / sizeof(vec_ack[0]); i++)
		replay(vec_ack[i].c2s_hex, vec_ack[i].s2c_hex, vec_ack[i].client_priv_byte,
		       vec_ack[i].nonce_offset, "http://derp.test/derp", NULL, NULL, true);
}

static void test_transcript_nocanackpings(void **state)
{
	for (size_t i = 0; i < sizeof(vec_noack) / sizeof(vec_noack[0]); i++)
		replay(vec_noack[i].c2s_hex, vec_noack[i].s2c_hex, vec_noack[i].client_priv_byte,
		       vec_noack[i].nonce_offset, "http://derp.test/derp", NULL, NULL, false);
}

static void test_hello_vectors(void **state)
{
	for (size_t i = 0; i < sizeof(vec_hello) / sizeof(vec_hello[0]); i++) {
		uint8_t mk[32];

		if (vec_hello[i].mesh_key_hex)
			assert_int_equal(kd_hex_decode(mk, 32, vec_hello[i].mesh_key_hex, 64), 0);
		replay(vec_hello[i].c2s_hex, vec_hello[i].s2c_hex, 0x02, 0, "http://127.0.0.1:43340/derp",
		       vec_hello[i].mesh_key_hex ? mk : NULL, vec_hello[i].app_name, true);
	}
}

/* ---- frame parser ------------------------------------------------------- */

static size_t mkframe(uint8_t *buf, uint8_t type, uint32_t len, uint8_t fill)
{
	derp_hdr_put((struct derp_frame_hdr *)buf, type, len);
	memset(buf + 5, fill, len);
	return 5 + len;
}

static void test_parse_incomplete(void **state)
{
	uint8_t buf[64];
	struct kd_client_msg m;
	size_t used = 99, n = mkframe(buf, DERP_FRAME_RECV_PACKET, 40, 0xaa);

	for (size_t i = 0; i < n; i++)
		assert_int_equal(kd_client_parse_frame(buf, i, &m, &used), -EAGAIN);
	assert_int_equal(used, 99);
	assert_int_equal(kd_client_parse_frame(buf, n, &m, &used), 0);
	assert_int_equal(used, n);
	assert_int_equal(m.data_len, 8);
	assert_ptr_equal(m.key, buf + 5);
	assert_ptr_equal(m.data, buf + 5 + 32);
}

static void test_parse_oversize(void **state)
{
	uint8_t buf[5];
	struct kd_client_msg m;
	size_t used;

	derp_hdr_put((struct derp_frame_hdr *)buf, DERP_FRAME_RECV_PACKET, DERP_MAX_INFO_LEN + 1);
	assert_int_equal(kd_client_parse_frame(buf, 5, &m, &used), -EMSGSIZE);
	derp_hdr_put((struct derp_frame_hdr *)buf, DERP_FRAME_RECV_PACKET, DERP_MAX_INFO_LEN);
	assert_int_equal(kd_client_parse_frame(buf, 5, &m, &used), -EAGAIN);
}

static void test_parse_short_frames_skipped(void **state)
{
	static const struct {
		uint8_t type;
		uint32_t bad, good;
	} cases[] = {
		{DERP_FRAME_RECV_PACKET, 31, 32}, {DERP_FRAME_PEER_GONE, 31, 32},
		{DERP_FRAME_PEER_PRESENT, 31, 32}, {DERP_FRAME_PING, 7, 8},
		{DERP_FRAME_PONG, 7, 8},           {DERP_FRAME_RESTARTING, 7, 8},
		{DERP_FRAME_SERVER_KEY, 39, 40},   {DERP_FRAME_SERVER_INFO, 23, 24},
	};
	uint8_t buf[128];
	struct kd_client_msg m;
	size_t used;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = mkframe(buf, cases[i].type, cases[i].bad, 1);

		assert_int_equal(kd_client_parse_frame(buf, n, &m, &used), -EBADMSG);
		assert_int_equal(used, n);
		n = mkframe(buf, cases[i].type, cases[i].good, 1);
		assert_int_equal(kd_client_parse_frame(buf, n, &m, &used), 0);
		assert_int_equal(m.type, cases[i].type);
	}
	/* a ServerKey longer than 1024 is not one */
	assert_int_equal(kd_client_parse_frame(buf, mkframe(buf, DERP_FRAME_SERVER_KEY, 40, 0), &m, &used), 0);
	{
		uint8_t big[5 + 1025];

		assert_int_equal(kd_client_parse_frame(big, mkframe(big, DERP_FRAME_SERVER_KEY, 1025, 0), &m, &used),
				 -EBADMSG);
	}
}

static void test_parse_peer_forms(void **state)
{
	uint8_t buf[128];
	struct kd_client_msg m;
	size_t used, n;

	/* PeerGone: 32 bytes = Disconnected, 33 carries the reason */
	n = mkframe(buf, DERP_FRAME_PEER_GONE, 32, 0x11);
	assert_int_equal(kd_client_parse_frame(buf, n, &m, &used), 0);
	assert_int_equal(m.reason, DERP_PEER_GONE_DISCONNECTED);
	n = mkframe(buf, DERP_FRAME_PEER_GONE, 33, 0x11);
	buf[5 + 32] = DERP_PEER_GONE_NOT_HERE;
	assert_int_equal(kd_client_parse_frame(buf, n, &m, &used), 0);
	assert_int_equal(m.reason, DERP_PEER_GONE_NOT_HERE);

	/* PeerPresent 32 / 50 / 51 / 60 bytes (spec §6.9) */
	n = mkframe(buf, DERP_FRAME_PEER_PRESENT, 32, 0x22);
	assert_int_equal(kd_client_parse_frame(buf, n, &m, &used), 0);
	assert_int_equal(m.port, 0);
	assert_int_equal(m.flags, 0);
	for (int i = 0; i < 16; i++)
		assert_int_equal(m.ip[i], 0);

	for (uint32_t len = 50; len <= 60; len += 10) {
		n = mkframe(buf, DERP_FRAME_PEER_PRESENT, len, 0x22);
		memset(buf + 5 + 32, 0, 16);
		buf[5 + 32 + 10] = buf[5 + 32 + 11] = 0xff;
		buf[5 + 32 + 12] = 192;
		buf[5 + 32 + 13] = 0;
		buf[5 + 32 + 14] = 2;
		buf[5 + 32 + 15] = 1;
		buf[5 + 48] = 0xa2;
		buf[5 + 49] = 0xa9;
		buf[5 + 50] = DERP_PEER_PRESENT_PROBER;
		assert_int_equal(kd_client_parse_frame(buf, n, &m, &used), 0);
		assert_int_equal(m.port, 41641);
		assert_int_equal(m.ip[12], 192);
		assert_int_equal(m.ip[15], 1);
		assert_int_equal(m.flags, len >= 51 ? DERP_PEER_PRESENT_PROBER : 0);
		assert_memory_equal(m.key, buf + 5, 32);
	}
	/* 51: the spec's exact vector bytes */
	n = mkframe(buf, DERP_FRAME_PEER_PRESENT, 51, 0x33);
	memset(buf + 5 + 32, 0, 16);
	buf[5 + 42] = buf[5 + 43] = 0xff;
	buf[5 + 50] = DERP_PEER_PRESENT_REGULAR;
	assert_int_equal(kd_client_parse_frame(buf, n, &m, &used), 0);
	assert_int_equal(m.flags, DERP_PEER_PRESENT_REGULAR);
}

static void test_parse_misc(void **state)
{
	static const uint8_t restarting[] = {0x15, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x13, 0x88};
	static const uint8_t health[] = {0x14, 0, 0, 0, 2, 'n', 'o'};
	static const uint8_t unknown[] = {0x7f, 0, 0, 0, 3, 1, 2, 3, 0x06, 0, 0, 0, 0};
	struct kd_client_msg m;
	size_t used;

	assert_int_equal(kd_client_parse_frame(restarting, sizeof(restarting), &m, &used), 0);
	assert_int_equal(m.reconnect_in_ms, 0);
	assert_int_equal(m.try_for_ms, 5000);
	assert_int_equal(kd_client_parse_frame(health, sizeof(health), &m, &used), 0);
	assert_int_equal(m.data_len, 2);
	assert_memory_equal(m.data, "no", 2);
	/* unknown types come back with their length; the next frame follows */
	assert_int_equal(kd_client_parse_frame(unknown, sizeof(unknown), &m, &used), 0);
	assert_int_equal(m.type, 0x7f);
	assert_int_equal(used, 8);
	assert_int_equal(kd_client_parse_frame(unknown + used, sizeof(unknown) - used, &m, &used), 0);
	assert_int_equal(m.type, DERP_FRAME_KEEP_ALIVE);
	assert_int_equal(m.len, 0);
}

static void test_parse_http(void **state)
{
	static const char ok[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\n\r\nXYZ";
	int st = 0;
	size_t used = 0;

	assert_int_equal(kd_client_parse_http_response(ok, sizeof(ok) - 1, &st, &used), 0);
	assert_int_equal(st, 101);
	assert_int_equal(used, sizeof(ok) - 4);
	for (size_t i = 0; i < sizeof(ok) - 4; i++)
		assert_int_equal(kd_client_parse_http_response(ok, i, &st, &used), -EAGAIN);
	assert_int_equal(kd_client_parse_http_response("HTTP/1.1 426 Upgrade Required\r\n\r\n", 34, &st, &used), 0);
	assert_int_equal(st, 426);
	assert_int_equal(kd_client_parse_http_response("SSH-2.0-OpenSSH\r\n\r\n", 19, &st, &used), -EBADMSG);
	assert_int_equal(kd_client_parse_http_response("HTTP/1.1 1x1 no\r\n\r\n", 19, &st, &used), -EBADMSG);
	assert_int_equal(kd_client_parse_http_response("HTTP/1.1 101\r\n\r\n", 16, &st, &used), 0);
}

static void test_parse_server_info(void **state)
{
	struct kd_client_server_info si;
	static const char *bad[] = {
		"", "{", "{\"version\":\"2\"}", "{\"version\":2.5}", "{\"TokenBucketBytesBurst\":true}",
		"{\"version\":2} {}", "[2]", "{\"version\":2,}",
	};

	assert_int_equal(kd_client_parse_server_info("{\"version\":2}", 13, &si), 0);
	assert_int_equal(si.version, 2);
	assert_int_equal(kd_client_parse_server_info(
				 " {\"Version\":2,\"tokenbucketbytespersecond\":1250000,\"TokenBucketBytesBurst\":65568,"
				 "\"Future\":{\"x\":[1,null]}} ",
				 105, &si),
			 0);
	assert_int_equal(si.token_bucket_bytes_per_sec, 1250000);
	assert_int_equal(si.token_bucket_bytes_burst, 65568);
	assert_int_equal(kd_client_parse_server_info("null", 4, &si), 0);
	assert_int_equal(si.version, 0);
	assert_int_equal(kd_client_parse_server_info("{\"version\":null}", 16, &si), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(kd_client_parse_server_info(bad[i], strlen(bad[i]), &si), -EBADMSG);
}

static void test_client_info_json(void **state)
{
	struct kd_client_opts o = {.can_ack_pings = true};
	uint8_t mk[32];
	char buf[256];

	assert_int_equal(kd_client_info_json(buf, sizeof(buf), &o), 32);
	assert_string_equal(buf, "{\"version\":2,\"CanAckPings\":true}");
	o.is_prober = true;
	o.app_name = "a\"b\\c\n";
	kd_client_info_json(buf, sizeof(buf), &o);
	assert_string_equal(buf, "{\"version\":2,\"CanAckPings\":true,\"IsProber\":true,"
				 "\"AppName\":\"a\\\"b\\\\c\\u000a\"}");
	memset(mk, 0xab, 32);
	o = (struct kd_client_opts){.mesh_key = mk};
	kd_client_info_json(buf, sizeof(buf), &o);
	assert_string_equal(buf, "{\"meshKey\":\"abababababababababababababababababababababababababababababababab\","
				 "\"version\":2,\"CanAckPings\":false}");
	assert_int_equal(kd_client_info_json(buf, 20, &o), -ENOSPC);
}

static void test_url_parse(void **state)
{
	struct kd_client_url u;

	assert_int_equal(kd_client_url_parse(&u, "http://127.0.0.1:3340/derp"), 0);
	assert_false(u.tls);
	assert_string_equal(u.host, "127.0.0.1");
	assert_int_equal(u.port, 3340);
	assert_string_equal(u.host_header, "127.0.0.1:3340");
	assert_int_equal(kd_client_url_parse(&u, "https://derp.example.com"), 0);
	assert_true(u.tls);
	assert_int_equal(u.port, 443);
	assert_string_equal(u.path, "/derp");
	assert_string_equal(u.host_header, "derp.example.com");
	assert_int_equal(kd_client_url_parse(&u, "http://[::1]:8080/derp"), 0);
	assert_string_equal(u.host, "::1");
	assert_string_equal(u.host_header, "[::1]:8080");
	assert_int_equal(kd_client_url_parse(&u, "http://derp.test:80/derp"), 0);
	assert_string_equal(u.host_header, "derp.test");
	assert_int_equal(kd_client_url_parse(&u, "ftp://x/derp"), -EINVAL);
	assert_int_equal(kd_client_url_parse(&u, "http://:80/derp"), -EINVAL);
	assert_int_equal(kd_client_url_parse(&u, "http://x:99999/derp"), -EINVAL);
	assert_int_equal(kd_client_url_parse(&u, "http://x:/derp"), -EINVAL);
}

/* ---- handshake failures and steady state -------------------------------- */

static void test_refused_status(void **state)
{
	struct kd_client_opts o;
	struct kd_client *c;
	static const char r426[] = "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n";
	int sv[2];

	client_opts(&o, 0x05);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(kd_client_start_fd(&c, &o, sv[0]), 0);
	write_all(sv[1], r426, sizeof(r426) - 1);
	assert_int_equal(drive(c), -EPROTO);
	/* sticky */
	assert_int_equal(kd_client_step(c), -EPROTO);
	kd_client_close(c);
	close(sv[1]);
}

static void test_refused_close(void **state)
{
	struct fake_server s;
	struct kd_client_opts o;
	struct kd_client *c;
	uint8_t sk[DERP_SERVER_KEY_PAYLOAD];
	static const char resp[] = "HTTP/1.1 101 Switching Protocols\r\n\r\n";

	client_opts(&o, 0x05);
	fake_server_init(&s);
	assert_int_equal(kd_client_start_fd(&c, &o, s.sv[0]), 0);
	/* admission refused: the server reads ClientInfo and hangs up */
	write_all(s.sv[1], resp, sizeof(resp) - 1);
	memcpy(sk, DERP_MAGIC, DERP_MAGIC_LEN);
	memcpy(sk + DERP_MAGIC_LEN, s.kp.pub, 32);
	send_frame(s.sv[1], DERP_FRAME_SERVER_KEY, sk, sizeof(sk));
	assert_int_equal(kd_client_step(c), 0);
	shutdown(s.sv[1], SHUT_WR);
	assert_int_equal(drive(c), -ECONNABORTED);
	kd_client_close(c);
	close(s.sv[1]);
}

static void test_bad_first_frame(void **state)
{
	struct fake_server s;
	struct kd_client_opts o;
	struct kd_client *c;
	static const char resp[] = "HTTP/1.1 101 Switching Protocols\r\n\r\n";

	client_opts(&o, 0x05);
	fake_server_init(&s);
	assert_int_equal(kd_client_start_fd(&c, &o, s.sv[0]), 0);
	write_all(s.sv[1], resp, sizeof(resp) - 1);
	send_frame(s.sv[1], DERP_FRAME_KEEP_ALIVE, NULL, 0);
	assert_int_equal(drive(c), -EPROTO);
	kd_client_close(c);
	close(s.sv[1]);
}

static void test_bad_server_info(void **state)
{
	struct fake_server s;
	struct kd_client_opts o;
	struct kd_client *c;

	client_opts(&o, 0x05);
	fake_server_init(&s);
	assert_int_equal(kd_client_start_fd(&c, &o, s.sv[0]), 0);
	fake_server_hello(&s, o.key.pub, false);
	assert_int_equal(drive(c), -EPROTO);
	kd_client_close(c);
	close(s.sv[1]);
}

static void test_timeout(void **state)
{
	struct kd_client_opts o;
	struct kd_client *c;
	int sv[2];
	int64_t t0 = kd_client_clock_ms();

	client_opts(&o, 0x05);
	o.timeout_ms = 150;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(kd_client_start_fd(&c, &o, sv[0]), 0);
	assert_int_equal(drive(c), -ETIMEDOUT);
	assert_true(kd_client_clock_ms() - t0 >= 150);
	kd_client_close(c);
	close(sv[1]);
}

static void test_auto_pong(void **state)
{
	for (int manual = 0; manual <= 1; manual++) {
		struct fake_server s;
		struct kd_client_opts o;
		struct kd_client *c;
		struct kd_client_msg m;
		uint8_t got[64];
		static const uint8_t ping[8] = "abcdefgh";

		client_opts(&o, 0x06);
		o.no_auto_pong = manual;
		c = connected_client(&s, &o);
		send_frame(s.sv[1], DERP_FRAME_PING, ping, 8);
		assert_int_equal(kd_client_recv(c, &m, 1000), 0);
		assert_int_equal(m.type, DERP_FRAME_PING);
		assert_memory_equal(m.data, ping, 8);
		if (manual) {
			assert_int_equal(read_avail(s.sv[1], got, sizeof(got)), 0);
		} else {
			assert_int_equal(read_avail(s.sv[1], got, sizeof(got)), 13);
			assert_int_equal(got[0], DERP_FRAME_PONG);
			assert_memory_equal(got + 5, ping, 8);
		}
		kd_client_close(c);
		close(s.sv[1]);
	}
}

/* A 64 KiB packet dribbled in 1000-byte pieces, then a burst of small frames
 * in one write, including skipped short frames between them. */
static void test_large_and_batched(void **state)
{
	struct fake_server s;
	struct kd_client_opts o;
	struct kd_client *c;
	struct kd_client_msg m;
	static uint8_t big[5 + 32 + DERP_MAX_PACKET];
	uint8_t burst[100 * 45 + 16];
	size_t n = 0;

	client_opts(&o, 0x06);
	c = connected_client(&s, &o);
	derp_hdr_put((struct derp_frame_hdr *)big, DERP_FRAME_RECV_PACKET, 32 + DERP_MAX_PACKET);
	for (size_t i = 5; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7);
	for (size_t off = 0; off < sizeof(big); off += 1000) {
		size_t k = sizeof(big) - off < 1000 ? sizeof(big) - off : 1000;

		assert_int_equal(kd_client_poll(c, &m), -EAGAIN);
		write_all(s.sv[1], big + off, k);
		usleep(0);
	}
	assert_int_equal(kd_client_recv(c, &m, 1000), 0);
	assert_int_equal(m.data_len, DERP_MAX_PACKET);
	assert_memory_equal(m.data, big + 37, DERP_MAX_PACKET);

	for (int i = 0; i < 100; i++) {
		n += mkframe(burst + n, DERP_FRAME_RECV_PACKET, 40, (uint8_t)i);
		if (i == 50)
			n += mkframe(burst + n, DERP_FRAME_PONG, 3, 0); /* short: skipped */
	}
	write_all(s.sv[1], burst, n);
	for (int i = 0; i < 100; i++) {
		assert_int_equal(kd_client_recv(c, &m, 1000), 0);
		assert_int_equal(m.type, DERP_FRAME_RECV_PACKET);
		assert_int_equal(m.data[0], (uint8_t)i);
	}
	assert_int_equal(kd_client_poll(c, &m), -EAGAIN);
	/* an oversized length kills the stream */
	derp_hdr_put((struct derp_frame_hdr *)burst, DERP_FRAME_RECV_PACKET, DERP_MAX_INFO_LEN + 1);
	write_all(s.sv[1], burst, 5);
	assert_int_equal(kd_client_recv(c, &m, 1000), -EPROTO);
	kd_client_close(c);
	close(s.sv[1]);
}

/* Output backpressure: the buffer refuses frames past KD_CLIENT_OUT_MAX and
 * takes them again once flushed. */
static void test_send_backpressure(void **state)
{
	struct fake_server s;
	struct kd_client_opts o;
	struct kd_client *c;
	static uint8_t pkt[DERP_MAX_PACKET], sink[1 << 16];
	uint8_t dst[32] = {1};
	int sent = 0, err;
	size_t drained = 0, total;

	client_opts(&o, 0x06);
	c = connected_client(&s, &o);
	assert_int_equal(kd_client_send_packet(c, dst, pkt, DERP_MAX_PACKET + 1), -EINVAL);
	kd_client_cork(c, true);
	while ((err = kd_client_send_packet(c, dst, pkt, sizeof(pkt))) == 0)
		sent++;
	assert_int_equal(err, -ENOBUFS);
	assert_true(kd_client_out_pending(c) <= KD_CLIENT_OUT_MAX);
	assert_true(sent >= (int)(KD_CLIENT_OUT_MAX / (sizeof(pkt) + 37)) - 1);
	total = (size_t)sent * (sizeof(pkt) + 37);
	while (drained < total) {
		ssize_t r;

		err = kd_client_flush(c);
		assert_true(err == 0 || err == -EAGAIN);
		r = read(s.sv[1], sink, sizeof(sink));
		assert_true(r > 0);
		drained += (size_t)r;
	}
	assert_int_equal(drained, total);
	assert_int_equal(kd_client_out_pending(c), 0);
	assert_int_equal(kd_client_send_packet(c, dst, pkt, sizeof(pkt)), 0);
	kd_client_close(c);
	close(s.sv[1]);
}


/* ---- TLS and fast start ------------------------------------------------- */

static X509 *make_cert(EVP_PKEY *k, const char *cn, long serial)
{
	X509 *x = X509_new();
	X509_NAME *n;

	assert_non_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, k);
	n = X509_get_subject_name(x);
	/* a plain string type: OpenSSL's 64-char CN limit would reject the
	 * 71-char "derpkey<hex>" that Go servers emit */
	assert_int_equal(X509_NAME_add_entry_by_txt(n, "CN", V_ASN1_UTF8STRING, (const unsigned char *)cn, -1, -1, 0),
			 1);
	X509_set_issuer_name(x, n);
	assert_true(X509_sign(x, k, NULL) > 0);
	return x;
}

struct tls_server {
	SSL_CTX *ctx;
	int fd;
	struct kd_keypair kp;
	uint8_t client_pub[32];
	bool saw_fast_start, saw_client_info, pinged;
	pthread_t th;
};

/* Reads until `want` bytes; false on EOF/error. */
static bool ssl_read_n(SSL *ssl, uint8_t *buf, size_t want)
{
	size_t n = 0;

	while (n < want) {
		int r = SSL_read(ssl, buf + n, (int)(want - n));

		if (r <= 0)
			return false;
		n += (size_t)r;
	}
	return true;
}

static void *tls_server_main(void *arg)
{
	struct tls_server *t = arg;
	SSL *ssl = SSL_new(t->ctx);
	char req[2048];
	size_t n = 0;
	uint8_t hdr[5], body[4096];
	static const char resp[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\n"
				   "Connection: Upgrade\r\nDerp-Version: 2\r\n\r\n";
	const char json[] = "{\"version\":2}";
	uint8_t frame[5 + DERP_NONCE_LEN + crypto_box_MACBYTES + sizeof(json)];

	SSL_set_fd(ssl, t->fd);
	if (SSL_accept(ssl) != 1)
		goto out;
	while (n < sizeof(req) - 1) {
		int r = SSL_read(ssl, req + n, 1);

		if (r <= 0)
			goto out;
		n += (size_t)r;
		req[n] = '\0';
		if (strstr(req, "\r\n\r\n"))
			break;
	}
	t->saw_fast_start = strstr(req, "\r\nDerp-Fast-Start: 1\r\n") != NULL;
	if (!t->saw_fast_start)
		SSL_write(ssl, resp, sizeof(resp) - 1);
	{
		uint8_t sk[5 + DERP_SERVER_KEY_PAYLOAD];

		derp_hdr_put((struct derp_frame_hdr *)sk, DERP_FRAME_SERVER_KEY, DERP_SERVER_KEY_PAYLOAD);
		memcpy(sk + 5, DERP_MAGIC, DERP_MAGIC_LEN);
		memcpy(sk + 5 + DERP_MAGIC_LEN, t->kp.pub, 32);
		SSL_write(ssl, sk, sizeof(sk));
	}
	if (!ssl_read_n(ssl, hdr, 5) || hdr[0] != DERP_FRAME_CLIENT_INFO ||
	    derp_hdr_len((const void *)hdr) > sizeof(body) ||
	    !ssl_read_n(ssl, body, derp_hdr_len((const void *)hdr)))
		goto out;
	t->saw_client_info = !memcmp(body, t->client_pub, 32);
	/* sizeof(json) counts the NUL: the frame is one byte shorter */
	derp_hdr_put((struct derp_frame_hdr *)frame, DERP_FRAME_SERVER_INFO, sizeof(frame) - 6);
	randombytes_buf(frame + 5, DERP_NONCE_LEN);
	if (crypto_box_easy(frame + 5 + DERP_NONCE_LEN, (const uint8_t *)json, sizeof(json) - 1, frame + 5,
			    t->client_pub, t->kp.priv))
		goto out;
	SSL_write(ssl, frame, sizeof(frame) - 1);
	/* answer one Ping, as kderpd would */
	if (ssl_read_n(ssl, hdr, 5) && hdr[0] == DERP_FRAME_PING && ssl_read_n(ssl, body, 8)) {
		t->pinged = true;
		hdr[0] = DERP_FRAME_PONG;
		SSL_write(ssl, hdr, 5);
		SSL_write(ssl, body, 8);
	}
	ssl_read_n(ssl, hdr, 1); /* until the client closes */
out:
	SSL_free(ssl);
	close(t->fd);
	return NULL;
}

/* One TLS login over a socketpair. meta: the server appends the derpkey
 * meta-certificate; max_tls12: the server stops at TLS 1.2. Returns the
 * client's verdict; *fast reports whether fast start was used. */
static int tls_login(bool meta, bool max_tls12, const char *url, const char *ca_file, bool insecure,
		     bool *fast, bool *pinged)
{
	struct tls_server t = {0};
	struct kd_client_opts o;
	struct kd_client *c;
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	X509 *leaf = make_cert(k, "localhost", 1);
	FILE *f;
	int sv[2], r;

	client_opts(&o, 0x09);
	o.url = url;
	o.ca_file = ca_file;
	o.insecure = insecure;
	o.timeout_ms = 3000;
	memcpy(t.client_pub, o.key.pub, 32);
	{
		uint8_t priv[32];

		memset(priv, 0x0a, 32);
		assert_int_equal(kd_keypair_from_private(&t.kp, priv), 0);
	}
	if (ca_file) {
		f = fopen(ca_file, "w");
		assert_non_null(f);
		PEM_write_X509(f, leaf);
		fclose(f);
	}
	t.ctx = SSL_CTX_new(TLS_server_method());
	assert_non_null(t.ctx);
	if (max_tls12)
		SSL_CTX_set_max_proto_version(t.ctx, TLS1_2_VERSION);
	assert_int_equal(SSL_CTX_use_certificate(t.ctx, leaf), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(t.ctx, k), 1);
	if (meta) {
		char cn[8 + 64];

		memcpy(cn, "derpkey", 7);
		kd_hex_encode(cn + 7, t.kp.pub, 32);
		/* the context takes ownership of the extra chain certificate */
		assert_int_equal(SSL_CTX_add_extra_chain_cert(t.ctx, make_cert(k, cn, 2)), 1);
	}
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	t.fd = sv[1];
	assert_int_equal(pthread_create(&t.th, NULL, tls_server_main, &t), 0);
	assert_int_equal(kd_client_start_fd(&c, &o, sv[0]), 0);
	r = drive(c);
	*fast = kd_client_fast_start(c);
	if (r == 1) {
		struct kd_client_msg m;
		static const uint8_t ping[8] = "tls-ping";

		assert_memory_equal(kd_client_server_key(c), t.kp.pub, 32);
		assert_int_equal(kd_client_send_ping(c, ping), 0);
		assert_int_equal(kd_client_recv(c, &m, 2000), 0);
		assert_int_equal(m.type, DERP_FRAME_PONG);
		assert_memory_equal(m.data, ping, 8);
	}
	kd_client_close(c);
	pthread_join(t.th, NULL);
	if (r == 1) {
		assert_true(t.saw_client_info);
		assert_int_equal(t.saw_fast_start, *fast);
	}
	*pinged = t.pinged;
	SSL_CTX_free(t.ctx);
	X509_free(leaf);
	EVP_PKEY_free(k);
	return r;
}

static void test_tls_fast_start(void **state)
{
	bool fast, pinged;

	/* TLS 1.3 + meta-cert: no 101, ClientInfo right behind the request */
	assert_int_equal(tls_login(true, false, "https://localhost/derp", NULL, true, &fast, &pinged), 1);
	assert_true(fast);
	assert_true(pinged);
	/* TLS 1.2 with the meta-cert: the 101 path (fast start is 1.3 only) */
	assert_int_equal(tls_login(true, true, "https://localhost/derp", NULL, true, &fast, &pinged), 1);
	assert_false(fast);
	assert_true(pinged);
	/* no meta-cert: the 101 path */
	assert_int_equal(tls_login(false, false, "https://localhost/derp", NULL, true, &fast, &pinged), 1);
	assert_false(fast);
}

static void test_tls_verify(void **state)
{
	char ca[] = "/tmp/kd-test-ca-XXXXXX";
	bool fast, pinged;
	int fd = mkstemp(ca);

	assert_true(fd >= 0);
	close(fd);
	/* the leaf is its own trust anchor: verifies for localhost */
	assert_int_equal(tls_login(true, false, "https://localhost/derp", ca, false, &fast, &pinged), 1);
	assert_true(fast);
	/* the same certificate for another name fails verification */
	assert_int_equal(tls_login(true, false, "https://derp.invalid/derp", ca, false, &fast, &pinged), -EKEYREJECTED);
	/* and without the CA: unknown issuer */
	assert_int_equal(tls_login(false, false, "https://localhost/derp", NULL, false, &fast, &pinged), -EKEYREJECTED);
	unlink(ca);
}


/* Every send helper against the byte layouts of spec Appendix A. */
static void test_send_encodings(void **state)
{
	struct fake_server s;
	struct kd_client_opts o;
	struct kd_client *c;
	uint8_t C[32], D[32], got[512], want[512];
	size_t n = 0;
	static const uint8_t ping[8] = {1, 2, 3, 4, 5, 6, 7, 8};

	memset(C, 0xcc, 32);
	memset(D, 0xdd, 32);
	client_opts(&o, 0x06);
	c = connected_client(&s, &o);
	kd_client_cork(c, true);
	assert_int_equal(kd_client_note_preferred(c, true), 0);
	assert_int_equal(kd_client_note_preferred(c, false), 0);
	assert_int_equal(kd_client_send_packet(c, D, "hi", 2), 0);
	assert_int_equal(kd_client_send_packet(c, D, NULL, 0), 0);
	assert_int_equal(kd_client_send_ping(c, ping), 0);
	assert_int_equal(kd_client_send_pong(c, ping), 0);
	assert_int_equal(kd_client_watch_conns(c), 0);
	assert_int_equal(kd_client_close_peer(c, D), 0);
	assert_int_equal(kd_client_forward_packet(c, C, D, "hi", 2), 0);
	assert_int_equal(kd_client_send_raw(c, "\x7f\x00", 2), 0);
	/* corked: nothing on the wire until the flush */
	assert_int_equal(read_avail(s.sv[1], got, sizeof(got)), 0);
	assert_int_equal(kd_client_flush(c), 0);

#define PUT(...)                                                   \
	do {                                                       \
		static const uint8_t b_[] = {__VA_ARGS__};         \
		memcpy(want + n, b_, sizeof(b_));                  \
		n += sizeof(b_);                                   \
	} while (0)
#define PUTK(k)                            \
	do {                                 \
		memcpy(want + n, k, 32);     \
		n += 32;                     \
	} while (0)
	PUT(0x07, 0, 0, 0, 1, 0x01);
	PUT(0x07, 0, 0, 0, 1, 0x00);
	PUT(0x04, 0, 0, 0, 0x22);
	PUTK(D);
	PUT('h', 'i');
	PUT(0x04, 0, 0, 0, 0x20);
	PUTK(D);
	PUT(0x12, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8);
	PUT(0x13, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8);
	PUT(0x10, 0, 0, 0, 0);
	PUT(0x11, 0, 0, 0, 0x20);
	PUTK(D);
	PUT(0x0a, 0, 0, 0, 0x42);
	PUTK(C);
	PUTK(D);
	PUT('h', 'i');
	PUT(0x7f, 0x00);
#undef PUT
#undef PUTK
	assert_int_equal(read_avail(s.sv[1], got, sizeof(got)), n);
	assert_memory_equal(got, want, n);
	kd_client_close(c);
	close(s.sv[1]);
}

/* Optional request headers, in the reference's (sorted) places. */
static void test_request_headers(void **state)
{
	struct kd_client_opts o;
	struct kd_client *c;
	char got[1024];
	int sv[2];
	size_t n;

	client_opts(&o, 0x05);
	o.url = "http://[::1]:8443/derp";
	o.ideal_node = "900a";
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(kd_client_start_fd(&c, &o, sv[0]), 0);
	assert_int_equal(kd_client_step(c), 0);
	n = read_avail(sv[1], (uint8_t *)got, sizeof(got) - 1);
	got[n] = '\0';
	assert_string_equal(got, "GET /derp HTTP/1.1\r\nHost: [::1]:8443\r\nUser-Agent: Go-http-client/1.1\r\n"
				 "Connection: Upgrade\r\nIdeal-Node: 900a\r\nUpgrade: DERP\r\n\r\n");
	kd_client_close(c);
	close(sv[1]);

	o.ideal_node = "bad\r\nInjected: 1";
	assert_int_equal(kd_client_start_fd(&c, &o, -1), -EINVAL);
	assert_null(c);
}

static void test_close_null(void **state)
{
	kd_client_close(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_transcript_canackpings),
		cmocka_unit_test(test_transcript_nocanackpings),
		cmocka_unit_test(test_hello_vectors),
		cmocka_unit_test(test_parse_incomplete),
		cmocka_unit_test(test_parse_oversize),
		cmocka_unit_test(test_parse_short_frames_skipped),
		cmocka_unit_test(test_parse_peer_forms),
		cmocka_unit_test(test_parse_misc),
		cmocka_unit_test(test_parse_http),
		cmocka_unit_test(test_parse_server_info),
		cmocka_unit_test(test_client_info_json),
		cmocka_unit_test(test_url_parse),
		cmocka_unit_test(test_refused_status),
		cmocka_unit_test(test_refused_close),
		cmocka_unit_test(test_bad_first_frame),
		cmocka_unit_test(test_bad_server_info),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_auto_pong),
		cmocka_unit_test(test_large_and_batched),
		cmocka_unit_test(test_send_backpressure),
		cmocka_unit_test(test_tls_fast_start),
		cmocka_unit_test(test_tls_verify),
		cmocka_unit_test(test_send_encodings),
		cmocka_unit_test(test_request_headers),
		cmocka_unit_test(test_close_null),
	};

	signal(SIGPIPE, SIG_IGN);
	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
