// SPDX-License-Identifier: MIT
/* -keep-caps parser: a NUL-terminated copy of the input (the flag arrives
 * as a C string). Accepted lists must survive a format/parse round trip;
 * rejected ones must leave the mask untouched. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "privs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1), out[1024];
	uint64_t m = 0xdeadbeef, again = 0;

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	int r = kd_privs_parse_caps(s, &m);
	if (r == 0) {
		int n = kd_privs_format_caps(m, out, sizeof(out));
		if (n < 0 || (size_t)n >= sizeof(out) || kd_privs_parse_caps(out, &again) != 0 || again != m)
			abort();
	} else if (r != -EINVAL || m != 0xdeadbeef) {
		abort();
	}
	free(s);
	return 0;
}
