// SPDX-License-Identifier: MIT
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

int ts_start(struct ts_server *ts, const struct kd_server_config *cfg, const uint8_t *priv)
{
	int err;

	signal(SIGPIPE, SIG_IGN);
	if (sodium_init() < 0)
		return -EIO;
	memset(ts, 0, sizeof(*ts));
	if (cfg)
		ts->cfg = *cfg;
	else
		kd_server_config_defaults(&ts->cfg);
	ts->cfg.addr = "127.0.0.1:0";
	if (!ts->cfg.workers)
		ts->cfg.workers = 2;
	if (priv)
		err = kd_keypair_from_private(&ts->cfg.keys, priv);
	else if (kd_key_is_zero(ts->cfg.keys.priv))
		err = kd_keypair_generate(&ts->cfg.keys);
	else
		err = 0;
	if (err)
		return err;
	if (!getenv("KD_TEST_VERBOSE"))
		kd_log_set_level(KD_LOG_WARN);
	err = kd_server_new(&ts->srv, &ts->cfg);
	if (err)
		return err;
	ts->port = kd_server_port(ts->srv);
	return kd_server_start(ts->srv);
}

void ts_stop(struct ts_server *ts)
{
	kd_server_free(ts->srv);
	ts->srv = NULL;
}

int ts_connect(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0)
		return -errno;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

int ts_write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t r = send(fd, p, len, MSG_NOSIGNAL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

int ts_read_exact(int fd, void *buf, size_t len, int timeout_ms)
{
	uint8_t *p = buf;

	while (len) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int n = poll(&pfd, 1, timeout_ms);
		if (n == 0)
			return -ETIMEDOUT;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		ssize_t r = recv(fd, p, len, 0);
		if (r == 0)
			return -EPIPE;
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -EPIPE;
		}
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

bool ts_wait_closed(int fd, int timeout_ms)
{
	uint8_t buf[4096];

	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int n = poll(&pfd, 1, timeout_ms);
		if (n <= 0)
			return false;
		ssize_t r = recv(fd, buf, sizeof(buf), 0);
		if (r <= 0)
			return true;
	}
}

int ts_hex_decode(const char *hex, size_t hexlen, uint8_t **out, size_t *n)
{
	if (hexlen % 2)
		return -EINVAL;
	*out = malloc(hexlen / 2 + 1);
	if (!*out)
		return -ENOMEM;
	for (size_t i = 0; i < hexlen / 2; i++) {
		unsigned v;
		if (sscanf(hex + 2 * i, "%2x", &v) != 1) {
			free(*out);
			return -EINVAL;
		}
		(*out)[i] = (uint8_t)v;
	}
	*n = hexlen / 2;
	return 0;
}

char *ts_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long sz;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (sz = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
		buf = malloc((size_t)sz + 1);
		if (buf && fread(buf, 1, (size_t)sz, f) == (size_t)sz) {
			buf[sz] = '\0';
			if (len)
				*len = (size_t)sz;
		} else {
			free(buf);
			buf = NULL;
		}
	}
	fclose(f);
	return buf;
}

const char *ts_vectors_dir(void)
{
	const char *d = getenv("KD_VECTORS_DIR");
	return d ? d : "tests/vectors";
}

long long ts_metric(struct ts_server *ts, const char *name)
{
	char *text = NULL;
	size_t len = 0;
	long long v = -1;
	size_t nlen = strlen(name);

	if (kd_server_metrics(ts->srv, &text, &len) != 0)
		return -1;
	for (char *line = text; line && *line;) {
		char *nl = strchr(line, '\n');
		if (!strncmp(line, name, nlen) && line[nlen] == ' ') {
			v = strtoll(line + nlen + 1, NULL, 10);
			break;
		}
		line = nl ? nl + 1 : NULL;
	}
	free(text);
	return v;
}

char *ts_http_get(struct ts_server *ts, const char *path)
{
	char req[512];
	int fd = ts_connect(ts->port);
	size_t cap = 1 << 16, len = 0;
	char *buf;

	if (fd < 0)
		return NULL;
	int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n", path);
	buf = malloc(cap);
	if (!buf || ts_write_all(fd, req, (size_t)n) != 0) {
		free(buf);
		close(fd);
		return NULL;
	}
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		if (poll(&pfd, 1, 3000) <= 0 || len + 1 >= cap)
			break;
		ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	buf[len] = '\0';
	close(fd);
	return buf;
}
