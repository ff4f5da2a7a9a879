/* SPDX-License-Identifier: MIT */
/* A minimal HTTP/1.1 client for one request per connection: what the
 * admission webhook (spec §7.10b) needs and nothing more.
 *
 * Three layers: a URL parser and a response reader, both pure (bytes in,
 * verdict out, caller-owned state, no allocation, logging or I/O), and a
 * blocking POST with one deadline over resolve + connect + TLS + send +
 * receive, meant for worker threads, never for the event loop. */
#ifndef KD_HTTP_CLIENT_H
#define KD_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#define KD_URL_HOST_MAX 253
#define KD_URL_PATH_MAX 2048
/* Response heads beyond this are refused (Go allows 1 MB; webhooks send
 * a few hundred bytes). */
#define KD_HTTP_RESP_HEAD_MAX 16384
/* Only the first 4 KiB of a body is kept, like the reference's LimitReader. */
#define KD_HTTP_RESP_BODY_MAX 4096
#define KD_HTTP_REASON_MAX 64

struct kd_url {
	bool https;
	char host[KD_URL_HOST_MAX + 1]; /* without the brackets of an IPv6 literal */
	uint16_t port;                   /* explicit, or 80 / 443 */
	bool port_explicit;
	char path[KD_URL_PATH_MAX + 1]; /* path + query, "/" when empty; no fragment */
};

/* http://host[:port][/path][?query][#fragment] or https://...; scheme case-
 * insensitive, host a name or IPv4 or [IPv6] literal, no userinfo. 0 or
 * -EINVAL (u zeroed then). */
int kd_url_parse(const char *url, struct kd_url *u);
/* "host" or "host:port" (brackets for IPv6) as the Host header wants it:
 * the port only when it is not the scheme's default. Returns the length or
 * -ENOSPC. */
int kd_url_host_header(const struct kd_url *u, char *out, size_t cap);

enum kd_http_resp_state {
	KD_HTTP_RESP_HEAD = 0, /* waiting for the status line and headers */
	KD_HTTP_RESP_BODY,     /* head parsed (status valid), body incomplete */
	KD_HTTP_RESP_DONE,     /* body complete, or KD_HTTP_RESP_BODY_MAX reached */
	KD_HTTP_RESP_ERROR,    /* malformed; stays so */
};

enum kd_http_body_mode { KD_HTTP_BODY_NONE, KD_HTTP_BODY_LENGTH, KD_HTTP_BODY_CHUNKED, KD_HTTP_BODY_CLOSE };

/* Incremental reader of one response: bytes may arrive split anywhere and the
 * outcome does not depend on where. 1xx interim responses are skipped. */
struct kd_http_resp {
	enum kd_http_resp_state state;
	int status;
	bool head_done; /* the final (non-1xx) head was parsed: status is real */
	char reason[KD_HTTP_REASON_MAX]; /* reason phrase, printable ASCII only */
	enum kd_http_body_mode mode;
	uint64_t content_length;
	char body[KD_HTTP_RESP_BODY_MAX];
	size_t body_len;
	bool body_truncated; /* more body followed the kept part (or may have) */
	/* private */
	uint64_t left;      /* of the Content-Length, or of the current chunk */
	int cstate;         /* chunked decoder state */
	unsigned cdigits;   /* hex digits in the current chunk-size line */
	size_t head_len;
	char head[KD_HTTP_RESP_HEAD_MAX];
};

void kd_http_resp_init(struct kd_http_resp *r);
/* Consumes bytes: returns how many were used (fewer than len only once DONE),
 * or -EINVAL (malformed) / -EMSGSIZE (head too big), state ERROR then. */
ssize_t kd_http_resp_feed(struct kd_http_resp *r, const char *in, size_t len);
/* The peer closed: 0 if that completes the response (close-delimited body,
 * or already DONE), -EPIPE if it was cut short. */
int kd_http_resp_eof(struct kd_http_resp *r);

/* Why a request failed before a usable response arrived. */
enum kd_http_err {
	KD_HTTP_OK = 0,
	KD_HTTP_ERR_DNS,      /* name did not resolve */
	KD_HTTP_ERR_CONNECT,  /* every address refused or unreachable */
	KD_HTTP_ERR_TLS,      /* handshake or certificate verification */
	KD_HTTP_ERR_TIMEOUT,  /* the deadline passed */
	KD_HTTP_ERR_IO,       /* reset or EOF mid-response */
	KD_HTTP_ERR_PROTOCOL, /* malformed response */
	KD_HTTP_ERR_CANCELED, /* cancel_fd became readable */
	KD_HTTP_ERR_MAX
};
const char *kd_http_err_name(enum kd_http_err e);

struct kd_http_post {
	const struct kd_url *url;
	SSL_CTX *tls;      /* required for https; SNI/verification come from it */
	const char *content_type;
	const char *body;
	size_t body_len;
	uint64_t deadline_ms; /* CLOCK_MONOTONIC, see kd_http_now_ms() */
	int cancel_fd;        /* -1, or an fd whose readability aborts the request */
};

/* Sends the POST with "Connection: close" and reads the response into r
 * until it is DONE, or only its head when the status is not 200. Blocks up
 * to the deadline. Returns KD_HTTP_OK or the failure; when the failure came
 * after the head (r->state >= KD_HTTP_RESP_BODY) the caller still has the
 * status and the body so far. detail (may be NULL) gets a short description
 * of the failure, "" on success. (http_post.c) */
enum kd_http_err kd_http_post(const struct kd_http_post *p, struct kd_http_resp *r,
			      char *detail, size_t detail_cap);

uint64_t kd_http_now_ms(void);

#endif
