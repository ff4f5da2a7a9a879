// SPDX-License-Identifier: MIT
/* Connection setup for derp-bench: real DERP logins (many handshakes in
 * flight at once), or plain loopback TCP pairs for the raw baseline. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "bench.h"
#include "log.h"

#define MAX_IN_FLIGHT 256

static void opts_for(struct kd_client_opts *o, const struct bench_cfg *cfg, const struct kd_keypair *kp)
{
	memset(o, 0, sizeof(*o));
	o->url = cfg->url;
	o->dial_addr = cfg->dial_addr;
	o->ca_file = cfg->ca_file;
	o->insecure = cfg->insecure;
	o->key = *kp;
	o->can_ack_pings = true;
	o->app_name = "derp-bench";
	o->timeout_ms = 10000;
}

/* Logs in n clients, up to MAX_IN_FLIGHT handshakes at a time. */
static int connect_many(struct kd_client **out, const struct kd_keypair **keys, int n,
			const struct bench_cfg *cfg)
{
	struct pollfd pfd[MAX_IN_FLIGHT];
	int idx[MAX_IN_FLIGHT];
	int next = 0, done = 0, err = 0;

	for (int i = 0; i < n; i++)
		out[i] = NULL;
	while (done < n && !err) {
		int k = 0;

		for (int i = 0; i < next && k < MAX_IN_FLIGHT; i++) {
			if (out[i] && !kd_client_established(out[i])) {
				idx[k] = i;
				pfd[k].fd = kd_client_fd(out[i]);
				pfd[k].events = POLLIN | (kd_client_want_write(out[i]) ? POLLOUT : 0);
				k++;
			}
		}
		while (k < MAX_IN_FLIGHT && next < n) {
			struct kd_client_opts o;

			opts_for(&o, cfg, keys[next]);
			err = kd_client_start(&out[next], &o);
			if (err)
				goto fail;
			idx[k] = next;
			pfd[k].fd = kd_client_fd(out[next]);
			pfd[k].events = POLLIN | POLLOUT;
			k++;
			next++;
		}
		poll(pfd, (nfds_t)k, 50);
		for (int j = 0; j < k; j++) {
			int r = kd_client_step(out[idx[j]]);

			if (r == 1) {
				done++;
			} else if (r < 0) {
				err = r;
				goto fail;
			}
		}
	}
	return 0;
fail:
	pr_err("bench: login to %s failed: %s", cfg->url, strerror(-err));
	for (int i = 0; i < n; i++) {
		kd_client_close(out[i]);
		out[i] = NULL;
	}
	return err;
}

/* A connected loopback TCP pair through a throwaway listener; with
 * forward_port, a's connection goes through the forwarder (forward.c). */
static int tcp_pair(int *a, int *b, uint16_t forward_port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	int l, one = 1, err = 0;

	*a = *b = -1;
	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0)
		return -errno;
	if (bind(l, (struct sockaddr *)&sa, sizeof(sa)) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&sa, &sl)) {
		err = -errno;
		goto out;
	}
	*a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (forward_port) {
		struct sockaddr_in via = sa;
		struct timeval tv = {.tv_sec = 5};

		/* the forwarder dials the listener: a dead one must not hang accept */
		setsockopt(l, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		uint8_t pp[2] = {(uint8_t)(ntohs(sa.sin_port) >> 8), (uint8_t)ntohs(sa.sin_port)};

		via.sin_port = htons(forward_port);
		if (*a < 0 || connect(*a, (struct sockaddr *)&via, sizeof(via)) || write(*a, pp, 2) != 2) {
			err = *a < 0 || errno ? -errno : -EIO;
			goto out;
		}
	} else if (*a < 0 || connect(*a, (struct sockaddr *)&sa, sizeof(sa))) {
		err = -errno;
		goto out;
	}
	*b = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	if (*b < 0) {
		err = -errno;
		goto out;
	}
	setsockopt(*a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(*b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
out:
	close(l);
	if (err) {
		if (*a >= 0)
			close(*a);
		*a = *b = -1;
	}
	return err;
}

static int raw_clients(struct kd_client **tx, const struct kd_keypair *tx_key, struct kd_client **rx,
		       const struct kd_keypair *rx_key, uint16_t forward_port)
{
	int a, b, err = tcp_pair(&a, &b, forward_port);

	if (err)
		return err;
	err = kd_client_attach_fd(tx, a, tx_key);
	if (err) {
		close(a);
		close(b);
		return err;
	}
	err = kd_client_attach_fd(rx, b, rx_key);
	if (err) {
		kd_client_close(*tx);
		*tx = NULL;
		close(b);
	}
	return err;
}

int bench_connect_pairs(struct bench_run *run)
{
	const struct bench_cfg *cfg = run->cfg;
	int n = run->npairs, err = 0;
	struct kd_client **cl = NULL;
	const struct kd_keypair **keys = NULL;

	for (int i = 0; i < n; i++) {
		struct bench_pair *p = &run->pairs[i];

		p->id = (uint32_t)i;
		p->worker = i % cfg->threads;
		if (kd_keypair_generate(&p->tx_key) || kd_keypair_generate(&p->rx_key))
			return -EIO;
	}
	if (cfg->raw_tcp) {
		for (int i = 0; i < n && !err; i++)
			err = raw_clients(&run->pairs[i].tx, &run->pairs[i].tx_key, &run->pairs[i].rx,
					  &run->pairs[i].rx_key, cfg->forward_port);
		return err;
	}
	if (n <= 0)
		return 0;
	cl = calloc((size_t)n, sizeof(*cl));
	keys = calloc((size_t)n, sizeof(*keys));
	if (!cl || !keys) {
		err = -ENOMEM;
		goto out;
	}
	/* receivers first: a packet to a key not yet logged in is dropped */
	for (int i = 0; i < n; i++)
		keys[i] = &run->pairs[i].rx_key;
	err = connect_many(cl, keys, n, cfg);
	if (err)
		goto out;
	for (int i = 0; i < n; i++) {
		run->pairs[i].rx = cl[i];
		keys[i] = &run->pairs[i].tx_key;
	}
	err = connect_many(cl, keys, n, cfg);
	if (err)
		goto out;
	for (int i = 0; i < n; i++)
		run->pairs[i].tx = cl[i];
out:
	free(cl);
	free(keys);
	return err;
}

int bench_connect_latency(const struct bench_cfg *cfg, struct kd_client **pinger, struct kd_client **echo)
{
	struct kd_keypair kp[2];
	const struct kd_keypair *keys[2] = {&kp[0], &kp[1]};
	struct kd_client *cl[2];
	int err;

	if (kd_keypair_generate(&kp[0]) || kd_keypair_generate(&kp[1]))
		return -EIO;
	if (cfg->raw_tcp)
		return raw_clients(pinger, &kp[0], echo, &kp[1], cfg->forward_port);
	err = connect_many(cl, keys, 2, cfg);
	if (err)
		return err;
	*pinger = cl[0];
	*echo = cl[1];
	return 0;
}

void bench_close_pairs(struct bench_run *run)
{
	for (int i = 0; i < run->npairs; i++) {
		kd_client_close(run->pairs[i].tx);
		kd_client_close(run->pairs[i].rx);
		run->pairs[i].tx = run->pairs[i].rx = NULL;
	}
}
