// SPDX-License-Identifier: MIT
#include "key.h"

#include <errno.h>
#include <sodium.h>
#include <string.h>

void kd_hex_encode(char *out, const uint8_t *in, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

/* Branch-free nibble decode: returns 0..15, or a value with bit 8 set. */
static unsigned hexval(unsigned char c)
{
	unsigned num = c ^ 48u;               /* '0'..'9' -> 0..9 */
	unsigned num_ok = (num - 10u) >> 8;    /* all ones when num < 10 */
	unsigned alpha = (c & ~32u) - 55u;     /* 'A'..'F'/'a'..'f' -> 10..15 */
	unsigned alpha_ok = ((alpha - 10u) ^ (alpha - 16u)) >> 8;
	unsigned ok = (num_ok | alpha_ok) & 1u;
	return ((num_ok & num) | (alpha_ok & alpha) | ((ok ^ 1u) << 8)) & 0x1ffu;
}

int kd_hex_decode(uint8_t *out, size_t n, const char *in, size_t in_len)
{
	unsigned bad = 0;

	if (in_len != 2 * n)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		unsigned hi = hexval((unsigned char)in[2 * i]);
		unsigned lo = hexval((unsigned char)in[2 * i + 1]);
		bad |= (hi | lo) & 0x100u;
		out[i] = (uint8_t)((hi << 4) | (lo & 15));
	}
	if (bad) {
		sodium_memzero(out, n);
		return -EINVAL;
	}
	return 0;
}

void kd_key_nodekey_str(char out[static KD_NODEKEY_STR_LEN], const uint8_t key[static DERP_KEY_LEN])
{
	memcpy(out, "nodekey:", 8);
	kd_hex_encode(out + 8, key, DERP_KEY_LEN);
}

void kd_key_short(char out[static KD_KEY_SHORT_LEN], const uint8_t key[static DERP_KEY_LEN])
{
	char b64[sodium_base64_ENCODED_LEN(DERP_KEY_LEN, sodium_base64_VARIANT_ORIGINAL)];

	if (kd_key_is_zero(key)) {
		out[0] = '\0';
		return;
	}
	sodium_bin2base64(b64, sizeof(b64), key, DERP_KEY_LEN, sodium_base64_VARIANT_ORIGINAL);
	out[0] = '[';
	memcpy(out + 1, b64, 5);
	out[6] = ']';
	out[7] = '\0';
}

int kd_key_parse_public(uint8_t key[static DERP_KEY_LEN], const char *s)
{
	if (strncmp(s, "nodekey:", 8) == 0)
		s += 8;
	return kd_hex_decode(key, DERP_KEY_LEN, s, strlen(s));
}

bool kd_key_is_zero(const uint8_t key[static DERP_KEY_LEN])
{
	return sodium_is_zero(key, DERP_KEY_LEN);
}

int kd_keypair_from_private(struct kd_keypair *kp, const uint8_t priv[static DERP_KEY_LEN])
{
	memcpy(kp->priv, priv, DERP_KEY_LEN);
	if (crypto_scalarmult_base(kp->pub, kp->priv) != 0 || kd_key_is_zero(kp->pub))
		return -EINVAL;
	return 0;
}

int kd_keypair_generate(struct kd_keypair *kp)
{
	for (int tries = 0; tries < 8; tries++) {
		randombytes_buf(kp->priv, DERP_KEY_LEN);
		kp->priv[0] &= 248;
		kp->priv[31] = (uint8_t)((kp->priv[31] & 127) | 64);
		if (kd_keypair_from_private(kp, kp->priv) == 0)
			return 0;
	}
	return -EIO;
}
