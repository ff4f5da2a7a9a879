/* SPDX-License-Identifier: MIT */
/* The handshake's NaCl boxes (spec §2.3): nonce || MAC || ciphertext. */
#ifndef KD_DERP_CRYPTO_H
#define KD_DERP_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "derp_wire.h"

/* Fills a fresh box nonce. Production uses the OS CSPRNG; conformance tests
 * replace it to reproduce Tailscale's transcripts byte for byte. The hook is
 * process-wide and must be set before any connection exists. */
typedef void (*kd_nonce_fn)(uint8_t nonce[DERP_NONCE_LEN]);
void kd_crypto_set_nonce_fn(kd_nonce_fn fn);

/* Seals msg for peer_pub: out gets nonce || box, msg_len + 40 bytes. */
int kd_box_seal(uint8_t *out, size_t out_cap, const uint8_t *msg, size_t msg_len,
		const uint8_t peer_pub[static DERP_KEY_LEN], const uint8_t my_priv[static DERP_KEY_LEN]);
/* Opens nonce || box from peer_pub into msg (sealed_len - 40 bytes).
 * Rejects a zero or low-order peer key. 0 or -EBADMSG/-EINVAL. */
int kd_box_open(uint8_t *msg, size_t msg_cap, const uint8_t *sealed, size_t sealed_len,
		const uint8_t peer_pub[static DERP_KEY_LEN], const uint8_t my_priv[static DERP_KEY_LEN]);

#define KD_BOX_OVERHEAD (DERP_NONCE_LEN + DERP_MAC_LEN)

#endif
