// SPDX-License-Identifier: MIT
/* The DERP map reader: Tailscale's field names, region fields applied to
 * nodes whatever their order, nulls, unknown fields, malformed input. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "derpmap.h"

static struct kd_derpmap m;

static int parse(const char *s, size_t *off)
{
	return kd_derpmap_parse(&m, s, strlen(s), off);
}

static void test_basic(void **state)
{
	static const char j[] =
		"{\"Regions\":{\"900\":{\"RegionID\":900,\"RegionCode\":\"x\",\"Nodes\":[{\"Name\":\"900a\","
		"\"RegionID\":900,\"HostName\":\"derp.example\",\"IPv4\":\"127.0.0.1\",\"DERPPort\":3340,"
		"\"InsecureForTests\":true}]}}}";

	assert_int_equal(parse(j, NULL), 0);
	assert_int_equal(m.nnodes, 1);
	assert_int_equal(m.nodes[0].region_id, 900);
	assert_string_equal(m.nodes[0].region_code, "x");
	assert_string_equal(m.nodes[0].name, "900a");
	assert_string_equal(m.nodes[0].host_name, "derp.example");
	assert_string_equal(m.nodes[0].ipv4, "127.0.0.1");
	assert_string_equal(m.nodes[0].ipv6, "");
	assert_int_equal(m.nodes[0].derp_port, 3340);
	assert_true(m.nodes[0].insecure_for_tests);
	assert_false(m.nodes[0].stun_only);
}

static void test_order_case_nulls_unknown(void **state)
{
	/* Nodes before RegionID/RegionCode, lowercase names, nulls, nested unknowns */
	static const char j[] =
		" {\"OmitDefaultRegions\":true,\"regions\":{\"7\":{\"Nodes\":[{\"hostname\":\"a\\\"b\","
		"\"IPv6\":null,\"STUNOnly\":true,\"x\":{\"y\":[1,2,{\"z\":null}]}},{\"Name\":\"7b\"}],"
		"\"regioncode\":\"sea\",\"RegionID\":7,\"Avoid\":false},\"8\":{\"Nodes\":null}}}\n";

	assert_int_equal(parse(j, NULL), 0);
	assert_int_equal(m.nnodes, 2);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(m.nodes[i].region_id, 7);
		assert_string_equal(m.nodes[i].region_code, "sea");
	}
	assert_string_equal(m.nodes[0].host_name, "a\"b");
	assert_true(m.nodes[0].stun_only);
	assert_string_equal(m.nodes[1].name, "7b");
}

static void test_region_id_from_key(void **state)
{
	assert_int_equal(parse("{\"Regions\":{\"901\":{\"Nodes\":[{\"Name\":\"n\"}]}}}", NULL), 0);
	assert_int_equal(m.nodes[0].region_id, 901);
}

static void test_truncation(void **state)
{
	char j[512];
	char longname[300];

	memset(longname, 'h', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	snprintf(j, sizeof(j), "{\"Regions\":{\"1\":{\"Nodes\":[{\"HostName\":\"%s\"}]}}}", longname);
	assert_int_equal(parse(j, NULL), 0);
	assert_int_equal(strlen(m.nodes[0].host_name), KD_DERPMAP_STR - 1);
}

static void test_malformed(void **state)
{
	static const char *bad[] = {
		"",
		"[]",
		"{\"Regions\":{\"1\":[}",
		"{\"Regions\":{\"1\":{\"Nodes\":[{\"DERPPort\":\"443\"}]}}}", /* wrong type */
		"{\"Regions\":{\"1\":{\"Nodes\":[{\"InsecureForTests\":1}]}}}",
		"{\"Regions\":{}} x",
		"{\"Regions\":{\"1\":{\"Nodes\":[{\"Name\":\"a\x01\"}]}}}", /* raw control char */
		"{\"a\":\"\\q\"}",
		"{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
	};
	size_t off;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(parse(bad[i], &off), -EINVAL);
	parse("{\"Regions\":{\"1\":[}", &off);
	assert_int_equal(off, 16);
}

static void test_too_many_nodes(void **state)
{
	static char j[64 * 1024];
	size_t n = 0;

	n += (size_t)snprintf(j + n, sizeof(j) - n, "{\"Regions\":{\"1\":{\"Nodes\":[");
	for (int i = 0; i <= KD_DERPMAP_MAX_NODES; i++)
		n += (size_t)snprintf(j + n, sizeof(j) - n, "%s{\"Name\":\"n%d\"}", i ? "," : "", i);
	snprintf(j + n, sizeof(j) - n, "]}}}");
	assert_int_equal(parse(j, NULL), -E2BIG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basic),
		cmocka_unit_test(test_order_case_nulls_unknown),
		cmocka_unit_test(test_region_id_from_key),
		cmocka_unit_test(test_truncation),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_too_many_nodes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
