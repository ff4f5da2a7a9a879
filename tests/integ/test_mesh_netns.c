// SPDX-License-Identifier: MIT
/* A three-node region of real kderpd processes, each in a network namespace
 * this test creates, joined by veth pairs to a bridge namespace (192.0.2.0/24,
 * TEST-NET-1, only inside those namespaces). Clients live in a fourth
 * namespace on the same bridge and use the project's client library.
 * Every node gets the same -mesh-with list, itself included, as derper
 * deployments do. Namespaces and processes are removed on every exit path
 * (atexit and signal handlers too). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "client.h"
#include "derp_wire.h"
#include "key.h"
#include "log.h"
#include "loop.h"

#define NODES 3
#define PORT 3340
#define CLIENT_IP "192.0.2.100"
#define MESH_KEY_HEX "6d6573686d6573686d6573686d6573686d6573686d6573686d6573686d657368"
#define WRONG_KEY_HEX "77777777777777777777777777777777777777777777777777777777777777ff"

static char ns_br[64], ns_cli[64], ns_node[NODES][64];
static char tmpdir[256], kderpd[PATH_MAX], kderpctl[PATH_MAX], mesh_with[256];
static pid_t node_pid[NODES + 1]; /* [NODES] is the wrong-key node in the client namespace */
static int home_fd = -1, cli_fd = -1, node_fd[NODES] = {-1, -1, -1};
static bool ready;
static const char *skip_reason = "setup did not run";
static uint8_t mesh_key[32];

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	int rc = system(cmd);
	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int open_ns(const char *name)
{
	char path[512];

	snprintf(path, sizeof(path), "/run/netns/%s", name);
	return open(path, O_RDONLY | O_CLOEXEC);
}

/* Idempotent; safe from atexit and (best effort) from a signal handler. */
static void cleanup(void)
{
	for (int i = 0; i <= NODES; i++) {
		if (node_pid[i] > 0) {
			kill(node_pid[i], SIGKILL);
			waitpid(node_pid[i], NULL, 0);
			node_pid[i] = 0;
		}
	}
	if (home_fd >= 0)
		setns(home_fd, CLONE_NEWNET);
	for (int i = 0; i < NODES; i++) {
		if (ns_node[i][0])
			sh("ip netns del %s 2>/dev/null", ns_node[i]);
		ns_node[i][0] = '\0';
	}
	if (ns_cli[0])
		sh("ip netns del %s 2>/dev/null", ns_cli);
	if (ns_br[0])
		sh("ip netns del %s 2>/dev/null", ns_br);
	ns_cli[0] = ns_br[0] = '\0';
	/* KD_TEST_KEEP=1 keeps the node logs and keys for a post-mortem */
	if (tmpdir[0] && !getenv("KD_TEST_KEEP"))
		sh("rm -rf %s", tmpdir);
	tmpdir[0] = '\0';
}

static void on_signal(int sig)
{
	cleanup();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void node_log_dump(int i)
{
	printf("# --- node %d log ---\n", i + 1);
	fflush(stdout);
	sh("sed 's/^/#   /' %s/node%d.log", tmpdir, i + 1);
}

/* Starts kderpd i (0..NODES-1) in its namespace, or the wrong-key node
 * (i == NODES) in the client namespace. */
static int start_node(int i)
{
	char key[PATH_MAX], log[PATH_MAX], psk[PATH_MAX], addr[32];

	snprintf(key, sizeof(key), "%s/node%d.key", tmpdir, i + 1);
	snprintf(log, sizeof(log), "%s/node%d.log", tmpdir, i + 1);
	snprintf(psk, sizeof(psk), "%s/%s", tmpdir, i == NODES ? "wrong.psk" : "mesh.psk");
	snprintf(addr, sizeof(addr), ":%d", PORT);
	const char *ns = i == NODES ? ns_cli : ns_node[i];
	const char *with = i == NODES ? "http://192.0.2.1:3340" : mesh_with;
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execlp("ip", "ip", "netns", "exec", ns, kderpd, "-a", addr, "-c", key, "-stun=false", "-mesh-psk-file",
		       psk, "-mesh-with", with, "-verbose", (char *)NULL);
		_exit(127);
	}
	node_pid[i] = pid;
	return 0;
}

static int enter(int fd)
{
	return setns(fd, CLONE_NEWNET);
}

/* GET /debug/varz over the node's loopback (debug pages are for loopback
 * callers); the named metric's value or -1. */
static long long varz(int i, const char *name)
{
	static char buf[1 << 16];
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(PORT)};
	size_t len = 0, nlen = strlen(name);
	long long v = -1;

	if (i < NODES && enter(node_fd[i]) != 0)
		return -1;
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	enter(cli_fd);
	if (fd < 0)
		return -1;
	struct timeval tv = {.tv_sec = 2};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	static const char req[] = "GET /debug/varz HTTP/1.0\r\nHost: localhost\r\n\r\n";
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || write(fd, req, sizeof(req) - 1) != sizeof(req) - 1) {
		close(fd);
		return -1;
	}
	for (ssize_t n; len < sizeof(buf) - 1 && (n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0;)
		len += (size_t)n;
	close(fd);
	buf[len] = '\0';
	for (char *line = buf; line && *line;) {
		char *nl = strchr(line, '\n');
		if (!strncmp(line, name, nlen) && line[nlen] == ' ') {
			v = strtoll(line + nlen + 1, NULL, 10);
			break;
		}
		line = nl ? nl + 1 : NULL;
	}
	return v;
}

static bool wait_varz(int i, const char *name, long long want, int timeout_ms)
{
	for (int t = 0; t < timeout_ms; t += 50) {
		if (varz(i, name) == want)
			return true;
		usleep(50000);
	}
	return varz(i, name) == want;
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
	/* build/tests/integ/test_mesh_netns -> build/kderpd */
	char *dir = dirname(self);
	snprintf(kderpd, sizeof(kderpd), "%s/../../kderpd", dir);
	snprintf(kderpctl, sizeof(kderpctl), "%s/../../kderpctl", dir);
	if (geteuid() != 0) {
		skip_reason = "not root: cannot create network namespaces";
		return 0;
	}
	if (access(kderpd, X_OK) || access(kderpctl, X_OK)) {
		skip_reason = "build/kderpd or build/kderpctl not built";
		return 0;
	}
	if (sh("ip -V >/dev/null 2>&1")) {
		skip_reason = "iproute2 (ip) not found";
		return 0;
	}
	atexit(cleanup);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_signal);
	signal(SIGPIPE, SIG_IGN);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/kdm-%d-XXXXXX", getpid());
	if (!mkdtemp(tmpdir)) {
		tmpdir[0] = '\0';
		return -1;
	}
	if (sh("echo " MESH_KEY_HEX " > %1$s/mesh.psk && echo " WRONG_KEY_HEX " > %1$s/wrong.psk", tmpdir))
		return -1;
	kd_hex_decode(mesh_key, 32, MESH_KEY_HEX, 64);
	/* a private copy under another name: on a shared machine a stray
	 * `pkill kderpd` from elsewhere must not take the region down */
	if (sh("cp %s %s/kdm-node", kderpd, tmpdir))
		return -1;
	snprintf(kderpd, sizeof(kderpd), "%s/kdm-node", tmpdir);

	long tag = (long)time(NULL) % 100000;
	snprintf(ns_br, sizeof(ns_br), "kdm-%d-%ld-br", getpid(), tag);
	snprintf(ns_cli, sizeof(ns_cli), "kdm-%d-%ld-c", getpid(), tag);
	if (sh("ip netns add %s && ip netns add %s", ns_br, ns_cli)) {
		ns_br[0] = ns_cli[0] = '\0';
		skip_reason = "cannot create network namespaces";
		return 0;
	}
	if (sh("ip -n %1$s link add br0 type bridge && ip -n %1$s link set br0 up && ip -n %1$s link set lo up",
	       ns_br)) {
		skip_reason = "cannot create a bridge";
		return 0;
	}
	/* the client namespace is node 0 of the wiring, address .100 */
	for (int i = -1; i < NODES; i++) {
		const char *ns = i < 0 ? ns_cli : ns_node[i];
		if (i >= 0) {
			snprintf(ns_node[i], sizeof(ns_node[i]), "kdm-%d-%ld-%d", getpid(), tag, i + 1);
			if (sh("ip netns add %s", ns_node[i])) {
				ns_node[i][0] = '\0';
				skip_reason = "cannot create network namespaces";
				return 0;
			}
		}
		char ip[32];
		if (i < 0)
			snprintf(ip, sizeof(ip), CLIENT_IP);
		else
			snprintf(ip, sizeof(ip), "192.0.2.%d", i + 1);
		if (sh("ip -n %1$s link add eth0 type veth peer name p%3$d netns %2$s", ns, ns_br, i + 1)) {
			skip_reason = "cannot create veth pairs";
			return 0;
		}
		if (sh("ip -n %1$s link set p%2$d master br0 && ip -n %1$s link set p%2$d up && "
		       "ip -n %3$s link set lo up && ip -n %3$s link set eth0 up && ip -n %3$s addr add %4$s/24 dev eth0",
		       ns_br, i + 1, ns, ip)) {
			skip_reason = "cannot configure the veth pairs";
			return 0;
		}
	}
	home_fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	cli_fd = open_ns(ns_cli);
	for (int i = 0; i < NODES; i++)
		node_fd[i] = open_ns(ns_node[i]);
	if (home_fd < 0 || cli_fd < 0 || node_fd[0] < 0 || node_fd[1] < 0 || node_fd[2] < 0 || enter(cli_fd)) {
		skip_reason = "cannot enter the namespaces";
		return 0;
	}
	snprintf(mesh_with, sizeof(mesh_with), "http://192.0.2.1:%d,http://192.0.2.2:%d,http://192.0.2.3:%d", PORT,
		 PORT, PORT);
	for (int i = 0; i < NODES; i++)
		if (start_node(i) != 0)
			return -1;
	/* the first node up finds the others refusing and retries 5 s later */
	for (int i = 0; i < NODES; i++) {
		if (!wait_varz(i, "kderp_mesh_peers_up", 2, 15000)) {
			node_log_dump(i);
			return -1;
		}
	}
	ready = true;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	cleanup();
	for (int i = 0; i < NODES; i++)
		if (node_fd[i] >= 0)
			close(node_fd[i]);
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

static struct kd_client *login(int node, struct kd_keypair *kp, const uint8_t *mkey)
{
	struct kd_client_opts o = {0};
	struct kd_client *c = NULL;
	char url[64];

	snprintf(url, sizeof(url), "http://192.0.2.%d:%d/derp", node + 1, PORT);
	if (kd_key_is_zero(kp->priv))
		kd_keypair_generate(kp);
	o.url = url;
	o.key = *kp;
	o.mesh_key = mkey;
	o.can_ack_pings = true;
	o.timeout_ms = 3000;
	int err = kd_client_connect(&c, &o);
	if (err)
		printf("# login to %s: %s\n", url, strerror(-err));
	return c;
}

static int recv_type(struct kd_client *c, uint8_t type, struct kd_client_msg *m, int timeout_ms)
{
	for (;;) {
		int err = kd_client_recv(c, m, timeout_ms);
		if (err || m->type == type)
			return err;
	}
}

static void exchange(struct kd_client *from, const struct kd_keypair *kf, struct kd_client *to,
		     const struct kd_keypair *kt)
{
	uint8_t buf[1400];
	struct kd_client_msg m;

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)rand();
	assert_int_equal(kd_client_send_packet(from, kt->pub, buf, sizeof(buf)), 0);
	assert_int_equal(recv_type(to, DERP_FRAME_RECV_PACKET, &m, 3000), 0);
	assert_memory_equal(m.key, kf->pub, 32);
	assert_int_equal(m.data_len, sizeof(buf));
	assert_memory_equal(m.data, buf, sizeof(buf));
}

static void test_region_relays_across_nodes(void **state)
{
	struct kd_keypair k[NODES] = {0};
	struct kd_client *c[NODES];
	(void)state;

	NEED_NETNS();
	/* each node ignored itself in the list: two links, no self watcher */
	for (int i = 0; i < NODES; i++) {
		assert_int_equal(varz(i, "kderp_mesh_peers_up"), 2);
		assert_int_equal(varz(i, "derp_watchers"), 2);
	}
	for (int i = 0; i < NODES; i++) {
		c[i] = login(i, &k[i], NULL);
		assert_non_null(c[i]);
	}
	for (int i = 0; i < NODES; i++)
		assert_true(wait_varz(i, "derp_clients_remote", 2, 3000));
	for (int i = 0; i < NODES; i++) {
		exchange(c[i], &k[i], c[(i + 1) % NODES], &k[(i + 1) % NODES]);
		exchange(c[(i + 1) % NODES], &k[(i + 1) % NODES], c[i], &k[i]);
	}
	for (int i = 0; i < NODES; i++)
		kd_client_close(c[i]);
	for (int i = 0; i < NODES; i++)
		assert_true(wait_varz(i, "derp_clients_remote", 0, 3000));
}

static void test_wrong_mesh_key_refused(void **state)
{
	struct kd_keypair kw = {0}, ka = {0};
	struct kd_client_msg m;
	uint8_t wrong[32];
	(void)state;

	NEED_NETNS();
	struct kd_client *a = login(0, &ka, NULL);
	assert_non_null(a);
	/* a kderpd with the wrong key, meshing with node 1 */
	assert_int_equal(start_node(NODES), 0);
	/* a client with the wrong key asking to watch is closed */
	kd_hex_decode(wrong, 32, WRONG_KEY_HEX, 64);
	struct kd_client *w = login(1, &kw, wrong);
	assert_non_null(w);
	assert_int_equal(kd_client_watch_conns(w), 0);
	int err;
	do
		err = kd_client_recv(w, &m, 3000);
	while (err == 0 && m.type != DERP_FRAME_PEER_PRESENT);
	assert_int_equal(err, -EPIPE);
	kd_client_close(w);
	/* the wrong-key node logs in as an ordinary client and is closed at
	 * WatchConns: it learns nothing, node 1 never counts it as a watcher */
	bool refused = false;
	for (int t = 0; t < 100 && !refused; t++) {
		refused = sh("grep -q 'does it have the same mesh key' %s/node%d.log", tmpdir, NODES + 1) == 0;
		assert_int_equal(varz(0, "derp_watchers"), 2);
		usleep(50000);
	}
	if (!refused)
		node_log_dump(NODES);
	assert_true(refused);
	assert_int_equal(varz(NODES, "derp_clients_remote"), 0);
	assert_int_equal(varz(NODES, "kderp_mesh_peers_up"), 0);
	assert_int_equal(varz(0, "derp_watchers"), 2);
	kill(node_pid[NODES], SIGTERM);
	waitpid(node_pid[NODES], NULL, 0);
	node_pid[NODES] = 0;
	kd_client_close(a);
}

static void test_close_peer_on_holding_node(void **state)
{
	struct kd_keypair kx = {0};
	struct kd_client_msg m;
	char hex[KD_KEY_HEX_LEN + 1];
	(void)state;

	NEED_NETNS();
	struct kd_client *x = login(2, &kx, NULL);
	assert_non_null(x);
	kd_hex_encode(hex, kx.pub, 32);
	assert_int_equal(sh("%s close-peer http://192.0.2.1:%d/derp,http://192.0.2.2:%d/derp,http://192.0.2.3:%d/derp "
			    "nodekey:%s --mesh-key-file %s/mesh.psk > %s/close.out",
			    kderpctl, PORT, PORT, PORT, hex, tmpdir, tmpdir),
			 0);
	assert_int_equal(sh("grep -q 'on http://192.0.2.3:%d/derp' %s/close.out", PORT, tmpdir), 0);
	int err;
	do
		err = kd_client_recv(x, &m, 3000);
	while (err == 0);
	assert_int_equal(err, -EPIPE);
	kd_client_close(x);
	/* gone everywhere now: a second run finds it nowhere */
	assert_int_equal(sh("%s close-peer http://192.0.2.1:%d/derp,http://192.0.2.3:%d/derp nodekey:%s "
			    "--mesh-key-file %s/mesh.psk >/dev/null",
			    kderpctl, PORT, PORT, hex, tmpdir),
			 1);
	/* the wrong key cannot do it */
	assert_int_equal(sh("%s close-peer http://192.0.2.1:%d/derp nodekey:%s --mesh-key-file %s/wrong.psk "
			    ">/dev/null 2>&1",
			    kderpctl, PORT, hex, tmpdir),
			 3);
}

static void test_forward_packet_from_non_mesh_client_closes_it(void **state)
{
	struct kd_keypair ka = {0}, kb = {0};
	struct kd_client_msg m;
	(void)state;

	NEED_NETNS();
	struct kd_client *a = login(0, &ka, NULL);
	struct kd_client *b = login(0, &kb, NULL);
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(kd_client_forward_packet(a, kb.pub, kb.pub, "forged", 6), 0);
	int err;
	do
		err = kd_client_recv(a, &m, 3000);
	while (err == 0);
	assert_int_equal(err, -EPIPE);
	/* and nothing reached B */
	assert_int_equal(recv_type(b, DERP_FRAME_RECV_PACKET, &m, 300), -ETIMEDOUT);
	kd_client_close(a);
	kd_client_close(b);
}

/* A steady stream from S (node 2) to R (node 1); node 1 is SIGKILLed, R
 * moves to node 3 as soon as it sees its connection die. */
static void test_failover_after_node_killed(void **state)
{
	struct kd_keypair ks = {0}, kr = {0}, kw = {0};
	struct kd_client_msg m;
	enum { MAX_SEQ = 20000 };
	static uint8_t got[MAX_SEQ];
	(void)state;

	NEED_NETNS();
	memset(got, 0, sizeof(got));
	struct kd_client *s = login(1, &ks, NULL);
	struct kd_client *r = login(0, &kr, NULL);
	struct kd_client *w = login(2, &kw, mesh_key); /* a watcher on node 3 */
	assert_non_null(s);
	assert_non_null(r);
	assert_non_null(w);
	assert_int_equal(kd_client_watch_conns(w), 0);
	assert_true(wait_varz(1, "derp_clients_remote", 2, 3000)); /* R, W */
	/* R speaks first so S is a receiver of R's packets: it must hear
	 * PeerGone(R) when node 1 dies */
	exchange(r, &kr, s, &ks);

	uint32_t seq = 0, last_before = 0;
	uint64_t t_kill = 0, t_back = 0, t_end = 0;
	bool killed = false, moved = false, saw_gone = false, saw_present = false;
	uint64_t start = kd_now_ms();
	while (seq < MAX_SEQ) {
		uint64_t now = kd_now_ms();
		if (!killed && now - start >= 1000) {
			kill(node_pid[0], SIGKILL);
			waitpid(node_pid[0], NULL, 0);
			node_pid[0] = 0;
			t_kill = kd_now_ms();
			last_before = seq;
			killed = true;
			now = t_kill;
		}
		if (t_back && !t_end)
			t_end = t_back + 1000;
		if (t_end && now >= t_end)
			break;
		if (killed && now - t_kill > 15000)
			break;
		uint8_t pkt[64] = {0};
		memcpy(pkt, &seq, sizeof(seq));
		if (kd_client_send_packet(s, kr.pub, pkt, sizeof(pkt)) == 0)
			seq++;
		int err;
		while (r && (err = kd_client_poll(r, &m)) != -EAGAIN) {
			if (err) {
				printf("# R: %s after %llu ms\n", strerror(-err), (unsigned long long)(kd_now_ms() - t_kill));
				/* its node died: R reconnects to another node of the region */
				kd_client_close(r);
				r = login(2, &kr, NULL);
				assert_non_null(r);
				moved = true;
				continue;
			}
			if (m.type == DERP_FRAME_RECV_PACKET && m.data_len == 64) {
				uint32_t v;
				memcpy(&v, m.data, sizeof(v));
				if (v < MAX_SEQ)
					got[v] = 1;
				if (moved && !t_back && v >= last_before)
					t_back = kd_now_ms();
			}
		}
		while ((err = kd_client_poll(s, &m)) != -EAGAIN) {
			assert_int_equal(err, 0);
			if (m.type == DERP_FRAME_PEER_GONE && !memcmp(m.key, kr.pub, 32))
				saw_gone = true;
		}
		while ((err = kd_client_poll(w, &m)) != -EAGAIN) {
			assert_int_equal(err, 0);
			if (moved && m.type == DERP_FRAME_PEER_PRESENT && !memcmp(m.key, kr.pub, 32))
				saw_present = true;
		}
		usleep(2000);
	}
	uint32_t lost = 0;
	for (uint32_t i = 0; i < seq; i++)
		lost += !got[i];
	printf("# failover: lost %u packets, recovered in %llu ms (%u sent, one every ~2 ms)\n", lost,
	       (unsigned long long)(t_back ? t_back - t_kill : 0), seq);
	if (!t_back) {
		for (int i = 0; i < NODES; i++)
			node_log_dump(i);
	}
	assert_true(moved);
	assert_true(t_back != 0);
	assert_true(t_back - t_kill < 3000);
	assert_true(saw_gone);
	assert_true(saw_present);
	/* nothing lost before the kill or after the recovery */
	for (uint32_t i = 0; i + 50 < last_before; i++)
		assert_true(got[i]);
	assert_true(varz(1, "kderp_mesh_peers_up") == 1);
	kd_client_close(r);
	kd_client_close(s);
	kd_client_close(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_region_relays_across_nodes),
		cmocka_unit_test(test_wrong_mesh_key_refused),
		cmocka_unit_test(test_close_peer_on_holding_node),
		cmocka_unit_test(test_forward_packet_from_non_mesh_client_closes_it),
		cmocka_unit_test(test_failover_after_node_killed),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
