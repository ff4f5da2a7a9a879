// SPDX-License-Identifier: MIT
/* The JSON reader on arbitrary bytes. Besides "never crash", it checks
 * properties that a wrong reader would break: a valid document stays valid
 * when nested and invalid with trailing garbage, the escaper's output always
 * reads back to the (UTF-8-repaired) input, and key folding agrees with
 * itself. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_escape_round_trip(const uint8_t *data, size_t size)
{
	static char esc[6 * 4096 + 3], back[3 * 4096 + 1];
	struct kd_json js;
	struct kd_json_str s;

	if (size > 4096)
		return;
	int n = kd_json_escape(esc, sizeof(esc), (const char *)data, size);
	if (n < 0)
		abort();
	kd_json_init(&js, esc, (size_t)n, sizeof(esc));
	if (kd_json_get_string(&js, &s) != 0 || kd_json_end(&js) != 0)
		abort();
	size_t m = kd_json_unescape(&s, back, sizeof(back));
	if (m >= sizeof(back))
		abort();
	/* bytes that were valid UTF-8 come back unchanged: so if the output is
	 * as long as the input, it is the input */
	if (m == size && memcmp(back, data, size) != 0)
		abort();
	/* escaping is idempotent on valid UTF-8: the repaired text escapes to
	 * the same literal */
	static char esc2[sizeof(esc) * 2];
	int n2 = kd_json_escape(esc2, sizeof(esc2), back, m);
	if (n2 != n || memcmp(esc, esc2, (size_t)n) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int r = kd_json_validate(data, size, size);

	if (r != 0 && r != -EINVAL)
		abort();
	if (size && kd_json_validate(data, size, size - 1) != -EMSGSIZE)
		abort();

	if (r == 0 && size < 65536) {
		uint8_t *buf = malloc(size + 8);
		if (!buf)
			return 0;
		/* trailing garbage */
		memcpy(buf, data, size);
		buf[size] = 'x';
		if (kd_json_validate(buf, size + 1, size + 1) != -EINVAL)
			abort();
		/* one more level of nesting: valid unless that crosses the limit */
		buf[0] = '[';
		memcpy(buf + 1, data, size);
		buf[size + 1] = ']';
		int nested = kd_json_validate(buf, size + 2, size + 2);
		if (nested != 0 && nested != -EINVAL)
			abort();
		free(buf);
	}

	/* a top-level string: folding and unescaping must agree */
	if (r == 0) {
		struct kd_json js;
		struct kd_json_str s;
		char out[64];

		kd_json_init(&js, data, size, size);
		if (kd_json_peek(&js) == KD_JSON_STRING) {
			if (kd_json_get_string(&js, &s) != 0)
				abort();
			size_t n = kd_json_unescape(&s, out, sizeof(out));
			if (n < sizeof(out) && out[n] != '\0')
				abort();
			/* a pure-ASCII decoding equals itself under folding */
			bool ascii = n < sizeof(out) && strlen(out) == n;
			for (size_t i = 0; ascii && i < n; i++)
				ascii = (unsigned char)out[i] < 0x80;
			if (ascii && !kd_json_str_eq_ci(&s, out))
				abort();
		}
	}
	check_escape_round_trip(data, size);
	return 0;
}
