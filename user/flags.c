// SPDX-License-Identifier: MIT
#include "flags.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int kd_parse_duration_ms(const char *s, unsigned *ms)
{
	double total = 0;
	const char *p = s;

	if (!strcmp(s, "0")) {
		*ms = 0;
		return 0;
	}
	if (!*p)
		return -EINVAL;
	while (*p) {
		char *end;
		errno = 0;
		double v = strtod(p, &end);
		if (end == p || errno || v < 0)
			return -EINVAL;
		p = end;
		double unit;
		if (!strncmp(p, "ms", 2)) {
			unit = 1;
			p += 2;
		} else if (*p == 's') {
			unit = 1000;
			p++;
		} else if (*p == 'm') {
			unit = 60000;
			p++;
		} else if (*p == 'h') {
			unit = 3600000;
			p++;
		} else {
			return -EINVAL;
		}
		total += v * unit;
	}
	if (total > (double)UINT_MAX)
		return -ERANGE;
	*ms = (unsigned)llround(total);
	return 0;
}

static int parse_bool(const char *v, bool *out)
{
	static const char *const t[] = {"1", "t", "T", "true", "TRUE", "True"};
	static const char *const f[] = {"0", "f", "F", "false", "FALSE", "False"};

	for (size_t i = 0; i < 6; i++) {
		if (!strcmp(v, t[i])) {
			*out = true;
			return 0;
		}
		if (!strcmp(v, f[i])) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

int kd_flag_set_value(struct kd_flag *f, const char *v)
{
	char *end;

	switch (f->type) {
	case KD_FLAG_BOOL:
		return parse_bool(v, f->ptr);
	case KD_FLAG_STRING:
		*(const char **)f->ptr = v;
		return 0;
	case KD_FLAG_INT: {
		errno = 0;
		long x = strtol(v, &end, 10);
		if (errno || end == v || *end || x < INT_MIN || x > INT_MAX)
			return -EINVAL;
		*(int *)f->ptr = (int)x;
		return 0;
	}
	case KD_FLAG_DOUBLE: {
		errno = 0;
		double x = strtod(v, &end);
		if (errno || end == v || *end)
			return -EINVAL;
		*(double *)f->ptr = x;
		return 0;
	}
	case KD_FLAG_DURATION_MS:
		return kd_parse_duration_ms(v, f->ptr);
	}
	return -EINVAL;
}

int kd_flags_parse(struct kd_flag *flags, size_t n, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (a[0] != '-' || !a[1]) {
			fprintf(stderr, "unexpected argument %s\n", a);
			return -EINVAL;
		}
		a += (a[1] == '-') ? 2 : 1;
		const char *eq = strchr(a, '=');
		size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
		struct kd_flag *f = NULL;
		for (size_t k = 0; k < n; k++) {
			if (strlen(flags[k].name) == nlen && !strncmp(flags[k].name, a, nlen)) {
				f = &flags[k];
				break;
			}
		}
		if (!f) {
			fprintf(stderr, "flag provided but not defined: -%.*s\n", (int)nlen, a);
			return -EINVAL;
		}
		const char *v;
		if (eq) {
			v = eq + 1;
		} else if (f->type == KD_FLAG_BOOL) {
			v = "true";
		} else if (i + 1 < argc) {
			v = argv[++i];
		} else {
			fprintf(stderr, "flag needs an argument: -%s\n", f->name);
			return -EINVAL;
		}
		if (kd_flag_set_value(f, v) != 0) {
			fprintf(stderr, "invalid value \"%s\" for flag -%s\n", v, f->name);
			return -EINVAL;
		}
		f->set = true;
	}
	return 0;
}

void kd_flags_usage(const struct kd_flag *flags, size_t n, const char *prog)
{
	static const char *const types[] = {"", " string", " int", " float", " duration"};

	fprintf(stderr, "Usage of %s:\n", prog);
	for (size_t k = 0; k < n; k++)
		fprintf(stderr, "  -%s%s\n    \t%s\n", flags[k].name, types[flags[k].type], flags[k].help);
}
