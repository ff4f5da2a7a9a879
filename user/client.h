/* SPDX-License-Identifier: MIT */
/* DERP client: the tools' and tests' side of the protocol (spec §3.5, §4–§6).
 *
 * One connection per struct kd_client. The socket is always non-blocking:
 * kd_client_start() + kd_client_step() drive the handshake from an epoll loop,
 * kd_client_connect()/kd_client_recv()/kd_client_flush_wait() are blocking
 * conveniences with timeouts built on the same state machine.
 *
 * No allocation per packet: one input buffer (grows to DERP_MAX_INFO_LEN + 5
 * at most) and one output buffer (capped at KD_CLIENT_OUT_MAX) per client.
 *
 * In an epoll loop (level- or edge-triggered): after kd_client_step()
 * returns 1, and on every EPOLLIN, call kd_client_poll() until it returns
 * -EAGAIN. Frames may already sit in the client's buffer (or in OpenSSL's)
 * without the socket signalling again. Arm EPOLLOUT only while
 * kd_client_want_write(). TLS writes can raise SIGPIPE: ignore it in the
 * process (plain TCP uses MSG_NOSIGNAL). One client per thread at a time. */
#ifndef KD_CLIENT_H
#define KD_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "derp_wire.h"
#include "key.h"

/* Queued output beyond this is refused with -ENOBUFS: backpressure. */
#define KD_CLIENT_OUT_MAX (4u << 20)

struct kd_client;

struct kd_client_opts {
	const char *url;         /* http://host:port/derp or https://host[:port]/derp; port default 80/443 */
	const char *dial_addr;   /* optional "ip:port" (or "[v6]:port") to dial instead of the URL host */
	struct kd_keypair key;   /* client identity */
	const uint8_t *mesh_key; /* NULL or 32 bytes */
	bool can_ack_pings, is_prober;
	const char *app_name;    /* NULL: omitted from ClientInfo */
	const char *ideal_node;  /* NULL: no Ideal-Node header */
	const char *ca_file;     /* https: CA bundle (PEM); NULL = system roots */
	bool insecure;           /* https: skip certificate verification */
	bool no_fast_start;      /* never use fast start even when offered */
	bool no_auto_pong;       /* with can_ack_pings: leave server Pings to the caller */
	int timeout_ms;          /* connect + upgrade + handshake budget; 0 = 10000 */
};

/* Blocking: TCP (+TLS), GET /derp, 101, ServerKey, ClientInfo, ServerInfo.
 * Errors: -ECONNREFUSED (nobody listening), -ETIMEDOUT, -ECONNABORTED (the
 * server closed during the handshake: refused), -EPROTO (not a DERP server:
 * non-101 status, bad frame, ServerInfo that does not open), -EKEYREJECTED
 * (https: the certificate does not verify), -EINVAL (opts),
 * -EHOSTUNREACH/-ENOENT (name resolution), other -errno. *out NULL on error. */
int kd_client_connect(struct kd_client **out, const struct kd_client_opts *o);

/* Non-blocking: returns at once with the TCP connect in flight (name
 * resolution of the URL host is the one blocking step: give dial_addr or an IP
 * literal to avoid it). Then wait for kd_client_fd() readable, or writable when
 * kd_client_want_write(), and call kd_client_step(): 0 in progress, 1
 * established, -errno (as kd_client_connect). The deadline is checked in
 * kd_client_step(); kd_client_deadline_ms() says when to call it next. */
int kd_client_start(struct kd_client **out, const struct kd_client_opts *o);
int kd_client_step(struct kd_client *c);
/* As kd_client_start() on an already connected stream socket the client
 * takes over (tests: a socketpair; the URL still names Host and scheme). */
int kd_client_start_fd(struct kd_client **out, const struct kd_client_opts *o, int fd);
/* An already established client on a stream that needs no handshake: the
 * raw-TCP baseline of derp-bench and tests. Takes the fd; key may be NULL. */
int kd_client_attach_fd(struct kd_client **out, int fd, const struct kd_keypair *key);
int kd_client_fd(const struct kd_client *c);
bool kd_client_want_write(const struct kd_client *c);
/* Handshake deadline on CLOCK_MONOTONIC in ms; 0 once established. */
int64_t kd_client_deadline_ms(const struct kd_client *c);
bool kd_client_established(const struct kd_client *c);
/* True if fast start (§3.6) was used for this connection. */
bool kd_client_fast_start(const struct kd_client *c);
const uint8_t *kd_client_server_key(const struct kd_client *c);
const uint8_t *kd_client_public_key(const struct kd_client *c);
/* What the server said in ServerInfo; zeroes before it arrived. */
const struct kd_client_server_info *kd_client_server_info(const struct kd_client *c);

/* Sending. A helper appends one frame to the output buffer and, unless
 * corked, writes as much as the socket takes. Returns 0 when the frame is
 * queued (kd_client_want_write() says whether bytes remain), -ENOBUFS when
 * the output buffer is full (nothing queued: flush when writable, retry),
 * -EINVAL for an oversized packet, other -errno when the connection is dead. */
int kd_client_send_packet(struct kd_client *c, const uint8_t dst[32], const void *data, size_t len);
int kd_client_forward_packet(struct kd_client *c, const uint8_t src[32], const uint8_t dst[32],
			     const void *data, size_t len);
int kd_client_note_preferred(struct kd_client *c, bool preferred);
int kd_client_send_ping(struct kd_client *c, const uint8_t data[8]);
int kd_client_send_pong(struct kd_client *c, const uint8_t data[8]);
int kd_client_watch_conns(struct kd_client *c);
int kd_client_close_peer(struct kd_client *c, const uint8_t key[32]);
/* Arbitrary bytes, for tests that send malformed frames. */
int kd_client_send_raw(struct kd_client *c, const void *bytes, size_t len);
void kd_client_cork(struct kd_client *c, bool on);
/* 0 when everything is written, -EAGAIN if some remains, -errno. */
int kd_client_flush(struct kd_client *c);
/* Blocking flush: 0, -ETIMEDOUT, -errno. */
int kd_client_flush_wait(struct kd_client *c, int timeout_ms);
size_t kd_client_out_pending(const struct kd_client *c);

/* Receiving. Pointers are into the client's input buffer and stay valid
 * until the next kd_client_poll()/kd_client_recv() on this client. */
struct kd_client_msg {
	uint8_t type;
	uint32_t len;            /* payload length */
	const uint8_t *payload;
	const uint8_t *key;      /* RecvPacket src, PeerGone/PeerPresent key, ServerKey key */
	const uint8_t *data;     /* RecvPacket packet, Ping/Pong data, Health text */
	size_t data_len;
	uint8_t reason;          /* PeerGone; a 32-byte PeerGone reads as Disconnected */
	uint8_t ip[16];          /* PeerPresent; zero when absent (32-byte form) */
	uint16_t port;
	uint8_t flags;           /* PeerPresent; 0 in the 32- and 50-byte forms */
	uint32_t reconnect_in_ms, try_for_ms; /* Restarting */
};

/* Non-blocking: 0 one frame in *m, -EAGAIN nothing complete yet, -EPIPE EOF,
 * -EPROTO oversized frame, other -errno. Frames the reference client skips
 * (unknown types are returned, but short RecvPacket/PeerGone/PeerPresent/
 * Ping/Pong/Restarting are not) are consumed silently. A server Ping is
 * answered before it is returned when can_ack_pings && !no_auto_pong. */
int kd_client_poll(struct kd_client *c, struct kd_client_msg *m);
/* Blocking: 0, -ETIMEDOUT, -EPIPE, -errno. timeout_ms < 0 waits forever. */
int kd_client_recv(struct kd_client *c, struct kd_client_msg *m, int timeout_ms);
void kd_client_close(struct kd_client *c);

/* ---- pure codec (client_frames.c): bytes in, verdict out ---------------- */

/* One frame from buf[0..len). 0: *m filled, *consumed = 5 + payload length;
 * -EAGAIN: incomplete; -EMSGSIZE: length field over DERP_MAX_INFO_LEN (the
 * stream is unusable); -EBADMSG: complete but too short for its type, skip
 * *consumed bytes (what the reference client does). */
int kd_client_parse_frame(const uint8_t *buf, size_t len, struct kd_client_msg *m, size_t *consumed);

/* An HTTP/1.x response head. 0: *status set, *consumed = bytes up to and
 * including the blank line; -EAGAIN incomplete; -EBADMSG not HTTP. */
int kd_client_parse_http_response(const char *buf, size_t len, int *status, size_t *consumed);

/* The ServerKey payload (magic + key + ignored extra): 0 or -EBADMSG. */
int kd_client_parse_server_key(const uint8_t *payload, size_t len, uint8_t key[static 32]);

/* ServerInfo JSON (spec §5.4). Clients apply the token bucket to their own
 * sends; this library only reports it. */
struct kd_client_server_info {
	int64_t version;
	int64_t token_bucket_bytes_per_sec, token_bucket_bytes_burst; /* 0: unspecified */
};
/* Go's decoding rules: case-insensitive names, unknown fields skipped, null
 * leaves a field zero, wrong types fail. 0 or -EBADMSG. */
int kd_client_parse_server_info(const char *json, size_t len, struct kd_client_server_info *si);

/* The ClientInfo JSON for these options into out (NUL-terminated);
 * returns its length or -ENOSPC. Field order as Go clients emit it. */
int kd_client_info_json(char *out, size_t cap, const struct kd_client_opts *o);

/* URL split: scheme http/https, host (brackets stripped), port (default
 * 80/443), path (default "/derp"), host header value. 0 or -EINVAL. */
struct kd_client_url {
	bool tls;
	char host[256];
	uint16_t port;
	char path[256];
	char host_header[272];
};
int kd_client_url_parse(struct kd_client_url *u, const char *url);

/* Test seam: the source of NaCl nonces (default libsodium randombytes_buf).
 * NULL restores the default. Process-wide; set it before connecting. */
void kd_client_set_random(void (*fn)(void *buf, size_t len));

/* CLOCK_MONOTONIC in ms, the clock of kd_client_deadline_ms(). */
int64_t kd_client_clock_ms(void);

#endif
