// SPDX-License-Identifier: MIT
/* Loader and control of the sockmap relay (bpf/relay.bpf.c). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/magic.h>

#include "log.h"
#include "offload.h"
#include "relay.skel.h"

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

struct kd_offload {
	struct relay_bpf *skel;
	char pin_dir[256]; /* empty: not pinned */
	int pin_dirfd;     /* opened as root: unpins after -user (see unpin_all) */
	int rcvbuf, sndbuf;
	bool cork, nagle;
	int inj_wr;     /* daemon's end: route + frame are written here */
	int inj_rd;     /* in relay_inject; its verdict redirects */
	pthread_mutex_t inj_lock;
	int ncpus;
	bool attached;
};

static const char *const reason_names[] = KD_RELAY_REASON_NAMES;
_Static_assert(sizeof(reason_names) / sizeof(reason_names[0]) == KD_RELAY_REASON_MAX,
	       "one name per reason");

static const char *const pinned_maps[] = {
	KD_RELAY_MAP_SOCKS, KD_RELAY_MAP_MEMBERS, KD_RELAY_MAP_PAIRS, KD_RELAY_MAP_INJECT,
	KD_RELAY_MAP_META, KD_RELAY_MAP_CONFIG, KD_RELAY_MAP_COUNTERS,
};

const char *kd_offload_reason_name(enum kd_relay_reason r)
{
	return (unsigned)r < KD_RELAY_REASON_MAX ? reason_names[r] : "?";
}

/* libbpf's own messages go through our log, one line each */
static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char line[512];
	size_t n;

	if (level == LIBBPF_DEBUG)
		return 0;
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n && line[n - 1] == '\n')
		line[--n] = '\0';
	if (level == LIBBPF_WARN)
		pr_warn("libbpf: %s", line);
	else
		pr_debug("libbpf: %s", line);
	return 0;
}

static int sock_cookie(int fd, uint64_t *cookie)
{
	socklen_t l = sizeof(*cookie);

	if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, cookie, &l) < 0)
		return -errno;
	return 0;
}

/* strparser refuses a message larger than sk_rcvbuf with EMSGSIZE and the
 * socket stays wedged; raising SO_RCVBUF (the kernel doubles it) avoids it.
 * SO_RCVBUF is capped by net.core.rmem_max (212992 by default), so try the
 * privileged SO_RCVBUFFORCE first and check what the socket really got. */
static int ensure_rcvbuf(int fd, int want)
{
	int cur = 0;
	socklen_t l = sizeof(cur);

	if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &cur, &l) < 0)
		return -errno;
	if (cur >= 2 * want)
		return 0;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof(want)) < 0 &&
	    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof(want)) < 0)
		return -errno;
	l = sizeof(cur);
	if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &cur, &l) < 0)
		return -errno;
	if (cur < (int)KD_RELAY_MIN_RCVBUF) {
		pr_err("offload: fd %d: SO_RCVBUF is %d, strparser needs %u (raise net.core.rmem_max)",
		       fd, cur, KD_RELAY_MIN_RCVBUF);
		return -ENOBUFS;
	}
	return 0;
}

static int ensure_bpffs(const char *dir)
{
	struct statfs st;
	char parent[PATH_MAX];
	char *slash;

	if (snprintf(parent, sizeof(parent), "%s", dir) >= (int)sizeof(parent))
		return -ENAMETOOLONG;
	slash = strrchr(parent, '/');
	if (!slash || slash == parent)
		return -EINVAL;
	*slash = '\0';
	if (statfs(parent, &st) < 0)
		return -errno;
	if (st.f_type != BPF_FS_MAGIC) {
		/* what bpftool does on first pin when nobody mounted bpffs */
		if (mount("bpf", parent, "bpf", 0, "mode=0700") < 0) {
			pr_err("offload: mount bpffs on %s: %s", parent, strerror(errno));
			return -errno;
		}
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* dirfd >= 0: relative to it, since a daemon that dropped to -user cannot
 * walk /sys/fs/bpf (mode 0700) to reach the directory by name */
static void unpin_all(const char *dir, int dirfd)
{
	char path[PATH_MAX];

	for (size_t i = 0; i < sizeof(pinned_maps) / sizeof(pinned_maps[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, pinned_maps[i]);
		int r = dirfd >= 0 ? unlinkat(dirfd, pinned_maps[i], 0) : unlink(path);
		if (r < 0 && errno != ENOENT)
			pr_warn("offload: unlink pin %s: %s", path, strerror(errno));
	}
}

static int pin_all(struct kd_offload *o)
{
	struct bpf_map *maps[] = {
		o->skel->maps.relay_socks, o->skel->maps.relay_members, o->skel->maps.relay_pairs,
		o->skel->maps.relay_inject, o->skel->maps.relay_meta, o->skel->maps.relay_config,
		o->skel->maps.relay_counters,
	};
	char path[PATH_MAX];
	int err;

	for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", o->pin_dir, bpf_map__name(maps[i]));
		err = bpf_map__pin(maps[i], path);
		if (err) {
			pr_err("offload: pin %s: %s", path, strerror(-err));
			return err;
		}
	}
	return 0;
}

static int write_config(struct kd_offload *o, const struct kd_relay_config *c)
{
	__u32 zero = 0;

	if (bpf_map_update_elem(bpf_map__fd(o->skel->maps.relay_config), &zero, c, BPF_ANY) < 0)
		return -errno;
	return 0;
}

static int read_config(struct kd_offload *o, struct kd_relay_config *c)
{
	__u32 zero = 0;

	if (bpf_map_lookup_elem(bpf_map__fd(o->skel->maps.relay_config), &zero, c) < 0)
		return -errno;
	return 0;
}

static int attach_map(struct kd_offload *o, int map_fd)
{
	int pfd = bpf_program__fd(o->skel->progs.relay_parser);
	int vfd = bpf_program__fd(o->skel->progs.relay_verdict);

	if (bpf_prog_attach(pfd, map_fd, BPF_SK_SKB_STREAM_PARSER, 0) < 0)
		return -errno;
	if (bpf_prog_attach(vfd, map_fd, BPF_SK_SKB_STREAM_VERDICT, 0) < 0) {
		int err = -errno;

		bpf_prog_detach2(pfd, map_fd, BPF_SK_SKB_STREAM_PARSER);
		return err;
	}
	return 0;
}

static void detach_map(struct kd_offload *o, int map_fd)
{
	bpf_prog_detach2(bpf_program__fd(o->skel->progs.relay_verdict), map_fd,
			 BPF_SK_SKB_STREAM_VERDICT);
	bpf_prog_detach2(bpf_program__fd(o->skel->progs.relay_parser), map_fd,
			 BPF_SK_SKB_STREAM_PARSER);
}

/* A loopback TCP pair: strparser works on TCP only (not AF_UNIX). The
 * accepted end must be the socket we connected, not a stranger's. */
static int tcp_loopback_pair(int *wr, int *rd)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct sockaddr_in local, peer;
	socklen_t al = sizeof(a), pl;
	int lfd, c = -1, s = -1, err, one = 1;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		return -errno;
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 1) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&a, &al) < 0)
		goto fail_errno;
	c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) < 0)
		goto fail_errno;
	al = sizeof(local);
	if (getsockname(c, (struct sockaddr *)&local, &al) < 0)
		goto fail_errno;
	for (;;) {
		pl = sizeof(peer);
		s = accept4(lfd, (struct sockaddr *)&peer, &pl, SOCK_CLOEXEC);
		if (s < 0)
			goto fail_errno;
		if (peer.sin_port == local.sin_port && peer.sin_addr.s_addr == local.sin_addr.s_addr)
			break;
		close(s);
	}
	close(lfd);
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	*wr = c;
	*rd = s;
	return 0;
fail_errno:
	err = -errno;
	if (c >= 0)
		close(c);
	close(lfd);
	return err;
}

static int injector_open(struct kd_offload *o)
{
	struct kd_relay_meta m = {.flags = KD_RELAY_F_INJECTOR};
	uint64_t cookie, fd64;
	__u32 zero = 0;
	int err, sndbuf = 4 * (int)KD_RELAY_MAX_FRAME;

	err = tcp_loopback_pair(&o->inj_wr, &o->inj_rd);
	if (err) {
		pr_err("offload: injector socket pair: %s", strerror(-err));
		return err;
	}
	setsockopt(o->inj_wr, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	err = ensure_rcvbuf(o->inj_rd, o->rcvbuf);
	if (!err)
		err = sock_cookie(o->inj_rd, &cookie);
	if (err)
		return err;
	if (bpf_map_update_elem(bpf_map__fd(o->skel->maps.relay_meta), &cookie, &m, BPF_ANY) < 0)
		return -errno;
	fd64 = (uint64_t)o->inj_rd;
	if (bpf_map_update_elem(bpf_map__fd(o->skel->maps.relay_inject), &zero, &fd64, BPF_ANY) < 0) {
		err = -errno;
		pr_err("offload: injector into %s: %s", KD_RELAY_MAP_INJECT, strerror(-err));
		return err;
	}
	return 0;
}

int kd_offload_open(struct kd_offload **out, const struct kd_offload_opts *opts)
{
	static const struct kd_offload_opts defaults;
	struct kd_relay_config cfg;
	struct kd_offload *o;
	const char *dir;
	int err;

	*out = NULL;
	if (!opts)
		opts = &defaults;
	o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	o->inj_wr = o->inj_rd = -1;
	o->pin_dirfd = -1;
	pthread_mutex_init(&o->inj_lock, NULL);
	o->rcvbuf = opts->rcvbuf > (int)KD_RELAY_MIN_RCVBUF ? opts->rcvbuf : 2 * (int)KD_RELAY_MIN_RCVBUF;
	o->sndbuf = opts->sndbuf;
	o->cork = opts->cork;
	o->nagle = opts->nagle;
	o->ncpus = libbpf_num_possible_cpus();
	if (o->ncpus <= 0) {
		err = o->ncpus ? o->ncpus : -EINVAL;
		goto fail;
	}
	dir = opts->pin_dir ? opts->pin_dir : KD_RELAY_PIN_DIR;
	if (snprintf(o->pin_dir, sizeof(o->pin_dir), "%s", dir) >= (int)sizeof(o->pin_dir)) {
		err = -ENAMETOOLONG;
		goto fail;
	}

	libbpf_set_print(libbpf_log);
	o->skel = relay_bpf__open_and_load();
	if (!o->skel) {
		err = errno ? -errno : -EINVAL;
		pr_err("offload: load bpf/relay.bpf.o: %s", strerror(-err));
		goto fail;
	}
	cfg.enabled = !opts->disabled;
	cfg.queue_bytes = opts->queue_bytes ? opts->queue_bytes : KD_RELAY_DEFAULT_QUEUE_BYTES;
	err = write_config(o, &cfg);
	if (err)
		goto fail;
	/* programs on relay_members only: relay_socks just routes keys */
	err = attach_map(o, bpf_map__fd(o->skel->maps.relay_members));
	if (err) {
		pr_err("offload: attach to %s: %s", KD_RELAY_MAP_MEMBERS, strerror(-err));
		goto fail;
	}
	err = attach_map(o, bpf_map__fd(o->skel->maps.relay_inject));
	if (err) {
		detach_map(o, bpf_map__fd(o->skel->maps.relay_members));
		pr_err("offload: attach to %s: %s", KD_RELAY_MAP_INJECT, strerror(-err));
		goto fail;
	}
	o->attached = true;
	err = injector_open(o);
	if (err)
		goto fail;
	if (o->pin_dir[0]) {
		err = ensure_bpffs(o->pin_dir);
		if (err) {
			pr_err("offload: pin dir %s: %s", o->pin_dir, strerror(-err));
			o->pin_dir[0] = '\0';
			goto fail;
		}
		unpin_all(o->pin_dir, -1);
		err = pin_all(o);
		if (err)
			goto fail;
		o->pin_dirfd = open(o->pin_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}
	*out = o;
	return 0;
fail:
	kd_offload_close(o);
	return err;
}

void kd_offload_close(struct kd_offload *o)
{
	if (!o)
		return;
	if (o->inj_wr >= 0)
		close(o->inj_wr);
	if (o->inj_rd >= 0)
		close(o->inj_rd);
	if (o->skel) {
		if (o->attached) {
			detach_map(o, bpf_map__fd(o->skel->maps.relay_members));
			detach_map(o, bpf_map__fd(o->skel->maps.relay_inject));
		}
		if (o->pin_dir[0]) {
			unpin_all(o->pin_dir, o->pin_dirfd);
			rmdir(o->pin_dir); /* only if empty: others may pin there too */
		}
		relay_bpf__destroy(o->skel);
	}
	if (o->pin_dirfd >= 0)
		close(o->pin_dirfd);
	pthread_mutex_destroy(&o->inj_lock);
	free(o);
}

/* The egress of an offloaded socket is written by the psock backlog, one
 * skb_send_sock per frame; these options change how those pieces become
 * segments. Failures are not fatal: the socket relays either way. */
static void tune_egress(const struct kd_offload *o, int fd)
{
	int zero = 0, one = 1;

	if (o->sndbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &o->sndbuf, sizeof(o->sndbuf)) < 0 &&
	    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &o->sndbuf, sizeof(o->sndbuf)) < 0)
		pr_warn("offload: SO_SNDBUF %d on fd %d: %s", o->sndbuf, fd, strerror(errno));
	if (o->nagle && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &zero, sizeof(zero)) < 0)
		pr_warn("offload: TCP_NODELAY off on fd %d: %s", fd, strerror(errno));
	if (o->cork && setsockopt(fd, IPPROTO_TCP, TCP_CORK, &one, sizeof(one)) < 0)
		pr_warn("offload: TCP_CORK on fd %d: %s", fd, strerror(errno));
}

int kd_offload_attach(struct kd_offload *o, int fd, const uint8_t key[static DERP_KEY_LEN], bool route,
		      bool relay, uint64_t *cookie_out)
{
	struct kd_relay_meta m = {.flags = relay ? KD_RELAY_F_CLIENT : 0};
	int meta_fd = bpf_map__fd(o->skel->maps.relay_meta);
	int members_fd = bpf_map__fd(o->skel->maps.relay_members);
	uint64_t cookie, fd64 = (uint64_t)fd;
	int err, one = 1;

	err = ensure_rcvbuf(fd, o->rcvbuf);
	if (!err)
		err = sock_cookie(fd, &cookie);
	if (err) {
		pr_err("offload: add fd %d: %s", fd, strerror(-err));
		return err;
	}
	tune_egress(o, fd);
	memcpy(m.key, key, DERP_KEY_LEN);
	/* meta first: the verdict must find the sender's key from the moment
	 * the socket is in the map */
	if (bpf_map_update_elem(meta_fd, &cookie, &m, BPF_ANY) < 0) {
		err = -errno;
		pr_err("offload: add fd %d to %s: %s", fd, KD_RELAY_MAP_META, strerror(-err));
		return err;
	}
	if (bpf_map_update_elem(members_fd, &cookie, &fd64, BPF_NOEXIST) < 0) {
		err = -errno;
		pr_err("offload: add fd %d to %s: %s", fd, KD_RELAY_MAP_MEMBERS, strerror(-err));
		bpf_map_delete_elem(meta_fd, &cookie);
		return err;
	}
	if (route) {
		err = kd_offload_route(o, key, fd);
		if (err) {
			pr_err("offload: add fd %d to %s: %s", fd, KD_RELAY_MAP_SOCKS, strerror(-err));
			bpf_map_delete_elem(members_fd, &cookie);
			bpf_map_delete_elem(meta_fd, &cookie);
			return err;
		}
	}
	/* Bytes that arrived before the insert sit in the receive queue and the
	 * strparser only looks at them on the next data_ready. Setting
	 * SO_RCVLOWAT calls tcp_data_ready(), which parses them now. */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one)) < 0)
		pr_warn("offload: SO_RCVLOWAT on fd %d: %s", fd, strerror(errno));
	if (cookie_out)
		*cookie_out = cookie;
	return 0;
}

int kd_offload_add(struct kd_offload *o, int fd, const uint8_t key[static DERP_KEY_LEN])
{
	return kd_offload_attach(o, fd, key, true, true, NULL);
}

int kd_offload_route(struct kd_offload *o, const uint8_t key[static DERP_KEY_LEN], int fd)
{
	int socks_fd = bpf_map__fd(o->skel->maps.relay_socks);
	uint64_t fd64 = (uint64_t)fd;

	if (fd < 0) {
		if (bpf_map_delete_elem(socks_fd, key) < 0 && errno != ENOENT)
			return -errno;
		return 0;
	}
	if (bpf_map_update_elem(socks_fd, key, &fd64, BPF_ANY) < 0)
		return -errno;
	return 0;
}

int kd_offload_remove(struct kd_offload *o, int fd, const uint8_t key[static DERP_KEY_LEN])
{
	int socks_fd = bpf_map__fd(o->skel->maps.relay_socks);
	uint64_t cookie, cur;
	bool found = false;
	int err;

	err = sock_cookie(fd, &cookie);
	if (err)
		return err;
	/* the key may already belong to a newer connection of the same client */
	if (bpf_map_lookup_elem(socks_fd, key, &cur) == 0 && cur == cookie)
		bpf_map_delete_elem(socks_fd, key);
	if (bpf_map_delete_elem(bpf_map__fd(o->skel->maps.relay_members), &cookie) == 0)
		found = true;
	if (bpf_map_delete_elem(bpf_map__fd(o->skel->maps.relay_meta), &cookie) == 0)
		found = true;
	return found ? 0 : -ENOENT;
}

int kd_offload_pair_take(struct kd_offload *o, const uint8_t src[static DERP_KEY_LEN],
			 const uint8_t dst[static DERP_KEY_LEN], uint64_t *dst_cookie)
{
	int pairs_fd = bpf_map__fd(o->skel->maps.relay_pairs);
	struct kd_relay_pair p;
	struct kd_relay_pair_val v;

	memcpy(p.src, src, DERP_KEY_LEN);
	memcpy(p.dst, dst, DERP_KEY_LEN);
	if (bpf_map_lookup_elem(pairs_fd, &p, &v) < 0)
		return errno == ENOENT ? 0 : -errno;
	/* a frame relayed between lookup and delete re-creates the pair for
	 * a source that is leaving: harmless, the LRU ages it out */
	bpf_map_delete_elem(pairs_fd, &p);
	*dst_cookie = v.dst_cookie;
	return 1;
}

int kd_offload_set_relay(struct kd_offload *o, int fd, bool relay)
{
	int meta_fd = bpf_map__fd(o->skel->maps.relay_meta);
	struct kd_relay_meta m;
	uint64_t cookie;
	int err = sock_cookie(fd, &cookie);

	if (err)
		return err;
	if (bpf_map_lookup_elem(meta_fd, &cookie, &m) < 0)
		return -errno;
	if (m.flags & KD_RELAY_F_INJECTOR)
		return -EINVAL;
	if (relay)
		m.flags |= KD_RELAY_F_CLIENT;
	else
		m.flags &= ~(__u32)KD_RELAY_F_CLIENT;
	/* The update replaces the whole value: destination accounting that a
	 * verdict adds between our lookup and update is lost (a few frames'
	 * bytes of the bound, once per switch). BPF_EXIST: never resurrect an
	 * entry kd_offload_remove just deleted. */
	if (bpf_map_update_elem(meta_fd, &cookie, &m, BPF_EXIST) < 0)
		return -errno;
	return 0;
}

static int write_all_slow(int fd, struct iovec *iov, int iovcnt, size_t done)
{
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	struct msghdr mh = {0};
	ssize_t n;

	/* A frame must never be left half written on the injector: the rest
	 * goes out now. The kernel drains the injector in softirq, so this
	 * waits for its own backlog, not for a client. */
	for (;;) {
		while (iovcnt && done >= iov->iov_len) {
			done -= iov->iov_len;
			iov++;
			iovcnt--;
		}
		if (!iovcnt)
			return 0;
		iov->iov_base = (char *)iov->iov_base + done;
		iov->iov_len -= done;
		mh.msg_iov = iov;
		mh.msg_iovlen = (size_t)iovcnt;
		n = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				return -errno;
			if (poll(&p, 1, 1000) == 0)
				return -ETIMEDOUT;
			n = 0;
		}
		done = (size_t)n;
	}
}

int kd_offload_inject_sock(struct kd_offload *o, uint64_t dst_cookie, const void *frame, size_t len)
{
	struct {
		struct derp_frame_hdr h;
		uint8_t cookie[KD_RELAY_ROUTE_BODY];
	} __attribute__((packed)) route;
	struct iovec iov[2];
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
	size_t total = sizeof(route) + len;
	ssize_t n;
	int err = 0;

	_Static_assert(sizeof(route) == KD_RELAY_ROUTE_LEN, "route frame layout");
	if (len < DERP_FRAME_HDR_LEN || len > KD_RELAY_MAX_FRAME ||
	    derp_hdr_len(frame) != len - DERP_FRAME_HDR_LEN)
		return -EINVAL;
	derp_hdr_put(&route.h, KD_RELAY_ROUTE_TYPE, KD_RELAY_ROUTE_BODY);
	for (int i = 0; i < KD_RELAY_ROUTE_BODY; i++)
		route.cookie[i] = (uint8_t)(dst_cookie >> (8 * i)); /* the verdict reads a host u64 */
	iov[0] = (struct iovec){.iov_base = &route, .iov_len = sizeof(route)};
	iov[1] = (struct iovec){.iov_base = (void *)frame, .iov_len = len};

	pthread_mutex_lock(&o->inj_lock);
	n = sendmsg(o->inj_wr, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (n < 0)
		err = -errno;
	else if ((size_t)n < total)
		err = write_all_slow(o->inj_wr, iov, 2, (size_t)n);
	pthread_mutex_unlock(&o->inj_lock);
	if (err == -EWOULDBLOCK)
		err = -EAGAIN;
	if (err && err != -EAGAIN)
		pr_err("offload: inject: %s", strerror(-err));
	return err;
}

int kd_offload_inject(struct kd_offload *o, const uint8_t dst[static DERP_KEY_LEN],
		      const void *frame, size_t len)
{
	uint64_t cookie = 0;

	/* userspace lookups of a sockhash return the socket cookie; a key
	 * with no route gets cookie 0, which the verdict drops and counts */
	if (bpf_map_lookup_elem(bpf_map__fd(o->skel->maps.relay_socks), dst, &cookie) < 0)
		cookie = 0;
	return kd_offload_inject_sock(o, cookie, frame, len);
}

int kd_offload_set_enabled(struct kd_offload *o, bool enabled)
{
	struct kd_relay_config c;
	int err = read_config(o, &c);

	if (err)
		return err;
	c.enabled = enabled;
	return write_config(o, &c);
}

int kd_offload_set_queue_bytes(struct kd_offload *o, uint32_t bytes)
{
	struct kd_relay_config c;
	int err = read_config(o, &c);

	if (err)
		return err;
	c.queue_bytes = bytes ? bytes : KD_RELAY_DEFAULT_QUEUE_BYTES;
	return write_config(o, &c);
}

int kd_offload_counters(struct kd_offload *o, uint64_t out[KD_RELAY_REASON_MAX])
{
	struct kd_relay_counters *vals = calloc((size_t)o->ncpus, sizeof(*vals));
	__u32 zero = 0;
	int err = 0;

	if (!vals)
		return -ENOMEM;
	memset(out, 0, sizeof(uint64_t) * KD_RELAY_REASON_MAX);
	if (bpf_map_lookup_elem(bpf_map__fd(o->skel->maps.relay_counters), &zero, vals) < 0) {
		err = -errno;
	} else {
		for (int c = 0; c < o->ncpus; c++) {
			const uint64_t *v = (const uint64_t *)&vals[c];

			for (int r = 0; r < KD_RELAY_REASON_MAX; r++)
				out[r] += v[r];
		}
	}
	free(vals);
	return err;
}

int kd_offload_sock_stats(struct kd_offload *o, int fd, struct kd_offload_sock_stats *st)
{
	struct kd_relay_meta m;
	uint64_t cookie;
	int err = sock_cookie(fd, &cookie);

	if (err)
		return err;
	if (bpf_map_lookup_elem(bpf_map__fd(o->skel->maps.relay_meta), &cookie, &m) < 0)
		return -errno;
	st->redirected_bytes = m.redirected_bytes;
	st->redirected_frames = m.redirected_frames;
	st->dropped_frames = m.dropped_frames;
	return 0;
}

int kd_offload_metrics(struct kd_offload *o, char *out, size_t cap)
{
	uint64_t c[KD_RELAY_REASON_MAX];
	size_t used = 0;
	int n, err = kd_offload_counters(o, c);

	if (err)
		return err;
	n = snprintf(out, cap,
		     "# HELP kderp_offload_frames_total Frames seen by the sockmap relay, by exit.\n"
		     "# TYPE kderp_offload_frames_total counter\n");
	if (n < 0 || (size_t)n >= cap)
		return -ENOSPC;
	used = (size_t)n;
	for (int r = 0; r < KD_RELAY_REASON_MAX; r++) {
		n = snprintf(out + used, cap - used, "kderp_offload_frames_total{reason=\"%s\"} %llu\n",
			     reason_names[r], (unsigned long long)c[r]);
		if (n < 0 || (size_t)n >= cap - used)
			return -ENOSPC;
		used += (size_t)n;
	}
	return (int)used;
}

bool kd_offload_supported(char *why, size_t cap)
{
	struct utsname u;
	unsigned maj = 0, min = 0;

	if (access("/sys/kernel/btf/vmlinux", R_OK) < 0) {
		snprintf(why, cap, "no kernel BTF (/sys/kernel/btf/vmlinux)");
		return false;
	}
	/* sk_skb_cb (the strparser offset) and sockhash lookups from BPF */
	if (uname(&u) == 0 && sscanf(u.release, "%u.%u", &maj, &min) == 2 &&
	    (maj < 5 || (maj == 5 && min < 15))) {
		snprintf(why, cap, "kernel %s is older than 5.15", u.release);
		return false;
	}
	if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SK_SKB, NULL) != 1 ||
	    libbpf_probe_bpf_map_type(BPF_MAP_TYPE_SOCKHASH, NULL) != 1) {
		snprintf(why, cap, "cannot load sk_skb programs or sockhash maps "
				   "(needs CAP_BPF+CAP_NET_ADMIN and CONFIG_BPF_STREAM_PARSER)");
		return false;
	}
	snprintf(why, cap, "ok");
	return true;
}
