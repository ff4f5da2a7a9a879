/* ktls_probe: what the running kernel does with kTLS, through OpenSSL 3 and
 * through sockmap. Runs inside the QEMU kernel matrix (tests/vm/run.sh) and
 * on the host, where it skips cleanly when the kernel has no kTLS.
 *
 *   ktls_probe [PREFIX...]     run only tests whose name starts with PREFIX
 *
 * Exit status: 0 when nothing failed, 1 otherwise. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/tls.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "vm_probe.h"

struct vm_tally vm_tally;
static char **filter_v;
static int filter_n;

void vm_set_filters(char **filters, int n)
{
	filter_v = filters;
	filter_n = n;
}

bool vm_selected(const char *name)
{
	if (filter_n == 0)
		return true;
	for (int i = 0; i < filter_n; i++)
		if (strncmp(name, filter_v[i], strlen(filter_v[i])) == 0)
			return true;
	return false;
}

bool vm_group_selected(const char *group)
{
	if (filter_n == 0)
		return true;
	for (int i = 0; i < filter_n; i++) {
		size_t n = strlen(filter_v[i]), g = strlen(group);

		if (strncmp(group, filter_v[i], n < g ? n : g) == 0)
			return true;
	}
	return false;
}

void vm_report(const char *name, enum vm_verdict v, const char *fmt, ...)
{
	static const char *const word[] = { "PASS", "FAIL", "SKIP" };
	char detail[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	if (v == VM_SKIP)
		printf("# SKIP %s: %s\n", name, detail);
	printf("VMTEST %s %s %s\n", name, word[v], detail);
	fflush(stdout);
	if (v == VM_PASS)
		vm_tally.pass++;
	else if (v == VM_FAIL)
		vm_tally.fail++;
	else
		vm_tally.skip++;
}

const char *vm_errname(int err)
{
	static const struct {
		int e;
		const char *n;
	} names[] = {
		{ 0, "ok" },	       { EINVAL, "EINVAL" },	   { ENOENT, "ENOENT" },
		{ EOPNOTSUPP, "EOPNOTSUPP" }, { EBUSY, "EBUSY" },	   { EEXIST, "EEXIST" },
		{ EPERM, "EPERM" },	       { EACCES, "EACCES" },	   { ENOPROTOOPT, "ENOPROTOOPT" },
		{ ENOTCONN, "ENOTCONN" },     { EAGAIN, "EAGAIN" },	   { EIO, "EIO" },
		{ EBADMSG, "EBADMSG" },	       { ENOMEM, "ENOMEM" },	   { ENOSYS, "ENOSYS" },
		{ EPROTONOSUPPORT, "EPROTONOSUPPORT" }, { ECONNRESET, "ECONNRESET" },
		{ EPIPE, "EPIPE" },	       { ENOSPC, "ENOSPC" },	   { EFAULT, "EFAULT" },
		{ ENOTSUP, "ENOTSUP" },       { E2BIG, "E2BIG" },	   { ENODEV, "ENODEV" },
	};
	static char buf[16];

	if (err < 0)
		return "not-tried";
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].e == err)
			return names[i].n;
	snprintf(buf, sizeof(buf), "errno%d", err);
	return buf;
}

static int set_timeouts(int fd)
{
	struct timeval tv = { .tv_sec = 10 };

	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)))
		return -errno;
	return 0;
}

int vm_tcp_pair(int *cli, int *srv)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int lfd, c = -1, s = -1, err;

	*cli = *srv = -1;
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		return -errno;
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 1) ||
	    getsockname(lfd, (struct sockaddr *)&sa, &len))
		goto fail;
	c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&sa, sizeof(sa)))
		goto fail;
	s = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (s < 0)
		goto fail;
	if ((err = set_timeouts(c)) || (err = set_timeouts(s))) {
		errno = -err;
		goto fail;
	}
	close(lfd);
	*cli = c;
	*srv = s;
	return 0;
fail:
	err = -errno;
	if (c >= 0)
		close(c);
	if (s >= 0)
		close(s);
	close(lfd);
	return err;
}

void vm_ktls_fixed(int fd, bool mirror, int *ulp, int *tx, int *rx)
{
	/* fixed keys as in the kernel's selftests: both ends must agree, the
	 * mirror end swaps TX and RX material */
	struct tls12_crypto_info_aes_gcm_128 a = { .info.version = TLS_1_2_VERSION,
						   .info.cipher_type = TLS_CIPHER_AES_GCM_128 };
	struct tls12_crypto_info_aes_gcm_128 b = a;

	memset(a.key, 0x11, sizeof(a.key));
	memset(a.iv, 0x22, sizeof(a.iv));
	memset(a.salt, 0x33, sizeof(a.salt));
	memset(b.key, 0x44, sizeof(b.key));
	memset(b.iv, 0x55, sizeof(b.iv));
	memset(b.salt, 0x66, sizeof(b.salt));

	*ulp = *tx = *rx = -1;
	*ulp = setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) ? errno : 0;
	if (*ulp)
		return;
	*tx = setsockopt(fd, SOL_TLS, TLS_TX, mirror ? &b : &a, sizeof(a)) ? errno : 0;
	*rx = setsockopt(fd, SOL_TLS, TLS_RX, mirror ? &a : &b, sizeof(a)) ? errno : 0;
}

static int ping_one(int from, int to, const char *msg)
{
	char buf[64];
	size_t n = strlen(msg), got = 0;

	if (write(from, msg, n) != (ssize_t)n)
		return errno ? errno : EIO;
	while (got < n) {
		ssize_t r = read(to, buf + got, sizeof(buf) - got);

		if (r <= 0)
			return r < 0 ? errno : ECONNRESET;
		got += (size_t)r;
	}
	return memcmp(buf, msg, n) ? EBADMSG : 0;
}

int vm_ping(int a, int b)
{
	int err = ping_one(a, b, "kderp ping a->b");

	return err ? err : ping_one(b, a, "kderp pong b->a");
}

bool vm_kernel_has_ktls(int *err)
{
	int c, s, e;

	e = vm_tcp_pair(&c, &s);
	if (e) {
		*err = -e;
		return false;
	}
	*err = setsockopt(c, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) ? errno : 0;
	close(c);
	close(s);
	return *err == 0;
}

int main(int argc, char **argv)
{
	int err;

	/* a peer that closes early must fail a test, not kill the probe */
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	vm_set_filters(argv + 1, argc - 1);

	if (vm_selected("ktls.ulp")) {
		if (vm_kernel_has_ktls(&err))
			vm_report("ktls.ulp", VM_PASS, "TCP_ULP tls available");
		else
			vm_report("ktls.ulp", VM_SKIP, "kernel has no kTLS (TCP_ULP tls: %s)",
				  vm_errname(err));
	}
	vm_ktls_openssl_run();
	vm_sockmap_ktls_run();
	printf("VMSUMMARY %d passed, %d failed, %d skipped\n", vm_tally.pass, vm_tally.fail,
	       vm_tally.skip);
	return vm_tally.fail ? 1 : 0;
}
