// SPDX-License-Identifier: MIT
/* Client side TLS for the tools, the tests and the mesh client: verification
 * for the DERP map host name and fast-start key discovery (spec §3.3, §3.6). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "tls.h"

struct cli_state {
	char sni[KD_TLS_HOSTNAME_MAX + 1];
	bool send_sni; /* Tailscale clients send no SNI for an IP literal */
};

static int cli_state_idx = -1;
static pthread_once_t cli_state_once = PTHREAD_ONCE_INIT;

static void cli_state_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
			   void *argp)
{
	free(ptr);
}

static void cli_state_init(void)
{
	cli_state_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, cli_state_free);
}

static int set_verification(SSL_CTX *ctx, const struct kd_tls_client_opts *o, bool is_ip)
{
	X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
	char buf[256];

	if (o->insecure) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		return 0;
	}
	if (!o->sni || !*o->sni) {
		pr_err("tls: a verifying client needs the server host name");
		return -EINVAL;
	}
	if ((o->ca_file ? SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL)
			: SSL_CTX_set_default_verify_paths(ctx)) != 1) {
		ERR_error_string_n(ERR_peek_last_error(), buf, sizeof(buf));
		pr_err("tls: load CA %s: %s", o->ca_file ? o->ca_file : "(system default)", buf);
		return -EINVAL;
	}
	if ((is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, o->sni)
		   : X509_VERIFY_PARAM_set1_host(param, o->sni, 0)) != 1) {
		pr_err("tls: cannot verify for host %s", o->sni);
		return -EINVAL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return 0;
}

int kd_tls_client_ctx_new(SSL_CTX **out, const struct kd_tls_client_opts *o)
{
	struct cli_state *st = NULL;
	SSL_CTX *ctx = NULL;
	bool is_ip;
	int err = -EINVAL;

	*out = NULL;
	if (!o || (o->sni && strlen(o->sni) > KD_TLS_HOSTNAME_MAX)) {
		pr_err("tls: bad client options");
		return -EINVAL;
	}
	is_ip = kd_tls_host_is_ip(o->sni);
	pthread_once(&cli_state_once, cli_state_init);
	if (cli_state_idx < 0)
		return -ENOMEM;
	ctx = SSL_CTX_new(TLS_client_method());
	st = calloc(1, sizeof(*st));
	if (!ctx || !st) {
		err = -ENOMEM;
		goto fail;
	}
	if (o->sni && *o->sni && !is_ip) {
		snprintf(st->sni, sizeof(st->sni), "%s", o->sni);
		st->send_sni = true;
	}
	if (SSL_CTX_set_ex_data(ctx, cli_state_idx, st) != 1) {
		err = -ENOMEM;
		goto fail;
	}
	st = NULL; /* the context frees it now */
	err = kd_tls_set_common(ctx, o->min_version, o->max_version);
	if (!err)
		err = set_verification(ctx, o, is_ip);
	if (err)
		goto fail;
	*out = ctx;
	return 0;
fail:
	free(st);
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return err;
}

int kd_tls_client_ssl_new(SSL **out, SSL_CTX *ctx, int fd)
{
	const struct cli_state *st;
	SSL *ssl;

	*out = NULL;
	if (!ctx || fd < 0 || cli_state_idx < 0)
		return -EINVAL;
	st = SSL_CTX_get_ex_data(ctx, cli_state_idx);
	ssl = SSL_new(ctx);
	if (!ssl)
		return -ENOMEM;
	if (SSL_set_fd(ssl, fd) != 1 ||
	    (st && st->send_sni && SSL_set_tlsext_host_name(ssl, st->sni) != 1)) {
		SSL_free(ssl);
		ERR_clear_error();
		return -EIO;
	}
	SSL_set_connect_state(ssl);
	*out = ssl;
	return 0;
}

/* Like Tailscale's parseMetaCert: the first certificate whose CN parses
 * decides, and serial 0 means no fast start. Clients fast-start only over
 * TLS 1.3 (spec §3.3). */
bool kd_tls_peer_derp_key(SSL *ssl, uint8_t key[32], int *proto_version)
{
	STACK_OF(X509) *chain;
	uint8_t k[DERP_KEY_LEN];
	int v;

	if (!ssl || SSL_version(ssl) != TLS1_3_VERSION)
		return false;
	/* on the client side this includes the leaf */
	chain = SSL_get_peer_cert_chain(ssl);
	for (int i = 0; chain && i < sk_X509_num(chain); i++) {
		if (kd_tls_metacert_parse(sk_X509_value(chain, i), k, &v))
			continue;
		if (v == 0)
			return false;
		memcpy(key, k, sizeof(k));
		if (proto_version)
			*proto_version = v;
		return true;
	}
	return false;
}
