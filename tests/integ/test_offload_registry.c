// SPDX-License-Identifier: MIT
/* kderpd with -offload=sockmap, the registry's side of the kernel plane:
 * PeerGone only to the connections the kernel relayed a leaving key's
 * frames to (relay_pairs), duplicate connections of one key following
 * "last writer is active" (spec §7.2) with the kernel's route, and the
 * watchdog closing a flow whose bytes the kernel parser does not consume. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "clients.h"
#include "derp_wire.h"
#include "offload.h"
#include "offload_fixture.h"

#define WATCHDOG_MS 200 /* the test's check period */
#define KD_TEST_CHECKS 3 /* KD_WATCHDOG_CHECKS (server_internal.h) */

static bool start_offload(struct ts_server *ts)
{
	struct kd_server_config cfg;

	kd_server_config_defaults(&cfg);
	cfg.offload = 1;
	cfg.offload_watchdog_ms = WATCHDOG_MS;
	return tc_start_offload(ts, &cfg);
}

static void wait_metric(struct ts_server *ts, const char *name, long long want)
{
	for (int i = 0; i < 300 && ts_metric(ts, name) < want; i++)
		usleep(10000);
	assert_true(ts_metric(ts, name) >= want);
}

static long long redirected(struct ts_server *ts)
{
	return ts_metric(ts, "kderp_offload_frames_total{reason=\"redirected\"}");
}

static size_t fill(uint8_t *buf, int seq)
{
	size_t n = 8 + (size_t)(seq * 131) % 1400;

	memcpy(buf, &seq, 4);
	memcpy(buf + 4, "kpln", 4);
	for (size_t k = 8; k < n; k++)
		buf[k] = (uint8_t)(k * 7 + (size_t)seq);
	return n;
}

/* Next RecvPacket on c within timeout_ms: from src, byte-exact, its
 * sequence number; -1 on timeout. Other frames (KeepAlive, Health) skipped. */
static int recv_seq(struct kd_client *c, const uint8_t *src, int timeout_ms)
{
	struct kd_client_msg m;
	uint8_t want[1500];
	int seq;

	if (tc_recv_type(c, DERP_FRAME_RECV_PACKET, &m, timeout_ms) != 0)
		return -1;
	assert_memory_equal(m.key, src, 32);
	assert_true(m.data_len >= 8);
	memcpy(&seq, m.data, 4);
	assert_int_equal(m.data_len, fill(want, seq));
	assert_memory_equal(m.data, want, m.data_len);
	return seq;
}

static void send_seq(struct kd_client *c, const uint8_t *dst, int seq)
{
	uint8_t buf[1500];
	size_t n = fill(buf, seq);

	assert_int_equal(kd_client_send_packet(c, dst, buf, n), 0);
	assert_int_equal(kd_client_flush_wait(c, 2000), 0);
}

/* No frame of type from key on c for ms (anything else is allowed). */
static void assert_no_frame(struct kd_client *c, uint8_t type, const uint8_t *key, int ms)
{
	struct kd_client_msg m;
	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &t);
		int left = ms - (int)((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
		if (left <= 0)
			return;
		int err = kd_client_recv(c, &m, left);
		if (err == -ETIMEDOUT)
			return;
		assert_int_equal(err, 0);
		if (m.type == type && (!key || !memcmp(m.key, key, 32)))
			fail_msg("unexpected frame type %u", type);
	}
}

static void test_peer_gone_only_to_receivers(void **state)
{
	struct ts_server ts;
	struct kd_keypair ka = {0}, kb = {0}, kc = {0};
	struct kd_client_msg m;
	(void)state;

	if (!start_offload(&ts))
		skip();
	struct kd_client *a = tc_login(&ts, &ka, NULL), *b = tc_login(&ts, &kb, NULL),
			 *c = tc_login(&ts, &kc, NULL);
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(c);
	wait_metric(&ts, "kderp_offloaded_connections_total", 3);
	long long r0 = redirected(&ts);
	for (int i = 0; i < 20; i++) {
		send_seq(a, kb.pub, i);
		assert_int_equal(recv_seq(b, ka.pub, 3000), i);
	}
	/* relayed by the kernel, so userspace never subscribed B to A */
	assert_int_equal(redirected(&ts) - r0, 20);
	/* C talks to B too: B's pair with C must survive A leaving */
	send_seq(c, kb.pub, 100);
	assert_int_equal(recv_seq(b, kc.pub, 3000), 100);

	kd_client_close(a);
	assert_int_equal(tc_recv_type(b, DERP_FRAME_PEER_GONE, &m, 3000), 0);
	assert_memory_equal(m.key, ka.pub, 32);
	assert_int_equal(m.reason, DERP_PEER_GONE_DISCONNECTED);
	assert_no_frame(c, DERP_FRAME_PEER_GONE, NULL, 500);
	assert_no_frame(b, DERP_FRAME_PEER_GONE, NULL, 100); /* once */
	assert_int_equal(ts_metric(&ts, "derp_peer_gone_disconnected_frames"), 1);

	/* C leaves: B received from C, so B hears; nobody else is left */
	kd_client_close(c);
	assert_int_equal(tc_recv_type(b, DERP_FRAME_PEER_GONE, &m, 3000), 0);
	assert_memory_equal(m.key, kc.pub, 32);
	assert_int_equal(ts_metric(&ts, "derp_peer_gone_disconnected_frames"), 2);
	kd_client_close(b);
	ts_stop(&ts);
}

/* Two connections of one key: the kernel's route follows the active one. */
static void test_duplicate_last_writer_is_active(void **state)
{
	struct ts_server ts;
	struct kd_keypair ka = {0}, ks = {0};
	int seq = 0;
	(void)state;

	if (!start_offload(&ts))
		skip();
	struct kd_client *s = tc_login(&ts, &ks, NULL), *a1 = tc_login(&ts, &ka, NULL);
	assert_non_null(s);
	assert_non_null(a1);
	wait_metric(&ts, "kderp_offloaded_connections_total", 2);
	send_seq(s, ka.pub, seq);
	assert_int_equal(recv_seq(a1, ks.pub, 3000), seq++);

	/* A2 connects with A's key: it is active (the newest), offloaded too */
	struct kd_client *a2 = tc_login(&ts, &ka, NULL);
	assert_non_null(a2);
	wait_metric(&ts, "kderp_offloaded_connections_total", 3);
	for (int i = 0; i < 10; i++, seq++) {
		send_seq(s, ka.pub, seq);
		assert_int_equal(recv_seq(a2, ks.pub, 3000), seq);
	}
	assert_no_frame(a1, DERP_FRAME_RECV_PACKET, NULL, 300);

	/* A1 speaks (a Ping; its Pong must come back to A1, not A2): the last
	 * writer is active again */
	assert_true(tc_alive(a1));
	for (int i = 0; i < 10; i++, seq++) {
		send_seq(s, ka.pub, seq);
		assert_int_equal(recv_seq(a1, ks.pub, 3000), seq);
	}
	assert_no_frame(a2, DERP_FRAME_RECV_PACKET, NULL, 300);
	assert_true(tc_alive(a2));
	send_seq(s, ka.pub, seq);
	assert_int_equal(recv_seq(a2, ks.pub, 3000), seq++);

	/* A2 leaves: A1 is the only one, and the kernel relays to it again */
	kd_client_close(a2);
	for (int i = 0; i < 200 && ts_metric(&ts, "derp_current_connections") > 2; i++)
		usleep(10000);
	long long r0 = redirected(&ts);
	for (int i = 0; i < 10; i++, seq++) {
		send_seq(s, ka.pub, seq);
		assert_int_equal(recv_seq(a1, ks.pub, 3000), seq);
	}
	assert_true(redirected(&ts) - r0 >= 10);
	/* and A1's own sends are relayed by the kernel again too */
	r0 = redirected(&ts);
	send_seq(a1, ks.pub, seq);
	assert_int_equal(recv_seq(s, ka.pub, 3000), seq++);
	assert_int_equal(redirected(&ts) - r0, 1);
	kd_client_close(a1);
	kd_client_close(s);
	ts_stop(&ts);
}

/* A duplicate that cannot be offloaded (a mesh-key login stays in
 * userspace) takes over: the kernel must stop delivering the key to the
 * offloaded first connection and pass its frames up, to the active one. */
static void test_duplicate_in_userspace_takes_over(void **state)
{
	static const uint8_t mesh_key[32] = {1, 2, 3, 4, 5, 6, 7, 8};
	struct ts_server ts;
	struct kd_server_config cfg;
	struct kd_keypair ka = {0}, ks = {0};
	char why[160];
	int seq = 0;
	(void)state;

	if (!kd_offload_supported(why, sizeof(why))) {
		printf("# SKIP kernel plane unavailable: %s\n", why);
		skip();
	}
	kd_server_config_defaults(&cfg);
	cfg.offload = 1;
	cfg.has_mesh_key = true;
	memcpy(cfg.mesh_key, mesh_key, 32);
	assert_int_equal(ts_start(&ts, &cfg, NULL), 0);
	struct kd_client *s = tc_login(&ts, &ks, NULL), *a1 = tc_login(&ts, &ka, NULL);
	assert_non_null(s);
	assert_non_null(a1);
	wait_metric(&ts, "kderp_offloaded_connections_total", 2);
	send_seq(s, ka.pub, seq);
	assert_int_equal(recv_seq(a1, ks.pub, 3000), seq++);

	struct kd_client *a2 = tc_login(&ts, &ka, mesh_key);
	assert_non_null(a2);
	assert_true(tc_alive(a2)); /* registered and served */
	long long passed0 = ts_metric(&ts, "kderp_offload_frames_total{reason=\"passed_unknown_dest\"}");
	for (int i = 0; i < 10; i++, seq++) {
		send_seq(s, ka.pub, seq);
		assert_int_equal(recv_seq(a2, ks.pub, 3000), seq);
	}
	assert_int_equal(ts_metric(&ts, "kderp_offload_frames_total{reason=\"passed_unknown_dest\"}") - passed0, 10);
	assert_no_frame(a1, DERP_FRAME_RECV_PACKET, NULL, 300);
	assert_int_equal(ts_metric(&ts, "kderp_offloaded_connections_total"), 2);

	kd_client_close(a2);
	for (int i = 0; i < 200 && ts_metric(&ts, "derp_current_connections") > 2; i++)
		usleep(10000);
	long long r0 = redirected(&ts);
	for (int i = 0; i < 10; i++, seq++) {
		send_seq(s, ka.pub, seq);
		assert_int_equal(recv_seq(a1, ks.pub, 3000), seq);
	}
	assert_int_equal(redirected(&ts) - r0, 10);
	kd_client_close(a1);
	kd_client_close(s);
	ts_stop(&ts);
}

/* strparser, once it knows a frame's length, reads the socket again only
 * when the receive queue holds all the bytes still missing: a client that
 * stops mid-frame leaves what it sent after the first read sitting in the
 * queue, unconsumed for good. That is the watchdog's symptom (unread bytes
 * that do not move); it must close the flow and count it. */
static void test_watchdog_closes_stuck_flow(void **state)
{
	struct ts_server ts;
	struct kd_keypair ka = {0}, kb = {0};
	uint8_t f[5 + 32 + 1000];
	(void)state;

	if (!start_offload(&ts))
		skip();
	struct kd_client *a = tc_login(&ts, &ka, NULL), *b = tc_login(&ts, &kb, NULL);
	assert_non_null(a);
	assert_non_null(b);
	wait_metric(&ts, "kderp_offloaded_connections_total", 2);
	/* a healthy flow is left alone across several checks */
	for (int i = 0; i < 5; i++) {
		send_seq(a, kb.pub, i);
		assert_int_equal(recv_seq(b, ka.pub, 3000), i);
		usleep(WATCHDOG_MS * 1000);
	}
	assert_int_equal(ts_metric(&ts, "kderp_offload_stuck_closed_total"), 0);

	derp_hdr_put((struct derp_frame_hdr *)f, DERP_FRAME_SEND_PACKET, 32 + 1000);
	memcpy(f + 5, kb.pub, 32);
	memset(f + 37, 0x5a, 1000);
	assert_int_equal(kd_client_send_raw(a, f, 137), 0); /* header + 100 bytes: parsed */
	assert_int_equal(kd_client_flush_wait(a, 1000), 0);
	usleep(100000);
	assert_int_equal(kd_client_send_raw(a, f + 137, 10), 0); /* 10 of 900 missing: left */
	assert_int_equal(kd_client_flush_wait(a, 1000), 0);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);

	struct kd_client_msg m;
	int err;
	while ((err = kd_client_recv(a, &m, (KD_TEST_CHECKS + 3) * WATCHDOG_MS)) == 0)
		;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	printf("# stuck flow closed after %ld ms (checks every %d ms)\n", ms, WATCHDOG_MS);
	/* closed, not just silent (unread bytes make the close a reset) */
	assert_true(err == -EPIPE || err == -ECONNRESET);
	assert_int_equal(ts_metric(&ts, "kderp_offload_stuck_closed_total"), 1);
	/* 3 unchanged checks after the one that first saw the bytes */
	assert_true(ms >= (KD_TEST_CHECKS - 1) * WATCHDOG_MS);
	assert_true(ms <= (KD_TEST_CHECKS + 2) * WATCHDOG_MS);
	/* the other client is unharmed */
	assert_true(tc_alive(b));
	kd_client_close(a);
	kd_client_close(b);
	ts_stop(&ts);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_peer_gone_only_to_receivers),
		cmocka_unit_test(test_duplicate_last_writer_is_active),
		cmocka_unit_test(test_duplicate_in_userspace_takes_over),
		cmocka_unit_test(test_watchdog_closes_stuck_flow),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
