/* SPDX-License-Identifier: MIT */
/* Internal structures of the server, shared by server.c, conn.c,
 * derp_conn.c, registry.c and metrics.c. Threading rules:
 *  - a connection belongs to one worker; only that worker touches its
 *    socket, buffers, queues and timers;
 *  - other workers reach it only through messages in the owner's inbox,
 *    holding a reference;
 *  - the registry (key -> connections) is guarded by reg_lock. */
#ifndef KD_SERVER_INTERNAL_H
#define KD_SERVER_INTERNAL_H

#include <netinet/in.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "derp_wire.h"
#include "admission.h"
#include "offload.h"
#include "offload_policy.h"
#include "keymap.h"
#include "log.h"
#include "loop.h"
#include "server.h"
#include "websocket.h"

/* A frame ready to write, owned by exactly one queue or message at a time. */
struct kd_pkt {
	union {
		uint64_t enq_ms;
		struct kd_pkt *next_free; /* on a worker's free list */
	};
	uint32_t len;             /* bytes in frame[] */
	uint8_t kind;             /* enum derp_kind, for drop accounting */
	uint8_t pooled;           /* a KD_PKT_POOL_SIZE buffer from a worker's pool */
	uint8_t frame[];          /* header + payload as it goes on the wire */
};

/* WireGuard-sized packets come from per-worker free lists: no malloc on
 * the common path, and a buffer freed on another worker just joins that
 * worker's list. */
#define KD_PKT_POOL_SIZE 2048u
#define KD_PKT_POOL_MAX 2048u     /* idle buffers kept per worker */

/* A bounded head-drop ring of packets. */
struct kd_pktq {
	struct kd_pkt **ring;     /* allocated on first use: idle clients pay nothing */
	uint32_t head, len, cap;
};

/* Growable byte buffer for control frames and partial input. */
struct kd_buf {
	uint8_t *data;
	size_t len, cap, off;     /* valid bytes are data[off, len) */
};

enum kd_conn_state {
	KD_CONN_TLS_HANDSHAKE,
	KD_CONN_HTTP,
	KD_CONN_HTTP_RESPONDING,  /* writing a response, then close or next request */
	KD_CONN_WAIT_CLIENT_INFO,
	KD_CONN_ADMISSION,        /* ClientInfo opened, the webhook decides; not read meanwhile */
	KD_CONN_ACTIVE,
	KD_CONN_CLOSED,
};

struct kd_worker;

#define KD_IOV_MAX 64

struct kd_conn {
	struct kd_io io;
	struct kd_worker *w;
	struct kd_server *srv;
	int refs;                 /* atomic */
	enum kd_conn_state state;
	SSL *ssl;
	uint64_t id;
	uint64_t connected_ms;
	struct sockaddr_storage peer;
	char peer_str[64];        /* "ip:port" for logs */

	/* input: HTTP request or a partial DERP frame; NULL when drained */
	struct kd_buf in;
	uint32_t skip;            /* bytes of an oversize unknown frame still to discard */

	/* output: control frames (ServerKey, ServerInfo, pong, keepalive, ...) */
	struct kd_buf ctrl;
	struct kd_pktq q[DERP_KIND_MAX];  /* disco, other */
	/* what the current writev is made of: ctrl bytes first, then packets */
	struct kd_pkt *inflight[KD_IOV_MAX];
	uint32_t n_inflight;
	size_t ctrl_inflight;     /* ctrl bytes included in the current write */
	size_t wr_off;            /* bytes of the current batch already written */
	bool dirty;               /* on the worker's flush list */
	bool want_write;          /* EPOLLOUT armed */
	bool http_close_after;
	bool rd_eof;              /* peer shut down its side: no more EPOLLIN */
	bool port80;              /* accepted on the plaintext listener next to TLS */
	/* DERP over WebSocket (spec §3.7): every batch becomes one binary message */
	struct kd_ws_decoder *ws; /* NULL for raw DERP */
	struct kd_buf raw;        /* bytes that go out unwrapped: the 101, pongs, close */
	size_t raw_inflight;
	uint8_t ws_hdr[10];
	uint8_t ws_hdr_len;
	bool close_after_flush;
	/* backpressure: a destination whose socket is full says so... */
	int congested;            /* atomic: 1 while its socket refuses writes */
	uint64_t congested_since_ms; /* atomic */
	/* ...and a sender that fed one pauses its reads for a moment */
	bool pause_after_frame, paused;
	uint8_t pause_reason;      /* enum kd_pause_reason, for the counter */
	struct kd_timer resume;
	/* kernel plane: once offloaded, nothing is written to the fd again;
	 * frames for the client go through the injector */
	bool offload_wanted, offloaded;
	/* -offload=auto (offload_policy.c): watching the first packets, then
	 * the decision + 1 (0: none made) */
	bool auto_watch, auto_loopback;
	int auto_decision;
	struct kd_auto_obs auto_obs;
	/* set under reg_lock (registry_offload.c): the socket's cookie while
	 * offloaded (0 otherwise), and whether the kernel relays its sends */
	uint64_t offload_cookie;
	bool offload_relay;
	struct kd_timer inject_retry;
	/* watchdog: bytes left in the socket that the kernel parser stopped
	 * consuming (bpf/README.md: tiny segments on 6.1/6.12) */
	struct kd_timer watchdog;
	int stuck_inq, stuck_checks;

	struct kd_timer deadline; /* handshake or write deadline */
	struct kd_timer keepalive;
	uint32_t keepalive_jitter_ms;

	/* DERP identity, valid from WAIT_CLIENT_INFO on */
	uint8_t key[DERP_KEY_LEN];
	bool registered, can_mesh, can_ack_pings, is_prober, not_ideal;
	bool preferred, is_dup, fast_start, is_watcher;
	bool pong_pending;
	uint8_t pong_data[DERP_PING_LEN];
	/* PeerGone(NotHere) limiter: 1/s burst 3 */
	uint32_t nothere_tokens;
	uint64_t nothere_last_ms;
	/* sources this connection has received packets from (spec §7.6) */
	struct kd_keymap saw_src;
	uint8_t last_src[DERP_KEY_LEN]; /* saw_src's last hit: one sender per flow is common */
	bool last_src_valid;
	/* the last destination this connection sent to, valid while reg_gen is */
	uint8_t lk_key[DERP_KEY_LEN];
	struct kd_conn *lk_conn;
	struct kd_forwarder *lk_fwd;
	uint32_t lk_n;
	uint64_t lk_gen;

	struct kd_conn *flush_next;
	struct kd_conn *close_next;
	struct kd_conn *all_next, *all_prev;   /* worker's list of live conns */
};

/* Cross-worker messages. */
enum kd_msg_op {
	KD_MSG_PACKET,        /* enqueue pkt on dst's data queue (head drop) */
	KD_MSG_CTRL,          /* append pkt's bytes to dst's control stream */
	KD_MSG_PEER_GONE,     /* control frame that also unsubscribes the source */
	KD_MSG_CLOSE,         /* close dst (ClosePeer) */
};

struct kd_msg {
	struct kd_conn *dst;
	struct kd_pkt *pkt;
	uint8_t op;
	/* A run of messages to one destination shares one reference, held by
	 * its last message: one atomic per batch instead of per packet. */
	uint8_t owns_ref;
};

struct kd_msgvec {
	struct kd_msg *v;
	size_t len, cap;
	/* outboxes: the destination worker's inbox_backlog as last read. That
	 * counter's cache line moves with every hand-off; reading it once per
	 * KD_BACKLOG_PEEK messages instead of per packet keeps it off the
	 * per-packet path (the bound can be overshot by that many at most). */
	size_t backlog_seen;
};
#define KD_BACKLOG_PEEK 64

/* Whether kTLS engaged on a TLS connection, per direction, and why not. */
#define KD_KTLS_RESULTS(X)                                                     \
	X(ON, "on")                                                            \
	X(NO_TLS_ULP, "no_tls_ulp")             /* kernel without the tls module */ \
	X(TLS13_RX_OPENSSL, "tls13_rx_openssl") /* OpenSSL 3.0 offloads TLS 1.3 TX only */ \
	X(REFUSED, "refused")                   /* cipher or crypto module missing */

enum kd_ktls_result {
#define KD_X(id, name) KD_KTLS_##id,
	KD_KTLS_RESULTS(KD_X)
#undef KD_X
	KD_KTLS_MAX,
};

/* Why a sender's reads were paused (note_congestion in derp_conn.c). */
enum kd_pause_reason {
	KD_PAUSE_DST_CONGESTED,   /* a destination's socket refuses writes */
	KD_PAUSE_WORKER_BEHIND,   /* a destination's worker has a long inbox */
	KD_PAUSE_REASONS,
};

/* Counters written by one worker only; the metrics page sums them. */
struct kd_counters {
	uint64_t accepts, packets_received, bytes_received, packets_received_kind[DERP_KIND_MAX];
	uint64_t packets_sent, bytes_sent, packets_forwarded_in, packets_forwarded_out;
	uint64_t peer_gone_disconnected_frames, peer_gone_not_here_frames;
	uint64_t got_ping, sent_pong, home_moves_in, home_moves_out, unknown_frames;
	uint64_t sclient_write_timeouts;
	uint64_t dropped[DERP_DROP_MAX][DERP_KIND_MAX], bytes_dropped[DERP_DROP_MAX][DERP_KIND_MAX];
	uint64_t buffered_write_frames[17];  /* buckets 0..10,15,20,25,50,100,+Inf */
	uint64_t buffered_write_frames_sum, buffered_write_flushes;
	uint64_t handshake_errors[16];       /* enum kd_hs_error */
	uint64_t http_requests, http_errors, conn_errors, accept_rejected;
	uint64_t keepalives_sent, health_frames, restarting_frames, watch_updates, websocket_accepts;
	uint64_t offloaded, offload_failed, offload_stuck;
	uint64_t pauses[KD_PAUSE_REASONS]; /* backpressure on senders */
	uint64_t ktls[2][KD_KTLS_MAX];       /* [tx, rx][enum kd_ktls_result] */
	uint64_t tls_versions[3];            /* 1.2, 1.3, other */
	uint64_t offload_auto[KD_AUTO_DECISION_MAX]; /* -offload=auto decisions */
	double avg_queue_ms;
};

#define KD_HS_ERRORS(X)                                                        \
	X(TIMEOUT, "timeout")                                                  \
	X(EOF, "eof")                                                          \
	X(TLS, "tls")                                                          \
	X(HTTP_MALFORMED, "http_malformed")                                    \
	X(HTTP_TOO_LARGE, "http_too_large")                                    \
	X(BAD_FRAME_TYPE, "bad_frame_type")                                    \
	X(SHORT_CLIENT_INFO, "short_client_info")                              \
	X(LONG_CLIENT_INFO, "long_client_info")                                \
	X(BOX_OPEN, "box_open")                                                \
	X(BAD_JSON, "bad_json")                                                \
	X(ZERO_KEY, "zero_key")                                                \
	X(REJECTED, "rejected")

enum kd_hs_error {
#define KD_X(id, name) KD_HS_##id,
	KD_HS_ERRORS(KD_X)
#undef KD_X
	KD_HS_MAX,
};
_Static_assert(KD_HS_MAX <= 16, "handshake_errors array too small");


struct kd_worker {
	struct kd_server *srv;
	int idx;
	struct kd_loop *loop;
	pthread_t thread;
	bool started;
	struct kd_io listen_io;
	struct kd_io listen80_io;
	struct kd_timer accept_resume; /* listeners paused after accept() ran out of fds */
	uint8_t *scratch;         /* read buffer for whole-frame parsing */
	size_t scratch_cap;
	struct kd_conn *flush_list;
	struct kd_conn *close_list;
	struct kd_conn *all;      /* live conns of this worker */
	size_t nconns;
	/* messages produced this pass, per destination worker */
	struct kd_msgvec *outbox;
	/* messages for this worker from others */
	pthread_mutex_t inbox_lock;
	struct kd_msgvec inbox;
	size_t inbox_backlog;     /* atomic: messages handed over, not yet handled */
	struct kd_msgvec inbox_spare;  /* swapped with inbox to drain without the lock */
	struct kd_counters ctr;
	bool stopping;
	struct kd_admission_queue *admq;
	struct kd_io adm_io;
	struct kd_pkt *pool;      /* free list through next_free */
	struct kd_ratelimit log_rl; /* per-client log lines */
	uint32_t pool_len;
};

/* The registry lock is a reader lock per worker (plus one for other
 * threads): lookups on the packet path never share a cache line; writers,
 * on connect and disconnect, take them all. */
struct kd_reg_lock {
	pthread_rwlock_t l;
} __attribute__((aligned(64)));

/* Registry entry: every live connection of one key (spec §7.2). */
struct kd_client_set {
	struct kd_conn *active;
	struct kd_conn *routed;   /* the kernel's route for the key (NULL: none) */
	struct kd_conn **conns;   /* ordered by last activity, newest last */
	uint32_t n, cap;
};

/* Receivers of packets from one source, to tell when it leaves (spec §7.6). */
struct kd_subs {
	struct kd_conn **conns;
	uint32_t n, cap;
};

/* Mesh forwarders of one key, in the order they announced it; the first
 * (lowest index) is preferred (spec §8.5). */
struct kd_fwd_entry {
	struct kd_forwarder **f;
	uint32_t n, cap;
};

struct kd_server {
	struct kd_server_config cfg;
	char *debug_key;          /* TS_DEBUG_KEY_PATH contents, trimmed; NULL = none */
	int (*extra_metrics)(void *arg, char *out, size_t cap);
	void *extra_metrics_arg;
	int listen_fd, listen80_fd;
	int port, port80;
	char addr80[300];         /* the plaintext listener's address, as built from -a */
	bool draining;            /* atomic: an upgrade took over accepting */
	SSL_CTX *tls;
	struct kd_admission *adm;
	struct kd_offload *offload;
	/* what SIGHUP may replace while workers read it: the TLS context for
	 * new connections and the mesh key */
	pthread_mutex_t reload_lock;
	pthread_mutex_t offload_lock; /* add/remove are not thread safe */
	int nworkers;
	struct kd_worker *workers;
	uint64_t next_conn_id;    /* atomic */
	uint64_t start_ms;

	struct kd_reg_lock *reg_locks; /* nworkers + 1 */
	uint64_t reg_gen;         /* bumped on every change routing depends on */
	struct kd_keymap reg;     /* key -> struct kd_client_set */
	struct kd_keymap subs;    /* src key -> struct kd_subs */
	struct kd_keymap fwd;     /* key -> struct kd_fwd_entry, keys on other mesh nodes */
	int64_t g_remote_only;    /* keys known only through the mesh */
	uint64_t multiforwarder_created, multiforwarder_deleted, forwarder_delete_other;
	struct kd_conn **watchers;
	uint32_t nwatchers, watchers_cap;

	/* accept limiter (token bucket) */
	pthread_mutex_t accept_lock;
	double accept_tokens;
	uint64_t accept_last_ms;

	/* gauges (atomic) */
	int64_t g_conns, g_home, g_notideal, g_clients, g_dup_keys, g_dup_conns, g_watchers;
	uint64_t total_dup_client_conns;
	uint64_t tls_accepted;
	bool tls_ulp_available;   /* "tls" in /proc/sys/net/ipv4/tcp_available_ulp at start */
};

/* conn.c */
struct kd_conn *kd_conn_new(struct kd_worker *w, int fd, const struct sockaddr_storage *peer, bool tls);
void kd_conn_on_io(struct kd_io *io, uint32_t events);
void kd_conn_close(struct kd_conn *c, const char *why);
void kd_conn_ref(struct kd_conn *c);
void kd_conn_unref(struct kd_conn *c);
void kd_conn_mark_dirty(struct kd_conn *c);
int kd_conn_flush(struct kd_conn *c);
int kd_conn_ctrl_append(struct kd_conn *c, const void *bytes, size_t len);
/* Appends a whole frame (header + payload parts) to the control stream. */
int kd_conn_ctrl_frame(struct kd_conn *c, uint8_t type, const void *p1, size_t n1, const void *p2, size_t n2);
void kd_worker_before_sleep(void *arg);
void kd_buf_free(struct kd_buf *b);

/* Feeds input that waited (admission) to the DERP parser again. */
void kd_conn_resume_input(struct kd_conn *c);
/* Re-arms epoll from the connection's state (reading paused, writes waiting). */
void kd_conn_update_events(struct kd_conn *c);
void kd_conn_pause(struct kd_conn *c, enum kd_pause_reason why);
/* Moves c to the kernel plane when it can go now (nothing buffered either way). */
void kd_conn_try_offload(struct kd_conn *c);
/* How long a sender pauses for a congested destination, and for how long a
 * destination may stay congested before senders stop waiting for it and
 * its queue head-drops as the reference's does. */
#define KD_PAUSE_MS 1
/* Messages a worker may have waiting from the others: beyond it packets
 * are dropped (queue_tail) and their senders paused, so a busy worker's
 * inbox cannot grow without bound. */
#define KD_INBOX_MAX 16384
/* An offloaded socket whose unread bytes have not moved for this many
 * checks, KD_WATCHDOG_MS apart, is stuck: it is closed and counted. */
#define KD_WATCHDOG_MS 2000
#define KD_WATCHDOG_CHECKS 3
#define KD_WATCHDOG_PERIOD(s) ((s)->cfg.offload_watchdog_ms ? (s)->cfg.offload_watchdog_ms : KD_WATCHDOG_MS)
#define KD_CONGESTION_PATIENCE_MS 50 /* the default of cfg.congestion_patience_ms */
/* Messages for one worker that a pass collects before handing them over
 * mid-pass rather than at its end. */
#ifndef KD_OUTBOX_BATCH
#define KD_OUTBOX_BATCH 512
#endif

/* derp_conn.c */
void kd_derp_admission_done(struct kd_conn *c, bool allow, const char *reason);
int kd_derp_on_upgrade(struct kd_conn *c);
/* Consumes complete frames from buf; returns bytes consumed or -1 to close. */
ssize_t kd_derp_process(struct kd_conn *c, const uint8_t *buf, size_t len);
void kd_derp_deliver(struct kd_conn *d, struct kd_pkt *p);
void kd_worker_drain_inbox(void *arg);
void kd_worker_post(struct kd_worker *from, struct kd_conn *dst, struct kd_pkt *p, enum kd_msg_op op);
void kd_worker_send_outbox(struct kd_worker *w);
/* w may be NULL off the workers: then no pool is used. */
struct kd_pkt *kd_pkt_frame(struct kd_worker *w, uint8_t type, const void *p1, size_t n1, const void *p2, size_t n2);
void kd_pkt_free(struct kd_worker *w, struct kd_pkt *p);
void kd_count_drop(struct kd_worker *w, enum derp_drop_reason r, const struct kd_pkt *p);
void kd_pktq_drain(struct kd_conn *c, enum derp_drop_reason r);
void kd_conn_on_keepalive(struct kd_timer *t);

/* registry.c */
int kd_registry_add(struct kd_conn *c);
void kd_registry_remove(struct kd_conn *c);
void kd_registry_note_activity(struct kd_conn *c);
/* Looks up the active connection for key, with a reference; *n_conns gets how many connections the key has. */
/* Looks up the active connection for key from a sender: *n_conns gets how
 * many connections the key has, *fwd a mesh forwarder. Returns with the
 * sender worker's registry read lock held, so another worker's connection
 * stays valid without a reference until kd_registry_lookup_done(): post to
 * it before that, and never take the write lock in between. */
struct kd_conn *kd_registry_lookup(struct kd_conn *from, const uint8_t key[static DERP_KEY_LEN], uint32_t *n_conns,
				   struct kd_forwarder **fwd);
void kd_registry_lookup_done(struct kd_conn *from);
void kd_reg_wrlock(struct kd_server *s);
void kd_reg_wrunlock(struct kd_server *s);
void kd_registry_subscribe(struct kd_conn *c, const uint8_t src[static DERP_KEY_LEN]);
void kd_registry_unsubscribe_all(struct kd_conn *c);
void kd_registry_watch(struct kd_conn *c);
void kd_registry_close_peer(struct kd_conn *c, const uint8_t key[static DERP_KEY_LEN]);
/* /debug/check: registry invariants; false with the problems joined by ", " */
bool kd_registry_check(struct kd_server *s, char *problems, size_t cap);
/* /debug/clients: one JSON line per connection, malloc'd. */
int kd_registry_dump(struct kd_server *s, char **out, size_t *len);

/* registry_offload.c: the kernel's view of the registry, kept under
 * reg_lock. The key's route follows the active connection (or is deleted
 * when the active one is not offloaded: the kernel passes frames for it to
 * userspace); duplicates' sends go through userspace so "last writer is
 * active" sees them. */
int kd_registry_offload(struct kd_conn *c);
void kd_registry_offload_sync(struct kd_server *s, struct kd_client_set *set);

/* metrics.c */
int kd_metrics_render(struct kd_server *s, char **out, size_t *len);
/* /debug/vars: the same values as one flat JSON object */
int kd_metrics_render_json(struct kd_server *s, char **out, size_t *len);

#define KDERP_VERSION "0.1.0"


#endif
