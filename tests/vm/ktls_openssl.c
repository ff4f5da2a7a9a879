/* kTLS through OpenSSL 3 (SSL_OP_ENABLE_KTLS) on loopback: for each TLS
 * version and AEAD, a handshake with an in-memory self-signed certificate,
 * 1 MiB each way through SSL_write/SSL_read, and - where OpenSSL reports kTLS -
 * application data through plain write()/read() on the socket, which only
 * works when the kernel does the record crypto.
 *
 * The expectation is "OpenSSL uses kTLS whenever the kernel accepts the
 * cipher": the kernel is asked directly first (fixed keys, like the kernel
 * selftests); if it takes TLS_TX but OpenSSL reports no kTLS send, OpenSSL
 * fell back silently (missing crypto modules, build without kTLS) and the
 * test fails. OpenSSL before 3.2 never offloads TLS 1.3 receive. */
#include <errno.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vm_probe.h"

#define BULK_BYTES (1u << 20)
#define RAW_BYTES (64u << 10)
#define CERT_NAME "kderp.test"

struct tls_case {
	const char *name;
	int version;		/* TLS1_2_VERSION / TLS1_3_VERSION */
	const char *suite;	/* cipher list (1.2) or ciphersuite (1.3) */
	uint16_t kcipher;	/* TLS_CIPHER_* */
	bool optional;		/* the kernel may lack it: skip, not fail */
};

static const struct tls_case cases[] = {
	{ "ktls.tls12.aes128gcm", TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256", TLS_CIPHER_AES_GCM_128, false },
	{ "ktls.tls12.aes256gcm", TLS1_2_VERSION, "ECDHE-ECDSA-AES256-GCM-SHA384", TLS_CIPHER_AES_GCM_256, false },
	{ "ktls.tls12.chacha20poly1305", TLS1_2_VERSION, "ECDHE-ECDSA-CHACHA20-POLY1305", TLS_CIPHER_CHACHA20_POLY1305, true },
	{ "ktls.tls13.aes128gcm", TLS1_3_VERSION, "TLS_AES_128_GCM_SHA256", TLS_CIPHER_AES_GCM_128, false },
	{ "ktls.tls13.aes256gcm", TLS1_3_VERSION, "TLS_AES_256_GCM_SHA384", TLS_CIPHER_AES_GCM_256, false },
	{ "ktls.tls13.chacha20poly1305", TLS1_3_VERSION, "TLS_CHACHA20_POLY1305_SHA256", TLS_CIPHER_CHACHA20_POLY1305, true },
};

/* Asks the kernel directly whether it takes this cipher for TX (dir =
 * TLS_TX) or RX; returns 0 or a positive errno. */
static int kernel_accepts(const struct tls_case *tc, int dir)
{
	union {
		struct tls_crypto_info info;
		struct tls12_crypto_info_aes_gcm_128 g128;
		struct tls12_crypto_info_aes_gcm_256 g256;
		struct tls12_crypto_info_chacha20_poly1305 cc;
	} ci;
	socklen_t len;
	int c, s, err;

	memset(&ci, 0x5a, sizeof(ci));
	ci.info.version = tc->version == TLS1_3_VERSION ? TLS_1_3_VERSION : TLS_1_2_VERSION;
	ci.info.cipher_type = tc->kcipher;
	len = tc->kcipher == TLS_CIPHER_AES_GCM_128 ? sizeof(ci.g128)
	      : tc->kcipher == TLS_CIPHER_AES_GCM_256 ? sizeof(ci.g256)
						     : sizeof(ci.cc);
	err = vm_tcp_pair(&c, &s);
	if (err)
		return -err;
	if (setsockopt(c, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) ||
	    setsockopt(c, SOL_TLS, dir, &ci, len))
		err = errno;
	close(c);
	close(s);
	return err;
}

static int make_cert(EVP_PKEY **pkey, X509 **cert)
{
	X509_EXTENSION *ext = NULL;
	X509_NAME *name;
	X509 *x = NULL;
	EVP_PKEY *k;

	*pkey = NULL;
	*cert = NULL;
	k = EVP_EC_gen("P-256");
	if (!k)
		return -ENOMEM;
	x = X509_new();
	if (!x || !X509_set_version(x, 2) || !ASN1_INTEGER_set(X509_get_serialNumber(x), 1) ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), 86400) || !X509_set_pubkey(x, k))
		goto fail;
	name = X509_get_subject_name(x);
	if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)CERT_NAME,
					-1, -1, 0) ||
	    !X509_set_issuer_name(x, name))
		goto fail;
	ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, "DNS:" CERT_NAME);
	if (!ext || !X509_add_ext(x, ext, -1) || !X509_sign(x, k, EVP_sha256()))
		goto fail;
	X509_EXTENSION_free(ext);
	*pkey = k;
	*cert = x;
	return 0;
fail:
	X509_EXTENSION_free(ext);
	X509_free(x);
	EVP_PKEY_free(k);
	return -EINVAL;
}

static SSL_CTX *make_ctx(const struct tls_case *tc, bool server, EVP_PKEY *pkey, X509 *cert)
{
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());

	if (!ctx)
		return NULL;
	SSL_CTX_set_options(ctx, SSL_OP_ENABLE_KTLS);
	if (!SSL_CTX_set_min_proto_version(ctx, tc->version) ||
	    !SSL_CTX_set_max_proto_version(ctx, tc->version))
		goto fail;
	if (tc->version == TLS1_3_VERSION ? !SSL_CTX_set_ciphersuites(ctx, tc->suite)
					  : !SSL_CTX_set_cipher_list(ctx, tc->suite))
		goto fail;
	if (server) {
		if (!SSL_CTX_use_certificate(ctx, cert) || !SSL_CTX_use_PrivateKey(ctx, pkey))
			goto fail;
	} else {
		/* the client trusts exactly this certificate and checks its name */
		if (!X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), cert))
			goto fail;
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

struct side {
	SSL *ssl;
	int fd;
	bool tx, rx;		/* BIO_get_ktls_send / _recv after the handshake */
	bool bulk_ok;		/* written before the second barrier, read by the peer after it */
	char err[160];
};

struct run {
	struct side cli, srv;
	pthread_barrier_t bar;
};

static void fill(uint8_t *b, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(i * 131u + (i >> 11) + seed);
}

static bool check(const uint8_t *b, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i++)
		if (b[i] != (uint8_t)(i * 131u + (i >> 11) + seed))
			return false;
	return true;
}

static void fail_side(struct side *s, const char *step)
{
	unsigned long e = ERR_get_error();

	if (s->err[0])
		return;
	snprintf(s->err, sizeof(s->err), "%s: %s%s%s", step, errno ? strerror(errno) : "",
		 e ? " / " : "", e ? ERR_reason_error_string(e) : "");
	/* the peer blocked in a read must see EOF now, not at its timeout */
	shutdown(s->fd, SHUT_RDWR);
}

/* Moves n bytes; raw = plain write()/read() on the fd (kernel crypto). */
static int xfer_send(struct side *s, bool raw, uint8_t seed, size_t n)
{
	uint8_t *b = malloc(n);
	size_t off = 0;

	if (!b)
		return -ENOMEM;
	fill(b, n, seed);
	errno = 0;
	while (off < n) {
		ssize_t w = raw ? write(s->fd, b + off, n - off) : SSL_write(s->ssl, b + off, (int)(n - off));

		if (w <= 0) {
			fail_side(s, raw ? "write()" : "SSL_write");
			break;
		}
		off += (size_t)w;
	}
	free(b);
	return off == n ? 0 : -EIO;
}

static int xfer_recv(struct side *s, bool raw, uint8_t seed, size_t n)
{
	uint8_t *b = malloc(n);
	size_t off = 0;
	int ret = -EIO;

	if (!b)
		return -ENOMEM;
	errno = 0;
	while (off < n) {
		ssize_t r = raw ? read(s->fd, b + off, n - off) : SSL_read(s->ssl, b + off, (int)(n - off));

		if (r <= 0) {
			fail_side(s, raw ? "read()" : "SSL_read");
			goto out;
		}
		off += (size_t)r;
	}
	if (check(b, n, seed))
		ret = 0;
	else
		fail_side(s, raw ? "read() data mismatch" : "SSL_read data mismatch");
out:
	free(b);
	return ret;
}

static void handshake_done(struct side *s)
{
	s->tx = BIO_get_ktls_send(SSL_get_wbio(s->ssl));
	s->rx = BIO_get_ktls_recv(SSL_get_rbio(s->ssl));
}

static void *server_main(void *arg)
{
	struct run *r = arg;
	struct side *s = &r->srv;

	errno = 0;
	if (SSL_accept(s->ssl) != 1)
		fail_side(s, "SSL_accept");
	else
		handshake_done(s);
	pthread_barrier_wait(&r->bar);
	if (!s->err[0] && !xfer_recv(s, false, 1, BULK_BYTES))
		xfer_send(s, false, 2, BULK_BYTES);
	s->bulk_ok = !s->err[0];
	pthread_barrier_wait(&r->bar);
	if (s->bulk_ok && r->cli.bulk_ok && r->cli.tx)
		xfer_recv(s, s->rx, 3, RAW_BYTES);
	if (!s->err[0] && r->cli.bulk_ok && s->tx)
		xfer_send(s, true, 4, RAW_BYTES);
	return NULL;
}

static void client_main(struct run *r)
{
	struct side *c = &r->cli;

	errno = 0;
	if (SSL_connect(c->ssl) != 1)
		fail_side(c, "SSL_connect");
	else
		handshake_done(c);
	pthread_barrier_wait(&r->bar);
	if (!c->err[0] && !xfer_send(c, false, 1, BULK_BYTES))
		xfer_recv(c, false, 2, BULK_BYTES);
	c->bulk_ok = !c->err[0];
	pthread_barrier_wait(&r->bar);
	if (c->bulk_ok && r->srv.bulk_ok && c->tx)
		xfer_send(c, true, 3, RAW_BYTES);
	if (!c->err[0] && r->srv.bulk_ok && r->srv.tx)
		xfer_recv(c, c->rx, 4, RAW_BYTES);
}

/* has_ktls = false: the kernel has no kTLS; the handshake and the bulk
 * transfer still run (userspace TLS, the fallback kderpd uses) and the test
 * is reported as skipped once they worked. */
static void run_case(const struct tls_case *tc, bool has_ktls, int ulp_err, EVP_PKEY *pkey, X509 *cert)
{
	SSL_CTX *sctx = NULL, *cctx = NULL;
	struct run r = { .cli.fd = -1, .srv.fd = -1 };
	bool want_rx, barrier = false;
	int ktx, krx, err;
	pthread_t th;
	char cipher[64] = "";

	ktx = has_ktls ? kernel_accepts(tc, TLS_TX) : ulp_err;
	krx = has_ktls ? kernel_accepts(tc, TLS_RX) : ulp_err;
	if (ktx && has_ktls) {
		vm_report(tc->name, tc->optional ? VM_SKIP : VM_FAIL,
			  "kernel rejects TLS_TX for this cipher: %s%s", vm_errname(ktx),
			  ktx == ENOENT ? " (its crypto module is not loaded or not built)" : "");
		return;
	}
	sctx = make_ctx(tc, true, pkey, cert);
	cctx = make_ctx(tc, false, pkey, cert);
	err = vm_tcp_pair(&r.cli.fd, &r.srv.fd);
	if (!sctx || !cctx || err) {
		vm_report(tc->name, VM_FAIL, "setup: ctx %s, socket pair %s", sctx && cctx ? "ok" : "failed",
			  vm_errname(-err));
		goto out;
	}
	r.srv.ssl = SSL_new(sctx);
	r.cli.ssl = SSL_new(cctx);
	if (!r.srv.ssl || !r.cli.ssl || !SSL_set_fd(r.srv.ssl, r.srv.fd) ||
	    !SSL_set_fd(r.cli.ssl, r.cli.fd) || !SSL_set1_host(r.cli.ssl, CERT_NAME) ||
	    pthread_barrier_init(&r.bar, NULL, 2)) {
		vm_report(tc->name, VM_FAIL, "setup: SSL objects");
		goto out;
	}
	barrier = true;
	if (pthread_create(&th, NULL, server_main, &r)) {
		vm_report(tc->name, VM_FAIL, "setup: pthread_create");
		goto out;
	}
	client_main(&r);
	pthread_join(th, NULL);
	if (SSL_get_current_cipher(r.cli.ssl))
		snprintf(cipher, sizeof(cipher), "%s", SSL_CIPHER_get_name(SSL_get_current_cipher(r.cli.ssl)));

	if (r.cli.err[0] || r.srv.err[0]) {
		vm_report(tc->name, VM_FAIL, "%s client: %s; server: %s", cipher,
			  r.cli.err[0] ? r.cli.err : "ok", r.srv.err[0] ? r.srv.err : "ok");
		goto out;
	}
	if (!has_ktls) {
		vm_report(tc->name, r.cli.tx || r.srv.tx ? VM_FAIL : VM_SKIP,
			  "kernel has no kTLS (TCP_ULP tls: %s); %s userspace TLS 1MiB each way ok, "
			  "ktls client tx=%d server tx=%d", vm_errname(ulp_err), cipher, r.cli.tx, r.srv.tx);
		goto out;
	}
	/* OpenSSL 3.0/3.1 offload only the send side of TLS 1.3 */
	want_rx = krx == 0 && (tc->version == TLS1_2_VERSION || OPENSSL_VERSION_NUMBER >= 0x30200000L);
	if (!r.cli.tx || !r.srv.tx || (want_rx && (!r.cli.rx || !r.srv.rx))) {
		vm_report(tc->name, VM_FAIL,
			  "%s: OpenSSL fell back to userspace although the kernel takes the cipher "
			  "(kernel tx=%s rx=%s; ktls client tx=%d rx=%d server tx=%d rx=%d)",
			  cipher, vm_errname(ktx), vm_errname(krx), r.cli.tx, r.cli.rx, r.srv.tx, r.srv.rx);
		goto out;
	}
	vm_report(tc->name, VM_PASS,
		  "%s ktls client tx=%d rx=%d server tx=%d rx=%d (kernel tx=%s rx=%s); 1MiB each way ok; "
		  "plain write() both ways ok, plain read() on %s%s%s",
		  cipher, r.cli.tx, r.cli.rx, r.srv.tx, r.srv.rx, vm_errname(ktx), vm_errname(krx),
		  r.cli.rx ? "client" : "", r.cli.rx && r.srv.rx ? "+" : "",
		  r.srv.rx ? "server" : (r.cli.rx ? "" : "neither (SSL_read)"));
out:
	if (barrier)
		pthread_barrier_destroy(&r.bar);
	SSL_free(r.cli.ssl);
	SSL_free(r.srv.ssl);
	if (r.cli.fd >= 0)
		close(r.cli.fd);
	if (r.srv.fd >= 0)
		close(r.srv.fd);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	ERR_clear_error();
}

int vm_ktls_openssl_run(void)
{
	EVP_PKEY *pkey = NULL;
	X509 *cert = NULL;
	bool any = false, has;
	int err;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		any |= vm_selected(cases[i].name);
	if (!any)
		return 0;
	has = vm_kernel_has_ktls(&err);
	if (make_cert(&pkey, &cert)) {
		vm_report("ktls.cert", VM_FAIL, "cannot make the self-signed certificate");
		return -EINVAL;
	}
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (vm_selected(cases[i].name))
			run_case(&cases[i], has, err, pkey, cert);
	X509_free(cert);
	EVP_PKEY_free(pkey);
	return 0;
}
