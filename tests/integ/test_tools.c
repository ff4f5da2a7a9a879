// SPDX-License-Identifier: MIT
/* The tool binaries, driven as a user would: kderpctl exit codes against
 * servers that refuse, stall or answer; derp-bench's accounting over raw TCP
 * with known packet counts; and, when build/kderpd exists, both tools
 * against a kderpd this test starts on a free loopback port. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "client.h"
#include "key.h"

static char bindir[PATH_MAX];  /* BUILD (build/ or build/san/) */
static char kderpctl[PATH_MAX + 16], derpbench[PATH_MAX + 16], kderpd[PATH_MAX + 16];
static pid_t kderpd_pid = -1;
static int kderpd_port;
static const char mesh_hex[] = "5ec0ffee5ec0ffee5ec0ffee5ec0ffee5ec0ffee5ec0ffee5ec0ffee5ec0ffee";

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs argv with stdin from `in` (may be NULL), stdout into out; returns the
 * exit code, or -1 when it had to be killed after timeout_ms. */
static int run(char *const argv[], const char *in, char *out, size_t cap, int timeout_ms)
{
	int po[2], pi[2], status = 0;
	size_t n = 0;
	int64_t deadline = now_ms() + timeout_ms;
	pid_t pid;

	assert_int_equal(pipe(po), 0);
	assert_int_equal(pipe(pi), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(pi[0], 0);
		dup2(po[1], 1);
		close(po[0]);
		close(pi[1]);
		execv(argv[0], argv);
		_exit(127);
	}
	close(po[1]);
	close(pi[0]);
	if (in)
		assert_true(write(pi[1], in, strlen(in)) == (ssize_t)strlen(in));
	close(pi[1]);
	for (;;) {
		struct pollfd pfd = {.fd = po[0], .events = POLLIN};
		int64_t left = deadline - now_ms();
		ssize_t r;

		if (left <= 0 || poll(&pfd, 1, (int)left) <= 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			close(po[0]);
			return -1;
		}
		r = read(po[0], out + n, cap - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n == cap - 1)
			break;
	}
	out[n] = '\0';
	close(po[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static bool executable(const char *p)
{
	return access(p, X_OK) == 0;
}

/* ---- throwaway servers -------------------------------------------------- */

enum fake_mode { FAKE_CLOSE, FAKE_SILENT, FAKE_HTTP_200, FAKE_HTTP_404 };

struct fake {
	int lfd, port;
	enum fake_mode mode;
	atomic_bool stop;
	atomic_int accepted;
	pthread_t th;
};

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	int held[64], nheld = 0;

	while (!atomic_load(&f->stop)) {
		struct pollfd pfd = {.fd = f->lfd, .events = POLLIN};
		char buf[2048];
		int c;

		if (poll(&pfd, 1, 50) <= 0)
			continue;
		c = accept(f->lfd, NULL, NULL);
		if (c < 0)
			continue;
		atomic_fetch_add(&f->accepted, 1);
		switch (f->mode) {
		case FAKE_CLOSE:
			/* read the request first so the close is a clean FIN */
			(void)!read(c, buf, sizeof(buf));
			close(c);
			break;
		case FAKE_SILENT:
			if (nheld < 64)
				held[nheld++] = c;
			else
				close(c);
			break;
		case FAKE_HTTP_200:
		case FAKE_HTTP_404: {
			static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
			static const char nf[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";

			(void)!read(c, buf, sizeof(buf));
			if (f->mode == FAKE_HTTP_200)
				(void)!write(c, ok, sizeof(ok) - 1);
			else
				(void)!write(c, nf, sizeof(nf) - 1);
			close(c);
			break;
		}
		}
	}
	for (int i = 0; i < nheld; i++)
		close(held[i]);
	return NULL;
}

static void fake_start(struct fake *f, enum fake_mode mode)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);

	memset(f, 0, sizeof(*f));
	f->mode = mode;
	f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->lfd >= 0);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(f->lfd, 64), 0);
	assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sa, &sl), 0);
	f->port = ntohs(sa.sin_port);
	assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake *f)
{
	atomic_store(&f->stop, true);
	pthread_join(f->th, NULL);
	close(f->lfd);
}

/* A port nobody listens on (bound and released; racy only in theory). */
static int dead_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

/* ---- kderpd ------------------------------------------------------------- */

/* Does pid hold a socket listening on 127.0.0.1:port? Other test suites on
 * this machine start servers on ephemeral ports too: a port that accepts is
 * not proof that it is ours. */
static bool pid_listens(pid_t pid, int port)
{
	char path[64], line[512], link[64];
	unsigned long inode = 0;
	FILE *f = fopen("/proc/net/tcp", "r");
	bool found = false;
	DIR *d;
	struct dirent *e;

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		unsigned lport, st;
		unsigned long ino;

		if (sscanf(line, " %*d: %*8X:%X %*8X:%*X %X %*X:%*X %*X:%*X %*X %*u %*u %lu", &lport, &st, &ino) == 3 &&
		    (int)lport == port && st == 0x0A) {
			inode = ino;
			break;
		}
	}
	fclose(f);
	if (!inode)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (!d)
		return false;
	snprintf(link, sizeof(link), "socket:[%lu]", inode);
	while (!found && (e = readdir(d))) {
		char fdpath[PATH_MAX], target[64];
		ssize_t n;

		snprintf(fdpath, sizeof(fdpath), "%s/%s", path, e->d_name);
		n = readlink(fdpath, target, sizeof(target) - 1);
		if (n > 0) {
			target[n] = '\0';
			found = !strcmp(target, link);
		}
	}
	closedir(d);
	return found;
}

/* Waits until pid listens on port; false if it died or took over 5 s. */
static bool wait_listening(pid_t pid, int port)
{
	for (int64_t deadline = now_ms() + 5000; now_ms() < deadline;) {
		if (pid_listens(pid, port))
			return true;
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return false;
		usleep(20000);
	}
	return false;
}

static int kderpd_start(void)
{
	char addr[64], env[128];

	kderpd_port = dead_port();
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", kderpd_port);
	snprintf(env, sizeof(env), "TAILSCALE_DERPER_MESH_KEY=%s", mesh_hex);
	kderpd_pid = fork();
	if (kderpd_pid < 0)
		return -errno;
	if (kderpd_pid == 0) {
		int nul = open("/dev/null", O_WRONLY);

		/* its log lines would drown the test output */
		if (nul >= 0 && !getenv("KD_TEST_VERBOSE"))
			dup2(nul, 2);
		putenv(env);
		/* no STUN: 3478 may be taken by another test on this machine */
		execl(kderpd, kderpd, "-dev", "-a", addr, "-stun=false", (char *)NULL);
		_exit(127);
	}
	if (wait_listening(kderpd_pid, kderpd_port))
		return 0;
	return -ETIMEDOUT; /* kderpd_stop() reaps it */
}

static void kderpd_stop(void)
{
	if (kderpd_pid > 0) {
		kill(kderpd_pid, SIGTERM);
		for (int i = 0; i < 100 && waitpid(kderpd_pid, NULL, WNOHANG) == 0; i++)
			usleep(20000);
		kill(kderpd_pid, SIGKILL);
		waitpid(kderpd_pid, NULL, 0);
		kderpd_pid = -1;
	}
}

static bool need_kderpd(void)
{
	if (kderpd_pid > 0)
		return true;
	if (!executable(kderpd))
		printf("# SKIP build/kderpd not built\n");
	else
		printf("# SKIP build/kderpd did not start\n");
	return false;
}

static void url_of(char *out, size_t cap, int port)
{
	snprintf(out, cap, "http://127.0.0.1:%d/derp", port);
}

/* ---- kderpctl without a server ------------------------------------------ */

static void test_keys(void **state)
{
	char out[512], priv_line[128], *nl;
	uint8_t priv[32];
	struct kd_keypair kp;
	char want[KD_NODEKEY_STR_LEN];

	assert_int_equal(run((char *[]){kderpctl, "genkey", NULL}, NULL, out, sizeof(out), 5000), 0);
	assert_int_equal(strncmp(out, "privkey:", 8), 0);
	assert_int_equal(strlen(out), 8 + 64 + 1);
	assert_int_equal(kd_hex_decode(priv, 32, out + 8, 64), 0);
	snprintf(priv_line, sizeof(priv_line), "%s", out);
	assert_int_equal(kd_keypair_from_private(&kp, priv), 0);
	kd_key_nodekey_str(want, kp.pub);

	assert_int_equal(run((char *[]){kderpctl, "pubkey", NULL}, priv_line, out, sizeof(out), 5000), 0);
	nl = strchr(out, '\n');
	assert_non_null(nl);
	*nl = '\0';
	assert_string_equal(out, want);
	/* the transcripts' client A */
	assert_int_equal(run((char *[]){kderpctl, "pubkey", NULL},
			     "privkey:0202020202020202020202020202020202020202020202020202020202020202\n", out,
			     sizeof(out), 5000),
			 0);
	assert_string_equal(out, "nodekey:ce8d3ad1ccb633ec7b70c17814a5c76ecd029685050d344745ba05870e587d59\n");
	assert_int_equal(run((char *[]){kderpctl, "pubkey", NULL}, "privkey:zz\n", out, sizeof(out), 5000), 2);
}

static void test_usage(void **state)
{
	char out[4096];

	assert_int_equal(run((char *[]){kderpctl, NULL}, NULL, out, sizeof(out), 5000), 2);
	assert_int_equal(run((char *[]){kderpctl, "frobnicate", NULL}, NULL, out, sizeof(out), 5000), 2);
	assert_int_equal(run((char *[]){kderpctl, "probe", NULL}, NULL, out, sizeof(out), 5000), 2);
	assert_int_equal(run((char *[]){kderpctl, "probe", "ftp://x/derp", NULL}, NULL, out, sizeof(out), 5000), 1);
	assert_int_equal(run((char *[]){kderpctl, "send", "http://127.0.0.1:1/derp", NULL}, NULL, out,
			     sizeof(out), 5000),
			 2);
	assert_int_equal(run((char *[]){kderpctl, "watch", "http://127.0.0.1:1/derp", NULL}, NULL, out,
			     sizeof(out), 5000),
			 2);
	assert_int_equal(run((char *[]){kderpctl, "help", NULL}, NULL, out, sizeof(out), 5000), 0);
	assert_non_null(strstr(out, "close-peer"));
	assert_int_equal(run((char *[]){derpbench, NULL}, NULL, out, sizeof(out), 5000), 2);
	assert_int_equal(run((char *[]){derpbench, "--raw-tcp", "--size", "3", NULL}, NULL, out, sizeof(out), 5000), 2);
	assert_int_equal(run((char *[]){derpbench, "--raw-tcp", "--rate", "fast", NULL}, NULL, out, sizeof(out), 5000),
			 2);
}

static void test_probe_refused(void **state)
{
	struct fake f;
	char url[64], out[4096];

	/* a server that takes the request and hangs up: refused handshake */
	fake_start(&f, FAKE_CLOSE);
	url_of(url, sizeof(url), f.port);
	assert_int_equal(run((char *[]){kderpctl, "probe", url, "--timeout", "3000", NULL}, NULL, out, sizeof(out),
			     10000),
			 3);
	assert_true(atomic_load(&f.accepted) >= 1);
	fake_stop(&f);

	/* an HTTP server that is not DERP: protocol error */
	fake_start(&f, FAKE_HTTP_404);
	url_of(url, sizeof(url), f.port);
	assert_int_equal(run((char *[]){kderpctl, "probe", url, "--json", NULL}, NULL, out, sizeof(out), 10000), 3);
	assert_non_null(strstr(out, "\"ok\":false"));
	fake_stop(&f);
}

static void test_probe_timeout(void **state)
{
	struct fake f;
	char url[64], out[4096];
	int64_t t0;
	int rc;

	fake_start(&f, FAKE_SILENT);
	url_of(url, sizeof(url), f.port);
	t0 = now_ms();
	rc = run((char *[]){kderpctl, "probe", url, "--timeout", "400", NULL}, NULL, out, sizeof(out), 10000);
	assert_int_equal(rc, 1);
	assert_true(now_ms() - t0 >= 400);
	assert_true(now_ms() - t0 < 5000);
	fake_stop(&f);

	/* nobody listening: a failure, not a refusal of the handshake */
	url_of(url, sizeof(url), dead_port());
	assert_int_equal(run((char *[]){kderpctl, "probe", url, "--timeout", "2000", NULL}, NULL, out, sizeof(out),
			     10000),
			 1);
}

static void test_derpmap(void **state)
{
	struct fake good;
	char path[] = "/tmp/kd-derpmap-XXXXXX", json[1024], out[4096];
	int fd, bad = dead_port();

	fake_start(&good, FAKE_HTTP_200);
	snprintf(json, sizeof(json),
		 "{\"Regions\":{\"900\":{\"RegionID\":900,\"RegionCode\":\"dead\",\"Nodes\":[{\"Name\":\"900a\","
		 "\"RegionID\":900,\"HostName\":\"127.0.0.1\",\"IPv4\":\"127.0.0.1\",\"DERPPort\":%d,"
		 "\"InsecureForTests\":true}]},"
		 "\"901\":{\"RegionID\":901,\"RegionCode\":\"live\",\"RegionName\":\"x\",\"Nodes\":[{\"Name\":\"901a\","
		 "\"RegionID\":901,\"HostName\":\"localhost\",\"IPv4\":\"127.0.0.1\",\"DERPPort\":%d,"
		 "\"InsecureForTests\":true,\"STUNPort\":-1}]}},\"OmitDefaultRegions\":true}",
		 bad, good.port);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_true(write(fd, json, strlen(json)) == (ssize_t)strlen(json));
	close(fd);

	assert_int_equal(run((char *[]){kderpctl, "derpmap", path, "--http", "--count", "2", "--json", NULL}, NULL,
			     out, sizeof(out), 15000),
			 0);
	assert_non_null(strstr(out, "\"preferred\":{\"region\":901,\"code\":\"live\""));
	assert_non_null(strstr(out, "\"code\":\"dead\",\"name\":\"900a\",\"host\":\"127.0.0.1\",\"latency_ms\":null"));
	assert_true(atomic_load(&good.accepted) == 2);

	assert_int_equal(run((char *[]){kderpctl, "derpmap", path, "--http", NULL}, NULL, out, sizeof(out), 15000), 0);
	assert_non_null(strstr(out, "preferred region: 901 (live)"));
	fake_stop(&good);

	/* nothing reachable: failure */
	assert_int_equal(run((char *[]){kderpctl, "derpmap", path, "--http", "--count", "1", NULL}, NULL, out,
			     sizeof(out), 15000),
			 1);
	assert_non_null(strstr(out, "none reachable"));

	/* malformed map: usage */
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(write(fd, "{\"Regions\":{\"1\":[}", 18) == 18);
	close(fd);
	assert_int_equal(run((char *[]){kderpctl, "derpmap", path, "--http", NULL}, NULL, out, sizeof(out), 5000), 2);
	unlink(path);
}

/* ---- derp-bench accounting ---------------------------------------------- */

static long long json_int(const char *json, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(json, pat);
	assert_non_null(p);
	return atoll(p + strlen(pat));
}

static double json_num(const char *json, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(json, pat);
	assert_non_null(p);
	return atof(p + strlen(pat));
}

static void test_bench_raw_counts(void **state)
{
	char out[8192];
	long long sent, recv;

	/* paced: 20 kpps for 1 s over 2 pairs is 20 000 packets, all delivered */
	assert_int_equal(run((char *[]){derpbench, "--raw-tcp", "--pairs", "2", "--size", "200", "--duration", "1",
					"--rate", "20kpps", "--json", "--quiet", NULL},
			     NULL, out, sizeof(out), 30000),
			 0);
	sent = json_int(out, "sent");
	recv = json_int(out, "received");
	/* pacing never overshoots; a loaded machine may undershoot */
	if (sent < 10000 || sent > 21000)
		fail_msg("sent %lld packets at 20 kpps for 1 s", sent);
	assert_int_equal(recv, sent);
	assert_int_equal(json_int(out, "corrupt"), 0);
	assert_int_equal(json_int(out, "out_of_order"), 0);
	assert_int_equal(json_int(out, "seq_gaps"), 0);
	assert_true(json_num(out, "loss_pct") == 0);
	assert_int_equal(json_int(out, "pairs"), 2);
	assert_non_null(strstr(out, "\"mode\":\"raw-tcp\""));
	/* Gbit/s is payload bits over the window */
	assert_true(json_num(out, "delivered_gbps") > 0.4 * 20000 * 200 * 8 / 1e9);
	assert_true(json_num(out, "delivered_gbps") < 1.1 * 20000 * 200 * 8 / 1e9);

	/* unpaced with latency: counts consistent, RTT percentiles ordered */
	assert_int_equal(run((char *[]){derpbench, "--raw-tcp", "--pairs", "3", "--size", "1400", "--duration", "1",
					"--latency", "--json", "--quiet", NULL},
			     NULL, out, sizeof(out), 30000),
			 0);
	assert_true(json_int(out, "sent") > 1000);
	assert_int_equal(json_int(out, "received"), json_int(out, "sent"));
	assert_int_equal(json_int(out, "corrupt"), 0);
	assert_true(json_int(out, "samples") > 10);
	assert_true(json_num(out, "p50_us") > 0);
	assert_true(json_num(out, "p50_us") <= json_num(out, "p99_us"));
	assert_true(json_num(out, "p99_us") <= json_num(out, "max_us"));
}

/* ---- against kderpd ----------------------------------------------------- */

static void test_kderpd_probe(void **state)
{
	char url[64], out[4096];

	if (!need_kderpd()) {
		skip();
		return;
	}
	url_of(url, sizeof(url), kderpd_port);
	assert_int_equal(run((char *[]){kderpctl, "probe", url, "--json", "--count", "3", NULL}, NULL, out,
			     sizeof(out), 10000),
			 0);
	assert_non_null(strstr(out, "\"ok\":true"));
	assert_non_null(strstr(out, "\"server_key\":\"nodekey:"));
	assert_int_equal(json_int(out, "pings"), 3);
}

struct bg {
	char *const *argv;
	char out[8192];
	int rc;
	pthread_t th;
};

static void *bg_main(void *arg)
{
	struct bg *b = arg;

	b->rc = run(b->argv, NULL, b->out, sizeof(b->out), 15000);
	return NULL;
}

static void test_kderpd_send_recv_echo(void **state)
{
	static const char rpriv[] = "privkey:1111111111111111111111111111111111111111111111111111111111111111";
	char url[64], out[4096], rkey[KD_NODEKEY_STR_LEN];
	uint8_t priv[32];
	struct kd_keypair rk;
	struct bg b = {0};
	int64_t t0;

	if (!need_kderpd()) {
		skip();
		return;
	}
	url_of(url, sizeof(url), kderpd_port);
	memset(priv, 0x11, 32);
	assert_int_equal(kd_keypair_from_private(&rk, priv), 0);
	kd_key_nodekey_str(rkey, rk.pub);

	b.argv = (char *const[]){kderpctl, "recv", url, "--key", (char *)rpriv, "--count", "1", "--timeout",
				 "10000", "--json", NULL};
	assert_int_equal(pthread_create(&b.th, NULL, bg_main, &b), 0);
	/* the receiver must be logged in before the packet is sent */
	t0 = now_ms();
	while (!strstr(b.out, "\"ready\"") && now_ms() - t0 < 5000)
		usleep(10000);
	usleep(100000);
	assert_int_equal(run((char *[]){kderpctl, "send", url, "--to", rkey, "hello from kderpctl", NULL}, NULL, out,
			     sizeof(out), 10000),
			 0);
	pthread_join(b.th, NULL);
	assert_int_equal(b.rc, 0);
	assert_non_null(strstr(b.out, "\"data\":\"hello from kderpctl\""));
	assert_non_null(strstr(b.out, "\"len\":19"));

	/* echo: a library client sends, kderpctl echo returns it with our key as source */
	{
		struct kd_client_opts o = {.url = url, .can_ack_pings = true, .timeout_ms = 5000};
		struct kd_client *c;
		struct kd_client_msg m;
		int err;

		b.argv = (char *const[]){kderpctl, "echo", url, "--key", (char *)rpriv, "--count", "1",
					 "--timeout", "10000", "--json", NULL};
		memset(b.out, 0, sizeof(b.out));
		assert_int_equal(pthread_create(&b.th, NULL, bg_main, &b), 0);
		t0 = now_ms();
		while (!strstr(b.out, "\"ready\"") && now_ms() - t0 < 5000)
			usleep(10000);
		usleep(100000);
		assert_int_equal(kd_keypair_generate(&o.key), 0);
		assert_int_equal(kd_client_connect(&c, &o), 0);
		assert_int_equal(kd_client_send_packet(c, rk.pub, "echo me", 7), 0);
		assert_int_equal(kd_client_flush_wait(c, 2000), 0);
		do
			err = kd_client_recv(c, &m, 5000);
		while (err == 0 && m.type != DERP_FRAME_RECV_PACKET);
		assert_int_equal(err, 0);
		assert_memory_equal(m.key, rk.pub, 32);
		assert_int_equal(m.data_len, 7);
		assert_memory_equal(m.data, "echo me", 7);
		kd_client_close(c);
		pthread_join(b.th, NULL);
		assert_int_equal(b.rc, 0);
	}
}

static void test_kderpd_mesh(void **state)
{
	char url[64], out[4096], keyfile[] = "/tmp/kd-meshkey-XXXXXX", badfile[] = "/tmp/kd-meshbad-XXXXXX";
	int fd;

	if (!need_kderpd()) {
		skip();
		return;
	}
	url_of(url, sizeof(url), kderpd_port);
	fd = mkstemp(keyfile);
	assert_true(write(fd, mesh_hex, 64) == 64);
	assert_true(write(fd, "\n", 1) == 1);
	close(fd);
	fd = mkstemp(badfile);
	assert_true(write(fd, "00000000000000000000000000000000000000000000000000000000000000aa", 64) == 64);
	close(fd);

	/* with the mesh key: the initial flood includes our own connection */
	assert_int_equal(run((char *[]){kderpctl, "watch", url, "--mesh-key-file", keyfile, "--count", "1",
					"--timeout", "3000", "--json", NULL},
			     NULL, out, sizeof(out), 10000),
			 0);
	assert_non_null(strstr(out, "\"type\":\"present\""));
	assert_non_null(strstr(out, "127.0.0.1:"));
	/* a wrong key: the server hangs up on WatchConns */
	assert_int_equal(run((char *[]){kderpctl, "watch", url, "--mesh-key-file", badfile, "--count", "1",
					"--timeout", "3000", NULL},
			     NULL, out, sizeof(out), 10000),
			 3);
	/* a key connected nowhere: close-peer says so with exit code 1 */
	assert_int_equal(run((char *[]){kderpctl, "close-peer", url,
					"nodekey:ce8d3ad1ccb633ec7b70c17814a5c76ecd029685050d344745ba05870e587d59",
					"--mesh-key-file", keyfile, NULL},
			     NULL, out, sizeof(out), 10000),
			 1);
	assert_int_equal(run((char *[]){kderpctl, "close-peer", url,
					"nodekey:ce8d3ad1ccb633ec7b70c17814a5c76ecd029685050d344745ba05870e587d59",
					"--mesh-key-file", badfile, NULL},
			     NULL, out, sizeof(out), 10000),
			 3);
	unlink(keyfile);
	unlink(badfile);
}

static void test_kderpd_bench(void **state)
{
	char url[64], out[8192], pid[16];
	long long sent;

	if (!need_kderpd()) {
		skip();
		return;
	}
	url_of(url, sizeof(url), kderpd_port);
	snprintf(pid, sizeof(pid), "%d", (int)kderpd_pid);
	/* paced well below any queue limit: every packet arrives, in order, intact */
	assert_int_equal(run((char *[]){derpbench, "--url", url, "--pairs", "4", "--size", "1000", "--duration", "1",
					"--rate", "8kpps", "--json", "--quiet", "--server-pid", pid, "--latency", NULL},
			     NULL, out, sizeof(out), 30000),
			 0);
	sent = json_int(out, "sent");
	if (sent < 4000 || sent > 8400)
		fail_msg("sent %lld packets at 8 kpps for 1 s", sent);
	assert_int_equal(json_int(out, "received"), sent);
	assert_int_equal(json_int(out, "corrupt"), 0);
	assert_int_equal(json_int(out, "out_of_order"), 0);
	assert_non_null(strstr(out, "\"mode\":\"relay\""));
	assert_null(strstr(out, "\"server_pct\":null"));
	assert_true(json_int(out, "samples") > 10);

	/* --baseline: the same paced load through the relay, over raw TCP and
	 * through the byte forwarder */
	assert_int_equal(run((char *[]){derpbench, "--url", url, "--pairs", "2", "--size", "500", "--duration", "1",
					"--rate", "4kpps", "--baseline", "--json", "--quiet", NULL},
			     NULL, out, sizeof(out), 30000),
			 0);
	assert_non_null(strstr(out, "{\"relay\":{\"mode\":\"relay\""));
	assert_non_null(strstr(out, ",\"raw_tcp\":{\"mode\":\"raw-tcp\""));
	{
		const char *raw = strstr(out, "\"raw_tcp\"");

		/* the first "sent" is the relay's, the one after "raw_tcp" the baseline's */
		assert_int_equal(json_int(out, "received"), json_int(out, "sent"));
		assert_int_equal(json_int(raw, "received"), json_int(raw, "sent"));
		assert_true(json_int(raw, "sent") >= 2000 && json_int(raw, "sent") <= 4200);
		const char *fwd = strstr(out, ",\"forwarder\":{\"mode\":\"forwarder\"");
		assert_non_null(fwd);
		assert_int_equal(json_int(fwd, "received"), json_int(fwd, "sent"));
		assert_true(json_int(fwd, "sent") >= 2000 && json_int(fwd, "sent") <= 4200);
		assert_true(json_int(fwd, "corrupt") == 0);
		assert_true(json_num(out, "relay_to_forwarder_pps") > 0.5 && json_num(out, "relay_to_forwarder_pps") < 2);
	}
	/* both paced at the same rate: close to 1 */
	assert_true(json_num(out, "relay_to_raw_pps") > 0.5 && json_num(out, "relay_to_raw_pps") < 2);
}


/* kderpd serving TLS with its dev certificate: the meta-certificate makes
 * the client use fast start, and the relay works over TLS. */
static void test_kderpd_tls(void **state)
{
	char addr[64], url[96], out[8192], keyfile[] = "/tmp/kd-tls-key-XXXXXX";
	int port = dead_port(), fd;
	pid_t pid;
	bool up;

	if (!need_kderpd()) {
		skip();
		return;
	}
	fd = mkstemp(keyfile);
	close(fd);
	unlink(keyfile); /* kderpd creates it */
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int nul = open("/dev/null", O_WRONLY);

		if (nul >= 0 && !getenv("KD_TEST_VERBOSE"))
			dup2(nul, 2);
		execl(kderpd, kderpd, "-a", addr, "-certmode", "dev", "-hostname", "localhost", "-http-port", "-1",
		      "-stun=false", "-c", keyfile, (char *)NULL);
		_exit(127);
	}
	up = wait_listening(pid, port);
	if (!up) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		unlink(keyfile);
		printf("# SKIP kderpd -certmode dev did not start\n");
		skip();
		return;
	}
	snprintf(url, sizeof(url), "https://localhost:%d/derp", port);
	assert_int_equal(run((char *[]){kderpctl, "probe", url, "--insecure", "--dial", addr, "--json", NULL}, NULL,
			     out, sizeof(out), 10000),
			 0);
	assert_non_null(strstr(out, "\"fast_start\":true"));
	/* verification on: the dev certificate is self-signed, so it is refused */
	assert_int_equal(run((char *[]){kderpctl, "probe", url, "--dial", addr, NULL}, NULL, out, sizeof(out), 10000),
			 3);
	assert_int_equal(run((char *[]){derpbench, "--url", url, "--dial", addr, "--insecure", "--pairs", "2",
					"--size", "1200", "--duration", "1", "--rate", "4kpps", "--json", "--quiet",
					NULL},
			     NULL, out, sizeof(out), 30000),
			 0);
	assert_int_equal(json_int(out, "received"), json_int(out, "sent"));
	assert_true(json_int(out, "sent") >= 2000);
	assert_int_equal(json_int(out, "corrupt"), 0);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	unlink(keyfile);
}

static int group_setup(void **state)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *p;

	if (n <= 0)
		return -1;
	self[n] = '\0';
	/* BUILD/tests/integ/test_tools -> BUILD */
	for (int i = 0; i < 3; i++) {
		p = strrchr(self, '/');
		if (!p)
			return -1;
		*p = '\0';
	}
	snprintf(bindir, sizeof(bindir), "%s", self);
	snprintf(kderpctl, sizeof(kderpctl), "%s/kderpctl", bindir);
	snprintf(derpbench, sizeof(derpbench), "%s/derp-bench", bindir);
	snprintf(kderpd, sizeof(kderpd), "%s/kderpd", bindir);
	if (!executable(kderpctl) || !executable(derpbench)) {
		fprintf(stderr, "test_tools: build %s/kderpctl and %s/derp-bench first\n", bindir, bindir);
		return -1;
	}
	if (executable(kderpd) && kderpd_start() != 0)
		kderpd_stop();
	return 0;
}

static int group_teardown(void **state)
{
	kderpd_stop();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_usage),
		cmocka_unit_test(test_probe_refused),
		cmocka_unit_test(test_probe_timeout),
		cmocka_unit_test(test_derpmap),
		cmocka_unit_test(test_bench_raw_counts),
		cmocka_unit_test(test_kderpd_probe),
		cmocka_unit_test(test_kderpd_send_recv_echo),
		cmocka_unit_test(test_kderpd_mesh),
		cmocka_unit_test(test_kderpd_bench),
		cmocka_unit_test(test_kderpd_tls),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
