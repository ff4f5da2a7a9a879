// SPDX-License-Identifier: MIT
/* libFuzzer harness for the HTTP request parser and the router behind it.
 * Input: one selector byte (route options), then request bytes. Besides the
 * sanitizers it checks the parser's promises: never consume more than given,
 * every strict prefix of an accepted request is "incomplete", and the result
 * does not depend on trailing bytes. */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "websocket.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t server_pub[32] = {0xa4, 0xe0, 0x92, 0x92};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char out[7 * KD_HTTP_MAX_REQUEST];
	struct kd_http_request req, req2;
	struct kd_http_route_opts o = {.server_pub = server_pub};
	struct kd_http_result res;
	struct sockaddr_in peer = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
	static const char *const homes[] = {"", "blank", "https://example.com/", NULL};
	size_t out_len;
	uint8_t sel;
	char *buf;
	int rc;

	if (size < 1)
		return 0;
	sel = data[0];
	data++;
	size--;
	/* exact-size copy so ASan sees any read past the end */
	buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);

	rc = kd_http_parse_request(buf, size, &req);
	if (rc > 0) {
		if ((size_t)rc > size || (size_t)rc > KD_HTTP_MAX_REQUEST)
			abort();
		if (kd_http_parse_request(buf, (size_t)rc - 1, &req2) != KD_HTTP_PARSE_INCOMPLETE)
			abort();
		if (kd_http_parse_request(buf, (size_t)rc, &req2) != rc || req2.num_headers != req.num_headers)
			abort();

		char v[64];
		(void)kd_http_query_param(&req, "debugkey", v, sizeof(v));
		(void)kd_http_has_token(&req, "Connection", "upgrade");

		o.derp_enabled = sel & 1;
		o.port80_redirect = sel & 2;
		o.dev = sel & 4;
		o.home = homes[(sel >> 3) & 3];
		o.debug_allowed = kd_http_debug_allowed(&req, (struct sockaddr *)&peer, (sel & 32) ? "k" : NULL);
		if (kd_http_route(&req, &o, &res, out, sizeof(out), &out_len) == 0) {
			if (out_len > sizeof(out))
				abort();
			if (res.action == KD_HTTP_UPGRADE_DERP && !res.fast_start && out_len != KD_HTTP_DERP_UPGRADE_LEN)
				abort();
			if (res.action == KD_HTTP_UPGRADE_DERP && res.fast_start && out_len != 0)
				abort();
		}
	} else if (rc == KD_HTTP_PARSE_MALFORMED) {
		int st = kd_http_parse_error_status(buf, size);
		if (st != 400 && st != 431)
			abort();
		if (kd_http_parse_error_response(buf, size, out, sizeof(out), &out_len))
			abort();
	} else if (rc != KD_HTTP_PARSE_INCOMPLETE) {
		abort();
	}
	free(buf);
	return 0;
}
