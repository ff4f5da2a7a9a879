// SPDX-License-Identifier: MIT
/* -offload=auto: a plain-TCP client is watched for its first KD_AUTO_SAMPLE
 * packets, both directions, because the kernel relays a packet only when
 * its sender and its receiver are both offloaded. When their mean payload
 * reaches the crossover the client is marked wanted; kd_conn_try_offload
 * moves it at the next moment nothing is buffered either way (read drained,
 * write queue flushed), so no frame is lost or reordered by the switch. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"
#include "offload_policy.h"
#include "server_internal.h"

const char *kd_auto_decision_name(enum kd_auto_decision d)
{
	static const char *const names[] = {
#define KD_X(id, name) name,
		KD_AUTO_DECISIONS(KD_X)
#undef KD_X
	};
	return (unsigned)d < KD_AUTO_DECISION_MAX ? names[d] : "unknown";
}

int kd_auto_observe(struct kd_auto_obs *ob, size_t payload, uint32_t min_mean, bool loopback,
		    enum kd_auto_decision *d)
{
	if (ob->n >= KD_AUTO_SAMPLE)
		return 0;
	ob->n++;
	ob->bytes += payload;
	if (ob->n < KD_AUTO_SAMPLE)
		return 0;
	if (ob->bytes < (uint64_t)min_mean * ob->n)
		*d = KD_AUTO_USERSPACE_SMALL_PACKETS;
	else
		*d = loopback ? KD_AUTO_KERNEL_LARGE_PACKETS : KD_AUTO_USERSPACE_NOT_LOOPBACK;
	return 1;
}

/* "cork,nagle,sndbuf=N": each off by default (none won, bpf/README.md) */
static int parse_sockopts(const char *s, struct kd_offload_opts *o)
{
	char buf[128], *save = NULL;

	if (snprintf(buf, sizeof(buf), "%s", s) >= (int)sizeof(buf))
		return -EINVAL;
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		char *end;
		if (!strcmp(t, "cork"))
			o->cork = true;
		else if (!strcmp(t, "nagle"))
			o->nagle = true;
		else if (!strncmp(t, "sndbuf=", 7) && (o->sndbuf = (int)strtol(t + 7, &end, 10)) > 0 && !*end)
			;
		else if (!strncmp(t, "rcvbuf=", 7) && (o->rcvbuf = (int)strtol(t + 7, &end, 10)) > 0 && !*end)
			;
		else
			return -EINVAL;
	}
	return 0;
}

void kd_offload_policy_open(struct kd_server *s)
{
	const struct kd_server_config *cfg = &s->cfg;
	const char *mode = cfg->offload == 2 ? "auto" : "sockmap";
	struct kd_offload_opts opts = {.pin_dir = cfg->offload_pin_dir};
	const char *tune = getenv("KDERP_OFFLOAD_SOCKOPTS");
	char why[160];
	int err;

	if (!cfg->offload)
		return;
	if (tune && *tune && parse_sockopts(tune, &opts) != 0) {
		pr_warn("KDERP_OFFLOAD_SOCKOPTS=%s: want cork,nagle,sndbuf=N,rcvbuf=N; ignored", tune);
		opts = (struct kd_offload_opts){.pin_dir = cfg->offload_pin_dir};
	}
	if (!kd_offload_supported(why, sizeof(why))) {
		pr_warn("kernel plane (-offload=%s) unavailable: %s; relaying in userspace", mode, why);
		return;
	}
	err = kd_offload_open(&s->offload, &opts);
	if (err) {
		pr_warn("kernel plane (-offload=%s): %s; relaying in userspace", mode, strerror(-err));
		s->offload = NULL;
		return;
	}
	if (cfg->offload == 1)
		pr_info("kernel plane: plain-TCP clients are relayed by sk_skb programs; maps pinned under %s",
			cfg->offload_pin_dir ? cfg->offload_pin_dir : KD_RELAY_PIN_DIR);
	else
		pr_info("kernel plane (-offload=auto): a plain-TCP client on loopback moves to the kernel when "
			"the mean payload of its first %d packets is >= %u B, the only regime where the kernel "
			"path measured cheaper in CPU than userspace; every other client stays in userspace",
			KD_AUTO_SAMPLE, cfg->offload_auto_min_mean ? cfg->offload_auto_min_mean : KD_AUTO_MIN_MEAN);
	if (tune && *tune)
		pr_info("kernel plane: offloaded sockets tuned with %s", tune);
}

/* Traffic between two addresses of this host goes over lo, whatever
 * interface the addresses belong to. */
static bool on_loopback(int fd)
{
	struct sockaddr_storage a, b;
	socklen_t la = sizeof(a), lb = sizeof(b);

	if (getsockname(fd, (struct sockaddr *)&a, &la) < 0 || getpeername(fd, (struct sockaddr *)&b, &lb) < 0)
		return false;
	if (a.ss_family == AF_INET && b.ss_family == AF_INET) {
		struct in_addr x = ((struct sockaddr_in *)&a)->sin_addr, y = ((struct sockaddr_in *)&b)->sin_addr;
		return x.s_addr == y.s_addr || (ntohl(y.s_addr) >> 24) == 127;
	}
	if (a.ss_family == AF_INET6 && b.ss_family == AF_INET6) {
		const struct in6_addr *x = &((struct sockaddr_in6 *)&a)->sin6_addr;
		const struct in6_addr *y = &((struct sockaddr_in6 *)&b)->sin6_addr;
		if (!memcmp(x, y, sizeof(*x)) || IN6_IS_ADDR_LOOPBACK(y))
			return true;
		return IN6_IS_ADDR_V4MAPPED(y) && y->s6_addr[12] == 127;
	}
	return false;
}

static void decide(struct kd_conn *c, enum kd_auto_decision d)
{
	c->w->ctr.offload_auto[d]++;
	c->auto_decision = (int)d + 1;
	c->auto_watch = false;
	if (d == KD_AUTO_KERNEL_LARGE_PACKETS)
		c->offload_wanted = true;
}

void kd_offload_policy_client(struct kd_conn *c)
{
	struct kd_server *s = c->srv;
	bool plain = !c->ssl && !c->ws && !c->can_mesh;

	/* the kernel plane takes plain-TCP clients only: TLS and WebSocket
	 * bytes are not DERP frames on the wire, and mesh links stay ours */
	if (!s->offload)
		return;
	if (s->cfg.offload == 1) {
		c->offload_wanted = plain;
		return;
	}
	if (!plain) {
		decide(c, KD_AUTO_USERSPACE_NOT_PLAIN_TCP);
		return;
	}
	c->auto_obs = (struct kd_auto_obs){0};
	c->auto_loopback = on_loopback(c->io.fd);
	c->auto_watch = true;
}

void kd_offload_policy_note(struct kd_conn *c, size_t payload)
{
	enum kd_auto_decision d;
	uint32_t min = c->srv->cfg.offload_auto_min_mean ? c->srv->cfg.offload_auto_min_mean : KD_AUTO_MIN_MEAN;

	if (!c->auto_watch)
		return;
	if (kd_auto_observe(&c->auto_obs, payload, min, c->auto_loopback, &d)) {
		decide(c, d);
		pr_debug("offload=auto: %s mean payload %llu B over %u packets: %s", c->peer_str,
			(unsigned long long)(c->auto_obs.bytes / c->auto_obs.n), c->auto_obs.n,
			kd_auto_decision_name(d));
	}
}
