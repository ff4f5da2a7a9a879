// SPDX-License-Identifier: MIT
/* Who may see /debug/ (spec §3.11). */
#include "http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "http_internal.h"

/* An address as Go's netip sees it after Unmap: IPv4-mapped peers are IPv4. */
struct ipaddr {
	bool v4;
	uint8_t b[16]; /* v4: first 4 bytes */
};

static bool parse_ip(const char *s, size_t n, struct ipaddr *ip)
{
	char tmp[INET6_ADDRSTRLEN];

	if (n == 0 || n >= sizeof(tmp))
		return false;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	memset(ip, 0, sizeof(*ip));
	if (inet_pton(AF_INET, tmp, ip->b) == 1) {
		ip->v4 = true;
		return true;
	}
	return inet_pton(AF_INET6, tmp, ip->b) == 1;
}

static bool from_sockaddr(const struct sockaddr *sa, struct ipaddr *ip)
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	memset(ip, 0, sizeof(*ip));
	if (!sa)
		return false;
	if (sa->sa_family == AF_INET) {
		ip->v4 = true;
		memcpy(ip->b, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		if (memcmp(a, mapped, 12) == 0) {
			ip->v4 = true;
			memcpy(ip->b, a + 12, 4);
		} else {
			memcpy(ip->b, a, 16);
		}
		return true;
	}
	return false;
}

static bool prefix_match(const uint8_t *a, const uint8_t *net, unsigned bits)
{
	unsigned full = bits / 8, rem = bits % 8;

	if (memcmp(a, net, full) != 0)
		return false;
	return rem == 0 || ((a[full] ^ net[full]) & (uint8_t)(0xff << (8 - rem))) == 0;
}

static bool in_prefix(const struct ipaddr *ip, const struct ipaddr *net, unsigned bits)
{
	return ip->v4 == net->v4 && prefix_match(ip->b, net->b, bits);
}

/* "addr/bits" like Go's netip.ParsePrefix (no bare address, no zone). */
static bool parse_cidr(const char *s, size_t n, struct ipaddr *net, unsigned *bits)
{
	const char *slash = memchr(s, '/', n);
	size_t blen;
	unsigned v = 0;

	if (!slash || !parse_ip(s, (size_t)(slash - s), net))
		return false;
	blen = n - (size_t)(slash - s) - 1;
	if (blen == 0 || blen > 3)
		return false;
	for (size_t i = 0; i < blen; i++) {
		if (!isdigit((unsigned char)slash[1 + i]))
			return false;
		v = v * 10 + (unsigned)(slash[1 + i] - '0');
	}
	if (v > (net->v4 ? 32u : 128u))
		return false;
	*bits = v;
	return true;
}

/* Walks the comma-separated CIDRs in s, setting *matched if ip is in one;
 * false if any is invalid. */
static bool each_cidr(const char *s, const struct ipaddr *ip, bool *matched)
{
	while (s && *s) {
		const char *end = strchr(s, ',');
		size_t n = end ? (size_t)(end - s) : strlen(s);
		const char *a = s, *e = s + n;
		struct ipaddr net;
		unsigned bits;

		while (a < e && isspace((unsigned char)*a))
			a++;
		while (e > a && isspace((unsigned char)e[-1]))
			e--;
		if (e > a) {
			if (!parse_cidr(a, (size_t)(e - a), &net, &bits))
				return false;
			if (ip && in_prefix(ip, &net, bits))
				*matched = true;
		}
		s = end ? end + 1 : NULL;
	}
	return true;
}

static bool tailscale_or_loopback(const struct ipaddr *ip)
{
	static const struct ipaddr lo4 = {.v4 = true, .b = {127}};
	static const struct ipaddr lo6 = {.b = {[15] = 1}};
	static const struct ipaddr cgnat = {.v4 = true, .b = {100, 64}};
	static const struct ipaddr chromeos = {.v4 = true, .b = {100, 115, 92}};
	static const struct ipaddr ula = {.b = {0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0}};

	if (in_prefix(ip, &lo4, 8) || in_prefix(ip, &lo6, 128))
		return true;
	/* ChromeOS VMs use 100.115.92.0/23 inside the CGNAT range */
	if (in_prefix(ip, &cgnat, 10) && !in_prefix(ip, &chromeos, 23))
		return true;
	return in_prefix(ip, &ula, 48);
}

static bool key_matches(const struct kd_http_request *req, const char *debug_key)
{
	char got[256];
	const char *k = debug_key, *e;
	int n;

	if (!k || !kd_http_method_is(req, "GET"))
		return false;
	while (isspace((unsigned char)*k))
		k++;
	e = k + strlen(k);
	while (e > k && isspace((unsigned char)e[-1]))
		e--;
	n = kd_http_query_param(req, "debugkey", got, sizeof(got));
	if (n <= 0 || e == k || (size_t)n != (size_t)(e - k))
		return false;
	return sodium_memcmp(got, k, (size_t)n) == 0;
}

bool kd_http_debug_allowed(const struct kd_http_request *req, const struct sockaddr *peer, const char *debug_key)
{
	const struct kd_http_header *xff = kd_http_find(req, "X-Forwarded-For");
	const char *allow = getenv("TS_ALLOW_DEBUG_IP");
	struct ipaddr ip, a;
	bool matched = false;

	if (key_matches(req, debug_key))
		return true;
	/* behind a proxy the TCP peer is the proxy, not the requester */
	if (xff && xff->value_len > 0)
		return false;
	if (!from_sockaddr(peer, &ip))
		return false;
	if (tailscale_or_loopback(&ip))
		return true;
	if (allow && *allow && parse_ip(allow, strlen(allow), &a) && a.v4 == ip.v4 &&
	    memcmp(a.b, ip.b, a.v4 ? 4 : 16) == 0)
		return true;
	return each_cidr(getenv("TS_DEBUG_TRUSTED_CIDRS"), &ip, &matched) && matched;
}

int kd_http_debug_env_check(void)
{
	const char *allow = getenv("TS_ALLOW_DEBUG_IP");
	struct ipaddr a;
	bool unused = false;

	if (allow && *allow && !parse_ip(allow, strlen(allow), &a))
		return -EINVAL;
	return each_cidr(getenv("TS_DEBUG_TRUSTED_CIDRS"), NULL, &unused) ? 0 : -EINVAL;
}

static void put_html(struct kd_obuf *b, const char *s)
{
	for (; s && *s; s++) {
		switch (*s) {
		case '<': kd_obuf_puts(b, "&lt;"); break;
		case '>': kd_obuf_puts(b, "&gt;"); break;
		case '&': kd_obuf_puts(b, "&amp;"); break;
		case '"': kd_obuf_puts(b, "&#34;"); break;
		case '\'': kd_obuf_puts(b, "&#39;"); break;
		default: kd_obuf_put(b, s, 1);
		}
	}
}

/* Go's time.Duration.String for whole seconds: "3s", "2m3s", "1h2m3s" */
static void put_uptime(struct kd_obuf *b, uint64_t s)
{
	uint64_t h = s / 3600, m = s / 60 % 60;

	if (h)
		kd_obuf_printf(b, "%lluh%llum%llus", (unsigned long long)h, (unsigned long long)m,
			       (unsigned long long)(s % 60));
	else if (m)
		kd_obuf_printf(b, "%llum%llus", (unsigned long long)m, (unsigned long long)(s % 60));
	else
		kd_obuf_printf(b, "%llus", (unsigned long long)s);
}

int kd_http_debug_index(const struct kd_http_request *req, const struct kd_http_result *res,
			const struct kd_http_debug_info *info, char *out, size_t cap, size_t *out_len)
{
	char body[4096];
	struct kd_obuf b = {.p = body, .cap = sizeof(body)};
	const char *prog = info->program ? info->program : "kderpd";

	*out_len = 0;
	kd_obuf_puts(&b, "<html><head><title>");
	put_html(&b, prog);
	kd_obuf_puts(&b, " debug</title></head>\n<body>\n<h1>");
	put_html(&b, prog);
	kd_obuf_puts(&b, " debug</h1>\n<ul>\n<li><b>Uptime:</b> ");
	put_uptime(&b, info->uptime_sec);
	kd_obuf_puts(&b, "</li>\n<li><b>Version:</b> ");
	put_html(&b, info->version);
	kd_obuf_puts(&b, "</li>\n<li><b>Machine:</b> ");
	put_html(&b, info->machine);
	kd_obuf_puts(&b, "</li>\n<li><b>TLS hostname:</b> ");
	put_html(&b, info->tls_hostname);
	kd_obuf_printf(&b, "</li>\n<li><b>Mesh key:</b> %s</li>\n</ul>\n<ul>\n", info->mesh_key ? "true" : "false");
	kd_obuf_puts(&b, "<li><a href=\"/debug/vars\">/debug/vars</a> (JSON)</li>\n"
			 "<li><a href=\"/debug/varz\">/debug/varz</a> (Prometheus)</li>\n"
			 "<li><a href=\"/debug/check\">/debug/check</a> (consistency check)</li>\n"
			 "</ul>\n</body>\n</html>\n");
	if (b.overflow)
		return -ENOSPC;
	return kd_http_format_reply(req, res, out, cap, out_len, 200, KD_HTTP_TEXT_HTML,
				    KD_HTTP_DEBUG_BROWSER_HEADERS, body, b.len);
}
