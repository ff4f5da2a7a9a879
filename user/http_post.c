// SPDX-License-Identifier: MIT
/* The blocking half of the webhook's HTTP client: resolve, connect, TLS,
 * send, receive, all under one deadline and abortable through a cancel fd.
 * Runs in admission worker threads only; the event loop never calls it.
 * Over TLS, OpenSSL writes with write(2): the process must ignore SIGPIPE
 * (kderpd does). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#include <openssl/err.h>

#include "http_client.h"
#include "tls.h"

uint64_t kd_http_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

const char *kd_http_err_name(enum kd_http_err e)
{
	static const char *const names[KD_HTTP_ERR_MAX] = {
		[KD_HTTP_OK] = "ok",
		[KD_HTTP_ERR_DNS] = "dns",
		[KD_HTTP_ERR_CONNECT] = "connect",
		[KD_HTTP_ERR_TLS] = "tls",
		[KD_HTTP_ERR_TIMEOUT] = "timeout",
		[KD_HTTP_ERR_IO] = "io",
		[KD_HTTP_ERR_PROTOCOL] = "protocol",
		[KD_HTTP_ERR_CANCELED] = "canceled",
	};
	return (unsigned)e < KD_HTTP_ERR_MAX ? names[e] : "?";
}

struct xfer {
	const struct kd_http_post *p;
	int fd;
	SSL *ssl;
	char *detail;
	size_t detail_cap;
};

static enum kd_http_err set_detail(struct xfer *x, enum kd_http_err e, const char *what, int err)
{
	char buf[128];

	if (x->detail && x->detail_cap) {
		if (err)
			snprintf(x->detail, x->detail_cap, "%s: %s", what,
				 strerror_r(err, buf, sizeof(buf)));
		else
			snprintf(x->detail, x->detail_cap, "%s", what);
	}
	return e;
}

/* Waits for fd to become readable/writable. 0, or the failure. */
static enum kd_http_err wait_fd(struct xfer *x, short events, const char *what)
{
	for (;;) {
		struct pollfd pf[2] = {
			{ .fd = x->fd, .events = events },
			{ .fd = x->p->cancel_fd, .events = POLLIN },
		};
		uint64_t now = kd_http_now_ms();
		int r;

		if (now >= x->p->deadline_ms) {
			if (x->detail && x->detail_cap)
				snprintf(x->detail, x->detail_cap, "%s: timeout", what);
			return KD_HTTP_ERR_TIMEOUT;
		}
		r = poll(pf, x->p->cancel_fd >= 0 ? 2 : 1, (int)(x->p->deadline_ms - now));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return set_detail(x, KD_HTTP_ERR_IO, "poll", errno);
		if (x->p->cancel_fd >= 0 && (pf[1].revents & POLLIN))
			return set_detail(x, KD_HTTP_ERR_CANCELED, "canceled", 0);
		if (pf[0].revents)
			return KD_HTTP_OK;
	}
}

static enum kd_http_err connect_one(struct xfer *x, const struct addrinfo *ai, int *err)
{
	socklen_t len = sizeof(*err);
	enum kd_http_err e;

	x->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		       ai->ai_protocol);
	if (x->fd < 0) {
		*err = errno;
		return KD_HTTP_ERR_CONNECT;
	}
	if (connect(x->fd, ai->ai_addr, ai->ai_addrlen) == 0)
		return KD_HTTP_OK;
	if (errno != EINPROGRESS) {
		*err = errno;
		goto fail;
	}
	e = wait_fd(x, POLLOUT, "connect");
	if (e)
		goto fail_e;
	if (getsockopt(x->fd, SOL_SOCKET, SO_ERROR, err, &len) == 0 && *err == 0)
		return KD_HTTP_OK;
	if (*err == 0)
		*err = errno;
fail:
	e = KD_HTTP_ERR_CONNECT;
fail_e:
	close(x->fd);
	x->fd = -1;
	return e;
}

/* Tries each resolved address in turn, like Go's dialer without the
 * happy-eyeballs race. */
static enum kd_http_err dial(struct xfer *x)
{
	const struct kd_url *u = x->p->url;
	/* no AI_ADDRCONFIG: in a namespace with only lo it hides 127.0.0.1 */
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
	struct addrinfo *res = NULL;
	enum kd_http_err e = KD_HTTP_ERR_CONNECT;
	char port[8];
	int r, err = ECONNREFUSED;

	snprintf(port, sizeof(port), "%u", u->port);
	/* blocking and not bounded by the deadline: the deadline is checked
	 * right after, so a slow resolver costs a worker, never the loop */
	r = getaddrinfo(u->host, port, &hints, &res);
	if (r) {
		if (x->detail && x->detail_cap)
			snprintf(x->detail, x->detail_cap, "resolve %s: %s", u->host,
				 r == EAI_SYSTEM ? "system error" : gai_strerror(r));
		return KD_HTTP_ERR_DNS;
	}
	for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		e = connect_one(x, ai, &err);
		if (e != KD_HTTP_ERR_CONNECT)
			break;
	}
	freeaddrinfo(res);
	if (e == KD_HTTP_ERR_CONNECT)
		return set_detail(x, e, "connect", err);
	return e;
}

/* One SSL call step: OK to retry after waiting (done in here), or failure. */
static enum kd_http_err ssl_wait(struct xfer *x, int ret, const char *what, bool *eof)
{
	int se = SSL_get_error(x->ssl, ret);
	char buf[160];

	switch (se) {
	case SSL_ERROR_WANT_READ:
		return wait_fd(x, POLLIN, what);
	case SSL_ERROR_WANT_WRITE:
		return wait_fd(x, POLLOUT, what);
	case SSL_ERROR_ZERO_RETURN:
		if (eof) {
			*eof = true;
			return KD_HTTP_OK;
		}
		return set_detail(x, KD_HTTP_ERR_IO, "TLS closed", 0);
	case SSL_ERROR_SYSCALL:
		ERR_clear_error();
		return set_detail(x, KD_HTTP_ERR_IO, what, errno ? errno : EPIPE);
	default:
		ERR_error_string_n(ERR_peek_last_error(), buf, sizeof(buf));
		ERR_clear_error();
		return set_detail(x, KD_HTTP_ERR_TLS, buf, 0);
	}
}

static enum kd_http_err tls_handshake(struct xfer *x)
{
	enum kd_http_err e;
	int r;

	if (!x->p->tls)
		return set_detail(x, KD_HTTP_ERR_TLS, "https without a TLS context", 0);
	if (kd_tls_client_ssl_new(&x->ssl, x->p->tls, x->fd))
		return set_detail(x, KD_HTTP_ERR_TLS, "SSL_new", 0);
	while ((r = SSL_connect(x->ssl)) != 1) {
		e = ssl_wait(x, r, "TLS handshake", NULL);
		if (e == KD_HTTP_ERR_IO)
			e = KD_HTTP_ERR_TLS; /* a reset mid-handshake is still a TLS failure */
		if (e)
			return e;
	}
	return KD_HTTP_OK;
}

static enum kd_http_err send_all(struct xfer *x, const char *buf, size_t len)
{
	enum kd_http_err e;

	while (len) {
		ssize_t n;

		if (x->ssl) {
			size_t w = 0;
			int r = SSL_write_ex(x->ssl, buf, len, &w);

			if (r != 1) {
				e = ssl_wait(x, r, "send", NULL);
				if (e)
					return e;
				continue;
			}
			n = (ssize_t)w;
		} else {
			n = send(x->fd, buf, len, MSG_NOSIGNAL);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno == EAGAIN) {
				e = wait_fd(x, POLLOUT, "send");
				if (e)
					return e;
				continue;
			}
			if (n < 0)
				return set_detail(x, KD_HTTP_ERR_IO, "send", errno);
		}
		buf += n;
		len -= (size_t)n;
	}
	return KD_HTTP_OK;
}

/* One read: >0 bytes, 0 at EOF, or sets *e. */
static ssize_t recv_some(struct xfer *x, char *buf, size_t cap, enum kd_http_err *e)
{
	for (;;) {
		ssize_t n;

		if (x->ssl) {
			size_t got = 0;
			bool eof = false;
			int r = SSL_read_ex(x->ssl, buf, cap, &got);

			if (r == 1)
				return (ssize_t)got;
			*e = ssl_wait(x, r, "receive", &eof);
			if (eof)
				return 0;
			if (*e)
				return -1;
			continue;
		}
		n = recv(x->fd, buf, cap, 0);
		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN) {
			*e = set_detail(x, KD_HTTP_ERR_IO, "receive", errno);
			return -1;
		}
		*e = wait_fd(x, POLLIN, "receive");
		if (*e)
			return -1;
	}
}

static bool response_finished(const struct kd_http_resp *r)
{
	/* a refusal is judged on its status alone: no need to wait for its body */
	return r->state == KD_HTTP_RESP_DONE ||
	       (r->state == KD_HTTP_RESP_BODY && r->status != 200);
}

static enum kd_http_err receive(struct xfer *x, struct kd_http_resp *r)
{
	enum kd_http_err e = KD_HTTP_OK;
	char buf[4096];

	while (!response_finished(r)) {
		ssize_t n = recv_some(x, buf, sizeof(buf), &e);

		if (n < 0)
			return e;
		if (n == 0) {
			if (kd_http_resp_eof(r) == 0)
				break;
			return set_detail(x, r->state == KD_HTTP_RESP_ERROR ? KD_HTTP_ERR_PROTOCOL
									     : KD_HTTP_ERR_IO,
					  "unexpected EOF", 0);
		}
		if (kd_http_resp_feed(r, buf, (size_t)n) < 0)
			return set_detail(x, KD_HTTP_ERR_PROTOCOL, "malformed HTTP response", 0);
	}
	return KD_HTTP_OK;
}

enum kd_http_err kd_http_post(const struct kd_http_post *p, struct kd_http_resp *r,
			      char *detail, size_t detail_cap)
{
	struct xfer x = { .p = p, .fd = -1, .detail = detail, .detail_cap = detail_cap };
	const struct kd_url *u = p->url;
	enum kd_http_err e;
	char host[KD_URL_HOST_MAX + 16];
	char head[KD_URL_PATH_MAX + KD_URL_HOST_MAX + 256];
	int n;

	if (detail && detail_cap)
		detail[0] = '\0';
	kd_http_resp_init(r);
	if (kd_url_host_header(u, host, sizeof(host)) < 0)
		return set_detail(&x, KD_HTTP_ERR_PROTOCOL, "host too long", 0);
	n = snprintf(head, sizeof(head),
		     "POST %s HTTP/1.1\r\n"
		     "Host: %s\r\n"
		     "User-Agent: kderp-admission/1\r\n"
		     "Content-Type: %s\r\n"
		     "Content-Length: %zu\r\n"
		     "Connection: close\r\n"
		     "\r\n",
		     u->path, host, p->content_type ? p->content_type : "application/octet-stream",
		     p->body_len);
	if (n < 0 || (size_t)n >= sizeof(head))
		return set_detail(&x, KD_HTTP_ERR_PROTOCOL, "request head too long", 0);

	e = dial(&x);
	if (!e && u->https)
		e = tls_handshake(&x);
	if (!e)
		e = send_all(&x, head, (size_t)n);
	if (!e && p->body_len)
		e = send_all(&x, p->body, p->body_len);
	if (!e)
		e = receive(&x, r);
	if (x.ssl) {
		if (!e)
			SSL_shutdown(x.ssl); /* best effort close_notify; never waits */
		SSL_free(x.ssl);
		ERR_clear_error();
	}
	if (x.fd >= 0)
		close(x.fd);
	return e;
}
