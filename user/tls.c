// SPDX-License-Identifier: MIT
/* The server SSL_CTX: certificate per cert mode (spec §11.4), meta-cert at
 * the end of the chain (§3.6), SNI and ALPN policy (§3.3, §13.3). */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "tls.h"

#define DEV_DEFAULT_HOST "127.0.0.1"

/* What the handshake callbacks need; lives as long as the SSL_CTX. */
struct srv_state {
	char hostname[KD_TLS_HOSTNAME_MAX + 1];
	bool strict_sni; /* manual mode with a DNS host name */
};

static int srv_state_idx = -1;
static pthread_once_t srv_state_once = PTHREAD_ONCE_INIT;

static void srv_state_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
			   void *argp)
{
	free(ptr);
}

static void srv_state_init(void)
{
	srv_state_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, srv_state_free);
}

/* The last OpenSSL error as text, and an empty queue for the next caller. */
static const char *ssl_reason(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();

	if (!e)
		snprintf(buf, len, "no OpenSSL error");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

/* An encrypted key must fail at start, not prompt on a terminal. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
	return 0;
}

/* derper manual mode: a DNS host name must be the SNI exactly; an IP host
 * takes any SNI or none (clients send none for IP literals). */
static int servername_cb(SSL *ssl, int *al, void *arg)
{
	const struct srv_state *st = arg;
	const char *sni;

	if (!st || !st->strict_sni)
		return SSL_TLSEXT_ERR_OK;
	sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (sni && strcmp(sni, st->hostname) == 0)
		return SSL_TLSEXT_ERR_OK;
	*al = SSL_AD_UNRECOGNIZED_NAME;
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* DERP needs an HTTP/1.1 Upgrade, which HTTP/2 cannot carry: never pick h2.
 * DERP clients send no ALPN at all, so no overlap just means no ALPN. */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		   const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char ours[] = "\x08http/1.1";
	unsigned char *sel = NULL;
	unsigned char sel_len = 0;

	if (SSL_select_next_proto(&sel, &sel_len, ours, sizeof(ours) - 1, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	*out = sel;
	*outlen = sel_len;
	return SSL_TLSEXT_ERR_OK;
}

static int load_dev(SSL_CTX *ctx, struct srv_state *st)
{
	X509 *x = NULL;
	EVP_PKEY *k = NULL;
	char buf[256];
	int err;

	err = kd_tls_selfsigned_new(&x, &k, st->hostname, DEV_DEFAULT_HOST, time(NULL),
				    KD_TLS_SELFSIGNED_VALIDITY_SECS);
	if (err) {
		pr_err("tls: dev certificate for %s: %s", st->hostname, strerror(-err));
		return err;
	}
	if (SSL_CTX_use_certificate(ctx, x) != 1 || SSL_CTX_use_PrivateKey(ctx, k) != 1) {
		pr_err("tls: dev certificate for %s: %s", st->hostname, ssl_reason(buf, sizeof(buf)));
		err = -EIO;
	}
	X509_free(x);
	EVP_PKEY_free(k);
	return err;
}

/* 0 exists, -ENOENT missing, other -errno: cannot tell. */
static int file_state(const char *path)
{
	struct stat sb;

	if (stat(path, &sb) == 0)
		return 0;
	return -errno;
}

static int mkdir_p(const char *dir, mode_t mode)
{
	char path[PATH_MAX];
	size_t n = strlen(dir);

	if (n == 0 || n >= sizeof(path))
		return -ENAMETOOLONG;
	memcpy(path, dir, n + 1);
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(path, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int manual_generate(const char *dir, const char *crt, const char *key, const char *host)
{
	X509 *x = NULL;
	EVP_PKEY *k = NULL;
	int err;

	err = mkdir_p(dir, 0700);
	if (err) {
		pr_err("tls: create certdir %s: %s", dir, strerror(-err));
		return err;
	}
	err = kd_tls_selfsigned_new(&x, &k, host, NULL, time(NULL), KD_TLS_SELFSIGNED_VALIDITY_SECS);
	if (err) {
		pr_err("tls: self-signed certificate for %s: %s", host, strerror(-err));
		return err;
	}
	err = kd_tls_write_pem_pair(crt, key, x, k);
	if (err)
		pr_err("tls: write %s and %s: %s", crt, key, strerror(-err));
	else
		pr_info("tls: generated self-signed certificate for %s in %s", host, crt);
	X509_free(x);
	EVP_PKEY_free(k);
	return err;
}

/* Clients pin a self-signed IP certificate through the DERP map, so tell
 * the operator exactly what to put there (derper prints the same). */
static void log_derpmap_snippet(const char *host, X509 *leaf)
{
	char name[KD_TLS_CERTNAME_LEN];

	if (X509_self_signed(leaf, 0) != 1 || kd_tls_certname(name, leaf))
		return;
	pr_info("tls: self-signed certificate for IP address %s; configure it in the DERP map as: "
		"{\"Name\":\"custom\",\"RegionID\":900,\"HostName\":\"%s\",\"CertName\":\"%s\"}",
		host, host, name);
}

static int load_manual(SSL_CTX *ctx, struct srv_state *st, const char *certdir)
{
	char base[KD_TLS_HOSTNAME_MAX + 1], crt[PATH_MAX], key[PATH_MAX], buf[256];
	bool is_ip = kd_tls_host_is_ip(st->hostname);
	int crt_st, key_st, err;
	X509 *leaf;

	if (!certdir || !*certdir) {
		pr_err("tls: certmode manual needs a certdir");
		return -EINVAL;
	}
	if (kd_tls_sanitize_hostname(base, sizeof(base), st->hostname)) {
		pr_err("tls: hostname %s gives no certificate file name", st->hostname);
		return -EINVAL;
	}
	if (snprintf(crt, sizeof(crt), "%s/%s.crt", certdir, base) >= (int)sizeof(crt) ||
	    snprintf(key, sizeof(key), "%s/%s.key", certdir, base) >= (int)sizeof(key)) {
		pr_err("tls: certdir %s: path too long", certdir);
		return -ENAMETOOLONG;
	}
	crt_st = file_state(crt);
	key_st = file_state(key);
	if (crt_st == -ENOENT && key_st == -ENOENT && is_ip) {
		err = manual_generate(certdir, crt, key, st->hostname);
		if (err)
			return err;
	} else if (crt_st || key_st) {
		/* one file without the other is left for the operator to
		 * sort out: overwriting it could destroy a real key */
		err = crt_st ? crt_st : key_st;
		pr_err("tls: load %s: %s", crt_st ? crt : key, strerror(-err));
		return err;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, crt) != 1) {
		pr_err("tls: load %s: %s", crt, ssl_reason(buf, sizeof(buf)));
		return -EINVAL;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		pr_err("tls: load %s: %s", key, ssl_reason(buf, sizeof(buf)));
		return -EINVAL;
	}
	leaf = SSL_CTX_get0_certificate(ctx);
	if (!leaf || (is_ip ? X509_check_ip_asc(leaf, st->hostname, 0)
			    : X509_check_host(leaf, st->hostname, 0, 0, NULL)) != 1) {
		pr_err("tls: %s is not valid for hostname %s", crt, st->hostname);
		return -EINVAL;
	}
	if (is_ip)
		log_derpmap_snippet(st->hostname, leaf);
	st->strict_sni = !is_ip;
	return 0;
}

/* After the real chain, so clients that validate the path never see it in
 * the middle; OpenSSL sends an explicit chain as it is, in order. */
static int add_metacert(SSL_CTX *ctx, const uint8_t *server_pub)
{
	X509 *meta = NULL;
	char buf[256];
	int err = kd_tls_metacert_new(&meta, server_pub, time(NULL));

	if (err) {
		pr_err("tls: meta-certificate: %s", strerror(-err));
		return err;
	}
	if (SSL_CTX_add1_chain_cert(ctx, meta) != 1) {
		pr_err("tls: meta-certificate: %s", ssl_reason(buf, sizeof(buf)));
		err = -EIO;
	}
	X509_free(meta);
	return err;
}

static int set_versions(SSL_CTX *ctx, int min, int max)
{
	if (!min)
		min = TLS1_2_VERSION;
	if (min < TLS1_2_VERSION || (max && max < min))
		return -EINVAL;
	if (SSL_CTX_set_min_proto_version(ctx, min) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, max) != 1)
		return -EINVAL;
	return 0;
}

int kd_tls_set_common(SSL_CTX *ctx, int min_version, int max_version)
{
	int err = set_versions(ctx, min_version, max_version);

	if (err) {
		pr_err("tls: bad protocol versions min %#x max %#x", min_version, max_version);
		return err;
	}
	/* the event loop writes from its own queues and may retry with
	 * another buffer; idle connections give their buffers back (§13.1) */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
				      SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_default_passwd_cb(ctx, no_password);
	return 0;
}

int kd_tls_server_ctx_new(SSL_CTX **out, const struct kd_tls_server_opts *o)
{
	struct srv_state *st = NULL, *owned;
	SSL_CTX *ctx = NULL;
	const char *host;
	char buf[256];
	bool dev;
	int err = -EINVAL;

	*out = NULL;
	if (!o || !o->certmode || !o->server_pub) {
		pr_err("tls: server options need a certmode and the server key");
		return -EINVAL;
	}
	dev = strcmp(o->certmode, "dev") == 0;
	if (!dev && strcmp(o->certmode, "manual") != 0) {
		pr_err("tls: certmode %s not supported (manual or dev)", o->certmode);
		return -EINVAL;
	}
	host = o->hostname && *o->hostname ? o->hostname : (dev ? DEV_DEFAULT_HOST : NULL);
	if (!host || strlen(host) > KD_TLS_HOSTNAME_MAX) {
		pr_err("tls: certmode %s needs a hostname of at most %d characters", o->certmode,
		       KD_TLS_HOSTNAME_MAX);
		return -EINVAL;
	}
	pthread_once(&srv_state_once, srv_state_init);
	if (srv_state_idx < 0) {
		pr_err("tls: no SSL_CTX ex_data index");
		return -ENOMEM;
	}
	ctx = SSL_CTX_new(TLS_server_method());
	st = calloc(1, sizeof(*st));
	if (!ctx || !st) {
		pr_err("tls: SSL_CTX_new: %s", ssl_reason(buf, sizeof(buf)));
		err = -ENOMEM;
		goto fail;
	}
	snprintf(st->hostname, sizeof(st->hostname), "%s", host);
	if (SSL_CTX_set_ex_data(ctx, srv_state_idx, st) != 1) {
		err = -ENOMEM;
		goto fail;
	}
	/* owned by the context from here: srv_state_free runs with it */
	owned = st;
	st = NULL;
	err = kd_tls_set_common(ctx, o->min_version, o->max_version);
	if (err)
		goto fail;
	/* renegotiation only gives a client a way to burn our CPU */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
	if (o->ktls)
		SSL_CTX_set_options(ctx, SSL_OP_ENABLE_KTLS);
	err = dev ? load_dev(ctx, owned) : load_manual(ctx, owned, o->certdir);
	if (err)
		goto fail;
	err = add_metacert(ctx, o->server_pub);
	if (err)
		goto fail;
	SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
	SSL_CTX_set_tlsext_servername_arg(ctx, owned);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
	*out = ctx;
	return 0;
fail:
	free(st);
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return err;
}

void kd_tls_ctx_free(SSL_CTX *ctx)
{
	SSL_CTX_free(ctx);
}

bool kd_tls_ctx_ktls_enabled(const SSL_CTX *ctx)
{
	return ctx && (SSL_CTX_get_options(ctx) & SSL_OP_ENABLE_KTLS);
}

int kd_tls_server_ssl_new(SSL **out, SSL_CTX *ctx, int fd)
{
	SSL *ssl;

	*out = NULL;
	if (!ctx || fd < 0)
		return -EINVAL;
	ssl = SSL_new(ctx);
	if (!ssl)
		return -ENOMEM;
	if (SSL_set_fd(ssl, fd) != 1) {
		SSL_free(ssl);
		ERR_clear_error();
		return -EIO;
	}
	SSL_set_accept_state(ssl);
	*out = ssl;
	return 0;
}

void kd_tls_conn_info(SSL *ssl, struct kd_tls_conn_info *info)
{
	const SSL_CIPHER *c;
	BIO *b;

	info->version = "?";
	info->cipher = "";
	info->ktls_tx = info->ktls_rx = false;
	if (!ssl)
		return;
	switch (SSL_version(ssl)) {
	case TLS1_3_VERSION:
		info->version = "1.3";
		break;
	case TLS1_2_VERSION:
		info->version = "1.2";
		break;
	}
	c = SSL_get_current_cipher(ssl);
	if (c)
		info->cipher = SSL_CIPHER_get_name(c);
	b = SSL_get_wbio(ssl);
	info->ktls_tx = b && BIO_get_ktls_send(b) > 0;
	b = SSL_get_rbio(ssl);
	info->ktls_rx = b && BIO_get_ktls_recv(b) > 0;
}
