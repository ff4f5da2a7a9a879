// SPDX-License-Identifier: MIT
#include "configfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

void kd_cfg_parser_init(struct kd_cfg_parser *p, const char *buf, size_t len)
{
	p->buf = buf;
	p->len = len;
	p->pos = 0;
	p->line = 0;
}

static bool blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
	       c == '_' || c == '.';
}

int kd_cfg_next(struct kd_cfg_parser *p, struct kd_cfg_line *out)
{
	while (p->pos < p->len) {
		const char *s = p->buf + p->pos;
		size_t rest = p->len - p->pos;
		const char *nl = memchr(s, '\n', rest);
		size_t n = nl ? (size_t)(nl - s) : rest;
		size_t b = 0, e = n;

		p->line++;
		p->pos += nl ? n + 1 : n;
		if (memchr(s, '\0', n))
			return KD_CFG_ERR_NUL;
		while (b < e && blank(s[b]))
			b++;
		while (e > b && blank(s[e - 1]))
			e--;
		if (b == e || s[b] == '#')
			continue;
		const char *eq = memchr(s + b, '=', e - b);
		if (!eq)
			return KD_CFG_ERR_NO_EQUALS;
		size_t ne = (size_t)(eq - s), vb = ne + 1;
		while (ne > b && blank(s[ne - 1]))
			ne--;
		if (ne == b)
			return KD_CFG_ERR_BAD_NAME;
		for (size_t i = b; i < ne; i++)
			if (!name_char(s[i]))
				return KD_CFG_ERR_BAD_NAME;
		while (vb < e && blank(s[vb]))
			vb++;
		for (size_t i = vb; i < e; i++)
			if ((unsigned char)s[i] < 0x20 && s[i] != '\t')
				return KD_CFG_ERR_CTRL;
		out->name = s + b;
		out->name_len = ne - b;
		out->value = s + vb;
		out->value_len = e - vb;
		out->line = p->line;
		return KD_CFG_SETTING;
	}
	return KD_CFG_END;
}

const char *kd_cfg_verdict_name(int verdict)
{
	switch (verdict) {
	case KD_CFG_SETTING:
		return "setting";
	case KD_CFG_END:
		return "end";
	case KD_CFG_ERR_NO_EQUALS:
		return "want name = value";
	case KD_CFG_ERR_BAD_NAME:
		return "bad setting name";
	case KD_CFG_ERR_NUL:
		return "NUL byte";
	case KD_CFG_ERR_CTRL:
		return "control character in value";
	}
	return "?";
}

static int read_whole(const char *path, char **out, size_t *len)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC), err = 0;
	char *buf = NULL;
	size_t n = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) != 0) {
		err = -errno;
		goto out;
	}
	if (st.st_size > KD_CONFIGFILE_MAX) {
		err = -EFBIG;
		goto out;
	}
	/* +1: the loader terminates the last value in place */
	buf = malloc(KD_CONFIGFILE_MAX + 1);
	if (!buf) {
		err = -ENOMEM;
		goto out;
	}
	for (;;) {
		ssize_t r = read(fd, buf + n, KD_CONFIGFILE_MAX + 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err = -errno;
			goto out;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > KD_CONFIGFILE_MAX) {
			err = -EFBIG; /* grew between fstat and read */
			goto out;
		}
	}
out:
	close(fd);
	if (err) {
		free(buf);
		return err;
	}
	*out = buf;
	*len = n;
	return 0;
}

int kd_configfile_apply(const char *path, struct kd_flag *flags, size_t n, char **keep)
{
	struct kd_cfg_parser p;
	struct kd_cfg_line l;
	bool seen[128] = {0};
	char *buf = NULL;
	size_t len = 0;
	int v, err;

	*keep = NULL;
	if (n > sizeof(seen)) {
		pr_err("config %s: flag table too large", path);
		return -EINVAL;
	}
	err = read_whole(path, &buf, &len);
	if (err) {
		pr_err("config %s: %s", path, err == -EFBIG ? "larger than 64 KiB" : strerror(-err));
		return err;
	}
	kd_cfg_parser_init(&p, buf, len);
	while ((v = kd_cfg_next(&p, &l)) == KD_CFG_SETTING) {
		struct kd_flag *f = NULL;
		size_t k;
		for (k = 0; k < n; k++) {
			if (strlen(flags[k].name) == l.name_len && !strncmp(flags[k].name, l.name, l.name_len)) {
				f = &flags[k];
				break;
			}
		}
		if (!f || !strcmp(f->name, "config-file")) {
			pr_err("%s:%u: %s setting \"%.*s\"", path, l.line, f ? "not allowed in a file:" : "unknown",
			       (int)l.name_len, l.name);
			goto bad;
		}
		if (seen[k]) {
			pr_err("%s:%u: \"%s\" set twice", path, l.line, f->name);
			goto bad;
		}
		seen[k] = true;
		/* the parser is done with this line: terminate both in place */
		((char *)l.name)[l.name_len] = '\0';
		((char *)l.value)[l.value_len] = '\0';
		if (kd_flag_set_value(f, l.value) != 0) {
			pr_err("%s:%u: invalid value \"%s\" for %s", path, l.line, l.value, f->name);
			goto bad;
		}
		f->set = true;
	}
	if (v != KD_CFG_END) {
		pr_err("%s:%u: %s", path, p.line, kd_cfg_verdict_name(v));
		goto bad;
	}
	*keep = buf;
	return 0;
bad:
	free(buf);
	return -EINVAL;
}
