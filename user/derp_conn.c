// SPDX-License-Identifier: MIT
/* DERP semantics of one connection (spec §5–§7): the handshake, one
 * handler per frame type, routing SendPacket to the destination's queue and
 * the cross-worker hand-off. */
#include <errno.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "clientinfo.h"
#include "derp_crypto.h"
#include "server_internal.h"

/* --- packets and queues --- */

struct kd_pkt *kd_pkt_frame(struct kd_worker *w, uint8_t type, const void *p1, size_t n1, const void *p2, size_t n2)
{
	size_t need = sizeof(struct kd_pkt) + DERP_FRAME_HDR_LEN + n1 + n2;
	struct kd_pkt *p;

	if (w && need <= KD_PKT_POOL_SIZE && w->pool) {
		p = w->pool;
		w->pool = p->next_free;
		w->pool_len--;
	} else {
		p = malloc(w && need <= KD_PKT_POOL_SIZE ? KD_PKT_POOL_SIZE : need);
		if (!p)
			return NULL;
	}
	p->pooled = w && need <= KD_PKT_POOL_SIZE;
	p->len = (uint32_t)(DERP_FRAME_HDR_LEN + n1 + n2);
	p->kind = DERP_KIND_OTHER;
	p->enq_ms = 0;
	derp_hdr_put((struct derp_frame_hdr *)p->frame, type, (uint32_t)(n1 + n2));
	if (n1)
		memcpy(p->frame + DERP_FRAME_HDR_LEN, p1, n1);
	if (n2)
		memcpy(p->frame + DERP_FRAME_HDR_LEN + n1, p2, n2);
	return p;
}

void kd_pkt_free(struct kd_worker *w, struct kd_pkt *p)
{
	if (w && p->pooled && w->pool_len < KD_PKT_POOL_MAX) {
		p->next_free = w->pool;
		w->pool = p;
		w->pool_len++;
		return;
	}
	free(p);
}

void kd_count_drop(struct kd_worker *w, enum derp_drop_reason r, const struct kd_pkt *p)
{
	size_t n = p->len >= sizeof(struct derp_packet_hdr) ? p->len - sizeof(struct derp_packet_hdr) : 0;

	w->ctr.dropped[r][p->kind]++;
	w->ctr.bytes_dropped[r][p->kind] += n;
}

void kd_pktq_drain(struct kd_conn *c, enum derp_drop_reason r)
{
	for (int k = 0; k < DERP_KIND_MAX; k++) {
		struct kd_pktq *q = &c->q[k];
		while (q->len) {
			struct kd_pkt *p = q->ring[q->head];
			q->head = (q->head + 1) % q->cap;
			q->len--;
			kd_count_drop(c->w, r, p);
			kd_pkt_free(c->w, p);
		}
	}
}

static bool is_disco(const uint8_t *pkt, size_t len)
{
	return len >= DERP_DISCO_MIN_LEN && memcmp(pkt, DERP_DISCO_MAGIC, DERP_DISCO_MAGIC_LEN) == 0;
}

/* Enqueue on the owner worker of d; head drop when full (spec §7.4). */
void kd_derp_deliver(struct kd_conn *d, struct kd_pkt *p)
{
	struct kd_worker *w = d->w;

	if (d->state != KD_CONN_ACTIVE) {
		kd_count_drop(w, DERP_DROP_GONE_DISCONNECTED, p);
		kd_pkt_free(w, p);
		return;
	}
	const uint8_t *src = p->frame + DERP_FRAME_HDR_LEN;
	if (!d->last_src_valid || memcmp(d->last_src, src, DERP_KEY_LEN) != 0) {
		if (!kd_keymap_get(&d->saw_src, src) && kd_keymap_put(&d->saw_src, src, (void *)1) == 0)
			kd_registry_subscribe(d, src);
		memcpy(d->last_src, src, DERP_KEY_LEN);
		d->last_src_valid = true;
	}
	if (d->auto_watch)
		kd_offload_policy_note(d, p->len - sizeof(struct derp_packet_hdr));
	struct kd_pktq *q = &d->q[p->kind];
	if (!q->ring) {
		q->ring = calloc(q->cap, sizeof(*q->ring));
		if (!q->ring) {
			kd_count_drop(w, DERP_DROP_QUEUE_TAIL, p);
			kd_pkt_free(w, p);
			return;
		}
	}
	if (q->len == q->cap && !d->want_write) {
		/* one read pass can carry hundreds of frames for one destination:
		 * write the full queue out before dropping anything from it */
		kd_conn_flush(d);
		if (d->state != KD_CONN_ACTIVE) {
			kd_count_drop(w, DERP_DROP_GONE_DISCONNECTED, p);
			kd_pkt_free(w, p);
			return;
		}
	}
	if (q->len == q->cap) {
		struct kd_pkt *old = q->ring[q->head];
		q->head = (q->head + 1) % q->cap;
		q->len--;
		kd_count_drop(w, DERP_DROP_QUEUE_HEAD, old);
		kd_pkt_free(w, old);
	}
	p->enq_ms = kd_loop_now(w->loop);
	q->ring[(q->head + q->len) % q->cap] = p;
	q->len++;
	kd_conn_mark_dirty(d);
}

/* --- cross-worker messages --- */

static int msgvec_push(struct kd_msgvec *v, struct kd_msg m)
{
	if (v->len == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 64;
		struct kd_msg *n = realloc(v->v, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		v->v = n;
		v->cap = cap;
	}
	v->v[v->len++] = m;
	return 0;
}

static void handle_msg(struct kd_worker *w, struct kd_msg *m)
{
	struct kd_conn *d = m->dst;

	switch (m->op) {
	case KD_MSG_PACKET:
		kd_derp_deliver(d, m->pkt);
		break;
	case KD_MSG_PEER_GONE:
		if (d->state == KD_CONN_ACTIVE) {
			/* a later packet from the same source subscribes again */
			kd_keymap_del(&d->saw_src, m->pkt->frame + DERP_FRAME_HDR_LEN);
			d->last_src_valid = false;
		}
		/* fallthrough */
	case KD_MSG_CTRL:
		if (d->state == KD_CONN_ACTIVE) {
			if (m->pkt->frame[0] == DERP_FRAME_PEER_GONE) {
				if (m->pkt->frame[DERP_FRAME_HDR_LEN + DERP_KEY_LEN] == DERP_PEER_GONE_NOT_HERE)
					w->ctr.peer_gone_not_here_frames++;
				else
					w->ctr.peer_gone_disconnected_frames++;
			}
			kd_conn_ctrl_append(d, m->pkt->frame, m->pkt->len);
		}
		kd_pkt_free(w, m->pkt);
		break;
	case KD_MSG_CLOSE:
		kd_conn_close(d, "closed by mesh peer (ClosePeer)");
		break;
	}
	if (m->owns_ref)
		kd_conn_unref(d);
}

static void send_outbox_to(struct kd_worker *w, int i);

/* Queues a message for dst's worker, or handles it now when dst is ours
 * (a connection of this worker cannot be freed before the pass ends). */
void kd_worker_post(struct kd_worker *from, struct kd_conn *dst, struct kd_pkt *p, enum kd_msg_op op)
{
	struct kd_msg m = {.dst = dst, .pkt = p, .op = (uint8_t)op, .owns_ref = 1};

	if (from && dst->w == from) {
		m.owns_ref = 0;
		handle_msg(from, &m);
		return;
	}
	if (!from) {
		/* not on a worker thread (mesh, registry callbacks) */
		struct kd_worker *to = dst->w;
		kd_conn_ref(dst);
		pthread_mutex_lock(&to->inbox_lock);
		int err = msgvec_push(&to->inbox, m);
		if (!err)
			__atomic_add_fetch(&to->inbox_backlog, 1, __ATOMIC_RELAXED);
		pthread_mutex_unlock(&to->inbox_lock);
		if (err) {
			free(p);
			kd_conn_unref(dst);
			return;
		}
		kd_loop_wake(to->loop);
		return;
	}
	struct kd_msgvec *ob = &from->outbox[dst->w->idx];
	if (ob->len % KD_BACKLOG_PEEK == 0)
		ob->backlog_seen = __atomic_load_n(&dst->w->inbox_backlog, __ATOMIC_RELAXED);
	if (op == KD_MSG_PACKET && ob->backlog_seen + ob->len >= KD_INBOX_MAX) {
		kd_count_drop(from, DERP_DROP_QUEUE_TAIL, p);
		kd_pkt_free(from, p);
		return;
	}
	bool share = ob->len && ob->v[ob->len - 1].dst == dst && ob->v[ob->len - 1].owns_ref;
	if (msgvec_push(ob, m) != 0) {
		if (op == KD_MSG_PACKET)
			kd_count_drop(from, DERP_DROP_QUEUE_TAIL, p);
		kd_pkt_free(from, p);
		return;
	}
	if (share)
		ob->v[ob->len - 2].owns_ref = 0; /* the run's reference moves to its new end */
	else
		kd_conn_ref(dst);
	/* one pass over a hundred busy senders reads megabytes: hand the work
	 * over as it piles up so the other worker runs in parallel, instead of
	 * idling until this pass ends and then finding its inbox over the bound */
	if (ob->len >= KD_OUTBOX_BATCH)
		send_outbox_to(from, dst->w->idx);
}

/* Moves the messages for worker i to its inbox: one lock, and a wake-up
 * only when the inbox was empty (its owner is not already draining it). */
static void send_outbox_to(struct kd_worker *w, int i)
{
	struct kd_server *s = w->srv;
	struct kd_msgvec *ob = &w->outbox[i];
	struct kd_worker *to = &s->workers[i];
	bool was_empty;

	if (!ob->len)
		return;
	pthread_mutex_lock(&to->inbox_lock);
	was_empty = to->inbox.len == 0;
	__atomic_add_fetch(&to->inbox_backlog, ob->len, __ATOMIC_RELAXED);
	if (was_empty && to->inbox.cap < ob->cap) {
		/* swap whole vectors: no copy on the common path */
		struct kd_msgvec tmp = to->inbox;
		to->inbox = *ob;
		*ob = tmp;
		ob->len = 0;
	} else {
		for (size_t k = 0; k < ob->len; k++) {
			if (msgvec_push(&to->inbox, ob->v[k]) != 0) {
				/* only on OOM: drop the packet; the reference is
				 * kept (leaked) since earlier messages of its run
				 * may already rely on it */
				if (ob->v[k].op == KD_MSG_PACKET)
					kd_count_drop(w, DERP_DROP_QUEUE_TAIL, ob->v[k].pkt);
				free(ob->v[k].pkt);
				__atomic_sub_fetch(&to->inbox_backlog, 1, __ATOMIC_RELAXED);
			}
		}
		ob->len = 0;
	}
	/* the swap above brought another vector's stale reading: use the
	 * exact one, known under the lock */
	ob->backlog_seen = __atomic_load_n(&to->inbox_backlog, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&to->inbox_lock);
	if (was_empty)
		kd_loop_wake(to->loop);
}

/* Moves this pass's remaining messages to their workers. */
void kd_worker_send_outbox(struct kd_worker *w)
{
	for (int i = 0; i < w->srv->nworkers; i++)
		send_outbox_to(w, i);
}

void kd_worker_drain_inbox(void *arg)
{
	struct kd_worker *w = arg;

	for (;;) {
		pthread_mutex_lock(&w->inbox_lock);
		struct kd_msgvec v = w->inbox;
		w->inbox = w->inbox_spare;
		w->inbox.len = 0;
		pthread_mutex_unlock(&w->inbox_lock);
		if (!v.len) {
			w->inbox_spare = v;
			return;
		}
		for (size_t i = 0; i < v.len; i++)
			handle_msg(w, &v.v[i]);
		__atomic_sub_fetch(&w->inbox_backlog, v.len, __ATOMIC_RELAXED);
		v.len = 0;
		w->inbox_spare = v;
	}
}

/* --- handshake (spec §5) --- */

int kd_derp_on_upgrade(struct kd_conn *c)
{
	struct kd_server *s = c->srv;
	uint8_t payload[DERP_SERVER_KEY_PAYLOAD];

	c->w->ctr.accepts++;
	memcpy(payload, DERP_MAGIC, DERP_MAGIC_LEN);
	memcpy(payload + DERP_MAGIC_LEN, s->cfg.keys.pub, DERP_KEY_LEN);
	c->state = KD_CONN_WAIT_CLIENT_INFO;
	kd_timer_arm(c->w->loop, &c->deadline, kd_loop_now(c->w->loop) + s->cfg.handshake_timeout_ms);
	return kd_conn_ctrl_frame(c, DERP_FRAME_SERVER_KEY, payload, sizeof(payload), NULL, 0);
}

static void hs_fail(struct kd_conn *c, enum kd_hs_error e, const char *why)
{
	c->w->ctr.handshake_errors[e]++;
	kd_conn_close(c, why);
}

/* Registers an admitted client and answers ServerInfo (spec §5.1 steps 4–5). */
static int finish_handshake(struct kd_conn *c)
{
	struct kd_server *s = c->srv;

	/* registered before ServerInfo so packets sent to it right away are kept */
	if (kd_registry_add(c) != 0) {
		kd_conn_close(c, "register failed");
		return -1;
	}
	c->state = KD_CONN_ACTIVE;
	kd_timer_disarm(c->w->loop, &c->deadline);
	kd_offload_policy_client(c);

	static const char info[] = "{\"version\":2}";
	uint8_t sealed[sizeof(info) - 1 + KD_BOX_OVERHEAD];
	if (kd_box_seal(sealed, sizeof(sealed), (const uint8_t *)info, sizeof(info) - 1, c->key,
			s->cfg.keys.priv) != 0) {
		kd_conn_close(c, "seal server info failed");
		return -1;
	}
	kd_conn_ctrl_frame(c, DERP_FRAME_SERVER_INFO, sealed, sizeof(sealed), NULL, 0);

	c->keepalive_jitter_ms = randombytes_uniform(5000);
	kd_timer_arm(c->w->loop, &c->keepalive,
		     kd_loop_now(c->w->loop) + s->cfg.keepalive_ms + c->keepalive_jitter_ms);
	return 0;
}

static int on_client_info(struct kd_conn *c, const uint8_t *p, uint32_t len)
{
	struct kd_server *s = c->srv;
	char msg[128];

	if (len < DERP_MIN_CLIENT_INFO + DERP_MAC_LEN) {
		hs_fail(c, KD_HS_SHORT_CLIENT_INFO, "receive client key: short client info");
		return -1;
	}
	if (sodium_is_zero(p, DERP_KEY_LEN)) {
		hs_fail(c, KD_HS_ZERO_KEY, "receive client key: zero client key");
		return -1;
	}
	size_t plain_len = len - DERP_KEY_LEN - KD_BOX_OVERHEAD;
	uint8_t *plain = malloc(plain_len + 1);
	if (!plain) {
		kd_conn_close(c, "out of memory");
		return -1;
	}
	if (kd_box_open(plain, plain_len, p + DERP_KEY_LEN, len - DERP_KEY_LEN, p, s->cfg.keys.priv) != 0) {
		char nk[KD_NODEKEY_STR_LEN];
		kd_key_nodekey_str(nk, p);
		snprintf(msg, sizeof(msg), "receive client key: msgbox: cannot open len=%u with client key %.20s…",
			 len, nk);
		free(plain);
		hs_fail(c, KD_HS_BOX_OPEN, msg);
		return -1;
	}
	struct kd_client_info ci;
	int err = kd_client_info_parse(plain, plain_len, &ci);
	free(plain);
	if (err) {
		hs_fail(c, KD_HS_BAD_JSON, "receive client key: msg: invalid ClientInfo JSON");
		return -1;
	}
	memcpy(c->key, p, DERP_KEY_LEN);
	c->can_ack_pings = ci.can_ack_pings;
	c->is_prober = ci.is_prober;
	pthread_mutex_lock(&s->reload_lock);
	c->can_mesh = ci.has_mesh_key && s->cfg.has_mesh_key &&
		      sodium_memcmp(ci.mesh_key, s->cfg.mesh_key, DERP_KEY_LEN) == 0;
	pthread_mutex_unlock(&s->reload_lock);
	sodium_memzero(&ci.mesh_key, sizeof(ci.mesh_key));

	/* mesh peers are not tailnet members: never sent to admission (spec §7.10) */
	if (s->adm && !c->can_mesh) {
		char ip[64];
		snprintf(ip, sizeof(ip), "%s", c->peer_str);
		char *colon = strrchr(ip, ':');
		if (colon)
			*colon = '\0';
		char *b = ip[0] == '[' ? ip + 1 : ip;
		if (b != ip && b[strlen(b) - 1] == ']')
			b[strlen(b) - 1] = '\0';
		c->state = KD_CONN_ADMISSION;
		kd_conn_update_events(c); /* not read: its bytes wait in the socket */
		kd_conn_ref(c);                   /* for the request in flight */
		if (kd_admission_submit(s->adm, c->w->admq, c->key, b, (uint64_t)(uintptr_t)c) != 0) {
			kd_conn_unref(c);
			bool open = kd_admission_fail_open(s->adm);
			kd_derp_admission_done(c, open, open ? NULL : "admission queue full, fail-closed");
		}
		return c->state == KD_CONN_CLOSED ? -1 : 0;
	}
	return finish_handshake(c);
}

void kd_derp_admission_done(struct kd_conn *c, bool allow, const char *reason)
{
	if (c->state != KD_CONN_ADMISSION)
		return;
	if (!allow) {
		char nk[KD_NODEKEY_STR_LEN], msg[300];
		kd_key_nodekey_str(nk, c->key);
		snprintf(msg, sizeof(msg), "client %s rejected: %s", nk, reason ? reason : "denied");
		hs_fail(c, KD_HS_REJECTED, msg);
		return;
	}
	if (finish_handshake(c) == 0) {
		kd_conn_update_events(c);
		kd_conn_resume_input(c);
	}
}

void kd_conn_on_keepalive(struct kd_timer *t)
{
	struct kd_conn *c = (struct kd_conn *)((char *)t - offsetof(struct kd_conn, keepalive));

	if (c->state != KD_CONN_ACTIVE)
		return;
	c->w->ctr.keepalives_sent++;
	kd_conn_ctrl_frame(c, DERP_FRAME_KEEP_ALIVE, NULL, 0, NULL, 0);
	/* a fixed period, not postponed by traffic (spec §6.6) */
	kd_timer_arm(c->w->loop, &c->keepalive,
		     kd_loop_now(c->w->loop) + c->srv->cfg.keepalive_ms + c->keepalive_jitter_ms);
}

/* --- frames from an established client --- */

static void send_not_here(struct kd_conn *c, const uint8_t dst[static DERP_KEY_LEN])
{
	uint64_t now = kd_loop_now(c->w->loop);
	uint64_t add = (now - c->nothere_last_ms) / 1000;

	if (add) {
		c->nothere_tokens = (uint32_t)(c->nothere_tokens + add > 3 ? 3 : c->nothere_tokens + add);
		c->nothere_last_ms += add * 1000;
	}
	if (!c->nothere_tokens)
		return;
	c->nothere_tokens--;
	uint8_t reason = DERP_PEER_GONE_NOT_HERE;
	c->w->ctr.peer_gone_not_here_frames++;
	kd_conn_ctrl_frame(c, DERP_FRAME_PEER_GONE, dst, DERP_KEY_LEN, &reason, 1);
}

/* A destination whose socket is full makes its sender pause, unless it has
 * been full for so long that it is stalled: then the queue head-drops. */
static void note_congestion(struct kd_conn *from, struct kd_conn *d)
{
	if (from->can_mesh)
		return;
	/* the destination's worker is behind: slow the sender down */
	if (d->w != from->w && from->w->outbox[d->w->idx].backlog_seen >= KD_INBOX_MAX / 2) {
		from->pause_after_frame = true;
		from->pause_reason = KD_PAUSE_WORKER_BEHIND;
		return;
	}
	if (!__atomic_load_n(&d->congested, __ATOMIC_ACQUIRE))
		return;
	uint64_t since = __atomic_load_n(&d->congested_since_ms, __ATOMIC_RELAXED);
	if (kd_loop_now(from->w->loop) - since < from->srv->cfg.congestion_patience_ms) {
		from->pause_after_frame = true;
		from->pause_reason = KD_PAUSE_DST_CONGESTED;
	}
}

/* Routes one packet from src to dst (spec §7.3). from is the connection it
 * arrived on: the sender for SendPacket, the mesh peer for ForwardPacket. */
static void route_packet(struct kd_conn *from, const uint8_t *src, const uint8_t *dst, const uint8_t *data,
			 size_t n, bool forwarded)
{
	struct kd_worker *w = from->w;
	uint32_t nconns = 0;
	bool disco = is_disco(data, n);
	struct kd_forwarder *fwd = NULL;
	struct kd_conn *d = kd_registry_lookup(from, dst, &nconns, &fwd);
	int kind = disco ? DERP_KIND_DISCO : DERP_KIND_OTHER;

	if (d && d->w != w) {
		/* another worker's connection: hand it over before the lock goes */
		struct kd_pkt *p = kd_pkt_frame(w, DERP_FRAME_RECV_PACKET, src, DERP_KEY_LEN, data, n);
		if (p) {
			p->kind = (uint8_t)kind;
			kd_worker_post(w, d, p, KD_MSG_PACKET);
		}
		note_congestion(from, d);
		kd_registry_lookup_done(from);
		if (!p)
			w->ctr.dropped[DERP_DROP_QUEUE_TAIL][kind]++;
		return;
	}
	kd_registry_lookup_done(from);
	if (d) {
		/* ours: it cannot be freed before this pass ends */
		struct kd_pkt *p = kd_pkt_frame(w, DERP_FRAME_RECV_PACKET, src, DERP_KEY_LEN, data, n);
		if (!p) {
			w->ctr.dropped[DERP_DROP_QUEUE_TAIL][kind]++;
			return;
		}
		p->kind = (uint8_t)kind;
		kd_derp_deliver(d, p);
		note_congestion(from, d);
		return;
	}
	/* one hop only: what a mesh peer forwarded is never forwarded again */
	if (fwd && !forwarded) {
		w->ctr.packets_forwarded_out++;
		if (fwd->forward(fwd, src, dst, data, n) != 0) {
			w->ctr.dropped[DERP_DROP_QUEUE_TAIL][kind]++;
			w->ctr.bytes_dropped[DERP_DROP_QUEUE_TAIL][kind] += n;
		}
		return;
	}
	enum derp_drop_reason r = nconns > 1 ? DERP_DROP_DUP_CLIENT
			      : forwarded  ? DERP_DROP_UNKNOWN_DEST_ON_FWD
					   : DERP_DROP_UNKNOWN_DEST;
	w->ctr.dropped[r][kind]++;
	w->ctr.bytes_dropped[r][kind] += n;
	if (disco && nconns <= 1)
		send_not_here(from, dst);
}

static int on_note_preferred(struct kd_conn *c, const uint8_t *p)
{
	bool pref = p[0] != 0;
	struct kd_server *s = c->srv;

	if (pref == c->preferred)
		return 0;
	c->preferred = pref;
	__atomic_add_fetch(&s->g_home, pref ? 1 : -1, __ATOMIC_RELAXED);
	if (kd_loop_now(c->w->loop) - c->connected_ms > 5000) {
		if (pref)
			c->w->ctr.home_moves_in++;
		else
			c->w->ctr.home_moves_out++;
	}
	return 0;
}

static int handle_frame(struct kd_conn *c, uint8_t type, const uint8_t *p, uint32_t len)
{
	struct kd_counters *ctr = &c->w->ctr;

	if (c->is_dup)
		kd_registry_note_activity(c);
	switch (type) {
	case DERP_FRAME_SEND_PACKET: {
		size_t n = len - DERP_KEY_LEN;
		const uint8_t *data = p + DERP_KEY_LEN;
		bool disco = is_disco(data, n);
		ctr->packets_received++;
		ctr->bytes_received += n;
		ctr->packets_received_kind[disco ? DERP_KIND_DISCO : DERP_KIND_OTHER]++;
		if (c->auto_watch)
			kd_offload_policy_note(c, n);
		route_packet(c, c->key, p, data, n, false);
		return 0;
	}
	case DERP_FRAME_FORWARD_PACKET: {
		if (!c->can_mesh)
			return kd_conn_close(c, "ForwardPacket: insufficient permissions"), -1;
		ctr->packets_forwarded_in++;
		route_packet(c, p, p + DERP_KEY_LEN, p + 2 * DERP_KEY_LEN, len - 2 * DERP_KEY_LEN, true);
		return 0;
	}
	case DERP_FRAME_NOTE_PREFERRED:
		return on_note_preferred(c, p);
	case DERP_FRAME_PING:
		ctr->got_ping++;
		/* one pending pong at a time; pings beyond it get none (spec §6.13) */
		if (c->pong_pending)
			return 0;
		c->pong_pending = true;
		memcpy(c->pong_data, p, DERP_PING_LEN);
		ctr->sent_pong++;
		kd_conn_ctrl_frame(c, DERP_FRAME_PONG, p, DERP_PING_LEN, NULL, 0);
		return 0;
	case DERP_FRAME_WATCH_CONNS:
		if (!c->can_mesh)
			return kd_conn_close(c, "WatchConns: insufficient permissions"), -1;
		kd_registry_watch(c);
		return 0;
	case DERP_FRAME_CLOSE_PEER:
		if (!c->can_mesh)
			return kd_conn_close(c, "ClosePeer: insufficient permissions"), -1;
		kd_registry_close_peer(c, p);
		return 0;
	default:
		/* Pong, KeepAlive, a second ClientInfo, future types: skipped */
		ctr->unknown_frames++;
		return 0;
	}
}

/* The reference's input limits (spec §4.3); NULL when flen is acceptable. */
static const char *frame_len_error(uint8_t type, uint32_t flen)
{
	switch (type) {
	case DERP_FRAME_SEND_PACKET:
		return flen < DERP_KEY_LEN || flen - DERP_KEY_LEN > DERP_MAX_PACKET ? "SendPacket of bad length" : NULL;
	case DERP_FRAME_FORWARD_PACKET:
		return flen < 2 * DERP_KEY_LEN || flen - 2 * DERP_KEY_LEN > DERP_MAX_PACKET
			       ? "ForwardPacket of bad length"
			       : NULL;
	case DERP_FRAME_NOTE_PREFERRED:
		return flen != 1 ? "NotePreferred of bad length" : NULL;
	case DERP_FRAME_PING:
		return flen < DERP_PING_LEN || flen > DERP_MAX_PING ? "Ping of bad length" : NULL;
	case DERP_FRAME_WATCH_CONNS:
		return flen != 0 ? "WatchConns of bad length" : NULL;
	case DERP_FRAME_CLOSE_PEER:
		return flen != DERP_KEY_LEN ? "ClosePeer of bad length" : NULL;
	default:
		/* kderp deviation (spec §13.5): unknown frames are capped */
		return flen > DERP_MAX_UNKNOWN_FRAME ? "unknown frame over 1 MiB" : NULL;
	}
}

ssize_t kd_derp_process(struct kd_conn *c, const uint8_t *buf, size_t len)
{
	size_t off = 0;

	if (c->skip) {
		size_t k = len < c->skip ? len : c->skip;
		c->skip -= (uint32_t)k;
		off += k;
	}
	while (c->state == KD_CONN_WAIT_CLIENT_INFO || c->state == KD_CONN_ACTIVE) {
		if (len - off < DERP_FRAME_HDR_LEN)
			break;
		const struct derp_frame_hdr *h = (const void *)(buf + off);
		uint32_t flen = derp_hdr_len(h);
		if (c->state == KD_CONN_WAIT_CLIENT_INFO) {
			if (h->type != DERP_FRAME_CLIENT_INFO) {
				char msg[80];
				snprintf(msg, sizeof(msg), "receive client key: bad frame type 0x%x, want 0x2", h->type);
				hs_fail(c, KD_HS_BAD_FRAME_TYPE, msg);
				return -1;
			}
			if (flen > DERP_MAX_CLIENT_INFO) {
				hs_fail(c, KD_HS_LONG_CLIENT_INFO, "receive client key: long client info");
				return -1;
			}
		} else {
			/* lengths are checked on the header, before buffering a payload */
			const char *bad = frame_len_error(h->type, flen);
			if (bad) {
				kd_conn_close(c, bad);
				return -1;
			}
			if (flen > DERP_KEY_LEN * 2 + DERP_MAX_PACKET) {
				/* a large unknown frame is discarded without buffering it */
				c->w->ctr.unknown_frames++;
				size_t have = len - off - DERP_FRAME_HDR_LEN;
				if (have >= flen) {
					off += DERP_FRAME_HDR_LEN + flen;
					continue;
				}
				c->skip = (uint32_t)(flen - have);
				return (ssize_t)len;
			}
		}
		if (len - off - DERP_FRAME_HDR_LEN < flen)
			break;
		const uint8_t *payload = buf + off + DERP_FRAME_HDR_LEN;
		off += DERP_FRAME_HDR_LEN + flen;
		int r = c->state == KD_CONN_WAIT_CLIENT_INFO ? on_client_info(c, payload, flen)
							     : handle_frame(c, h->type, payload, flen);
		if (r < 0 || c->state == KD_CONN_CLOSED)
			return -1;
		if (c->pause_after_frame) {
			/* the rest waits in c->in until the pause ends */
			c->pause_after_frame = false;
			kd_conn_pause(c, (enum kd_pause_reason)c->pause_reason);
			break;
		}
	}
	return (ssize_t)off;
}
