// SPDX-License-Identifier: MIT
/* -mesh-with as derper reads it (spec §8.2), plus kderp's http:// entries
 * for plain-HTTP regions on trusted networks. Bytes in, verdict out. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "mesh.h"
#include "parse_util.h"

/* Characters that would change the meaning of the URL or the log line. */
static bool host_char_ok(char ch)
{
	unsigned char c = (unsigned char)ch;

	return c > 0x20 && c < 0x7f && !strchr("/?#@\\\"'%,", ch);
}

/* host or host:port or [v6] or [v6]:port; the port is optional */
static int parse_host(const char *s, size_t n, uint16_t *port, bool *has_port)
{
	*has_port = false;
	if (n == 0)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!host_char_ok(s[i]))
			return -EINVAL;
	if (s[0] == '[') {
		const char *rb = memchr(s, ']', n);
		if (!rb || rb == s + 1)
			return -EINVAL;
		for (const char *p = s + 1; p < rb; p++)
			if (!strchr("0123456789abcdefABCDEF:.", *p))
				return -EINVAL;
		size_t rest = n - (size_t)(rb + 1 - s);
		if (rest == 0)
			return 0;
		if (rb[1] != ':')
			return -EINVAL;
		*has_port = true;
		return kd_parse_port(rb + 2, rest - 1, port);
	}
	const char *colon = memchr(s, ':', n);
	if (!colon)
		return 0;
	if (colon == s || memchr(colon + 1, ':', n - (size_t)(colon + 1 - s)))
		return -EINVAL; /* a bare IPv6 literal needs brackets in a URL */
	*has_port = true;
	return kd_parse_port(colon + 1, n - (size_t)(colon + 1 - s), port);
}

/* dialhost: a name or address without port, brackets allowed for IPv6 */
static int parse_dial(const char *s, size_t n, char *out, size_t cap)
{
	if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
		s++;
		n -= 2;
	}
	if (n == 0 || n >= cap)
		return -EINVAL;
	const char *c1 = memchr(s, ':', n);
	bool colon = c1 != NULL;
	if (colon && !memchr(c1 + 1, ':', n - (size_t)(c1 + 1 - s)))
		return -EINVAL; /* host:port is not a dialhost: derper dials the URL's port */
	for (size_t i = 0; i < n; i++) {
		if (!host_char_ok(s[i]) || s[i] == '[' || s[i] == ']')
			return -EINVAL;
		if (colon && !strchr("0123456789abcdefABCDEF:.", s[i]))
			return -EINVAL; /* host:port is not a dialhost: derper dials the URL's port */
	}
	memcpy(out, s, n);
	out[n] = '\0';
	return 0;
}

static int parse_entry(const char *s, size_t n, struct kd_mesh_target *t)
{
	bool scheme = true;

	memset(t, 0, sizeof(*t));
	if (n >= 7 && !strncmp(s, "http://", 7)) {
		t->plain_http = true;
		s += 7;
		n -= 7;
	} else if (n >= 8 && !strncmp(s, "https://", 8)) {
		s += 8;
		n -= 8;
	} else if (n >= 3 && memmem(s, n, "://", 3)) {
		return -EINVAL;
	} else {
		scheme = false;
	}
	const char *slash = memchr(s, '/', n);
	size_t hn = slash ? (size_t)(slash - s) : n;
	bool has_port;
	if (hn >= sizeof(t->host) || parse_host(s, hn, &t->port, &has_port) != 0)
		return -EINVAL;
	if (!has_port)
		t->port = t->plain_http ? 80 : 443;
	memcpy(t->host, s, hn);
	t->host[hn] = '\0';
	if (slash) {
		const char *d = slash + 1;
		size_t dn = n - hn - 1;
		/* "http://host:port/derp" is a URL someone pasted, not a dialhost;
		 * without a scheme derper would dial a host named "derp" */
		bool pasted_url = scheme && dn == 4 && !memcmp(d, "derp", 4);
		if (!pasted_url && parse_dial(d, dn, t->dial, sizeof(t->dial)) != 0)
			return -EINVAL;
	}
	snprintf(t->url, sizeof(t->url), "%s://%s/derp", t->plain_http ? "http" : "https", t->host);
	return 0;
}

int kd_mesh_parse_list(const char *mesh_with, struct kd_mesh_target *out, size_t cap, size_t *n)
{
	size_t count = 0, idx = 0;

	*n = 0;
	if (!mesh_with)
		return 0;
	for (const char *p = mesh_with;; idx++) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		/* derper would dial "" forever; a stray comma is only untidy */
		if (len) {
			if (count == cap)
				return -E2BIG;
			if (parse_entry(p, len, &out[count]) != 0) {
				*n = idx;
				return -EINVAL;
			}
			count++;
		}
		if (!comma)
			break;
		p = comma + 1;
	}
	*n = count;
	return 0;
}
