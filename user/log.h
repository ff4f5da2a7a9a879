/* SPDX-License-Identifier: MIT */
/* One line per event on stderr: "kderpd: LEVEL: message". */
#ifndef KD_LOG_H
#define KD_LOG_H

#include <stdint.h>

enum kd_log_level { KD_LOG_ERROR, KD_LOG_WARN, KD_LOG_INFO, KD_LOG_DEBUG };

void kd_log_set_level(enum kd_log_level lvl);
void kd_log_set_prefix(const char *prefix);
void kd_log(enum kd_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define pr_err(...) kd_log(KD_LOG_ERROR, __VA_ARGS__)
#define pr_warn(...) kd_log(KD_LOG_WARN, __VA_ARGS__)
#define pr_info(...) kd_log(KD_LOG_INFO, __VA_ARGS__)
#define pr_debug(...) kd_log(KD_LOG_DEBUG, __VA_ARGS__)

/* A per-site limiter for noisy per-client events: at most `burst` lines,
 * refilled one per `interval_ms`; suppressed lines are counted and reported
 * with the next line that gets through. */
struct kd_ratelimit {
	uint64_t last_ms;
	uint32_t tokens, burst, interval_ms;
	uint64_t suppressed;
};
#define KD_RATELIMIT_INIT(burst_, interval_ms_) {0, (burst_), (burst_), (interval_ms_), 0}
/* Returns the number of lines suppressed since the last allowed one plus 1
 * when this line may be printed, 0 when it must be dropped. Not thread safe:
 * keep one limiter per thread or per connection. */
uint64_t kd_ratelimit_ok(struct kd_ratelimit *rl, uint64_t now_ms);

#endif
