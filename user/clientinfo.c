// SPDX-License-Identifier: MIT
#include "clientinfo.h"

#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "json.h"
#include "key.h"

/* Reads a member's value; null keeps the previous value, as Go does. */
static int read_bool(struct kd_json *js, bool *v)
{
	if (kd_json_peek(js) == KD_JSON_NULL)
		return kd_json_get_null(js);
	return kd_json_get_bool(js, v);
}

static int read_mesh_key(struct kd_json *js, struct kd_client_info *ci)
{
	struct kd_json_str s;
	char hex[KD_KEY_HEX_LEN + 1];
	uint8_t key[DERP_KEY_LEN];
	size_t n;
	int r;

	/* null too is an error here: the reference's key type rejects it */
	r = kd_json_get_string(js, &s);
	if (r)
		return r;
	n = kd_json_unescape(&s, hex, sizeof(hex));
	r = n == KD_KEY_HEX_LEN ? kd_hex_decode(key, sizeof(key), hex, n) : -EINVAL;
	sodium_memzero(hex, sizeof(hex));
	if (r)
		return r;
	ci->has_mesh_key = !kd_key_is_zero(key);
	memcpy(ci->mesh_key, key, sizeof(key));
	sodium_memzero(key, sizeof(key));
	return 0;
}

static int read_member(struct kd_json *js, const struct kd_json_str *name,
		       struct kd_client_info *ci)
{
	struct kd_json_str s;
	int r;

	if (kd_json_str_eq_ci(name, "meshKey"))
		return read_mesh_key(js, ci);
	if (kd_json_str_eq_ci(name, "version")) {
		if (kd_json_peek(js) == KD_JSON_NULL)
			return kd_json_get_null(js);
		return kd_json_get_int(js, &ci->version);
	}
	if (kd_json_str_eq_ci(name, "CanAckPings"))
		return read_bool(js, &ci->can_ack_pings);
	if (kd_json_str_eq_ci(name, "IsProber"))
		return read_bool(js, &ci->is_prober);
	if (kd_json_str_eq_ci(name, "AppName")) {
		if (kd_json_peek(js) == KD_JSON_NULL)
			return kd_json_get_null(js);
		r = kd_json_get_string(js, &s);
		if (r == 0)
			kd_json_unescape(&s, ci->app_name, sizeof(ci->app_name));
		return r;
	}
	return kd_json_skip_value(js);
}

static int parse(struct kd_json *js, struct kd_client_info *ci)
{
	struct kd_json_str name;
	int r;

	if (kd_json_peek(js) == KD_JSON_NULL) {
		r = kd_json_get_null(js);
	} else {
		r = kd_json_object_begin(js);
		if (r)
			return r;
		while ((r = kd_json_object_next(js, &name)) == 1) {
			r = read_member(js, &name, ci);
			if (r)
				return r;
		}
	}
	return r ? r : kd_json_end(js);
}

int kd_client_info_parse(const uint8_t *json, size_t len, struct kd_client_info *out)
{
	struct kd_json js;
	int r;

	memset(out, 0, sizeof(*out));
	r = kd_json_init(&js, json, len, len);
	if (r == 0)
		r = parse(&js, out);
	if (r) {
		sodium_memzero(out, sizeof(*out));
		return -EINVAL;
	}
	return 0;
}

int kd_client_info_format(char *out, size_t cap, const struct kd_client_info *ci)
{
	char hex[KD_KEY_HEX_LEN + 1];
	size_t o = 0;
	int n;

#define APPEND(...)                                                          \
	do {                                                                 \
		n = snprintf(out + o, cap - o, __VA_ARGS__);                 \
		if (n < 0 || (size_t)n >= cap - o)                           \
			goto nospc;                                          \
		o += (size_t)n;                                              \
	} while (0)

	if (cap == 0)
		return -ENOSPC;
	APPEND("{");
	if (ci->has_mesh_key && !kd_key_is_zero(ci->mesh_key)) {
		kd_hex_encode(hex, ci->mesh_key, DERP_KEY_LEN);
		APPEND("\"meshKey\":\"%s\",", hex);
		sodium_memzero(hex, sizeof(hex));
	}
	if (ci->version != 0)
		APPEND("\"version\":%" PRId64 ",", ci->version);
	APPEND("\"CanAckPings\":%s", ci->can_ack_pings ? "true" : "false");
	if (ci->is_prober)
		APPEND(",\"IsProber\":true");
	if (ci->app_name[0] != '\0') {
		APPEND(",\"AppName\":");
		n = kd_json_escape(out + o, cap - o, ci->app_name,
				   strnlen(ci->app_name, sizeof(ci->app_name)));
		if (n < 0)
			goto nospc;
		o += (size_t)n;
	}
	APPEND("}");
#undef APPEND
	return (int)o;
nospc:
	sodium_memzero(hex, sizeof(hex));
	out[0] = '\0';
	return -ENOSPC;
}
