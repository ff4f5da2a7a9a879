// SPDX-License-Identifier: MIT
/* The data plane of derp-bench: one epoll loop per thread driving its share
 * of the pairs' senders and receivers. Senders build frames straight into the
 * client's output buffer and write in `batch`-sized chunks; receivers parse
 * in place and verify every packet. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "bench.h"
#include "log.h"

struct wctx {
	struct bench_run *run;
	const struct bench_cfg *cfg;
	int ep;
	int idx;
	struct bench_pair **mine;
	int nmine;
	uint8_t *scratch;
	double pps_per_pair;
	int64_t last_ms;
};

static void account(struct bench_pair *p, const struct bench_cfg *cfg, const struct kd_client_msg *m)
{
	/* raw TCP carries the sender's own SendPacket bytes, addressed to us;
	 * through a relay they arrive as RecvPacket from the sender */
	uint8_t want_type = cfg->raw_tcp ? DERP_FRAME_SEND_PACKET : DERP_FRAME_RECV_PACKET;
	const uint8_t *want_key = cfg->raw_tcp ? p->rx_key.pub : p->tx_key.pub;
	uint64_t gap;

	if (m->type != want_type)
		return;
	if (m->len < 32) {
		atomic_fetch_add_explicit(&p->corrupt, 1, memory_order_relaxed);
		return;
	}
	switch (kd_bench_verify(&p->verify, p->id, (size_t)cfg->size, want_key, m->payload, m->payload + 32,
				m->len - 32, &gap)) {
	case KD_BENCH_CORRUPT:
		atomic_fetch_add_explicit(&p->corrupt, 1, memory_order_relaxed);
		return;
	case KD_BENCH_GAP:
		atomic_fetch_add_explicit(&p->lost, gap, memory_order_relaxed);
		break;
	case KD_BENCH_LATE:
		atomic_fetch_add_explicit(&p->out_of_order, 1, memory_order_relaxed);
		break;
	case KD_BENCH_IN_ORDER:
		break;
	}
	atomic_fetch_add_explicit(&p->received, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&p->bytes, m->len - 32, memory_order_relaxed);
}

static int drain_rx(struct wctx *w, struct bench_pair *p)
{
	struct kd_client_msg m;
	int err;

	while ((err = kd_client_poll(p->rx, &m)) == 0)
		account(p, w->cfg, &m);
	return err == -EAGAIN ? 0 : err;
}

static int drain_tx_input(struct bench_pair *p)
{
	struct kd_client_msg m;
	int err;

	/* keepalives and pings from the relay: read so they never pile up */
	while ((err = kd_client_poll(p->tx, &m)) == 0)
		;
	return err == -EAGAIN || err == -ENOTCONN ? 0 : err;
}

static void set_tx_blocked(struct wctx *w, struct bench_pair *p, bool blocked)
{
	struct epoll_event ev = {
		.events = EPOLLIN | (blocked ? EPOLLOUT : 0),
		.data.u64 = ((uint64_t)p->id << 1) | 1,
	};

	if (p->tx_blocked == blocked)
		return;
	p->tx_blocked = blocked;
	epoll_ctl(w->ep, EPOLL_CTL_MOD, kd_client_fd(p->tx), &ev);
}

/* Queue up to one batch (or the paced budget) of packets and write them. */
static int pump(struct wctx *w, struct bench_pair *p, double dt_s, bool generate)
{
	size_t frame = 5 + 32 + (size_t)w->cfg->size;
	size_t batch = (size_t)w->cfg->batch;
	uint64_t n;
	int err;

	if (p->tx_blocked)
		return 0;
	if (generate) {
		if (w->pps_per_pair > 0) {
			double cap = (double)(batch / frame + 1) * 4;

			p->tokens += w->pps_per_pair * dt_s;
			if (p->tokens > cap)
				p->tokens = cap;
			n = (uint64_t)p->tokens;
		} else {
			n = batch / frame + 1;
		}
		const uint8_t *dst = p->rx_key.pub;

		for (uint64_t i = 0; i < n && kd_client_out_pending(p->tx) < batch; i++) {
			kd_bench_fill(w->scratch, (size_t)w->cfg->size, p->next_seq, p->id);
			err = kd_client_send_packet(p->tx, dst, w->scratch, (size_t)w->cfg->size);
			if (err == -ENOBUFS)
				break;
			if (err)
				return err;
			p->next_seq++;
			if (w->pps_per_pair > 0)
				p->tokens -= 1;
			atomic_store_explicit(&p->sent, p->next_seq, memory_order_relaxed);
		}
	}
	err = kd_client_flush(p->tx);
	if (err == -EAGAIN) {
		set_tx_blocked(w, p, true);
		return 0;
	}
	return err;
}

void *bench_worker(void *arg)
{
	struct bench_worker_arg *a = arg;
	struct bench_run *run = a->run;
	struct wctx w = {.run = run, .cfg = run->cfg, .idx = a->index};
	struct epoll_event evs[256];
	int err = 0;

	w.ep = epoll_create1(EPOLL_CLOEXEC);
	w.mine = calloc((size_t)run->npairs, sizeof(*w.mine));
	w.scratch = calloc(1, (size_t)run->cfg->size + 16);
	if (w.ep < 0 || !w.mine || !w.scratch) {
		pr_err("bench: worker %d: out of resources", a->index);
		goto out;
	}
	if (run->cfg->rate_pps > 0)
		w.pps_per_pair = run->cfg->rate_pps / run->npairs;
	for (int i = 0; i < run->npairs; i++) {
		struct bench_pair *p = &run->pairs[i];
		struct epoll_event rx = {.events = EPOLLIN, .data.u64 = (uint64_t)p->id << 1};
		struct epoll_event tx = {.events = EPOLLIN, .data.u64 = ((uint64_t)p->id << 1) | 1};

		if (p->worker != a->index)
			continue;
		w.mine[w.nmine++] = p;
		kd_client_cork(p->tx, true);
		if (epoll_ctl(w.ep, EPOLL_CTL_ADD, kd_client_fd(p->rx), &rx) ||
		    epoll_ctl(w.ep, EPOLL_CTL_ADD, kd_client_fd(p->tx), &tx)) {
			pr_err("bench: epoll_ctl: %s", strerror(errno));
			goto out;
		}
	}
	w.last_ms = kd_client_clock_ms();

	while (!atomic_load(&run->stop_all)) {
		bool generate = !atomic_load(&run->stop_tx);
		int64_t now = kd_client_clock_ms();
		double dt = (double)(now - w.last_ms) / 1000.0;
		bool any_ready = false;
		int n, timeout;

		if (dt > 0 || w.pps_per_pair <= 0) {
			w.last_ms = now;
			for (int i = 0; i < w.nmine; i++) {
				struct bench_pair *p = w.mine[i];

				if (!p->tx)
					continue;
				err = pump(&w, p, dt, generate);
				if (err) {
					pr_err("bench: pair %u sender: %s", p->id, strerror(-err));
					kd_client_close(p->tx);
					p->tx = NULL;
					continue;
				}
				if (!p->tx_blocked && generate && w.pps_per_pair <= 0)
					any_ready = true;
			}
		}
		timeout = any_ready ? 0 : (generate && w.pps_per_pair > 0 ? 1 : 20);
		n = epoll_wait(w.ep, evs, (int)(sizeof(evs) / sizeof(evs[0])), timeout);
		for (int i = 0; i < n; i++) {
			struct bench_pair *p = &run->pairs[evs[i].data.u64 >> 1];
			bool is_tx = evs[i].data.u64 & 1;

			if (!is_tx) {
				if (!p->rx)
					continue;
				err = drain_rx(&w, p);
				if (err) {
					pr_err("bench: pair %u receiver: %s", p->id, strerror(-err));
					epoll_ctl(w.ep, EPOLL_CTL_DEL, kd_client_fd(p->rx), NULL);
					kd_client_close(p->rx);
					p->rx = NULL;
				}
				continue;
			}
			if (!p->tx)
				continue;
			err = 0;
			if (evs[i].events & EPOLLIN)
				err = drain_tx_input(p);
			if (!err && (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && p->tx_blocked) {
				err = kd_client_flush(p->tx);
				if (err == 0)
					set_tx_blocked(&w, p, false);
				else if (err == -EAGAIN)
					err = 0;
			}
			if (err) {
				pr_err("bench: pair %u sender: %s", p->id, strerror(-err));
				epoll_ctl(w.ep, EPOLL_CTL_DEL, kd_client_fd(p->tx), NULL);
				kd_client_close(p->tx);
				p->tx = NULL;
			}
		}
	}
out:
	if (w.ep >= 0)
		close(w.ep);
	free(w.mine);
	free(w.scratch);
	return NULL;
}
