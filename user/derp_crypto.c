// SPDX-License-Identifier: MIT
#include "derp_crypto.h"

#include <errno.h>
#include <sodium.h>

static void nonce_random(uint8_t nonce[DERP_NONCE_LEN])
{
	randombytes_buf(nonce, DERP_NONCE_LEN);
}

static kd_nonce_fn g_nonce = nonce_random;

void kd_crypto_set_nonce_fn(kd_nonce_fn fn)
{
	g_nonce = fn ? fn : nonce_random;
}

int kd_box_seal(uint8_t *out, size_t out_cap, const uint8_t *msg, size_t msg_len,
		const uint8_t peer_pub[static DERP_KEY_LEN], const uint8_t my_priv[static DERP_KEY_LEN])
{
	if (out_cap < msg_len + KD_BOX_OVERHEAD)
		return -ENOSPC;
	g_nonce(out);
	if (crypto_box_easy(out + DERP_NONCE_LEN, msg, msg_len, out, peer_pub, my_priv) != 0)
		return -EINVAL;
	return 0;
}

int kd_box_open(uint8_t *msg, size_t msg_cap, const uint8_t *sealed, size_t sealed_len,
		const uint8_t peer_pub[static DERP_KEY_LEN], const uint8_t my_priv[static DERP_KEY_LEN])
{
	if (sealed_len < KD_BOX_OVERHEAD || msg_cap < sealed_len - KD_BOX_OVERHEAD)
		return -EINVAL;
	/* the reference panics on a zero key; libsodium rejects low-order points */
	if (sodium_is_zero(peer_pub, DERP_KEY_LEN))
		return -EINVAL;
	if (crypto_box_open_easy(msg, sealed + DERP_NONCE_LEN, sealed_len - DERP_NONCE_LEN, sealed,
				 peer_pub, my_priv) != 0)
		return -EBADMSG;
	return 0;
}
