/* SPDX-License-Identifier: MIT */
/* Shared between mesh.c (thread, lifecycle, metrics) and mesh_peer.c (one
 * peer's link state machine and the workers' queue). Not for other users. */
#ifndef KD_MESH_INTERNAL_H
#define KD_MESH_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keymap.h"
#include "loop.h"
#include "mesh.h"
#include "server.h"

struct kd_client;

struct mesh_pkt {
	struct mesh_pkt *next;
	uint8_t src[DERP_KEY_LEN], dst[DERP_KEY_LEN];
	uint32_t len;
	uint8_t data[];
};

enum peer_state { PEER_WAIT, PEER_CONNECTING, PEER_UP, PEER_SELF };

enum drop_reason { DROP_QUEUE_FULL, DROP_LINK_DOWN, DROP_WRITE_TIMEOUT, DROP_MAX };

struct mesh_peer {
	struct kd_forwarder fwd; /* first: the registry hands this pointer back */
	struct kd_mesh *m;
	struct kd_mesh_target t;
	enum peer_state st;
	struct kd_client *c;
	struct kd_io io;
	struct kd_timer timer;
	struct kd_keymap present; /* keys this peer announced; mesh thread only */
	uint64_t up_since_ms, last_progress_ms, last_present_ms, status_ms;
	size_t status_count;
	bool flood_done, ever_up;
	int fails;               /* consecutive connect failures, for quieter logs */
	/* the workers' side */
	pthread_mutex_t lock;
	struct mesh_pkt *head, *tail;
	uint32_t qn;
	size_t qbytes;
	bool up;
};

struct kd_mesh {
	struct kd_server *srv;
	struct kd_loop *loop;
	pthread_t thread;
	bool started;
	uint8_t mesh_key[DERP_KEY_LEN];
	uint8_t self_pub[DERP_KEY_LEN];
	char *ca_file;
	bool insecure;
	size_t npeers;
	struct mesh_peer *peers;
	/* atomics */
	uint64_t fwd_packets, fwd_bytes, reconnects, drops[DROP_MAX];
	int peers_up;
};

/* kd_forwarder.forward of every peer: called by the server's workers. */
int kd_mesh_peer_forward(struct kd_forwarder *f, const uint8_t src[DERP_KEY_LEN], const uint8_t dst[DERP_KEY_LEN],
			 const uint8_t *data, size_t len);
/* The peer's timer: dial, handshake deadline, or the up-link tick. */
void kd_mesh_peer_timer(struct kd_timer *t);
/* Writes whatever the workers queued (mesh thread). */
void kd_mesh_peer_flush(struct mesh_peer *p);
/* Frees a queue; returns how many packets it held. */
uint64_t kd_mesh_free_pkts(struct mesh_pkt *pk);

#endif
