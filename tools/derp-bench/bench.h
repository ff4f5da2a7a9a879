/* SPDX-License-Identifier: MIT */
/* derp-bench internals: pairs, workers, latency probe, CPU accounting. */
#ifndef KD_BENCH_H
#define KD_BENCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "bench_payload.h"
#include "client.h"

#define BENCH_MIN_SIZE KD_BENCH_HDR_LEN

struct bench_cfg {
	const char *url, *dial_addr, *ca_file;
	bool insecure, raw_tcp, latency, json, quiet;
	int pairs, threads, size;
	double duration_s;
	double rate_bps, rate_pps; /* aggregate target; 0 = unpaced */
	int batch;                 /* bytes per write */
	int server_pid;
	int latency_interval_us;
	uint16_t forward_port; /* raw mode through the forwarder (forward.c); 0 = direct */
};

struct bench_pair {
	uint32_t id;
	struct kd_client *tx, *rx;
	struct kd_keypair tx_key, rx_key;
	int worker;
	/* sender side, owned by the pair's worker */
	uint64_t next_seq;
	double tokens;
	bool tx_blocked;
	struct kd_bench_rx verify; /* receiver side, same worker */
	/* written by the worker, read by the progress and report code */
	_Atomic uint64_t sent, received, bytes, lost, out_of_order, corrupt;
};

struct bench_run {
	const struct bench_cfg *cfg;
	struct bench_pair *pairs;
	int npairs;
	atomic_bool stop_tx;   /* senders stop generating */
	atomic_bool stop_all;  /* workers exit */
};

/* worker.c */
void *bench_worker(void *arg); /* arg: struct bench_worker_arg */
struct bench_worker_arg {
	struct bench_run *run;
	int index;
};

/* latency.c */
struct bench_latency {
	uint64_t samples, lost;
	double p50_us, p90_us, p99_us, p999_us, min_us, max_us;
};
struct bench_latency_ctx {
	const struct bench_cfg *cfg;
	struct kd_client *pinger, *echo;
	const atomic_bool *stop;
	struct bench_latency result;
	int err;
};
void *bench_latency_thread(void *arg); /* arg: struct bench_latency_ctx */

/* forward.c: the byte-forwarder baseline, a child process */
int bench_forwarder_start(int threads, uint16_t *port, int *pid);
void bench_forwarder_stop(int pid);

/* cpu.c */
struct bench_cpu_sample {
	double self_s;            /* user+sys of this process */
	double server_s;          /* user+sys of --server-pid, -1 if unknown */
	uint64_t machine_busy, machine_total; /* /proc/stat jiffies */
	int64_t wall_ms;
};
void bench_cpu_sample(struct bench_cpu_sample *s, int server_pid);
struct bench_cpu {
	double self_pct, server_pct, machine_pct; /* % of one core; machine: % of all cores */
	int ncpu;
};
void bench_cpu_diff(struct bench_cpu *out, const struct bench_cpu_sample *a,
		    const struct bench_cpu_sample *b);

/* setup.c */
int bench_connect_pairs(struct bench_run *run);
int bench_connect_latency(const struct bench_cfg *cfg, struct kd_client **pinger,
			  struct kd_client **echo);
void bench_close_pairs(struct bench_run *run);

#endif
