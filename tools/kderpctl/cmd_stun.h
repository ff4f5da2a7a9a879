/* SPDX-License-Identifier: MIT */
#ifndef KDERPCTL_CMD_STUN_H
#define KDERPCTL_CMD_STUN_H

/* Exit codes of `kderpctl stun`, stable for monitoring scripts. */
enum {
	KD_STUN_EXIT_OK = 0,
	KD_STUN_EXIT_TIMEOUT = 1,      /* no answer (timeout or ICMP unreachable) */
	KD_STUN_EXIT_USAGE = 2,        /* bad arguments or unresolvable host */
	KD_STUN_EXIT_BAD_RESPONSE = 3, /* answered, but not a valid Binding Success */
};

/* kderpctl stun [--json] [--timeout MS] [-4|-6] HOST[:PORT]
 * argv[0] is "stun". */
int do_stun(int argc, char **argv);

#endif
