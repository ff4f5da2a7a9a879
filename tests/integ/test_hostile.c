// SPDX-License-Identifier: MIT
/* Hostile DERP input against an in-process kderpd on loopback: handshakes
 * that are slow, silent or wrong in every way, oversize lengths in every
 * frame type, unauthenticated connections parked on a large ClientInfo, and
 * clients leaving mid-frame while packets fly to them. Each closes only its
 * own connection and moves the right counter. Every loop is bounded. */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "derp_crypto.h"
#include "derp_wire.h"
#include "hostile.h"
#include "server_internal.h"

struct oversize {
	uint8_t type;
	uint32_t len;
};


enum hs_case {
	HS_GARBAGE,
	HS_NOT_CLIENT_INFO,
	HS_ZERO_KEY,
	HS_LOW_ORDER_KEY,
	HS_OTHER_SERVER,
	HS_SHORT_BOX,
	HS_TRUNCATED_BOX,
	HS_HUGE,
	HS_BAD_JSON,
	HS_MESH_KEY_LEN,
	HS_EOF_MID_FRAME,
	HS_CASES,
};

static const char *const hs_reason[HS_CASES] = {
	[HS_GARBAGE] = "bad_frame_type",
	[HS_NOT_CLIENT_INFO] = "bad_frame_type",
	[HS_ZERO_KEY] = "zero_key",
	[HS_LOW_ORDER_KEY] = "box_open",
	[HS_OTHER_SERVER] = "box_open",
	[HS_SHORT_BOX] = "short_client_info",
	[HS_TRUNCATED_BOX] = "box_open",
	[HS_HUGE] = "long_client_info",
	[HS_BAD_JSON] = "bad_json",
	[HS_MESH_KEY_LEN] = "bad_json",
	[HS_EOF_MID_FRAME] = "eof",
};


/* The bytes to send for one case; *len set, the buffer is big enough for 300 KiB. */
static void build_hs_case(enum hs_case k, uint8_t *f, size_t cap, size_t *len, const uint8_t *spub)
{
	struct kd_keypair kc, other;
	static const uint8_t zero[DERP_KEY_LEN];
	/* u = 1: a point of small order; X25519 with it yields all zeros */
	uint8_t low[DERP_KEY_LEN] = {1};

	kd_keypair_generate(&kc);
	kd_keypair_generate(&other);
	switch (k) {
	case HS_GARBAGE:
		for (size_t i = 0; i < 64; i++)
			f[i] = (uint8_t)(0xde ^ (i * 37));
		*len = 64;
		return;
	case HS_NOT_CLIENT_INFO:
		memset(f, 0, DERP_FRAME_HDR_LEN + DERP_KEY_LEN + 4);
		derp_hdr_put((struct derp_frame_hdr *)f, DERP_FRAME_SEND_PACKET, DERP_KEY_LEN + 4);
		*len = DERP_FRAME_HDR_LEN + DERP_KEY_LEN + 4;
		return;
	case HS_ZERO_KEY:
		*len = th_client_info_frame(f, cap, zero, &kc, spub, "{\"version\":2}");
		return;
	case HS_LOW_ORDER_KEY:
		*len = th_client_info_frame(f, cap, low, &kc, spub, "{\"version\":2}");
		return;
	case HS_OTHER_SERVER:
		*len = th_client_info_frame(f, cap, kc.pub, &kc, other.pub, "{\"version\":2}");
		return;
	case HS_SHORT_BOX:
		/* key + nonce + less than a MAC */
		memset(f, 7, DERP_FRAME_HDR_LEN + DERP_MIN_CLIENT_INFO + DERP_MAC_LEN - 1);
		derp_hdr_put((struct derp_frame_hdr *)f, DERP_FRAME_CLIENT_INFO, DERP_MIN_CLIENT_INFO + DERP_MAC_LEN - 1);
		*len = DERP_FRAME_HDR_LEN + DERP_MIN_CLIENT_INFO + DERP_MAC_LEN - 1;
		return;
	case HS_TRUNCATED_BOX: {
		/* a valid box with its last bytes cut, the header telling the truth */
		size_t n = th_client_info_frame(f, cap, kc.pub, &kc, spub, "{\"version\":2,\"canAckPings\":true}");
		n -= 6;
		derp_hdr_put((struct derp_frame_hdr *)f, DERP_FRAME_CLIENT_INFO, (uint32_t)(n - DERP_FRAME_HDR_LEN));
		*len = n;
		return;
	}
	case HS_HUGE: {
		size_t n = 300 * 1024;
		assert_true(n + DERP_FRAME_HDR_LEN <= cap);
		memset(f, 0x20, n + DERP_FRAME_HDR_LEN);
		derp_hdr_put((struct derp_frame_hdr *)f, DERP_FRAME_CLIENT_INFO, (uint32_t)n);
		memcpy(f + DERP_FRAME_HDR_LEN, kc.pub, DERP_KEY_LEN);
		*len = n + DERP_FRAME_HDR_LEN;
		return;
	}
	case HS_BAD_JSON:
		*len = th_client_info_frame(f, cap, kc.pub, &kc, spub, "{\"version\":2,");
		return;
	case HS_MESH_KEY_LEN:
		*len = th_client_info_frame(f, cap, kc.pub, &kc, spub, "{\"version\":2,\"meshKey\":\"abcd\"}");
		return;
	case HS_EOF_MID_FRAME: {
		size_t n = th_client_info_frame(f, cap, kc.pub, &kc, spub, "{\"version\":2}");
		*len = n / 2;
		return;
	}
	case HS_CASES:
		break;
	}
	fail();
}

/* After the upgrade: a ClientInfo trickled a byte at a time, and one never
 * sent. Both are reaped by the handshake deadline; a real login still works. */
static void test_slowloris_derp_handshake(void **state)
{
	struct ts_server ts;
	struct kd_server_config cfg;
	struct kd_keypair kc = {0}, kb = {0};
	uint8_t spub[DERP_KEY_LEN], frame[512];
	(void)state;

	kd_server_config_defaults(&cfg);
	cfg.handshake_timeout_ms = 600;
	assert_int_equal(ts_start(&ts, &cfg, NULL), 0);
	kd_keypair_generate(&kc);

	int trickle = th_raw_upgrade(ts.port, spub), silent = th_raw_upgrade(ts.port, NULL);
	int64_t t0 = th_mono_ms(), took = -1;
	assert_true(trickle >= 0);
	assert_true(silent >= 0);
	size_t n = th_client_info_frame(frame, sizeof(frame), kc.pub, &kc, spub, "{\"version\":2}");
	for (size_t i = 0; i < n && th_mono_ms() - t0 < 5000; i++) {
		if (send(trickle, frame + i, 1, MSG_NOSIGNAL) != 1) {
			took = th_mono_ms() - t0;
			break;
		}
		struct pollfd p = {.fd = trickle, .events = POLLIN};
		if (poll(&p, 1, 100) == 1) {
			took = th_closed_after(trickle, t0, 500);
			break;
		}
	}
	int64_t silent_took = th_closed_after(silent, t0, 3000);
	print_message("# slowloris ClientInfo: closed after %lld ms, silent after %lld ms\n", (long long)took,
		      (long long)silent_took);
	assert_true(took >= 500 && took <= 1600);
	assert_true(silent_took >= 0 && silent_took <= 1600);
	th_hs_expect(&ts, "timeout", 2);
	th_metric_wait(&ts, "derp_current_connections", 0, false);
	struct kd_client *b = tc_login(&ts, &kb, NULL);
	assert_non_null(b);
	assert_true(tc_alive(b));
	kd_client_close(b);
	close(trickle);
	close(silent);
	ts_stop(&ts);
}

static void test_oversize_lengths_every_frame_type(void **state)
{
	static const struct oversize cases[] = {
		{DERP_FRAME_SEND_PACKET, DERP_KEY_LEN + DERP_MAX_PACKET + 1},
		{DERP_FRAME_FORWARD_PACKET, 2 * DERP_KEY_LEN + DERP_MAX_PACKET + 1},
		{DERP_FRAME_NOTE_PREFERRED, 2},
		{DERP_FRAME_PING, DERP_MAX_PING + 1},
		{DERP_FRAME_WATCH_CONNS, 1},
		{DERP_FRAME_CLOSE_PEER, DERP_KEY_LEN + 1},
		/* frames a client never sends or that the server skips: capped at 1 MiB */
		{DERP_FRAME_SERVER_KEY, DERP_MAX_UNKNOWN_FRAME + 1},
		{DERP_FRAME_CLIENT_INFO, DERP_MAX_UNKNOWN_FRAME + 1},
		{DERP_FRAME_SERVER_INFO, DERP_MAX_UNKNOWN_FRAME + 1},
		{DERP_FRAME_RECV_PACKET, DERP_MAX_UNKNOWN_FRAME + 1},
		{DERP_FRAME_KEEP_ALIVE, DERP_MAX_UNKNOWN_FRAME + 1},
		{DERP_FRAME_PEER_GONE, DERP_MAX_UNKNOWN_FRAME + 1},
		{DERP_FRAME_PEER_PRESENT, DERP_MAX_UNKNOWN_FRAME + 1},
		{DERP_FRAME_PONG, DERP_MAX_UNKNOWN_FRAME + 1},
		{DERP_FRAME_HEALTH, DERP_MAX_UNKNOWN_FRAME + 1},
		{DERP_FRAME_RESTARTING, DERP_MAX_UNKNOWN_FRAME + 1},
		{0x30, DERP_MAX_UNKNOWN_FRAME + 1},
		{0xff, DERP_MAX_UNKNOWN_FRAME + 1},
	};
	struct ts_server ts;
	struct kd_keypair kb = {0};
	uint8_t spub[DERP_KEY_LEN];
	(void)state;

	assert_int_equal(ts_start(&ts, NULL, NULL), 0);
	struct kd_client *b = tc_login(&ts, &kb, NULL);
	assert_non_null(b);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* just over the limit, then the largest length the header can say */
		for (int huge = 0; huge < 2; huge++) {
			struct kd_keypair ka = {0};
			uint8_t hdr[DERP_FRAME_HDR_LEN + 64] = {0};
			struct kd_client *a = tc_login(&ts, &ka, NULL);
			assert_non_null(a);
			derp_hdr_put((struct derp_frame_hdr *)hdr, cases[i].type, huge ? UINT32_MAX : cases[i].len);
			assert_int_equal(kd_client_send_raw(a, hdr, sizeof(hdr)), 0);
			assert_int_equal(kd_client_flush_wait(a, 3000), 0);
			th_recv_until_closed(a, 3000);
			kd_client_close(a);
		}
		assert_true(tc_alive(b));
	}
	/* during the handshake the cap is 256 KiB, before any payload is read */
	int fd = th_raw_upgrade(ts.port, spub);
	assert_true(fd >= 0);
	uint8_t hdr[DERP_FRAME_HDR_LEN];
	derp_hdr_put((struct derp_frame_hdr *)hdr, DERP_FRAME_CLIENT_INFO, UINT32_MAX);
	assert_int_equal(ts_write_all(fd, hdr, sizeof(hdr)), 0);
	assert_true(th_closed_after(fd, th_mono_ms(), 2000) >= 0);
	close(fd);
	th_hs_expect(&ts, "long_client_info", 1);
	assert_true(tc_alive(b));
	th_metric_wait(&ts, "derp_current_connections", 1, false);
	kd_client_close(b);
	ts_stop(&ts);
}

static void test_bad_handshakes_close_only_their_connection(void **state)
{
	struct ts_server ts;
	struct kd_keypair kb = {0};
	uint8_t spub[DERP_KEY_LEN];
	size_t cap = 320 * 1024, len = 0;
	uint8_t *f = malloc(cap);
	(void)state;

	assert_non_null(f);
	assert_int_equal(ts_start(&ts, NULL, NULL), 0);
	struct kd_client *b = tc_login(&ts, &kb, NULL);
	assert_non_null(b);
	for (int k = 0; k < HS_CASES; k++) {
		int fd = th_raw_upgrade(ts.port, spub);
		assert_true(fd >= 0);
		assert_memory_equal(spub, ts.cfg.keys.pub, DERP_KEY_LEN);
		build_hs_case((enum hs_case)k, f, cap, &len, spub);
		/* the server may close before reading all of a 300 KiB frame */
		int err = ts_write_all(fd, f, len);
		assert_true(err == 0 || err == -EPIPE || err == -ECONNRESET);
		if (k == HS_EOF_MID_FRAME)
			shutdown(fd, SHUT_WR);
		int64_t took = th_closed_after(fd, th_mono_ms(), 2000);
		close(fd);
		if (took < 0)
			fail_msg("handshake case %d (%s) was not closed", k, hs_reason[k]);
		long long want = 0;
		for (int j = 0; j <= k; j++)
			if (!strcmp(hs_reason[j], hs_reason[k]))
				want += 1;
		th_hs_expect(&ts, hs_reason[k], want);
		assert_true(tc_alive(b));
	}
	/* nothing counted as a timeout: each was decided on its bytes */
	th_hs_expect(&ts, "timeout", 0);
	th_metric_wait(&ts, "derp_current_connections", 1, false);
	kd_client_close(b);
	free(f);
	ts_stop(&ts);
}

/* Unauthenticated connections that each send most of a maximal ClientInfo
 * and stall: the server holds their bytes until the handshake deadline.
 * What one costs must stay near the ClientInfo cap, and all of it must come
 * back when the deadline closes them. */
static void test_partial_client_info_memory(void **state)
{
	struct ts_server ts;
	struct kd_server_config cfg;
	enum { N = 100 };
	static int fds[N];
	size_t plen = DERP_MAX_CLIENT_INFO, sent = plen - 100;
	uint8_t *f = calloc(1, DERP_FRAME_HDR_LEN + plen);
	(void)state;

	assert_non_null(f);
	derp_hdr_put((struct derp_frame_hdr *)f, DERP_FRAME_CLIENT_INFO, (uint32_t)plen);
	memset(f + DERP_FRAME_HDR_LEN, 0x11, plen);
	kd_server_config_defaults(&cfg);
	cfg.handshake_timeout_ms = 3000;
	assert_int_equal(ts_start(&ts, &cfg, NULL), 0);
	/* warm the allocator with one round trip of the same shape */
	fds[0] = th_raw_upgrade(ts.port, NULL);
	assert_true(fds[0] >= 0);
	close(fds[0]);
	th_metric_wait(&ts, "derp_current_connections", 0, false);
	usleep(100000);
	long rss0 = th_vmrss_kb();
	int64_t t0 = th_mono_ms();
	for (int i = 0; i < N; i++) {
		fds[i] = th_raw_upgrade(ts.port, NULL);
		assert_true(fds[i] >= 0);
		assert_int_equal(ts_write_all(fds[i], f, DERP_FRAME_HDR_LEN + sent), 0);
	}
	usleep(300000);
	long rss1 = th_vmrss_kb();
	int closed = 0;
	for (int i = 0; i < N; i++) {
		int left = (int)(t0 + 3000 + 2000 - th_mono_ms());
		closed += ts_wait_closed(fds[i], left > 0 ? left : 0);
		close(fds[i]);
	}
	usleep(200000);
	long rss2 = th_vmrss_kb();
	print_message("# %d stalled %zu KiB ClientInfos: VmRSS %ld -> %ld kB (%ld kB each), after the deadline %ld kB\n",
		      N, sent >> 10, rss0, rss1, (rss1 - rss0) / N, rss2);
	assert_int_equal(closed, N);
	th_hs_expect(&ts, "timeout", N);
	free(f);
	ts_stop(&ts);
	th_rss_bound(rss0, rss1, N * (long)(DERP_MAX_CLIENT_INFO / 1024) * 5 / 4);
	th_rss_bound(rss0, rss2, 8 * 1024);
}

static void test_leave_mid_frame_with_packets_in_flight(void **state)
{
	struct ts_server ts;
	struct kd_keypair kb = {0};
	static uint8_t pkt[1200];
	(void)state;

	assert_int_equal(ts_start(&ts, NULL, NULL), 0);
	struct kd_client *b = tc_login(&ts, &kb, NULL);
	assert_non_null(b);
	memset(pkt, 0x33, sizeof(pkt));
	for (int i = 0; i < 60; i++) {
		struct kd_keypair ka = {0};
		struct kd_client *a = tc_login(&ts, &ka, NULL);
		assert_non_null(a);
		/* stop reading: packets toward A pile up in the server */
		int small = 4096;
		setsockopt(kd_client_fd(a), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
		th_flood(b, ka.pub, pkt, sizeof(pkt), 100 + i * 5);
		/* a SendPacket to B whose payload stops halfway */
		uint8_t half[DERP_FRAME_HDR_LEN + DERP_KEY_LEN + 600];
		derp_hdr_put((struct derp_frame_hdr *)half, DERP_FRAME_SEND_PACKET, DERP_KEY_LEN + 1200);
		memcpy(half + DERP_FRAME_HDR_LEN, kb.pub, DERP_KEY_LEN);
		memset(half + DERP_FRAME_HDR_LEN + DERP_KEY_LEN, 0x44, 600);
		assert_int_equal(kd_client_send_raw(a, half, sizeof(half)), 0);
		assert_int_equal(kd_client_flush_wait(a, 3000), 0);
		if (i % 2) {
			/* abortive: RST with data still unread on both sides */
			struct linger l = {.l_onoff = 1, .l_linger = 0};
			setsockopt(kd_client_fd(a), SOL_SOCKET, SO_LINGER, &l, sizeof(l));
		}
		/* more packets toward A while it goes */
		th_flood(b, ka.pub, pkt, sizeof(pkt), 20);
		kd_client_close(a);
		if (i % 10 == 9)
			assert_true(tc_alive(b));
	}
	th_metric_wait(&ts, "derp_current_connections", 1, false);
	assert_true(tc_alive(b));
	/* none of the half frames turned into a packet for B */
	struct kd_client_msg m;
	assert_int_equal(tc_recv_type(b, DERP_FRAME_RECV_PACKET, &m, 300), -ETIMEDOUT);
	long long gone = ts_metric(&ts, "derp_packets_dropped{reason=\"gone_disconnected\",kind=\"other\"}");
	print_message("# mid-frame leavers: gone_disconnected drops %lld\n", gone);
	char problems[512] = "";
	if (!kd_registry_check(ts.srv, problems, sizeof(problems)))
		fail_msg("registry: %s", problems);
	kd_client_close(b);
	ts_stop(&ts);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_slowloris_derp_handshake),
		cmocka_unit_test(test_oversize_lengths_every_frame_type),
		cmocka_unit_test(test_bad_handshakes_close_only_their_connection),
		cmocka_unit_test(test_partial_client_info_memory),
		cmocka_unit_test(test_leave_mid_frame_with_packets_in_flight),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
