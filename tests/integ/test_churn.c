// SPDX-License-Identifier: MIT
/* 10 000 short-lived clients against a real kderpd process: TCP connect,
 * HTTP upgrade, DERP handshake (ServerKey, ClientInfo, ServerInfo), close;
 * 8 threads, each opening a batch of connections at once and closing them.
 * Afterwards the daemon's descriptor count (/proc/PID/fd) is back where it
 * started and its VmRSS grew by less than a small bound. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon.h"
#include "hostile.h"
#include "log.h"

#define CYCLES 10000
#define THREADS 8
#define BATCH 16

struct churner {
	int port, cycles;
	pthread_t th;
	int ok, failed, last_err;
};

static void *churn_main(void *arg)
{
	struct churner *c = arg;
	char url[64];
	struct kd_keypair kp;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/derp", c->port);
	for (int done = 0; done < c->cycles;) {
		struct kd_client *open[BATCH];
		int n = c->cycles - done < BATCH ? c->cycles - done : BATCH;
		for (int i = 0; i < n; i++) {
			kd_keypair_generate(&kp); /* every client a new node: registry churn too */
			struct kd_client_opts o = {.url = url, .key = kp, .timeout_ms = 5000};
			open[i] = NULL;
			int err = kd_client_connect(&open[i], &o);
			if (err) {
				c->failed++;
				c->last_err = err;
			} else {
				c->ok++;
			}
		}
		for (int i = 0; i < n; i++)
			kd_client_close(open[i]);
		done += n;
	}
	return NULL;
}

static int count_fds(pid_t pid)
{
	char path[64];
	struct dirent *e;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

static long rss_kb(pid_t pid)
{
	char path[64], line[256];
	long kb = -1;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static void run(struct churner *c, int port, int cycles)
{
	for (int i = 0; i < THREADS; i++) {
		memset(&c[i], 0, sizeof(c[i]));
		c[i].port = port;
		c[i].cycles = cycles / THREADS;
		assert_int_equal(pthread_create(&c[i].th, NULL, churn_main, &c[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(c[i].th, NULL);
}

static int wait_fds(pid_t pid, int want, int timeout_ms)
{
	int n = -1;

	for (int64_t end = td_now_ms() + timeout_ms; td_now_ms() < end; usleep(20000))
		if ((n = count_fds(pid)) == want)
			break;
	return n;
}

static void test_10k_connection_churn(void **state)
{
	struct td_daemon d = {.pid = -1};
	struct churner c[THREADS];
	struct kd_keypair kp = {0};
	(void)state;

	if (!td_kderpd_path()) {
		printf("# SKIP build/kderpd not built\n");
		skip();
	}
	assert_int_equal(td_start(&d, (const char *[]){"-stun=false", "-workers", "2", NULL}), 0);
	struct kd_client *probe = td_login(d.port, &kp, 5000);
	assert_non_null(probe);
	kd_client_close(probe);
	/* warm-up: per-worker packet pools, malloc arenas and the registry's
	 * tables reach their working size on the first few hundred clients */
	run(c, d.port, 800);
	usleep(200000);
	int fd0 = count_fds(d.pid);
	long rss0 = rss_kb(d.pid);

	int64_t t0 = td_now_ms();
	run(c, d.port, CYCLES);
	int64_t took = td_now_ms() - t0;
	int ok = 0, failed = 0, err = 0;
	for (int i = 0; i < THREADS; i++) {
		ok += c[i].ok;
		failed += c[i].failed;
		if (c[i].last_err)
			err = c[i].last_err;
	}
	long rss_busy = rss_kb(d.pid);
	int fd1 = wait_fds(d.pid, fd0, 3000);
	long rss1 = rss_kb(d.pid);
	printf("# churn: %d handshakes in %lld ms (%d failed%s%s), %d threads x batches of %d; "
	       "kderpd fds %d -> %d, VmRSS %ld kB -> %ld kB (%+ld kB; %ld kB right after)\n",
	       ok, (long long)took, failed, failed ? ": " : "", failed ? strerror(-err) : "", THREADS, BATCH,
	       fd0, fd1, rss0, rss1, rss1 - rss0, rss_busy);
	assert_int_equal(failed, 0);
	assert_int_equal(ok, CYCLES);
	assert_int_equal(fd1, fd0);
	/* still serving */
	struct kd_keypair kb = {0};
	assert_int_equal(td_try_login(d.port, &kb), 0);
	td_stop(&d);
	/* ASan's quarantine in an ASan kderpd keeps freed memory resident */
	if (strstr(td_kderpd_path(), "/san/")) {
		printf("# VmRSS bound not checked for an ASan kderpd (fds and handshakes were)\n");
		return;
	}
	if (rss1 - rss0 >= 4096)
		fail_msg("kderpd VmRSS grew %ld kB over %d handshakes (bound 4096 kB)", rss1 - rss0, CYCLES);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_10k_connection_churn),
	};
	kd_log_set_level(KD_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
