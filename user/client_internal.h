/* SPDX-License-Identifier: MIT */
/* What client.c (handshake, lifecycle) and client_io.c (buffers, transport,
 * receiving) share. Not for other modules: they use client.h. */
#ifndef KD_CLIENT_INTERNAL_H
#define KD_CLIENT_INTERNAL_H

#include <openssl/ssl.h>
#include <sys/types.h>

#include "client.h"

#define IN_INITIAL (128u << 10)
#define IN_MAX (DERP_MAX_INFO_LEN + DERP_FRAME_HDR_LEN)
#define OUT_INITIAL (64u << 10)
#define HTTP_HEAD_MAX (16u << 10)
#define DEFAULT_TIMEOUT_MS 10000

enum kd_client_state {
	ST_TCP_CONNECT,
	ST_TLS,
	ST_READ_RESPONSE,  /* HTTP 101 */
	ST_READ_SERVER_KEY,
	ST_WAIT_SERVER_INFO,
	ST_ESTABLISHED,
	ST_FAILED,
};

struct kd_client {
	int fd;
	SSL *ssl;
	bool ssl_want_write;
	enum kd_client_state st;
	int err; /* sticky once failed */
	int64_t deadline_ms;
	bool fast_start, cork, auto_pong, eof;

	struct kd_client_url url;
	struct kd_keypair key;
	uint8_t mesh_key[DERP_KEY_LEN];
	bool has_mesh_key, can_ack_pings, is_prober, no_fast_start, insecure;
	char *app_name, *ideal_node, *ca_file;
	uint8_t server_key[DERP_KEY_LEN];
	struct kd_client_server_info info;

	uint8_t *in;
	size_t in_start, in_end, in_cap;
	uint8_t *out;
	size_t out_off, out_len, out_cap;
};

/* Sticky failure: the first error wins and the state becomes ST_FAILED. */
int kd_client_fail(struct kd_client *c, int err);
/* Appends one frame (header + up to three parts) to the output buffer:
 * 0, -ENOBUFS, -ENOMEM, or the sticky error. */
int kd_client_queue_frame(struct kd_client *c, uint8_t type, const void *a, size_t alen, const void *b,
			  size_t blen, const void *d, size_t dlen);
/* One read into the input buffer, room made for `want` unread bytes:
 * >0, 0 EOF, -EAGAIN, -errno. */
ssize_t kd_client_fill(struct kd_client *c, size_t want);
/* Unread bytes the frame at the head of the input needs in total. */
size_t kd_client_frame_want(const struct kd_client *c);
/* poll(2) on the socket until readable (or writable) or the CLOCK_MONOTONIC
 * deadline in ms (< 0: none): 0 or -ETIMEDOUT, -errno. */
int kd_client_wait_fd(struct kd_client *c, bool want_write, int64_t deadline);

#endif
