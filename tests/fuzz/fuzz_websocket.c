// SPDX-License-Identifier: MIT
/* libFuzzer harness for the WebSocket frame decoder. Input: one byte picking
 * the chunk size and message limit, then client bytes. The same stream fed in
 * chunks must give the same data and the same final event as fed whole. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "websocket.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
	uint8_t data[1 << 16];
	size_t len;
	enum kd_ws_event last;
	uint16_t code;
};

static void run_decoder(const uint8_t *in, size_t size, size_t chunk, size_t max, struct run *r)
{
	struct kd_ws_decoder d;
	uint8_t *buf = malloc(size ? size : 1);
	size_t off = 0;

	if (!buf)
		abort();
	memcpy(buf, in, size);
	kd_ws_decoder_init(&d, max);
	r->len = 0;
	r->last = KD_WS_NEED_MORE;
	while (off < size) {
		size_t end = chunk && off + chunk < size ? off + chunk : size;
		while (off < end) {
			uint8_t *pl;
			size_t pll, used;
			enum kd_ws_event ev = kd_ws_decode(&d, buf + off, end - off, &used, &pl, &pll);

			if (used > end - off)
				abort();
			if (ev == KD_WS_DATA) {
				if (pl < buf + off || pl + pll > buf + off + used || pll == 0)
					abort();
				if (r->len + pll <= sizeof(r->data))
					memcpy(r->data + r->len, pl, pll);
				r->len += pll;
			} else if (ev == KD_WS_PING) {
				uint8_t pong[KD_WS_MAX_CONTROL_FRAME];
				if (pll > KD_WS_MAX_CONTROL_PAYLOAD || kd_ws_encode_pong(pong, pl, pll) != 2 + pll)
					abort();
			}
			off += used;
			if (ev == KD_WS_NEED_MORE) {
				if (off != end)
					abort();
				break;
			}
			if (ev == KD_WS_CLOSE || ev == KD_WS_ERROR) {
				r->last = ev;
				r->code = d.close_code;
				free(buf);
				return;
			}
		}
	}
	free(buf);
}

/* kd_ws_unwrap must yield the same DERP bytes and end as the events do */
static void run_unwrap(const uint8_t *in, size_t size, size_t max, const struct run *want)
{
	static uint8_t got[1 << 16];
	struct kd_ws_decoder d;
	uint8_t *buf = malloc(size ? size : 1), reply[KD_WS_MAX_CONTROL_FRAME + 7];
	size_t off = 0, total = 0;
	int rc = 0;

	if (!buf)
		abort();
	memcpy(buf, in, size);
	kd_ws_decoder_init(&d, max);
	while (off < size && rc == 0) {
		size_t used, dl, rl = 0;
		rc = kd_ws_unwrap(&d, buf + off, size - off, &used, &dl, reply, sizeof(reply), &rl);
		if (used > size - off || dl > used || rl > sizeof(reply) || (used == 0 && rc == 0))
			abort();
		if (total + dl <= sizeof(got))
			memcpy(got + total, buf + off, dl);
		total += dl;
		off += used;
	}
	if (total != want->len || (rc == 1) != (want->last == KD_WS_CLOSE) ||
	    (rc == -EPROTO) != (want->last == KD_WS_ERROR))
		abort();
	if (total <= sizeof(got) && memcmp(got, want->data, total) != 0)
		abort();
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct run whole, split;
	size_t chunk, max;

	if (size < 1)
		return 0;
	chunk = (data[0] & 15) + 1;
	max = (data[0] & 16) ? 300 : 0;
	data++;
	size--;
	run_decoder(data, size, 0, max, &whole);
	run_decoder(data, size, chunk, max, &split);
	if (whole.len != split.len || whole.last != split.last ||
	    (whole.last != KD_WS_NEED_MORE && whole.code != split.code))
		abort();
	if (whole.len <= sizeof(whole.data) && memcmp(whole.data, split.data, whole.len) != 0)
		abort();
	run_unwrap(data, size, max, &whole);
	return 0;
}
