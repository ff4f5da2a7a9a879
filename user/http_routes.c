// SPDX-License-Identifier: MIT
/* What kderpd answers to each HTTP request (spec §3.4–§3.12). Decisions and
 * response bytes only; the caller writes them and owns the connection. */
#include "http.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#include "http_internal.h"
#include "key.h"
#include "websocket.h"

#define NOSNIFF "X-Content-Type-Options: nosniff\r\n"

struct route_ctx {
	const struct kd_http_request *req;
	const struct kd_http_route_opts *o;
	struct kd_http_result *res;
	char *out;
	size_t cap;
	size_t *out_len;
};

static bool path_is(const struct kd_http_request *req, const char *p)
{
	size_t n = strlen(p);
	return req->path_len == n && memcmp(req->path, p, n) == 0;
}

static bool path_has_prefix(const char *s, size_t len, const char *p)
{
	size_t n = strlen(p);
	return len >= n && memcmp(s, p, n) == 0;
}

static int reply(struct route_ctx *c, int status, const char *ctype, const char *extra, const void *body,
		 size_t len)
{
	c->res->action = KD_HTTP_RESPOND;
	c->res->status = status;
	return kd_http_format_reply(c->req, c->res, c->out, c->cap, c->out_len, status, ctype, extra, body, len);
}

/* Go's http.Error: text/plain, nosniff, the message and a newline */
static int error_reply(struct route_ctx *c, int status, const char *msg, const char *extra)
{
	char hdrs[256];
	struct kd_obuf b = {.p = hdrs, .cap = sizeof(hdrs)};

	kd_obuf_puts(&b, NOSNIFF);
	if (extra)
		kd_obuf_puts(&b, extra);
	kd_obuf_put(&b, "", 1);
	if (b.overflow)
		return -ENOSPC;
	return reply(c, status, KD_HTTP_TEXT_PLAIN, hdrs, msg, strlen(msg));
}

struct url_part {
	const char *s;
	size_t len;
};

/* Go's htmlEscape; returns the escaped length, writing only when b != NULL */
static size_t html_escape(struct kd_obuf *b, const char *s, size_t n)
{
	size_t total = 0;

	for (size_t i = 0; i < n; i++) {
		const char *rep = NULL;
		switch (s[i]) {
		case '<': rep = "&lt;"; break;
		case '>': rep = "&gt;"; break;
		case '&': rep = "&amp;"; break;
		case '"': rep = "&#34;"; break;
		case '\'': rep = "&#39;"; break;
		}
		total += rep ? strlen(rep) : 1;
		if (b && rep)
			kd_obuf_puts(b, rep);
		else if (b)
			kd_obuf_put(b, s + i, 1);
	}
	return total;
}

/* Go's http.Redirect to an absolute URL or a path made of `parts`: Location,
 * and for GET a tiny HTML body (text/html also on HEAD). Written straight
 * into out: the URL echoes the request, so its size is the client's choice. */
static int redirect(struct route_ctx *c, int status, const struct url_part *parts, size_t nparts,
		    const char *extra)
{
	struct kd_obuf b = {.p = c->out, .cap = c->cap};
	bool get = kd_http_method_is(c->req, "GET"), head = kd_http_method_is(c->req, "HEAD");
	const char *text = kd_http_status_text(status);
	size_t body_len = 0;

	c->res->action = KD_HTTP_RESPOND;
	c->res->status = status;
	if (get) {
		body_len = strlen("<a href=\"\">") + strlen(text) + strlen("</a>.\n\n");
		for (size_t i = 0; i < nparts; i++)
			body_len += html_escape(NULL, parts[i].s, parts[i].len);
	}
	kd_obuf_printf(&b, "HTTP/1.1 %d %s\r\n", status, text);
	if (get || head)
		kd_obuf_puts(&b, "Content-Type: " KD_HTTP_TEXT_HTML "\r\n");
	kd_obuf_puts(&b, "Location: ");
	for (size_t i = 0; i < nparts; i++)
		kd_obuf_put(&b, parts[i].s, parts[i].len);
	kd_obuf_puts(&b, "\r\n");
	if (extra)
		kd_obuf_puts(&b, extra);
	if (!c->res->keep_alive)
		kd_obuf_puts(&b, "Connection: close\r\n");
	kd_obuf_printf(&b, "Content-Length: %zu\r\n\r\n", body_len);
	if (get) {
		kd_obuf_puts(&b, "<a href=\"");
		for (size_t i = 0; i < nparts; i++)
			html_escape(&b, parts[i].s, parts[i].len);
		kd_obuf_printf(&b, "\">%s</a>.\n\n", text);
	}
	if (b.overflow)
		return -ENOSPC;
	*c->out_len = b.len;
	return 0;
}

static bool keep_alive_ok(const struct kd_http_request *req)
{
	const struct kd_http_header *cl = kd_http_find(req, "Content-Length");

	if (req->minor_version < 1 || kd_http_has_token(req, "Connection", "close"))
		return false;
	/* no endpoint reads a body: one would be parsed as the next request */
	if (kd_http_find(req, "Transfer-Encoding") || (cl && !kd_http_header_eq(cl, "0", false)))
		return false;
	return true;
}

int kd_http_derp_upgrade_response(char *out, size_t cap, size_t *out_len, const uint8_t server_pub[32])
{
	char hex[2 * DERP_KEY_LEN + 1];
	struct kd_obuf b = {.p = out, .cap = cap};

	*out_len = 0;
	kd_hex_encode(hex, server_pub, DERP_KEY_LEN);
	kd_obuf_puts(&b, "HTTP/1.1 101 Switching Protocols\r\n"
			 "Upgrade: DERP\r\n"
			 "Connection: Upgrade\r\n"
			 "Derp-Version: 2\r\n"
			 "Derp-Public-Key: ");
	kd_obuf_puts(&b, hex);
	kd_obuf_puts(&b, "\r\n\r\n");
	if (b.overflow)
		return -ENOSPC;
	*out_len = b.len;
	return 0;
}

static int route_websocket(struct route_ctx *c)
{
	static const char reason[] = "client must speak the derp subprotocol";
	struct kd_ws_handshake hs;
	uint8_t close_frame[KD_WS_MAX_CONTROL_FRAME];
	size_t n, flen;
	int rc;

	kd_ws_check_handshake(c->req, &hs);
	if (hs.status != 101)
		return error_reply(c, hs.status, hs.error, hs.extra);
	rc = kd_ws_handshake_response(c->out, c->cap, c->out_len, &hs);
	if (rc)
		return rc;
	c->res->status = 101;
	c->res->keep_alive = false;
	if (hs.subprotocol && memcmp(hs.subprotocol, KD_WS_SUBPROTOCOL, 4) == 0) {
		c->res->action = KD_HTTP_UPGRADE_WEBSOCKET;
		return 0;
	}
	/* the reference accepts, then closes with 1008 (spec §3.7) */
	n = *c->out_len;
	flen = kd_ws_encode_close(close_frame, KD_WS_CLOSE_POLICY_VIOLATION, reason);
	if (flen > c->cap - n) {
		*c->out_len = 0;
		return -ENOSPC;
	}
	memcpy(c->out + n, close_frame, flen);
	*c->out_len = n + flen;
	c->res->action = KD_HTTP_RESPOND;
	return 0;
}

static int route_derp(struct route_ctx *c)
{
	const struct kd_http_header *up = kd_http_find(c->req, "Upgrade");
	const struct kd_http_header *proto = kd_http_find(c->req, "Sec-WebSocket-Protocol");
	const struct kd_http_header *ideal = kd_http_find(c->req, "Ideal-Node");
	int rc;

	if (!c->o->derp_enabled)
		return error_reply(c, 404, "derp server disabled\n", NULL);
	/* the reference reads the first header of each name and matches "derp"
	 * as a case-sensitive substring of the protocol list (spec §3.5.2) */
	if (kd_http_header_eq(up, "websocket", true) && proto && memmem(proto->value, proto->value_len, "derp", 4))
		return route_websocket(c);
	if (!kd_http_header_eq(up, "derp", true) && !kd_http_header_eq(up, "websocket", true))
		return error_reply(c, 426, "DERP requires connection upgrade\n", NULL);

	c->res->action = KD_HTTP_UPGRADE_DERP;
	c->res->status = 101;
	c->res->keep_alive = false;
	c->res->fast_start = kd_http_header_eq(kd_http_find(c->req, "Derp-Fast-Start"), "1", false);
	c->res->not_ideal = ideal && ideal->value_len > 0;
	if (c->res->fast_start)
		return 0;
	if (!c->o->server_pub)
		return -EINVAL;
	rc = kd_http_derp_upgrade_response(c->out, c->cap, c->out_len, c->o->server_pub);
	return rc;
}

static int route_probe(struct route_ctx *c)
{
	if (kd_http_method_is(c->req, "GET") || kd_http_method_is(c->req, "HEAD"))
		return reply(c, 200, NULL, "Access-Control-Allow-Origin: *\r\n", NULL, 0);
	return error_reply(c, 405, "bogus probe method\n", NULL);
}

static bool challenge_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
	       ch == '-' || ch == '_' || ch == ':';
}

static int route_generate_204(struct route_ctx *c)
{
	const struct kd_http_header *ch = kd_http_find(c->req, "X-Tailscale-Challenge");
	char hdrs[256];
	struct kd_obuf b = {.p = hdrs, .cap = sizeof(hdrs)};
	bool ok = ch && ch->value_len > 0 && ch->value_len <= 64;

	for (size_t i = 0; ok && i < ch->value_len; i++)
		ok = challenge_char(ch->value[i]);
	if (ok) {
		kd_obuf_puts(&b, "X-Tailscale-Response: response ");
		kd_obuf_put(&b, ch->value, ch->value_len);
		kd_obuf_puts(&b, "\r\n");
	}
	kd_obuf_puts(&b, "Cache-Control: no-cache, no-store, must-revalidate, no-transform, max-age=0\r\n");
	kd_obuf_put(&b, "", 1);
	if (b.overflow)
		return -ENOSPC;
	return reply(c, 204, NULL, hdrs, NULL, 0);
}

static int route_debug(struct route_ctx *c)
{
	if (!c->o->debug_allowed)
		return error_reply(c, 403,
				   c->o->dev ? "debug access denied; to allow, set TS_ALLOW_DEBUG_IP=<your ip>\n"
					     : "debug access denied\n",
				   NULL);
	c->res->action = KD_HTTP_RESPOND;
	c->res->status = 200;
	if (path_is(c->req, "/debug/"))
		c->res->action = KD_HTTP_DEBUG_INDEX;
	else if (path_is(c->req, "/debug/varz"))
		c->res->action = KD_HTTP_VARZ;
	else if (path_is(c->req, "/debug/vars"))
		c->res->action = KD_HTTP_DEBUG_VARS;
	else if (path_is(c->req, "/debug/check"))
		c->res->action = KD_HTTP_DEBUG_CHECK;
	else if (path_is(c->req, "/debug/clients"))
		c->res->action = KD_HTTP_DEBUG_CLIENTS;
	else
		return error_reply(c, 404, "404 page not found\n", NULL);
	return 0;
}

/* ^derp([^.]*)\.tailscale\.com\.?$ : Tailscale's own nodes get an abuse contact */
static bool tailscale_hostname(const char *h)
{
	const char *dot;

	if (!h || strncmp(h, "derp", 4) != 0)
		return false;
	dot = strchr(h + 4, '.');
	return dot && (strcmp(dot, ".tailscale.com") == 0 || strcmp(dot, ".tailscale.com.") == 0);
}

static int home_default(struct route_ctx *c)
{
	char body[2048];
	struct kd_obuf b = {.p = body, .cap = sizeof(body)};
	bool abuse = tailscale_hostname(c->o->hostname);

	kd_obuf_puts(&b, "<html><body>\n<h1>DERP</h1>\n<p>\n  This is a <a href=\"https://tailscale.com/\">Tailscale</a> "
			 "DERP server (kderp).\n</p>\n\n<p>\n  It provides STUN, interactive connectivity "
			 "establishment, and relaying of end-to-end encrypted traffic\n  for Tailscale clients.\n</p>\n\n");
	if (abuse)
		kd_obuf_puts(&b, "<p>\n  If you suspect abuse, please contact <a "
				 "href=\"mailto:security@tailscale.com\">security@tailscale.com</a>.\n</p>\n\n");
	kd_obuf_puts(&b, "<p>\n  Documentation:\n</p>\n\n<ul>\n");
	if (abuse)
		kd_obuf_puts(&b, "  <li><a href=\"https://tailscale.com/security-policies\">Tailscale Security "
				 "Policies</a></li>\n  <li><a href=\"https://tailscale.com/tos\">Tailscale Terms of "
				 "Service</a></li>\n");
	kd_obuf_puts(&b, "  <li><a href=\"https://tailscale.com/kb/1232/derp-servers\">About DERP</a></li>\n"
			 "  <li><a href=\"https://pkg.go.dev/tailscale.com/derp\">Protocol &amp; Go docs</a></li>\n"
			 "  <li><a href=\"https://github.com/tailscale/tailscale/tree/main/cmd/derper#derp\">How to "
			 "run a DERP server</a></li>\n</ul>\n\n");
	if (!c->o->derp_enabled)
		kd_obuf_puts(&b, "<p>Status: <b>disabled</b></p>\n\n");
	if (c->o->debug_allowed)
		kd_obuf_puts(&b, "<p>Debug info at <a href='/debug/'>/debug/</a>.</p>\n\n");
	kd_obuf_puts(&b, "</body>\n</html>\n");
	if (b.overflow)
		return -ENOSPC;
	return reply(c, 200, KD_HTTP_TEXT_HTML, KD_HTTP_BROWSER_HEADERS, body, b.len);
}

static int route_home(struct route_ctx *c)
{
	const char *home = c->o->home ? c->o->home : "";

	if (strcmp(home, "blank") == 0)
		return reply(c, 200, KD_HTTP_TEXT_HTML, KD_HTTP_BROWSER_HEADERS, NULL, 0);
	if (strncmp(home, "http://", 7) == 0 || strncmp(home, "https://", 8) == 0)
		return redirect(c, 302, &(struct url_part){home, strlen(home)}, 1, KD_HTTP_BROWSER_HEADERS);
	return home_default(c);
}

int kd_http_home_check(const char *home)
{
	if (!home || !*home || strcmp(home, "blank") == 0 || strncmp(home, "http://", 7) == 0 ||
	    strncmp(home, "https://", 8) == 0)
		return 0;
	return -EINVAL;
}

static int route_main(struct route_ctx *c)
{
	const struct kd_http_request *req = c->req;

	if (path_is(req, "/derp"))
		return route_derp(c);
	if (path_is(req, "/derp/probe") || path_is(req, "/derp/latency-check"))
		return route_probe(c);
	if (path_is(req, "/generate_204"))
		return route_generate_204(c);
	if (path_is(req, "/robots.txt"))
		return reply(c, 200, KD_HTTP_TEXT_PLAIN, KD_HTTP_BROWSER_HEADERS, "User-agent: *\nDisallow: /\n", 26);
	if (path_is(req, "/bootstrap-dns")) {
		/* kderp resolves no bootstrap names: "{}" rather than the
		 * reference's empty body, which clients fail to decode (§3.10) */
		c->res->keep_alive = false;
		return reply(c, 200, "application/json", KD_HTTP_BROWSER_HEADERS, "{}\n", 3);
	}
	/* Go's ServeMux sends the bare subtree name to the subtree */
	if (path_is(req, "/debug"))
		return redirect(c, 301,
				(struct url_part[]){{"/debug/", 7},
						    {req->query - 1, req->query_len ? req->query_len + 1 : 0}},
				2, NULL);
	if (path_has_prefix(req->path, req->path_len, "/debug/"))
		return route_debug(c);
	return route_home(c);
}

static int route_port80(struct route_ctx *c)
{
	const struct kd_http_request *req = c->req;
	const struct kd_http_header *host = kd_http_find(req, "Host");
	struct url_part url[3] = {{"https://", 8}, {"", 0}, {req->target, req->target_len}};

	if (path_is(req, "/generate_204"))
		return route_generate_204(c);
	/* kderp has no HTTP-01 responder: every token is unknown */
	if (path_has_prefix(req->path, req->path_len, "/.well-known/acme-challenge/"))
		return error_reply(c, 404, "404 page not found\n", NULL);
	if (path_has_prefix(req->target, req->target_len, "/debug"))
		return route_main(c);
	if (!kd_http_method_is(req, "GET") && !kd_http_method_is(req, "HEAD"))
		return error_reply(c, 400, "Use HTTPS\n", NULL);

	if (host)
		url[1] = (struct url_part){host->value, host->value_len};
	if (kd_http_method_is(req, "GET") && path_is(req, "/") && c->o->debug_allowed)
		url[2] = (struct url_part){"/debug/", 7};
	return redirect(c, 302, url, 3, NULL);
}

static size_t count_headers(const struct kd_http_request *req, const char *name)
{
	size_t n = 0, len = strlen(name);

	for (size_t i = 0; i < req->num_headers; i++)
		if (req->headers[i].name_len == len && strncasecmp(req->headers[i].name, name, len) == 0)
			n++;
	return n;
}

int kd_http_route(const struct kd_http_request *req, const struct kd_http_route_opts *o,
		  struct kd_http_result *res, char *out, size_t cap, size_t *out_len)
{
	struct route_ctx c = {.req = req, .o = o, .res = res, .out = out, .cap = cap, .out_len = out_len};
	size_t hosts;
	int rc;

	memset(res, 0, sizeof(*res));
	*out_len = 0;
	res->keep_alive = keep_alive_ok(req);

	/* CONNECT names its target in the request line, so Go exempts it */
	if (kd_http_method_is(req, "CONNECT")) {
		rc = error_reply(&c, 403, "CONNECT not enabled\n", NULL);
		goto out;
	}
	hosts = count_headers(req, "Host");
	if (req->minor_version >= 1 && hosts != 1) {
		/* Go's server writes these itself, before any handler */
		const char *msg = hosts ? "400 Bad Request: too many Host headers"
					: "400 Bad Request: missing required Host header";
		res->keep_alive = false;
		rc = reply(&c, 400, KD_HTTP_TEXT_PLAIN, NULL, msg, strlen(msg));
		goto out;
	}
	rc = o->port80_redirect ? route_port80(&c) : route_main(&c);
out:
	if (rc)
		*out_len = 0;
	return rc;
}
