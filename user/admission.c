// SPDX-License-Identifier: MIT
/* Admission webhook worker pool and completion queues (spec §7.10b). The
 * daemon's loops only ever take a mutex for a list push/pop and touch an
 * eventfd; DNS, connect, TLS and the wait for the webhook happen here in
 * worker threads. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include <openssl/err.h>

#include "admission.h"
#include "keyfile.h"
#include "log.h"
#include "tls.h"

struct req {
	struct req *next;
	struct kd_admission_queue *q;
	uint8_t key[32];
	char source[KD_ADMISSION_SOURCE_MAX];
	struct kd_admission_result res;
};

struct kd_admission_queue {
	pthread_mutex_t mu;
	int efd;
	unsigned refs;  /* the owner's, plus one per request not yet completed */
	bool closed;    /* the owner freed it: completions are dropped */
	struct req *head, *tail;
};

enum { M_ALLOWED, M_DENIED, M_FAIL_OPEN, M_BUSY, M_CANCELED, M_STATUS, M_BAD_JSON, M_MAX };

/* Where checks go. SIGHUP swaps in a new one (kd_admission_reconfigure);
 * a check in flight keeps the one it started with. */
struct target {
	atomic_uint refs;
	struct kd_url url;
	SSL_CTX *tls;
	bool fail_open;
	int timeout_ms;
	char url_text[300];     /* for log lines: no path, it may carry a token */
};

struct kd_admission {
	struct target *t;       /* under mu */
	atomic_bool fail_open;  /* t->fail_open, for the lock-free readers */
	size_t max_pending;
	int stop_fd; /* eventfd: readable once freeing starts, aborts requests in flight */

	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct req *head, *tail;
	size_t pending;
	bool stopping;

	pthread_mutex_t log_mu; /* guards log_rl, shared by the workers */
	struct kd_ratelimit log_rl;

	_Atomic uint64_t m[M_MAX];
	_Atomic uint64_t m_err[KD_HTTP_ERR_MAX];
	_Atomic int64_t m_pending;

	int nthreads, nwant;
	pthread_t threads[];
};

/* --- verdicts ----------------------------------------------------------- */

void kd_admission_judge(const struct kd_http_resp *r, enum kd_http_err err, const char *detail,
			const uint8_t key[32], const char *source_ip, bool fail_open,
			struct kd_admission_result *res)
{
	char nodekey[KD_NODEKEY_STR_LEN];
	bool allow = false;

	res->err = err;
	res->allow = false;
	if (!detail || !*detail)
		detail = kd_http_err_name(err);
	if (err == KD_HTTP_ERR_CANCELED) {
		res->outcome = KD_ADM_CANCELED;
		snprintf(res->reason, sizeof(res->reason), "admission controller: canceled");
		return;
	}
	if (!r->head_done) {
		res->outcome = KD_ADM_TRANSPORT;
		res->allow = fail_open;
		snprintf(res->reason, sizeof(res->reason), "admission controller: %s, %s", detail,
			 fail_open ? "fail-open" : "fail-closed");
		return;
	}
	if (r->status != 200) {
		/* Go prints res.Status: the code and the phrase as received */
		res->outcome = KD_ADM_STATUS;
		snprintf(res->reason, sizeof(res->reason), "admission controller: %d%s%s", r->status,
			 r->reason[0] ? " " : "", r->reason);
		return;
	}
	/* a body that broke off is still decoded, as json.Decoder would */
	if (kd_admission_response_parse(r->body, r->body_len, &allow)) {
		res->outcome = KD_ADM_BAD_JSON;
		if (err)
			snprintf(res->reason, sizeof(res->reason),
				 "admission controller: reading response: %s", detail);
		else
			snprintf(res->reason, sizeof(res->reason),
				 "admission controller: response is not JSON");
		return;
	}
	if (allow) {
		res->outcome = KD_ADM_ALLOWED;
		res->allow = true;
		snprintf(res->reason, sizeof(res->reason), "admission controller: allowed");
		return;
	}
	res->outcome = KD_ADM_DENIED;
	kd_key_nodekey_str(nodekey, key);
	/* Go formats an unknown netip.Addr as "invalid IP" */
	snprintf(res->reason, sizeof(res->reason), "admission controller: %s/%s not allowed", nodekey,
		 source_ip && *source_ip ? source_ip : "invalid IP");
}

static void count(struct kd_admission *a, const struct kd_admission_result *res)
{
	atomic_fetch_add(&a->m[res->allow ? M_ALLOWED : M_DENIED], 1);
	switch (res->outcome) {
	case KD_ADM_TRANSPORT:
		atomic_fetch_add(&a->m_err[res->err], 1);
		if (res->allow)
			atomic_fetch_add(&a->m[M_FAIL_OPEN], 1);
		break;
	case KD_ADM_STATUS:
		atomic_fetch_add(&a->m[M_STATUS], 1);
		break;
	case KD_ADM_BAD_JSON:
		atomic_fetch_add(&a->m[M_BAD_JSON], 1);
		if (res->err)
			atomic_fetch_add(&a->m_err[res->err], 1);
		break;
	case KD_ADM_CANCELED:
		atomic_fetch_add(&a->m[M_CANCELED], 1);
		break;
	case KD_ADM_ALLOWED:
	case KD_ADM_DENIED:
		break;
	}
}

/* An unreachable webhook is the operator's problem to know about; a dead
 * one under load must not flood the log, so a few lines per minute. */
static void warn_unreachable(struct kd_admission *a, const struct target *t,
			     const struct kd_admission_result *res)
{
	uint64_t n;

	pthread_mutex_lock(&a->log_mu);
	n = kd_ratelimit_ok(&a->log_rl, kd_http_now_ms());
	pthread_mutex_unlock(&a->log_mu);
	if (n > 1)
		pr_warn("admission: %s: %s (%llu similar lines suppressed)", t->url_text, res->reason,
			(unsigned long long)(n - 1));
	else if (n)
		pr_warn("admission: %s: %s", t->url_text, res->reason);
}

static void target_unref(struct target *t)
{
	if (t && atomic_fetch_sub(&t->refs, 1) == 1) {
		SSL_CTX_free(t->tls);
		ERR_clear_error();
		free(t);
	}
}

static struct target *target_get(struct kd_admission *a)
{
	struct target *t;

	pthread_mutex_lock(&a->mu);
	t = a->t;
	atomic_fetch_add(&t->refs, 1);
	pthread_mutex_unlock(&a->mu);
	return t;
}

static void run_check_on(struct kd_admission *a, struct target *t, const uint8_t key[32],
			 const char *source, struct kd_admission_result *res);

/* One webhook round trip in the calling thread. */
static void run_check(struct kd_admission *a, const uint8_t key[32], const char *source,
		      struct kd_admission_result *res)
{
	struct target *t = target_get(a);

	run_check_on(a, t, key, source, res);
	target_unref(t);
}

static void run_check_on(struct kd_admission *a, struct target *t, const uint8_t key[32],
			 const char *source, struct kd_admission_result *res)
{
	struct kd_http_resp *r;
	struct kd_http_post p = {
		.url = &t->url,
		.tls = t->tls,
		.content_type = "application/json",
		.cancel_fd = a->stop_fd,
	};
	char body[256], detail[160];
	enum kd_http_err err;
	int n;

	p.deadline_ms = kd_http_now_ms() + (uint64_t)t->timeout_ms;
	n = kd_admission_request_format(body, sizeof(body), key, source);
	/* ~20 KiB: too much for a small thread stack, and cheap to allocate */
	r = malloc(sizeof(*r));
	if (n < 0 || !r) {
		static const struct kd_http_resp none;

		free(r);
		kd_admission_judge(&none, KD_HTTP_ERR_IO, n < 0 ? "request too long" : "out of memory",
				   key, source, t->fail_open, res);
		count(a, res);
		return;
	}
	p.body = body;
	p.body_len = (size_t)n;
	err = kd_http_post(&p, r, detail, sizeof(detail));
	kd_admission_judge(r, err, detail, key, source, t->fail_open, res);
	free(r);
	count(a, res);
	pr_debug("admission: %s %s: %s", kd_http_err_name(err), source, res->reason);
	if (res->outcome == KD_ADM_TRANSPORT)
		warn_unreachable(a, t, res);
}

/* --- queues ------------------------------------------------------------- */

int kd_admission_queue_new(struct kd_admission_queue **out)
{
	struct kd_admission_queue *q;

	*out = NULL;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (q->efd < 0) {
		int err = -errno;

		free(q);
		return err;
	}
	pthread_mutex_init(&q->mu, NULL);
	q->refs = 1;
	*out = q;
	return 0;
}

static void queue_destroy(struct kd_admission_queue *q)
{
	close(q->efd);
	pthread_mutex_destroy(&q->mu);
	free(q);
}

/* Drops one reference; called with q->mu held, which it releases. */
static void queue_unref_unlock(struct kd_admission_queue *q)
{
	bool last = --q->refs == 0;

	pthread_mutex_unlock(&q->mu);
	if (last)
		queue_destroy(q);
}

void kd_admission_queue_free(struct kd_admission_queue *q)
{
	struct req *r, *next;

	if (!q)
		return;
	pthread_mutex_lock(&q->mu);
	q->closed = true;
	for (r = q->head; r; r = next) {
		next = r->next;
		free(r);
	}
	q->head = q->tail = NULL;
	queue_unref_unlock(q);
}

int kd_admission_queue_fd(const struct kd_admission_queue *q)
{
	return q ? q->efd : -1;
}

/* Hands a finished request to its queue (or drops it if the queue is gone). */
static void complete(struct req *r)
{
	struct kd_admission_queue *q = r->q;
	uint64_t one = 1;

	pthread_mutex_lock(&q->mu);
	if (q->closed) {
		free(r);
	} else {
		r->next = NULL;
		if (q->tail)
			q->tail->next = r;
		else
			q->head = r;
		q->tail = r;
		/* cannot fail short of 2^64 - 2 unread completions */
		if (write(q->efd, &one, sizeof(one)) != sizeof(one))
			pr_warn("admission: eventfd write: %s", strerror(errno));
	}
	queue_unref_unlock(q);
}

size_t kd_admission_poll(struct kd_admission_queue *q, struct kd_admission_result *out, size_t n)
{
	size_t k = 0;
	uint64_t v;

	pthread_mutex_lock(&q->mu);
	while (k < n && q->head) {
		struct req *r = q->head;

		q->head = r->next;
		if (!q->head)
			q->tail = NULL;
		out[k++] = r->res;
		free(r);
	}
	/* under the lock, so a completion cannot slip in between and be missed */
	if (!q->head && read(q->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		pr_warn("admission: eventfd read: %s", strerror(errno));
	pthread_mutex_unlock(&q->mu);
	return k;
}

/* --- pool --------------------------------------------------------------- */

static void cancel(struct kd_admission *a, struct req *r)
{
	static const struct kd_http_resp none;

	kd_admission_judge(&none, KD_HTTP_ERR_CANCELED, NULL, r->key, r->source, atomic_load(&a->fail_open),
			   &r->res);
	count(a, &r->res);
	complete(r);
}

static void *worker(void *arg)
{
	struct kd_admission *a = arg;

	for (;;) {
		struct req *r;

		pthread_mutex_lock(&a->mu);
		while (!a->stopping && !a->head)
			pthread_cond_wait(&a->cv, &a->mu);
		if (a->stopping) {
			pthread_mutex_unlock(&a->mu);
			break;
		}
		r = a->head;
		a->head = r->next;
		if (!a->head)
			a->tail = NULL;
		a->pending--;
		pthread_mutex_unlock(&a->mu);

		run_check(a, r->key, r->source, &r->res);
		atomic_fetch_sub(&a->m_pending, 1);
		complete(r);
	}
	return NULL;
}

int kd_admission_submit(struct kd_admission *a, struct kd_admission_queue *q,
			const uint8_t key[32], const char *source_ip, uint64_t cookie)
{
	struct req *r;
	size_t slen;

	if (!a || !q || !key)
		return -EINVAL;
	if (!source_ip)
		source_ip = "";
	slen = strlen(source_ip);
	if (slen >= sizeof(r->source))
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	memcpy(r->key, key, sizeof(r->key));
	memcpy(r->source, source_ip, slen + 1);
	r->res.cookie = cookie;
	r->q = q;

	pthread_mutex_lock(&a->mu);
	if (a->stopping || a->pending >= a->max_pending) {
		int err = a->stopping ? -ESHUTDOWN : -EBUSY;

		pthread_mutex_unlock(&a->mu);
		free(r);
		if (err == -EBUSY)
			atomic_fetch_add(&a->m[M_BUSY], 1);
		return err;
	}
	pthread_mutex_lock(&q->mu);
	q->refs++;
	pthread_mutex_unlock(&q->mu);
	if (a->tail)
		a->tail->next = r;
	else
		a->head = r;
	a->tail = r;
	a->pending++;
	atomic_fetch_add(&a->m_pending, 1);
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
	return 0;
}

bool kd_admission_fail_open(const struct kd_admission *a)
{
	return a && atomic_load(&((struct kd_admission *)a)->fail_open);
}

int kd_admission_check(struct kd_admission *a, const uint8_t key[32], const char *source_ip,
		       struct kd_admission_result *res)
{
	if (!a || !key || !res)
		return -EINVAL;
	if (!source_ip)
		source_ip = "";
	if (strlen(source_ip) >= KD_ADMISSION_SOURCE_MAX)
		return -EINVAL;
	memset(res, 0, sizeof(*res));
	run_check(a, key, source_ip, res);
	return 0;
}

int kd_admission_check_sync(struct kd_admission *a, const uint8_t key[32], const char *source_ip,
			    bool *allow, char *reason, size_t reason_cap)
{
	struct kd_admission_result res;
	int err;

	if (!allow)
		return -EINVAL;
	err = kd_admission_check(a, key, source_ip, &res);
	if (err)
		return err;
	*allow = res.allow;
	if (reason && reason_cap)
		snprintf(reason, reason_cap, "%s", res.reason);
	return 0;
}

const char *kd_admission_outcome_name(enum kd_admission_outcome o)
{
	switch (o) {
	case KD_ADM_ALLOWED:
		return "allowed";
	case KD_ADM_DENIED:
		return "denied";
	case KD_ADM_STATUS:
		return "status";
	case KD_ADM_BAD_JSON:
		return "bad_json";
	case KD_ADM_TRANSPORT:
		return "transport";
	case KD_ADM_CANCELED:
		return "canceled";
	}
	return "?";
}

static void stop_threads(struct kd_admission *a, int n)
{
	uint64_t one = 1;

	pthread_mutex_lock(&a->mu);
	a->stopping = true;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
	if (a->stop_fd >= 0 && write(a->stop_fd, &one, sizeof(one)) != sizeof(one))
		pr_warn("admission: eventfd write: %s", strerror(errno));
	for (int i = 0; i < n; i++)
		pthread_join(a->threads[i], NULL);
}

static int tls_setup(struct target *t, const struct kd_admission_opts *o)
{
	struct kd_tls_client_opts to = {
		.sni = t->url.host,
		.ca_file = o->ca_file,
		.insecure = o->insecure,
	};
	int err = kd_tls_client_ctx_new(&t->tls, &to);

	if (err)
		return err;
	/* close-delimited bodies from servers that skip close_notify still count */
	SSL_CTX_set_options(t->tls, SSL_OP_IGNORE_UNEXPECTED_EOF);
	return 0;
}

/* Logs once on failure, like kd_admission_new. */
static int target_new(struct target **out, const struct kd_admission_opts *o)
{
	struct target *t = calloc(1, sizeof(*t));
	int err;

	*out = NULL;
	if (!t)
		return -ENOMEM;
	atomic_init(&t->refs, 1);
	if (kd_url_parse(o->url, &t->url)) {
		pr_err("admission: -verify-client-url %s: not an http:// or https:// URL", o->url);
		free(t);
		return -EINVAL;
	}
	snprintf(t->url_text, sizeof(t->url_text), "%s%s%s%s:%u", t->url.https ? "https://" : "http://",
		 strchr(t->url.host, ':') ? "[" : "", t->url.host, strchr(t->url.host, ':') ? "]" : "",
		 t->url.port);
	t->fail_open = o->fail_open;
	t->timeout_ms = o->timeout_ms ? o->timeout_ms : KD_ADMISSION_TIMEOUT_MS;
	if (t->url.https && (err = tls_setup(t, o))) {
		pr_err("admission: TLS setup for %s failed", o->url);
		target_unref(t);
		return err;
	}
	*out = t;
	return 0;
}

int kd_admission_reconfigure(struct kd_admission *a, const struct kd_admission_opts *o)
{
	struct target *t, *old;
	int err;

	if (!a || !o || !o->url || o->timeout_ms < 0)
		return -EINVAL;
	err = target_new(&t, o);
	if (err)
		return err;
	pthread_mutex_lock(&a->mu);
	old = a->t;
	a->t = t;
	atomic_store(&a->fail_open, t->fail_open);
	pthread_mutex_unlock(&a->mu);
	target_unref(old);
	return 0;
}

int kd_admission_new(struct kd_admission **out, const struct kd_admission_opts *o)
{
	struct kd_admission *a;
	int n, err;

	*out = NULL;
	if (!o || !o->url || o->timeout_ms < 0 || o->threads < 0 ||
	    o->threads > KD_ADMISSION_THREADS_MAX || o->max_pending < 0) {
		pr_err("admission: bad options");
		return -EINVAL;
	}
	n = o->threads ? o->threads : KD_ADMISSION_THREADS;
	a = calloc(1, sizeof(*a) + (size_t)n * sizeof(a->threads[0]));
	if (!a)
		return -ENOMEM;
	a->stop_fd = -1;
	err = target_new(&a->t, o);
	if (err) {
		free(a);
		return err;
	}
	atomic_init(&a->fail_open, a->t->fail_open);
	a->log_rl = (struct kd_ratelimit)KD_RATELIMIT_INIT(5, 12000);
	pthread_mutex_init(&a->log_mu, NULL);
	a->max_pending = o->max_pending ? (size_t)o->max_pending : KD_ADMISSION_MAX_PENDING;
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cv, NULL);
	a->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (a->stop_fd < 0) {
		err = -errno;
		pr_err("admission: eventfd: %s", strerror(errno));
		goto fail;
	}
	a->nwant = n;
	if (!o->defer_threads && (err = kd_admission_start(a)))
		goto fail;
	*out = a;
	return 0;
fail:
	kd_admission_free(a);
	return err;
}

/* Threads inherit the credentials of their creator: kderpd starts these
 * after it has dropped privileges, so none of them keeps root. */
int kd_admission_start(struct kd_admission *a)
{
	int started, err;

	if (a->nthreads)
		return 0;
	for (started = 0; started < a->nwant; started++) {
		err = pthread_create(&a->threads[started], NULL, worker, a);
		if (err) {
			pr_err("admission: starting worker thread: %s", strerror(err));
			stop_threads(a, started);
			return -err;
		}
	}
	a->nthreads = a->nwant;
	return 0;
}

void kd_admission_free(struct kd_admission *a)
{
	struct req *r, *next;

	if (!a)
		return;
	if (a->nthreads)
		stop_threads(a, a->nthreads);
	/* the workers are gone: whatever is still queued never started */
	for (r = a->head; r; r = next) {
		next = r->next;
		atomic_fetch_sub(&a->m_pending, 1);
		cancel(a, r);
	}
	a->head = a->tail = NULL;
	target_unref(a->t);
	if (a->stop_fd >= 0)
		close(a->stop_fd);
	pthread_cond_destroy(&a->cv);
	pthread_mutex_destroy(&a->mu);
	pthread_mutex_destroy(&a->log_mu);
	free(a);
}

int kd_admission_metrics(const struct kd_admission *a, char *out, size_t cap)
{
	static const enum kd_http_err kinds[] = {
		KD_HTTP_ERR_DNS, KD_HTTP_ERR_CONNECT, KD_HTTP_ERR_TLS,      KD_HTTP_ERR_TIMEOUT,
		KD_HTTP_ERR_IO,  KD_HTTP_ERR_PROTOCOL,
	};
	struct kd_admission *m = (struct kd_admission *)a; /* atomics only */
	size_t len = 0;
	int n;

#define EMIT(...)                                                                  \
	do {                                                                       \
		n = snprintf(out + len, cap > len ? cap - len : 0, __VA_ARGS__);   \
		if (n < 0 || (size_t)n >= (cap > len ? cap - len : 0))             \
			goto nospc;                                                \
		len += (size_t)n;                                                  \
	} while (0)
#define LD(x) ((unsigned long long)atomic_load(&(x)))

	EMIT("# HELP kderp_admission_checks_total admission webhook verdicts\n"
	     "# TYPE kderp_admission_checks_total counter\n"
	     "kderp_admission_checks_total{result=\"allowed\"} %llu\n"
	     "kderp_admission_checks_total{result=\"denied\"} %llu\n",
	     LD(m->m[M_ALLOWED]), LD(m->m[M_DENIED]));
	EMIT("# HELP kderp_admission_errors_total admission webhook failures by kind\n"
	     "# TYPE kderp_admission_errors_total counter\n");
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		EMIT("kderp_admission_errors_total{kind=\"%s\"} %llu\n", kd_http_err_name(kinds[i]),
		     LD(m->m_err[kinds[i]]));
	EMIT("kderp_admission_errors_total{kind=\"status\"} %llu\n"
	     "kderp_admission_errors_total{kind=\"bad_json\"} %llu\n"
	     "kderp_admission_errors_total{kind=\"canceled\"} %llu\n",
	     LD(m->m[M_STATUS]), LD(m->m[M_BAD_JSON]), LD(m->m[M_CANCELED]));
	EMIT("# TYPE kderp_admission_fail_open_allowed_total counter\n"
	     "kderp_admission_fail_open_allowed_total %llu\n"
	     "# TYPE kderp_admission_busy_total counter\n"
	     "kderp_admission_busy_total %llu\n"
	     "# TYPE kderp_admission_pending gauge\n"
	     "kderp_admission_pending %lld\n",
	     LD(m->m[M_FAIL_OPEN]), LD(m->m[M_BUSY]), (long long)atomic_load(&m->m_pending));
#undef EMIT
#undef LD
	return (int)len;
nospc:
	if (cap)
		out[0] = '\0';
	return -ENOSPC;
}
