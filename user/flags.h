/* SPDX-License-Identifier: MIT */
/* Go-style flags, so an operator can swap derper for kderpd in a unit file:
 * -name value, -name=value, --name=value; booleans as -name or -name=false. */
#ifndef KD_FLAGS_H
#define KD_FLAGS_H

#include <stdbool.h>
#include <stddef.h>

enum kd_flag_type { KD_FLAG_BOOL, KD_FLAG_STRING, KD_FLAG_INT, KD_FLAG_DOUBLE, KD_FLAG_DURATION_MS };

struct kd_flag {
	const char *name;
	enum kd_flag_type type;
	void *ptr;          /* bool*, const char**, int*, double*, unsigned* (ms) */
	const char *help;
	bool set;           /* filled by the parser */
};

/* Parses argv against flags. Returns 0, or -EINVAL after printing one line
 * naming the bad flag or value. Positional arguments are not allowed. */
int kd_flags_parse(struct kd_flag *flags, size_t n, int argc, char **argv);
/* Parses v for f's type into *f->ptr (strings are not copied): 0 or -EINVAL.
 * Does not touch f->set. */
int kd_flag_set_value(struct kd_flag *f, const char *v);
void kd_flags_usage(const struct kd_flag *flags, size_t n, const char *prog);
/* Go durations: "2s", "10m", "15000ms", "1h30m", "0". */
int kd_parse_duration_ms(const char *s, unsigned *ms);

#endif
