// SPDX-License-Identifier: MIT
/* STUN end to end across a veth pair between two namespaces this test
 * creates (192.0.2.0/24 and 2001:db8::/64, TEST-NET/documentation ranges,
 * only inside those namespaces): the userspace server plus the XDP responder
 * on the server's end, kd_stun probes and `kderpctl stun` from the client's.
 * Checks who answered by the counters. Namespaces are always deleted. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "stun.h"
#include "stun_server.h"
#include "stun_xdp.h"

#define SRV_IF "kdstun-s"
#define CLI_IF "kdstun-c"
#define SRV4 "192.0.2.1"
#define CLI4 "192.0.2.2"
#define SRV6 "2001:db8::1"
#define CLI6 "2001:db8::2"
#define PORT 3478

static char ns_srv[64], ns_cli[64], kderpctl[PATH_MAX], bpf_obj[PATH_MAX];
static int home_fd = -1, srv_fd = -1, cli_fd = -1;
static bool ready, has_ethtool;
static const char *skip_reason = "setup did not run";
static struct kd_stun_server *srv;
static struct kd_stun_xdp *xdp;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	int rc = system(cmd);

	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int enter(int fd)
{
	return setns(fd, CLONE_NEWNET);
}

static int open_ns(const char *name)
{
	char path[128];

	snprintf(path, sizeof(path), "/run/netns/%s", name);
	return open(path, O_RDONLY | O_CLOEXEC);
}

static int setup(void **state)
{
	if (geteuid() != 0) {
		skip_reason = "not root: cannot create network namespaces";
		return 0;
	}
	if (sh("ip -V >/dev/null 2>&1")) {
		skip_reason = "iproute2 (ip) not found";
		return 0;
	}
	snprintf(ns_srv, sizeof(ns_srv), "kdstun-s-%d-%ld", getpid(), (long)time(NULL) % 100000);
	snprintf(ns_cli, sizeof(ns_cli), "kdstun-c-%d-%ld", getpid(), (long)time(NULL) % 100000);
	if (sh("ip netns add %s && ip netns add %s", ns_srv, ns_cli)) {
		skip_reason = "cannot create network namespaces";
		return 0;
	}
	if (sh("ip -n %s link add " SRV_IF " type veth peer name " CLI_IF " netns %s", ns_srv, ns_cli)) {
		skip_reason = "cannot create a veth pair";
		return 0;
	}
	if (sh("ip -n %1$s link set lo up && ip -n %1$s link set " SRV_IF " up && "
	       "ip -n %1$s addr add " SRV4 "/24 dev " SRV_IF " && "
	       "ip -n %1$s addr add " SRV6 "/64 dev " SRV_IF " nodad && "
	       "ip -n %2$s link set lo up && ip -n %2$s link set " CLI_IF " up && "
	       "ip -n %2$s addr add " CLI4 "/24 dev " CLI_IF " && "
	       "ip -n %2$s addr add " CLI6 "/64 dev " CLI_IF " nodad",
	       ns_srv, ns_cli)) {
		skip_reason = "cannot configure the veth pair";
		return 0;
	}
	/* veth hands locally built packets on with CHECKSUM_PARTIAL: the UDP
	 * checksum field holds only the pseudo-header sum, which XDP (rightly)
	 * rejects. Real NICs deliver complete checksums; make the client do so. */
	has_ethtool = sh("ip netns exec %s ethtool -K " CLI_IF " tx off >/dev/null 2>&1", ns_cli) == 0;
	home_fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	srv_fd = open_ns(ns_srv);
	cli_fd = open_ns(ns_cli);
	if (home_fd < 0 || srv_fd < 0 || cli_fd < 0 || enter(srv_fd)) {
		skip_reason = "cannot enter the namespaces";
		return 0;
	}
	srv = kd_stun_server_open("", PORT);
	enter(home_fd);
	if (!srv)
		return -1;
	ready = true;
	return 0;
}

static int teardown(void **state)
{
	if (xdp) {
		enter(srv_fd);
		kd_stun_xdp_detach(xdp);
		xdp = NULL;
	}
	kd_stun_server_close(srv);
	if (home_fd >= 0)
		enter(home_fd);
	if (ns_srv[0])
		sh("ip netns del %s 2>/dev/null", ns_srv);
	if (ns_cli[0])
		sh("ip netns del %s 2>/dev/null", ns_cli);
	if (srv_fd >= 0)
		close(srv_fd);
	if (cli_fd >= 0)
		close(cli_fd);
	if (home_fd >= 0)
		close(home_fd);
	return 0;
}

#define NEED_NETNS()                                                           \
	do {                                                                   \
		if (!ready) {                                                  \
			printf("# SKIP %s\n", skip_reason);                    \
			skip();                                                \
		}                                                              \
	} while (0)

/* Attaches the responder in the server namespace; false (after a # SKIP
 * line) if this kernel cannot. */
static bool attach_xdp(enum kd_xdp_mode mode)
{
	if (!has_ethtool) {
		printf("# SKIP ethtool missing: cannot turn off veth checksum offload for XDP\n");
		return false;
	}
	assert_int_equal(enter(srv_fd), 0);
	kd_stun_xdp_detach(xdp); /* left over by a failed test */
	xdp = NULL;
	int err = kd_stun_xdp_attach(SRV_IF, PORT, mode, &xdp);

	enter(home_fd);
	if (err) {
		printf("# SKIP cannot attach XDP to a veth (%s mode): %s\n", kd_xdp_mode_name(mode),
		       strerror(-err));
		return false;
	}
	return true;
}

static void detach_xdp(void)
{
	enter(srv_fd);
	kd_stun_xdp_detach(xdp);
	xdp = NULL;
	/* nothing may stay on the interface */
	int rc = sh("ip -n %s link show " SRV_IF " | grep -q xdp", ns_srv);

	enter(home_fd);
	assert_int_not_equal(rc, 0);
}

struct probe_result {
	bool answered;
	struct sockaddr_storage mapped, local;
};

/* One request from the client namespace, serving the userspace socket while
 * waiting; answered=false after timeout_ms without a valid reply. */
static struct probe_result probe(int family, int timeout_ms, bool corrupt_fp)
{
	struct probe_result r = {0};
	uint8_t txid[12], req[64], resp[128];
	struct sockaddr_storage dst = {0};
	socklen_t dl, ll = sizeof(r.local);
	int fd;

	assert_int_equal(enter(cli_fd), 0);
	fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	enter(home_fd);
	assert_true(fd >= 0);
	if (family == AF_INET) {
		struct sockaddr_in *s = (struct sockaddr_in *)&dst;

		s->sin_family = AF_INET;
		s->sin_port = htons(PORT);
		inet_pton(AF_INET, SRV4, &s->sin_addr);
		dl = sizeof(*s);
	} else {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&dst;

		s->sin6_family = AF_INET6;
		s->sin6_port = htons(PORT);
		inet_pton(AF_INET6, SRV6, &s->sin6_addr);
		dl = sizeof(*s);
	}
	for (int i = 0; i < 12; i++)
		txid[i] = (uint8_t)(rand() & 0xff);
	kd_stun_build_request(req, sizeof(req), txid);
	if (corrupt_fp)
		req[39] ^= 0x5a;
	assert_int_equal(sendto(fd, req, 40, 0, (struct sockaddr *)&dst, dl), 40);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&r.local, &ll), 0);

	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		struct pollfd p[2] = {{.fd = fd, .events = POLLIN},
				      {.fd = kd_stun_server_fd(srv), .events = POLLIN}};

		clock_gettime(CLOCK_MONOTONIC, &t);
		long el = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;

		if (el >= timeout_ms)
			break;
		if (poll(p, 2, (int)(timeout_ms - el)) <= 0)
			break;
		if (p[1].revents & POLLIN)
			kd_stun_server_on_readable(srv);
		if (p[0].revents & POLLIN) {
			ssize_t n = recv(fd, resp, sizeof(resp), 0);

			if (n > 0 && kd_stun_parse_response(resp, (size_t)n, txid, &r.mapped) == 0) {
				r.answered = true;
				break;
			}
		}
	}
	close(fd);
	return r;
}

static void assert_mapped_is_client(const struct probe_result *r)
{
	assert_true(r->answered);
	assert_int_equal(r->mapped.ss_family, r->local.ss_family);
	if (r->mapped.ss_family == AF_INET) {
		const struct sockaddr_in *m = (const void *)&r->mapped, *l = (const void *)&r->local;
		struct in_addr want;

		inet_pton(AF_INET, CLI4, &want);
		assert_int_equal(m->sin_addr.s_addr, want.s_addr);
		assert_int_equal(m->sin_port, l->sin_port);
	} else {
		const struct sockaddr_in6 *m = (const void *)&r->mapped, *l = (const void *)&r->local;
		struct in6_addr want;

		inet_pton(AF_INET6, CLI6, &want);
		assert_memory_equal(&m->sin6_addr, &want, 16);
		assert_int_equal(m->sin6_port, l->sin6_port);
	}
}

static uint64_t xdp_packets(enum stun_xdp_af af, enum stun_xdp_action act, enum stun_xdp_reason r)
{
	struct stun_xdp_counter_val v;

	assert_int_equal(kd_stun_xdp_counter(xdp, af, act, r, &v), 0);
	return v.packets;
}

static void test_userspace_only(void **state)
{
	struct kd_stun_counters c0, c1;

	NEED_NETNS();
	kd_stun_server_counters(srv, &c0);
	struct probe_result r4 = probe(AF_INET, 3000, false);

	assert_mapped_is_client(&r4);
	struct probe_result r6 = probe(AF_INET6, 3000, false);

	assert_mapped_is_client(&r6);
	kd_stun_server_counters(srv, &c1);
	assert_int_equal(c1.success - c0.success, 2);
	assert_int_equal(c1.ipv4 - c0.ipv4, 1);
	assert_int_equal(c1.ipv6 - c0.ipv6, 1);
}

static void xdp_answers(enum kd_xdp_mode mode)
{
	struct kd_stun_counters c0, c1;

	NEED_NETNS();
	if (!attach_xdp(mode))
		skip();
	printf("# attached %s via %s\n", kd_xdp_mode_name(kd_stun_xdp_mode(xdp)),
	       kd_stun_xdp_method(xdp));
	/* neighbour resolution first, so the counted probes are clean */
	(void)probe(AF_INET, 1000, false);
	(void)probe(AF_INET6, 1000, false);

	uint64_t tx4 = xdp_packets(STUN_XDP_AF_IPV4, STUN_XDP_ACT_TX, STUN_XDP_R_ANSWERED);
	uint64_t tx6 = xdp_packets(STUN_XDP_AF_IPV6, STUN_XDP_ACT_TX, STUN_XDP_R_ANSWERED);
	uint64_t fp4 = xdp_packets(STUN_XDP_AF_IPV4, STUN_XDP_ACT_PASS, STUN_XDP_R_INVALID_FINGERPRINT);

	kd_stun_server_counters(srv, &c0);
	struct probe_result r4 = probe(AF_INET, 3000, false);

	assert_mapped_is_client(&r4);
	struct probe_result r6 = probe(AF_INET6, 3000, false);

	assert_mapped_is_client(&r6);
	/* a bad FINGERPRINT: XDP passes it, userspace rejects it, no answer */
	assert_false(probe(AF_INET, 300, true).answered);
	kd_stun_server_counters(srv, &c1);
	assert_int_equal(xdp_packets(STUN_XDP_AF_IPV4, STUN_XDP_ACT_TX, STUN_XDP_R_ANSWERED) - tx4, 1);
	assert_int_equal(xdp_packets(STUN_XDP_AF_IPV6, STUN_XDP_ACT_TX, STUN_XDP_R_ANSWERED) - tx6, 1);
	assert_int_equal(
		xdp_packets(STUN_XDP_AF_IPV4, STUN_XDP_ACT_PASS, STUN_XDP_R_INVALID_FINGERPRINT) - fp4, 1);
	assert_int_equal(c1.success, c0.success); /* userspace answered nothing */
	assert_int_equal(c1.not_stun - c0.not_stun, 1);

	/* maintenance switch: dropped, never reaches userspace */
	assert_int_equal(kd_stun_xdp_set_drop(xdp, true), 0);
	uint64_t d0 = xdp_packets(STUN_XDP_AF_IPV4, STUN_XDP_ACT_DROP, STUN_XDP_R_DROP_STUN);

	assert_false(probe(AF_INET, 300, false).answered);
	assert_int_equal(xdp_packets(STUN_XDP_AF_IPV4, STUN_XDP_ACT_DROP, STUN_XDP_R_DROP_STUN) - d0, 1);
	assert_int_equal(kd_stun_xdp_set_drop(xdp, false), 0);

	/* XDP off: passed with a reason, userspace answers */
	assert_int_equal(kd_stun_xdp_set_enabled(xdp, false), 0);
	uint64_t off0 = xdp_packets(STUN_XDP_AF_IPV4, STUN_XDP_ACT_PASS, STUN_XDP_R_DISABLED);

	kd_stun_server_counters(srv, &c0);
	r4 = probe(AF_INET, 3000, false);
	assert_mapped_is_client(&r4);
	kd_stun_server_counters(srv, &c1);
	assert_int_equal(c1.success - c0.success, 1);
	assert_int_equal(xdp_packets(STUN_XDP_AF_IPV4, STUN_XDP_ACT_PASS, STUN_XDP_R_DISABLED) - off0, 1);
	assert_int_equal(kd_stun_xdp_set_enabled(xdp, true), 0);

	char buf[8192];

	assert_true(kd_stun_xdp_metrics(xdp, buf, sizeof(buf)) > 0);
	assert_non_null(strstr(buf, "xdp_stun_server_packets_total{address_family=\"ipv4\","
				    "xdp_outcome=\"tx\",prog_end=\"answered\"}"));
	assert_non_null(strstr(buf, "xdp_stun_server_bytes_total{address_family=\"ipv6\","
				    "xdp_outcome=\"tx\",prog_end=\"answered\"}"));
	detach_xdp();

	/* detached: userspace answers again */
	kd_stun_server_counters(srv, &c0);
	r4 = probe(AF_INET, 3000, false);
	assert_mapped_is_client(&r4);
	kd_stun_server_counters(srv, &c1);
	assert_int_equal(c1.success - c0.success, 1);
}

static void test_xdp_generic(void **state)
{
	xdp_answers(KD_XDP_MODE_GENERIC);
}

static void test_xdp_native(void **state)
{
	NEED_NETNS();
	/* veth delivers native XDP_TX frames to its peer only when the peer
	 * runs NAPI, i.e. has an XDP program of its own (GRO alone was not
	 * enough on 6.18). Ours with an empty config passes everything. */
	if (sh("ip -n %s link set dev " CLI_IF " xdpdrv obj %s sec xdp 2>/dev/null", ns_cli, bpf_obj)) {
		printf("# SKIP cannot attach a native XDP program to the client veth\n");
		skip();
	}
	xdp_answers(KD_XDP_MODE_NATIVE);
	assert_int_equal(sh("ip -n %s link set dev " CLI_IF " xdpdrv off", ns_cli), 0);
}

static void test_attach_errors_and_stale(void **state)
{
	struct kd_stun_xdp *x = (struct kd_stun_xdp *)1;

	NEED_NETNS();
	assert_int_equal(enter(srv_fd), 0);
	assert_int_equal(kd_stun_xdp_attach("kdstun-none", PORT, KD_XDP_MODE_GENERIC, &x), -ENODEV);
	assert_null(x);
	x = (struct kd_stun_xdp *)1;
	assert_int_equal(kd_stun_xdp_attach(SRV_IF, 0, KD_XDP_MODE_GENERIC, &x), -EINVAL);
	assert_null(x);
	enter(home_fd);

	/* what a crashed daemon leaves: our program, attached over netlink */
	if (sh("ip -n %s link set dev " SRV_IF " xdpgeneric obj %s sec xdp 2>/dev/null", ns_srv, bpf_obj)) {
		printf("# SKIP cannot attach a program with ip link\n");
		skip();
	}
	if (!attach_xdp(KD_XDP_MODE_GENERIC))
		skip();
	uint64_t tx0 = xdp_packets(STUN_XDP_AF_IPV4, STUN_XDP_ACT_TX, STUN_XDP_R_ANSWERED);
	struct probe_result r = probe(AF_INET, 3000, false);

	assert_mapped_is_client(&r);
	assert_int_equal(xdp_packets(STUN_XDP_AF_IPV4, STUN_XDP_ACT_TX, STUN_XDP_R_ANSWERED) - tx0, 1);
	detach_xdp();
}

static void test_link_attach_dies_with_process(void **state)
{
	NEED_NETNS();
	setenv("KDERP_XDP_ATTACH", "link", 1);
	bool ok = attach_xdp(KD_XDP_MODE_GENERIC);

	unsetenv("KDERP_XDP_ATTACH");
	if (!ok)
		skip();
	assert_string_equal(kd_stun_xdp_method(xdp), "link");
	uint64_t tx0 = xdp_packets(STUN_XDP_AF_IPV4, STUN_XDP_ACT_TX, STUN_XDP_R_ANSWERED);
	struct probe_result r = probe(AF_INET, 3000, false);

	assert_mapped_is_client(&r);
	assert_int_equal(xdp_packets(STUN_XDP_AF_IPV4, STUN_XDP_ACT_TX, STUN_XDP_R_ANSWERED) - tx0, 1);
	detach_xdp();

	/* a child attaches and dies without detaching: the kernel must
	 * remove the program with the child's last fd */
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		struct kd_stun_xdp *cx;

		setenv("KDERP_XDP_ATTACH", "link", 1);
		enter(srv_fd);
		_exit(kd_stun_xdp_attach(SRV_IF, PORT, KD_XDP_MODE_GENERIC, &cx) ? 1 : 0);
	}
	int st;

	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	/* link release is synchronous with the last close; allow a moment */
	int rc = 0;

	for (int i = 0; i < 50 && rc == 0; i++) {
		rc = sh("ip -n %s link show " SRV_IF " | grep -q xdp", ns_srv);
		if (rc == 0)
			usleep(20000);
	}
	assert_int_not_equal(rc, 0);
}

static void test_pinned_maps_have_btf(void **state)
{
	NEED_NETNS();
	if (sh("bpftool version >/dev/null 2>&1")) {
		printf("# SKIP bpftool not installed\n");
		skip();
	}
	if (!attach_xdp(KD_XDP_MODE_GENERIC))
		skip();
	(void)probe(AF_INET, 1000, false);
	/* field and enumerator names, not hex blobs */
	int rc = sh("bpftool map dump pinned " KD_BPF_PIN_DIR "/" KD_STUN_PIN_COUNTERS
		    " | grep -q '\"reason\": \"STUN_XDP_R_ANSWERED\"' && "
		    "bpftool map dump pinned " KD_BPF_PIN_DIR "/" KD_STUN_PIN_COUNTERS
		    " | grep -q '\"packets\": ' && "
		    "bpftool map dump pinned " KD_BPF_PIN_DIR "/" KD_STUN_PIN_CONFIG
		    " | grep -q '\"dst_port\": %d'", PORT);

	assert_int_equal(rc, 0);
	detach_xdp();
	assert_int_not_equal(access(KD_BPF_PIN_DIR "/" KD_STUN_PIN_COUNTERS, F_OK), 0);
}

static void test_kderpctl(void **state)
{
	NEED_NETNS();
	if (access(kderpctl, X_OK)) {
		printf("# SKIP %s not built\n", kderpctl);
		skip();
	}
	/* the server is served by a child while kderpctl runs in the client ns */
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		for (int i = 0; i < 300; i++) {
			struct pollfd p = {.fd = kd_stun_server_fd(srv), .events = POLLIN};

			if (poll(&p, 1, 10) > 0)
				kd_stun_server_on_readable(srv);
		}
		_exit(0);
	}
	char out[512] = "";
	char cmd[PATH_MAX + 256];

	snprintf(cmd, sizeof(cmd), "ip netns exec %s %s stun --json --timeout 2000 " SRV4, ns_cli,
		 kderpctl);
	FILE *f = popen(cmd, "r");

	assert_non_null(f);
	size_t n = fread(out, 1, sizeof(out) - 1, f);
	int rc = pclose(f);

	out[n] = 0;
	assert_true(WIFEXITED(rc));
	assert_int_equal(WEXITSTATUS(rc), 0);
	assert_non_null(strstr(out, "\"mapped_ip\":\"" CLI4 "\""));
	assert_non_null(strstr(out, "\"rtt_ms\":"));
	/* nobody on that port: ICMP unreachable, exit 1 */
	assert_int_equal(sh("ip netns exec %s %s stun --timeout 500 " SRV4 ":3479 2>/dev/null", ns_cli,
			    kderpctl), 1);
	assert_int_equal(sh("ip netns exec %s %s stun 2>/dev/null", ns_cli, kderpctl), 2);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

int main(int argc, char **argv)
{
	char self[PATH_MAX - 64];

	/* build/tests/integ/test_stun_netns → build/kderpctl */
	snprintf(self, sizeof(self), "%s", argv[0]);
	snprintf(kderpctl, sizeof(kderpctl), "%s/../../kderpctl", dirname(self));
	snprintf(bpf_obj, sizeof(bpf_obj), "%s/../../bpf/stun_xdp.bpf.o", self);
	srand((unsigned)time(NULL));

	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_userspace_only),
		cmocka_unit_test(test_xdp_generic),
		cmocka_unit_test(test_xdp_native),
		cmocka_unit_test(test_attach_errors_and_stale),
		cmocka_unit_test(test_link_attach_dies_with_process),
		cmocka_unit_test(test_pinned_maps_have_btf),
		cmocka_unit_test(test_kderpctl),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
