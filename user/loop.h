/* SPDX-License-Identifier: MIT */
/* A per-thread epoll reactor with a timer heap and before-sleep hooks.
 * Cross-thread work enters a loop only through kd_loop_wake(): the owner
 * registers a wake callback that drains whatever inbox it keeps. */
#ifndef KD_LOOP_H
#define KD_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kd_loop;
struct kd_io;

typedef void (*kd_io_cb)(struct kd_io *io, uint32_t events);

struct kd_io {
	int fd;
	uint32_t events;   /* what is armed in epoll */
	kd_io_cb cb;
};

struct kd_timer;
typedef void (*kd_timer_cb)(struct kd_timer *t);

struct kd_timer {
	uint64_t when_ms;
	size_t heap_idx;   /* SIZE_MAX when not armed */
	kd_timer_cb cb;
};

int kd_loop_new(struct kd_loop **out);
void kd_loop_free(struct kd_loop *l);

int kd_io_add(struct kd_loop *l, struct kd_io *io, uint32_t events);
int kd_io_mod(struct kd_loop *l, struct kd_io *io, uint32_t events);
void kd_io_del(struct kd_loop *l, struct kd_io *io);

void kd_timer_init(struct kd_timer *t, kd_timer_cb cb);
/* Arms (or re-arms) t to fire at when_ms on the loop's clock. */
int kd_timer_arm(struct kd_loop *l, struct kd_timer *t, uint64_t when_ms);
void kd_timer_disarm(struct kd_loop *l, struct kd_timer *t);
static inline bool kd_timer_armed(const struct kd_timer *t) { return t->heap_idx != (size_t)-1; }

/* Monotonic milliseconds, cached per loop iteration. */
uint64_t kd_loop_now(const struct kd_loop *l);
uint64_t kd_now_ms(void);

/* Called once per iteration after events and timers, before epoll_wait:
 * where batched writes get flushed and deferred frees happen. */
void kd_loop_set_before_sleep(struct kd_loop *l, void (*fn)(void *), void *arg);
/* Called in the loop thread after any kd_loop_wake() from another thread. */
void kd_loop_set_wake_cb(struct kd_loop *l, void (*fn)(void *), void *arg);
/* Thread safe; coalesces. */
void kd_loop_wake(struct kd_loop *l);

/* Runs until kd_loop_stop(); returns 0 or -errno. */
int kd_loop_run(struct kd_loop *l);
/* Thread safe. */
void kd_loop_stop(struct kd_loop *l);

#endif
