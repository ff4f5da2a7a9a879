// SPDX-License-Identifier: MIT
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>

#include "tls.h"
#include "tls_pair.h"

void tls_pair_close(struct tls_pair *p)
{
	SSL_free(p->c);
	SSL_free(p->s);
	if (p->fds[0] >= 0)
		close(p->fds[0]);
	if (p->fds[1] >= 0)
		close(p->fds[1]);
	p->c = p->s = NULL;
	p->fds[0] = p->fds[1] = -1;
	ERR_clear_error();
}

void tls_pair_open_fds(struct tls_pair *p, SSL_CTX *sctx, SSL_CTX *cctx, int cfd, int sfd)
{
	p->fds[0] = cfd;
	p->fds[1] = sfd;
	assert_int_equal(kd_tls_client_ssl_new(&p->c, cctx, cfd), 0);
	assert_int_equal(kd_tls_server_ssl_new(&p->s, sctx, sfd), 0);
}

void tls_pair_open(struct tls_pair *p, SSL_CTX *sctx, SSL_CTX *cctx)
{
	int fds[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
	tls_pair_open_fds(p, sctx, cctx, fds[0], fds[1]);
}

/* One step of one side: 1 done, 0 wants I/O, -1 failed. */
static int step(SSL *ssl, bool *done)
{
	int r, e;

	if (*done)
		return 1;
	r = SSL_do_handshake(ssl);
	if (r == 1) {
		*done = true;
		return 1;
	}
	e = SSL_get_error(ssl, r);
	return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
}

/* Both ends are non-blocking and in this thread, so alternate until both
 * finish; the bound keeps a protocol bug from hanging the test. */
int tls_pair_handshake(struct tls_pair *p)
{
	bool cdone = false, sdone = false;

	for (int i = 0; i < 1000; i++) {
		if (step(p->c, &cdone) < 0 || step(p->s, &sdone) < 0)
			return -1;
		if (cdone && sdone)
			return 0;
		if (i > 50)
			usleep(1000); /* TCP: give loopback time to deliver */
	}
	return -1;
}

void tls_pair_xfer(SSL *from, SSL *to, const char *msg)
{
	char buf[64] = {0};
	int n = -1;

	assert_int_equal(SSL_write(from, msg, (int)strlen(msg)), (int)strlen(msg));
	for (int i = 0; i < 1000 && n <= 0; i++) {
		n = SSL_read(to, buf, sizeof(buf) - 1);
		if (n <= 0) {
			assert_int_equal(SSL_get_error(to, n), SSL_ERROR_WANT_READ);
			usleep(1000);
		}
	}
	assert_int_equal(n, (int)strlen(msg));
	assert_string_equal(buf, msg);
}

