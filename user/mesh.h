/* SPDX-License-Identifier: MIT */
/* The regional mesh client (spec §8.2, §8.3): one DERP connection per
 * configured peer, logged in with the server's own key and the mesh key,
 * watching the peer's connections and forwarding packets to it one hop.
 *
 * One thread with its own kd_loop serves every peer. The server's workers
 * hand packets over through kd_forwarder.forward(), which only queues
 * (bounded per peer) and wakes that thread. */
#ifndef KD_MESH_H
#define KD_MESH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "derp_wire.h"

struct kd_server;
struct kd_mesh;

struct kd_mesh_opts {
	const char *mesh_with;     /* "host1,host2/dialhost,http://10.0.0.2:3340" (§8.2 + kderp's http://) */
	const uint8_t *mesh_key;   /* 32 bytes, required */
	const char *self_hostname; /* -hostname: an entry written exactly like it is skipped; NULL = none */
	const char *ca_file;       /* https peers: CA bundle; NULL = system roots */
	bool insecure;             /* https peers: no certificate verification */
};

/* Per-peer queue bounds: beyond either, forward() refuses with -ENOBUFS. */
#define KD_MESH_QUEUE_PACKETS 1024u
#define KD_MESH_QUEUE_BYTES (4u << 20)
/* Spec §8.3: reconnect delay after a broken link or a failed connect, and
 * how long a write may make no progress before the link is closed. */
#define KD_MESH_RETRY_MS 5000u
#define KD_MESH_WRITE_STALL_MS 5000u

/* Starts the mesh thread; peers connect in the background. 0 or -errno
 * (-EINVAL: bad list or missing key; *out NULL). */
int kd_mesh_start(struct kd_mesh **out, struct kd_server *s, const struct kd_mesh_opts *o);
/* NULL-safe: closes the links, removes every forwarder it added, joins.
 * The server's workers may call a forwarder they looked up just before its
 * removal, so stop the server's workers (kd_server_stop) first when the
 * server is still running; the registry must still exist (before
 * kd_server_free). */
void kd_mesh_stop(struct kd_mesh *m);
/* Prometheus text; bytes written or -ENOSPC. Thread safe. */
int kd_mesh_metrics(const struct kd_mesh *m, char *out, size_t cap);
/* Peers whose watch connection is up (tests, status). Thread safe. */
int kd_mesh_peers_up(const struct kd_mesh *m);

/* ---- pure parser of -mesh-with ------------------------------------------ */

#define KD_MESH_MAX_PEERS 64

struct kd_mesh_target {
	char host[256];    /* as written, with :port if any: URL host, SNI, label */
	char url[300];     /* http(s)://host/derp */
	char dial[256];    /* dialhost (no port) or "" to dial the URL host */
	uint16_t port;     /* the port dialled: from host, else 443 / 80 */
	bool plain_http;   /* kderp: "http://" entry */
};

/* Splits a comma-separated list: host, host:port, [v6]:port, host/dialhost,
 * https://host..., http://host:port... (kderp, trusted networks only).
 * Empty entries are skipped. 0 with *n entries in out[0..cap); -EINVAL with
 * *n = index of the bad entry; -E2BIG when more than cap entries. */
int kd_mesh_parse_list(const char *mesh_with, struct kd_mesh_target *out, size_t cap, size_t *n);

#endif
