/* SPDX-License-Identifier: MIT */
/* derp-bench's packet payload and the receiver's verdict on each packet:
 * what the loss, out-of-order and corrupt counts are made of. Pure code, in
 * the library so unit tests can reach it. */
#ifndef KD_BENCH_PAYLOAD_H
#define KD_BENCH_PAYLOAD_H

#include <stddef.h>
#include <stdint.h>

/* u64 seq BE, u32 pair id BE, u32 check BE; ~check in the last 4 bytes when
 * the payload has room for it */
#define KD_BENCH_HDR_LEN 16

uint32_t kd_bench_check(uint64_t seq, uint32_t pair);
/* Writes the header (and trailer) into buf[0..size), size >= KD_BENCH_HDR_LEN. */
void kd_bench_fill(uint8_t *buf, size_t size, uint64_t seq, uint32_t pair);

enum kd_bench_verdict {
	KD_BENCH_IN_ORDER, /* the next expected sequence number */
	KD_BENCH_GAP,      /* later than expected: *gap packets went missing */
	KD_BENCH_LATE,     /* earlier than expected: out of order (or duplicate) */
	KD_BENCH_CORRUPT,  /* wrong source, length, pair, check or trailer */
};

/* Per receiver state: the next sequence number it expects. */
struct kd_bench_rx {
	uint64_t expect_seq;
};

/* One received packet for pair `pair` of payload size `size`, which must
 * come from want_key; key is the source key the frame carries. */
enum kd_bench_verdict kd_bench_verify(struct kd_bench_rx *rx, uint32_t pair, size_t size,
				      const uint8_t want_key[32], const uint8_t key[32], const uint8_t *data,
				      size_t len, uint64_t *gap);

#endif
