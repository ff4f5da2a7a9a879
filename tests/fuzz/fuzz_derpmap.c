// SPDX-License-Identifier: MIT
/* The DERP map reader on arbitrary bytes: no crash, no read past the input,
 * nodes within bounds and NUL-terminated. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "derpmap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct kd_derpmap m;
	size_t off = 0;

	kd_derpmap_parse(&m, (const char *)data, size, &off);
	if (off > size || m.nnodes < 0 || m.nnodes > KD_DERPMAP_MAX_NODES)
		abort();
	for (int i = 0; i < m.nnodes; i++)
		if (strnlen(m.nodes[i].host_name, sizeof(m.nodes[i].host_name)) == sizeof(m.nodes[i].host_name))
			abort();
	return 0;
}
