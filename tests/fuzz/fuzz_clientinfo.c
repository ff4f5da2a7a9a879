// SPDX-License-Identifier: MIT
/* ClientInfo plaintext, as an authenticated client can send it. A parse that
 * succeeds must format and re-parse to the same struct. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clientinfo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct kd_client_info zero;
	struct kd_client_info ci, back;
	char out[1024];
	int r = kd_client_info_parse(data, size, &ci);

	if (r == -EINVAL) {
		if (memcmp(&ci, &zero, sizeof(ci)) != 0)
			abort();
		return 0;
	}
	if (r != 0)
		abort();
	if (memchr(ci.app_name, '\0', sizeof(ci.app_name)) == NULL)
		abort();
	if (!ci.has_mesh_key && memcmp(ci.mesh_key, zero.mesh_key, sizeof(ci.mesh_key)) != 0)
		abort();

	int n = kd_client_info_format(out, sizeof(out), &ci);
	if (n < 0)
		abort();
	if (kd_client_info_parse((const uint8_t *)out, (size_t)n, &back) != 0)
		abort();
	if (back.has_mesh_key != ci.has_mesh_key ||
	    memcmp(back.mesh_key, ci.mesh_key, sizeof(ci.mesh_key)) != 0 ||
	    back.version != ci.version || back.can_ack_pings != ci.can_ack_pings ||
	    back.is_prober != ci.is_prober || strcmp(back.app_name, ci.app_name) != 0)
		abort();
	return 0;
}
