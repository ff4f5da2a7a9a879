// SPDX-License-Identifier: MIT
/* HTTP parser, routing and every endpoint's exact bytes (spec §3). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "key.h"

/* The input sits at the very end of its own allocation, so ASan flags any
 * read past len (the picohttpparser guard-page idea). */
static int parse_exact(const char *s, size_t len, struct kd_http_request *req)
{
	char *buf = malloc(len ? len : 1);
	int rc;

	assert_non_null(buf);
	memcpy(buf, s, len);
	rc = kd_http_parse_request(buf, len, req);
	free(buf);
	return rc;
}

static void assert_span(const char *p, size_t n, const char *want)
{
	assert_int_equal(n, strlen(want));
	assert_memory_equal(p, want, n);
}

static void test_parse_basic(void **state)
{
	static const char r[] = "GET /derp/probe?t=1&x=y HTTP/1.1\r\nHost: derp.test\r\n"
				"X-Pad:   spaced value \t \r\nEmpty:\r\n\r\n";
	struct kd_http_request req;
	(void)state;

	assert_int_equal(kd_http_parse_request(r, strlen(r), &req), (int)strlen(r));
	assert_span(req.method, req.method_len, "GET");
	assert_span(req.target, req.target_len, "/derp/probe?t=1&x=y");
	assert_span(req.path, req.path_len, "/derp/probe");
	assert_span(req.query, req.query_len, "t=1&x=y");
	assert_int_equal(req.minor_version, 1);
	assert_int_equal(req.num_headers, 3);
	assert_span(req.headers[0].name, req.headers[0].name_len, "Host");
	assert_span(req.headers[1].value, req.headers[1].value_len, "spaced value");
	assert_int_equal(req.headers[2].value_len, 0);

	assert_ptr_equal(kd_http_find(&req, "x-PAD"), &req.headers[1]);
	assert_null(kd_http_find(&req, "X-Pa"));
	assert_true(kd_http_header_eq(kd_http_find(&req, "host"), "DERP.test", true));
	assert_false(kd_http_header_eq(kd_http_find(&req, "host"), "DERP.test", false));
	assert_false(kd_http_header_eq(NULL, "x", true));
}

static void test_parse_forms(void **state)
{
	struct kd_http_request req;
	const char *r;
	(void)state;

	r = "GET http://derp.test:80/derp?x HTTP/1.0\n\n";
	assert_int_equal(kd_http_parse_request(r, strlen(r), &req), (int)strlen(r));
	assert_span(req.path, req.path_len, "/derp");
	assert_span(req.query, req.query_len, "x");
	assert_int_equal(req.minor_version, 0);

	r = "GET HTTPS://h?q HTTP/1.1\r\n\r\n";
	assert_int_equal(kd_http_parse_request(r, strlen(r), &req), (int)strlen(r));
	assert_int_equal(req.path_len, 0);
	assert_span(req.query, req.query_len, "q");

	r = "CONNECT controlplane.tailscale.com:443 HTTP/1.1\r\n\r\n";
	assert_int_equal(kd_http_parse_request(r, strlen(r), &req), (int)strlen(r));
	assert_span(req.path, req.path_len, "controlplane.tailscale.com:443");

	/* RFC 9112 §2.2: empty lines before the request line are ignored */
	r = "\r\n\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
	assert_int_equal(kd_http_parse_request(r, strlen(r), &req), (int)strlen(r));
	assert_span(req.method, req.method_len, "GET");

	/* obs-text is allowed in values */
	r = "GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n";
	assert_int_equal(kd_http_parse_request(r, strlen(r), &req), (int)strlen(r));
}

static void test_parse_pipelined(void **state)
{
	static const char two[] = "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n";
	/* a fast-start client pipelines its ClientInfo frame behind the headers */
	static const char fast[] = "GET /derp HTTP/1.1\r\nHost: h\r\nDerp-Fast-Start: 1\r\nUpgrade: DERP\r\n\r\n"
				   "\x02\x00\x00\x00\x68\r\n\r\n";
	struct kd_http_request req;
	int n;
	(void)state;

	n = kd_http_parse_request(two, sizeof(two) - 1, &req);
	assert_int_equal(n, 28);
	assert_span(req.path, req.path_len, "/a");
	assert_int_equal(kd_http_parse_request(two + n, sizeof(two) - 1 - (size_t)n, &req), 28);
	assert_span(req.path, req.path_len, "/b");

	n = kd_http_parse_request(fast, sizeof(fast) - 1, &req);
	assert_int_equal(n, (int)(sizeof(fast) - 1 - 9));
	assert_memory_equal(fast + n, "\x02\x00\x00\x00\x68", 5);
}

static const char *const valid_requests[] = {
	"GET /derp HTTP/1.1\r\nHost: derp.test\r\nUser-Agent: Go-http-client/1.1\r\nConnection: Upgrade\r\n"
	"Upgrade: DERP\r\n\r\n",
	"GET / HTTP/1.0\r\n\r\n",
	"\r\nHEAD /generate_204 HTTP/1.1\nHost: x\nX-Tailscale-Challenge: ts_1.2.3.4\n\n",
	"GET /derp HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	"Sec-WebSocket-Protocol:  derp \r\n\r\n",
};

/* Every strict prefix is "incomplete", never "malformed", and the whole
 * input then parses the same: the loop can call after every read. */
static void test_parse_every_split(void **state)
{
	(void)state;
	for (size_t k = 0; k < sizeof(valid_requests) / sizeof(valid_requests[0]); k++) {
		const char *r = valid_requests[k];
		size_t len = strlen(r);
		struct kd_http_request whole, part;

		assert_int_equal(parse_exact(r, len, &whole), (int)len);
		for (size_t i = 0; i < len; i++)
			assert_int_equal(parse_exact(r, i, &part), KD_HTTP_PARSE_INCOMPLETE);
		assert_int_equal(parse_exact(r, len, &part), (int)len);
		assert_int_equal(part.num_headers, whole.num_headers);
		assert_int_equal(part.method_len, whole.method_len);
		assert_int_equal(part.path_len, whole.path_len);
		for (size_t h = 0; h < whole.num_headers; h++)
			assert_int_equal(part.headers[h].value_len, whole.headers[h].value_len);
	}
}

static void test_parse_malformed(void **state)
{
	static const struct {
		const char *s;
		size_t len; /* 0: strlen */
	} bad[] = {
		{"GET /\r\n\r\n", 0},                         /* no version */
		{"GET  / HTTP/1.1\r\n\r\n", 0},               /* empty target */
		{"GET / HTTP/2.0\r\n\r\n", 0},
		{"GET / HTTX/1.1\r\n\r\n", 0},
		{"GET / HTTP/1.x\r\n\r\n", 0},
		{"GET / HTTP/1.1 \r\n\r\n", 0},
		{" GET / HTTP/1.1\r\n\r\n", 0},
		{"G(T / HTTP/1.1\r\n\r\n", 0},
		{"GET / HTTP/1.1\rX\r\n\r\n", 0},           /* CR without LF */
		{"GET /a\x01 HTTP/1.1\r\n\r\n", 0},
		{"GET / HTTP/1.1\r\nHost h\r\n\r\n", 0},     /* header without colon */
		{"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 0},   /* space before colon */
		{"GET / HTTP/1.1\r\n: h\r\n\r\n", 0},        /* empty name */
		{"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", 0}, /* obs-fold */
		{"GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n", 0},
		{"GET / HTTP/1.1\r\nA: b\0c\r\n\r\n", 26},   /* NUL in a value */
		{"GET /\0 HTTP/1.1\r\n\r\n", 19},            /* NUL in the target */
		{"GET / HTTP/1.1\r\nA\0: b\r\n\r\n", 25},    /* NUL in a name */
		{"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11}, /* a TLS ClientHello */
	};
	struct kd_http_request req;
	(void)state;

	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		size_t len = bad[k].len ? bad[k].len : strlen(bad[k].s);
		bool seen_bad = false;

		assert_int_equal(parse_exact(bad[k].s, len, &req), KD_HTTP_PARSE_MALFORMED);
		assert_int_equal(kd_http_parse_error_status(bad[k].s, len), 400);
		/* once malformed, more bytes never make it acceptable */
		for (size_t i = 0; i <= len; i++) {
			int rc = parse_exact(bad[k].s, i, &req);
			assert_true(rc == KD_HTTP_PARSE_INCOMPLETE || rc == KD_HTTP_PARSE_MALFORMED);
			if (seen_bad)
				assert_int_equal(rc, KD_HTTP_PARSE_MALFORMED);
			seen_bad |= rc == KD_HTTP_PARSE_MALFORMED;
		}
	}
}

static void test_parse_limits(void **state)
{
	char *big = malloc(KD_HTTP_MAX_REQUEST + 100);
	struct kd_http_request req;
	char out[512];
	size_t n = 0, out_len;
	(void)state;

	assert_non_null(big);
	/* exactly KD_HTTP_MAX_HEADERS headers is fine, one more is 431 */
	n = (size_t)sprintf(big, "GET / HTTP/1.1\r\n");
	for (int i = 0; i < KD_HTTP_MAX_HEADERS; i++)
		n += (size_t)sprintf(big + n, "H%d: v\r\n", i);
	memcpy(big + n, "\r\n", 2);
	assert_int_equal(kd_http_parse_request(big, n + 2, &req), (int)n + 2);
	assert_int_equal(req.num_headers, KD_HTTP_MAX_HEADERS);
	n += (size_t)sprintf(big + n, "Hx: v\r\n\r\n");
	assert_int_equal(kd_http_parse_request(big, n, &req), KD_HTTP_PARSE_MALFORMED);
	assert_int_equal(kd_http_parse_error_status(big, n), 431);

	/* a header block that does not end within the cap */
	n = (size_t)sprintf(big, "GET / HTTP/1.1\r\nX: ");
	memset(big + n, 'a', KD_HTTP_MAX_REQUEST + 100 - n);
	assert_int_equal(kd_http_parse_request(big, KD_HTTP_MAX_REQUEST - 1, &req), KD_HTTP_PARSE_INCOMPLETE);
	assert_int_equal(kd_http_parse_request(big, KD_HTTP_MAX_REQUEST, &req), KD_HTTP_PARSE_MALFORMED);
	assert_int_equal(kd_http_parse_request(big, KD_HTTP_MAX_REQUEST + 100, &req), KD_HTTP_PARSE_MALFORMED);
	assert_int_equal(kd_http_parse_error_status(big, KD_HTTP_MAX_REQUEST + 100), 431);
	assert_int_equal(kd_http_parse_error_response(big, KD_HTTP_MAX_REQUEST, out, sizeof(out), &out_len), 0);
	out[out_len] = '\0';
	assert_string_equal(out, "HTTP/1.1 431 Request Header Fields Too Large\r\n"
				 "Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
				 "Content-Length: 35\r\n\r\n431 Request Header Fields Too Large");

	/* a complete block just under the cap still parses */
	n = KD_HTTP_MAX_REQUEST - 4;
	memcpy(big + n, "\r\n\r\n", 4);
	assert_int_equal(kd_http_parse_request(big, KD_HTTP_MAX_REQUEST + 100, &req), KD_HTTP_MAX_REQUEST);
	free(big);

	assert_int_equal(kd_http_parse_error_response("GET /\r\n\r\n", 9, out, sizeof(out), &out_len), 0);
	out[out_len] = '\0';
	assert_string_equal(out, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
				 "Connection: close\r\nContent-Length: 15\r\n\r\n400 Bad Request");
}

static void test_tokens_and_query(void **state)
{
	static const char r[] = "GET /debug/?debugkey=a%2Fb+c&bad=%zz&debugkey=second&flag&k%3D=v HTTP/1.1\r\n"
				"Connection: keep-alive\r\nConnection: foo, Upgrade ,bar\r\n\r\n";
	struct kd_http_request req;
	char v[16];
	(void)state;

	assert_int_equal(kd_http_parse_request(r, strlen(r), &req), (int)strlen(r));
	assert_true(kd_http_has_token(&req, "connection", "upgrade"));
	assert_true(kd_http_has_token(&req, "Connection", "KEEP-ALIVE"));
	assert_false(kd_http_has_token(&req, "Connection", "close"));
	assert_false(kd_http_has_token(&req, "Connection", "upgrad"));

	assert_int_equal(kd_http_query_param(&req, "debugkey", v, sizeof(v)), 5);
	assert_string_equal(v, "a/b c");
	assert_int_equal(kd_http_query_param(&req, "bad", v, sizeof(v)), -ENOENT);
	assert_int_equal(kd_http_query_param(&req, "flag", v, sizeof(v)), 0);
	assert_string_equal(v, "");
	assert_int_equal(kd_http_query_param(&req, "k=", v, sizeof(v)), 1);
	assert_int_equal(kd_http_query_param(&req, "nope", v, sizeof(v)), -ENOENT);
	assert_int_equal(kd_http_query_param(&req, "debugkey", v, 3), -ENOSPC);
}

/* --- routing ------------------------------------------------------------ */

static const uint8_t vector_pub[32] = {
	0xa4, 0xe0, 0x92, 0x92, 0xb6, 0x51, 0xc2, 0x78, 0xb9, 0x77, 0x2c, 0x56, 0x9f, 0x5f, 0xa9, 0xbb,
	0x13, 0xd9, 0x06, 0xb4, 0x6a, 0xb6, 0x8c, 0x9d, 0xf9, 0xdc, 0x2b, 0x44, 0x09, 0xf8, 0xa2, 0x09,
};

static char out[8192];
static size_t out_len;
static struct kd_http_result res;
static struct kd_http_route_opts opts;

static int setup_opts(void **state)
{
	(void)state;
	memset(&opts, 0, sizeof(opts));
	opts.server_pub = vector_pub;
	opts.derp_enabled = true;
	opts.home = "";
	memset(&res, 0xaa, sizeof(res));
	return 0;
}

/* Parses one complete request and routes it; out is NUL-terminated. */
static void route(const char *raw)
{
	static char buf[KD_HTTP_MAX_REQUEST];
	static struct kd_http_request req;
	size_t len = strlen(raw);

	memcpy(buf, raw, len);
	assert_int_equal(kd_http_parse_request(buf, len, &req), (int)len);
	assert_int_equal(kd_http_route(&req, &opts, &res, out, sizeof(out) - 1, &out_len), 0);
	out[out_len] = '\0';
}

#define BROWSER                                                                                        \
	"Strict-Transport-Security: max-age=63072000; includeSubDomains\r\n"                           \
	"Content-Security-Policy: default-src 'self'; frame-ancestors 'none'; form-action 'self'; "    \
	"base-uri 'self'; block-all-mixed-content; object-src 'none'\r\n"                              \
	"X-Frame-Options: DENY\r\nX-Content-Type-Options: nosniff\r\n"
#define TEXT_ERR "Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n"

static void test_derp_upgrade_vector(void **state)
{
	/* transcript-v1.36.2-canackpings, connection A, byte for byte */
	static const char vec_req[] = "GET /derp HTTP/1.1\r\nHost: derp.test\r\nUser-Agent: Go-http-client/1.1\r\n"
				      "Connection: Upgrade\r\nUpgrade: DERP\r\n\r\n";
	static const char vec_resp[] =
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\nDerp-Version: 2\r\n"
		"Derp-Public-Key: a4e09292b651c278b9772c569f5fa9bb13d906b46ab68c9df9dc2b4409f8a209\r\n\r\n";
	/* spec Appendix A */
	static const char appx_resp[] =
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\nDerp-Version: 2\r\n"
		"Derp-Public-Key: 8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f\r\n\r\n";
	uint8_t appx_pub[32];
	char small[171];
	size_t n;
	(void)state;

	assert_int_equal(sizeof(vec_req) - 1, 107);
	assert_int_equal(sizeof(vec_resp) - 1, KD_HTTP_DERP_UPGRADE_LEN);
	route(vec_req);
	assert_int_equal(res.action, KD_HTTP_UPGRADE_DERP);
	assert_int_equal(res.status, 101);
	assert_false(res.fast_start);
	assert_false(res.not_ideal);
	assert_false(res.keep_alive);
	assert_int_equal(out_len, 172);
	assert_memory_equal(out, vec_resp, 172);

	assert_int_equal(kd_key_parse_public(appx_pub, "8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f"),
			 0);
	assert_int_equal(kd_http_derp_upgrade_response(out, sizeof(out), &n, appx_pub), 0);
	assert_int_equal(n, sizeof(appx_resp) - 1);
	assert_memory_equal(out, appx_resp, n);
	assert_int_equal(kd_http_derp_upgrade_response(small, sizeof(small), &n, appx_pub), -ENOSPC);
	assert_int_equal(n, 0);
}

/* shared/vectors/hello-HEADstyle-appname.txt: the client's bytes arrive as
 * one stream, request then ClientInfo. The parser must stop exactly at the
 * frame, which stays in the buffer for the DERP handshake. */
static void test_vector_c2s_stream(void **state)
{
	static const char hex[] =
		"474554202f6465727020485454502f312e310d0a486f73743a203132372e302e302e313a34333334300d0a557365722d"
		"4167656e743a20476f2d687474702d636c69656e742f312e310d0a436f6e6e656374696f6e3a20557067726164650d0a"
		"557067726164653a20444552500d0a0d0a0200000080ce8d3ad1ccb633ec7b70c17814a5c76ecd029685050d344745ba"
		"05870e587d59000102030405060708090a0b0c0d0e0f101112131415161778b6993036c8569bb9b6d8cd3f0b7f2199ed"
		"f5a6e8428f59d77442f5e0be4499b5921f8df3dea5157262615652658990e42cb5f816f57bb499bcff2dacc9e288a9cc"
		"dc23a6f34936";
	static uint8_t bytes[sizeof(hex) / 2];
	struct kd_http_request req;
	size_t len = (sizeof(hex) - 1) / 2;
	int n;
	(void)state;

	assert_int_equal(kd_hex_decode(bytes, len, hex, sizeof(hex) - 1), 0);
	n = kd_http_parse_request((const char *)bytes, len, &req);
	assert_int_equal(n, 113); /* "GET /derp ... Upgrade: DERP\r\n\r\n" */
	assert_int_equal(len - (size_t)n, 5 + 0x80);
	assert_memory_equal(bytes + n, "\x02\x00\x00\x00\x80", 5);
	assert_int_equal(kd_http_route(&req, &opts, &res, out, sizeof(out), &out_len), 0);
	assert_int_equal(res.action, KD_HTTP_UPGRADE_DERP);
	assert_int_equal(out_len, KD_HTTP_DERP_UPGRADE_LEN);
}

static void test_derp_upgrade_variants(void **state)
{
	(void)state;
	/* fast start: not one response byte */
	route("GET /derp HTTP/1.1\r\nHost: h\r\nUpgrade: DERP\r\nDerp-Fast-Start: 1\r\nIdeal-Node: 1a\r\n\r\n");
	assert_int_equal(res.action, KD_HTTP_UPGRADE_DERP);
	assert_true(res.fast_start);
	assert_true(res.not_ideal);
	assert_int_equal(out_len, 0);

	/* "1" is compared exactly; an empty Ideal-Node is ideal; method and
	 * Connection are not checked; Upgrade is case-insensitive */
	route("POST /derp HTTP/1.1\r\nHost: h\r\nUpgrade: dErP\r\nDerp-Fast-Start: true\r\nIdeal-Node:\r\n\r\n");
	assert_int_equal(res.action, KD_HTTP_UPGRADE_DERP);
	assert_false(res.fast_start);
	assert_false(res.not_ideal);
	assert_int_equal(out_len, 172);

	/* legacy "websocket" clients that speak raw DERP get the same 101 */
	route("GET /derp HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\n\r\n");
	assert_int_equal(res.action, KD_HTTP_UPGRADE_DERP);
	assert_int_equal(out_len, 172);
	assert_memory_equal(out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\n", 49);

	route("GET /derp HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_int_equal(res.action, KD_HTTP_RESPOND);
	assert_int_equal(res.status, 426);
	assert_true(res.keep_alive);
	assert_string_equal(out, "HTTP/1.1 426 Upgrade Required\r\n" TEXT_ERR
				 "Content-Length: 33\r\n\r\nDERP requires connection upgrade\n");
	route("GET /derp HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: close\r\n\r\n");
	assert_int_equal(res.status, 426);
	assert_false(res.keep_alive);
	assert_string_equal(out, "HTTP/1.1 426 Upgrade Required\r\n" TEXT_ERR
				 "Connection: close\r\nContent-Length: 33\r\n\r\nDERP requires connection upgrade\n");

	opts.derp_enabled = false;
	route("GET /derp HTTP/1.1\r\nHost: h\r\nUpgrade: DERP\r\n\r\n");
	assert_int_equal(res.action, KD_HTTP_RESPOND);
	assert_string_equal(out, "HTTP/1.1 404 Not Found\r\n" TEXT_ERR
				 "Content-Length: 21\r\n\r\nderp server disabled\n");
}

static void test_derp_websocket(void **state)
{
	(void)state;
	route("GET /derp HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
	      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	      "Sec-WebSocket-Protocol: derp\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n");
	assert_int_equal(res.action, KD_HTTP_UPGRADE_WEBSOCKET);
	assert_int_equal(res.status, 101);
	assert_false(res.keep_alive);
	assert_string_equal(out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
				 "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
				 "Sec-WebSocket-Protocol: derp\r\n\r\n");

	/* "derp" appears as a substring only: accepted, then closed with 1008 */
	route("GET /derp HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
	      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	      "Sec-WebSocket-Protocol: derpy\r\n\r\n");
	assert_int_equal(res.action, KD_HTTP_RESPOND);
	assert_int_equal(res.status, 101);
	assert_false(res.keep_alive);
	{
		static const char hs[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
					 "Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
		static const char reason[] = "client must speak the derp subprotocol";
		size_t hl = sizeof(hs) - 1;

		assert_int_equal(out_len, hl + 4 + sizeof(reason) - 1);
		assert_memory_equal(out, hs, hl);
		assert_memory_equal(out + hl, "\x88\x28\x03\xf0", 4); /* FIN|close, 40 bytes, 1008 */
		assert_memory_equal(out + hl + 4, reason, sizeof(reason) - 1);
	}

	route("GET /derp HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
	      "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	      "Sec-WebSocket-Protocol: derp\r\n\r\n");
	assert_int_equal(res.action, KD_HTTP_RESPOND);
	assert_string_equal(out, "HTTP/1.1 400 Bad Request\r\n" TEXT_ERR "Sec-WebSocket-Version: 13\r\n"
				 "Content-Length: 62\r\n\r\n"
				 "unsupported WebSocket protocol version (only 13 is supported)\n");

	route("GET /derp HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
	      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: derp\r\n\r\n");
	assert_int_equal(res.status, 400);
	assert_non_null(strstr(out, "\r\n\r\nWebSocket protocol violation: missing Sec-WebSocket-Key\n"));

	route("GET /derp HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
	      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	      "Sec-WebSocket-Protocol: derp\r\n\r\n");
	assert_int_equal(res.status, 426);
	assert_non_null(strstr(out, "Connection: Upgrade\r\nUpgrade: websocket\r\n"));
}

static void test_probe(void **state)
{
	static const char ok[] = "HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\nContent-Length: 0\r\n\r\n";
	(void)state;
	route("GET /derp/probe HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_string_equal(out, ok);
	assert_int_equal(res.status, 200);
	assert_true(res.keep_alive);
	route("HEAD /derp/latency-check HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_string_equal(out, ok);
	route("POST /derp/latency-check HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
	assert_int_equal(res.status, 405);
	assert_true(res.keep_alive);
	assert_string_equal(out, "HTTP/1.1 405 Method Not Allowed\r\n" TEXT_ERR
				 "Content-Length: 19\r\n\r\nbogus probe method\n");
	/* a body we will not read forbids keep-alive */
	route("POST /derp/probe HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n");
	assert_false(res.keep_alive);
	assert_non_null(strstr(out, "Connection: close\r\n"));
}

static void test_generate_204(void **state)
{
#define NOCACHE "Cache-Control: no-cache, no-store, must-revalidate, no-transform, max-age=0\r\n"
	char req[256], want[256];
	(void)state;

	/* spec Appendix A */
	route("GET /generate_204?t=1700000000 HTTP/1.1\r\nHost: 192.0.2.1\r\nX-Tailscale-Challenge: ts_192.0.2.1\r\n\r\n");
	assert_int_equal(res.status, 204);
	assert_string_equal(out, "HTTP/1.1 204 No Content\r\nX-Tailscale-Response: response ts_192.0.2.1\r\n" NOCACHE
				 "\r\n");
	route("GET /generate_204 HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_string_equal(out, "HTTP/1.1 204 No Content\r\n" NOCACHE "\r\n");
	route("GET /generate_204 HTTP/1.1\r\nHost: h\r\nX-Tailscale-Challenge: a/b\r\n\r\n");
	assert_string_equal(out, "HTTP/1.1 204 No Content\r\n" NOCACHE "\r\n");
	route("POST /generate_204 HTTP/1.1\r\nHost: h\r\nX-Tailscale-Challenge: Az09._:-\r\n\r\n");
	assert_string_equal(out, "HTTP/1.1 204 No Content\r\nX-Tailscale-Response: response Az09._:-\r\n" NOCACHE
				 "\r\n");

	/* 64 characters is the limit */
	snprintf(req, sizeof(req), "GET /generate_204 HTTP/1.1\r\nHost: h\r\nX-Tailscale-Challenge: %.64s\r\n\r\n",
		 "0123456789012345678901234567890123456789012345678901234567890123456789");
	route(req);
	snprintf(want, sizeof(want), "HTTP/1.1 204 No Content\r\nX-Tailscale-Response: response %.64s\r\n" NOCACHE "\r\n",
		 "0123456789012345678901234567890123456789012345678901234567890123456789");
	assert_string_equal(out, want);
	snprintf(req, sizeof(req), "GET /generate_204 HTTP/1.1\r\nHost: h\r\nX-Tailscale-Challenge: %.65s\r\n\r\n",
		 "0123456789012345678901234567890123456789012345678901234567890123456789");
	route(req);
	assert_string_equal(out, "HTTP/1.1 204 No Content\r\n" NOCACHE "\r\n");
}

static void test_static_pages(void **state)
{
	(void)state;
	route("GET /robots.txt HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_string_equal(out, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n" BROWSER
				 "Content-Length: 26\r\n\r\nUser-agent: *\nDisallow: /\n");
	assert_true(res.keep_alive);
	route("HEAD /robots.txt HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_string_equal(out, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n" BROWSER
				 "Content-Length: 26\r\n\r\n");

	route("GET /bootstrap-dns?q=controlplane.tailscale.com HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_false(res.keep_alive);
	assert_string_equal(out, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" BROWSER
				 "Connection: close\r\nContent-Length: 3\r\n\r\n{}\n");

	route("CONNECT controlplane.tailscale.com:443 HTTP/1.1\r\n\r\n");
	assert_int_equal(res.status, 403);
	assert_string_equal(out, "HTTP/1.1 403 Forbidden\r\n" TEXT_ERR "Content-Length: 20\r\n\r\nCONNECT not enabled\n");
}

static void test_host_and_keepalive(void **state)
{
	(void)state;
	route("GET /robots.txt HTTP/1.1\r\n\r\n");
	assert_int_equal(res.status, 400);
	assert_false(res.keep_alive);
	assert_string_equal(out, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
				 "Connection: close\r\nContent-Length: 45\r\n\r\n"
				 "400 Bad Request: missing required Host header");
	route("GET /derp HTTP/1.1\r\nHost: a\r\nhost: b\r\nUpgrade: DERP\r\n\r\n");
	assert_int_equal(res.status, 400);
	assert_non_null(strstr(out, "too many Host headers"));

	/* HTTP/1.0 needs no Host and is never kept alive */
	route("GET /robots.txt HTTP/1.0\r\n\r\n");
	assert_int_equal(res.status, 200);
	assert_false(res.keep_alive);
	assert_non_null(strstr(out, "Connection: close\r\n"));

	route("GET /robots.txt HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n\r\n");
	assert_false(res.keep_alive);
	route("GET /robots.txt HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
	assert_false(res.keep_alive);
}

static void test_debug_routes(void **state)
{
	(void)state;
	route("GET /debug/varz HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_int_equal(res.action, KD_HTTP_RESPOND);
	assert_int_equal(res.status, 403);
	assert_string_equal(out, "HTTP/1.1 403 Forbidden\r\n" TEXT_ERR "Content-Length: 20\r\n\r\ndebug access denied\n");
	opts.dev = true;
	route("GET /debug/ HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_int_equal(res.status, 403);
	assert_non_null(strstr(out, "\r\n\r\ndebug access denied; to allow, set TS_ALLOW_DEBUG_IP"));

	opts.debug_allowed = true;
	route("GET /debug/varz HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_int_equal(res.action, KD_HTTP_VARZ);
	assert_int_equal(res.status, 200);
	assert_int_equal(out_len, 0);
	route("GET /debug/ HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_int_equal(res.action, KD_HTTP_DEBUG_INDEX);
	route("GET /debug/vars HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_int_equal(res.action, KD_HTTP_DEBUG_VARS);
	route("GET /debug/check HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_int_equal(res.action, KD_HTTP_DEBUG_CHECK);
	route("GET /debug/pprof/ HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_int_equal(res.action, KD_HTTP_RESPOND);
	assert_string_equal(out, "HTTP/1.1 404 Not Found\r\n" TEXT_ERR "Content-Length: 19\r\n\r\n404 page not found\n");
	route("GET /debug?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_string_equal(out, "HTTP/1.1 301 Moved Permanently\r\nContent-Type: text/html; charset=utf-8\r\n"
				 "Location: /debug/?x=1\r\nContent-Length: 46\r\n\r\n"
				 "<a href=\"/debug/?x=1\">Moved Permanently</a>.\n\n");
}

static void test_debug_reply_format(void **state)
{
	static const char raw[] = "HEAD /debug/varz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
	struct kd_http_request req;
	size_t n;
	(void)state;

	opts.debug_allowed = true;
	assert_int_equal(kd_http_parse_request(raw, strlen(raw), &req), (int)strlen(raw));
	assert_int_equal(kd_http_route(&req, &opts, &res, out, sizeof(out), &out_len), 0);
	assert_int_equal(res.action, KD_HTTP_VARZ);
	assert_int_equal(kd_http_format_reply(&req, &res, out, sizeof(out) - 1, &n, 200,
					      "text/plain; version=0.0.4", NULL, "a 1\n", 4), 0);
	out[n] = '\0';
	assert_string_equal(out, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
				 "Connection: close\r\nContent-Length: 4\r\n\r\n");
	assert_int_equal(kd_http_format_response(out, 20, &n, 200, NULL, NULL, "x", 1), -ENOSPC);
	assert_int_equal(n, 0);
	assert_int_equal(kd_http_format_response(out, sizeof(out) - 1, &n, 200, NULL, NULL, "x", 1), 0);
	out[n] = '\0';
	assert_string_equal(out, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");
}

static void test_debug_index_page(void **state)
{
	static const char raw[] = "GET /debug/ HTTP/1.1\r\nHost: h\r\n\r\n";
	struct kd_http_request req;
	struct kd_http_debug_info info = {.program = "kderpd", .version = "0.1<b>", .machine = "m1",
					  .tls_hostname = "derp.example.com", .mesh_key = true,
					  .uptime_sec = 3723};
	const char *body;
	size_t n;
	(void)state;

	opts.debug_allowed = true;
	assert_int_equal(kd_http_parse_request(raw, strlen(raw), &req), (int)strlen(raw));
	assert_int_equal(kd_http_route(&req, &opts, &res, out, sizeof(out), &out_len), 0);
	assert_int_equal(res.action, KD_HTTP_DEBUG_INDEX);
	assert_int_equal(kd_http_debug_index(&req, &res, &info, out, sizeof(out) - 1, &n), 0);
	out[n] = '\0';
	assert_memory_equal(out, "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n", 57);
	assert_non_null(strstr(out, "object-src 'none'; style-src 'self' 'unsafe-inline'\r\n"));
	body = strstr(out, "\r\n\r\n") + 4;
	assert_int_equal(strtoul(strstr(out, "Content-Length: ") + 16, NULL, 10), strlen(body));
	assert_non_null(strstr(body, "<li><b>Uptime:</b> 1h2m3s</li>"));
	assert_non_null(strstr(body, "<li><b>Version:</b> 0.1&lt;b&gt;</li>"));
	assert_non_null(strstr(body, "<li><b>Machine:</b> m1</li>"));
	assert_non_null(strstr(body, "<li><b>TLS hostname:</b> derp.example.com</li>"));
	assert_non_null(strstr(body, "<li><b>Mesh key:</b> true</li>"));
	assert_non_null(strstr(body, "href=\"/debug/varz\""));
	info.uptime_sec = 59;
	info.mesh_key = false;
	assert_int_equal(kd_http_debug_index(&req, &res, &info, out, sizeof(out) - 1, &n), 0);
	out[n] = '\0';
	assert_non_null(strstr(out, "<b>Uptime:</b> 59s<"));
	assert_non_null(strstr(out, "<b>Mesh key:</b> false<"));
	assert_int_equal(kd_http_debug_index(&req, &res, &info, out, 100, &n), -ENOSPC);
}

static void test_home(void **state)
{
	(void)state;
	route("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_int_equal(res.status, 200);
	assert_true(res.keep_alive);
	assert_memory_equal(out, "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n" BROWSER "Content-Length: ",
			    sizeof("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n" BROWSER "Content-Length: ") - 1);
	{
		const char *body = strstr(out, "\r\n\r\n") + 4;
		unsigned long cl = strtoul(strstr(out, "Content-Length: ") + 16, NULL, 10);
		assert_int_equal(cl, strlen(body));
		assert_non_null(strstr(body, "<h1>DERP</h1>"));
		assert_null(strstr(body, "security@tailscale.com"));
		assert_null(strstr(body, "disabled"));
		assert_null(strstr(body, "/debug/"));
	}
	/* unmatched paths fall through to the home page */
	route("GET /nope?x HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_non_null(strstr(out, "<h1>DERP</h1>"));

	opts.hostname = "derp1f.tailscale.com";
	opts.derp_enabled = false;
	opts.debug_allowed = true;
	route("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_non_null(strstr(out, "security@tailscale.com"));
	assert_non_null(strstr(out, "Status: <b>disabled</b>"));
	assert_non_null(strstr(out, "<a href='/debug/'>"));
	opts.hostname = "derp1.tailscale.com.evil";
	route("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_null(strstr(out, "security@tailscale.com"));

	opts.home = "blank";
	route("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_string_equal(out, "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n" BROWSER
				 "Content-Length: 0\r\n\r\n");

	opts.home = "https://example.com/derp";
	route("GET /anything HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_int_equal(res.status, 302);
	assert_string_equal(out, "HTTP/1.1 302 Found\r\nContent-Type: text/html; charset=utf-8\r\n"
				 "Location: https://example.com/derp\r\n" BROWSER "Content-Length: 47\r\n\r\n"
				 "<a href=\"https://example.com/derp\">Found</a>.\n\n");

	assert_int_equal(kd_http_home_check(""), 0);
	assert_int_equal(kd_http_home_check(NULL), 0);
	assert_int_equal(kd_http_home_check("blank"), 0);
	assert_int_equal(kd_http_home_check("http://x"), 0);
	assert_int_equal(kd_http_home_check("ftp://x"), -EINVAL);
}

static void test_port80(void **state)
{
	(void)state;
	opts.port80_redirect = true;
	route("GET /derp?x=1 HTTP/1.1\r\nHost: derp.example.com\r\nUpgrade: DERP\r\n\r\n");
	assert_int_equal(res.action, KD_HTTP_RESPOND);
	assert_int_equal(res.status, 302);
	assert_string_equal(out, "HTTP/1.1 302 Found\r\nContent-Type: text/html; charset=utf-8\r\n"
				 "Location: https://derp.example.com/derp?x=1\r\nContent-Length: 56\r\n\r\n"
				 "<a href=\"https://derp.example.com/derp?x=1\">Found</a>.\n\n");
	route("HEAD /a&b HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_string_equal(out, "HTTP/1.1 302 Found\r\nContent-Type: text/html; charset=utf-8\r\n"
				 "Location: https://h/a&b\r\nContent-Length: 0\r\n\r\n");
	route("GET /<x> HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_non_null(strstr(out, "\r\n\r\n<a href=\"https://h/&lt;x&gt;\">Found</a>.\n\n"));

	route("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
	assert_string_equal(out, "HTTP/1.1 400 Bad Request\r\n" TEXT_ERR "Content-Length: 10\r\n\r\nUse HTTPS\n");

	route("GET /generate_204 HTTP/1.1\r\nHost: 192.0.2.1\r\nX-Tailscale-Challenge: ts_192.0.2.1\r\n\r\n");
	assert_int_equal(res.status, 204);
	assert_non_null(strstr(out, "X-Tailscale-Response: response ts_192.0.2.1\r\n"));

	route("GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_int_equal(res.status, 404);

	route("GET /debug/varz HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_int_equal(res.status, 403);
	route("GET / HTTP/1.1\r\nHost: h:80\r\n\r\n");
	assert_non_null(strstr(out, "Location: https://h:80/\r\n"));

	opts.debug_allowed = true;
	route("GET /debug/varz HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_int_equal(res.action, KD_HTTP_VARZ);
	route("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_non_null(strstr(out, "Location: https://h/debug/\r\n"));
	route("GET /x HTTP/1.1\r\nHost: h\r\n\r\n");
	assert_non_null(strstr(out, "Location: https://h/x\r\n"));
}

static void test_route_enospc(void **state)
{
	static const char raw[] = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
	struct kd_http_request req;
	char small[64];
	size_t n = 99;
	(void)state;

	assert_int_equal(kd_http_parse_request(raw, strlen(raw), &req), (int)strlen(raw));
	assert_int_equal(kd_http_route(&req, &opts, &res, small, sizeof(small), &n), -ENOSPC);
	assert_int_equal(n, 0);
	/* the home page, the largest fixed response, fits 2 KiB with every
	 * optional paragraph */
	opts.hostname = "derp1.tailscale.com";
	opts.derp_enabled = false;
	opts.debug_allowed = true;
	assert_int_equal(kd_http_route(&req, &opts, &res, out, 2048, &n), 0);
	assert_non_null(memmem(out, n, "security@tailscale.com", 22));
	assert_non_null(memmem(out, n, "</html>\n", 8));
}

/* A redirect echoes the request: its size is bounded by the documented
 * 7 * KD_HTTP_MAX_REQUEST even for a target made only of escaped chars. */
static void test_redirect_worst_case(void **state)
{
	static char raw[KD_HTTP_MAX_REQUEST], big[7 * KD_HTTP_MAX_REQUEST];
	static const char tail[] = " HTTP/1.1\r\nHost: h\r\n\r\n";
	struct kd_http_request req;
	size_t t = KD_HTTP_MAX_REQUEST - 4 - (sizeof(tail) - 1), n;
	const char *body;
	(void)state;

	opts.port80_redirect = true;
	memcpy(raw, "GET /", 5);
	memset(raw + 5, '&', t - 1);
	memcpy(raw + 4 + t, tail, sizeof(tail) - 1);
	assert_int_equal(kd_http_parse_request(raw, KD_HTTP_MAX_REQUEST, &req), KD_HTTP_MAX_REQUEST);
	assert_int_equal(kd_http_route(&req, &opts, &res, out, sizeof(out), &n), -ENOSPC);
	assert_int_equal(n, 0);
	assert_int_equal(kd_http_route(&req, &opts, &res, big, sizeof(big), &n), 0);
	assert_int_equal(res.status, 302);
	body = memmem(big, n, "\r\n\r\n", 4);
	assert_non_null(body);
	body += 4;
	assert_int_equal(strtoul(strstr(big, "Content-Length: ") + 16, NULL, 10), n - (size_t)(body - big));
	assert_int_equal(n - (size_t)(body - big), strlen("<a href=\"https://h/\">Found</a>.\n\n") + 5 * (t - 1));
}

/* --- debug access -------------------------------------------------------- */

static bool allowed_from(const char *raw, const char *ip, const char *key)
{
	struct kd_http_request req;
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
	}
	assert_int_equal(kd_http_parse_request(raw, strlen(raw), &req), (int)strlen(raw));
	return kd_http_debug_allowed(&req, (struct sockaddr *)&ss, key);
}

static int clear_env(void **state)
{
	(void)state;
	unsetenv("TS_ALLOW_DEBUG_IP");
	unsetenv("TS_DEBUG_TRUSTED_CIDRS");
	return 0;
}

static void test_debug_access(void **state)
{
	static const char g[] = "GET /debug/ HTTP/1.1\r\nHost: h\r\n\r\n";
	static const char xff[] = "GET /debug/ HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n";
	static const char keyed[] = "GET /debug/?debugkey=s3cret HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n";
	static const char keyed_post[] = "POST /debug/?debugkey=s3cret HTTP/1.1\r\nHost: h\r\n\r\n";
	(void)state;

	assert_true(allowed_from(g, "127.0.0.1", NULL));
	assert_true(allowed_from(g, "127.9.9.9", NULL));
	assert_true(allowed_from(g, "::1", NULL));
	assert_true(allowed_from(g, "::ffff:127.0.0.1", NULL));
	assert_false(allowed_from(g, "192.0.2.1", NULL));
	assert_false(allowed_from(g, "::ffff:192.0.2.1", NULL));
	assert_true(allowed_from(g, "100.64.0.1", NULL));
	assert_true(allowed_from(g, "100.127.255.255", NULL));
	assert_false(allowed_from(g, "100.128.0.0", NULL));
	assert_false(allowed_from(g, "100.63.255.255", NULL));
	assert_false(allowed_from(g, "100.115.92.1", NULL));
	assert_false(allowed_from(g, "100.115.93.255", NULL));
	assert_true(allowed_from(g, "100.115.94.0", NULL));
	assert_true(allowed_from(g, "fd7a:115c:a1e0::53", NULL));
	assert_false(allowed_from(g, "fd7a:115c:a1e1::53", NULL));
	/* behind a proxy the peer address proves nothing */
	assert_false(allowed_from(xff, "127.0.0.1", NULL));

	assert_true(allowed_from(keyed, "192.0.2.1", "  s3cret\n"));
	assert_false(allowed_from(keyed, "192.0.2.1", "s3cre"));
	assert_false(allowed_from(keyed, "192.0.2.1", ""));
	assert_false(allowed_from(keyed, "192.0.2.1", NULL));
	assert_false(allowed_from(keyed_post, "192.0.2.1", "s3cret"));

	setenv("TS_ALLOW_DEBUG_IP", "192.0.2.1", 1);
	assert_true(allowed_from(g, "192.0.2.1", NULL));
	assert_true(allowed_from(g, "::ffff:192.0.2.1", NULL));
	assert_false(allowed_from(g, "192.0.2.2", NULL));
	assert_false(allowed_from(xff, "192.0.2.1", NULL));
	assert_int_equal(kd_http_debug_env_check(), 0);
	unsetenv("TS_ALLOW_DEBUG_IP");

	setenv("TS_DEBUG_TRUSTED_CIDRS", "10.0.0.0/8, 2001:db8::/32,", 1);
	assert_int_equal(kd_http_debug_env_check(), 0);
	assert_true(allowed_from(g, "10.200.0.1", NULL));
	assert_true(allowed_from(g, "2001:db8:1::1", NULL));
	assert_false(allowed_from(g, "11.0.0.1", NULL));
	assert_false(allowed_from(g, "2001:db9::1", NULL));
	setenv("TS_DEBUG_TRUSTED_CIDRS", "10.0.0.0/33", 1);
	assert_int_equal(kd_http_debug_env_check(), -EINVAL);
	setenv("TS_DEBUG_TRUSTED_CIDRS", "10.0.0.1", 1);
	assert_int_equal(kd_http_debug_env_check(), -EINVAL);
	unsetenv("TS_DEBUG_TRUSTED_CIDRS");
	setenv("TS_ALLOW_DEBUG_IP", "not-an-ip", 1);
	assert_int_equal(kd_http_debug_env_check(), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_basic),
		cmocka_unit_test(test_parse_forms),
		cmocka_unit_test(test_parse_pipelined),
		cmocka_unit_test(test_parse_every_split),
		cmocka_unit_test(test_parse_malformed),
		cmocka_unit_test(test_parse_limits),
		cmocka_unit_test(test_tokens_and_query),
		cmocka_unit_test_setup(test_derp_upgrade_vector, setup_opts),
		cmocka_unit_test_setup(test_vector_c2s_stream, setup_opts),
		cmocka_unit_test_setup(test_derp_upgrade_variants, setup_opts),
		cmocka_unit_test_setup(test_derp_websocket, setup_opts),
		cmocka_unit_test_setup(test_probe, setup_opts),
		cmocka_unit_test_setup(test_generate_204, setup_opts),
		cmocka_unit_test_setup(test_static_pages, setup_opts),
		cmocka_unit_test_setup(test_host_and_keepalive, setup_opts),
		cmocka_unit_test_setup(test_debug_routes, setup_opts),
		cmocka_unit_test_setup(test_debug_reply_format, setup_opts),
		cmocka_unit_test_setup(test_debug_index_page, setup_opts),
		cmocka_unit_test_setup(test_home, setup_opts),
		cmocka_unit_test_setup(test_port80, setup_opts),
		cmocka_unit_test_setup(test_route_enospc, setup_opts),
		cmocka_unit_test_setup(test_redirect_worst_case, setup_opts),
		cmocka_unit_test_setup_teardown(test_debug_access, clear_env, clear_env),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
