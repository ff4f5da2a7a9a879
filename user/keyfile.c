// SPDX-License-Identifier: MIT
#include "keyfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "log.h"

#define PRIVKEY_PREFIX "privkey:"
#define PRIVKEY_PREFIX_LEN 8

/* --- pure parsers and formatters ------------------------------------------ */

static int read_private_key(struct kd_json *js, uint8_t priv[32], bool *seen)
{
	struct kd_json_str s;
	char text[PRIVKEY_PREFIX_LEN + KD_KEY_HEX_LEN + 1];
	size_t n;
	int r;

	if (kd_json_peek(js) == KD_JSON_NULL)
		return kd_json_get_null(js);
	r = kd_json_get_string(js, &s);
	if (r)
		return r;
	n = kd_json_unescape(&s, text, sizeof(text));
	/* the prefix is matched case-sensitively, like the reference's key parser */
	if (n != sizeof(text) - 1 || memcmp(text, PRIVKEY_PREFIX, PRIVKEY_PREFIX_LEN) != 0)
		r = -EINVAL;
	else
		r = kd_hex_decode(priv, 32, text + PRIVKEY_PREFIX_LEN, KD_KEY_HEX_LEN);
	sodium_memzero(text, sizeof(text));
	if (r == 0)
		*seen = true;
	return r;
}

int kd_keyfile_parse(const char *buf, size_t len, uint8_t priv[32])
{
	struct kd_json js;
	struct kd_json_str name;
	bool seen = false;
	int r;

	memset(priv, 0, 32);
	r = kd_json_init(&js, buf, len, len);
	if (r == 0)
		r = kd_json_object_begin(&js);
	while (r == 0 && (r = kd_json_object_next(&js, &name)) == 1) {
		if (kd_json_str_eq_ci(&name, "PrivateKey"))
			r = read_private_key(&js, priv, &seen);
		else
			r = kd_json_skip_value(&js);
	}
	if (r == 0)
		r = kd_json_end(&js);
	/* a missing key would leave derper with the zero key; we refuse it */
	if (r == 0 && (!seen || kd_key_is_zero(priv)))
		r = -EINVAL;
	if (r) {
		sodium_memzero(priv, 32);
		return -EINVAL;
	}
	return 0;
}

int kd_keyfile_format(char *out, size_t cap, const uint8_t priv[32])
{
	char hex[KD_KEY_HEX_LEN + 1];
	int n;

	kd_hex_encode(hex, priv, 32);
	n = snprintf(out, cap, "{\n\t\"PrivateKey\": \"" PRIVKEY_PREFIX "%s\"\n}", hex);
	sodium_memzero(hex, sizeof(hex));
	if (n < 0 || (size_t)n >= cap) {
		if (cap > 0)
			sodium_memzero(out, cap);
		return -ENOSPC;
	}
	return n;
}

static bool is_space(char c)
{
	/* Go's TrimSpace also trims Unicode spaces; nobody writes those into a
	 * key file, and refusing them is the safe side */
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

int kd_meshkey_parse(const char *buf, size_t len, uint8_t key[32])
{
	while (len > 0 && is_space(buf[0])) {
		buf++;
		len--;
	}
	while (len > 0 && is_space(buf[len - 1]))
		len--;
	if (kd_hex_decode(key, 32, buf, len) != 0) {
		memset(key, 0, 32);
		return -EINVAL;
	}
	return 0;
}

int kd_admission_request_format(char *out, size_t cap, const uint8_t key[32],
				const char *source_ip)
{
	char nodekey[KD_NODEKEY_STR_LEN];
	int n, m;

	if (!source_ip)
		source_ip = "";
	kd_key_nodekey_str(nodekey, key);
	n = snprintf(out, cap, "{\"NodePublic\":\"%s\",\"Source\":", nodekey);
	if (n < 0 || (size_t)n >= cap)
		goto nospc;
	m = kd_json_escape(out + n, cap - (size_t)n, source_ip, strlen(source_ip));
	if (m < 0)
		goto nospc;
	n += m;
	if ((size_t)n + 1 >= cap)
		goto nospc;
	out[n++] = '}';
	out[n] = '\0';
	return n;
nospc:
	if (cap > 0)
		out[0] = '\0';
	return -ENOSPC;
}

int kd_admission_response_parse(const char *buf, size_t len, bool *allow)
{
	struct kd_json js;
	struct kd_json_str name;
	bool v = false;
	int r;

	*allow = false;
	if (len > KD_ADMISSION_RESPONSE_MAX)
		len = KD_ADMISSION_RESPONSE_MAX;
	kd_json_init(&js, buf, len, len);
	if (kd_json_peek(&js) == KD_JSON_NULL)
		return kd_json_get_null(&js) ? -EINVAL : 0;
	r = kd_json_object_begin(&js);
	while (r == 0 && (r = kd_json_object_next(&js, &name)) == 1) {
		if (!kd_json_str_eq_ci(&name, "Allow"))
			r = kd_json_skip_value(&js);
		else if (kd_json_peek(&js) == KD_JSON_NULL)
			r = kd_json_get_null(&js);
		else
			r = kd_json_get_bool(&js, &v);
	}
	/* no kd_json_end(): the reference decodes one value from a stream */
	if (r)
		return -EINVAL;
	*allow = v;
	return 0;
}

/* --- files ------------------------------------------------------------------ */

/* Reads at most max bytes of path into a fresh buffer; -EFBIG when longer. */
static int read_small_file(const char *path, size_t max, char **out, size_t *out_len)
{
	char *buf;
	size_t n = 0;
	int fd, r = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	buf = malloc(max + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	for (;;) {
		ssize_t k = read(fd, buf + n, max + 1 - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			r = -errno;
			break;
		}
		if (k == 0)
			break;
		n += (size_t)k;
		if (n > max) {
			r = -EFBIG;
			break;
		}
	}
	close(fd);
	if (r) {
		sodium_memzero(buf, max + 1);
		free(buf);
		return r;
	}
	*out = buf;
	*out_len = n;
	return 0;
}

static void free_secret(char *buf, size_t max)
{
	if (buf) {
		sodium_memzero(buf, max + 1);
		free(buf);
	}
}

/* mkdir -p of the directory part of path. */
static int make_parent_dirs(const char *path)
{
	char dir[PATH_MAX];
	size_t n = strlen(path);

	if (n >= sizeof(dir))
		return -ENAMETOOLONG;
	memcpy(dir, path, n + 1);
	char *slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = '\0';
	for (char *p = dir + 1; ; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(dir, 0777) != 0 && errno != EEXIST)
			return -errno;
		*p = c;
		if (c == '\0')
			return 0;
	}
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

static void sync_parent_dir(const char *path)
{
	char dir[PATH_MAX];
	size_t n = strlen(path);
	int fd;

	if (n >= sizeof(dir))
		return;
	memcpy(dir, path, n + 1);
	char *slash = strrchr(dir, '/');
	if (!slash)
		strcpy(dir, ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		/* best effort: the key is already durable in the file itself */
		(void)fsync(fd);
		close(fd);
	}
}

/* Writes a fresh key to path atomically; *step names what failed. */
static int create_keyfile(const char *path, struct kd_keypair *kp, const char **step)
{
	char tmp[PATH_MAX];
	char text[128];
	int fd, n, r;

	*step = "create parent directory";
	r = make_parent_dirs(path);
	if (r)
		return r;
	*step = "generate key";
	r = kd_keypair_generate(kp);
	if (r)
		return r;
	n = kd_keyfile_format(text, sizeof(text), kp->priv);
	if (n < 0)
		return n;
	*step = "create temporary file";
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmpXXXXXX", path) >= sizeof(tmp)) {
		r = -ENAMETOOLONG;
		goto out;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	*step = "write temporary file";
	r = fchmod(fd, 0600) ? -errno : 0;
	if (r == 0)
		r = write_all(fd, text, (size_t)n);
	if (r == 0 && fsync(fd) != 0)
		r = -errno;
	if (close(fd) != 0 && r == 0)
		r = -errno;
	if (r == 0) {
		*step = "rename temporary file";
		if (rename(tmp, path) != 0)
			r = -errno;
	}
	if (r)
		unlink(tmp);
	else
		sync_parent_dir(path);
out:
	sodium_memzero(text, sizeof(text));
	if (r)
		sodium_memzero(kp, sizeof(*kp));
	return r;
}

int kd_keyfile_load_or_create(const char *path, struct kd_keypair *kp)
{
	uint8_t priv[32];
	const char *step = "read";
	char *buf = NULL;
	size_t len = 0;
	int r;

	memset(kp, 0, sizeof(*kp));
	r = read_small_file(path, KD_KEYFILE_MAX, &buf, &len);
	if (r == -ENOENT) {
		r = create_keyfile(path, kp, &step);
		if (r == 0)
			pr_info("key file %s: created with a new server key", path);
		else
			pr_err("key file %s: %s: %s", path, step, strerror(-r));
		return r;
	}
	if (r) {
		pr_err("key file %s: read: %s", path, strerror(-r));
		return r;
	}
	r = kd_keyfile_parse(buf, len, priv);
	free_secret(buf, KD_KEYFILE_MAX);
	if (r) {
		pr_err("key file %s: not a valid key file (want {\"PrivateKey\": \"privkey:<64 hex>\"})",
		       path);
		return r;
	}
	r = kd_keypair_from_private(kp, priv);
	sodium_memzero(priv, sizeof(priv));
	if (r) {
		sodium_memzero(kp, sizeof(*kp));
		pr_err("key file %s: private key has no usable public key", path);
	}
	return r;
}

int kd_meshkey_load(const char *path, uint8_t key[32])
{
	/* 64 hex digits and some whitespace; anything much larger is not a key */
	const size_t max = 4096;
	char *buf = NULL;
	size_t len = 0;
	int r;

	r = read_small_file(path, max, &buf, &len);
	if (r) {
		memset(key, 0, 32);
		return r;
	}
	r = kd_meshkey_parse(buf, len, key);
	free_secret(buf, max);
	return r;
}
