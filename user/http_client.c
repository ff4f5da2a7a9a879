// SPDX-License-Identifier: MIT
/* The pure half of the webhook's HTTP client: URL parsing and an incremental
 * response reader (status line, headers, Content-Length / chunked /
 * close-delimited bodies). No allocation, logging or I/O here. */
#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http_client.h"
#include "parse_util.h"

/* --- URL ---------------------------------------------------------------- */

static bool host_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_';
}

static int url_parse(const char *url, struct kd_url *u)
{
	const char *p, *auth, *host, *port = NULL, *path;
	size_t host_len, auth_len, port_len = 0, path_len;

	if (!strncasecmp(url, "http://", 7)) {
		p = url + 7;
	} else if (!strncasecmp(url, "https://", 8)) {
		u->https = true;
		p = url + 8;
	} else {
		return -EINVAL;
	}
	auth = p;
	auth_len = strcspn(auth, "/?#");
	path = auth + auth_len;
	if (memchr(auth, '@', auth_len))
		return -EINVAL; /* userinfo: the reference would send it as Basic auth; we do not */
	if (auth_len > 0 && auth[0] == '[') {
		const char *close = memchr(auth, ']', auth_len);
		char v6[64];
		struct in6_addr a6;

		if (!close)
			return -EINVAL;
		host = auth + 1;
		host_len = (size_t)(close - host);
		if (host_len == 0 || host_len >= sizeof(v6))
			return -EINVAL;
		memcpy(v6, host, host_len);
		v6[host_len] = '\0';
		if (inet_pton(AF_INET6, v6, &a6) != 1)
			return -EINVAL;
		if (close + 1 < auth + auth_len) {
			if (close[1] != ':')
				return -EINVAL;
			port = close + 2;
			port_len = (size_t)(auth + auth_len - port);
		}
	} else {
		const char *colon = memchr(auth, ':', auth_len);

		host = auth;
		host_len = colon ? (size_t)(colon - auth) : auth_len;
		if (colon) {
			port = colon + 1;
			port_len = (size_t)(auth + auth_len - port);
		}
		for (size_t i = 0; i < host_len; i++)
			if (!host_char_ok(host[i]))
				return -EINVAL;
	}
	if (host_len == 0 || host_len > KD_URL_HOST_MAX)
		return -EINVAL;
	memcpy(u->host, host, host_len);
	u->host[host_len] = '\0';
	if (port) {
		if (kd_parse_port(port, port_len, &u->port))
			return -EINVAL;
		u->port_explicit = true;
	} else {
		u->port = u->https ? 443 : 80;
	}

	path_len = strcspn(path, "#");
	for (size_t i = 0; i < path_len; i++)
		if ((unsigned char)path[i] <= 0x20 || path[i] == 0x7f)
			return -EINVAL; /* would break the request line */
	if (path_len == 0 || path[0] != '/') {
		/* "http://h" and "http://h?q" both request "/" (plus the query) */
		if (path_len + 1 > KD_URL_PATH_MAX)
			return -EINVAL;
		u->path[0] = '/';
		memcpy(u->path + 1, path, path_len);
		u->path[path_len + 1] = '\0';
	} else {
		if (path_len > KD_URL_PATH_MAX)
			return -EINVAL;
		memcpy(u->path, path, path_len);
		u->path[path_len] = '\0';
	}
	return 0;
}

int kd_url_parse(const char *url, struct kd_url *u)
{
	memset(u, 0, sizeof(*u));
	if (!url || url_parse(url, u)) {
		memset(u, 0, sizeof(*u));
		return -EINVAL;
	}
	return 0;
}

int kd_url_host_header(const struct kd_url *u, char *out, size_t cap)
{
	bool v6 = strchr(u->host, ':') != NULL;
	bool port = u->port != (u->https ? 443 : 80);
	int n;

	n = snprintf(out, cap, "%s%s%s", v6 ? "[" : "", u->host, v6 ? "]" : "");
	if (n >= 0 && (size_t)n < cap && port)
		n += snprintf(out + n, cap - (size_t)n, ":%u", u->port);
	if (n < 0 || (size_t)n >= cap) {
		if (cap)
			out[0] = '\0';
		return -ENOSPC;
	}
	return n;
}

/* --- response head ------------------------------------------------------ */

static bool is_tchar(char c)
{
	return host_char_ok(c) || (c && strchr("!#$%&'*+^`|~", c));
}

/* Next line of [*p, end): sets line/len without the CR LF, advances *p. */
static bool next_line(const char **p, const char *end, const char **line, size_t *len)
{
	const char *nl;

	if (*p >= end)
		return false;
	nl = memchr(*p, '\n', (size_t)(end - *p));
	if (!nl)
		return false;
	*line = *p;
	*len = (size_t)(nl - *p);
	if (*len && (*line)[*len - 1] == '\r')
		(*len)--;
	*p = nl + 1;
	return true;
}

static void trim(const char **s, size_t *n)
{
	while (*n && (**s == ' ' || **s == '\t')) {
		(*s)++;
		(*n)--;
	}
	while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
		(*n)--;
}

static int parse_status_line(struct kd_http_resp *r, const char *l, size_t n)
{
	size_t k = 0;

	/* "HTTP/1.x SSS[ reason]" */
	if (n < 12 || memcmp(l, "HTTP/1.", 7) || (l[7] != '0' && l[7] != '1') || l[8] != ' ')
		return -EINVAL;
	for (int i = 9; i < 12; i++)
		if (l[i] < '0' || l[i] > '9')
			return -EINVAL;
	r->status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
	if (r->status < 100)
		return -EINVAL;
	if (n > 12 && l[12] != ' ')
		return -EINVAL;
	/* the phrase ends up in a log line and a metric-free reason string */
	for (size_t i = 13; i < n && k + 1 < sizeof(r->reason); i++)
		if (l[i] >= 0x20 && l[i] < 0x7f)
			r->reason[k++] = l[i];
	r->reason[k] = '\0';
	return 0;
}

static int parse_header(struct kd_http_resp *r, const char *l, size_t n, bool *seen_cl)
{
	const char *colon = memchr(l, ':', n), *v;
	size_t name_len, vn;

	if (!colon || colon == l)
		return -EINVAL; /* also rejects obs-fold continuation lines */
	name_len = (size_t)(colon - l);
	for (size_t i = 0; i < name_len; i++)
		if (!is_tchar(l[i]))
			return -EINVAL;
	v = colon + 1;
	vn = n - name_len - 1;
	trim(&v, &vn);
	if (name_len == 14 && !strncasecmp(l, "Content-Length", 14)) {
		uint64_t cl = 0;

		if (vn == 0 || vn > 18)
			return -EINVAL;
		for (size_t i = 0; i < vn; i++) {
			if (v[i] < '0' || v[i] > '9')
				return -EINVAL;
			cl = cl * 10 + (uint64_t)(v[i] - '0');
		}
		/* differing duplicates are a smuggling vector: refuse, like Go */
		if (*seen_cl && cl != r->content_length)
			return -EINVAL;
		*seen_cl = true;
		r->content_length = cl;
	} else if (name_len == 17 && !strncasecmp(l, "Transfer-Encoding", 17)) {
		/* Go's client knows only "chunked" and refuses anything else */
		if (vn != 7 || strncasecmp(v, "chunked", 7))
			return -EINVAL;
		r->mode = KD_HTTP_BODY_CHUNKED;
	}
	return 0;
}

/* The head is complete in r->head: parse it and choose the body mode. */
static int parse_head(struct kd_http_resp *r)
{
	const char *p = r->head, *end = r->head + r->head_len, *l;
	bool seen_cl = false;
	size_t n;

	r->mode = KD_HTTP_BODY_NONE;
	r->content_length = 0;
	if (!next_line(&p, end, &l, &n) || parse_status_line(r, l, n))
		return -EINVAL;
	while (next_line(&p, end, &l, &n) && n > 0)
		if (parse_header(r, l, n, &seen_cl))
			return -EINVAL;
	r->head_len = 0;
	if (r->status == 101)
		return -EINVAL; /* nobody asked to switch protocols */
	if (r->status < 200) {
		r->state = KD_HTTP_RESP_HEAD; /* interim: the real response follows */
		r->reason[0] = '\0';
		return 0;
	}
	r->head_done = true;
	if (r->status == 204 || r->status == 304) {
		r->mode = KD_HTTP_BODY_NONE;
		r->state = KD_HTTP_RESP_DONE;
		return 0;
	}
	if (r->mode != KD_HTTP_BODY_CHUNKED) {
		r->mode = seen_cl ? KD_HTTP_BODY_LENGTH : KD_HTTP_BODY_CLOSE;
		r->left = r->content_length;
	}
	r->state = KD_HTTP_RESP_BODY;
	if (r->mode == KD_HTTP_BODY_LENGTH && r->left == 0)
		r->state = KD_HTTP_RESP_DONE;
	return 0;
}

/* --- body --------------------------------------------------------------- */

enum { C_SIZE, C_EXT, C_SIZE_LF, C_DATA, C_DATA_CR, C_DATA_LF };
/* Go's chunked reader refuses size lines longer than this */
#define CHUNK_LINE_MAX 4096

/* Keeps body bytes; DONE once the 4 KiB window is full. */
static void keep(struct kd_http_resp *r, const char *in, size_t n)
{
	size_t room = sizeof(r->body) - r->body_len;

	if (n > room) {
		n = room;
		r->body_truncated = true;
	}
	memcpy(r->body + r->body_len, in, n);
	r->body_len += n;
	if (r->body_len == sizeof(r->body)) {
		/* a body of exactly 4 KiB is whole only if its length said so */
		if (r->mode != KD_HTTP_BODY_LENGTH || r->left > 0)
			r->body_truncated = true;
		r->state = KD_HTTP_RESP_DONE;
	}
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static ssize_t chunked_feed(struct kd_http_resp *r, const char *in, size_t len)
{
	size_t i = 0;

	while (i < len && r->state == KD_HTTP_RESP_BODY) {
		char c = in[i];
		int h;

		switch (r->cstate) {
		case C_SIZE:
			h = hexval(c);
			if (h >= 0) {
				if (++r->cdigits > 15)
					return -EINVAL;
				r->left = r->left * 16 + (uint64_t)h;
				i++;
				break;
			}
			if (r->cdigits == 0)
				return -EINVAL;
			if (c == ';' || c == ' ' || c == '\t')
				r->cstate = C_EXT;
			else if (c == '\r')
				r->cstate = C_SIZE_LF;
			else if (c != '\n')
				return -EINVAL;
			i++;
			if (c == '\n')
				goto size_line_done;
			break;
		case C_EXT:
			if (++r->cdigits > CHUNK_LINE_MAX)
				return -EINVAL;
			i++;
			if (c == '\r')
				r->cstate = C_SIZE_LF;
			else if (c == '\n')
				goto size_line_done;
			break;
		case C_SIZE_LF:
			if (c != '\n')
				return -EINVAL;
			i++;
size_line_done:
			r->cdigits = 0;
			if (r->left == 0) {
				/* the last chunk: trailers do not matter with Connection: close */
				r->state = KD_HTTP_RESP_DONE;
				break;
			}
			r->cstate = C_DATA;
			break;
		case C_DATA: {
			size_t n = len - i;

			if (n > r->left)
				n = (size_t)r->left;
			/* consume no more than is kept, so input splits cannot matter */
			if (n > sizeof(r->body) - r->body_len)
				n = sizeof(r->body) - r->body_len;
			r->left -= n;
			if (r->left == 0)
				r->cstate = C_DATA_CR;
			keep(r, in + i, n);
			i += n;
			break;
		}
		case C_DATA_CR:
			if (c != '\r' && c != '\n')
				return -EINVAL;
			r->cstate = c == '\r' ? C_DATA_LF : C_SIZE;
			i++;
			break;
		case C_DATA_LF:
			if (c != '\n')
				return -EINVAL;
			r->cstate = C_SIZE;
			i++;
			break;
		}
	}
	return (ssize_t)i;
}

static ssize_t body_feed(struct kd_http_resp *r, const char *in, size_t len)
{
	size_t n = len;

	switch (r->mode) {
	case KD_HTTP_BODY_CHUNKED:
		return chunked_feed(r, in, len);
	case KD_HTTP_BODY_LENGTH:
		if (n > r->left)
			n = (size_t)r->left;
		if (n > sizeof(r->body) - r->body_len)
			n = sizeof(r->body) - r->body_len;
		r->left -= n;
		keep(r, in, n);
		if (r->left == 0)
			r->state = KD_HTTP_RESP_DONE;
		return (ssize_t)n;
	case KD_HTTP_BODY_CLOSE:
		if (n > sizeof(r->body) - r->body_len)
			n = sizeof(r->body) - r->body_len;
		keep(r, in, n);
		return (ssize_t)n;
	case KD_HTTP_BODY_NONE:
		break;
	}
	r->state = KD_HTTP_RESP_DONE;
	return 0;
}

void kd_http_resp_init(struct kd_http_resp *r)
{
	memset(r, 0, offsetof(struct kd_http_resp, head));
}

static ssize_t fail(struct kd_http_resp *r, int err)
{
	r->state = KD_HTTP_RESP_ERROR;
	return err;
}

ssize_t kd_http_resp_feed(struct kd_http_resp *r, const char *in, size_t len)
{
	size_t used = 0;

	while (used < len) {
		switch (r->state) {
		case KD_HTTP_RESP_HEAD: {
			char c = in[used++];

			if (r->head_len == sizeof(r->head))
				return fail(r, -EMSGSIZE);
			r->head[r->head_len++] = c;
			if (c != '\n')
				break;
			/* the blank line, with or without its CR */
			if ((r->head_len >= 2 && r->head[r->head_len - 2] == '\n') ||
			    (r->head_len >= 3 && r->head[r->head_len - 2] == '\r' &&
			     r->head[r->head_len - 3] == '\n')) {
				if (r->head_len <= 2)
					return fail(r, -EINVAL);
				if (parse_head(r))
					return fail(r, -EINVAL);
			}
			break;
		}
		case KD_HTTP_RESP_BODY: {
			ssize_t k = body_feed(r, in + used, len - used);

			if (k < 0)
				return fail(r, (int)k);
			used += (size_t)k;
			break;
		}
		case KD_HTTP_RESP_DONE:
			return (ssize_t)used;
		case KD_HTTP_RESP_ERROR:
			return -EINVAL;
		}
	}
	if (r->state == KD_HTTP_RESP_ERROR)
		return -EINVAL;
	return (ssize_t)used;
}

int kd_http_resp_eof(struct kd_http_resp *r)
{
	switch (r->state) {
	case KD_HTTP_RESP_DONE:
		return 0;
	case KD_HTTP_RESP_BODY:
		if (r->mode == KD_HTTP_BODY_CLOSE) {
			r->state = KD_HTTP_RESP_DONE;
			return 0;
		}
		return -EPIPE;
	case KD_HTTP_RESP_HEAD:
		return -EPIPE;
	case KD_HTTP_RESP_ERROR:
		break;
	}
	return -EINVAL;
}
