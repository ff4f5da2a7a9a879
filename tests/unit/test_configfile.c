// SPDX-License-Identifier: MIT
/* -config-file: the byte parser's verdicts and line numbers, and the loader
 * applying a real file to a flag table (unknown names, duplicates, bad
 * values and the file:line they are reported with). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "configfile.h"
#include "log.h"

static void expect_setting(struct kd_cfg_parser *p, const char *name, const char *value, unsigned line)
{
	struct kd_cfg_line l;

	assert_int_equal(kd_cfg_next(p, &l), KD_CFG_SETTING);
	assert_int_equal(l.name_len, strlen(name));
	assert_memory_equal(l.name, name, l.name_len);
	assert_int_equal(l.value_len, strlen(value));
	assert_memory_equal(l.value, value, l.value_len);
	assert_int_equal(l.line, line);
}

static void test_settings_comments_blanks(void **state)
{
	static const char f[] = "# kderpd\n"
				"\n"
				"   \t\n"
				"verify-client-url = http://127.0.0.1:9/check?a=b#frag\n"
				"  stun=false  \r\n"
				"\t# indented comment\n"
				"home =\n"
				"workers\t=\t2";
	struct kd_cfg_parser p;
	struct kd_cfg_line l;
	(void)state;

	kd_cfg_parser_init(&p, f, sizeof(f) - 1);
	/* '=' and '#' inside a value are the value's */
	expect_setting(&p, "verify-client-url", "http://127.0.0.1:9/check?a=b#frag", 4);
	expect_setting(&p, "stun", "false", 5);
	expect_setting(&p, "home", "", 7);
	expect_setting(&p, "workers", "2", 8); /* no trailing newline */
	assert_int_equal(kd_cfg_next(&p, &l), KD_CFG_END);
	assert_int_equal(kd_cfg_next(&p, &l), KD_CFG_END);
}

static void expect_error(const char *text, size_t len, int verdict, unsigned line)
{
	struct kd_cfg_parser p;
	struct kd_cfg_line l;
	int v;

	kd_cfg_parser_init(&p, text, len);
	while ((v = kd_cfg_next(&p, &l)) == KD_CFG_SETTING)
		;
	assert_int_equal(v, verdict);
	assert_int_equal(p.line, line);
	assert_string_not_equal(kd_cfg_verdict_name(v), "?");
}

static void test_errors_name_their_line(void **state)
{
	(void)state;
	expect_error("a = 1\nb 2\n", 10, KD_CFG_ERR_NO_EQUALS, 2);
	expect_error("a = 1\n\n = 2\n", 12, KD_CFG_ERR_BAD_NAME, 3);
	expect_error("two words = 2\n", 14, KD_CFG_ERR_BAD_NAME, 1);
	expect_error("a = b\0c\n", 8, KD_CFG_ERR_NUL, 1);
	expect_error("# ok\na = \x01\n", 13, KD_CFG_ERR_CTRL, 2);
}

/* --- the loader on real files ------------------------------------------ */

struct o {
	bool stun;
	const char *url;
	int workers;
	unsigned timeout_ms;
};

static char path[64];

static void write_file(const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static int load(const char *text, struct o *o, char **keep)
{
	struct kd_flag flags[] = {
		{"stun", KD_FLAG_BOOL, &o->stun, "", false},
		{"verify-client-url", KD_FLAG_STRING, &o->url, "", false},
		{"workers", KD_FLAG_INT, &o->workers, "", false},
		{"verify-client-url-timeout", KD_FLAG_DURATION_MS, &o->timeout_ms, "", false},
		{"config-file", KD_FLAG_STRING, NULL, "", false},
	};
	*o = (struct o){.stun = true, .url = "", .workers = 0, .timeout_ms = 5000};
	write_file(text);
	int err = kd_configfile_apply(path, flags, sizeof(flags) / sizeof(flags[0]), keep);
	if (!err) {
		assert_true(flags[0].set == !!strstr(text, "stun"));
		assert_false(flags[4].set);
	}
	return err;
}

static void test_loader_applies_values(void **state)
{
	struct o o;
	char *keep;
	(void)state;

	assert_int_equal(load("stun = false\nverify-client-url = http://h:1/p\nworkers=3\n"
			      "verify-client-url-timeout = 1m30s\n", &o, &keep), 0);
	assert_false(o.stun);
	assert_string_equal(o.url, "http://h:1/p");
	assert_int_equal(o.workers, 3);
	assert_int_equal(o.timeout_ms, 90000);
	free(keep);
}

static void test_loader_refuses(void **state)
{
	struct o o;
	char *keep = (char *)1;
	(void)state;

	assert_int_equal(load("workers = 2\nnope = 1\n", &o, &keep), -EINVAL);
	assert_null(keep);
	assert_int_equal(load("workers = 2\nworkers = 3\n", &o, &keep), -EINVAL);
	assert_int_equal(load("workers = two\n", &o, &keep), -EINVAL);
	assert_int_equal(load("stun = maybe\n", &o, &keep), -EINVAL);
	assert_int_equal(load("verify-client-url-timeout = 5 parsecs\n", &o, &keep), -EINVAL);
	assert_int_equal(load("config-file = /etc/other\n", &o, &keep), -EINVAL);
	assert_int_equal(load("stun\n", &o, &keep), -EINVAL);
	unlink(path);
	struct kd_flag none[] = {{"stun", KD_FLAG_BOOL, &o.stun, "", false}};
	assert_int_equal(kd_configfile_apply(path, none, 1, &keep), -ENOENT);
}

static void test_loader_refuses_big_file(void **state)
{
	struct kd_flag f[] = {{"stun", KD_FLAG_BOOL, &(bool){true}, "", false}};
	char *big = malloc(KD_CONFIGFILE_MAX + 2), *keep;
	(void)state;

	memset(big, '#', KD_CONFIGFILE_MAX + 1);
	big[KD_CONFIGFILE_MAX + 1] = '\0';
	write_file(big);
	free(big);
	assert_int_equal(kd_configfile_apply(path, f, 1, &keep), -EFBIG);
}

static int setup(void **state)
{
	(void)state;
	kd_log_set_level(KD_LOG_ERROR);
	snprintf(path, sizeof(path), "/tmp/kd-configfile-%d.conf", (int)getpid());
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(path);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_settings_comments_blanks),
		cmocka_unit_test(test_errors_name_their_line),
		cmocka_unit_test(test_loader_applies_values),
		cmocka_unit_test(test_loader_refuses),
		cmocka_unit_test(test_loader_refuses_big_file),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
