// SPDX-License-Identifier: MIT
/* A server's certificates reach kd_tls_metacert_parse from the network: DER
 * as OpenSSL decodes it, then the fast-start reader. OpenSSL's own DER/PEM
 * parsing is not ours to fuzz; the CN/serial interpretation is. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <openssl/x509.h>

#include "tls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const unsigned char *p = data;
	uint8_t key[DERP_KEY_LEN];
	int ver = -1;
	X509 *x;

	if (size > 65536)
		return 0;
	x = d2i_X509(NULL, &p, (long)size);
	if (!x)
		return 0;
	if (kd_tls_metacert_parse(x, key, &ver) == 0) {
		/* a success must describe a version clients could accept */
		if (ver < 0 || ver > KD_TLS_METACERT_MAX_SERIAL)
			__builtin_trap();
	}
	X509_free(x);
	return 0;
}
