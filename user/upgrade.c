// SPDX-License-Identifier: MIT
#include "upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

extern char **environ;

/* The offer parsed once: entries are cleared as they are taken. */
static struct {
	bool parsed;
	int n;
	char key[KD_UPGRADE_MAX_FDS][300];
	int fd[KD_UPGRADE_MAX_FDS];
} g_offer;

static void parse_offer(void)
{
	const char *env = getenv(KD_UPGRADE_ENV_FDS);
	char buf[KD_UPGRADE_MAX_FDS * 300];

	if (g_offer.parsed)
		return;
	g_offer.parsed = true;
	if (!env || !*env)
		return;
	snprintf(buf, sizeof(buf), "%s", env);
	for (char *save = NULL, *it = strtok_r(buf, ",", &save); it && g_offer.n < KD_UPGRADE_MAX_FDS;
	     it = strtok_r(NULL, ",", &save)) {
		char *eq = strrchr(it, '='), *end;
		if (!eq)
			continue;
		*eq = '\0';
		long fd = strtol(eq + 1, &end, 10);
		if (*end || fd < 3 || fd > 65535 || strlen(it) >= sizeof(g_offer.key[0])) {
			pr_warn("upgrade: %s: ignoring \"%s=%s\"", KD_UPGRADE_ENV_FDS, it, eq + 1);
			continue;
		}
		snprintf(g_offer.key[g_offer.n], sizeof(g_offer.key[0]), "%s", it);
		g_offer.fd[g_offer.n++] = (int)fd;
	}
	/* the next upgrade builds its own; a grandchild must not see this one */
	unsetenv(KD_UPGRADE_ENV_FDS);
}

int kd_upgrade_take(const char *kind, const char *addr)
{
	char key[300];
	int type = 0, acc = 0;
	socklen_t l = sizeof(type);

	parse_offer();
	snprintf(key, sizeof(key), "%s:%s", kind, addr);
	for (int i = 0; i < g_offer.n; i++) {
		if (g_offer.fd[i] < 0 || strcmp(g_offer.key[i], key))
			continue;
		int fd = g_offer.fd[i];
		g_offer.fd[i] = -1;
		bool tcp = strncmp(kind, "tcp", 3) == 0;
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) != 0 || type != (tcp ? SOCK_STREAM : SOCK_DGRAM)) {
			pr_warn("upgrade: inherited fd %d for %s is not a %s socket; binding anew", fd, key,
				tcp ? "stream" : "datagram");
			return -1;
		}
		l = sizeof(acc);
		if (tcp && (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l) != 0 || !acc)) {
			pr_warn("upgrade: inherited fd %d for %s is not listening; binding anew", fd, key);
			return -1;
		}
		/* the same flags a fresh socket gets */
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
		pr_info("upgrade: adopted the listening socket %s (fd %d) from the previous process", key, fd);
		return fd;
	}
	return -1;
}

void kd_upgrade_close_untaken(void)
{
	parse_offer();
	for (int i = 0; i < g_offer.n; i++) {
		if (g_offer.fd[i] < 0)
			continue;
		pr_warn("upgrade: inherited %s (fd %d) matches no listener of this configuration; closed",
			g_offer.key[i], g_offer.fd[i]);
		close(g_offer.fd[i]);
		g_offer.fd[i] = -1;
	}
}

void kd_upgrade_ready(void)
{
	const char *env = getenv(KD_UPGRADE_ENV_READY);
	char *end;

	if (!env)
		return;
	long fd = strtol(env, &end, 10);
	unsetenv(KD_UPGRADE_ENV_READY);
	if (*end || fd < 3 || fd > 65535)
		return;
	if (write((int)fd, "R", 1) != 1)
		pr_warn("upgrade: telling the previous process we serve: %s", strerror(errno));
	close((int)fd);
}

int kd_upgrade_spawn(char **argv, const struct kd_upgrade_fd *fds, int n, pid_t *child, int *ready_fd)
{
	char offer[KD_UPGRADE_MAX_FDS * 300 + 64], ready[64];
	size_t len = 0, nenv = 0;
	int p[2];

	if (n > KD_UPGRADE_MAX_FDS)
		return -E2BIG;
	len = (size_t)snprintf(offer, sizeof(offer), "%s=", KD_UPGRADE_ENV_FDS);
	for (int i = 0; i < n; i++)
		len += (size_t)snprintf(offer + len, sizeof(offer) - len, "%s%s:%s=%d", i ? "," : "", fds[i].kind,
					fds[i].addr, fds[i].fd);
	if (len >= sizeof(offer))
		return -E2BIG;
	if (pipe2(p, O_CLOEXEC) != 0) {
		int err = -errno;
		pr_err("upgrade: pipe: %s", strerror(errno));
		return err;
	}
	snprintf(ready, sizeof(ready), "%s=%d", KD_UPGRADE_ENV_READY, p[1]);
	/* the child's environment, built before fork: after it only
	 * async-signal-safe calls (the parent has threads) */
	while (environ[nenv])
		nenv++;
	char **envp = calloc(nenv + 3, sizeof(*envp));
	if (!envp) {
		close(p[0]);
		close(p[1]);
		return -ENOMEM;
	}
	size_t k = 0;
	for (size_t i = 0; i < nenv; i++)
		if (strncmp(environ[i], KD_UPGRADE_ENV_FDS "=", strlen(KD_UPGRADE_ENV_FDS) + 1) &&
		    strncmp(environ[i], KD_UPGRADE_ENV_READY "=", strlen(KD_UPGRADE_ENV_READY) + 1))
			envp[k++] = environ[i];
	envp[k++] = offer;
	envp[k++] = ready;
	envp[k] = NULL;

	/* the path, not /proc/self/exe: an upgrade installs the new binary
	 * there, while /proc/self/exe stays the running (old) inode */
	char exe[4096];
	ssize_t el = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (el > 0) {
		exe[el] = '\0';
		size_t dl = strlen(" (deleted)");
		if ((size_t)el > dl && !strcmp(exe + el - dl, " (deleted)"))
			exe[el - dl] = '\0';
	} else {
		snprintf(exe, sizeof(exe), "/proc/self/exe");
	}
	pid_t pid = fork();
	if (pid < 0) {
		int err = -errno;
		pr_err("upgrade: fork: %s", strerror(errno));
		free(envp);
		close(p[0]);
		close(p[1]);
		return err;
	}
	if (pid == 0) {
		/* inheritable only here: the old process keeps CLOEXEC on all */
		for (int i = 0; i < n; i++)
			fcntl(fds[i].fd, F_SETFD, 0);
		fcntl(p[1], F_SETFD, 0);
		execve(exe, argv, envp);
		_exit(127);
	}
	free(envp);
	close(p[1]);
	*child = pid;
	*ready_fd = p[0];
	pr_info("upgrade: started pid %d with the listening sockets (%s)", (int)pid,
		offer + strlen(KD_UPGRADE_ENV_FDS) + 1);
	return 0;
}
