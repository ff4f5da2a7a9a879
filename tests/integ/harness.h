/* SPDX-License-Identifier: MIT */
/* Integration-test helpers: an in-process kderpd on an ephemeral loopback
 * port, and blocking socket I/O with timeouts so no test can hang. */
#ifndef KD_TEST_HARNESS_H
#define KD_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server.h"

struct ts_server {
	struct kd_server *srv;
	int port;
	struct kd_server_config cfg;
};

/* Starts a plain-HTTP server on 127.0.0.1:0. cfg may be NULL for defaults;
 * priv may be NULL for a fresh key. */
int ts_start(struct ts_server *ts, const struct kd_server_config *cfg, const uint8_t *priv);
void ts_stop(struct ts_server *ts);

int ts_connect(int port);
int ts_write_all(int fd, const void *buf, size_t len);
/* 0, -ETIMEDOUT or -EPIPE (EOF) */
int ts_read_exact(int fd, void *buf, size_t len, int timeout_ms);
/* true when the peer closed (EOF or reset) within timeout_ms, reading and discarding data */
bool ts_wait_closed(int fd, int timeout_ms);

int ts_hex_decode(const char *hex, size_t hexlen, uint8_t **out, size_t *n);
char *ts_read_file(const char *path, size_t *len);
/* tests/vectors, found from the working directory or KD_VECTORS_DIR */
const char *ts_vectors_dir(void);
/* GET path over plain HTTP on the server's port; the whole response,
 * malloc'd and NUL-terminated, or NULL. */
char *ts_http_get(struct ts_server *ts, const char *path);
/* Reads the named metric (exact text before the value) from /debug/varz via the in-process renderer. */
long long ts_metric(struct ts_server *ts, const char *name);

#endif
