// SPDX-License-Identifier: MIT
/* The userspace STUN server on loopback: real UDP sockets, both families,
 * counters by disposition and family, Prometheus rendering. */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "stun.h"
#include "stun_server.h"

struct fx {
	struct kd_stun_server *srv;
};

static int setup(void **state)
{
	static struct fx f;

	f.srv = kd_stun_server_open("", 0);
	if (!f.srv)
		return -1;
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	kd_stun_server_close(f->srv);
	return 0;
}

static int client(int family)
{
	int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct timeval tv = {.tv_sec = 2};

	assert_true(fd >= 0);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	return fd;
}

static void send_to(int fd, int family, int port, const void *buf, size_t len)
{
	struct sockaddr_storage ss = {0};
	socklen_t sl;

	if (family == AF_INET) {
		struct sockaddr_in *s = (struct sockaddr_in *)&ss;

		s->sin_family = AF_INET;
		s->sin_port = htons((uint16_t)port);
		s->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sl = sizeof(*s);
	} else {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;

		s->sin6_family = AF_INET6;
		s->sin6_port = htons((uint16_t)port);
		s->sin6_addr = in6addr_loopback;
		sl = sizeof(*s);
	}
	assert_int_equal(sendto(fd, buf, len, 0, (struct sockaddr *)&ss, sl), (ssize_t)len);
}

/* Waits until the server socket is readable and lets it drain. */
static void serve(struct kd_stun_server *srv)
{
	struct pollfd p = {.fd = kd_stun_server_fd(srv), .events = POLLIN};

	assert_int_equal(poll(&p, 1, 2000), 1);
	kd_stun_server_on_readable(srv);
}

static void probe(struct kd_stun_server *srv, int family)
{
	uint8_t txid[12], req[64], resp[128];
	struct sockaddr_storage mapped, local;
	socklen_t ll = sizeof(local);
	int fd = client(family);

	for (int i = 0; i < 12; i++)
		txid[i] = (uint8_t)(family + i);
	size_t n = kd_stun_build_request(req, sizeof(req), txid);

	send_to(fd, family, kd_stun_server_port(srv), req, n);
	serve(srv);
	ssize_t r = recv(fd, resp, sizeof(resp), 0);

	assert_int_equal(r, family == AF_INET ? STUN_RESPONSE_V4_LEN : STUN_RESPONSE_V6_LEN);
	assert_int_equal(kd_stun_parse_response(resp, (size_t)r, txid, &mapped), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&local, &ll), 0);
	/* IPv4 clients come in as ::ffff:127.0.0.1 on the dual-stack socket
	 * and must still be answered with family 1 */
	assert_int_equal(mapped.ss_family, family);
	if (family == AF_INET) {
		struct sockaddr_in *m = (struct sockaddr_in *)&mapped, *l = (struct sockaddr_in *)&local;

		assert_int_equal(m->sin_port, l->sin_port);
		assert_int_equal(m->sin_addr.s_addr, htonl(INADDR_LOOPBACK));
	} else {
		struct sockaddr_in6 *m = (struct sockaddr_in6 *)&mapped, *l = (struct sockaddr_in6 *)&local;

		assert_int_equal(m->sin6_port, l->sin6_port);
		assert_memory_equal(&m->sin6_addr, &in6addr_loopback, 16);
	}
	close(fd);
}

static void test_answers_both_families(void **state)
{
	struct fx *f = *state;
	struct kd_stun_counters c0, c1;

	kd_stun_server_counters(f->srv, &c0);
	probe(f->srv, AF_INET);
	probe(f->srv, AF_INET6);
	kd_stun_server_counters(f->srv, &c1);
	assert_int_equal(c1.success - c0.success, 2);
	assert_int_equal(c1.ipv4 - c0.ipv4, 1);
	assert_int_equal(c1.ipv6 - c0.ipv6, 1);
	assert_int_equal(c1.not_stun, c0.not_stun);
}

static void test_not_stun_gets_no_reply(void **state)
{
	struct fx *f = *state;
	struct kd_stun_counters c0, c1;
	uint8_t txid[12] = {9}, req[600], buf[64];
	int fd = client(AF_INET);
	struct timeval tv = {.tv_usec = 200000};

	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	kd_stun_server_counters(f->srv, &c0);
	kd_stun_build_request(req, sizeof(req), txid);
	req[39] ^= 1; /* bad fingerprint */
	send_to(fd, AF_INET, kd_stun_server_port(f->srv), req, 40);
	send_to(fd, AF_INET, kd_stun_server_port(f->srv), "hello", 5);
	/* larger than the receive buffer: truncated, so never a request */
	memset(req, 0, sizeof(req));
	send_to(fd, AF_INET, kd_stun_server_port(f->srv), req, sizeof(req));
	usleep(20000);
	serve(f->srv);
	assert_int_equal(recv(fd, buf, sizeof(buf), 0), -1);
	assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
	kd_stun_server_counters(f->srv, &c1);
	assert_int_equal(c1.not_stun - c0.not_stun, 3);
	assert_int_equal(c1.success, c0.success);
	assert_int_equal(c1.ipv4, c0.ipv4);
	close(fd);
}

static void test_burst_batches(void **state)
{
	/* more than one recvmmsg batch in one readable event */
	struct fx *f = *state;
	struct kd_stun_counters c0, c1;
	uint8_t txid[12] = {0}, req[64], resp[64];
	int fd = client(AF_INET6), got = 0, sndbuf = 1 << 20;
	const int N = 200;

	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof(sndbuf));
	kd_stun_server_counters(f->srv, &c0);
	for (int i = 0; i < N; i++) {
		txid[0] = (uint8_t)i;
		kd_stun_build_request(req, sizeof(req), txid);
		send_to(fd, AF_INET6, kd_stun_server_port(f->srv), req, 40);
	}
	usleep(20000);
	serve(f->srv);
	while (got < N && recv(fd, resp, sizeof(resp), MSG_DONTWAIT) == STUN_RESPONSE_V6_LEN)
		got++;
	kd_stun_server_counters(f->srv, &c1);
	assert_int_equal(c1.success - c0.success, N);
	assert_int_equal(got, N);
	close(fd);
}

static void test_metrics_text(void **state)
{
	struct fx *f = *state;
	struct kd_stun_counters c;
	char buf[1024], line[128];

	kd_stun_server_counters(f->srv, &c);
	int n = kd_stun_server_metrics(f->srv, buf, sizeof(buf));

	assert_true(n > 0 && (size_t)n == strlen(buf));
	snprintf(line, sizeof(line), "stun_requests{disposition=\"success\"} %llu\n",
		 (unsigned long long)c.success);
	assert_non_null(strstr(buf, line));
	snprintf(line, sizeof(line), "stun_requests{disposition=\"not_stun\"} %llu\n",
		 (unsigned long long)c.not_stun);
	assert_non_null(strstr(buf, line));
	snprintf(line, sizeof(line), "stun_addrfamily{family=\"ipv6\"} %llu\n",
		 (unsigned long long)c.ipv6);
	assert_non_null(strstr(buf, line));
	assert_non_null(strstr(buf, "# TYPE stun_requests counter\n"));
	assert_non_null(strstr(buf, "stun_requests{disposition=\"read_error\"} 0\n"));
	assert_non_null(strstr(buf, "stun_addrfamily{family=\"ipv4\"} "));
	assert_int_equal(kd_stun_server_metrics(f->srv, buf, 10), -ENOSPC);
}

static void test_open_errors(void **state)
{
	struct kd_stun_server *a = kd_stun_server_open("127.0.0.1", 0), *b;

	assert_non_null(a);
	/* the same port twice without SO_REUSEPORT must fail loudly */
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	socklen_t sl = sizeof(sa);

	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	b = kd_stun_server_open("127.0.0.1", ntohs(sa.sin_port));
	assert_null(b);
	assert_int_equal(errno, EADDRINUSE);
	assert_null(kd_stun_server_open("", 70000));
	assert_null(kd_stun_server_open("not an address!", 0));
	close(fd);
	kd_stun_server_close(a);
	kd_stun_server_close(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_answers_both_families),
		cmocka_unit_test(test_not_stun_gets_no_reply),
		cmocka_unit_test(test_burst_batches),
		cmocka_unit_test(test_metrics_text),
		cmocka_unit_test(test_open_errors),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
