// SPDX-License-Identifier: MIT
/* Both STUN parsers on arbitrary bytes; an accepted request must round-trip
 * through the response builder and the client parser. */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "stun.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t txid[STUN_TXID_LEN] = {0}, resp[STUN_RESPONSE_MAX_LEN];
	struct sockaddr_storage mapped;
	struct sockaddr_in6 src = {.sin6_family = AF_INET6, .sin6_port = htons(41641)};

	/* exact-size copy so ASan catches any read past the datagram */
	uint8_t *buf = malloc(size ? size : 1);

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	if (kd_stun_parse_request(buf, size, txid) == KD_STUN_OK) {
		size_t n = kd_stun_build_response(resp, sizeof(resp), txid, (struct sockaddr *)&src);

		if (n != STUN_RESPONSE_V6_LEN || kd_stun_parse_response(resp, n, txid, &mapped) != 0 ||
		    mapped.ss_family != AF_INET6)
			abort();
	}
	if (size >= STUN_HDR_LEN)
		memcpy(txid, buf + 8, STUN_TXID_LEN);
	(void)kd_stun_parse_response(buf, size, txid, &mapped);
	free(buf);
	return 0;
}
