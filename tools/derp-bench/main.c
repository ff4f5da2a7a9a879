// SPDX-License-Identifier: MIT
/* derp-bench: load, loss and latency through any DERP server, and the same
 * traffic over plain loopback TCP as the baseline (--raw-tcp).
 *
 *   derp-bench --url http://127.0.0.1:3340/derp --pairs 10 --size 1400 --duration 5
 *              [--rate 2g|500m|100kpps] [--raw-tcp] [--latency] [--json] [--server-pid PID]
 *
 * Exit: 0 ok, 1 run failed (could not connect, a connection died), 2 usage. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "log.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: derp-bench [--url URL | --raw-tcp] [options]\n"
		"  --url URL            DERP server, http://host:port/derp or https://...\n"
		"  --dial ADDR          connect to ip:port instead of the URL host\n"
		"  --insecure           https: do not verify the certificate\n"
		"  --ca-file F          https: CA bundle\n"
		"  --raw-tcp            baseline: same traffic over direct loopback TCP, no relay\n"
		"  --pairs N            sender/receiver pairs (default 1; 0 with --latency = idle)\n"
		"  --size B             payload bytes per packet (default 1400, min %d, max %u)\n"
		"  --duration S         seconds of load (default 5)\n"
		"  --rate R             aggregate pacing: bits/s with k/m/g suffix (2g), or packets/s\n"
		"                       with a pps suffix (100kpps); default unpaced\n"
		"  --batch B            bytes per write (default 65536)\n"
		"  --threads T          worker threads (default: online CPUs)\n"
		"  --latency            also run a ping/echo pair and report RTT percentiles\n"
		"  --latency-interval-us U  gap between pings (default 1000)\n"
		"  --server-pid PID     report that process's CPU (the relay)\n"
		"  --baseline           run the relay, then the same load over raw TCP and through a\n"
		"                       byte forwarder (a child process copying between two\n"
		"                       connections, no DERP); report all three and their ratios\n"
		"                       (needs --url)\n"
		"  --json               one JSON object on stdout instead of the table\n"
		"  --quiet              no progress lines on stderr\n",
		BENCH_MIN_SIZE, DERP_MAX_PACKET);
}

static int parse_rate(const char *s, double *bps, double *pps)
{
	char *end;
	double v = strtod(s, &end), mul = 1;

	if (end == s || v < 0)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': mul = 1e3; end++; break;
	case 'm': case 'M': mul = 1e6; end++; break;
	case 'g': case 'G': mul = 1e9; end++; break;
	default: break;
	}
	if (strcmp(end, "pps") == 0) {
		*pps = v * mul;
		*bps = 0;
		return 0;
	}
	if (*end == '\0' || strcmp(end, "bps") == 0 || strcmp(end, "bit") == 0) {
		*bps = v * mul;
		*pps = 0;
		return 0;
	}
	return -EINVAL;
}

static uint64_t sum(const struct bench_run *run, size_t field_off)
{
	uint64_t t = 0;

	for (int i = 0; i < run->npairs; i++)
		t += atomic_load_explicit((_Atomic uint64_t *)((char *)&run->pairs[i] + field_off),
					  memory_order_relaxed);
	return t;
}
#define SUM(run, f) sum(run, offsetof(struct bench_pair, f))

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

struct report {
	double secs;
	uint64_t sent, received, received_in_window, lost_gaps, ooo, corrupt, bytes_in_window;
	double pps, gbps, loss_pct;
	struct bench_cpu cpu;
	bool have_latency;
	struct bench_latency lat;
	int conn_errors;
};

static void print_table(const struct bench_cfg *cfg, const struct report *r)
{
	printf("derp-bench  %s  pairs=%d size=%d duration=%.1fs threads=%d%s\n",
	       cfg->forward_port ? "byte forwarder (no DERP)" : cfg->raw_tcp ? "raw-tcp (no relay)" : cfg->url, cfg->pairs, cfg->size, r->secs, cfg->threads,
	       cfg->rate_bps > 0 || cfg->rate_pps > 0 ? "  paced" : "  unpaced");
	printf("  %-22s %14s\n", "metric", "value");
	printf("  %-22s %14llu\n", "sent packets", (unsigned long long)r->sent);
	printf("  %-22s %14llu\n", "received packets", (unsigned long long)r->received);
	printf("  %-22s %14.0f\n", "delivered pkt/s", r->pps);
	printf("  %-22s %14.3f\n", "delivered Gbit/s", r->gbps);
	printf("  %-22s %13.4f%%\n", "loss", r->loss_pct);
	printf("  %-22s %14llu\n", "seq gaps", (unsigned long long)r->lost_gaps);
	printf("  %-22s %14llu\n", "out of order", (unsigned long long)r->ooo);
	printf("  %-22s %14llu\n", "corrupt", (unsigned long long)r->corrupt);
	printf("  %-22s %13.1f%%\n", "bench CPU (1 core)", r->cpu.self_pct);
	if (r->cpu.server_pct >= 0)
		printf("  %-22s %13.1f%%\n", "relay CPU (1 core)", r->cpu.server_pct);
	printf("  %-22s %13.1f%%\n", "machine CPU (all)", r->cpu.machine_pct);
	if (r->have_latency) {
		printf("  %-22s %14llu\n", "latency samples", (unsigned long long)r->lat.samples);
		printf("  %-22s %14llu\n", "latency lost", (unsigned long long)r->lat.lost);
		printf("  %-22s %14.1f\n", "rtt p50 us", r->lat.p50_us);
		printf("  %-22s %14.1f\n", "rtt p90 us", r->lat.p90_us);
		printf("  %-22s %14.1f\n", "rtt p99 us", r->lat.p99_us);
		printf("  %-22s %14.1f\n", "rtt p999 us", r->lat.p999_us);
		printf("  %-22s %14.1f\n", "rtt max us", r->lat.max_us);
	}
}

static void print_json(const struct bench_cfg *cfg, const struct report *r, bool newline)
{
	printf("{\"mode\":\"%s\",", cfg->forward_port ? "forwarder" : cfg->raw_tcp ? "raw-tcp" : "relay");
	if (!cfg->raw_tcp) {
		printf("\"url\":\"");
		for (const char *p = cfg->url; *p; p++)
			printf(*p == '"' || *p == '\\' ? "\\%c" : "%c", *p);
		printf("\",");
	}
	printf("\"pairs\":%d,\"size\":%d,\"threads\":%d,\"duration_s\":%.3f,"
	       "\"rate_bps\":%.0f,\"rate_pps\":%.0f,"
	       "\"sent\":%llu,\"received\":%llu,\"delivered_pps\":%.1f,\"delivered_gbps\":%.4f,"
	       "\"loss_pct\":%.6f,\"seq_gaps\":%llu,\"out_of_order\":%llu,\"corrupt\":%llu,"
	       "\"conn_errors\":%d,"
	       "\"cpu\":{\"bench_pct\":%.1f,\"server_pct\":",
	       cfg->pairs, cfg->size, cfg->threads, r->secs, cfg->rate_bps, cfg->rate_pps,
	       (unsigned long long)r->sent, (unsigned long long)r->received, r->pps, r->gbps, r->loss_pct,
	       (unsigned long long)r->lost_gaps, (unsigned long long)r->ooo,
	       (unsigned long long)r->corrupt, r->conn_errors, r->cpu.self_pct);
	if (r->cpu.server_pct >= 0)
		printf("%.1f", r->cpu.server_pct);
	else
		printf("null");
	printf(",\"machine_pct\":%.1f,\"ncpu\":%d}", r->cpu.machine_pct, r->cpu.ncpu);
	if (r->have_latency)
		printf(",\"latency\":{\"samples\":%llu,\"lost\":%llu,\"min_us\":%.1f,\"p50_us\":%.1f,"
		       "\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f}",
		       (unsigned long long)r->lat.samples, (unsigned long long)r->lat.lost, r->lat.min_us,
		       r->lat.p50_us, r->lat.p90_us, r->lat.p99_us, r->lat.p999_us, r->lat.max_us);
	printf(newline ? "}\n" : "}");
}

static int run_bench(const struct bench_cfg *cfg, struct report *r)
{
	struct bench_run run = {.cfg = cfg, .npairs = cfg->pairs};
	struct bench_latency_ctx lat = {.cfg = cfg};
	pthread_t *th = NULL, lat_th;
	struct bench_worker_arg *args = NULL;
	struct bench_cpu_sample c0, c1;
	bool lat_started = false;
	int err = 0, started = 0;
	int64_t t0 = 0, t_end = 0, deadline;
	uint64_t last_rx = 0;

	run.pairs = calloc((size_t)(cfg->pairs ? cfg->pairs : 1), sizeof(*run.pairs));
	th = calloc((size_t)cfg->threads, sizeof(*th));
	args = calloc((size_t)cfg->threads, sizeof(*args));
	if (!run.pairs || !th || !args) {
		err = -ENOMEM;
		goto out;
	}
	err = bench_connect_pairs(&run);
	if (err)
		goto out;
	if (cfg->latency) {
		err = bench_connect_latency(cfg, &lat.pinger, &lat.echo);
		if (err)
			goto out;
		lat.stop = &run.stop_tx;
	}

	bench_cpu_sample(&c0, cfg->server_pid);
	t0 = kd_client_clock_ms();
	if (cfg->pairs > 0) {
		for (int i = 0; i < cfg->threads; i++) {
			args[i] = (struct bench_worker_arg){.run = &run, .index = i};
			if (pthread_create(&th[i], NULL, bench_worker, &args[i])) {
				err = -errno;
				atomic_store(&run.stop_tx, true);
				atomic_store(&run.stop_all, true);
				goto join;
			}
			started++;
		}
	}
	if (cfg->latency) {
		if (pthread_create(&lat_th, NULL, bench_latency_thread, &lat) == 0)
			lat_started = true;
	}

	deadline = t0 + (int64_t)(cfg->duration_s * 1000);
	for (int64_t next = t0 + 1000; kd_client_clock_ms() < deadline;) {
		int64_t now = kd_client_clock_ms();
		int64_t until = next < deadline ? next : deadline;

		if (until > now)
			sleep_ms((int)(until - now));
		if (kd_client_clock_ms() < next)
			continue;
		if (!cfg->quiet && cfg->duration_s >= 2) {
			uint64_t rx = SUM(&run, received);

			fprintf(stderr, "derp-bench: t=%2llds  %10.0f pkt/s  %8.3f Gbit/s  sent %llu recv %llu\n",
				(long long)((next - t0) / 1000), (double)(rx - last_rx),
				(double)(rx - last_rx) * cfg->size * 8 / 1e9, (unsigned long long)SUM(&run, sent),
				(unsigned long long)rx);
			last_rx = rx;
		}
		next += 1000;
	}
	/* the measurement window ends here; what is still in flight is drained */
	t_end = kd_client_clock_ms();
	r->received_in_window = SUM(&run, received);
	r->bytes_in_window = SUM(&run, bytes);
	bench_cpu_sample(&c1, cfg->server_pid);
	atomic_store(&run.stop_tx, true);
	{
		int64_t drain_end = kd_client_clock_ms() + 3000, idle_since = kd_client_clock_ms();
		uint64_t prev = SUM(&run, received);

		while (kd_client_clock_ms() < drain_end) {
			uint64_t rx;

			sleep_ms(20);
			rx = SUM(&run, received) + SUM(&run, corrupt);
			if (rx >= SUM(&run, sent))
				break;
			if (rx != prev) {
				prev = rx;
				idle_since = kd_client_clock_ms();
			} else if (kd_client_clock_ms() - idle_since > 1000) {
				break;
			}
		}
	}
	atomic_store(&run.stop_all, true);
join:
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	if (lat_started) {
		pthread_join(lat_th, NULL);
		r->have_latency = true;
		r->lat = lat.result;
		if (lat.err)
			pr_err("bench: latency probe: %s", strerror(-lat.err));
	}
	if (err)
		goto out;

	r->secs = (double)(t_end - t0) / 1000.0;
	r->sent = SUM(&run, sent);
	r->received = SUM(&run, received);
	r->lost_gaps = SUM(&run, lost);
	r->ooo = SUM(&run, out_of_order);
	r->corrupt = SUM(&run, corrupt);
	r->pps = r->secs > 0 ? (double)r->received_in_window / r->secs : 0;
	r->gbps = r->secs > 0 ? (double)r->bytes_in_window * 8 / r->secs / 1e9 : 0;
	r->loss_pct = r->sent ? 100.0 * (double)(r->sent - (r->received < r->sent ? r->received : r->sent)) /
					(double)r->sent
			      : 0;
	for (int i = 0; i < run.npairs; i++)
		r->conn_errors += !run.pairs[i].tx + !run.pairs[i].rx;
	bench_cpu_diff(&r->cpu, &c0, &c1);
out:
	kd_client_close(lat.pinger);
	kd_client_close(lat.echo);
	if (run.pairs)
		bench_close_pairs(&run);
	free(run.pairs);
	free(th);
	free(args);
	return err;
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{"url", required_argument, NULL, 'u'},      {"dial", required_argument, NULL, 'D'},
		{"insecure", no_argument, NULL, 'k'},       {"ca-file", required_argument, NULL, 'C'},
		{"raw-tcp", no_argument, NULL, 'R'},        {"pairs", required_argument, NULL, 'p'},
		{"size", required_argument, NULL, 's'},     {"duration", required_argument, NULL, 'd'},
		{"rate", required_argument, NULL, 'r'},     {"batch", required_argument, NULL, 'b'},
		{"threads", required_argument, NULL, 't'},  {"latency", no_argument, NULL, 'L'},
		{"latency-interval-us", required_argument, NULL, 'I'},
		{"server-pid", required_argument, NULL, 'P'}, {"json", no_argument, NULL, 'j'},
		{"quiet", no_argument, NULL, 'q'},          {"help", no_argument, NULL, 'h'},
		{"baseline", no_argument, NULL, 'B'},
		{NULL, 0, NULL, 0},
	};
	struct bench_cfg cfg = {
		.pairs = 1, .size = 1400, .duration_s = 5, .batch = 65536,
		.threads = (int)sysconf(_SC_NPROCESSORS_ONLN), .latency_interval_us = 1000,
	};
	struct report r = {0}, raw = {0}, fwd = {0};
	bool baseline = false;
	int opt, err;

	kd_log_set_prefix("derp-bench");
	signal(SIGPIPE, SIG_IGN);
	while ((opt = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		switch (opt) {
		case 'u': cfg.url = optarg; break;
		case 'D': cfg.dial_addr = optarg; break;
		case 'k': cfg.insecure = true; break;
		case 'C': cfg.ca_file = optarg; break;
		case 'R': cfg.raw_tcp = true; break;
		case 'p': cfg.pairs = atoi(optarg); break;
		case 's': cfg.size = atoi(optarg); break;
		case 'd': cfg.duration_s = atof(optarg); break;
		case 'r':
			if (parse_rate(optarg, &cfg.rate_bps, &cfg.rate_pps)) {
				fprintf(stderr, "derp-bench: bad --rate %s\n", optarg);
				return 2;
			}
			break;
		case 'b': cfg.batch = atoi(optarg); break;
		case 't': cfg.threads = atoi(optarg); break;
		case 'L': cfg.latency = true; break;
		case 'I': cfg.latency_interval_us = atoi(optarg); break;
		case 'P': cfg.server_pid = atoi(optarg); break;
		case 'j': cfg.json = true; break;
		case 'q': cfg.quiet = true; break;
		case 'B': baseline = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (baseline && (!cfg.url || cfg.raw_tcp)) {
		fprintf(stderr, "derp-bench: --baseline needs --url and no --raw-tcp\n");
		return 2;
	}
	if (optind != argc || (!cfg.url && !cfg.raw_tcp) || cfg.pairs < 0 || (cfg.pairs == 0 && !cfg.latency) ||
	    cfg.size < BENCH_MIN_SIZE || cfg.size > (int)DERP_MAX_PACKET || cfg.duration_s <= 0 ||
	    cfg.batch < 1 || cfg.threads < 1 || cfg.latency_interval_us < 0) {
		usage(stderr);
		return 2;
	}
	if (cfg.url) {
		struct kd_client_url u;

		if (kd_client_url_parse(&u, cfg.url)) {
			fprintf(stderr, "derp-bench: bad --url %s\n", cfg.url);
			return 2;
		}
	}
	if (cfg.threads > cfg.pairs && cfg.pairs > 0)
		cfg.threads = cfg.pairs;
	if (cfg.rate_bps > 0)
		cfg.rate_pps = cfg.rate_bps / (cfg.size * 8.0);

	err = run_bench(&cfg, &r);
	if (!err && baseline) {
		struct bench_cfg rcfg = cfg, fcfg = cfg;

		/* same senders, receivers and accounting; only the path differs */
		rcfg.raw_tcp = true;
		rcfg.server_pid = 0;
		err = run_bench(&rcfg, &raw);
		fcfg.raw_tcp = true;
		if (!err)
			err = bench_forwarder_start(fcfg.threads > 1 ? 2 : 1, &fcfg.forward_port, &fcfg.server_pid);
		if (!err) {
			err = run_bench(&fcfg, &fwd);
			bench_forwarder_stop(fcfg.server_pid);
		}
		if (!err && cfg.json) {
			printf("{\"relay\":");
			print_json(&cfg, &r, false);
			printf(",\"raw_tcp\":");
			print_json(&rcfg, &raw, false);
			printf(",\"forwarder\":");
			print_json(&fcfg, &fwd, false);
			printf(",\"relay_to_raw_pps\":%.4f,\"forwarder_to_raw_pps\":%.4f,\"relay_to_forwarder_pps\":%.4f}\n",
			       raw.pps > 0 ? r.pps / raw.pps : 0, raw.pps > 0 ? fwd.pps / raw.pps : 0,
			       fwd.pps > 0 ? r.pps / fwd.pps : 0);
		} else if (!err) {
			print_table(&cfg, &r);
			print_table(&rcfg, &raw);
			print_table(&fcfg, &fwd);
			printf("delivered ratios: relay/raw %.3f, forwarder/raw %.3f, relay/forwarder %.3f\n"
			       "(raw: one connection, no relay; forwarder: a userspace byte copier over two\n"
			       "connections with no DERP work, the ceiling for any relay on this machine)\n",
			       raw.pps > 0 ? r.pps / raw.pps : 0, raw.pps > 0 ? fwd.pps / raw.pps : 0,
			       fwd.pps > 0 ? r.pps / fwd.pps : 0);
		}
		if (err) {
			fprintf(stderr, "derp-bench: %s\n", strerror(-err));
			return 1;
		}
		return r.conn_errors || raw.conn_errors || fwd.conn_errors ? 1 : 0;
	}
	if (err) {
		fprintf(stderr, "derp-bench: %s\n", strerror(-err));
		return 1;
	}
	if (cfg.json)
		print_json(&cfg, &r, true);
	else
		print_table(&cfg, &r);
	return r.conn_errors ? 1 : 0;
}
