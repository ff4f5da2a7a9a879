// SPDX-License-Identifier: MIT
/* Conformance: replays the transcripts recorded from Tailscale's own DERP
 * server (tests/vectors, copied from shared/vectors) against an in-process
 * kderpd over real loopback sockets and compares every server byte.
 *
 * The server's box nonces come from the same deterministic stream the
 * recording used (byte i = i mod 256, 24 bytes per read, reads shared with
 * the clients in the order of the README), through kd_crypto_set_nonce_fn.
 *
 * One deliberate difference: the transcripts (v1.36.2) carry the old 32-byte
 * PeerGone; current servers append a reason byte (spec §6.8), so the
 * expected frame is rewritten to the 33-byte form with reason 0x00. */
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

#include "derp_crypto.h"
#include "harness.h"

#define MAX_CHUNKS 64
#define KD_TEST_101_LEN 172 /* the 101 response for any 32-byte key */

struct chunk {
	int seq;
	int conn;
	bool c2s;
	uint8_t *bytes;
	size_t len;
};

struct transcript {
	uint8_t server_priv[32];
	char conn_names[4][8];
	uint8_t client_priv[4][32];
	int nconns;
	struct chunk chunks[MAX_CHUNKS];
	int nchunks;
	bool fixed_server_nonces;
};

/* --- a scanner for the transcript JSON: string literals in order --- */

static const char *next_string(const char *p, const char **start, size_t *len)
{
	p = strchr(p, '"');
	if (!p)
		return NULL;
	*start = ++p;
	while (*p && *p != '"') {
		if (*p == '\\' && p[1])
			p++;
		p++;
	}
	*len = (size_t)(p - *start);
	return *p ? p + 1 : NULL;
}

static bool is_chunk(const char *s, size_t n)
{
	if (n < 9 || s[3] != ' ' || s[7] != ' ')
		return false;
	for (int i = 0; i < 3; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return !strncmp(s + 4, "c2s", 3) || !strncmp(s + 4, "s2c", 3);
}

static int cmp_chunk(const void *a, const void *b)
{
	return ((const struct chunk *)a)->seq - ((const struct chunk *)b)->seq;
}

static void load_transcript(const char *file, struct transcript *t)
{
	char path[512];
	size_t flen;
	const char *s, *p;
	size_t n;
	char prev[64] = "";

	memset(t, 0, sizeof(*t));
	snprintf(path, sizeof(path), "%s/%s", ts_vectors_dir(), file);
	char *json = ts_read_file(path, &flen);
	if (!json)
		fail_msg("cannot read %s (run the tests from the repository root or set KD_VECTORS_DIR)", path);
	t->fixed_server_nonces = strstr(json, "\"deterministic_crypto_rand\": true") != NULL &&
				 strstr(json, "in-process") != NULL;
	p = json;
	t->nconns = -1;
	while ((p = next_string(p, &s, &n)) != NULL) {
		bool is_key = *p == ':' || (*p == ' ' && p[1] == ':');
		if (is_key) {
			snprintf(prev, sizeof(prev), "%.*s", (int)(n < 63 ? n : 63), s);
			continue;
		}
		if (!strcmp(prev, "server_private_hex") && n == 64) {
			uint8_t *b;
			size_t bl;
			assert_int_equal(ts_hex_decode(s, n, &b, &bl), 0);
			memcpy(t->server_priv, b, 32);
			free(b);
		} else if (!strcmp(prev, "name") && n < 8) {
			t->nconns++;
			assert_true(t->nconns < 4);
			snprintf(t->conn_names[t->nconns], 8, "%.*s", (int)n, s);
		} else if (!strcmp(prev, "client_private_hex") && n == 64 && t->nconns >= 0) {
			uint8_t *b;
			size_t bl;
			assert_int_equal(ts_hex_decode(s, n, &b, &bl), 0);
			memcpy(t->client_priv[t->nconns], b, 32);
			free(b);
		} else if (!strcmp(prev, "chunks") && is_chunk(s, n)) {
			assert_true(t->nchunks < MAX_CHUNKS);
			struct chunk *c = &t->chunks[t->nchunks++];
			c->seq = atoi(s);
			c->conn = t->nconns;
			c->c2s = !strncmp(s + 4, "c2s", 3);
			assert_int_equal(ts_hex_decode(s + 8, n - 8, &c->bytes, &c->len), 0);
			continue; /* stay inside the chunks array */
		}
		if (strcmp(prev, "chunks") != 0)
			prev[0] = '\0';
	}
	t->nconns++;
	free(json);
	assert_true(t->nconns >= 2);
	assert_true(t->nchunks > 4);
	qsort(t->chunks, (size_t)t->nchunks, sizeof(t->chunks[0]), cmp_chunk);
}

static void free_transcript(struct transcript *t)
{
	for (int i = 0; i < t->nchunks; i++)
		free(t->chunks[i].bytes);
}

/* --- the deterministic nonce stream --- */

static unsigned g_reads;

static void det_nonce(uint8_t nonce[DERP_NONCE_LEN])
{
	for (unsigned i = 0; i < DERP_NONCE_LEN; i++)
		nonce[i] = (uint8_t)((g_reads * DERP_NONCE_LEN + i) & 0xff);
	g_reads++;
}

/* Expected server bytes, with the protocol's changes since v1.36 applied. */
static uint8_t *modernize(const uint8_t *in, size_t len, size_t *out_len)
{
	uint8_t *out = malloc(len + 16);
	size_t o = 0;

	for (size_t i = 0; i < len;) {
		/* a chunk may start with the HTTP response: copy up to the frames */
		if (i == 0 && len > 4 && !memcmp(in, "HTTP", 4)) {
			const uint8_t *end = memmem(in, len, "\r\n\r\n", 4);
			assert_non_null(end);
			size_t h = (size_t)(end - in) + 4;
			memcpy(out, in, h);
			o = i = h;
			continue;
		}
		assert_true(len - i >= 5);
		uint32_t flen = derp_hdr_len((const struct derp_frame_hdr *)(in + i));
		assert_true(len - i - 5 >= flen);
		if (in[i] == DERP_FRAME_PEER_GONE && flen == DERP_KEY_LEN) {
			struct derp_frame_hdr h;
			derp_hdr_put(&h, DERP_FRAME_PEER_GONE, DERP_PEER_GONE_LEN);
			memcpy(out + o, &h, 5);
			memcpy(out + o + 5, in + i + 5, DERP_KEY_LEN);
			out[o + 5 + DERP_KEY_LEN] = DERP_PEER_GONE_DISCONNECTED;
			o += 5 + DERP_PEER_GONE_LEN;
		} else {
			memcpy(out + o, in + i, 5 + flen);
			o += 5 + flen;
		}
		i += 5 + flen;
	}
	*out_len = o;
	return out;
}

/* When the recording's server nonces were random, the ServerInfo box
 * cannot match byte for byte: check that it opens with the client's key
 * to exactly {"version":2} and compare everything else. */
static void check_server_info_box(const uint8_t *got, const uint8_t *want, size_t len, const uint8_t *client_priv,
				  const uint8_t *server_pub)
{
	for (size_t i = 0; i + 5 <= len;) {
		uint32_t flen = derp_hdr_len((const struct derp_frame_hdr *)(want + i));
		if (i == 0 && !memcmp(want, "HTTP", 4)) {
			const uint8_t *end = memmem(want, len, "\r\n\r\n", 4);
			i = (size_t)(end - want) + 4;
			continue;
		}
		if (want[i] == DERP_FRAME_SERVER_INFO) {
			assert_memory_equal(got + i, want + i, 5);
			uint8_t plain[64];
			assert_int_equal(kd_box_open(plain, sizeof(plain), got + i + 5, flen, server_pub, client_priv), 0);
			assert_memory_equal(plain, "{\"version\":2}", 13);
			assert_int_equal(flen - KD_BOX_OVERHEAD, 13);
		} else {
			assert_memory_equal(got + i, want + i, 5 + flen);
		}
		i += 5 + flen;
	}
}

static void replay(const char *file)
{
	struct transcript t;
	struct ts_server ts;
	int fds[4] = {-1, -1, -1, -1};
	int last_chunk[4] = {0};

	load_transcript(file, &t);
	for (int i = 0; i < t.nchunks; i++)
		last_chunk[t.chunks[i].conn] = i;
	g_reads = 0;
	kd_crypto_set_nonce_fn(t.fixed_server_nonces ? det_nonce : NULL);
	assert_int_equal(ts_start(&ts, NULL, t.server_priv), 0);

	for (int i = 0; i < t.nchunks; i++) {
		struct chunk *c = &t.chunks[i];
		if (fds[c->conn] < 0) {
			fds[c->conn] = ts_connect(ts.port);
			assert_true(fds[c->conn] >= 0);
		}
		if (c->c2s) {
			/* a ClientInfo consumes one read of the shared stream on the client side */
			const uint8_t *ci = c->bytes;
			if (c->len > 5 && (ci[0] == DERP_FRAME_CLIENT_INFO ||
					   (memmem(ci, c->len, "\r\n\r\n\x02", 5) != NULL)))
				g_reads++;
			assert_int_equal(ts_write_all(fds[c->conn], c->bytes, c->len), 0);
		} else {
			size_t want_len;
			uint8_t *want = modernize(c->bytes, c->len, &want_len);
			uint8_t *got = malloc(want_len);
			int r = ts_read_exact(fds[c->conn], got, want_len, 5000);
			if (r != 0)
				fail_msg("%s chunk %03d (conn %s): read %zu bytes: %s", file, c->seq,
					 t.conn_names[c->conn], want_len, strerror(-r));
			if (t.fixed_server_nonces)
				assert_memory_equal(got, want, want_len);
			else
				check_server_info_box(got, want, want_len, t.client_priv[c->conn],
						      ts.cfg.keys.pub);
			free(got);
			free(want);
		}
		/* a connection with no chunks left disconnects, as in the recording */
		if (i == last_chunk[c->conn] && c->conn == 0) {
			close(fds[c->conn]);
			fds[c->conn] = -2;
		}
	}
	for (int i = 0; i < 4; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	ts_stop(&ts);
	kd_crypto_set_nonce_fn(NULL);
	free_transcript(&t);
}

static void test_transcript_canackpings(void **state)
{
	(void)state;
	replay("transcript-v1.36.2-canackpings.json");
}

static void test_transcript_nocanackpings(void **state)
{
	(void)state;
	replay("transcript-v1.36.2-nocanackpings.json");
}

/* Recorded against a real derper whose private key is not in the vector:
 * its ClientInfo is sealed to another server's key. Replayed here, kderpd
 * must answer the upgrade with its own key and then refuse the box, count
 * the failure and close, without a byte of ServerInfo. */
static void test_transcript_tcp_external_foreign_key(void **state)
{
	struct transcript t;
	struct ts_server ts;
	(void)state;

	load_transcript("transcript-v1.36.2-tcp-external.json", &t);
	assert_int_equal(ts_start(&ts, NULL, NULL), 0);
	int fd = ts_connect(ts.port);
	assert_true(fd >= 0);
	/* chunk 0: the HTTP request; chunk 2: ClientInfo (conn A) */
	assert_true(t.chunks[0].c2s && t.chunks[2].c2s && t.chunks[2].bytes[0] == DERP_FRAME_CLIENT_INFO);
	assert_int_equal(ts_write_all(fd, t.chunks[0].bytes, t.chunks[0].len), 0);
	char resp[512];
	size_t want = KD_TEST_101_LEN + 45;
	assert_int_equal(ts_read_exact(fd, resp, want, 5000), 0);
	assert_memory_equal(resp, "HTTP/1.1 101 Switching Protocols\r\n", 34);
	assert_memory_equal(resp + KD_TEST_101_LEN + 13, ts.cfg.keys.pub, 32);
	long long before = ts_metric(&ts, "kderp_handshake_errors_total{reason=\"box_open\"}");
	assert_int_equal(ts_write_all(fd, t.chunks[2].bytes, t.chunks[2].len), 0);
	assert_true(ts_wait_closed(fd, 5000));
	assert_int_equal(ts_metric(&ts, "kderp_handshake_errors_total{reason=\"box_open\"}"), before + 1);
	close(fd);
	ts_stop(&ts);
	free_transcript(&t);
}

/* hello-*.txt: one handshake each with a ClientInfo variant. Lines
 * "c2s hex: ..." and "s2c hex: ..." hold the streams; the s2c side is the
 * frames after the 101 response, with a random ServerInfo nonce. */
static void hello(const char *file)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", ts_vectors_dir(), file);
	char *txt = ts_read_file(path, NULL);
	assert_non_null(txt);
	char *c2s = strstr(txt, "c2s hex: "), *s2c = strstr(txt, "s2c hex: ");
	assert_non_null(c2s);
	assert_non_null(s2c);
	c2s += 9;
	s2c += 9;
	uint8_t *req, *want, priv_a[32], server_priv[32];
	size_t req_len, want_len;
	assert_int_equal(ts_hex_decode(c2s, strcspn(c2s, "\n"), &req, &req_len), 0);
	assert_int_equal(ts_hex_decode(s2c, strcspn(s2c, "\n"), &want, &want_len), 0);
	memset(priv_a, 0x02, 32);
	memset(server_priv, 0x01, 32);

	struct ts_server ts;
	assert_int_equal(ts_start(&ts, NULL, server_priv), 0);
	int fd = ts_connect(ts.port);
	assert_true(fd >= 0);
	assert_int_equal(ts_write_all(fd, req, req_len), 0);
	static const char resp101[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
				      "Derp-Version: 2\r\nDerp-Public-Key: "
				      "a4e09292b651c278b9772c569f5fa9bb13d906b46ab68c9df9dc2b4409f8a209\r\n\r\n";
	char got101[sizeof(resp101) - 1];
	assert_int_equal(ts_read_exact(fd, got101, sizeof(got101), 5000), 0);
	assert_memory_equal(got101, resp101, sizeof(got101));
	uint8_t *got = malloc(want_len);
	assert_int_equal(ts_read_exact(fd, got, want_len, 5000), 0);
	check_server_info_box(got, want, want_len, priv_a, ts.cfg.keys.pub);
	close(fd);
	ts_stop(&ts);
	free(got);
	free(req);
	free(want);
	free(txt);
}

static void test_hello_v136(void **state)
{
	(void)state;
	hello("hello-v1.36style.txt");
}

static void test_hello_appname(void **state)
{
	(void)state;
	hello("hello-HEADstyle-appname.txt");
}

static void test_hello_meshkey_first(void **state)
{
	(void)state;
	hello("hello-HEADstyle-meshkey-first.txt");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_transcript_canackpings),
		cmocka_unit_test(test_transcript_nocanackpings),
		cmocka_unit_test(test_transcript_tcp_external_foreign_key),
		cmocka_unit_test(test_hello_v136),
		cmocka_unit_test(test_hello_appname),
		cmocka_unit_test(test_hello_meshkey_first),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
