// SPDX-License-Identifier: MIT
/* Hostile HTTP and TLS in front of the DERP upgrade: slowloris, malformed
 * requests, a TLS ClientHello on the plain port, half-closing and pipelining
 * clients, and the TLS port's own handshake deadline. Every answer is a
 * clear status or a close, never a hang. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/ssl.h>

#include "derp_wire.h"
#include "hostile.h"

/* Sends req and collects what comes back until the server closes.
 * Returns the status (0 = closed without a response) or -1 on a hang. */
static int http_exchange(int port, const void *req, size_t len, char *resp, size_t cap)
{
	int fd = ts_connect(port);
	size_t got = 0;
	int status = -1;

	assert_true(fd >= 0);
	ts_write_all(fd, req, len); /* may fail once the server answered and closed */
	int64_t end = th_mono_ms() + 2000;
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int left = (int)(end - th_mono_ms());
		if (left <= 0 || poll(&p, 1, left) != 1)
			break; /* a hang */
		ssize_t r = recv(fd, resp + got, cap - 1 - got, 0);
		if (r <= 0) {
			status = 0;
			break;
		}
		got += (size_t)r;
		if (got == cap - 1)
			got = 0; /* keep reading to the close; the head was checked below */
	}
	resp[got] = '\0';
	if (status == 0 && got >= 12 && !strncmp(resp, "HTTP/1.", 7))
		status = atoi(resp + 9);
	close(fd);
	return status;
}

/* One header byte every 200 ms: the HTTP deadline runs from accept and is
 * not pushed back by progress. */
static void test_slowloris_http_request(void **state)
{
	static const char req[] = "GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: DERP\r\nX-Slow: yes\r\n\r\n";
	struct ts_server ts;
	struct kd_server_config cfg;
	(void)state;

	kd_server_config_defaults(&cfg);
	cfg.http_timeout_ms = 1000;
	assert_int_equal(ts_start(&ts, &cfg, NULL), 0);
	int fd = ts_connect(ts.port);
	assert_true(fd >= 0);
	int64_t t0 = th_mono_ms(), took = -1;
	for (size_t i = 0; i < sizeof(req) - 1 && th_mono_ms() - t0 < 5000; i++) {
		if (send(fd, req + i, 1, MSG_NOSIGNAL) != 1) {
			took = th_mono_ms() - t0;
			break;
		}
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 200) == 1) {
			took = th_closed_after(fd, t0, 500);
			break;
		}
	}
	print_message("# slowloris HTTP: closed after %lld ms\n", (long long)took);
	assert_true(took >= 900 && took <= 2000);
	th_hs_expect(&ts, "timeout", 1);
	close(fd);
	ts_stop(&ts);
}

static void test_malformed_http(void **state)
{
	struct ts_server ts;
	static char resp[65536];
	uint8_t hello[4096];
	(void)state;

	assert_int_equal(ts_start(&ts, NULL, NULL), 0);
	static const char bad_line[] = "BLAH\r\n\r\n";
	assert_int_equal(http_exchange(ts.port, bad_line, sizeof(bad_line) - 1, resp, sizeof(resp)), 400);
	th_hs_expect(&ts, "http_malformed", 1);

	static const char no_host[] = "GET /derp HTTP/1.1\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n";
	assert_int_equal(http_exchange(ts.port, no_host, sizeof(no_host) - 1, resp, sizeof(resp)), 400);
	assert_non_null(strstr(resp, "missing required Host header"));

	/* 20 KiB of headers */
	size_t cap = 24 * 1024, n = 0;
	char *big = malloc(cap);
	assert_non_null(big);
	n += (size_t)snprintf(big, cap, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n");
	for (int i = 0; n < 20 * 1024; i++)
		n += (size_t)snprintf(big + n, cap - n, "X-Pad-%d: %0100d\r\n", i, i);
	n += (size_t)snprintf(big + n, cap - n, "\r\n");
	int st = http_exchange(ts.port, big, n, resp, sizeof(resp));
	free(big);
	print_message("# 20 KiB of headers: status %d\n", st);
	/* the 431 can be lost to the RST of closing with unread input: the
	 * counter is the proof of the verdict, the close the proof of no hang */
	assert_true(st == 431 || st == 0);
	th_hs_expect(&ts, "http_too_large", 1);

	uint8_t junk[512];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)((i * 151) ^ (i >> 3));
	junk[0] = 0;
	st = http_exchange(ts.port, junk, sizeof(junk), resp, sizeof(resp));
	assert_true(st == 400 || st == 0);
	th_hs_expect(&ts, "http_malformed", 2);

	size_t hl = th_client_hello(hello, sizeof(hello));
	assert_true(hl > 5 && hello[0] == 0x16);
	st = http_exchange(ts.port, hello, hl, resp, sizeof(resp));
	print_message("# TLS ClientHello (%zu bytes) on the plain port: status %d\n", hl, st);
	assert_true(st == 400 || st == 0);
	th_hs_expect(&ts, "http_malformed", 3);

	/* none of it hurt the server */
	struct kd_keypair ka = {0};
	struct kd_client *a = tc_login(&ts, &ka, NULL);
	assert_non_null(a);
	assert_true(tc_alive(a));
	kd_client_close(a);
	th_metric_wait(&ts, "derp_current_connections", 0, false);
	ts_stop(&ts);
}

/* A client that sends its request and then shuts down its write side (nc -N,
 * HTTP/1.0 scripts, some health checkers) still gets the response: EOF on
 * input is no reason to drop output already owed. */
static void test_http_half_close_still_answered(void **state)
{
	static const char req[] = "GET /generate_204 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
	struct ts_server ts;
	char head[1024] = "";
	int ok = 0;
	(void)state;

	assert_int_equal(ts_start(&ts, NULL, NULL), 0);
	for (int i = 0; i < 20; i++) {
		int fd = ts_connect(ts.port), one = 1;
		assert_true(fd >= 0);
		/* corked, the request and the FIN leave in one segment: the server
		 * reads both in one pass, as it would from a fast client over a WAN */
		setsockopt(fd, IPPROTO_TCP, TCP_CORK, &one, sizeof(one));
		assert_int_equal(ts_write_all(fd, req, sizeof(req) - 1), 0);
		shutdown(fd, SHUT_WR);
		if (th_read_head(fd, head, sizeof(head), 2000) == 0 && !strncmp(head, "HTTP/1.1 204", 12))
			ok++;
		assert_true(ts_wait_closed(fd, 2000));
		close(fd);
	}
	print_message("# half-closed HTTP clients answered: %d of 20\n", ok);
	assert_int_equal(ok, 20);
	/* keep-alive requests pipelined before the FIN are all answered */
	static const char ka[] = "GET /generate_204 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
	int fd = ts_connect(ts.port), one = 1, got = 0;
	assert_true(fd >= 0);
	setsockopt(fd, IPPROTO_TCP, TCP_CORK, &one, sizeof(one));
	for (int i = 0; i < 3; i++)
		assert_int_equal(ts_write_all(fd, ka, sizeof(ka) - 1), 0);
	shutdown(fd, SHUT_WR);
	while (got < 3 && th_read_head(fd, head, sizeof(head), 2000) == 0 && !strncmp(head, "HTTP/1.1 204", 12))
		got++;
	assert_int_equal(got, 3);
	assert_true(ts_wait_closed(fd, 2000));
	close(fd);
	th_hs_expect(&ts, "eof", 0);
	ts_stop(&ts);
}

/* Pipelined keep-alive requests in one write: each answer frees the next
 * request, and none of them may wait for an unrelated timer to fire. */
static void test_http_pipelined_requests_all_answered(void **state)
{
	static const char req[] = "GET /generate_204 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
	enum { N = 12 };
	struct ts_server ts;
	char all[N * sizeof(req)], head[1024];
	size_t n = 0;
	int got = 0;
	(void)state;

	assert_int_equal(ts_start(&ts, NULL, NULL), 0);
	for (int i = 0; i < N; i++) {
		memcpy(all + n, req, sizeof(req) - 1);
		n += sizeof(req) - 1;
	}
	int fd = ts_connect(ts.port);
	assert_true(fd >= 0);
	assert_int_equal(ts_write_all(fd, all, n), 0);
	int64_t t0 = th_mono_ms();
	while (got < N && th_read_head(fd, head, sizeof(head), 2000) == 0 && !strncmp(head, "HTTP/1.1 204", 12))
		got++;
	print_message("# pipelined: %d of %d answered in %lld ms\n", got, N, (long long)(th_mono_ms() - t0));
	assert_int_equal(got, N);
	close(fd);
	ts_stop(&ts);
}

/* The TLS port: a ClientHello cut in half, junk that is not TLS, and a
 * completed handshake whose HTTP request trickles in. The deadline runs
 * from accept across the TLS handshake and the request alike. */
static void test_tls_port_hostile(void **state)
{
	struct ts_server ts;
	struct kd_server_config cfg;
	uint8_t hello[4096];
	(void)state;

	kd_server_config_defaults(&cfg);
	cfg.certmode = "dev";
	cfg.hostname = "127.0.0.1";
	cfg.http_port = -1;
	cfg.http_timeout_ms = 1000;
	assert_int_equal(ts_start(&ts, &cfg, NULL), 0);

	size_t hl = th_client_hello(hello, sizeof(hello));
	assert_true(hl > 10);
	int half = ts_connect(ts.port);
	assert_true(half >= 0);
	int64_t t0 = th_mono_ms();
	assert_int_equal(ts_write_all(half, hello, hl / 2), 0);

	int junk = ts_connect(ts.port);
	assert_true(junk >= 0);
	static const char not_tls[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n\x00\x01\x02 and more junk";
	assert_int_equal(ts_write_all(junk, not_tls, sizeof(not_tls) - 1), 0);
	int64_t junk_took = th_closed_after(junk, th_mono_ms(), 2000);
	close(junk);

	/* a full handshake, then one request byte every 200 ms */
	int slow = ts_connect(ts.port);
	assert_true(slow >= 0);
	int64_t t1 = th_mono_ms();
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(ctx);
	SSL *ssl = SSL_new(ctx);
	assert_non_null(ssl);
	SSL_set_fd(ssl, slow);
	assert_int_equal(SSL_connect(ssl), 1);
	static const char req[] = "GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: DERP\r\n\r\n";
	int64_t slow_took = -1;
	for (size_t i = 0; i < sizeof(req) - 1 && th_mono_ms() - t1 < 5000; i++) {
		if (SSL_write(ssl, req + i, 1) != 1) {
			slow_took = th_mono_ms() - t1;
			break;
		}
		struct pollfd p = {.fd = slow, .events = POLLIN};
		if (poll(&p, 1, 200) == 1) {
			char b[64];
			if (SSL_read(ssl, b, sizeof(b)) <= 0) {
				slow_took = th_mono_ms() - t1;
				break;
			}
		}
	}
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(slow);

	int64_t half_took = th_closed_after(half, t0, 3000);
	close(half);
	print_message("# TLS port: half ClientHello closed after %lld ms, junk after %lld ms, "
		      "trickled request after %lld ms\n",
		      (long long)half_took, (long long)junk_took, (long long)slow_took);
	assert_true(half_took >= 900 && half_took <= 2000);
	assert_true(junk_took >= 0 && junk_took < 500);
	assert_true(slow_took >= 700 && slow_took <= 2000);
	th_hs_expect(&ts, "timeout", 2);
	th_hs_expect(&ts, "tls", 1);
	struct kd_keypair ka = {0};
	struct kd_client_opts o = {0};
	char url[64];
	struct kd_client *c = NULL;
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/derp", ts.port);
	o.url = url;
	kd_keypair_generate(&ka);
	o.key = ka;
	o.insecure = true;
	o.can_ack_pings = true;
	o.timeout_ms = 5000;
	assert_int_equal(kd_client_connect(&c, &o), 0);
	assert_true(tc_alive(c));
	kd_client_close(c);
	ts_stop(&ts);
}

/* The HTTP deadline bounds each request, as Go's ReadTimeout does (spec
 * §3.1: 30 s on the main listener), not the life of a keep-alive
 * connection: a client that asks every 400 ms under a 1 s deadline is
 * answered every time, and is closed once it goes idle for longer. */
static void test_http_keepalive_deadline_per_request(void **state)
{
	static const char req[] = "GET /generate_204 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
	struct ts_server ts;
	struct kd_server_config cfg;
	char head[1024];
	int got = 0;
	(void)state;

	kd_server_config_defaults(&cfg);
	cfg.http_timeout_ms = 1000;
	assert_int_equal(ts_start(&ts, &cfg, NULL), 0);
	int fd = ts_connect(ts.port);
	assert_true(fd >= 0);
	int64_t t0 = th_mono_ms();
	for (int i = 0; i < 6; i++) {
		if (ts_write_all(fd, req, sizeof(req) - 1) != 0 || th_read_head(fd, head, sizeof(head), 1500) != 0 ||
		    strncmp(head, "HTTP/1.1 204", 12) != 0)
			break;
		got++;
		usleep(400000);
	}
	print_message("# keep-alive every 400 ms under a 1 s deadline: %d of 6 answered over %lld ms\n", got,
		      (long long)(th_mono_ms() - t0));
	assert_int_equal(got, 6);
	/* idle now: the deadline still closes it */
	int64_t idle = th_closed_after(fd, th_mono_ms(), 3000);
	assert_true(idle >= 0 && idle <= 1500);
	close(fd);
	ts_stop(&ts);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_slowloris_http_request),
		cmocka_unit_test(test_malformed_http),
		cmocka_unit_test(test_http_half_close_still_answered),
		cmocka_unit_test(test_http_pipelined_requests_all_answered),
		cmocka_unit_test(test_tls_port_hostile),
		cmocka_unit_test(test_http_keepalive_deadline_per_request),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
