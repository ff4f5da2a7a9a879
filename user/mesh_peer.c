// SPDX-License-Identifier: MIT
/* One mesh peer (spec §8.3): dial, log in with the mesh key, WatchConns,
 * feed PeerPresent/PeerGone to the forwarding table, write the workers'
 * ForwardPackets, and on any failure forget everything learned from the
 * peer and redial 5 s later. Everything here runs on the mesh thread except
 * kd_mesh_peer_forward(), which the server's workers call. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <sodium.h>

#include "client.h"
#include "key.h"
#include "log.h"
#include "mesh_internal.h"

#define TICK_MS 250u
#define FLOOD_SETTLE_MS 200u /* §8.3 step 5 */
#define FLOOD_MAX_MS 2000u
#define STATUS_EVERY_MS 10000u
#define CONNECT_TIMEOUT_MS 10000

static void count_drops(struct kd_mesh *m, enum drop_reason r, uint64_t n)
{
	if (n)
		__atomic_add_fetch(&m->drops[r], n, __ATOMIC_RELAXED);
}

int kd_mesh_peer_forward(struct kd_forwarder *f, const uint8_t src[DERP_KEY_LEN], const uint8_t dst[DERP_KEY_LEN],
			 const uint8_t *data, size_t len)
{
	struct mesh_peer *p = (struct mesh_peer *)f;
	struct kd_mesh *m = p->m;

	if (len > DERP_MAX_PACKET)
		return -EMSGSIZE;
	struct mesh_pkt *pk = malloc(sizeof(*pk) + len);
	if (!pk) {
		count_drops(m, DROP_QUEUE_FULL, 1);
		return -ENOMEM;
	}
	pk->next = NULL;
	memcpy(pk->src, src, DERP_KEY_LEN);
	memcpy(pk->dst, dst, DERP_KEY_LEN);
	pk->len = (uint32_t)len;
	memcpy(pk->data, data, len);

	pthread_mutex_lock(&p->lock);
	if (!p->up) {
		pthread_mutex_unlock(&p->lock);
		free(pk);
		count_drops(m, DROP_LINK_DOWN, 1);
		return -ENOTCONN;
	}
	if (p->qn >= KD_MESH_QUEUE_PACKETS || p->qbytes + len > KD_MESH_QUEUE_BYTES) {
		pthread_mutex_unlock(&p->lock);
		free(pk);
		count_drops(m, DROP_QUEUE_FULL, 1);
		return -ENOBUFS;
	}
	bool was_empty = !p->head;
	if (p->tail)
		p->tail->next = pk;
	else
		p->head = pk;
	p->tail = pk;
	p->qn++;
	p->qbytes += len;
	pthread_mutex_unlock(&p->lock);
	/* one wake per batch: the mesh thread takes the whole queue */
	if (was_empty)
		kd_loop_wake(m->loop);
	return 0;
}

uint64_t kd_mesh_free_pkts(struct mesh_pkt *pk)
{
	uint64_t n = 0;

	while (pk) {
		struct mesh_pkt *next = pk->next;
		free(pk);
		pk = next;
		n++;
	}
	return n;
}

static void peer_set_events(struct mesh_peer *p)
{
	uint32_t ev = EPOLLIN | (kd_client_want_write(p->c) ? EPOLLOUT : 0);

	if (ev != p->io.events)
		kd_io_mod(p->m->loop, &p->io, ev);
}

/* Leaves every key learned from this peer and schedules the reconnect. */
static void peer_down(struct mesh_peer *p, enum drop_reason why, const char *what, int err)
{
	struct kd_mesh *m = p->m;

	if (p->c) {
		kd_io_del(m->loop, &p->io);
		kd_client_close(p->c);
		p->c = NULL;
	}
	pthread_mutex_lock(&p->lock);
	bool was_up = p->up;
	p->up = false;
	struct mesh_pkt *q = p->head;
	p->head = p->tail = NULL;
	p->qn = 0;
	p->qbytes = 0;
	pthread_mutex_unlock(&p->lock);
	count_drops(m, why, kd_mesh_free_pkts(q));
	if (was_up)
		__atomic_sub_fetch(&m->peers_up, 1, __ATOMIC_RELAXED);

	const uint8_t *k;
	void *v;
	size_t n = 0;
	/* synthetic PeerGone(MeshConnBroke) for everything this peer told us */
	for (size_t i = 0; (i = kd_keymap_next(&p->present, i, &k, &v)) != 0; n++)
		kd_server_remove_forwarder(m->srv, k, &p->fwd);
	kd_keymap_free(&p->present);
	kd_keymap_init(&p->present);
	/* a peer that closes right after WatchConns did not grant mesh rights */
	bool refused = p->st == PEER_UP && n == 0 && kd_loop_now(m->loop) - p->up_since_ms < 1000;
	if (p->st == PEER_UP)
		pr_warn("mesh(%s): %s: %s; forgot %zu peers, reconnecting in %u s%s", p->t.host, what,
			err ? strerror(-err) : "closed", n, KD_MESH_RETRY_MS / 1000,
			refused ? " (closed at WatchConns: does it have the same mesh key?)" : "");
	p->st = PEER_WAIT;
	kd_timer_arm(m->loop, &p->timer, kd_loop_now(m->loop) + KD_MESH_RETRY_MS);
}

static void peer_fail(struct mesh_peer *p, int err)
{
	/* the first failure and every 12th (once a minute) are worth a line */
	if (p->fails++ % 12 == 0)
		pr_warn("mesh(%s): connect failed: %s; retrying every %u s", p->t.host, strerror(-err),
			KD_MESH_RETRY_MS / 1000);
	peer_down(p, DROP_LINK_DOWN, "connect", err);
}

/* Writes the whole queue as ForwardPacket frames, corked into one write. */
void kd_mesh_peer_flush(struct mesh_peer *p)
{
	struct kd_mesh *m = p->m;

	if (p->st != PEER_UP)
		return;
	pthread_mutex_lock(&p->lock);
	struct mesh_pkt *pk = p->head;
	p->head = p->tail = NULL;
	uint32_t qn = p->qn;
	size_t qbytes = p->qbytes;
	p->qn = 0;
	p->qbytes = 0;
	pthread_mutex_unlock(&p->lock);

	uint64_t now = kd_loop_now(m->loop);
	if (pk && kd_client_out_pending(p->c) == 0)
		p->last_progress_ms = now; /* the stall clock starts with new bytes */
	uint64_t np = 0, nb = 0;
	int err = 0;
	kd_client_cork(p->c, true);
	while (pk) {
		err = kd_client_forward_packet(p->c, pk->src, pk->dst, pk->data, pk->len);
		if (err)
			break;
		np++;
		nb += pk->len;
		struct mesh_pkt *next = pk->next;
		free(pk);
		pk = next;
	}
	kd_client_cork(p->c, false);
	__atomic_add_fetch(&m->fwd_packets, np, __ATOMIC_RELAXED);
	__atomic_add_fetch(&m->fwd_bytes, nb, __ATOMIC_RELAXED);
	if (pk && err == -ENOBUFS) {
		/* the socket is behind: the rest goes back in front, still bounded */
		struct mesh_pkt *last = pk;
		while (last->next)
			last = last->next;
		pthread_mutex_lock(&p->lock);
		last->next = p->head;
		if (!p->head)
			p->tail = last;
		p->head = pk;
		p->qn += qn - (uint32_t)np;
		p->qbytes += qbytes - (size_t)nb;
		pthread_mutex_unlock(&p->lock);
		pk = NULL;
		err = 0;
	}
	if (pk) {
		count_drops(m, DROP_LINK_DOWN, kd_mesh_free_pkts(pk));
		peer_down(p, DROP_LINK_DOWN, "write", err);
		return;
	}
	size_t before = kd_client_out_pending(p->c);
	err = kd_client_flush(p->c);
	if (err && err != -EAGAIN) {
		peer_down(p, DROP_LINK_DOWN, "write", err);
		return;
	}
	if (kd_client_out_pending(p->c) < before || !kd_client_out_pending(p->c))
		p->last_progress_ms = now;
	peer_set_events(p);
}

static void peer_frames(struct mesh_peer *p)
{
	struct kd_mesh *m = p->m;
	struct kd_client_msg msg;
	char ks[KD_KEY_SHORT_LEN];

	for (;;) {
		int err = kd_client_poll(p->c, &msg);
		if (err == -EAGAIN)
			return;
		if (err) {
			peer_down(p, DROP_LINK_DOWN, "read", err);
			return;
		}
		switch (msg.type) {
		case DERP_FRAME_PEER_PRESENT:
			/* our own mesh connection to that peer is not a remote client */
			if (!memcmp(msg.key, m->self_pub, DERP_KEY_LEN))
				break;
			if (!kd_keymap_get(&p->present, msg.key) &&
			    kd_keymap_put(&p->present, msg.key, (void *)1) != 0)
				break;
			if (kd_server_add_forwarder(m->srv, msg.key, &p->fwd) != 0) {
				kd_keymap_del(&p->present, msg.key);
				break;
			}
			p->last_present_ms = kd_loop_now(m->loop);
			break;
		case DERP_FRAME_PEER_GONE:
			if (msg.reason == DERP_PEER_GONE_NOT_HERE) {
				kd_key_short(ks, msg.key);
				pr_info("mesh(%s): peer %s not here", p->t.host, ks);
			}
			if (kd_keymap_del(&p->present, msg.key))
				kd_server_remove_forwarder(m->srv, msg.key, &p->fwd);
			break;
		default:
			/* KeepAlive, Ping, Health...: the mesh client answers nothing */
			break;
		}
	}
}

static void peer_established(struct mesh_peer *p)
{
	struct kd_mesh *m = p->m;
	uint64_t now = kd_loop_now(m->loop);

	if (!memcmp(kd_client_server_key(p->c), m->self_pub, DERP_KEY_LEN)) {
		pr_info("mesh(%s): detected self-connect; ignoring host", p->t.host);
		kd_io_del(m->loop, &p->io);
		kd_client_close(p->c);
		p->c = NULL;
		p->st = PEER_SELF;
		kd_timer_disarm(m->loop, &p->timer);
		return;
	}
	int err = kd_client_watch_conns(p->c);
	if (err) {
		peer_fail(p, err);
		return;
	}
	pthread_mutex_lock(&p->lock);
	p->up = true;
	pthread_mutex_unlock(&p->lock);
	__atomic_add_fetch(&m->peers_up, 1, __ATOMIC_RELAXED);
	if (p->ever_up || p->fails)
		__atomic_add_fetch(&m->reconnects, 1, __ATOMIC_RELAXED);
	p->ever_up = true;
	p->fails = 0;
	p->st = PEER_UP;
	p->up_since_ms = p->last_progress_ms = p->last_present_ms = now;
	p->flood_done = false;
	kd_timer_arm(m->loop, &p->timer, now + TICK_MS);
	peer_set_events(p);
	/* frames that came with the handshake's last read sit in the buffer */
	peer_frames(p);
}

static void peer_step(struct mesh_peer *p)
{
	int r = kd_client_step(p->c);

	if (r < 0) {
		peer_fail(p, r);
	} else if (r == 1) {
		peer_established(p);
	} else {
		peer_set_events(p);
		int64_t dl = kd_client_deadline_ms(p->c);
		kd_timer_arm(p->m->loop, &p->timer, dl > 0 ? (uint64_t)dl : kd_loop_now(p->m->loop) + TICK_MS);
	}
}

static void peer_io(struct kd_io *io, uint32_t events)
{
	struct mesh_peer *p = (struct mesh_peer *)((char *)io - offsetof(struct mesh_peer, io));

	if (p->st == PEER_CONNECTING) {
		peer_step(p);
		return;
	}
	if (p->st != PEER_UP)
		return;
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
		peer_frames(p);
		if (p->st != PEER_UP)
			return;
	}
	if (events & EPOLLOUT)
		kd_mesh_peer_flush(p);
}

/* host/dialhost: dial the given name at the URL's port (derper resolves
 * it in its dialer; here the mesh thread may block on it briefly). */
static int resolve_dial(const struct kd_mesh_target *t, char *out, size_t cap)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	char ip[INET6_ADDRSTRLEN];

	int rc = getaddrinfo(t->dial, NULL, &hints, &res);
	if (rc != 0 || !res)
		return -EHOSTUNREACH;
	if (res->ai_family == AF_INET6) {
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)res->ai_addr)->sin6_addr, ip, sizeof(ip));
		snprintf(out, cap, "[%s]:%u", ip, t->port);
	} else {
		inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, ip, sizeof(ip));
		snprintf(out, cap, "%s:%u", ip, t->port);
	}
	freeaddrinfo(res);
	return 0;
}

static void peer_connect(struct mesh_peer *p)
{
	struct kd_mesh *m = p->m;
	struct kd_client_opts o = {0};
	char dial[INET6_ADDRSTRLEN + 16];
	int err;

	o.url = p->t.url;
	if (p->t.dial[0]) {
		err = resolve_dial(&p->t, dial, sizeof(dial));
		if (err) {
			peer_fail(p, err);
			return;
		}
		o.dial_addr = dial;
	}
	o.key = *kd_server_keys(m->srv);
	o.mesh_key = m->mesh_key;
	o.ca_file = m->ca_file;
	o.insecure = m->insecure;
	o.timeout_ms = CONNECT_TIMEOUT_MS;
	err = kd_client_start(&p->c, &o);
	sodium_memzero(&o.key, sizeof(o.key));
	if (err) {
		peer_fail(p, err);
		return;
	}
	p->io.fd = kd_client_fd(p->c);
	p->io.cb = peer_io;
	p->io.events = 0;
	err = kd_io_add(m->loop, &p->io, EPOLLIN | (kd_client_want_write(p->c) ? EPOLLOUT : 0));
	if (err) {
		kd_client_close(p->c);
		p->c = NULL;
		peer_fail(p, err);
		return;
	}
	p->st = PEER_CONNECTING;
	peer_step(p);
}

static void peer_tick(struct mesh_peer *p)
{
	struct kd_mesh *m = p->m;
	uint64_t now = kd_loop_now(m->loop);

	if (p->c && kd_client_out_pending(p->c) && now - p->last_progress_ms >= KD_MESH_WRITE_STALL_MS) {
		peer_down(p, DROP_WRITE_TIMEOUT, "write made no progress", -ETIMEDOUT);
		return;
	}
	if (!p->flood_done && (now - p->last_present_ms >= FLOOD_SETTLE_MS || now - p->up_since_ms >= FLOOD_MAX_MS)) {
		p->flood_done = true;
		p->status_ms = now;
		p->status_count = p->present.len;
		pr_info("mesh(%s): connected; %zu peers", p->t.host, p->present.len);
	} else if (p->flood_done && now - p->status_ms >= STATUS_EVERY_MS && p->present.len != p->status_count) {
		p->status_ms = now;
		p->status_count = p->present.len;
		pr_info("mesh(%s): %zu peers", p->t.host, p->present.len);
	}
	kd_timer_arm(m->loop, &p->timer, now + TICK_MS);
}

void kd_mesh_peer_timer(struct kd_timer *t)
{
	struct mesh_peer *p = (struct mesh_peer *)((char *)t - offsetof(struct mesh_peer, timer));

	switch (p->st) {
	case PEER_WAIT:
		peer_connect(p);
		break;
	case PEER_CONNECTING:
		peer_step(p);
		break;
	case PEER_UP:
		peer_tick(p);
		break;
	case PEER_SELF:
		break;
	}
}
