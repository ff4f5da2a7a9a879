// SPDX-License-Identifier: MIT
/* The regional mesh client (spec §8.3): per peer a watch connection whose
 * PeerPresent/PeerGone feed the server's forwarding table, and over which
 * packets for remote keys go out as ForwardPacket.
 *
 * Unlike derper, forwarding never writes from the caller's goroutine (here:
 * a server worker): workers queue into a bounded per-peer queue and wake the
 * mesh thread, which writes a whole queue per loop pass, corked. A link
 * that is down drops at once instead of dialling synchronously, so a dead
 * peer can never stall a worker. */
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "log.h"
#include "mesh_internal.h"

static const char *const kDropNames[DROP_MAX] = {"queue_full", "link_down", "write_timeout"};

static void mesh_wake(void *arg)
{
	struct kd_mesh *m = arg;

	for (size_t i = 0; i < m->npeers; i++)
		kd_mesh_peer_flush(&m->peers[i]);
}

static void *mesh_thread(void *arg)
{
	struct kd_mesh *m = arg;

	kd_loop_run(m->loop);
	return NULL;
}

int kd_mesh_start(struct kd_mesh **out, struct kd_server *s, const struct kd_mesh_opts *o)
{
	static struct kd_mesh_target targets[KD_MESH_MAX_PEERS];
	static pthread_mutex_t targets_lock = PTHREAD_MUTEX_INITIALIZER;
	struct kd_mesh *m;
	size_t n = 0;
	int err;

	*out = NULL;
	if (!s || !o || !o->mesh_key || !o->mesh_with)
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->srv = s;
	memcpy(m->mesh_key, o->mesh_key, DERP_KEY_LEN);
	memcpy(m->self_pub, kd_server_keys(s)->pub, DERP_KEY_LEN);
	m->insecure = o->insecure;
	if (o->ca_file && !(m->ca_file = strdup(o->ca_file))) {
		err = -ENOMEM;
		goto fail;
	}
	pthread_mutex_lock(&targets_lock);
	err = kd_mesh_parse_list(o->mesh_with, targets, KD_MESH_MAX_PEERS, &n);
	if (err) {
		pthread_mutex_unlock(&targets_lock);
		if (err == -EINVAL)
			pr_err("-mesh-with: entry %zu of \"%s\" is not host[:port][/dialhost] or http(s)://host[:port]",
			       n + 1, o->mesh_with);
		else
			pr_err("-mesh-with: more than %d peers", KD_MESH_MAX_PEERS);
		goto fail;
	}
	m->peers = calloc(n ? n : 1, sizeof(*m->peers));
	if (!m->peers) {
		pthread_mutex_unlock(&targets_lock);
		err = -ENOMEM;
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		if (o->self_hostname && !strcmp(targets[i].host, o->self_hostname)) {
			pr_info("mesh: skipping %s: that is us (-hostname)", targets[i].host);
			continue;
		}
		struct mesh_peer *p = &m->peers[m->npeers++];
		p->t = targets[i];
		p->m = m;
		p->fwd.forward = kd_mesh_peer_forward;
		p->fwd.name = p->t.host;
		p->st = PEER_WAIT;
		pthread_mutex_init(&p->lock, NULL);
		kd_keymap_init(&p->present);
		kd_timer_init(&p->timer, kd_mesh_peer_timer);
	}
	pthread_mutex_unlock(&targets_lock);

	err = kd_loop_new(&m->loop);
	if (err)
		goto fail;
	kd_loop_set_wake_cb(m->loop, mesh_wake, m);
	for (size_t i = 0; i < m->npeers; i++)
		kd_timer_arm(m->loop, &m->peers[i].timer, kd_now_ms());
	err = pthread_create(&m->thread, NULL, mesh_thread, m);
	if (err) {
		err = -err;
		goto fail;
	}
	m->started = true;
	pr_info("mesh: %zu peers configured", m->npeers);
	*out = m;
	return 0;
fail:
	kd_mesh_stop(m);
	return err;
}

void kd_mesh_stop(struct kd_mesh *m)
{
	if (!m)
		return;
	if (m->started) {
		kd_loop_stop(m->loop);
		pthread_join(m->thread, NULL);
	}
	for (size_t i = 0; i < m->npeers; i++) {
		struct mesh_peer *p = &m->peers[i];
		if (m->loop) {
			if (p->c)
				kd_io_del(m->loop, &p->io);
			kd_timer_disarm(m->loop, &p->timer);
		}
		kd_client_close(p->c);
		p->c = NULL;
		pthread_mutex_lock(&p->lock);
		p->up = false;
		kd_mesh_free_pkts(p->head);
		p->head = p->tail = NULL;
		pthread_mutex_unlock(&p->lock);
		const uint8_t *k;
		void *v;
		for (size_t j = 0; (j = kd_keymap_next(&p->present, j, &k, &v)) != 0;)
			kd_server_remove_forwarder(m->srv, k, &p->fwd);
		kd_keymap_free(&p->present);
		pthread_mutex_destroy(&p->lock);
	}
	kd_loop_free(m->loop);
	free(m->peers);
	free(m->ca_file);
	sodium_memzero(m->mesh_key, sizeof(m->mesh_key));
	free(m);
}

int kd_mesh_peers_up(const struct kd_mesh *m)
{
	return m ? __atomic_load_n(&m->peers_up, __ATOMIC_RELAXED) : 0;
}

#define APPEND(...)                                                         \
	do {                                                                \
		int w_ = snprintf(out + n, cap - n, __VA_ARGS__);           \
		if (w_ < 0 || (size_t)w_ >= cap - n)                        \
			return -ENOSPC;                                     \
		n += (size_t)w_;                                            \
	} while (0)

int kd_mesh_metrics(const struct kd_mesh *m, char *out, size_t cap)
{
	size_t n = 0;

	if (!m)
		return 0;
	if (cap == 0)
		return -ENOSPC;
	out[0] = '\0';
	APPEND("# TYPE kderp_mesh_peers_up gauge\nkderp_mesh_peers_up %d\n", kd_mesh_peers_up(m));
	APPEND("# TYPE kderp_mesh_peer_up gauge\n");
	for (size_t i = 0; i < m->npeers; i++) {
		struct mesh_peer *p = &m->peers[i];
		pthread_mutex_lock(&p->lock);
		bool up = p->up;
		pthread_mutex_unlock(&p->lock);
		/* hosts are checked by the parser: no quote or backslash to escape */
		APPEND("kderp_mesh_peer_up{peer=\"%s\"} %d\n", p->t.host, up ? 1 : 0);
	}
	APPEND("# TYPE kderp_mesh_forwarded_packets_total counter\nkderp_mesh_forwarded_packets_total %llu\n",
	       (unsigned long long)__atomic_load_n(&m->fwd_packets, __ATOMIC_RELAXED));
	APPEND("# TYPE kderp_mesh_forwarded_bytes_total counter\nkderp_mesh_forwarded_bytes_total %llu\n",
	       (unsigned long long)__atomic_load_n(&m->fwd_bytes, __ATOMIC_RELAXED));
	APPEND("# TYPE kderp_mesh_forward_drops_total counter\n");
	for (int r = 0; r < DROP_MAX; r++)
		APPEND("kderp_mesh_forward_drops_total{reason=\"%s\"} %llu\n", kDropNames[r],
		       (unsigned long long)__atomic_load_n(&m->drops[r], __ATOMIC_RELAXED));
	APPEND("# TYPE kderp_mesh_reconnects_total counter\nkderp_mesh_reconnects_total %llu\n",
	       (unsigned long long)__atomic_load_n(&m->reconnects, __ATOMIC_RELAXED));
	return (int)n;
}
