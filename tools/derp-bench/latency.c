// SPDX-License-Identifier: MIT
/* Latency probe: one packet at a time from a pinger to an echo client and
 * back through the relay (or straight across in --raw-tcp mode); round-trip
 * percentiles. Runs on its own thread next to the load workers. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "log.h"

#define PING_TIMEOUT_NS 1000000000ll

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static double pct(const int64_t *v, size_t n, double q)
{
	size_t i;

	if (!n)
		return 0;
	i = (size_t)(q * (double)(n - 1) + 0.5);
	return (double)v[i < n ? i : n - 1] / 1000.0;
}

static bool is_packet(const struct kd_client_msg *m)
{
	return (m->type == DERP_FRAME_RECV_PACKET || m->type == DERP_FRAME_SEND_PACKET) && m->len >= 32 + 16;
}

void *bench_latency_thread(void *arg)
{
	struct bench_latency_ctx *x = arg;
	const struct bench_cfg *cfg = x->cfg;
	size_t size = cfg->size < 16 ? 16 : (size_t)cfg->size, cap = 4096, n = 0;
	int64_t *rtt = malloc(cap * sizeof(*rtt));
	uint8_t *buf = calloc(1, size);
	const uint8_t *echo_pub = kd_client_public_key(x->echo);
	uint8_t pinger_pub[32];
	uint64_t seq = 0;
	int64_t sent_at = 0, next_at = 0;
	bool outstanding = false;

	memcpy(pinger_pub, kd_client_public_key(x->pinger), 32);
	if (!rtt || !buf) {
		x->err = -ENOMEM;
		goto out;
	}
	while (!atomic_load(x->stop)) {
		struct pollfd pfd[2] = {
			{.fd = kd_client_fd(x->pinger), .events = POLLIN},
			{.fd = kd_client_fd(x->echo), .events = POLLIN},
		};
		struct kd_client_msg m;
		int64_t t = now_ns();
		int err;

		if (!outstanding && t >= next_at) {
			seq++;
			memset(buf, 0, size);
			for (int i = 0; i < 8; i++)
				buf[i] = (uint8_t)(seq >> (56 - 8 * i));
			memcpy(buf + 8, &t, 8);
			err = kd_client_send_packet(x->pinger, echo_pub, buf, size);
			if (err) {
				x->err = err;
				break;
			}
			sent_at = t;
			outstanding = true;
		} else if (outstanding && t - sent_at > PING_TIMEOUT_NS) {
			x->result.lost++;
			outstanding = false;
		}
		pfd[0].events |= kd_client_want_write(x->pinger) ? POLLOUT : 0;
		pfd[1].events |= kd_client_want_write(x->echo) ? POLLOUT : 0;
		poll(pfd, 2, outstanding ? 10 : (int)((next_at - t) / 1000000 + 1));

		while ((err = kd_client_poll(x->echo, &m)) == 0) {
			if (!is_packet(&m))
				continue;
			/* the payload is reused as is: the pinger's seq and timestamp */
			err = kd_client_send_packet(x->echo, pinger_pub, m.payload + 32, m.len - 32);
			if (err)
				break;
		}
		if (err != -EAGAIN) {
			x->err = err;
			break;
		}
		if (kd_client_want_write(x->pinger))
			kd_client_flush(x->pinger);
		while ((err = kd_client_poll(x->pinger, &m)) == 0) {
			uint64_t s = 0;
			int64_t t0;

			if (!is_packet(&m))
				continue;
			for (int i = 0; i < 8; i++)
				s = s << 8 | m.payload[32 + i];
			if (!outstanding || s != seq)
				continue; /* a late echo of a ping already counted lost */
			memcpy(&t0, m.payload + 32 + 8, 8);
			if (n == cap) {
				int64_t *r = realloc(rtt, 2 * cap * sizeof(*rtt));

				if (!r)
					break;
				rtt = r;
				cap *= 2;
			}
			t = now_ns();
			rtt[n++] = t - t0;
			outstanding = false;
			next_at = t + (int64_t)cfg->latency_interval_us * 1000;
		}
		if (err != -EAGAIN && err != 0) {
			x->err = err;
			break;
		}
	}
	qsort(rtt, n, sizeof(*rtt), cmp_i64);
	x->result.samples = n;
	x->result.min_us = n ? (double)rtt[0] / 1000.0 : 0;
	x->result.max_us = n ? (double)rtt[n - 1] / 1000.0 : 0;
	x->result.p50_us = pct(rtt, n, 0.50);
	x->result.p90_us = pct(rtt, n, 0.90);
	x->result.p99_us = pct(rtt, n, 0.99);
	x->result.p999_us = pct(rtt, n, 0.999);
out:
	free(rtt);
	free(buf);
	return NULL;
}
