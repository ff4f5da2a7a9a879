/* SPDX-License-Identifier: MIT */
/* Admission webhook (-verify-client-url, spec §7.10b) off the event loop.
 *
 * A small pool of worker threads POSTs {"NodePublic":..,"Source":..} to the
 * webhook; each daemon worker owns a kd_admission_queue (an eventfd plus a
 * locked list) where verdicts arrive, and polls it from its loop.
 *
 * Verdicts, as the reference:
 *   transport error, timeout  allow if fail_open, else deny
 *   status != 200             deny "admission controller: <status> <reason>"
 *   200, body not JSON        deny
 *   200, {"Allow": true}      allow (field name any case)
 *   200, otherwise            deny "admission controller: <key>/<ip> not allowed"
 * Deviations: fail_open defaults to false here (derper's flag defaults to
 * true: a webhook that is down must not open the relay to everyone unless
 * the operator says so); redirects are not followed and HTTP(S)_PROXY is
 * not used; DNS time counts against the deadline but a resolver that hangs
 * is only noticed when it returns. A body that breaks off after the head is
 * judged on what arrived, as Go's json.Decoder would (usually: deny). */
#ifndef KD_ADMISSION_H
#define KD_ADMISSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http_client.h"

#define KD_ADMISSION_TIMEOUT_MS 5000
#define KD_ADMISSION_THREADS 2
#define KD_ADMISSION_MAX_PENDING 4096
#define KD_ADMISSION_THREADS_MAX 64
/* fits "admission controller: nodekey:<64 hex>/<IPv6> not allowed" */
#define KD_ADMISSION_REASON_MAX 192
/* a textual IP, with room for an IPv6 zone */
#define KD_ADMISSION_SOURCE_MAX 64

struct kd_admission_opts {
	const char *url;      /* http://host[:port]/path or https://... */
	bool fail_open;       /* allow when the webhook cannot be reached */
	int timeout_ms;       /* whole request; 0 = KD_ADMISSION_TIMEOUT_MS */
	int threads;          /* 0 = KD_ADMISSION_THREADS */
	int max_pending;      /* queued, not yet started; 0 = KD_ADMISSION_MAX_PENDING */
	const char *ca_file;  /* https: PEM trust anchors, NULL = system roots */
	bool insecure;        /* https: skip certificate verification */
	bool defer_threads;   /* start them in kd_admission_start (after a privilege drop) */
};

/* How a check ended: what metrics and logs want beyond allow/deny. */
enum kd_admission_outcome {
	KD_ADM_ALLOWED = 0,   /* the webhook said {"Allow":true} */
	KD_ADM_DENIED,        /* 200 without Allow true */
	KD_ADM_STATUS,        /* status != 200: denied */
	KD_ADM_BAD_JSON,      /* 200 with a body that is not JSON: denied */
	KD_ADM_TRANSPORT,     /* no usable response: allow == fail_open */
	KD_ADM_CANCELED,      /* kd_admission_free ran first: denied */
};

struct kd_admission_result {
	uint64_t cookie;
	bool allow;
	enum kd_admission_outcome outcome;
	enum kd_http_err err; /* for KD_ADM_TRANSPORT (and a broken-off body) */
	char reason[KD_ADMISSION_REASON_MAX];
};

struct kd_admission;
struct kd_admission_queue;

/* Parses the URL, builds the TLS context (https), starts the threads. Logs
 * once on failure: -EINVAL (bad URL or options), -ENOMEM, -EIO (TLS setup),
 * or the pthread error. *out NULL on failure. */
int kd_admission_new(struct kd_admission **out, const struct kd_admission_opts *o);
/* With defer_threads: starts them (checks queue until then); 0 or the
 * pthread error as -errno; a no-op once they run. */
int kd_admission_start(struct kd_admission *a);
/* SIGHUP: checks that start from now on use o's url, fail_open, timeout_ms,
 * ca_file and insecure (threads and max_pending stay); checks in flight
 * finish against the old webhook. Logs once on failure and keeps the old
 * settings: 0, -EINVAL, -ENOMEM, -EIO. */
int kd_admission_reconfigure(struct kd_admission *a, const struct kd_admission_opts *o);
/* NULL-safe. Aborts requests in flight and completes every queued and
 * in-flight request as KD_ADM_CANCELED (allow false) on its queue, then
 * joins the threads. */
void kd_admission_free(struct kd_admission *a);

/* One per daemon worker thread. */
int kd_admission_queue_new(struct kd_admission_queue **out);
/* NULL-safe. Requests still pending for this queue complete into nothing;
 * the memory goes away when the last of them is done. */
void kd_admission_queue_free(struct kd_admission_queue *q);
/* Readable (EPOLLIN) while results wait; kd_admission_poll resets it. */
int kd_admission_queue_fd(const struct kd_admission_queue *q);

/* Thread safe. Queues a check of key from source_ip (NULL or "" when
 * unknown); the verdict arrives on q carrying cookie. 0, -EBUSY when
 * max_pending checks are already queued (the caller applies fail_open
 * itself, see kd_admission_fail_open), -EINVAL (source_ip too long, NULL
 * arguments), -ESHUTDOWN while freeing, -ENOMEM. */
int kd_admission_submit(struct kd_admission *a, struct kd_admission_queue *q,
			const uint8_t key[32], const char *source_ip, uint64_t cookie);
/* Non-blocking: moves up to n completed results into out (oldest first) and
 * returns how many. Call until it returns less than n after the fd fires. */
size_t kd_admission_poll(struct kd_admission_queue *q, struct kd_admission_result *out, size_t n);

bool kd_admission_fail_open(const struct kd_admission *a);

/* Blocking check in the caller's thread, for tools and tests. 0 and the
 * verdict, or -EINVAL for bad arguments. reason may be NULL. */
int kd_admission_check_sync(struct kd_admission *a, const uint8_t key[32], const char *source_ip,
			    bool *allow, char *reason, size_t reason_cap);

/* The same, with the whole result (cookie 0). */
int kd_admission_check(struct kd_admission *a, const uint8_t key[32], const char *source_ip,
		       struct kd_admission_result *res);
/* "allowed", "denied", "status", "bad_json", "transport", "canceled" */
const char *kd_admission_outcome_name(enum kd_admission_outcome o);

/* Prometheus text, to append to /debug/varz:
 *   kderp_admission_checks_total{result="allowed"|"denied"}  final verdicts
 *   kderp_admission_errors_total{kind=dns|connect|tls|timeout|io|protocol|
 *                                status|bad_json|canceled}
 *   kderp_admission_fail_open_allowed_total, kderp_admission_busy_total
 *   (submits refused with -EBUSY), kderp_admission_pending (queued + in
 *   flight). A body that broke off after a 200 head counts as bad_json and
 *   as its transport kind. Returns the length (a NUL follows) or -ENOSPC. */
int kd_admission_metrics(const struct kd_admission *a, char *out, size_t cap);

/* The verdict on a finished kd_http_post: pure, for the workers and the
 * fuzzer. err is what kd_http_post returned. */
void kd_admission_judge(const struct kd_http_resp *r, enum kd_http_err err, const char *detail,
			const uint8_t key[32], const char *source_ip, bool fail_open,
			struct kd_admission_result *res);

#endif
