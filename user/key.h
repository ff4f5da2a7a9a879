/* SPDX-License-Identifier: MIT */
/* Curve25519 node/server keys and their text forms (spec §2). */
#ifndef KD_KEY_H
#define KD_KEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "derp_wire.h"

#define KD_KEY_HEX_LEN 64
/* "nodekey:" + 64 hex + NUL */
#define KD_NODEKEY_STR_LEN (8 + KD_KEY_HEX_LEN + 1)
/* "[" + 5 base64 chars + "]" + NUL */
#define KD_KEY_SHORT_LEN 8

struct kd_keypair {
	uint8_t priv[DERP_KEY_LEN];
	uint8_t pub[DERP_KEY_LEN];
};

/* Lowercase hex of n bytes into out (2n+1 bytes with the NUL). */
void kd_hex_encode(char *out, const uint8_t *in, size_t n);
/* Exactly 2n hex digits of either case; 0 or -EINVAL. Constant time in the
 * digits' values, so secrets (mesh key, private key) can pass through. */
int kd_hex_decode(uint8_t *out, size_t n, const char *in, size_t in_len);

/* One hex digit's value or -1; not constant time: for public text (URLs,
 * JSON escapes, maps), never for secrets (kd_hex_decode is for those). */
static inline int kd_hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* "nodekey:<hex>" */
void kd_key_nodekey_str(char out[static KD_NODEKEY_STR_LEN], const uint8_t key[static DERP_KEY_LEN]);
/* "[abcde]": first 5 base64 chars, as the reference logs keys */
void kd_key_short(char out[static KD_KEY_SHORT_LEN], const uint8_t key[static DERP_KEY_LEN]);
/* Parses "nodekey:<hex>" or bare hex. */
int kd_key_parse_public(uint8_t key[static DERP_KEY_LEN], const char *s);

/* Fresh clamped private key from the CSPRNG and its public key; never zero. */
int kd_keypair_generate(struct kd_keypair *kp);
/* Public key of a private key (libsodium clamps internally). */
int kd_keypair_from_private(struct kd_keypair *kp, const uint8_t priv[static DERP_KEY_LEN]);

bool kd_key_is_zero(const uint8_t key[static DERP_KEY_LEN]);

#endif
