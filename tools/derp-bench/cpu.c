// SPDX-License-Identifier: MIT
/* CPU accounting: this process (getrusage), the relay (/proc/PID/stat) and
 * the whole machine (/proc/stat), where kernel work on behalf of the relay
 * (TCP, sockmap) shows up. */
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench.h"

static double tv_s(struct timeval tv)
{
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static double proc_cpu_s(int pid)
{
	char path[64], buf[1024], *p;
	unsigned long utime, stime;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* the command name may contain spaces: fields restart after the last ')' */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
		return -1;
	return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static void machine(uint64_t *busy, uint64_t *total)
{
	unsigned long long v[10] = {0};
	FILE *f = fopen("/proc/stat", "r");

	*busy = *total = 0;
	if (!f)
		return;
	if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
		   &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]) >= 8) {
		/* guest time is already inside user/nice */
		for (int i = 0; i < 8; i++)
			*total += v[i];
		*busy = *total - v[3] - v[4]; /* minus idle and iowait */
	}
	fclose(f);
}

void bench_cpu_sample(struct bench_cpu_sample *s, int server_pid)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	s->self_s = tv_s(ru.ru_utime) + tv_s(ru.ru_stime);
	s->server_s = server_pid > 0 ? proc_cpu_s(server_pid) : -1;
	machine(&s->machine_busy, &s->machine_total);
	s->wall_ms = kd_client_clock_ms();
}

void bench_cpu_diff(struct bench_cpu *out, const struct bench_cpu_sample *a,
		    const struct bench_cpu_sample *b)
{
	double wall = (double)(b->wall_ms - a->wall_ms) / 1000.0;
	uint64_t dt = b->machine_total - a->machine_total;

	out->ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (wall <= 0)
		wall = 1e-9;
	out->self_pct = 100.0 * (b->self_s - a->self_s) / wall;
	out->server_pct = a->server_s >= 0 && b->server_s >= 0 ? 100.0 * (b->server_s - a->server_s) / wall : -1;
	out->machine_pct = dt ? 100.0 * (double)(b->machine_busy - a->machine_busy) / (double)dt : 0;
}
