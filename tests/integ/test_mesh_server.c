// SPDX-License-Identifier: MIT
/* The server side of the regional mesh (spec §6.9–6.12, §8.4–8.6) over real
 * sockets: a mesh-key client watches, forwards and closes peers; a fake
 * forwarder stands in for a mesh peer to check one-hop forwarding and
 * PeerGone when a key leaves the region. */
#include <arpa/inet.h>
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

#include "clients.h"
#include "derp_wire.h"

static const uint8_t kMeshKey[32] = {0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab,
				     0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab,
				     0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab};

static void start_mesh(struct ts_server *ts)
{
	struct kd_server_config cfg;

	kd_server_config_defaults(&cfg);
	cfg.has_mesh_key = true;
	memcpy(cfg.mesh_key, kMeshKey, 32);
	assert_int_equal(ts_start(ts, &cfg, NULL), 0);
}

static void test_watch_conns_flood_and_updates(void **state)
{
	struct ts_server ts;
	struct kd_keypair ka = {0}, kw = {0}, kb = {0};
	struct kd_client_msg m;
	(void)state;

	start_mesh(&ts);
	struct kd_client *a = tc_login(&ts, &ka, NULL);
	struct kd_client *w = tc_login(&ts, &kw, kMeshKey);
	assert_non_null(a);
	assert_non_null(w);
	assert_int_equal(kd_client_watch_conns(w), 0);
	/* the initial flood names A and the watcher itself, with flags */
	bool saw_a = false, saw_w = false;
	for (int i = 0; i < 2; i++) {
		assert_int_equal(tc_recv_type(w, DERP_FRAME_PEER_PRESENT, &m, 3000), 0);
		assert_int_equal(m.len, DERP_PEER_PRESENT_LEN);
		static const uint8_t v4mapped_lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
		assert_memory_equal(m.ip, v4mapped_lo, 16);
		assert_true(m.port != 0);
		if (!memcmp(m.key, ka.pub, 32)) {
			saw_a = true;
			assert_int_equal(m.flags, DERP_PEER_PRESENT_REGULAR);
		} else if (!memcmp(m.key, kw.pub, 32)) {
			saw_w = true;
			assert_int_equal(m.flags, DERP_PEER_PRESENT_MESH_PEER);
		}
	}
	assert_true(saw_a && saw_w);
	assert_true(ts_metric(&ts, "derp_watchers") == 1);
	/* a new client is announced, its departure too */
	struct kd_client *b = tc_login(&ts, &kb, NULL);
	assert_int_equal(tc_recv_type(w, DERP_FRAME_PEER_PRESENT, &m, 3000), 0);
	assert_memory_equal(m.key, kb.pub, 32);
	kd_client_close(b);
	assert_int_equal(tc_recv_type(w, DERP_FRAME_PEER_GONE, &m, 3000), 0);
	assert_memory_equal(m.key, kb.pub, 32);
	assert_int_equal(m.reason, DERP_PEER_GONE_DISCONNECTED);
	/* ClosePeer drops A wherever it is connected here */
	assert_int_equal(kd_client_close_peer(w, ka.pub), 0);
	int err;
	do
		err = kd_client_recv(a, &m, 3000);
	while (err == 0);
	assert_int_equal(err, -EPIPE);
	assert_int_equal(tc_recv_type(w, DERP_FRAME_PEER_GONE, &m, 3000), 0);
	assert_memory_equal(m.key, ka.pub, 32);
	kd_client_close(a);
	kd_client_close(w);
	ts_stop(&ts);
}

static void test_mesh_frames_refused_without_key(void **state)
{
	struct ts_server ts;
	struct kd_keypair ka = {0}, kx = {0};
	struct kd_client_msg m;
	uint8_t wrong[32];
	(void)state;

	start_mesh(&ts);
	memset(wrong, 0xcd, sizeof(wrong));
	/* a wrong mesh key logs in as a regular client, without privileges */
	struct kd_client *a = tc_login(&ts, &ka, wrong);
	assert_non_null(a);
	assert_int_equal(kd_client_watch_conns(a), 0);
	int err;
	do
		err = kd_client_recv(a, &m, 3000);
	while (err == 0);
	assert_int_equal(err, -EPIPE);
	kd_client_close(a);
	struct kd_client *x = tc_login(&ts, &kx, NULL);
	assert_int_equal(kd_client_close_peer(x, kx.pub), 0);
	do
		err = kd_client_recv(x, &m, 3000);
	while (err == 0);
	assert_int_equal(err, -EPIPE);
	kd_client_close(x);
	ts_stop(&ts);
}

/* --- a fake mesh peer --- */

struct fake_fwd {
	struct kd_forwarder f;
	pthread_mutex_t lock;
	int calls;
	uint8_t src[32], dst[32], data[64];
	size_t len;
};

static int fake_forward(struct kd_forwarder *f, const uint8_t src[32], const uint8_t dst[32], const uint8_t *data,
			size_t len)
{
	struct fake_fwd *ff = (struct fake_fwd *)f;
	pthread_mutex_lock(&ff->lock);
	ff->calls++;
	memcpy(ff->src, src, 32);
	memcpy(ff->dst, dst, 32);
	ff->len = len < sizeof(ff->data) ? len : sizeof(ff->data);
	memcpy(ff->data, data, ff->len);
	pthread_mutex_unlock(&ff->lock);
	return 0;
}

static int fake_calls(struct fake_fwd *ff)
{
	pthread_mutex_lock(&ff->lock);
	int n = ff->calls;
	pthread_mutex_unlock(&ff->lock);
	return n;
}

static void test_forwarding_one_hop_and_region_peer_gone(void **state)
{
	struct ts_server ts;
	struct kd_keypair ka = {0}, kw = {0};
	struct kd_client_msg m;
	struct fake_fwd p1 = {.f = {.forward = fake_forward, .name = "p1"}, .lock = PTHREAD_MUTEX_INITIALIZER};
	struct fake_fwd p2 = {.f = {.forward = fake_forward, .name = "p2"}, .lock = PTHREAD_MUTEX_INITIALIZER};
	uint8_t remote[32];
	(void)state;

	memset(remote, 0x5e, 32);
	start_mesh(&ts);
	struct kd_client *a = tc_login(&ts, &ka, NULL);
	struct kd_client *w = tc_login(&ts, &kw, kMeshKey);
	assert_int_equal(kd_server_add_forwarder(ts.srv, remote, &p1.f), 0);
	assert_int_equal(kd_server_add_forwarder(ts.srv, remote, &p2.f), 0);
	assert_int_equal(ts_metric(&ts, "derp_clients_remote"), 1);
	assert_int_equal(ts_metric(&ts, "derp_multiforwarder_created"), 1);
	/* A's packet to the remote key goes to the earliest forwarder */
	assert_int_equal(kd_client_send_packet(a, remote, "via mesh", 8), 0);
	for (int i = 0; i < 100 && fake_calls(&p1) < 1; i++)
		usleep(10000);
	assert_int_equal(fake_calls(&p1), 1);
	assert_int_equal(fake_calls(&p2), 0);
	assert_memory_equal(p1.src, ka.pub, 32);
	assert_memory_equal(p1.dst, remote, 32);
	assert_memory_equal(p1.data, "via mesh", 8);
	assert_int_equal(ts_metric(&ts, "derp_packets_forwarded_out"), 1);
	/* the mesh peer delivers a packet from the remote key to A */
	assert_int_equal(kd_client_forward_packet(w, remote, ka.pub, "from afar", 9), 0);
	assert_int_equal(tc_recv_type(a, DERP_FRAME_RECV_PACKET, &m, 3000), 0);
	assert_memory_equal(m.key, remote, 32);
	assert_memory_equal(m.data, "from afar", 9);
	/* a forwarded packet is never forwarded again */
	uint8_t other[32];
	memset(other, 0x6f, 32);
	assert_int_equal(kd_server_add_forwarder(ts.srv, other, &p2.f), 0);
	assert_int_equal(kd_client_forward_packet(w, ka.pub, other, "loop?", 5), 0);
	assert_true(tc_alive(w));
	assert_int_equal(fake_calls(&p2), 0);
	assert_int_equal(ts_metric(&ts, "derp_packets_dropped{reason=\"unknown_dest_on_fwd\",kind=\"other\"}"), 1);
	/* the remote key stays in the region while one forwarder remains */
	kd_server_remove_forwarder(ts.srv, remote, &p1.f);
	assert_int_equal(tc_recv_type(a, DERP_FRAME_PEER_GONE, &m, 300), -ETIMEDOUT);
	assert_int_equal(ts_metric(&ts, "derp_multiforwarder_deleted"), 1);
	/* removing a forwarder that is not registered is counted and ignored */
	kd_server_remove_forwarder(ts.srv, remote, &p1.f);
	assert_int_equal(ts_metric(&ts, "derp_packet_forwarder_delete_other_value"), 1);
	/* ... and leaves it with the last one: A, who got its packets, hears */
	kd_server_remove_forwarder(ts.srv, remote, &p2.f);
	assert_int_equal(tc_recv_type(a, DERP_FRAME_PEER_GONE, &m, 3000), 0);
	assert_memory_equal(m.key, remote, 32);
	assert_int_equal(m.reason, DERP_PEER_GONE_DISCONNECTED);
	kd_server_remove_forwarder(ts.srv, other, &p2.f);
	assert_int_equal(ts_metric(&ts, "derp_clients_remote"), 0);
	/* local connections win over the mesh */
	assert_int_equal(kd_server_add_forwarder(ts.srv, ka.pub, &p1.f), 0);
	assert_int_equal(kd_client_send_packet(w, ka.pub, "local", 5), 0);
	assert_int_equal(tc_recv_type(a, DERP_FRAME_RECV_PACKET, &m, 3000), 0);
	assert_memory_equal(m.data, "local", 5);
	assert_int_equal(fake_calls(&p1), 1);
	/* A leaves but is still known through the mesh: no PeerGone to W, who
	 * received from A */
	assert_int_equal(kd_client_send_packet(a, kw.pub, "to w", 4), 0);
	assert_int_equal(tc_recv_type(w, DERP_FRAME_RECV_PACKET, &m, 3000), 0);
	kd_client_close(a);
	assert_int_equal(tc_recv_type(w, DERP_FRAME_PEER_GONE, &m, 300), -ETIMEDOUT);
	kd_server_remove_forwarder(ts.srv, ka.pub, &p1.f);
	assert_int_equal(tc_recv_type(w, DERP_FRAME_PEER_GONE, &m, 3000), 0);
	assert_memory_equal(m.key, ka.pub, 32);
	kd_client_close(w);
	ts_stop(&ts);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_watch_conns_flood_and_updates),
		cmocka_unit_test(test_mesh_frames_refused_without_key),
		cmocka_unit_test(test_forwarding_one_hop_and_region_peer_gone),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
