/* SPDX-License-Identifier: MIT */
/* TLS contexts for kderpd and its clients (spec §3.3, §3.6, §11.4, §13.3).
 *
 * This module only builds SSL_CTX objects and certificates; the event loop
 * owns the sockets and drives SSL_accept/SSL_read/SSL_write itself. */
#ifndef KD_TLS_H
#define KD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "derp_wire.h"

/* CN prefix of the meta-certificate, followed by 64 lowercase hex digits */
#define KD_TLS_METACERT_CN_PREFIX "derpkey"
#define KD_TLS_METACERT_CN_PREFIX_LEN 7
/* Clients only take a serial that fits in 8 bits as the protocol version. */
#define KD_TLS_METACERT_MAX_SERIAL 255
#define KD_TLS_METACERT_VALIDITY_SECS (30L * 24 * 3600)
/* Self-signed IP certificates of manual mode live one year, like derper's. */
#define KD_TLS_SELFSIGNED_VALIDITY_SECS (365L * 24 * 3600)
/* "sha256-raw:" + 64 hex + NUL */
#define KD_TLS_CERTNAME_LEN (11 + 64 + 1)
#define KD_TLS_HOSTNAME_MAX 253

struct kd_tls_server_opts {
	const char *certmode;      /* "manual" (files in certdir) or "dev" (in memory, never written) */
	const char *certdir;       /* manual: <certdir>/<sanitized hostname>.crt and .key */
	const char *hostname;      /* -hostname; dev mode: NULL means 127.0.0.1 */
	const uint8_t *server_pub; /* 32 bytes, for the meta-certificate CN=derpkey<hex> */
	bool ktls;                 /* set SSL_OP_ENABLE_KTLS */
	int min_version, max_version; /* TLS1_2_VERSION.. constants; 0 = TLS 1.2 .. TLS 1.3 */
};

/* A server context: certificate for the mode, meta-certificate appended as
 * the last chain certificate, ALPN http/1.1 only, SNI policy of the mode,
 * partial/moving writes and released idle buffers. Logs once on failure.
 * -EINVAL bad options or a certificate that does not match the hostname,
 * -ENOENT missing files (DNS hostname, or only one of .crt/.key present),
 * -EIO an OpenSSL or file-system failure, -ENOMEM. */
int kd_tls_server_ctx_new(SSL_CTX **out, const struct kd_tls_server_opts *o);
/* Drops the caller's reference; SSL objects made from it keep theirs. */
void kd_tls_ctx_free(SSL_CTX *ctx);
/* Whether the context asks OpenSSL for kTLS (the kernel may still refuse:
 * kd_tls_conn_info says what a connection really got). */
bool kd_tls_ctx_ktls_enabled(const SSL_CTX *ctx);
/* A server SSL on a connected socket, ready for SSL_accept. */
int kd_tls_server_ssl_new(SSL **out, SSL_CTX *ctx, int fd);

/* What TLS gave a connection after the handshake. Strings are static. */
struct kd_tls_conn_info {
	const char *version; /* "1.2", "1.3" or "?" */
	const char *cipher;  /* OpenSSL cipher name, "" before the handshake */
	bool ktls_tx, ktls_rx;
};
void kd_tls_conn_info(SSL *ssl, struct kd_tls_conn_info *info);

struct kd_tls_client_opts {
	const char *sni;     /* server host name; an IP literal is verified but not sent as SNI */
	const char *ca_file; /* PEM trust anchors; NULL = system default paths */
	bool insecure;       /* skip certificate verification (tests, dev servers) */
	int min_version, max_version;
};
int kd_tls_client_ctx_new(SSL_CTX **out, const struct kd_tls_client_opts *o);
/* A client SSL on a connected socket with the context's SNI applied, ready
 * for SSL_connect. */
int kd_tls_client_ssl_new(SSL **out, SSL_CTX *ctx, int fd);
/* After a client handshake: if TLS 1.3 and a presented certificate has
 * CN "derpkey<64 hex>" with a serial in 1..255, copy the key and the serial
 * (protocol version) and return true (fast start, spec §3.6). */
bool kd_tls_peer_derp_key(SSL *ssl, uint8_t key[32], int *proto_version);

/* Versions (0 = TLS 1.2 .. highest; below 1.2 is -EINVAL), write modes and
 * no password prompt: what every kderp context shares. */
int kd_tls_set_common(SSL_CTX *ctx, int min_version, int max_version);

/* --- meta-certificate (tls_metacert.c) --- */

/* The meta-certificate for server_pub, valid now ± 30 days, self-signed with
 * a throw-away Ed25519 key. */
int kd_tls_metacert_new(X509 **out, const uint8_t server_pub[static DERP_KEY_LEN], time_t now);
/* Reads a certificate the way a Tailscale client does: last CN "derpkey" +
 * 64 hex digits and a serial of at most 8 bits. 0 and the key and serial
 * (the protocol version; 0 means the client must not fast-start), or
 * -EINVAL. A parser: no allocation, no logging. */
int kd_tls_metacert_parse(X509 *x, uint8_t key[static DERP_KEY_LEN], int *proto_version);

/* --- certificates and files (tls_cert.c) --- */

/* Drops every character outside [A-Za-z0-9.-] (derper's file naming). 0, or
 * -EINVAL when the result would be empty or does not fit in out. */
int kd_tls_sanitize_hostname(char *out, size_t out_len, const char *hostname);
/* Whether s is an IPv4 or IPv6 literal. */
bool kd_tls_host_is_ip(const char *s);
/* A self-signed ECDSA P-256 server certificate for host (IP or DNS SAN, CN =
 * host): random 128-bit serial, now .. now + validity, digitalSignature +
 * keyEncipherment, EKU serverAuth, CA:FALSE. extra_ip, if not NULL, adds a
 * second IP SAN. */
int kd_tls_selfsigned_new(X509 **cert, EVP_PKEY **key, const char *host, const char *extra_ip,
			  time_t now, long validity_secs);
/* "sha256-raw:<hex of the SHA-256 of the DER>", the DERP map CertName that
 * pins this certificate. */
int kd_tls_certname(char out[static KD_TLS_CERTNAME_LEN], X509 *x);
/* Writes cert (0644) and key (0600) as PEM into an existing directory. Each
 * file goes through a temporary name and rename, so a crash never leaves
 * half a key under the real name. */
int kd_tls_write_pem_pair(const char *crt_path, const char *key_path, X509 *cert, EVP_PKEY *key);

#endif
