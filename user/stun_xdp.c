// SPDX-License-Identifier: MIT
/* XDP STUN responder loader: skeleton open → load → config → pin → attach,
 * one NULL-safe teardown that undoes whatever was done. */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <xdp/libxdp.h>

#include "log.h"
#include "stun_xdp.h"
#include "stun_xdp.skel.h"

#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif

struct kd_stun_xdp {
	struct stun_xdp_bpf *skel;
	struct xdp_program *xprog; /* set when libxdp attached it */
	int link_fd;               /* set when attached as a BPF link */
	int ifindex;
	enum kd_xdp_mode mode;
	struct stun_xdp_config cfg;
	bool pinned_config, pinned_counters;
	/* the pin directory, opened as root: after -user the exit path cannot
	 * walk /sys/fs/bpf (mode 0700) but can unlink relative to this */
	int pin_dirfd;
	char ifname[IF_NAMESIZE];
};

static const char *const af_names[] = STUN_XDP_AF_NAMES;
static const char *const act_names[] = STUN_XDP_ACTION_NAMES;
static const char *const reason_names[] = {
#define KD_X(id, name) name,
	STUN_XDP_REASONS(KD_X)
#undef KD_X
};
_Static_assert(sizeof(af_names) / sizeof(af_names[0]) == STUN_XDP_AF_MAX, "af names");
_Static_assert(sizeof(act_names) / sizeof(act_names[0]) == STUN_XDP_ACT_MAX, "action names");
_Static_assert(sizeof(reason_names) / sizeof(reason_names[0]) == STUN_XDP_R_MAX, "reason names");

const char *kd_stun_xdp_reason_name(enum stun_xdp_reason r)
{
	return (unsigned)r < STUN_XDP_R_MAX ? reason_names[r] : "?";
}

const char *kd_xdp_mode_name(enum kd_xdp_mode mode)
{
	switch (mode) {
	case KD_XDP_MODE_AUTO:
		return "auto";
	case KD_XDP_MODE_NATIVE:
		return "native";
	case KD_XDP_MODE_GENERIC:
		return "generic";
	}
	return "?";
}

int kd_xdp_mode_parse(const char *s, enum kd_xdp_mode *out)
{
	if (!strcmp(s, "auto") || !strcmp(s, "xdp"))
		*out = KD_XDP_MODE_AUTO;
	else if (!strcmp(s, "native") || !strcmp(s, "xdpdrv") || !strcmp(s, "drv"))
		*out = KD_XDP_MODE_NATIVE;
	else if (!strcmp(s, "generic") || !strcmp(s, "skb") || !strcmp(s, "xdpgeneric"))
		*out = KD_XDP_MODE_GENERIC;
	else
		return -EINVAL;
	return 0;
}

/* libxdp explains its dispatcher fallback at warning level on every attach;
 * that is expected here, so it goes to debug. */
static int libxdp_log(enum libxdp_print_level level, const char *fmt, va_list ap)
{
	char buf[512];
	size_t n;

	vsnprintf(buf, sizeof(buf), fmt, ap);
	n = strlen(buf);
	if (n && buf[n - 1] == '\n')
		buf[n - 1] = 0;
	pr_debug("libxdp: %s", buf);
	return 0;
}

static int libbpf_quiet(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	return libxdp_log((enum libxdp_print_level)level, fmt, ap);
}

static int ensure_pin_dir(void)
{
	struct statfs st;

	if (statfs("/sys/fs/bpf", &st) == 0 && st.f_type != BPF_FS_MAGIC) {
		if (mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") < 0) {
			pr_warn("stun-xdp: mount bpffs on /sys/fs/bpf: %s", strerror(errno));
			return -errno;
		}
		pr_info("stun-xdp: mounted bpffs on /sys/fs/bpf");
	}
	if (mkdir(KD_BPF_PIN_DIR, 0700) < 0 && errno != EEXIST) {
		pr_warn("stun-xdp: mkdir %s: %s", KD_BPF_PIN_DIR, strerror(errno));
		return -errno;
	}
	return 0;
}

/* A stale pin from a daemon that died is replaced, not reused: its layout
 * may be from another build. */
static int pin_map(struct bpf_map *map, const char *name)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", KD_BPF_PIN_DIR, name);
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return bpf_map__pin(map, path);
}

static void unpin_map(struct kd_stun_xdp *x, struct bpf_map *map, const char *name)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", KD_BPF_PIN_DIR, name);
	int err = x->pin_dirfd >= 0 ? (unlinkat(x->pin_dirfd, name, 0) ? -errno : 0) : bpf_map__unpin(map, path);
	/* a pin left behind is seen by kderpctl as a live daemon's counters */
	if (err)
		pr_warn("stun-xdp: unpin %s: %s; it stays behind", path, strerror(-err));
}

static int write_config(struct kd_stun_xdp *x)
{
	__u32 k = 0;

	if (bpf_map__update_elem(x->skel->maps.stun_config, &k, sizeof(k), &x->cfg, sizeof(x->cfg), 0))
		return -errno;
	return 0;
}

static int try_attach(struct kd_stun_xdp *x, enum kd_xdp_mode mode)
{
	int prog_fd = bpf_program__fd(x->skel->progs.kd_stun_xdp);
	enum xdp_attach_mode xm = mode == KD_XDP_MODE_NATIVE ? XDP_MODE_NATIVE : XDP_MODE_SKB;
	const char *force = getenv("KDERP_XDP_ATTACH");
	bool link_only = force && !strcmp(force, "link");
	struct xdp_program *xp = link_only ? NULL : xdp_program__from_fd(prog_fd);
	int err = link_only ? -ENOTSUP : libxdp_get_error(xp);

	if (!err) {
		/* libxdp loads its dispatcher through libbpf, which prints the
		 * expected failure on hosts without it at warning level */
		libbpf_print_fn_t old = libbpf_set_print(libbpf_quiet);

		err = xdp_program__attach(xp, x->ifindex, xm, 0);
		libbpf_set_print(old);
		if (!err) {
			x->xprog = xp;
			return 0;
		}
		xdp_program__close(xp);
	}
	pr_debug("stun-xdp: libxdp attach to %s (%s): %s; trying a BPF link", x->ifname,
		 kd_xdp_mode_name(mode), strerror(-err));

	/* Without its dispatcher (no `ext` programs here) libxdp already falls
	 * back to a legacy netlink attach; this is for when even that fails
	 * (no bpffs for its lock, a libxdp without the fallback). A link, not
	 * a netlink attach: the kernel drops it when our fd closes, so a crash
	 * cannot leave the responder behind on the interface. */
	LIBBPF_OPTS(bpf_link_create_opts, lo,
		    .flags = mode == KD_XDP_MODE_NATIVE ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE);
	int fd = bpf_link_create(prog_fd, x->ifindex, BPF_XDP, &lo);

	if (fd < 0)
		return -errno;
	x->link_fd = fd;
	return 0;
}

/* A legacy (netlink) attach outlives a daemon that crashed; a restart would
 * then fail with EEXIST/EBUSY forever. Remove the program if it is ours by
 * name, nothing else. Returns 0 if one was removed. */
static int remove_stale(struct kd_stun_xdp *x, enum kd_xdp_mode mode)
{
	__u32 flags = mode == KD_XDP_MODE_NATIVE ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE;
	struct bpf_prog_info info = {0};
	__u32 id = 0, len = sizeof(info);
	int fd, err;

	if (bpf_xdp_query_id(x->ifindex, (int)flags, &id) || !id)
		return -ENOENT;
	fd = bpf_prog_get_fd_by_id(id);
	if (fd < 0)
		return -errno;
	if (bpf_obj_get_info_by_fd(fd, &info, &len) || strcmp(info.name, "kd_stun_xdp")) {
		pr_warn("stun-xdp: %s already has XDP program id %u (\"%s\"), not ours: leaving it",
			x->ifname, id, info.name);
		close(fd);
		return -EBUSY;
	}
	LIBBPF_OPTS(bpf_xdp_attach_opts, o, .old_prog_fd = fd);
	err = bpf_xdp_detach(x->ifindex, flags, &o);
	close(fd);
	if (err)
		return err;
	pr_warn("stun-xdp: removed a stale kd_stun_xdp (prog id %u) from %s", id, x->ifname);
	return 0;
}

static int attach_mode(struct kd_stun_xdp *x, enum kd_xdp_mode mode)
{
	int err = try_attach(x, mode);

	if ((err == -EEXIST || err == -EBUSY) && remove_stale(x, mode) == 0)
		err = try_attach(x, mode);
	return err;
}

int kd_stun_xdp_attach(const char *ifname, int port, enum kd_xdp_mode mode, struct kd_stun_xdp **out)
{
	struct kd_stun_xdp *x;
	int err;

	*out = NULL;
	if (port <= 0 || port > 65535) {
		pr_err("stun-xdp: port %d out of range", port);
		return -EINVAL;
	}
	x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	x->link_fd = -1;
	x->pin_dirfd = -1;
	snprintf(x->ifname, sizeof(x->ifname), "%s", ifname);
	x->ifindex = (int)if_nametoindex(ifname);
	if (!x->ifindex) {
		err = -errno;
		pr_err("stun-xdp: interface \"%s\": %s", ifname, strerror(errno));
		goto fail;
	}
	libxdp_set_print(libxdp_log);

	x->skel = stun_xdp_bpf__open_and_load();
	if (!x->skel) {
		err = -errno;
		pr_err("stun-xdp: loading the program: %s", strerror(errno));
		goto fail;
	}
	x->cfg = (struct stun_xdp_config){.dst_port = (__u16)port, .enabled = 1};
	err = write_config(x);
	if (err) {
		pr_err("stun-xdp: writing config: %s", strerror(-err));
		goto fail;
	}
	if (mode == KD_XDP_MODE_AUTO) {
		err = attach_mode(x, KD_XDP_MODE_NATIVE);
		x->mode = KD_XDP_MODE_NATIVE;
		if (err) {
			pr_debug("stun-xdp: native attach to %s: %s; trying generic", ifname,
				 strerror(-err));
			err = attach_mode(x, KD_XDP_MODE_GENERIC);
			x->mode = KD_XDP_MODE_GENERIC;
		}
	} else {
		err = attach_mode(x, mode);
		x->mode = mode;
	}
	if (err) {
		pr_err("stun-xdp: attaching to %s (%s): %s", ifname, kd_xdp_mode_name(mode),
		       strerror(-err));
		goto fail;
	}
	/* Pinned only once attached, so a failed attach cannot replace the
	 * pins of an instance that is running.
	 * Pinning is for operators (bpftool); STUN works without it. */
	if (ensure_pin_dir() == 0) {
		x->pinned_config = !pin_map(x->skel->maps.stun_config, KD_STUN_PIN_CONFIG);
		x->pinned_counters = !pin_map(x->skel->maps.stun_counters, KD_STUN_PIN_COUNTERS);
		if (!x->pinned_config || !x->pinned_counters)
			pr_warn("stun-xdp: pinning maps under %s failed; counters only via metrics",
				KD_BPF_PIN_DIR);
		x->pin_dirfd = open(KD_BPF_PIN_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}

	pr_info("stun-xdp: answering STUN on %s port %d (%s, %s)", ifname, port,
		kd_xdp_mode_name(x->mode), kd_stun_xdp_method(x));
	*out = x;
	return 0;
fail:
	kd_stun_xdp_detach(x);
	return err;
}

void kd_stun_xdp_detach(struct kd_stun_xdp *x)
{
	if (!x)
		return;
	if (x->xprog) {
		enum xdp_attach_mode xm = x->mode == KD_XDP_MODE_NATIVE ? XDP_MODE_NATIVE : XDP_MODE_SKB;
		int err = xdp_program__detach(x->xprog, x->ifindex, xm, 0);

		if (err) {
			/* libxdp looks the attached program up by id, which takes
			 * CAP_SYS_ADMIN: a kderpd that dropped privileges (privs.h)
			 * has only CAP_NET_ADMIN. Its legacy attach is our own
			 * program, which netlink removes by fd with that alone. */
			LIBBPF_OPTS(bpf_xdp_attach_opts, o, .old_prog_fd = xdp_program__fd(x->xprog));
			__u32 flags = x->mode == KD_XDP_MODE_NATIVE ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE;

			if (bpf_xdp_detach(x->ifindex, flags, &o) == 0)
				err = 0;
		}
		if (err)
			pr_warn("stun-xdp: detaching from %s: %s", x->ifname, strerror(-err));
		xdp_program__close(x->xprog);
	}
	if (x->link_fd >= 0) {
		/* a link may be held open elsewhere (pinned, inherited fd):
		 * detach it explicitly rather than relying on the close */
		if (bpf_link_detach(x->link_fd) && errno != EINVAL)
			pr_warn("stun-xdp: detaching link from %s: %s", x->ifname, strerror(errno));
		close(x->link_fd);
	}
	if (x->skel) {
		if (x->pinned_config)
			unpin_map(x, x->skel->maps.stun_config, KD_STUN_PIN_CONFIG);
		if (x->pinned_counters)
			unpin_map(x, x->skel->maps.stun_counters, KD_STUN_PIN_COUNTERS);
		stun_xdp_bpf__destroy(x->skel);
	}
	if (x->pin_dirfd >= 0)
		close(x->pin_dirfd);
	free(x);
}

int kd_stun_xdp_set_drop(struct kd_stun_xdp *x, bool drop)
{
	struct stun_xdp_config old = x->cfg;
	int err;

	x->cfg.drop_stun = drop;
	err = write_config(x);
	if (err)
		x->cfg = old;
	else
		pr_info("stun-xdp: drop STUN %s", drop ? "on" : "off");
	return err;
}

int kd_stun_xdp_set_enabled(struct kd_stun_xdp *x, bool enabled)
{
	struct stun_xdp_config old = x->cfg;
	int err;

	x->cfg.enabled = enabled;
	err = write_config(x);
	if (err)
		x->cfg = old;
	return err;
}

enum kd_xdp_mode kd_stun_xdp_mode(const struct kd_stun_xdp *x)
{
	return x->mode;
}

const char *kd_stun_xdp_method(const struct kd_stun_xdp *x)
{
	return x->xprog ? "libxdp" : "link";
}

int kd_stun_xdp_counter(const struct kd_stun_xdp *x, enum stun_xdp_af af, enum stun_xdp_action act,
			enum stun_xdp_reason reason, struct stun_xdp_counter_val *out)
{
	struct stun_xdp_counter_key k = {.af = af, .action = act, .reason = reason};
	int ncpu = libbpf_num_possible_cpus();

	*out = (struct stun_xdp_counter_val){0};
	if (ncpu <= 0)
		return ncpu ? ncpu : -EINVAL;

	struct stun_xdp_counter_val *vals = calloc((size_t)ncpu, sizeof(*vals));

	if (!vals)
		return -ENOMEM;
	if (bpf_map__lookup_elem(x->skel->maps.stun_counters, &k, sizeof(k), vals,
				 sizeof(*vals) * (size_t)ncpu, 0) == 0) {
		for (int i = 0; i < ncpu; i++) {
			out->packets += vals[i].packets;
			out->bytes += vals[i].bytes;
		}
	}
	free(vals);
	return 0;
}

int kd_stun_xdp_metrics(const struct kd_stun_xdp *x, char *out, size_t cap)
{
	static const char *const names[2] = {"xdp_stun_server_packets_total",
					     "xdp_stun_server_bytes_total"};
	size_t off = 0;

#define EMIT(...)                                                              \
	do {                                                                   \
		int n_ = snprintf(out + off, cap - off, __VA_ARGS__);          \
		if (n_ < 0 || (size_t)n_ >= cap - off)                         \
			return -ENOSPC;                                        \
		off += (size_t)n_;                                             \
	} while (0)

	if (!cap)
		return -ENOSPC;
	out[0] = 0;
	for (int m = 0; m < 2; m++) {
		EMIT("# TYPE %s counter\n", names[m]);
		for (int af = 0; af < STUN_XDP_AF_MAX; af++)
			for (int act = 0; act < STUN_XDP_ACT_MAX; act++)
				for (int r = 0; r < STUN_XDP_R_MAX; r++) {
					struct stun_xdp_counter_val v;
					int err = kd_stun_xdp_counter(x, af, act, r, &v);

					if (err)
						return err;
					if (!v.packets)
						continue;
					EMIT("%s{address_family=\"%s\",xdp_outcome=\"%s\",prog_end=\"%s\"} %llu\n",
					     names[m], af_names[af], act_names[act], reason_names[r],
					     (unsigned long long)(m ? v.bytes : v.packets));
				}
	}
#undef EMIT
	return (int)off;
}
