// SPDX-License-Identifier: MIT
/* kderpctl close-peer: the derpprune move (spec §6.12, §8.8) for a region.
 * ClosePeer only acts on the node it is sent to, so the tool watches each
 * listed node, finds the ones where the key is connected (the initial
 * PeerPresent flood names exactly the local connections) and closes it
 * there, confirmed by the PeerGone that node then sends its watchers. */
#include <errno.h>
#include <getopt.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "cmd_mesh.h"
#include "key.h"
#include "keyfile.h"

#define FLOOD_QUIET_MS 300
#define FLOOD_MAX_MS 3000

static void usage(void)
{
	fprintf(stderr, "usage: kderpctl close-peer [--insecure] [--ca-file PEM] URL[,URL...] NODEKEY "
			"--mesh-key-file FILE\n"
			"  URL: http(s)://host[:port]/derp of each node of the region\n");
}

/* 1 closed here, 0 not connected here, -errno */
static int close_on(const char *url, const uint8_t key[32], const uint8_t mesh_key[32], const char *ca_file,
		    bool insecure)
{
	struct kd_client_opts o = {0};
	struct kd_client *c = NULL;
	struct kd_client_msg m;
	bool here = false;
	int err;

	o.url = url;
	o.mesh_key = mesh_key;
	o.ca_file = ca_file;
	o.insecure = insecure;
	o.timeout_ms = 5000;
	if ((err = kd_keypair_generate(&o.key)) != 0)
		return err;
	err = kd_client_connect(&c, &o);
	if (err)
		return err;
	err = kd_client_watch_conns(c);
	int64_t end = kd_client_clock_ms() + FLOOD_MAX_MS;
	while (!err) {
		int64_t left = end - kd_client_clock_ms();
		err = kd_client_recv(c, &m, left < FLOOD_QUIET_MS ? (int)(left > 0 ? left : 0) : FLOOD_QUIET_MS);
		if (!err && m.type == DERP_FRAME_PEER_PRESENT && !memcmp(m.key, key, 32))
			here = true;
	}
	/* a node without mesh rights for us closes at WatchConns */
	if (err != -ETIMEDOUT) {
		kd_client_close(c);
		return err == -EPIPE ? -EACCES : err;
	}
	if (!here) {
		kd_client_close(c);
		return 0;
	}
	err = kd_client_close_peer(c, key);
	if (!err)
		err = kd_client_flush_wait(c, 3000);
	while (!err) {
		err = kd_client_recv(c, &m, 3000);
		if (!err && m.type == DERP_FRAME_PEER_GONE && !memcmp(m.key, key, 32))
			break;
	}
	kd_client_close(c);
	return err ? err : 1;
}

int do_close_peer(int argc, char **argv)
{
	static const struct option lopts[] = {
		{"mesh-key-file", required_argument, NULL, 'k'},
		{"ca-file", required_argument, NULL, 'c'},
		{"insecure", no_argument, NULL, 'i'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	const char *key_file = NULL, *ca_file = NULL;
	bool insecure = false;
	uint8_t mesh_key[32], key[32];
	int opt;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		switch (opt) {
		case 'k': key_file = optarg; break;
		case 'c': ca_file = optarg; break;
		case 'i': insecure = true; break;
		default: usage(); return KD_CLOSE_EXIT_USAGE;
		}
	}
	if (argc - optind != 2 || !key_file) {
		usage();
		return KD_CLOSE_EXIT_USAGE;
	}
	if (sodium_init() < 0)
		return KD_CLOSE_EXIT_USAGE;
	if (kd_key_parse_public(key, argv[optind + 1]) != 0) {
		fprintf(stderr, "close-peer: %s is not a node key (nodekey:<64 hex> or 64 hex)\n", argv[optind + 1]);
		return KD_CLOSE_EXIT_USAGE;
	}
	if (kd_meshkey_load(key_file, mesh_key) != 0) {
		fprintf(stderr, "close-peer: invalid mesh key in %s\n", key_file);
		return KD_CLOSE_EXIT_USAGE;
	}
	char *urls = strdup(argv[optind]);
	if (!urls)
		return KD_CLOSE_EXIT_USAGE;
	int closed = 0, failed = 0;
	char *save = NULL;
	for (char *u = strtok_r(urls, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
		int r = close_on(u, key, mesh_key, ca_file, insecure);
		if (r == 1) {
			printf("closed %s on %s\n", argv[optind + 1], u);
			closed++;
		} else if (r < 0) {
			fprintf(stderr, "close-peer: %s: %s\n", u,
				r == -EACCES ? "refused mesh rights (wrong mesh key?)" : strerror(-r));
			failed++;
		}
	}
	free(urls);
	sodium_memzero(mesh_key, sizeof(mesh_key));
	if (closed)
		return KD_CLOSE_EXIT_OK;
	if (failed)
		return KD_CLOSE_EXIT_REFUSED;
	printf("%s is not connected to any of the nodes\n", argv[optind + 1]);
	return KD_CLOSE_EXIT_NOT_FOUND;
}
