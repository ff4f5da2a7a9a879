// SPDX-License-Identifier: MIT
/* The client's pure codec: frame parser, HTTP response head, ClientInfo JSON,
 * URL split. No allocation, logging or I/O here (fuzzed by
 * tests/fuzz/fuzz_client_frames.c). */
#include "client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "key.h"

static uint32_t get_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

int kd_client_parse_frame(const uint8_t *buf, size_t len, struct kd_client_msg *m, size_t *consumed)
{
	const struct derp_frame_hdr *h = (const void *)buf;
	const uint8_t *p;
	uint32_t n;

	if (!buf || len < DERP_FRAME_HDR_LEN)
		return -EAGAIN;
	n = derp_hdr_len(h);
	if (n > DERP_MAX_INFO_LEN)
		return -EMSGSIZE;
	if (len - DERP_FRAME_HDR_LEN < n)
		return -EAGAIN;
	*consumed = DERP_FRAME_HDR_LEN + (size_t)n;

	p = buf + DERP_FRAME_HDR_LEN;
	memset(m, 0, sizeof(*m));
	m->type = h->type;
	m->len = n;
	m->payload = p;

	switch (h->type) {
	case DERP_FRAME_SERVER_KEY:
		if (n < DERP_SERVER_KEY_PAYLOAD || n > DERP_MAX_SERVER_KEY_FRAME)
			return -EBADMSG;
		m->key = p + DERP_MAGIC_LEN;
		break;
	case DERP_FRAME_RECV_PACKET:
		if (n < DERP_KEY_LEN)
			return -EBADMSG;
		m->key = p;
		m->data = p + DERP_KEY_LEN;
		m->data_len = n - DERP_KEY_LEN;
		break;
	case DERP_FRAME_PEER_GONE:
		if (n < DERP_KEY_LEN)
			return -EBADMSG;
		m->key = p;
		/* the 32-byte form predates the reason byte: Disconnected */
		m->reason = n > DERP_KEY_LEN ? p[DERP_KEY_LEN] : DERP_PEER_GONE_DISCONNECTED;
		break;
	case DERP_FRAME_PEER_PRESENT:
		if (n < DERP_KEY_LEN)
			return -EBADMSG;
		m->key = p;
		/* 32 (old servers), 50 (no flags), 51+ (flags, then future bytes) */
		if (n >= DERP_KEY_LEN + 18) {
			memcpy(m->ip, p + DERP_KEY_LEN, 16);
			m->port = (uint16_t)((p[DERP_KEY_LEN + 16] << 8) | p[DERP_KEY_LEN + 17]);
		}
		if (n >= DERP_PEER_PRESENT_LEN)
			m->flags = p[DERP_KEY_LEN + 18];
		break;
	case DERP_FRAME_PING:
	case DERP_FRAME_PONG:
		if (n < DERP_PING_LEN)
			return -EBADMSG;
		m->data = p;
		m->data_len = DERP_PING_LEN;
		break;
	case DERP_FRAME_RESTARTING:
		if (n < DERP_RESTARTING_LEN)
			return -EBADMSG;
		m->reconnect_in_ms = get_be32(p);
		m->try_for_ms = get_be32(p + 4);
		break;
	case DERP_FRAME_HEALTH:
		m->data = p;
		m->data_len = n;
		break;
	case DERP_FRAME_SERVER_INFO:
		if (n < DERP_NONCE_LEN)
			return -EBADMSG;
		m->data = p;
		m->data_len = n;
		break;
	default:
		/* KeepAlive and types from the future: the caller decides */
		break;
	}
	return 0;
}

int kd_client_parse_http_response(const char *buf, size_t len, int *status, size_t *consumed)
{
	const char *end = NULL;
	int st = 0;

	/* status line "HTTP/1.x NNN" must be plausible before we wait for more */
	static const char pfx[] = "HTTP/1.";
	if (len == 0)
		return -EAGAIN;
	size_t cmp = len < sizeof(pfx) - 1 ? len : sizeof(pfx) - 1;
	if (cmp && memcmp(buf, pfx, cmp) != 0) /* buf may be NULL when len is 0 */
		return -EBADMSG;
	for (size_t i = 0; i + 3 < len; i++) {
		if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n') {
			end = buf + i + 4;
			break;
		}
	}
	if (!end)
		return -EAGAIN;
	/* "HTTP/1.1 101 ..." : version digit, space, three digits, space or CR */
	if ((size_t)(end - buf) < 16 || (buf[7] != '0' && buf[7] != '1') || buf[8] != ' ')
		return -EBADMSG;
	for (int i = 9; i < 12; i++) {
		if (buf[i] < '0' || buf[i] > '9')
			return -EBADMSG;
		st = st * 10 + (buf[i] - '0');
	}
	if (buf[12] != ' ' && buf[12] != '\r')
		return -EBADMSG;
	*status = st;
	*consumed = (size_t)(end - buf);
	return 0;
}

int kd_client_parse_server_info(const char *json, size_t len, struct kd_client_server_info *si)
{
	struct kd_json js;
	struct kd_json_str key;
	int r;

	memset(si, 0, sizeof(*si));
	if (kd_json_init(&js, json, len, DERP_MAX_INFO_LEN))
		return -EBADMSG;
	if (kd_json_peek(&js) == KD_JSON_NULL) {
		kd_json_get_null(&js);
		return kd_json_end(&js) ? -EBADMSG : 0;
	}
	if (kd_json_object_begin(&js))
		return -EBADMSG;
	while ((r = kd_json_object_next(&js, &key)) == 1) {
		int64_t *dst = NULL;

		if (kd_json_str_eq_ci(&key, "version"))
			dst = &si->version;
		else if (kd_json_str_eq_ci(&key, "TokenBucketBytesPerSecond"))
			dst = &si->token_bucket_bytes_per_sec;
		else if (kd_json_str_eq_ci(&key, "TokenBucketBytesBurst"))
			dst = &si->token_bucket_bytes_burst;
		if (!dst)
			r = kd_json_skip_value(&js);
		else if (kd_json_peek(&js) == KD_JSON_NULL)
			r = kd_json_get_null(&js);
		else
			r = kd_json_get_int(&js, dst);
		if (r)
			return -EBADMSG;
	}
	if (r < 0 || kd_json_end(&js))
		return -EBADMSG;
	return 0;
}

int kd_client_parse_server_key(const uint8_t *payload, size_t len, uint8_t key[static 32])
{
	if (len < DERP_SERVER_KEY_PAYLOAD || len > DERP_MAX_SERVER_KEY_FRAME)
		return -EBADMSG;
	if (memcmp(payload, DERP_MAGIC, DERP_MAGIC_LEN) != 0)
		return -EBADMSG;
	memcpy(key, payload + DERP_MAGIC_LEN, DERP_KEY_LEN);
	return 0;
}

/* JSON string body escaping: quotes, backslash and control characters. */
static int put_json_str(char *out, size_t cap, size_t *pos, const char *s)
{
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		char tmp[8];
		size_t n;

		if (ch == '"' || ch == '\\') {
			tmp[0] = '\\';
			tmp[1] = (char)ch;
			n = 2;
		} else if (ch < 0x20) {
			n = (size_t)snprintf(tmp, sizeof(tmp), "\\u%04x", ch);
		} else {
			tmp[0] = (char)ch;
			n = 1;
		}
		if (*pos + n >= cap)
			return -ENOSPC;
		memcpy(out + *pos, tmp, n);
		*pos += n;
	}
	return 0;
}

static int put_raw(char *out, size_t cap, size_t *pos, const char *s)
{
	size_t n = strlen(s);

	if (*pos + n >= cap)
		return -ENOSPC;
	memcpy(out + *pos, s, n);
	*pos += n;
	out[*pos] = '\0';
	return 0;
}

int kd_client_info_json(char *out, size_t cap, const struct kd_client_opts *o)
{
	char hex[2 * DERP_KEY_LEN + 1];
	size_t pos = 0;
	int err = 0;

	if (cap == 0)
		return -ENOSPC;
	out[0] = '\0';
	/* Go's encoding/json order: meshKey, version, CanAckPings, IsProber, AppName */
	err |= put_raw(out, cap, &pos, "{");
	if (o->mesh_key && !kd_key_is_zero(o->mesh_key)) {
		kd_hex_encode(hex, o->mesh_key, DERP_KEY_LEN);
		err |= put_raw(out, cap, &pos, "\"meshKey\":\"");
		err |= put_raw(out, cap, &pos, hex);
		err |= put_raw(out, cap, &pos, "\",");
	}
	err |= put_raw(out, cap, &pos, "\"version\":2,\"CanAckPings\":");
	err |= put_raw(out, cap, &pos, o->can_ack_pings ? "true" : "false");
	if (o->is_prober)
		err |= put_raw(out, cap, &pos, ",\"IsProber\":true");
	if (o->app_name && o->app_name[0]) {
		err |= put_raw(out, cap, &pos, ",\"AppName\":\"");
		if (!err)
			err |= put_json_str(out, cap, &pos, o->app_name);
		err |= put_raw(out, cap, &pos, "\"");
	}
	err |= put_raw(out, cap, &pos, "}");
	if (err)
		return -ENOSPC;
	return (int)pos;
}

int kd_client_url_parse(struct kd_client_url *u, const char *url)
{
	const char *p, *host, *host_end, *port_s = NULL, *path;
	size_t hlen;
	unsigned long port;
	bool bracket = false;

	memset(u, 0, sizeof(*u));
	if (strncmp(url, "http://", 7) == 0) {
		p = url + 7;
	} else if (strncmp(url, "https://", 8) == 0) {
		u->tls = true;
		p = url + 8;
	} else {
		return -EINVAL;
	}
	host = p;
	if (*p == '[') {
		bracket = true;
		host = ++p;
		host_end = strchr(p, ']');
		if (!host_end)
			return -EINVAL;
		p = host_end + 1;
	} else {
		host_end = p + strcspn(p, ":/?#");
		p = host_end;
	}
	if (*p == ':') {
		port_s = ++p;
		p += strcspn(p, "/?#");
	} else if (*p && *p != '/' && *p != '?' && *p != '#') {
		return -EINVAL;
	}
	path = p;
	hlen = (size_t)(host_end - host);
	if (hlen == 0 || hlen >= sizeof(u->host))
		return -EINVAL;
	memcpy(u->host, host, hlen);
	u->host[hlen] = '\0';
	if (port_s) {
		char *end;

		if (port_s == p)
			return -EINVAL;
		port = strtoul(port_s, &end, 10);
		if (end != p || port == 0 || port > 65535)
			return -EINVAL;
		u->port = (uint16_t)port;
	} else {
		u->port = u->tls ? 443 : 80;
	}
	if (*path != '/') {
		snprintf(u->path, sizeof(u->path), "/derp");
	} else {
		if (strlen(path) >= sizeof(u->path))
			return -EINVAL;
		snprintf(u->path, sizeof(u->path), "%s", path);
	}
	/* Go's Host header: the default port is left out */
	if (u->port == (u->tls ? 443 : 80))
		snprintf(u->host_header, sizeof(u->host_header), bracket ? "[%s]" : "%s", u->host);
	else
		snprintf(u->host_header, sizeof(u->host_header), bracket ? "[%s]:%u" : "%s:%u",
			 u->host, u->port);
	return 0;
}
