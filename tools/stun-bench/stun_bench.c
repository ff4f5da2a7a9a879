// SPDX-License-Identifier: MIT
/* stun-bench: how many binding requests per second get answered.
 *
 *   stun-bench serve [--port P] [--xdp IFNAME [--mode auto|native|generic]] [--seconds S]
 *       the userspace server (and optionally the XDP responder); prints its
 *       counters when it stops (SIGINT/SIGTERM or after S seconds)
 *   stun-bench blast HOST:PORT [--seconds S] [--count N] [--batch B] [--window W] [--json]
 *       sends requests with sendmmsg keeping at most W unanswered, counts
 *       valid replies; bounded by S seconds and N requests
 *
 * Not a test: scripts/stun-bench.sh runs both ends in throwaway namespaces. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "stun.h"
#include "stun_server.h"
#include "stun_xdp.h"

#define MAX_BATCH 256

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	stop = 1;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int serve(int argc, char **argv)
{
	static const struct option opts[] = {
		{"port", required_argument, NULL, 'p'},
		{"xdp", required_argument, NULL, 'x'},
		{"mode", required_argument, NULL, 'm'},
		{"seconds", required_argument, NULL, 's'},
		{0},
	};
	int port = STUN_DEFAULT_PORT, c;
	const char *ifname = NULL;
	enum kd_xdp_mode mode = KD_XDP_MODE_AUTO;
	double seconds = 60;
	struct kd_stun_xdp *x = NULL;
	char buf[8192];

	while ((c = getopt_long(argc, argv, "p:x:m:s:", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			port = atoi(optarg);
			break;
		case 'x':
			ifname = optarg;
			break;
		case 'm':
			if (kd_xdp_mode_parse(optarg, &mode)) {
				fprintf(stderr, "bad --mode %s\n", optarg);
				return 2;
			}
			break;
		case 's':
			seconds = atof(optarg);
			break;
		default:
			return 2;
		}
	}
	struct kd_stun_server *s = kd_stun_server_open("", port);

	if (!s)
		return 1;
	if (ifname && kd_stun_xdp_attach(ifname, port, mode, &x)) {
		kd_stun_server_close(s);
		return 1;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	printf("ready\n");
	fflush(stdout);
	double end = now_s() + seconds;

	while (!stop && now_s() < end) {
		struct pollfd p = {.fd = kd_stun_server_fd(s), .events = POLLIN};

		if (poll(&p, 1, 100) > 0)
			kd_stun_server_on_readable(s);
	}
	if (kd_stun_server_metrics(s, buf, sizeof(buf)) > 0)
		fputs(buf, stdout);
	if (x && kd_stun_xdp_metrics(x, buf, sizeof(buf)) > 0)
		fputs(buf, stdout);
	kd_stun_xdp_detach(x);
	kd_stun_server_close(s);
	return 0;
}

static int blast(int argc, char **argv)
{
	static const struct option opts[] = {
		{"seconds", required_argument, NULL, 's'},
		{"count", required_argument, NULL, 'n'},
		{"batch", required_argument, NULL, 'b'},
		{"window", required_argument, NULL, 'w'},
		{"json", no_argument, NULL, 'j'},
		{0},
	};
	double seconds = 5;
	long long count = 10000000;
	int batch = 32, window = 512, c;
	bool json = false;

	while ((c = getopt_long(argc, argv, "s:n:b:w:j", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			seconds = atof(optarg);
			break;
		case 'n':
			count = atoll(optarg);
			break;
		case 'b':
			batch = atoi(optarg);
			break;
		case 'w':
			window = atoi(optarg);
			break;
		case 'j':
			json = true;
			break;
		default:
			return 2;
		}
	}
	if (optind != argc - 1 || batch < 1 || batch > MAX_BATCH || window < batch || seconds <= 0 ||
	    seconds > 600 || count < 1) {
		fprintf(stderr, "usage: stun-bench blast HOST:PORT [--seconds S<=600] [--count N] "
				"[--batch 1..%d] [--window W>=batch] [--json]\n", MAX_BATCH);
		return 2;
	}
	char host[256], *colon = strrchr(argv[optind], ':');

	if (!colon) {
		fprintf(stderr, "blast: HOST:PORT\n");
		return 2;
	}
	snprintf(host, sizeof(host), "%.*s", (int)(colon - argv[optind]), argv[optind]);
	if (host[0] == '[') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = 0;
	}
	struct addrinfo hints = {.ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICHOST}, *res;

	if (getaddrinfo(host, colon + 1, &hints, &res)) {
		fprintf(stderr, "blast: bad address %s\n", argv[optind]);
		return 2;
	}
	int fd = socket(res->ai_family, SOCK_DGRAM | SOCK_NONBLOCK, 0), big = 4 << 20;

	if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
		perror("blast: socket");
		return 1;
	}
	freeaddrinfo(res);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));

	static uint8_t req[MAX_BATCH][STUN_REQUEST_LEN], resp[MAX_BATCH][128];
	struct mmsghdr tx[MAX_BATCH], rx[MAX_BATCH];
	struct iovec tiov[MAX_BATCH], riov[MAX_BATCH];
	uint8_t txid[STUN_TXID_LEN] = {0x6b, 0x64};
	long long sent = 0, got = 0, bad = 0, lost = 0, lost_windows = 0;
	double t0 = now_s(), end = t0 + seconds, last_rx = t0;

	/* One transaction ID prefix per run, a counter in the rest: replies
	 * are checked against the prefix only (the window reorders freely). */
	for (int i = 0; i < MAX_BATCH; i++) {
		tiov[i] = (struct iovec){req[i], STUN_REQUEST_LEN};
		riov[i] = (struct iovec){resp[i], sizeof(resp[i])};
		tx[i] = (struct mmsghdr){.msg_hdr = {.msg_iov = &tiov[i], .msg_iovlen = 1}};
		rx[i] = (struct mmsghdr){.msg_hdr = {.msg_iov = &riov[i], .msg_iovlen = 1}};
	}
	while (now_s() < end && (sent < count || got + bad + lost < sent)) {
		long long inflight = sent - got - bad - lost;
		int n = 0;

		while (n < batch && sent + n < count && inflight + n < window) {
			memcpy(txid + 4, &(long long){sent + n}, 8);
			kd_stun_build_request(req[n], STUN_REQUEST_LEN, txid);
			n++;
		}
		if (n) {
			int r = sendmmsg(fd, tx, (unsigned)n, 0);

			if (r > 0)
				sent += r;
		}
		struct pollfd p = {.fd = fd, .events = POLLIN};

		if (inflight + n >= window || sent >= count)
			poll(&p, 1, 10);
		int r = recvmmsg(fd, rx, MAX_BATCH, MSG_DONTWAIT, NULL);

		if (r > 0) {
			last_rx = now_s();
			for (int i = 0; i < r; i++) {
				struct sockaddr_storage m;
				uint8_t id[STUN_TXID_LEN];

				memcpy(id, resp[i] + 8, STUN_TXID_LEN);
				if (rx[i].msg_len >= STUN_HDR_LEN && !memcmp(id, txid, 4) &&
				    kd_stun_parse_response(resp[i], rx[i].msg_len, id, &m) == 0)
					got++;
				else
					bad++;
			}
		} else if (now_s() - last_rx > 0.05 && sent - got - bad - lost > 0 &&
			   (sent - got - bad - lost >= window || sent >= count)) {
			/* stalled 50 ms: count what is out as lost, go on */
			lost_windows++;
			lost = sent - got - bad;
			last_rx = now_s();
		}
	}
	double dt = now_s() - t0;

	if (json)
		printf("{\"sent\":%lld,\"answered\":%lld,\"bad\":%lld,\"lost\":%lld,\"stalls\":%lld,"
		       "\"seconds\":%.3f,\"answered_per_sec\":%.0f}\n",
		       sent, got, bad, lost, lost_windows, dt, (double)got / dt);
	else
		printf("sent %lld answered %lld bad %lld lost %lld (stalls %lld) in %.2fs: %.0f answered/s\n",
		       sent, got, bad, lost, lost_windows, dt, (double)got / dt);
	close(fd);
	return got ? 0 : 1;
}

int main(int argc, char **argv)
{
	kd_log_set_prefix("stun-bench");
	if (argc >= 2 && !strcmp(argv[1], "serve"))
		return serve(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "blast"))
		return blast(argc - 1, argv + 1);
	fprintf(stderr, "usage: stun-bench serve|blast ... (see the comment at the top of the source)\n");
	return 2;
}
