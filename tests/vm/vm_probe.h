/* Shared helpers of the VM probes: result lines, loopback socket pairs,
 * fixed-key kTLS setup. Every result is one stdout line
 *   VMTEST <name> PASS|FAIL|SKIP <detail>
 * that tests/vm/run.sh collects from the serial console. */
#ifndef KD_VM_PROBE_H
#define KD_VM_PROBE_H

#include <stdbool.h>
#include <stddef.h>

enum vm_verdict { VM_PASS, VM_FAIL, VM_SKIP };

struct vm_tally {
	int pass, fail, skip;
};

extern struct vm_tally vm_tally;

/* Prints the result line (and a "# SKIP" line for skips) and counts it. */
void vm_report(const char *name, enum vm_verdict v, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* "EINVAL" for EINVAL, "ok" for 0; takes a positive errno or 0. */
const char *vm_errname(int err);

/* True when NAME matches one of the filters (prefix match); no filters
 * means everything matches. */
bool vm_selected(const char *name);
void vm_set_filters(char **filters, int n);
/* True when some test under GROUP (a name prefix) may be selected. */
bool vm_group_selected(const char *group);

/* A connected loopback TCP pair with IO timeouts: *cli is the connecting
 * end, *srv the accepted one. Returns 0 or -errno. */
int vm_tcp_pair(int *cli, int *srv);

/* Sets the "tls" ULP, then TLS_TX and TLS_RX with fixed TLS 1.2 AES-GCM-128
 * keys; the peer must be given the mirrored keys (mirror = true) for data to
 * flow. Each step's result goes to *ulp, *tx, *rx as 0 or a positive errno
 * (a step after a failed one is not tried and reads -1). */
void vm_ktls_fixed(int fd, bool mirror, int *ulp, int *tx, int *rx);

/* Sends a short message a -> b and b -> a through plain write()/read() and
 * checks it; returns 0 or a positive errno (EBADMSG on mismatch). */
int vm_ping(int a, int b);

/* True when the running kernel offers the "tls" ULP; *err gets the errno of
 * the attempt when it does not. */
bool vm_kernel_has_ktls(int *err);

int vm_ktls_openssl_run(void);
int vm_sockmap_ktls_run(void);

#endif
