// SPDX-License-Identifier: MIT
/* The -config-file parser on arbitrary bytes: every setting it returns lies
 * inside the input, on the line it names, with a well-formed name and a
 * trimmed value; line numbers only grow; an error or the end is final. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "configfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int is_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
	       c == '_' || c == '.';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* an exact-size copy, so ASan sees any read past the end */
	char *buf = malloc(size ? size : 1);
	struct kd_cfg_parser p;
	struct kd_cfg_line l;
	unsigned last = 0;
	size_t newlines = 0;
	int v;

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	for (size_t i = 0; i < size; i++)
		newlines += buf[i] == '\n';
	kd_cfg_parser_init(&p, buf, size);
	while ((v = kd_cfg_next(&p, &l)) == KD_CFG_SETTING) {
		if (l.line <= last || l.line > newlines + 1 || l.line != p.line)
			abort();
		last = l.line;
		if (l.name < buf || l.name + l.name_len > buf + size || !l.name_len)
			abort();
		if (l.value < l.name + l.name_len || l.value + l.value_len > buf + size)
			abort();
		for (size_t i = 0; i < l.name_len; i++)
			if (!is_name_char(l.name[i]))
				abort();
		if (memchr(l.name, '\n', (size_t)(l.value + l.value_len - l.name)) ||
		    !memchr(l.name + l.name_len, '=', (size_t)(l.value - l.name - l.name_len)))
			abort();
		if (l.value_len && (l.value[0] == ' ' || l.value[0] == '\t' || l.value[l.value_len - 1] == ' ' ||
				    l.value[l.value_len - 1] == '\t' || l.value[l.value_len - 1] == '\r'))
			abort();
	}
	if (v != KD_CFG_END && (v >= 0 || !strcmp(kd_cfg_verdict_name(v), "?") || !p.line))
		abort();
	/* an error or the end stays put */
	unsigned line = p.line;
	int again = kd_cfg_next(&p, &l);
	if (v == KD_CFG_END && (again != KD_CFG_END || p.line != line))
		abort();
	free(buf);
	return 0;
}
