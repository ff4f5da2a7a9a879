// SPDX-License-Identifier: MIT
/* RFC 6455, server side, for DERP over WebSocket (spec §3.7). */
#include "websocket.h"

#include <errno.h>
#include <openssl/evp.h>
#include <string.h>
#include <strings.h>

#include "http_internal.h"

int kd_ws_accept_key(char out[static KD_WS_ACCEPT_LEN + 1], const char *key, size_t key_len)
{
	static const char guid[] = KD_WS_GUID;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	EVP_MD_CTX *ctx;
	int ok;

	out[0] = '\0';
	ctx = EVP_MD_CTX_new();
	if (!ctx)
		return -ENOMEM;
	ok = EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) && EVP_DigestUpdate(ctx, key, key_len) &&
	     EVP_DigestUpdate(ctx, guid, sizeof(guid) - 1) && EVP_DigestFinal_ex(ctx, md, &md_len);
	EVP_MD_CTX_free(ctx);
	if (!ok || md_len != 20)
		return -EINVAL;
	/* 20 bytes -> 28 chars plus the NUL EVP_EncodeBlock writes */
	if (EVP_EncodeBlock((unsigned char *)out, md, 20) != KD_WS_ACCEPT_LEN)
		return -EINVAL;
	return 0;
}

static bool is_b64(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* 16 bytes in padded standard base64 are always 22 chars + "==" */
static bool key_ok(const char *k, size_t n)
{
	if (n != 24 || k[22] != '=' || k[23] != '=')
		return false;
	for (size_t i = 0; i < 22; i++)
		if (!is_b64(k[i]))
			return false;
	return true;
}

static void ws_fail(struct kd_ws_handshake *hs, int status, const char *error, const char *extra)
{
	hs->status = status;
	hs->error = error;
	hs->extra = extra;
}

static void select_subprotocol(const struct kd_http_request *req, struct kd_ws_handshake *hs)
{
	for (size_t i = 0; i < req->num_headers; i++) {
		const struct kd_http_header *h = &req->headers[i];
		const char *v = h->value, *end = h->value + h->value_len;

		if (h->name_len != 22 || strncasecmp(h->name, "Sec-WebSocket-Protocol", 22) != 0)
			continue;
		while (v < end) {
			const char *s, *e;
			while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
				v++;
			s = v;
			while (v < end && *v != ',')
				v++;
			e = v;
			while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
				e--;
			if (e - s == 4 && strncasecmp(s, KD_WS_SUBPROTOCOL, 4) == 0) {
				hs->subprotocol = s;
				hs->subprotocol_len = 4;
				return;
			}
		}
	}
}

int kd_ws_check_handshake(const struct kd_http_request *req, struct kd_ws_handshake *hs)
{
	static const char upgrade_hdrs[] = "Connection: Upgrade\r\nUpgrade: websocket\r\n";
	const struct kd_http_header *key = NULL;
	size_t nkeys = 0;

	memset(hs, 0, sizeof(*hs));
	hs->status = 101;
	if (req->minor_version < 1)
		return ws_fail(hs, 426, "WebSocket protocol violation: handshake request must be at least HTTP/1.1\n",
			       upgrade_hdrs), 0;
	if (!kd_http_has_token(req, "Connection", "upgrade"))
		return ws_fail(hs, 426, "WebSocket protocol violation: Connection header does not contain Upgrade\n",
			       upgrade_hdrs), 0;
	if (!kd_http_has_token(req, "Upgrade", "websocket"))
		return ws_fail(hs, 426, "WebSocket protocol violation: Upgrade header does not contain websocket\n",
			       upgrade_hdrs), 0;
	if (!kd_http_method_is(req, "GET"))
		return ws_fail(hs, 405, "WebSocket protocol violation: handshake request method is not GET\n", NULL), 0;
	if (!kd_http_header_eq(kd_http_find(req, "Sec-WebSocket-Version"), "13", false))
		return ws_fail(hs, 400, "unsupported WebSocket protocol version (only 13 is supported)\n",
			       "Sec-WebSocket-Version: 13\r\n"), 0;
	for (size_t i = 0; i < req->num_headers; i++) {
		const struct kd_http_header *h = &req->headers[i];
		if (h->name_len == 17 && strncasecmp(h->name, "Sec-WebSocket-Key", 17) == 0) {
			key = h;
			nkeys++;
		}
	}
	if (nkeys == 0)
		return ws_fail(hs, 400, "WebSocket protocol violation: missing Sec-WebSocket-Key\n", NULL), 0;
	if (nkeys > 1)
		return ws_fail(hs, 400, "WebSocket protocol violation: multiple Sec-WebSocket-Key headers\n", NULL), 0;
	if (!key_ok(key->value, key->value_len))
		return ws_fail(hs, 400, "WebSocket protocol violation: invalid Sec-WebSocket-Key\n", NULL), 0;
	hs->key = key->value;
	hs->key_len = key->value_len;
	select_subprotocol(req, hs);
	return 0;
}

int kd_ws_handshake_response(char *out, size_t cap, size_t *out_len, const struct kd_ws_handshake *hs)
{
	struct kd_obuf b = {.p = out, .cap = cap};
	char accept[KD_WS_ACCEPT_LEN + 1];
	int rc;

	*out_len = 0;
	if (hs->status != 101 || !hs->key)
		return -EINVAL;
	rc = kd_ws_accept_key(accept, hs->key, hs->key_len);
	if (rc)
		return rc;
	kd_obuf_puts(&b, "HTTP/1.1 101 Switching Protocols\r\n"
			 "Upgrade: websocket\r\n"
			 "Connection: Upgrade\r\n"
			 "Sec-WebSocket-Accept: ");
	kd_obuf_put(&b, accept, KD_WS_ACCEPT_LEN);
	kd_obuf_puts(&b, "\r\n");
	if (hs->subprotocol) {
		kd_obuf_puts(&b, "Sec-WebSocket-Protocol: ");
		kd_obuf_put(&b, hs->subprotocol, hs->subprotocol_len);
		kd_obuf_puts(&b, "\r\n");
	}
	kd_obuf_puts(&b, "\r\n");
	if (b.overflow)
		return -ENOSPC;
	*out_len = b.len;
	return 0;
}

void kd_ws_decoder_init(struct kd_ws_decoder *d, size_t max_message)
{
	memset(d, 0, sizeof(*d));
	d->max_message = max_message ? max_message : KD_WS_MAX_MESSAGE;
	d->done = KD_WS_NEED_MORE;
}

static enum kd_ws_event fail(struct kd_ws_decoder *d, uint16_t code, const char *why)
{
	d->done = KD_WS_ERROR;
	d->close_code = code;
	d->error = why;
	return KD_WS_ERROR;
}

/* Header length once the first two bytes are known. */
static size_t header_need(const struct kd_ws_decoder *d)
{
	size_t n = 2;
	uint8_t l7;

	if (d->hdr_len < 2)
		return 2;
	l7 = d->hdr[1] & 0x7f;
	n += l7 == 126 ? 2 : l7 == 127 ? 8 : 0;
	return n + ((d->hdr[1] & 0x80) ? 4 : 0);
}

/* Checks that need only the first two bytes, so a bad stream is refused
 * before any length or mask arrives. */
static enum kd_ws_event check_first_bytes(struct kd_ws_decoder *d)
{
	uint8_t b0 = d->hdr[0], b1 = d->hdr[1];
	uint8_t op = b0 & 0x0f;
	bool fin = b0 & 0x80;

	if (b0 & 0x70)
		return fail(d, KD_WS_CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension negotiated)");
	if (!(b1 & 0x80))
		return fail(d, KD_WS_CLOSE_PROTOCOL_ERROR, "unmasked client frame");
	switch (op) {
	case KD_WS_OP_CONTINUATION:
		if (!d->in_message)
			return fail(d, KD_WS_CLOSE_PROTOCOL_ERROR, "continuation frame without a message");
		break;
	case KD_WS_OP_TEXT:
	case KD_WS_OP_BINARY:
		if (d->in_message)
			return fail(d, KD_WS_CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one");
		if (op == KD_WS_OP_TEXT)
			return fail(d, KD_WS_CLOSE_UNSUPPORTED_DATA, "text messages are not supported");
		break;
	case KD_WS_OP_CLOSE:
	case KD_WS_OP_PING:
	case KD_WS_OP_PONG:
		if (!fin || (b1 & 0x7f) > KD_WS_MAX_CONTROL_PAYLOAD)
			return fail(d, KD_WS_CLOSE_PROTOCOL_ERROR, "fragmented or oversized control frame");
		break;
	default:
		return fail(d, KD_WS_CLOSE_PROTOCOL_ERROR, "unknown opcode");
	}
	return KD_WS_NEED_MORE;
}

static enum kd_ws_event start_frame(struct kd_ws_decoder *d)
{
	const uint8_t *h = d->hdr;
	uint8_t l7 = h[1] & 0x7f;
	uint64_t len = l7;
	size_t off = 2;

	if (l7 == 126) {
		len = (uint64_t)h[2] << 8 | h[3];
		off = 4;
	} else if (l7 == 127) {
		len = 0;
		for (int i = 0; i < 8; i++)
			len = len << 8 | h[2 + i];
		off = 10;
		if (len >> 63)
			return fail(d, KD_WS_CLOSE_PROTOCOL_ERROR, "payload length has the top bit set");
	}
	memcpy(d->mask, h + off, 4);
	d->opcode = h[0] & 0x0f;
	d->fin = h[0] & 0x80;
	d->remaining = len;
	d->frame_off = 0;
	d->ctrl_len = 0;
	d->hdr_len = 0;
	d->in_frame = true;
	if (d->opcode == KD_WS_OP_BINARY || d->opcode == KD_WS_OP_CONTINUATION) {
		if (d->opcode == KD_WS_OP_BINARY)
			d->message_len = 0;
		if (len > d->max_message - d->message_len)
			return fail(d, KD_WS_CLOSE_TOO_BIG, "message too big");
		d->message_len += len;
		d->in_message = !d->fin;
	}
	return KD_WS_NEED_MORE;
}

static bool close_code_ok(uint16_t c)
{
	/* RFC 6455 §7.4: 1004-1006 and 1015 are never sent; 1016-2999 unassigned */
	return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

static enum kd_ws_event finish_control(struct kd_ws_decoder *d, uint8_t **payload, size_t *payload_len)
{
	switch (d->opcode) {
	case KD_WS_OP_PING:
		*payload = d->ctrl;
		*payload_len = d->ctrl_len;
		return KD_WS_PING;
	case KD_WS_OP_PONG:
		return KD_WS_PONG;
	default: /* close */
		if (d->ctrl_len == 1)
			return fail(d, KD_WS_CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload");
		d->close_code = KD_WS_CLOSE_NO_STATUS;
		if (d->ctrl_len >= 2) {
			d->close_code = (uint16_t)(d->ctrl[0] << 8 | d->ctrl[1]);
			if (!close_code_ok(d->close_code))
				return fail(d, KD_WS_CLOSE_PROTOCOL_ERROR, "invalid close code");
			*payload = d->ctrl + 2;
			*payload_len = d->ctrl_len - 2;
		}
		d->done = KD_WS_CLOSE;
		return KD_WS_CLOSE;
	}
}

enum kd_ws_event kd_ws_decode(struct kd_ws_decoder *d, uint8_t *buf, size_t len, size_t *consumed,
			      uint8_t **payload, size_t *payload_len)
{
	size_t p = 0;
	enum kd_ws_event ev;

	*consumed = 0;
	*payload = NULL;
	*payload_len = 0;
	if (d->done != KD_WS_NEED_MORE)
		return d->done;
	for (;;) {
		if (!d->in_frame) {
			while (d->hdr_len < header_need(d)) {
				if (p == len) {
					*consumed = p;
					return KD_WS_NEED_MORE;
				}
				d->hdr[d->hdr_len++] = buf[p++];
				if (d->hdr_len == 2 && check_first_bytes(d) != KD_WS_NEED_MORE) {
					*consumed = p;
					return KD_WS_ERROR;
				}
			}
			if (start_frame(d) != KD_WS_NEED_MORE) {
				*consumed = p;
				return KD_WS_ERROR;
			}
		}

		size_t n = d->remaining < len - p ? (size_t)d->remaining : len - p;
		uint8_t *dst = d->opcode >= KD_WS_OP_CLOSE ? d->ctrl + d->ctrl_len : buf + p;

		for (size_t i = 0; i < n; i++)
			dst[i] = buf[p + i] ^ d->mask[(d->frame_off + i) & 3];
		d->frame_off += n;
		d->remaining -= n;
		if (d->opcode >= KD_WS_OP_CLOSE)
			d->ctrl_len += n;
		p += n;
		if (d->remaining == 0)
			d->in_frame = false;

		if (d->opcode < KD_WS_OP_CLOSE) {
			if (n) {
				*payload = dst;
				*payload_len = n;
				*consumed = p;
				return KD_WS_DATA;
			}
			if (d->in_frame) { /* input exhausted mid-frame */
				*consumed = p;
				return KD_WS_NEED_MORE;
			}
			continue; /* an empty data frame: nothing to report */
		}
		if (d->in_frame) {
			*consumed = p;
			return KD_WS_NEED_MORE;
		}
		ev = finish_control(d, payload, payload_len);
		*consumed = p;
		return ev;
	}
}

int kd_ws_unwrap(struct kd_ws_decoder *d, uint8_t *buf, size_t len, size_t *consumed, size_t *derp_len,
		 uint8_t *reply, size_t reply_cap, size_t *reply_len)
{
	size_t off = 0, out = 0;
	int rc = 0;

	if (d->done != KD_WS_NEED_MORE) { /* already answered */
		*consumed = len;
		*derp_len = 0;
		return d->done == KD_WS_CLOSE ? 1 : -EPROTO;
	}
	while (off < len && rc == 0 && reply_cap - *reply_len >= KD_WS_MAX_CONTROL_FRAME) {
		uint8_t *pl, *r = reply + *reply_len;
		size_t pll, used;
		enum kd_ws_event ev = kd_ws_decode(d, buf + off, len - off, &used, &pl, &pll);

		off += used;
		switch (ev) {
		case KD_WS_DATA:
			/* the payload sits at or after out: a forward-safe move */
			memmove(buf + out, pl, pll);
			out += pll;
			break;
		case KD_WS_PING:
			*reply_len += kd_ws_encode_pong(r, pl, pll);
			break;
		case KD_WS_CLOSE:
			*reply_len += kd_ws_encode_close(r, d->close_code, NULL);
			rc = 1;
			break;
		case KD_WS_ERROR:
			*reply_len += kd_ws_encode_close(r, d->close_code, d->error);
			rc = -EPROTO;
			break;
		case KD_WS_PONG:
		case KD_WS_NEED_MORE:
			break;
		}
	}
	/* a finished stream swallows whatever follows it */
	if (rc != 0)
		off = len;
	*consumed = off;
	*derp_len = out;
	return rc;
}

size_t kd_ws_encode_frame_header(uint8_t hdr[static KD_WS_MAX_SERVER_HEADER], enum kd_ws_opcode op, bool fin,
				 size_t payload_len)
{
	hdr[0] = (uint8_t)((fin ? 0x80 : 0) | op);
	if (payload_len < 126) {
		hdr[1] = (uint8_t)payload_len;
		return 2;
	}
	if (payload_len <= 0xffff) {
		hdr[1] = 126;
		hdr[2] = (uint8_t)(payload_len >> 8);
		hdr[3] = (uint8_t)payload_len;
		return 4;
	}
	hdr[1] = 127;
	for (int i = 0; i < 8; i++)
		hdr[2 + i] = (uint8_t)((uint64_t)payload_len >> (56 - 8 * i));
	return 10;
}

size_t kd_ws_encode_header(uint8_t hdr[static KD_WS_MAX_SERVER_HEADER], size_t payload_len)
{
	return kd_ws_encode_frame_header(hdr, KD_WS_OP_BINARY, true, payload_len);
}

size_t kd_ws_encode_pong(uint8_t out[static KD_WS_MAX_CONTROL_FRAME], const uint8_t *data, size_t len)
{
	if (len > KD_WS_MAX_CONTROL_PAYLOAD)
		len = KD_WS_MAX_CONTROL_PAYLOAD;
	out[0] = 0x80 | KD_WS_OP_PONG;
	out[1] = (uint8_t)len;
	if (len)
		memcpy(out + 2, data, len);
	return 2 + len;
}

size_t kd_ws_encode_close(uint8_t out[static KD_WS_MAX_CONTROL_FRAME], uint16_t code, const char *reason)
{
	size_t rlen = reason ? strlen(reason) : 0;

	out[0] = 0x80 | KD_WS_OP_CLOSE;
	/* 1005 means "there was no code": echo an empty close */
	if (code == 0 || code == KD_WS_CLOSE_NO_STATUS) {
		out[1] = 0;
		return 2;
	}
	if (rlen > KD_WS_MAX_CONTROL_PAYLOAD - 2)
		rlen = KD_WS_MAX_CONTROL_PAYLOAD - 2;
	out[1] = (uint8_t)(2 + rlen);
	out[2] = (uint8_t)(code >> 8);
	out[3] = (uint8_t)code;
	if (rlen)
		memcpy(out + 4, reason, rlen);
	return 4 + rlen;
}
