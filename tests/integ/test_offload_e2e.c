// SPDX-License-Identifier: MIT
/* kderpd with -offload=sockmap: plain-TCP clients move to the kernel plane
 * after their handshake; their SendPackets are relayed by the sk_skb
 * programs while the daemon's own frames (Pong, KeepAlive, PeerGone, and
 * packets it relays from clients that are not offloaded) reach them through
 * the injector. Everything must arrive byte-exact and whole. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "clients.h"
#include "derp_wire.h"
#include "offload.h"
#include "offload_fixture.h"

/* KD_WATCHDOG_MS x KD_WATCHDOG_CHECKS (server_internal.h) with slack */
#define KD_TEST_WATCHDOG_MS 2000

static bool start_offload(struct ts_server *ts)
{
	struct kd_server_config cfg;

	kd_server_config_defaults(&cfg);
	cfg.offload = 1;
	cfg.keepalive_ms = 300; /* KeepAlives through the injector, mixed with relayed frames */
	return tc_start_offload(ts, &cfg);
}

static void wait_metric(struct ts_server *ts, const char *name, long long want)
{
	for (int i = 0; i < 200 && ts_metric(ts, name) < want; i++)
		usleep(10000);
	assert_true(ts_metric(ts, name) >= want);
}

/* A RecvPacket must be whole, from src, in increasing sequence, with the
 * payload its sequence number implies; Pongs are counted. */
static void check_frame(const struct kd_client_msg *m, const uint8_t *src, int *got, int *last, int *pongs)
{
	if (m->type == DERP_FRAME_PONG) {
		assert_memory_equal(m->data, "ping", 4);
		(*pongs)++;
		return;
	}
	if (m->type != DERP_FRAME_RECV_PACKET)
		return;
	int seq;
	assert_memory_equal(m->key, src, 32);
	assert_true(m->data_len >= 4);
	memcpy(&seq, m->data, 4);
	assert_true(seq > *last);
	assert_int_equal(m->data_len, 4 + (size_t)(seq * 37) % 8188);
	for (size_t k = 4; k < m->data_len; k++)
		if (m->data[k] != (uint8_t)(k + (size_t)seq))
			fail_msg("packet %d corrupt at byte %zu", seq, k);
	*last = seq;
	(*got)++;
}

static void test_kernel_relay_byte_exact_with_daemon_frames(void **state)
{
	struct ts_server ts;
	struct kd_keypair ka = {0}, kb = {0};
	struct kd_client_msg m;
	(void)state;

	if (!start_offload(&ts))
		skip();
	struct kd_client *a = tc_login(&ts, &ka, NULL), *b = tc_login(&ts, &kb, NULL);
	assert_non_null(a);
	assert_non_null(b);
	wait_metric(&ts, "kderp_offloaded_connections_total", 2);
	long long redirected0 = ts_metric(&ts, "kderp_offload_frames_total{reason=\"redirected\"}");

	/* A -> B through the kernel, sizes 0..8 KiB, while B pings (Pong is
	 * injected into the same stream) and KeepAlives tick */
	enum { N = 2000 };
	uint8_t *buf = malloc(8192);
	int got = 0, last = -1, pongs = 0, next_ping = 0;
	for (int i = 0; i < N; i++) {
		size_t n = 4 + (size_t)(i * 37) % 8188;
		memcpy(buf, &i, 4);
		for (size_t k = 4; k < n; k++)
			buf[k] = (uint8_t)(k + (size_t)i);
		int err;
		while ((err = kd_client_send_packet(a, kb.pub, buf, n)) == -EAGAIN || err == -ENOBUFS)
			assert_int_equal(kd_client_flush_wait(a, 3000), 0);
		assert_int_equal(err, 0);
		if (i == next_ping) {
			uint8_t pd[8] = {'p', 'i', 'n', 'g', (uint8_t)i, (uint8_t)(i >> 8), 0, 0};
			assert_int_equal(kd_client_send_ping(b, pd), 0);
			next_ping += 250;
		}
		while (kd_client_poll(b, &m) == 0)
			check_frame(&m, ka.pub, &got, &last, &pongs);
	}
	assert_int_equal(kd_client_flush_wait(a, 5000), 0);
	/* everything sent is either delivered, whole and in order, or counted
	 * as dropped by the kernel's per-destination bound */
	long long dropped;
	for (;;) {
		dropped = ts_metric(&ts, "kderp_offload_frames_total{reason=\"dropped_over_bound\"}");
		if (got + dropped >= N)
			break;
		assert_int_equal(kd_client_recv(b, &m, 5000), 0);
		check_frame(&m, ka.pub, &got, &last, &pongs);
	}
	assert_int_equal(got + dropped, N);
	assert_true(got > 0);
	printf("# %d delivered by the kernel, %lld dropped over the queue bound\n", got, dropped);
	/* KeepAlives keep arriving: bound the wait by count, not by silence */
	for (int i = 0; i < 200 && pongs < ts_metric(&ts, "derp_sent_pong"); i++)
		if (kd_client_recv(b, &m, 100) == 0)
			check_frame(&m, ka.pub, &got, &last, &pongs);
	/* daemon frames share the bound: a Pong may be dropped with the rest
	 * of a flood, but each one is either delivered or counted */
	long long inj_dropped = ts_metric(&ts, "kderp_offload_frames_total{reason=\"inject_over_bound\"}");
	printf("# %d of %d pongs delivered, %lld injected frames over the bound\n", pongs, N / 250, inj_dropped);
	/* every Ping reached the daemon through the kernel's pass path; every
	 * Pong it answered (one outstanding at a time, spec §6.13) arrived */
	assert_int_equal(ts_metric(&ts, "derp_got_ping"), N / 250);
	assert_true(pongs >= 1);
	assert_int_equal(pongs + inj_dropped, ts_metric(&ts, "derp_sent_pong"));
	assert_true(ts_metric(&ts, "kderp_offload_frames_total{reason=\"redirected\"}") - redirected0 >= got);
	assert_true(ts_metric(&ts, "kderp_offload_frames_total{reason=\"injected\"}") >= pongs);
	/* the daemon's frames keep coming: a KeepAlive through the injector */
	assert_int_equal(tc_recv_type(b, DERP_FRAME_KEEP_ALIVE, &m, 6000), 0);
	/* A leaves: B received from A through the kernel (relay_pairs), so B hears */
	kd_client_close(a);
	assert_int_equal(tc_recv_type(b, DERP_FRAME_PEER_GONE, &m, 3000), 0);
	assert_memory_equal(m.key, ka.pub, 32);
	free(buf);
	kd_client_close(b);
	ts_stop(&ts);
}

/* A TLS-less WebSocket or an unknown destination stays in userspace: a
 * SendPacket to a key the kernel does not know is passed up and routed by
 * the daemon, and the answer is injected. */
static void test_unknown_dest_passes_to_userspace(void **state)
{
	struct ts_server ts;
	struct kd_keypair ka = {0};
	struct kd_client_msg m;
	uint8_t nobody[32], disco[80];
	(void)state;

	if (!start_offload(&ts))
		skip();
	struct kd_client *a = tc_login(&ts, &ka, NULL);
	assert_non_null(a);
	wait_metric(&ts, "kderp_offloaded_connections_total", 1);
	memset(nobody, 0x33, 32);
	memset(disco, 0x42, sizeof(disco));
	memcpy(disco, DERP_DISCO_MAGIC, DERP_DISCO_MAGIC_LEN);
	assert_int_equal(kd_client_send_packet(a, nobody, disco, sizeof(disco)), 0);
	assert_int_equal(tc_recv_type(a, DERP_FRAME_PEER_GONE, &m, 3000), 0);
	assert_memory_equal(m.key, nobody, 32);
	assert_int_equal(m.reason, DERP_PEER_GONE_NOT_HERE);
	assert_true(ts_metric(&ts, "kderp_offload_frames_total{reason=\"passed_unknown_dest\"}") >= 1);
	/* the operator's view: this flow is on the kernel plane */
	char *page = ts_http_get(&ts, "/debug/clients");
	assert_non_null(page);
	assert_non_null(strstr(page, "HTTP/1.1 200 "));
	assert_non_null(strstr(page, "\"plane\":\"kernel\""));
	free(page);
	kd_client_close(a);
	ts_stop(&ts);
}

/* A frame for userspace written one byte at a time: the kernel parser
 * either hands it up (the Pong comes back) or, on kernels where it stalls
 * on tiny segments (bpf/README.md), the watchdog closes the stuck flow and
 * counts it. Neither, or both, is a bug. */
static void test_tiny_writes_answered_or_watchdog(void **state)
{
	struct ts_server ts;
	struct kd_keypair ka = {0};
	struct kd_client_msg m;
	uint8_t f[5 + 8];
	(void)state;

	if (!start_offload(&ts))
		skip();
	struct kd_client *a = tc_login(&ts, &ka, NULL);
	assert_non_null(a);
	wait_metric(&ts, "kderp_offloaded_connections_total", 1);
	derp_hdr_put((struct derp_frame_hdr *)f, DERP_FRAME_PING, 8);
	memcpy(f + 5, "tinyping", 8);
	for (size_t i = 0; i < sizeof(f); i++) {
		assert_int_equal(kd_client_send_raw(a, f + i, 1), 0);
		assert_int_equal(kd_client_flush_wait(a, 1000), 0);
		usleep(2000);
	}
	int err, pong = 0;
	while ((err = kd_client_recv(a, &m, 8 * KD_TEST_WATCHDOG_MS)) == 0)
		if (m.type == DERP_FRAME_PONG && !memcmp(m.data, "tinyping", 8)) {
			pong = 1;
			break;
		}
	long long stuck = ts_metric(&ts, "kderp_offload_stuck_closed_total");
	printf("# tiny writes: %s\n", pong ? "answered" : "stalled, closed by the watchdog");
	if (pong) {
		assert_int_equal(stuck, 0);
	} else {
		assert_int_equal(err, -EPIPE); /* closed, not just silent */
		assert_int_equal(stuck, 1);
	}
	kd_client_close(a);
	ts_stop(&ts);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kernel_relay_byte_exact_with_daemon_frames),
		cmocka_unit_test(test_unknown_dest_passes_to_userspace),
		cmocka_unit_test(test_tiny_writes_answered_or_watchdog),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
