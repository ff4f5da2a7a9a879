// SPDX-License-Identifier: MIT
#include "keymap.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

static uint8_t g_hash_key[crypto_shorthash_KEYBYTES];
static pthread_once_t g_hash_once = PTHREAD_ONCE_INIT;

static void hash_key_init(void)
{
	randombytes_buf(g_hash_key, sizeof(g_hash_key));
}

static uint64_t key_hash(const uint8_t *key)
{
	uint64_t h;
	crypto_shorthash((unsigned char *)&h, key, DERP_KEY_LEN, g_hash_key);
	return h;
}

void kd_keymap_init(struct kd_keymap *m)
{
	pthread_once(&g_hash_once, hash_key_init);
	memset(m, 0, sizeof(*m));
}

void kd_keymap_free(struct kd_keymap *m)
{
	free(m->slots);
	memset(m, 0, sizeof(*m));
}

static struct kd_keymap_slot *find(const struct kd_keymap *m, const uint8_t *key)
{
	if (!m->cap)
		return NULL;
	size_t mask = m->cap - 1;
	for (size_t i = key_hash(key) & mask, n = 0; n < m->cap; i = (i + 1) & mask, n++) {
		struct kd_keymap_slot *s = &m->slots[i];
		if (!s->val && !s->tomb)
			return NULL;
		if (s->val && memcmp(s->key, key, DERP_KEY_LEN) == 0)
			return s;
	}
	return NULL;
}

void *kd_keymap_get(const struct kd_keymap *m, const uint8_t key[static DERP_KEY_LEN])
{
	struct kd_keymap_slot *s = find(m, key);
	return s ? s->val : NULL;
}

static int grow(struct kd_keymap *m)
{
	size_t cap = m->cap ? m->cap : 8;
	/* grow when live entries pass half; rehash in place size when only tombstones pile up */
	if (m->len * 2 >= cap)
		cap *= 2;
	struct kd_keymap_slot *slots = calloc(cap, sizeof(*slots)), *old = m->slots;
	size_t old_cap = m->cap;

	if (!slots)
		return -ENOMEM;
	m->slots = slots;
	m->cap = cap;
	m->len = m->used = 0;
	for (size_t i = 0; i < old_cap; i++) {
		if (!old[i].val)
			continue;
		size_t mask = cap - 1, j = key_hash(old[i].key) & mask;
		while (slots[j].val)
			j = (j + 1) & mask;
		slots[j] = old[i];
		m->len++;
		m->used++;
	}
	free(old);
	return 0;
}

int kd_keymap_put(struct kd_keymap *m, const uint8_t key[static DERP_KEY_LEN], void *val)
{
	struct kd_keymap_slot *s = find(m, key);

	if (s) {
		s->val = val;
		return 0;
	}
	if ((m->used + 1) * 4 >= m->cap * 3) {
		int err = grow(m);
		if (err)
			return err;
	}
	size_t mask = m->cap - 1, i = key_hash(key) & mask;
	while (m->slots[i].val)
		i = (i + 1) & mask;
	s = &m->slots[i];
	if (!s->tomb)
		m->used++;
	memcpy(s->key, key, DERP_KEY_LEN);
	s->val = val;
	s->tomb = 0;
	m->len++;
	return 0;
}

void *kd_keymap_del(struct kd_keymap *m, const uint8_t key[static DERP_KEY_LEN])
{
	struct kd_keymap_slot *s = find(m, key);
	void *v;

	if (!s)
		return NULL;
	v = s->val;
	s->val = NULL;
	s->tomb = 1;
	m->len--;
	if (m->len == 0) {
		/* cheap full reset keeps long-lived maps from filling with tombstones */
		memset(m->slots, 0, m->cap * sizeof(*m->slots));
		m->used = 0;
	}
	return v;
}

size_t kd_keymap_next(const struct kd_keymap *m, size_t pos, const uint8_t **key, void **val)
{
	for (size_t i = pos; i < m->cap; i++) {
		if (m->slots[i].val) {
			*key = m->slots[i].key;
			*val = m->slots[i].val;
			return i + 1;
		}
	}
	return 0;
}
