// SPDX-License-Identifier: MIT
/* The mesh client (spec §8.3) between in-process servers on loopback: each
 * node runs kd_mesh_start toward the other over plain HTTP, clients on
 * different nodes talk through the mesh, and the links recover after a node
 * dies and comes back. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "clients.h"
#include "derp_wire.h"
#include "log.h"
#include "loop.h"
#include "mesh.h"

static const uint8_t kMeshKey[32] = {0x4d, 0x45, 0x53, 0x48, 0x4d, 0x45, 0x53, 0x48, 0x4d, 0x45, 0x53,
				     0x48, 0x4d, 0x45, 0x53, 0x48, 0x4d, 0x45, 0x53, 0x48, 0x4d, 0x45,
				     0x53, 0x48, 0x4d, 0x45, 0x53, 0x48, 0x4d, 0x45, 0x53, 0x48};

struct node {
	struct ts_server ts;
	struct kd_mesh *mesh;
	uint8_t priv[32];
};

/* ts_start always binds port 0; a restarted node must come back on its port. */
static void node_start(struct node *n, int port, const uint8_t *mesh_key)
{
	struct kd_server_config cfg;
	char addr[32];

	n->mesh = NULL;
	kd_server_config_defaults(&cfg);
	cfg.has_mesh_key = true;
	memcpy(cfg.mesh_key, mesh_key, 32);
	if (port == 0) {
		assert_int_equal(ts_start(&n->ts, &cfg, NULL), 0);
		memcpy(n->priv, n->ts.cfg.keys.priv, 32);
		return;
	}
	memset(&n->ts, 0, sizeof(n->ts));
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	n->ts.cfg = cfg;
	n->ts.cfg.addr = addr;
	n->ts.cfg.workers = 2;
	assert_int_equal(kd_keypair_from_private(&n->ts.cfg.keys, n->priv), 0);
	assert_int_equal(kd_server_new(&n->ts.srv, &n->ts.cfg), 0);
	n->ts.cfg.addr = NULL;
	n->ts.port = kd_server_port(n->ts.srv);
	assert_int_equal(n->ts.port, port);
	assert_int_equal(kd_server_start(n->ts.srv), 0);
}

static void node_mesh(struct node *n, const char *with, const uint8_t *mesh_key, const char *self)
{
	struct kd_mesh_opts o = {.mesh_with = with, .mesh_key = mesh_key, .self_hostname = self};

	assert_int_equal(kd_mesh_start(&n->mesh, n->ts.srv, &o), 0);
}

static void mesh_with_port(char *out, size_t cap, int port)
{
	snprintf(out, cap, "http://127.0.0.1:%d", port);
}

/* Workers may still hold a forwarder they just looked up: stop them first. */
static void node_stop(struct node *n)
{
	kd_server_stop(n->ts.srv);
	kd_mesh_stop(n->mesh);
	n->mesh = NULL;
	ts_stop(&n->ts);
}

static bool wait_metric(struct node *n, const char *name, long long want, int timeout_ms)
{
	for (int t = 0; t < timeout_ms; t += 20) {
		if (ts_metric(&n->ts, name) == want)
			return true;
		usleep(20000);
	}
	return ts_metric(&n->ts, name) == want;
}

static long long mesh_metric(struct kd_mesh *m, const char *name)
{
	char buf[4096];
	size_t nlen = strlen(name);

	if (kd_mesh_metrics(m, buf, sizeof(buf)) < 0)
		return -1;
	for (char *line = buf; line && *line;) {
		char *nl = strchr(line, '\n');
		if (!strncmp(line, name, nlen) && line[nlen] == ' ')
			return strtoll(line + nlen + 1, NULL, 10);
		line = nl ? nl + 1 : NULL;
	}
	return -1;
}

static void start_pair(struct node *n1, struct node *n2)
{
	char w1[64], w2[64];

	node_start(n1, 0, kMeshKey);
	node_start(n2, 0, kMeshKey);
	mesh_with_port(w1, sizeof(w1), n2->ts.port);
	mesh_with_port(w2, sizeof(w2), n1->ts.port);
	node_mesh(n1, w1, kMeshKey, NULL);
	node_mesh(n2, w2, kMeshKey, NULL);
}

static void send_and_check(struct kd_client *from, const struct kd_keypair *kfrom, struct kd_client *to,
			   const struct kd_keypair *kto, size_t len)
{
	uint8_t buf[2000];
	struct kd_client_msg m;

	assert_true(len <= sizeof(buf));
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(rand() & 0xff);
	assert_int_equal(kd_client_send_packet(from, kto->pub, buf, len), 0);
	assert_int_equal(tc_recv_type(to, DERP_FRAME_RECV_PACKET, &m, 3000), 0);
	assert_memory_equal(m.key, kfrom->pub, 32);
	assert_int_equal(m.data_len, len);
	assert_memory_equal(m.data, buf, len);
}

static void test_packets_both_ways_and_peer_gone(void **state)
{
	struct node n1, n2;
	struct kd_keypair ka = {0}, kb = {0};
	struct kd_client_msg m;
	(void)state;

	start_pair(&n1, &n2);
	struct kd_client *a = tc_login(&n1.ts, &ka, NULL);
	struct kd_client *b = tc_login(&n2.ts, &kb, NULL);
	assert_non_null(a);
	assert_non_null(b);
	/* each node learns the other's client, and nothing else: the peer's
	 * own mesh connection is not a remote client */
	assert_true(wait_metric(&n1, "derp_clients_remote", 1, 5000));
	assert_true(wait_metric(&n2, "derp_clients_remote", 1, 5000));
	assert_int_equal(kd_mesh_peers_up(n1.mesh), 1);
	assert_int_equal(ts_metric(&n1.ts, "derp_watchers"), 1);
	send_and_check(a, &ka, b, &kb, 1200);
	send_and_check(b, &kb, a, &ka, 1);
	send_and_check(a, &ka, b, &kb, 0);
	assert_int_equal(mesh_metric(n1.mesh, "kderp_mesh_forwarded_packets_total"), 2);
	assert_int_equal(mesh_metric(n1.mesh, "kderp_mesh_forwarded_bytes_total"), 1200);
	assert_int_equal(mesh_metric(n2.mesh, "kderp_mesh_forwarded_packets_total"), 1);
	assert_int_equal(ts_metric(&n2.ts, "derp_packets_forwarded_in"), 2);
	char lbl[96];
	snprintf(lbl, sizeof(lbl), "kderp_mesh_peer_up{peer=\"127.0.0.1:%d\"}", n2.ts.port);
	assert_int_equal(mesh_metric(n1.mesh, lbl), 1);
	assert_int_equal(mesh_metric(n1.mesh, "kderp_mesh_peers_up"), 1);
	/* A leaves node 1: B, who got A's packets on node 2, hears it */
	kd_client_close(a);
	assert_int_equal(tc_recv_type(b, DERP_FRAME_PEER_GONE, &m, 3000), 0);
	assert_memory_equal(m.key, ka.pub, 32);
	assert_int_equal(m.reason, DERP_PEER_GONE_DISCONNECTED);
	assert_true(wait_metric(&n2, "derp_clients_remote", 0, 3000));
	/* a packet to a key gone from the region is not forwarded */
	assert_int_equal(kd_client_send_packet(b, ka.pub, "late", 4), 0);
	assert_true(tc_alive(b));
	assert_int_equal(mesh_metric(n2.mesh, "kderp_mesh_forwarded_packets_total"), 1);
	kd_client_close(b);
	node_stop(&n1);
	node_stop(&n2);
}

static void test_node_dies_and_returns(void **state)
{
	struct node n1, n2;
	struct kd_keypair ka = {0}, kb = {0};
	struct kd_client_msg m;
	char w1[64];
	(void)state;

	start_pair(&n1, &n2);
	struct kd_client *a = tc_login(&n1.ts, &ka, NULL);
	struct kd_client *b = tc_login(&n2.ts, &kb, NULL);
	assert_true(wait_metric(&n2, "derp_clients_remote", 1, 5000));
	assert_true(wait_metric(&n1, "derp_clients_remote", 1, 5000));
	send_and_check(a, &ka, b, &kb, 100);
	/* node 1 dies: node 2 forgets A and tells B */
	int port1 = n1.ts.port;
	node_stop(&n1);
	kd_client_close(a);
	assert_int_equal(tc_recv_type(b, DERP_FRAME_PEER_GONE, &m, 3000), 0);
	assert_memory_equal(m.key, ka.pub, 32);
	assert_int_equal(m.reason, DERP_PEER_GONE_DISCONNECTED);
	assert_true(wait_metric(&n2, "derp_clients_remote", 0, 3000));
	assert_int_equal(kd_mesh_peers_up(n2.mesh), 0);
	/* packets toward the dead node are dropped and counted, never queued */
	assert_int_equal(kd_client_send_packet(b, ka.pub, "void", 4), 0);
	assert_true(tc_alive(b));
	/* it comes back on its port with its key; the links return within the
	 * 5 s retry (+ connect) */
	uint64_t t0 = kd_now_ms();
	node_start(&n1, port1, kMeshKey);
	mesh_with_port(w1, sizeof(w1), n2.ts.port);
	node_mesh(&n1, w1, kMeshKey, NULL);
	memset(&ka, 0, sizeof(ka));
	a = tc_login(&n1.ts, &ka, NULL);
	assert_non_null(a);
	assert_true(wait_metric(&n2, "derp_clients_remote", 1, 7000));
	uint64_t back = kd_now_ms() - t0;
	printf("# mesh link back %llu ms after the restart\n", (unsigned long long)back);
	assert_true(back <= 6500);
	assert_int_equal(kd_mesh_peers_up(n2.mesh), 1);
	assert_true(mesh_metric(n2.mesh, "kderp_mesh_reconnects_total") >= 1);
	assert_true(wait_metric(&n1, "derp_clients_remote", 1, 5000));
	send_and_check(b, &kb, a, &ka, 300);
	send_and_check(a, &ka, b, &kb, 300);
	kd_client_close(a);
	kd_client_close(b);
	node_stop(&n1);
	node_stop(&n2);
}

static void test_wrong_mesh_key_gets_no_watch(void **state)
{
	struct node n1, n3;
	struct kd_keypair ka = {0};
	uint8_t wrong[32];
	char w[64];
	(void)state;

	memset(wrong, 0x77, sizeof(wrong));
	node_start(&n1, 0, kMeshKey);
	node_start(&n3, 0, wrong);
	struct kd_client *a = tc_login(&n1.ts, &ka, NULL);
	assert_non_null(a);
	mesh_with_port(w, sizeof(w), n1.ts.port);
	node_mesh(&n3, w, wrong, NULL);
	/* it logs in as an ordinary client and is closed at WatchConns */
	for (int i = 0; i < 75; i++) {
		assert_int_equal(ts_metric(&n3.ts, "derp_clients_remote"), 0);
		assert_int_equal(ts_metric(&n1.ts, "derp_watchers"), 0);
		usleep(20000);
	}
	assert_int_equal(kd_mesh_peers_up(n3.mesh), 0);
	kd_client_close(a);
	node_stop(&n3);
	node_stop(&n1);
}

static void test_self_is_ignored(void **state)
{
	struct node n1;
	char w[128];
	(void)state;

	node_start(&n1, 0, kMeshKey);
	/* named like -hostname: skipped without dialling; by address: dialled
	 * once, recognised by its server key and never dialled again */
	snprintf(w, sizeof(w), "derp1.example.net,http://127.0.0.1:%d", n1.ts.port);
	node_mesh(&n1, w, kMeshKey, "derp1.example.net");
	assert_int_equal(mesh_metric(n1.mesh, "kderp_mesh_peer_up{peer=\"derp1.example.net\"}"), -1);
	char lbl[96];
	snprintf(lbl, sizeof(lbl), "kderp_mesh_peer_up{peer=\"127.0.0.1:%d\"}", n1.ts.port);
	assert_int_equal(mesh_metric(n1.mesh, lbl), 0);
	assert_true(wait_metric(&n1, "derp_accepts", 1, 3000));
	assert_true(wait_metric(&n1, "derp_current_connections", 0, 3000));
	/* past the 5 s retry: still one accept, no watcher, nothing learned */
	sleep(6);
	assert_int_equal(ts_metric(&n1.ts, "derp_accepts"), 1);
	assert_int_equal(ts_metric(&n1.ts, "derp_watchers"), 0);
	assert_int_equal(ts_metric(&n1.ts, "derp_clients_total"), 0);
	assert_int_equal(kd_mesh_peers_up(n1.mesh), 0);
	node_stop(&n1);
}

/* derper's own form: https with verification; kderp's -mesh-insecure for
 * self-signed regions. Without it the link never comes up. */
static void test_tls_peers(void **state)
{
	struct node n1 = {0}, n2 = {0};
	struct kd_server_config cfg;
	struct kd_keypair ka = {0}, kb = {0};
	char w1[64], w2[64];
	(void)state;

	kd_server_config_defaults(&cfg);
	cfg.has_mesh_key = true;
	memcpy(cfg.mesh_key, kMeshKey, 32);
	cfg.certmode = "dev";
	cfg.hostname = "127.0.0.1";
	cfg.http_port = -1;
	assert_int_equal(ts_start(&n1.ts, &cfg, NULL), 0);
	assert_int_equal(ts_start(&n2.ts, &cfg, NULL), 0);
	snprintf(w1, sizeof(w1), "127.0.0.1:%d", n2.ts.port);
	snprintf(w2, sizeof(w2), "127.0.0.1:%d", n1.ts.port);
	struct kd_mesh_opts o1 = {.mesh_with = w1, .mesh_key = kMeshKey, .insecure = true};
	struct kd_mesh_opts o2 = {.mesh_with = w2, .mesh_key = kMeshKey};
	assert_int_equal(kd_mesh_start(&n1.mesh, n1.ts.srv, &o1), 0);
	assert_int_equal(kd_mesh_start(&n2.mesh, n2.ts.srv, &o2), 0);
	/* node 2 verifies against the system roots: its link never comes up */
	assert_true(wait_metric(&n2, "derp_watchers", 1, 5000));
	assert_int_equal(ts_metric(&n1.ts, "derp_watchers"), 0);
	assert_int_equal(kd_mesh_peers_up(n2.mesh), 0);
	assert_int_equal(kd_mesh_peers_up(n1.mesh), 1);
	/* one working direction is enough for A on node 1 to reach B on node 2 */
	struct kd_client_opts co = {0};
	char url[64];
	struct kd_client *a = NULL, *b = NULL;
	kd_keypair_generate(&ka);
	kd_keypair_generate(&kb);
	co.insecure = true;
	co.timeout_ms = 5000;
	co.url = url;
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/derp", n1.ts.port);
	co.key = ka;
	assert_int_equal(kd_client_connect(&a, &co), 0);
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/derp", n2.ts.port);
	co.key = kb;
	assert_int_equal(kd_client_connect(&b, &co), 0);
	assert_true(wait_metric(&n1, "derp_clients_remote", 1, 5000));
	send_and_check(a, &ka, b, &kb, 700);
	kd_client_close(a);
	kd_client_close(b);
	node_stop(&n1);
	node_stop(&n2);
}

/* A TCP relay in front of a node that can stop reading from the mesh
 * client: a peer whose socket stays full. One connection at a time. */
struct stall_proxy {
	int lfd, port, target;
	volatile int frozen, stop;
	pthread_t th;
};

static void *proxy_main(void *arg)
{
	struct stall_proxy *px = arg;
	static char buf[65536];

	while (!px->stop) {
		struct pollfd lp = {.fd = px->lfd, .events = POLLIN};
		if (poll(&lp, 1, 50) <= 0)
			continue;
		int c = accept(px->lfd, NULL, NULL);
		if (c < 0)
			continue;
		int small = 4096;
		setsockopt(c, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
		int u = ts_connect(px->target);
		if (u < 0) {
			close(c);
			continue;
		}
		while (!px->stop) {
			struct pollfd p[2] = {{.fd = c, .events = px->frozen ? 0 : POLLIN}, {.fd = u, .events = POLLIN}};
			if (poll(p, 2, 50) <= 0)
				continue;
			if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
				ssize_t n = read(c, buf, sizeof(buf));
				if (n <= 0 || ts_write_all(u, buf, (size_t)n) != 0)
					break;
			}
			if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
				ssize_t n = read(u, buf, sizeof(buf));
				if (n <= 0 || ts_write_all(c, buf, (size_t)n) != 0)
					break;
			}
		}
		close(c);
		close(u);
	}
	return NULL;
}

static void proxy_start(struct stall_proxy *px, int target)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);

	memset(px, 0, sizeof(*px));
	px->target = target;
	px->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int small = 4096;
	/* inherited by accepted sockets: keeps the kernel from buffering megabytes */
	setsockopt(px->lfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	assert_int_equal(bind(px->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(px->lfd, 4), 0);
	getsockname(px->lfd, (struct sockaddr *)&a, &al);
	px->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&px->th, NULL, proxy_main, px), 0);
}

static void proxy_stop(struct stall_proxy *px)
{
	px->stop = 1;
	pthread_join(px->th, NULL);
	close(px->lfd);
}

/* A peer that stops reading: forwarding fills the bounded queue and drops
 * (queue_full) while the server keeps serving, then the link is closed
 * after 5 s without write progress (write_timeout) and the remote keys
 * are forgotten. */
static void test_stalled_peer_bounded_and_closed(void **state)
{
	struct node n1 = {0}, n2 = {0};
	struct stall_proxy px;
	struct kd_keypair ka = {0}, kb = {0};
	struct kd_client_msg m;
	char w[64];
	static uint8_t big[DERP_MAX_PACKET];
	(void)state;

	node_start(&n1, 0, kMeshKey);
	node_start(&n2, 0, kMeshKey);
	proxy_start(&px, n2.ts.port);
	mesh_with_port(w, sizeof(w), px.port);
	node_mesh(&n1, w, kMeshKey, NULL);
	mesh_with_port(w, sizeof(w), n1.ts.port);
	node_mesh(&n2, w, kMeshKey, NULL);
	struct kd_client *a = tc_login(&n1.ts, &ka, NULL);
	struct kd_client *b = tc_login(&n2.ts, &kb, NULL);
	assert_true(wait_metric(&n1, "derp_clients_remote", 1, 5000));
	assert_true(wait_metric(&n2, "derp_clients_remote", 1, 5000));
	send_and_check(a, &ka, b, &kb, 100);
	/* A receives from B, so A is told when B leaves the region */
	send_and_check(b, &kb, a, &ka, 100);
	px.frozen = 1;
	memset(big, 0x5a, sizeof(big));
	uint64_t t0 = kd_now_ms();
	long long full = 0;
	for (int i = 0; i < 2000 && full == 0; i++) {
		int err = kd_client_send_packet(a, kb.pub, big, sizeof(big));
		if (err == -ENOBUFS) {
			err = kd_client_flush_wait(a, 3000);
			if (err)
				printf("# i=%d after %llu ms: %s; drops %lld %lld\n", i, (unsigned long long)(kd_now_ms() - t0), strerror(-err),
				       mesh_metric(n1.mesh, "kderp_mesh_forward_drops_total{reason=\"queue_full\"}"),
				       mesh_metric(n1.mesh, "kderp_mesh_forwarded_packets_total"));
			assert_int_equal(err, 0);
		}
		else
			assert_int_equal(err, 0);
		if (i % 16 == 0)
			full = mesh_metric(n1.mesh, "kderp_mesh_forward_drops_total{reason=\"queue_full\"}");
	}
	assert_int_equal(kd_client_flush_wait(a, 3000), 0);
	for (int i = 0; i < 100 && !full; i++) {
		usleep(20000);
		full = mesh_metric(n1.mesh, "kderp_mesh_forward_drops_total{reason=\"queue_full\"}");
	}
	assert_true(full > 0);
	/* the workers never waited on the mesh: node 1 answers at once */
	uint64_t t1 = kd_now_ms();
	assert_true(tc_alive(a));
	assert_true(kd_now_ms() - t1 < 500);
	/* 5 s without progress closes the link; A hears that B left the region */
	assert_int_equal(tc_recv_type(a, DERP_FRAME_PEER_GONE, &m, 8000), 0);
	assert_memory_equal(m.key, kb.pub, 32);
	uint64_t closed = kd_now_ms() - t0;
	printf("# stalled link closed after %llu ms\n", (unsigned long long)closed);
	assert_true(closed >= KD_MESH_WRITE_STALL_MS - 500);
	assert_true(mesh_metric(n1.mesh, "kderp_mesh_forward_drops_total{reason=\"write_timeout\"}") > 0);
	assert_int_equal(kd_mesh_peers_up(n1.mesh), 0);
	assert_true(wait_metric(&n1, "derp_clients_remote", 0, 1000));
	kd_client_close(a);
	kd_client_close(b);
	node_stop(&n1);
	proxy_stop(&px);
	node_stop(&n2);
}

static void test_bad_lists_refused(void **state)
{
	struct node n1;
	struct kd_mesh *m = (struct kd_mesh *)&m;
	(void)state;

	node_start(&n1, 0, kMeshKey);
	struct kd_mesh_opts o = {.mesh_with = "ok.example,bad host", .mesh_key = kMeshKey};
	assert_int_equal(kd_mesh_start(&m, n1.ts.srv, &o), -EINVAL);
	assert_null(m);
	o.mesh_with = "ok.example";
	o.mesh_key = NULL;
	assert_int_equal(kd_mesh_start(&m, n1.ts.srv, &o), -EINVAL);
	kd_mesh_stop(NULL);
	node_stop(&n1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_packets_both_ways_and_peer_gone),
		cmocka_unit_test(test_node_dies_and_returns),
		cmocka_unit_test(test_wrong_mesh_key_gets_no_watch),
		cmocka_unit_test(test_self_is_ignored),
		cmocka_unit_test(test_tls_peers),
		cmocka_unit_test(test_stalled_peer_bounded_and_closed),
		cmocka_unit_test(test_bad_lists_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
