// SPDX-License-Identifier: MIT
/* -config-file and SIGHUP against a real kderpd process: the admission
 * webhook named in the file denies a client; a file that does not parse
 * changes nothing; rewritten to a webhook that allows, a SIGHUP admits the
 * client while one connected before the reload stays connected and keeps
 * relaying; a changed -workers is reported once as needing a restart. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "clients.h"
#include "daemon.h"
#include "derp_wire.h"
#include "log.h"

/* A webhook on loopback: admits every key (allow_all) or only allow_hex. */
struct hook {
	int fd, port;
	pthread_t th;
	volatile int stop;
	bool allow_all;
	char allow_hex[65];
	volatile int requests;
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
		struct pollfd cp = {.fd = c, .events = POLLIN};
		while (n < sizeof(buf) - 1 && poll(&cp, 1, 2000) > 0) {
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
		bool allow = body && (h->allow_all || strstr(body, h->allow_hex));
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

static void hook_start(struct hook *h, bool allow_all, const uint8_t *allow_key)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);

	memset(h, 0, sizeof(*h));
	h->allow_all = allow_all;
	if (allow_key)
		kd_hex_encode(h->allow_hex, allow_key, 32);
	h->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(h->fd >= 0);
	assert_int_equal(bind(h->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(h->fd, 64), 0);
	assert_int_equal(getsockname(h->fd, (struct sockaddr *)&a, &len), 0);
	h->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&h->th, NULL, hook_main, h), 0);
}

static void hook_stop(struct hook *h)
{
	h->stop = 1;
	pthread_join(h->th, NULL);
	close(h->fd);
}

static char conf[64];

static void write_conf(const char *fmt, ...)
{
	char tmp[80];
	va_list ap;

	/* rename: kderpd never reads a half-written file */
	snprintf(tmp, sizeof(tmp), "%s.tmp", conf);
	FILE *f = fopen(tmp, "w");
	assert_non_null(f);
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(rename(tmp, conf), 0);
}

static void relay(struct kd_client *from, const struct kd_keypair *kf, struct kd_client *to,
		  const struct kd_keypair *kt, const char *text)
{
	struct kd_client_msg m;

	assert_int_equal(kd_client_send_packet(from, kt->pub, text, strlen(text)), 0);
	assert_int_equal(kd_client_flush_wait(from, 3000), 0);
	assert_int_equal(tc_recv_type(to, DERP_FRAME_RECV_PACKET, &m, 3000), 0);
	assert_memory_equal(m.key, kf->pub, 32);
	assert_int_equal(m.data_len, strlen(text));
	assert_memory_equal(m.data, text, m.data_len);
}

static void test_sighup_swaps_webhook_keeps_connections(void **state)
{
	struct kd_keypair ka = {0}, kb = {0};
	struct hook deny, allow;
	struct td_daemon d = {.pid = -1};
	(void)state;

	if (!td_kderpd_path()) {
		printf("# SKIP build/kderpd not built\n");
		skip();
	}
	kd_keypair_generate(&ka);
	kd_keypair_generate(&kb);
	hook_start(&deny, false, ka.pub); /* admits only A */
	hook_start(&allow, true, NULL);
	write_conf("# kderpd test config\nstun = false\nworkers = 1\n"
		   "verify-client-url = http://127.0.0.1:%d/check\nverify-client-url-timeout = 3s\n", deny.port);
	assert_int_equal(td_start(&d, (const char *[]){"-config-file", conf, NULL}), 0);

	struct kd_client *a = td_login(d.port, &ka, 5000);
	assert_non_null(a);
	assert_true(tc_alive(a));
	assert_int_not_equal(td_try_login(d.port, &kb), 0);
	int asked = deny.requests;
	assert_true(asked >= 2);

	/* a file that does not parse: the old webhook stays */
	write_conf("stun = false\nworkers = 1\nverify-client-url = http://127.0.0.1:%d/check\nthis is not a setting\n",
		   allow.port);
	assert_int_equal(kill(d.pid, SIGHUP), 0);
	assert_true(td_log_wait(&d, "does not parse", 1, 3000));
	assert_int_equal(td_log_count(&d, "config:4: want name = value") + td_log_count(&d, ".conf:4: want name = value"), 1);
	assert_int_not_equal(td_try_login(d.port, &kb), 0);
	assert_true(deny.requests > asked);
	assert_int_equal(allow.requests, 0);

	/* the allowing webhook, and a setting that cannot change live */
	write_conf("stun = false\nworkers = 2\n# now the permissive one\n"
		   "verify-client-url = http://127.0.0.1:%d/check\nverify-client-url-timeout = 3s\n", allow.port);
	assert_int_equal(kill(d.pid, SIGHUP), 0);
	assert_true(td_log_wait(&d, "re-read webhook settings", 1, 3000));
	struct kd_client *b = td_login(d.port, &kb, 3000);
	assert_non_null(b);
	assert_true(allow.requests >= 1);
	assert_int_equal(td_log_count(&d, "-workers changed"), 1);
	assert_int_equal(td_log_count(&d, "needs a restart"), 1);

	/* A logged in before both reloads: still the same connection, relaying both ways */
	assert_true(tc_alive(a));
	relay(a, &ka, b, &kb, "from before the reload");
	relay(b, &kb, a, &ka, "from after the reload");

	kd_client_close(a);
	kd_client_close(b);
	td_stop(&d);
	hook_stop(&deny);
	hook_stop(&allow);
}

/* Command-line flags win over the file, at start and at every reload. */
static void test_command_line_overrides_file(void **state)
{
	struct kd_keypair kb = {0};
	struct hook deny, allow;
	struct td_daemon d = {.pid = -1};
	char url[80];
	(void)state;

	if (!td_kderpd_path()) {
		printf("# SKIP build/kderpd not built\n");
		skip();
	}
	hook_start(&deny, false, NULL);
	hook_start(&allow, true, NULL);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/check", allow.port);
	write_conf("stun = true\nverify-client-url = http://127.0.0.1:%d/check\n", deny.port);
	assert_int_equal(td_start(&d, (const char *[]){"-config-file", conf, "-stun=false", "-verify-client-url", url, NULL}), 0);
	struct kd_client *b = td_login(d.port, &kb, 5000);
	assert_non_null(b);
	kd_client_close(b);
	assert_int_equal(deny.requests, 0);
	assert_int_equal(kill(d.pid, SIGHUP), 0);
	assert_true(td_log_wait(&d, "reload:", 1, 3000));
	assert_int_equal(td_try_login(d.port, &kb), 0);
	assert_int_equal(deny.requests, 0);
	/* -stun=false on the command line: the file's stun = true is not a change */
	assert_int_equal(td_log_count(&d, "needs a restart"), 0);
	td_stop(&d);
	hook_stop(&deny);
	hook_stop(&allow);
}

static int setup(void **state)
{
	(void)state;
	kd_log_set_level(KD_LOG_ERROR);
	snprintf(conf, sizeof(conf), "/tmp/kd-reload-%d.conf", (int)getpid());
	return 0;
}

static int teardown(void **state)
{
	char tmp[80];
	(void)state;
	snprintf(tmp, sizeof(tmp), "%s.tmp", conf);
	unlink(conf);
	unlink(tmp);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sighup_swaps_webhook_keeps_connections),
		cmocka_unit_test(test_command_line_overrides_file),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
