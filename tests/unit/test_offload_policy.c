// SPDX-License-Identifier: MIT
/* -offload=auto's decision from packet sizes alone (offload_policy.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "offload_policy.h"

static int feed(struct kd_auto_obs *ob, size_t size, uint32_t min, enum kd_auto_decision *d)
{
	return kd_auto_observe(ob, size, min, true, d);
}

/* over a NIC the kernel lost at every size: large packets stay too */
static void test_not_loopback_stays(void **state)
{
	struct kd_auto_obs big = {0}, small = {0};
	enum kd_auto_decision d1 = KD_AUTO_DECISION_MAX, d2 = KD_AUTO_DECISION_MAX;
	int r1 = 0, r2 = 0;
	(void)state;

	for (int i = 0; i < KD_AUTO_SAMPLE; i++) {
		r1 = kd_auto_observe(&big, 65536, KD_AUTO_MIN_MEAN, false, &d1);
		r2 = kd_auto_observe(&small, 100, KD_AUTO_MIN_MEAN, false, &d2);
	}
	assert_int_equal(r1, 1);
	assert_int_equal(r2, 1);
	assert_int_equal(d1, KD_AUTO_USERSPACE_NOT_LOOPBACK);
	assert_int_equal(d2, KD_AUTO_USERSPACE_SMALL_PACKETS);
}

static void test_decides_after_the_sample(void **state)
{
	struct kd_auto_obs ob = {0};
	enum kd_auto_decision d = KD_AUTO_DECISION_MAX;
	(void)state;

	for (int i = 0; i < KD_AUTO_SAMPLE - 1; i++)
		assert_int_equal(feed(&ob, 65536, KD_AUTO_MIN_MEAN, &d), 0);
	assert_int_equal(d, KD_AUTO_DECISION_MAX);
	assert_int_equal(feed(&ob, 65536, KD_AUTO_MIN_MEAN, &d), 1);
	assert_int_equal(d, KD_AUTO_KERNEL_LARGE_PACKETS);
	/* decided once: later packets change nothing */
	d = KD_AUTO_DECISION_MAX;
	assert_int_equal(feed(&ob, 1, KD_AUTO_MIN_MEAN, &d), 0);
	assert_int_equal(d, KD_AUTO_DECISION_MAX);
}

static void test_mean_at_threshold_offloads(void **state)
{
	struct kd_auto_obs below = {0}, at = {0};
	enum kd_auto_decision d1 = KD_AUTO_DECISION_MAX, d2 = KD_AUTO_DECISION_MAX;
	int r1 = 0, r2 = 0;
	(void)state;

	for (int i = 0; i < KD_AUTO_SAMPLE; i++) {
		r1 = feed(&below, i ? 1000 : 999, 1000, &d1);
		r2 = feed(&at, i % 2 ? 0 : 2000, 1000, &d2);
	}
	assert_int_equal(r1, 1);
	assert_int_equal(r2, 1);
	assert_int_equal(d1, KD_AUTO_USERSPACE_SMALL_PACKETS);
	assert_int_equal(d2, KD_AUTO_KERNEL_LARGE_PACKETS);
}

static void test_names(void **state)
{
	(void)state;
	assert_string_equal(kd_auto_decision_name(KD_AUTO_KERNEL_LARGE_PACKETS), "kernel_large_packets");
	assert_string_equal(kd_auto_decision_name(KD_AUTO_USERSPACE_SMALL_PACKETS), "userspace_small_packets");
	assert_string_equal(kd_auto_decision_name(KD_AUTO_USERSPACE_NOT_PLAIN_TCP), "userspace_not_plain_tcp");
	assert_string_equal(kd_auto_decision_name(KD_AUTO_USERSPACE_NOT_LOOPBACK), "userspace_not_loopback");
	assert_string_equal(kd_auto_decision_name(KD_AUTO_DECISION_MAX), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decides_after_the_sample),
		cmocka_unit_test(test_mean_at_threshold_offloads),
		cmocka_unit_test(test_not_loopback_stays),
		cmocka_unit_test(test_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
