/* SPDX-License-Identifier: MIT */
/* Helpers for the hostile-input and overload tests: measuring the process
 * the in-process server runs in, and raw protocol pieces so a test can go
 * wrong where a well-behaved client would not. Every wait is bounded. */
#ifndef KD_TEST_HOSTILE_H
#define KD_TEST_HOSTILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clients.h"
#include "key.h"

int64_t th_mono_ms(void);
long th_vmrss_kb(void);
/* Open descriptors of this process (the server's and the test's). */
int th_count_fds(void);
/* Polls until count_fds() == want or timeout_ms passed; returns the last count. */
int th_wait_fds(int want, int timeout_ms);
/* User + system CPU seconds of the whole process. */
double th_cpu_seconds(void);
/* Fails unless after_kb - before_kb < slack_kb; under ASan prints "# SKIP"
 * and skips, since its quarantine keeps freed memory resident. Call it last. */
void th_rss_bound(long before_kb, long after_kb, long slack_kb);

/* Polls the metric until it equals want (or exceeds it with at_least);
 * fails the test after 3 s. Returns the last value. */
long long th_metric_wait(struct ts_server *ts, const char *name, long long want, bool at_least);
/* kderp_handshake_errors_total{reason="<reason>"} == want */
void th_hs_expect(struct ts_server *ts, const char *reason, long long want);

/* Reads an HTTP response head up to the blank line into buf (NUL-terminated):
 * 0, -ETIMEDOUT, -EPIPE or -EMSGSIZE. */
int th_read_head(int fd, char *buf, size_t cap, int timeout_ms);
/* TCP + GET /derp + 101 + ServerKey: an fd waiting for ClientInfo, or -errno. */
int th_raw_upgrade(int port, uint8_t server_pub[DERP_KEY_LEN]);
/* A ClientInfo frame claiming claimed_pub whose box is sealed with kp->priv
 * to box_pub; returns the frame length, header included. */
size_t th_client_info_frame(uint8_t *out, size_t cap, const uint8_t *claimed_pub,
			    const struct kd_keypair *kp, const uint8_t *box_pub, const char *json);
/* Waits for the peer to close fd; the milliseconds since `since`, or -1. */
int64_t th_closed_after(int fd, int64_t since, int timeout_ms);
/* Receives on c until the server closes it (fails the test otherwise). */
void th_recv_until_closed(struct kd_client *c, int timeout_ms);
/* Sends count packets from a to dst, waiting out backpressure; all flushed at the end. */
void th_flood(struct kd_client *a, const uint8_t *dst, const uint8_t *pkt, size_t len, int count);
/* A real TLS ClientHello (OpenSSL into a memory BIO); its length or 0. */
size_t th_client_hello(uint8_t *out, size_t cap);

#endif
