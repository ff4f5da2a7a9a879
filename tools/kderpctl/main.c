// SPDX-License-Identifier: MIT
/* Minimal dispatcher so cmd_stun builds alone; the real kderpctl main with
 * the full subcommand table replaces this file. */
#include <stdio.h>
#include <string.h>

#include "cmd_stun.h"

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "stun"))
		return do_stun(argc - 1, argv + 1);
	fprintf(stderr, "usage: kderpctl stun [--json] [--timeout MS] [-4|-6] HOST[:PORT]\n");
	return 2;
}
