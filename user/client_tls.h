/* SPDX-License-Identifier: MIT */
/* The client's OpenSSL side: context, verification, the derpkey meta-cert
 * (spec §3.3, §3.6). Internal to client*.c and tools. */
#ifndef KD_CLIENT_TLS_H
#define KD_CLIENT_TLS_H

#include <stdbool.h>
#include <stdint.h>
#include <openssl/ssl.h>

/* A client SSL on a connected (possibly non-blocking) fd. Verification of
 * host against ca_file (NULL: system roots) unless insecure; SNI only for
 * names, never for IP literals. 0 or -errno; *out NULL on error. */
int kd_client_tls_new(SSL **out, int fd, const char *host, const char *ca_file, bool insecure);
/* One handshake step: 0 done, -EAGAIN (*want_write says which way),
 * -EKEYREJECTED when the certificate does not verify, -EPROTO for another TLS
 * failure, -ECONNABORTED when the peer hung up. */
int kd_client_tls_handshake(SSL *ssl, bool *want_write);
/* After the handshake: true when TLS 1.3 and a "derpkey<hex>" certificate
 * with a non-zero serial ≤ 255 was presented; key filled. */
bool kd_client_tls_meta_key(SSL *ssl, uint8_t key[static 32]);
/* Frees the SSL and its private context; NULL-safe. */
void kd_client_tls_free(SSL *ssl);

#endif
