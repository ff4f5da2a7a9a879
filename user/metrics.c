// SPDX-License-Identifier: MIT
/* /debug/varz: Prometheus text with the reference's metric names (spec §10)
 * plus kderp's own (kderp_*). Counters are summed over workers. */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "server_internal.h"

struct out {
	char *buf;
	size_t len, cap;
	int err;
};

__attribute__((format(printf, 2, 3))) static void emit(struct out *o, const char *fmt, ...)
{
	va_list ap;

	for (;;) {
		size_t room = o->cap - o->len;
		va_start(ap, fmt);
		int n = vsnprintf(o->buf ? o->buf + o->len : NULL, o->buf ? room : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			o->err = -1;
			return;
		}
		if ((size_t)n < room) {
			o->len += (size_t)n;
			return;
		}
		size_t cap = o->cap ? o->cap * 2 : 16384;
		while (cap < o->len + (size_t)n + 1)
			cap *= 2;
		char *b = realloc(o->buf, cap);
		if (!b) {
			o->err = -1;
			return;
		}
		o->buf = b;
		o->cap = cap;
	}
}

static void counter(struct out *o, const char *name, uint64_t v)
{
	emit(o, "# TYPE %s counter\n%s %llu\n", name, name, (unsigned long long)v);
}

static void gauge(struct out *o, const char *name, int64_t v)
{
	emit(o, "# TYPE %s gauge\n%s %lld\n", name, name, (long long)v);
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	if (!d)
		return 0;
	while (readdir(d))
		n++;
	closedir(d);
	return n > 3 ? n - 3 : 0; /* ".", ".." and the DIR's own fd */
}

static long rss_bytes(void)
{
	long pages = 0, rss = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (!f)
		return 0;
	if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
		rss = 0;
	fclose(f);
	return rss * sysconf(_SC_PAGESIZE);
}

int kd_metrics_render(struct kd_server *s, char **outp, size_t *lenp)
{
	struct kd_counters t;
	struct out o = {0};
	double avg_q = 0;

	memset(&t, 0, sizeof(t));
	for (int i = 0; i < s->nworkers; i++) {
		const uint64_t *src = (const uint64_t *)&s->workers[i].ctr;
		uint64_t *dst = (uint64_t *)&t;
		/* every field but the trailing double is a u64 counter */
		for (size_t k = 0; k < offsetof(struct kd_counters, avg_queue_ms) / sizeof(uint64_t); k++)
			dst[k] += __atomic_load_n(&src[k], __ATOMIC_RELAXED);
		avg_q += s->workers[i].ctr.avg_queue_ms / s->nworkers;
	}

	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	double cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
		     ru.ru_stime.tv_usec / 1e6;
	emit(&o, "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.3f\n", cpu);
	gauge(&o, "process_resident_memory_bytes", rss_bytes());
	gauge(&o, "process_open_fds", count_fds());
	emit(&o, "# TYPE uptime_sec counter\nuptime_sec %llu\n",
	     (unsigned long long)((kd_now_ms() - s->start_ms) / 1000));

	gauge(&o, "derp_current_connections", __atomic_load_n(&s->g_conns, __ATOMIC_RELAXED));
	gauge(&o, "derp_current_home_connections", __atomic_load_n(&s->g_home, __ATOMIC_RELAXED));
	gauge(&o, "derp_current_notideal_connections", __atomic_load_n(&s->g_notideal, __ATOMIC_RELAXED));
	int64_t local = __atomic_load_n(&s->g_clients, __ATOMIC_RELAXED);
	int64_t remote = __atomic_load_n(&s->g_remote_only, __ATOMIC_RELAXED);
	gauge(&o, "derp_clients_total", local + remote);
	gauge(&o, "derp_clients_local", local);
	gauge(&o, "derp_clients_remote", remote);
	gauge(&o, "derp_current_dup_client_keys", __atomic_load_n(&s->g_dup_keys, __ATOMIC_RELAXED));
	gauge(&o, "derp_current_dup_client_conns", __atomic_load_n(&s->g_dup_conns, __ATOMIC_RELAXED));
	counter(&o, "derp_total_dup_client_conns", __atomic_load_n(&s->total_dup_client_conns, __ATOMIC_RELAXED));
	gauge(&o, "derp_watchers", __atomic_load_n(&s->g_watchers, __ATOMIC_RELAXED));
	gauge(&o, "derp_current_file_descriptors", count_fds());
	counter(&o, "derp_accepts", t.accepts);
	counter(&o, "derp_packets_received", t.packets_received);
	counter(&o, "derp_bytes_received", t.bytes_received);
	emit(&o, "# TYPE derp_packets_received_kind counter\n");
	static const char *const kinds[] = DERP_KIND_NAMES;
	for (int k = 0; k < DERP_KIND_MAX; k++)
		emit(&o, "derp_packets_received_kind{kind=\"%s\"} %llu\n", kinds[k],
		     (unsigned long long)t.packets_received_kind[k]);
	counter(&o, "derp_packets_sent", t.packets_sent);
	counter(&o, "derp_bytes_sent", t.bytes_sent);
	counter(&o, "derp_packets_forwarded_out", t.packets_forwarded_out);
	counter(&o, "derp_packets_forwarded_in", t.packets_forwarded_in);
	counter(&o, "derp_peer_gone_disconnected_frames", t.peer_gone_disconnected_frames);
	counter(&o, "derp_peer_gone_not_here_frames", t.peer_gone_not_here_frames);
	counter(&o, "derp_got_ping", t.got_ping);
	counter(&o, "derp_sent_pong", t.sent_pong);
	counter(&o, "derp_home_moves_in", t.home_moves_in);
	counter(&o, "derp_home_moves_out", t.home_moves_out);
	counter(&o, "derp_unknown_frames", t.unknown_frames);
	counter(&o, "derp_multiforwarder_created", __atomic_load_n(&s->multiforwarder_created, __ATOMIC_RELAXED));
	counter(&o, "derp_multiforwarder_deleted", __atomic_load_n(&s->multiforwarder_deleted, __ATOMIC_RELAXED));
	counter(&o, "derp_packet_forwarder_delete_other_value",
		__atomic_load_n(&s->forwarder_delete_other, __ATOMIC_RELAXED));
	counter(&o, "derp_sclient_write_timeouts", t.sclient_write_timeouts);
	emit(&o, "derp_average_queue_duration_ms %.3f\n", avg_q);

	static const uint32_t bounds[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20, 25, 50, 100};
	uint64_t cum = 0;
	emit(&o, "# TYPE derp_buffered_write_frames histogram\n");
	for (size_t b = 0; b < sizeof(bounds) / sizeof(bounds[0]); b++) {
		cum += t.buffered_write_frames[b];
		emit(&o, "derp_buffered_write_frames_bucket{le=\"%u\"} %llu\n", bounds[b], (unsigned long long)cum);
	}
	cum += t.buffered_write_frames[16];
	emit(&o, "derp_buffered_write_frames_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
	emit(&o, "derp_buffered_write_frames_sum %llu\nderp_buffered_write_frames_count %llu\n",
	     (unsigned long long)t.buffered_write_frames_sum, (unsigned long long)t.buffered_write_flushes);

	static const char *const reasons[] = {
#define KD_X(id, name) name,
		DERP_DROP_REASONS(KD_X)
#undef KD_X
	};
	emit(&o, "# HELP derp_packets_dropped DERP packets dropped by reason and by kind\n"
		 "# TYPE derp_packets_dropped counter\n");
	for (int r = 0; r < DERP_DROP_MAX; r++)
		for (int k = 0; k < DERP_KIND_MAX; k++)
			emit(&o, "derp_packets_dropped{reason=\"%s\",kind=\"%s\"} %llu\n", reasons[r], kinds[k],
			     (unsigned long long)t.dropped[r][k]);
	emit(&o, "# HELP derp_bytes_dropped DERP bytes dropped by reason and by kind\n"
		 "# TYPE derp_bytes_dropped counter\n");
	for (int r = 0; r < DERP_DROP_MAX; r++)
		for (int k = 0; k < DERP_KIND_MAX; k++)
			emit(&o, "derp_bytes_dropped{reason=\"%s\",kind=\"%s\"} %llu\n", reasons[r], kinds[k],
			     (unsigned long long)t.bytes_dropped[r][k]);
	counter(&o, "derp_websocket_accepts", t.websocket_accepts);
	if (s->tls) {
		static const char *const kr[] = {
#define KD_X(id, name) name,
			KD_KTLS_RESULTS(KD_X)
#undef KD_X
		};
		emit(&o, "# HELP kderp_ktls_connections_total TLS connections by direction and whether the kernel does the crypto\n"
			 "# TYPE kderp_ktls_connections_total counter\n");
		for (int d = 0; d < 2; d++)
			for (int r = 0; r < KD_KTLS_MAX; r++)
				emit(&o, "kderp_ktls_connections_total{direction=\"%s\",result=\"%s\"} %llu\n",
				     d ? "rx" : "tx", kr[r], (unsigned long long)t.ktls[d][r]);
		emit(&o, "# TYPE derper_tls_request_version counter\n"
			 "derper_tls_request_version{version=\"1.2\"} %llu\n"
			 "derper_tls_request_version{version=\"1.3\"} %llu\n"
			 "derper_tls_request_version{version=\"unknown\"} %llu\n",
		     (unsigned long long)t.tls_versions[0], (unsigned long long)t.tls_versions[1],
		     (unsigned long long)t.tls_versions[2]);
		counter(&o, "tls_listener_accepted_connections", __atomic_load_n(&s->tls_accepted, __ATOMIC_RELAXED));
		counter(&o, "tls_listener_rejected_connections", t.accept_rejected);
	}

	/* kderp's own */
	static const char *const hs[] = {
#define KD_X(id, name) name,
		KD_HS_ERRORS(KD_X)
#undef KD_X
	};
	emit(&o, "# HELP kderp_handshake_errors_total DERP handshakes that failed, by reason\n"
		 "# TYPE kderp_handshake_errors_total counter\n");
	for (int i = 0; i < KD_HS_MAX; i++)
		emit(&o, "kderp_handshake_errors_total{reason=\"%s\"} %llu\n", hs[i],
		     (unsigned long long)t.handshake_errors[i]);
	counter(&o, "kderp_http_requests_total", t.http_requests);
	counter(&o, "kderp_connection_errors_total", t.conn_errors);
	counter(&o, "kderp_accept_rejected_total", t.accept_rejected);
	counter(&o, "kderp_keepalives_sent_total", t.keepalives_sent);
	counter(&o, "kderp_health_frames_total", t.health_frames);
	counter(&o, "kderp_watch_conns_total", t.watch_updates);
	counter(&o, "kderp_restarting_frames_total", t.restarting_frames);
	emit(&o, "# HELP kderp_sender_pauses_total Senders whose reads paused for backpressure, by cause\n"
		 "# TYPE kderp_sender_pauses_total counter\n"
		 "kderp_sender_pauses_total{reason=\"dst_congested\"} %llu\n"
		 "kderp_sender_pauses_total{reason=\"dst_worker_behind\"} %llu\n",
	     (unsigned long long)t.pauses[KD_PAUSE_DST_CONGESTED], (unsigned long long)t.pauses[KD_PAUSE_WORKER_BEHIND]);
	gauge(&o, "kderp_workers", s->nworkers);
	if (s->offload) {
		char off[8192];
		int n = kd_offload_metrics(s->offload, off, sizeof(off));
		if (n > 0)
			emit(&o, "%.*s", n, off);
		counter(&o, "kderp_offloaded_connections_total", t.offloaded);
		counter(&o, "kderp_offload_failures_total", t.offload_failed);
		counter(&o, "kderp_offload_stuck_closed_total", t.offload_stuck);
		if (s->cfg.offload == 2) {
			emit(&o, "# HELP kderp_offload_auto_decisions_total Plain-TCP clients -offload=auto moved to "
				 "the kernel or kept, by reason.\n# TYPE kderp_offload_auto_decisions_total counter\n");
			for (int d = 0; d < KD_AUTO_DECISION_MAX; d++)
				emit(&o, "kderp_offload_auto_decisions_total{decision=\"%s\"} %llu\n",
				     kd_auto_decision_name((enum kd_auto_decision)d),
				     (unsigned long long)t.offload_auto[d]);
		}
	}
	if (s->adm) {
		char adm[4096];
		int n = kd_admission_metrics(s->adm, adm, sizeof(adm));
		if (n > 0)
			emit(&o, "%.*s", n, adm);
	}
	if (s->extra_metrics) {
		/* other planes (STUN, XDP, offload) render their own families */
		char extra[16384];
		int n = s->extra_metrics(s->extra_metrics_arg, extra, sizeof(extra));
		if (n > 0)
			emit(&o, "%.*s", n, extra);
	}

	if (o.err) {
		free(o.buf);
		return -1;
	}
	*outp = o.buf;
	*lenp = o.len;
	return 0;
}

/* /debug/vars: every sample of the text exposition as "name{labels}": value.
 * Flat rather than expvar's nesting: a documented simplification. */
int kd_metrics_render_json(struct kd_server *s, char **outp, size_t *lenp)
{
	char *text = NULL;
	size_t len = 0;
	struct out o = {0};
	bool first = true;

	if (kd_metrics_render(s, &text, &len) != 0)
		return -1;
	emit(&o, "{");
	for (char *line = text; line < text + len;) {
		char *nl = memchr(line, '\n', (size_t)(text + len - line));
		size_t n = nl ? (size_t)(nl - line) : (size_t)(text + len - line);
		char *sp = memrchr(line, ' ', n);
		if (line[0] != '#' && sp) {
			emit(&o, "%s\n\t\"", first ? "" : ",");
			for (char *p = line; p < sp; p++)
				emit(&o, *p == '"' ? "\\\"" : "%c", *p);
			emit(&o, "\": %.*s", (int)(n - (size_t)(sp + 1 - line)), sp + 1);
			first = false;
		}
		line += n + 1;
	}
	emit(&o, "\n}\n");
	free(text);
	if (o.err) {
		free(o.buf);
		return -1;
	}
	*outp = o.buf;
	*lenp = o.len;
	return 0;
}
