// SPDX-License-Identifier: MIT
/* build/kderpd started as root drops what it does not need before serving:
 * /proc/PID/status (of every thread, since capabilities are per thread)
 * shows the user and capability sets the flags asked for, and clients
 * still log in and relay through it. Needs root; SKIP otherwise. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "clients.h"
#include "derp_wire.h"
#include "stun_wire.h"
#include "log.h"

#define CAPBIT(c) (1ULL << (c))

static char kderpd[PATH_MAX + 16];
static const char *skip_reason;
static char netns[64]; /* set while one exists: removed at exit too */

struct daemon {
	pid_t pid;
	int port;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

/* Starts kderpd -dev on loopback with extra flags (NULL-terminated). */
static void daemon_start(struct daemon *d, const char *const *extra)
{
	char addr[32];
	const char *argv[16] = {kderpd, "-dev", "-a", addr, "-stun=false"};
	size_t n = 5;

	d->port = free_port();
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", d->port);
	for (; extra && *extra && n < 15; extra++)
		argv[n++] = *extra;
	argv[n] = NULL;
	d->pid = fork();
	assert_true(d->pid >= 0);
	if (d->pid == 0) {
		int nul = open("/dev/null", O_WRONLY);
		if (nul >= 0 && !getenv("KD_TEST_VERBOSE"))
			dup2(nul, 2);
		execv(kderpd, (char *const *)argv);
		_exit(127);
	}
}

static void daemon_stop(struct daemon *d)
{
	if (d->pid <= 0)
		return;
	kill(d->pid, SIGTERM);
	for (int i = 0; i < 150 && waitpid(d->pid, NULL, WNOHANG) == 0; i++)
		usleep(20000);
	kill(d->pid, SIGKILL);
	waitpid(d->pid, NULL, 0);
	d->pid = -1;
}

/* A login is served only once the workers run, i.e. after the drop. */
static struct kd_client *login_when_up(struct daemon *d, struct kd_keypair *kp)
{
	struct ts_server ts = {.port = d->port};

	for (int64_t end = now_ms() + 5000; now_ms() < end; usleep(50000)) {
		if (waitpid(d->pid, NULL, WNOHANG) == d->pid) {
			d->pid = -1;
			fail_msg("kderpd exited during startup");
		}
		int fd = ts_connect(d->port);
		if (fd < 0)
			continue;
		close(fd);
		struct kd_client *c = tc_login(&ts, kp, NULL);
		if (c)
			return c;
	}
	fail_msg("kderpd did not serve a login within 5 s");
	return NULL;
}

struct creds {
	unsigned uid[4], gid[4];
	unsigned long long eff, prm, bnd, amb, inh;
	int nnp;
};

static bool read_status(const char *path, struct creds *c)
{
	char line[256];
	FILE *f = fopen(path, "r");
	int got = 0;

	if (!f)
		return false;
	memset(c, 0, sizeof(*c));
	c->nnp = -1;
	while (fgets(line, sizeof(line), f)) {
		got += sscanf(line, "Uid: %u %u %u %u", &c->uid[0], &c->uid[1], &c->uid[2], &c->uid[3]) == 4;
		got += sscanf(line, "Gid: %u %u %u %u", &c->gid[0], &c->gid[1], &c->gid[2], &c->gid[3]) == 4;
		got += sscanf(line, "CapInh: %llx", &c->inh) == 1;
		got += sscanf(line, "CapPrm: %llx", &c->prm) == 1;
		got += sscanf(line, "CapEff: %llx", &c->eff) == 1;
		got += sscanf(line, "CapBnd: %llx", &c->bnd) == 1;
		got += sscanf(line, "CapAmb: %llx", &c->amb) == 1;
		got += sscanf(line, "NoNewPrivs: %d", &c->nnp) == 1;
	}
	fclose(f);
	return got == 8;
}

/* Every thread (main, workers) has exactly these credentials. */
static void check_all_threads(pid_t pid, unsigned uid, unsigned gid, unsigned long long caps)
{
	char dir[64], path[384];
	struct dirent *e;
	struct creds c;
	int threads = 0;

	snprintf(dir, sizeof(dir), "/proc/%d/task", (int)pid);
	DIR *d = opendir(dir);
	assert_non_null(d);
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s/status", dir, e->d_name);
		if (!read_status(path, &c))
			fail_msg("cannot read %s", path);
		for (int i = 0; i < 4; i++) {
			assert_int_equal(c.uid[i], uid);
			assert_int_equal(c.gid[i], gid);
		}
		if (c.eff != caps || c.prm != caps)
			fail_msg("thread %s: CapEff %llx CapPrm %llx, want %llx", e->d_name, c.eff, c.prm, caps);
		assert_int_equal(c.inh, 0);
		assert_int_equal(c.amb, 0);
		/* root had every capability in its bounding set; now only the kept */
		assert_int_equal(c.bnd, caps);
		assert_int_equal(c.nnp, 1);
		threads++;
	}
	closedir(d);
	/* main + at least one worker: the workers inherited the drop */
	assert_true(threads >= 2);
}

static void relay_one(struct kd_client *a, struct kd_keypair *ka, struct kd_client *b, struct kd_keypair *kb)
{
	struct kd_client_msg m;
	static const char pkt[] = "through a kderpd that is no longer root";

	assert_int_equal(kd_client_send_packet(a, kb->pub, pkt, sizeof(pkt)), 0);
	assert_int_equal(kd_client_flush_wait(a, 3000), 0);
	assert_int_equal(tc_recv_type(b, DERP_FRAME_RECV_PACKET, &m, 3000), 0);
	assert_memory_equal(m.key, ka->pub, 32);
	assert_int_equal(m.data_len, sizeof(pkt));
	assert_memory_equal(m.data, pkt, sizeof(pkt));
}

static void run_case(const char *const *flags, unsigned uid, unsigned gid, unsigned long long caps)
{
	struct daemon d;
	struct kd_keypair ka = {0}, kb = {0};

	if (skip_reason) {
		printf("# SKIP %s\n", skip_reason);
		skip();
	}
	daemon_start(&d, flags);
	struct kd_client *a = login_when_up(&d, &ka);
	struct kd_client *b = login_when_up(&d, &kb);
	check_all_threads(d.pid, uid, gid, caps);
	relay_one(a, &ka, b, &kb);
	relay_one(b, &kb, a, &ka);
	kd_client_close(a);
	kd_client_close(b);
	daemon_stop(&d);
}

static void test_user_nobody(void **state)
{
	(void)state;
	run_case((const char *[]){"-user", "nobody", NULL}, 65534, 65534, CAPBIT(CAP_NET_BIND_SERVICE));
}

/* No flags: still root, but only net_bind_service is left. */
static void test_default_keeps_only_bind(void **state)
{
	(void)state;
	run_case(NULL, 0, 0, CAPBIT(CAP_NET_BIND_SERVICE));
}

static void test_keep_caps_list(void **state)
{
	(void)state;
	run_case((const char *[]){"-user", "65534", "-keep-caps", "net_admin,CAP_BPF", NULL}, 65534, 65534,
		 CAPBIT(CAP_NET_ADMIN) | CAPBIT(CAP_BPF));
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

static void netns_del(void)
{
	if (netns[0])
		sh("ip netns del %s 2>/dev/null", netns);
	netns[0] = '\0';
}

/* "xdp" when the interface in the namespace has a program, "" when not */
static bool xdp_attached(void)
{
	return sh("ip -n %s link show v0 | grep -q ' xdp'", netns) == 0;
}

/* -stun-xdp keeps net_admin,bpf,perfmon as nobody, and with only those it
 * still takes its program off the interface and unpins its maps at exit. */
static void test_xdp_detached_after_drop(void **state)
{
	struct creds c;
	char status[64];
	(void)state;

	if (skip_reason) {
		printf("# SKIP %s\n", skip_reason);
		skip();
	}
	if (sh("ip -V >/dev/null 2>&1")) {
		printf("# SKIP iproute2 (ip) not found\n");
		skip();
	}
	snprintf(netns, sizeof(netns), "kdprivs-%d-%ld", (int)getpid(), (long)(now_ms() % 100000));
	assert_int_equal(sh("ip netns add %s && ip -n %s link add v0 type veth peer name v1 && "
			    "ip -n %s addr add 10.77.0.1/24 dev v0 && ip -n %s link set v0 up && "
			    "ip -n %s link set v1 up && ip -n %s link set lo up",
			    netns, netns, netns, netns, netns, netns), 0);
	char logpath[64];
	snprintf(logpath, sizeof(logpath), "/tmp/kdprivs-%d.log", (int)getpid());
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int log = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (log >= 0)
			dup2(log, 2);
		execlp("ip", "ip", "netns", "exec", netns, kderpd, "-dev", "-a", "10.77.0.1:3340",
		       "-stun-xdp", "v0", "-stun-xdp-mode", "generic", "-user", "nobody", (char *)NULL);
		_exit(127);
	}
	snprintf(status, sizeof(status), "/proc/%d/status", (int)pid);
	bool dropped = false;
	for (int64_t end = now_ms() + 5000; !dropped && now_ms() < end; usleep(20000)) {
		if (waitpid(pid, NULL, WNOHANG) == pid)
			break;
		dropped = read_status(status, &c) && c.uid[0] == 65534 && c.nnp == 1;
	}
	/* the workers start right after the drop; let them */
	usleep(200000);
	bool was_attached = dropped && xdp_attached();
	/* pinned as root, owned by nobody since the drop so that its exit can
	 * unpin; `ip netns exec` mounts its own /sys, seen through /proc/PID/root */
	struct stat pst, dst;
	char pin[192], dir[96];
	snprintf(dir, sizeof(dir), "/proc/%d/root" KD_BPF_PIN_DIR, (int)pid);
	snprintf(pin, sizeof(pin), "%s/" KD_STUN_PIN_COUNTERS, dir);
	bool pinned = stat(pin, &pst) == 0;
	bool chowned = pinned && pst.st_uid == 65534 && stat(dir, &dst) == 0 && dst.st_uid == 65534;
	struct daemon d = {.pid = pid};
	if (dropped)
		check_all_threads(pid, 65534, 65534,
				  CAPBIT(CAP_NET_BIND_SERVICE) | CAPBIT(CAP_NET_ADMIN) | CAPBIT(CAP_BPF) |
					  CAPBIT(CAP_PERFMON));
	daemon_stop(&d);
	bool left = xdp_attached();
	/* the namespace's /sys is gone with the process: its log says whether
	 * the unpin worked */
	size_t loglen;
	char *log = ts_read_file(logpath, &loglen);
	bool pins_left = !log || strstr(log, "unpin") != NULL;
	if (log && (pins_left || getenv("KD_TEST_VERBOSE")))
		printf("%s", log);
	free(log);
	unlink(logpath);
	netns_del();
	assert_true(dropped);
	assert_true(was_attached);
	assert_false(left);
	assert_true(pinned);
	assert_true(chowned);
	assert_false(pins_left);
}

/* The admission webhook's threads start after the drop too: every task in
 * /proc/PID/task is checked, and a webhook that cannot be reached with
 * fail-open still admits the clients. */
static void test_admission_threads_dropped(void **state)
{
	char url[64];
	(void)state;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/verify", free_port());
	run_case((const char *[]){"-user", "nobody", "-verify-client-url", url, "-verify-client-url-fail-open",
				  NULL},
		 65534, 65534, CAPBIT(CAP_NET_BIND_SERVICE));
}

/* A user that does not exist is a startup failure, never a root daemon. */
static void test_unknown_user_refuses_to_start(void **state)
{
	struct daemon d;
	int st;
	(void)state;

	if (skip_reason) {
		printf("# SKIP %s\n", skip_reason);
		skip();
	}
	daemon_start(&d, (const char *[]){"-user", "kd-no-such-user-xyz", NULL});
	pid_t r = 0;
	for (int i = 0; i < 250 && (r = waitpid(d.pid, &st, WNOHANG)) == 0; i++)
		usleep(20000);
	if (r != d.pid) {
		daemon_stop(&d);
		fail_msg("kderpd kept running with an unknown -user");
	}
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 1);
	/* nothing answers on its port */
	assert_true(ts_connect(d.port) < 0);
}

static int setup(void **state)
{
	char self[PATH_MAX];
	(void)state;

	kd_log_set_level(KD_LOG_WARN);
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return -1;
	self[n] = '\0';
	/* build/tests/integ/test_privs_e2e -> build/kderpd */
	snprintf(kderpd, sizeof(kderpd), "%s/../../kderpd", dirname(self));
	atexit(netns_del);
	if (geteuid() != 0)
		skip_reason = "not root";
	else if (access(kderpd, X_OK))
		skip_reason = "build/kderpd not built";
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_user_nobody),
		cmocka_unit_test(test_default_keeps_only_bind),
		cmocka_unit_test(test_keep_caps_list),
		cmocka_unit_test(test_admission_threads_dropped),
		cmocka_unit_test(test_unknown_user_refuses_to_start),
		cmocka_unit_test(test_xdp_detached_after_drop),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
