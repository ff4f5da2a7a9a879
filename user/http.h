/* SPDX-License-Identifier: MIT */
/* HTTP/1.x for kderpd (spec §3): a request parser in the picohttpparser style
 * and the responses of every endpoint. No sockets here: the event loop owns
 * the I/O and hands this module bytes; it gets back bytes to write and what
 * to do with the connection afterwards. */
#ifndef KD_HTTP_H
#define KD_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define KD_HTTP_MAX_HEADERS 64
#define KD_HTTP_MAX_REQUEST 16384 /* header block cap; larger => 431 and close */

/* kd_http_parse_request verdicts besides "bytes consumed" */
#define KD_HTTP_PARSE_MALFORMED (-1)
#define KD_HTTP_PARSE_INCOMPLETE (-2)

struct kd_http_header {
	const char *name;
	size_t name_len;
	const char *value; /* surrounding whitespace trimmed */
	size_t value_len;
};

struct kd_http_request {
	const char *method;
	size_t method_len;
	const char *target; /* raw request-target */
	size_t target_len;
	const char *path; /* target without ?query (absolute-form: without scheme://authority) */
	size_t path_len;
	const char *query; /* after '?', may be empty */
	size_t query_len;
	int minor_version; /* HTTP/1.x */
	struct kd_http_header headers[KD_HTTP_MAX_HEADERS];
	size_t num_headers;
};

/* Returns the bytes consumed (>0) when the header block is complete, -1 when
 * malformed (bad request line, header without colon, control bytes, obs-fold,
 * more than KD_HTTP_MAX_HEADERS headers, or no end of headers within
 * KD_HTTP_MAX_REQUEST bytes), -2 when more bytes are needed. Pointers point
 * into buf; bytes after the header block (a pipelined request, the start of
 * the DERP stream) are not consumed. Never reads past len. */
int kd_http_parse_request(const char *buf, size_t len, struct kd_http_request *req);

/* The status to answer a request kd_http_parse_request rejected: 431 when the
 * header block is too large, 400 otherwise. */
int kd_http_parse_error_status(const char *buf, size_t len);
/* The complete response (with Connection: close) for such a request. */
int kd_http_parse_error_response(const char *buf, size_t len, char *out, size_t cap, size_t *out_len);

/* First header of that name, case-insensitive; NULL if none. */
const struct kd_http_header *kd_http_find(const struct kd_http_request *req, const char *name);
/* Whole-value comparison; h may be NULL (=> false). */
bool kd_http_header_eq(const struct kd_http_header *h, const char *value, bool case_insensitive);
/* Whether a comma-separated header (Connection, Sec-WebSocket-Protocol)
 * carries token, case-insensitive; checks every header of that name. */
bool kd_http_has_token(const struct kd_http_request *req, const char *name, const char *token);
/* Value of the first query parameter `name`, percent- and '+'-decoded into out
 * (NUL-terminated). Returns the decoded length, -ENOENT if absent,
 * -ENOSPC if longer than cap - 1. A pair with a bad %-escape is skipped, like Go. */
int kd_http_query_param(const struct kd_http_request *req, const char *name, char *out, size_t cap);
bool kd_http_method_is(const struct kd_http_request *req, const char *method);

enum kd_http_action {
	KD_HTTP_RESPOND,           /* write out[0..out_len) then close (or keep alive if keep_alive) */
	KD_HTTP_UPGRADE_DERP,      /* write out (the exact 101, or nothing for fast start), then the DERP stream starts */
	KD_HTTP_UPGRADE_WEBSOCKET, /* write out (101 websocket handshake), then DERP over websocket binary messages */
	KD_HTTP_VARZ,              /* caller renders Prometheus text then calls kd_http_format_reply */
	KD_HTTP_DEBUG_INDEX,       /* caller renders the /debug/ html */
	KD_HTTP_DEBUG_VARS,        /* caller renders expvar JSON (/debug/vars) */
	KD_HTTP_DEBUG_CHECK,       /* caller runs the consistency check (/debug/check) */
	KD_HTTP_DEBUG_CLIENTS,     /* caller lists its clients (/debug/clients, kderp's own) */
};

struct kd_http_route_opts {
	const uint8_t *server_pub; /* 32 bytes, for Derp-Public-Key */
	bool derp_enabled;         /* -derp flag */
	bool debug_allowed;        /* from kd_http_debug_allowed */
	bool port80_redirect;      /* this is the plaintext :80 listener while TLS is served (spec §3.8) */
	const char *home;          /* "" (or NULL) default page, "blank", or http(s) URL */
	bool dev;                  /* -dev: debug-denied message gets the TS_ALLOW_DEBUG_IP hint */
	const char *hostname;      /* -hostname, for the home page's abuse paragraph; may be NULL */
};

struct kd_http_result {
	enum kd_http_action action;
	int status; /* status written to out, or to be written by the caller (200) */
	bool fast_start;
	bool not_ideal;
	bool keep_alive; /* RESPOND only: the connection may read the next request */
};

/* Decides what to do with one request and writes the response bytes into out
 * (cap bytes). Returns 0, or -ENOSPC if out is too small. 2 KiB is enough for
 * every response except redirects, which echo the Host header and the
 * request-target (HTML-escaped in the body): size out at
 * 7 * KD_HTTP_MAX_REQUEST to never see -ENOSPC. */
int kd_http_route(const struct kd_http_request *req, const struct kd_http_route_opts *o,
		  struct kd_http_result *res, char *out, size_t cap, size_t *out_len);

/* -home validation at startup: "", "blank", http:// or https:// URL; else
 * -EINVAL (the reference exits with "unknown --home value"). */
int kd_http_home_check(const char *home);

/* Full response with Content-Length (none for 1xx/204/304); extra_headers is
 * "Name: v\r\n..." or NULL; content_type may be NULL. */
int kd_http_format_response(char *out, size_t cap, size_t *out_len, int status, const char *content_type,
			    const char *extra_headers, const void *body, size_t body_len);
/* The same for a routed request: no body for HEAD (Content-Length kept),
 * "Connection: close" when !res->keep_alive. For VARZ and the debug pages. */
int kd_http_format_reply(const struct kd_http_request *req, const struct kd_http_result *res, char *out,
			 size_t cap, size_t *out_len, int status, const char *content_type,
			 const char *extra_headers, const void *body, size_t body_len);

/* The exact 101 of spec §3.5.2 step 6. */
int kd_http_derp_upgrade_response(char *out, size_t cap, size_t *out_len, const uint8_t server_pub[32]);
#define KD_HTTP_DERP_UPGRADE_LEN 172

/* Debug access of spec §3.11: (a) a GET with ?debugkey= equal to debug_key
 * (the trimmed key file contents; NULL or "" disables), or (b) no
 * X-Forwarded-For and the peer is loopback, a Tailscale address (CGNAT minus
 * 100.115.92.0/23, fd7a:115c:a1e0::/48), equal to TS_ALLOW_DEBUG_IP, or in a
 * TS_DEBUG_TRUSTED_CIDRS range. IPv4-mapped IPv6 peers count as IPv4. */
bool kd_http_debug_allowed(const struct kd_http_request *req, const struct sockaddr *peer, const char *debug_key);
/* Validates TS_ALLOW_DEBUG_IP and TS_DEBUG_TRUSTED_CIDRS at startup (the
 * reference treats an invalid CIDR as fatal): 0 or -EINVAL. */
int kd_http_debug_env_check(void);

/* What the /debug/ index shows (spec §3.11). Strings may be NULL. */
struct kd_http_debug_info {
	const char *program;      /* page title, e.g. "kderpd" */
	const char *version;
	const char *machine;      /* host name of the machine */
	const char *tls_hostname; /* -hostname */
	bool mesh_key;
	uint64_t uptime_sec;
};
/* The complete response for KD_HTTP_DEBUG_INDEX (HTML, debug browser
 * headers, HEAD and keep-alive honoured). 0 or -ENOSPC; 4 KiB is enough
 * unless the strings are long. */
int kd_http_debug_index(const struct kd_http_request *req, const struct kd_http_result *res,
			const struct kd_http_debug_info *info, char *out, size_t cap, size_t *out_len);

/* Header strings for callers that render pages themselves. */
#define KD_HTTP_BROWSER_HEADERS                                                                        \
	"Strict-Transport-Security: max-age=63072000; includeSubDomains\r\n"                           \
	"Content-Security-Policy: default-src 'self'; frame-ancestors 'none'; form-action 'self'; "    \
	"base-uri 'self'; block-all-mixed-content; object-src 'none'\r\n"                              \
	"X-Frame-Options: DENY\r\n"                                                                    \
	"X-Content-Type-Options: nosniff\r\n"
#define KD_HTTP_DEBUG_BROWSER_HEADERS                                                                  \
	"Strict-Transport-Security: max-age=63072000; includeSubDomains\r\n"                           \
	"Content-Security-Policy: default-src 'self'; frame-ancestors 'none'; form-action 'self'; "    \
	"base-uri 'self'; block-all-mixed-content; object-src 'none'; style-src 'self' 'unsafe-inline'\r\n" \
	"X-Frame-Options: DENY\r\n"                                                                    \
	"X-Content-Type-Options: nosniff\r\n"
#define KD_HTTP_TEXT_PLAIN "text/plain; charset=utf-8"
#define KD_HTTP_TEXT_HTML "text/html; charset=utf-8"

const char *kd_http_status_text(int status);

#endif
