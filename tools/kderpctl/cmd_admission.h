/* SPDX-License-Identifier: MIT */
#ifndef KDERPCTL_CMD_ADMISSION_H
#define KDERPCTL_CMD_ADMISSION_H

/* Exit codes of `kderpctl admission`, stable for monitoring scripts. */
enum {
	KD_ADM_EXIT_ALLOWED = 0,
	KD_ADM_EXIT_DENIED = 1,      /* the webhook answered and refused (status, JSON, Allow) */
	KD_ADM_EXIT_USAGE = 2,
	KD_ADM_EXIT_UNREACHABLE = 3, /* no usable answer: what -verify-client-url-fail-open decides */
};

/* kderpctl admission [--json] [--timeout MS] [--ca FILE] [--insecure] URL NODEKEY [SOURCE_IP]
 * One check exactly as kderpd makes it. argv[0] is "admission". */
int do_admission(int argc, char **argv);

#endif
