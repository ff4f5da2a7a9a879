// SPDX-License-Identifier: MIT
/* kderpctl genkey / pubkey: node keys in Tailscale's text forms (spec §2.2). */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "ctl.h"

int do_genkey(int argc, char **argv)
{
	struct kd_keypair kp;
	char hex[2 * DERP_KEY_LEN + 1];

	if (argc != 1) {
		fprintf(stderr, "usage: kderpctl genkey\n");
		return CTL_USAGE;
	}
	if (kd_keypair_generate(&kp))
		return CTL_FAIL;
	kd_hex_encode(hex, kp.priv, DERP_KEY_LEN);
	printf("privkey:%s\n", hex);
	sodium_memzero(&kp, sizeof(kp));
	sodium_memzero(hex, sizeof(hex));
	return CTL_OK;
}

int do_pubkey(int argc, char **argv)
{
	char line[256];
	uint8_t priv[32];
	struct kd_keypair kp;
	char s[KD_NODEKEY_STR_LEN];

	if (argc != 1) {
		fprintf(stderr, "usage: kderpctl pubkey < privkey-file\n");
		return CTL_USAGE;
	}
	if (!fgets(line, sizeof(line), stdin) || ctl_parse_private(priv, line) ||
	    kd_keypair_from_private(&kp, priv)) {
		fprintf(stderr, "kderpctl pubkey: want privkey:<64 hex> on stdin\n");
		sodium_memzero(line, sizeof(line));
		return CTL_USAGE;
	}
	kd_key_nodekey_str(s, kp.pub);
	printf("%s\n", s);
	sodium_memzero(line, sizeof(line));
	sodium_memzero(priv, sizeof(priv));
	sodium_memzero(&kp, sizeof(kp));
	return CTL_OK;
}
