// SPDX-License-Identifier: MIT
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <unistd.h>

#include <cmocka.h>

#include "offload.h"
#include "offload_fixture.h"

bool tc_start_offload(struct ts_server *ts, struct kd_server_config *cfg)
{
	static char pin[64];
	char why[160];

	if (!kd_offload_supported(why, sizeof(why))) {
		printf("# SKIP kernel plane unavailable: %s\n", why);
		return false;
	}
	snprintf(pin, sizeof(pin), "/sys/fs/bpf/kderp-test-%d", (int)getpid());
	cfg->offload_pin_dir = pin;
	assert_int_equal(ts_start(ts, cfg, NULL), 0);
	return true;
}
