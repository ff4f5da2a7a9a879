// SPDX-License-Identifier: MIT
/* Privilege drop: capability list parsing, and as root, the drop itself in a
 * forked child (a process cannot get root back to run the next test), seen
 * from inside through what the kernel then allows and refuses. Also checks
 * contrib/kderpd.service with systemd-analyze when it exists. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "privs.h"

/* ---- parsing -------------------------------------------------------- */

static void test_parse_names(void **state)
{
	uint64_t m = 0;
	(void)state;

	assert_int_equal(kd_privs_parse_caps("net_bind_service", &m), 0);
	assert_int_equal(m, KD_CAP(CAP_NET_BIND_SERVICE));
	assert_int_equal(kd_privs_parse_caps("net_admin,bpf", &m), 0);
	assert_int_equal(m, KD_CAP(CAP_NET_ADMIN) | KD_CAP(CAP_BPF));
	/* the forms capsh, systemd and man pages use */
	assert_int_equal(kd_privs_parse_caps("CAP_NET_BIND_SERVICE CAP_PERFMON, cap_net_raw", &m), 0);
	assert_int_equal(m, KD_CAP(CAP_NET_BIND_SERVICE) | KD_CAP(CAP_PERFMON) | KD_CAP(CAP_NET_RAW));
	assert_int_equal(kd_privs_parse_caps(",,bpf,,bpf,", &m), 0);
	assert_int_equal(m, KD_CAP(CAP_BPF));
	assert_int_equal(kd_privs_parse_caps("checkpoint_restore,chown", &m), 0);
	assert_int_equal(m, KD_CAP(CAP_CHECKPOINT_RESTORE) | KD_CAP(CAP_CHOWN));
	m = 7;
	assert_int_equal(kd_privs_parse_caps("", &m), 0);
	assert_int_equal(m, 0);
	m = 7;
	assert_int_equal(kd_privs_parse_caps("none", &m), 0);
	assert_int_equal(m, 0);
	assert_int_equal(kd_privs_parse_caps("all", &m), 0);
	assert_true(m == KD_CAPS_ALL);
}

static void test_parse_rejects(void **state)
{
	static const char *const bad[] = {
		"net_bind", "net_bind_service;bpf", "cap_", "bpf,xyz", "10", "net_bind_servicex",
		"net-admin", "bpf\n", "cap_cap_bpf", "nonee",
	};
	uint64_t m;
	(void)state;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		m = 0x1234;
		if (kd_privs_parse_caps(bad[i], &m) != -EINVAL)
			fail_msg("\"%s\" accepted", bad[i]);
		assert_int_equal(m, 0x1234); /* untouched on error */
	}
	assert_int_equal(kd_privs_parse_caps(NULL, &m), -EINVAL);
}

/* Every name round-trips through format and parse. */
static void test_format_roundtrip(void **state)
{
	char buf[1024];
	uint64_t m;
	(void)state;

	for (unsigned i = 0; i <= CAP_LAST_CAP; i++) {
		assert_non_null(kd_privs_cap_name(i));
		int n = kd_privs_format_caps(KD_CAP(i), buf, sizeof(buf));
		assert_int_equal(n, (int)strlen(buf));
		assert_string_equal(buf, kd_privs_cap_name(i));
		assert_int_equal(kd_privs_parse_caps(buf, &m), 0);
		assert_true(m == KD_CAP(i));
	}
	assert_null(kd_privs_cap_name(63));
	uint64_t every = KD_CAP(CAP_LAST_CAP + 1) - 1;
	kd_privs_format_caps(every, buf, sizeof(buf));
	assert_int_equal(kd_privs_parse_caps(buf, &m), 0);
	assert_true(m == every);
	kd_privs_format_caps(KD_CAP(CAP_NET_BIND_SERVICE) | KD_CAP(CAP_BPF), buf, sizeof(buf));
	assert_string_equal(buf, "net_bind_service,bpf");
	kd_privs_format_caps(0, buf, sizeof(buf));
	assert_string_equal(buf, "none");
	/* truncation reports the full length like snprintf */
	assert_int_equal(kd_privs_format_caps(KD_CAP(CAP_NET_BIND_SERVICE) | KD_CAP(CAP_BPF), buf, 5), 20);
	assert_string_equal(buf, "net_");
}

/* ---- the drop, in a child --------------------------------------------- */

static bool need_root(void)
{
	if (geteuid() != 0) {
		printf("# SKIP not root\n");
		return false;
	}
	return true;
}

static uint64_t cap_eff(void)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2];

	if (syscall(SYS_capget, &h, d) < 0)
		return ~0ULL;
	return d[0].effective | (uint64_t)d[1].effective << 32;
}

/* bind on a low loopback port: 0, or the errno (EACCES without the cap);
 * a port taken by someone else is skipped, not counted */
static int bind_low(void)
{
	for (int port = 1023; port > 900; port--) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
					.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		if (fd < 0)
			return errno;
		int r = bind(fd, (struct sockaddr *)&a, sizeof(a)), e = errno;
		close(fd);
		if (r == 0)
			return 0;
		if (e != EADDRINUSE)
			return e;
	}
	return EADDRINUSE;
}

typedef bool (*child_fn)(const char *secret, char *why, size_t cap);

#define CHILD_CHECK(cond)                                                                        \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			snprintf(why, cap, "line %d: %s (errno %s)", __LINE__, #cond, strerror(errno)); \
			return false;                                                            \
		}                                                                                \
	} while (0)

/* Forks; the child gets a root-only file (0600 in a 0700 directory) and
 * reports its first failed check back through a pipe. */
static void run_child(child_fn fn)
{
	char dir[] = "/tmp/kd_privs_XXXXXX", secret[PATH_MAX], why[256] = "";
	int p[2], st;

	assert_non_null(mkdtemp(dir));
	snprintf(secret, sizeof(secret), "%s/secret", dir);
	int fd = open(secret, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		bool ok = fn(secret, why, sizeof(why));
		if (!ok && write(p[1], why, strlen(why)) < 0)
			_exit(2);
		_exit(ok ? 0 : 1);
	}
	close(p[1]);
	ssize_t n = read(p[0], why, sizeof(why) - 1);
	why[n > 0 ? n : 0] = '\0';
	close(p[0]);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	unlink(secret);
	rmdir(dir);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg("child: %s (status %#x)", *why ? why : "died", st);
}

static bool drop_to_nobody_keeping_bind(const char *secret, char *why, size_t cap)
{
	int fd = open(secret, O_RDONLY | O_CLOEXEC);
	CHILD_CHECK(fd >= 0);
	close(fd);
	CHILD_CHECK(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 0);

	struct kd_privs_opts o = {.user = "nobody", .keep = KD_CAP(CAP_NET_BIND_SERVICE)};
	CHILD_CHECK(kd_privs_drop(&o) == 0);
	CHILD_CHECK(getuid() == 65534 && geteuid() == 65534);
	CHILD_CHECK(getgid() != 0 && getegid() != 0);
	gid_t groups[8];
	int ng = getgroups(8, groups);
	CHILD_CHECK(ng == 1 && groups[0] == getgid());
	CHILD_CHECK(cap_eff() == KD_CAP(CAP_NET_BIND_SERVICE));
	CHILD_CHECK(bind_low() == 0);
	errno = 0;
	CHILD_CHECK(open(secret, O_RDONLY | O_CLOEXEC) < 0 && errno == EACCES);
	CHILD_CHECK(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1);
	CHILD_CHECK(setuid(0) < 0 && errno == EPERM);
	/* the bounding set no longer holds what was dropped */
	CHILD_CHECK(prctl(PR_CAPBSET_READ, CAP_SYS_ADMIN, 0, 0, 0) == 0);
	CHILD_CHECK(prctl(PR_CAPBSET_READ, CAP_NET_BIND_SERVICE, 0, 0, 0) == 1);
	return true;
}

static void test_drop_to_nobody_keeps_bind(void **state)
{
	(void)state;
	if (!need_root())
		skip();
	run_child(drop_to_nobody_keeping_bind);
}

/* The control: without the capability the same bind is refused, so the
 * bind above proves the kept capability works. */
static bool drop_to_nobody_keeping_nothing(const char *secret, char *why, size_t cap)
{
	(void)secret;
	CHILD_CHECK(bind_low() == 0);
	struct kd_privs_opts o = {.user = "nobody", .keep = 0};
	CHILD_CHECK(kd_privs_drop(&o) == 0);
	CHILD_CHECK(cap_eff() == 0);
	CHILD_CHECK(bind_low() == EACCES);
	return true;
}

static void test_drop_without_caps_cannot_bind(void **state)
{
	(void)state;
	if (!need_root())
		skip();
	run_child(drop_to_nobody_keeping_nothing);
}

/* Staying root keeps uid 0 (files still open) but only the masked caps. */
static bool stay_root_with_mask(const char *secret, char *why, size_t cap)
{
	uint64_t keep = KD_CAP(CAP_NET_BIND_SERVICE) | KD_CAP(CAP_NET_ADMIN) | KD_CAP(CAP_BPF) |
			KD_CAP(CAP_PERFMON);
	struct kd_privs_opts o = {.keep = keep};
	CHILD_CHECK(kd_privs_drop(&o) == 0);
	CHILD_CHECK(getuid() == 0);
	CHILD_CHECK(cap_eff() == keep);
	CHILD_CHECK(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1);
	CHILD_CHECK(prctl(PR_CAPBSET_READ, CAP_SYS_ADMIN, 0, 0, 0) == 0);
	/* the file is root's own: owner permission, no capability needed */
	int fd = open(secret, O_RDONLY | O_CLOEXEC);
	CHILD_CHECK(fd >= 0);
	close(fd);
	/* but chown needs CAP_CHOWN, which is gone */
	errno = 0;
	CHILD_CHECK(chown(secret, 65534, 65534) < 0 && errno == EPERM);
	return true;
}

static void test_stay_root_with_mask(void **state)
{
	(void)state;
	if (!need_root())
		skip();
	run_child(stay_root_with_mask);
}

static int hold_fd[2];

static void *holder(void *arg)
{
	char c;
	(void)arg;
	if (read(hold_fd[0], &c, 1) < 0)
		return NULL;
	return NULL;
}

/* A second thread would keep every capability: refuse, change nothing. */
static bool refuses_with_thread(const char *secret, char *why, size_t cap)
{
	pthread_t t;
	uint64_t before = cap_eff();
	(void)secret;

	CHILD_CHECK(kd_privs_thread_count() == 1);
	CHILD_CHECK(pipe(hold_fd) == 0);
	CHILD_CHECK(pthread_create(&t, NULL, holder, NULL) == 0);
	CHILD_CHECK(kd_privs_thread_count() == 2);
	struct kd_privs_opts o = {.user = "nobody", .keep = KD_CAP(CAP_NET_BIND_SERVICE)};
	CHILD_CHECK(kd_privs_drop(&o) == -EBUSY);
	CHILD_CHECK(getuid() == 0 && cap_eff() == before);
	CHILD_CHECK(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 0);
	CHILD_CHECK(write(hold_fd[1], "x", 1) == 1);
	pthread_join(t, NULL);
	/* once it is gone the drop goes through */
	CHILD_CHECK(kd_privs_thread_count() == 1);
	CHILD_CHECK(kd_privs_drop(&o) == 0);
	CHILD_CHECK(getuid() == 65534);
	return true;
}

static void test_refuses_with_second_thread(void **state)
{
	(void)state;
	if (!need_root())
		skip();
	run_child(refuses_with_thread);
}

static bool unknown_user(const char *secret, char *why, size_t cap)
{
	(void)secret;
	struct kd_privs_opts o = {.user = "kd-no-such-user-xyz", .keep = 0};
	CHILD_CHECK(kd_privs_drop(&o) == -ENOENT);
	o.user = "nobody";
	o.group = "kd-no-such-group-xyz";
	CHILD_CHECK(kd_privs_drop(&o) == -ENOENT);
	o.group = NULL;
	o.user = " 5";
	CHILD_CHECK(kd_privs_drop(&o) == -ENOENT);
	o.user = "-1";
	CHILD_CHECK(kd_privs_drop(&o) == -ENOENT);
	CHILD_CHECK(getuid() == 0);
	/* a numeric id without a passwd entry is allowed */
	o.user = "54321";
	o.group = NULL;
	CHILD_CHECK(kd_privs_drop(&o) == 0);
	CHILD_CHECK(getuid() == 54321 && getgid() == 54321);
	return true;
}

/* Once nobody, naming nobody again is no switch and needs no capability. */
static bool same_user_again(const char *secret, char *why, size_t cap)
{
	(void)secret;
	struct kd_privs_opts o = {.user = "nobody", .keep = 0};
	CHILD_CHECK(kd_privs_drop(&o) == 0);
	CHILD_CHECK(kd_privs_drop(&o) == 0);
	CHILD_CHECK(getuid() == 65534 && cap_eff() == 0);
	o.user = "root";
	errno = 0;
	CHILD_CHECK(kd_privs_drop(&o) == -EPERM);
	CHILD_CHECK(getuid() == 65534);
	return true;
}

static void test_same_user_again(void **state)
{
	(void)state;
	if (!need_root())
		skip();
	run_child(same_user_again);
}

static void test_unknown_user(void **state)
{
	(void)state;
	if (!need_root())
		skip();
	run_child(unknown_user);
}

/* ---- the unit file ---------------------------------------------------- */

/* contrib/ from the binary's directory upwards (build/ or build/san/). */
static bool find_up(const char *rel, char *out, size_t cap)
{
	char dir[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", dir, sizeof(dir) - 1);

	if (n <= 0)
		return false;
	dir[n] = '\0';
	for (char *slash; (slash = strrchr(dir, '/')) && slash != dir;) {
		*slash = '\0';
		if (snprintf(out, cap, "%s/%s", dir, rel) >= (int)cap)
			return false;
		if (access(out, R_OK) == 0)
			return true;
	}
	return false;
}

static void test_unit_file_verifies(void **state)
{
	char unit[PATH_MAX], kderpd[PATH_MAX], cmd[3 * PATH_MAX], out[4096];
	char dir[] = "/tmp/kd_unit_XXXXXX";
	(void)state;

	assert_true(find_up("contrib/kderpd.service", unit, sizeof(unit)));
	if (access("/usr/bin/systemd-analyze", X_OK) && access("/bin/systemd-analyze", X_OK)) {
		printf("# SKIP systemd-analyze not installed\n");
		skip();
	}
	/* verify checks that ExecStart exists: point it at the built daemon */
	if (!find_up("build/kderpd", kderpd, sizeof(kderpd))) {
		printf("# SKIP build/kderpd not built\n");
		skip();
	}
	assert_non_null(mkdtemp(dir));
	snprintf(cmd, sizeof(cmd),
		 "sed 's#/usr/local/bin/kderpd#%s#' '%s' > %s/kderpd.service && "
		 "systemd-analyze verify %s/kderpd.service 2>&1; echo \"rc=$?\"",
		 kderpd, unit, dir, dir);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	size_t len = fread(out, 1, sizeof(out) - 1, f);
	out[len] = '\0';
	pclose(f);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
	/* a warning (unknown key, bad value) prints but still exits 0 */
	if (strcmp(out, "rc=0\n"))
		fail_msg("systemd-analyze verify: %s", out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_names),
		cmocka_unit_test(test_parse_rejects),
		cmocka_unit_test(test_format_roundtrip),
		cmocka_unit_test(test_drop_to_nobody_keeps_bind),
		cmocka_unit_test(test_drop_without_caps_cannot_bind),
		cmocka_unit_test(test_stay_root_with_mask),
		cmocka_unit_test(test_refuses_with_second_thread),
		cmocka_unit_test(test_unknown_user),
		cmocka_unit_test(test_same_user_again),
		cmocka_unit_test(test_unit_file_verifies),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
