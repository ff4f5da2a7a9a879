// SPDX-License-Identifier: MIT
/* kderpctl clients URL: the connections a kderpd holds, from its
 * /debug/clients page (debug access rules apply: run it on the relay host,
 * or set TS_ALLOW_DEBUG_IP there), with the plane each flow is relayed on. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client.h"
#include "ctl.h"

/* The value of "name":... in a flat JSON line, copied into out. */
static void field(const char *line, const char *name, char *out, size_t cap)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"%s\":", name);
	const char *p = strstr(line, pat);
	out[0] = '\0';
	if (!p)
		return;
	p += strlen(pat);
	if (*p == '"')
		p++;
	size_t n = strcspn(p, "\",}");
	if (n >= cap)
		n = cap - 1;
	memcpy(out, p, n);
	out[n] = '\0';
}

int do_clients(int argc, char **argv)
{
	struct ctl_opts o;
	struct kd_client_url u;
	int err = ctl_parse(argc, argv, &o);

	if (err)
		return err;
	if (o.npos != 1 || kd_client_url_parse(&u, o.pos[0]) != 0 || u.tls) {
		fprintf(stderr, "usage: kderpctl clients http://HOST:PORT [--json]  (the plain-HTTP debug listener)\n");
		return CTL_USAGE;
	}
	char port[8];
	snprintf(port, sizeof(port), "%u", u.port);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
	if (getaddrinfo(u.host, port, &hints, &ai) != 0) {
		fprintf(stderr, "kderpctl clients: cannot resolve %s\n", u.host);
		return CTL_FAIL;
	}
	int fd = socket(ai->ai_family, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		fprintf(stderr, "kderpctl clients: connect %s: %s\n", o.pos[0], strerror(errno));
		freeaddrinfo(ai);
		if (fd >= 0)
			close(fd);
		return CTL_FAIL;
	}
	freeaddrinfo(ai);
	char req[512];
	int rl = snprintf(req, sizeof(req), "GET /debug/clients HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
			  u.host_header);
	if (write(fd, req, (size_t)rl) != rl) {
		close(fd);
		return CTL_FAIL;
	}
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, o.timeout_ms > 0 ? o.timeout_ms : 5000) <= 0)
			break;
		if (cap - len < 4096) {
			char *nb = realloc(buf, cap * 2);
			if (!nb)
				break;
			buf = nb;
			cap *= 2;
		}
		ssize_t r = read(fd, buf + len, cap - len - 1);
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = '\0';
	char *body = strstr(buf, "\r\n\r\n");
	int status = 0;
	sscanf(buf, "HTTP/1.%*d %d", &status);
	if (!body || status != 200) {
		fprintf(stderr, "kderpctl clients: HTTP %d from %s (debug access is loopback-only unless "
				"TS_ALLOW_DEBUG_IP allows you)\n", status, o.pos[0]);
		free(buf);
		return CTL_REFUSED;
	}
	body += 4;
	if (o.json) {
		fputs(body, stdout);
		free(buf);
		return CTL_OK;
	}
	printf("%-16s %-22s %-9s %-9s %-24s %7s %s\n", "key", "addr", "transport", "plane", "auto", "age_s", "flags");
	for (char *line = strtok(body, "\n"); line; line = strtok(NULL, "\n")) {
		char key[80], addr[64], tr[16], plane[16], aut[32], age[24], a[8], d[8], m[8], pr[8];
		field(line, "key", key, sizeof(key));
		field(line, "addr", addr, sizeof(addr));
		field(line, "transport", tr, sizeof(tr));
		field(line, "plane", plane, sizeof(plane));
		field(line, "auto", aut, sizeof(aut));
		field(line, "age_s", age, sizeof(age));
		field(line, "active", a, sizeof(a));
		field(line, "dup", d, sizeof(d));
		field(line, "mesh", m, sizeof(m));
		field(line, "preferred", pr, sizeof(pr));
		printf("%-16.16s %-22s %-9s %-9s %-24s %7s%s%s%s%s\n", key + (strncmp(key, "nodekey:", 8) ? 0 : 8), addr,
		       tr, plane, *aut ? aut : "-", age, !strcmp(a, "true") ? " active" : "", !strcmp(d, "true") ? " dup" : "",
		       !strcmp(m, "true") ? " mesh" : "", !strcmp(pr, "true") ? " home" : "");
	}
	free(buf);
	return CTL_OK;
}
