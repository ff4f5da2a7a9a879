// SPDX-License-Identifier: MIT
/* kderpctl subcommands that log in to a DERP server: probe, send, recv,
 * echo, watch, close-peer. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "ctl.h"
#include "log.h"

static void print_key_json(const char *name, const uint8_t key[32])
{
	char s[KD_NODEKEY_STR_LEN];

	kd_key_nodekey_str(s, key);
	printf("\"%s\":\"%s\"", name, s);
}

/* Logs in; prints why not. */
static int login(struct kd_client **c, struct ctl_opts *o, const char *url, const char *cmd)
{
	struct kd_client_opts co;
	int err = ctl_client_opts(&co, o, url);

	if (err)
		return err;
	err = kd_client_connect(c, &co);
	if (err) {
		const char *why = err == -ECONNABORTED ? "server closed the connection (refused)"
				: err == -EPROTO	 ? "not a DERP server or protocol error"
				: err == -EKEYREJECTED	 ? "TLS certificate rejected (--insecure or --ca-file)"
							 : strerror(-err);
		fprintf(stderr, "kderpctl %s: %s: %s\n", cmd, url, why);
		if (o->json)
			printf("{\"url\":\"%s\",\"ok\":false,\"error\":\"%s\"}\n", url, why);
	}
	return err;
}

static bool want_url(struct ctl_opts *o, const char *cmd, int npos)
{
	if (o->npos != npos) {
		fprintf(stderr, "usage: kderpctl %s URL%s\n", cmd, npos > 1 ? " ..." : "");
		return false;
	}
	return true;
}

int do_probe(int argc, char **argv)
{
	struct ctl_opts o;
	struct kd_client *c = NULL;
	struct kd_client_msg m;
	double hs_ms, rtt_min = 1e18, rtt_max = 0, rtt_sum = 0;
	long pings = 0, want;
	int err = ctl_parse(argc, argv, &o);

	if (err)
		return err;
	if (!want_url(&o, "probe", 1))
		return CTL_USAGE;
	want = o.count > 0 ? o.count : 1;
	{
		struct timespec a, b;

		clock_gettime(CLOCK_MONOTONIC, &a);
		err = login(&c, &o, o.pos[0], "probe");
		clock_gettime(CLOCK_MONOTONIC, &b);
		hs_ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
	}
	if (err)
		return ctl_exit_for(err);
	for (; pings < want; pings++) {
		uint8_t data[8];
		struct timespec a, b;
		double rtt;

		randombytes_buf(data, sizeof(data));
		clock_gettime(CLOCK_MONOTONIC, &a);
		err = kd_client_send_ping(c, data);
		if (!err)
			err = kd_client_flush_wait(c, o.timeout_ms);
		while (!err) {
			err = kd_client_recv(c, &m, o.timeout_ms);
			if (!err && m.type == DERP_FRAME_PONG && !memcmp(m.data, data, 8))
				break;
		}
		if (err)
			break;
		clock_gettime(CLOCK_MONOTONIC, &b);
		rtt = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
		rtt_sum += rtt;
		rtt_min = rtt < rtt_min ? rtt : rtt_min;
		rtt_max = rtt > rtt_max ? rtt : rtt_max;
	}
	if (err) {
		fprintf(stderr, "kderpctl probe: %s: ping: %s\n", o.pos[0],
			err == -ETIMEDOUT ? "no pong (timeout)" : strerror(-err));
		if (o.json)
			printf("{\"url\":\"%s\",\"ok\":false,\"error\":\"ping: %s\"}\n", o.pos[0], strerror(-err));
		kd_client_close(c);
		return err == -EPIPE ? CTL_REFUSED : ctl_exit_for(err);
	}
	if (o.json) {
		printf("{\"url\":\"%s\",\"ok\":true,", o.pos[0]);
		print_key_json("server_key", kd_client_server_key(c));
		printf(",\"server_version\":%lld,\"token_bucket_bytes_per_sec\":%lld,\"token_bucket_bytes_burst\":%lld",
		       (long long)kd_client_server_info(c)->version,
		       (long long)kd_client_server_info(c)->token_bucket_bytes_per_sec,
		       (long long)kd_client_server_info(c)->token_bucket_bytes_burst);
		printf(",\"fast_start\":%s,\"handshake_ms\":%.3f,\"pings\":%ld,\"rtt_ms\":%.3f,"
		       "\"rtt_min_ms\":%.3f,\"rtt_max_ms\":%.3f}\n",
		       kd_client_fast_start(c) ? "true" : "false", hs_ms, pings, rtt_sum / (double)pings,
		       rtt_min, rtt_max);
	} else {
		char s[KD_NODEKEY_STR_LEN];

		kd_key_nodekey_str(s, kd_client_server_key(c));
		printf("%s: ok server %s%s handshake %.2f ms, ping rtt %.3f ms (min %.3f max %.3f, %ld pings)\n",
		       o.pos[0], s, kd_client_fast_start(c) ? " (fast start)" : "", hs_ms,
		       rtt_sum / (double)pings, rtt_min, rtt_max, pings);
	}
	kd_client_close(c);
	return CTL_OK;
}

static ssize_t read_stdin(uint8_t *buf, size_t cap)
{
	size_t n = 0;

	while (n < cap) {
		ssize_t r = read(0, buf + n, cap - n);

		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		n += (size_t)r;
	}
	return (ssize_t)n;
}

int do_send(int argc, char **argv)
{
	static uint8_t buf[DERP_MAX_PACKET + 1];
	struct ctl_opts o;
	struct kd_client *c;
	uint8_t dst[32];
	size_t len;
	int err = ctl_parse(argc, argv, &o);

	if (err)
		return err;
	if (o.npos < 1 || o.npos > 2 || !o.to) {
		fprintf(stderr, "usage: kderpctl send URL --to nodekey:HEX [DATA|-]\n");
		return CTL_USAGE;
	}
	if (kd_key_parse_public(dst, o.to)) {
		fprintf(stderr, "kderpctl send: bad --to key %s\n", o.to);
		return CTL_USAGE;
	}
	if (o.npos == 2 && strcmp(o.pos[1], "-") != 0) {
		len = strlen(o.pos[1]);
		if (len > DERP_MAX_PACKET) {
			fprintf(stderr, "kderpctl send: packet over %u bytes\n", DERP_MAX_PACKET);
			return CTL_USAGE;
		}
		memcpy(buf, o.pos[1], len);
	} else {
		ssize_t r = read_stdin(buf, sizeof(buf));

		if (r < 0 || r > (ssize_t)DERP_MAX_PACKET) {
			fprintf(stderr, "kderpctl send: stdin: %s\n", r < 0 ? strerror((int)-r) : "over 65536 bytes");
			return CTL_USAGE;
		}
		len = (size_t)r;
	}
	err = login(&c, &o, o.pos[0], "send");
	if (err)
		return ctl_exit_for(err);
	err = kd_client_send_packet(c, dst, buf, len);
	if (!err)
		err = kd_client_flush_wait(c, o.timeout_ms);
	if (err)
		fprintf(stderr, "kderpctl send: %s\n", strerror(-err));
	else if (o.json)
		printf("{\"ok\":true,\"len\":%zu}\n", len);
	kd_client_close(c);
	return ctl_exit_for(err);
}

static void print_packet(const struct ctl_opts *o, const struct kd_client_msg *m)
{
	char s[KD_NODEKEY_STR_LEN];

	kd_key_nodekey_str(s, m->key);
	if (o->json) {
		printf("{\"type\":\"packet\",\"from\":\"%s\",\"len\":%zu,\"data\":", s, m->data_len);
		ctl_print_json_str(m->data, m->data_len);
		printf("}\n");
	} else {
		printf("%s %zu ", s, m->data_len);
		for (size_t i = 0; i < m->data_len; i++)
			putchar(m->data[i] >= 0x20 && m->data[i] < 0x7f ? m->data[i] : '.');
		putchar('\n');
	}
	fflush(stdout);
}

/* Server notices a receiver should see: health, restarts, departed peers. */
static void print_event(const struct ctl_opts *o, const char *cmd, const struct kd_client_msg *m)
{
	char s[KD_NODEKEY_STR_LEN];

	switch (m->type) {
	case DERP_FRAME_HEALTH:
		if (o->json) {
			printf("{\"type\":\"health\",\"text\":");
			ctl_print_json_str(m->data, m->data_len);
			printf("}\n");
		} else {
			fprintf(stderr, "kderpctl %s: server health: %.*s\n", cmd, (int)m->data_len,
				m->data_len ? (const char *)m->data : "ok");
		}
		break;
	case DERP_FRAME_RESTARTING:
		if (o->json)
			printf("{\"type\":\"restarting\",\"reconnect_in_ms\":%u,\"try_for_ms\":%u}\n",
			       m->reconnect_in_ms, m->try_for_ms);
		else
			fprintf(stderr, "kderpctl %s: server restarting: reconnect in %u ms, try for %u ms\n", cmd,
				m->reconnect_in_ms, m->try_for_ms);
		break;
	case DERP_FRAME_PEER_GONE:
		kd_key_nodekey_str(s, m->key);
		if (o->json)
			printf("{\"type\":\"peer_gone\",\"key\":\"%s\",\"reason\":%u}\n", s, m->reason);
		else
			fprintf(stderr, "kderpctl %s: peer gone %s reason %u\n", cmd, s, m->reason);
		break;
	default:
		return;
	}
	fflush(stdout);
}

/* recv and echo: print (and echo) packets until --count or forever. */
static int recv_loop(int argc, char **argv, bool echo)
{
	const char *cmd = echo ? "echo" : "recv";
	struct ctl_opts o;
	struct kd_client *c;
	struct kd_client_msg m;
	char s[KD_NODEKEY_STR_LEN];
	long got = 0;
	int err = ctl_parse(argc, argv, &o);

	if (err)
		return err;
	if (!want_url(&o, cmd, 1))
		return CTL_USAGE;
	err = login(&c, &o, o.pos[0], cmd);
	if (err)
		return ctl_exit_for(err);
	kd_key_nodekey_str(s, kd_client_public_key(c));
	if (o.json)
		printf("{\"type\":\"ready\",\"key\":\"%s\"}\n", s);
	else
		fprintf(stderr, "kderpctl %s: logged in as %s\n", cmd, s);
	fflush(stdout);
	while (o.count == 0 || got < o.count) {
		err = kd_client_recv(c, &m, o.count ? o.timeout_ms : -1);
		if (err)
			break;
		if (m.type != DERP_FRAME_RECV_PACKET) {
			print_event(&o, cmd, &m);
			continue;
		}
		got++;
		print_packet(&o, &m);
		if (echo) {
			uint8_t src[32];

			memcpy(src, m.key, 32);
			err = kd_client_send_packet(c, src, m.data, m.data_len);
			if (!err)
				err = kd_client_flush_wait(c, o.timeout_ms);
			if (err)
				break;
		}
	}
	if (err)
		fprintf(stderr, "kderpctl %s: %s after %ld packets\n", cmd,
			err == -ETIMEDOUT ? "timeout"
			: err == -EPIPE	  ? "server closed the connection"
					  : strerror(-err),
			got);
	kd_client_close(c);
	return ctl_exit_for(err);
}

int do_recv(int argc, char **argv)
{
	return recv_loop(argc, argv, false);
}

int do_echo(int argc, char **argv)
{
	return recv_loop(argc, argv, true);
}

static void format_addr(char *out, size_t cap, const uint8_t ip[16], uint16_t port)
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	char a[INET6_ADDRSTRLEN];

	if (!memcmp(ip, mapped, 12)) {
		inet_ntop(AF_INET, ip + 12, a, sizeof(a));
		snprintf(out, cap, "%s:%u", a, port);
	} else {
		inet_ntop(AF_INET6, ip, a, sizeof(a));
		snprintf(out, cap, "[%s]:%u", a, port);
	}
}

int do_watch(int argc, char **argv)
{
	struct ctl_opts o;
	struct kd_client *c;
	struct kd_client_msg m;
	long got = 0;
	int err = ctl_parse(argc, argv, &o);

	if (err)
		return err;
	if (!want_url(&o, "watch", 1) || !o.have_mesh_key) {
		fprintf(stderr, "usage: kderpctl watch URL --mesh-key-file F\n");
		return CTL_USAGE;
	}
	err = login(&c, &o, o.pos[0], "watch");
	if (err)
		return ctl_exit_for(err);
	err = kd_client_watch_conns(c);
	if (!err)
		err = kd_client_flush_wait(c, o.timeout_ms);
	while (!err && (o.count == 0 || got < o.count)) {
		char s[KD_NODEKEY_STR_LEN], addr[64];

		err = kd_client_recv(c, &m, o.count ? o.timeout_ms : -1);
		if (err)
			break;
		if (m.type != DERP_FRAME_PEER_PRESENT && m.type != DERP_FRAME_PEER_GONE)
			continue;
		got++;
		kd_key_nodekey_str(s, m.key);
		if (m.type == DERP_FRAME_PEER_PRESENT) {
			format_addr(addr, sizeof(addr), m.ip, m.port);
			if (o.json)
				printf("{\"type\":\"present\",\"key\":\"%s\",\"addr\":\"%s\",\"flags\":%u}\n", s,
				       addr, m.flags);
			else
				printf("present %s %s flags=0x%02x\n", s, addr, m.flags);
		} else {
			if (o.json)
				printf("{\"type\":\"gone\",\"key\":\"%s\",\"reason\":%u}\n", s, m.reason);
			else
				printf("gone %s reason=%u\n", s, m.reason);
		}
		fflush(stdout);
	}
	if (err && err != -ETIMEDOUT)
		fprintf(stderr, "kderpctl watch: %s\n",
			err == -EPIPE ? "server closed the connection (no mesh permission?)" : strerror(-err));
	kd_client_close(c);
	/* a watcher without the mesh key is disconnected: that is a refusal */
	if (err == -EPIPE)
		return CTL_REFUSED;
	return err == -ETIMEDOUT && o.count && got < o.count ? CTL_FAIL : ctl_exit_for(err == -ETIMEDOUT ? 0 : err);
}

