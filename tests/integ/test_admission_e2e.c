// SPDX-License-Identifier: MIT
/* -verify-client-url end to end (spec §7.10b): kderpd asks a webhook the
 * test runs on loopback; allowed keys log in, denied ones are closed without
 * a ServerInfo, an unreachable webhook follows the fail-open choice, and
 * mesh-key clients never ask. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "clients.h"
#include "key.h"

struct hook {
	int fd, port;
	pthread_t th;
	volatile int stop;
	char allow_hex[65];   /* the one key it admits */
	int requests;
	char last_body[512];
};

static void *hook_main(void *arg)
{
	struct hook *h = arg;

	while (!h->stop) {
		struct pollfd p = {.fd = h->fd, .events = POLLIN};
		if (poll(&p, 1, 50) <= 0)
			continue;
		int c = accept(h->fd, NULL, NULL);
		if (c < 0)
			continue;
		char buf[4096];
		size_t n = 0;
		char *body = NULL;
		/* read headers + Content-Length body */
		while (n < sizeof(buf) - 1) {
			ssize_t r = read(c, buf + n, sizeof(buf) - 1 - n);
			if (r <= 0)
				break;
			n += (size_t)r;
			buf[n] = '\0';
			char *e = strstr(buf, "\r\n\r\n");
			char *cl = strcasestr(buf, "Content-Length:");
			if (e && cl && (size_t)(e + 4 - buf) + (size_t)atoi(cl + 15) <= n) {
				body = e + 4;
				break;
			}
		}
		h->requests++;
		snprintf(h->last_body, sizeof(h->last_body), "%s", body ? body : "");
		bool allow = body && strstr(body, h->allow_hex);
		const char *js = allow ? "{\"Allow\":true}" : "{\"Allow\":false}";
		char resp[256];
		int rl = snprintf(resp, sizeof(resp),
				  "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
				  "Connection: close\r\n\r\n%s",
				  strlen(js), js);
		if (write(c, resp, (size_t)rl) < 0) {
		}
		close(c);
	}
	return NULL;
}

static void hook_start(struct hook *h, const uint8_t allow_key[32])
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);

	memset(h, 0, sizeof(*h));
	kd_hex_encode(h->allow_hex, allow_key, 32);
	h->fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind(h->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(h->fd, 16), 0);
	getsockname(h->fd, (struct sockaddr *)&a, &al);
	h->port = ntohs(a.sin_port);
	pthread_create(&h->th, NULL, hook_main, h);
}

static void hook_stop(struct hook *h)
{
	h->stop = 1;
	pthread_join(h->th, NULL);
	close(h->fd);
}

static int try_login(struct ts_server *ts, struct kd_keypair *kp, const uint8_t *mesh_key)
{
	struct kd_client_opts o = {0};
	char url[64];
	struct kd_client *c = NULL;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/derp", ts->port);
	o.url = url;
	o.key = *kp;
	o.mesh_key = mesh_key;
	o.timeout_ms = 8000;
	int err = kd_client_connect(&c, &o);
	if (err == 0) {
		bool ok = tc_alive(c);
		kd_client_close(c);
		return ok ? 0 : -EPIPE;
	}
	return err;
}

static void start(struct ts_server *ts, const char *url, bool fail_open)
{
	struct kd_server_config cfg;

	kd_server_config_defaults(&cfg);
	cfg.verify_client_url = url;
	cfg.verify_fail_open = fail_open;
	cfg.has_mesh_key = true;
	memset(cfg.mesh_key, 0x42, 32);
	assert_int_equal(ts_start(ts, &cfg, NULL), 0);
}

static void test_webhook_allows_and_denies(void **state)
{
	struct hook h;
	struct ts_server ts;
	struct kd_keypair good, bad, mesh;
	char url[96];
	uint8_t mk[32];
	(void)state;

	kd_keypair_generate(&good);
	kd_keypair_generate(&bad);
	kd_keypair_generate(&mesh);
	memset(mk, 0x42, 32);
	hook_start(&h, good.pub);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/verify", h.port);
	start(&ts, url, false);

	assert_int_equal(try_login(&ts, &good, NULL), 0);
	char nk[KD_NODEKEY_STR_LEN];
	kd_key_nodekey_str(nk, good.pub);
	assert_non_null(strstr(h.last_body, nk));
	assert_non_null(strstr(h.last_body, "\"Source\":\"127.0.0.1\""));
	assert_int_not_equal(try_login(&ts, &bad, NULL), 0);
	assert_int_equal(ts_metric(&ts, "kderp_handshake_errors_total{reason=\"rejected\"}"), 1);
	/* mesh peers bypass admission: the hook would deny this key */
	int before = h.requests;
	assert_int_equal(try_login(&ts, &mesh, mk), 0);
	assert_int_equal(h.requests, before);
	ts_stop(&ts);
	hook_stop(&h);
}

static void test_unreachable_webhook_fail_closed_and_open(void **state)
{
	struct ts_server ts;
	struct kd_keypair k;
	char url[96];
	(void)state;

	kd_keypair_generate(&k);
	/* a port nobody listens on: bind, read the port, close */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	getsockname(fd, (struct sockaddr *)&a, &al);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/verify", ntohs(a.sin_port));
	close(fd);

	start(&ts, url, false);
	assert_int_not_equal(try_login(&ts, &k, NULL), 0);
	ts_stop(&ts);
	start(&ts, url, true);
	assert_int_equal(try_login(&ts, &k, NULL), 0);
	ts_stop(&ts);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_webhook_allows_and_denies),
		cmocka_unit_test(test_unreachable_webhook_fail_closed_and_open),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
