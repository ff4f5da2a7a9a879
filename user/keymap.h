/* SPDX-License-Identifier: MIT */
/* Open-addressing hash map from a 32-byte DERP key to a pointer. Keys are
 * chosen by clients, so the hash is keyed (SipHash with a per-process
 * secret) to keep collision floods out. Not thread safe. */
#ifndef KD_KEYMAP_H
#define KD_KEYMAP_H

#include <stddef.h>
#include <stdint.h>

#include "derp_wire.h"

struct kd_keymap_slot {
	uint8_t key[DERP_KEY_LEN];
	void *val;          /* NULL = empty */
	uint8_t tomb;       /* deleted marker keeps probe chains intact */
};

struct kd_keymap {
	struct kd_keymap_slot *slots;
	size_t cap;         /* power of two, 0 = nothing allocated */
	size_t len, used;   /* live entries; live + tombstones */
};

void kd_keymap_init(struct kd_keymap *m);
void kd_keymap_free(struct kd_keymap *m);
void *kd_keymap_get(const struct kd_keymap *m, const uint8_t key[static DERP_KEY_LEN]);
/* Inserts or replaces; val must not be NULL. 0 or -ENOMEM. */
int kd_keymap_put(struct kd_keymap *m, const uint8_t key[static DERP_KEY_LEN], void *val);
/* Returns the removed value or NULL. */
void *kd_keymap_del(struct kd_keymap *m, const uint8_t key[static DERP_KEY_LEN]);

/* Iteration: for (size_t i = 0; (i = kd_keymap_next(m, i, &k, &v)) != 0;) */
size_t kd_keymap_next(const struct kd_keymap *m, size_t pos, const uint8_t **key, void **val);

#endif
