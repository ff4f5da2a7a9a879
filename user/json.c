// SPDX-License-Identifier: MIT
#include "json.h"
#include "key.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#define RUNE_ERROR 0xfffdu

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int fail(struct kd_json *js)
{
	js->failed = true;
	return -EINVAL;
}

int kd_json_init(struct kd_json *js, const void *buf, size_t len, size_t max_len)
{
	memset(js, 0, sizeof(*js));
	js->buf = buf;
	js->want_value = true;
	if (len > max_len) {
		js->failed = true;
		return -EMSGSIZE;
	}
	js->len = len;
	return 0;
}

static void skip_ws(struct kd_json *js)
{
	while (js->pos < js->len && is_ws(js->buf[js->pos]))
		js->pos++;
}

/* Four hex digits at p (n bytes available); -1 if not. */
static long hex4(const char *p, size_t n)
{
	long v = 0;

	if (n < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		int d = kd_hex_digit(p[i]);
		if (d < 0)
			return -1;
		v = (v << 4) | d;
	}
	return v;
}

/* Go's utf8.DecodeRune: a valid sequence, or U+FFFD consuming one byte. */
static size_t utf8_decode(const unsigned char *p, size_t n, uint32_t *r)
{
	unsigned char c = p[0];
	uint32_t v, min;
	size_t need;

	if (c < 0x80) {
		*r = c;
		return 1;
	}
	if (c >= 0xc2 && c <= 0xdf) {
		need = 2; v = c & 0x1f; min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		need = 3; v = c & 0x0f; min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 4; v = c & 0x07; min = 0x10000;
	} else {
		goto bad;
	}
	if (n < need)
		goto bad;
	for (size_t i = 1; i < need; i++) {
		if ((p[i] & 0xc0) != 0x80)
			goto bad;
		v = (v << 6) | (p[i] & 0x3f);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		goto bad;
	*r = v;
	return need;
bad:
	*r = RUNE_ERROR;
	return 1;
}

static size_t utf8_encode(char out[4], uint32_t r)
{
	if (r < 0x80) {
		out[0] = (char)r;
		return 1;
	}
	if (r < 0x800) {
		out[0] = (char)(0xc0 | (r >> 6));
		out[1] = (char)(0x80 | (r & 0x3f));
		return 2;
	}
	if (r < 0x10000) {
		out[0] = (char)(0xe0 | (r >> 12));
		out[1] = (char)(0x80 | ((r >> 6) & 0x3f));
		out[2] = (char)(0x80 | (r & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | (r >> 18));
	out[1] = (char)(0x80 | ((r >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((r >> 6) & 0x3f));
	out[3] = (char)(0x80 | (r & 0x3f));
	return 4;
}

/* Scans a string whose opening quote is at js->pos. */
static int scan_string(struct kd_json *js, struct kd_json_str *s)
{
	const char *b = js->buf;
	size_t i = js->pos + 1;

	while (i < js->len) {
		unsigned char c = (unsigned char)b[i];
		if (c == '"') {
			s->raw = b + js->pos + 1;
			s->raw_len = i - js->pos - 1;
			js->pos = i + 1;
			return 0;
		}
		if (c < 0x20)
			return fail(js);
		if (c != '\\') {
			i++;
			continue;
		}
		if (i + 1 >= js->len)
			return fail(js);
		switch (b[i + 1]) {
		case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
			i += 2;
			continue;
		case 'u':
			break;
		default:
			return fail(js);
		}
		long u = hex4(b + i + 2, js->len - i - 2);
		if (u < 0 || (u >= 0xdc00 && u <= 0xdfff))
			return fail(js);
		i += 6;
		if (u >= 0xd800 && u <= 0xdbff) {
			/* RFC 8259 §8.2: a high surrogate must be followed by a low one */
			if (i + 1 >= js->len || b[i] != '\\' || b[i + 1] != 'u')
				return fail(js);
			long lo = hex4(b + i + 2, js->len - i - 2);
			if (lo < 0xdc00 || lo > 0xdfff)
				return fail(js);
			i += 6;
		}
	}
	return fail(js);
}

/* Scans a number at js->pos into lit without consuming it. */
static int scan_number(struct kd_json *js, struct kd_json_str *lit, bool *integral)
{
	const char *b = js->buf;
	size_t i = js->pos, n = js->len;

	*integral = true;
	if (i < n && b[i] == '-')
		i++;
	if (i >= n)
		return fail(js);
	if (b[i] == '0') {
		i++;
	} else if (b[i] >= '1' && b[i] <= '9') {
		while (i < n && b[i] >= '0' && b[i] <= '9')
			i++;
	} else {
		return fail(js);
	}
	if (i < n && b[i] == '.') {
		*integral = false;
		i++;
		if (i >= n || b[i] < '0' || b[i] > '9')
			return fail(js);
		while (i < n && b[i] >= '0' && b[i] <= '9')
			i++;
	}
	if (i < n && (b[i] == 'e' || b[i] == 'E')) {
		*integral = false;
		i++;
		if (i < n && (b[i] == '+' || b[i] == '-'))
			i++;
		if (i >= n || b[i] < '0' || b[i] > '9')
			return fail(js);
		while (i < n && b[i] >= '0' && b[i] <= '9')
			i++;
	}
	/* "01" or "1x": the token ends where the grammar says; whatever follows
	 * is checked by the container or kd_json_end. */
	lit->raw = b + js->pos;
	lit->raw_len = i - js->pos;
	return 0;
}

enum kd_json_type kd_json_peek(struct kd_json *js)
{
	if (js->failed || !js->want_value)
		return KD_JSON_INVALID;
	skip_ws(js);
	if (js->pos >= js->len)
		return KD_JSON_INVALID;
	switch (js->buf[js->pos]) {
	case '{': return KD_JSON_OBJECT;
	case '[': return KD_JSON_ARRAY;
	case '"': return KD_JSON_STRING;
	case 't': return KD_JSON_TRUE;
	case 'f': return KD_JSON_FALSE;
	case 'n': return KD_JSON_NULL;
	case '-': case '0': case '1': case '2': case '3': case '4':
	case '5': case '6': case '7': case '8': case '9':
		return KD_JSON_NUMBER;
	default:
		return KD_JSON_INVALID;
	}
}

/* Peek for a reader: -EINVAL if nothing valid can follow, -ENOMSG if the type
 * differs from want, 0 when it matches. */
static int expect(struct kd_json *js, enum kd_json_type want)
{
	enum kd_json_type t = kd_json_peek(js);

	if (t == KD_JSON_INVALID)
		return fail(js);
	return t == want ? 0 : -ENOMSG;
}

static int literal(struct kd_json *js, const char *word)
{
	size_t n = strlen(word);

	if (js->len - js->pos < n || memcmp(js->buf + js->pos, word, n) != 0)
		return fail(js);
	js->pos += n;
	js->want_value = false;
	return 0;
}

int kd_json_get_null(struct kd_json *js)
{
	int r = expect(js, KD_JSON_NULL);
	return r ? r : literal(js, "null");
}

int kd_json_get_bool(struct kd_json *js, bool *v)
{
	enum kd_json_type t = kd_json_peek(js);
	int r;

	if (t == KD_JSON_INVALID)
		return fail(js);
	if (t != KD_JSON_TRUE && t != KD_JSON_FALSE)
		return -ENOMSG;
	r = literal(js, t == KD_JSON_TRUE ? "true" : "false");
	if (r == 0)
		*v = t == KD_JSON_TRUE;
	return r;
}

int kd_json_get_number(struct kd_json *js, struct kd_json_str *lit)
{
	bool integral;
	int r = expect(js, KD_JSON_NUMBER);

	if (r)
		return r;
	r = scan_number(js, lit, &integral);
	if (r)
		return r;
	js->pos += lit->raw_len;
	js->want_value = false;
	return 0;
}

int kd_json_get_int(struct kd_json *js, int64_t *v)
{
	struct kd_json_str lit;
	bool integral, neg;
	uint64_t acc = 0, limit;
	int r = expect(js, KD_JSON_NUMBER);

	if (r)
		return r;
	r = scan_number(js, &lit, &integral);
	if (r)
		return r;
	/* Go's ParseInt refuses 2.0 and 1e2 for an int field; so do we */
	if (!integral)
		return -ERANGE;
	neg = lit.raw[0] == '-';
	limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	for (size_t i = neg; i < lit.raw_len; i++) {
		unsigned d = (unsigned)(lit.raw[i] - '0');
		if (acc > (limit - d) / 10)
			return -ERANGE;
		acc = acc * 10 + d;
	}
	*v = neg ? (int64_t)(0 - acc) : (int64_t)acc;
	js->pos += lit.raw_len;
	js->want_value = false;
	return 0;
}

int kd_json_get_string(struct kd_json *js, struct kd_json_str *s)
{
	int r = expect(js, KD_JSON_STRING);

	if (r)
		return r;
	r = scan_string(js, s);
	if (r)
		return r;
	js->want_value = false;
	return 0;
}

static int push(struct kd_json *js, bool object)
{
	uint32_t bit;

	if (js->depth >= KD_JSON_MAX_DEPTH)
		return fail(js);
	bit = 1u << js->depth;
	js->depth++;
	js->is_object = object ? js->is_object | bit : js->is_object & ~bit;
	js->has_items &= ~bit;
	js->pos++;
	return 0;
}

int kd_json_object_begin(struct kd_json *js)
{
	int r = expect(js, KD_JSON_OBJECT);

	if (r)
		return r;
	r = push(js, true);
	js->want_value = false;
	return r;
}

int kd_json_array_begin(struct kd_json *js)
{
	int r = expect(js, KD_JSON_ARRAY);

	if (r)
		return r;
	r = push(js, false);
	js->want_value = false;
	return r;
}

/* Common head of object_next/array_next: 0 at the closing bracket (consumed),
 * 1 when a member/element follows (separator consumed), -EINVAL. */
static int next_item(struct kd_json *js, bool object)
{
	uint32_t bit;
	char close = object ? '}' : ']';

	if (js->failed || js->want_value || js->depth == 0)
		return fail(js);
	bit = 1u << (js->depth - 1);
	if (!!(js->is_object & bit) != object)
		return fail(js);
	skip_ws(js);
	if (js->pos >= js->len)
		return fail(js);
	if (js->buf[js->pos] == close) {
		js->pos++;
		js->depth--;
		return 0;
	}
	if (js->has_items & bit) {
		if (js->buf[js->pos] != ',')
			return fail(js);
		js->pos++;
		skip_ws(js);
	}
	js->has_items |= bit;
	return 1;
}

int kd_json_object_next(struct kd_json *js, struct kd_json_str *key)
{
	int r = next_item(js, true);

	if (r <= 0)
		return r;
	if (js->pos >= js->len || js->buf[js->pos] != '"')
		return fail(js);
	r = scan_string(js, key);
	if (r)
		return r;
	skip_ws(js);
	if (js->pos >= js->len || js->buf[js->pos] != ':')
		return fail(js);
	js->pos++;
	js->want_value = true;
	return 1;
}

int kd_json_array_next(struct kd_json *js)
{
	int r = next_item(js, false);

	if (r <= 0)
		return r;
	js->want_value = true;
	return 1;
}

int kd_json_skip_value(struct kd_json *js)
{
	struct kd_json_str s;
	bool b;
	int r;

	/* recursion is bounded by KD_JSON_MAX_DEPTH: push() refuses deeper */
	switch (kd_json_peek(js)) {
	case KD_JSON_OBJECT:
		if ((r = kd_json_object_begin(js)))
			return r;
		while ((r = kd_json_object_next(js, &s)) == 1)
			if ((r = kd_json_skip_value(js)))
				return r;
		return r;
	case KD_JSON_ARRAY:
		if ((r = kd_json_array_begin(js)))
			return r;
		while ((r = kd_json_array_next(js)) == 1)
			if ((r = kd_json_skip_value(js)))
				return r;
		return r;
	case KD_JSON_STRING:
		return kd_json_get_string(js, &s);
	case KD_JSON_NUMBER:
		return kd_json_get_number(js, &s);
	case KD_JSON_TRUE:
	case KD_JSON_FALSE:
		return kd_json_get_bool(js, &b);
	case KD_JSON_NULL:
		return kd_json_get_null(js);
	default:
		return fail(js);
	}
}

int kd_json_end(struct kd_json *js)
{
	if (js->failed || js->want_value || js->depth != 0)
		return fail(js);
	skip_ws(js);
	if (js->pos != js->len)
		return fail(js);
	return 0;
}

int kd_json_validate(const void *buf, size_t len, size_t max_len)
{
	struct kd_json js;
	int r = kd_json_init(&js, buf, len, max_len);

	if (r)
		return r;
	r = kd_json_skip_value(&js);
	return r ? r : kd_json_end(&js);
}

/* One decoded rune of a validated string; returns bytes consumed. */
static size_t next_rune(const char *p, size_t n, uint32_t *r)
{
	if (p[0] != '\\')
		return utf8_decode((const unsigned char *)p, n, r);
	switch (p[1]) {
	case 'b': *r = '\b'; return 2;
	case 'f': *r = '\f'; return 2;
	case 'n': *r = '\n'; return 2;
	case 'r': *r = '\r'; return 2;
	case 't': *r = '\t'; return 2;
	case 'u': break;
	default: *r = (unsigned char)p[1]; return 2;
	}
	uint32_t u = (uint32_t)hex4(p + 2, n - 2);
	if (u >= 0xd800 && u <= 0xdbff) {
		uint32_t lo = (uint32_t)hex4(p + 8, n - 8);
		*r = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
		return 12;
	}
	*r = u;
	return 6;
}

size_t kd_json_unescape(const struct kd_json_str *s, char *out, size_t cap)
{
	size_t total = 0, i = 0;
	bool full = cap == 0;

	while (i < s->raw_len) {
		char enc[4];
		uint32_t r;
		size_t k;

		i += next_rune(s->raw + i, s->raw_len - i, &r);
		k = utf8_encode(enc, r);
		if (!full && total + k < cap)
			memcpy(out + total, enc, k);
		else if (!full) {
			/* stop at a character boundary, never half a sequence */
			out[total] = '\0';
			full = true;
		}
		total += k;
	}
	if (!full)
		out[total] = '\0';
	return total;
}

static uint32_t fold(uint32_t r)
{
	if (r >= 'a' && r <= 'z')
		return r - 32;
	/* Go folds with ToUpper(ToLower(r)); these are the non-ASCII runes
	 * that land on ASCII letters */
	switch (r) {
	case 0x212a: return 'K';
	case 0x017f: return 'S';
	case 0x0130: case 0x0131: return 'I';
	default: return r;
	}
}

bool kd_json_str_eq_ci(const struct kd_json_str *s, const char *name)
{
	size_t i = 0;

	while (i < s->raw_len) {
		uint32_t r;

		i += next_rune(s->raw + i, s->raw_len - i, &r);
		if (*name == '\0' || fold(r) != fold((unsigned char)*name))
			return false;
		name++;
	}
	return *name == '\0';
}

int kd_json_escape(char *out, size_t cap, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0, i = 0;

	/* the length is returned as an int */
	if (cap > INT_MAX)
		cap = INT_MAX;

#define PUT(c)                                 \
	do {                                   \
		if (o + 1 >= cap)              \
			return -ENOSPC;        \
		out[o++] = (char)(c);          \
	} while (0)

	PUT('"');
	while (i < len) {
		uint32_t r;
		size_t k = utf8_decode((const unsigned char *)s + i, len - i, &r);
		bool invalid = r == RUNE_ERROR && k == 1;

		switch (r) {
		case '"': case '\\': PUT('\\'); PUT(r); break;
		case '\b': PUT('\\'); PUT('b'); break;
		case '\f': PUT('\\'); PUT('f'); break;
		case '\n': PUT('\\'); PUT('n'); break;
		case '\r': PUT('\\'); PUT('r'); break;
		case '\t': PUT('\\'); PUT('t'); break;
		default:
			if (r < 0x20 || r == '<' || r == '>' || r == '&' || r == 0x2028 ||
			    r == 0x2029 || invalid) {
				PUT('\\'); PUT('u');
				PUT(hex[(r >> 12) & 15]); PUT(hex[(r >> 8) & 15]);
				PUT(hex[(r >> 4) & 15]); PUT(hex[r & 15]);
			} else {
				for (size_t j = 0; j < k; j++)
					PUT(s[i + j]);
			}
		}
		i += k;
	}
	PUT('"');
#undef PUT
	if (o >= cap)
		return -ENOSPC;
	out[o] = '\0';
	return (int)o;
}
