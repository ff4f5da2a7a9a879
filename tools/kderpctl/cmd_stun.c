// SPDX-License-Identifier: MIT
/* `kderpctl stun HOST[:PORT]`: one Tailscale-style binding request, prints
 * the mapped address and the round trip. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cmd_stun.h"
#include "stun.h"

static void usage(void)
{
	fprintf(stderr,
		"usage: kderpctl stun [--json] [--timeout MS] [-4|-6] HOST[:PORT]\n"
		"  sends one STUN binding request as Tailscale clients do (port %d by default)\n"
		"  exit: 0 answered, 1 no answer, 2 usage, 3 bad response\n",
		STUN_DEFAULT_PORT);
}

/* "host", "host:port", "[v6]", "[v6]:port" or a bare IPv6 address. */
static int split_hostport(const char *arg, char *host, size_t hcap, char *port, size_t pcap)
{
	const char *colon;

	snprintf(port, pcap, "%d", STUN_DEFAULT_PORT);
	if (arg[0] == '[') {
		const char *end = strchr(arg, ']');

		if (!end || (size_t)(end - arg - 1) >= hcap)
			return -EINVAL;
		snprintf(host, hcap, "%.*s", (int)(end - arg - 1), arg + 1);
		if (end[1] == ':')
			snprintf(port, pcap, "%s", end + 2);
		else if (end[1])
			return -EINVAL;
	} else if ((colon = strchr(arg, ':')) && !strchr(colon + 1, ':')) {
		if ((size_t)(colon - arg) >= hcap)
			return -EINVAL;
		snprintf(host, hcap, "%.*s", (int)(colon - arg), arg);
		snprintf(port, pcap, "%s", colon + 1);
	} else {
		if (strlen(arg) >= hcap)
			return -EINVAL;
		snprintf(host, hcap, "%s", arg);
	}
	char *end;
	long p = strtol(port, &end, 10);

	if (!*host || *end || p <= 0 || p > 65535)
		return -EINVAL;
	return 0;
}

static void addr_str(const struct sockaddr *sa, char *out, size_t cap)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &s->sin_addr, ip, sizeof(ip));
		snprintf(out, cap, "%s:%u", ip, ntohs(s->sin_port));
	} else {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof(ip));
		snprintf(out, cap, "[%s]:%u", ip, ntohs(s->sin6_port));
	}
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int fail(bool json, const char *server, int code, const char *what)
{
	if (json)
		printf("{\"server\":\"%s\",\"error\":\"%s\"}\n", server, what);
	else
		fprintf(stderr, "kderpctl stun: %s: %s\n", server, what);
	return code;
}

int do_stun(int argc, char **argv)
{
	static const struct option opts[] = {
		{"json", no_argument, NULL, 'j'},
		{"timeout", required_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	bool json = false;
	int family = AF_UNSPEC, c;
	long timeout_ms = 3000;
	char host[256], port[16], server[300], mapped_s[80];

	optind = 1;
	while ((c = getopt_long(argc, argv, "46jt:h", opts, NULL)) != -1) {
		switch (c) {
		case '4':
			family = AF_INET;
			break;
		case '6':
			family = AF_INET6;
			break;
		case 'j':
			json = true;
			break;
		case 't': {
			char *end;

			timeout_ms = strtol(optarg, &end, 10);
			if (*end || timeout_ms <= 0 || timeout_ms > 600000) {
				fprintf(stderr, "kderpctl stun: bad --timeout \"%s\"\n", optarg);
				return KD_STUN_EXIT_USAGE;
			}
			break;
		}
		case 'h':
			usage();
			return KD_STUN_EXIT_OK;
		default:
			usage();
			return KD_STUN_EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		usage();
		return KD_STUN_EXIT_USAGE;
	}
	if (split_hostport(argv[optind], host, sizeof(host), port, sizeof(port))) {
		fprintf(stderr, "kderpctl stun: bad HOST[:PORT] \"%s\"\n", argv[optind]);
		return KD_STUN_EXIT_USAGE;
	}

	struct addrinfo hints = {.ai_family = family, .ai_socktype = SOCK_DGRAM}, *res = NULL;
	int rc = getaddrinfo(host, port, &hints, &res);

	if (rc) {
		fprintf(stderr, "kderpctl stun: resolving \"%s\": %s\n", host, gai_strerror(rc));
		return KD_STUN_EXIT_USAGE;
	}
	addr_str(res->ai_addr, server, sizeof(server));
	int fd = socket(res->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
		int err = errno;

		freeaddrinfo(res);
		if (fd >= 0)
			close(fd);
		return fail(json, server, KD_STUN_EXIT_TIMEOUT, strerror(err));
	}
	freeaddrinfo(res);

	uint8_t txid[STUN_TXID_LEN], req[STUN_REQUEST_LEN], resp[1500];
	struct sockaddr_storage mapped;

	if (getrandom(txid, sizeof(txid), 0) != (ssize_t)sizeof(txid)) {
		close(fd);
		return fail(json, server, KD_STUN_EXIT_TIMEOUT, "getrandom failed");
	}
	kd_stun_build_request(req, sizeof(req), txid);
	double t0 = now_ms(), deadline = t0 + (double)timeout_ms;

	if (send(fd, req, sizeof(req), 0) != (ssize_t)sizeof(req)) {
		int err = errno;

		close(fd);
		return fail(json, server, KD_STUN_EXIT_TIMEOUT, strerror(err));
	}
	for (;;) {
		double left = deadline - now_ms();
		struct pollfd p = {.fd = fd, .events = POLLIN};

		if (left <= 0 || poll(&p, 1, (int)left + 1) == 0) {
			close(fd);
			return fail(json, server, KD_STUN_EXIT_TIMEOUT, "timeout");
		}
		ssize_t n = recv(fd, resp, sizeof(resp), MSG_DONTWAIT);
		double rtt = now_ms() - t0;

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			int err = errno;

			close(fd);
			/* ECONNREFUSED: ICMP port unreachable, nobody serves STUN */
			return fail(json, server, KD_STUN_EXIT_TIMEOUT, strerror(err));
		}
		rc = kd_stun_parse_response(resp, (size_t)n, txid, &mapped);
		if (rc == -ESRCH)
			continue; /* a late answer to someone else's request */
		close(fd);
		if (rc)
			return fail(json, server, KD_STUN_EXIT_BAD_RESPONSE,
				    rc == -ENOENT ? "response without a mapped address"
						  : "malformed response");
		addr_str((struct sockaddr *)&mapped, mapped_s, sizeof(mapped_s));
		if (json) {
			char ip[INET6_ADDRSTRLEN];
			unsigned mport;

			if (mapped.ss_family == AF_INET) {
				struct sockaddr_in *s = (struct sockaddr_in *)&mapped;

				inet_ntop(AF_INET, &s->sin_addr, ip, sizeof(ip));
				mport = ntohs(s->sin_port);
			} else {
				struct sockaddr_in6 *s = (struct sockaddr_in6 *)&mapped;

				inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof(ip));
				mport = ntohs(s->sin6_port);
			}
			printf("{\"server\":\"%s\",\"mapped\":\"%s\",\"mapped_ip\":\"%s\","
			       "\"mapped_port\":%u,\"rtt_ms\":%.3f}\n",
			       server, mapped_s, ip, mport, rtt);
		} else {
			printf("%s mapped %s rtt %.3f ms\n", server, mapped_s, rtt);
		}
		return KD_STUN_EXIT_OK;
	}
}
