// SPDX-License-Identifier: MIT
/* The relay's framing decisions (include/relay_parse.h) and the names its
 * counters are published under. The BPF programs run the same functions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "offload.h"
#include "relay_parse.h"

static struct derp_frame_hdr hdr(uint8_t type, uint32_t len)
{
	struct derp_frame_hdr h;

	derp_hdr_put(&h, type, len);
	return h;
}

static void test_frame_len(void **state)
{
	struct derp_frame_hdr h;

	h = hdr(DERP_FRAME_KEEP_ALIVE, 0);
	assert_int_equal(kd_relay_frame_len(&h), 5);
	h = hdr(DERP_FRAME_SEND_PACKET, DERP_KEY_LEN + DERP_MAX_PACKET);
	assert_int_equal(kd_relay_frame_len(&h), 5 + 32 + 65536);
	h = hdr(DERP_FRAME_FORWARD_PACKET, 2 * DERP_KEY_LEN + DERP_MAX_PACKET);
	assert_int_equal(kd_relay_frame_len(&h), KD_RELAY_MAX_FRAME);
	h = hdr(DERP_FRAME_FORWARD_PACKET, 2 * DERP_KEY_LEN + DERP_MAX_PACKET + 1);
	assert_int_equal(kd_relay_frame_len(&h), 0);
	/* no wrap-around on the largest length the header can carry */
	h = hdr(DERP_FRAME_SEND_PACKET, 0xffffffffu);
	assert_int_equal(kd_relay_frame_len(&h), 0);
	h = hdr(DERP_FRAME_SEND_PACKET, 0xfffffffbu);
	assert_int_equal(kd_relay_frame_len(&h), 0);
	/* strparser needs rcvbuf above the largest frame */
	assert_true(KD_RELAY_MIN_RCVBUF >= 2 * (5 + 65536 + 32));
}

static void test_classify(void **state)
{
	struct derp_frame_hdr h;

	h = hdr(DERP_FRAME_SEND_PACKET, 32);
	assert_int_equal(kd_relay_classify(&h), KD_RELAY_REDIRECTED);
	h = hdr(DERP_FRAME_SEND_PACKET, 32 + 1400);
	assert_int_equal(kd_relay_classify(&h), KD_RELAY_REDIRECTED);
	h = hdr(DERP_FRAME_SEND_PACKET, 31);
	assert_int_equal(kd_relay_classify(&h), KD_RELAY_PASSED_SHORT_FRAME);
	h = hdr(DERP_FRAME_SEND_PACKET, 0);
	assert_int_equal(kd_relay_classify(&h), KD_RELAY_PASSED_SHORT_FRAME);
	for (int t = 0; t < 256; t++) {
		if (t == DERP_FRAME_SEND_PACKET)
			continue;
		h = hdr((uint8_t)t, 100);
		assert_int_equal(kd_relay_classify(&h), KD_RELAY_PASSED_CONTROL);
	}
}

static void test_route(void **state)
{
	struct derp_frame_hdr h;

	h = hdr(KD_RELAY_ROUTE_TYPE, 8);
	assert_true(kd_relay_is_route(&h));
	h = hdr(KD_RELAY_ROUTE_TYPE, DERP_KEY_LEN); /* the old key route */
	assert_false(kd_relay_is_route(&h));
	h = hdr(KD_RELAY_ROUTE_TYPE, 9);
	assert_false(kd_relay_is_route(&h));
	h = hdr(KD_RELAY_ROUTE_TYPE, 0);
	assert_false(kd_relay_is_route(&h));
	h = hdr(DERP_FRAME_SEND_PACKET, 8);
	assert_false(kd_relay_is_route(&h));
	assert_int_equal(KD_RELAY_ROUTE_LEN, 13);
}

static void test_recv_prefix(void **state)
{
	static const uint8_t send[37] = {0x04, 0x00, 0x01, 0x02, 0x03, [5 ... 36] = 0xdd};
	uint8_t src[DERP_KEY_LEN], want[37];
	struct derp_packet_hdr out;

	for (int i = 0; i < DERP_KEY_LEN; i++)
		src[i] = (uint8_t)(i * 3 + 1);
	want[0] = 0x05;
	memcpy(want + 1, send + 1, 4);
	memcpy(want + 5, src, DERP_KEY_LEN);
	kd_relay_recv_prefix(&out, (const struct derp_frame_hdr *)send, src);
	assert_memory_equal(&out, want, sizeof(want));
	/* in place, as the verdict does it */
	memcpy(&out, send, sizeof(send));
	kd_relay_recv_prefix(&out, &out.h, src);
	assert_memory_equal(&out, want, sizeof(want));
}

static void test_reason_names(void **state)
{
	/* the counters struct is indexed by reason: field order is enum order */
#define KD_X(id, name)                                                          \
	assert_int_equal(offsetof(struct kd_relay_counters, name), 8 * KD_RELAY_##id); \
	assert_string_equal(kd_offload_reason_name(KD_RELAY_##id), #name);
	KD_RELAY_REASONS(KD_X)
#undef KD_X
	for (int a = 0; a < KD_RELAY_REASON_MAX; a++) {
		const char *n = kd_offload_reason_name((enum kd_relay_reason)a);

		assert_true(strlen(n) > 0);
		assert_int_equal(strspn(n, "abcdefghijklmnopqrstuvwxyz_"), strlen(n));
		for (int b = a + 1; b < KD_RELAY_REASON_MAX; b++)
			assert_string_not_equal(n, kd_offload_reason_name((enum kd_relay_reason)b));
	}
	assert_string_equal(kd_offload_reason_name(KD_RELAY_REASON_MAX), "?");
	assert_string_equal(kd_offload_reason_name((enum kd_relay_reason)-1), "?");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frame_len),   cmocka_unit_test(test_classify),
		cmocka_unit_test(test_route),       cmocka_unit_test(test_recv_prefix),
		cmocka_unit_test(test_reason_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
