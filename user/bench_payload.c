// SPDX-License-Identifier: MIT
#include "bench_payload.h"

#include <string.h>

uint32_t kd_bench_check(uint64_t seq, uint32_t pair)
{
	uint64_t x = seq * 0x9e3779b97f4a7c15ull ^ ((uint64_t)pair << 17 | pair);

	x ^= x >> 29;
	return (uint32_t)(x ^ (x >> 32)) | 1u;
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint64_t get_be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The trailer catches a truncated or shifted payload without reading (and
 * paying for) every byte of it. */
void kd_bench_fill(uint8_t *buf, size_t size, uint64_t seq, uint32_t pair)
{
	uint32_t ck = kd_bench_check(seq, pair);

	put_be64(buf, seq);
	put_be32(buf + 8, pair);
	put_be32(buf + 12, ck);
	if (size >= KD_BENCH_HDR_LEN + 4)
		put_be32(buf + size - 4, ~ck);
}

enum kd_bench_verdict kd_bench_verify(struct kd_bench_rx *rx, uint32_t pair, size_t size,
				      const uint8_t want_key[32], const uint8_t key[32], const uint8_t *data,
				      size_t len, uint64_t *gap)
{
	uint64_t seq;
	uint32_t ck;

	*gap = 0;
	if (len != size || len < KD_BENCH_HDR_LEN || memcmp(key, want_key, 32) != 0)
		return KD_BENCH_CORRUPT;
	seq = get_be64(data);
	ck = get_be32(data + 12);
	if (get_be32(data + 8) != pair || ck != kd_bench_check(seq, pair) ||
	    (len >= KD_BENCH_HDR_LEN + 4 && get_be32(data + len - 4) != ~ck))
		return KD_BENCH_CORRUPT;
	if (seq == rx->expect_seq) {
		rx->expect_seq++;
		return KD_BENCH_IN_ORDER;
	}
	if (seq > rx->expect_seq) {
		*gap = seq - rx->expect_seq;
		rx->expect_seq = seq + 1;
		return KD_BENCH_GAP;
	}
	return KD_BENCH_LATE;
}
