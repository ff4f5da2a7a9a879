// SPDX-License-Identifier: MIT
/* The sockmap relay on real loopback TCP sockets (sk_skb programs cannot run
 * under BPF_PROG_TEST_RUN). Each "client" is the connecting end of a pair;
 * its accepted end plays the daemon's socket and is offloaded with the
 * client's key. Payloads are derived from (source, sequence) so receivers
 * check every byte and the order per source. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <linux/sockios.h>

#include "derp_wire.h"
#include "log.h"
#include "offload.h"

#define IO_TIMEOUT_MS 5000
#define MAX_CLIENTS 8
#define MAX_FRAME (DERP_FRAME_HDR_LEN + DERP_KEY_LEN + DERP_MAX_PACKET)

struct client {
	int c;              /* the client's end */
	int s;              /* the daemon's end, offloaded */
	uint8_t key[DERP_KEY_LEN];
	uint32_t id;
};

struct fixture {
	struct kd_offload *o;
	char pin_dir[64];
	struct client cl[MAX_CLIENTS];
	int n;
};

/* ---- helpers -------------------------------------------------------------- */

static __attribute__((unused)) uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint32_t xs32(uint32_t *s)
{
	uint32_t x = *s;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *s = x ? x : 0x9e3779b9u;
}

static void make_key(uint8_t key[DERP_KEY_LEN], uint32_t id)
{
	for (int i = 0; i < DERP_KEY_LEN; i++)
		key[i] = (uint8_t)(0xa0 + id * 7 + (uint32_t)i * 13);
}

static int tcp_pair(int *c, int *s)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	if (l < 0)
		return -errno;
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&a, &al))
		goto fail;
	*c = socket(AF_INET, SOCK_STREAM, 0);
	if (*c < 0 || connect(*c, (struct sockaddr *)&a, sizeof(a)))
		goto fail;
	*s = accept(l, NULL, NULL);
	if (*s < 0)
		goto fail;
	close(l);
	setsockopt(*c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return 0;
fail:
	close(l);
	return -errno;
}

/* Payload of frame seq from source src: [seq][src][bytes derived from both]. */
static void fill_payload(uint8_t *p, uint32_t len, uint32_t src, uint32_t seq)
{
	uint32_t st = src * 2654435761u ^ seq * 40503u ^ len;

	for (uint32_t i = 0; i < len; i++)
		p[i] = (uint8_t)xs32(&st);
	if (len >= 4)
		memcpy(p, &seq, 4);
	if (len >= 8)
		memcpy(p + 4, &src, 4);
}

static bool check_payload(const uint8_t *p, uint32_t len, uint32_t src, uint32_t seq)
{
	static uint8_t want[DERP_MAX_PACKET];

	fill_payload(want, len, src, seq);
	return memcmp(p, want, len) == 0;
}

/* One frame into buf; returns its length. */
static __attribute__((unused)) size_t build_frame(uint8_t *buf, uint8_t type, const uint8_t *key, const void *payload,
			  uint32_t plen)
{
	size_t klen = key ? DERP_KEY_LEN : 0;

	derp_hdr_put((struct derp_frame_hdr *)buf, type, (uint32_t)(klen + plen));
	if (key)
		memcpy(buf + DERP_FRAME_HDR_LEN, key, DERP_KEY_LEN);
	if (plen)
		memcpy(buf + DERP_FRAME_HDR_LEN + klen, payload, plen);
	return DERP_FRAME_HDR_LEN + klen + plen;
}

static size_t build_send(uint8_t *buf, const uint8_t *dst, uint32_t src, uint32_t seq,
			 uint32_t plen)
{
	derp_hdr_put((struct derp_frame_hdr *)buf, DERP_FRAME_SEND_PACKET, DERP_KEY_LEN + plen);
	memcpy(buf + DERP_FRAME_HDR_LEN, dst, DERP_KEY_LEN);
	fill_payload(buf + DERP_FRAME_HDR_LEN + DERP_KEY_LEN, plen, src, seq);
	return DERP_FRAME_HDR_LEN + DERP_KEY_LEN + plen;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd pf = {.fd = fd, .events = POLLOUT};

				if (poll(&pf, 1, IO_TIMEOUT_MS) <= 0)
					return -ETIMEDOUT;
				continue;
			}
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

enum split_mode { SPLIT_TINY, SPLIT_RANDOM, SPLIT_COALESCED };

/* Writes buf in pieces: 1-7 bytes, random 1..64 KiB, or all at once. */
static int write_split(int fd, const uint8_t *buf, size_t len, enum split_mode m, uint32_t *rng)
{
	size_t off = 0, n;

	while (off < len) {
		if (m == SPLIT_TINY)
			n = 1 + xs32(rng) % 7;
		else if (m == SPLIT_RANDOM)
			n = 1 + xs32(rng) % 65536;
		else
			n = len - off;
		if (n > len - off)
			n = len - off;
		if (write_all(fd, buf + off, n))
			return -1;
		off += n;
	}
	return 0;
}

/* Reads exactly len bytes or fails after IO_TIMEOUT_MS without progress. */
static int read_full(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (poll(&pf, 1, IO_TIMEOUT_MS) <= 0)
			return -ETIMEDOUT;
		n = recv(fd, p, len, MSG_DONTWAIT);
		if (n == 0)
			return -EPIPE;
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads one whole frame; returns its payload length or -errno. */
static int read_frame(int fd, uint8_t *type, uint8_t *payload, size_t cap)
{
	struct derp_frame_hdr h;
	uint32_t len;
	int err = read_full(fd, &h, sizeof(h));

	*type = 0;
	if (err)
		return err;
	len = derp_hdr_len(&h);
	if (len > cap)
		return -EMSGSIZE;
	err = read_full(fd, payload, len);
	if (err)
		return err;
	*type = h.type;
	return (int)len;
}

static bool nothing_to_read(int fd, int wait_ms)
{
	struct pollfd pf = {.fd = fd, .events = POLLIN};

	return poll(&pf, 1, wait_ms) == 0;
}

static uint64_t counter(struct kd_offload *o, enum kd_relay_reason r)
{
	uint64_t c[KD_RELAY_REASON_MAX];

	assert_int_equal(kd_offload_counters(o, c), 0);
	return c[r];
}

/* ---- fixture -------------------------------------------------------------- */

static int setup(void **state)
{
	static struct fixture f;
	struct kd_offload_opts opts = {0};
	char why[256];
	int err;

	memset(&f, 0, sizeof(f));
	*state = &f;
	if (!kd_offload_supported(why, sizeof(why))) {
		printf("# SKIP sockmap offload unsupported: %s\n", why);
		return 0;
	}
	snprintf(f.pin_dir, sizeof(f.pin_dir), "/sys/fs/bpf/kderp-test-%d", (int)getpid());
	opts.pin_dir = f.pin_dir;
	/* Unpaced senders outrun any reader (the kernel drains their sockets at
	 * once, so TCP never pushes back): exactness tests use a bound that
	 * never triggers; the stalled-reader test lowers it. */
	opts.queue_bytes = 512u << 20;
	err = kd_offload_open(&f.o, &opts);
	if (err == -EPERM || err == -EACCES) {
		printf("# SKIP sockmap offload: no privilege to load BPF (%s)\n", strerror(-err));
		f.o = NULL;
		return 0;
	}
	assert_int_equal(err, 0);
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	if (f->o && getenv("KD_TEST_DUMP")) {
		static char m[8192];

		if (kd_offload_metrics(f->o, m, sizeof(m)) > 0)
			fputs(m, stderr);
	}
	for (int i = 0; i < f->n; i++) {
		if (f->cl[i].s >= 0) {
			kd_offload_remove(f->o, f->cl[i].s, f->cl[i].key);
			close(f->cl[i].s);
		}
		if (f->cl[i].c >= 0)
			close(f->cl[i].c);
	}
	kd_offload_close(f->o);
	f->o = NULL;
	return 0;
}

#define REQUIRE_BPF(f)                                                         \
	do {                                                                   \
		if (!(f)->o) {                                                 \
			skip();                                                \
			return;                                                \
		}                                                              \
	} while (0)

static struct client *add_client(struct fixture *f, bool offload)
{
	struct client *c = &f->cl[f->n];

	assert_true(f->n < MAX_CLIENTS);
	c->id = (uint32_t)f->n + 1;
	make_key(c->key, c->id);
	assert_int_equal(tcp_pair(&c->c, &c->s), 0);
	f->n++;
	if (offload)
		assert_int_equal(kd_offload_add(f->o, c->s, c->key), 0);
	return c;
}

/* ---- sender thread -------------------------------------------------------- */

struct sender {
	pthread_t th;
	const struct client *from;
	const uint8_t *dst;
	uint32_t frames;
	uint32_t min_len, max_len; /* payload bytes */
	enum split_mode mode;
	uint32_t seed;
	int rc;
};

static uint32_t payload_len(struct sender *s, uint32_t seq, uint32_t *rng)
{
	static const uint32_t fixed[] = {12, 13, 31, 32, 33, 100, 1200, 1400, 4096, 16384, 65535, 65536};

	if (s->min_len == 0)
		return fixed[seq % (sizeof(fixed) / sizeof(fixed[0]))];
	return s->min_len + xs32(rng) % (s->max_len - s->min_len + 1);
}

static void *sender_main(void *arg)
{
	struct sender *s = arg;
	size_t cap = 256 * 1024, used = 0;
	uint8_t *buf = malloc(cap + MAX_FRAME);
	uint32_t rng = s->seed | 1, wrng = s->seed * 3 + 1;

	s->rc = -ENOMEM;
	if (!buf)
		return NULL;
	s->rc = 0;
	for (uint32_t seq = 0; seq < s->frames && !s->rc; seq++) {
		used += build_send(buf + used, s->dst, s->from->id, seq, payload_len(s, seq, &rng));
		if (used >= cap || seq + 1 == s->frames || s->mode != SPLIT_COALESCED) {
			if (write_split(s->from->c, buf, used, s->mode, &wrng))
				s->rc = -EIO;
			used = 0;
		}
	}
	free(buf);
	return NULL;
}

static void sender_start(struct sender *s)
{
	assert_int_equal(pthread_create(&s->th, NULL, sender_main, s), 0);
}

static void sender_join(struct sender *s)
{
	pthread_join(s->th, NULL);
	assert_int_equal(s->rc, 0);
}

/* Receives the frames senders[0..n) sent to rx, all relayed: every one a
 * RecvPacket with the sender's key, in order per sender, byte-exact. */
static void expect_relayed(int rx, struct sender *snd, int n, uint32_t extra_injected)
{
	static uint8_t payload[MAX_FRAME];
	uint32_t next[MAX_CLIENTS] = {0}, remaining = extra_injected, total = 0;
	uint32_t rng[MAX_CLIENTS];

	for (int i = 0; i < n; i++) {
		total += snd[i].frames;
		rng[i] = snd[i].seed | 1;
	}
	while (total || remaining) {
		uint8_t type = 0;
		int len = read_frame(rx, &type, payload, sizeof(payload));
		int i;

		assert_true(len >= 0);
		if (type != DERP_FRAME_RECV_PACKET) {
			assert_true(remaining > 0);
			remaining--;
			continue;
		}
		assert_true(len >= DERP_KEY_LEN);
		for (i = 0; i < n; i++)
			if (!memcmp(payload, snd[i].from->key, DERP_KEY_LEN))
				break;
		assert_true(i < n);
		assert_true(next[i] < snd[i].frames);
		assert_int_equal((uint32_t)len - DERP_KEY_LEN, payload_len(&snd[i], next[i], &rng[i]));
		assert_true(check_payload(payload + DERP_KEY_LEN, (uint32_t)len - DERP_KEY_LEN,
					  snd[i].from->id, next[i]));
		next[i]++;
		total--;
	}
}

/* ---- tests ---------------------------------------------------------------- */

static void relay_one_mode(void **state, enum split_mode mode, uint32_t frames)
{
	struct fixture *f = *state;
	struct client *a, *b;
	struct sender s = {0};
	uint64_t before;

	REQUIRE_BPF(f);
	a = add_client(f, true);
	b = add_client(f, true);
	before = counter(f->o, KD_RELAY_REDIRECTED);
	s = (struct sender){.from = a, .dst = b->key, .frames = frames, .mode = mode, .seed = 7};
	sender_start(&s);
	expect_relayed(b->c, &s, 1, 0);
	sender_join(&s);
	assert_int_equal(counter(f->o, KD_RELAY_REDIRECTED) - before, frames);
	/* nothing leaked to the daemon's side of either socket */
	assert_true(nothing_to_read(a->s, 50));
	assert_true(nothing_to_read(b->s, 0));
	assert_true(nothing_to_read(b->c, 0));
}

static void test_relay_tiny_writes(void **state)
{
	relay_one_mode(state, SPLIT_TINY, 24); /* 2 rounds of all sizes incl. 64 KiB */
}

static void test_relay_random_splits(void **state)
{
	relay_one_mode(state, SPLIT_RANDOM, 600);
}

static void test_relay_coalesced(void **state)
{
	relay_one_mode(state, SPLIT_COALESCED, 600);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_relay_tiny_writes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relay_random_splits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relay_coalesced, setup, teardown),
	};

	kd_log_set_prefix("test_sockmap");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
