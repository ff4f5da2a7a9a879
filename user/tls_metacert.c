// SPDX-License-Identifier: MIT
/* The DERP meta-certificate (spec §3.6): an extra self-signed certificate at
 * the end of the served chain whose CN carries the server key, so a TLS 1.3
 * client learns the key inside the encrypted handshake and skips one RTT. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "key.h"
#include "tls.h"

/* Same bytes as the CN the reference writes; PrintableString like Go's
 * encoder picks for this alphabet. */
static int metacert_set_names(X509 *x, const uint8_t server_pub[static DERP_KEY_LEN])
{
	char cn[KD_TLS_METACERT_CN_PREFIX_LEN + KD_KEY_HEX_LEN + 1];
	X509_NAME *name = X509_get_subject_name(x);

	memcpy(cn, KD_TLS_METACERT_CN_PREFIX, KD_TLS_METACERT_CN_PREFIX_LEN);
	kd_hex_encode(cn + KD_TLS_METACERT_CN_PREFIX_LEN, server_pub, DERP_KEY_LEN);
	if (!X509_NAME_add_entry_by_NID(name, NID_commonName, V_ASN1_PRINTABLESTRING,
					(const unsigned char *)cn, -1, -1, 0))
		return -EIO;
	/* self-signed: issuer is the subject */
	if (!X509_set_issuer_name(x, name))
		return -EIO;
	return 0;
}

/* basicConstraints critical CA:FALSE and nothing else: an SKI without a
 * matching AKI makes derpprobe flag the cert as expiring (spec §3.6). */
static int metacert_set_extensions(X509 *x)
{
	BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
	int ok;

	if (!bc)
		return -ENOMEM;
	bc->ca = 0;
	ok = X509_add1_ext_i2d(x, NID_basic_constraints, bc, 1, X509V3_ADD_DEFAULT);
	BASIC_CONSTRAINTS_free(bc);
	return ok == 1 ? 0 : -EIO;
}

int kd_tls_metacert_new(X509 **out, const uint8_t server_pub[static DERP_KEY_LEN], time_t now)
{
	EVP_PKEY *pkey = NULL;
	X509 *x = NULL;
	int err = -EIO;

	*out = NULL;
	/* the key only signs this one certificate and is never used again */
	pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	if (!pkey)
		goto out;
	x = X509_new();
	if (!x) {
		err = -ENOMEM;
		goto out;
	}
	if (!X509_set_version(x, X509_VERSION_3) ||
	    !ASN1_INTEGER_set(X509_get_serialNumber(x), DERP_PROTOCOL_VERSION))
		goto out;
	err = metacert_set_names(x, server_pub);
	if (err)
		goto out;
	err = -EIO;
	if (!X509_time_adj_ex(X509_getm_notBefore(x), 0, -KD_TLS_METACERT_VALIDITY_SECS, &now) ||
	    !X509_time_adj_ex(X509_getm_notAfter(x), 0, KD_TLS_METACERT_VALIDITY_SECS, &now))
		goto out;
	if (!X509_set_pubkey(x, pkey))
		goto out;
	err = metacert_set_extensions(x);
	if (err)
		goto out;
	/* Ed25519 signs the message itself: no digest */
	if (X509_sign(x, pkey, NULL) <= 0) {
		err = -EIO;
		goto out;
	}
	*out = x;
	x = NULL;
	err = 0;
out:
	X509_free(x);
	EVP_PKEY_free(pkey);
	return err;
}

/* Go's pkix.Name keeps the last CN when there are several. */
static const ASN1_STRING *last_common_name(X509 *x)
{
	X509_NAME *name = X509_get_subject_name(x);
	int idx = -1, next;

	if (!name)
		return NULL;
	while ((next = X509_NAME_get_index_by_NID(name, NID_commonName, idx)) >= 0)
		idx = next;
	if (idx < 0)
		return NULL;
	return X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
}

int kd_tls_metacert_parse(X509 *x, uint8_t key[static DERP_KEY_LEN], int *proto_version)
{
	uint8_t k[DERP_KEY_LEN];
	const ASN1_STRING *cn;
	const ASN1_INTEGER *serial;
	const unsigned char *p;
	int64_t v;

	if (!x)
		return -EINVAL;
	cn = last_common_name(x);
	if (!cn || ASN1_STRING_length(cn) != KD_TLS_METACERT_CN_PREFIX_LEN + KD_KEY_HEX_LEN)
		return -EINVAL;
	p = ASN1_STRING_get0_data(cn);
	if (memcmp(p, KD_TLS_METACERT_CN_PREFIX, KD_TLS_METACERT_CN_PREFIX_LEN) != 0)
		return -EINVAL;
	if (kd_hex_decode(k, sizeof(k), (const char *)p + KD_TLS_METACERT_CN_PREFIX_LEN,
			  KD_KEY_HEX_LEN))
		return -EINVAL;
	/* clients accept serials of at most 8 bits (Go: BitLen() <= 8) */
	serial = X509_get0_serialNumber(x);
	if (!serial || !ASN1_INTEGER_get_int64(&v, serial) || v < 0 ||
	    v > KD_TLS_METACERT_MAX_SERIAL)
		return -EINVAL;
	memcpy(key, k, sizeof(k));
	*proto_version = (int)v;
	return 0;
}
