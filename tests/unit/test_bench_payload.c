// SPDX-License-Identifier: MIT
/* derp-bench's receiver verdicts: what it reports as loss, out-of-order and
 * corrupt is what happened to the packets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "bench_payload.h"

static const uint8_t src[32] = {1, 2, 3}, other[32] = {9};

static enum kd_bench_verdict rx(struct kd_bench_rx *r, uint32_t pair, const uint8_t *buf, size_t len,
				const uint8_t *key, uint64_t *gap)
{
	return kd_bench_verify(r, pair, 200, src, key, buf, len, gap);
}

static void test_sequence(void **state)
{
	struct kd_bench_rx r = {0};
	uint8_t b[200];
	uint64_t gap = 99;

	for (uint64_t s = 0; s < 5; s++) {
		kd_bench_fill(b, sizeof(b), s, 7);
		assert_int_equal(rx(&r, 7, b, sizeof(b), src, &gap), KD_BENCH_IN_ORDER);
		assert_int_equal(gap, 0);
	}
	/* 5, 6, 7 lost */
	kd_bench_fill(b, sizeof(b), 8, 7);
	assert_int_equal(rx(&r, 7, b, sizeof(b), src, &gap), KD_BENCH_GAP);
	assert_int_equal(gap, 3);
	assert_int_equal(r.expect_seq, 9);
	/* 6 shows up late, and 8 again */
	kd_bench_fill(b, sizeof(b), 6, 7);
	assert_int_equal(rx(&r, 7, b, sizeof(b), src, &gap), KD_BENCH_LATE);
	kd_bench_fill(b, sizeof(b), 8, 7);
	assert_int_equal(rx(&r, 7, b, sizeof(b), src, &gap), KD_BENCH_LATE);
	kd_bench_fill(b, sizeof(b), 9, 7);
	assert_int_equal(rx(&r, 7, b, sizeof(b), src, &gap), KD_BENCH_IN_ORDER);
}

static void test_corrupt(void **state)
{
	struct kd_bench_rx r = {0};
	uint8_t b[200], c[200];
	uint64_t gap;

	kd_bench_fill(b, sizeof(b), 0, 7);
	/* wrong source key, wrong pair, wrong length */
	assert_int_equal(rx(&r, 7, b, sizeof(b), other, &gap), KD_BENCH_CORRUPT);
	assert_int_equal(rx(&r, 8, b, sizeof(b), src, &gap), KD_BENCH_CORRUPT);
	assert_int_equal(rx(&r, 7, b, sizeof(b) - 1, src, &gap), KD_BENCH_CORRUPT);
	assert_int_equal(kd_bench_verify(&r, 7, 10, src, src, b, 10, &gap), KD_BENCH_CORRUPT);
	/* any flipped bit of the header or the trailer */
	for (size_t i = 0; i < 16; i++) {
		memcpy(c, b, sizeof(c));
		c[i] ^= 0x10;
		assert_int_equal(rx(&r, 7, c, sizeof(c), src, &gap), KD_BENCH_CORRUPT);
	}
	for (size_t i = sizeof(b) - 4; i < sizeof(b); i++) {
		memcpy(c, b, sizeof(c));
		c[i] ^= 0x01;
		assert_int_equal(rx(&r, 7, c, sizeof(c), src, &gap), KD_BENCH_CORRUPT);
	}
	/* a payload shifted by one byte (a framing slip) */
	memcpy(c + 1, b, sizeof(c) - 1);
	c[0] = 0;
	assert_int_equal(rx(&r, 7, c, sizeof(c), src, &gap), KD_BENCH_CORRUPT);
	/* nothing counted as progress */
	assert_int_equal(r.expect_seq, 0);
	assert_int_equal(rx(&r, 7, b, sizeof(b), src, &gap), KD_BENCH_IN_ORDER);
}

static void test_min_size(void **state)
{
	struct kd_bench_rx r = {0};
	uint8_t b[KD_BENCH_HDR_LEN];
	uint64_t gap;

	/* no room for the trailer: the header alone is checked */
	kd_bench_fill(b, sizeof(b), 0, 1);
	assert_int_equal(kd_bench_verify(&r, 1, sizeof(b), src, src, b, sizeof(b), &gap), KD_BENCH_IN_ORDER);
	assert_int_not_equal(kd_bench_check(1, 1), kd_bench_check(1, 2));
	assert_int_not_equal(kd_bench_check(1, 1), kd_bench_check(2, 1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sequence),
		cmocka_unit_test(test_corrupt),
		cmocka_unit_test(test_min_size),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
