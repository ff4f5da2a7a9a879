// SPDX-License-Identifier: MIT
/* -mesh-with as derper reads it (spec §8.2) and kderp's http:// entries. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mesh.h"

static struct kd_mesh_target t[KD_MESH_MAX_PEERS + 1];

static void test_derper_forms(void **state)
{
	size_t n;
	(void)state;

	assert_int_equal(kd_mesh_parse_list("derp1.example.com,derp2.example.com:8443/10.0.0.2,[2001:db8::1]:444", t,
					    8, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(t[0].url, "https://derp1.example.com/derp");
	assert_string_equal(t[0].host, "derp1.example.com");
	assert_int_equal(t[0].port, 443);
	assert_string_equal(t[0].dial, "");
	assert_false(t[0].plain_http);
	/* host/dialhost: the URL host names TLS, the dialhost is dialled at its port */
	assert_string_equal(t[1].url, "https://derp2.example.com:8443/derp");
	assert_string_equal(t[1].dial, "10.0.0.2");
	assert_int_equal(t[1].port, 8443);
	assert_string_equal(t[2].url, "https://[2001:db8::1]:444/derp");
	assert_int_equal(t[2].port, 444);
	/* derper dials a dialhost named "derp" */
	assert_int_equal(kd_mesh_parse_list("a.example/derp", t, 8, &n), 0);
	assert_string_equal(t[0].dial, "derp");
}

static void test_kderp_http_forms(void **state)
{
	size_t n;
	(void)state;

	assert_int_equal(kd_mesh_parse_list("http://192.0.2.1:3340,,http://192.0.2.2:3340/derp,http://h,https://x.example/[2001:db8::2]",
					    t, 8, &n), 0);
	assert_int_equal(n, 4); /* the empty entry is skipped */
	assert_true(t[0].plain_http);
	assert_string_equal(t[0].url, "http://192.0.2.1:3340/derp");
	assert_int_equal(t[0].port, 3340);
	/* a pasted URL path is not a dialhost */
	assert_string_equal(t[1].url, "http://192.0.2.2:3340/derp");
	assert_string_equal(t[1].dial, "");
	assert_int_equal(t[2].port, 80);
	assert_false(t[3].plain_http);
	assert_string_equal(t[3].dial, "2001:db8::2");
	assert_int_equal(kd_mesh_parse_list("", t, 8, &n), 0);
	assert_int_equal(n, 0);
}

static void test_bad_entries_named(void **state)
{
	static const char *const bad[] = {
		"ok,bad host",      "ok,a/b/c",        "ok,ftp://x",     "ok,h:0",      "ok,h:65536",
		"ok,h:",            "ok,2001:db8::1",  "ok,[2001:db8::1", "ok,[]:1",    "ok,h/",
		"ok,h/d:1",         "ok,user@h",       "ok,h?x",          "ok,http://", "ok,[::1]x",
		"ok,h\"x",          "ok,:443",
	};
	size_t n;
	(void)state;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		n = 99;
		assert_int_equal(kd_mesh_parse_list(bad[i], t, 8, &n), -EINVAL);
		assert_int_equal(n, 1); /* the index of the entry at fault */
	}
}

static void test_too_many(void **state)
{
	char list[KD_MESH_MAX_PEERS * 4 + 8] = "";
	size_t n;
	(void)state;

	for (int i = 0; i <= KD_MESH_MAX_PEERS; i++)
		strcat(list, i ? ",h" : "h");
	assert_int_equal(kd_mesh_parse_list(list, t, KD_MESH_MAX_PEERS, &n), -E2BIG);
	assert_int_equal(kd_mesh_parse_list(list, t, KD_MESH_MAX_PEERS + 1, &n), 0);
	assert_int_equal(n, KD_MESH_MAX_PEERS + 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_derper_forms),
		cmocka_unit_test(test_kderp_http_forms),
		cmocka_unit_test(test_bad_entries_named),
		cmocka_unit_test(test_too_many),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
