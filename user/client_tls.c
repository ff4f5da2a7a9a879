// SPDX-License-Identifier: MIT
#include "client_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "derp_wire.h"
#include "key.h"
#include "log.h"

static bool is_ip_literal(const char *host)
{
	unsigned char buf[16];

	return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

int kd_client_tls_new(SSL **out, int fd, const char *host, const char *ca_file, bool insecure)
{
	SSL_CTX *ctx;
	SSL *ssl = NULL;

	*out = NULL;
	ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx)
		return -ENOMEM;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* the output buffer may move between retries of a partial write */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (insecure) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		if (ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1
			    : SSL_CTX_set_default_verify_paths(ctx) != 1) {
			pr_err("tls: cannot load CA %s", ca_file ? ca_file : "(system roots)");
			goto err_ctx;
		}
	}
	ssl = SSL_new(ctx);
	if (!ssl)
		goto err_ctx;
	/* the SSL holds its own reference; ours goes now so SSL_free frees both */
	SSL_CTX_free(ctx);
	ctx = NULL;
	if (SSL_set_fd(ssl, fd) != 1)
		goto err_ssl;
	if (is_ip_literal(host)) {
		if (!insecure && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1)
			goto err_ssl;
	} else {
		if (SSL_set_tlsext_host_name(ssl, host) != 1)
			goto err_ssl;
		if (!insecure && SSL_set1_host(ssl, host) != 1)
			goto err_ssl;
	}
	SSL_set_connect_state(ssl);
	*out = ssl;
	return 0;

err_ssl:
	SSL_free(ssl);
	return -EINVAL;
err_ctx:
	SSL_CTX_free(ctx);
	return -EINVAL;
}

int kd_client_tls_handshake(SSL *ssl, bool *want_write)
{
	int r = SSL_do_handshake(ssl);

	*want_write = false;
	if (r == 1)
		return 0;
	switch (SSL_get_error(ssl, r)) {
	case SSL_ERROR_WANT_READ:
		return -EAGAIN;
	case SSL_ERROR_WANT_WRITE:
		*want_write = true;
		return -EAGAIN;
	default: {
		unsigned long e = ERR_peek_last_error();
		long v = SSL_get_verify_result(ssl);
		char buf[256];

		ERR_error_string_n(e, buf, sizeof(buf));
		if (v != X509_V_OK)
			pr_err("tls: certificate verification failed: %s",
			       X509_verify_cert_error_string(v));
		else
			pr_err("tls: handshake failed: %s", e ? buf : "connection closed");
		ERR_clear_error();
		if (v != X509_V_OK)
			return -EKEYREJECTED;
		return e ? -EPROTO : -ECONNABORTED;
	}
	}
}

bool kd_client_tls_meta_key(SSL *ssl, uint8_t key[static 32])
{
	STACK_OF(X509) *chain;

	if (SSL_version(ssl) != TLS1_3_VERSION)
		return false;
	chain = SSL_get_peer_cert_chain(ssl);
	if (!chain)
		return false;
	for (int i = 0; i < sk_X509_num(chain); i++) {
		X509 *x = sk_X509_value(chain, i);
		char cn[128];
		long serial;
		int n;

		n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
		if (n != 7 + 2 * DERP_KEY_LEN || strncmp(cn, "derpkey", 7) != 0)
			continue;
		serial = ASN1_INTEGER_get(X509_get0_serialNumber(x));
		if (serial <= 0 || serial > 255)
			continue;
		if (kd_hex_decode(key, DERP_KEY_LEN, cn + 7, 2 * DERP_KEY_LEN) == 0)
			return true;
	}
	return false;
}

void kd_client_tls_free(SSL *ssl)
{
	if (ssl)
		SSL_free(ssl);
}
