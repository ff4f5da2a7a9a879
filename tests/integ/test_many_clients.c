// SPDX-License-Identifier: MIT
/* Many clients spread over the workers: every packet is delivered once, in
 * order per sender, or counted as dropped, while other clients join and
 * leave; per-pair order survives cross-worker hand-off. Correctness only:
 * the numbers belong to make bench. */
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

enum { NC = 24, PER_DST = 300, DSTS = 3, SIZE = 200 };

struct peer {
	struct kd_keypair k;
	struct kd_client *c;
	int next_seq[NC]; /* per sender: next expected sequence number */
	int got, bad;
};

static struct peer P[NC];

static int index_of(const uint8_t *key)
{
	for (int i = 0; i < NC; i++)
		if (!memcmp(P[i].k.pub, key, 32))
			return i;
	return -1;
}

static void *churn_main(void *arg)
{
	struct ts_server *ts = arg;
	for (int i = 0; i < 40; i++) {
		struct kd_keypair k = {0};
		struct kd_client *c = tc_login(ts, &k, NULL);
		if (c) {
			kd_client_send_packet(c, P[i % NC].k.pub, "churn", 5);
			kd_client_flush_wait(c, 1000);
			kd_client_close(c);
		}
	}
	return NULL;
}

static void drain(struct peer *p, int timeout_ms)
{
	struct kd_client_msg m;
	while (kd_client_recv(p->c, &m, timeout_ms) == 0) {
		if (m.type != DERP_FRAME_RECV_PACKET)
			continue;
		int src = index_of(m.key);
		if (src < 0)
			continue; /* a churn client */
		int seq;
		if (m.data_len != SIZE) {
			p->bad++;
			continue;
		}
		memcpy(&seq, m.data, sizeof(seq));
		/* order per sender: a gap is a counted drop, going back is a bug */
		if (seq < p->next_seq[src])
			p->bad++;
		p->next_seq[src] = seq + 1;
		p->got++;
		timeout_ms = 300;
	}
}

static void test_many_clients_across_workers(void **state)
{
	struct ts_server ts;
	struct kd_server_config cfg;
	uint8_t pkt[SIZE];
	pthread_t churn;
	(void)state;

	kd_server_config_defaults(&cfg);
	cfg.workers = 2;
	assert_int_equal(ts_start(&ts, &cfg, NULL), 0);
	memset(P, 0, sizeof(P));
	for (int i = 0; i < NC; i++) {
		P[i].c = tc_login(&ts, &P[i].k, NULL);
		assert_non_null(P[i].c);
	}
	pthread_create(&churn, NULL, churn_main, &ts);
	/* each client sends PER_DST numbered packets to DSTS others, interleaved */
	for (int seq = 0; seq < PER_DST; seq++) {
		for (int i = 0; i < NC; i++) {
			for (int d = 1; d <= DSTS; d++) {
				memset(pkt, (uint8_t)i, sizeof(pkt));
				memcpy(pkt, &seq, sizeof(seq));
				int err;
				while ((err = kd_client_send_packet(P[i].c, P[(i + d * 5) % NC].k.pub, pkt, sizeof(pkt))) ==
				       -ENOBUFS)
					assert_int_equal(kd_client_flush_wait(P[i].c, 3000), 0);
				assert_int_equal(err, 0);
			}
		}
		if (seq % 50 == 49)
			for (int i = 0; i < NC; i++)
				drain(&P[i], 0);
	}
	for (int i = 0; i < NC; i++)
		assert_int_equal(kd_client_flush_wait(P[i].c, 5000), 0);
	pthread_join(churn, NULL);
	for (int i = 0; i < NC; i++)
		drain(&P[i], 2000);

	long long sent = (long long)NC * DSTS * PER_DST, got = 0;
	for (int i = 0; i < NC; i++) {
		assert_int_equal(P[i].bad, 0);
		got += P[i].got;
	}
	long long dropped = 0;
	static const char *const reasons[] = {"queue_head", "queue_tail", "write_error", "gone_disconnected"};
	for (size_t r = 0; r < 4; r++) {
		char name[128];
		snprintf(name, sizeof(name), "derp_packets_dropped{reason=\"%s\",kind=\"other\"}", reasons[r]);
		dropped += ts_metric(&ts, name);
	}
	printf("# %lld sent, %lld delivered in order, %lld dropped and counted\n", sent, got, dropped);
	/* churn clients' packets are in the counters too: at most 40 more */
	assert_true(got + dropped >= sent);
	assert_true(got + dropped <= sent + 40);
	assert_true(got > sent / 2);
	for (int i = 0; i < NC; i++)
		kd_client_close(P[i].c);
	ts_stop(&ts);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_many_clients_across_workers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
