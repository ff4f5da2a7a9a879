// SPDX-License-Identifier: MIT
/* The server's DERP stream on arbitrary bytes, over a real loopback socket:
 * one in-process kderpd for the whole run; per input a real login (HTTP
 * upgrade, ServerKey, sealed ClientInfo, ServerInfo), then the input as the
 * client's frames, then EOF. The server must close that connection (never
 * hang on it) and still answer a ping on another connection (never crash,
 * never stall a worker).
 *
 * Input: byte 0 selects the login (bit 0: with the server's mesh key, so
 * ForwardPacket, WatchConns and ClosePeer are reachable); the rest is the
 * DERP stream. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "log.h"
#include "server.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define IO_TIMEOUT_MS 2000

static struct kd_server *g_srv;
static char g_url[64];
static uint8_t g_mesh_key[32];
static struct kd_client *g_probe;

static void die(const char *what)
{
	fprintf(stderr, "fuzz_derp_stream: %s\n", what);
	abort();
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct kd_client *login(bool mesh)
{
	struct kd_client_opts o = {0};
	struct kd_client *c = NULL;

	o.url = g_url;
	o.mesh_key = mesh ? g_mesh_key : NULL;
	o.can_ack_pings = true;
	o.timeout_ms = IO_TIMEOUT_MS;
	if (kd_keypair_generate(&o.key) != 0)
		return NULL;
	if (kd_client_connect(&c, &o) != 0)
		return NULL;
	return c;
}

/* A ping answered on the probe connection: the server is alive. */
static bool probe_alive(struct kd_client *c)
{
	static uint64_t seq;
	uint8_t ping[8];
	struct kd_client_msg m;
	int64_t end = mono_ms() + IO_TIMEOUT_MS;

	seq++;
	memcpy(ping, &seq, sizeof(ping));
	if (kd_client_send_ping(c, ping) != 0 || kd_client_flush_wait(c, IO_TIMEOUT_MS) != 0)
		return false;
	while (mono_ms() < end) {
		if (kd_client_recv(c, &m, (int)(end - mono_ms()) + 1) != 0)
			return false;
		if (m.type == DERP_FRAME_PONG && m.data_len == 8 && !memcmp(m.data, ping, 8))
			return true;
	}
	return false;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct kd_server_config cfg;

	(void)argc;
	(void)argv;
	signal(SIGPIPE, SIG_IGN);
	if (sodium_init() < 0)
		die("sodium_init");
	if (!getenv("KD_FUZZ_VERBOSE"))
		kd_log_set_level(KD_LOG_ERROR);
	kd_server_config_defaults(&cfg);
	cfg.addr = "127.0.0.1:0";
	cfg.workers = 2;
	cfg.handshake_timeout_ms = 1000;
	cfg.http_timeout_ms = 1000;
	cfg.write_timeout_ms = 500;
	cfg.keepalive_ms = 1000;
	cfg.has_mesh_key = true;
	randombytes_buf(g_mesh_key, sizeof(g_mesh_key));
	memcpy(cfg.mesh_key, g_mesh_key, sizeof(g_mesh_key));
	if (kd_keypair_generate(&cfg.keys) != 0)
		die("server key");
	if (kd_server_new(&g_srv, &cfg) != 0 || kd_server_start(g_srv) != 0)
		die("server start");
	snprintf(g_url, sizeof(g_url), "http://127.0.0.1:%d/derp", kd_server_port(g_srv));
	g_probe = login(false);
	if (!g_probe)
		die("probe login");
	return 0;
}

/* Writes the stream while reading and discarding what the server sends, so
 * neither side can block the other; stops when the server closes. */
static void pump(int fd, const uint8_t *p, size_t len)
{
	uint8_t sink[16384];
	int64_t end = mono_ms() + IO_TIMEOUT_MS;

	while (len) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN | POLLOUT};
		int left = (int)(end - mono_ms());
		if (left <= 0)
			die("server stopped reading the stream");
		if (poll(&pfd, 1, left) <= 0)
			continue;
		if (pfd.revents & POLLIN) {
			ssize_t r = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
			if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
				return; /* closed by the server: a verdict on bad input */
		}
		if (pfd.revents & POLLOUT) {
			ssize_t w = send(fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (w < 0 && errno != EAGAIN && errno != EINTR)
				return;
			if (w > 0) {
				p += w;
				len -= (size_t)w;
			}
		}
		if (pfd.revents & (POLLERR | POLLHUP))
			return;
	}
}

static void wait_closed(int fd)
{
	uint8_t sink[16384];
	int64_t end = mono_ms() + IO_TIMEOUT_MS;

	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int left = (int)(end - mono_ms());
		if (left <= 0 || poll(&pfd, 1, left) == 0)
			die("server kept a connection open after EOF");
		ssize_t r = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
			return;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	struct kd_client *c = login(data[0] & 1);
	if (!c)
		die("login refused: the server stopped accepting");
	int fd = kd_client_fd(c);
	pump(fd, data + 1, size - 1);
	shutdown(fd, SHUT_WR);
	wait_closed(fd);
	kd_client_close(c);
	if (!probe_alive(g_probe)) {
		/* a mesh client may legitimately ClosePeer the probe: log in again */
		kd_client_close(g_probe);
		g_probe = login(false);
		if (!g_probe || !probe_alive(g_probe))
			die("server no longer answers pings");
	}
	return 0;
}
