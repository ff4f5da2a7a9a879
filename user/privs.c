// SPDX-License-Identifier: MIT
/* Capabilities through the raw capget/capset syscalls: libcap is not a
 * dependency, and the kernel ABI (version 3, two 32-bit words) is small. */
#include "privs.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"

/* Indexed by number; matches include/uapi/linux/capability.h. */
static const char *const cap_names[] = {
	"chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid",
	"setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw",
	"ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
	"sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time", "sys_tty_config", "mknod",
	"lease", "audit_write", "audit_control", "setfcap", "mac_override", "mac_admin", "syslog",
	"wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
};
#define NCAPS (sizeof(cap_names) / sizeof(cap_names[0]))
_Static_assert(NCAPS == CAP_LAST_CAP + 1, "a capability without a name");

const char *kd_privs_cap_name(unsigned cap)
{
	return cap < NCAPS ? cap_names[cap] : NULL;
}

static bool is_sep(char c)
{
	return c == ',' || c == ' ' || c == '\t';
}

int kd_privs_parse_caps(const char *list, uint64_t *mask)
{
	uint64_t m = 0;
	const char *p = list;

	if (!list || !mask)
		return -EINVAL;
	for (;;) {
		while (is_sep(*p))
			p++;
		if (!*p)
			break;
		const char *w = p;
		while (*p && !is_sep(*p))
			p++;
		size_t n = (size_t)(p - w);
		if (n > 4 && !strncasecmp(w, "cap_", 4)) {
			w += 4;
			n -= 4;
		}
		if (n == 3 && !strncasecmp(w, "all", 3)) {
			m = KD_CAPS_ALL;
			continue;
		}
		if (n == 4 && !strncasecmp(w, "none", 4))
			continue;
		size_t i;
		for (i = 0; i < NCAPS; i++)
			if (strlen(cap_names[i]) == n && !strncasecmp(w, cap_names[i], n))
				break;
		if (i == NCAPS)
			return -EINVAL;
		m |= KD_CAP(i);
	}
	*mask = m;
	return 0;
}

int kd_privs_format_caps(uint64_t mask, char *out, size_t cap)
{
	size_t len = 0;
	int n;

	if (cap)
		out[0] = '\0';
	if (mask == KD_CAPS_ALL)
		return snprintf(out, cap, "all");
	if (!mask)
		return snprintf(out, cap, "none");
	for (unsigned i = 0; i < 64; i++) {
		if (!(mask & KD_CAP(i)))
			continue;
		const char *sep = len ? "," : "";
		if (i < NCAPS)
			n = snprintf(out + (len < cap ? len : cap), len < cap ? cap - len : 0, "%s%s", sep, cap_names[i]);
		else
			n = snprintf(out + (len < cap ? len : cap), len < cap ? cap - len : 0, "%s%u", sep, i);
		len += (size_t)n;
	}
	return (int)len;
}

int kd_privs_thread_count(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -errno;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static int caps_get(uint64_t *eff, uint64_t *prm)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct d[2];

	if (syscall(SYS_capget, &h, d) < 0)
		return -errno;
	*eff = d[0].effective | (uint64_t)d[1].effective << 32;
	*prm = d[0].permitted | (uint64_t)d[1].permitted << 32;
	return 0;
}

static int caps_set(uint64_t keep)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct d[2] = {
		{.effective = (uint32_t)keep, .permitted = (uint32_t)keep, .inheritable = 0},
		{.effective = (uint32_t)(keep >> 32), .permitted = (uint32_t)(keep >> 32), .inheritable = 0},
	};

	return syscall(SYS_capset, &h, d) < 0 ? -errno : 0;
}

/* Numeric ids are accepted so a unit can name a user without a passwd entry. */
static int lookup_user(const char *name, uid_t *uid, gid_t *gid)
{
	char *end;
	struct passwd *pw = getpwnam(name);

	if (pw) {
		*uid = pw->pw_uid;
		*gid = pw->pw_gid;
		return 0;
	}
	if (!isdigit((unsigned char)*name))
		return -ENOENT;
	errno = 0;
	unsigned long v = strtoul(name, &end, 10);
	if (*end || errno || v >= (uid_t)-1)
		return -ENOENT;
	*uid = (uid_t)v;
	*gid = (gid_t)v;
	return 0;
}

static int lookup_group(const char *name, gid_t *gid)
{
	char *end;
	struct group *gr = getgrnam(name);

	if (gr) {
		*gid = gr->gr_gid;
		return 0;
	}
	if (!isdigit((unsigned char)*name))
		return -ENOENT;
	errno = 0;
	unsigned long v = strtoul(name, &end, 10);
	if (*end || errno || v >= (gid_t)-1)
		return -ENOENT;
	*gid = (gid_t)v;
	return 0;
}

/* The bounding set caps what any later exec could regain. */
static void drop_bounding(uint64_t keep, uint64_t eff)
{
	if (!(eff & KD_CAP(CAP_SETPCAP)))
		return; /* not allowed: the other sets still shrink */
	for (unsigned i = 0; i < 64; i++) {
		if (keep & KD_CAP(i))
			continue;
		if (prctl(PR_CAPBSET_DROP, i, 0, 0, 0) < 0 && errno == EINVAL)
			break; /* past the kernel's last capability */
	}
}

static int switch_user(uid_t uid, gid_t gid)
{
	/* without KEEPCAPS, setuid away from 0 clears the permitted set */
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
		return -errno;
	if (setgroups(1, &gid) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0) {
		int err = -errno;
		prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
		return err;
	}
	return prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0 ? -errno : 0;
}

int kd_privs_drop(const struct kd_privs_opts *o)
{
	uid_t uid = getuid();
	gid_t gid = getgid();
	uint64_t eff, prm, keep;
	bool change_user = o && o->user && *o->user;
	char kept[512], missing[512];
	int err, threads;

	if (!o)
		return -EINVAL;
	threads = kd_privs_thread_count();
	if (threads < 0) {
		pr_err("privileges: cannot count threads in /proc/self/task: %s", strerror(-threads));
		return threads;
	}
	if (threads > 1) {
		pr_err("privileges: %d threads already run; capabilities are per thread, so the drop "
		       "must happen before any starts", threads);
		return -EBUSY;
	}
	if (change_user && (err = lookup_user(o->user, &uid, &gid))) {
		pr_err("privileges: unknown user \"%s\"", o->user);
		return err;
	}
	if (o->group && *o->group && (err = lookup_group(o->group, &gid))) {
		pr_err("privileges: unknown group \"%s\"", o->group);
		return err;
	}
	if ((err = caps_get(&eff, &prm))) {
		pr_err("privileges: capget: %s", strerror(-err));
		return err;
	}
	/* bpffs supports chown; unlinking a pin takes write on its directory */
	for (const char *const *p = o->chown_paths; change_user && p && *p; p++)
		if (lchown(*p, uid, gid) != 0 && errno != ENOENT)
			pr_warn("privileges: chown %s to uid %u: %s; it stays behind at exit", *p, (unsigned)uid,
				strerror(errno));
	keep = o->keep & prm;
	drop_bounding(keep, eff);
	/* already that user and group (a unit's User=): setgroups would need
	 * CAP_SETGID for nothing */
	if ((change_user || (o->group && *o->group)) &&
	    (uid != getuid() || uid != geteuid() || gid != getgid() || gid != getegid())) {
		err = switch_user(uid, gid);
		if (err) {
			pr_err("privileges: switching to uid %u gid %u: %s", (unsigned)uid, (unsigned)gid,
			       strerror(-err));
			return err;
		}
	} else if (uid == 0 && (eff & KD_CAP(CAP_SETPCAP))) {
		/* staying root: an exec must not turn uid 0 back into every capability */
		prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED, 0, 0, 0);
	}
	if ((err = caps_set(keep))) {
		pr_err("privileges: capset: %s", strerror(-err));
		return err;
	}
	/* ambient capabilities (systemd AmbientCapabilities=) would survive an exec */
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL) {
		err = -errno;
		pr_err("privileges: clearing ambient capabilities: %s", strerror(errno));
		return err;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		err = -errno;
		pr_err("privileges: PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
		return err;
	}
	/* trust, but verify: a silent partial drop is worse than a failed start */
	if ((err = caps_get(&eff, &prm)) || eff != keep || prm != keep || getuid() != uid ||
	    geteuid() != uid || getgid() != gid || getegid() != gid) {
		pr_err("privileges: the drop did not take effect (uid %u, effective caps %#llx)",
		       (unsigned)geteuid(), (unsigned long long)eff);
		return err ? err : -EPERM;
	}
	kd_privs_format_caps(keep, kept, sizeof(kept));
	if (o->keep != KD_CAPS_ALL && (o->keep & ~keep)) {
		kd_privs_format_caps(o->keep & ~keep, missing, sizeof(missing));
		pr_warn("privileges: asked to keep %s, which this process never had", missing);
	}
	pr_info("privileges: running as uid %u gid %u with capabilities %s, no_new_privs", (unsigned)uid,
		(unsigned)gid, kept);
	return 0;
}
