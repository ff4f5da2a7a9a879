/* SPDX-License-Identifier: MIT */
/* The ClientInfo JSON a client boxes into its first frame (spec §5.3). */
#ifndef KD_CLIENTINFO_H
#define KD_CLIENTINFO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KD_APP_NAME_MAX 128

struct kd_client_info {
	bool has_mesh_key;       /* false for an absent or all-zero meshKey */
	uint8_t mesh_key[32];    /* secret: compare in constant time, never log */
	int64_t version;
	bool can_ack_pings;
	bool is_prober;
	char app_name[KD_APP_NAME_MAX]; /* truncated copy, NUL-terminated, valid UTF-8 */
};

/* Parses a ClientInfo plaintext as the reference (Go encoding/json) does:
 * field names case-insensitive, unknown fields skipped, last duplicate wins,
 * null leaves a field as it was, top-level null is an all-zero ClientInfo.
 * 0, or -EINVAL for anything the reference rejects (not JSON, trailing
 * content, a type mismatch, a meshKey that is not a string of exactly 64 hex
 * digits, a version that is not an int64 integer). out is zeroed on failure. */
int kd_client_info_parse(const uint8_t *json, size_t len, struct kd_client_info *out);

/* The ClientInfo JSON a Tailscale client writes: meshKey (when set), version
 * (when non-zero), CanAckPings (always), IsProber (when true), AppName (when
 * non-empty), compact. Returns the length written (a NUL follows) or
 * -ENOSPC. */
int kd_client_info_format(char *out, size_t cap, const struct kd_client_info *ci);

#endif
