/* SPDX-License-Identifier: MIT */
/* Small JSON and key files the daemon reads and writes: the server key file
 * (spec §2.4), the mesh key file (§2.5) and the admission webhook's request
 * and response bodies (§7.10b). */
#ifndef KD_KEYFILE_H
#define KD_KEYFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "key.h"

/* Key files larger than this are refused rather than read whole. */
#define KD_KEYFILE_MAX 65536
/* The webhook's response is judged on its first 4 KiB, like the reference. */
#define KD_ADMISSION_RESPONSE_MAX 4096

/* Loads the server key file at path. When it does not exist, creates it with
 * a fresh key: parent directories 0777 & ~umask, file 0600, written to a
 * temporary file in the same directory, fsynced, renamed over path. Returns
 * 0 or -errno and logs once, naming the path and the step that failed (and an
 * info line when it creates the file). Never logs the key. kp is zeroed on
 * failure. */
int kd_keyfile_load_or_create(const char *path, struct kd_keypair *kp);

/* {"PrivateKey": "privkey:<64 hex>"}, field name case-insensitive, other
 * fields ignored, strict JSON. 0 or -EINVAL (also for a missing or all-zero
 * key). priv is zeroed on failure. */
int kd_keyfile_parse(const char *buf, size_t len, uint8_t priv[32]);
/* The file exactly as derper writes it (json.MarshalIndent with a tab, no
 * trailing newline). Returns the length (a NUL follows) or -ENOSPC. */
int kd_keyfile_format(char *out, size_t cap, const uint8_t priv[32]);

/* Mesh key file content: surrounding ASCII whitespace trimmed, then exactly
 * 64 hex digits of either case. 0 or -EINVAL; key zeroed on failure. */
int kd_meshkey_parse(const char *buf, size_t len, uint8_t key[32]);
/* Reads and parses a mesh key file: 0, -errno from open/read, -EFBIG above
 * 4 KiB, -EINVAL for bad content. Does not log (the caller names the flag);
 * key zeroed on failure. */
int kd_meshkey_load(const char *path, uint8_t key[32]);

/* {"NodePublic":"nodekey:<64 hex>","Source":"<ip>"}; source_ip may be NULL or
 * "" when unknown. Returns the length (a NUL follows) or -ENOSPC. */
int kd_admission_request_format(char *out, size_t cap, const uint8_t key[32],
				const char *source_ip);
/* The webhook's 200 body: only its first KD_ADMISSION_RESPONSE_MAX bytes
 * count, and, as with Go's json.Decoder, whatever follows the first JSON
 * value is ignored. *allow is true only for an object whose Allow (any case)
 * is true. 0, or -EINVAL when that value is not JSON or Allow is not a bool
 * (both mean: reject). */
int kd_admission_response_parse(const char *buf, size_t len, bool *allow);

#endif
