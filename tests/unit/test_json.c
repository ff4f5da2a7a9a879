// SPDX-License-Identifier: MIT
/* The strict JSON reader: RFC 8259 grammar, limits, the cursor API and the
 * escaper. Inputs are copied into exact-size heap buffers so ASan catches any
 * read past the end. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "json.h"

static char *dup_exact(const char *s, size_t n)
{
	char *p = malloc(n ? n : 1);
	assert_non_null(p);
	memcpy(p, s, n);
	return p;
}

static int validate_n(const char *s, size_t n)
{
	char *p = dup_exact(s, n);
	int r = kd_json_validate(p, n, 1 << 20);
	free(p);
	return r;
}

static int validate(const char *s)
{
	return validate_n(s, strlen(s));
}

static void test_valid_documents(void **state)
{
	static const char *const ok[] = {
		"null", "true", "false", "0", "-0", "1", "-1", "123456789", "0.5", "-0.5e-3",
		"1E+2", "1e2", "10.25E-10", "\"\"", "\"abc\"", "{}", "[]", " \t\r\n{} \n",
		"{\"a\":1}", "{ \"a\" : [ 1 , 2 , { \"b\" : null } ] , \"c\" : \"x\" }",
		"[[],[[]],{}]", "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\u0000\\u00e9\\uFFFF\"",
		"\"\\ud83d\\ude00\"", "\"\\uD83D\\uDE00\"", "\"\xc3\xa9\xf0\x9f\x98\x80\"",
		"{\"a\":1,\"a\":2}", "[true,false,null]", "\"\x7f\"",
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		if (validate(ok[i]) != 0)
			fail_msg("rejected valid JSON: %s", ok[i]);
	}
}

static void test_invalid_documents(void **state)
{
	static const char *const bad[] = {
		"", " ", "\n", "{} x", "{}{}", "1 2", "[] ]", "01", "-01", "00", "-", "+1", "1.",
		".5", "1e", "1e+", "1.e3", "0x10", "NaN", "Infinity", "-Infinity", "tru", "nul",
		"nulll", "True", "NULL", "[1,]", "[,1]", "[1 2]", "{,}", "{\"a\"}", "{\"a\":}",
		"{\"a\" 1}", "{\"a\":1,}", "{\"a\":1 \"b\":2}", "{'a':1}", "{a:1}", "{1:1}",
		"[", "]", "{", "}", "\"abc", "\"\\x\"", "\"\\u12\"", "\"\\u12G4\"", "\"\\U0041\"",
		"\"\\ud800\"", "\"\\ud800x\"", "\"\\ud800\\u0041\"", "\"\\udc00\"",
		"\"\\udbff\\udbff\"", "\"\\ude00\\ud83d\"", "\"a\nb\"", "\"a\tb\"", "\"\x01\"",
		"\"\x1f\"", "\xef\xbb\xbf{}", "[1]]", "{\"a\":1}}", "/* c */ {}", "[1,2",
		"{\"a\":[}", "\"\\\"",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (validate(bad[i]) != -EINVAL)
			fail_msg("accepted or misjudged invalid JSON: %s", bad[i]);
	}
	/* a NUL byte is not whitespace */
	assert_int_equal(validate_n("{}\0", 3), -EINVAL);
	assert_int_equal(validate_n("\"a\0b\"", 5), -EINVAL);
}

static void test_invalid_utf8_passes(void **state)
{
	/* documented: Go accepts it, so the reader does; unescape repairs it */
	struct kd_json js;
	struct kd_json_str s;
	char out[16];
	const char doc[] = "\"a\xff\xc3(\xed\xa0\x80\"";

	assert_int_equal(kd_json_init(&js, doc, sizeof(doc) - 1, 64), 0);
	assert_int_equal(kd_json_get_string(&js, &s), 0);
	assert_int_equal(kd_json_end(&js), 0);
	/* a, FFFD, FFFD, (, FFFD x3 (surrogate bytes are invalid one by one) */
	assert_int_equal(kd_json_unescape(&s, out, sizeof(out)), 1 + 3 + 3 + 1 + 9);
	assert_memory_equal(out, "a\xef\xbf\xbd\xef\xbf\xbd(", 8);
}

static void nest(char *buf, int depth, char open, char close)
{
	memset(buf, open, (size_t)depth);
	memset(buf + depth, close, (size_t)depth);
	buf[2 * depth] = '\0';
}

static void test_depth_limit(void **state)
{
	char buf[200];

	nest(buf, KD_JSON_MAX_DEPTH, '[', ']');
	assert_int_equal(validate(buf), 0);
	nest(buf, KD_JSON_MAX_DEPTH + 1, '[', ']');
	assert_int_equal(validate(buf), -EINVAL);

	/* objects count the same */
	char *p = buf;
	for (int i = 0; i < KD_JSON_MAX_DEPTH; i++)
		p += sprintf(p, "{\"a\":");
	p += sprintf(p, "1");
	for (int i = 0; i < KD_JSON_MAX_DEPTH; i++)
		*p++ = '}';
	*p = '\0';
	assert_int_equal(validate(buf), 0);
	memmove(buf + 5, buf, strlen(buf) + 1);
	memcpy(buf, "{\"a\":", 5);
	strcat(buf, "}");
	assert_int_equal(validate(buf), -EINVAL);
}

static void test_size_limit(void **state)
{
	struct kd_json js;

	assert_int_equal(kd_json_validate("{}", 2, 2), 0);
	assert_int_equal(kd_json_validate("{}", 2, 1), -EMSGSIZE);
	assert_int_equal(kd_json_init(&js, "{}", 2, 1), -EMSGSIZE);
	/* a failed init leaves a cursor that reads nothing */
	assert_int_equal(kd_json_peek(&js), KD_JSON_INVALID);
	assert_int_equal(kd_json_object_begin(&js), -EINVAL);
}

/* Every proper prefix of these documents is incomplete and must be refused. */
static void test_truncated_every_offset(void **state)
{
	static const char *const docs[] = {
		"{\"meshKey\":\"abababababababababababababababababababababababababababababababab\","
		"\"version\":2,\"CanAckPings\":true}",
		"{ \"a\" : [ 1.5e3 , -2 , { \"b\" : null , \"c\" : [ true , false ] } ] , "
		"\"s\" : \"x\\u00e9\\ud83d\\ude00\\n\" }",
		"[\"\\\"\",{},[],[[{}]]]",
		"\"abc\\u0041\"",
		"true", "false", "null",
	};
	for (size_t d = 0; d < sizeof(docs) / sizeof(docs[0]); d++) {
		size_t n = strlen(docs[d]);
		assert_int_equal(validate_n(docs[d], n), 0);
		for (size_t cut = 0; cut < n; cut++) {
			if (validate_n(docs[d], cut) != -EINVAL)
				fail_msg("accepted %zu-byte prefix of %s", cut, docs[d]);
		}
	}
}

static void test_cursor_walk(void **state)
{
	const char doc[] = " {\"a\": [1, {\"b\": null}], \"c\": \"x\", \"d\": true} ";
	struct kd_json js;
	struct kd_json_str k, s;
	int64_t v;
	bool b = false;

	assert_int_equal(kd_json_init(&js, doc, strlen(doc), 1024), 0);
	assert_int_equal(kd_json_peek(&js), KD_JSON_OBJECT);
	assert_int_equal(kd_json_object_begin(&js), 0);
	assert_int_equal(kd_json_object_next(&js, &k), 1);
	assert_true(kd_json_str_eq_ci(&k, "a"));
	assert_int_equal(kd_json_peek(&js), KD_JSON_ARRAY);
	/* wrong-type reads do not consume */
	assert_int_equal(kd_json_get_int(&js, &v), -ENOMSG);
	assert_int_equal(kd_json_array_begin(&js), 0);
	assert_int_equal(kd_json_array_next(&js), 1);
	assert_int_equal(kd_json_get_int(&js, &v), 0);
	assert_int_equal(v, 1);
	assert_int_equal(kd_json_array_next(&js), 1);
	assert_int_equal(kd_json_skip_value(&js), 0);
	assert_int_equal(kd_json_array_next(&js), 0);
	assert_int_equal(kd_json_object_next(&js, &k), 1);
	assert_true(kd_json_str_eq_ci(&k, "c"));
	assert_int_equal(kd_json_get_bool(&js, &b), -ENOMSG);
	assert_int_equal(kd_json_get_string(&js, &s), 0);
	assert_int_equal(s.raw_len, 1);
	assert_int_equal(s.raw[0], 'x');
	assert_int_equal(kd_json_object_next(&js, &k), 1);
	assert_true(kd_json_str_eq_ci(&k, "D"));
	assert_int_equal(kd_json_get_bool(&js, &b), 0);
	assert_true(b);
	assert_int_equal(kd_json_object_next(&js, &k), 0);
	assert_int_equal(kd_json_end(&js), 0);
}

static void test_out_of_order_calls_fail(void **state)
{
	struct kd_json js;
	struct kd_json_str k;
	int64_t v;

	/* two top-level values */
	kd_json_init(&js, "1 2", 3, 16);
	assert_int_equal(kd_json_get_int(&js, &v), 0);
	assert_int_equal(kd_json_get_int(&js, &v), -EINVAL);
	assert_int_equal(kd_json_end(&js), -EINVAL);

	/* a member's value left unread */
	kd_json_init(&js, "{\"a\":1,\"b\":2}", 13, 16);
	assert_int_equal(kd_json_object_begin(&js), 0);
	assert_int_equal(kd_json_object_next(&js, &k), 1);
	assert_int_equal(kd_json_object_next(&js, &k), -EINVAL);
	/* sticky */
	assert_int_equal(kd_json_skip_value(&js), -EINVAL);

	/* two elements without array_next: [1 2] must not slip through */
	kd_json_init(&js, "[1,2]", 5, 16);
	assert_int_equal(kd_json_array_begin(&js), 0);
	assert_int_equal(kd_json_array_next(&js), 1);
	assert_int_equal(kd_json_get_int(&js, &v), 0);
	assert_int_equal(kd_json_get_int(&js, &v), -EINVAL);

	/* array_next inside an object */
	kd_json_init(&js, "{}", 2, 16);
	assert_int_equal(kd_json_object_begin(&js), 0);
	assert_int_equal(kd_json_array_next(&js), -EINVAL);

	/* end before anything was read */
	kd_json_init(&js, "{}", 2, 16);
	assert_int_equal(kd_json_end(&js), -EINVAL);
	/* end inside an open container */
	kd_json_init(&js, "{}", 2, 16);
	assert_int_equal(kd_json_object_begin(&js), 0);
	assert_int_equal(kd_json_end(&js), -EINVAL);
}

static int get_int_doc(const char *doc, int64_t *v)
{
	struct kd_json js;
	char *p = dup_exact(doc, strlen(doc));
	int r;

	kd_json_init(&js, p, strlen(doc), 64);
	r = kd_json_get_int(&js, v);
	if (r == -ERANGE) {
		/* not consumed: still skippable, and the document stays valid */
		assert_int_equal(kd_json_skip_value(&js), 0);
		assert_int_equal(kd_json_end(&js), 0);
	} else if (r == 0) {
		r = kd_json_end(&js);
	}
	free(p);
	return r;
}

static void test_get_int(void **state)
{
	int64_t v = 7;

	assert_int_equal(get_int_doc("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(get_int_doc("-0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(get_int_doc("2", &v), 0);
	assert_int_equal(v, 2);
	assert_int_equal(get_int_doc("-17", &v), 0);
	assert_int_equal(v, -17);
	assert_int_equal(get_int_doc("9223372036854775807", &v), 0);
	assert_true(v == INT64_MAX);
	assert_int_equal(get_int_doc("-9223372036854775808", &v), 0);
	assert_true(v == INT64_MIN);
	v = 5;
	assert_int_equal(get_int_doc("9223372036854775808", &v), -ERANGE);
	assert_int_equal(get_int_doc("-9223372036854775809", &v), -ERANGE);
	assert_int_equal(get_int_doc("18446744073709551616", &v), -ERANGE);
	assert_int_equal(get_int_doc("99999999999999999999999999999999999999", &v), -ERANGE);
	assert_int_equal(get_int_doc("2.0", &v), -ERANGE);
	assert_int_equal(get_int_doc("2e0", &v), -ERANGE);
	assert_int_equal(get_int_doc("1E2", &v), -ERANGE);
	assert_int_equal(v, 5);
	assert_int_equal(get_int_doc("\"2\"", &v), -ENOMSG);
	assert_int_equal(get_int_doc("true", &v), -ENOMSG);
	assert_int_equal(get_int_doc("null", &v), -ENOMSG);
	assert_int_equal(get_int_doc("-", &v), -EINVAL);
	assert_int_equal(v, 5);
	/* the integer ends after "0"; what follows is garbage */
	assert_int_equal(get_int_doc("01", &v), -EINVAL);
	assert_int_equal(get_int_doc("1x", &v), -EINVAL);
}

static void test_get_bool_null_number(void **state)
{
	struct kd_json js;
	struct kd_json_str lit;
	bool b = true;

	kd_json_init(&js, "false", 5, 8);
	assert_int_equal(kd_json_get_null(&js), -ENOMSG);
	assert_int_equal(kd_json_get_bool(&js, &b), 0);
	assert_false(b);
	assert_int_equal(kd_json_end(&js), 0);

	kd_json_init(&js, "1", 1, 8);
	assert_int_equal(kd_json_get_bool(&js, &b), -ENOMSG);
	kd_json_init(&js, "null", 4, 8);
	assert_int_equal(kd_json_get_bool(&js, &b), -ENOMSG);
	assert_int_equal(kd_json_get_null(&js), 0);
	assert_int_equal(kd_json_end(&js), 0);

	kd_json_init(&js, "-1.5e+3 ", 8, 8);
	assert_int_equal(kd_json_get_number(&js, &lit), 0);
	assert_int_equal(lit.raw_len, 7);
	assert_memory_equal(lit.raw, "-1.5e+3", 7);
	assert_int_equal(kd_json_end(&js), 0);
}

static size_t unescape_doc(const char *doc, char *out, size_t cap)
{
	struct kd_json js;
	struct kd_json_str s;

	kd_json_init(&js, doc, strlen(doc), 1024);
	assert_int_equal(kd_json_get_string(&js, &s), 0);
	assert_int_equal(kd_json_end(&js), 0);
	return kd_json_unescape(&s, out, cap);
}

static void test_unescape(void **state)
{
	char out[64];

	assert_int_equal(unescape_doc("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", out, sizeof(out)), 8);
	assert_string_equal(out, "\"\\/\b\f\n\r\t");
	assert_int_equal(unescape_doc("\"caf\\u00e9 \\u20AC\"", out, sizeof(out)), 9);
	assert_string_equal(out, "caf\xc3\xa9 \xe2\x82\xac");
	assert_int_equal(unescape_doc("\"\\ud83d\\ude00\"", out, sizeof(out)), 4);
	assert_string_equal(out, "\xf0\x9f\x98\x80");
	assert_int_equal(unescape_doc("\"a\\u0000b\"", out, sizeof(out)), 3);
	assert_memory_equal(out, "a\0b", 4);

	/* truncation: full length returned, output cut at a character boundary */
	memset(out, 'X', sizeof(out));
	assert_int_equal(unescape_doc("\"ab\\u00e9cd\"", out, 4), 6);
	assert_string_equal(out, "ab");
	assert_int_equal(unescape_doc("\"ab\\u00e9cd\"", out, 5), 6);
	assert_string_equal(out, "ab\xc3\xa9");
	assert_int_equal(unescape_doc("\"abc\"", out, 3), 3);
	assert_string_equal(out, "ab");
	assert_int_equal(unescape_doc("\"abc\"", out, 4), 3);
	assert_string_equal(out, "abc");
	out[0] = 'X';
	assert_int_equal(unescape_doc("\"abc\"", out, 0), 3);
	assert_int_equal(out[0], 'X');
}

static bool key_eq(const char *doc, const char *name)
{
	struct kd_json js;
	struct kd_json_str s;

	kd_json_init(&js, doc, strlen(doc), 1024);
	assert_int_equal(kd_json_get_string(&js, &s), 0);
	return kd_json_str_eq_ci(&s, name);
}

static void test_eq_ci(void **state)
{
	assert_true(key_eq("\"meshKey\"", "meshKey"));
	assert_true(key_eq("\"MESHKEY\"", "meshKey"));
	assert_true(key_eq("\"meshkey\"", "MeshKey"));
	assert_true(key_eq("\"mesh\\u004bey\"", "meshKey"));
	assert_true(key_eq("\"\\u006d\\u0065shKey\"", "meshKey"));
	/* Go's folding: Kelvin sign, long s, dotted and dotless I */
	assert_true(key_eq("\"mesh\\u212aey\"", "meshKey"));
	assert_true(key_eq("\"me\xc5\xbfhKey\"", "meshKey"));
	assert_true(key_eq("\"\xc4\xb0sProber\"", "IsProber"));
	assert_true(key_eq("\"\\u0131sprober\"", "IsProber"));
	assert_false(key_eq("\"meshKe\"", "meshKey"));
	assert_false(key_eq("\"meshKeyy\"", "meshKey"));
	assert_false(key_eq("\"mesh_key\"", "meshKey"));
	assert_false(key_eq("\"\"", "meshKey"));
	assert_true(key_eq("\"\"", ""));
	/* folding must not turn non-letters into letters */
	assert_false(key_eq("\"@\"", "`"));
	assert_false(key_eq("\"[\"", "{"));
	assert_false(key_eq("\"\xe2\x84\xab\"", "A")); /* Angstrom folds to a-ring, not A */
	assert_false(key_eq("\"vers\xff" "on\"", "version"));
}

static void test_escape(void **state)
{
	char out[128];
	const char in[] = "a\"b\\c\n\t\r\b\f\x01\x1f<>&\xe2\x80\xa8\xe2\x80\xa9\xff\xc3\xa9\x7f/";
	const char want[] = "\"a\\\"b\\\\c\\n\\t\\r\\b\\f\\u0001\\u001f\\u003c\\u003e\\u0026"
			    "\\u2028\\u2029\\ufffd\xc3\xa9\x7f/\"";
	int n = kd_json_escape(out, sizeof(out), in, sizeof(in) - 1);

	assert_int_equal(n, (int)strlen(want));
	assert_string_equal(out, want);
	/* the escaper's output is valid JSON and reads back */
	assert_int_equal(kd_json_validate(out, (size_t)n, 1024), 0);

	assert_int_equal(kd_json_escape(out, sizeof(out), "", 0), 2);
	assert_string_equal(out, "\"\"");
	/* exact fit needs room for the NUL */
	assert_int_equal(kd_json_escape(out, 6, "abc", 3), 5);
	assert_int_equal(kd_json_escape(out, 5, "abc", 3), -ENOSPC);
	assert_int_equal(kd_json_escape(out, 0, "abc", 3), -ENOSPC);
	assert_int_equal(kd_json_escape(out, 8, "\x01", 1), -ENOSPC);
	assert_int_equal(kd_json_escape(out, 9, "\x01", 1), 8);
}

static void test_escape_round_trip(void **state)
{
	/* every byte value, valid UTF-8 throughout, must come back unchanged */
	char in[300], esc[2048], back[600];
	size_t n = 0;
	struct kd_json js;
	struct kd_json_str s;

	for (int c = 1; c < 0x80; c++)
		in[n++] = (char)c;
	memcpy(in + n, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xe2\x80\xa8", 12);
	n += 12;
	int len = kd_json_escape(esc, sizeof(esc), in, n);
	assert_true(len > 0);
	kd_json_init(&js, esc, (size_t)len, sizeof(esc));
	assert_int_equal(kd_json_get_string(&js, &s), 0);
	assert_int_equal(kd_json_end(&js), 0);
	assert_int_equal(kd_json_unescape(&s, back, sizeof(back)), n);
	assert_memory_equal(back, in, n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_documents),
		cmocka_unit_test(test_invalid_documents),
		cmocka_unit_test(test_invalid_utf8_passes),
		cmocka_unit_test(test_depth_limit),
		cmocka_unit_test(test_size_limit),
		cmocka_unit_test(test_truncated_every_offset),
		cmocka_unit_test(test_cursor_walk),
		cmocka_unit_test(test_out_of_order_calls_fail),
		cmocka_unit_test(test_get_int),
		cmocka_unit_test(test_get_bool_null_number),
		cmocka_unit_test(test_unescape),
		cmocka_unit_test(test_eq_ci),
		cmocka_unit_test(test_escape),
		cmocka_unit_test(test_escape_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
