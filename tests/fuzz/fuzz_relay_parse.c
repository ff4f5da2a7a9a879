// SPDX-License-Identifier: MIT
/* Walks arbitrary bytes as a DERP stream the way the sockmap parser and
 * verdict do, checking the invariants the kernel side relies on. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "relay_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t src[DERP_KEY_LEN] = {1, 2, 3};
	size_t off = 0;

	while (size - off >= DERP_FRAME_HDR_LEN) {
		struct derp_frame_hdr h;
		struct derp_packet_hdr ph;
		enum kd_relay_reason r;
		uint32_t flen;

		memcpy(&h, data + off, sizeof(h));
		flen = kd_relay_frame_len(&h);
		if (!flen) {
			if (derp_hdr_len(&h) <= KD_RELAY_MAX_FRAME - DERP_FRAME_HDR_LEN)
				abort();
			return 0; /* the kernel aborts the socket here */
		}
		if (flen < DERP_FRAME_HDR_LEN || flen > KD_RELAY_MAX_FRAME ||
		    flen != DERP_FRAME_HDR_LEN + derp_hdr_len(&h))
			abort();
		r = kd_relay_classify(&h);
		if (r != KD_RELAY_REDIRECTED && r != KD_RELAY_PASSED_CONTROL &&
		    r != KD_RELAY_PASSED_SHORT_FRAME)
			abort();
		if (r == KD_RELAY_REDIRECTED) {
			/* the rewrite keeps the length and fits in the frame */
			if (flen < sizeof(ph))
				abort();
			kd_relay_recv_prefix(&ph, &h, src);
			if (derp_hdr_len(&ph.h) != derp_hdr_len(&h) ||
			    ph.h.type != DERP_FRAME_RECV_PACKET || memcmp(ph.key, src, sizeof(src)))
				abort();
		}
		if (kd_relay_is_route(&h) && flen != KD_RELAY_ROUTE_LEN)
			abort();
		if (flen > size - off)
			return 0; /* strparser would wait for more */
		off += flen;
	}
	return 0;
}
