// SPDX-License-Identifier: MIT
/* The DERP client connection: handshake state machine, buffers, transport. */
#include "client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include "client_tls.h"
#include "log.h"

#define IN_INITIAL (128u << 10)
#define IN_MAX (DERP_MAX_INFO_LEN + DERP_FRAME_HDR_LEN)
#define OUT_INITIAL (64u << 10)
#define HTTP_HEAD_MAX (16u << 10)
#define DEFAULT_TIMEOUT_MS 10000

enum kd_client_state {
	ST_TCP_CONNECT,
	ST_TLS,
	ST_READ_RESPONSE,  /* HTTP 101 */
	ST_READ_SERVER_KEY,
	ST_WAIT_SERVER_INFO,
	ST_ESTABLISHED,
	ST_FAILED,
};

struct kd_client {
	int fd;
	SSL *ssl;
	bool ssl_want_write;
	enum kd_client_state st;
	int err; /* sticky once failed */
	int64_t deadline_ms;
	bool fast_start, cork, auto_pong, eof;

	struct kd_client_url url;
	struct kd_keypair key;
	uint8_t mesh_key[DERP_KEY_LEN];
	bool has_mesh_key, can_ack_pings, is_prober, no_fast_start, insecure;
	char *app_name, *ideal_node, *ca_file;
	uint8_t server_key[DERP_KEY_LEN];

	uint8_t *in;
	size_t in_start, in_end, in_cap;
	uint8_t *out;
	size_t out_off, out_len, out_cap;
};

static void default_random(void *buf, size_t len)
{
	randombytes_buf(buf, len);
}

static void (*random_fn)(void *buf, size_t len) = default_random;

void kd_client_set_random(void (*fn)(void *buf, size_t len))
{
	random_fn = fn ? fn : default_random;
}

int64_t kd_client_clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- transport ---------------------------------------------------------- */

/* >0 bytes, 0 EOF, -EAGAIN, -errno */
static ssize_t io_read(struct kd_client *c, void *buf, size_t n)
{
	if (c->ssl) {
		int r = SSL_read(c->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);

		if (r > 0)
			return r;
		switch (SSL_get_error(c->ssl, r)) {
		case SSL_ERROR_WANT_READ:
			return -EAGAIN;
		case SSL_ERROR_WANT_WRITE:
			c->ssl_want_write = true;
			return -EAGAIN;
		case SSL_ERROR_ZERO_RETURN:
			return 0;
		case SSL_ERROR_SYSCALL:
			ERR_clear_error();
			return errno && errno != EAGAIN ? -errno : 0;
		default:
			ERR_clear_error();
			return -EPROTO;
		}
	}
	for (;;) {
		ssize_t r = recv(c->fd, buf, n, 0);

		if (r >= 0)
			return r;
		if (errno == EINTR)
			continue;
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
}

/* >0 bytes, -EAGAIN, -errno */
static ssize_t io_write(struct kd_client *c, const void *buf, size_t n)
{
	if (c->ssl) {
		int r = SSL_write(c->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);

		c->ssl_want_write = false;
		if (r > 0)
			return r;
		switch (SSL_get_error(c->ssl, r)) {
		case SSL_ERROR_WANT_WRITE:
			c->ssl_want_write = true;
			return -EAGAIN;
		case SSL_ERROR_WANT_READ:
			return -EAGAIN;
		case SSL_ERROR_SYSCALL:
			ERR_clear_error();
			return errno ? -errno : -EPIPE;
		default:
			ERR_clear_error();
			return -EPROTO;
		}
	}
	for (;;) {
		ssize_t r = send(c->fd, buf, n, MSG_NOSIGNAL);

		if (r >= 0)
			return r;
		if (errno == EINTR)
			continue;
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
}

/* ---- output buffer ------------------------------------------------------ */

static int out_reserve(struct kd_client *c, size_t n)
{
	size_t need, cap;
	uint8_t *p;

	if (c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (c->out_cap - c->out_len >= n)
		return 0;
	if (c->out_off > 0) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
		if (c->out_cap - c->out_len >= n)
			return 0;
	}
	need = c->out_len + n;
	if (need > KD_CLIENT_OUT_MAX)
		return -ENOBUFS;
	cap = c->out_cap ? c->out_cap : OUT_INITIAL;
	while (cap < need)
		cap *= 2;
	if (cap > KD_CLIENT_OUT_MAX)
		cap = KD_CLIENT_OUT_MAX;
	p = realloc(c->out, cap);
	if (!p)
		return -ENOMEM;
	c->out = p;
	c->out_cap = cap;
	return 0;
}

int kd_client_flush(struct kd_client *c)
{
	if (c->err)
		return c->err;
	while (c->out_off < c->out_len) {
		ssize_t r = io_write(c, c->out + c->out_off, c->out_len - c->out_off);

		if (r == -EAGAIN)
			return -EAGAIN;
		if (r < 0)
			return (int)r;
		c->out_off += (size_t)r;
	}
	c->out_off = c->out_len = 0;
	return 0;
}

size_t kd_client_out_pending(const struct kd_client *c)
{
	return c->out_len - c->out_off;
}

void kd_client_cork(struct kd_client *c, bool on)
{
	c->cork = on;
}

/* Queue one frame made of a header and up to three parts. */
static int queue_frame(struct kd_client *c, uint8_t type, const void *a, size_t alen, const void *b,
		       size_t blen, const void *d, size_t dlen)
{
	size_t n = alen + blen + dlen;
	uint8_t *p;
	int err;

	if (c->err)
		return c->err;
	err = out_reserve(c, DERP_FRAME_HDR_LEN + n);
	if (err)
		return err;
	p = c->out + c->out_len;
	derp_hdr_put((struct derp_frame_hdr *)p, type, (uint32_t)n);
	p += DERP_FRAME_HDR_LEN;
	if (alen)
		memcpy(p, a, alen);
	if (blen)
		memcpy(p + alen, b, blen);
	if (dlen)
		memcpy(p + alen + blen, d, dlen);
	c->out_len += DERP_FRAME_HDR_LEN + n;
	return 0;
}

static int after_queue(struct kd_client *c, int err)
{
	if (err)
		return err;
	if (c->cork || c->st != ST_ESTABLISHED)
		return 0;
	err = kd_client_flush(c);
	return err == -EAGAIN ? 0 : err;
}

int kd_client_send_packet(struct kd_client *c, const uint8_t dst[32], const void *data, size_t len)
{
	if (len > DERP_MAX_PACKET)
		return -EINVAL;
	return after_queue(c, queue_frame(c, DERP_FRAME_SEND_PACKET, dst, DERP_KEY_LEN, data, len, NULL, 0));
}

int kd_client_forward_packet(struct kd_client *c, const uint8_t src[32], const uint8_t dst[32],
			     const void *data, size_t len)
{
	if (len > DERP_MAX_PACKET)
		return -EINVAL;
	return after_queue(c, queue_frame(c, DERP_FRAME_FORWARD_PACKET, src, DERP_KEY_LEN, dst,
					  DERP_KEY_LEN, data, len));
}

int kd_client_note_preferred(struct kd_client *c, bool preferred)
{
	uint8_t v = preferred ? 1 : 0;

	return after_queue(c, queue_frame(c, DERP_FRAME_NOTE_PREFERRED, &v, 1, NULL, 0, NULL, 0));
}

int kd_client_send_ping(struct kd_client *c, const uint8_t data[8])
{
	return after_queue(c, queue_frame(c, DERP_FRAME_PING, data, DERP_PING_LEN, NULL, 0, NULL, 0));
}

int kd_client_send_pong(struct kd_client *c, const uint8_t data[8])
{
	return after_queue(c, queue_frame(c, DERP_FRAME_PONG, data, DERP_PING_LEN, NULL, 0, NULL, 0));
}

int kd_client_watch_conns(struct kd_client *c)
{
	return after_queue(c, queue_frame(c, DERP_FRAME_WATCH_CONNS, NULL, 0, NULL, 0, NULL, 0));
}

int kd_client_close_peer(struct kd_client *c, const uint8_t key[32])
{
	return after_queue(c, queue_frame(c, DERP_FRAME_CLOSE_PEER, key, DERP_KEY_LEN, NULL, 0, NULL, 0));
}

int kd_client_send_raw(struct kd_client *c, const void *bytes, size_t len)
{
	int err;

	if (c->err)
		return c->err;
	err = out_reserve(c, len);
	if (err)
		return err;
	memcpy(c->out + c->out_len, bytes, len);
	c->out_len += len;
	return after_queue(c, 0);
}

/* ---- input buffer ------------------------------------------------------- */

/* Make room for `want` bytes of unread data in total. */
static int in_reserve(struct kd_client *c, size_t want)
{
	size_t cap;
	uint8_t *p;

	if (c->in_start == c->in_end)
		c->in_start = c->in_end = 0;
	if (c->in_cap - c->in_start >= want && c->in_end < c->in_cap)
		return 0;
	if (c->in_start > 0) {
		memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
		c->in_end -= c->in_start;
		c->in_start = 0;
		if (c->in_cap >= want && c->in_end < c->in_cap)
			return 0;
	}
	if (want > IN_MAX)
		return -EMSGSIZE;
	cap = c->in_cap ? c->in_cap : IN_INITIAL;
	while (cap < want)
		cap *= 2;
	if (cap > IN_MAX)
		cap = IN_MAX;
	if (cap == c->in_cap)
		return 0;
	p = realloc(c->in, cap);
	if (!p)
		return -ENOMEM;
	c->in = p;
	c->in_cap = cap;
	return 0;
}

/* One read into the input buffer: >0, 0 EOF, -EAGAIN, -errno. */
static ssize_t fill(struct kd_client *c, size_t want)
{
	ssize_t r;
	int err = in_reserve(c, want);

	if (err)
		return err;
	if (c->in_end == c->in_cap)
		return -ENOBUFS;
	r = io_read(c, c->in + c->in_end, c->in_cap - c->in_end);
	if (r > 0)
		c->in_end += (size_t)r;
	else if (r == 0)
		c->eof = true;
	return r;
}

/* How many unread bytes the frame at the head needs in total. */
static size_t frame_want(const struct kd_client *c)
{
	size_t have = c->in_end - c->in_start;

	if (have < DERP_FRAME_HDR_LEN)
		return DERP_FRAME_HDR_LEN;
	return DERP_FRAME_HDR_LEN + derp_hdr_len((const void *)(c->in + c->in_start));
}

/* ---- handshake ---------------------------------------------------------- */

static int fail(struct kd_client *c, int err)
{
	if (!c->err) {
		c->err = err;
		c->st = ST_FAILED;
	}
	return c->err;
}

static int queue_http_request(struct kd_client *c)
{
	char req[1024];
	int n;

	/* The reference's header order (see the vectors); Go sorts the ones
	 * it adds itself, so Derp-Fast-Start and Ideal-Node precede Upgrade. */
	n = snprintf(req, sizeof(req),
		     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: Go-http-client/1.1\r\n"
		     "Connection: Upgrade\r\n%s%s%s%sUpgrade: DERP\r\n\r\n",
		     c->url.path, c->url.host_header, c->fast_start ? "Derp-Fast-Start: 1\r\n" : "",
		     c->ideal_node ? "Ideal-Node: " : "", c->ideal_node ? c->ideal_node : "",
		     c->ideal_node ? "\r\n" : "");
	if (n < 0 || (size_t)n >= sizeof(req))
		return -EINVAL;
	return kd_client_send_raw(c, req, (size_t)n);
}

static int queue_client_info(struct kd_client *c)
{
	struct kd_client_opts o = {
		.mesh_key = c->has_mesh_key ? c->mesh_key : NULL,
		.can_ack_pings = c->can_ack_pings,
		.is_prober = c->is_prober,
		.app_name = c->app_name,
	};
	char json[1024];
	uint8_t nonce[DERP_NONCE_LEN];
	uint8_t box[sizeof(json) + crypto_box_MACBYTES];
	int jlen = kd_client_info_json(json, sizeof(json), &o);

	if (jlen < 0)
		return jlen;
	random_fn(nonce, sizeof(nonce));
	if (crypto_box_easy(box, (const uint8_t *)json, (size_t)jlen, nonce, c->server_key, c->key.priv))
		return -EPROTO;
	return queue_frame(c, DERP_FRAME_CLIENT_INFO, c->key.pub, DERP_KEY_LEN, nonce, sizeof(nonce),
			   box, (size_t)jlen + crypto_box_MACBYTES);
}

static int open_server_info(struct kd_client *c, const struct kd_client_msg *m)
{
	size_t clen = m->len - DERP_NONCE_LEN;
	uint8_t *plain;
	int err = 0;

	if (m->len < DERP_NONCE_LEN + crypto_box_MACBYTES)
		return -EPROTO;
	/* handshake only, once per connection: not the per-packet path */
	plain = malloc(clen - crypto_box_MACBYTES + 1);
	if (!plain)
		return -ENOMEM;
	if (crypto_box_open_easy(plain, m->payload + DERP_NONCE_LEN, clen, m->payload, c->server_key,
				 c->key.priv) != 0) {
		pr_err("client: ServerInfo does not open with server key");
		err = -EPROTO;
	} else {
		plain[clen - crypto_box_MACBYTES] = '\0';
		pr_debug("client: ServerInfo %s", (char *)plain);
	}
	free(plain);
	return err;
}

static int hs_tls(struct kd_client *c)
{
	bool ww;
	int err = kd_client_tls_handshake(c->ssl, &ww);

	c->ssl_want_write = ww;
	if (err)
		return err;
	if (!c->no_fast_start && kd_client_tls_meta_key(c->ssl, c->server_key)) {
		/* spec §3.6: no 101, ClientInfo right behind the request */
		c->fast_start = true;
		err = queue_http_request(c);
		if (!err)
			err = queue_client_info(c);
		c->st = ST_WAIT_SERVER_INFO;
		return err;
	}
	c->st = ST_READ_RESPONSE;
	return queue_http_request(c);
}

static int hs_tcp_connect(struct kd_client *c)
{
	struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
	int soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (poll(&pfd, 1, 0) <= 0)
		return -EAGAIN;
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		return -errno;
	if (soerr)
		return -soerr;
	if (c->url.tls) {
		int err = kd_client_tls_new(&c->ssl, c->fd, c->url.host, c->ca_file, c->insecure);

		if (err)
			return err;
		c->st = ST_TLS;
		return 0;
	}
	c->st = ST_READ_RESPONSE;
	return queue_http_request(c);
}

/* Handles buffered input for the reading states: 0 progressed, -EAGAIN need
 * more bytes, 1 established, -errno. */
static int hs_consume(struct kd_client *c)
{
	const uint8_t *buf = c->in ? c->in + c->in_start : NULL; /* NULL + 0 is UB */
	size_t have = c->in_end - c->in_start, used;
	struct kd_client_msg m;
	int err, status;

	switch (c->st) {
	case ST_READ_RESPONSE:
		err = kd_client_parse_http_response((const char *)buf, have, &status, &used);
		if (err == -EAGAIN)
			return have >= HTTP_HEAD_MAX ? -EPROTO : -EAGAIN;
		if (err)
			return -EPROTO;
		if (status != 101) {
			pr_err("client: %s: HTTP status %d, want 101", c->url.host_header, status);
			return -EPROTO;
		}
		c->in_start += used;
		c->st = ST_READ_SERVER_KEY;
		return 0;
	case ST_READ_SERVER_KEY:
		err = kd_client_parse_frame(buf, have, &m, &used);
		if (err == -EAGAIN)
			return err;
		if (err || m.type != DERP_FRAME_SERVER_KEY ||
		    kd_client_parse_server_key(m.payload, m.len, c->server_key)) {
			pr_err("client: first frame is not a valid ServerKey (type 0x%x len %u)", buf[0],
			       have >= 5 ? derp_hdr_len((const void *)buf) : 0);
			return -EPROTO;
		}
		c->in_start += used;
		c->st = ST_WAIT_SERVER_INFO;
		return queue_client_info(c);
	case ST_WAIT_SERVER_INFO:
		err = kd_client_parse_frame(buf, have, &m, &used);
		if (err == -EAGAIN)
			return err;
		if (!err && m.type == DERP_FRAME_SERVER_KEY && c->fast_start) {
			uint8_t k[DERP_KEY_LEN];

			/* fast start learned the key from the certificate */
			if (kd_client_parse_server_key(m.payload, m.len, k) ||
			    memcmp(k, c->server_key, DERP_KEY_LEN) != 0)
				return -EPROTO;
			c->in_start += used;
			return 0;
		}
		if (err || m.type != DERP_FRAME_SERVER_INFO) {
			pr_err("client: expected ServerInfo, got type 0x%x", buf[0]);
			return -EPROTO;
		}
		err = open_server_info(c, &m);
		if (err)
			return err;
		c->in_start += used;
		c->st = ST_ESTABLISHED;
		c->deadline_ms = 0;
		return 1;
	default:
		return -EINVAL;
	}
}

int kd_client_step(struct kd_client *c)
{
	int err;

	if (c->st == ST_ESTABLISHED)
		return 1;
	if (c->err)
		return c->err;
	if (c->deadline_ms && kd_client_clock_ms() >= c->deadline_ms)
		return fail(c, -ETIMEDOUT);

	for (;;) {
		switch (c->st) {
		case ST_TCP_CONNECT:
			err = hs_tcp_connect(c);
			if (err == -EAGAIN)
				return 0;
			if (err)
				return fail(c, err);
			continue;
		case ST_TLS:
			err = hs_tls(c);
			if (err == -EAGAIN)
				return 0;
			if (err)
				return fail(c, err);
			continue;
		case ST_ESTABLISHED:
			return 1;
		case ST_FAILED:
			return c->err;
		default:
			break;
		}
		err = kd_client_flush(c);
		if (err && err != -EAGAIN)
			return fail(c, err == -EPIPE || err == -ECONNRESET ? -ECONNABORTED : err);
		err = hs_consume(c);
		if (err == 1) {
			/* anything queued behind the handshake goes out now */
			err = kd_client_flush(c);
			if (err && err != -EAGAIN)
				return fail(c, err);
			return 1;
		}
		if (err == 0)
			continue;
		if (err != -EAGAIN)
			return fail(c, err);
		ssize_t r = fill(c, c->st == ST_READ_RESPONSE ? HTTP_HEAD_MAX : frame_want(c));
		if (r == -EAGAIN)
			return 0;
		if (r == 0 || r == -ECONNRESET || r == -EPIPE) {
			pr_debug("client: %s closed the connection during the handshake",
				 c->url.host_header);
			return fail(c, -ECONNABORTED);
		}
		if (r < 0)
			return fail(c, r == -EMSGSIZE || r == -ENOBUFS ? -EPROTO : (int)r);
	}
}

static int dial(struct kd_client *c, const char *dial_addr)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
	struct addrinfo *res = NULL;
	char host[256], port[8];
	int fd, err, one = 1;

	if (dial_addr) {
		const char *colon = strrchr(dial_addr, ':');
		const char *h = dial_addr;
		size_t hl;

		if (!colon || colon == dial_addr)
			return -EINVAL;
		hl = (size_t)(colon - dial_addr);
		if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
			h++;
			hl -= 2;
		}
		if (hl >= sizeof(host) || strlen(colon + 1) >= sizeof(port))
			return -EINVAL;
		memcpy(host, h, hl);
		host[hl] = '\0';
		snprintf(port, sizeof(port), "%s", colon + 1);
	} else {
		snprintf(host, sizeof(host), "%s", c->url.host);
		snprintf(port, sizeof(port), "%u", c->url.port);
	}
	err = getaddrinfo(host, port, &hints, &res);
	if (err) {
		pr_err("client: resolve %s: %s", host, gai_strerror(err));
		return -EHOSTUNREACH;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		err = -errno;
		freeaddrinfo(res);
		return err;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, res->ai_addr, res->ai_addrlen) < 0 && errno != EINPROGRESS) {
		err = -errno;
		freeaddrinfo(res);
		close(fd);
		return err;
	}
	freeaddrinfo(res);
	c->fd = fd;
	return 0;
}

static int client_new(struct kd_client **out, const struct kd_client_opts *o)
{
	struct kd_client *c;
	int err;

	*out = NULL;
	if (!o || !o->url)
		return -EINVAL;
	if (sodium_init() < 0)
		return -ENOSYS;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->fd = -1;
	err = kd_client_url_parse(&c->url, o->url);
	if (err) {
		pr_err("client: bad url %s", o->url);
		goto err_free;
	}
	c->key = o->key;
	if (kd_key_is_zero(c->key.pub)) {
		err = kd_keypair_from_private(&c->key, o->key.priv);
		if (err)
			goto err_free;
	}
	if (o->mesh_key) {
		memcpy(c->mesh_key, o->mesh_key, DERP_KEY_LEN);
		c->has_mesh_key = true;
	}
	c->can_ack_pings = o->can_ack_pings;
	c->auto_pong = o->can_ack_pings && !o->no_auto_pong;
	c->is_prober = o->is_prober;
	c->no_fast_start = o->no_fast_start;
	c->insecure = o->insecure;
	if ((o->app_name && !(c->app_name = strdup(o->app_name))) ||
	    (o->ideal_node && !(c->ideal_node = strdup(o->ideal_node))) ||
	    (o->ca_file && !(c->ca_file = strdup(o->ca_file)))) {
		err = -ENOMEM;
		goto err_free;
	}
	if (c->ideal_node && strpbrk(c->ideal_node, "\r\n")) {
		err = -EINVAL;
		goto err_free;
	}
	c->deadline_ms = kd_client_clock_ms() + (o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS);
	*out = c;
	return 0;

err_free:
	kd_client_close(c);
	return err;
}

int kd_client_start(struct kd_client **out, const struct kd_client_opts *o)
{
	struct kd_client *c;
	int err = client_new(&c, o);

	*out = NULL;
	if (err)
		return err;
	err = dial(c, o->dial_addr);
	if (err) {
		kd_client_close(c);
		return err;
	}
	c->st = ST_TCP_CONNECT;
	*out = c;
	return 0;
}

int kd_client_start_fd(struct kd_client **out, const struct kd_client_opts *o, int fd)
{
	struct kd_client *c;
	int err = client_new(&c, o);

	*out = NULL;
	if (err)
		return err;
	c->fd = fd;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	c->st = ST_TCP_CONNECT;
	*out = c;
	return 0;
}

static int wait_fd(struct kd_client *c, bool want_write, int64_t deadline)
{
	struct pollfd pfd = {.fd = c->fd, .events = POLLIN | (want_write ? POLLOUT : 0)};
	int64_t left = deadline < 0 ? -1 : deadline - kd_client_clock_ms();
	int r;

	if (deadline >= 0 && left <= 0)
		return -ETIMEDOUT;
	do {
		r = poll(&pfd, 1, left > INT32_MAX ? INT32_MAX : (int)left);
	} while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	return r == 0 ? -ETIMEDOUT : 0;
}

int kd_client_connect(struct kd_client **out, const struct kd_client_opts *o)
{
	struct kd_client *c;
	int err = kd_client_start(&c, o);

	*out = NULL;
	if (err)
		return err;
	for (;;) {
		err = kd_client_step(c);
		if (err == 1)
			break;
		if (err < 0)
			goto err_close;
		err = wait_fd(c, kd_client_want_write(c), c->deadline_ms);
		if (err == -ETIMEDOUT)
			continue; /* kd_client_step reports the deadline */
		if (err)
			goto err_close;
	}
	*out = c;
	return 0;

err_close:
	kd_client_close(c);
	return err;
}

/* ---- accessors ---------------------------------------------------------- */

int kd_client_fd(const struct kd_client *c)
{
	return c->fd;
}

bool kd_client_want_write(const struct kd_client *c)
{
	return c->st == ST_TCP_CONNECT || c->ssl_want_write || c->out_off < c->out_len;
}

int64_t kd_client_deadline_ms(const struct kd_client *c)
{
	return c->st == ST_ESTABLISHED ? 0 : c->deadline_ms;
}

bool kd_client_established(const struct kd_client *c)
{
	return c->st == ST_ESTABLISHED;
}

bool kd_client_fast_start(const struct kd_client *c)
{
	return c->fast_start;
}

const uint8_t *kd_client_server_key(const struct kd_client *c)
{
	return c->st >= ST_WAIT_SERVER_INFO ? c->server_key : NULL;
}

const uint8_t *kd_client_public_key(const struct kd_client *c)
{
	return c->key.pub;
}

/* ---- receiving ---------------------------------------------------------- */

int kd_client_poll(struct kd_client *c, struct kd_client_msg *m)
{
	if (c->err)
		return c->err;
	if (c->st != ST_ESTABLISHED)
		return -ENOTCONN;
	for (;;) {
		size_t used;
		int err = kd_client_parse_frame(c->in + c->in_start, c->in_end - c->in_start, m, &used);

		if (err == 0) {
			c->in_start += used;
			if (m->type == DERP_FRAME_PING && c->auto_pong) {
				int e = queue_frame(c, DERP_FRAME_PONG, m->data, DERP_PING_LEN, NULL, 0, NULL, 0);

				/* best effort, as the reference: a full buffer drops the pong */
				if (!e && !c->cork)
					kd_client_flush(c);
			}
			return 0;
		}
		if (err == -EBADMSG) {
			c->in_start += used;
			continue;
		}
		if (err == -EMSGSIZE)
			return fail(c, -EPROTO);
		if (c->eof)
			return -EPIPE;
		ssize_t r = fill(c, frame_want(c));
		if (r == 0)
			return -EPIPE;
		if (r < 0)
			return r == -EAGAIN ? -EAGAIN : fail(c, (int)r);
	}
}

int kd_client_recv(struct kd_client *c, struct kd_client_msg *m, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : kd_client_clock_ms() + timeout_ms;

	for (;;) {
		int err = kd_client_poll(c, m);

		if (err != -EAGAIN)
			return err;
		/* TLS may hold decrypted bytes the socket no longer signals */
		if (c->ssl && SSL_pending(c->ssl) > 0)
			continue;
		if (c->out_off < c->out_len) {
			err = kd_client_flush(c);
			if (err && err != -EAGAIN)
				return err;
		}
		err = wait_fd(c, kd_client_want_write(c), deadline);
		if (err)
			return err;
	}
}

int kd_client_flush_wait(struct kd_client *c, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : kd_client_clock_ms() + timeout_ms;

	for (;;) {
		int err = kd_client_flush(c);

		if (err != -EAGAIN)
			return err;
		err = wait_fd(c, true, deadline);
		if (err)
			return err;
	}
}

void kd_client_close(struct kd_client *c)
{
	if (!c)
		return;
	kd_client_tls_free(c->ssl);
	if (c->fd >= 0)
		close(c->fd);
	sodium_memzero(&c->key, sizeof(c->key));
	sodium_memzero(c->mesh_key, sizeof(c->mesh_key));
	free(c->app_name);
	free(c->ideal_node);
	free(c->ca_file);
	free(c->in);
	free(c->out);
	free(c);
}
