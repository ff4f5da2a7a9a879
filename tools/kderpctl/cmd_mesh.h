/* SPDX-License-Identifier: MIT */
#ifndef KDERPCTL_CMD_MESH_H
#define KDERPCTL_CMD_MESH_H

/* Exit codes of `kderpctl close-peer`, stable for scripts. */
enum {
	KD_CLOSE_EXIT_OK = 0,        /* closed on a node (named on stdout) */
	KD_CLOSE_EXIT_NOT_FOUND = 1, /* no listed node had the key connected */
	KD_CLOSE_EXIT_USAGE = 2,
	KD_CLOSE_EXIT_REFUSED = 3,   /* a node was unreachable or refused mesh rights */
};

/* kderpctl close-peer [--insecure] [--ca-file F] URL[,URL...] KEY --mesh-key-file F
 * Asks each node (as a mesh peer: WatchConns) whether KEY is connected
 * there and sends ClosePeer (spec §6.12) to the one(s) holding it.
 * argv[0] is "close-peer". */
int do_close_peer(int argc, char **argv);

#endif
