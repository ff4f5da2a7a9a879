// SPDX-License-Identifier: MIT
#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define KD_LOOP_MAX_EVENTS 256

struct kd_loop {
	int epfd;
	struct kd_io wake_io;
	int wake_pending;          /* atomic: a wake is on its way */
	volatile int stop;
	uint64_t now_ms;
	struct kd_timer **heap;
	size_t heap_len, heap_cap;
	void (*before_sleep)(void *);
	void *before_sleep_arg;
	void (*wake_cb)(void *);
	void *wake_arg;
};

uint64_t kd_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t kd_loop_now(const struct kd_loop *l)
{
	return l->now_ms;
}

static void on_wake(struct kd_io *io, uint32_t events)
{
	struct kd_loop *l = (struct kd_loop *)((char *)io - offsetof(struct kd_loop, wake_io));
	uint64_t v;

	(void)events;
	/* clear the flag before draining so a wake racing with the drain is kept */
	__atomic_store_n(&l->wake_pending, 0, __ATOMIC_SEQ_CST);
	while (read(io->fd, &v, sizeof(v)) == sizeof(v))
		;
	if (l->wake_cb)
		l->wake_cb(l->wake_arg);
}

int kd_loop_new(struct kd_loop **out)
{
	struct kd_loop *l = calloc(1, sizeof(*l));
	int err;

	*out = NULL;
	if (!l)
		return -ENOMEM;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		err = -errno;
		goto err_free;
	}
	l->wake_io.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (l->wake_io.fd < 0) {
		err = -errno;
		goto err_close_ep;
	}
	l->wake_io.cb = on_wake;
	err = kd_io_add(l, &l->wake_io, EPOLLIN);
	if (err)
		goto err_close_wake;
	l->now_ms = kd_now_ms();
	*out = l;
	return 0;

err_close_wake:
	close(l->wake_io.fd);
err_close_ep:
	close(l->epfd);
err_free:
	free(l);
	return err;
}

void kd_loop_free(struct kd_loop *l)
{
	if (!l)
		return;
	close(l->wake_io.fd);
	close(l->epfd);
	free(l->heap);
	free(l);
}

int kd_io_add(struct kd_loop *l, struct kd_io *io, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = io};

	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, io->fd, &ev) < 0)
		return -errno;
	io->events = events;
	return 0;
}

int kd_io_mod(struct kd_loop *l, struct kd_io *io, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = io};

	if (io->events == events)
		return 0;
	if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, io->fd, &ev) < 0)
		return -errno;
	io->events = events;
	return 0;
}

void kd_io_del(struct kd_loop *l, struct kd_io *io)
{
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
	io->events = 0;
}

/* --- timer heap (min-heap on when_ms) --- */

void kd_timer_init(struct kd_timer *t, kd_timer_cb cb)
{
	t->when_ms = 0;
	t->heap_idx = (size_t)-1;
	t->cb = cb;
}

static void heap_swap(struct kd_loop *l, size_t a, size_t b)
{
	struct kd_timer *t = l->heap[a];
	l->heap[a] = l->heap[b];
	l->heap[b] = t;
	l->heap[a]->heap_idx = a;
	l->heap[b]->heap_idx = b;
}

static void heap_up(struct kd_loop *l, size_t i)
{
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (l->heap[p]->when_ms <= l->heap[i]->when_ms)
			break;
		heap_swap(l, p, i);
		i = p;
	}
}

static void heap_down(struct kd_loop *l, size_t i)
{
	for (;;) {
		size_t c = 2 * i + 1, m = i;
		if (c < l->heap_len && l->heap[c]->when_ms < l->heap[m]->when_ms)
			m = c;
		if (c + 1 < l->heap_len && l->heap[c + 1]->when_ms < l->heap[m]->when_ms)
			m = c + 1;
		if (m == i)
			return;
		heap_swap(l, i, m);
		i = m;
	}
}

void kd_timer_disarm(struct kd_loop *l, struct kd_timer *t)
{
	size_t i = t->heap_idx;

	if (i == (size_t)-1)
		return;
	t->heap_idx = (size_t)-1;
	l->heap_len--;
	if (i == l->heap_len)
		return;
	l->heap[i] = l->heap[l->heap_len];
	l->heap[i]->heap_idx = i;
	heap_down(l, i);
	heap_up(l, i);
}

int kd_timer_arm(struct kd_loop *l, struct kd_timer *t, uint64_t when_ms)
{
	if (t->heap_idx != (size_t)-1) {
		uint64_t old = t->when_ms;
		t->when_ms = when_ms;
		if (when_ms < old)
			heap_up(l, t->heap_idx);
		else
			heap_down(l, t->heap_idx);
		return 0;
	}
	if (l->heap_len == l->heap_cap) {
		size_t cap = l->heap_cap ? l->heap_cap * 2 : 64;
		struct kd_timer **h = realloc(l->heap, cap * sizeof(*h));
		if (!h)
			return -ENOMEM;
		l->heap = h;
		l->heap_cap = cap;
	}
	t->when_ms = when_ms;
	t->heap_idx = l->heap_len;
	l->heap[l->heap_len++] = t;
	heap_up(l, t->heap_idx);
	return 0;
}

static void run_timers(struct kd_loop *l)
{
	/* bounded so a timer that re-arms itself in the past cannot spin forever */
	for (size_t budget = l->heap_len + 64; budget && l->heap_len; budget--) {
		struct kd_timer *t = l->heap[0];
		if (t->when_ms > l->now_ms)
			return;
		kd_timer_disarm(l, t);
		t->cb(t);
	}
}

void kd_loop_set_before_sleep(struct kd_loop *l, void (*fn)(void *), void *arg)
{
	l->before_sleep = fn;
	l->before_sleep_arg = arg;
}

void kd_loop_set_wake_cb(struct kd_loop *l, void (*fn)(void *), void *arg)
{
	l->wake_cb = fn;
	l->wake_arg = arg;
}

void kd_loop_wake(struct kd_loop *l)
{
	uint64_t one = 1;

	if (__atomic_exchange_n(&l->wake_pending, 1, __ATOMIC_SEQ_CST))
		return;
	if (write(l->wake_io.fd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is saturated, so a wake is pending anyway */
	}
}

void kd_loop_stop(struct kd_loop *l)
{
	__atomic_store_n(&l->stop, 1, __ATOMIC_SEQ_CST);
	l->wake_pending = 0;
	kd_loop_wake(l);
}

int kd_loop_run(struct kd_loop *l)
{
	struct epoll_event evs[KD_LOOP_MAX_EVENTS];

	while (!__atomic_load_n(&l->stop, __ATOMIC_SEQ_CST)) {
		int timeout = -1, n;

		if (l->before_sleep)
			l->before_sleep(l->before_sleep_arg);
		if (l->heap_len) {
			uint64_t now = kd_now_ms(), when = l->heap[0]->when_ms;
			timeout = when <= now ? 0 : (int)(when - now > 60000 ? 60000 : when - now);
		}
		n = epoll_wait(l->epfd, evs, KD_LOOP_MAX_EVENTS, timeout);
		if (n < 0 && errno != EINTR)
			return -errno;
		l->now_ms = kd_now_ms();
		for (int i = 0; i < n; i++) {
			struct kd_io *io = evs[i].data.ptr;
			io->cb(io, evs[i].events);
		}
		run_timers(l);
	}
	return 0;
}
