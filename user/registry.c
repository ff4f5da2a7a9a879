// SPDX-License-Identifier: MIT
/* The client registry (spec §7.2): key -> live connections with one active,
 * duplicate handling ("last writer is active"), PeerGone subscriptions
 * (§7.6) and mesh watchers (§8.4). Everything here runs under reg_lock;
 * frames for other connections leave as messages to their workers. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "server_internal.h"

static const char kHealthDup[] = "this node key is connected more than once to this DERP server; "
				 "only the most recent sender receives packets";

static int ptrvec_add(struct kd_conn ***v, uint32_t *n, uint32_t *cap, struct kd_conn *c)
{
	if (*n == *cap) {
		uint32_t nc = *cap ? *cap * 2 : 4;
		struct kd_conn **nv = realloc(*v, nc * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		*v = nv;
		*cap = nc;
	}
	(*v)[(*n)++] = c;
	return 0;
}

static bool ptrvec_del(struct kd_conn **v, uint32_t *n, struct kd_conn *c)
{
	for (uint32_t i = 0; i < *n; i++) {
		if (v[i] == c) {
			memmove(&v[i], &v[i + 1], (*n - i - 1) * sizeof(*v));
			(*n)--;
			return true;
		}
	}
	return false;
}

static uint8_t present_flags(const struct kd_conn *c)
{
	uint8_t f = 0;
	if (c->can_mesh)
		f |= DERP_PEER_PRESENT_MESH_PEER;
	if (c->is_prober)
		f |= DERP_PEER_PRESENT_PROBER;
	if (c->not_ideal)
		f |= DERP_PEER_PRESENT_NOT_IDEAL;
	return f ? f : DERP_PEER_PRESENT_REGULAR;
}

static struct kd_pkt *peer_present_frame(const struct kd_conn *c)
{
	uint8_t body[DERP_PEER_PRESENT_LEN] = {0};

	memcpy(body, c->key, DERP_KEY_LEN);
	if (c->peer.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)&c->peer;
		body[DERP_KEY_LEN + 10] = 0xff;
		body[DERP_KEY_LEN + 11] = 0xff;
		memcpy(body + DERP_KEY_LEN + 12, &a->sin_addr, 4);
		memcpy(body + DERP_KEY_LEN + 16, &a->sin_port, 2);
	} else if (c->peer.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)&c->peer;
		memcpy(body + DERP_KEY_LEN, &a->sin6_addr, 16);
		memcpy(body + DERP_KEY_LEN + 16, &a->sin6_port, 2);
	}
	body[DERP_KEY_LEN + 18] = present_flags(c);
	return kd_pkt_frame(NULL, DERP_FRAME_PEER_PRESENT, body, sizeof(body), NULL, 0);
}

static void post_frame(struct kd_conn *from, struct kd_conn *to, struct kd_pkt *p, enum kd_msg_op op)
{
	if (!p && op != KD_MSG_CLOSE)
		return;
	/* called with reg_lock held: a same-worker delivery would re-enter the
	 * registry, so everything goes through the outbox/inbox */
	struct kd_worker *w = from ? from->w : NULL;
	if (w && to->w == w) {
		struct kd_msg m = {.dst = to, .pkt = p, .op = (uint8_t)op, .owns_ref = 1};
		kd_conn_ref(to);
		struct kd_msgvec *ob = &w->outbox[w->idx];
		if (ob->len == ob->cap) {
			size_t cap = ob->cap ? ob->cap * 2 : 64;
			struct kd_msg *nv = realloc(ob->v, cap * sizeof(*nv));
			if (!nv) {
				free(p);
				kd_conn_unref(to);
				return;
			}
			ob->v = nv;
			ob->cap = cap;
		}
		ob->v[ob->len++] = m;
		return;
	}
	kd_worker_post(w, to, p, op);
}

static void send_health(struct kd_conn *from, struct kd_conn *to, const char *text)
{
	post_frame(from, to, kd_pkt_frame(NULL, DERP_FRAME_HEALTH, text, strlen(text), NULL, 0), KD_MSG_CTRL);
	from->w->ctr.health_frames++;
}

int kd_registry_add(struct kd_conn *c)
{
	struct kd_server *s = c->srv;
	int err = 0;

	kd_reg_wrlock(s);
	struct kd_client_set *set = kd_keymap_get(&s->reg, c->key);
	if (!set) {
		set = calloc(1, sizeof(*set));
		if (!set || kd_keymap_put(&s->reg, c->key, set) != 0) {
			free(set);
			err = -ENOMEM;
			goto out;
		}
		__atomic_add_fetch(&s->g_clients, 1, __ATOMIC_RELAXED);
		if (kd_keymap_get(&s->fwd, c->key))
			__atomic_sub_fetch(&s->g_remote_only, 1, __ATOMIC_RELAXED);
	}
	if (ptrvec_add(&set->conns, &set->n, &set->cap, c) != 0) {
		err = -ENOMEM;
		goto out;
	}
	kd_conn_ref(c); /* the registry's */
	c->registered = true;
	if (set->n == 2) {
		__atomic_add_fetch(&s->g_dup_keys, 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&s->g_dup_conns, 2, __ATOMIC_RELAXED);
	} else if (set->n > 2) {
		__atomic_add_fetch(&s->g_dup_conns, 1, __ATOMIC_RELAXED);
	}
	if (set->n >= 2) {
		__atomic_add_fetch(&s->total_dup_client_conns, 1, __ATOMIC_RELAXED);
		/* kderp tells duplicates why they may get nothing (spec §6.15) */
		for (uint32_t i = 0; i < set->n; i++) {
			if (!set->conns[i]->is_dup || set->conns[i] == c)
				send_health(c, set->conns[i], kHealthDup);
			set->conns[i]->is_dup = true;
		}
	}
	set->active = c; /* the newest connection is active (spec §7.2 step 4) */
	kd_registry_offload_sync(s, set);
	__atomic_add_fetch(&s->g_conns, 1, __ATOMIC_RELAXED);
	if (c->not_ideal)
		__atomic_add_fetch(&s->g_notideal, 1, __ATOMIC_RELAXED);
	for (uint32_t i = 0; i < s->nwatchers; i++)
		post_frame(c, s->watchers[i], peer_present_frame(c), KD_MSG_CTRL);
out:
	kd_reg_wrunlock(s);
	return err;
}

/* Called under reg_lock when src is gone from the region. from is the
 * connection whose worker we run on, or NULL off the workers (mesh). */
static void fire_peer_gone(struct kd_server *s, struct kd_conn *from, const uint8_t src[static DERP_KEY_LEN])
{
	struct kd_subs *subs = kd_keymap_del(&s->subs, src);
	uint8_t reason = DERP_PEER_GONE_DISCONNECTED;

	if (s->offload) {
		/* Receivers the kernel relayed src's frames to are in relay_pairs
		 * (one lookup per offloaded key, deleted as read); those that are
		 * not also userspace subscribers hear from here. */
		const uint8_t *k;
		void *v;
		for (size_t i = 0; (i = kd_keymap_next(&s->reg, i, &k, &v)) != 0;) {
			struct kd_client_set *set = v;
			uint64_t cookie;
			bool any = false;
			for (uint32_t j = 0; j < set->n; j++)
				any |= set->conns[j]->offload_cookie != 0;
			if (!any || kd_offload_pair_take(s->offload, src, k, &cookie) != 1)
				continue;
			for (uint32_t j = 0; j < set->n; j++) {
				struct kd_conn *to = set->conns[j];
				bool subscribed = false;
				if (to->offload_cookie != cookie || to == from)
					continue;
				for (uint32_t q = 0; subs && q < subs->n; q++)
					subscribed |= subs->conns[q] == to;
				if (!subscribed)
					post_frame(from, to,
						   kd_pkt_frame(NULL, DERP_FRAME_PEER_GONE, src, DERP_KEY_LEN, &reason, 1),
						   KD_MSG_PEER_GONE);
			}
		}
	}
	if (!subs)
		return;
	for (uint32_t i = 0; i < subs->n; i++) {
		struct kd_conn *to = subs->conns[i];
		if (to == from)
			continue;
		post_frame(from, to, kd_pkt_frame(NULL, DERP_FRAME_PEER_GONE, src, DERP_KEY_LEN, &reason, 1),
			   KD_MSG_PEER_GONE);
	}
	free(subs->conns);
	free(subs);
}

void kd_registry_remove(struct kd_conn *c)
{
	struct kd_server *s = c->srv;
	uint8_t reason = DERP_PEER_GONE_DISCONNECTED;

	kd_reg_wrlock(s);
	struct kd_client_set *set = kd_keymap_get(&s->reg, c->key);
	if (!set || !ptrvec_del(set->conns, &set->n, c)) {
		kd_reg_wrunlock(s);
		return;
	}
	c->registered = false;
	__atomic_sub_fetch(&s->g_conns, 1, __ATOMIC_RELAXED);
	if (c->not_ideal)
		__atomic_sub_fetch(&s->g_notideal, 1, __ATOMIC_RELAXED);
	if (c->preferred)
		__atomic_sub_fetch(&s->g_home, 1, __ATOMIC_RELAXED);
	if (c->is_watcher && ptrvec_del(s->watchers, &s->nwatchers, c)) {
		__atomic_sub_fetch(&s->g_watchers, 1, __ATOMIC_RELAXED);
		kd_conn_unref(c);
	}
	if (set->n == 0) {
		kd_keymap_del(&s->reg, c->key);
		free(set->conns);
		free(set);
		__atomic_sub_fetch(&s->g_clients, 1, __ATOMIC_RELAXED);
		/* a key still reachable through a mesh peer has not left the region */
		if (kd_keymap_get(&s->fwd, c->key))
			__atomic_add_fetch(&s->g_remote_only, 1, __ATOMIC_RELAXED);
		else
			fire_peer_gone(s, c, c->key);
		for (uint32_t i = 0; i < s->nwatchers; i++)
			post_frame(c, s->watchers[i],
				   kd_pkt_frame(NULL, DERP_FRAME_PEER_GONE, c->key, DERP_KEY_LEN, &reason, 1), KD_MSG_CTRL);
	} else {
		__atomic_sub_fetch(&s->g_dup_conns, 1, __ATOMIC_RELAXED);
		if (set->n == 1) {
			struct kd_conn *last = set->conns[0];
			__atomic_sub_fetch(&s->g_dup_conns, 1, __ATOMIC_RELAXED);
			__atomic_sub_fetch(&s->g_dup_keys, 1, __ATOMIC_RELAXED);
			last->is_dup = false;
			send_health(c, last, "");
		}
		/* the most recent speaker among the rest takes over */
		set->active = set->conns[set->n - 1];
		kd_registry_offload_sync(s, set);
	}
	kd_reg_wrunlock(s);
	kd_conn_unref(c); /* the registry's */
}

void kd_registry_note_activity(struct kd_conn *c)
{
	struct kd_server *s = c->srv;

	kd_reg_wrlock(s);
	struct kd_client_set *set = kd_keymap_get(&s->reg, c->key);
	if (set && set->active != c && ptrvec_del(set->conns, &set->n, c)) {
		set->conns[set->n++] = c; /* cannot fail: the slot was just freed */
		set->active = c;
		kd_registry_offload_sync(s, set);
	}
	kd_reg_wrunlock(s);
}

void kd_reg_wrlock(struct kd_server *s)
{
	for (int i = 0; i <= s->nworkers; i++)
		pthread_rwlock_wrlock(&s->reg_locks[i].l);
}

void kd_reg_wrunlock(struct kd_server *s)
{
	/* every writer changes something routing depends on */
	__atomic_add_fetch(&s->reg_gen, 1, __ATOMIC_RELAXED);
	for (int i = s->nworkers; i >= 0; i--)
		pthread_rwlock_unlock(&s->reg_locks[i].l);
}

struct kd_conn *kd_registry_lookup(struct kd_conn *from, const uint8_t key[static DERP_KEY_LEN], uint32_t *n_conns,
				   struct kd_forwarder **fwd)
{
	struct kd_server *s = from->srv;
	pthread_rwlock_t *l = &s->reg_locks[from->w->idx].l;
	struct kd_conn *d = NULL;

	*fwd = NULL;
	pthread_rwlock_rdlock(l);
	uint64_t gen = __atomic_load_n(&s->reg_gen, __ATOMIC_RELAXED);
	/* the same destination as last time and no registry change since: the
	 * cached answer still holds, and its connection is still registered */
	if (from->lk_gen == gen && gen && !memcmp(from->lk_key, key, DERP_KEY_LEN)) {
		d = from->lk_conn;
		*fwd = from->lk_fwd;
		*n_conns = from->lk_n;
	} else {
		struct kd_client_set *set = kd_keymap_get(&s->reg, key);
		*n_conns = set ? set->n : 0;
		if (set && set->active) {
			d = set->active;
		} else if (!set && s->fwd.len) {
			/* local connections always win; the mesh only for keys with none */
			struct kd_fwd_entry *e = kd_keymap_get(&s->fwd, key);
			if (e && e->n)
				*fwd = e->f[0]; /* forwarders live as long as the server */
		}
		memcpy(from->lk_key, key, DERP_KEY_LEN);
		from->lk_conn = d;
		from->lk_fwd = *fwd;
		from->lk_n = *n_conns;
		from->lk_gen = gen;
	}
	return d; /* with the read lock held: see kd_registry_lookup_done */
}

void kd_registry_lookup_done(struct kd_conn *from)
{
	pthread_rwlock_unlock(&from->srv->reg_locks[from->w->idx].l);
}

int kd_server_add_forwarder(struct kd_server *s, const uint8_t key[DERP_KEY_LEN], struct kd_forwarder *f)
{
	int err = 0;

	kd_reg_wrlock(s);
	struct kd_fwd_entry *e = kd_keymap_get(&s->fwd, key);
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e || kd_keymap_put(&s->fwd, key, e) != 0) {
			free(e);
			err = -ENOMEM;
			goto out;
		}
		if (!kd_keymap_get(&s->reg, key))
			__atomic_add_fetch(&s->g_remote_only, 1, __ATOMIC_RELAXED);
	}
	for (uint32_t i = 0; i < e->n; i++)
		if (e->f[i] == f)
			goto out;
	if (e->n == e->cap) {
		uint32_t cap = e->cap ? e->cap * 2 : 2;
		struct kd_forwarder **nf = realloc(e->f, cap * sizeof(*nf));
		if (!nf) {
			err = -ENOMEM;
			goto out;
		}
		e->f = nf;
		e->cap = cap;
	}
	e->f[e->n++] = f;
	if (e->n == 2)
		s->multiforwarder_created++;
out:
	kd_reg_wrunlock(s);
	return err;
}

void kd_server_remove_forwarder(struct kd_server *s, const uint8_t key[DERP_KEY_LEN], struct kd_forwarder *f)
{
	kd_reg_wrlock(s);
	struct kd_fwd_entry *e = kd_keymap_get(&s->fwd, key);
	uint32_t i = 0;
	while (e && i < e->n && e->f[i] != f)
		i++;
	if (!e || i == e->n) {
		s->forwarder_delete_other++;
		goto out;
	}
	memmove(&e->f[i], &e->f[i + 1], (e->n - i - 1) * sizeof(*e->f));
	e->n--;
	if (e->n == 1)
		s->multiforwarder_deleted++;
	if (e->n == 0) {
		kd_keymap_del(&s->fwd, key);
		free(e->f);
		free(e);
		if (!kd_keymap_get(&s->reg, key)) {
			__atomic_sub_fetch(&s->g_remote_only, 1, __ATOMIC_RELAXED);
			fire_peer_gone(s, NULL, key);
		}
	}
out:
	kd_reg_wrunlock(s);
}

void kd_registry_subscribe(struct kd_conn *c, const uint8_t src[static DERP_KEY_LEN])
{
	struct kd_server *s = c->srv;

	kd_reg_wrlock(s);
	struct kd_subs *subs = kd_keymap_get(&s->subs, src);
	if (!subs) {
		subs = calloc(1, sizeof(*subs));
		if (!subs || kd_keymap_put(&s->subs, src, subs) != 0) {
			free(subs);
			goto out;
		}
	}
	ptrvec_add(&subs->conns, &subs->n, &subs->cap, c);
out:
	kd_reg_wrunlock(s);
}

void kd_registry_unsubscribe_all(struct kd_conn *c)
{
	struct kd_server *s = c->srv;
	const uint8_t *k;
	void *v;

	if (!c->saw_src.len)
		return;
	kd_reg_wrlock(s);
	for (size_t i = 0; (i = kd_keymap_next(&c->saw_src, i, &k, &v)) != 0;) {
		struct kd_subs *subs = kd_keymap_get(&s->subs, k);
		if (!subs)
			continue;
		ptrvec_del(subs->conns, &subs->n, c);
		if (!subs->n) {
			kd_keymap_del(&s->subs, k);
			free(subs->conns);
			free(subs);
		}
	}
	kd_reg_wrunlock(s);
}

void kd_registry_watch(struct kd_conn *c)
{
	struct kd_server *s = c->srv;
	const uint8_t *k;
	void *v;

	/* a server that dialled itself watches nothing (spec §6.11) */
	if (memcmp(c->key, s->cfg.keys.pub, DERP_KEY_LEN) == 0)
		return;
	kd_reg_wrlock(s);
	if (!c->is_watcher && ptrvec_add(&s->watchers, &s->nwatchers, &s->watchers_cap, c) == 0) {
		c->is_watcher = true;
		kd_conn_ref(c);
		__atomic_add_fetch(&s->g_watchers, 1, __ATOMIC_RELAXED);
	}
	for (size_t i = 0; (i = kd_keymap_next(&s->reg, i, &k, &v)) != 0;) {
		struct kd_client_set *set = v;
		if (set->active)
			post_frame(c, c, peer_present_frame(set->active), KD_MSG_CTRL);
	}
	c->w->ctr.watch_updates++;
	kd_reg_wrunlock(s);
}

void kd_registry_close_peer(struct kd_conn *c, const uint8_t key[static DERP_KEY_LEN])
{
	struct kd_server *s = c->srv;

	kd_reg_wrlock(s);
	struct kd_client_set *set = kd_keymap_get(&s->reg, key);
	if (!set) {
		char sk[KD_KEY_SHORT_LEN];
		kd_key_short(sk, key);
		pr_info("frameClosePeer failed to find peer %s", sk);
	}
	for (uint32_t i = 0; set && i < set->n; i++)
		post_frame(c, set->conns[i], NULL, KD_MSG_CLOSE);
	kd_reg_wrunlock(s);
}

bool kd_registry_check(struct kd_server *s, char *problems, size_t cap)
{
	const uint8_t *k;
	void *v;
	size_t used = 0;
	int64_t conns = 0;

	problems[0] = '\0';
	kd_reg_wrlock(s);
	for (size_t i = 0; (i = kd_keymap_next(&s->reg, i, &k, &v)) != 0;) {
		struct kd_client_set *set = v;
		char sk[KD_KEY_SHORT_LEN];
		bool found = set->active == NULL;
		conns += set->n;
		for (uint32_t j = 0; j < set->n; j++)
			found |= set->conns[j] == set->active;
		kd_key_short(sk, k);
		if (set->n == 0 && used < cap)
			used += (size_t)snprintf(problems + used, cap - used, "%skey %s has no connections",
						 used ? ", " : "", sk);
		if (!found && used < cap)
			used += (size_t)snprintf(problems + used, cap - used, "%skey %s: active is not live",
						 used ? ", " : "", sk);
	}
	int64_t g = __atomic_load_n(&s->g_conns, __ATOMIC_RELAXED);
	if (g != conns && used < cap)
		used += (size_t)snprintf(problems + used, cap - used, "%scurrent_connections %lld != %lld registered",
					 used ? ", " : "", (long long)g, (long long)conns);
	kd_reg_wrunlock(s);
	return used == 0;
}

/* /debug/clients: one JSON object per line per connection. Read under the
 * write lock: the fields are owned by other workers, and a snapshot that
 * is a few packets stale is all an operator needs. */
int kd_registry_dump(struct kd_server *s, char **out, size_t *len)
{
	const uint8_t *k;
	void *v;
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);
	uint64_t now = kd_now_ms();

	if (!buf)
		return -ENOMEM;
	kd_reg_wrlock(s);
	for (size_t i = 0; (i = kd_keymap_next(&s->reg, i, &k, &v)) != 0;) {
		struct kd_client_set *set = v;
		for (uint32_t j = 0; j < set->n; j++) {
			struct kd_conn *c = set->conns[j];
			char nk[KD_NODEKEY_STR_LEN];
			kd_key_nodekey_str(nk, k);
			if (cap - n < 512) {
				char *nb = realloc(buf, cap * 2);
				if (!nb)
					break;
				buf = nb;
				cap *= 2;
			}
			n += (size_t)snprintf(buf + n, cap - n,
					      "{\"key\":\"%s\",\"addr\":\"%s\",\"age_s\":%llu,\"active\":%s,"
					      "\"dup\":%s,\"preferred\":%s,\"mesh\":%s,\"watcher\":%s,\"prober\":%s,"
					      "\"transport\":\"%s\",\"plane\":\"%s\",\"auto\":\"%s\",\"worker\":%d}\n",
					      nk, c->peer_str, (unsigned long long)((now - c->connected_ms) / 1000),
					      set->active == c ? "true" : "false", c->is_dup ? "true" : "false",
					      c->preferred ? "true" : "false", c->can_mesh ? "true" : "false",
					      c->is_watcher ? "true" : "false", c->is_prober ? "true" : "false",
					      c->ssl ? "tls" : c->ws ? "websocket" : "tcp",
					      c->offloaded ? "kernel" : "userspace",
					      c->auto_decision ? kd_auto_decision_name((enum kd_auto_decision)(c->auto_decision - 1))
					      : c->auto_watch ? "watching" : "-",
					      c->w->idx);
		}
	}
	kd_reg_wrunlock(s);
	*out = buf;
	*len = n;
	return 0;
}
