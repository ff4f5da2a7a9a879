// SPDX-License-Identifier: MIT
/* The DERP client's byte plumbing: transport (plain or OpenSSL), the output
 * buffer and the send helpers, the input buffer and the receive calls. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>

#include "client_internal.h"
#include "log.h"

/* ---- transport ---------------------------------------------------------- */

/* >0 bytes, 0 EOF, -EAGAIN, -errno */
static ssize_t io_read(struct kd_client *c, void *buf, size_t n)
{
	if (c->ssl) {
		int r;

		/* a read that needed to write (key update) is retried by reading */
		c->ssl_want_write = false;
		r = SSL_read(c->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
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
int kd_client_queue_frame(struct kd_client *c, uint8_t type, const void *a, size_t alen, const void *b,
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
	return after_queue(c, kd_client_queue_frame(c, DERP_FRAME_SEND_PACKET, dst, DERP_KEY_LEN, data, len, NULL, 0));
}

int kd_client_forward_packet(struct kd_client *c, const uint8_t src[32], const uint8_t dst[32],
			     const void *data, size_t len)
{
	if (len > DERP_MAX_PACKET)
		return -EINVAL;
	return after_queue(c, kd_client_queue_frame(c, DERP_FRAME_FORWARD_PACKET, src, DERP_KEY_LEN, dst,
					  DERP_KEY_LEN, data, len));
}

int kd_client_note_preferred(struct kd_client *c, bool preferred)
{
	uint8_t v = preferred ? 1 : 0;

	return after_queue(c, kd_client_queue_frame(c, DERP_FRAME_NOTE_PREFERRED, &v, 1, NULL, 0, NULL, 0));
}

int kd_client_send_ping(struct kd_client *c, const uint8_t data[8])
{
	return after_queue(c, kd_client_queue_frame(c, DERP_FRAME_PING, data, DERP_PING_LEN, NULL, 0, NULL, 0));
}

int kd_client_send_pong(struct kd_client *c, const uint8_t data[8])
{
	return after_queue(c, kd_client_queue_frame(c, DERP_FRAME_PONG, data, DERP_PING_LEN, NULL, 0, NULL, 0));
}

int kd_client_watch_conns(struct kd_client *c)
{
	return after_queue(c, kd_client_queue_frame(c, DERP_FRAME_WATCH_CONNS, NULL, 0, NULL, 0, NULL, 0));
}

int kd_client_close_peer(struct kd_client *c, const uint8_t key[32])
{
	return after_queue(c, kd_client_queue_frame(c, DERP_FRAME_CLOSE_PEER, key, DERP_KEY_LEN, NULL, 0, NULL, 0));
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
ssize_t kd_client_fill(struct kd_client *c, size_t want)
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
size_t kd_client_frame_want(const struct kd_client *c)
{
	size_t have = c->in_end - c->in_start;

	if (have < DERP_FRAME_HDR_LEN)
		return DERP_FRAME_HDR_LEN;
	return DERP_FRAME_HDR_LEN + derp_hdr_len((const void *)(c->in + c->in_start));
}

int kd_client_wait_fd(struct kd_client *c, bool want_write, int64_t deadline)
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

/* ---- receiving ---------------------------------------------------------- */

int kd_client_poll(struct kd_client *c, struct kd_client_msg *m)
{
	if (c->err)
		return c->err;
	if (c->st != ST_ESTABLISHED)
		return -ENOTCONN;
	for (;;) {
		size_t used;
		int err = kd_client_parse_frame(c->in ? c->in + c->in_start : NULL, c->in_end - c->in_start, m,
						&used);

		if (err == 0) {
			c->in_start += used;
			if (m->type == DERP_FRAME_PING && c->auto_pong) {
				int e = kd_client_queue_frame(c, DERP_FRAME_PONG, m->data, DERP_PING_LEN, NULL, 0, NULL, 0);

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
			return kd_client_fail(c, -EPROTO);
		if (c->eof)
			return -EPIPE;
		ssize_t r = kd_client_fill(c, kd_client_frame_want(c));
		if (r == 0)
			return -EPIPE;
		if (r < 0)
			return r == -EAGAIN ? -EAGAIN : kd_client_fail(c, (int)r);
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
		err = kd_client_wait_fd(c, kd_client_want_write(c), deadline);
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
		err = kd_client_wait_fd(c, true, deadline);
		if (err)
			return err;
	}
}
