// SPDX-License-Identifier: MIT
#include "hostile.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/ssl.h>
#include <sodium.h>

#include "derp_crypto.h"
#include "derp_wire.h"

#if defined(__SANITIZE_ADDRESS__)
#define KD_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KD_ASAN 1
#endif
#endif

#define HS(reason) "kderp_handshake_errors_total{reason=\"" reason "\"}"

static const char th_upgrade_req[] = "GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\n"
				     "Upgrade: DERP\r\nConnection: Upgrade\r\n\r\n";

/* ASan's quarantine keeps up to 256 MiB of freed memory resident, so VmRSS
 * says nothing about the server there: the bound is checked in plain builds
 * and the test says so instead of passing silently. */
void th_rss_bound(long before_kb, long after_kb, long slack_kb)
{
#ifdef KD_ASAN
	(void)before_kb;
	(void)after_kb;
	(void)slack_kb;
	print_message("# SKIP VmRSS bound not checked under ASan (its quarantine keeps freed memory resident)\n");
	skip();
#else
	if (after_kb - before_kb >= slack_kb)
		fail_msg("VmRSS grew %ld kB (from %ld kB), bound %ld kB", after_kb - before_kb, before_kb, slack_kb);
#endif
}

int64_t th_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long th_vmrss_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

int th_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n - 3; /* ".", ".." and the DIR's own descriptor */
}

/* Counters move on the worker threads: poll for a while. */
long long th_metric_wait(struct ts_server *ts, const char *name, long long want, bool at_least)
{
	long long got = -2;

	for (int i = 0; i < 150; i++) {
		got = ts_metric(ts, name);
		if (got == want || (at_least && got > want))
			return got;
		usleep(20000);
	}
	fail_msg("%s = %lld, want %s%lld", name, got, at_least ? ">= " : "", want);
	return got;
}

void th_hs_expect(struct ts_server *ts, const char *reason, long long want)
{
	char name[128];

	snprintf(name, sizeof(name), HS("%s"), reason);
	th_metric_wait(ts, name, want, false);
}

/* Reads a response head up to the blank line into buf (NUL-terminated). */
int th_read_head(int fd, char *buf, size_t cap, int timeout_ms)
{
	size_t n = 0;

	while (n + 1 < cap) {
		int err = ts_read_exact(fd, buf + n, 1, timeout_ms);
		if (err)
			return err;
		n++;
		buf[n] = '\0';
		if (n >= 4 && !memcmp(buf + n - 4, "\r\n\r\n", 4))
			return 0;
	}
	return -EMSGSIZE;
}

/* TCP + GET /derp + 101 + ServerKey: a connection waiting for ClientInfo. */
int th_raw_upgrade(int port, uint8_t server_pub[DERP_KEY_LEN])
{
	char head[1024];
	uint8_t sk[DERP_FRAME_HDR_LEN + DERP_SERVER_KEY_PAYLOAD];
	int fd = ts_connect(port);

	if (fd < 0)
		return fd;
	if (ts_write_all(fd, th_upgrade_req, sizeof(th_upgrade_req) - 1) != 0 ||
	    th_read_head(fd, head, sizeof(head), 3000) != 0 || strncmp(head, "HTTP/1.1 101", 12) != 0 ||
	    ts_read_exact(fd, sk, sizeof(sk), 3000) != 0 || sk[0] != DERP_FRAME_SERVER_KEY ||
	    derp_hdr_len((const struct derp_frame_hdr *)sk) != DERP_SERVER_KEY_PAYLOAD ||
	    memcmp(sk + DERP_FRAME_HDR_LEN, DERP_MAGIC, DERP_MAGIC_LEN) != 0) {
		close(fd);
		return -EPROTO;
	}
	if (server_pub)
		memcpy(server_pub, sk + DERP_FRAME_HDR_LEN + DERP_MAGIC_LEN, DERP_KEY_LEN);
	return fd;
}

/* A ClientInfo frame claiming claimed_pub, sealed with kp->priv to box_pub.
 * Returns the frame length (header included). */
size_t th_client_info_frame(uint8_t *out, size_t cap, const uint8_t *claimed_pub,
				const struct kd_keypair *kp, const uint8_t *box_pub, const char *json)
{
	size_t jl = strlen(json), plen = DERP_KEY_LEN + KD_BOX_OVERHEAD + jl;

	assert_true(DERP_FRAME_HDR_LEN + plen <= cap);
	derp_hdr_put((struct derp_frame_hdr *)out, DERP_FRAME_CLIENT_INFO, (uint32_t)plen);
	memcpy(out + DERP_FRAME_HDR_LEN, claimed_pub, DERP_KEY_LEN);
	uint8_t *nonce = out + DERP_FRAME_HDR_LEN + DERP_KEY_LEN;
	randombytes_buf(nonce, DERP_NONCE_LEN);
	assert_int_equal(crypto_box_easy(nonce + DERP_NONCE_LEN, (const uint8_t *)json, jl, nonce, box_pub, kp->priv), 0);
	return DERP_FRAME_HDR_LEN + plen;
}

/* Waits for the peer to close; returns the milliseconds it took or -1. */
int64_t th_closed_after(int fd, int64_t since, int timeout_ms)
{
	if (!ts_wait_closed(fd, timeout_ms))
		return -1;
	return th_mono_ms() - since;
}

void th_recv_until_closed(struct kd_client *c, int timeout_ms)
{
	struct kd_client_msg m;
	int64_t end = th_mono_ms() + timeout_ms;
	int err;

	do
		err = kd_client_recv(c, &m, (int)(end - th_mono_ms() > 0 ? end - th_mono_ms() : 1));
	while (err == 0 && th_mono_ms() < end);
	assert_int_equal(err, -EPIPE);
}

void th_flood(struct kd_client *a, const uint8_t *dst, const uint8_t *pkt, size_t len, int count)
{
	for (int i = 0; i < count; i++) {
		int err = kd_client_send_packet(a, dst, pkt, len);
		if (err == -EAGAIN || err == -ENOBUFS) {
			assert_int_equal(kd_client_flush_wait(a, 5000), 0);
			if (err == -ENOBUFS)
				assert_int_equal(kd_client_send_packet(a, dst, pkt, len), 0);
		} else {
			assert_int_equal(err, 0);
		}
	}
	assert_int_equal(kd_client_flush_wait(a, 5000), 0);
}

/* A real TLS ClientHello, from OpenSSL writing into a memory BIO. */
size_t th_client_hello(uint8_t *out, size_t cap)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = ctx ? SSL_new(ctx) : NULL;
	BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
	int n = 0;

	if (ssl && rb && wb) {
		SSL_set_bio(ssl, rb, wb);
		SSL_set_tlsext_host_name(ssl, "derp.example.com");
		SSL_connect(ssl); /* wants to read the ServerHello: the hello is in wb */
		n = BIO_read(wb, out, (int)cap);
	} else {
		BIO_free(rb);
		BIO_free(wb);
	}
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	return n > 0 ? (size_t)n : 0;
}

int th_wait_fds(int want, int timeout_ms)
{
	int64_t end = th_mono_ms() + timeout_ms;
	int n;

	while ((n = th_count_fds()) != want && th_mono_ms() < end)
		usleep(20000);
	return n;
}

double th_cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}
