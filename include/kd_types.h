/* SPDX-License-Identifier: MIT */
/* Fixed-width types for headers shared by bpf/ and user/.
 * BPF objects get them from vmlinux.h; userspace from the kernel's UAPI
 * headers. Nothing here may pull in libc. */
#ifndef KD_TYPES_H
#define KD_TYPES_H

#if defined(__bpf__)
/* vmlinux.h must already be included by the .bpf.c file */
#else
#include <linux/types.h>
#endif

#ifndef KD_STATIC_ASSERT
#define KD_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

#endif /* KD_TYPES_H */
