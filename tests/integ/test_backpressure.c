// SPDX-License-Identifier: MIT
/* Backpressure on senders: a receiver that stalls for less than the
 * congestion patience makes its sender pause (its reads stop, so TCP slows
 * it) instead of the relay reading on and head-dropping everything the
 * stall cannot queue. The reference server has no such pause: each 200 ms
 * stall below would cost it ~20 000 packets. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "clients.h"
#include "derp_wire.h"
#include "hostile.h"

enum { SIZE = 1200, COUNT = 40000 }; /* 48 MB: each stall outlasts the socket buffers */

struct sender {
	struct kd_client *c;
	const uint8_t *dst;
	int sent;
};

static void sleep_ms(int ms);

static void *send_main(void *arg)
{
	struct sender *s = arg;
	uint8_t pkt[SIZE];

	for (int i = 0; i < COUNT; i++) {
		memset(pkt, 0, sizeof(pkt));
		memcpy(pkt, &i, sizeof(i));
		int err = kd_client_send_packet(s->c, s->dst, pkt, sizeof(pkt));
		if (err == -ENOBUFS) {
			/* the relay stopped reading us: wait for it like TCP would */
			if (kd_client_flush_wait(s->c, 10000) != 0)
				break;
			err = kd_client_send_packet(s->c, s->dst, pkt, sizeof(pkt));
		}
		if (err != 0)
			break;
		s->sent++;
		if (i % 100 == 99) {
			/* ~120 MB/s: slower than B drains, so only B's stalls congest */
			kd_client_flush_wait(s->c, 10000);
			sleep_ms(1);
		}
	}
	kd_client_flush_wait(s->c, 10000);
	return NULL;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static void test_short_stalls_pause_the_sender(void **state)
{
	struct ts_server ts;
	struct kd_keypair ka = {0}, kb = {0};
	const char *pauses = "kderp_sender_pauses_total{reason=\"dst_congested\"}";
	const char *drops = "derp_packets_dropped{reason=\"queue_head\",kind=\"other\"}";
	(void)state;

	struct kd_server_config cfg;
	kd_server_config_defaults(&cfg);
	/* B's stalls must outlast the socket buffers on loopback (megabytes)
	 * and stay inside the patience, whatever else the machine does */
	cfg.congestion_patience_ms = 2000;
	/* one worker: across workers the pause engages only once the packets
	 * already handed to the destination's worker have met its full queue,
	 * thousands of them at this rate (README "Performance") */
	cfg.workers = 1;
	assert_int_equal(ts_start(&ts, &cfg, NULL), 0);
	struct kd_client *a = tc_login(&ts, &ka, NULL), *b = tc_login(&ts, &kb, NULL);
	assert_non_null(a);
	assert_non_null(b);
	/* B's receive buffer stays autotuned: a small fixed one next to
	 * loopback's 64 KiB MSS can stall TCP itself for seconds */

	struct sender s = {.c = a, .dst = kb.pub};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, send_main, &s), 0);

	/* B stalls for 200 ms every 10 000 packets: each stall fills the relay's
	 * socket to B and B's queue, but ends well inside the patience after
	 * which kderp (and, at once, the reference) head-drops */
	int got = 0, gaps = 0, back = 0, badlen = 0, next = 0;
	while (got < COUNT) {
		struct kd_client_msg m;
		if (kd_client_recv(b, &m, 1000) != 0)
			break;
		if (m.type != DERP_FRAME_RECV_PACKET)
			continue;
		int seq;
		memcpy(&seq, m.payload + 32, sizeof(seq));
		gaps += seq > next;  /* head drops */
		back += seq < next;  /* a reorder or a duplicate: never */
		badlen += m.len != 32 + SIZE;
		next = seq + 1;
		if (++got % 10000 == 0)
			sleep_ms(200);
	}
	pthread_join(th, NULL);
	long long p = ts_metric(&ts, pauses), dropped = ts_metric(&ts, drops);
	print_message("# %d sent, %d received (%d gaps, %d reordered), %lld pauses, %lld head-dropped\n", s.sent,
		      got, gaps, back, p, dropped);
	assert_int_equal(s.sent, COUNT);
	assert_true(p > 0); /* the stalls did hold the sender back */
	/* each pause ends after KD_PAUSE_MS with one more frame read: while
	 * B still stalls that one head-drops: about 200 in all here, against
	 * 15 719 with the pause off (patience 0) */
	assert_true(dropped < COUNT / 40);
	assert_int_equal(got + dropped, COUNT);
	assert_int_equal(back, 0);
	assert_int_equal(badlen, 0);
	kd_client_close(a);
	kd_client_close(b);
	ts_stop(&ts);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_short_stalls_pause_the_sender),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
