/* SPDX-License-Identifier: MIT */
/* Both ends of a TLS connection in one test thread, driven without
 * blocking: what the TLS tests use to run real handshakes. */
#ifndef KD_TEST_TLS_PAIR_H
#define KD_TEST_TLS_PAIR_H

#include <openssl/ssl.h>

struct tls_pair {
	SSL *c, *s;
	int fds[2];
};

/* cmocka-asserting constructors: a socketpair, or given connected fds */
void tls_pair_open(struct tls_pair *p, SSL_CTX *sctx, SSL_CTX *cctx);
void tls_pair_open_fds(struct tls_pair *p, SSL_CTX *sctx, SSL_CTX *cctx, int cfd, int sfd);
/* 0 when both sides finished, -1 when either failed or it took too long */
int tls_pair_handshake(struct tls_pair *p);
/* msg from one side arrives intact on the other */
void tls_pair_xfer(SSL *from, SSL *to, const char *msg);
void tls_pair_close(struct tls_pair *p);

#endif
