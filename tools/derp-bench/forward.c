// SPDX-License-Identifier: MIT
/* The "forwarder" baseline: a child process that copies bytes from one TCP
 * connection to another and does nothing else — no framing, no registry, no
 * queues. Any userspace relay on this machine carries each byte over two
 * loopback connections too, so this is the ceiling it can be compared with;
 * raw TCP (one connection, no relay) is not reachable by any relay.
 *
 * The benchmark's sender connects to the forwarder and first writes the
 * receiver's port (2 bytes, big endian); from then on the forwarder copies
 * sender -> receiver with 256 KiB reads and writes, one event loop per
 * thread like kderpd's workers, and the same the other way (the latency
 * probe's echo answers). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#define FWD_BUF (256u << 10)

struct fwd_dir {
	int from, to;
	size_t off, len;
	uint8_t buf[FWD_BUF];
};

struct fwd_flow {
	struct fwd_dir d[2];
	struct fwd_flow *next_dead; /* freed after the batch: both fds may be in it */
	bool dead;
};

static int fwd_listener = -1;

/* Reads the 2-byte port preamble (blocking: it is sent with connect) and
 * connects to that loopback port. */
static struct fwd_flow *fwd_open(int from)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	uint8_t pp[2];
	int one = 1;
	struct fwd_flow *f;

	struct timeval tv = {.tv_sec = 1};

	/* a connection that never names its target must not hold the thread */
	setsockopt(from, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (recv(from, pp, 2, MSG_WAITALL) != 2)
		return NULL;
	sa.sin_port = htons((uint16_t)(pp[0] << 8 | pp[1]));
	f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	int to = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (to < 0 || connect(to, (struct sockaddr *)&sa, sizeof(sa))) {
		if (to >= 0)
			close(to);
		free(f);
		return NULL;
	}
	f->d[0].from = f->d[1].to = from;
	f->d[0].to = f->d[1].from = to;
	setsockopt(from, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(to, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	fcntl(from, F_SETFL, O_NONBLOCK);
	fcntl(to, F_SETFL, O_NONBLOCK);
	return f;
}

/* Copies until a read or a write would block; false at EOF or error. */
static bool fwd_pump(struct fwd_dir *f)
{
	for (;;) {
		if (f->off == f->len) {
			ssize_t r = read(f->from, f->buf, sizeof(f->buf));

			if (r == 0)
				return false;
			if (r < 0)
				return errno == EAGAIN || errno == EINTR;
			f->off = 0;
			f->len = (size_t)r;
		}
		ssize_t w = write(f->to, f->buf + f->off, f->len - f->off);

		if (w < 0)
			return errno == EAGAIN || errno == EINTR;
		f->off += (size_t)w;
	}
}

static void *fwd_thread(void *arg)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = NULL}, evs[64];

	(void)arg;
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fwd_listener, &ev))
		_exit(3);
	for (;;) {
		int n = epoll_wait(ep, evs, 64, -1);
		struct fwd_flow *dead = NULL;

		for (int i = 0; i < n; i++) {
			struct fwd_flow *f = evs[i].data.ptr;

			if (f && f->dead)
				continue;
			if (!f) {
				int fd = accept4(fwd_listener, NULL, NULL, SOCK_CLOEXEC);

				if (fd < 0)
					continue;
				f = fwd_open(fd);
				if (!f) {
					close(fd);
					continue;
				}
				/* edge-triggered: fwd_pump runs until EAGAIN on either side */
				struct epoll_event fe = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = f};
				epoll_ctl(ep, EPOLL_CTL_ADD, f->d[0].from, &fe);
				epoll_ctl(ep, EPOLL_CTL_ADD, f->d[0].to, &fe);
			}
			if (!fwd_pump(&f->d[0]) || !fwd_pump(&f->d[1])) {
				/* closing both ends is what the bench's receiver waits for */
				close(f->d[0].from);
				close(f->d[0].to);
				f->dead = true;
				f->next_dead = dead;
				dead = f;
			}
		}
		while (dead) {
			struct fwd_flow *f = dead;

			dead = f->next_dead;
			free(f);
		}
	}
	return NULL;
}

int bench_forwarder_start(int threads, uint16_t *port, int *pid)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), err;

	if (l < 0)
		return -errno;
	if (bind(l, (struct sockaddr *)&sa, sizeof(sa)) || listen(l, 1024) ||
	    getsockname(l, (struct sockaddr *)&sa, &sl)) {
		err = -errno;
		close(l);
		return err;
	}
	pid_t p = fork();
	if (p < 0) {
		err = -errno;
		close(l);
		return err;
	}
	if (p == 0) {
		pthread_t th;

		/* a separate process, so the bench measures its CPU like kderpd's */
		signal(SIGPIPE, SIG_IGN);
		fwd_listener = l;
		for (int i = 1; i < threads; i++)
			if (pthread_create(&th, NULL, fwd_thread, NULL))
				_exit(3);
		fwd_thread(NULL);
		_exit(0);
	}
	close(l);
	*port = ntohs(sa.sin_port);
	*pid = (int)p;
	return 0;
}

void bench_forwarder_stop(int pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}
