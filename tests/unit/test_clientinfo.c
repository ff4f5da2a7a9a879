// SPDX-License-Identifier: MIT
/* ClientInfo (spec §5.3): what the reference accepts and rejects, and the
 * exact bytes Tailscale clients write (shared/vectors). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "clientinfo.h"
#include "json.h"

#define HEX_AB "abababababababababababababababababababababababababababababababab"
#define HEX_ZERO "0000000000000000000000000000000000000000000000000000000000000000"

/* Plaintexts from shared/vectors (transcript-v1.36.2-*.json, hello-*.txt). */
static const char *const vec_canack = "{\"version\":2,\"CanAckPings\":true}";
static const char *const vec_nocanack = "{\"version\":2,\"CanAckPings\":false}";
static const char *const vec_appname =
	"{\"version\":2,\"CanAckPings\":true,\"AppName\":\"example-app\"}";
static const char *const vec_meshkey =
	"{\"meshKey\":\"" HEX_AB "\",\"version\":2,\"CanAckPings\":true}";

/* Parses from an exact-size heap copy so ASan sees any over-read. On
 * failure also checks that out was wiped. */
static int parse(const char *s, struct kd_client_info *ci)
{
	size_t n = strlen(s);
	uint8_t *p = malloc(n ? n : 1);
	int r;

	assert_non_null(p);
	memcpy(p, s, n);
	memset(ci, 0xa5, sizeof(*ci));
	r = kd_client_info_parse(p, n, ci);
	free(p);
	if (r != 0) {
		static const struct kd_client_info zero;
		assert_int_equal(r, -EINVAL);
		assert_memory_equal(ci, &zero, sizeof(zero));
	}
	return r;
}

static void accept(const char *s, struct kd_client_info *ci)
{
	if (parse(s, ci) != 0)
		fail_msg("rejected: %s", s);
}

static void reject(const char *s)
{
	struct kd_client_info ci;

	if (parse(s, &ci) != -EINVAL)
		fail_msg("accepted: %s", s);
}

static void test_vectors_parse(void **state)
{
	struct kd_client_info ci;
	uint8_t ab[32];

	memset(ab, 0xab, sizeof(ab));
	accept(vec_canack, &ci);
	assert_false(ci.has_mesh_key);
	assert_int_equal(ci.version, 2);
	assert_true(ci.can_ack_pings);
	assert_false(ci.is_prober);
	assert_string_equal(ci.app_name, "");

	accept(vec_nocanack, &ci);
	assert_false(ci.can_ack_pings);

	accept(vec_appname, &ci);
	assert_string_equal(ci.app_name, "example-app");
	assert_true(ci.can_ack_pings);

	accept(vec_meshkey, &ci);
	assert_true(ci.has_mesh_key);
	assert_memory_equal(ci.mesh_key, ab, 32);
	assert_int_equal(ci.version, 2);
}

static void format_eq(const struct kd_client_info *ci, const char *want)
{
	char out[512];
	size_t n = strlen(want);

	assert_int_equal(kd_client_info_format(out, sizeof(out), ci), (int)n);
	assert_string_equal(out, want);
	/* exactly enough room (with the NUL) works, one byte less does not */
	assert_int_equal(kd_client_info_format(out, n + 1, ci), (int)n);
	assert_string_equal(out, want);
	for (size_t cap = 0; cap <= n; cap++)
		assert_int_equal(kd_client_info_format(out, cap, ci), -ENOSPC);
}

static void test_vectors_format(void **state)
{
	const char *const vecs[] = {vec_canack, vec_nocanack, vec_appname, vec_meshkey};
	struct kd_client_info ci;

	for (size_t i = 0; i < 4; i++) {
		accept(vecs[i], &ci);
		format_eq(&ci, vecs[i]);
	}
}

static void test_format_fields(void **state)
{
	struct kd_client_info ci;

	memset(&ci, 0, sizeof(ci));
	format_eq(&ci, "{\"CanAckPings\":false}");
	ci.is_prober = true;
	ci.version = -3;
	format_eq(&ci, "{\"version\":-3,\"CanAckPings\":false,\"IsProber\":true}");
	snprintf(ci.app_name, sizeof(ci.app_name), "a\"<b>&\n");
	format_eq(&ci, "{\"version\":-3,\"CanAckPings\":false,\"IsProber\":true,"
		       "\"AppName\":\"a\\\"\\u003cb\\u003e\\u0026\\n\"}");
	/* a zero mesh key is no mesh key, whatever the flag says */
	memset(&ci, 0, sizeof(ci));
	ci.has_mesh_key = true;
	format_eq(&ci, "{\"CanAckPings\":false}");

	/* format then parse gives the same struct back */
	struct kd_client_info back;
	char out[512];
	memset(&ci, 0, sizeof(ci));
	ci.has_mesh_key = true;
	for (int i = 0; i < 32; i++)
		ci.mesh_key[i] = (uint8_t)(i * 7 + 1);
	ci.version = INT64_MIN;
	ci.can_ack_pings = true;
	ci.is_prober = true;
	snprintf(ci.app_name, sizeof(ci.app_name), "caf\xc3\xa9 \\ \"q\" \x01");
	assert_true(kd_client_info_format(out, sizeof(out), &ci) > 0);
	accept(out, &back);
	assert_memory_equal(&back, &ci, sizeof(ci));
}

static void test_field_names_case_insensitive(void **state)
{
	struct kd_client_info ci;

	accept("{\"MESHKEY\":\"" HEX_AB "\",\"VERSION\":3,\"canackpings\":true,"
	       "\"isprober\":true,\"appNAME\":\"x\"}", &ci);
	assert_true(ci.has_mesh_key);
	assert_int_equal(ci.version, 3);
	assert_true(ci.can_ack_pings);
	assert_true(ci.is_prober);
	assert_string_equal(ci.app_name, "x");

	/* escaped names and Go's non-ASCII folds (Kelvin sign, long s) */
	accept("{\"\\u0076ersion\":4,\"CAN\\u0041CKPINGS\":true}", &ci);
	assert_int_equal(ci.version, 4);
	assert_true(ci.can_ack_pings);
	accept("{\"mesh\\u212aey\":\"" HEX_AB "\",\"IsProber\":true}", &ci);
	assert_true(ci.has_mesh_key);
	assert_true(ci.is_prober);
	accept("{\"\\u0131\\u017fprober\":true}", &ci);
	assert_true(ci.is_prober);
	/* so the fold matters: a bad value under a folded name is rejected */
	reject("{\"mesh\\u212aey\":\"xyz\"}");
	/* near misses are unknown fields */
	accept("{\"mesh_key\":5,\"versions\":\"x\",\"CanAckPing\":1,\"Prober\":2}", &ci);
	assert_false(ci.has_mesh_key);
	assert_int_equal(ci.version, 0);
	assert_false(ci.can_ack_pings);
	assert_false(ci.is_prober);
}

static void test_duplicates_last_wins(void **state)
{
	struct kd_client_info ci;

	accept("{\"version\":1,\"Version\":3,\"CanAckPings\":true,\"canAckPings\":false,"
	       "\"AppName\":\"a\",\"appname\":\"b\"}", &ci);
	assert_int_equal(ci.version, 3);
	assert_false(ci.can_ack_pings);
	assert_string_equal(ci.app_name, "b");

	/* a later all-zero key clears the earlier one */
	accept("{\"meshKey\":\"" HEX_AB "\",\"meshKey\":\"" HEX_ZERO "\"}", &ci);
	assert_false(ci.has_mesh_key);
	static const uint8_t zero[32];
	assert_memory_equal(ci.mesh_key, zero, 32);
	accept("{\"meshKey\":\"" HEX_ZERO "\",\"meshKey\":\"" HEX_AB "\"}", &ci);
	assert_true(ci.has_mesh_key);

	/* a shorter later AppName does not keep the tail of the earlier one */
	accept("{\"AppName\":\"longer-name\",\"AppName\":\"ab\"}", &ci);
	assert_string_equal(ci.app_name, "ab");
}

static void test_nulls(void **state)
{
	struct kd_client_info ci;

	accept("null", &ci);
	assert_false(ci.has_mesh_key);
	assert_int_equal(ci.version, 0);
	assert_false(ci.can_ack_pings);
	accept(" \n null \t", &ci);
	accept("{\"version\":null,\"CanAckPings\":null,\"IsProber\":null,\"AppName\":null}", &ci);
	assert_int_equal(ci.version, 0);
	assert_false(ci.can_ack_pings);
	assert_false(ci.is_prober);
	assert_string_equal(ci.app_name, "");
	/* Go's null is "leave as is": an earlier duplicate survives it */
	accept("{\"version\":2,\"version\":null,\"CanAckPings\":true,\"CanAckPings\":null,"
	       "\"AppName\":\"x\",\"AppName\":null}", &ci);
	assert_int_equal(ci.version, 2);
	assert_true(ci.can_ack_pings);
	assert_string_equal(ci.app_name, "x");
	/* but meshKey may not be null */
	reject("{\"meshKey\":null}");
	reject("{\"version\":2,\"meshKey\":null}");
}

static void test_mesh_key_rules(void **state)
{
	struct kd_client_info ci;
	uint8_t want[32];

	accept("{\"meshKey\":\"ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB\"}",
	       &ci);
	memset(want, 0xab, 32);
	assert_true(ci.has_mesh_key);
	assert_memory_equal(ci.mesh_key, want, 32);
	accept("{\"meshKey\":\"0123456789abcdefABCDEF0123456789abcdefABCDEF0123456789abcdef0000\"}",
	       &ci);
	assert_int_equal(ci.mesh_key[0], 0x01);
	assert_int_equal(ci.mesh_key[7], 0xef);
	assert_int_equal(ci.mesh_key[31], 0x00);
	/* escaped hex digits are still hex digits once unescaped */
	accept("{\"meshKey\":\"\\u0061bababababababababababababababababababababababababababababababab\"}", &ci);
	assert_true(ci.has_mesh_key);
	accept("{\"meshKey\":\"" HEX_ZERO "\"}", &ci);
	assert_false(ci.has_mesh_key);

	reject("{\"meshKey\":\"\"}");
	reject("{\"meshKey\":\"ababababababababababababababababababababababababababababababab\"}"); /* 62 */
	reject("{\"meshKey\":\"abababababababababababababababababababababababababababababababa\"}"); /* 63 */
	reject("{\"meshKey\":\"ababababababababababababababababababababababababababababababababa\"}"); /* 65 */
	reject("{\"meshKey\":\"" HEX_AB "ab\"}");
	reject("{\"meshKey\":\"gbababababababababababababababababababababababababababababababab\"}");
	reject("{\"meshKey\":\" " HEX_AB "\"}");
	reject("{\"meshKey\":\"" HEX_AB " \"}");
	reject("{\"meshKey\":\"0x" "ababababababababababababababababababababababababababababababab\"}");
	reject("{\"meshKey\":12}");
	reject("{\"meshKey\":true}");
	reject("{\"meshKey\":[\"" HEX_AB "\"]}");
	reject("{\"meshKey\":{}}");
	/* a bad key rejects the whole ClientInfo even with a good one after */
	reject("{\"meshKey\":\"zz\",\"meshKey\":\"" HEX_AB "\"}");
}

static void test_type_mismatches(void **state)
{
	struct kd_client_info ci;

	reject("{\"version\":\"2\"}");
	reject("{\"version\":true}");
	reject("{\"version\":[2]}");
	reject("{\"version\":2.0}");
	reject("{\"version\":2.5}");
	reject("{\"version\":1e2}");
	reject("{\"version\":2E0}");
	reject("{\"version\":9223372036854775808}");
	reject("{\"version\":-9223372036854775809}");
	reject("{\"version\":100000000000000000000000000000}");
	reject("{\"CanAckPings\":1}");
	reject("{\"CanAckPings\":\"true\"}");
	reject("{\"CanAckPings\":{}}");
	reject("{\"IsProber\":0}");
	reject("{\"IsProber\":\"true\"}");
	reject("{\"AppName\":5}");
	reject("{\"AppName\":true}");
	reject("{\"AppName\":[\"x\"]}");
	reject("{\"AppName\":{}}");

	accept("{\"version\":9223372036854775807}", &ci);
	assert_true(ci.version == INT64_MAX);
	accept("{\"version\":-9223372036854775808}", &ci);
	assert_true(ci.version == INT64_MIN);
	accept("{\"version\":-0}", &ci);
	assert_int_equal(ci.version, 0);
	accept("{\"version\":-1}", &ci);
	assert_int_equal(ci.version, -1);
}

static void test_not_json_or_not_object(void **state)
{
	static const char *const bad[] = {
		"", " ", "{", "}", "[]", "[{}]", "\"x\"", "2", "true", "false", "nul",
		"{} x", "{}{}", "{},", "null null", "{\"version\":2", "{\"version\":02}",
		"{\"version\":2,}", "{\"version\" 2}", "{version:2}", "{\"a\":\x01}",
		"{\"a\":\"\x01\"}", "{\"a\":\"\\q\"}", "{\"a\":\"\\ud800\"}",
		"\xef\xbb\xbf{\"version\":2}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		reject(bad[i]);
	struct kd_client_info ci;
	/* an embedded NUL after the object is trailing garbage */
	assert_int_equal(kd_client_info_parse((const uint8_t *)"{}\0", 3, &ci), -EINVAL);
	accept("{}", &ci);
	accept(" { } ", &ci);
}

static void test_unknown_fields_skipped(void **state)
{
	struct kd_client_info ci;

	accept("{\"x\":{\"version\":\"nope\",\"a\":[1,2,{\"b\":[null,true,false,-1.5e-7]}]},"
	       "\"version\":2,\"y\":[],\"z\":\"\\u00e9\\ud83d\\ude00\",\"w\":null,\"v\":1e400,"
	       "\"CanAckPings\":true}", &ci);
	assert_int_equal(ci.version, 2);
	assert_true(ci.can_ack_pings);
	/* unknown fields must still be valid JSON */
	reject("{\"x\":[1,],\"version\":2}");
	reject("{\"x\":{\"a\"},\"version\":2}");
	reject("{\"x\":01}");
	reject("{\"x\":\"\\ud800\"}");
}

static void test_nesting_limit(void **state)
{
	/* top-level object is level 1; an unknown field may nest 31 more */
	char buf[256];
	struct kd_client_info ci;

	for (int extra = 30; extra <= 32; extra++) {
		char *p = buf;
		p += sprintf(p, "{\"version\":2,\"x\":");
		memset(p, '[', (size_t)extra);
		memset(p + extra, ']', (size_t)extra);
		p += 2 * extra;
		strcpy(p, "}");
		int r = parse(buf, &ci);
		assert_int_equal(r, extra <= KD_JSON_MAX_DEPTH - 1 ? 0 : -EINVAL);
	}
}

static void test_app_name_truncation(void **state)
{
	struct kd_client_info ci;
	char doc[600], name[400];

	memset(name, 'n', 300);
	name[300] = '\0';
	snprintf(doc, sizeof(doc), "{\"AppName\":\"%s\"}", name);
	accept(doc, &ci);
	assert_int_equal(strlen(ci.app_name), KD_APP_NAME_MAX - 1);
	assert_memory_equal(ci.app_name, name, KD_APP_NAME_MAX - 1);

	/* 126 ASCII bytes then a 2-byte character: it does not fit and is
	 * dropped whole, never split */
	memset(name, 'n', 126);
	strcpy(name + 126, "\xc3\xa9zz");
	snprintf(doc, sizeof(doc), "{\"AppName\":\"%s\"}", name);
	accept(doc, &ci);
	assert_int_equal(strlen(ci.app_name), 126);

	/* invalid UTF-8 is accepted (as Go does) and stored repaired */
	accept("{\"AppName\":\"a\xff" "b\"}", &ci);
	assert_string_equal(ci.app_name, "a\xef\xbf\xbd" "b");
}

/* Every proper prefix of a valid ClientInfo is refused, and never crashes. */
static void test_truncated_every_offset(void **state)
{
	const char *const docs[] = {
		vec_canack, vec_appname, vec_meshkey,
		"{ \"x\" : [ { \"y\" : \"\\u00e9\" } , 1.5 ] , \"IsProber\" : true }",
	};
	for (size_t d = 0; d < sizeof(docs) / sizeof(docs[0]); d++) {
		size_t n = strlen(docs[d]);
		char prefix[256];
		for (size_t cut = 0; cut < n; cut++) {
			memcpy(prefix, docs[d], cut);
			prefix[cut] = '\0';
			reject(prefix);
		}
	}
}

static void test_large_unknown_field(void **state)
{
	/* near the 256 KiB ClientInfo frame cap: linear, no recursion blowup */
	size_t n = 250000;
	char *doc = malloc(n + 64);
	struct kd_client_info ci;

	assert_non_null(doc);
	size_t o = (size_t)sprintf(doc, "{\"pad\":\"");
	memset(doc + o, 'p', n);
	o += n;
	o += (size_t)sprintf(doc + o, "\",\"version\":2}");
	assert_int_equal(kd_client_info_parse((const uint8_t *)doc, o, &ci), 0);
	assert_int_equal(ci.version, 2);
	free(doc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vectors_parse),
		cmocka_unit_test(test_vectors_format),
		cmocka_unit_test(test_format_fields),
		cmocka_unit_test(test_field_names_case_insensitive),
		cmocka_unit_test(test_duplicates_last_wins),
		cmocka_unit_test(test_nulls),
		cmocka_unit_test(test_mesh_key_rules),
		cmocka_unit_test(test_type_mismatches),
		cmocka_unit_test(test_not_json_or_not_object),
		cmocka_unit_test(test_unknown_fields_skipped),
		cmocka_unit_test(test_nesting_limit),
		cmocka_unit_test(test_app_name_truncation),
		cmocka_unit_test(test_truncated_every_offset),
		cmocka_unit_test(test_large_unknown_field),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
