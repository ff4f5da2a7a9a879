// SPDX-License-Identifier: MIT
/* STUN codec (spec §9.1). Byte-wise big-endian reads: datagrams arrive at any
 * alignment and the parser must not care. */
#include <errno.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <string.h>

#include "stun.h"
#include "stun_crc32.h"

static inline uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void wr32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

uint32_t kd_stun_crc32(const uint8_t *p, size_t n)
{
	uint32_t crc = 0xffffffffu;

	for (size_t i = 0; i < n; i++)
		crc = stun_crc32_step(crc, p[i]);
	return ~crc;
}

int kd_stun_parse_request(const uint8_t *pkt, size_t len, uint8_t txid[static STUN_TXID_LEN])
{
	bool software_ok = false, software_seen = false;
	size_t off = STUN_HDR_LEN, last_off = 0, last_len = 0;
	uint16_t last_type = 0;

	if (len < STUN_HDR_LEN)
		return KD_STUN_TOO_SHORT;
	if (pkt[0] & 0xc0)
		return KD_STUN_NOT_STUN;
	if (rd32(pkt + 4) != STUN_MAGIC_COOKIE)
		return KD_STUN_BAD_COOKIE;
	if (rd16(pkt) != STUN_BINDING_REQUEST)
		return KD_STUN_NOT_BINDING;

	/* The reference walks to the end of the datagram, ignoring the header's
	 * length field; so do we, so both accept the same requests. */
	while (off < len) {
		size_t alen, padded;
		uint16_t atype;

		if (len - off < STUN_ATTR_HDR_LEN)
			return KD_STUN_TRUNCATED_ATTR;
		atype = rd16(pkt + off);
		alen = rd16(pkt + off + 2);
		padded = (alen + 3) & ~(size_t)3;
		if (len - off - STUN_ATTR_HDR_LEN < padded)
			return KD_STUN_TRUNCATED_ATTR;
		if (atype == STUN_ATTR_SOFTWARE) {
			software_seen = true;
			if (alen == STUN_SOFTWARE_LEN &&
			    !memcmp(pkt + off + STUN_ATTR_HDR_LEN, STUN_SOFTWARE, STUN_SOFTWARE_LEN))
				software_ok = true;
		}
		last_off = off;
		last_type = atype;
		last_len = alen;
		off += STUN_ATTR_HDR_LEN + padded;
	}
	if (!software_ok)
		return software_seen ? KD_STUN_BAD_SOFTWARE : KD_STUN_NO_SOFTWARE;
	if (last_type != STUN_ATTR_FINGERPRINT || last_len != STUN_FINGERPRINT_LEN)
		return KD_STUN_NO_FINGERPRINT;
	if ((kd_stun_crc32(pkt, last_off) ^ STUN_FINGERPRINT_XOR) !=
	    rd32(pkt + last_off + STUN_ATTR_HDR_LEN))
		return KD_STUN_BAD_FINGERPRINT;
	memcpy(txid, pkt + 8, STUN_TXID_LEN);
	return KD_STUN_OK;
}

static void put_header(uint8_t *out, uint16_t type, uint16_t len, const uint8_t *txid)
{
	wr16(out, type);
	wr16(out + 2, len);
	wr32(out + 4, STUN_MAGIC_COOKIE);
	memcpy(out + 8, txid, STUN_TXID_LEN);
}

size_t kd_stun_build_response(uint8_t *out, size_t cap, const uint8_t txid[static STUN_TXID_LEN],
			      const struct sockaddr *src)
{
	const uint8_t *addr;
	uint8_t family, xorkey[16];
	size_t alen;
	uint16_t port;

	if (src->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)src;

		addr = (const uint8_t *)&s4->sin_addr;
		port = ntohs(s4->sin_port);
		family = STUN_FAMILY_IPV4;
		alen = 4;
	} else if (src->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)src;

		addr = (const uint8_t *)&s6->sin6_addr;
		port = ntohs(s6->sin6_port);
		/* Deliberate deviation from the reference: on a dual-stack
		 * socket it answers IPv4 clients with family 0x02 and the
		 * ::ffff:a.b.c.d form (spec §9.1.3 quirk). RFC 5389 and the XDP
		 * responder use family 0x01 for them; Tailscale clients accept
		 * both, so we answer IPv4 clients the same way on every path. */
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			addr += 12;
			family = STUN_FAMILY_IPV4;
			alen = 4;
		} else {
			family = STUN_FAMILY_IPV6;
			alen = 16;
		}
	} else {
		return 0;
	}

	size_t vlen = 4 + alen, total = STUN_HDR_LEN + STUN_ATTR_HDR_LEN + vlen;

	if (cap < total)
		return 0;
	put_header(out, STUN_BINDING_SUCCESS, (uint16_t)(STUN_ATTR_HDR_LEN + vlen), txid);
	uint8_t *a = out + STUN_HDR_LEN;

	wr16(a, STUN_ATTR_XOR_MAPPED_ADDRESS);
	wr16(a + 2, (uint16_t)vlen);
	a[4] = 0;
	a[5] = family;
	wr16(a + 6, port ^ (uint16_t)(STUN_MAGIC_COOKIE >> 16));
	wr32(xorkey, STUN_MAGIC_COOKIE);
	memcpy(xorkey + 4, txid, STUN_TXID_LEN);
	for (size_t i = 0; i < alen; i++)
		a[8 + i] = addr[i] ^ xorkey[i];
	return total;
}

size_t kd_stun_build_request(uint8_t *out, size_t cap, const uint8_t txid[static STUN_TXID_LEN])
{
	if (cap < STUN_REQUEST_LEN)
		return 0;
	put_header(out, STUN_BINDING_REQUEST, STUN_REQUEST_LEN - STUN_HDR_LEN, txid);
	wr16(out + 20, STUN_ATTR_SOFTWARE);
	wr16(out + 22, STUN_SOFTWARE_LEN);
	memcpy(out + 24, STUN_SOFTWARE, STUN_SOFTWARE_LEN);
	wr16(out + STUN_REQUEST_FP_OFF, STUN_ATTR_FINGERPRINT);
	wr16(out + STUN_REQUEST_FP_OFF + 2, STUN_FINGERPRINT_LEN);
	wr32(out + STUN_REQUEST_FP_OFF + 4,
	     kd_stun_crc32(out, STUN_REQUEST_FP_OFF) ^ STUN_FINGERPRINT_XOR);
	return STUN_REQUEST_LEN;
}

/* One address attribute value into mapped; xor selects XOR-MAPPED decoding. */
static int decode_addr(const uint8_t *v, size_t vlen, bool xor, const uint8_t *txid,
		       struct sockaddr_storage *mapped)
{
	uint8_t key[16] = {0};
	uint16_t port;

	if (vlen < 4)
		return -EBADMSG;
	if (xor) {
		wr32(key, STUN_MAGIC_COOKIE);
		memcpy(key + 4, txid, STUN_TXID_LEN);
	}
	port = rd16(v + 2) ^ (uint16_t)(xor ? STUN_MAGIC_COOKIE >> 16 : 0);
	memset(mapped, 0, sizeof(*mapped));
	if (v[1] == STUN_FAMILY_IPV4 && vlen >= 8) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)mapped;
		uint8_t *a = (uint8_t *)&s4->sin_addr;

		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		for (int i = 0; i < 4; i++)
			a[i] = v[4 + i] ^ key[i];
		return 0;
	}
	if (v[1] == STUN_FAMILY_IPV6 && vlen >= 20) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)mapped;
		uint8_t *a = (uint8_t *)&s6->sin6_addr;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		for (int i = 0; i < 16; i++)
			a[i] = v[4 + i] ^ key[i];
		return 0;
	}
	return -EBADMSG;
}

int kd_stun_parse_response(const uint8_t *pkt, size_t len, const uint8_t txid[static STUN_TXID_LEN],
			   struct sockaddr_storage *mapped)
{
	const uint8_t *xma = NULL, *ma = NULL;
	size_t xma_len = 0, ma_len = 0, end, off = STUN_HDR_LEN;

	if (len < STUN_HDR_LEN || rd16(pkt) != STUN_BINDING_SUCCESS ||
	    rd32(pkt + 4) != STUN_MAGIC_COOKIE)
		return -EBADMSG;
	if (memcmp(pkt + 8, txid, STUN_TXID_LEN))
		return -ESRCH;
	/* Clients walk attributes within the header length; trailing bytes
	 * are ignored (spec §9.1.3). */
	end = STUN_HDR_LEN + (size_t)rd16(pkt + 2);
	if (end > len)
		return -EBADMSG;
	while (end - off >= STUN_ATTR_HDR_LEN) {
		uint16_t atype = rd16(pkt + off);
		size_t alen = rd16(pkt + off + 2), padded = (alen + 3) & ~(size_t)3;

		off += STUN_ATTR_HDR_LEN;
		if (end - off < alen)
			return -EBADMSG;
		if ((atype == STUN_ATTR_XOR_MAPPED_ADDRESS ||
		     atype == STUN_ATTR_XOR_MAPPED_ADDRESS_ALT) && !xma) {
			xma = pkt + off;
			xma_len = alen;
		} else if (atype == STUN_ATTR_MAPPED_ADDRESS && !ma) {
			ma = pkt + off;
			ma_len = alen;
		}
		if (end - off < padded)
			break;
		off += padded;
	}
	if (xma)
		return decode_addr(xma, xma_len, true, txid, mapped);
	if (ma)
		return decode_addr(ma, ma_len, false, txid, mapped);
	return -ENOENT;
}

const char *kd_stun_verdict_name(int verdict)
{
	static const char *const names[KD_STUN_VERDICT_MAX] = {
		[KD_STUN_OK] = "ok",
		[KD_STUN_TOO_SHORT] = "too_short",
		[KD_STUN_NOT_STUN] = "not_stun",
		[KD_STUN_BAD_COOKIE] = "bad_cookie",
		[KD_STUN_NOT_BINDING] = "not_binding",
		[KD_STUN_TRUNCATED_ATTR] = "truncated_attr",
		[KD_STUN_NO_SOFTWARE] = "no_software",
		[KD_STUN_BAD_SOFTWARE] = "bad_software",
		[KD_STUN_NO_FINGERPRINT] = "no_fingerprint",
		[KD_STUN_BAD_FINGERPRINT] = "bad_fingerprint",
	};

	if (verdict < 0 || verdict >= KD_STUN_VERDICT_MAX)
		return "unknown";
	return names[verdict];
}
