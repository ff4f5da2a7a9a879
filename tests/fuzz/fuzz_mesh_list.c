// SPDX-License-Identifier: MIT
/* The -mesh-with parser: never reads past the string, every accepted entry
 * yields a URL the client's own URL parser accepts with the same port, and
 * a list rebuilt from the accepted entries parses to the same targets. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "mesh.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct kd_mesh_target t[8], again[8];
	static char rebuilt[8 * 600];
	char *s = malloc(size + 1);
	size_t n = 0, m = 0;

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	int r = kd_mesh_parse_list(s, t, 8, &n);
	free(s);
	if (r == -EINVAL || r == -E2BIG)
		return 0;
	if (r != 0 || n > 8)
		abort();
	size_t off = 0;
	rebuilt[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		struct kd_client_url u;
		if (kd_client_url_parse(&u, t[i].url) != 0 || u.port != t[i].port || u.tls == t[i].plain_http)
			abort();
		off += (size_t)snprintf(rebuilt + off, sizeof(rebuilt) - off, "%s%s%s%s", i ? "," : "",
					t[i].plain_http ? "http://" : "", t[i].host, t[i].dial[0] ? "/" : "");
		if (t[i].dial[0]) {
			bool v6 = strchr(t[i].dial, ':') != NULL || !strcmp(t[i].dial, "derp");
			off += (size_t)snprintf(rebuilt + off, sizeof(rebuilt) - off, v6 ? "[%s]" : "%s", t[i].dial);
		}
	}
	if (kd_mesh_parse_list(rebuilt, again, 8, &m) != 0 || m != n)
		abort();
	for (size_t i = 0; i < n; i++)
		if (strcmp(t[i].url, again[i].url) || strcmp(t[i].dial, again[i].dial) || t[i].port != again[i].port)
			abort();
	return 0;
}
