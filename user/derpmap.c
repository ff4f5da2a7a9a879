// SPDX-License-Identifier: MIT
/* DERP map reader: a small recursive-descent JSON walker that keeps only the
 * Regions -> Nodes fields kderpctl uses. Depth is bounded so hostile input
 * cannot exhaust the stack. */
#include "derpmap.h"
#include "key.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#define MAX_DEPTH 32

struct p {
	const char *s;
	size_t n, i;
	int depth;
};

static void ws(struct p *p)
{
	while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
		p->i++;
}

static bool eat(struct p *p, char c)
{
	ws(p);
	if (p->i < p->n && p->s[p->i] == c) {
		p->i++;
		return true;
	}
	return false;
}

/* A JSON string into out (truncated to cap-1, NUL-terminated); out may be NULL. */
static int str(struct p *p, char *out, size_t cap)
{
	size_t o = 0;

	if (!eat(p, '"'))
		return -EINVAL;
	while (p->i < p->n) {
		char c = p->s[p->i++];

		if (c == '"') {
			if (out && cap)
				out[o < cap ? o : cap - 1] = '\0';
			return 0;
		}
		if ((unsigned char)c < 0x20)
			return -EINVAL;
		if (c == '\\') {
			if (p->i >= p->n)
				return -EINVAL;
			c = p->s[p->i++];
			switch (c) {
			case 'n': c = '\n'; break;
			case 't': c = '\t'; break;
			case 'r': c = '\r'; break;
			case 'b': c = '\b'; break;
			case 'f': c = '\f'; break;
			case '"': case '\\': case '/': break;
			case 'u':
				if (p->n - p->i < 4)
					return -EINVAL;
				for (int k = 0; k < 4; k++)
					if (kd_hex_digit(p->s[p->i + k]) < 0)
						return -EINVAL;
				p->i += 4;
				c = '?'; /* names we care about are ASCII */
				break;
			default:
				return -EINVAL;
			}
		}
		if (out && o + 1 < cap)
			out[o++] = c;
	}
	return -EINVAL;
}

static int num(struct p *p, long *out)
{
	long v = 0;
	bool neg = false, any = false;

	ws(p);
	if (p->i < p->n && p->s[p->i] == '-') {
		neg = true;
		p->i++;
	}
	while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
		if (v < 100000000000L)
			v = v * 10 + (p->s[p->i] - '0');
		p->i++;
		any = true;
	}
	if (!any)
		return -EINVAL;
	/* fractions and exponents are legal JSON; ports and IDs never have them */
	while (p->i < p->n && strchr(".eE+-0123456789", p->s[p->i]))
		p->i++;
	*out = neg ? -v : v;
	return 0;
}

static int boolean(struct p *p, bool *out)
{
	ws(p);
	if (p->n - p->i >= 4 && !memcmp(p->s + p->i, "true", 4)) {
		p->i += 4;
		*out = true;
		return 0;
	}
	if (p->n - p->i >= 5 && !memcmp(p->s + p->i, "false", 5)) {
		p->i += 5;
		*out = false;
		return 0;
	}
	return -EINVAL;
}

static int skip(struct p *p)
{
	long l;
	bool b;
	int err = 0;

	ws(p);
	if (p->i >= p->n)
		return -EINVAL;
	if (++p->depth > MAX_DEPTH)
		return -EINVAL;
	switch (p->s[p->i]) {
	case '"':
		err = str(p, NULL, 0);
		break;
	case '{':
		p->i++;
		if (eat(p, '}'))
			break;
		do {
			err = str(p, NULL, 0);
			if (!err && !eat(p, ':'))
				err = -EINVAL;
			if (!err)
				err = skip(p);
		} while (!err && eat(p, ','));
		if (!err && !eat(p, '}'))
			err = -EINVAL;
		break;
	case '[':
		p->i++;
		if (eat(p, ']'))
			break;
		do
			err = skip(p);
		while (!err && eat(p, ','));
		if (!err && !eat(p, ']'))
			err = -EINVAL;
		break;
	case 't':
	case 'f':
		err = boolean(p, &b);
		break;
	case 'n':
		if (p->n - p->i >= 4 && !memcmp(p->s + p->i, "null", 4))
			p->i += 4;
		else
			err = -EINVAL;
		break;
	default:
		err = num(p, &l);
		break;
	}
	p->depth--;
	return err;
}

static bool is_null(struct p *p)
{
	ws(p);
	if (p->n - p->i >= 4 && !memcmp(p->s + p->i, "null", 4)) {
		p->i += 4;
		return true;
	}
	return false;
}

/* Iterates an object: calls fn for each key with the parser at the value. */
typedef int (*member_fn)(struct p *p, const char *key, void *ctx);

static int object(struct p *p, member_fn fn, void *ctx)
{
	char key[64];
	int err = 0;

	if (is_null(p))
		return 0;
	if (!eat(p, '{'))
		return -EINVAL;
	if (eat(p, '}'))
		return 0;
	do {
		err = str(p, key, sizeof(key));
		if (!err && !eat(p, ':'))
			err = -EINVAL;
		if (!err)
			err = fn(p, key, ctx);
	} while (!err && eat(p, ','));
	if (!err && !eat(p, '}'))
		err = -EINVAL;
	return err;
}

struct region_ctx {
	struct kd_derpmap *m;
	long region_id;
	char code[32];
	int first_node; /* nodes of this region: [first_node, m->nnodes) */
};

static int int_field(struct p *p, int *out)
{
	long v;
	int err;

	if (is_null(p))
		return 0;
	err = num(p, &v);
	if (!err)
		*out = (int)(v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN : v);
	return err;
}

static int str_field(struct p *p, char *out, size_t cap)
{
	if (is_null(p))
		return 0;
	return str(p, out, cap);
}

static int node_member(struct p *p, const char *key, void *ctx)
{
	struct kd_derpmap_node *n = ctx;

	/* Go matches field names case-insensitively */
	if (!strcasecmp(key, "Name"))
		return str_field(p, n->name, sizeof(n->name));
	if (!strcasecmp(key, "HostName"))
		return str_field(p, n->host_name, sizeof(n->host_name));
	if (!strcasecmp(key, "IPv4"))
		return str_field(p, n->ipv4, sizeof(n->ipv4));
	if (!strcasecmp(key, "IPv6"))
		return str_field(p, n->ipv6, sizeof(n->ipv6));
	if (!strcasecmp(key, "DERPPort"))
		return int_field(p, &n->derp_port);
	if (!strcasecmp(key, "RegionID"))
		return int_field(p, &n->region_id);
	if (!strcasecmp(key, "InsecureForTests"))
		return is_null(p) ? 0 : boolean(p, &n->insecure_for_tests);
	if (!strcasecmp(key, "STUNOnly"))
		return is_null(p) ? 0 : boolean(p, &n->stun_only);
	return skip(p);
}

static int region_member(struct p *p, const char *key, void *ctx)
{
	struct region_ctx *r = ctx;

	if (!strcasecmp(key, "RegionID")) {
		if (is_null(p))
			return 0;
		return num(p, &r->region_id);
	}
	if (!strcasecmp(key, "RegionCode"))
		return str_field(p, r->code, sizeof(r->code));
	if (!strcasecmp(key, "Nodes")) {
		int err = 0;

		if (is_null(p))
			return 0;
		if (!eat(p, '['))
			return -EINVAL;
		if (eat(p, ']'))
			return 0;
		do {
			struct kd_derpmap_node *n;

			if (r->m->nnodes == KD_DERPMAP_MAX_NODES)
				return -E2BIG;
			n = &r->m->nodes[r->m->nnodes];
			memset(n, 0, sizeof(*n));
			err = object(p, node_member, n);
			if (!err)
				r->m->nnodes++;
		} while (!err && eat(p, ','));
		if (!err && !eat(p, ']'))
			err = -EINVAL;
		return err;
	}
	return skip(p);
}

static int regions_member(struct p *p, const char *key, void *ctx)
{
	struct kd_derpmap *m = ctx;
	struct region_ctx r = {.m = m, .first_node = m->nnodes};
	int err = object(p, region_member, &r);

	if (err)
		return err;
	/* the region's ID (or failing that its map key) and code apply to its
	 * nodes, whichever order the fields came in */
	if (r.region_id == 0) {
		long v = 0;

		for (const char *k = key; *k >= '0' && *k <= '9'; k++)
			v = v * 10 + (*k - '0');
		r.region_id = v;
	}
	for (int i = r.first_node; i < m->nnodes; i++) {
		m->nodes[i].region_id = (int)r.region_id;
		memcpy(m->nodes[i].region_code, r.code, sizeof(r.code));
	}
	return 0;
}

static int top_member(struct p *p, const char *key, void *ctx)
{
	if (!strcasecmp(key, "Regions"))
		return object(p, regions_member, ctx);
	return skip(p);
}

int kd_derpmap_parse(struct kd_derpmap *m, const char *json, size_t len, size_t *err_off)
{
	struct p p = {.s = json, .n = len};
	int err;

	m->nnodes = 0;
	err = object(&p, top_member, m);
	if (!err) {
		ws(&p);
		if (p.i != p.n)
			err = -EINVAL;
	}
	if (err_off)
		*err_off = p.i;
	return err;
}
