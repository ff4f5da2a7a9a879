/* SPDX-License-Identifier: MIT */
/* Loader for the XDP STUN responder (bpf/stun_xdp.bpf.c, spec §9.2). */
#ifndef KD_STUN_XDP_H
#define KD_STUN_XDP_H

#include <stdbool.h>
#include <stddef.h>

#include "stun_wire.h"

enum kd_xdp_mode {
	KD_XDP_MODE_AUTO = 0, /* native, else generic */
	KD_XDP_MODE_NATIVE,   /* driver mode (XDP_FLAGS_DRV_MODE) */
	KD_XDP_MODE_GENERIC,  /* SKB mode (XDP_FLAGS_SKB_MODE) */
};

struct kd_stun_xdp;

/* Loads the program, configures port (enabled, drop off), pins its maps
 * under KD_BPF_PIN_DIR (replacing stale pins; mounts bpffs there if
 * missing) and attaches it to ifname. Tries libxdp first; where its
 * dispatcher is unavailable falls back to a BPF link, which the kernel
 * detaches by itself if this process dies. Returns 0 or -errno; on failure
 * nothing stays attached or pinned and *out is NULL.
 * Environment: KDERP_XDP_ATTACH=link skips libxdp and attaches a BPF link
 * directly (gone with the process even if it crashes). */
int kd_stun_xdp_attach(const char *ifname, int port, enum kd_xdp_mode mode, struct kd_stun_xdp **out);
/* Detaches, unpins and frees; NULL-safe. */
void kd_stun_xdp_detach(struct kd_stun_xdp *x);

/* Maintenance switch: drop STUN requests so clients see this node as
 * unreachable and pick another region (tailscale/tailscale#12527). */
int kd_stun_xdp_set_drop(struct kd_stun_xdp *x, bool drop);
/* Off: every packet is passed to the stack (the userspace server answers). */
int kd_stun_xdp_set_enabled(struct kd_stun_xdp *x, bool enabled);

/* How it ended up attached: "native"/"generic", and via "libxdp" or "link". */
enum kd_xdp_mode kd_stun_xdp_mode(const struct kd_stun_xdp *x);
const char *kd_stun_xdp_method(const struct kd_stun_xdp *x);

/* One counter summed over CPUs; a never-hit key reads as zeros. */
int kd_stun_xdp_counter(const struct kd_stun_xdp *x, enum stun_xdp_af af, enum stun_xdp_action act,
			enum stun_xdp_reason reason, struct stun_xdp_counter_val *out);
/* xdp_stun_server_packets_total / _bytes_total{address_family, xdp_outcome,
 * prog_end} in Prometheus text format, summed over CPUs, keys that were hit
 * only. Returns bytes written (excluding NUL) or -errno (-ENOSPC). */
int kd_stun_xdp_metrics(const struct kd_stun_xdp *x, char *out, size_t cap);

const char *kd_xdp_mode_name(enum kd_xdp_mode mode);
/* "auto" | "native" | "xdpdrv" | "generic" | "skb" | "xdpgeneric" */
int kd_xdp_mode_parse(const char *s, enum kd_xdp_mode *out);
const char *kd_stun_xdp_reason_name(enum stun_xdp_reason r);

#endif
