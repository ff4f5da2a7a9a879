/* SPDX-License-Identifier: MIT */
/* Binary upgrade without refusing connections (SIGUSR2).
 *
 * The running kderpd starts /proc/self/exe with its own argv and hands its
 * listening sockets over by inheritance: only in the child are they made
 * inheritable, and KDERP_INHERIT_FDS names them, e.g.
 *   KDERP_INHERIT_FDS=tcp:127.0.0.1:3340=5,udp:127.0.0.1:3478=6
 * (the key is the kind and the address as the flags spell it). The new
 * process adopts a matching fd instead of binding, so the kernel keeps one
 * accept queue across both processes and no SYN is ever refused. The child
 * writes one byte to the pipe KDERP_UPGRADE_READY_FD names once it serves;
 * then the old process stops accepting, lets its handshakes finish, sends
 * Restarting to its clients and exits. Established connections are not
 * handed over (README, operations). */
#ifndef KD_UPGRADE_H
#define KD_UPGRADE_H

#include <stdbool.h>
#include <sys/types.h>

#define KD_UPGRADE_ENV_FDS "KDERP_INHERIT_FDS"
#define KD_UPGRADE_ENV_READY "KDERP_UPGRADE_READY_FD"
#define KD_UPGRADE_MAX_FDS 8

struct kd_upgrade_fd {
	const char *kind;   /* "tcp", "tcp80", "udp" */
	const char *addr;   /* as the flags spell it: "127.0.0.1:3340", ":443" */
	int fd;
};

/* In the new process: the inherited fd for kind:addr, taken out of the
 * environment's offer (so it is adopted once), after checking it is a
 * socket of the right type (a listening one for tcp). -1 when none. */
int kd_upgrade_take(const char *kind, const char *addr);
/* Closes the inherited fds nobody took (a changed flag): logged. */
void kd_upgrade_close_untaken(void);
/* In the new process, once it serves: tells the old one. No-op otherwise. */
void kd_upgrade_ready(void);

/* In the old process: forks and execs /proc/self/exe argv with the fds.
 * *ready_fd becomes readable with one byte when the child serves, or with
 * EOF when it died first. 0 or -errno (logged). */
int kd_upgrade_spawn(char **argv, const struct kd_upgrade_fd *fds, int n, pid_t *child, int *ready_fd);

#endif
