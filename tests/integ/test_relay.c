// SPDX-License-Identifier: MIT
/* Server semantics over real loopback sockets with the project's client
 * library: relaying, ping, PeerGone, NotHere, duplicates, keepalive, drops. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "clients.h"
#include "derp_wire.h"

static void metric_eq(struct ts_server *ts, const char *name, long long want)
{
	long long got = -2;
	/* counters move on the worker threads: give them a moment */
	for (int i = 0; i < 100; i++) {
		got = ts_metric(ts, name);
		if (got == want)
			return;
		usleep(20000);
	}
	fail_msg("%s = %lld, want %lld", name, got, want);
}

static void test_relay_both_ways(void **state)
{
	struct ts_server ts;
	struct kd_keypair ka = {0}, kb = {0};
	struct kd_client_msg m;
	(void)state;

	assert_int_equal(ts_start(&ts, NULL, NULL), 0);
	struct kd_client *a = tc_login(&ts, &ka, NULL), *b = tc_login(&ts, &kb, NULL);
	assert_non_null(a);
	assert_non_null(b);
	assert_memory_equal(kd_client_server_key(a), ts.cfg.keys.pub, 32);
	assert_int_equal(kd_client_send_packet(a, kb.pub, "hello B", 7), 0);
	assert_int_equal(tc_recv_type(b, DERP_FRAME_RECV_PACKET, &m, 3000), 0);
	assert_memory_equal(m.key, ka.pub, 32);
	assert_int_equal(m.data_len, 7);
	assert_memory_equal(m.data, "hello B", 7);
	/* a zero-length packet is legal (spec §6.4) */
	assert_int_equal(kd_client_send_packet(b, ka.pub, "", 0), 0);
	assert_int_equal(tc_recv_type(a, DERP_FRAME_RECV_PACKET, &m, 3000), 0);
	assert_memory_equal(m.key, kb.pub, 32);
	assert_int_equal(m.data_len, 0);
	/* the largest packet */
	uint8_t *big = malloc(DERP_MAX_PACKET);
	for (size_t i = 0; i < DERP_MAX_PACKET; i++)
		big[i] = (uint8_t)(i * 7);
	assert_int_equal(kd_client_send_packet(a, kb.pub, big, DERP_MAX_PACKET), 0);
	assert_int_equal(tc_recv_type(b, DERP_FRAME_RECV_PACKET, &m, 3000), 0);
	assert_int_equal(m.data_len, DERP_MAX_PACKET);
	assert_memory_equal(m.data, big, DERP_MAX_PACKET);
	free(big);
	metric_eq(&ts, "derp_packets_received", 3);
	metric_eq(&ts, "derp_packets_sent", 3);
	metric_eq(&ts, "derp_bytes_received", 7 + DERP_MAX_PACKET);
	metric_eq(&ts, "derp_current_connections", 2);
	metric_eq(&ts, "derp_clients_local", 2);
	/* /debug/clients lists both, relayed in userspace over plain TCP */
	char *page = ts_http_get(&ts, "/debug/clients"), nk[KD_NODEKEY_STR_LEN];
	assert_non_null(page);
	kd_key_nodekey_str(nk, ka.pub);
	assert_non_null(strstr(page, nk));
	kd_key_nodekey_str(nk, kb.pub);
	assert_non_null(strstr(page, nk));
	assert_non_null(strstr(page, "\"transport\":\"tcp\",\"plane\":\"userspace\""));
	free(page);
	kd_client_close(a);
	kd_client_close(b);
	metric_eq(&ts, "derp_current_connections", 0);
	ts_stop(&ts);
}

static void test_ping_pong_and_note_preferred(void **state)
{
	struct ts_server ts;
	struct kd_keypair ka = {0};
	(void)state;

	assert_int_equal(ts_start(&ts, NULL, NULL), 0);
	struct kd_client *a = tc_login(&ts, &ka, NULL);
	assert_non_null(a);
	assert_true(tc_alive(a));
	assert_int_equal(kd_client_note_preferred(a, true), 0);
	assert_true(tc_alive(a));
	metric_eq(&ts, "derp_current_home_connections", 1);
	assert_int_equal(kd_client_note_preferred(a, false), 0);
	assert_true(tc_alive(a));
	metric_eq(&ts, "derp_current_home_connections", 0);
	metric_eq(&ts, "derp_got_ping", 3);
	metric_eq(&ts, "derp_sent_pong", 3);
	kd_client_close(a);
	ts_stop(&ts);
}

static void test_peer_gone_to_receivers(void **state)
{
	struct ts_server ts;
	struct kd_keypair ka = {0}, kb = {0}, kc = {0};
	struct kd_client_msg m;
	(void)state;

	assert_int_equal(ts_start(&ts, NULL, NULL), 0);
	struct kd_client *a = tc_login(&ts, &ka, NULL), *b = tc_login(&ts, &kb, NULL),
			 *c = tc_login(&ts, &kc, NULL);
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(c);
	/* B received from A; C never did */
	assert_int_equal(kd_client_send_packet(a, kb.pub, "x", 1), 0);
	assert_int_equal(tc_recv_type(b, DERP_FRAME_RECV_PACKET, &m, 3000), 0);
	kd_client_close(a);
	assert_int_equal(tc_recv_type(b, DERP_FRAME_PEER_GONE, &m, 3000), 0);
	assert_memory_equal(m.key, ka.pub, 32);
	assert_int_equal(m.reason, DERP_PEER_GONE_DISCONNECTED);
	assert_int_equal(m.len, 33);
	assert_int_equal(tc_recv_type(c, DERP_FRAME_PEER_GONE, &m, 300), -ETIMEDOUT);
	metric_eq(&ts, "derp_peer_gone_disconnected_frames", 1);
	kd_client_close(b);
	kd_client_close(c);
	ts_stop(&ts);
}

static void make_disco(uint8_t *p, size_t n)
{
	memset(p, 0x42, n);
	memcpy(p, DERP_DISCO_MAGIC, DERP_DISCO_MAGIC_LEN);
}

static void test_not_here_rate_limited(void **state)
{
	struct ts_server ts;
	struct kd_keypair ka = {0};
	struct kd_client_msg m;
	uint8_t nobody[32], disco[80];
	(void)state;

	memset(nobody, 0x77, 32);
	make_disco(disco, sizeof(disco));
	assert_int_equal(ts_start(&ts, NULL, NULL), 0);
	struct kd_client *a = tc_login(&ts, &ka, NULL);
	assert_non_null(a);
	/* non-disco to nowhere: dropped silently */
	assert_int_equal(kd_client_send_packet(a, nobody, "wg", 2), 0);
	assert_true(tc_alive(a));
	metric_eq(&ts, "derp_packets_dropped{reason=\"unknown_dest\",kind=\"other\"}", 1);
	/* disco to nowhere: NotHere, at most 3 in a burst */
	for (int i = 0; i < 6; i++)
		assert_int_equal(kd_client_send_packet(a, nobody, disco, sizeof(disco)), 0);
	int got = 0;
	while (tc_recv_type(a, DERP_FRAME_PEER_GONE, &m, 400) == 0) {
		assert_memory_equal(m.key, nobody, 32);
		assert_int_equal(m.reason, DERP_PEER_GONE_NOT_HERE);
		got++;
	}
	assert_int_equal(got, 3);
	metric_eq(&ts, "derp_packets_dropped{reason=\"unknown_dest\",kind=\"disco\"}", 6);
	metric_eq(&ts, "derp_peer_gone_not_here_frames", 3);
	/* a token comes back after a second */
	sleep(1);
	assert_int_equal(kd_client_send_packet(a, nobody, disco, sizeof(disco)), 0);
	assert_int_equal(tc_recv_type(a, DERP_FRAME_PEER_GONE, &m, 2000), 0);
	kd_client_close(a);
	ts_stop(&ts);
}

static void test_duplicate_client_last_writer_wins(void **state)
{
	struct ts_server ts;
	struct kd_keypair ka = {0}, kb = {0};
	struct kd_client_msg m;
	(void)state;

	assert_int_equal(ts_start(&ts, NULL, NULL), 0);
	kd_keypair_generate(&ka);
	struct kd_client *a1 = tc_login(&ts, &ka, NULL), *b = tc_login(&ts, &kb, NULL);
	assert_non_null(a1);
	assert_non_null(b);
	struct kd_client *a2 = tc_login(&ts, &ka, NULL);
	assert_non_null(a2);
	/* both copies are told they are duplicates */
	assert_int_equal(tc_recv_type(a1, DERP_FRAME_HEALTH, &m, 3000), 0);
	assert_true(m.data_len > 0);
	assert_int_equal(tc_recv_type(a2, DERP_FRAME_HEALTH, &m, 3000), 0);
	metric_eq(&ts, "derp_current_dup_client_keys", 1);
	metric_eq(&ts, "derp_current_dup_client_conns", 2);
	metric_eq(&ts, "derp_total_dup_client_conns", 1);
	/* the newest connection is active */
	assert_int_equal(kd_client_send_packet(b, ka.pub, "1", 1), 0);
	assert_int_equal(tc_recv_type(a2, DERP_FRAME_RECV_PACKET, &m, 3000), 0);
	assert_int_equal(tc_recv_type(a1, DERP_FRAME_RECV_PACKET, &m, 300), -ETIMEDOUT);
	/* the last one to speak becomes active */
	assert_true(tc_alive(a1));
	assert_int_equal(kd_client_send_packet(b, ka.pub, "2", 1), 0);
	assert_int_equal(tc_recv_type(a1, DERP_FRAME_RECV_PACKET, &m, 3000), 0);
	assert_memory_equal(m.data, "2", 1);
	/* one copy leaves: the other is no longer a duplicate and gets everything */
	kd_client_close(a1);
	assert_int_equal(tc_recv_type(a2, DERP_FRAME_HEALTH, &m, 3000), 0);
	assert_int_equal(m.data_len, 0);
	metric_eq(&ts, "derp_current_dup_client_keys", 0);
	metric_eq(&ts, "derp_current_dup_client_conns", 0);
	assert_int_equal(kd_client_send_packet(b, ka.pub, "3", 1), 0);
	assert_int_equal(tc_recv_type(a2, DERP_FRAME_RECV_PACKET, &m, 3000), 0);
	assert_memory_equal(m.data, "3", 1);
	/* a duplicate leaving is not the key leaving: no PeerGone to B */
	assert_int_equal(tc_recv_type(b, DERP_FRAME_PEER_GONE, &m, 200), -ETIMEDOUT);
	kd_client_close(a2);
	kd_client_close(b);
	ts_stop(&ts);
}

static void test_keepalive_sent(void **state)
{
	struct ts_server ts;
	struct kd_server_config cfg;
	struct kd_keypair ka = {0};
	struct kd_client_msg m;
	(void)state;

	kd_server_config_defaults(&cfg);
	cfg.keepalive_ms = 100; /* plus up to 5 s of jitter */
	assert_int_equal(ts_start(&ts, &cfg, NULL), 0);
	struct kd_client *a = tc_login(&ts, &ka, NULL);
	assert_non_null(a);
	assert_int_equal(tc_recv_type(a, DERP_FRAME_KEEP_ALIVE, &m, 6000), 0);
	assert_int_equal(m.len, 0);
	kd_client_close(a);
	ts_stop(&ts);
}

/* A receiver that stops reading: its queue head-drops, memory stays bounded,
 * the sender is never blocked, and the write deadline finally closes it. */
static void test_stalled_receiver_drops_and_times_out(void **state)
{
	struct ts_server ts;
	struct kd_server_config cfg;
	struct kd_keypair ka = {0}, kb = {0};
	uint8_t pkt[1400];
	(void)state;

	kd_server_config_defaults(&cfg);
	cfg.write_timeout_ms = 500;
	assert_int_equal(ts_start(&ts, &cfg, NULL), 0);
	struct kd_client *a = tc_login(&ts, &ka, NULL), *b = tc_login(&ts, &kb, NULL);
	assert_non_null(a);
	assert_non_null(b);
	int small = 4096;
	setsockopt(kd_client_fd(b), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	memset(pkt, 0xab, sizeof(pkt));
	/* send until B's socket buffers are full and the deadline fires; bounded */
	for (int i = 0; i < 200000; i++) {
		if (i % 500 == 0 && ts_metric(&ts, "derp_sclient_write_timeouts") >= 1)
			break;
		int err = kd_client_send_packet(a, kb.pub, pkt, sizeof(pkt));
		if (err == -EAGAIN || err == -ENOBUFS)
			assert_int_equal(kd_client_flush_wait(a, 5000), 0);
		else
			assert_int_equal(err, 0);
		if (i % 1000 == 999)
			assert_int_equal(kd_client_flush_wait(a, 5000), 0);
	}
	assert_int_equal(kd_client_flush_wait(a, 5000), 0);
	assert_true(tc_alive(a)); /* the sender was never blocked by B */
	long long drops = ts_metric(&ts, "derp_packets_dropped{reason=\"queue_head\",kind=\"other\"}");
	assert_true(drops > 0);
	metric_eq(&ts, "derp_sclient_write_timeouts", 1);
	metric_eq(&ts, "derp_current_connections", 1);
	assert_true(tc_alive(a));
	kd_client_close(a);
	kd_client_close(b);
	ts_stop(&ts);
}

/* Each bad frame closes only the connection that sent it. */
static void bad_frame_closes_only_sender(const void *frame, size_t len, bool expect_close)
{
	struct ts_server ts;
	struct kd_keypair ka = {0}, kb = {0};
	struct kd_client_msg m;

	assert_int_equal(ts_start(&ts, NULL, NULL), 0);
	struct kd_client *a = tc_login(&ts, &ka, NULL), *b = tc_login(&ts, &kb, NULL);
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(kd_client_send_raw(a, frame, len), 0);
	assert_int_equal(kd_client_flush_wait(a, 3000), 0);
	if (expect_close) {
		int err;
		do
			err = kd_client_recv(a, &m, 3000);
		while (err == 0);
		assert_int_equal(err, -EPIPE);
	} else {
		assert_true(tc_alive(a));
	}
	assert_true(tc_alive(b));
	assert_int_equal(kd_client_send_packet(b, kb.pub, "self", 4), 0);
	assert_int_equal(tc_recv_type(b, DERP_FRAME_RECV_PACKET, &m, 3000), 0);
	kd_client_close(a);
	kd_client_close(b);
	ts_stop(&ts);
}

static void test_oversize_send_packet_closes(void **state)
{
	uint8_t f[5];
	(void)state;
	derp_hdr_put((struct derp_frame_hdr *)f, DERP_FRAME_SEND_PACKET, DERP_KEY_LEN + DERP_MAX_PACKET + 1);
	bad_frame_closes_only_sender(f, sizeof(f), true);
}

static void test_short_send_packet_closes(void **state)
{
	uint8_t f[5 + 31] = {0};
	(void)state;
	derp_hdr_put((struct derp_frame_hdr *)f, DERP_FRAME_SEND_PACKET, 31);
	bad_frame_closes_only_sender(f, sizeof(f), true);
}

static void test_bad_note_preferred_closes(void **state)
{
	uint8_t f[7] = {0};
	(void)state;
	derp_hdr_put((struct derp_frame_hdr *)f, DERP_FRAME_NOTE_PREFERRED, 2);
	bad_frame_closes_only_sender(f, sizeof(f), true);
}

static void test_forward_packet_needs_mesh_key(void **state)
{
	uint8_t f[5 + 64 + 2] = {0};
	(void)state;
	derp_hdr_put((struct derp_frame_hdr *)f, DERP_FRAME_FORWARD_PACKET, 66);
	bad_frame_closes_only_sender(f, sizeof(f), true);
}

static void test_unknown_frames_skipped(void **state)
{
	/* a future frame type, a client Pong and a KeepAlive: all ignored */
	uint8_t f[5 + 3 + 5 + 8 + 5] = {0};
	(void)state;
	derp_hdr_put((struct derp_frame_hdr *)f, 0x30, 3);
	derp_hdr_put((struct derp_frame_hdr *)(f + 8), DERP_FRAME_PONG, 8);
	derp_hdr_put((struct derp_frame_hdr *)(f + 21), DERP_FRAME_KEEP_ALIVE, 0);
	bad_frame_closes_only_sender(f, sizeof(f), false);
}

static void test_huge_unknown_frame_closes(void **state)
{
	uint8_t f[5];
	(void)state;
	derp_hdr_put((struct derp_frame_hdr *)f, 0x30, DERP_MAX_UNKNOWN_FRAME + 1);
	bad_frame_closes_only_sender(f, sizeof(f), true);
}

static void test_large_unknown_frame_skipped_unbuffered(void **state)
{
	size_t n = 5 + 300000;
	uint8_t *f = calloc(1, n);
	(void)state;
	derp_hdr_put((struct derp_frame_hdr *)f, 0x31, 300000);
	bad_frame_closes_only_sender(f, n, false);
	free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_relay_both_ways),
		cmocka_unit_test(test_ping_pong_and_note_preferred),
		cmocka_unit_test(test_peer_gone_to_receivers),
		cmocka_unit_test(test_not_here_rate_limited),
		cmocka_unit_test(test_duplicate_client_last_writer_wins),
		cmocka_unit_test(test_keepalive_sent),
		cmocka_unit_test(test_stalled_receiver_drops_and_times_out),
		cmocka_unit_test(test_oversize_send_packet_closes),
		cmocka_unit_test(test_short_send_packet_closes),
		cmocka_unit_test(test_bad_note_preferred_closes),
		cmocka_unit_test(test_forward_packet_needs_mesh_key),
		cmocka_unit_test(test_unknown_frames_skipped),
		cmocka_unit_test(test_huge_unknown_frame_closes),
		cmocka_unit_test(test_large_unknown_frame_skipped_unbuffered),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
