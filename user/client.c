// SPDX-License-Identifier: MIT
/* The DERP client connection: dialling, the handshake state machine, lifecycle
 * and accessors. Bytes in and out are in client_io.c. */
#include "client_internal.h"

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

/* ---- handshake ---------------------------------------------------------- */

int kd_client_fail(struct kd_client *c, int err)
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
	return kd_client_queue_frame(c, DERP_FRAME_CLIENT_INFO, c->key.pub, DERP_KEY_LEN, nonce, sizeof(nonce),
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
		/* the reference client drops a connection whose ServerInfo is not JSON */
		if (kd_client_parse_server_info((const char *)plain, clen - crypto_box_MACBYTES, &c->info)) {
			pr_err("client: ServerInfo is not valid JSON");
			err = -EPROTO;
		}
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
		return kd_client_fail(c, -ETIMEDOUT);

	for (;;) {
		switch (c->st) {
		case ST_TCP_CONNECT:
			err = hs_tcp_connect(c);
			if (err == -EAGAIN)
				return 0;
			if (err)
				return kd_client_fail(c, err);
			continue;
		case ST_TLS:
			err = hs_tls(c);
			if (err == -EAGAIN)
				return 0;
			if (err)
				return kd_client_fail(c, err);
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
			return kd_client_fail(c, err == -EPIPE || err == -ECONNRESET ? -ECONNABORTED : err);
		err = hs_consume(c);
		if (err == 1) {
			/* anything queued behind the handshake goes out now */
			err = kd_client_flush(c);
			if (err && err != -EAGAIN)
				return kd_client_fail(c, err);
			return 1;
		}
		if (err == 0)
			continue;
		if (err != -EAGAIN)
			return kd_client_fail(c, err);
		ssize_t r = kd_client_fill(c, c->st == ST_READ_RESPONSE ? HTTP_HEAD_MAX : kd_client_frame_want(c));
		if (r == -EAGAIN)
			return 0;
		if (r == 0 || r == -ECONNRESET || r == -EPIPE) {
			pr_debug("client: %s closed the connection during the handshake",
				 c->url.host_header);
			return kd_client_fail(c, -ECONNABORTED);
		}
		if (r < 0)
			return kd_client_fail(c, r == -EMSGSIZE || r == -ENOBUFS ? -EPROTO : (int)r);
	}
}

/* Connects (non-blocking) to the idx-th address the name resolves to;
 * -ENOENT past the last one. */
static int dial(struct kd_client *c, const char *dial_addr, int idx)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
	struct addrinfo *res = NULL, *ai;
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
	for (ai = res; ai && idx > 0; ai = ai->ai_next)
		idx--;
	if (!ai) {
		freeaddrinfo(res);
		return -ENOENT;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		err = -errno;
		freeaddrinfo(res);
		return err;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
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

static int start_at(struct kd_client **out, const struct kd_client_opts *o, int idx)
{
	struct kd_client *c;
	int err = client_new(&c, o);

	*out = NULL;
	if (err)
		return err;
	err = dial(c, o->dial_addr, idx);
	if (err) {
		kd_client_close(c);
		return err;
	}
	c->st = ST_TCP_CONNECT;
	*out = c;
	return 0;
}

int kd_client_start(struct kd_client **out, const struct kd_client_opts *o)
{
	return start_at(out, o, 0);
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

int kd_client_attach_fd(struct kd_client **out, int fd, const struct kd_keypair *key)
{
	struct kd_client *c = calloc(1, sizeof(*c));

	*out = NULL;
	if (!c)
		return -ENOMEM;
	c->fd = fd;
	if (key)
		c->key = *key;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	snprintf(c->url.host_header, sizeof(c->url.host_header), "raw");
	c->st = ST_ESTABLISHED;
	*out = c;
	return 0;
}

static bool try_next_address(int err)
{
	return err == -ECONNREFUSED || err == -ENETUNREACH || err == -EHOSTUNREACH || err == -EADDRNOTAVAIL ||
	       err == -EAFNOSUPPORT;
}

int kd_client_connect(struct kd_client **out, const struct kd_client_opts *o)
{
	struct kd_client_opts opts = *o;
	int64_t deadline = kd_client_clock_ms() + (o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS);
	int first_err = 0;

	*out = NULL;
	/* "localhost" may resolve to ::1 first while the server is on 127.0.0.1:
	 * a refused address moves on to the next one, within one budget */
	for (int idx = 0;; idx++) {
		struct kd_client *c;
		int64_t left = deadline - kd_client_clock_ms();
		int err;

		if (left <= 0)
			return first_err ? first_err : -ETIMEDOUT;
		opts.timeout_ms = (int)left;
		err = start_at(&c, &opts, idx);
		if (err == -ENOENT && idx > 0)
			return first_err;
		if (err) {
			if (!first_err)
				first_err = err;
			if (try_next_address(err))
				continue;
			return err;
		}
		for (;;) {
			err = kd_client_step(c);
			if (err == 1) {
				*out = c;
				return 0;
			}
			if (err == 0) {
				err = kd_client_wait_fd(c, kd_client_want_write(c), c->deadline_ms);
				if (err == -ETIMEDOUT)
					continue; /* kd_client_step reports the deadline */
			}
			if (err)
				break;
		}
		kd_client_close(c);
		if (!first_err)
			first_err = err;
		if (!try_next_address(err))
			return err;
	}
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

const struct kd_client_server_info *kd_client_server_info(const struct kd_client *c)
{
	return &c->info;
}

const uint8_t *kd_client_public_key(const struct kd_client *c)
{
	return c->key.pub;
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
