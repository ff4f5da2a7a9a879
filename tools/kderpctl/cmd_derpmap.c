// SPDX-License-Identifier: MIT
/* kderpctl derpmap FILE: GET /derp/latency-check on every node of a DERP map
 * (over TLS, or plain HTTP with --http), best of --count tries, and the
 * region a client would pick: the lowest latency. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client_tls.h"
#include "ctl.h"
#include "derpmap.h"

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int tcp_connect(const char *host, int port, int timeout_ms)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
	char ps[8];
	int fd;

	snprintf(ps, sizeof(ps), "%d", port);
	if (getaddrinfo(host, ps, &hints, &res))
		return -EHOSTUNREACH;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		freeaddrinfo(res);
		return -errno;
	}
	{
		struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};

		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	if (connect(fd, res->ai_addr, res->ai_addrlen)) {
		int err = errno == EINPROGRESS ? -ETIMEDOUT : -errno;

		freeaddrinfo(res);
		close(fd);
		return err;
	}
	freeaddrinfo(res);
	return fd;
}

/* One latency check: connect (+TLS), request, status line. ms or -errno. */
static double check_once(const struct kd_derpmap_node *n, const struct ctl_opts *o, int *status)
{
	const char *addr = n->ipv4[0] ? n->ipv4 : n->ipv6[0] ? n->ipv6 : n->host_name;
	int port = n->derp_port ? n->derp_port : o->http ? 80 : 443;
	char req[512], resp[512];
	SSL *ssl = NULL;
	double t0 = now_ms(), t;
	size_t got = 0;
	int fd, len, err = 0;

	fd = tcp_connect(addr, port, o->timeout_ms);
	if (fd < 0)
		return fd;
	if (!o->http) {
		bool ww;

		err = kd_client_tls_new(&ssl, fd, n->host_name[0] ? n->host_name : addr, o->ca_file,
					o->insecure || n->insecure_for_tests);
		while (!err && (err = kd_client_tls_handshake(ssl, &ww)) == -EAGAIN)
			;
		if (err)
			goto out;
	}
	len = snprintf(req, sizeof(req),
		       "GET /derp/latency-check HTTP/1.1\r\nHost: %s\r\nUser-Agent: kderpctl\r\n"
		       "Connection: close\r\n\r\n",
		       n->host_name[0] ? n->host_name : addr);
	if (ssl ? SSL_write(ssl, req, len) != len : write(fd, req, (size_t)len) != len) {
		err = -EIO;
		goto out;
	}
	while (got < sizeof(resp) - 1 && !memchr(resp, '\n', got)) {
		int r = ssl ? SSL_read(ssl, resp + got, (int)(sizeof(resp) - 1 - got))
			    : (int)read(fd, resp + got, sizeof(resp) - 1 - got);

		if (r <= 0) {
			err = r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? -ETIMEDOUT : -ECONNRESET;
			goto out;
		}
		got += (size_t)r;
	}
	resp[got] = '\0';
	if (sscanf(resp, "HTTP/1.%*c %d", status) != 1) {
		err = -EPROTO;
		goto out;
	}
out:
	t = now_ms() - t0;
	kd_client_tls_free(ssl);
	close(fd);
	if (err)
		return err;
	return *status >= 200 && *status <= 299 ? t : -EPROTO;
}

int do_derpmap(int argc, char **argv)
{
	static struct kd_derpmap m;
	struct ctl_opts o;
	double lat[KD_DERPMAP_MAX_NODES];
	int best = -1, tries, reachable = 0;
	size_t len, off;
	char *buf;
	FILE *f;
	int err = ctl_parse(argc, argv, &o);

	if (err)
		return err;
	if (o.npos != 1) {
		fprintf(stderr, "usage: kderpctl derpmap FILE [--http] [--count N] [--json]\n");
		return CTL_USAGE;
	}
	tries = o.count > 0 ? (int)o.count : 3;
	f = fopen(o.pos[0], "r");
	if (!f) {
		fprintf(stderr, "kderpctl derpmap: %s: %s\n", o.pos[0], strerror(errno));
		return CTL_USAGE;
	}
	buf = malloc(1 << 20);
	len = buf ? fread(buf, 1, 1 << 20, f) : 0;
	fclose(f);
	if (!buf)
		return CTL_FAIL;
	err = kd_derpmap_parse(&m, buf, len, &off);
	free(buf);
	if (err) {
		fprintf(stderr, "kderpctl derpmap: %s: bad DERP map JSON near byte %zu\n", o.pos[0], off);
		return CTL_USAGE;
	}
	for (int i = 0; i < m.nnodes; i++) {
		const struct kd_derpmap_node *n = &m.nodes[i];
		int status = 0;

		lat[i] = -ENOENT;
		if (n->stun_only)
			continue;
		for (int t = 0; t < tries; t++) {
			double r = check_once(n, &o, &status);

			if (r >= 0 && (lat[i] < 0 || r < lat[i]))
				lat[i] = r;
			else if (r < 0 && lat[i] < 0)
				lat[i] = r;
		}
		if (lat[i] >= 0) {
			reachable++;
			if (best < 0 || lat[i] < lat[best])
				best = i;
		}
	}
	if (o.json) {
		printf("{\"nodes\":[");
		for (int i = 0; i < m.nnodes; i++) {
			const struct kd_derpmap_node *n = &m.nodes[i];

			printf("%s{\"region\":%d,\"code\":", i ? "," : "", n->region_id);
			ctl_print_json_str((const uint8_t *)n->region_code, strlen(n->region_code));
			printf(",\"name\":");
			ctl_print_json_str((const uint8_t *)n->name, strlen(n->name));
			printf(",\"host\":");
			ctl_print_json_str((const uint8_t *)n->host_name, strlen(n->host_name));
			if (lat[i] >= 0)
				printf(",\"latency_ms\":%.3f,\"error\":null}", lat[i]);
			else
				printf(",\"latency_ms\":null,\"error\":\"%s\"}",
				       n->stun_only ? "stun only" : strerror((int)-lat[i]));
		}
		printf("],\"preferred\":");
		if (best >= 0) {
			printf("{\"region\":%d,\"code\":", m.nodes[best].region_id);
			ctl_print_json_str((const uint8_t *)m.nodes[best].region_code,
					   strlen(m.nodes[best].region_code));
			printf(",\"node\":");
			ctl_print_json_str((const uint8_t *)m.nodes[best].name, strlen(m.nodes[best].name));
			printf(",\"latency_ms\":%.3f}}\n", lat[best]);
		} else {
			printf("null}\n");
		}
	} else {
		printf("%-8s %-10s %-16s %-28s %s\n", "region", "code", "node", "host", "latency");
		for (int i = 0; i < m.nnodes; i++) {
			const struct kd_derpmap_node *n = &m.nodes[i];
			char l[64];

			if (lat[i] >= 0)
				snprintf(l, sizeof(l), "%.3f ms", lat[i]);
			else
				snprintf(l, sizeof(l), "%s", n->stun_only ? "stun only" : strerror((int)-lat[i]));
			printf("%-8d %-10s %-16s %-28s %s\n", n->region_id, n->region_code, n->name, n->host_name, l);
		}
		if (best >= 0)
			printf("preferred region: %d (%s) via %s, %.3f ms\n", m.nodes[best].region_id,
			       m.nodes[best].region_code, m.nodes[best].name, lat[best]);
		else
			printf("preferred region: none reachable\n");
	}
	return reachable ? CTL_OK : CTL_FAIL;
}
