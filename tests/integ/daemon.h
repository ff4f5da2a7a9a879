/* SPDX-License-Identifier: MIT */
/* build/kderpd as a real child process on a loopback port, for the tests
 * that need signals, exec or /proc of the daemon (reload, upgrade, churn). */
#ifndef KD_TEST_DAEMON_H
#define KD_TEST_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "client.h"

struct td_daemon {
	pid_t pid;
	int port;
	char log[96];     /* the daemon's stderr */
	const char *bin;  /* NULL: build/kderpd */
};

/* build/kderpd next to this test binary, or NULL when it is not built. */
const char *td_kderpd_path(void);
int td_free_port(void);
/* Starts kderpd -dev -a 127.0.0.1:<free port> with extra args (NULL-ended);
 * stderr goes to d->log. 0 or -errno. */
int td_start(struct td_daemon *d, const char *const *extra);
/* Killed (SIGKILL) at exit if still running: for pids a test learns. */
void td_track(pid_t pid);
/* SIGTERM, then SIGKILL after 3 s; reaps. NULL-safe, idempotent. */
void td_stop(struct td_daemon *d);
/* Logs in with kp (generated when zero) within timeout_ms; NULL if not. */
struct kd_client *td_login(int port, struct kd_keypair *kp, int timeout_ms);
/* One login attempt: 0, or the client's -errno (a refused admission too). */
int td_try_login(int port, struct kd_keypair *kp);
/* Times text occurs in d->log (reads the whole file). */
int td_log_count(const struct td_daemon *d, const char *text);
/* Waits until d->log holds text at least n times: true, or false after timeout_ms. */
bool td_log_wait(const struct td_daemon *d, const char *text, int n, int timeout_ms);
int64_t td_now_ms(void);

#endif
