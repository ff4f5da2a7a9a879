// SPDX-License-Identifier: MIT
#include "daemon.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clients.h"

int64_t td_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *td_kderpd_path(void)
{
	static char path[PATH_MAX + 16];
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n <= 0)
		return NULL;
	self[n] = '\0';
	/* build[/san]/tests/integ/test_x -> build[/san]/kderpd */
	snprintf(path, sizeof(path), "%s/../../kderpd", dirname(self));
	return access(path, X_OK) == 0 ? path : NULL;
}

int td_free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	close(fd);
	return port;
}

/* A failed assertion leaves the test function by longjmp: whatever it
 * started is killed at exit instead of outliving the test. */
static pid_t started[16];

static void kill_started(void)
{
	for (size_t i = 0; i < 16; i++) {
		if (started[i] > 0) {
			kill(started[i], SIGKILL);
			waitpid(started[i], NULL, 0);
		}
	}
}

void td_track(pid_t pid)
{
	static bool hooked;

	if (!hooked && atexit(kill_started) == 0)
		hooked = true;
	for (size_t i = 0; i < 16; i++) {
		if (started[i] <= 0 || kill(started[i], 0) != 0) {
			started[i] = pid;
			return;
		}
	}
}

int td_start(struct td_daemon *d, const char *const *extra)
{
	const char *bin = d->bin ? d->bin : td_kderpd_path();
	const char *argv[32];
	char addr[32];
	size_t n = 0;

	d->pid = -1;
	if (!bin)
		return -ENOENT;
	d->port = td_free_port();
	if (d->port < 0)
		return -EADDRNOTAVAIL;
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", d->port);
	snprintf(d->log, sizeof(d->log), "/tmp/kd-daemon-%d-%d.log", (int)getpid(), d->port);
	argv[n++] = bin;
	argv[n++] = "-dev";
	argv[n++] = "-a";
	argv[n++] = addr;
	for (; extra && *extra && n < 31; extra++)
		argv[n++] = *extra;
	argv[n] = NULL;
	int logfd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (logfd < 0)
		return -errno;
	d->pid = fork();
	if (d->pid < 0) {
		close(logfd);
		return -errno;
	}
	if (d->pid == 0) {
		/* not the test's stdout: a runner waits for that pipe to close */
		dup2(logfd, 1);
		dup2(logfd, 2);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	close(logfd);
	td_track(d->pid);
	return 0;
}

void td_stop(struct td_daemon *d)
{
	if (!d || d->pid <= 0)
		return;
	kill(d->pid, SIGTERM);
	for (int i = 0; i < 150 && waitpid(d->pid, NULL, WNOHANG) == 0; i++)
		usleep(20000);
	kill(d->pid, SIGKILL);
	waitpid(d->pid, NULL, 0);
	d->pid = -1;
	if (!getenv("KD_TEST_VERBOSE"))
		unlink(d->log);
}

int td_try_login(int port, struct kd_keypair *kp)
{
	struct kd_client_opts o = {0};
	struct kd_client *c = NULL;
	char url[64];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/derp", port);
	if (kd_key_is_zero(kp->priv))
		kd_keypair_generate(kp);
	o.url = url;
	o.key = *kp;
	o.timeout_ms = 5000;
	int err = kd_client_connect(&c, &o);
	if (err)
		return err;
	err = tc_alive(c) ? 0 : -EPIPE;
	kd_client_close(c);
	return err;
}

struct kd_client *td_login(int port, struct kd_keypair *kp, int timeout_ms)
{
	struct ts_server ts = {.port = port};

	for (int64_t end = td_now_ms() + timeout_ms; td_now_ms() < end; usleep(30000)) {
		int fd = ts_connect(port);
		if (fd < 0)
			continue;
		close(fd);
		struct kd_client *c = tc_login(&ts, kp, NULL);
		if (c)
			return c;
	}
	return NULL;
}

int td_log_count(const struct td_daemon *d, const char *text)
{
	size_t len;
	char *s = ts_read_file(d->log, &len);
	int n = 0;

	if (!s)
		return 0;
	for (char *p = s; (p = strstr(p, text)); p += strlen(text))
		n++;
	free(s);
	return n;
}

bool td_log_wait(const struct td_daemon *d, const char *text, int n, int timeout_ms)
{
	for (int64_t end = td_now_ms() + timeout_ms; td_now_ms() < end; usleep(20000))
		if (td_log_count(d, text) >= n)
			return true;
	return false;
}
