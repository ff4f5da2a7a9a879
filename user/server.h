/* SPDX-License-Identifier: MIT */
/* The DERP server: listeners, workers, registry. main.c fills a config from
 * flags; tests build one in-process on an ephemeral loopback port. */
#ifndef KD_SERVER_H
#define KD_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "key.h"

struct kd_server_config {
	const char *addr;            /* -a: ":443", "127.0.0.1:0", "[::1]:3340" */
	bool dev;
	bool derp_enabled;           /* -derp */
	const char *home;            /* -home */
	int workers;                 /* 0 = one per core */
	uint32_t queue_depth;        /* per-client send queue depth, 32 */
	uint32_t tcp_keepalive_s;    /* 600 */
	uint32_t tcp_user_timeout_ms;/* 15000 */
	uint32_t write_timeout_ms;   /* 2000, 0 = none (mesh peers: 30000) */
	/* how long a destination may refuse writes while its senders are
	 * paused for it; past that its queue head-drops (the reference never
	 * pauses senders: it drops at once) */
	uint32_t congestion_patience_ms; /* 50 */
	uint32_t keepalive_ms;       /* 60000 (+ jitter in [0, 5000)) */
	uint32_t handshake_timeout_ms;/* 10000 */
	uint32_t http_timeout_ms;    /* 30000: TLS handshake + request headers */
	double accept_rate;          /* connections/s, <= 0 = unlimited */
	uint32_t accept_burst;
	/* TLS (user/tls.h): "manual" or "dev" (in-memory self-signed); NULL = plain HTTP */
	const char *certmode, *certdir, *hostname;
	int http_port;               /* plaintext :80 listener next to TLS, -1 = off */
	int tls_max_version;         /* 0 = TLS 1.3; TLS1_2_VERSION gets kTLS RX with OpenSSL 3.0 */
	bool no_ktls;                /* keep the TLS crypto in OpenSSL (benchmarks) */
	/* admission webhook (spec §7.10b); NULL = everyone admitted */
	const char *verify_client_url;
	bool verify_fail_open;       /* kderp default false (derper: true) */
	uint32_t verify_timeout_ms;  /* whole webhook request; 0 = 5000 */
	/* kernel plane: 0 off, 1 sockmap (every plain-TCP client), 2 auto */
	int offload;
	const char *offload_pin_dir;   /* NULL: KD_RELAY_PIN_DIR */
	uint32_t offload_auto_min_mean; /* auto: offload at this mean SendPacket payload; 0: measured default */
	uint32_t offload_watchdog_ms; /* stuck-flow check period; 0 = KD_WATCHDOG_MS (tests shorten it) */
	/* mesh */
	bool has_mesh_key;
	uint8_t mesh_key[DERP_KEY_LEN];
	/* identity; required */
	struct kd_keypair keys;
};

struct kd_server;

/* A mesh peer as the registry sees it (spec §8.5): it forwards packets one
 * hop. Implemented by the mesh client; lives as long as the server. */
struct kd_forwarder {
	/* Thread safe and non-blocking: 0 when queued, -errno when dropped. */
	int (*forward)(struct kd_forwarder *f, const uint8_t src[DERP_KEY_LEN], const uint8_t dst[DERP_KEY_LEN],
		       const uint8_t *data, size_t len);
	const char *name;
};

/* PeerPresent from a mesh peer: key is reachable through f. */
int kd_server_add_forwarder(struct kd_server *s, const uint8_t key[DERP_KEY_LEN], struct kd_forwarder *f);
/* PeerGone from a mesh peer, or its watch connection broke: when key is
 * then nowhere in the region, local receivers of its packets get PeerGone. */
void kd_server_remove_forwarder(struct kd_server *s, const uint8_t key[DERP_KEY_LEN], struct kd_forwarder *f);
/* The server's own identity, for the mesh client's logins. */
const struct kd_keypair *kd_server_keys(const struct kd_server *s);

void kd_server_config_defaults(struct kd_server_config *cfg);
/* Binds the listeners; returns 0 or -errno (logged). */
int kd_server_new(struct kd_server **out, const struct kd_server_config *cfg);
/* Starts the worker threads; returns at once. */
int kd_server_start(struct kd_server *s);
/* Sends Restarting to every client, flushes, closes, joins the workers. */
void kd_server_stop(struct kd_server *s);
void kd_server_free(struct kd_server *s);
/* The bound TCP port of the main listener (useful with port 0). */
int kd_server_port(const struct kd_server *s);
/* SIGHUP: re-reads the TLS certificates for new connections and, when
 * mesh_key is not NULL, replaces the mesh key; connections stay up. A
 * certificate that fails to load leaves the old one serving (-errno). */
int kd_server_reload(struct kd_server *s, const uint8_t *mesh_key);
/* SIGHUP with -config-file: clients that log in from now on are checked
 * against this webhook; checks in flight finish against the old one and
 * connections stay up. Turning admission on or off needs a restart
 * (-EOPNOTSUPP); a bad URL keeps the old settings (-EINVAL, logged). */
int kd_server_reconfigure_admission(struct kd_server *s, const char *url, bool fail_open,
				    uint32_t timeout_ms);
/* Binary upgrade: the listeners to hand to the new process (user/upgrade.h);
 * returns how many were written. */
struct kd_upgrade_fd;
int kd_server_upgrade_fds(const struct kd_server *s, struct kd_upgrade_fd *out, int cap);
/* Binary upgrade, once the new process serves: the workers stop accepting
 * (the listening sockets stay open, shared with it); connections go on. */
void kd_server_stop_accepting(struct kd_server *s);
/* The plaintext port-80 listener next to TLS, or -1. */
int kd_server_port80(const struct kd_server *s);
bool kd_server_tls(const struct kd_server *s);
/* Adds Prometheus text from another plane (STUN...) to /debug/varz: fn
 * returns bytes written or -errno. Set before kd_server_start. */
void kd_server_set_extra_metrics(struct kd_server *s, int (*fn)(void *arg, char *out, size_t cap), void *arg);
/* Renders /debug/varz into a malloc'd buffer. */
int kd_server_metrics(struct kd_server *s, char **out, size_t *len);

#endif
