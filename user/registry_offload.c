// SPDX-License-Identifier: MIT
/* The registry's side of the kernel plane: which connection of a key the
 * kernel routes to, and which connections it relays for. Runs under
 * reg_lock (write), so it sees the same active connection as userspace
 * routing; the map updates take offload_lock because kd_conn_close removes
 * sockets without reg_lock. A connection's fd is valid here: it is closed
 * only after kd_registry_remove. */
#include <errno.h>
#include <string.h>

#include "server_internal.h"

/* Spec §7.2: duplicates stay open and readable; the newest speaker is the
 * active one. The kernel cannot see who speaks, so while a key has more
 * than one connection none of them is relayed by the kernel (their frames
 * reach userspace whole and in order, and kd_registry_note_activity sees
 * them); the key's route points at the active connection when it is
 * offloaded, else it is deleted and SendPackets for the key are passed to
 * userspace, which queues them for the active one. Frames already queued
 * toward the connection that lost the route are delivered to it: the
 * route map has no programs, so nothing else changes for that socket. */
void kd_registry_offload_sync(struct kd_server *s, struct kd_client_set *set)
{
	struct kd_offload *o = s->offload;

	if (!o || !set || !set->n)
		return;
	bool dup = set->n > 1;
	struct kd_conn *want = set->active && set->active->offload_cookie ? set->active : NULL;

	pthread_mutex_lock(&s->offload_lock);
	for (uint32_t i = 0; i < set->n; i++) {
		struct kd_conn *c = set->conns[i];
		if (!c->offload_cookie || c->offload_relay == !dup)
			continue;
		if (kd_offload_set_relay(o, c->io.fd, !dup) == 0)
			c->offload_relay = !dup;
		else
			pr_warn("offload %s: set relay %d failed", c->peer_str, !dup);
	}
	if (want != set->routed) {
		const uint8_t *key = set->conns[0]->key;
		int err = kd_offload_route(o, key, want ? want->io.fd : -1);
		if (err)
			pr_warn("offload: route for %s: %s", set->conns[0]->peer_str, strerror(-err));
		else
			set->routed = want;
	}
	pthread_mutex_unlock(&s->offload_lock);
}

int kd_registry_offload(struct kd_conn *c)
{
	struct kd_server *s = c->srv;
	uint64_t cookie = 0;
	int err;

	kd_reg_wrlock(s);
	struct kd_client_set *set = kd_keymap_get(&s->reg, c->key);
	if (!set) {
		kd_reg_wrunlock(s);
		return -ENOENT;
	}
	bool relay = set->n == 1;
	pthread_mutex_lock(&s->offload_lock);
	/* routed by the sync below, once the registry knows the cookie */
	err = kd_offload_attach(s->offload, c->io.fd, c->key, false, relay, &cookie);
	pthread_mutex_unlock(&s->offload_lock);
	if (!err) {
		c->offload_cookie = cookie;
		c->offload_relay = relay;
		kd_registry_offload_sync(s, set);
	}
	kd_reg_wrunlock(s);
	return err;
}
