/* SPDX-License-Identifier: MIT */
/* RFC 6455 server side for the DERP-over-WebSocket variant (spec §3.7):
 * the handshake, a streaming decoder of client frames that unmasks in place,
 * and encoders for server frames. Pure functions, no I/O. */
#ifndef KD_WEBSOCKET_H
#define KD_WEBSOCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"

#define KD_WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define KD_WS_ACCEPT_LEN 28 /* base64 of a SHA-1 */
#define KD_WS_SUBPROTOCOL "derp"
/* Spec §3.7: accept at least 65 536 + 64 bytes per message (the reference's
 * 32 KiB cap is a known wart); one maximum DERP frame is 65 573 bytes. */
#define KD_WS_MAX_MESSAGE 131072u
#define KD_WS_MAX_CONTROL_PAYLOAD 125
#define KD_WS_MAX_SERVER_HEADER 10          /* 2 + 8, servers never mask */
#define KD_WS_MAX_CONTROL_FRAME (2 + KD_WS_MAX_CONTROL_PAYLOAD)

enum kd_ws_opcode {
	KD_WS_OP_CONTINUATION = 0x0,
	KD_WS_OP_TEXT = 0x1,
	KD_WS_OP_BINARY = 0x2,
	KD_WS_OP_CLOSE = 0x8,
	KD_WS_OP_PING = 0x9,
	KD_WS_OP_PONG = 0xa,
};

enum kd_ws_close_code {
	KD_WS_CLOSE_NORMAL = 1000,
	KD_WS_CLOSE_GOING_AWAY = 1001,
	KD_WS_CLOSE_PROTOCOL_ERROR = 1002,
	KD_WS_CLOSE_UNSUPPORTED_DATA = 1003,
	KD_WS_CLOSE_NO_STATUS = 1005, /* never sent: a close frame without a code */
	KD_WS_CLOSE_POLICY_VIOLATION = 1008,
	KD_WS_CLOSE_TOO_BIG = 1009,
	KD_WS_CLOSE_INTERNAL_ERROR = 1011,
};

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA1(key + GUID)).
 * out gets KD_WS_ACCEPT_LEN chars and a NUL. 0 or -EINVAL/-ENOMEM. */
int kd_ws_accept_key(char out[static KD_WS_ACCEPT_LEN + 1], const char *key, size_t key_len);

/* Result of checking a WebSocket upgrade request. */
struct kd_ws_handshake {
	int status;          /* 101 if acceptable, else the HTTP error status */
	const char *error;   /* error body (with '\n') when status != 101 */
	const char *extra;   /* headers to send with the error, or NULL */
	const char *key;     /* Sec-WebSocket-Key, trimmed */
	size_t key_len;
	const char *subprotocol; /* the client's spelling of "derp", or NULL */
	size_t subprotocol_len;
};
/* RFC 6455 §4.2.1 checks, in the order the reference's library makes them:
 * HTTP/1.1, Connection: upgrade, Upgrade: websocket, GET, version 13, one
 * 16-byte base64 key. Always returns 0 and fills hs. */
int kd_ws_check_handshake(const struct kd_http_request *req, struct kd_ws_handshake *hs);
/* The 101 for an accepted handshake. No Sec-WebSocket-Extensions ever
 * (permessage-deflate must not be negotiated, spec §3.7). */
int kd_ws_handshake_response(char *out, size_t cap, size_t *out_len, const struct kd_ws_handshake *hs);

/* Decoder of client-to-server frames. */
enum kd_ws_event {
	KD_WS_NEED_MORE, /* all input consumed, nothing to report */
	KD_WS_DATA,      /* payload: binary message bytes, unmasked in place: append to the DERP stream */
	KD_WS_PING,      /* payload: ping data (decoder-owned): answer kd_ws_encode_pong */
	KD_WS_PONG,      /* nothing to do */
	KD_WS_CLOSE,     /* peer closed (close_code, 1005 if none; payload = reason): echo a close, then EOF */
	KD_WS_ERROR,     /* violation: send kd_ws_encode_close(close_code, error), then close the connection */
};

struct kd_ws_decoder {
	size_t max_message;
	uint8_t hdr[14]; /* a partial header, up to 2 + 8 + 4 bytes */
	uint8_t hdr_len;
	bool in_frame; /* header complete, payload being read */
	bool fin;
	uint8_t opcode;
	uint8_t mask[4];
	uint64_t remaining;  /* payload bytes of the current frame still to come */
	uint64_t frame_off;  /* payload bytes of the current frame seen: the mask phase */
	bool in_message;     /* a fragmented binary message continues */
	uint64_t message_len;
	uint8_t ctrl[KD_WS_MAX_CONTROL_PAYLOAD];
	size_t ctrl_len;
	enum kd_ws_event done; /* KD_WS_CLOSE/KD_WS_ERROR once the stream is over, else NEED_MORE */
	uint16_t close_code;
	const char *error; /* reason text for KD_WS_ERROR */
};

/* max_message 0 means KD_WS_MAX_MESSAGE. */
void kd_ws_decoder_init(struct kd_ws_decoder *d, size_t max_message);
/* Reads frames from buf[0..len) and stops at the first event: *consumed says
 * how far it got (all of len on KD_WS_NEED_MORE), call again with the rest.
 * Unmasks data in place, so buf must be writable. After KD_WS_CLOSE or
 * KD_WS_ERROR it consumes nothing and repeats that event. */
enum kd_ws_event kd_ws_decode(struct kd_ws_decoder *d, uint8_t *buf, size_t len, size_t *consumed,
			      uint8_t **payload, size_t *payload_len);

/* The whole read path in one call, for a connection that speaks DERP over
 * WebSocket: decodes buf[0..len) in place, moving the DERP bytes of binary
 * messages to the front of buf (buf[0..*derp_len)), and appends what must be
 * sent back to reply (pongs; the close echo; the close frame of a violation).
 * Stops early, with *consumed < len, only when reply has no room for another
 * control frame (KD_WS_MAX_CONTROL_FRAME bytes; give reply_cap at least
 * that): flush it and call again with buf + *consumed.
 * Returns 0 to carry on, 1 when the peer closed (EOF after reply is sent),
 * or -EPROTO on a violation (send reply, then close the connection). */
int kd_ws_unwrap(struct kd_ws_decoder *d, uint8_t *buf, size_t len, size_t *consumed, size_t *derp_len,
		 uint8_t *reply, size_t reply_cap, size_t *reply_len);

/* Header of one unmasked FIN binary frame (a server DERP write); returns its
 * length, 2, 4 or 10. */
size_t kd_ws_encode_header(uint8_t hdr[static KD_WS_MAX_SERVER_HEADER], size_t payload_len);
size_t kd_ws_encode_frame_header(uint8_t hdr[static KD_WS_MAX_SERVER_HEADER], enum kd_ws_opcode op, bool fin,
				 size_t payload_len);
/* Whole control frames; payloads beyond 125 bytes are cut. Return lengths. */
size_t kd_ws_encode_pong(uint8_t out[static KD_WS_MAX_CONTROL_FRAME], const uint8_t *data, size_t len);
size_t kd_ws_encode_close(uint8_t out[static KD_WS_MAX_CONTROL_FRAME], uint16_t code, const char *reason);

#endif
