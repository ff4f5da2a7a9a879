// SPDX-License-Identifier: MIT
/* The client's parsers on arbitrary bytes: a stream of frames (as
 * kd_client_poll walks it), the HTTP response head, the ServerKey payload
 * the ServerInfo JSON and the URL splitter. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kd_client_msg m;
	size_t off = 0, used;
	uint8_t key[32];
	int status;

	while (off < size) {
		int err = kd_client_parse_frame(data + off, size - off, &m, &used);

		if (err == -EAGAIN || err == -EMSGSIZE)
			break;
		if (err != 0 && err != -EBADMSG)
			abort();
		if (used < DERP_FRAME_HDR_LEN || used > size - off)
			abort();
		if (err == 0) {
			/* every pointer the parser hands out lies inside the frame */
			const uint8_t *end = data + off + used;

			if (m.key && m.key + 32 > end)
				abort();
			if (m.data && m.data + m.data_len > end)
				abort();
			if (m.type == DERP_FRAME_SERVER_KEY)
				kd_client_parse_server_key(m.payload, m.len, key);
		}
		off += used;
	}

	if (kd_client_parse_http_response((const char *)data, size, &status, &used) == 0 &&
	    (used > size || status < 0 || status > 999))
		abort();

	{
		struct kd_client_server_info si;

		kd_client_parse_server_info((const char *)data, size, &si);
	}

	if (size < 512) {
		char url[512];
		struct kd_client_url u;

		memcpy(url, data, size);
		url[size] = '\0';
		if (kd_client_url_parse(&u, url) == 0 && (u.port == 0 || !u.host[0]))
			abort();
	}
	return 0;
}
