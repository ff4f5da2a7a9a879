// SPDX-License-Identifier: MIT
/* certmode manual (spec §11.4): files in certdir, a self-signed certificate
 * made and kept for an IP host name, strict SNI for a DNS host name. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
static char tmpdir[] = "/tmp/kd-tls-test.XXXXXX";

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int setup(void **state)
{
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	memcpy(tmpdir + strlen(tmpdir) - 6, "XXXXXX", 6);
	return 0;
}

static void path_in(char *out, size_t len, const char *a, const char *b)
{
	assert_true(snprintf(out, len, "%s/%s", a, b) < (int)len);
}

static int manual_ctx(SSL_CTX **ctx, const char *certdir, const char *host)
{
	struct kd_tls_server_opts o = {
		.certmode = "manual", .certdir = certdir, .hostname = host, .server_pub = server_pub,
	};

	return kd_tls_server_ctx_new(ctx, &o);
}

static SSL_CTX *client(const char *sni, const char *ca)
{
	struct kd_tls_client_opts o = {.sni = sni, .ca_file = ca, .insecure = ca == NULL};
	SSL_CTX *ctx = NULL;

	assert_int_equal(kd_tls_client_ctx_new(&ctx, &o), 0);
	return ctx;
}

static mode_t mode_of(const char *path)
{
	struct stat sb;

	assert_int_equal(stat(path, &sb), 0);
	return sb.st_mode & 07777;
}

static X509 *read_cert(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *x;

	assert_non_null(f);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(x);
	return x;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = calloc(1, 65536);

	assert_non_null(f);
	assert_non_null(buf);
	assert_true(fread(buf, 1, 65535, f) > 0);
	fclose(f);
	return buf;
}

/* The fields derper's createSelfSignedIPCert sets. */
static void check_ip_cert(X509 *x, const char *ip)
{
	char cn[64];
	EVP_PKEY *pk = X509_get0_pubkey(x);
	char group[32];
	BIGNUM *serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	GENERAL_NAMES *san;
	int pday, psec, idx;
	time_t now = time(NULL);

	assert_int_equal(X509_get_version(x), X509_VERSION_3);
	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn)) > 0);
	assert_string_equal(cn, ip);
	assert_int_equal(X509_self_signed(x, 1), 1);

	assert_int_equal(EVP_PKEY_get_id(pk), EVP_PKEY_EC);
	assert_int_equal(EVP_PKEY_get_utf8_string_param(pk, "group", group, sizeof(group), NULL), 1);
	assert_string_equal(group, "prime256v1");

	assert_non_null(serial);
	assert_false(BN_is_zero(serial));
	assert_false(BN_is_negative(serial));
	assert_true(BN_num_bits(serial) <= 128);
	/* random: 2^-64 chance this short a serial happens by luck */
	assert_true(BN_num_bits(serial) > 64);
	BN_free(serial);

	san = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	assert_non_null(san);
	assert_int_equal(sk_GENERAL_NAME_num(san), 1);
	assert_int_equal(sk_GENERAL_NAME_value(san, 0)->type, GEN_IPADD);
	GENERAL_NAMES_free(san);
	assert_int_equal(X509_check_ip_asc(x, ip, 0), 1);

	assert_int_equal(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT);
	assert_int_equal(X509_get_extended_key_usage(x), XKU_SSL_SERVER);
	idx = X509_get_ext_by_NID(x, NID_basic_constraints, -1);
	assert_true(idx >= 0);
	assert_int_equal(X509_EXTENSION_get_critical(X509_get_ext(x, idx)), 1);
	assert_int_equal(X509_check_ca(x), 0);

	assert_int_equal(ASN1_TIME_diff(&pday, &psec, X509_get0_notBefore(x), X509_get0_notAfter(x)), 1);
	assert_int_equal(pday, 365);
	assert_int_equal(psec, 0);
	assert_true(X509_cmp_time(X509_get0_notBefore(x), &(time_t){now + 120}) < 0);
	assert_true(X509_cmp_time(X509_get0_notBefore(x), &(time_t){now - 120}) > 0);
}

static void test_ip_generates_then_reuses(void **state)
{
	char dir[512], parent[512], crt[600], key[600], name[KD_TLS_CERTNAME_LEN];
	char *crt1, *key1, *crt2, *key2;
	SSL_CTX *s = NULL, *c;
	struct tls_pair p = {.fds = {-1, -1}};
	X509 *file_cert, *served;
	unsigned char *der = NULL, md[32];
	char hex[65];
	int der_len;

	path_in(parent, sizeof(parent), tmpdir, "state");
	path_in(dir, sizeof(dir), parent, "certs");
	path_in(crt, sizeof(crt), dir, "127.0.0.1.crt");
	path_in(key, sizeof(key), dir, "127.0.0.1.key");

	assert_int_equal(manual_ctx(&s, dir, "127.0.0.1"), 0);
	assert_int_equal(mode_of(dir), 0700);
	assert_int_equal(mode_of(crt), 0644);
	assert_int_equal(mode_of(key), 0600);
	file_cert = read_cert(crt);
	check_ip_cert(file_cert, "127.0.0.1");

	/* a client pinning the file's certificate verifies the IP and gets the
	 * same certificate, with the meta-cert after it */
	c = client("127.0.0.1", crt);
	tls_pair_open(&p, s, c);
	assert_int_equal(tls_pair_handshake(&p), 0);
	assert_int_equal(SSL_get_verify_result(p.c), X509_V_OK);
	served = SSL_get0_peer_certificate(p.c);
	assert_int_equal(X509_cmp(served, file_cert), 0);
	assert_int_equal(sk_X509_num(SSL_get_peer_cert_chain(p.c)), 2);
	tls_pair_xfer(p.c, p.s, "pinned");
	tls_pair_close(&p);
	kd_tls_ctx_free(c);

	/* the DERP map pin is the SHA-256 of the DER */
	der_len = i2d_X509(file_cert, &der);
	assert_true(der_len > 0);
	assert_int_equal(EVP_Digest(der, (size_t)der_len, md, NULL, EVP_sha256(), NULL), 1);
	OPENSSL_free(der);
	kd_hex_encode(hex, md, sizeof(md));
	assert_int_equal(kd_tls_certname(name, file_cert), 0);
	assert_memory_equal(name, "sha256-raw:", 11);
	assert_string_equal(name + 11, hex);

	/* an IP host takes any SNI */
	c = client("whatever.example", NULL);
	tls_pair_open(&p, s, c);
	assert_int_equal(tls_pair_handshake(&p), 0);
	tls_pair_close(&p);
	kd_tls_ctx_free(c);
	kd_tls_ctx_free(s);

	/* second start: the same files, loaded, not regenerated */
	crt1 = slurp(crt);
	key1 = slurp(key);
	s = NULL;
	assert_int_equal(manual_ctx(&s, dir, "127.0.0.1"), 0);
	crt2 = slurp(crt);
	key2 = slurp(key);
	assert_string_equal(crt1, crt2);
	assert_string_equal(key1, key2);
	c = client("127.0.0.1", crt);
	tls_pair_open(&p, s, c);
	assert_int_equal(tls_pair_handshake(&p), 0);
	assert_int_equal(X509_cmp(SSL_get0_peer_certificate(p.c), file_cert), 0);
	tls_pair_close(&p);
	kd_tls_ctx_free(c);
	kd_tls_ctx_free(s);
	free(crt1);
	free(crt2);
	free(key1);
	free(key2);
	X509_free(file_cert);
}

/* IPv6 colons are dropped from the file name, as derper does. */
static void test_ipv6_file_name(void **state)
{
	char crt[600];
	SSL_CTX *s = NULL;
	X509 *x;

	assert_int_equal(manual_ctx(&s, tmpdir, "::1"), 0);
	path_in(crt, sizeof(crt), tmpdir, "1.crt");
	x = read_cert(crt);
	check_ip_cert(x, "::1");
	X509_free(x);
	kd_tls_ctx_free(s);
}

/* One file without the other might be a real key: refuse, touch nothing. */
static void test_ip_lone_key_refused(void **state)
{
	char key[600], crt[600];
	SSL_CTX *s = (SSL_CTX *)1;
	int fd;

	path_in(key, sizeof(key), tmpdir, "10.1.2.3.key");
	path_in(crt, sizeof(crt), tmpdir, "10.1.2.3.crt");
	fd = open(key, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "keep me\n", 8), 8);
	close(fd);
	assert_int_equal(manual_ctx(&s, tmpdir, "10.1.2.3"), -ENOENT);
	assert_null(s);
	assert_int_equal(access(crt, F_OK), -1);
	assert_int_equal(errno, ENOENT);
}

static void write_pair(const char *dir, const char *base, const char *cert_host)
{
	char crt[600], key[600];
	X509 *x;
	EVP_PKEY *k;

	assert_int_equal(snprintf(crt, sizeof(crt), "%s/%s.crt", dir, base) < (int)sizeof(crt), 1);
	assert_int_equal(snprintf(key, sizeof(key), "%s/%s.key", dir, base) < (int)sizeof(key), 1);
	assert_int_equal(kd_tls_selfsigned_new(&x, &k, cert_host, NULL, time(NULL), 30 * DAY), 0);
	assert_int_equal(kd_tls_write_pem_pair(crt, key, x, k), 0);
	X509_free(x);
	EVP_PKEY_free(k);
}

static void test_dns_sni_must_match(void **state)
{
	char crt[600];
	SSL_CTX *s = NULL, *c;
	struct tls_pair p = {.fds = {-1, -1}};

	write_pair(tmpdir, DNS_HOST, DNS_HOST);
	path_in(crt, sizeof(crt), tmpdir, DNS_HOST ".crt");
	assert_int_equal(manual_ctx(&s, tmpdir, DNS_HOST), 0);

	/* exact SNI, verified against the certificate itself */
	c = client(DNS_HOST, crt);
	tls_pair_open(&p, s, c);
	assert_int_equal(SSL_get_servername(p.c, TLSEXT_NAMETYPE_host_name) != NULL, 1);
	assert_int_equal(tls_pair_handshake(&p), 0);
	assert_int_equal(SSL_get_verify_result(p.c), X509_V_OK);
	tls_pair_xfer(p.c, p.s, "GET /derp HTTP/1.1");
	tls_pair_close(&p);
	kd_tls_ctx_free(c);

	/* another name, even one differing only in case, fails the handshake */
	c = client("other.example.test", NULL);
	tls_pair_open(&p, s, c);
	assert_int_equal(tls_pair_handshake(&p), -1);
	tls_pair_close(&p);
	kd_tls_ctx_free(c);
	c = client("DERP.example.test", NULL);
	tls_pair_open(&p, s, c);
	assert_int_equal(tls_pair_handshake(&p), -1);
	tls_pair_close(&p);
	kd_tls_ctx_free(c);

	/* and no SNI at all is only fine for an IP host */
	c = client(NULL, NULL);
	tls_pair_open(&p, s, c);
	assert_int_equal(tls_pair_handshake(&p), -1);
	tls_pair_close(&p);
	kd_tls_ctx_free(c);
	kd_tls_ctx_free(s);
}

/* A CA-issued certificate, for chains the server did not make itself. */
static X509 *issue(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, bool ca)
{
	static long serial = 100;
	X509 *x = X509_new();
	X509V3_CTX v3;
	X509_EXTENSION *ext;

	assert_non_null(x);
	assert_int_equal(X509_set_version(x, X509_VERSION_3), 1);
	assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), serial++), 1);
	assert_int_equal(X509_NAME_add_entry_by_NID(X509_get_subject_name(x), NID_commonName,
						    MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0), 1);
	assert_int_equal(X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer)
						       : X509_get_subject_name(x)), 1);
	assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), -3600));
	assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), DAY));
	assert_int_equal(X509_set_pubkey(x, key), 1);
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
	assert_non_null(ext);
	assert_int_equal(X509_add_ext(x, ext, -1), 1);
	X509_EXTENSION_free(ext);
	ext = X509V3_EXT_conf_nid(NULL, &v3, ca ? NID_key_usage : NID_subject_alt_name,
				  ca ? "critical,keyCertSign,cRLSign" : "DNS:" DNS_HOST);
	assert_non_null(ext);
	assert_int_equal(X509_add_ext(x, ext, -1), 1);
	X509_EXTENSION_free(ext);
	assert_true(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
	return x;
}

static void write_pem(const char *path, X509 *a, X509 *b, EVP_PKEY *k)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	if (a)
		assert_int_equal(PEM_write_X509(f, a), 1);
	if (b)
		assert_int_equal(PEM_write_X509(f, b), 1);
	if (k)
		assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
	assert_int_equal(fclose(f), 0);
}

static const char *cn_of(X509 *x, char *buf, int len)
{
	buf[0] = '\0';
	X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, len);
	return buf;
}

/* A real chain: leaf, intermediate, then the meta-cert, in that order and
 * over both versions; the client builds its path to the root without it. */
static void test_chain_with_intermediate(void **state)
{
	EVP_PKEY *rk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	EVP_PKEY *ik = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	EVP_PKEY *lk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *root = issue("Test Root", rk, NULL, NULL, true);
	X509 *inter = issue("Test Intermediate", ik, root, rk, true);
	X509 *leaf = issue(DNS_HOST, lk, inter, ik, false);
	char crt[600], key[600], ca[600], cn[128];
	const int versions[] = {TLS1_2_VERSION, TLS1_3_VERSION};
	SSL_CTX *s = NULL;

	path_in(crt, sizeof(crt), tmpdir, DNS_HOST ".crt");
	path_in(key, sizeof(key), tmpdir, DNS_HOST ".key");
	path_in(ca, sizeof(ca), tmpdir, "root.pem");
	write_pem(crt, leaf, inter, NULL);
	write_pem(key, NULL, NULL, lk);
	write_pem(ca, root, NULL, NULL);
	assert_int_equal(manual_ctx(&s, tmpdir, DNS_HOST), 0);

	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		struct kd_tls_client_opts o = {.sni = DNS_HOST, .ca_file = ca, .max_version = versions[i]};
		struct tls_pair p = {.fds = {-1, -1}};
		STACK_OF(X509) *chain;
		uint8_t k[DERP_KEY_LEN];
		int ver = 0;
		SSL_CTX *c = NULL;

		assert_int_equal(kd_tls_client_ctx_new(&c, &o), 0);
		tls_pair_open(&p, s, c);
		assert_int_equal(tls_pair_handshake(&p), 0);
		assert_int_equal(SSL_version(p.c), versions[i]);
		assert_int_equal(SSL_get_verify_result(p.c), X509_V_OK);
		chain = SSL_get_peer_cert_chain(p.c);
		assert_int_equal(sk_X509_num(chain), 3);
		assert_int_equal(X509_cmp(sk_X509_value(chain, 0), leaf), 0);
		assert_int_equal(X509_cmp(sk_X509_value(chain, 1), inter), 0);
		assert_memory_equal(cn_of(sk_X509_value(chain, 2), cn, sizeof(cn)), "derpkey", 7);
		chain = SSL_get0_verified_chain(p.c);
		assert_int_equal(sk_X509_num(chain), 3);
		assert_int_equal(X509_cmp(sk_X509_value(chain, 2), root), 0);
		assert_int_equal(kd_tls_peer_derp_key(p.c, k, &ver), versions[i] == TLS1_3_VERSION);
		if (versions[i] == TLS1_3_VERSION)
			assert_memory_equal(k, server_pub, sizeof(k));
		tls_pair_close(&p);
		kd_tls_ctx_free(c);
	}
	kd_tls_ctx_free(s);
	X509_free(leaf);
	X509_free(inter);
	X509_free(root);
	EVP_PKEY_free(lk);
	EVP_PKEY_free(ik);
	EVP_PKEY_free(rk);
}

static void test_dns_cert_for_other_host_refused(void **state)
{
	SSL_CTX *s = (SSL_CTX *)1;

	write_pair(tmpdir, DNS_HOST, "elsewhere.example.test");
	assert_int_equal(manual_ctx(&s, tmpdir, DNS_HOST), -EINVAL);
	assert_null(s);
}

/* DNS names never get a generated certificate. */
static void test_dns_missing_files(void **state)
{
	char crt[600];
	SSL_CTX *s = (SSL_CTX *)1;

	assert_int_equal(manual_ctx(&s, tmpdir, DNS_HOST), -ENOENT);
	assert_null(s);
	path_in(crt, sizeof(crt), tmpdir, DNS_HOST ".crt");
	assert_int_equal(access(crt, F_OK), -1);
}

static void test_garbage_cert_file(void **state)
{
	char crt[600], key[600];
	SSL_CTX *s = (SSL_CTX *)1;
	FILE *f;

	path_in(crt, sizeof(crt), tmpdir, DNS_HOST ".crt");
	path_in(key, sizeof(key), tmpdir, DNS_HOST ".key");
	f = fopen(crt, "w");
	assert_non_null(f);
	fputs("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n", f);
	fclose(f);
	f = fopen(key, "w");
	assert_non_null(f);
	fclose(f);
	assert_int_equal(manual_ctx(&s, tmpdir, DNS_HOST), -EINVAL);
	assert_null(s);
}

static void test_sanitize_hostname(void **state)
{
	char out[64];

	assert_int_equal(kd_tls_sanitize_hostname(out, sizeof(out), "derp-1.example.com"), 0);
	assert_string_equal(out, "derp-1.example.com");
	assert_int_equal(kd_tls_sanitize_hostname(out, sizeof(out), "fd7a:115c::1"), 0);
	assert_string_equal(out, "fd7a115c1");
	assert_int_equal(kd_tls_sanitize_hostname(out, sizeof(out), "../../etc/x_y"), 0);
	assert_string_equal(out, "....etcxy");
	assert_int_equal(kd_tls_sanitize_hostname(out, sizeof(out), "::"), -EINVAL);
	assert_int_equal(kd_tls_sanitize_hostname(out, 4, "abcd"), -EINVAL);
	assert_int_equal(kd_tls_sanitize_hostname(out, 5, "abcd"), 0);
	assert_true(kd_tls_host_is_ip("10.0.0.1"));
	assert_true(kd_tls_host_is_ip("::1"));
	assert_false(kd_tls_host_is_ip("10.0.0"));
	assert_false(kd_tls_host_is_ip("derp.example.com"));
	assert_false(kd_tls_host_is_ip(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ip_generates_then_reuses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ipv6_file_name, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ip_lone_key_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dns_sni_must_match, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chain_with_intermediate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dns_cert_for_other_host_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dns_missing_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_cert_file, setup, teardown),
		cmocka_unit_test(test_sanitize_hostname),
	};
	struct kd_keypair kp;

	if (kd_keypair_generate(&kp))
		return 1;
	memcpy(server_pub, kp.pub, sizeof(server_pub));
	kd_log_set_level(KD_LOG_WARN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
