// SPDX-License-Identifier: MIT
/* The key file, mesh key file and webhook response parsers on the same
 * bytes. Successful parses must survive a format/parse round trip; failures
 * must leave no key material behind. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t zero[32];
	const char *s = (const char *)data;
	uint8_t key[32], again[32];
	char out[256];
	bool allow = true;
	int r;

	r = kd_keyfile_parse(s, size, key);
	if (r == 0) {
		int n = kd_keyfile_format(out, sizeof(out), key);
		if (n < 0 || kd_keyfile_parse(out, (size_t)n, again) != 0 ||
		    memcmp(key, again, 32) != 0 || memcmp(key, zero, 32) == 0)
			abort();
	} else if (r != -EINVAL || memcmp(key, zero, 32) != 0) {
		abort();
	}

	r = kd_meshkey_parse(s, size, key);
	if (r == 0) {
		kd_hex_encode(out, key, 32);
		if (kd_meshkey_parse(out, 64, again) != 0 || memcmp(key, again, 32) != 0)
			abort();
	} else if (r != -EINVAL || memcmp(key, zero, 32) != 0) {
		abort();
	}

	r = kd_admission_response_parse(s, size, &allow);
	if (r != 0 && (r != -EINVAL || allow))
		abort();
	/* only the first 4 KiB may matter */
	if (size > KD_ADMISSION_RESPONSE_MAX) {
		bool allow2 = !allow;
		int r2 = kd_admission_response_parse(s, KD_ADMISSION_RESPONSE_MAX, &allow2);
		if (r2 != r || allow2 != allow)
			abort();
	}
	return 0;
}
