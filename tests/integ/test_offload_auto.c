// SPDX-License-Identifier: MIT
/* kderpd with -offload=auto: a plain-TCP client is watched for its first
 * KD_AUTO_SAMPLE packets (sent and received) and moves to the kernel plane
 * only when their mean payload reaches KD_AUTO_MIN_MEAN, the crossover
 * measured by scripts/bench-offload.sh. A 16 KiB flow must end up relayed
 * by the kernel (and stay byte-exact across the switch), a 1400 B flow
 * must stay in userspace; the decision shows in the metrics and in
 * /debug/clients. */
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
#include "offload_policy.h"

static bool start_auto(struct ts_server *ts)
{
	struct kd_server_config cfg;

	kd_server_config_defaults(&cfg);
	cfg.offload = 2;
	return tc_start_offload(ts, &cfg);
}

static long long decisions(struct ts_server *ts, const char *d)
{
	char name[96];

	snprintf(name, sizeof(name), "kderp_offload_auto_decisions_total{decision=\"%s\"}", d);
	return ts_metric(ts, name);
}

static void wait_metric(struct ts_server *ts, const char *name, long long want)
{
	for (int i = 0; i < 300 && ts_metric(ts, name) < want; i++)
		usleep(10000);
	assert_int_equal(ts_metric(ts, name), want);
}

/* A sends n packets of size bytes to B, one at a time, each checked on
 * arrival: whole, from A, in order, with the payload its number implies. */
static void relay_checked(struct kd_client *a, struct kd_client *b, const uint8_t *src, const uint8_t *dst,
			  size_t size, int first, int n)
{
	uint8_t *buf = malloc(size);
	struct kd_client_msg m;

	assert_non_null(buf);
	for (int i = first; i < first + n; i++) {
		memcpy(buf, &i, 4);
		for (size_t k = 4; k < size; k++)
			buf[k] = (uint8_t)(k * 7 + (size_t)i);
		assert_int_equal(kd_client_send_packet(a, dst, buf, size), 0);
		assert_int_equal(kd_client_flush_wait(a, 3000), 0);
		for (;;) {
			assert_int_equal(kd_client_recv(b, &m, 3000), 0);
			if (m.type == DERP_FRAME_RECV_PACKET)
				break;
		}
		assert_memory_equal(m.key, src, 32);
		assert_int_equal(m.data_len, size);
		assert_memory_equal(m.data, buf, size);
	}
	free(buf);
}

/* counts the /debug/clients lines with both fields */
static int clients_with(struct ts_server *ts, const char *plane, const char *decision)
{
	char *body = ts_http_get(ts, "/debug/clients"), pl[48], au[64];
	int n = 0;

	assert_non_null(body);
	snprintf(pl, sizeof(pl), "\"plane\":\"%s\"", plane);
	snprintf(au, sizeof(au), "\"auto\":\"%s\"", decision);
	for (char *line = strtok(body, "\n"); line; line = strtok(NULL, "\n"))
		if (strstr(line, pl) && strstr(line, au))
			n++;
	free(body);
	return n;
}

static void test_large_flow_moves_to_kernel(void **state)
{
	struct ts_server ts;
	struct kd_keypair ka = {0}, kb = {0};
	enum { SIZE = 16384 };
	(void)state;

	if (!start_auto(&ts))
		skip();
	struct kd_client *a = tc_login(&ts, &ka, NULL), *b = tc_login(&ts, &kb, NULL);
	assert_non_null(a);
	assert_non_null(b);
	/* watched in userspace: nothing offloaded before the sample is full */
	relay_checked(a, b, ka.pub, kb.pub, SIZE, 0, KD_AUTO_SAMPLE - 1);
	assert_int_equal(ts_metric(&ts, "kderp_offloaded_connections_total"), 0);
	assert_int_equal(clients_with(&ts, "userspace", "watching"), 2);
	/* the 64th packet completes both samples (A sent 64, B received 64) */
	relay_checked(a, b, ka.pub, kb.pub, SIZE, KD_AUTO_SAMPLE - 1, 1);
	assert_int_equal(decisions(&ts, "kernel_large_packets"), 2);
	/* each moves when nothing is buffered for it: A at its next drained
	 * read, B once its write queue is flushed (the packet above) */
	wait_metric(&ts, "kderp_offloaded_connections_total", 2);
	assert_int_equal(clients_with(&ts, "kernel", "kernel_large_packets"), 2);
	long long r0 = ts_metric(&ts, "kderp_offload_frames_total{reason=\"redirected\"}");
	relay_checked(a, b, ka.pub, kb.pub, SIZE, KD_AUTO_SAMPLE, 200);
	long long r1 = ts_metric(&ts, "kderp_offload_frames_total{reason=\"redirected\"}");
	printf("# 16 KiB flow: %lld of 200 packets after the switch relayed by the kernel\n", r1 - r0);
	assert_int_equal(r1 - r0, 200);
	assert_int_equal(decisions(&ts, "userspace_small_packets"), 0);
	kd_client_close(a);
	kd_client_close(b);
	ts_stop(&ts);
}

static void test_small_flow_stays_in_userspace(void **state)
{
	struct ts_server ts;
	struct kd_keypair ka = {0}, kb = {0};
	(void)state;

	if (!start_auto(&ts))
		skip();
	struct kd_client *a = tc_login(&ts, &ka, NULL), *b = tc_login(&ts, &kb, NULL);
	assert_non_null(a);
	assert_non_null(b);
	relay_checked(a, b, ka.pub, kb.pub, 1400, 0, 3 * KD_AUTO_SAMPLE);
	assert_int_equal(decisions(&ts, "userspace_small_packets"), 2);
	assert_int_equal(decisions(&ts, "kernel_large_packets"), 0);
	assert_int_equal(clients_with(&ts, "userspace", "userspace_small_packets"), 2);
	assert_int_equal(ts_metric(&ts, "kderp_offloaded_connections_total"), 0);
	assert_int_equal(ts_metric(&ts, "kderp_offload_frames_total{reason=\"redirected\"}"), 0);
	/* a later burst of large packets does not reopen the decision */
	relay_checked(a, b, ka.pub, kb.pub, 16384, 3 * KD_AUTO_SAMPLE, KD_AUTO_SAMPLE);
	usleep(100000);
	assert_int_equal(ts_metric(&ts, "kderp_offloaded_connections_total"), 0);
	kd_client_close(a);
	kd_client_close(b);
	ts_stop(&ts);
}

/* A mix just under the crossover stays; just over it moves: the mean, not
 * the largest packet, decides. */
static void test_mean_decides(void **state)
{
	struct ts_server ts;
	struct kd_keypair ka = {0}, kb = {0};
	(void)state;

	if (!start_auto(&ts))
		skip();
	struct kd_client *a = tc_login(&ts, &ka, NULL), *b = tc_login(&ts, &kb, NULL);
	assert_non_null(a);
	assert_non_null(b);
	/* half 64 B, half (2 * KD_AUTO_MIN_MEAN - 64) B - 1: mean just below */
	for (int i = 0; i < KD_AUTO_SAMPLE; i++)
		relay_checked(a, b, ka.pub, kb.pub, i % 2 ? 2 * KD_AUTO_MIN_MEAN - 64 - 2 : 64, i, 1);
	assert_int_equal(decisions(&ts, "userspace_small_packets"), 2);
	kd_client_close(a);
	kd_client_close(b);
	struct kd_keypair kc = {0}, kd = {0};
	struct kd_client *c = tc_login(&ts, &kc, NULL), *d = tc_login(&ts, &kd, NULL);
	assert_non_null(c);
	assert_non_null(d);
	for (int i = 0; i < KD_AUTO_SAMPLE; i++)
		relay_checked(c, d, kc.pub, kd.pub, i % 2 ? 2 * KD_AUTO_MIN_MEAN - 64 : 64, i, 1);
	assert_int_equal(decisions(&ts, "kernel_large_packets"), 2);
	wait_metric(&ts, "kderp_offloaded_connections_total", 2);
	kd_client_close(c);
	kd_client_close(d);
	ts_stop(&ts);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_large_flow_moves_to_kernel),
		cmocka_unit_test(test_small_flow_stays_in_userspace),
		cmocka_unit_test(test_mean_decides),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
