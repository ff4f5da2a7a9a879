/* SPDX-License-Identifier: MIT */
/* Privilege drop: kderpd starts as root (or with ambient capabilities) only
 * to bind low ports and load BPF, then keeps the few capabilities it still
 * needs, optionally as an unprivileged user. */
#ifndef KD_PRIVS_H
#define KD_PRIVS_H

#include <stddef.h>
#include <stdint.h>

/* Bit n of a mask is capability n (CAP_NET_BIND_SERVICE = 10, ...). */
#define KD_CAP(c) (1ULL << (c))
#define KD_CAPS_ALL (~0ULL)

struct kd_privs_opts {
	const char *user;  /* name or numeric uid to become; NULL or "" = stay */
	const char *group; /* NULL or "" = the user's primary group */
	uint64_t keep;     /* KD_CAP(CAP_...) bits to keep in effective+permitted */
	/* NULL-ended; with a user switch, chowned to it first (missing ones
	 * skipped): BPF pins and their directory, so the exit path, no longer
	 * root, can unpin them */
	const char *const *chown_paths;
};

/* Switches user (with setgroups/setresgid/setresuid under PR_SET_KEEPCAPS),
 * shrinks the bounding, permitted, effective, inheritable and ambient sets
 * to o->keep (intersected with what the process holds: a capability it never
 * had cannot be kept; those are logged), sets PR_SET_NO_NEW_PRIVS, and logs
 * one line with the result. Capabilities are per thread and only the calling
 * thread is changed, so it must run before any thread exists: with more than
 * one entry in /proc/self/task it returns -EBUSY and changes nothing. kderpd
 * calls it after kd_server_new and the XDP attach, before kd_server_start.
 * Returns 0 or -errno (-ENOENT unknown user or group, -EPERM not allowed). */
int kd_privs_drop(const struct kd_privs_opts *o);

/* Parses "net_bind_service,CAP_NET_ADMIN, bpf" (names case-insensitive, the
 * cap_ prefix optional, separated by commas and/or blanks); "" and "none"
 * give 0, "all" gives KD_CAPS_ALL. 0, or -EINVAL with *mask untouched. */
int kd_privs_parse_caps(const char *list, uint64_t *mask);

/* "net_bind_service,bpf" (or "none") into out; returns the length like
 * snprintf. Unknown bits print as their number. */
int kd_privs_format_caps(uint64_t mask, char *out, size_t cap);

/* The lower-case name without cap_, or NULL for an unknown number. */
const char *kd_privs_cap_name(unsigned cap);

/* The threads in this process, from /proc/self/task; -errno on failure. */
int kd_privs_thread_count(void);

#endif
