// SPDX-License-Identifier: MIT
/* Server lifecycle: listeners, worker threads, accept and shutdown. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sodium.h>
#include <unistd.h>

#include "server_internal.h"
#include "upgrade.h"
#include "tls.h"

#define KD_SCRATCH (256u << 10)

void kd_server_config_defaults(struct kd_server_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->addr = ":443";
	cfg->derp_enabled = true;
	cfg->home = "";
	cfg->queue_depth = 32;
	cfg->tcp_keepalive_s = 600;
	cfg->tcp_user_timeout_ms = 15000;
	cfg->write_timeout_ms = 2000;
	cfg->congestion_patience_ms = KD_CONGESTION_PATIENCE_MS;
	cfg->keepalive_ms = 60000;
	cfg->handshake_timeout_ms = 10000;
	cfg->http_timeout_ms = 30000;
	cfg->http_port = 80;
}

/* ":443" -> dual-stack [::]:443; "ip:port"; "[v6]:port"; "host:port". */
static int port_of(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
		return -1;
	return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
					     : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

static int listen_on(const char *kind, const char *addr, int *port_out, const struct kd_server_config *cfg)
{
	char host[256] = "", port[16];
	const char *colon = strrchr(addr, ':');
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
	int fd = kd_upgrade_take(kind, addr), one = 1, err;

	/* a binary upgrade: the previous process's socket, its queue and all */
	if (fd >= 0) {
		*port_out = port_of(fd);
		return fd;
	}

	if (!colon || strlen(colon + 1) >= sizeof(port) || (size_t)(colon - addr) >= sizeof(host)) {
		pr_err("listen address %s: want host:port or :port", addr);
		return -EINVAL;
	}
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	snprintf(port, sizeof(port), "%s", colon + 1);
	if (host[0] == '[') {
		size_t n = strlen(host);
		if (n < 2 || host[n - 1] != ']') {
			pr_err("listen address %s: unbalanced brackets", addr);
			return -EINVAL;
		}
		memmove(host, host + 1, n - 2);
		host[n - 2] = '\0';
	}
	if (!strcmp(port, "https"))
		snprintf(port, sizeof(port), "443");
	if (!host[0])
		hints.ai_family = AF_INET6; /* dual stack, like Go's ":port" */
	err = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
	if (err) {
		pr_err("listen address %s: %s", addr, gai_strerror(err));
		return -EINVAL;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ai->ai_family == AF_INET6 && !host[0]) {
		int zero = 0;
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	}
	/* inherited by accepted sockets: reaps connections whose data goes unacked */
	if (cfg->tcp_user_timeout_ms) {
		unsigned ut = cfg->tcp_user_timeout_ms;
		setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut));
	}
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4096) < 0)
		goto fail;
	*port_out = port_of(fd);
	freeaddrinfo(ai);
	return fd;
fail:
	err = -errno;
	pr_err("listen on %s: %s", addr, strerror(errno));
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
	return err;
}

static void tune_accepted(const struct kd_server_config *cfg, int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (cfg->tcp_keepalive_s) {
		int idle = (int)cfg->tcp_keepalive_s, intvl = 15, cnt = 9;
		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	}
}

/* Token bucket of -accept-connection-limit/-burst. A rejected connection is
 * closed and the accept loop goes on (the reference exits: spec §11.1). */
static bool accept_allowed(struct kd_server *s)
{
	bool ok = true;

	if (s->cfg.accept_rate <= 0)
		return true;
	pthread_mutex_lock(&s->accept_lock);
	uint64_t now = kd_now_ms();
	s->accept_tokens += (double)(now - s->accept_last_ms) * s->cfg.accept_rate / 1000.0;
	s->accept_last_ms = now;
	if (s->accept_tokens > (double)s->cfg.accept_burst)
		s->accept_tokens = (double)s->cfg.accept_burst;
	if (s->accept_tokens >= 1.0)
		s->accept_tokens -= 1.0;
	else
		ok = false;
	pthread_mutex_unlock(&s->accept_lock);
	return ok;
}

#define KD_ACCEPT_PAUSE_MS 100

/* Out of descriptors or memory, accept() fails while the listener stays
 * readable: level-triggered epoll would spin on it. This worker stops
 * listening for a moment instead; the backlog keeps the connections. */
static bool accept_failed(struct kd_worker *w, int err)
{
	if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM)
		return false;
	pr_warn("accept: %s: pausing accepts for %d ms", strerror(err), KD_ACCEPT_PAUSE_MS);
	kd_io_del(w->loop, &w->listen_io);
	if (w->listen80_io.cb)
		kd_io_del(w->loop, &w->listen80_io);
	kd_timer_arm(w->loop, &w->accept_resume, kd_loop_now(w->loop) + KD_ACCEPT_PAUSE_MS);
	return true;
}

static void on_accept_resume(struct kd_timer *t)
{
	struct kd_worker *w = (struct kd_worker *)((char *)t - offsetof(struct kd_worker, accept_resume));

	if (__atomic_load_n(&w->srv->draining, __ATOMIC_ACQUIRE))
		return;

	if (!w->listen_io.events && kd_io_add(w->loop, &w->listen_io, EPOLLIN | EPOLLEXCLUSIVE) != 0)
		pr_err("worker %d: resume accepting: %s", w->idx, strerror(errno));
	if (w->listen80_io.cb && !w->listen80_io.events &&
	    kd_io_add(w->loop, &w->listen80_io, EPOLLIN | EPOLLEXCLUSIVE) != 0)
		pr_err("worker %d: resume accepting on the plaintext port: %s", w->idx, strerror(errno));
}

/* Up to 64 connections per readiness event, so one listener cannot starve
 * the worker's clients. port80: the plaintext listener next to TLS, whose
 * connections are never TLS and are not rate limited (they only redirect). */
static void accept_batch(struct kd_worker *w, int lfd, bool port80)
{
	struct kd_server *s = w->srv;

	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage peer;
		socklen_t pl = sizeof(peer);
		int fd = accept4(lfd, (struct sockaddr *)&peer, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED && !accept_failed(w, errno))
				pr_warn("accept: %s", strerror(errno));
			return;
		}
		if (!port80 && !accept_allowed(s)) {
			w->ctr.accept_rejected++;
			close(fd);
			continue;
		}
		tune_accepted(&s->cfg, fd);
		struct kd_conn *c = kd_conn_new(w, fd, &peer, !port80 && s->tls != NULL);
		if (!c) {
			pr_warn("accept: out of memory");
			close(fd);
			continue;
		}
		c->port80 = port80;
	}
}

static void on_accept(struct kd_io *io, uint32_t events)
{
	(void)events;
	accept_batch((struct kd_worker *)((char *)io - offsetof(struct kd_worker, listen_io)), io->fd, false);
}

static void on_accept80(struct kd_io *io, uint32_t events)
{
	(void)events;
	accept_batch((struct kd_worker *)((char *)io - offsetof(struct kd_worker, listen80_io)), io->fd, true);
}

/* TS_DEBUG_KEY_PATH (spec §3.11): a key that opens /debug/ from anywhere. */
static char *load_debug_key(void)
{
	const char *path = getenv("TS_DEBUG_KEY_PATH");
	char buf[256];

	if (!path || !*path)
		return NULL;
	FILE *f = fopen(path, "r");
	if (!f) {
		pr_warn("TS_DEBUG_KEY_PATH %s: %s", path, strerror(errno));
		return NULL;
	}
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *b = buf, *e = buf + n;
	while (b < e && (*b == ' ' || *b == '\n' || *b == '\r' || *b == '\t'))
		b++;
	while (e > b && (e[-1] == ' ' || e[-1] == '\n' || e[-1] == '\r' || e[-1] == '\t'))
		e--;
	*e = '\0';
	return *b ? strdup(b) : NULL;
}

static bool tls_ulp_available(void)
{
	char buf[256] = "";
	FILE *f = fopen("/proc/sys/net/ipv4/tcp_available_ulp", "r");

	if (f) {
		if (!fgets(buf, sizeof(buf), f))
			buf[0] = '\0';
		fclose(f);
	}
	for (char *t = strtok(buf, " \n"); t; t = strtok(NULL, " \n"))
		if (!strcmp(t, "tls"))
			return true;
	return false;
}

static void on_admission_results(struct kd_io *io, uint32_t events)
{
	struct kd_worker *w = (struct kd_worker *)((char *)io - offsetof(struct kd_worker, adm_io));
	struct kd_admission_result res[32];
	size_t n;

	(void)events;
	while ((n = kd_admission_poll(w->admq, res, 32)) > 0) {
		for (size_t i = 0; i < n; i++) {
			struct kd_conn *c = (struct kd_conn *)(uintptr_t)res[i].cookie;
			kd_derp_admission_done(c, res[i].allow, res[i].reason);
			kd_conn_unref(c); /* the request's */
		}
	}
}

static void *worker_main(void *arg)
{
	struct kd_worker *w = arg;
	sigset_t set;

	/* signals belong to the main thread */
	sigfillset(&set);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	int err = kd_loop_run(w->loop);
	if (err)
		pr_err("worker %d: event loop: %s", w->idx, strerror(-err));
	return NULL;
}

int kd_server_new(struct kd_server **out, const struct kd_server_config *cfg)
{
	struct kd_server *s = calloc(1, sizeof(*s));
	int err;

	*out = NULL;
	if (!s)
		return -ENOMEM;
	s->cfg = *cfg;
	s->listen_fd = s->listen80_fd = -1;
	s->start_ms = kd_now_ms();
	s->debug_key = load_debug_key();
	pthread_mutex_init(&s->accept_lock, NULL);
	pthread_mutex_init(&s->reload_lock, NULL);
	kd_keymap_init(&s->reg);
	kd_keymap_init(&s->subs);
	kd_keymap_init(&s->fwd);
	s->accept_tokens = cfg->accept_burst;
	s->accept_last_ms = s->start_ms;
	s->nworkers = cfg->workers > 0 ? cfg->workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (s->nworkers < 1)
		s->nworkers = 1;
	if (s->nworkers > 64)
		s->nworkers = 64;
	s->reg_locks = aligned_alloc(64, sizeof(*s->reg_locks) * (size_t)(s->nworkers + 1));
	if (!s->reg_locks) {
		free(s);
		return -ENOMEM;
	}
	for (int i = 0; i <= s->nworkers; i++)
		pthread_rwlock_init(&s->reg_locks[i].l, NULL);
	s->reg_gen = 1; /* 0 marks an empty lookup cache */

	s->listen_fd = listen_on("tcp", cfg->addr, &s->port, cfg);
	if (s->listen_fd < 0) {
		err = s->listen_fd;
		goto fail;
	}
	if (cfg->certmode) {
		struct kd_tls_server_opts to = {
			.certmode = cfg->certmode,
			.certdir = cfg->certdir,
			.hostname = cfg->hostname,
			.server_pub = cfg->keys.pub,
			.ktls = !cfg->no_ktls,
		};
		to.max_version = cfg->tls_max_version;
		err = kd_tls_server_ctx_new(&s->tls, &to);
		if (err)
			goto fail;
		s->tls_ulp_available = tls_ulp_available();
		if (!s->tls_ulp_available)
			pr_info("kTLS: this kernel has no tls ULP (module not loaded or not built); "
				"OpenSSL does the TLS crypto in userspace");
		else if (cfg->tls_max_version != TLS1_2_VERSION)
			pr_info("kTLS: TLS 1.3 connections get kernel crypto for sending only with this OpenSSL; "
				"-tls-max-version=1.2 gets it both ways");
		if (cfg->http_port >= 0) {
			/* the plaintext listener binds the same host as -a (spec §3.1) */
			const char *colon = strrchr(cfg->addr, ':');
			snprintf(s->addr80, sizeof(s->addr80), "%.*s:%d", (int)(colon - cfg->addr), cfg->addr,
				 cfg->http_port);
			int p80;
			s->listen80_fd = listen_on("tcp80", s->addr80, &p80, cfg);
			if (s->listen80_fd < 0) {
				err = s->listen80_fd;
				goto fail;
			}
			s->port80 = p80;
		}
	}
	if (cfg->verify_client_url && *cfg->verify_client_url) {
		struct kd_admission_opts ao = {
			.url = cfg->verify_client_url,
			.fail_open = cfg->verify_fail_open,
			.timeout_ms = cfg->verify_timeout_ms ? (int)cfg->verify_timeout_ms : 5000,
			.defer_threads = true, /* kd_server_start: after kd_privs_drop */
		};
		err = kd_admission_new(&s->adm, &ao);
		if (err) {
			pr_err("-verify-client-url %s: %s", cfg->verify_client_url, strerror(-err));
			goto fail;
		}
	}
	pthread_mutex_init(&s->offload_lock, NULL);
	kd_offload_policy_open(s);
	s->workers = calloc((size_t)s->nworkers, sizeof(*s->workers));
	if (!s->workers) {
		err = -ENOMEM;
		goto fail;
	}
	for (int i = 0; i < s->nworkers; i++) {
		struct kd_worker *w = &s->workers[i];
		w->srv = s;
		w->idx = i;
		w->log_rl = (struct kd_ratelimit)KD_RATELIMIT_INIT(20, 50);
		kd_timer_init(&w->accept_resume, on_accept_resume);
		pthread_mutex_init(&w->inbox_lock, NULL);
		w->scratch_cap = KD_SCRATCH;
		w->scratch = malloc(w->scratch_cap);
		w->outbox = calloc((size_t)s->nworkers, sizeof(*w->outbox));
		if (!w->scratch || !w->outbox) {
			err = -ENOMEM;
			goto fail;
		}
		err = kd_loop_new(&w->loop);
		if (err)
			goto fail;
		kd_loop_set_before_sleep(w->loop, kd_worker_before_sleep, w);
		kd_loop_set_wake_cb(w->loop, kd_worker_drain_inbox, w);
		w->listen_io.fd = s->listen_fd;
		w->listen_io.cb = on_accept;
		/* every worker accepts; EPOLLEXCLUSIVE wakes one of them per connection */
		err = kd_io_add(w->loop, &w->listen_io, EPOLLIN | EPOLLEXCLUSIVE);
		if (err)
			goto fail;
		if (s->adm) {
			err = kd_admission_queue_new(&w->admq);
			if (err)
				goto fail;
			w->adm_io.fd = kd_admission_queue_fd(w->admq);
			w->adm_io.cb = on_admission_results;
			err = kd_io_add(w->loop, &w->adm_io, EPOLLIN);
			if (err)
				goto fail;
		}
		if (s->listen80_fd >= 0) {
			w->listen80_io.fd = s->listen80_fd;
			w->listen80_io.cb = on_accept80;
			err = kd_io_add(w->loop, &w->listen80_io, EPOLLIN | EPOLLEXCLUSIVE);
			if (err)
				goto fail;
		}
	}
	*out = s;
	return 0;
fail:
	kd_server_free(s);
	return err;
}

int kd_server_start(struct kd_server *s)
{
	int aerr = s->adm ? kd_admission_start(s->adm) : 0;

	if (aerr)
		return aerr;
	for (int i = 0; i < s->nworkers; i++) {
		struct kd_worker *w = &s->workers[i];
		int err = pthread_create(&w->thread, NULL, worker_main, w);
		if (err) {
			pr_err("start worker %d: %s", i, strerror(err));
			return -err;
		}
		w->started = true;
	}
	return 0;
}

int kd_server_port(const struct kd_server *s)
{
	return s->port;
}

int kd_server_reload(struct kd_server *s, const uint8_t *mesh_key)
{
	int err = 0;
	SSL_CTX *fresh = NULL, *old = NULL;

	if (s->tls) {
		struct kd_tls_server_opts to = {
			.certmode = s->cfg.certmode,
			.certdir = s->cfg.certdir,
			.hostname = s->cfg.hostname,
			.server_pub = s->cfg.keys.pub,
			.ktls = !s->cfg.no_ktls,
			.max_version = s->cfg.tls_max_version,
		};
		/* a broken new certificate keeps the old one serving */
		err = kd_tls_server_ctx_new(&fresh, &to);
		if (err)
			pr_err("reload: certificates unchanged: %s", strerror(-err));
	}
	pthread_mutex_lock(&s->reload_lock);
	if (fresh) {
		old = s->tls;
		s->tls = fresh;
	}
	if (mesh_key) {
		memcpy(s->cfg.mesh_key, mesh_key, DERP_KEY_LEN);
		s->cfg.has_mesh_key = !sodium_is_zero(mesh_key, DERP_KEY_LEN);
	}
	pthread_mutex_unlock(&s->reload_lock);
	kd_tls_ctx_free(old); /* live connections keep their own references */
	if (fresh)
		pr_info("reload: new TLS connections use the certificates re-read from disk");
	if (mesh_key)
		pr_info("reload: mesh key replaced (%s)", s->cfg.has_mesh_key ? "set" : "none");
	return err;
}

int kd_server_reconfigure_admission(struct kd_server *s, const char *url, bool fail_open,
				    uint32_t timeout_ms)
{
	bool want = url && *url;

	if (want != (s->adm != NULL))
		return -EOPNOTSUPP; /* the workers' completion queues exist only with admission */
	if (!want)
		return 0;
	struct kd_admission_opts ao = {
		.url = url,
		.fail_open = fail_open,
		.timeout_ms = timeout_ms ? (int)timeout_ms : 5000,
	};
	int err = kd_admission_reconfigure(s->adm, &ao);
	if (err == 0)
		/* not the URL: its path may carry a token */
		pr_info("reload: new clients are checked with the re-read webhook settings (fail-%s, timeout %d ms)",
			fail_open ? "open" : "closed", ao.timeout_ms);
	return err;
}

void kd_server_stop_accepting(struct kd_server *s)
{
	__atomic_store_n(&s->draining, true, __ATOMIC_RELEASE);
	/* from this thread: epoll_ctl is safe against a worker in epoll_wait,
	 * and one that is inside accept_batch just finishes its batch */
	for (int i = 0; i < s->nworkers; i++) {
		struct kd_worker *w = &s->workers[i];
		if (w->listen_io.events)
			kd_io_del(w->loop, &w->listen_io);
		if (w->listen80_io.cb && w->listen80_io.events)
			kd_io_del(w->loop, &w->listen80_io);
	}
}

int kd_server_upgrade_fds(const struct kd_server *s, struct kd_upgrade_fd *out, int cap)
{
	int n = 0;

	if (n < cap && s->listen_fd >= 0)
		out[n++] = (struct kd_upgrade_fd){"tcp", s->cfg.addr, s->listen_fd};
	if (n < cap && s->listen80_fd >= 0)
		out[n++] = (struct kd_upgrade_fd){"tcp80", s->addr80, s->listen80_fd};
	return n;
}

int kd_server_port80(const struct kd_server *s)
{
	return s->listen80_fd >= 0 ? s->port80 : -1;
}

const struct kd_keypair *kd_server_keys(const struct kd_server *s)
{
	return &s->cfg.keys;
}

bool kd_server_tls(const struct kd_server *s)
{
	return s->tls != NULL;
}

/* Runs on each worker: tell clients we are restarting (spec §6.16), flush,
 * close. Posted through the inbox so it runs on the owning thread. */
static void worker_shutdown(struct kd_worker *w)
{
	uint8_t body[DERP_RESTARTING_LEN] = {0, 0, 0x03, 0xe8, 0, 0, 0x13, 0x88}; /* 1 s, 5 s */

	kd_timer_disarm(w->loop, &w->accept_resume);
	kd_io_del(w->loop, &w->listen_io);
	if (w->listen80_io.cb)
		kd_io_del(w->loop, &w->listen80_io);
	for (struct kd_conn *c = w->all; c; c = c->all_next) {
		if (c->state == KD_CONN_ACTIVE) {
			kd_conn_ctrl_frame(c, DERP_FRAME_RESTARTING, body, sizeof(body), NULL, 0);
			w->ctr.restarting_frames++;
		}
	}
	kd_worker_before_sleep(w);
	while (w->all)
		kd_conn_close(w->all, NULL);
	kd_worker_before_sleep(w);
}

void kd_server_stop(struct kd_server *s)
{
	if (!s || !s->workers)
		return;
	for (int i = 0; i < s->nworkers; i++) {
		struct kd_worker *w = &s->workers[i];
		if (w->started)
			kd_loop_stop(w->loop);
	}
	for (int i = 0; i < s->nworkers; i++) {
		struct kd_worker *w = &s->workers[i];
		if (w->started) {
			pthread_join(w->thread, NULL);
			w->started = false;
		}
	}
	/* threads are gone: finish each worker's connections from here, in order */
	for (int i = 0; i < s->nworkers; i++)
		if (s->workers[i].loop)
			worker_shutdown(&s->workers[i]);
	for (int i = 0; i < s->nworkers; i++)
		if (s->workers[i].loop)
			kd_worker_drain_inbox(&s->workers[i]);
}

void kd_server_free(struct kd_server *s)
{
	if (!s)
		return;
	kd_server_stop(s);
	/* pending checks complete as canceled into the queues; drain them so
	 * the connections' references go */
	kd_admission_free(s->adm);
	for (int i = 0; s->workers && i < s->nworkers; i++) {
		struct kd_worker *w = &s->workers[i];
		if (w->admq) {
			struct kd_admission_result res[32];
			size_t n;
			while ((n = kd_admission_poll(w->admq, res, 32)) > 0)
				for (size_t k = 0; k < n; k++)
					kd_conn_unref((struct kd_conn *)(uintptr_t)res[k].cookie);
			kd_admission_queue_free(w->admq);
		}
	}
	for (int i = 0; s->workers && i < s->nworkers; i++) {
		struct kd_worker *w = &s->workers[i];
		kd_loop_free(w->loop);
		free(w->scratch);
		while (w->pool) {
			struct kd_pkt *p = w->pool;
			w->pool = p->next_free;
			free(p);
		}
		for (int k = 0; w->outbox && k < s->nworkers; k++)
			free(w->outbox[k].v);
		free(w->outbox);
		free(w->inbox.v);
		free(w->inbox_spare.v);
		pthread_mutex_destroy(&w->inbox_lock);
	}
	free(s->workers);
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	if (s->listen80_fd >= 0)
		close(s->listen80_fd);
	kd_tls_ctx_free(s->tls);
	pthread_mutex_destroy(&s->reload_lock);
	kd_offload_close(s->offload);
	pthread_mutex_destroy(&s->offload_lock);
	free(s->debug_key);
	const uint8_t *k;
	void *v;
	for (size_t i = 0; (i = kd_keymap_next(&s->reg, i, &k, &v)) != 0;) {
		free(((struct kd_client_set *)v)->conns);
		free(v);
	}
	for (size_t i = 0; (i = kd_keymap_next(&s->subs, i, &k, &v)) != 0;) {
		free(((struct kd_subs *)v)->conns);
		free(v);
	}
	for (size_t i = 0; (i = kd_keymap_next(&s->fwd, i, &k, &v)) != 0;) {
		free(((struct kd_fwd_entry *)v)->f);
		free(v);
	}
	kd_keymap_free(&s->reg);
	kd_keymap_free(&s->subs);
	kd_keymap_free(&s->fwd);
	free(s->watchers);
	for (int i = 0; s->reg_locks && i <= s->nworkers; i++)
		pthread_rwlock_destroy(&s->reg_locks[i].l);
	free(s->reg_locks);
	pthread_mutex_destroy(&s->accept_lock);
	sodium_memzero(&s->cfg, sizeof(s->cfg));
	free(s);
}

void kd_server_set_extra_metrics(struct kd_server *s, int (*fn)(void *arg, char *out, size_t cap), void *arg)
{
	s->extra_metrics = fn;
	s->extra_metrics_arg = arg;
}

int kd_server_metrics(struct kd_server *s, char **out, size_t *len)
{
	return kd_metrics_render(s, out, len);
}
