// SPDX-License-Identifier: MIT
/* HTTP/1.x request parser and response formatting (spec §3.3–§3.5).
 *
 * Every step checks for the end of input first and answers "incomplete" (-2)
 * there, so any prefix of a valid request is -2 and never -1: the loop can
 * call the parser again after each read without keeping state. */
#include "http.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#include "http_internal.h"
#include "key.h"

/* internal verdict: more headers than KD_HTTP_MAX_HEADERS (=> 431) */
#define PARSE_TOO_MANY_HEADERS (-3)

static bool is_tchar(unsigned char c)
{
	if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
		return true;
	return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

/* CRLF or a bare LF (RFC 9112 §2.2 lets a recipient accept LF alone). */
static int parse_eol(const char *buf, size_t len, size_t *p)
{
	if (*p >= len)
		return KD_HTTP_PARSE_INCOMPLETE;
	if (buf[*p] == '\n') {
		*p += 1;
		return 0;
	}
	if (buf[*p] != '\r')
		return KD_HTTP_PARSE_MALFORMED;
	if (*p + 1 >= len)
		return KD_HTTP_PARSE_INCOMPLETE;
	if (buf[*p + 1] != '\n')
		return KD_HTTP_PARSE_MALFORMED;
	*p += 2;
	return 0;
}

static bool prefix_ci(const char *s, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);
	return len >= n && strncasecmp(s, prefix, n) == 0;
}

static void split_target(struct kd_http_request *req)
{
	const char *t = req->target, *end = t + req->target_len;
	const char *path = t, *q;

	/* absolute-form (proxies, some probes): route on its path */
	if (t[0] != '/' && (prefix_ci(t, req->target_len, "http://") || prefix_ci(t, req->target_len, "https://"))) {
		path = t + (t[4] == ':' ? 7 : 8);
		while (path < end && *path != '/' && *path != '?')
			path++;
	}
	q = memchr(path, '?', (size_t)(end - path));
	req->path = path;
	req->path_len = (size_t)((q ? q : end) - path);
	req->query = q ? q + 1 : end;
	req->query_len = q ? (size_t)(end - q - 1) : 0;
}

static int parse_request_line(const char *buf, size_t len, size_t *pp, struct kd_http_request *req)
{
	static const char version[] = "HTTP/1.";
	size_t p = *pp, start;
	int rc;

	/* RFC 9112 §2.2: ignore empty lines before the request line */
	for (;;) {
		if (p >= len)
			return KD_HTTP_PARSE_INCOMPLETE;
		if (buf[p] != '\r' && buf[p] != '\n')
			break;
		rc = parse_eol(buf, len, &p);
		if (rc)
			return rc;
	}

	start = p;
	while (p < len && is_tchar((unsigned char)buf[p]))
		p++;
	if (p >= len)
		return KD_HTTP_PARSE_INCOMPLETE;
	if (p == start || buf[p] != ' ')
		return KD_HTTP_PARSE_MALFORMED;
	req->method = buf + start;
	req->method_len = p - start;
	p++;

	start = p;
	while (p < len && (unsigned char)buf[p] > 0x20 && (unsigned char)buf[p] < 0x7f)
		p++;
	if (p >= len)
		return KD_HTTP_PARSE_INCOMPLETE;
	if (p == start || buf[p] != ' ')
		return KD_HTTP_PARSE_MALFORMED;
	req->target = buf + start;
	req->target_len = p - start;
	p++;

	for (size_t i = 0; i < sizeof(version) - 1; i++, p++) {
		if (p >= len)
			return KD_HTTP_PARSE_INCOMPLETE;
		if (buf[p] != version[i])
			return KD_HTTP_PARSE_MALFORMED;
	}
	if (p >= len)
		return KD_HTTP_PARSE_INCOMPLETE;
	if (buf[p] < '0' || buf[p] > '9')
		return KD_HTTP_PARSE_MALFORMED;
	req->minor_version = buf[p] - '0';
	p++;

	rc = parse_eol(buf, len, &p);
	if (rc)
		return rc;
	split_target(req);
	*pp = p;
	return 0;
}

static int parse_header(const char *buf, size_t len, size_t *pp, struct kd_http_request *req)
{
	size_t p = *pp, start, vstart, vend;
	struct kd_http_header *h;
	int rc;

	/* obs-fold is deprecated and a smuggling vector: reject (RFC 9112 §5.2) */
	if (is_ows(buf[p]))
		return KD_HTTP_PARSE_MALFORMED;
	start = p;
	while (p < len && is_tchar((unsigned char)buf[p]))
		p++;
	if (p >= len)
		return KD_HTTP_PARSE_INCOMPLETE;
	/* no whitespace between name and colon (RFC 9112 §5.1) */
	if (p == start || buf[p] != ':')
		return KD_HTTP_PARSE_MALFORMED;
	if (req->num_headers == KD_HTTP_MAX_HEADERS)
		return PARSE_TOO_MANY_HEADERS;
	h = &req->headers[req->num_headers];
	h->name = buf + start;
	h->name_len = p - start;
	p++;

	while (p < len && is_ows(buf[p]))
		p++;
	vstart = p;
	for (; p < len; p++) {
		unsigned char c = (unsigned char)buf[p];
		if (c == '\r' || c == '\n')
			break;
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return KD_HTTP_PARSE_MALFORMED;
	}
	if (p >= len)
		return KD_HTTP_PARSE_INCOMPLETE;
	vend = p;
	while (vend > vstart && is_ows(buf[vend - 1]))
		vend--;
	rc = parse_eol(buf, len, &p);
	if (rc)
		return rc;
	h->value = buf + vstart;
	h->value_len = vend - vstart;
	req->num_headers++;
	*pp = p;
	return 0;
}

static int parse_inner(const char *buf, size_t len, struct kd_http_request *req)
{
	size_t p = 0;
	int rc;

	req->num_headers = 0;
	rc = parse_request_line(buf, len, &p, req);
	if (rc)
		return rc;
	for (;;) {
		if (p >= len)
			return KD_HTTP_PARSE_INCOMPLETE;
		if (buf[p] == '\r' || buf[p] == '\n') {
			rc = parse_eol(buf, len, &p);
			if (rc)
				return rc;
			return (int)p;
		}
		rc = parse_header(buf, len, &p, req);
		if (rc)
			return rc;
	}
}

int kd_http_parse_request(const char *buf, size_t len, struct kd_http_request *req)
{
	size_t lim = len < KD_HTTP_MAX_REQUEST ? len : KD_HTTP_MAX_REQUEST;
	int rc = parse_inner(buf, lim, req);

	if (rc == PARSE_TOO_MANY_HEADERS)
		return KD_HTTP_PARSE_MALFORMED;
	/* the caller cannot buffer more than the cap: more input will not help */
	if (rc == KD_HTTP_PARSE_INCOMPLETE && len >= KD_HTTP_MAX_REQUEST)
		return KD_HTTP_PARSE_MALFORMED;
	return rc;
}

int kd_http_parse_error_status(const char *buf, size_t len)
{
	struct kd_http_request req;
	size_t lim = len < KD_HTTP_MAX_REQUEST ? len : KD_HTTP_MAX_REQUEST;
	int rc = parse_inner(buf, lim, &req);

	if (rc == PARSE_TOO_MANY_HEADERS || (rc == KD_HTTP_PARSE_INCOMPLETE && len >= KD_HTTP_MAX_REQUEST))
		return 431;
	return 400;
}

int kd_http_parse_error_response(const char *buf, size_t len, char *out, size_t cap, size_t *out_len)
{
	/* Go's server answers parse errors with "<code> <text>" as the body */
	char body[64];
	int status = kd_http_parse_error_status(buf, len);
	int n = snprintf(body, sizeof(body), "%d %s", status, kd_http_status_text(status));

	return kd_http_format_response(out, cap, out_len, status, KD_HTTP_TEXT_PLAIN, "Connection: close\r\n",
				       body, (size_t)n);
}

static bool name_is(const struct kd_http_header *h, const char *name, size_t n)
{
	return h->name_len == n && strncasecmp(h->name, name, n) == 0;
}

const struct kd_http_header *kd_http_find(const struct kd_http_request *req, const char *name)
{
	size_t n = strlen(name);

	for (size_t i = 0; i < req->num_headers; i++)
		if (name_is(&req->headers[i], name, n))
			return &req->headers[i];
	return NULL;
}

bool kd_http_header_eq(const struct kd_http_header *h, const char *value, bool case_insensitive)
{
	size_t n = strlen(value);

	if (!h || h->value_len != n)
		return false;
	return case_insensitive ? strncasecmp(h->value, value, n) == 0 : memcmp(h->value, value, n) == 0;
}

static bool list_has_token(const char *v, size_t len, const char *token)
{
	size_t tlen = strlen(token), i = 0;

	while (i < len) {
		size_t s, e;
		while (i < len && (is_ows(v[i]) || v[i] == ','))
			i++;
		s = i;
		while (i < len && v[i] != ',')
			i++;
		e = i;
		while (e > s && is_ows(v[e - 1]))
			e--;
		if (e - s == tlen && tlen && strncasecmp(v + s, token, tlen) == 0)
			return true;
	}
	return false;
}

bool kd_http_has_token(const struct kd_http_request *req, const char *name, const char *token)
{
	size_t n = strlen(name);

	for (size_t i = 0; i < req->num_headers; i++) {
		const struct kd_http_header *h = &req->headers[i];
		if (name_is(h, name, n) && list_has_token(h->value, h->value_len, token))
			return true;
	}
	return false;
}

bool kd_http_method_is(const struct kd_http_request *req, const char *method)
{
	size_t n = strlen(method);
	/* methods are case-sensitive (RFC 9110 §9.1) */
	return req->method_len == n && memcmp(req->method, method, n) == 0;
}

/* Go's url.QueryUnescape: '+' is a space, %XX a byte; a bad escape fails. */
static int query_unescape(const char *s, size_t len, char *out, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (c == '%') {
			int hi, lo;
			if (i + 2 >= len)
				return -EINVAL;
			hi = kd_hex_digit(s[i + 1]);
			lo = kd_hex_digit(s[i + 2]);
			if (hi < 0 || lo < 0)
				return -EINVAL;
			c = (char)(hi << 4 | lo);
			i += 2;
		} else if (c == '+') {
			c = ' ';
		}
		if (o + 1 >= cap)
			return -ENOSPC;
		out[o++] = c;
	}
	out[o] = '\0';
	return (int)o;
}

int kd_http_query_param(const struct kd_http_request *req, const char *name, char *out, size_t cap)
{
	const char *q = req->query, *end = req->query + req->query_len;
	char key[128];

	if (cap == 0)
		return -ENOSPC;
	while (q < end) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *pe = amp ? amp : end;
		const char *eq = memchr(q, '=', (size_t)(pe - q));
		const char *ke = eq ? eq : pe;
		int klen = query_unescape(q, (size_t)(ke - q), key, sizeof(key));

		/* like Go's ParseQuery, a pair that fails to decode is skipped */
		if (klen >= 0 && strcmp(key, name) == 0 && (size_t)klen == strlen(name)) {
			int vlen = eq ? query_unescape(eq + 1, (size_t)(pe - eq - 1), out, cap)
				      : query_unescape(pe, 0, out, cap);
			if (vlen != -EINVAL)
				return vlen;
		}
		q = amp ? amp + 1 : end;
	}
	return -ENOENT;
}

const char *kd_http_status_text(int status)
{
	switch (status) {
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 204: return "No Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 426: return "Upgrade Required";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	default: return "Unknown";
	}
}

static int format(char *out, size_t cap, size_t *out_len, int status, const char *content_type,
		  const char *extra_headers, const void *body, size_t body_len, bool head, bool close)
{
	struct kd_obuf b = {.p = out, .cap = cap};
	/* RFC 9110 §8.6: no Content-Length on 1xx and 204; 304 keeps none either */
	bool no_body = (status >= 100 && status < 200) || status == 204 || status == 304;

	*out_len = 0;
	kd_obuf_printf(&b, "HTTP/1.1 %d %s\r\n", status, kd_http_status_text(status));
	if (content_type)
		kd_obuf_printf(&b, "Content-Type: %s\r\n", content_type);
	if (extra_headers)
		kd_obuf_puts(&b, extra_headers);
	if (close)
		kd_obuf_puts(&b, "Connection: close\r\n");
	if (!no_body)
		kd_obuf_printf(&b, "Content-Length: %zu\r\n", body_len);
	kd_obuf_puts(&b, "\r\n");
	if (!no_body && !head)
		kd_obuf_put(&b, body, body_len);
	if (b.overflow)
		return -ENOSPC;
	*out_len = b.len;
	return 0;
}

int kd_http_format_response(char *out, size_t cap, size_t *out_len, int status, const char *content_type,
			    const char *extra_headers, const void *body, size_t body_len)
{
	return format(out, cap, out_len, status, content_type, extra_headers, body, body_len, false, false);
}

int kd_http_format_reply(const struct kd_http_request *req, const struct kd_http_result *res, char *out,
			 size_t cap, size_t *out_len, int status, const char *content_type,
			 const char *extra_headers, const void *body, size_t body_len)
{
	return format(out, cap, out_len, status, content_type, extra_headers, body, body_len,
		      kd_http_method_is(req, "HEAD"), !res->keep_alive);
}
