// SPDX-License-Identifier: MIT
/* tls-bench [SECONDS] [SIZE]: kderpd's TLS relay with the crypto in
 * OpenSSL vs in the kernel (kTLS), one process, one sender and one receiver
 * over TLS 1.2 through an in-process server. Prints delivered Gbit/s and
 * the CPU seconds the server's worker threads spent per delivered Gbit, as
 * VMTEST lines for the QEMU matrix (tests/vm/run.sh). Under TCG the
 * absolute numbers are meaningless; compare the two modes of one run. */
#include <dirent.h>
#include <errno.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "log.h"
#include "server.h"

struct rx {
	struct kd_client *c;
	volatile int stop;
	uint64_t bytes, frames;
};

static void *rx_main(void *arg)
{
	struct rx *r = arg;
	struct kd_client_msg m;

	while (!r->stop) {
		if (kd_client_recv(r->c, &m, 200) == 0 && m.type == 0x05) {
			r->bytes += m.data_len;
			r->frames++;
		}
	}
	return NULL;
}

/* CPU seconds of every thread but the caller's and the receiver's: the
 * server's workers (the sender runs in the calling thread). */
static double threads_cpu(pid_t skip1, pid_t skip2)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	double total = 0;
	long hz = sysconf(_SC_CLK_TCK);

	while (d && (e = readdir(d))) {
		pid_t tid = (pid_t)atoi(e->d_name);
		if (tid <= 0 || tid == skip1 || tid == skip2)
			continue;
		char path[64], buf[512];
		snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(buf, sizeof(buf), f)) {
			char *p = strrchr(buf, ')');
			unsigned long ut = 0, st = 0;
			if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
				total += (double)(ut + st) / (double)hz;
		}
		fclose(f);
	}
	if (d)
		closedir(d);
	return total;
}

static pid_t rx_tid;
static void *rx_wrap(void *arg)
{
	rx_tid = gettid();
	return rx_main(arg);
}

static int run(bool ktls, int secs, size_t size)
{
	struct kd_server_config cfg;
	struct kd_server *s;
	const char *mode = ktls ? "ktls" : "openssl";

	kd_server_config_defaults(&cfg);
	cfg.addr = "127.0.0.1:0";
	cfg.workers = 1;
	cfg.certmode = "dev";
	cfg.hostname = "127.0.0.1";
	cfg.http_port = -1;
	cfg.tls_max_version = TLS1_2_VERSION; /* kTLS both ways with OpenSSL 3.0 */
	cfg.no_ktls = !ktls;
	kd_keypair_generate(&cfg.keys);
	if (kd_server_new(&s, &cfg) || kd_server_start(s)) {
		printf("VMTEST tls_bench.%s FAIL server did not start\n", mode);
		return 1;
	}
	char url[64];
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/derp", kd_server_port(s));
	struct kd_client_opts o = {.url = url, .insecure = true, .timeout_ms = 20000};
	struct kd_client *a, *b;
	kd_keypair_generate(&o.key);
	int e1 = kd_client_connect(&a, &o);
	struct kd_keypair kb;
	kd_keypair_generate(&kb);
	o.key = kb;
	int e2 = kd_client_connect(&b, &o);
	if (e1 || e2) {
		printf("VMTEST tls_bench.%s FAIL login: %s\n", mode, strerror(-(e1 ? e1 : e2)));
		return 1;
	}
	struct rx r = {.c = b};
	pthread_t th;
	pthread_create(&th, NULL, rx_wrap, &r);
	uint8_t *pkt = calloc(1, size);
	double cpu0 = -1;
	uint64_t t0 = kd_client_clock_ms(), sent = 0;
	kd_client_cork(a, true);
	while (kd_client_clock_ms() - t0 < (uint64_t)secs * 1000) {
		if (cpu0 < 0)
			cpu0 = threads_cpu(gettid(), rx_tid);
		int err = kd_client_send_packet(a, kb.pub, pkt, size);
		if (err == -ENOBUFS || err == -EAGAIN) {
			kd_client_flush_wait(a, 1000);
			continue;
		}
		if (err)
			break;
		sent++;
		if (sent % 32 == 0)
			kd_client_flush(a);
	}
	kd_client_flush_wait(a, 5000);
	usleep(300000);
	double cpu = threads_cpu(gettid(), rx_tid) - cpu0;
	double elapsed = (double)(kd_client_clock_ms() - t0) / 1000.0;
	r.stop = 1;
	pthread_join(th, NULL);
	double gbit = (double)r.bytes * 8 / 1e9;
	char metrics_line[128] = "?";
	char *text;
	size_t len;
	if (kd_server_metrics(s, &text, &len) == 0) {
		char *p = strstr(text, "kderp_ktls_connections_total{direction=\"rx\",result=\"on\"}");
		if (p)
			snprintf(metrics_line, sizeof(metrics_line), "%.*s", (int)strcspn(p, "\n"), p);
		free(text);
	}
	printf("VMTEST tls_bench.%s PASS size=%zu sent=%llu delivered=%llu gbps=%.3f server_cpu_s=%.2f "
	       "server_cpu_s_per_gbit=%.3f [%s]\n",
	       mode, size, (unsigned long long)sent, (unsigned long long)r.frames, gbit / elapsed, cpu,
	       gbit > 0 ? cpu / gbit : 0, metrics_line);
	kd_client_close(a);
	kd_client_close(b);
	kd_server_free(s);
	free(pkt);
	return 0;
}

int main(int argc, char **argv)
{
	int secs = argc > 1 ? atoi(argv[1]) : 3;
	size_t size = argc > 2 ? (size_t)atoi(argv[2]) : 1400;

	if (sodium_init() < 0)
		return 1;
	kd_log_set_level(KD_LOG_WARN);
	int rc = run(false, secs, size);
	rc |= run(true, secs, size);
	return rc;
}
