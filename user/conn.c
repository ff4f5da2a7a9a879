// SPDX-License-Identifier: MIT
/* One client connection's I/O: TLS handshake, the HTTP request, reads,
 * the batched writer and close. DERP frame semantics live in derp_conn.c. */
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <unistd.h>

#include "http.h"
#include "websocket.h"
#include "server_internal.h"
#include "tls.h"

static bool consume_input(struct kd_conn *c);
static void on_resume(struct kd_timer *t);
static void on_inject_retry(struct kd_timer *t);
static void on_watchdog(struct kd_timer *t);
static bool ws_unwrap_input(struct kd_conn *c, uint8_t *buf, size_t len, bool in_place);

#define KD_CTRL_MAX (8u << 20)     /* a watcher's PeerPresent flood for ~150k clients */
#ifndef KD_READ_BUDGET
#define KD_READ_BUDGET (1u << 20)  /* bytes per readiness event, for fairness */
#endif

void kd_buf_free(struct kd_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

static int buf_reserve(struct kd_buf *b, size_t extra, size_t max)
{
	if (b->off && b->off == b->len)
		b->off = b->len = 0;
	if (b->len + extra <= b->cap)
		return 0;
	if (b->off) {
		memmove(b->data, b->data + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
		if (b->len + extra <= b->cap)
			return 0;
	}
	size_t need = b->len + extra, cap = b->cap ? b->cap : 256;
	if (need > max)
		return -ENOBUFS;
	while (cap < need)
		cap *= 2;
	if (cap > max)
		cap = max;
	uint8_t *d = realloc(b->data, cap);
	if (!d)
		return -ENOMEM;
	b->data = d;
	b->cap = cap;
	return 0;
}

static void format_peer(struct kd_conn *c)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	int port = 0;

	if (c->peer.ss_family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&c->peer;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
		port = ntohs(a->sin_port);
		snprintf(c->peer_str, sizeof(c->peer_str), "%s:%d", ip, port);
	} else if (c->peer.ss_family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&c->peer;
		if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
			inet_ntop(AF_INET, &a->sin6_addr.s6_addr[12], ip, sizeof(ip));
			snprintf(c->peer_str, sizeof(c->peer_str), "%s:%d", ip, ntohs(a->sin6_port));
		} else {
			inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
			snprintf(c->peer_str, sizeof(c->peer_str), "[%s]:%d", ip, ntohs(a->sin6_port));
		}
	} else {
		snprintf(c->peer_str, sizeof(c->peer_str), "unknown");
	}
}

static void on_deadline(struct kd_timer *t)
{
	struct kd_conn *c = (struct kd_conn *)((char *)t - offsetof(struct kd_conn, deadline));

	if (c->state == KD_CONN_ACTIVE) {
		c->w->ctr.sclient_write_timeouts++;
		kd_conn_close(c, "write timeout");
		return;
	}
	c->w->ctr.handshake_errors[KD_HS_TIMEOUT]++;
	kd_conn_close(c, "handshake timeout");
}

struct kd_conn *kd_conn_new(struct kd_worker *w, int fd, const struct sockaddr_storage *peer, bool tls)
{
	struct kd_server *s = w->srv;
	struct kd_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->io.fd = fd;
	c->io.cb = kd_conn_on_io;
	c->w = w;
	c->srv = s;
	c->refs = 1; /* the owner worker's */
	c->id = __atomic_add_fetch(&s->next_conn_id, 1, __ATOMIC_RELAXED);
	c->peer = *peer;
	c->connected_ms = kd_loop_now(w->loop);
	c->nothere_tokens = 3;
	c->nothere_last_ms = c->connected_ms;
	format_peer(c);
	kd_timer_init(&c->deadline, on_deadline);
	kd_timer_init(&c->keepalive, kd_conn_on_keepalive);
	kd_timer_init(&c->resume, on_resume);
	kd_timer_init(&c->inject_retry, on_inject_retry);
	kd_timer_init(&c->watchdog, on_watchdog);
	kd_keymap_init(&c->saw_src);
	for (int k = 0; k < DERP_KIND_MAX; k++)
		c->q[k].cap = s->cfg.queue_depth;
	if (tls) {
		pthread_mutex_lock(&s->reload_lock);
		c->ssl = SSL_new(s->tls); /* holds its own reference to the context */
		pthread_mutex_unlock(&s->reload_lock);
		if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
			SSL_free(c->ssl);
			free(c);
			return NULL;
		}
		SSL_set_accept_state(c->ssl);
		c->state = KD_CONN_TLS_HANDSHAKE;
	} else {
		c->state = KD_CONN_HTTP;
	}
	if (kd_io_add(w->loop, &c->io, EPOLLIN | EPOLLRDHUP) != 0) {
		SSL_free(c->ssl);
		free(c);
		return NULL;
	}
	kd_timer_arm(w->loop, &c->deadline, c->connected_ms + s->cfg.http_timeout_ms);
	c->all_next = w->all;
	if (w->all)
		w->all->all_prev = c;
	w->all = c;
	w->nconns++;
	return c;
}

void kd_conn_ref(struct kd_conn *c)
{
	__atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
}

void kd_conn_unref(struct kd_conn *c)
{
	if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0) {
		/* everything owner-side was released at close; only memory is left */
		free(c);
	}
}

void kd_conn_mark_dirty(struct kd_conn *c)
{
	if (c->dirty || c->state == KD_CONN_CLOSED)
		return;
	c->dirty = true;
	c->flush_next = c->w->flush_list;
	c->w->flush_list = c;
}

int kd_conn_ctrl_append(struct kd_conn *c, const void *bytes, size_t len)
{
	if (c->state == KD_CONN_CLOSED)
		return -EPIPE;
	if (buf_reserve(&c->ctrl, len, KD_CTRL_MAX) != 0) {
		kd_conn_close(c, "control stream over its bound");
		return -ENOBUFS;
	}
	memcpy(c->ctrl.data + c->ctrl.len, bytes, len);
	c->ctrl.len += len;
	kd_conn_mark_dirty(c);
	return 0;
}

int kd_conn_ctrl_frame(struct kd_conn *c, uint8_t type, const void *p1, size_t n1, const void *p2, size_t n2)
{
	struct derp_frame_hdr h;
	size_t need = sizeof(h) + n1 + n2;

	if (c->state == KD_CONN_CLOSED)
		return -EPIPE;
	if (buf_reserve(&c->ctrl, need, KD_CTRL_MAX) != 0) {
		kd_conn_close(c, "control stream over its bound");
		return -ENOBUFS;
	}
	derp_hdr_put(&h, type, (uint32_t)(n1 + n2));
	uint8_t *d = c->ctrl.data + c->ctrl.len;
	memcpy(d, &h, sizeof(h));
	if (n1)
		memcpy(d + sizeof(h), p1, n1);
	if (n2)
		memcpy(d + sizeof(h) + n1, p2, n2);
	c->ctrl.len += need;
	kd_conn_mark_dirty(c);
	return 0;
}


/* --- writing --- */

static ssize_t conn_writev(struct kd_conn *c, struct iovec *iov, int n)
{
	if (!c->ssl)
		return writev(c->io.fd, iov, n);
	/* OpenSSL has no writev: coalesce into one record-sized chunk so small
	 * frames don't become one TLS record each */
	uint8_t stage[16384];
	size_t used = 0;
	for (int i = 0; i < n && used < sizeof(stage); i++) {
		size_t k = iov[i].iov_len < sizeof(stage) - used ? iov[i].iov_len : sizeof(stage) - used;
		memcpy(stage + used, iov[i].iov_base, k);
		used += k;
	}
	ERR_clear_error();
	int r = SSL_write(c->ssl, stage, (int)used);
	if (r > 0)
		return r;
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
		errno = EAGAIN;
		return -1;
	}
	errno = EPIPE;
	return -1;
}

static void take_batch(struct kd_conn *c)
{
	struct kd_counters *ctr = &c->w->ctr;
	uint64_t now = kd_loop_now(c->w->loop);

	c->raw_inflight = c->raw.len - c->raw.off;
	c->ctrl_inflight = c->ctrl.len - c->ctrl.off;
	c->n_inflight = 0;
	/* disco first: NAT traversal messages are small and time critical */
	for (int k = 0; k < DERP_KIND_MAX; k++) {
		struct kd_pktq *q = &c->q[k];
		while (q->len && c->n_inflight < KD_IOV_MAX) {
			struct kd_pkt *p = q->ring[q->head];
			q->head = (q->head + 1) % q->cap;
			q->len--;
			double ms = (double)(now - p->enq_ms);
			ctr->avg_queue_ms = ctr->avg_queue_ms * 0.9 + ms * 0.1;
			c->inflight[c->n_inflight++] = p;
		}
	}
	if (c->ws) {
		size_t total = c->ctrl_inflight;
		for (uint32_t i = 0; i < c->n_inflight; i++)
			total += c->inflight[i]->len;
		c->ws_hdr_len = total ? (uint8_t)kd_ws_encode_header(c->ws_hdr, total) : 0;
	}
	uint32_t n = c->n_inflight;
	static const uint32_t bounds[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20, 25, 50, 100};
	size_t b = 0;
	while (b < sizeof(bounds) / sizeof(bounds[0]) && n > bounds[b])
		b++;
	if (n) {
		ctr->buffered_write_frames[b]++;
		ctr->buffered_write_frames_sum += n;
		ctr->buffered_write_flushes++;
	}
	c->wr_off = 0;
}

static bool batch_empty(const struct kd_conn *c)
{
	return c->raw_inflight == 0 && c->ctrl_inflight == 0 && c->n_inflight == 0;
}

static bool have_pending(const struct kd_conn *c)
{
	return c->raw.len > c->raw.off || c->ctrl.len > c->ctrl.off || c->q[0].len || c->q[1].len;
}

static size_t batch_len(const struct kd_conn *c)
{
	size_t total = c->raw_inflight + c->ws_hdr_len + c->ctrl_inflight;
	for (uint32_t i = 0; i < c->n_inflight; i++)
		total += c->inflight[i]->len;
	return total;
}

static void batch_done(struct kd_conn *c)
{
	struct kd_counters *ctr = &c->w->ctr;

	c->raw.off += c->raw_inflight;
	c->raw_inflight = 0;
	c->ws_hdr_len = 0;
	if (c->raw.off == c->raw.len)
		c->raw.off = c->raw.len = 0;
	c->ctrl.off += c->ctrl_inflight;
	c->ctrl_inflight = 0;
	for (uint32_t i = 0; i < c->n_inflight; i++) {
		struct kd_pkt *p = c->inflight[i];
		ctr->packets_sent++;
		ctr->bytes_sent += p->len - sizeof(struct derp_packet_hdr);
		kd_pkt_free(c->w, p);
	}
	c->n_inflight = 0;
	if (c->ctrl.off == c->ctrl.len) {
		c->ctrl.off = c->ctrl.len = 0;
		c->pong_pending = false; /* the pong slot frees once it is on the wire */
		/* a big buffer (watcher flood) is returned; small ones are kept */
		if (c->ctrl.cap > 65536)
			kd_buf_free(&c->ctrl);
	}
}

void kd_conn_update_events(struct kd_conn *c)
{
	uint32_t ev = 0;

	if (c->state == KD_CONN_CLOSED)
		return;
	if (c->state != KD_CONN_ADMISSION && !c->paused && !c->rd_eof)
		ev |= EPOLLIN | EPOLLRDHUP;
	if (c->want_write)
		ev |= EPOLLOUT;
	kd_io_mod(c->w->loop, &c->io, ev);
}

static void set_want_write(struct kd_conn *c, bool on)
{
	if (c->want_write == on)
		return;
	c->want_write = on;
	if (on) {
		__atomic_store_n(&c->congested_since_ms, kd_loop_now(c->w->loop), __ATOMIC_RELAXED);
		__atomic_store_n(&c->congested, 1, __ATOMIC_RELEASE);
	} else {
		__atomic_store_n(&c->congested, 0, __ATOMIC_RELEASE);
	}
	kd_conn_update_events(c);
}

static void on_resume(struct kd_timer *t)
{
	struct kd_conn *c = (struct kd_conn *)((char *)t - offsetof(struct kd_conn, resume));

	if (c->state == KD_CONN_CLOSED || !c->paused)
		return;
	c->paused = false;
	kd_conn_update_events(c);
	/* frames that were read before the pause go first */
	consume_input(c);
}

/* Called by the DERP layer after a frame that fed a congested destination:
 * stop reading this sender briefly so TCP slows it down, instead of
 * head-dropping what it sends next. (Waking paused senders as soon as the
 * destination drains instead of after KD_PAUSE_MS was tried: no gain in
 * make bench, see README "Performance".) */
void kd_conn_pause(struct kd_conn *c, enum kd_pause_reason why)
{
	if (c->paused || c->state != KD_CONN_ACTIVE)
		return;
	c->paused = true;
	c->pause_reason = (uint8_t)why;
	c->w->ctr.pauses[why]++;
	kd_conn_update_events(c);
	kd_timer_arm(c->w->loop, &c->resume, kd_loop_now(c->w->loop) + KD_PAUSE_MS);
}

static void arm_write_deadline(struct kd_conn *c)
{
	uint32_t t = c->can_mesh ? 30000 : c->srv->cfg.write_timeout_ms;

	if (c->state != KD_CONN_ACTIVE || t == 0)
		return;
	kd_timer_arm(c->w->loop, &c->deadline, kd_loop_now(c->w->loop) + t);
}

/* Writes as much as the socket takes. 0 when everything went out, -EAGAIN
 * when the rest waits for EPOLLOUT, -EPIPE after closing the connection. */
/* An offloaded connection's output: every frame goes through the injector,
 * in order with what the kernel relays to it. */
static int flush_injected(struct kd_conn *c)
{
	struct kd_offload *o = c->srv->offload;

	while (c->ctrl.len - c->ctrl.off >= DERP_FRAME_HDR_LEN) {
		uint8_t *f = c->ctrl.data + c->ctrl.off;
		size_t n = DERP_FRAME_HDR_LEN + derp_hdr_len((const struct derp_frame_hdr *)f);
		if (kd_offload_inject_sock(o, c->offload_cookie, f, n) == -EAGAIN)
			goto again;
		c->ctrl.off += n;
	}
	c->ctrl.off = c->ctrl.len = 0;
	c->pong_pending = false;
	for (int k = 0; k < DERP_KIND_MAX; k++) {
		struct kd_pktq *q = &c->q[k];
		while (q->len) {
			struct kd_pkt *p = q->ring[q->head];
			if (kd_offload_inject_sock(o, c->offload_cookie, p->frame, p->len) == -EAGAIN)
				goto again;
			q->head = (q->head + 1) % q->cap;
			q->len--;
			c->w->ctr.packets_sent++;
			c->w->ctr.bytes_sent += p->len - sizeof(struct derp_packet_hdr);
			kd_pkt_free(c->w, p);
		}
	}
	return 0;
again:
	/* the injector socket is full: try again shortly */
	if (!kd_timer_armed(&c->inject_retry))
		kd_timer_arm(c->w->loop, &c->inject_retry, kd_loop_now(c->w->loop) + 1);
	return -EAGAIN;
}

static void on_inject_retry(struct kd_timer *t)
{
	struct kd_conn *c = (struct kd_conn *)((char *)t - offsetof(struct kd_conn, inject_retry));

	if (c->state == KD_CONN_ACTIVE)
		flush_injected(c);
}

int kd_conn_flush(struct kd_conn *c)
{
	if (c->offloaded)
		return flush_injected(c);
	while (c->state != KD_CONN_CLOSED) {
		if (batch_empty(c)) {
			if (!have_pending(c))
				break;
			take_batch(c);
		}
		struct iovec iov[KD_IOV_MAX + 3];
		int n = 0;
		size_t skip = c->wr_off;
		const struct {
			uint8_t *p;
			size_t len;
		} pre[] = {{c->raw.data ? c->raw.data + c->raw.off : NULL, c->raw_inflight}, {c->ws_hdr, c->ws_hdr_len}};
		for (size_t k = 0; k < 2; k++) {
			if (skip >= pre[k].len) {
				skip -= pre[k].len;
				continue;
			}
			iov[n].iov_base = pre[k].p + skip;
			iov[n++].iov_len = pre[k].len - skip;
			skip = 0;
		}
		if (c->ctrl_inflight) {
			if (skip < c->ctrl_inflight) {
				iov[n].iov_base = c->ctrl.data + c->ctrl.off + skip;
				iov[n++].iov_len = c->ctrl_inflight - skip;
				skip = 0;
			} else {
				skip -= c->ctrl_inflight;
			}
		}
		for (uint32_t i = 0; i < c->n_inflight; i++) {
			struct kd_pkt *p = c->inflight[i];
			if (skip >= p->len) {
				skip -= p->len;
				continue;
			}
			iov[n].iov_base = p->frame + skip;
			iov[n++].iov_len = p->len - skip;
			skip = 0;
		}
		ssize_t r = conn_writev(c, iov, n);
		if (r < 0) {
			if (errno == EAGAIN || errno == EINTR) {
				set_want_write(c, true);
				if (!kd_timer_armed(&c->deadline))
					arm_write_deadline(c);
				return -EAGAIN;
			}
			/* the packets of the failed write are write errors, the rest gone */
			for (uint32_t i = 0; i < c->n_inflight; i++) {
				kd_count_drop(c->w, DERP_DROP_WRITE_ERROR, c->inflight[i]);
				kd_pkt_free(c->w, c->inflight[i]);
			}
			c->n_inflight = 0;
			c->ctrl_inflight = 0;
			kd_conn_close(c, "write error");
			return -EPIPE;
		}
		c->wr_off += (size_t)r;
		if (c->wr_off >= batch_len(c))
			batch_done(c);
		/* progress resets the write deadline */
		if (c->state == KD_CONN_ACTIVE && kd_timer_armed(&c->deadline))
			arm_write_deadline(c);
	}
	if (c->state == KD_CONN_CLOSED)
		return -EPIPE;
	set_want_write(c, false);
	if (c->close_after_flush) {
		kd_conn_close(c, NULL);
		return -EPIPE;
	}
	if (c->state == KD_CONN_ACTIVE) {
		kd_timer_disarm(c->w->loop, &c->deadline);
		if (c->offload_wanted)
			kd_conn_try_offload(c);
	}
	if (c->state == KD_CONN_HTTP_RESPONDING) {
		if (c->http_close_after) {
			kd_conn_close(c, NULL);
			return -EPIPE;
		}
		c->state = KD_CONN_HTTP;
		/* like Go's ReadTimeout the deadline bounds each request, not the
		 * life of a keep-alive connection; idle ones still expire */
		kd_timer_arm(c->w->loop, &c->deadline, kd_loop_now(c->w->loop) + c->srv->cfg.http_timeout_ms);
		/* a pipelined request may already be buffered */
		if (c->in.len > c->in.off && !consume_input(c))
			return -EPIPE;
		/* the peer half-closed: answer what it asked, then nothing is coming */
		if (c->rd_eof && c->state != KD_CONN_HTTP_RESPONDING) {
			kd_conn_close(c, NULL);
			return -EPIPE;
		}
	}
	return 0;
}

void kd_worker_before_sleep(void *arg)
{
	struct kd_worker *w = arg;

	/* flushing may deliver nothing new, but handling the inbox may dirty
	 * more connections: loop until both are quiet */
	for (int round = 0; round < 4 && w->flush_list; round++) {
		struct kd_conn *list = w->flush_list;
		w->flush_list = NULL;
		while (list) {
			struct kd_conn *c = list;
			list = c->flush_next;
			c->dirty = false;
			if (c->state != KD_CONN_CLOSED && !c->want_write)
				kd_conn_flush(c);
		}
	}
	/* still dirty after the rounds (pipelined HTTP: each response frees
	 * the next request): come straight back instead of sleeping on them */
	if (w->flush_list)
		kd_loop_wake(w->loop);
	kd_worker_send_outbox(w);
	while (w->close_list) {
		struct kd_conn *c = w->close_list;
		w->close_list = c->close_next;
		kd_conn_unref(c);
	}
}

/* --- closing --- */

void kd_conn_close(struct kd_conn *c, const char *why)
{
	struct kd_worker *w = c->w;

	if (c->state == KD_CONN_CLOSED)
		return;
	if (why) {
		char sk[KD_KEY_SHORT_LEN] = "";
		if (c->registered)
			kd_key_short(sk, c->key);
		/* a client going away is normal (derper does not log EOF); anything
		 * else is logged, at most 20 lines a second per worker */
		if (!strcmp(why, "EOF")) {
			pr_debug("derp client %s%s: closed: EOF", c->peer_str, sk);
		} else {
			uint64_t n = kd_ratelimit_ok(&w->log_rl, kd_loop_now(w->loop));
			if (n > 1)
				pr_info("derp client %s%s: closed: %s (%llu similar lines suppressed)", c->peer_str, sk,
					why, (unsigned long long)(n - 1));
			else if (n)
				pr_info("derp client %s%s: closed: %s", c->peer_str, sk, why);
		}
	}
	if (c->registered) {
		kd_registry_remove(c);
		kd_registry_unsubscribe_all(c);
	}
	c->state = KD_CONN_CLOSED;
	kd_timer_disarm(w->loop, &c->deadline);
	kd_timer_disarm(w->loop, &c->keepalive);
	kd_timer_disarm(w->loop, &c->resume);
	kd_timer_disarm(w->loop, &c->inject_retry);
	kd_timer_disarm(w->loop, &c->watchdog);
	kd_io_del(w->loop, &c->io);
	if (c->offloaded) {
		pthread_mutex_lock(&c->srv->offload_lock);
		kd_offload_remove(c->srv->offload, c->io.fd, c->key);
		pthread_mutex_unlock(&c->srv->offload_lock);
		c->offloaded = false;
		c->offload_cookie = 0;
	}
	for (uint32_t i = 0; i < c->n_inflight; i++) {
		kd_count_drop(w, DERP_DROP_GONE_DISCONNECTED, c->inflight[i]);
		kd_pkt_free(w, c->inflight[i]);
	}
	c->n_inflight = 0;
	kd_pktq_drain(c, DERP_DROP_GONE_DISCONNECTED);
	if (c->ssl) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	close(c->io.fd);
	c->io.fd = -1;
	kd_buf_free(&c->in);
	kd_buf_free(&c->ctrl);
	kd_buf_free(&c->raw);
	free(c->ws);
	c->ws = NULL;
	kd_keymap_free(&c->saw_src);
	for (int k = 0; k < DERP_KIND_MAX; k++) {
		free(c->q[k].ring);
		c->q[k].ring = NULL;
	}
	if (c->all_prev)
		c->all_prev->all_next = c->all_next;
	else
		w->all = c->all_next;
	if (c->all_next)
		c->all_next->all_prev = c->all_prev;
	w->nconns--;
	/* the owner's reference goes at the end of the pass: callers up the
	 * stack may still hold c */
	c->close_next = w->close_list;
	w->close_list = c;
}

/* --- reading --- */

static ssize_t conn_read(struct kd_conn *c, void *buf, size_t len)
{
	if (!c->ssl)
		return read(c->io.fd, buf, len);
	ERR_clear_error();
	int r = SSL_read(c->ssl, buf, (int)(len > INT32_MAX ? INT32_MAX : len));
	if (r > 0)
		return r;
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		errno = EAGAIN;
		return -1;
	}
	if (e == SSL_ERROR_ZERO_RETURN)
		return 0;
	errno = ECONNRESET;
	return -1;
}

static void respond(struct kd_conn *c, const char *out, size_t len, bool keep_alive)
{
	c->state = KD_CONN_HTTP_RESPONDING;
	c->http_close_after = !keep_alive;
	kd_conn_ctrl_append(c, out, len);
}

/* Answers one complete request; the response is built in the worker's
 * scratch buffer, which is free while input sits in c->in. */
static void http_step(struct kd_conn *c)
{
	struct kd_server *s = c->srv;
	struct kd_worker *w = c->w;
	struct kd_http_request req;
	const char *in = (const char *)c->in.data + c->in.off;
	size_t in_len = c->in.len - c->in.off;
	char *out = (char *)w->scratch;
	size_t cap = w->scratch_cap, out_len = 0;
	int n = kd_http_parse_request(in, in_len, &req);

	if (n == KD_HTTP_PARSE_INCOMPLETE && in_len < KD_HTTP_MAX_REQUEST)
		return;
	if (n < 0) {
		w->ctr.handshake_errors[in_len >= KD_HTTP_MAX_REQUEST ? KD_HS_HTTP_TOO_LARGE : KD_HS_HTTP_MALFORMED]++;
		if (kd_http_parse_error_response(in, in_len, out, cap, &out_len) != 0) {
			kd_conn_close(c, "malformed HTTP request");
			return;
		}
		c->in.off = c->in.len;
		respond(c, out, out_len, false);
		return;
	}
	w->ctr.http_requests++;
	struct kd_http_route_opts o = {
		.server_pub = s->cfg.keys.pub,
		.derp_enabled = s->cfg.derp_enabled,
		.debug_allowed = kd_http_debug_allowed(&req, (const struct sockaddr *)&c->peer, s->debug_key),
		.port80_redirect = c->port80,
		.home = s->cfg.home ? s->cfg.home : "",
		.dev = s->cfg.dev,
		.hostname = s->cfg.hostname,
	};
	struct kd_http_result res;
	if (kd_http_route(&req, &o, &res, out, cap, &out_len) != 0) {
		kd_conn_close(c, "http response too large");
		return;
	}
	c->in.off += (size_t)n;
	switch (res.action) {
	case KD_HTTP_UPGRADE_DERP:
		c->fast_start = res.fast_start;
		c->not_ideal = res.not_ideal;
		if (out_len)
			kd_conn_ctrl_append(c, out, out_len);
		kd_derp_on_upgrade(c);
		return;
	case KD_HTTP_UPGRADE_WEBSOCKET:
		c->ws = malloc(sizeof(*c->ws));
		if (!c->ws || buf_reserve(&c->raw, out_len, KD_CTRL_MAX) != 0) {
			kd_conn_close(c, "out of memory");
			return;
		}
		/* messages up to a full SendPacket frame, more than the reference's 32 KiB */
		kd_ws_decoder_init(c->ws, 0);
		memcpy(c->raw.data, out, out_len);
		c->raw.len = out_len;
		w->ctr.websocket_accepts++;
		/* what the client pipelined behind the request is WebSocket framing too */
		if (!ws_unwrap_input(c, c->in.data + c->in.off, c->in.len - c->in.off, true))
			return;
		kd_derp_on_upgrade(c);
		return;
	case KD_HTTP_VARZ:
	case KD_HTTP_DEBUG_VARS:
	case KD_HTTP_DEBUG_CLIENTS: {
		char *body = NULL;
		size_t blen = 0;
		int err = res.action == KD_HTTP_VARZ	   ? kd_metrics_render(s, &body, &blen)
			  : res.action == KD_HTTP_DEBUG_VARS ? kd_metrics_render_json(s, &body, &blen)
							     : kd_registry_dump(s, &body, &blen);
		char *resp = err ? NULL : malloc(blen + 1024);
		if (resp && kd_http_format_reply(&req, &res, resp, blen + 1024, &out_len, 200,
						 res.action == KD_HTTP_VARZ ? "text/plain; version=0.0.4; charset=utf-8"
						 : res.action == KD_HTTP_DEBUG_CLIENTS ? "application/x-ndjson"
											: "application/json",
						 KD_HTTP_DEBUG_BROWSER_HEADERS, body, blen) == 0)
			respond(c, resp, out_len, res.keep_alive);
		else
			kd_conn_close(c, "metrics response failed");
		free(resp);
		free(body);
		return;
	}
	case KD_HTTP_DEBUG_CHECK: {
		char problems[512];
		bool ok = kd_registry_check(s, problems, sizeof(problems));
		const char *body = ok ? "derp.Server ConsistencyCheck okay" : problems;
		if (kd_http_format_reply(&req, &res, out, cap, &out_len, ok ? 200 : 500, KD_HTTP_TEXT_PLAIN,
					 KD_HTTP_DEBUG_BROWSER_HEADERS, body, strlen(body)) == 0)
			respond(c, out, out_len, res.keep_alive);
		else
			kd_conn_close(c, "check response failed");
		return;
	}
	case KD_HTTP_DEBUG_INDEX: {
		char host[256] = "";
		gethostname(host, sizeof(host) - 1);
		struct kd_http_debug_info info = {
			.program = "kderpd",
			.version = KDERP_VERSION,
			.machine = host,
			.tls_hostname = s->cfg.hostname,
			.mesh_key = s->cfg.has_mesh_key,
			.uptime_sec = (kd_now_ms() - s->start_ms) / 1000,
		};
		if (kd_http_debug_index(&req, &res, &info, out, cap, &out_len) == 0)
			respond(c, out, out_len, res.keep_alive);
		else
			kd_conn_close(c, "debug page too large");
		return;
	}
	case KD_HTTP_RESPOND:
		respond(c, out, out_len, res.keep_alive);
		return;
	}
}

/* Turns WebSocket frames into DERP bytes. in_place: buf is c->in's unread
 * part and the DERP bytes replace it; else they are appended to c->in.
 * Returns false if c closed. */
static bool ws_unwrap_input(struct kd_conn *c, uint8_t *buf, size_t len, bool in_place)
{
	size_t done = 0, consumed = 0, derp_len = 0, keep = in_place ? c->in.off : 0;

	while (done < len || len == 0) {
		uint8_t reply[KD_WS_MAX_CONTROL_FRAME * 2];
		size_t reply_len = 0;
		int r = kd_ws_unwrap(c->ws, buf + done, len - done, &consumed, &derp_len, reply, sizeof(reply),
				     &reply_len);
		if (in_place) {
			memmove(c->in.data + keep, buf + done, derp_len);
			keep += derp_len;
		} else if (derp_len) {
			if (buf_reserve(&c->in, derp_len, DERP_MAX_INFO_LEN + 65536) != 0) {
				kd_conn_close(c, "input over its bound");
				return false;
			}
			memcpy(c->in.data + c->in.len, buf + done, derp_len);
			c->in.len += derp_len;
		}
		if (reply_len) {
			if (buf_reserve(&c->raw, reply_len, KD_CTRL_MAX) != 0) {
				kd_conn_close(c, "control stream over its bound");
				return false;
			}
			memcpy(c->raw.data + c->raw.len, reply, reply_len);
			c->raw.len += reply_len;
			kd_conn_mark_dirty(c);
		}
		if (r != 0) {
			/* peer closed or broke the framing: send what is owed, then close */
			c->close_after_flush = true;
			kd_conn_mark_dirty(c);
			if (in_place)
				c->in.len = keep;
			return c->state != KD_CONN_CLOSED;
		}
		done += consumed;
		if (len == 0 || consumed == 0)
			break;
	}
	if (in_place)
		c->in.len = keep;
	return true;
}

/* Feeds buffered bytes to the current state. Returns false if c closed. */
static bool consume_input(struct kd_conn *c)
{
	while (c->state != KD_CONN_CLOSED && c->in.len > c->in.off) {
		if (c->state == KD_CONN_HTTP) {
			size_t before = c->in.off;
			http_step(c);
			if (c->in.off == before)
				break;
			continue;
		}
		if (c->state == KD_CONN_HTTP_RESPONDING)
			break; /* pipelined request waits for the response to go out */
		if (c->state != KD_CONN_WAIT_CLIENT_INFO && c->state != KD_CONN_ACTIVE)
			break;
		ssize_t used = kd_derp_process(c, c->in.data + c->in.off, c->in.len - c->in.off);
		if (used < 0)
			return false;
		c->in.off += (size_t)used;
		if (used == 0 || c->paused)
			break;
	}
	if (c->in.off == c->in.len && c->state >= KD_CONN_WAIT_CLIENT_INFO) {
		/* nothing partial left: give the memory back (idle clients hold no buffer) */
		kd_buf_free(&c->in);
	}
	return c->state != KD_CONN_CLOSED;
}

static void on_readable(struct kd_conn *c)
{
	struct kd_worker *w = c->w;
	size_t budget = KD_READ_BUDGET;

	while (budget && c->state != KD_CONN_CLOSED && c->state != KD_CONN_ADMISSION && !c->paused) {
		ssize_t r;
		if (c->ws) {
			/* WebSocket: unwrap what arrives, then parse like any input */
			r = conn_read(c, w->scratch, w->scratch_cap);
			if (r > 0) {
				budget -= (size_t)r < budget ? (size_t)r : budget;
				if (c->close_after_flush)
					continue; /* closing: read and drop */
				if (!ws_unwrap_input(c, w->scratch, (size_t)r, false) || !consume_input(c))
					return;
				continue;
			}
			goto read_done;
		}
		bool direct = (c->state == KD_CONN_ACTIVE || c->state == KD_CONN_WAIT_CLIENT_INFO) &&
			      c->in.len == c->in.off && c->skip == 0;
		if (direct) {
			/* fast path: parse whole frames straight from the worker's buffer
			 * and keep only a trailing partial frame */
			r = conn_read(c, w->scratch, w->scratch_cap);
			if (r > 0) {
				budget -= (size_t)r < budget ? (size_t)r : budget;
				ssize_t used = kd_derp_process(c, w->scratch, (size_t)r);
				if (used < 0)
					return;
				if ((size_t)used < (size_t)r) {
					size_t rest = (size_t)r - (size_t)used;
					if (buf_reserve(&c->in, rest, DERP_MAX_INFO_LEN + 64) != 0) {
						kd_conn_close(c, "out of memory");
						return;
					}
					memcpy(c->in.data + c->in.len, w->scratch + used, rest);
					c->in.len += rest;
				}
				continue;
			}
		} else {
			size_t want = 16384;
			if (buf_reserve(&c->in, want, DERP_MAX_INFO_LEN + 65536) != 0) {
				kd_conn_close(c, "input over its bound");
				return;
			}
			r = conn_read(c, c->in.data + c->in.len, c->in.cap - c->in.len);
			if (r > 0) {
				budget -= (size_t)r < budget ? (size_t)r : budget;
				c->in.len += (size_t)r;
				if (!consume_input(c))
					return;
				continue;
			}
		}
read_done:
		if (r == 0 && c->state == KD_CONN_HTTP_RESPONDING) {
			/* a half-close after the request: the response (and those of
			 * requests pipelined before the EOF) is still owed; stop reading
			 * (EOF stays readable) and close once they are out */
			c->rd_eof = true;
			kd_conn_update_events(c);
			return;
		}
		if (r == 0) {
			if (c->state < KD_CONN_ACTIVE && c->state != KD_CONN_HTTP)
				w->ctr.handshake_errors[KD_HS_EOF]++;
			kd_conn_close(c, c->state == KD_CONN_HTTP ? NULL : "EOF");
			return;
		}
		if (errno == EAGAIN || errno == EINTR) {
			if (c->offload_wanted)
				kd_conn_try_offload(c);
			return;
		}
		w->ctr.conn_errors++;
		kd_conn_close(c, strerror(errno));
		return;
	}
}

void kd_conn_try_offload(struct kd_conn *c)
{
	if (!c->offload_wanted || c->offloaded || c->state != KD_CONN_ACTIVE || c->paused ||
	    c->in.len != c->in.off || c->skip || have_pending(c) || !batch_empty(c) || c->want_write)
		return;
	int err = kd_registry_offload(c); /* duplicates too: registry_offload.c */
	c->offload_wanted = false; /* one attempt */
	if (err) {
		c->w->ctr.offload_failed++;
		pr_warn("offload %s: %s; relaying it in userspace", c->peer_str, strerror(-err));
		return;
	}
	c->offloaded = true;
	c->w->ctr.offloaded++;
	kd_buf_free(&c->in);
	kd_timer_arm(c->w->loop, &c->watchdog, kd_loop_now(c->w->loop) + KD_WATCHDOG_PERIOD(c->srv));
}

/* The kernel parser can stop consuming a socket without an error; the
 * unread bytes then sit in its receive queue for good. Bytes that stay put
 * across several checks mean a stuck flow: close it (counted) so the client
 * reconnects, rather than leave it silently dead. */
static void on_watchdog(struct kd_timer *t)
{
	struct kd_conn *c = (struct kd_conn *)((char *)t - offsetof(struct kd_conn, watchdog));
	uint32_t unread = 0;
	int inq;

	if (c->state != KD_CONN_ACTIVE || !c->offloaded)
		return;
	/* not SIOCINQ: on a sockmap socket it counts passed frames (offload_watch.c) */
	inq = kd_offload_unread(c->io.fd, &unread) == 0 ? (int)unread : 0;
	if (inq > 0 && inq == c->stuck_inq) {
		if (++c->stuck_checks >= KD_WATCHDOG_CHECKS) {
			c->w->ctr.offload_stuck++;
			kd_conn_close(c, "offloaded flow stuck: unread bytes not consumed by the kernel parser");
			return;
		}
	} else {
		c->stuck_checks = 0;
	}
	c->stuck_inq = inq;
	kd_timer_arm(c->w->loop, &c->watchdog, kd_loop_now(c->w->loop) + KD_WATCHDOG_PERIOD(c->srv));
}

void kd_conn_resume_input(struct kd_conn *c)
{
	consume_input(c);
}

static void tls_handshake_step(struct kd_conn *c)
{
	ERR_clear_error();
	int r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		struct kd_tls_conn_info info;
		struct kd_counters *ctr = &c->w->ctr;
		kd_tls_conn_info(c->ssl, &info);
		bool v13 = !strcmp(info.version, "1.3");
		ctr->tls_versions[v13 ? 1 : !strcmp(info.version, "1.2") ? 0 : 2]++;
		enum kd_ktls_result no = c->srv->tls_ulp_available ? KD_KTLS_REFUSED : KD_KTLS_NO_TLS_ULP;
		ctr->ktls[0][info.ktls_tx ? KD_KTLS_ON : no]++;
		ctr->ktls[1][info.ktls_rx                        ? KD_KTLS_ON
			     : v13 && info.ktls_tx ? KD_KTLS_TLS13_RX_OPENSSL
						   : no]++;
		c->state = KD_CONN_HTTP;
		__atomic_add_fetch(&c->srv->tls_accepted, 1, __ATOMIC_RELAXED);
		on_readable(c);
		return;
	}
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ) {
		set_want_write(c, false);
		return;
	}
	if (e == SSL_ERROR_WANT_WRITE) {
		set_want_write(c, true);
		return;
	}
	c->w->ctr.handshake_errors[KD_HS_TLS]++;
	char msg[160];
	unsigned long err = ERR_get_error();
	snprintf(msg, sizeof(msg), "TLS handshake: %s", err ? ERR_reason_error_string(err) : "connection closed");
	kd_conn_close(c, msg);
}

void kd_conn_on_io(struct kd_io *io, uint32_t events)
{
	struct kd_conn *c = (struct kd_conn *)io;

	if (c->state == KD_CONN_CLOSED)
		return;
	if (c->state == KD_CONN_ADMISSION) {
		/* nothing is read while the webhook decides; a reset ends it */
		if (events & (EPOLLERR | EPOLLHUP))
			kd_conn_close(c, "connection lost during admission");
		return;
	}
	if (c->state == KD_CONN_TLS_HANDSHAKE) {
		tls_handshake_step(c);
		return;
	}
	if (events & EPOLLOUT) {
		set_want_write(c, false);
		if (kd_conn_flush(c) == -EPIPE)
			return;
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP))
		on_readable(c);
}
