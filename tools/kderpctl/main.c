// SPDX-License-Identifier: MIT
/* kderpctl: talk to a DERP server from the command line.
 * Exit codes: 0 ok, 1 failure/timeout, 2 usage, 3 refused handshake or
 * protocol error. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "ctl.h"
#include "log.h"

#include "cmd_admission.h"
#include "cmd_mesh.h"
#include "cmd_stun.h"

static const struct cmd {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
} cmds[] = {
	{"probe", do_probe, "URL                      handshake + ping RTT"},
	{"send", do_send, "URL --to KEY [DATA|-]    send one packet (stdin with -)"},
	{"recv", do_recv, "URL [--count N]          print received packets"},
	{"echo", do_echo, "URL [--count N]          send every packet back to its sender"},
	{"watch", do_watch, "URL --mesh-key-file F    PeerPresent/PeerGone stream"},
	{"close-peer", do_close_peer, "URL[,URL...] KEY --mesh-key-file F  close KEY on the node holding it"},
	{"derpmap", do_derpmap, "FILE [--http]            latency to every node, pick a region"},
	{"stun", do_stun, "HOST[:PORT] [-4|-6]      STUN binding request: mapped address, RTT"},
	{"clients", do_clients, "http://HOST:PORT          connections and their plane (kernel/userspace)"},
	{"admission", do_admission, "URL NODEKEY [IP]         ask an admission webhook as kderpd would"},
	{"genkey", do_genkey, "                         print a new privkey:<hex>"},
	{"pubkey", do_pubkey, "                         privkey on stdin -> nodekey:<hex>"},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: kderpctl COMMAND [args]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(f, "  %-11s %s\n", cmds[i].name, cmds[i].help);
	fprintf(f, "\ncommon options: --json --timeout MS --key privkey:HEX --key-file F\n"
		   "  --mesh-key-file F --insecure --ca-file F --dial IP:PORT --count N --prober\n"
		   "exit: 0 ok, 1 failure/timeout, 2 usage, 3 refused handshake/protocol error\n");
}

int ctl_exit_for(int err)
{
	switch (err) {
	case 0:
		return CTL_OK;
	case -EPROTO:
	case -ECONNABORTED:
	case -EBADMSG:
	case -EKEYREJECTED:
		return CTL_REFUSED;
	default:
		return CTL_FAIL;
	}
}

int ctl_parse_private(uint8_t priv[32], const char *s)
{
	size_t n;

	if (strncmp(s, "privkey:", 8) == 0)
		s += 8;
	n = strlen(s);
	while (n && isspace((unsigned char)s[n - 1]))
		n--;
	return kd_hex_decode(priv, 32, s, n);
}

static int read_small_file(char *buf, size_t cap, const char *path)
{
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f)
		return -errno;
	n = fread(buf, 1, cap - 1, f);
	fclose(f);
	buf[n] = '\0';
	return 0;
}

int ctl_read_mesh_key(uint8_t key[32], const char *path)
{
	char buf[256], *p = buf;
	size_t n;
	int err = read_small_file(buf, sizeof(buf), path);

	if (err)
		return err;
	while (isspace((unsigned char)*p))
		p++;
	n = strlen(p);
	while (n && isspace((unsigned char)p[n - 1]))
		n--;
	err = kd_hex_decode(key, 32, p, n);
	sodium_memzero(buf, sizeof(buf));
	return err;
}

int ctl_parse(int argc, char **argv, struct ctl_opts *o)
{
	static const struct option lopts[] = {
		{"json", no_argument, NULL, 'j'},         {"insecure", no_argument, NULL, 'k'},
		{"http", no_argument, NULL, 'H'},         {"prober", no_argument, NULL, 'P'},
		{"ca-file", required_argument, NULL, 'C'}, {"dial", required_argument, NULL, 'D'},
		{"to", required_argument, NULL, 'T'},     {"key", required_argument, NULL, 'K'},
		{"key-file", required_argument, NULL, 'F'},
		{"mesh-key-file", required_argument, NULL, 'M'},
		{"timeout", required_argument, NULL, 't'}, {"count", required_argument, NULL, 'n'},
		{NULL, 0, NULL, 0},
	};
	uint8_t priv[32];
	char buf[256];
	int opt;

	memset(o, 0, sizeof(*o));
	o->timeout_ms = 5000;
	optind = 1;
	/* "+": stop at nothing; positionals may come before or after flags */
	while ((opt = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (opt) {
		case 'j': o->json = true; break;
		case 'k': o->insecure = true; break;
		case 'H': o->http = true; break;
		case 'P': o->prober = true; break;
		case 'C': o->ca_file = optarg; break;
		case 'D': o->dial_addr = optarg; break;
		case 'T': o->to = optarg; break;
		case 't':
			o->timeout_ms = atoi(optarg);
			if (o->timeout_ms <= 0) {
				fprintf(stderr, "%s: bad --timeout %s\n", argv[0], optarg);
				return CTL_USAGE;
			}
			break;
		case 'n': o->count = atol(optarg); break;
		case 'K':
		case 'F':
			if (opt == 'F' && read_small_file(buf, sizeof(buf), optarg)) {
				fprintf(stderr, "%s: cannot read %s: %s\n", argv[0], optarg, strerror(errno));
				return CTL_USAGE;
			}
			if (ctl_parse_private(priv, opt == 'F' ? buf : optarg) ||
			    kd_keypair_from_private(&o->key, priv)) {
				fprintf(stderr, "%s: bad private key (want privkey:<64 hex>)\n", argv[0]);
				return CTL_USAGE;
			}
			sodium_memzero(priv, sizeof(priv));
			o->have_key = true;
			break;
		case 'M':
			if (ctl_read_mesh_key(o->mesh_key, optarg)) {
				fprintf(stderr, "%s: bad mesh key file %s (want 64 hex digits)\n", argv[0], optarg);
				return CTL_USAGE;
			}
			o->have_mesh_key = true;
			break;
		default:
			return CTL_USAGE;
		}
	}
	for (int i = optind; i < argc; i++) {
		if (o->npos == (int)(sizeof(o->pos) / sizeof(o->pos[0]))) {
			fprintf(stderr, "%s: too many arguments\n", argv[0]);
			return CTL_USAGE;
		}
		o->pos[o->npos++] = argv[i];
	}
	return 0;
}

int ctl_client_opts(struct kd_client_opts *co, struct ctl_opts *o, const char *url)
{
	struct kd_client_url u;

	if (kd_client_url_parse(&u, url)) {
		fprintf(stderr, "kderpctl: bad URL %s (want http[s]://host[:port]/derp)\n", url);
		return -EINVAL;
	}
	if (!o->have_key) {
		if (kd_keypair_generate(&o->key))
			return -EIO;
		o->have_key = true;
	}
	memset(co, 0, sizeof(*co));
	co->url = url;
	co->dial_addr = o->dial_addr;
	co->key = o->key;
	co->mesh_key = o->have_mesh_key ? o->mesh_key : NULL;
	co->can_ack_pings = true;
	co->is_prober = o->prober;
	co->app_name = "kderpctl";
	co->ca_file = o->ca_file;
	co->insecure = o->insecure;
	co->timeout_ms = o->timeout_ms;
	return 0;
}

void ctl_print_json_str(const uint8_t *s, size_t n)
{
	putchar('"');
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '"' || s[i] == '\\')
			printf("\\%c", s[i]);
		else if (s[i] < 0x20 || s[i] >= 0x7f)
			printf("\\u%04x", s[i]);
		else
			putchar(s[i]);
	}
	putchar('"');
}

int main(int argc, char **argv)
{
	kd_log_set_prefix("kderpctl");
	signal(SIGPIPE, SIG_IGN);
	if (sodium_init() < 0)
		return CTL_FAIL;
	if (argc < 2) {
		usage(stderr);
		return CTL_USAGE;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return CTL_OK;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "kderpctl: unknown command %s\n", argv[1]);
	usage(stderr);
	return CTL_USAGE;
}
