// SPDX-License-Identifier: MIT
/* sockmap-bench: relays N sender/receiver pairs over loopback through
 *   sockmap   - the kernel data plane (user/offload.c),
 *   userspace - a simple batched userspace relay (one epoll thread: read
 *               256 KiB, rewrite every whole SendPacket in place, one write),
 *   raw       - no relay: the sender's frames go straight to the receiver,
 * and reports delivered frames/s, Gbit/s and whole-machine CPU (/proc/stat,
 * so kernel work on any core counts). A measurement, not a test. */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "derp_wire.h"
#include "log.h"
#include "offload.h"

#define MAX_PAIRS 64
#define CHUNK (256 * 1024)

enum mode { MODE_SOCKMAP, MODE_USERSPACE, MODE_RAW };
static const char *const mode_names[] = {"sockmap", "userspace", "raw"};

struct pair {
	int snd_c, snd_s; /* sender's end, relay's end */
	int rcv_c, rcv_s; /* receiver's end, relay's end (raw: unused) */
	uint8_t skey[DERP_KEY_LEN], rkey[DERP_KEY_LEN];
	uint32_t payload;
	pthread_t snd_th, rcv_th;
	_Atomic uint64_t frames, bytes;
};

static atomic_bool stop;
static const char *pin_dir = ""; /* -P: pin under KD_RELAY_PIN_DIR for bpftool */
static double rate_bps; /* -r: per-pair pacing in bit/s, 0 = unpaced */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cpu_sample(uint64_t *busy, uint64_t *total)
{
	unsigned long long v[10] = {0};
	FILE *f = fopen("/proc/stat", "r");
	int n;

	if (!f)
		return -errno;
	n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
		   &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
	fclose(f);
	if (n < 8)
		return -EINVAL;
	*total = 0;
	for (int i = 0; i < 8; i++) /* guest time is already in user */
		*total += v[i];
	*busy = *total - v[3] - v[4];
	return 0;
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
	setsockopt(*s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return 0;
fail:
	close(l);
	return -errno;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void *sender_main(void *arg)
{
	struct pair *p = arg;
	size_t flen = DERP_FRAME_HDR_LEN + DERP_KEY_LEN + p->payload, n = 0;
	uint8_t *buf = malloc(CHUNK + flen);

	if (!buf)
		return NULL;
	/* as many whole frames as fit in one 256 KiB write (at least one) */
	do {
		derp_hdr_put((struct derp_frame_hdr *)(buf + n), DERP_FRAME_SEND_PACKET,
			     DERP_KEY_LEN + p->payload);
		memcpy(buf + n + DERP_FRAME_HDR_LEN, p->rkey, DERP_KEY_LEN);
		memset(buf + n + DERP_FRAME_HDR_LEN + DERP_KEY_LEN, 0x5a, p->payload);
		n += flen;
	} while (n + flen <= CHUNK);
	/* paced: 16 frames per write, sleeping off whatever runs ahead */
	size_t burst = rate_bps > 0 ? (n / flen < 16 ? n / flen : 16) * flen : n;
	uint64_t t0 = now_ns(), sent = 0;

	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		if (rate_bps > 0) {
			double due = (double)(now_ns() - t0) * rate_bps / 8e9;

			if ((double)sent > due) {
				usleep(200);
				continue;
			}
		}
		if (write_all(p->snd_c, buf, burst))
			break;
		sent += burst;
	}
	free(buf);
	return NULL;
}

/* Counts whole frames as they arrive; parses only the headers. */
static void *receiver_main(void *arg)
{
	struct pair *p = arg;
	uint8_t *buf = malloc(CHUNK);
	uint64_t need = 0; /* bytes of the current frame still to come */
	uint8_t hdr[DERP_FRAME_HDR_LEN];
	size_t have_hdr = 0;

	if (!buf)
		return NULL;
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		struct pollfd pf = {.fd = p->rcv_c, .events = POLLIN};
		ssize_t r;
		size_t i = 0;

		if (poll(&pf, 1, 100) <= 0)
			continue;
		r = recv(p->rcv_c, buf, CHUNK, MSG_DONTWAIT);
		if (r <= 0) {
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			break;
		}
		while (i < (size_t)r) {
			if (need) {
				size_t take = (size_t)r - i < need ? (size_t)r - i : need;

				i += take;
				need -= take;
				if (!need)
					atomic_fetch_add_explicit(&p->frames, 1, memory_order_relaxed);
				continue;
			}
			hdr[have_hdr++] = buf[i++];
			if (have_hdr == DERP_FRAME_HDR_LEN) {
				need = derp_hdr_len((struct derp_frame_hdr *)hdr);
				have_hdr = 0;
				atomic_fetch_add_explicit(&p->bytes, DERP_FRAME_HDR_LEN + need,
							  memory_order_relaxed);
				if (!need)
					atomic_fetch_add_explicit(&p->frames, 1, memory_order_relaxed);
			}
		}
	}
	free(buf);
	return NULL;
}

/* The userspace relay: one thread, epoll over the senders' relay ends; each
 * readable socket yields up to 256 KiB, every whole SendPacket in it is
 * rewritten in place and the whole frames go out in one write. */
struct urelay {
	struct pair *pairs;
	int n, ep;
	pthread_t th;
};

struct ubuf {
	uint8_t *b;
	size_t len;
};

static void *urelay_main(void *arg)
{
	struct urelay *u = arg;
	struct ubuf *bufs = calloc((size_t)u->n, sizeof(*bufs));
	struct epoll_event ev[MAX_PAIRS];

	for (int i = 0; i < u->n; i++)
		bufs[i].b = malloc(CHUNK + DERP_FRAME_HDR_LEN + DERP_KEY_LEN + DERP_MAX_PACKET);
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		int k = epoll_wait(u->ep, ev, MAX_PAIRS, 100);

		for (int e = 0; e < k; e++) {
			int i = (int)ev[e].data.u32;
			struct pair *p = &u->pairs[i];
			struct ubuf *b = &bufs[i];
			ssize_t r = recv(p->snd_s, b->b + b->len, CHUNK, MSG_DONTWAIT);
			size_t off = 0;

			if (r <= 0)
				continue;
			b->len += (size_t)r;
			while (b->len - off >= DERP_FRAME_HDR_LEN + DERP_KEY_LEN) {
				struct derp_packet_hdr *h = (struct derp_packet_hdr *)(b->b + off);
				size_t fl = DERP_FRAME_HDR_LEN + derp_hdr_len(&h->h);

				if (b->len - off < fl)
					break;
				h->h.type = DERP_FRAME_RECV_PACKET;
				memcpy(h->key, p->skey, DERP_KEY_LEN);
				off += fl;
			}
			if (off && write_all(p->rcv_s, b->b, off))
				atomic_store(&stop, true);
			memmove(b->b, b->b + off, b->len - off);
			b->len -= off;
		}
	}
	for (int i = 0; i < u->n; i++)
		free(bufs[i].b);
	free(bufs);
	return NULL;
}

static uint64_t self_cpu_ns(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ull +
	       (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ull;
}

struct result {
	double fps, gbps, cpu, self_cpu;
	uint64_t dropped;
};

static int run(enum mode m, int npairs, uint32_t payload, double secs, struct result *res)
{
	static struct pair pairs[MAX_PAIRS];
	struct kd_offload *o = NULL;
	struct urelay u = {.pairs = pairs, .n = npairs, .ep = -1};
	uint64_t b0, t0, b1, t1, ns0, ns1, f0 = 0, f1 = 0, y0 = 0, y1 = 0;
	uint64_t c[KD_RELAY_REASON_MAX], s0, s1;
	int err;

	memset(pairs, 0, sizeof(pairs));
	atomic_store(&stop, false);
	if (m == MODE_SOCKMAP) {
		struct kd_offload_opts opts = {.pin_dir = pin_dir, .queue_bytes = 4u << 20};

		err = kd_offload_open(&o, &opts);
		if (err)
			return err;
	}
	if (m == MODE_USERSPACE)
		u.ep = epoll_create1(0);
	for (int i = 0; i < npairs; i++) {
		struct pair *p = &pairs[i];

		p->payload = payload;
		memset(p->skey, 0x10 + i, DERP_KEY_LEN);
		memset(p->rkey, 0x80 + i, DERP_KEY_LEN);
		if ((err = tcp_pair(&p->snd_c, &p->snd_s)))
			return err;
		if (m == MODE_RAW) {
			p->rcv_c = p->snd_s; /* the receiver reads the sender directly */
			p->rcv_s = -1;
			continue;
		}
		if ((err = tcp_pair(&p->rcv_c, &p->rcv_s)))
			return err;
		if (m == MODE_SOCKMAP) {
			if ((err = kd_offload_add(o, p->snd_s, p->skey)) ||
			    (err = kd_offload_add(o, p->rcv_s, p->rkey)))
				return err;
		} else {
			struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};

			epoll_ctl(u.ep, EPOLL_CTL_ADD, p->snd_s, &ev);
		}
	}
	if (m == MODE_USERSPACE)
		pthread_create(&u.th, NULL, urelay_main, &u);
	for (int i = 0; i < npairs; i++) {
		pthread_create(&pairs[i].rcv_th, NULL, receiver_main, &pairs[i]);
		pthread_create(&pairs[i].snd_th, NULL, sender_main, &pairs[i]);
	}
	usleep(300000); /* warm up, then measure a window */
	for (int i = 0; i < npairs; i++) {
		f0 += atomic_load(&pairs[i].frames);
		y0 += atomic_load(&pairs[i].bytes);
	}
	ns0 = now_ns();
	cpu_sample(&b0, &t0);
	s0 = self_cpu_ns();
	usleep((useconds_t)(secs * 1e6));
	cpu_sample(&b1, &t1);
	s1 = self_cpu_ns();
	ns1 = now_ns();
	for (int i = 0; i < npairs; i++) {
		f1 += atomic_load(&pairs[i].frames);
		y1 += atomic_load(&pairs[i].bytes);
	}
	atomic_store(&stop, true);
	for (int i = 0; i < npairs; i++) {
		/* unblock a sender stuck in write() toward a full relay */
		shutdown(pairs[i].snd_c, SHUT_RDWR);
		pthread_join(pairs[i].snd_th, NULL);
		shutdown(pairs[i].rcv_c, SHUT_RDWR);
		pthread_join(pairs[i].rcv_th, NULL);
	}
	if (m == MODE_USERSPACE) {
		for (int i = 0; i < npairs; i++)
			shutdown(pairs[i].rcv_s, SHUT_RDWR);
		pthread_join(u.th, NULL);
		close(u.ep);
	}
	res->dropped = 0;
	if (o && kd_offload_counters(o, c) == 0)
		res->dropped = c[KD_RELAY_DROPPED_OVER_BOUND];
	for (int i = 0; i < npairs; i++) {
		if (o) {
			kd_offload_remove(o, pairs[i].snd_s, pairs[i].skey);
			kd_offload_remove(o, pairs[i].rcv_s, pairs[i].rkey);
		}
		close(pairs[i].snd_c);
		close(pairs[i].snd_s);
		if (m != MODE_RAW) {
			close(pairs[i].rcv_c);
			close(pairs[i].rcv_s);
		}
	}
	kd_offload_close(o);
	res->fps = (double)(f1 - f0) * 1e9 / (double)(ns1 - ns0);
	res->gbps = (double)(y1 - y0) * 8 / (double)(ns1 - ns0);
	res->cpu = t1 > t0 ? 100.0 * (double)(b1 - b0) / (double)(t1 - t0) : 0;
	/* in core-%: this process's threads only; the psock backlog runs in
	 * kworkers and is missing here, which is why machine CPU is reported */
	res->self_cpu = 100.0 * (double)(s1 - s0) / (double)(ns1 - ns0);
	return 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: sockmap-bench [-m sockmap|userspace|raw|all] [-p pairs] [-s payload] "
		"[-t seconds] [-r mbit] [-P] [--json]\n"
		"  -r paces each sender to mbit Mbit/s (compare CPU at equal delivered rate)\n"
		"  -P pins the maps under " KD_RELAY_PIN_DIR " while it runs (for bpftool)\n"
		"  payload is the packet size in bytes (frame = 5 + 32 + payload)\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {{"json", no_argument, NULL, 'j'}, {0}};
	int npairs = 1, first = 0, last = 2, c;
	uint32_t payload = 1400;
	double secs = 3;
	bool json = false;

	kd_log_set_prefix("sockmap-bench");
	signal(SIGPIPE, SIG_IGN); /* shutdown() at the end breaks pipes on purpose */
	while ((c = getopt_long(argc, argv, "m:p:s:t:r:Ph", lo, NULL)) != -1) {
		switch (c) {
		case 'm':
			first = last = -1;
			for (int i = 0; i < 3; i++)
				if (!strcmp(optarg, mode_names[i]))
					first = last = i;
			if (!strcmp(optarg, "all"))
				first = 0, last = 2;
			if (first < 0) {
				usage();
				return 2;
			}
			break;
		case 'p':
			npairs = atoi(optarg);
			break;
		case 's':
			payload = (uint32_t)strtoul(optarg, NULL, 10);
			break;
		case 't':
			secs = atof(optarg);
			break;
		case 'j':
			json = true;
			break;
		case 'P':
			pin_dir = KD_RELAY_PIN_DIR;
			break;
		case 'r':
			rate_bps = atof(optarg) * 1e6;
			break;
		default:
			usage();
			return 2;
		}
	}
	if (npairs < 1 || npairs > MAX_PAIRS || payload > DERP_MAX_PACKET || secs <= 0) {
		usage();
		return 2;
	}
	for (int m = first; m <= last; m++) {
		struct result r;
		int err = run((enum mode)m, npairs, payload, secs, &r);

		if (err) {
			fprintf(stderr, "sockmap-bench: %s: %s\n", mode_names[m], strerror(-err));
			return 1;
		}
		if (json)
			printf("{\"mode\":\"%s\",\"pairs\":%d,\"payload\":%u,\"frames_per_s\":%.0f,"
			       "\"gbit_per_s\":%.3f,\"machine_cpu_pct\":%.1f,\"process_cpu_core_pct\":%.1f,"
			       "\"dropped\":%llu}\n",
			       mode_names[m], npairs, payload, r.fps, r.gbps, r.cpu, r.self_cpu,
			       (unsigned long long)r.dropped);
		else
			printf("%-9s pairs=%-2d payload=%-5u %10.0f frames/s %7.2f Gbit/s  machine cpu %5.1f%%"
			       "  process %5.1f%% of a core  dropped %llu\n",
			       mode_names[m], npairs, payload, r.fps, r.gbps, r.cpu, r.self_cpu,
			       (unsigned long long)r.dropped);
		fflush(stdout);
	}
	return 0;
}
