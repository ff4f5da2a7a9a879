// SPDX-License-Identifier: MIT
/* Server key file, mesh key file and admission webhook bodies (spec §2.4,
 * §2.5, §7.10b), plus the key text helpers in key.c they are built on.
 * File tests run in a fresh directory under $TMPDIR. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "keyfile.h"

/* Appendix A keys */
#define A_PRIV_HEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e5f"
#define A_PUB_HEX "8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f"
#define A_FILE "{\n\t\"PrivateKey\": \"privkey:" A_PRIV_HEX "\"\n}"
#define HEX_AB "abababababababababababababababababababababababababababababababab"

static void from_hex(uint8_t out[32], const char *hex)
{
	assert_int_equal(kd_hex_decode(out, 32, hex, strlen(hex)), 0);
}

/* --- key.c ------------------------------------------------------------------ */

static void test_hex_encode_decode(void **state)
{
	uint8_t bin[4] = {0x00, 0x9f, 0xa0, 0xff}, back[4];
	char hex[9];

	kd_hex_encode(hex, bin, 4);
	assert_string_equal(hex, "009fa0ff");
	assert_int_equal(kd_hex_decode(back, 4, "009FA0fF", 8), 0);
	assert_memory_equal(back, bin, 4);
	assert_int_equal(kd_hex_decode(back, 0, "", 0), 0);

	/* wrong lengths */
	assert_int_equal(kd_hex_decode(back, 4, "009fa0f", 7), -EINVAL);
	assert_int_equal(kd_hex_decode(back, 4, "009fa0ff0", 9), -EINVAL);
	assert_int_equal(kd_hex_decode(back, 4, "", 0), -EINVAL);

	/* every non-hex byte at every position fails and leaves zeros */
	for (int c = 0; c < 256; c++) {
		bool is_hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
			      (c >= 'A' && c <= 'F');
		for (int pos = 0; pos < 8; pos++) {
			char in[8];
			memcpy(in, "12345678", 8);
			in[pos] = (char)c;
			memset(back, 0x55, sizeof(back));
			int r = kd_hex_decode(back, 4, in, 8);
			if (is_hex) {
				assert_int_equal(r, 0);
			} else {
				if (r != -EINVAL)
					fail_msg("byte 0x%02x at %d accepted", c, pos);
				static const uint8_t zero[4];
				assert_memory_equal(back, zero, 4);
			}
		}
	}
}

static void test_key_text_forms(void **state)
{
	uint8_t priv[32], key[32], zero[32] = {0};
	char s[KD_KEY_SHORT_LEN], nk[KD_NODEKEY_STR_LEN];
	struct kd_keypair kp;

	from_hex(priv, A_PRIV_HEX);
	assert_int_equal(kd_keypair_from_private(&kp, priv), 0);
	kd_hex_encode(nk, kp.pub, 32);
	assert_string_equal(nk, A_PUB_HEX);
	kd_key_short(s, kp.pub);
	assert_string_equal(s, "[j0DFr]");
	kd_key_short(s, zero);
	assert_string_equal(s, "");
	kd_key_nodekey_str(nk, kp.pub);
	assert_string_equal(nk, "nodekey:" A_PUB_HEX);

	assert_int_equal(kd_key_parse_public(key, "nodekey:" A_PUB_HEX), 0);
	assert_memory_equal(key, kp.pub, 32);
	assert_int_equal(kd_key_parse_public(key, A_PUB_HEX), 0);
	assert_memory_equal(key, kp.pub, 32);
	assert_int_equal(kd_key_parse_public(key, "nodekey:8F40C5ADB68F25624AE5B214EA767A6EC94D829D3D7B5E1AD1BA6F3E2138285F"), 0);
	assert_memory_equal(key, kp.pub, 32);
	assert_int_equal(kd_key_parse_public(key, "discokey:" A_PUB_HEX), -EINVAL);
	assert_int_equal(kd_key_parse_public(key, "nodekey:" A_PUB_HEX "0"), -EINVAL);
	assert_int_equal(kd_key_parse_public(key, "nodekey:8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285"), -EINVAL);
	assert_int_equal(kd_key_parse_public(key, "nodekey:"), -EINVAL);
	assert_int_equal(kd_key_parse_public(key, ""), -EINVAL);

	/* fresh keys are clamped and consistent */
	assert_int_equal(kd_keypair_generate(&kp), 0);
	assert_int_equal(kp.priv[0] & 7, 0);
	assert_int_equal(kp.priv[31] & 0xc0, 0x40);
	assert_false(kd_key_is_zero(kp.pub));
	struct kd_keypair again;
	assert_int_equal(kd_keypair_from_private(&again, kp.priv), 0);
	assert_memory_equal(again.pub, kp.pub, 32);
}

/* --- server key file: pure ----------------------------------------------- */

static void test_keyfile_format_exact(void **state)
{
	uint8_t priv[32];
	char out[256];
	size_t n = strlen(A_FILE);

	from_hex(priv, A_PRIV_HEX);
	assert_int_equal(kd_keyfile_format(out, sizeof(out), priv), (int)n);
	assert_string_equal(out, A_FILE);
	assert_int_equal(kd_keyfile_format(out, n + 1, priv), (int)n);
	for (size_t cap = 0; cap <= n; cap++)
		assert_int_equal(kd_keyfile_format(out, cap, priv), -ENOSPC);
}

static int keyfile_parse_exact(const char *doc, uint8_t priv[32])
{
	size_t n = strlen(doc);
	char *p = malloc(n ? n : 1);
	int r;

	assert_non_null(p);
	memcpy(p, doc, n);
	memset(priv, 0x77, 32);
	r = kd_keyfile_parse(p, n, priv);
	free(p);
	if (r) {
		static const uint8_t zero[32];
		assert_int_equal(r, -EINVAL);
		assert_memory_equal(priv, zero, 32);
	}
	return r;
}

static void test_keyfile_parse(void **state)
{
	uint8_t want[32], priv[32], ab[32];

	from_hex(want, A_PRIV_HEX);
	memset(ab, 0xab, 32);
	static const char *const good_a[] = {
		A_FILE,
		"{\"PrivateKey\": \"privkey:" A_PRIV_HEX "\"}",
		"{\"privatekey\":\"privkey:" A_PRIV_HEX "\"}",
		"{\"PRIVATEKEY\":\"privkey:" A_PRIV_HEX "\"}",
		"{\"PrivateKey\":\"privkey:000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E5F\"}",
		" {\"Other\":{\"PrivateKey\":1},\"PrivateKey\":\"privkey:" A_PRIV_HEX "\",\"x\":[]}\n",
		"{\"PrivateKey\":\"privkey:" HEX_AB "\",\"privateKey\":\"privkey:" A_PRIV_HEX "\"}",
		"{\"PrivateKey\":\"privkey:" A_PRIV_HEX "\",\"PrivateKey\":null}",
		"{\"PrivateKey\":\"\\u0070rivkey:" A_PRIV_HEX "\"}",
	};
	for (size_t i = 0; i < sizeof(good_a) / sizeof(good_a[0]); i++) {
		if (keyfile_parse_exact(good_a[i], priv) != 0)
			fail_msg("rejected: %s", good_a[i]);
		assert_memory_equal(priv, want, 32);
	}
	static const char *const bad[] = {
		"", "{}", "null", "[]", "\"privkey:" A_PRIV_HEX "\"",
		"{\"PrivateKey\":null}",
		"{\"PrivateKey\":\"\"}",
		"{\"PrivateKey\":\"" A_PRIV_HEX "\"}",
		"{\"PrivateKey\":\"nodekey:" A_PRIV_HEX "\"}",
		"{\"PrivateKey\":\"PRIVKEY:" A_PRIV_HEX "\"}",
		"{\"PrivateKey\":\"privkey:" A_PRIV_HEX "0\"}",
		"{\"PrivateKey\":\"privkey:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e5\"}",
		"{\"PrivateKey\":\"privkey:g00102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e5\"}",
		"{\"PrivateKey\":\"privkey: " A_PRIV_HEX "\"}",
		"{\"PrivateKey\":\"privkey:0000000000000000000000000000000000000000000000000000000000000000\"}",
		"{\"PrivateKey\":5}",
		"{\"PrivateKey\":[\"privkey:" A_PRIV_HEX "\"]}",
		"{\"PrivateKey\":\"privkey:" A_PRIV_HEX "\"} x",
		"{\"PrivateKey\":\"privkey:" A_PRIV_HEX "\",}",
		"{\"PrivateKey\":\"privkey:" A_PRIV_HEX "\",\"PrivateKey\":\"junk\"}",
		"{\"Private_Key\":\"privkey:" A_PRIV_HEX "\"}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (keyfile_parse_exact(bad[i], priv) != -EINVAL)
			fail_msg("accepted: %s", bad[i]);
	}
	/* every truncation of the file is refused */
	char prefix[256];
	for (size_t cut = 0; cut < strlen(A_FILE); cut++) {
		memcpy(prefix, A_FILE, cut);
		prefix[cut] = '\0';
		assert_int_equal(keyfile_parse_exact(prefix, priv), -EINVAL);
	}
}

/* --- mesh key ---------------------------------------------------------------- */

static int meshkey_parse_exact(const char *s, uint8_t key[32])
{
	size_t n = strlen(s);
	char *p = malloc(n ? n : 1);
	int r;

	assert_non_null(p);
	memcpy(p, s, n);
	memset(key, 0x77, 32);
	r = kd_meshkey_parse(p, n, key);
	free(p);
	return r;
}

static void test_meshkey_parse(void **state)
{
	uint8_t key[32], ab[32], zero[32] = {0};

	memset(ab, 0xab, 32);
	static const char *const good[] = {
		HEX_AB, HEX_AB "\n", HEX_AB "\r\n", " \t\n" HEX_AB " \t\r\n\v\f",
		"ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB\n",
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		if (meshkey_parse_exact(good[i], key) != 0)
			fail_msg("rejected: %s", good[i]);
		assert_memory_equal(key, ab, 32);
	}
	static const char *const bad[] = {
		"", "\n", "   ",
		"abababababababababababababababababababababababababababababababa",  /* 63 */
		"ababababababababababababababababababababababababababababababababa", /* 65 */
		HEX_AB "ab",
		"xbababababababababababababababababababababababababababababababab",
		"abababababababababababababababab abababababababababababababababab",
		"\"" HEX_AB "\"",
		"privkey:" HEX_AB,
		HEX_AB "\n" HEX_AB "\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (meshkey_parse_exact(bad[i], key) != -EINVAL)
			fail_msg("accepted: '%s'", bad[i]);
		assert_memory_equal(key, zero, 32);
	}
	/* a NUL is not whitespace */
	assert_int_equal(kd_meshkey_parse(HEX_AB "\0", 65, key), -EINVAL);
}

/* --- admission webhook ------------------------------------------------------ */

static void test_admission_request(void **state)
{
	uint8_t pub[32];
	char out[256];
	const char *want = "{\"NodePublic\":\"nodekey:" A_PUB_HEX "\",\"Source\":\"192.0.2.1\"}";
	size_t n = strlen(want);

	from_hex(pub, A_PUB_HEX);
	assert_int_equal(kd_admission_request_format(out, sizeof(out), pub, "192.0.2.1"), (int)n);
	assert_string_equal(out, want);
	assert_int_equal(kd_admission_request_format(out, n + 1, pub, "192.0.2.1"), (int)n);
	assert_string_equal(out, want);
	for (size_t cap = 0; cap <= n; cap++)
		assert_int_equal(kd_admission_request_format(out, cap, pub, "192.0.2.1"), -ENOSPC);

	assert_true(kd_admission_request_format(out, sizeof(out), pub, "2001:db8::1") > 0);
	assert_string_equal(out, "{\"NodePublic\":\"nodekey:" A_PUB_HEX "\",\"Source\":\"2001:db8::1\"}");
	assert_true(kd_admission_request_format(out, sizeof(out), pub, NULL) > 0);
	assert_string_equal(out, "{\"NodePublic\":\"nodekey:" A_PUB_HEX "\",\"Source\":\"\"}");
	assert_true(kd_admission_request_format(out, sizeof(out), pub, "") > 0);
	assert_string_equal(out, "{\"NodePublic\":\"nodekey:" A_PUB_HEX "\",\"Source\":\"\"}");
}

static int admit(const char *body, size_t n, bool *allow)
{
	char *p = malloc(n ? n : 1);
	int r;

	assert_non_null(p);
	memcpy(p, body, n);
	*allow = true;
	r = kd_admission_response_parse(p, n, allow);
	free(p);
	if (r)
		assert_false(*allow);
	return r;
}

static int admit_s(const char *body, bool *allow)
{
	return admit(body, strlen(body), allow);
}

static void test_admission_response(void **state)
{
	bool allow;

	static const char *const yes[] = {
		"{\"Allow\":true}", "{\"allow\":true}", "{\"ALLOW\": true }", "\n{\"Allow\":true}\n",
		"{\"Other\":{\"Allow\":false},\"Allow\":true,\"x\":[1,2]}",
		"{\"Allow\":false,\"allow\":true}", "{\"Allow\":true,\"Allow\":null}",
		/* Go's json.Decoder reads one value and ignores the rest */
		"{\"Allow\":true}garbage", "{\"Allow\":true}{\"Allow\":false}",
	};
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (admit_s(yes[i], &allow) != 0 || !allow)
			fail_msg("not allowed: %s", yes[i]);
	}
	static const char *const no[] = {
		"{\"Allow\":false}", "{}", "null", "{\"Allow\":null}", "{\"Allowed\":true}",
		"{\"Allow\":true,\"allow\":false}", " null x",
	};
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		if (admit_s(no[i], &allow) != 0 || allow)
			fail_msg("wrong verdict: %s", no[i]);
	}
	static const char *const invalid[] = {
		"", " ", "OK", "true", "[]", "[{\"Allow\":true}]", "\"Allow\"", "1",
		"{\"Allow\":1}", "{\"Allow\":\"true\"}", "{\"Allow\":[true]}", "{\"Allow\":tru}",
		"{\"Allow\":true", "{\"Allow\":true,", "{\"Allow\" true}", "<html>{\"Allow\":true}",
	};
	for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
		if (admit_s(invalid[i], &allow) != -EINVAL)
			fail_msg("not refused: %s", invalid[i]);
	}

	/* only the first 4 KiB count */
	char big[8192];
	const char *tail = "\",\"Allow\":true}";
	size_t tl = strlen(tail);
	for (size_t total = KD_ADMISSION_RESPONSE_MAX - 1; total <= KD_ADMISSION_RESPONSE_MAX + 1; total++) {
		memcpy(big, "{\"pad\":\"", 8);
		memset(big + 8, 'p', total - 8 - tl);
		memcpy(big + total - tl, tail, tl);
		int r = admit(big, total, &allow);
		if (total <= KD_ADMISSION_RESPONSE_MAX) {
			assert_int_equal(r, 0);
			assert_true(allow);
		} else {
			assert_int_equal(r, -EINVAL);
		}
	}
	/* a complete answer within 4 KiB followed by more data is fine */
	memcpy(big, "{\"Allow\":true}", 14);
	memset(big + 14, ' ', sizeof(big) - 14);
	assert_int_equal(admit(big, sizeof(big), &allow), 0);
	assert_true(allow);
}

/* --- files ------------------------------------------------------------------- */

static char g_dir[256];

static int setup_dir(void **state)
{
	const char *t = getenv("TMPDIR");
	snprintf(g_dir, sizeof(g_dir), "%s/kd-keyfile-XXXXXX", t && *t ? t : "/tmp");
	return mkdtemp(g_dir) ? 0 : -1;
}

static int rm_tree(const char *path)
{
	struct stat st;
	if (lstat(path, &st) != 0)
		return 0;
	if (S_ISDIR(st.st_mode)) {
		DIR *d = opendir(path);
		struct dirent *e;
		if (!d)
			return -1;
		while ((e = readdir(d))) {
			char sub[512];
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
			rm_tree(sub);
		}
		closedir(d);
		return rmdir(path);
	}
	return unlink(path);
}

static int teardown_dir(void **state)
{
	return rm_tree(g_dir);
}

static void write_file(const char *path, const char *data, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, n), (ssize_t)n);
	close(fd);
}

static size_t read_file(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	ssize_t n = read(fd, buf, cap - 1);
	assert_true(n >= 0);
	buf[n] = '\0';
	close(fd);
	return (size_t)n;
}

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static void test_keyfile_create_and_reload(void **state)
{
	char dir[512], path[600], content[256], want[256];
	struct kd_keypair kp, kp2, check;
	struct stat st;
	mode_t old = umask(022);

	snprintf(dir, sizeof(dir), "%s/a/b", g_dir);
	snprintf(path, sizeof(path), "%s/derper.key", dir);
	assert_int_equal(kd_keyfile_load_or_create(path, &kp), 0);
	umask(old);

	/* file: 0600, derper's exact bytes, a key whose public half matches */
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	size_t n = read_file(path, content, sizeof(content));
	assert_int_equal(kd_keyfile_format(want, sizeof(want), kp.priv), (int)n);
	assert_string_equal(content, want);
	assert_int_equal(kd_keypair_from_private(&check, kp.priv), 0);
	assert_memory_equal(check.pub, kp.pub, 32);
	assert_false(kd_key_is_zero(kp.pub));

	/* parents: 0777 & ~umask(022) = 0755 */
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0755);
	/* no temporary file left behind */
	assert_int_equal(count_entries(dir), 1);

	/* loading again gives the same key and leaves the file alone */
	assert_int_equal(kd_keyfile_load_or_create(path, &kp2), 0);
	assert_memory_equal(kp2.priv, kp.priv, 32);
	assert_memory_equal(kp2.pub, kp.pub, 32);
	read_file(path, content, sizeof(content));
	assert_string_equal(content, want);
}

static void test_keyfile_load_existing(void **state)
{
	char path[600], content[256];
	struct kd_keypair kp;
	uint8_t pub[32];

	snprintf(path, sizeof(path), "%s/given.key", g_dir);
	write_file(path, A_FILE, strlen(A_FILE));
	assert_int_equal(kd_keyfile_load_or_create(path, &kp), 0);
	from_hex(pub, A_PUB_HEX);
	assert_memory_equal(kp.pub, pub, 32);

	/* a file in the current directory (no slash in the path) */
	char cwd[512];
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(g_dir), 0);
	assert_int_equal(kd_keyfile_load_or_create("given.key", &kp), 0);
	assert_memory_equal(kp.pub, pub, 32);
	assert_int_equal(kd_keyfile_load_or_create("fresh.key", &kp), 0);
	assert_int_equal(chdir(cwd), 0);
	snprintf(path, sizeof(path), "%s/fresh.key", g_dir);
	read_file(path, content, sizeof(content));
	assert_int_equal(strncmp(content, "{\n\t\"PrivateKey\": \"privkey:", 26), 0);
}

static void test_keyfile_errors(void **state)
{
	char path[600], content[256];
	struct kd_keypair kp;
	static const uint8_t zero[32];

	/* an invalid file is refused and not replaced */
	snprintf(path, sizeof(path), "%s/bad.key", g_dir);
	write_file(path, "{\"PrivateKey\": \"privkey:00\"}", 28);
	memset(&kp, 0x55, sizeof(kp));
	assert_int_equal(kd_keyfile_load_or_create(path, &kp), -EINVAL);
	assert_memory_equal(kp.priv, zero, 32);
	read_file(path, content, sizeof(content));
	assert_string_equal(content, "{\"PrivateKey\": \"privkey:00\"}");

	/* an empty file is not a missing file */
	write_file(path, "", 0);
	assert_int_equal(kd_keyfile_load_or_create(path, &kp), -EINVAL);

	/* the path is a directory */
	assert_int_equal(kd_keyfile_load_or_create(g_dir, &kp), -EISDIR);

	/* a parent is a regular file */
	snprintf(path, sizeof(path), "%s/bad.key/sub/x.key", g_dir);
	assert_int_equal(kd_keyfile_load_or_create(path, &kp), -ENOTDIR);

	/* too large to be a key file */
	static char huge[KD_KEYFILE_MAX + 10];
	memset(huge, ' ', sizeof(huge));
	memcpy(huge, A_FILE, strlen(A_FILE));
	snprintf(path, sizeof(path), "%s/huge.key", g_dir);
	write_file(path, huge, sizeof(huge));
	assert_int_equal(kd_keyfile_load_or_create(path, &kp), -EFBIG);
	/* exactly at the limit it is read (trailing whitespace is fine) */
	write_file(path, huge, KD_KEYFILE_MAX);
	assert_int_equal(kd_keyfile_load_or_create(path, &kp), 0);
}

static void test_meshkey_load(void **state)
{
	char path[600];
	uint8_t key[32], ab[32], zero[32] = {0};

	memset(ab, 0xab, 32);
	snprintf(path, sizeof(path), "%s/mesh.key", g_dir);
	write_file(path, HEX_AB "\n", 65);
	assert_int_equal(kd_meshkey_load(path, key), 0);
	assert_memory_equal(key, ab, 32);

	write_file(path, HEX_AB "a\n", 66);
	memset(key, 1, 32);
	assert_int_equal(kd_meshkey_load(path, key), -EINVAL);
	assert_memory_equal(key, zero, 32);

	snprintf(path, sizeof(path), "%s/missing.key", g_dir);
	assert_int_equal(kd_meshkey_load(path, key), -ENOENT);

	static char big[5000];
	memset(big, '\n', sizeof(big));
	memcpy(big, HEX_AB, 64);
	snprintf(path, sizeof(path), "%s/big.key", g_dir);
	write_file(path, big, sizeof(big));
	assert_int_equal(kd_meshkey_load(path, key), -EFBIG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hex_encode_decode),
		cmocka_unit_test(test_key_text_forms),
		cmocka_unit_test(test_keyfile_format_exact),
		cmocka_unit_test(test_keyfile_parse),
		cmocka_unit_test(test_meshkey_parse),
		cmocka_unit_test(test_admission_request),
		cmocka_unit_test(test_admission_response),
		cmocka_unit_test_setup_teardown(test_keyfile_create_and_reload, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_keyfile_load_existing, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_keyfile_errors, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_meshkey_load, setup_dir, teardown_dir),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
