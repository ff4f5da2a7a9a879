/* SPDX-License-Identifier: MIT */
/* Small pure parsers shared by the URL and host-list readers. */
#ifndef KD_PARSE_UTIL_H
#define KD_PARSE_UTIL_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

/* Exactly n decimal digits naming a port 1..65535; 0 or -EINVAL. */
static inline int kd_parse_port(const char *s, size_t n, uint16_t *port)
{
	unsigned v = 0;

	if (n == 0 || n > 5)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v == 0 || v > 65535)
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

#endif
