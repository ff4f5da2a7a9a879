// SPDX-License-Identifier: MIT
/* Server certificates that kderpd makes itself: the self-signed IP
 * certificate of manual mode (spec §11.4), the in-memory one of dev mode,
 * their pinning name and their files. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "key.h"
#include "tls.h"

#define SERIAL_BITS 128

int kd_tls_sanitize_hostname(char *out, size_t out_len, const char *hostname)
{
	size_t n = 0;

	if (!out || out_len == 0 || !hostname)
		return -EINVAL;
	for (const char *p = hostname; *p; p++) {
		char c = *p;
		bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			    (c >= '0' && c <= '9') || c == '.' || c == '-';

		if (!keep)
			continue;
		if (n + 1 >= out_len)
			return -EINVAL;
		out[n++] = c;
	}
	out[n] = '\0';
	return n ? 0 : -EINVAL;
}

bool kd_tls_host_is_ip(const char *s)
{
	unsigned char buf[sizeof(struct in6_addr)];

	if (!s)
		return false;
	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* A DNS name that can go into a SAN and a file name unchanged. */
static bool dns_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > KD_TLS_HOSTNAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-'))
			return false;
	}
	return true;
}

/* Built from typed values rather than a config string, so no host name can
 * smuggle extra entries in with a comma. */
static int san_push(GENERAL_NAMES *gens, const char *host)
{
	GENERAL_NAME *gn = GENERAL_NAME_new();

	if (!gn)
		return -ENOMEM;
	if (kd_tls_host_is_ip(host)) {
		ASN1_OCTET_STRING *ip = a2i_IPADDRESS(host);

		if (!ip)
			goto fail;
		GENERAL_NAME_set0_value(gn, GEN_IPADD, ip);
	} else {
		ASN1_IA5STRING *dns = ASN1_IA5STRING_new();

		if (!dns)
			goto fail;
		if (!ASN1_STRING_set(dns, host, -1)) {
			ASN1_IA5STRING_free(dns);
			goto fail;
		}
		GENERAL_NAME_set0_value(gn, GEN_DNS, dns);
	}
	if (!sk_GENERAL_NAME_push(gens, gn))
		goto fail;
	return 0;
fail:
	GENERAL_NAME_free(gn);
	return -EIO;
}

static int add_san(X509 *x, const char *host, const char *extra_ip)
{
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	int err;

	if (!gens)
		return -ENOMEM;
	err = san_push(gens, host);
	if (!err && extra_ip && strcmp(extra_ip, host) != 0)
		err = san_push(gens, extra_ip);
	if (!err && X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) != 1)
		err = -EIO;
	GENERAL_NAMES_free(gens);
	return err;
}

/* What derper's createSelfSignedIPCert asks Go for: key usage
 * digitalSignature|keyEncipherment (Go marks it critical), EKU serverAuth,
 * basicConstraints critical CA:FALSE. */
static int add_usage(X509 *x)
{
	BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
	ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
	EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
	int err = -ENOMEM;

	if (!bc || !ku || !eku)
		goto out;
	err = -EIO;
	bc->ca = 0;
	if (X509_add1_ext_i2d(x, NID_basic_constraints, bc, 1, X509V3_ADD_DEFAULT) != 1)
		goto out;
	if (!ASN1_BIT_STRING_set_bit(ku, 0, 1) || /* digitalSignature */
	    !ASN1_BIT_STRING_set_bit(ku, 2, 1) || /* keyEncipherment */
	    X509_add1_ext_i2d(x, NID_key_usage, ku, 1, X509V3_ADD_DEFAULT) != 1)
		goto out;
	if (!sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_server_auth)) ||
	    X509_add1_ext_i2d(x, NID_ext_key_usage, eku, 0, X509V3_ADD_DEFAULT) != 1)
		goto out;
	err = 0;
out:
	BASIC_CONSTRAINTS_free(bc);
	ASN1_BIT_STRING_free(ku);
	/* OBJ_nid2obj returns a static object: freeing it is a no-op */
	sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
	return err;
}

/* Go: rand.Int(rand.Reader, 2^128), i.e. up to 128 random bits. Zero is not
 * a valid serial, so draw again. */
static int set_random_serial(X509 *x)
{
	BIGNUM *bn = BN_new();
	int err = -EIO;

	if (!bn)
		return -ENOMEM;
	do {
		if (!BN_rand(bn, SERIAL_BITS, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY))
			goto out;
	} while (BN_is_zero(bn));
	if (BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
		err = 0;
out:
	BN_free(bn);
	return err;
}

int kd_tls_selfsigned_new(X509 **cert, EVP_PKEY **key, const char *host, const char *extra_ip,
			  time_t now, long validity_secs)
{
	EVP_PKEY *pkey = NULL;
	X509 *x = NULL;
	X509_NAME *name;
	int err = -EINVAL;

	*cert = NULL;
	*key = NULL;
	if (!host || validity_secs <= 0 || (!kd_tls_host_is_ip(host) && !dns_name_ok(host)) ||
	    (extra_ip && !kd_tls_host_is_ip(extra_ip)))
		return -EINVAL;
	err = -EIO;
	pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (!pkey)
		goto out;
	x = X509_new();
	if (!x) {
		err = -ENOMEM;
		goto out;
	}
	if (!X509_set_version(x, X509_VERSION_3))
		goto out;
	err = set_random_serial(x);
	if (err)
		goto out;
	err = -EIO;
	name = X509_get_subject_name(x);
	if (!X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_ASC,
					(const unsigned char *)host, -1, -1, 0) ||
	    !X509_set_issuer_name(x, name))
		goto out;
	if (!X509_time_adj_ex(X509_getm_notBefore(x), 0, 0, &now) ||
	    !X509_time_adj_ex(X509_getm_notAfter(x), 0, validity_secs, &now))
		goto out;
	if (!X509_set_pubkey(x, pkey))
		goto out;
	err = add_usage(x);
	if (!err)
		err = add_san(x, host, extra_ip);
	if (err)
		goto out;
	if (X509_sign(x, pkey, EVP_sha256()) <= 0) {
		err = -EIO;
		goto out;
	}
	*cert = x;
	*key = pkey;
	return 0;
out:
	X509_free(x);
	EVP_PKEY_free(pkey);
	return err;
}

int kd_tls_certname(char out[static KD_TLS_CERTNAME_LEN], X509 *x)
{
	unsigned char *der = NULL;
	unsigned char md[32];
	unsigned int md_len = 0;
	int len, err = -EIO;

	out[0] = '\0';
	len = i2d_X509(x, &der);
	if (len <= 0)
		return -EINVAL;
	if (EVP_Digest(der, (size_t)len, md, &md_len, EVP_sha256(), NULL) && md_len == sizeof(md)) {
		memcpy(out, "sha256-raw:", 11);
		kd_hex_encode(out + 11, md, sizeof(md));
		err = 0;
	}
	OPENSSL_free(der);
	return err;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* mkstemp makes the file 0600 from the start, so a key is never readable by
 * others even for a moment; the final mode is set before the rename. */
static int write_file_atomic(const char *path, mode_t mode, const char *data, size_t len)
{
	char tmp[PATH_MAX];
	int fd, err;

	if (snprintf(tmp, sizeof(tmp), "%s.tmpXXXXXX", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	fd = mkstemp(tmp);
	if (fd < 0)
		return -errno;
	err = write_all(fd, data, len);
	if (!err && fchmod(fd, mode) < 0)
		err = -errno;
	if (!err && fsync(fd) < 0)
		err = -errno;
	if (close(fd) < 0 && !err)
		err = -errno;
	if (!err && rename(tmp, path) < 0)
		err = -errno;
	if (err)
		unlink(tmp);
	return err;
}

static int write_bio(const char *path, mode_t mode, BIO *b)
{
	char *data;
	long len = BIO_get_mem_data(b, &data);

	if (len <= 0)
		return -EIO;
	return write_file_atomic(path, mode, data, (size_t)len);
}

int kd_tls_write_pem_pair(const char *crt_path, const char *key_path, X509 *cert, EVP_PKEY *key)
{
	/* secmem: the key's PEM is wiped when the BIO goes */
	BIO *kb = BIO_new(BIO_s_secmem());
	BIO *cb = BIO_new(BIO_s_mem());
	int err = -ENOMEM;

	if (!kb || !cb)
		goto out;
	err = -EIO;
	if (!PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL) ||
	    !PEM_write_bio_X509(cb, cert))
		goto out;
	/* key first: a crash in between leaves a lone key, which the next
	 * start refuses rather than serving a certificate without its key */
	err = write_bio(key_path, 0600, kb);
	if (!err)
		err = write_bio(crt_path, 0644, cb);
out:
	BIO_free(kb);
	BIO_free(cb);
	return err;
}
