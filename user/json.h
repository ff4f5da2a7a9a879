/* SPDX-License-Identifier: MIT */
/* Strict RFC 8259 pull reader over a caller buffer, and a string escaper.
 *
 * The reader never allocates, logs or does I/O. The caller drives it in
 * document order: peek at the next value's type, then consume it with one of
 * the get/begin/skip calls; containers are walked with *_next. Anything out of
 * order or malformed makes the cursor fail with -EINVAL, and it stays failed
 * (sticky), so a caller may check only the last return.
 *
 * Rejected: trailing content (kd_json_end), leading zeros, "1.", "-", bad or
 * truncated escapes, unpaired UTF-16 surrogates in \u escapes, raw control
 * characters (< 0x20) in strings, trailing commas, nesting deeper than
 * KD_JSON_MAX_DEPTH, input longer than the caller's limit.
 *
 * Accepted on purpose: invalid UTF-8 inside strings. Go's encoding/json (the
 * reference every DERP client and server uses) accepts it too, and rejecting
 * it here would refuse clients the reference admits. kd_json_unescape()
 * replaces each invalid byte with U+FFFD, as Go does, so unescaped output is
 * always valid UTF-8.
 */
#ifndef KD_JSON_H
#define KD_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KD_JSON_MAX_DEPTH 32

enum kd_json_type {
	KD_JSON_INVALID = 0, /* the next byte cannot start a value (or cursor failed) */
	KD_JSON_NULL,
	KD_JSON_FALSE,
	KD_JSON_TRUE,
	KD_JSON_NUMBER,
	KD_JSON_STRING,
	KD_JSON_ARRAY,
	KD_JSON_OBJECT,
};

struct kd_json {
	const char *buf;
	size_t len;
	size_t pos;
	unsigned depth;
	uint32_t is_object;  /* bit d-1: level d is an object (else an array) */
	uint32_t has_items;  /* bit d-1: level d already holds a member */
	bool want_value;     /* a value may be read now */
	bool failed;
};

/* A validated string token: the bytes between the quotes, escapes intact.
 * Points into the cursor's buffer. */
struct kd_json_str {
	const char *raw;
	size_t raw_len;
};

/* 0, or -EMSGSIZE when len > max_len (nothing is read then). */
int kd_json_init(struct kd_json *js, const void *buf, size_t len, size_t max_len);

/* Type of the next value, without consuming it; skips whitespace. */
enum kd_json_type kd_json_peek(struct kd_json *js);

/* Value readers. On success the value is consumed. -ENOMSG: valid JSON of
 * another type, -ERANGE (get_int): a number that is not an integer in int64
 * range; in both cases nothing is consumed, so the caller may skip it.
 * -EINVAL: malformed input or a call out of order (sticky). */
int kd_json_get_null(struct kd_json *js);
int kd_json_get_bool(struct kd_json *js, bool *v);
int kd_json_get_int(struct kd_json *js, int64_t *v);
/* The number's literal text, for callers that want another representation. */
int kd_json_get_number(struct kd_json *js, struct kd_json_str *lit);
int kd_json_get_string(struct kd_json *js, struct kd_json_str *s);
/* Consumes any one value, validating it structurally. */
int kd_json_skip_value(struct kd_json *js);

/* Containers. object_next: 1 with the member's key when a member follows (the
 * cursor then sits on its value, which the caller must consume), 0 when the
 * object ended (the '}' is consumed), -EINVAL. array_next likewise for
 * elements. Depth beyond KD_JSON_MAX_DEPTH fails begin with -EINVAL. */
int kd_json_object_begin(struct kd_json *js);
int kd_json_object_next(struct kd_json *js, struct kd_json_str *key);
int kd_json_array_begin(struct kd_json *js);
int kd_json_array_next(struct kd_json *js);

/* 0 when exactly one complete top-level value was read and only whitespace
 * follows; -EINVAL otherwise. */
int kd_json_end(struct kd_json *js);

/* 0 when buf holds exactly one well-formed JSON value (plus whitespace). */
int kd_json_validate(const void *buf, size_t len, size_t max_len);

/* Decodes s into out as UTF-8 and NUL-terminates it (when cap > 0),
 * truncating at a character boundary. Returns the full decoded length, so
 * the result was truncated iff the return value >= cap. An escaped \u0000
 * becomes a NUL byte inside the output. */
size_t kd_json_unescape(const struct kd_json_str *s, char *out, size_t cap);

/* Does the decoded string equal the ASCII name under Go's encoding/json
 * field-name folding? ASCII letters match either case; like Go, U+212A
 * (Kelvin) matches 'k', U+017F (long s) matches 's', U+0130 and U+0131
 * match 'i'. name must be ASCII. */
bool kd_json_str_eq_ci(const struct kd_json_str *s, const char *name);

/* Writes s[0..len) as a complete JSON string literal, quotes included, and a
 * NUL. Escapes as Go's json.Marshal does: \" \\ \b \f \n \r \t, other control
 * characters and <, >, &, U+2028, U+2029 as \u00xx / \u20xx, each invalid
 * UTF-8 byte as \ufffd. Returns the length written (without the NUL) or
 * -ENOSPC when it does not fit in cap. */
int kd_json_escape(char *out, size_t cap, const char *s, size_t len);

#endif
