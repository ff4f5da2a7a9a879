// SPDX-License-Identifier: MIT
/* idle-clients URL N [SECONDS]: logs N DERP clients in and holds them idle,
 * so `make bench` can read the relay's memory per connected client. Prints
 * "ready N" on stdout once all are logged in, then holds them for SECONDS
 * (default 5) and exits. Needs a high RLIMIT_NOFILE (raised when allowed). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <sodium.h>

#include "client.h"
#include "log.h"

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: idle-clients URL N [SECONDS]\n");
		return 2;
	}
	long n = strtol(argv[2], NULL, 10), secs = argc > 3 ? strtol(argv[3], NULL, 10) : 5;
	if (n <= 0 || n > 1000000 || sodium_init() < 0) {
		fprintf(stderr, "idle-clients: bad count\n");
		return 2;
	}
	struct rlimit rl = {.rlim_cur = (rlim_t)n + 64, .rlim_max = (rlim_t)n + 64};
	struct rlimit cur;
	getrlimit(RLIMIT_NOFILE, &cur);
	if (cur.rlim_cur < rl.rlim_cur && setrlimit(RLIMIT_NOFILE, &rl) != 0) {
		fprintf(stderr, "idle-clients: cannot raise RLIMIT_NOFILE to %ld: %s\n", n + 64, strerror(errno));
		return 1;
	}
	kd_log_set_prefix("idle-clients");
	struct kd_client **c = calloc((size_t)n, sizeof(*c));
	struct kd_client_opts o = {.url = argv[1], .timeout_ms = 10000};
	for (long i = 0; i < n; i++) {
		kd_keypair_generate(&o.key);
		int err = kd_client_connect(&c[i], &o);
		if (err) {
			fprintf(stderr, "idle-clients: login %ld: %s\n", i, strerror(-err));
			n = i;
			break;
		}
	}
	printf("ready %ld\n", n);
	fflush(stdout);
	sleep((unsigned)secs);
	for (long i = 0; i < n; i++)
		kd_client_close(c[i]);
	free(c);
	return 0;
}
