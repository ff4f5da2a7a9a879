// SPDX-License-Identifier: MIT
/* The meta-certificate as an object (spec §3.6) and the client-side reader
 * that decides fast start from it. The served chain is tested in
 * test_tls.c. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/x509v3.h>

#include "key.h"
#include "tls.h"

#define DAY (24L * 3600)
/* a fixed clock: the validity must follow it exactly */
#define NOW ((time_t)1767225600) /* 2026-01-01T00:00:00Z */

static const uint8_t pub[DERP_KEY_LEN] = {
	0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10,
	0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
};
#define PUB_HEX "0123456789abcdeffedcba98765432100011223344556677" "8899aabbccddeeff"

static X509 *roundtrip(X509 *x)
{
	unsigned char *der = NULL;
	const unsigned char *p;
	int len = i2d_X509(x, &der);
	X509 *y;

	assert_true(len > 0);
	p = der;
	y = d2i_X509(NULL, &p, len);
	assert_non_null(y);
	assert_ptr_equal(p, der + len);
	OPENSSL_free(der);
	return y;
}

static void test_fields(void **state)
{
	X509 *m = NULL, *r;
	char cn[128];
	ASN1_TIME *t = ASN1_TIME_new();
	const ASN1_OCTET_STRING *bc_der;
	int idx;

	assert_int_equal(kd_tls_metacert_new(&m, pub, NOW), 0);
	/* what a client sees is the DER: check that, not the in-memory object */
	r = roundtrip(m);
	assert_int_equal(X509_get_version(r), X509_VERSION_3);
	assert_int_equal(ASN1_INTEGER_get(X509_get0_serialNumber(r)), 2);
	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(r), NID_commonName, cn, sizeof(cn)) > 0);
	assert_string_equal(cn, "derpkey" PUB_HEX);
	assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(r)), 1);
	assert_int_equal(X509_NAME_cmp(X509_get_subject_name(r), X509_get_issuer_name(r)), 0);
	assert_int_equal(EVP_PKEY_get_id(X509_get0_pubkey(r)), EVP_PKEY_ED25519);
	assert_int_equal(X509_get_signature_nid(r), NID_ED25519);
	assert_int_equal(X509_verify(r, X509_get0_pubkey(r)), 1);

	assert_non_null(ASN1_TIME_set(t, NOW - 30 * DAY));
	assert_int_equal(ASN1_TIME_compare(X509_get0_notBefore(r), t), 0);
	assert_non_null(ASN1_TIME_set(t, NOW + 30 * DAY));
	assert_int_equal(ASN1_TIME_compare(X509_get0_notAfter(r), t), 0);

	/* basicConstraints only, critical, CA:FALSE encoded as Go does: an
	 * empty SEQUENCE (the DEFAULT FALSE is omitted) */
	assert_int_equal(X509_get_ext_count(r), 1);
	idx = X509_get_ext_by_NID(r, NID_basic_constraints, -1);
	assert_int_equal(idx, 0);
	assert_int_equal(X509_EXTENSION_get_critical(X509_get_ext(r, idx)), 1);
	bc_der = X509_EXTENSION_get_data(X509_get_ext(r, idx));
	assert_int_equal(ASN1_STRING_length(bc_der), 2);
	assert_memory_equal(ASN1_STRING_get0_data(bc_der), "\x30\x00", 2);
	assert_int_equal(X509_check_ca(r), 0);
	/* OpenSSL computes these on demand: they must not be in the cert */
	assert_int_equal(X509_get_ext_by_NID(r, NID_subject_key_identifier, -1), -1);
	assert_int_equal(X509_get_ext_by_NID(r, NID_authority_key_identifier, -1), -1);

	ASN1_TIME_free(t);
	X509_free(r);
	X509_free(m);
}

/* A fresh throw-away signing key every time; the CN stays the same. */
static void test_throwaway_key(void **state)
{
	X509 *a = NULL, *b = NULL;

	assert_int_equal(kd_tls_metacert_new(&a, pub, NOW), 0);
	assert_int_equal(kd_tls_metacert_new(&b, pub, NOW), 0);
	assert_int_equal(X509_NAME_cmp(X509_get_subject_name(a), X509_get_subject_name(b)), 0);
	assert_int_not_equal(EVP_PKEY_eq(X509_get0_pubkey(a), X509_get0_pubkey(b)), 1);
	X509_free(a);
	X509_free(b);
}

static void test_parse_roundtrip(void **state)
{
	X509 *m = NULL, *r;
	uint8_t key[DERP_KEY_LEN] = {0};
	int ver = 0;

	assert_int_equal(kd_tls_metacert_new(&m, pub, NOW), 0);
	r = roundtrip(m);
	assert_int_equal(kd_tls_metacert_parse(r, key, &ver), 0);
	assert_memory_equal(key, pub, sizeof(pub));
	assert_int_equal(ver, DERP_PROTOCOL_VERSION);
	X509_free(r);
	X509_free(m);
}

/* A certificate with the given CNs and serial, as an attacker or another
 * server could present; the signature does not matter to the reader. */
static X509 *cert_with(const char *cn1, const char *cn2, long serial)
{
	X509 *x = X509_new();
	X509_NAME *n = X509_get_subject_name(x);

	assert_non_null(x);
	assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), serial), 1);
	if (cn1)
		assert_int_equal(X509_NAME_add_entry_by_NID(n, NID_commonName, V_ASN1_UTF8STRING,
							    (const unsigned char *)cn1, -1, -1, 0), 1);
	if (cn2)
		assert_int_equal(X509_NAME_add_entry_by_NID(n, NID_commonName, V_ASN1_UTF8STRING,
							    (const unsigned char *)cn2, -1, -1, 0), 1);
	return x;
}

static int parse(const char *cn1, const char *cn2, long serial, uint8_t key[DERP_KEY_LEN], int *ver)
{
	X509 *x = cert_with(cn1, cn2, serial);
	int r = kd_tls_metacert_parse(x, key, ver);

	X509_free(x);
	return r;
}

static void test_parse_rejects(void **state)
{
	uint8_t key[DERP_KEY_LEN], zero[DERP_KEY_LEN] = {0};
	int ver = -7;

	memset(key, 0, sizeof(key));
	assert_int_equal(parse(NULL, NULL, 2, key, &ver), -EINVAL);
	assert_int_equal(parse("derp.example.com", NULL, 2, key, &ver), -EINVAL);
	assert_int_equal(parse("derpkey", NULL, 2, key, &ver), -EINVAL);
	/* 63 and 65 hex digits */
	assert_int_equal(parse("derpkey" PUB_HEX "0", NULL, 2, key, &ver), -EINVAL);
	assert_int_equal(parse("derpkey" "123456789abcdeffedcba98765432100011223344556677"
			       "8899aabbccddeeff", NULL, 2, key, &ver), -EINVAL);
	assert_int_equal(parse("derpkex" PUB_HEX, NULL, 2, key, &ver), -EINVAL);
	assert_int_equal(parse("derpkey" "g123456789abcdeffedcba98765432100011223344556677"
			       "8899aabbccddeeff", NULL, 2, key, &ver), -EINVAL);
	assert_int_equal(parse("DERPKEY" PUB_HEX, NULL, 2, key, &ver), -EINVAL);
	/* serials clients would not take as a version */
	assert_int_equal(parse("derpkey" PUB_HEX, NULL, 256, key, &ver), -EINVAL);
	assert_int_equal(parse("derpkey" PUB_HEX, NULL, -2, key, &ver), -EINVAL);
	/* nothing written on failure */
	assert_memory_equal(key, zero, sizeof(zero));
	assert_int_equal(ver, -7);
	assert_int_equal(kd_tls_metacert_parse(NULL, key, &ver), -EINVAL);
}

static void test_parse_edges(void **state)
{
	uint8_t key[DERP_KEY_LEN];
	int ver;

	assert_int_equal(parse("derpkey" PUB_HEX, NULL, 255, key, &ver), 0);
	assert_int_equal(ver, 255);
	assert_memory_equal(key, pub, sizeof(pub));
	/* serial 0 parses; the caller must then not fast-start */
	assert_int_equal(parse("derpkey" PUB_HEX, NULL, 0, key, &ver), 0);
	assert_int_equal(ver, 0);
	/* hex of either case, like Go's hex decoder */
	memset(key, 0, sizeof(key));
	assert_int_equal(parse("derpkey" "0123456789ABCDEFFEDCBA98765432100011223344556677"
			       "8899AABBCCDDEEFF", NULL, 3, key, &ver), 0);
	assert_memory_equal(key, pub, sizeof(pub));
	assert_int_equal(ver, 3);
	/* Go's pkix.Name keeps the last CN */
	assert_int_equal(parse("derpkey" PUB_HEX, "something else", 2, key, &ver), -EINVAL);
	assert_int_equal(parse("something else", "derpkey" PUB_HEX, 2, key, &ver), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fields),
		cmocka_unit_test(test_throwaway_key),
		cmocka_unit_test(test_parse_roundtrip),
		cmocka_unit_test(test_parse_rejects),
		cmocka_unit_test(test_parse_edges),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
