// SPDX-License-Identifier: MIT
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static enum kd_log_level g_level = KD_LOG_INFO;
static const char *g_prefix = "kderpd";

void kd_log_set_level(enum kd_log_level lvl)
{
	g_level = lvl;
}

void kd_log_set_prefix(const char *prefix)
{
	g_prefix = prefix;
}

void kd_log(enum kd_log_level lvl, const char *fmt, ...)
{
	static const char *const names[] = {"error", "warn", "info", "debug"};
	char line[1024];
	va_list ap;
	int n;

	if (lvl > g_level)
		return;
	n = snprintf(line, sizeof(line), "%s: %s: ", g_prefix, names[lvl]);
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	/* one write per line so lines from several threads never interleave */
	size_t len = strnlen(line, sizeof(line) - 2);
	line[len++] = '\n';
	fwrite(line, 1, len, stderr);
}

uint64_t kd_ratelimit_ok(struct kd_ratelimit *rl, uint64_t now_ms)
{
	if (rl->interval_ms && now_ms > rl->last_ms) {
		uint64_t add = (now_ms - rl->last_ms) / rl->interval_ms;
		if (add) {
			rl->tokens = (uint32_t)((rl->tokens + add > rl->burst) ? rl->burst : rl->tokens + add);
			rl->last_ms += add * rl->interval_ms;
		}
	}
	if (rl->last_ms == 0)
		rl->last_ms = now_ms;
	if (rl->tokens == 0) {
		rl->suppressed++;
		return 0;
	}
	rl->tokens--;
	uint64_t r = rl->suppressed + 1;
	rl->suppressed = 0;
	return r;
}
