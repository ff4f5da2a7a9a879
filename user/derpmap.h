/* SPDX-License-Identifier: MIT */
/* A Tailscale DERP map (tailcfg.DERPMap JSON), only the fields a client
 * needs to reach the nodes (spec §1, §12). A purpose-built reader: the
 * caller owns the result struct; nothing is allocated. */
#ifndef KD_DERPMAP_H
#define KD_DERPMAP_H

#include <stdbool.h>
#include <stddef.h>

#define KD_DERPMAP_MAX_NODES 256
#define KD_DERPMAP_STR 128

struct kd_derpmap_node {
	int region_id;            /* the enclosing region's RegionID */
	char region_code[32];
	char name[64];
	char host_name[KD_DERPMAP_STR];
	char ipv4[64], ipv6[64];  /* may be empty */
	int derp_port;            /* 0: default (443) */
	bool insecure_for_tests, stun_only;
};

struct kd_derpmap {
	struct kd_derpmap_node nodes[KD_DERPMAP_MAX_NODES];
	int nnodes;
};

/* 0, or -EINVAL with *err_off at the offending byte (malformed JSON, wrong
 * types for known fields), -E2BIG when there are more than
 * KD_DERPMAP_MAX_NODES nodes. Unknown fields are skipped; strings longer
 * than their field are truncated. */
int kd_derpmap_parse(struct kd_derpmap *m, const char *json, size_t len, size_t *err_off);

#endif
