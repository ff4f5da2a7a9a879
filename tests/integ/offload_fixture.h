/* SPDX-License-Identifier: MIT */
/* Starting an in-process kderpd with the kernel plane, for the offload tests. */
#ifndef KD_TEST_OFFLOAD_FIXTURE_H
#define KD_TEST_OFFLOAD_FIXTURE_H

#include <stdbool.h>

#include "harness.h"

/* Starts ts with cfg (cfg->offload set by the caller) and a pin directory
 * of this process, so tests never touch a running kderpd's maps. False,
 * after a "# SKIP" line, where the kernel plane is unavailable. */
bool tc_start_offload(struct ts_server *ts, struct kd_server_config *cfg);

#endif
