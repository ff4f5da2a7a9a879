/* SPDX-License-Identifier: MIT */
/* Bounded output buffer shared by the HTTP and WebSocket response writers:
 * appends never overrun cap, they set `overflow` so the caller returns
 * -ENOSPC once at the end instead of checking every write. */
#ifndef KD_HTTP_INTERNAL_H
#define KD_HTTP_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

struct kd_obuf {
	char *p;
	size_t cap, len;
	bool overflow;
};

static inline void kd_obuf_put(struct kd_obuf *b, const void *s, size_t n)
{
	if (b->overflow || n > b->cap - b->len) {
		b->overflow = true;
		return;
	}
	if (n)
		memcpy(b->p + b->len, s, n);
	b->len += n;
}

static inline void kd_obuf_puts(struct kd_obuf *b, const char *s)
{
	kd_obuf_put(b, s, strlen(s));
}

static inline __attribute__((format(printf, 2, 3))) void kd_obuf_printf(struct kd_obuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->overflow)
		return;
	va_start(ap, fmt);
	n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= b->cap - b->len) {
		b->overflow = true;
		return;
	}
	b->len += (size_t)n;
}

#endif
