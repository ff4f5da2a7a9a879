// SPDX-License-Identifier: MIT
/* kderpd over TLS (in-memory self-signed certificate, "dev" cert mode):
 * fast start through the meta-certificate on TLS 1.3, relay both ways, and
 * the plaintext :80 listener's behaviour next to TLS (spec §3.8). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "clients.h"
#include "derp_wire.h"

static struct kd_client *tls_login(struct ts_server *ts, struct kd_keypair *kp, bool no_fast_start)
{
	struct kd_client_opts o = {0};
	char url[64];
	struct kd_client *c = NULL;

	snprintf(url, sizeof(url), "https://127.0.0.1:%d/derp", ts->port);
	o.url = url;
	kd_keypair_generate(kp);
	o.key = *kp;
	o.insecure = true;
	o.no_fast_start = no_fast_start;
	o.can_ack_pings = true;
	o.timeout_ms = 5000;
	int err = kd_client_connect(&c, &o);
	if (err)
		fail_msg("TLS login: %s", strerror(-err));
	return c;
}

static void start_tls(struct ts_server *ts, int http_port)
{
	struct kd_server_config cfg;

	kd_server_config_defaults(&cfg);
	cfg.certmode = "dev";
	cfg.hostname = "127.0.0.1";
	cfg.http_port = http_port;
	assert_int_equal(ts_start(ts, &cfg, NULL), 0);
}

static void test_tls_fast_start_and_relay(void **state)
{
	struct ts_server ts;
	struct kd_keypair ka, kb;
	struct kd_client_msg m;
	(void)state;

	start_tls(&ts, -1);
	struct kd_client *a = tls_login(&ts, &ka, false), *b = tls_login(&ts, &kb, true);
	/* the meta-certificate made A skip the 101; B took the classic path */
	assert_true(kd_client_fast_start(a));
	assert_false(kd_client_fast_start(b));
	assert_memory_equal(kd_client_server_key(a), ts.cfg.keys.pub, 32);
	assert_memory_equal(kd_client_server_key(b), ts.cfg.keys.pub, 32);
	for (int i = 0; i < 200; i++) {
		char msg[32];
		int n = snprintf(msg, sizeof(msg), "packet %d", i);
		assert_int_equal(kd_client_send_packet(a, kb.pub, msg, (size_t)n), 0);
		assert_int_equal(tc_recv_type(b, DERP_FRAME_RECV_PACKET, &m, 3000), 0);
		assert_memory_equal(m.key, ka.pub, 32);
		assert_int_equal(m.data_len, (size_t)n);
		assert_memory_equal(m.data, msg, (size_t)n);
	}
	assert_int_equal(kd_client_send_packet(b, ka.pub, "back", 4), 0);
	assert_int_equal(tc_recv_type(a, DERP_FRAME_RECV_PACKET, &m, 3000), 0);
	assert_memory_equal(m.data, "back", 4);
	assert_true(tc_alive(a));
	assert_true(ts_metric(&ts, "tls_listener_accepted_connections") >= 2);
	kd_client_close(a);
	kd_client_close(b);
	ts_stop(&ts);
}

static void test_plain_http_to_tls_port_fails_cleanly(void **state)
{
	struct ts_server ts;
	(void)state;

	start_tls(&ts, -1);
	int fd = ts_connect(ts.port);
	assert_true(fd >= 0);
	static const char req[] = "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n";
	assert_int_equal(ts_write_all(fd, req, sizeof(req) - 1), 0);
	assert_true(ts_wait_closed(fd, 5000));
	close(fd);
	for (int i = 0; i < 100 && ts_metric(&ts, "kderp_handshake_errors_total{reason=\"tls\"}") < 1; i++)
		usleep(20000);
	assert_int_equal(ts_metric(&ts, "kderp_handshake_errors_total{reason=\"tls\"}"), 1);
	ts_stop(&ts);
}

static void test_port80_redirects_and_generate_204(void **state)
{
	struct ts_server ts;
	char buf[1024];
	(void)state;

	start_tls(&ts, 0); /* an ephemeral port stands in for :80 */
	int p80 = kd_server_port80(ts.srv);
	assert_true(p80 > 0);
	int fd = ts_connect(p80);
	static const char req[] = "GET /derp HTTP/1.1\r\nHost: derp.example\r\nConnection: close\r\n\r\n";
	assert_int_equal(ts_write_all(fd, req, sizeof(req) - 1), 0);
	ssize_t n = 0, r;
	while ((r = read(fd, buf + n, sizeof(buf) - 1 - (size_t)n)) > 0)
		n += r;
	buf[n] = '\0';
	assert_non_null(strstr(buf, "HTTP/1.1 302 "));
	assert_non_null(strstr(buf, "Location: https://derp.example/derp\r\n"));
	close(fd);
	fd = ts_connect(p80);
	static const char req2[] = "GET /generate_204 HTTP/1.1\r\nHost: x\r\nX-Tailscale-Challenge: ts_192.0.2.1\r\n"
				   "Connection: close\r\n\r\n";
	assert_int_equal(ts_write_all(fd, req2, sizeof(req2) - 1), 0);
	n = 0;
	while ((r = read(fd, buf + n, sizeof(buf) - 1 - (size_t)n)) > 0)
		n += r;
	buf[n] = '\0';
	assert_non_null(strstr(buf, "HTTP/1.1 204 "));
	assert_non_null(strstr(buf, "X-Tailscale-Response: response ts_192.0.2.1\r\n"));
	close(fd);
	ts_stop(&ts);
}

static bool kernel_has_tls_ulp(void)
{
	char buf[256] = "";
	FILE *f = fopen("/proc/sys/net/ipv4/tcp_available_ulp", "r");
	if (f) {
		if (!fgets(buf, sizeof(buf), f))
			buf[0] = '\0';
		fclose(f);
	}
	return strstr(buf, "tls") != NULL;
}

/* Where the kernel has kTLS (the QEMU matrix), TLS 1.2 gets kernel crypto
 * both ways and TLS 1.3 for sending, and the relay stays byte-exact. */
static void ktls_relay(int max_version, bool want_rx)
{
	struct ts_server ts;
	struct kd_server_config cfg;
	struct kd_keypair ka, kb;
	struct kd_client_msg m;

	kd_server_config_defaults(&cfg);
	cfg.certmode = "dev";
	cfg.hostname = "127.0.0.1";
	cfg.http_port = -1;
	cfg.tls_max_version = max_version;
	assert_int_equal(ts_start(&ts, &cfg, NULL), 0);
	struct kd_client *a = tls_login(&ts, &ka, false), *b = tls_login(&ts, &kb, false);
	uint8_t *buf = malloc(DERP_MAX_PACKET);
	for (int i = 0; i < 64; i++) {
		size_t n = (size_t)(i * 1021) % DERP_MAX_PACKET;
		for (size_t k = 0; k < n; k++)
			buf[k] = (uint8_t)(k * 31 + (size_t)i);
		assert_int_equal(kd_client_send_packet(i % 2 ? a : b, i % 2 ? kb.pub : ka.pub, buf, n), 0);
		assert_int_equal(tc_recv_type(i % 2 ? b : a, DERP_FRAME_RECV_PACKET, &m, 5000), 0);
		assert_int_equal(m.data_len, n);
		assert_memory_equal(m.data, buf, n);
	}
	free(buf);
	long long tx = ts_metric(&ts, "kderp_ktls_connections_total{direction=\"tx\",result=\"on\"}");
	long long rx = ts_metric(&ts, "kderp_ktls_connections_total{direction=\"rx\",result=\"on\"}");
	printf("# kTLS connections: tx on %lld, rx on %lld\n", tx, rx);
	assert_int_equal(tx, 2);
	assert_int_equal(rx, want_rx ? 2 : 0);
	if (!want_rx)
		assert_int_equal(ts_metric(&ts, "kderp_ktls_connections_total{direction=\"rx\",result=\"tls13_rx_openssl\"}"), 2);
	kd_client_close(a);
	kd_client_close(b);
	ts_stop(&ts);
}

static void test_ktls_tls12_both_ways(void **state)
{
	(void)state;
	if (!kernel_has_tls_ulp()) {
		printf("# SKIP kernel has no tls ULP (this host: CONFIG_TLS off); runs in make test-vm\n");
		skip();
	}
	ktls_relay(TLS1_2_VERSION, true);
}

static void test_ktls_tls13_tx(void **state)
{
	(void)state;
	if (!kernel_has_tls_ulp()) {
		printf("# SKIP kernel has no tls ULP (this host: CONFIG_TLS off); runs in make test-vm\n");
		skip();
	}
	ktls_relay(0, false);
}

static void test_no_ulp_counted(void **state)
{
	struct ts_server ts;
	struct kd_keypair ka;
	(void)state;

	if (kernel_has_tls_ulp()) {
		printf("# SKIP kernel has the tls ULP; the fallback reason is tested where it is missing\n");
		skip();
	}
	start_tls(&ts, -1);
	struct kd_client *a = tls_login(&ts, &ka, false);
	assert_true(tc_alive(a));
	assert_int_equal(ts_metric(&ts, "kderp_ktls_connections_total{direction=\"tx\",result=\"no_tls_ulp\"}"), 1);
	assert_int_equal(ts_metric(&ts, "kderp_ktls_connections_total{direction=\"rx\",result=\"no_tls_ulp\"}"), 1);
	kd_client_close(a);
	ts_stop(&ts);
}

/* The leaf certificate a fresh TLS connection to port is served, as DER. */
static int served_cert(int port, uint8_t *der, int cap)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	int fd = ts_connect(port), n = -1;
	SSL *ssl = SSL_new(ctx);

	SSL_set_fd(ssl, fd);
	if (SSL_connect(ssl) == 1) {
		X509 *x = SSL_get1_peer_certificate(ssl);
		int len = x ? i2d_X509(x, NULL) : -1;
		if (len > 0 && len <= cap) {
			uint8_t *p = der;
			n = i2d_X509(x, &p);
		}
		X509_free(x);
	}
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(fd);
	return n;
}

/* SIGHUP's job: new certificates for new connections, old ones stay up. */
static void test_reload_certificates(void **state)
{
	struct ts_server ts;
	struct kd_server_config cfg;
	struct kd_keypair ka;
	char dir[] = "/tmp/kderp-reload-XXXXXX", path[128];
	uint8_t before[4096], after[4096];
	(void)state;

	assert_non_null(mkdtemp(dir));
	kd_server_config_defaults(&cfg);
	cfg.certmode = "manual";
	cfg.certdir = dir;
	cfg.hostname = "127.0.0.1"; /* an IP: kderpd makes a self-signed pair when missing */
	cfg.http_port = -1;
	assert_int_equal(ts_start(&ts, &cfg, NULL), 0);
	struct kd_client *a = tls_login(&ts, &ka, false);
	int n1 = served_cert(ts.port, before, sizeof(before));
	assert_true(n1 > 0);
	/* replace the pair on disk: remove it, the reload makes a new one */
	snprintf(path, sizeof(path), "%s/127.0.0.1.crt", dir);
	assert_int_equal(unlink(path), 0);
	snprintf(path, sizeof(path), "%s/127.0.0.1.key", dir);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(kd_server_reload(ts.srv, NULL), 0);
	int n2 = served_cert(ts.port, after, sizeof(after));
	assert_true(n2 > 0);
	assert_false(n1 == n2 && !memcmp(before, after, (size_t)n1));
	assert_true(tc_alive(a)); /* the connection made before the reload goes on */
	kd_client_close(a);
	ts_stop(&ts);
	snprintf(path, sizeof(path), "rm -rf %s", dir);
	assert_int_equal(system(path), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tls_fast_start_and_relay),
		cmocka_unit_test(test_plain_http_to_tls_port_fails_cleanly),
		cmocka_unit_test(test_port80_redirects_and_generate_204),
		cmocka_unit_test(test_ktls_tls12_both_ways),
		cmocka_unit_test(test_ktls_tls13_tx),
		cmocka_unit_test(test_no_ulp_counted),
		cmocka_unit_test(test_reload_certificates),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
