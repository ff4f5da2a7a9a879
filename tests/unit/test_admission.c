// SPDX-License-Identifier: MIT
/* Admission webhook (spec §7.10b): the pure URL and response readers, then
 * the whole client against a small HTTP(S) server this test runs on
 * 127.0.0.1 in threads; its URL path picks the behaviour. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "admission.h"
#include "http_client.h"
#include "keyfile.h"
#include "tls.h"

#define HEX_AB "abababababababababababababababababababababababababababababababab"
static const uint8_t KEY_AB[32] = {
	0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab,
	0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab,
};

/* --- the test server ---------------------------------------------------- */

struct srv {
	int lfd, stop_efd;
	uint16_t port;
	pthread_t th;
	SSL_CTX *tls;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int active;
	int nreq;
	char last[2048];
	size_t last_len;
	char sni[64];
};

struct sconn {
	struct srv *s;
	int fd;
	SSL *ssl;
};

static int sc_write(struct sconn *c, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = c->ssl ? SSL_write(c->ssl, buf, (int)len) : send(c->fd, buf, len, MSG_NOSIGNAL);
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static ssize_t sc_read(struct sconn *c, char *buf, size_t cap)
{
	return c->ssl ? SSL_read(c->ssl, buf, (int)cap) : recv(c->fd, buf, cap, 0);
}

static void sc_printf(struct sconn *c, const char *fmt, ...)
{
	char buf[8192];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	sc_write(c, buf, (size_t)n);
}

/* Waits until the client goes away or the server stops (or 3 s pass). */
static void sc_hold(struct sconn *c)
{
	struct pollfd pf[2] = { { .fd = c->fd, .events = POLLIN }, { .fd = c->s->stop_efd, .events = POLLIN } };
	char b[64];

	while (poll(pf, 2, 3000) > 0 && !pf[1].revents)
		if (recv(c->fd, b, sizeof(b), MSG_DONTWAIT) <= 0 && errno != EAGAIN)
			break;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
	nanosleep(&ts, NULL);
}

/* Body of a 200 with Content-Length. */
static void reply_json(struct sconn *c, const char *body)
{
	sc_printf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
		  strlen(body), body);
}

static void route(struct sconn *c, const char *path, const char *req)
{
	if (!strcmp(path, "/allow")) {
		reply_json(c, "{\"Allow\":true}");
	} else if (!strcmp(path, "/deny")) {
		reply_json(c, "{\"Allow\":false}");
	} else if (!strcmp(path, "/lower")) {
		reply_json(c, "{\"allow\": true}");
	} else if (!strcmp(path, "/403")) {
		sc_printf(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nforbidden");
	} else if (!strcmp(path, "/notjson")) {
		reply_json(c, "<html>Allow</html>");
	} else if (!strcmp(path, "/chunked")) {
		sc_printf(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
		sleep_ms(20);
		sc_printf(c, "4\r\n{\"Al\r\n");
		sleep_ms(20);
		sc_printf(c, "5;ext=1\r\nlow\":\r\n6\r\n true}\r\n");
		sleep_ms(20);
		sc_printf(c, "0\r\n\r\n");
	} else if (!strcmp(path, "/close")) {
		sc_printf(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"Allow\"");
		sleep_ms(20);
		sc_printf(c, ":true}");
	} else if (!strcmp(path, "/slow")) {
		sc_hold(c);
		reply_json(c, "{\"Allow\":true}");
	} else if (!strcmp(path, "/slowbody")) {
		sc_printf(c, "HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{\"Allow\":");
		sc_hold(c);
	} else if (!strcmp(path, "/big") || !strcmp(path, "/bigpad")) {
		/* 5 KiB: the verdict must come from the first 4 KiB */
		char body[5121];
		size_t n;

		if (!strcmp(path, "/big")) {
			n = (size_t)snprintf(body, sizeof(body), "{\"Allow\":true}");
			memset(body + n, ' ', sizeof(body) - 1 - n);
		} else {
			n = (size_t)snprintf(body, sizeof(body), "{\"Pad\":\"");
			memset(body + n, 'x', sizeof(body) - 1 - n);
			memcpy(body + sizeof(body) - 1 - 17, "\",\"Allow\":true}  ", 17);
		}
		body[sizeof(body) - 1] = '\0';
		reply_json(c, body);
	} else if (!strcmp(path, "/interim")) {
		sc_printf(c, "HTTP/1.1 100 Continue\r\n\r\n");
		reply_json(c, "{\"Allow\":true}");
	} else if (!strcmp(path, "/garbage")) {
		sc_printf(c, "SMTP ready\r\n\r\n");
	} else if (!strcmp(path, "/echo")) {
		/* allows exactly the sources 10.0.a.b with (a*256+b) % 3 == 0 */
		const char *s = strstr(req, "\"Source\":\"10.0.");
		unsigned a = 0, b = 0;

		if (s && sscanf(s + 15, "%u.%u", &a, &b) == 2 && (a * 256 + b) % 3 == 0)
			reply_json(c, "{\"Allow\":true}");
		else
			reply_json(c, "{\"Allow\":false}");
	} else {
		sc_printf(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
	}
}

static void *conn_main(void *arg)
{
	struct sconn *c = arg;
	struct srv *s = c->s;
	char req[4096], path[256] = "";
	size_t len = 0;

	if (s->tls) {
		c->ssl = SSL_new(s->tls);
		SSL_set_fd(c->ssl, c->fd);
		if (SSL_accept(c->ssl) != 1)
			goto out;
		const char *sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
		pthread_mutex_lock(&s->mu);
		snprintf(s->sni, sizeof(s->sni), "%s", sni ? sni : "");
		pthread_mutex_unlock(&s->mu);
	}
	for (;;) {
		ssize_t n = sc_read(c, req + len, sizeof(req) - 1 - len);
		const char *end, *cl;

		if (n <= 0)
			goto out;
		len += (size_t)n;
		req[len] = '\0';
		end = strstr(req, "\r\n\r\n");
		if (!end)
			continue;
		cl = strcasestr(req, "\r\nContent-Length: ");
		if (cl && len >= (size_t)(end + 4 - req) + strtoul(cl + 18, NULL, 10))
			break;
		if (len == sizeof(req) - 1)
			goto out;
	}
	sscanf(req, "POST %255s HTTP/1.1", path);
	path[strcspn(path, "?")] = '\0';
	pthread_mutex_lock(&s->mu);
	memcpy(s->last, req, len + 1);
	s->last_len = len;
	s->nreq++;
	pthread_mutex_unlock(&s->mu);
	route(c, path, req);
out:
	if (c->ssl) {
		SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
	}
	close(c->fd);
	pthread_mutex_lock(&s->mu);
	s->active--;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	free(c);
	ERR_clear_error();
	return NULL;
}

static void *accept_main(void *arg)
{
	struct srv *s = arg;

	for (;;) {
		int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
		struct sconn *c;
		pthread_t th;

		if (fd < 0)
			break; /* shutdown() of the listener */
		c = calloc(1, sizeof(*c));
		c->s = s;
		c->fd = fd;
		pthread_mutex_lock(&s->mu);
		s->active++;
		pthread_mutex_unlock(&s->mu);
		if (pthread_create(&th, NULL, conn_main, c) == 0)
			pthread_detach(th);
	}
	return NULL;
}

static void srv_start(struct srv *s, SSL_CTX *tls)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sin);

	memset(s, 0, sizeof(*s));
	s->tls = tls;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	s->stop_efd = eventfd(0, EFD_CLOEXEC);
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s->lfd >= 0);
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(s->lfd, 512), 0);
	assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&sin, &sl), 0);
	s->port = ntohs(sin.sin_port);
	assert_int_equal(pthread_create(&s->th, NULL, accept_main, s), 0);
}

static void srv_stop(struct srv *s)
{
	uint64_t one = 1;

	assert_int_equal(write(s->stop_efd, &one, sizeof(one)), sizeof(one));
	shutdown(s->lfd, SHUT_RDWR);
	pthread_join(s->th, NULL);
	pthread_mutex_lock(&s->mu);
	while (s->active > 0)
		pthread_cond_wait(&s->cv, &s->mu);
	pthread_mutex_unlock(&s->mu);
	close(s->lfd);
	close(s->stop_efd);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
}

static struct kd_admission *adm_new(const struct srv *s, const char *scheme, const char *host,
				    const char *path, bool fail_open, int timeout_ms)
{
	struct kd_admission *a = NULL;
	char url[256];
	struct kd_admission_opts o = { .url = url, .fail_open = fail_open, .timeout_ms = timeout_ms };

	snprintf(url, sizeof(url), "%s://%s:%u%s", scheme, host, s->port, path);
	assert_int_equal(kd_admission_new(&a, &o), 0);
	assert_non_null(a);
	return a;
}

struct verdict {
	bool allow;
	char reason[KD_ADMISSION_REASON_MAX];
};

static struct verdict check(const struct srv *s, const char *path, bool fail_open, int timeout_ms)
{
	struct kd_admission *a = adm_new(s, "http", "127.0.0.1", path, fail_open, timeout_ms);
	struct verdict v;

	v.allow = !fail_open; /* the opposite of whatever the check must write */
	assert_int_equal(kd_admission_check_sync(a, KEY_AB, "100.64.0.7", &v.allow, v.reason,
						 sizeof(v.reason)), 0);
	kd_admission_free(a);
	return v;
}

/* --- pure parts --------------------------------------------------------- */

static void test_url_parse(void **state)
{
	struct kd_url u;
	char h[300];

	assert_int_equal(kd_url_parse("http://example.com/verify?x=1#frag", &u), 0);
	assert_false(u.https);
	assert_string_equal(u.host, "example.com");
	assert_int_equal(u.port, 80);
	assert_string_equal(u.path, "/verify?x=1");
	assert_int_equal(kd_url_host_header(&u, h, sizeof(h)), 11);
	assert_string_equal(h, "example.com");

	assert_int_equal(kd_url_parse("HTTPS://[::1]:8443", &u), 0);
	assert_true(u.https);
	assert_string_equal(u.host, "::1");
	assert_int_equal(u.port, 8443);
	assert_string_equal(u.path, "/");
	kd_url_host_header(&u, h, sizeof(h));
	assert_string_equal(h, "[::1]:8443");

	assert_int_equal(kd_url_parse("https://h:443?q", &u), 0);
	assert_string_equal(u.path, "/?q");
	kd_url_host_header(&u, h, sizeof(h));
	assert_string_equal(h, "h");

	static const char *const bad[] = {
		"", "ftp://h/", "http://", "http:///x", "http://h:0/", "http://h:65536/", "http://h:/",
		"http://u:p@h/", "http://[::1/", "http://[zz]/", "http://h/a b", "http://h/\x01",
		"http://h:80x/", "http://[::1]x/", "http://h%41/", "//h/",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&u, 0x55, sizeof(u));
		if (kd_url_parse(bad[i], &u) != -EINVAL)
			fail_msg("accepted %s", bad[i]);
		assert_int_equal(u.host[0], 0);
	}
}

static struct kd_http_resp resp_a, resp_b;

/* Feeding all at once and byte by byte must agree; returns the state. */
static enum kd_http_resp_state feed_both(const char *in, bool eof)
{
	size_t len = strlen(in);
	ssize_t whole;
	size_t used = 0;

	kd_http_resp_init(&resp_a);
	kd_http_resp_init(&resp_b);
	whole = kd_http_resp_feed(&resp_a, in, len);
	for (size_t i = 0; i < len && resp_b.state != KD_HTTP_RESP_DONE &&
			   resp_b.state != KD_HTTP_RESP_ERROR; i++) {
		ssize_t k = kd_http_resp_feed(&resp_b, in + i, 1);
		if (k > 0)
			used += (size_t)k;
	}
	if (eof) {
		kd_http_resp_eof(&resp_a);
		kd_http_resp_eof(&resp_b);
	}
	assert_int_equal(resp_a.state, resp_b.state);
	if (resp_a.state != KD_HTTP_RESP_ERROR) {
		assert_int_equal(whole, (ssize_t)used);
		assert_int_equal(resp_a.status, resp_b.status);
		assert_int_equal(resp_a.body_len, resp_b.body_len);
		assert_memory_equal(resp_a.body, resp_b.body, resp_a.body_len);
		assert_int_equal(resp_a.body_truncated, resp_b.body_truncated);
	}
	return resp_a.state;
}

static void test_response_reader(void **state)
{
	/* Content-Length, with bytes after the body left unconsumed */
	assert_int_equal(feed_both("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA", false),
			 KD_HTTP_RESP_DONE);
	assert_int_equal(resp_a.body_len, 5);
	assert_memory_equal(resp_a.body, "hello", 5);
	assert_string_equal(resp_a.reason, "OK");

	/* chunked with an extension, bare LF lines, upper-case hex */
	assert_int_equal(feed_both("HTTP/1.1 200 OK\ntransfer-encoding: Chunked\n\n"
				   "3;a=b\r\nabc\r\nA\nabcdefghij\n0\r\n\r\n", false),
			 KD_HTTP_RESP_DONE);
	assert_int_equal(resp_a.body_len, 13);
	assert_memory_equal(resp_a.body, "abcabcdefghij", 13);

	/* close-delimited: complete only at EOF */
	assert_int_equal(feed_both("HTTP/1.0 200 OK\r\n\r\n{}", false), KD_HTTP_RESP_BODY);
	assert_int_equal(feed_both("HTTP/1.0 200 OK\r\n\r\n{}", true), KD_HTTP_RESP_DONE);
	assert_int_equal(resp_a.mode, KD_HTTP_BODY_CLOSE);

	/* a Content-Length body cut short is not complete */
	assert_int_equal(feed_both("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", true),
			 KD_HTTP_RESP_BODY);
	assert_int_equal(kd_http_resp_eof(&resp_a), -EPIPE);

	/* interim 1xx skipped; status with no phrase */
	assert_int_equal(feed_both("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 403\r\n"
				   "Content-Length: 0\r\n\r\n", false),
			 KD_HTTP_RESP_DONE);
	assert_int_equal(resp_a.status, 403);
	assert_string_equal(resp_a.reason, "");
	assert_true(resp_a.head_done);

	/* 204 has no body even with a length */
	assert_int_equal(feed_both("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", false),
			 KD_HTTP_RESP_DONE);

	/* only 4 KiB of body is kept */
	{
		static char big[64 + 6000];
		int n = snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\nContent-Length: 6000\r\n\r\n");
		memset(big + n, 'x', 6000);
		big[n + 6000] = '\0';
		assert_int_equal(feed_both(big, false), KD_HTTP_RESP_DONE);
		assert_int_equal(resp_a.body_len, KD_HTTP_RESP_BODY_MAX);
		assert_true(resp_a.body_truncated);
		n = snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n");
		memset(big + n, 'y', 4096);
		big[n + 4096] = '\0';
		assert_int_equal(feed_both(big, false), KD_HTTP_RESP_DONE);
		assert_false(resp_a.body_truncated);
	}

	static const char *const bad[] = {
		"HTTP/2 200 OK\r\n\r\n",
		"HTTP/1.1 20 OK\r\n\r\n",
		"HTTP/1.1 200OK\r\n\r\n",
		"ICY 200 OK\r\n\r\n",
		"HTTP/1.1 101 Switching\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
		"HTTP/1.1 200 OK\r\nBad Name: a\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
		"\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (feed_both(bad[i], false) != KD_HTTP_RESP_ERROR)
			fail_msg("accepted %s", bad[i]);

	/* a head beyond the limit */
	{
		static char huge[KD_HTTP_RESP_HEAD_MAX + 64];
		int n = snprintf(huge, sizeof(huge), "HTTP/1.1 200 OK\r\nX: ");
		memset(huge + n, 'a', sizeof(huge) - 1 - (size_t)n);
		kd_http_resp_init(&resp_a);
		assert_int_equal(kd_http_resp_feed(&resp_a, huge, sizeof(huge) - 1), -EMSGSIZE);
		assert_int_equal(resp_a.state, KD_HTTP_RESP_ERROR);
	}
}

static void test_judge(void **state)
{
	struct kd_admission_result res;

	/* no head: the fail-open policy decides */
	kd_http_resp_init(&resp_a);
	kd_admission_judge(&resp_a, KD_HTTP_ERR_CONNECT, "connect: refused", KEY_AB, "1.2.3.4", true, &res);
	assert_true(res.allow);
	assert_int_equal(res.outcome, KD_ADM_TRANSPORT);
	assert_string_equal(res.reason, "admission controller: connect: refused, fail-open");
	kd_admission_judge(&resp_a, KD_HTTP_ERR_TIMEOUT, NULL, KEY_AB, "1.2.3.4", false, &res);
	assert_false(res.allow);
	assert_string_equal(res.reason, "admission controller: timeout, fail-closed");

	/* a head, then the body broke off: judged on what came, never fail-open */
	assert_int_equal(feed_both("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{\"Allow\":true}", false),
			 KD_HTTP_RESP_BODY);
	kd_admission_judge(&resp_a, KD_HTTP_ERR_TIMEOUT, NULL, KEY_AB, "1.2.3.4", false, &res);
	assert_true(res.allow);
	assert_int_equal(feed_both("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{\"Allow\":tr", false),
			 KD_HTTP_RESP_BODY);
	kd_admission_judge(&resp_a, KD_HTTP_ERR_TIMEOUT, NULL, KEY_AB, "1.2.3.4", true, &res);
	assert_false(res.allow);
	assert_int_equal(res.outcome, KD_ADM_BAD_JSON);

	/* unknown source prints like Go's zero netip.Addr */
	assert_int_equal(feed_both("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", false),
			 KD_HTTP_RESP_DONE);
	kd_admission_judge(&resp_a, KD_HTTP_OK, NULL, KEY_AB, "", true, &res);
	assert_false(res.allow);
	assert_string_equal(res.reason, "admission controller: nodekey:" HEX_AB "/invalid IP not allowed");
}

/* --- against the server ------------------------------------------------- */

static void test_request_bytes(void **state)
{
	struct srv s;
	char want[1024], body[256];
	struct verdict v;
	int n;

	srv_start(&s, NULL);
	v = check(&s, "/allow?x=1", false, 2000);
	assert_true(v.allow);
	assert_string_equal(v.reason, "admission controller: allowed");
	n = kd_admission_request_format(body, sizeof(body), KEY_AB, "100.64.0.7");
	assert_int_equal(n, (int)strlen(body));
	assert_string_equal(body, "{\"NodePublic\":\"nodekey:" HEX_AB "\",\"Source\":\"100.64.0.7\"}");
	snprintf(want, sizeof(want),
		 "POST /allow?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nUser-Agent: kderp-admission/1\r\n"
		 "Content-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
		 s.port, strlen(body), body);
	assert_int_equal(s.nreq, 1);
	assert_string_equal(s.last, want);
	srv_stop(&s);
}

static void test_verdicts(void **state)
{
	static const struct {
		const char *path;
		bool allow;
		const char *reason;
	} cases[] = {
		{ "/allow", true, "admission controller: allowed" },
		{ "/lower", true, "admission controller: allowed" },
		{ "/deny", false, "admission controller: nodekey:" HEX_AB "/100.64.0.7 not allowed" },
		{ "/403", false, "admission controller: 403 Forbidden" },
		{ "/nowhere", false, "admission controller: 404 Not Found" },
		{ "/notjson", false, "admission controller: response is not JSON" },
		{ "/chunked", true, "admission controller: allowed" },
		{ "/close", true, "admission controller: allowed" },
		{ "/big", true, "admission controller: allowed" },
		{ "/bigpad", false, "admission controller: response is not JSON" },
		{ "/interim", true, "admission controller: allowed" },
	};
	struct srv s;

	srv_start(&s, NULL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* fail_open must not matter once a response arrived */
		for (int fo = 0; fo < 2; fo++) {
			struct verdict v = check(&s, cases[i].path, fo, 3000);
			if (v.allow != cases[i].allow || strcmp(v.reason, cases[i].reason))
				fail_msg("%s fail_open=%d: allow=%d reason=%s", cases[i].path, fo, v.allow,
					 v.reason);
		}
	}
	srv_stop(&s);
}

static uint64_t ms_since(uint64_t t0)
{
	return kd_http_now_ms() - t0;
}

static void test_transport_errors(void **state)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sin);
	struct srv s, closed;
	struct verdict v;
	uint64_t t0;
	int fd;

	srv_start(&s, NULL);
	/* beyond the timeout: fail-closed denies, fail-open allows, both on time */
	t0 = kd_http_now_ms();
	v = check(&s, "/slow", false, 300);
	assert_false(v.allow);
	assert_string_equal(v.reason, "admission controller: receive: timeout, fail-closed");
	assert_true(ms_since(t0) >= 290 && ms_since(t0) < 2000);
	t0 = kd_http_now_ms();
	v = check(&s, "/slow", true, 300);
	assert_true(v.allow);
	assert_string_equal(v.reason, "admission controller: receive: timeout, fail-open");
	assert_true(ms_since(t0) < 2000);

	/* the body stalls after a 200 head: denied whatever fail_open says, like Go */
	v = check(&s, "/slowbody", true, 300);
	assert_false(v.allow);
	assert_string_equal(v.reason, "admission controller: reading response: receive: timeout");

	/* not HTTP: a transport error */
	v = check(&s, "/garbage", true, 2000);
	assert_true(v.allow);
	assert_string_equal(v.reason, "admission controller: malformed HTTP response, fail-open");
	v = check(&s, "/garbage", false, 2000);
	assert_false(v.allow);
	srv_stop(&s);

	/* connection refused: a port that was just closed */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	close(fd);
	memset(&closed, 0, sizeof(closed));
	closed.port = ntohs(sin.sin_port);
	v = check(&closed, "/allow", false, 2000);
	assert_false(v.allow);
	assert_string_equal(v.reason, "admission controller: connect: Connection refused, fail-closed");
	v = check(&closed, "/allow", true, 2000);
	assert_true(v.allow);
	assert_string_equal(v.reason, "admission controller: connect: Connection refused, fail-open");
}

/* --- the asynchronous API ----------------------------------------------- */

#define PER_THREAD 300

struct submitter {
	struct kd_admission *a;
	struct kd_admission_queue *q;
	unsigned base;
	unsigned seen[PER_THREAD];
	unsigned wrong, busy, bad_submit;
};

static void *submit_main(void *arg)
{
	struct submitter *t = arg;
	unsigned got = 0, submitted = 0;
	uint64_t t0 = kd_http_now_ms();

	while (got < PER_THREAD && ms_since(t0) < 20000) {
		struct kd_admission_result res[16];
		struct pollfd pf = { .fd = kd_admission_queue_fd(t->q), .events = POLLIN };
		size_t n;

		/* submit in bursts between polls, like a loop accepting clients */
		for (int k = 0; k < 7 && submitted < PER_THREAD; k++, submitted++) {
			unsigned id = t->base + submitted;
			char ip[32];
			int r;

			snprintf(ip, sizeof(ip), "10.0.%u.%u", id / 256, id % 256);
			r = kd_admission_submit(t->a, t->q, KEY_AB, ip, id);
			if (r == -EBUSY)
				t->busy++;
			if (r)
				t->bad_submit++;
		}
		if (poll(&pf, 1, submitted < PER_THREAD ? 0 : 100) < 0)
			break;
		do {
			n = kd_admission_poll(t->q, res, 16);
			for (size_t i = 0; i < n; i++) {
				uint64_t id = res[i].cookie;
				if (id < t->base || id >= t->base + PER_THREAD) {
					t->wrong++;
					continue;
				}
				t->seen[id - t->base]++;
				got++;
				if (res[i].allow != (id % 3 == 0) || res[i].outcome != (res[i].allow ? KD_ADM_ALLOWED : KD_ADM_DENIED))
					t->wrong++;
			}
		} while (n == 16);
	}
	return NULL;
}

static void test_concurrent_queues(void **state)
{
	struct kd_admission_opts o = { .threads = 4 };
	struct submitter t[2] = { 0 };
	pthread_t th[2];
	struct kd_admission *a;
	char url[128], m[2048];
	struct srv s;

	srv_start(&s, NULL);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/echo", s.port);
	o.url = url;
	assert_int_equal(kd_admission_new(&a, &o), 0);
	for (int i = 0; i < 2; i++) {
		t[i].a = a;
		t[i].base = 1000 + (unsigned)i * PER_THREAD;
		assert_int_equal(kd_admission_queue_new(&t[i].q), 0);
		assert_int_equal(pthread_create(&th[i], NULL, submit_main, &t[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(t[i].bad_submit, 0);
		assert_int_equal(t[i].wrong, 0);
		for (unsigned k = 0; k < PER_THREAD; k++)
			if (t[i].seen[k] != 1)
				fail_msg("cookie %u completed %u times", t[i].base + k, t[i].seen[k]);
	}
	/* the queues are drained: nothing is left to read */
	for (int i = 0; i < 2; i++) {
		struct pollfd pf = { .fd = kd_admission_queue_fd(t[i].q), .events = POLLIN };
		assert_int_equal(poll(&pf, 1, 0), 0);
	}
	assert_int_equal(s.nreq, 2 * PER_THREAD);
	assert_true(kd_admission_metrics(a, m, sizeof(m)) > 0);
	assert_non_null(strstr(m, "kderp_admission_checks_total{result=\"allowed\"} 200\n"));
	assert_non_null(strstr(m, "kderp_admission_checks_total{result=\"denied\"} 400\n"));
	assert_non_null(strstr(m, "kderp_admission_pending 0\n"));
	kd_admission_free(a);
	for (int i = 0; i < 2; i++)
		kd_admission_queue_free(t[i].q);
	srv_stop(&s);
}

/* Waits up to ms for the queue fd; returns poll's verdict. */
static int wait_queue(struct kd_admission_queue *q, int ms)
{
	struct pollfd pf = { .fd = kd_admission_queue_fd(q), .events = POLLIN };
	return poll(&pf, 1, ms);
}

static void test_busy_and_free_cancels(void **state)
{
	struct kd_admission_opts o = { .threads = 1, .max_pending = 2, .timeout_ms = 10000 };
	struct kd_admission_queue *q, *gone;
	struct kd_admission_result res[8];
	struct kd_admission *a;
	char url[128], m[2048];
	int ok = 0, r;
	uint64_t t0;
	struct srv s;

	srv_start(&s, NULL);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/slow", s.port);
	o.url = url;
	assert_int_equal(kd_admission_new(&a, &o), 0);
	assert_int_equal(kd_admission_queue_new(&q), 0);
	assert_int_equal(kd_admission_queue_new(&gone), 0);

	/* one worker holds one request in flight, two more may wait: the
	 * first belongs to a queue that will be freed before it completes */
	assert_int_equal(kd_admission_submit(a, gone, KEY_AB, "10.1.1.2", 999), 0);
	while ((r = kd_admission_submit(a, q, KEY_AB, "10.1.1.1", 100 + (uint64_t)ok)) == 0 && ok < 8)
		ok++;
	assert_int_equal(r, -EBUSY);
	assert_true(ok == 1 || ok == 2);
	assert_int_equal(kd_admission_metrics(a, m, sizeof(m)) > 0, 1);
	assert_non_null(strstr(m, "kderp_admission_busy_total 1\n"));
	assert_int_equal(kd_admission_submit(a, q, KEY_AB, "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.21.22.23.24.25.26", 1),
			 -EINVAL);
	assert_int_equal(kd_admission_poll(q, res, 8), 0);
	assert_int_equal(wait_queue(q, 0), 0);

	/* a queue freed with a request pending: the completion is dropped */
	kd_admission_queue_free(gone);

	/* free aborts the in-flight request at once, not after the 3 s hold */
	t0 = kd_http_now_ms();
	kd_admission_free(a);
	assert_true(ms_since(t0) < 1500);
	assert_int_equal(wait_queue(q, 0), 1);
	assert_int_equal(kd_admission_poll(q, res, 8), (size_t)ok);
	for (int i = 0; i < ok; i++) {
		assert_int_equal(res[i].cookie, 100 + (uint64_t)i); /* oldest first, per worker */
		assert_false(res[i].allow);
		assert_int_equal(res[i].outcome, KD_ADM_CANCELED);
		assert_string_equal(res[i].reason, "admission controller: canceled");
	}
	assert_int_equal(wait_queue(q, 0), 0);
	kd_admission_queue_free(q);
	srv_stop(&s);
}

static void test_queue_outlived_by_requests(void **state)
{
	struct kd_admission_opts o = { .threads = 2 };
	struct kd_admission_queue *q;
	struct kd_admission *a;
	char url[128];
	struct srv s;

	/* the daemon frees a worker's queue before the webhook answers: the
	 * answers must land nowhere, without a leak or a use after free */
	srv_start(&s, NULL);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/chunked", s.port);
	o.url = url;
	assert_int_equal(kd_admission_new(&a, &o), 0);
	assert_int_equal(kd_admission_queue_new(&q), 0);
	for (int i = 0; i < 20; i++)
		assert_int_equal(kd_admission_submit(a, q, KEY_AB, "10.2.2.2", (uint64_t)i), 0);
	kd_admission_queue_free(q);
	sleep_ms(150);
	kd_admission_free(a);
	srv_stop(&s);

	kd_admission_free(NULL);
	kd_admission_queue_free(NULL);
}

static void test_metrics(void **state)
{
	struct kd_admission *a;
	char m[2048], reason[KD_ADMISSION_REASON_MAX];
	bool allow;
	struct srv s;
	uint16_t port;

	srv_start(&s, NULL);
	a = adm_new(&s, "http", "127.0.0.1", "/403", true, 2000);
	for (int i = 0; i < 3; i++)
		assert_int_equal(kd_admission_check_sync(a, KEY_AB, "1.1.1.1", &allow, reason, sizeof(reason)), 0);
	assert_true(kd_admission_metrics(a, m, sizeof(m)) > 0);
	assert_non_null(strstr(m, "kderp_admission_checks_total{result=\"denied\"} 3\n"));
	assert_non_null(strstr(m, "kderp_admission_checks_total{result=\"allowed\"} 0\n"));
	assert_non_null(strstr(m, "kderp_admission_errors_total{kind=\"status\"} 3\n"));
	assert_non_null(strstr(m, "kderp_admission_errors_total{kind=\"bad_json\"} 0\n"));
	assert_non_null(strstr(m, "kderp_admission_fail_open_allowed_total 0\n"));
	/* too small a buffer is an error, not a truncated exposition */
	assert_int_equal(kd_admission_metrics(a, m, 100), -ENOSPC);
	assert_int_equal(m[0], '\0');
	kd_admission_free(a);
	port = s.port;
	srv_stop(&s);

	/* the server is gone: its port refuses, fail-open admits and counts it */
	s.port = port;
	a = adm_new(&s, "http", "127.0.0.1", "/allow", true, 2000);
	assert_int_equal(kd_admission_check_sync(a, KEY_AB, "1.1.1.1", &allow, reason, sizeof(reason)), 0);
	assert_true(allow);
	assert_true(kd_admission_metrics(a, m, sizeof(m)) > 0);
	assert_non_null(strstr(m, "kderp_admission_errors_total{kind=\"connect\"} 1\n"));
	assert_non_null(strstr(m, "kderp_admission_errors_total{kind=\"timeout\"} 0\n"));
	assert_non_null(strstr(m, "kderp_admission_fail_open_allowed_total 1\n"));
	assert_non_null(strstr(m, "kderp_admission_checks_total{result=\"allowed\"} 1\n"));
	kd_admission_free(a);
}

static void test_bad_options(void **state)
{
	struct kd_admission_opts o = { .url = "ftp://x/" };
	struct kd_admission *a = (void *)1;

	assert_int_equal(kd_admission_new(&a, &o), -EINVAL);
	assert_null(a);
	o.url = NULL;
	assert_int_equal(kd_admission_new(&a, &o), -EINVAL);
	o.url = "http://127.0.0.1/";
	o.threads = KD_ADMISSION_THREADS_MAX + 1;
	assert_int_equal(kd_admission_new(&a, &o), -EINVAL);
	o.threads = 0;
	o.timeout_ms = -1;
	assert_int_equal(kd_admission_new(&a, &o), -EINVAL);
	o.timeout_ms = 0;
	o.url = "https://127.0.0.1/";
	o.ca_file = "/nonexistent/ca.pem";
	assert_int_equal(kd_admission_new(&a, &o), -EINVAL);
	assert_null(a);
}

/* --- https -------------------------------------------------------------- */

static void test_https(void **state)
{
	char dir[] = "/tmp/kd-adm-XXXXXX", crt[64], key[64], reason[KD_ADMISSION_REASON_MAX];
	struct kd_admission_opts o = { 0 };
	struct kd_admission *a;
	SSL_CTX *sctx;
	EVP_PKEY *k = NULL;
	X509 *x = NULL;
	char url[128];
	bool allow;
	struct srv s;

	assert_non_null(mkdtemp(dir));
	snprintf(crt, sizeof(crt), "%s/ca.crt", dir);
	snprintf(key, sizeof(key), "%s/ca.key", dir);
	assert_int_equal(kd_tls_selfsigned_new(&x, &k, "localhost", NULL, time(NULL), 86400), 0);
	assert_int_equal(kd_tls_write_pem_pair(crt, key, x, k), 0);
	sctx = SSL_CTX_new(TLS_server_method());
	assert_int_equal(SSL_CTX_use_certificate(sctx, x), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(sctx, k), 1);
	srv_start(&s, sctx);
	snprintf(url, sizeof(url), "https://localhost:%u/allow", s.port);
	o.url = url;

	/* verified against the given CA, SNI sent for the name */
	o.ca_file = crt;
	assert_int_equal(kd_admission_new(&a, &o), 0);
	allow = false;
	assert_int_equal(kd_admission_check_sync(a, KEY_AB, "1.1.1.1", &allow, reason, sizeof(reason)), 0);
	assert_true(allow);
	assert_string_equal(s.sni, "localhost");
	assert_non_null(strstr(s.last, "Host: localhost:"));
	kd_admission_free(a);

	/* system roots do not know the self-signed certificate */
	o.ca_file = NULL;
	assert_int_equal(kd_admission_new(&a, &o), 0);
	allow = true;
	assert_int_equal(kd_admission_check_sync(a, KEY_AB, "1.1.1.1", &allow, reason, sizeof(reason)), 0);
	assert_false(allow);
	assert_non_null(strstr(reason, "certificate verify failed"));
	assert_non_null(strstr(reason, "fail-closed"));
	kd_admission_free(a);

	/* unless verification is off */
	o.insecure = true;
	assert_int_equal(kd_admission_new(&a, &o), 0);
	allow = false;
	assert_int_equal(kd_admission_check_sync(a, KEY_AB, "1.1.1.1", &allow, reason, sizeof(reason)), 0);
	assert_true(allow);
	kd_admission_free(a);

	/* a verifying client must not accept the certificate for another name */
	snprintf(url, sizeof(url), "https://127.0.0.1:%u/allow", s.port);
	o.insecure = false;
	o.ca_file = crt;
	assert_int_equal(kd_admission_new(&a, &o), 0);
	allow = true;
	assert_int_equal(kd_admission_check_sync(a, KEY_AB, "1.1.1.1", &allow, reason, sizeof(reason)), 0);
	assert_false(allow);
	kd_admission_free(a);

	srv_stop(&s);
	SSL_CTX_free(sctx);
	X509_free(x);
	EVP_PKEY_free(k);
	unlink(crt);
	unlink(key);
	rmdir(dir);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN); /* the server writes to clients that gave up */
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_url_parse),
		cmocka_unit_test(test_response_reader),
		cmocka_unit_test(test_judge),
		cmocka_unit_test(test_request_bytes),
		cmocka_unit_test(test_verdicts),
		cmocka_unit_test(test_transport_errors),
		cmocka_unit_test(test_concurrent_queues),
		cmocka_unit_test(test_busy_and_free_cancels),
		cmocka_unit_test(test_queue_outlived_by_requests),
		cmocka_unit_test(test_metrics),
		cmocka_unit_test(test_bad_options),
		cmocka_unit_test(test_https),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
