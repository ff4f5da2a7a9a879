// SPDX-License-Identifier: MIT
/* kderpd: flags named like Tailscale's derper, so a unit file can swap one
 * for the other. Flags for features kderp does not have yet are accepted by
 * the parser but refused at startup with a clear message, never ignored. */
#include <errno.h>
#include <linux/capability.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "configfile.h"
#include "flags.h"
#include "http.h"
#include "keyfile.h"
#include "log.h"
#include "loop.h"
#include "mesh.h"
#include "privs.h"
#include "relay_maps.h"
#include "stun_wire.h"
#include "server.h"
#include "server_internal.h"
#include "stun_server.h"
#include "stun_xdp.h"
#include "tls.h"
#include "upgrade.h"


struct opts {
	bool dev, version, derp, stun, verbose, verify_clients, ace, verify_fail_open, mesh_insecure;
	const char *addr, *key_file, *hostname, *certmode, *certdir, *home, *mesh_psk_file, *mesh_with;
	const char *verify_client_url, *rate_config, *stun_xdp, *offload, *bootstrap_dns, *unpub_dns;
	const char *secrets_url, *stun_xdp_mode, *tls_max, *mesh_ca_file, *user, *keep_caps, *config_file, *offload_pin_dir;
	int http_port, stun_port, workers, accept_burst, queue_depth;
	double accept_limit;
	unsigned tcp_keepalive_ms, tcp_user_timeout_ms, tcp_write_timeout_ms, verify_timeout_ms;
};

static struct opts g_opts = {
	.derp = true,
	.stun = true,
	.addr = ":443",
	.key_file = "",
	.hostname = "derp.tailscale.com",
	.certmode = "letsencrypt",
	.certdir = "",
	.home = "",
	.mesh_psk_file = "",
	.mesh_with = "",
	.mesh_ca_file = "",
	.verify_client_url = "",
	.rate_config = "",
	.stun_xdp = "",
	.offload = "off",
	.offload_pin_dir = "",
	.bootstrap_dns = "",
	.unpub_dns = "",
	.secrets_url = "",
	.stun_xdp_mode = "auto",
	.tls_max = "1.3",
	.user = "",
	.keep_caps = "",
	.config_file = "",
	.verify_timeout_ms = 5000,
	.http_port = 80,
	.stun_port = 3478,
	.accept_burst = 0,
	.queue_depth = 32,
	.accept_limit = 0,
	.tcp_keepalive_ms = 600000,
	.tcp_user_timeout_ms = 15000,
	.tcp_write_timeout_ms = 2000,
};

static struct kd_flag g_flags[] = {
	{"dev", KD_FLAG_BOOL, &g_opts.dev, "run in localhost development mode (plain HTTP on 127.0.0.1:3340, ephemeral key)", false},
	{"version", KD_FLAG_BOOL, &g_opts.version, "print version and exit", false},
	{"a", KD_FLAG_STRING, &g_opts.addr, "server HTTP/HTTPS listen address, in form \":port\", \"ip:port\" or \"[ip]:port\"", false},
	{"c", KD_FLAG_STRING, &g_opts.key_file, "config file path (server private key)", false},
	{"hostname", KD_FLAG_STRING, &g_opts.hostname, "TLS host name", false},
	{"certmode", KD_FLAG_STRING, &g_opts.certmode, "mode for getting a cert: manual, or kderp's dev (in-memory self-signed); no ACME", false},
	{"certdir", KD_FLAG_STRING, &g_opts.certdir, "directory of <hostname>.crt and <hostname>.key for -certmode=manual", false},
	{"http-port", KD_FLAG_INT, &g_opts.http_port, "plaintext port for /generate_204 and redirects when TLS is served; -1 disables", false},
	{"stun", KD_FLAG_BOOL, &g_opts.stun, "whether to run a STUN server", false},
	{"stun-port", KD_FLAG_INT, &g_opts.stun_port, "UDP port of the STUN server", false},
	{"derp", KD_FLAG_BOOL, &g_opts.derp, "whether to serve /derp (false keeps STUN and probes during decommissioning)", false},
	{"home", KD_FLAG_STRING, &g_opts.home, "home page: \"\" default, \"blank\", or an http(s) URL to redirect to", false},
	{"mesh-psk-file", KD_FLAG_STRING, &g_opts.mesh_psk_file, "file with the 64-hex-digit mesh key", false},
	{"mesh-with", KD_FLAG_STRING, &g_opts.mesh_with, "comma-separated hosts of the region to mesh with: host, host:port, host/dialhost; kderp adds http://host:port for plain-HTTP peers on trusted networks", false},
	{"mesh-ca-file", KD_FLAG_STRING, &g_opts.mesh_ca_file, "kderp: CA bundle (PEM) to verify https mesh peers with instead of the system roots", false},
	{"mesh-insecure", KD_FLAG_BOOL, &g_opts.mesh_insecure, "kderp: do not verify the certificates of https mesh peers", false},
	{"secrets-url", KD_FLAG_STRING, &g_opts.secrets_url, "setec secrets service (not supported)", false},
	{"verify-clients", KD_FLAG_BOOL, &g_opts.verify_clients, "admission via local tailscaled (not supported yet)", false},
	{"verify-client-url", KD_FLAG_STRING, &g_opts.verify_client_url, "admission webhook URL: POST {\"NodePublic\",\"Source\"}, expects {\"Allow\":true}", false},
	{"verify-client-url-fail-open", KD_FLAG_BOOL, &g_opts.verify_fail_open, "admit clients when the webhook is unreachable (kderp default false; derper's is true)", false},
	{"verify-client-url-timeout", KD_FLAG_DURATION_MS, &g_opts.verify_timeout_ms, "kderp: deadline of one admission webhook request", false},
	{"rate-config", KD_FLAG_STRING, &g_opts.rate_config, "per-client rate limit JSON (not supported yet)", false},
	{"accept-connection-limit", KD_FLAG_DOUBLE, &g_opts.accept_limit, "rate of accepted connections per second (token bucket); 0 = unlimited", false},
	{"accept-connection-burst", KD_FLAG_INT, &g_opts.accept_burst, "burst of the accept token bucket", false},
	{"tcp-keepalive-time", KD_FLAG_DURATION_MS, &g_opts.tcp_keepalive_ms, "TCP keepalive idle time", false},
	{"tcp-user-timeout", KD_FLAG_DURATION_MS, &g_opts.tcp_user_timeout_ms, "TCP_USER_TIMEOUT", false},
	{"tcp-write-timeout", KD_FLAG_DURATION_MS, &g_opts.tcp_write_timeout_ms, "write deadline for non-mesh clients; 0 = none", false},
	{"bootstrap-dns-names", KD_FLAG_STRING, &g_opts.bootstrap_dns, "bootstrap DNS names (not supported)", false},
	{"unpublished-bootstrap-dns-names", KD_FLAG_STRING, &g_opts.unpub_dns, "unpublished bootstrap DNS names (not supported)", false},
	{"ace", KD_FLAG_BOOL, &g_opts.ace, "CONNECT proxy (not supported)", false},
	{"tls-max-version", KD_FLAG_STRING, &g_opts.tls_max, "kderp: 1.3 (default) or 1.2 (kernel crypto both ways with OpenSSL 3.0, no fast start)", false},
	{"workers", KD_FLAG_INT, &g_opts.workers, "kderp: worker threads, 0 = one per core", false},
	{"queue-depth", KD_FLAG_INT, &g_opts.queue_depth, "kderp: per-client send queue depth (each of ordinary and disco)", false},
	{"stun-xdp", KD_FLAG_STRING, &g_opts.stun_xdp, "kderp: answer STUN with an XDP program on this interface (userspace stays the fallback)", false},
	{"stun-xdp-mode", KD_FLAG_STRING, &g_opts.stun_xdp_mode, "kderp: XDP attach mode: auto, native or generic", false},
	{"offload", KD_FLAG_STRING, &g_opts.offload, "kderp: off|sockmap|auto: relay plain-TCP clients in the kernel (sk_skb); auto offloads loopback clients whose first 64 packets average >= 16 KiB (bpf/README.md)", false},
	{"offload-pin-dir", KD_FLAG_STRING, &g_opts.offload_pin_dir, "kderp: bpffs directory for the kernel plane's maps (default /sys/fs/bpf/kderp); one per kderpd", false},
	{"user", KD_FLAG_STRING, &g_opts.user, "kderp: after binding and loading BPF, switch to this user (name or uid); default: stay", false},
	{"keep-caps", KD_FLAG_STRING, &g_opts.keep_caps, "kderp: capabilities to keep after startup, e.g. net_bind_service,net_admin (default: net_bind_service, plus net_admin,bpf,perfmon with -stun-xdp or -offload=sockmap|auto; \"all\" keeps everything)", false},
	{"verbose", KD_FLAG_BOOL, &g_opts.verbose, "kderp: debug logging", false},
	{"config-file", KD_FLAG_STRING, &g_opts.config_file, "kderp: file of `name = value` lines with these flag names; command-line flags win; SIGHUP re-reads it", false},
};
#define NFLAGS (sizeof(g_flags) / sizeof(g_flags[0]))

static struct opts g_defaults;
static char *g_cfgbuf; /* the config file the running g_opts strings point into */

/* g_flags describes g_opts; the same table aimed at another struct opts
 * (a reload parses into a scratch copy and applies only what may change). */
static void bind_flags(struct kd_flag *dst, struct opts *o)
{
	for (size_t i = 0; i < NFLAGS; i++) {
		dst[i] = g_flags[i];
		dst[i].ptr = (char *)o + ((char *)g_flags[i].ptr - (char *)&g_opts);
		dst[i].set = false;
	}
}

/* Defaults, then the file, then the command line over it. *buf keeps the
 * file's strings alive. */
static int read_opts(struct opts *o, struct kd_flag *table, const char *path, int argc, char **argv,
		     char **buf)
{
	*o = g_defaults;
	bind_flags(table, o);
	if (kd_configfile_apply(path, table, NFLAGS, buf) != 0)
		return -EINVAL;
	if (kd_flags_parse(table, NFLAGS, argc, argv) != 0) {
		free(*buf);
		*buf = NULL;
		return -EINVAL;
	}
	return 0;
}

static bool flag_differs(const struct kd_flag *a, const struct kd_flag *b)
{
	switch (a->type) {
	case KD_FLAG_BOOL:
		return *(bool *)a->ptr != *(bool *)b->ptr;
	case KD_FLAG_STRING:
		return strcmp(*(const char **)a->ptr, *(const char **)b->ptr) != 0;
	case KD_FLAG_INT:
		return *(int *)a->ptr != *(int *)b->ptr;
	case KD_FLAG_DOUBLE:
		return *(double *)a->ptr != *(double *)b->ptr;
	case KD_FLAG_DURATION_MS:
		return *(unsigned *)a->ptr != *(unsigned *)b->ptr;
	}
	return false;
}

static bool flag_set(const char *name)
{
	for (size_t i = 0; i < NFLAGS; i++)
		if (!strcmp(g_flags[i].name, name))
			return g_flags[i].set;
	return false;
}

/* A flag whose feature is missing must not look like it works. */
static int refuse_unsupported(void)
{
	static const char *const missing[] = {"secrets-url", "verify-clients",
					      "rate-config", "bootstrap-dns-names",
					      "unpublished-bootstrap-dns-names", "ace"};
	for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
		for (size_t k = 0; k < NFLAGS; k++) {
			if (strcmp(g_flags[k].name, missing[i]) || !g_flags[k].set)
				continue;
			if (g_flags[k].type == KD_FLAG_BOOL && !*(bool *)g_flags[k].ptr)
				continue;
			if (g_flags[k].type == KD_FLAG_STRING && !**(const char **)g_flags[k].ptr)
				continue;
			pr_err("-%s is not supported by this kderpd yet; refusing to start rather than ignore it",
			       missing[i]);
			return -ENOTSUP;
		}
	}
	if (strcmp(g_opts.offload, "off") && strcmp(g_opts.offload, "sockmap") && strcmp(g_opts.offload, "auto")) {
		pr_err("-offload=%s: want off, sockmap or auto", g_opts.offload);
		return -EINVAL;
	}
	return 0;
}

static int load_identity(struct kd_server_config *cfg)
{
	if (g_opts.dev) {
		/* dev mode: a fresh key every start, never written (spec §2.4) */
		return kd_keypair_generate(&cfg->keys);
	}
	const char *path = g_opts.key_file;
	if (!*path) {
		if (geteuid() != 0) {
			pr_err("-c <config path> not specified");
			return -EINVAL;
		}
		path = "/var/lib/derper/derper.key";
	}
	return kd_keyfile_load_or_create(path, &cfg->keys);
}

static int load_mesh_key_from(struct kd_server_config *cfg, const char *psk_file)
{
	if (g_opts.dev) {
		const char *env = getenv("TAILSCALE_DERPER_MESH_KEY");
		if (!env || !*env)
			return 0;
		if (kd_meshkey_parse(env, strlen(env), cfg->mesh_key) != 0) {
			pr_err("invalid mesh key in TAILSCALE_DERPER_MESH_KEY");
			return -EINVAL;
		}
		cfg->has_mesh_key = true;
		return 0;
	}
	if (!*psk_file)
		return 0;
	if (kd_meshkey_load(psk_file, cfg->mesh_key) != 0) {
		pr_err("invalid mesh key in %s", psk_file);
		return -EINVAL;
	}
	cfg->has_mesh_key = !sodium_is_zero(cfg->mesh_key, sizeof(cfg->mesh_key));
	return 0;
}

static int load_mesh_key(struct kd_server_config *cfg)
{
	return load_mesh_key_from(cfg, g_opts.mesh_psk_file);
}

/* What SIGHUP may change in a running daemon; everything else is bound
 * into listeners, threads, BPF or credentials at startup. */
static bool reloadable(const char *name)
{
	static const char *const names[] = {"verify-client-url", "verify-client-url-fail-open",
					    "verify-client-url-timeout", "mesh-psk-file", "verbose"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(name, names[i]))
			return true;
	return false;
}

/* Strings a reload keeps: the scratch file buffer is freed afterwards. */
static char *g_reload_strs[2];

static const char *keep_str(int slot, const char *v)
{
	char *d = strdup(v);

	if (!d)
		return NULL;
	free(g_reload_strs[slot]);
	g_reload_strs[slot] = d;
	return d;
}

/* SIGHUP: certificates and the mesh key are always re-read; with
 * -config-file the file is re-read too and the admission settings in it
 * apply to clients that log in from now on. A file that does not parse
 * changes nothing (certificates included: the operator fixes and HUPs). */
static void reload(struct kd_server *srv, const struct kd_server_config *cfg, int argc, char **argv)
{
	struct kd_server_config fresh = *cfg;
	struct kd_flag table[NFLAGS], cur[NFLAGS];
	struct opts o = g_opts;
	char *buf = NULL;

	if (*g_opts.config_file) {
		if (read_opts(&o, table, g_opts.config_file, argc, argv, &buf) != 0) {
			pr_err("reload: %s does not parse; every setting keeps its running value",
			       g_opts.config_file);
			return;
		}
		bind_flags(cur, &g_opts);
		for (size_t i = 0; i < NFLAGS; i++) {
			bool mesh_off = !strcmp(table[i].name, "mesh-psk-file") && !*o.mesh_psk_file;
			if ((!reloadable(table[i].name) || mesh_off) && flag_differs(&cur[i], &table[i]))
				pr_warn("reload: -%s changed in %s: needs a restart; the running value stays",
					table[i].name, g_opts.config_file);
		}
		if (!*o.mesh_psk_file)
			o.mesh_psk_file = g_opts.mesh_psk_file;
	}
	bool mesh = *o.mesh_psk_file && !g_opts.dev && load_mesh_key_from(&fresh, o.mesh_psk_file) == 0;
	kd_server_reload(srv, mesh ? fresh.mesh_key : NULL);
	sodium_memzero(&fresh, sizeof(fresh));
	if (mesh && strcmp(o.mesh_psk_file, g_opts.mesh_psk_file)) {
		const char *p = keep_str(0, o.mesh_psk_file);
		if (p)
			g_opts.mesh_psk_file = p;
	}
	if (o.verbose != g_opts.verbose) {
		kd_log_set_level(o.verbose ? KD_LOG_DEBUG : KD_LOG_INFO);
		g_opts.verbose = o.verbose;
	}
	if (strcmp(o.verify_client_url, g_opts.verify_client_url) || o.verify_fail_open != g_opts.verify_fail_open ||
	    o.verify_timeout_ms != g_opts.verify_timeout_ms) {
		int err = kd_server_reconfigure_admission(srv, o.verify_client_url, o.verify_fail_open,
							  o.verify_timeout_ms);
		if (err == -EOPNOTSUPP) {
			pr_warn("reload: -verify-client-url %s in %s: turning admission on or off needs a restart; "
				"the running value stays", *o.verify_client_url ? "set" : "cleared", g_opts.config_file);
		} else if (err == 0) {
			const char *u = keep_str(1, o.verify_client_url);
			if (u) {
				g_opts.verify_client_url = u;
				g_opts.verify_fail_open = o.verify_fail_open;
				g_opts.verify_timeout_ms = o.verify_timeout_ms;
			}
		} else {
			pr_err("reload: admission settings unchanged: %s", strerror(-err));
		}
	}
	free(buf);
	pr_info("reload: done%s%s", *g_opts.config_file ? "; settings from " : "", g_opts.config_file);
}

/* Spec §3.1: TLS iff the port is 443/https or -certmode=manual. */
static bool serves_tls(const char *addr)
{
	const char *colon = strrchr(addr, ':');
	const char *port = colon ? colon + 1 : "";

	return !strcmp(g_opts.certmode, "manual") || !strcmp(port, "443") || !strcmp(port, "https");
}

static void host_of(const char *addr, char *out, size_t cap)
{
	const char *colon = strrchr(addr, ':');
	size_t n = colon ? (size_t)(colon - addr) : 0;

	if (n >= cap)
		n = cap - 1;
	memcpy(out, addr, n);
	out[n] = '\0';
}

struct stun_planes {
	struct kd_stun_server *srv;
	struct kd_stun_xdp *xdp;
	struct kd_mesh *mesh; /* set after the server starts: atomic */
};

static int stun_metrics(void *arg, char *out, size_t cap)
{
	struct stun_planes *p = arg;
	int n = 0, m;

	if (p->srv) {
		n = kd_stun_server_metrics(p->srv, out, cap);
		if (n < 0)
			return n;
	}
	if (p->xdp) {
		m = kd_stun_xdp_metrics(p->xdp, out + n, cap - (size_t)n);
		if (m < 0)
			return m;
		n += m;
	}
	struct kd_mesh *mesh = __atomic_load_n(&p->mesh, __ATOMIC_ACQUIRE);
	if (mesh) {
		m = kd_mesh_metrics(mesh, out + n, cap - (size_t)n);
		if (m < 0)
			return m;
		n += m;
	}
	return n;
}

/* What the running daemon still needs: the listeners are bound, but
 * detaching XDP on exit and managing sockmap entries take the kernel-plane
 * capabilities. Any other capability is dropped, even as root. */
static int privs_opts(struct kd_privs_opts *po, int offload)
{
	po->user = g_opts.user;
	po->group = NULL;
	po->keep = KD_CAP(CAP_NET_BIND_SERVICE);
	if (*g_opts.stun_xdp || offload)
		po->keep |= KD_CAP(CAP_NET_ADMIN) | KD_CAP(CAP_BPF) | KD_CAP(CAP_PERFMON);
	if (*g_opts.keep_caps && kd_privs_parse_caps(g_opts.keep_caps, &po->keep) != 0) {
		pr_err("-keep-caps \"%s\": want a comma-separated list of capability names "
		       "(net_bind_service,net_admin,bpf,perfmon,net_raw...), \"none\" or \"all\"",
		       g_opts.keep_caps);
		return -EINVAL;
	}
	return 0;
}

/* SIGUSR2 (user/upgrade.h): a new copy of this binary takes the listeners. */
struct upgrade {
	pid_t child;
	int ready_fd;          /* -1: none running */
	int64_t drain_until;   /* the child serves: exit at this time (ms), 0 = not yet */
};

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void upgrade_start(struct upgrade *u, struct kd_server *srv, struct kd_stun_server *stun,
			  char **argv, int ep)
{
	struct kd_upgrade_fd fds[KD_UPGRADE_MAX_FDS];
	char udpkey[300], host[256];

	if (u->ready_fd >= 0 || u->drain_until) {
		pr_warn("upgrade: one is already under way (pid %d); SIGUSR2 ignored", (int)u->child);
		return;
	}
	int n = kd_server_upgrade_fds(srv, fds, KD_UPGRADE_MAX_FDS - 1);
	if (stun) {
		host_of(g_opts.addr, host, sizeof(host));
		snprintf(udpkey, sizeof(udpkey), "%s:%d", host, g_opts.stun_port);
		fds[n++] = (struct kd_upgrade_fd){"udp", udpkey, kd_stun_server_fd(stun)};
	}
	if (kd_upgrade_spawn(argv, fds, n, &u->child, &u->ready_fd) != 0)
		return;
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 2};
	epoll_ctl(ep, EPOLL_CTL_ADD, u->ready_fd, &ev);
}

/* The child wrote its byte (it serves) or closed the pipe (it died). */
static void upgrade_on_ready(struct upgrade *u, struct kd_server *srv, int ep)
{
	char b = 0;
	ssize_t r = read(u->ready_fd, &b, 1);

	epoll_ctl(ep, EPOLL_CTL_DEL, u->ready_fd, NULL);
	close(u->ready_fd);
	u->ready_fd = -1;
	if (r == 1 && b == 'R') {
		/* handshakes accepted here just before get a moment to finish:
		 * a client between connect and login would otherwise see a close */
		kd_server_stop_accepting(srv);
		u->drain_until = mono_ms() + 1000;
		pr_info("upgrade: pid %d serves; this process stopped accepting and exits in 1 s",
			(int)u->child);
		return;
	}
	int st = 0;
	waitpid(u->child, &st, 0);
	pr_err("upgrade: the new process (pid %d) ended before serving (%s %d); this one keeps serving",
	       (int)u->child, WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

int main(int argc, char **argv)
{
	struct kd_server_config cfg;
	struct kd_server *srv = NULL;
	struct kd_stun_server *stun = NULL;
	struct stun_planes planes = {0};
	int err;

	kd_server_config_defaults(&cfg);
	g_defaults = g_opts;
	if (kd_flags_parse(g_flags, NFLAGS, argc, argv) != 0) {
		kd_flags_usage(g_flags, NFLAGS, argv[0]);
		return 2;
	}
	if (*g_opts.config_file) {
		struct kd_flag table[NFLAGS];
		struct opts o;
		const char *path = g_opts.config_file;
		if (read_opts(&o, table, path, argc, argv, &g_cfgbuf) != 0)
			return 2;
		g_opts = o;
		for (size_t i = 0; i < NFLAGS; i++)
			g_flags[i].set = table[i].set;
	}
	if (g_opts.version) {
		printf("kderpd %s\n", KDERP_VERSION);
		return 0;
	}
	if (g_opts.verbose)
		kd_log_set_level(KD_LOG_DEBUG);
	if (sodium_init() < 0) {
		pr_err("libsodium init failed");
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	/* one fd per client: take the whole hard limit */
	struct rlimit nofile;
	if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
		nofile.rlim_cur = nofile.rlim_max;
		setrlimit(RLIMIT_NOFILE, &nofile);
	}
	if (refuse_unsupported() != 0)
		return 2;
	/* kderp deviation: -dev binds loopback only (derper binds :3340 on
	 * every interface); pass -a to choose otherwise */
	if (g_opts.dev && !flag_set("a"))
		g_opts.addr = "127.0.0.1:3340";
	/* kderp: -certmode=dev serves TLS with an in-memory self-signed
	 * certificate for -hostname (for tests and trials; clients need
	 * InsecureForTests or the printed CertName pin) */
	bool tls = !strcmp(g_opts.certmode, "dev") || (!g_opts.dev && serves_tls(g_opts.addr));
	if (tls && strcmp(g_opts.certmode, "manual") && strcmp(g_opts.certmode, "dev")) {
		pr_err("-certmode=%s: kderpd has no ACME client; use -certmode=manual with -certdir "
		       "(an IP -hostname gets a generated self-signed certificate), or a port other than 443 "
		       "for plain HTTP", g_opts.certmode);
		return 2;
	}
	if (tls && !strcmp(g_opts.certmode, "manual") && !*g_opts.certdir) {
		pr_err("-certdir is required with -certmode=manual");
		return 2;
	}
	if (tls) {
		cfg.certmode = g_opts.certmode;
		cfg.certdir = g_opts.certdir;
		cfg.hostname = g_opts.hostname;
		cfg.http_port = g_opts.http_port;
		if (!strcmp(g_opts.tls_max, "1.2")) {
			cfg.tls_max_version = TLS1_2_VERSION;
		} else if (strcmp(g_opts.tls_max, "1.3")) {
			pr_err("-tls-max-version %s: want 1.2 or 1.3", g_opts.tls_max);
			return 2;
		}
	}

	cfg.addr = g_opts.addr;
	cfg.dev = g_opts.dev;
	cfg.derp_enabled = g_opts.derp;
	cfg.home = g_opts.home;
	cfg.workers = g_opts.workers;
	cfg.queue_depth = g_opts.queue_depth > 0 ? (uint32_t)g_opts.queue_depth : 32;
	cfg.tcp_keepalive_s = g_opts.tcp_keepalive_ms / 1000;
	cfg.tcp_user_timeout_ms = g_opts.tcp_user_timeout_ms;
	cfg.write_timeout_ms = g_opts.tcp_write_timeout_ms;
	cfg.accept_rate = g_opts.accept_limit;
	cfg.verify_client_url = g_opts.verify_client_url;
	cfg.offload = !strcmp(g_opts.offload, "sockmap") ? 1 : !strcmp(g_opts.offload, "auto") ? 2 : 0;
	cfg.offload_pin_dir = *g_opts.offload_pin_dir ? g_opts.offload_pin_dir : NULL;
	cfg.verify_fail_open = g_opts.verify_fail_open;
	cfg.verify_timeout_ms = g_opts.verify_timeout_ms;
	cfg.accept_burst = g_opts.accept_burst > 0 ? (uint32_t)g_opts.accept_burst
			   : g_opts.accept_limit > 0  ? (uint32_t)(g_opts.accept_limit < 1 ? 1 : g_opts.accept_limit)
						      : 0;
	struct kd_privs_opts po;
	if (privs_opts(&po, cfg.offload) != 0)
		return 2;
	if (kd_http_home_check(cfg.home) != 0) {
		pr_err("unknown --home value %s", cfg.home);
		return 2;
	}
	if (kd_http_debug_env_check() != 0)
		return 2;
	if (load_identity(&cfg) != 0 || load_mesh_key(&cfg) != 0)
		return 1;
	if (*g_opts.mesh_with && !cfg.has_mesh_key) {
		pr_err(g_opts.dev ? "--mesh-with requires TAILSCALE_DERPER_MESH_KEY in -dev"
				  : "--mesh-with requires --mesh-psk-file");
		return 1;
	}
	if (*g_opts.mesh_with) {
		/* a bad list is a flag error: refuse before binding anything */
		static struct kd_mesh_target targets[KD_MESH_MAX_PEERS];
		size_t n;
		err = kd_mesh_parse_list(g_opts.mesh_with, targets, KD_MESH_MAX_PEERS, &n);
		if (err) {
			if (err == -E2BIG)
				pr_err("-mesh-with: more than %d peers", KD_MESH_MAX_PEERS);
			else
				pr_err("-mesh-with \"%s\": entry %zu is not host[:port][/dialhost] or http(s)://host[:port]",
				       g_opts.mesh_with, n + 1);
			return 2;
		}
	}

	/* STUN first, like the reference, but a bind failure is fatal here */
	char host[256];
	host_of(g_opts.addr, host, sizeof(host));
	if (g_opts.stun) {
		stun = kd_stun_server_open(host, g_opts.stun_port);
		if (!stun) {
			pr_err("STUN server on %s:%d failed; run with -stun=false to go without", host,
			       g_opts.stun_port);
			return 1;
		}
	}

	if (*g_opts.stun_xdp) {
		enum kd_xdp_mode mode;
		if (!stun) {
			pr_err("-stun-xdp needs the userspace STUN server (-stun) as its fallback");
			return 2;
		}
		if (kd_xdp_mode_parse(g_opts.stun_xdp_mode, &mode) != 0) {
			pr_err("-stun-xdp-mode %s: want auto, native or generic", g_opts.stun_xdp_mode);
			kd_stun_server_close(stun);
			return 2;
		}
		err = kd_stun_xdp_attach(g_opts.stun_xdp, kd_stun_server_port(stun), mode, &planes.xdp);
		if (err)
			pr_warn("XDP STUN on %s: %s; userspace answers STUN", g_opts.stun_xdp, strerror(-err));
		else
			pr_info("XDP STUN responder on %s (%s, %s); pinned maps under /sys/fs/bpf/kderp/",
				g_opts.stun_xdp, kd_stun_xdp_mode(planes.xdp) == KD_XDP_MODE_NATIVE ? "native" : "generic",
				kd_stun_xdp_method(planes.xdp));
	}
	planes.srv = stun;

	err = kd_server_new(&srv, &cfg);
	if (err) {
		kd_stun_xdp_detach(planes.xdp);
		kd_stun_server_close(stun);
		return 1;
	}
	if (stun || *g_opts.mesh_with)
		kd_server_set_extra_metrics(srv, stun_metrics, &planes);
	kd_upgrade_close_untaken();

	/* ports bound, BPF loaded, no thread yet: the last moment to drop */
	static const char *const pins[] = {
		KD_BPF_PIN_DIR,
		KD_BPF_PIN_DIR "/" KD_STUN_PIN_CONFIG,
		KD_BPF_PIN_DIR "/" KD_STUN_PIN_COUNTERS,
		KD_RELAY_PIN_DIR,
		KD_RELAY_PIN_DIR "/" KD_RELAY_MAP_SOCKS,
		KD_RELAY_PIN_DIR "/" KD_RELAY_MAP_INJECT,
		KD_RELAY_PIN_DIR "/" KD_RELAY_MAP_META,
		KD_RELAY_PIN_DIR "/" KD_RELAY_MAP_CONFIG,
		KD_RELAY_PIN_DIR "/" KD_RELAY_MAP_COUNTERS,
		NULL,
	};
	if (planes.xdp || srv->offload)
		po.chown_paths = pins;
	if ((*po.user || po.keep != KD_CAPS_ALL) && kd_privs_drop(&po) != 0) {
		pr_err("refusing to run with more privileges than -user/-keep-caps allow");
		kd_server_free(srv);
		kd_stun_xdp_detach(planes.xdp);
		kd_stun_server_close(stun);
		return 1;
	}

	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	int sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);

	err = kd_server_start(srv);
	if (err) {
		kd_server_free(srv);
		kd_stun_xdp_detach(planes.xdp);
		kd_stun_server_close(stun);
		return 1;
	}
	if (*g_opts.mesh_with) {
		struct kd_mesh_opts mo = {
			.mesh_with = g_opts.mesh_with,
			.mesh_key = cfg.mesh_key,
			.self_hostname = g_opts.hostname,
			.ca_file = *g_opts.mesh_ca_file ? g_opts.mesh_ca_file : NULL,
			.insecure = g_opts.mesh_insecure,
		};
		struct kd_mesh *mesh = NULL;
		if (kd_mesh_start(&mesh, srv, &mo) != 0) {
			kd_server_free(srv);
			kd_stun_xdp_detach(planes.xdp);
			kd_stun_server_close(stun);
			return 1;
		}
		__atomic_store_n(&planes.mesh, mesh, __ATOMIC_RELEASE);
	}
	char pubhex[KD_KEY_HEX_LEN + 1];
	kd_hex_encode(pubhex, cfg.keys.pub, DERP_KEY_LEN);
	pr_info("kderpd %s: DERP server %s listening on %s (%s), %d workers", KDERP_VERSION, pubhex,
		g_opts.addr, tls ? "TLS" : "plain HTTP", srv->nworkers);
	if (kd_server_port80(srv) >= 0)
		pr_info("plaintext HTTP (generate_204, redirects) on port %d", kd_server_port80(srv));
	if (g_opts.dev) {
		pr_info("dev mode: point a client at http://127.0.0.1:%d/derp — e.g. "
			"`build/kderpctl probe http://127.0.0.1:%d/derp`, or tailscaled with "
			"TS_DEBUG_USE_DERP_HTTP=1 and a DERP map node {\"HostName\":\"127.0.0.1\",\"DERPPort\":%d}",
			kd_server_port(srv), kd_server_port(srv), kd_server_port(srv));
	}

	/* the main thread waits for signals and answers STUN */
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 0};
	epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);
	if (stun) {
		ev.data.u32 = 1;
		epoll_ctl(ep, EPOLL_CTL_ADD, kd_stun_server_fd(stun), &ev);
	}
	kd_upgrade_ready();
	struct upgrade up = {.child = -1, .ready_fd = -1};
	for (bool run = true; run;) {
		struct epoll_event evs[4];
		int timeout = -1;
		if (up.drain_until) {
			int64_t left = up.drain_until - mono_ms();
			if (left <= 0) {
				pr_info("upgrade: handing over to pid %d: sending Restarting to clients and exiting",
					(int)up.child);
				break;
			}
			timeout = (int)left;
		}
		int n = epoll_wait(ep, evs, 4, timeout);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u32 == 1) {
				kd_stun_server_on_readable(stun);
				continue;
			}
			if (evs[i].data.u32 == 2) {
				upgrade_on_ready(&up, srv, ep);
				continue;
			}
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
				if (si.ssi_signo == SIGHUP) {
					reload(srv, &cfg, argc, argv);
					continue;
				}
				if (si.ssi_signo == SIGUSR2) {
					upgrade_start(&up, srv, stun, argv, ep);
					continue;
				}
				pr_info("signal %u: sending Restarting to clients and shutting down", si.ssi_signo);
				run = false;
			}
		}
	}
	/* workers may be inside a mesh forwarder until they are joined */
	kd_server_stop(srv);
	kd_mesh_stop(planes.mesh);
	kd_server_free(srv);
	/* never leave an XDP program on an interface behind */
	kd_stun_xdp_detach(planes.xdp);
	kd_stun_server_close(stun);
	close(ep);
	close(sfd);
	free(g_reload_strs[0]);
	free(g_reload_strs[1]);
	free(g_cfgbuf);
	return 0;
}
