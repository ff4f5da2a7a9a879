/* SPDX-License-Identifier: MIT */
/* kderpctl: shared option parsing and exit codes for the subcommands. */
#ifndef KD_CTL_H
#define KD_CTL_H

#include <stdbool.h>
#include <stdint.h>

#include "client.h"

/* Exit codes, distinct for monitoring. */
enum {
	CTL_OK = 0,
	CTL_FAIL = 1,    /* failure or timeout */
	CTL_USAGE = 2,
	CTL_REFUSED = 3, /* handshake refused or protocol error */
};

struct ctl_opts {
	const char *pos[4]; /* positional arguments after the subcommand */
	int npos;
	bool json, insecure, http, have_key, have_mesh_key, prober;
	const char *ca_file, *dial_addr, *to;
	struct kd_keypair key;
	uint8_t mesh_key[32];
	int timeout_ms; /* default 5000 */
	long count;     /* 0 = unlimited */
};

/* Parses argv[1..] (argv[0] is the subcommand). On error prints why and
 * returns CTL_USAGE, else 0. */
int ctl_parse(int argc, char **argv, struct ctl_opts *o);
/* Maps a client error to an exit code. */
int ctl_exit_for(int err);
/* Client options from the parsed flags; a fresh key if none was given. */
int ctl_client_opts(struct kd_client_opts *co, struct ctl_opts *o, const char *url);
int ctl_read_mesh_key(uint8_t key[32], const char *path);
int ctl_parse_private(uint8_t priv[32], const char *s);
void ctl_print_json_str(const uint8_t *s, size_t n);

int do_probe(int argc, char **argv);
int do_clients(int argc, char **argv);
int do_send(int argc, char **argv);
int do_recv(int argc, char **argv);
int do_echo(int argc, char **argv);
int do_watch(int argc, char **argv);
int do_derpmap(int argc, char **argv);
int do_genkey(int argc, char **argv);
int do_pubkey(int argc, char **argv);

#endif
