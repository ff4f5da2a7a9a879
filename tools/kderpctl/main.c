// SPDX-License-Identifier: MIT
/* Minimal dispatcher so cmd_stun builds alone; the real kderpctl main with
 * the full subcommand table replaces this file. */
#include <stdio.h>
#include <string.h>

#include "cmd_mesh.h"
#include "cmd_stun.h"

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "stun"))
		return do_stun(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "close-peer"))
		return do_close_peer(argc - 1, argv + 1);
	fprintf(stderr, "usage: kderpctl stun [--json] [--timeout MS] [-4|-6] HOST[:PORT]\n"
			"       kderpctl close-peer [--insecure] [--ca-file PEM] URL[,URL...] NODEKEY --mesh-key-file FILE\n");
	return 2;
}
