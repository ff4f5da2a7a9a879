// SPDX-License-Identifier: MIT
/* Overload against an in-process kderpd: a reader that stalls while others
 * flood it, accept floods against the token bucket, thousands of logins and
 * half-open connects coming and going, and a process out of descriptors.
 * Memory and descriptors are measured before and after. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "derp_wire.h"
#include "hostile.h"
#include "server_internal.h"

/* Bystanders C and D: a ping round trip and a packet each way. Returns the RTT. */
static int64_t bystanders_ok(struct kd_client *c, struct kd_client *d, const struct kd_keypair *kc, int seq)
{
	struct kd_client_msg m;
	char msg[32];
	int64_t t0 = th_mono_ms();

	assert_true(tc_alive(c));
	int64_t rtt = th_mono_ms() - t0;
	int n = snprintf(msg, sizeof(msg), "to C #%d", seq);
	assert_int_equal(kd_client_send_packet(d, kc->pub, msg, (size_t)n), 0);
	assert_int_equal(tc_recv_type(c, DERP_FRAME_RECV_PACKET, &m, 3000), 0);
	assert_int_equal(m.data_len, (size_t)n);
	assert_memory_equal(m.data, msg, (size_t)n);
	return rtt;
}

/* Receives on b until a frame of type arrives, counting PeerGone frames met on the way. */
static int recv_counting_gone(struct kd_client *b, uint8_t type, int *gone, int timeout_ms)
{
	struct kd_client_msg m;

	for (;;) {
		int err = kd_client_recv(b, &m, timeout_ms);
		if (err)
			return err;
		if (m.type == DERP_FRAME_PEER_GONE)
			(*gone)++;
		if (m.type == type)
			return 0;
	}
}

static void test_stalled_reader_bounded_memory(void **state)
{
	struct ts_server ts;
	struct kd_server_config cfg;
	struct kd_keypair ka = {0}, kb = {0}, kc = {0}, kd = {0};
	static uint8_t pkt[16384];
	const char *drops = "derp_packets_dropped{reason=\"queue_head\",kind=\"other\"}";
	(void)state;

	kd_server_config_defaults(&cfg);
	cfg.write_timeout_ms = 0; /* B stays connected: the bound must come from the queue */
	assert_int_equal(ts_start(&ts, &cfg, NULL), 0);
	struct kd_client *a = tc_login(&ts, &ka, NULL), *b = tc_login(&ts, &kb, NULL);
	struct kd_client *c = tc_login(&ts, &kc, NULL), *d = tc_login(&ts, &kd, NULL);
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(c);
	assert_non_null(d);
	int small = 4096;
	setsockopt(kd_client_fd(b), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	memset(pkt, 0x5a, sizeof(pkt));

	/* warm up: B's queue and socket buffers fill, the allocator settles */
	th_flood(a, kb.pub, pkt, sizeof(pkt), 2000);
	assert_true(tc_alive(a));
	long long d1 = th_metric_wait(&ts, drops, 1, true);
	long rss1 = th_vmrss_kb();
	int64_t max_rtt = 0;
	const int rounds = 16, per_round = 500;
	for (int r = 0; r < rounds; r++) {
		th_flood(a, kb.pub, pkt, sizeof(pkt), per_round);
		int64_t rtt = bystanders_ok(c, d, &kc, r);
		if (rtt > max_rtt)
			max_rtt = rtt;
	}
	assert_true(tc_alive(a));
	long long sent2 = (long long)rounds * per_round;
	long long d2 = th_metric_wait(&ts, drops, d1 + sent2 - 400, true);
	long rss2 = th_vmrss_kb();
	print_message("# stalled reader: %lld MiB more sent, VmRSS %ld -> %ld kB, drops %lld -> %lld, "
		      "bystander max ping RTT %lld ms\n",
		      sent2 * (long long)sizeof(pkt) >> 20, rss1, rss2, d1, d2, (long long)max_rtt);
	assert_true(max_rtt < 500);
	th_metric_wait(&ts, "derp_current_connections", 4, false);
	kd_client_close(a);
	kd_client_close(b);
	kd_client_close(c);
	kd_client_close(d);
	ts_stop(&ts);
	/* 125 MiB more went to B: its cost must not follow the volume */
	th_rss_bound(rss1, rss2, 16 * 1024);
}

static void test_accept_flood_rate_limited(void **state)
{
	struct ts_server ts;
	struct kd_server_config cfg;
	struct kd_keypair ka = {0};
	enum { FLOOD = 300 };
	int fds[FLOOD];
	(void)state;

	kd_server_config_defaults(&cfg);
	cfg.accept_rate = 5;
	cfg.accept_burst = 5;
	assert_int_equal(ts_start(&ts, &cfg, NULL), 0);
	int64_t t0 = th_mono_ms();
	for (int i = 0; i < FLOOD; i++) {
		fds[i] = ts_connect(ts.port);
		assert_true(fds[i] >= 0);
	}
	int64_t flood_ms = th_mono_ms() - t0;
	/* rejected connections are closed at once; admitted ones wait for a request */
	usleep(300000);
	int closed = 0;
	for (int i = 0; i < FLOOD; i++)
		if (ts_wait_closed(fds[i], 0))
			closed++;
	long long allowed_max = 5 + (long long)((flood_ms + 300) * 5 / 1000) + 1;
	long long rejected = th_metric_wait(&ts, "kderp_accept_rejected_total", FLOOD - allowed_max, true);
	print_message("# accept flood: %d connects in %lld ms, %d closed, rejected_total %lld\n", FLOOD,
		      (long long)flood_ms, closed, rejected);
	assert_int_equal(closed, rejected);
	assert_true(rejected <= FLOOD - 5);
	for (int i = 0; i < FLOOD; i++)
		close(fds[i]);
	/* the bucket refills and the accept loop is still running */
	usleep(1100000);
	struct kd_client *a = tc_login(&ts, &ka, NULL);
	assert_non_null(a);
	assert_true(tc_alive(a));
	kd_client_close(a);
	ts_stop(&ts);
}

static void test_churn_no_leaks(void **state)
{
	struct ts_server ts;
	struct kd_keypair kb = {0};
	int gone = 0;
	(void)state;

	assert_int_equal(ts_start(&ts, NULL, NULL), 0);
	struct kd_client *b = tc_login(&ts, &kb, NULL);
	assert_non_null(b);
	/* warm-up: allocator arenas, registry tables, the kernel's socket caches */
	for (int i = 0; i < 200; i++) {
		struct kd_keypair k = {0};
		struct kd_client *c = tc_login(&ts, &k, NULL);
		assert_non_null(c);
		kd_client_close(c);
	}
	th_metric_wait(&ts, "derp_current_connections", 1, false);
	int fd0 = th_wait_fds(th_count_fds(), 0);
	long rss0 = th_vmrss_kb();
	int64_t t0 = th_mono_ms();
	int done = 0;
	for (; done < 3000 && th_mono_ms() - t0 < 15000; done++) {
		struct kd_keypair k = {0};
		struct kd_client *c = tc_login(&ts, &k, NULL);
		assert_non_null(c);
		if (done % 3 == 0) {
			/* some of them send to B before leaving, which subscribes B to them */
			assert_int_equal(kd_client_send_packet(c, kb.pub, "churn", 5), 0);
			assert_int_equal(recv_counting_gone(b, DERP_FRAME_RECV_PACKET, &gone, 3000), 0);
		}
		kd_client_close(c);
	}
	int64_t churn_ms = th_mono_ms() - t0;
	th_metric_wait(&ts, "derp_current_connections", 1, false);
	int fd1 = th_wait_fds(fd0, 3000);
	long rss1 = th_vmrss_kb();
	char problems[512] = "";
	bool consistent = kd_registry_check(ts.srv, problems, sizeof(problems));
	print_message("# churn: %d login/disconnect cycles in %lld ms; fds %d -> %d; VmRSS %ld -> %ld kB\n",
		      done, (long long)churn_ms, fd0, fd1, rss0, rss1);
	assert_true(done >= 1000);
	assert_int_equal(fd1, fd0);
	if (!consistent)
		fail_msg("registry: %s", problems);
	/* B heard about every source that left */
	for (int i = 0; i < 5000 && recv_counting_gone(b, DERP_FRAME_PEER_GONE, &gone, 300) == 0; i++)
		;
	assert_int_equal(gone, (done + 2) / 3);
	assert_true(tc_alive(b));
	kd_client_close(b);
	ts_stop(&ts);
	th_rss_bound(rss0, rss1, 8 * 1024);
}

static void test_half_open_connects_reaped(void **state)
{
	struct ts_server ts;
	struct kd_server_config cfg;
	enum { N = 2000 };
	static int fds[N];
	(void)state;

	kd_server_config_defaults(&cfg);
	cfg.http_timeout_ms = 1000;
	assert_int_equal(ts_start(&ts, &cfg, NULL), 0);
	int fd0 = th_count_fds();
	long rss0 = th_vmrss_kb();
	int64_t t0 = th_mono_ms();
	for (int i = 0; i < N; i++) {
		fds[i] = ts_connect(ts.port);
		assert_true(fds[i] >= 0);
	}
	int64_t connect_ms = th_mono_ms() - t0;
	/* every one of them is closed by the server, none lingers */
	int closed = 0;
	for (int i = 0; i < N; i++) {
		int left = (int)(t0 + 1000 + connect_ms + 2000 - th_mono_ms());
		if (ts_wait_closed(fds[i], left > 0 ? left : 0))
			closed++;
	}
	int64_t all_ms = th_mono_ms() - t0;
	for (int i = 0; i < N; i++)
		close(fds[i]);
	int fd1 = th_wait_fds(fd0, 3000);
	long rss1 = th_vmrss_kb();
	print_message("# half-open: %d connects in %lld ms, %d closed by the server after %lld ms; "
		      "fds %d -> %d; VmRSS %ld -> %ld kB\n",
		      N, (long long)connect_ms, closed, (long long)all_ms, fd0, fd1, rss0, rss1);
	assert_int_equal(closed, N);
	th_hs_expect(&ts, "timeout", N);
	assert_int_equal(fd1, fd0);
	th_metric_wait(&ts, "derp_current_connections", 0, false);
	ts_stop(&ts);
}

/* Connections wait in the backlog while the process is out of descriptors:
 * accept() fails with EMFILE and the listener stays readable. The workers
 * must not spin on it, and must take the waiting connections once
 * descriptors are free again. */
static void test_fd_exhaustion_accept_does_not_spin(void **state)
{
	struct ts_server ts;
	struct rlimit old, low;
	enum { N = 40 };
	int fds[N];
	(void)state;

	assert_int_equal(ts_start(&ts, NULL, NULL), 0);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	/* the sockets exist before the limit drops: connect() needs no new descriptor */
	for (int i = 0; i < N; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(fds[i] >= 0);
	}
	int top = 0;
	for (int i = 0; i < N; i++)
		if (fds[i] > top)
			top = fds[i];
	low = old;
	low.rlim_cur = (rlim_t)top + 1; /* assumes the fds below top are all in use */
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)ts.port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int connected = 0;
	for (int i = 0; i < N; i++)
		if (connect(fds[i], (struct sockaddr *)&a, sizeof(a)) == 0)
			connected++;
	/* the workers see a readable listener they cannot accept from */
	usleep(100000);
	double cpu0 = th_cpu_seconds();
	int64_t t0 = th_mono_ms();
	usleep(1000000);
	double busy = (th_cpu_seconds() - cpu0) / ((double)(th_mono_ms() - t0) / 1000.0);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	print_message("# fd exhaustion: %d connections waiting in the backlog; process CPU while "
		      "out of descriptors: %.0f%% of one core\n",
		      connected, busy * 100);
	assert_int_equal(connected, N);
	/* descriptors are back: the waiting connections are served */
	static const char req[] = "GET /generate_204 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
	char head[1024];
	for (int i = 0; i < N; i += 13) {
		assert_int_equal(ts_write_all(fds[i], req, sizeof(req) - 1), 0);
		assert_int_equal(th_read_head(fds[i], head, sizeof(head), 3000), 0);
		assert_int_equal(strncmp(head, "HTTP/1.1 204", 12), 0);
	}
	for (int i = 0; i < N; i++)
		close(fds[i]);
	struct kd_keypair ka = {0};
	struct kd_client *c = tc_login(&ts, &ka, NULL);
	assert_non_null(c);
	assert_true(tc_alive(c));
	kd_client_close(c);
	ts_stop(&ts);
	/* an idle server out of descriptors must not burn a core retrying accept() */
	if (busy >= 0.3)
		fail_msg("workers spin on accept() EMFILE: %.0f%% CPU", busy * 100);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stalled_reader_bounded_memory),
		cmocka_unit_test(test_accept_flood_rate_limited),
		cmocka_unit_test(test_churn_no_leaks),
		cmocka_unit_test(test_half_open_connects_reaped),
		cmocka_unit_test(test_fd_exhaustion_accept_does_not_spin),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
