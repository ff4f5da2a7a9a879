/* SPDX-License-Identifier: MIT */
/* kderp's optional config file (-config-file): one `name = value` per line,
 * names as the command-line flags without the dash, `#` starts a comment
 * line, blank lines ignored. Values run to the end of the line with the
 * surrounding blanks trimmed; there is no quoting, so a value may contain
 * '#' and '=' (URLs do). Flags given on the command line win over the file.
 *
 * Two layers: a parser over bytes that returns a verdict and the line number
 * (never allocates or logs, fuzzed), and a loader that reads the file and
 * applies it to a flag table, logging "path:line: ..." on the first error. */
#ifndef KD_CONFIGFILE_H
#define KD_CONFIGFILE_H

#include <stddef.h>

#include "flags.h"

/* Bigger files are refused rather than read whole. */
#define KD_CONFIGFILE_MAX 65536

enum kd_cfg_verdict {
	KD_CFG_SETTING = 1,      /* *out holds one name = value */
	KD_CFG_END = 0,          /* no more lines */
	KD_CFG_ERR_NO_EQUALS = -1,/* a non-blank, non-comment line without '=' */
	KD_CFG_ERR_BAD_NAME = -2,/* empty, or not [A-Za-z0-9_.-]+ */
	KD_CFG_ERR_NUL = -3,     /* a NUL byte: not a text file */
	KD_CFG_ERR_CTRL = -4,    /* another control character in a value */
};

struct kd_cfg_parser {
	const char *buf;
	size_t len, pos;
	unsigned line;           /* of the line last returned (or failed), from 1 */
};

struct kd_cfg_line {
	const char *name, *value; /* point into the parser's buffer */
	size_t name_len, value_len;
	unsigned line;
};

void kd_cfg_parser_init(struct kd_cfg_parser *p, const char *buf, size_t len);
/* Next setting: KD_CFG_SETTING, KD_CFG_END, or a negative verdict with
 * p->line naming the bad line (callers stop there: kderpd refuses the file). */
int kd_cfg_next(struct kd_cfg_parser *p, struct kd_cfg_line *out);
const char *kd_cfg_verdict_name(int verdict);

/* Reads path and sets the flags it names (f->set too). String flags end up
 * pointing into *keep, a malloc'd copy of the file the caller frees once
 * nothing uses them. Unknown names, names set twice in the file, flags not
 * allowed in a file (config-file itself) and bad values are errors logged
 * as "path:line: ..."; then the flags may be partly set (parse into a
 * scratch table). Returns 0 or -errno (-EINVAL for content errors). */
int kd_configfile_apply(const char *path, struct kd_flag *flags, size_t n, char **keep);

#endif
