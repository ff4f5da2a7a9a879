// SPDX-License-Identifier: MIT
/* Real handshakes between kd_tls server and client contexts over socket
 * pairs and loopback TCP: versions, the served chain and its meta-cert,
 * fast-start key discovery, manual and dev cert modes, SNI and ALPN. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "key.h"
#include "log.h"
#include "tls.h"
#include "tls_pair.h"

#define DAY (24L * 3600)
#define DNS_HOST "derp.example.test"

static uint8_t server_pub[DERP_KEY_LEN];

static SSL_CTX *dev_server(const char *host, bool ktls)
{
	struct kd_tls_server_opts o = {
		.certmode = "dev", .hostname = host, .server_pub = server_pub, .ktls = ktls,
	};
	SSL_CTX *ctx = NULL;

	assert_int_equal(kd_tls_server_ctx_new(&ctx, &o), 0);
	assert_non_null(ctx);
	return ctx;
}

static SSL_CTX *client(const char *sni, const char *ca, int max_version)
{
	struct kd_tls_client_opts o = {
		.sni = sni, .ca_file = ca, .insecure = ca == NULL, .max_version = max_version,
	};
	SSL_CTX *ctx = NULL;

	assert_int_equal(kd_tls_client_ctx_new(&ctx, &o), 0);
	return ctx;
}

static const char *cn_of(X509 *x, char *buf, int len)
{
	buf[0] = '\0';
	X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, len);
	return buf;
}

/* Every field spec §3.6 fixes, read from the certificate as received. */
static void check_metacert(X509 *m)
{
	char cn[128], want[128];
	const ASN1_INTEGER *serial = X509_get0_serialNumber(m);
	BASIC_CONSTRAINTS *bc;
	EVP_PKEY *pk = X509_get0_pubkey(m);
	int pday, psec, idx;
	time_t now = time(NULL);

	assert_int_equal(X509_get_version(m), X509_VERSION_3);
	assert_int_equal(ASN1_INTEGER_get(serial), 2);
	memcpy(want, "derpkey", 7);
	kd_hex_encode(want + 7, server_pub, DERP_KEY_LEN);
	assert_string_equal(cn_of(m, cn, sizeof(cn)), want);
	assert_int_equal(X509_NAME_cmp(X509_get_subject_name(m), X509_get_issuer_name(m)), 0);
	assert_non_null(pk);
	assert_int_equal(EVP_PKEY_get_id(pk), EVP_PKEY_ED25519);
	assert_int_equal(X509_verify(m, pk), 1);

	assert_int_equal(X509_get_ext_count(m), 1);
	idx = X509_get_ext_by_NID(m, NID_basic_constraints, -1);
	assert_true(idx >= 0);
	assert_int_equal(X509_EXTENSION_get_critical(X509_get_ext(m, idx)), 1);
	bc = X509_get_ext_d2i(m, NID_basic_constraints, NULL, NULL);
	assert_non_null(bc);
	assert_int_equal(bc->ca, 0);
	assert_null(bc->pathlen);
	BASIC_CONSTRAINTS_free(bc);
	assert_int_equal(X509_get_ext_by_NID(m, NID_subject_key_identifier, -1), -1);
	assert_int_equal(X509_get_ext_by_NID(m, NID_authority_key_identifier, -1), -1);

	/* notBefore = start - 30 days, notAfter = start + 30 days */
	assert_int_equal(ASN1_TIME_diff(&pday, &psec, X509_get0_notBefore(m), X509_get0_notAfter(m)), 1);
	assert_int_equal(pday, 60);
	assert_int_equal(psec, 0);
	assert_true(X509_cmp_time(X509_get0_notBefore(m), &(time_t){now - 30 * DAY + 120}) < 0);
	assert_true(X509_cmp_time(X509_get0_notBefore(m), &(time_t){now - 30 * DAY - 120}) > 0);
}

static void test_dev_tls13(void **state)
{
	SSL_CTX *s = dev_server(NULL, false), *c = client(NULL, NULL, 0);
	struct tls_pair p = {.fds = {-1, -1}};
	struct kd_tls_conn_info ci;
	uint8_t key[DERP_KEY_LEN] = {0};
	int ver = 0;

	tls_pair_open(&p, s, c);
	assert_int_equal(tls_pair_handshake(&p), 0);
	kd_tls_conn_info(p.s, &ci);
	assert_string_equal(ci.version, "1.3");
	assert_true(strncmp(ci.cipher, "TLS_", 4) == 0);
	kd_tls_conn_info(p.c, &ci);
	assert_string_equal(ci.version, "1.3");
	tls_pair_xfer(p.c, p.s, "client hello data");
	tls_pair_xfer(p.s, p.c, "server reply");

	assert_true(kd_tls_peer_derp_key(p.c, key, &ver));
	assert_memory_equal(key, server_pub, DERP_KEY_LEN);
	assert_int_equal(ver, DERP_PROTOCOL_VERSION);
	tls_pair_close(&p);
	kd_tls_ctx_free(s);
	kd_tls_ctx_free(c);
}

static void test_dev_tls12(void **state)
{
	SSL_CTX *s = dev_server(NULL, false), *c = client(NULL, NULL, TLS1_2_VERSION);
	struct tls_pair p = {.fds = {-1, -1}};
	struct kd_tls_conn_info ci;
	STACK_OF(X509) *chain;
	uint8_t key[DERP_KEY_LEN] = {0};
	int ver = -1;

	tls_pair_open(&p, s, c);
	assert_int_equal(tls_pair_handshake(&p), 0);
	kd_tls_conn_info(p.s, &ci);
	assert_string_equal(ci.version, "1.2");
	assert_true(strstr(ci.cipher, "ECDHE-ECDSA") == ci.cipher);
	tls_pair_xfer(p.c, p.s, "over 1.2");
	tls_pair_xfer(p.s, p.c, "back over 1.2");

	/* the meta-cert is served over 1.2 too; the client must ignore it */
	chain = SSL_get_peer_cert_chain(p.c);
	assert_int_equal(sk_X509_num(chain), 2);
	check_metacert(sk_X509_value(chain, 1));
	assert_false(kd_tls_peer_derp_key(p.c, key, &ver));
	assert_int_equal(ver, -1);
	tls_pair_close(&p);
	kd_tls_ctx_free(s);
	kd_tls_ctx_free(c);
}

static void test_metacert_is_last_in_chain(void **state)
{
	SSL_CTX *s = dev_server("localhost", false), *c = client(NULL, NULL, 0);
	struct tls_pair p = {.fds = {-1, -1}};
	STACK_OF(X509) *chain;
	char cn[128];

	tls_pair_open(&p, s, c);
	assert_int_equal(tls_pair_handshake(&p), 0);
	chain = SSL_get_peer_cert_chain(p.c);
	assert_non_null(chain);
	assert_int_equal(sk_X509_num(chain), 2);
	assert_string_equal(cn_of(sk_X509_value(chain, 0), cn, sizeof(cn)), "localhost");
	assert_int_equal(X509_check_host(sk_X509_value(chain, 0), "localhost", 0, 0, NULL), 1);
	assert_int_equal(X509_check_ip_asc(sk_X509_value(chain, 0), "127.0.0.1", 0), 1);
	check_metacert(sk_X509_value(chain, 1));
	tls_pair_close(&p);
	kd_tls_ctx_free(s);
	kd_tls_ctx_free(c);
}

/* A self-signed certificate with this CN and serial, as some other server
 * might append: what the client-side reader must judge. */
static X509 *fake_meta(const char *cn, long serial)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	X509 *x = X509_new();

	assert_non_null(k);
	assert_non_null(x);
	assert_int_equal(X509_set_version(x, X509_VERSION_3), 1);
	assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), serial), 1);
	assert_int_equal(X509_NAME_add_entry_by_NID(X509_get_subject_name(x), NID_commonName,
						    V_ASN1_UTF8STRING, (const unsigned char *)cn, -1, -1, 0), 1);
	assert_int_equal(X509_set_issuer_name(x, X509_get_subject_name(x)), 1);
	assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
	assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), DAY));
	assert_int_equal(X509_set_pubkey(x, k), 1);
	assert_true(X509_sign(x, k, NULL) > 0);
	EVP_PKEY_free(k);
	return x;
}

/* A bare OpenSSL server presenting leaf + the given extra certificates. */
static SSL_CTX *server_with_chain(X509 *a, X509 *b)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	X509 *leaf;
	EVP_PKEY *k;

	assert_non_null(ctx);
	assert_int_equal(kd_tls_selfsigned_new(&leaf, &k, "127.0.0.1", NULL, time(NULL), DAY), 0);
	assert_int_equal(SSL_CTX_use_certificate(ctx, leaf), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(ctx, k), 1);
	if (a)
		assert_int_equal(SSL_CTX_add1_chain_cert(ctx, a), 1);
	if (b)
		assert_int_equal(SSL_CTX_add1_chain_cert(ctx, b), 1);
	X509_free(leaf);
	EVP_PKEY_free(k);
	return ctx;
}

static bool peer_key_from(X509 *a, X509 *b, uint8_t key[DERP_KEY_LEN], int *ver)
{
	SSL_CTX *s = server_with_chain(a, b), *c = client(NULL, NULL, 0);
	struct tls_pair p = {.fds = {-1, -1}};
	bool found;

	tls_pair_open(&p, s, c);
	assert_int_equal(tls_pair_handshake(&p), 0);
	found = kd_tls_peer_derp_key(p.c, key, ver);
	tls_pair_close(&p);
	SSL_CTX_free(s);
	kd_tls_ctx_free(c);
	return found;
}

/* Tailscale's parseMetaCert: skip certificates whose CN does not parse, stop
 * at the first that does, and fast-start only when its serial is not 0. */
static void test_peer_derp_key_scan(void **state)
{
	char cn[80], bad[80];
	uint8_t key[DERP_KEY_LEN], zero[DERP_KEY_LEN] = {0};
	int ver = -1;
	X509 *good, *good0, *broken;

	memcpy(cn, "derpkey", 7);
	kd_hex_encode(cn + 7, server_pub, DERP_KEY_LEN);
	memcpy(bad, cn, sizeof(bad));
	bad[10] = 'z';
	good = fake_meta(cn, 7);
	good0 = fake_meta(cn, 0);
	broken = fake_meta(bad, 2);

	memset(key, 0, sizeof(key));
	assert_true(peer_key_from(broken, good, key, &ver));
	assert_memory_equal(key, server_pub, DERP_KEY_LEN);
	assert_int_equal(ver, 7);

	memset(key, 0, sizeof(key));
	ver = -1;
	assert_false(peer_key_from(good0, good, key, &ver));
	assert_memory_equal(key, zero, DERP_KEY_LEN);
	assert_int_equal(ver, -1);
	assert_false(peer_key_from(broken, NULL, key, &ver));
	assert_false(peer_key_from(NULL, NULL, key, &ver));
	assert_false(kd_tls_peer_derp_key(NULL, key, &ver));
	X509_free(good);
	X509_free(good0);
	X509_free(broken);
}

static void test_alpn_never_h2(void **state)
{
	static const unsigned char both[] = "\x02h2\x08http/1.1", h2[] = "\x02h2";
	SSL_CTX *s = dev_server(NULL, false), *c = client(NULL, NULL, 0);
	struct tls_pair p = {.fds = {-1, -1}};
	const unsigned char *sel;
	unsigned int len;

	tls_pair_open(&p, s, c);
	assert_int_equal(SSL_set_alpn_protos(p.c, both, sizeof(both) - 1), 0);
	assert_int_equal(tls_pair_handshake(&p), 0);
	SSL_get0_alpn_selected(p.c, &sel, &len);
	assert_int_equal(len, 8);
	assert_memory_equal(sel, "http/1.1", 8);
	tls_pair_close(&p);

	tls_pair_open(&p, s, c);
	assert_int_equal(SSL_set_alpn_protos(p.c, h2, sizeof(h2) - 1), 0);
	assert_int_equal(tls_pair_handshake(&p), 0);
	SSL_get0_alpn_selected(p.c, &sel, &len);
	assert_int_equal(len, 0);
	tls_pair_close(&p);

	/* DERP clients send no ALPN */
	tls_pair_open(&p, s, c);
	assert_int_equal(tls_pair_handshake(&p), 0);
	SSL_get0_alpn_selected(p.s, &sel, &len);
	assert_int_equal(len, 0);
	tls_pair_close(&p);
	kd_tls_ctx_free(s);
	kd_tls_ctx_free(c);
}

static int tcp_pair(int *cfd, int *sfd)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM, 0);

	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&a, &alen))
		return -1;
	*cfd = socket(AF_INET, SOCK_STREAM, 0);
	if (*cfd < 0 || connect(*cfd, (struct sockaddr *)&a, sizeof(a)))
		return -1;
	*sfd = accept4(l, NULL, NULL, SOCK_NONBLOCK);
	close(l);
	fcntl(*cfd, F_SETFL, O_NONBLOCK);
	return *sfd < 0 ? -1 : 0;
}

/* kTLS is another task; here the option must be set, harmless, and
 * reported honestly as off when the kernel has no TLS ULP. */
static void test_ktls_option_and_conn_info(void **state)
{
	SSL_CTX *s = dev_server(NULL, true), *plain = dev_server(NULL, false);
	SSL_CTX *c = client(NULL, NULL, TLS1_2_VERSION);
	struct tls_pair p = {.fds = {-1, -1}};
	struct kd_tls_conn_info ci;
	int cfd, sfd, probe[2];

	assert_true(kd_tls_ctx_ktls_enabled(s));
	assert_false(kd_tls_ctx_ktls_enabled(plain));
	assert_false(kd_tls_ctx_ktls_enabled(NULL));

	/* does this kernel have the TLS ULP at all? */
	assert_int_equal(tcp_pair(&probe[0], &probe[1]), 0);
	int ulp = setsockopt(probe[1], IPPROTO_TCP, TCP_ULP, "tls", 3);
	close(probe[0]);
	close(probe[1]);

	assert_int_equal(tcp_pair(&cfd, &sfd), 0);
	tls_pair_open_fds(&p, s, c, cfd, sfd);
	assert_int_equal(tls_pair_handshake(&p), 0);
	kd_tls_conn_info(p.s, &ci);
	assert_string_equal(ci.version, "1.2");
	assert_true(ci.cipher[0] != '\0');
	tls_pair_xfer(p.c, p.s, "tcp data");
	tls_pair_xfer(p.s, p.c, "tcp reply");
	if (ulp == 0) {
		tls_pair_close(&p);
		kd_tls_ctx_free(s);
		kd_tls_ctx_free(plain);
		kd_tls_ctx_free(c);
		printf("# SKIP kernel has the TLS ULP: the fallback report is not testable here\n");
		skip();
	}
	assert_false(ci.ktls_tx);
	assert_false(ci.ktls_rx);
	tls_pair_close(&p);

	/* before the handshake nothing is claimed */
	tls_pair_open(&p, s, c);
	kd_tls_conn_info(p.s, &ci);
	assert_false(ci.ktls_tx || ci.ktls_rx);
	tls_pair_close(&p);
	kd_tls_conn_info(NULL, &ci);
	assert_string_equal(ci.version, "?");
	kd_tls_ctx_free(s);
	kd_tls_ctx_free(plain);
	kd_tls_ctx_free(c);
}

static void test_verifying_client_rejects_unknown_ca(void **state)
{
	SSL_CTX *s = dev_server(NULL, false), *c;
	struct kd_tls_client_opts o = {.sni = "127.0.0.1", .ca_file = NULL};
	struct tls_pair p = {.fds = {-1, -1}};

	/* system roots do not know a dev certificate */
	assert_int_equal(kd_tls_client_ctx_new(&c, &o), 0);
	tls_pair_open(&p, s, c);
	assert_int_equal(tls_pair_handshake(&p), -1);
	tls_pair_close(&p);
	kd_tls_ctx_free(c);

	/* verification without a name to check is refused up front */
	o.sni = NULL;
	assert_int_equal(kd_tls_client_ctx_new(&c, &o), -EINVAL);
	assert_null(c);
	kd_tls_ctx_free(s);
}

static void test_bad_server_opts(void **state)
{
	struct kd_tls_server_opts o = {.certmode = "letsencrypt", .hostname = "x", .server_pub = server_pub};
	SSL_CTX *ctx = (SSL_CTX *)1;

	assert_int_equal(kd_tls_server_ctx_new(&ctx, &o), -EINVAL);
	assert_null(ctx);
	o.certmode = "dev";
	o.min_version = TLS1_1_VERSION;
	assert_int_equal(kd_tls_server_ctx_new(&ctx, &o), -EINVAL);
	o.min_version = 0;
	o.server_pub = NULL;
	assert_int_equal(kd_tls_server_ctx_new(&ctx, &o), -EINVAL);
	o.server_pub = server_pub;
	o.certmode = "manual";
	o.certdir = NULL;
	assert_int_equal(kd_tls_server_ctx_new(&ctx, &o), -EINVAL);
	kd_tls_ctx_free(NULL);
}

/* A TLS 1.1 client must not get in (spec §3.3: minimum TLS 1.2). */
static void test_rejects_tls11(void **state)
{
	SSL_CTX *s = dev_server(NULL, false), *c = SSL_CTX_new(TLS_client_method());
	struct tls_pair p = {.fds = {-1, -1}};
	int fds[2];

	assert_non_null(c);
	SSL_CTX_set_security_level(c, 0);
	assert_int_equal(SSL_CTX_set_min_proto_version(c, TLS1_VERSION), 1);
	assert_int_equal(SSL_CTX_set_max_proto_version(c, TLS1_1_VERSION), 1);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
	p.fds[0] = fds[0];
	p.fds[1] = fds[1];
	p.c = SSL_new(c);
	assert_non_null(p.c);
	SSL_set_fd(p.c, fds[0]);
	SSL_set_connect_state(p.c);
	assert_int_equal(kd_tls_server_ssl_new(&p.s, s, fds[1]), 0);
	assert_int_equal(tls_pair_handshake(&p), -1);
	tls_pair_close(&p);
	SSL_CTX_free(c);
	kd_tls_ctx_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dev_tls13),
		cmocka_unit_test(test_dev_tls12),
		cmocka_unit_test(test_metacert_is_last_in_chain),
		cmocka_unit_test(test_peer_derp_key_scan),
		cmocka_unit_test(test_alpn_never_h2),
		cmocka_unit_test(test_ktls_option_and_conn_info),
		cmocka_unit_test(test_verifying_client_rejects_unknown_ca),
		cmocka_unit_test(test_bad_server_opts),
		cmocka_unit_test(test_rejects_tls11),
	};
	struct kd_keypair kp;

	if (kd_keypair_generate(&kp))
		return 1;
	memcpy(server_pub, kp.pub, sizeof(server_pub));
	kd_log_set_level(KD_LOG_WARN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
