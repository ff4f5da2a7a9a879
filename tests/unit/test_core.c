// SPDX-License-Identifier: MIT
/* Unit tests for the daemon's building blocks: keymap, flags, event loop
 * timers and cross-thread wake-ups, the handshake box. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <sodium.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "derp_crypto.h"
#include "flags.h"
#include "key.h"
#include "keymap.h"
#include "loop.h"

static void key_of(uint8_t k[32], unsigned i)
{
	memset(k, 0, 32);
	memcpy(k, &i, sizeof(i));
	k[31] = 0x5a;
}

static void test_keymap_put_get_del(void **state)
{
	struct kd_keymap m;
	uint8_t k[32];
	(void)state;

	kd_keymap_init(&m);
	key_of(k, 1);
	assert_null(kd_keymap_get(&m, k));
	assert_null(kd_keymap_del(&m, k));
	for (unsigned i = 0; i < 5000; i++) {
		key_of(k, i);
		assert_int_equal(kd_keymap_put(&m, k, (void *)(uintptr_t)(i + 1)), 0);
	}
	assert_int_equal(m.len, 5000);
	for (unsigned i = 0; i < 5000; i++) {
		key_of(k, i);
		assert_ptr_equal(kd_keymap_get(&m, k), (void *)(uintptr_t)(i + 1));
	}
	/* delete the odd ones, the even ones must survive the tombstones */
	for (unsigned i = 1; i < 5000; i += 2) {
		key_of(k, i);
		assert_ptr_equal(kd_keymap_del(&m, k), (void *)(uintptr_t)(i + 1));
	}
	assert_int_equal(m.len, 2500);
	for (unsigned i = 0; i < 5000; i++) {
		key_of(k, i);
		if (i % 2)
			assert_null(kd_keymap_get(&m, k));
		else
			assert_ptr_equal(kd_keymap_get(&m, k), (void *)(uintptr_t)(i + 1));
	}
	/* iteration visits each live entry once */
	size_t seen = 0;
	const uint8_t *kk;
	void *v;
	for (size_t i = 0; (i = kd_keymap_next(&m, i, &kk, &v)) != 0;)
		seen++;
	assert_int_equal(seen, 2500);
	/* churn: insert/delete many times without growing without bound */
	for (unsigned r = 0; r < 20000; r++) {
		key_of(k, 100000 + r);
		assert_int_equal(kd_keymap_put(&m, k, (void *)1), 0);
		assert_non_null(kd_keymap_del(&m, k));
	}
	assert_true(m.cap <= 16384);
	kd_keymap_free(&m);
}

static void test_flags_go_syntax(void **state)
{
	bool dev = false, stun = true;
	const char *a = ":443";
	int port = 80;
	double lim = 0;
	unsigned wt = 0;
	struct kd_flag f[] = {
		{"dev", KD_FLAG_BOOL, &dev, "", false},
		{"stun", KD_FLAG_BOOL, &stun, "", false},
		{"a", KD_FLAG_STRING, &a, "", false},
		{"http-port", KD_FLAG_INT, &port, "", false},
		{"accept-connection-limit", KD_FLAG_DOUBLE, &lim, "", false},
		{"tcp-write-timeout", KD_FLAG_DURATION_MS, &wt, "", false},
	};
	char *argv[] = {"kderpd", "-dev", "--stun=false", "-a", "127.0.0.1:1", "-http-port=-1",
			"-accept-connection-limit", "2.5", "-tcp-write-timeout=1m30s", NULL};
	(void)state;

	assert_int_equal(kd_flags_parse(f, 6, 9, argv), 0);
	assert_true(dev);
	assert_false(stun);
	assert_string_equal(a, "127.0.0.1:1");
	assert_int_equal(port, -1);
	assert_true(lim > 2.49 && lim < 2.51);
	assert_int_equal(wt, 90000);
	assert_true(f[0].set && f[2].set);

	char *bad1[] = {"kderpd", "-nosuch", NULL};
	assert_int_equal(kd_flags_parse(f, 6, 2, bad1), -EINVAL);
	char *bad2[] = {"kderpd", "-http-port", "eighty", NULL};
	assert_int_equal(kd_flags_parse(f, 6, 3, bad2), -EINVAL);
	char *bad3[] = {"kderpd", "-a", NULL};
	assert_int_equal(kd_flags_parse(f, 6, 2, bad3), -EINVAL);
	char *bad4[] = {"kderpd", "-dev=maybe", NULL};
	assert_int_equal(kd_flags_parse(f, 6, 2, bad4), -EINVAL);
	char *bad5[] = {"kderpd", "positional", NULL};
	assert_int_equal(kd_flags_parse(f, 6, 2, bad5), -EINVAL);
}

static void test_durations(void **state)
{
	unsigned ms;
	(void)state;
	assert_int_equal(kd_parse_duration_ms("2s", &ms), 0);
	assert_int_equal(ms, 2000);
	assert_int_equal(kd_parse_duration_ms("10m", &ms), 0);
	assert_int_equal(ms, 600000);
	assert_int_equal(kd_parse_duration_ms("15000ms", &ms), 0);
	assert_int_equal(ms, 15000);
	assert_int_equal(kd_parse_duration_ms("1.5s", &ms), 0);
	assert_int_equal(ms, 1500);
	assert_int_equal(kd_parse_duration_ms("0", &ms), 0);
	assert_int_equal(ms, 0);
	assert_int_equal(kd_parse_duration_ms("", &ms), -EINVAL);
	assert_int_equal(kd_parse_duration_ms("5", &ms), -EINVAL);
	assert_int_equal(kd_parse_duration_ms("-1s", &ms), -EINVAL);
	assert_int_equal(kd_parse_duration_ms("3d", &ms), -EINVAL);
	assert_int_equal(kd_parse_duration_ms("9999999h", &ms), -ERANGE);
}

/* --- loop --- */

struct tstate {
	struct kd_loop *l;
	struct kd_timer t[4];
	int order[8], n;
	int wakes;
};

static struct tstate *g_ts;

static void on_timer(struct kd_timer *t)
{
	g_ts->order[g_ts->n++] = (int)(t - g_ts->t);
	if (g_ts->n == 3)
		kd_loop_stop(g_ts->l);
}

static void test_loop_timers_in_order(void **state)
{
	struct tstate ts = {0};
	(void)state;

	g_ts = &ts;
	assert_int_equal(kd_loop_new(&ts.l), 0);
	uint64_t now = kd_now_ms();
	for (int i = 0; i < 4; i++)
		kd_timer_init(&ts.t[i], on_timer);
	kd_timer_arm(ts.l, &ts.t[0], now + 60);
	kd_timer_arm(ts.l, &ts.t[1], now + 20);
	kd_timer_arm(ts.l, &ts.t[2], now + 40);
	kd_timer_arm(ts.l, &ts.t[3], now + 30);
	kd_timer_disarm(ts.l, &ts.t[3]);   /* never fires */
	kd_timer_arm(ts.l, &ts.t[0], now + 10); /* re-arm earlier */
	assert_int_equal(kd_loop_run(ts.l), 0);
	assert_int_equal(ts.n, 3);
	assert_int_equal(ts.order[0], 0);
	assert_int_equal(ts.order[1], 1);
	assert_int_equal(ts.order[2], 2);
	assert_true(kd_now_ms() - now >= 40);
	kd_loop_free(ts.l);
}

static void on_wake(void *arg)
{
	struct tstate *ts = arg;
	if (++ts->wakes >= 1)
		kd_loop_stop(ts->l);
}

static void *waker(void *arg)
{
	struct tstate *ts = arg;
	usleep(20000);
	for (int i = 0; i < 100; i++)
		kd_loop_wake(ts->l);
	return NULL;
}

static void test_loop_cross_thread_wake(void **state)
{
	struct tstate ts = {0};
	pthread_t th;
	(void)state;

	assert_int_equal(kd_loop_new(&ts.l), 0);
	kd_loop_set_wake_cb(ts.l, on_wake, &ts);
	pthread_create(&th, NULL, waker, &ts);
	assert_int_equal(kd_loop_run(ts.l), 0);
	pthread_join(th, NULL);
	assert_true(ts.wakes >= 1);
	kd_loop_free(ts.l);
}

/* --- box --- */

static void test_box_round_trip_and_rejects(void **state)
{
	struct kd_keypair a, b;
	uint8_t sealed[64], plain[64], zero[32] = {0};
	(void)state;

	assert_int_equal(kd_keypair_generate(&a), 0);
	assert_int_equal(kd_keypair_generate(&b), 0);
	assert_int_equal(kd_box_seal(sealed, sizeof(sealed), (const uint8_t *)"{\"version\":2}", 13, b.pub, a.priv), 0);
	assert_int_equal(kd_box_open(plain, sizeof(plain), sealed, 13 + KD_BOX_OVERHEAD, a.pub, b.priv), 0);
	assert_memory_equal(plain, "{\"version\":2}", 13);
	sealed[30] ^= 1;
	assert_int_equal(kd_box_open(plain, sizeof(plain), sealed, 13 + KD_BOX_OVERHEAD, a.pub, b.priv), -EBADMSG);
	assert_int_equal(kd_box_open(plain, sizeof(plain), sealed, 13 + KD_BOX_OVERHEAD, zero, b.priv), -EINVAL);
	assert_int_equal(kd_box_open(plain, sizeof(plain), sealed, KD_BOX_OVERHEAD - 1, a.pub, b.priv), -EINVAL);
	/* a low-order point (here: the point of order 8 libsodium blacklists) fails to open */
	static const uint8_t low[32] = {0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3,
					0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32,
					0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00};
	assert_int_not_equal(kd_box_open(plain, sizeof(plain), sealed, 13 + KD_BOX_OVERHEAD, low, b.priv), 0);
}

int main(void)
{
	if (sodium_init() < 0)
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keymap_put_get_del),
		cmocka_unit_test(test_flags_go_syntax),
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_loop_timers_in_order),
		cmocka_unit_test(test_loop_cross_thread_wake),
		cmocka_unit_test(test_box_round_trip_and_rejects),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
