#!/usr/bin/env bash
# Regenerates vmlinux/vmlinux_<arch>.h from the running kernel's BTF.
# The committed header came from Linux 6.18 (x86_64); CO-RE relocations make
# the BPF objects built against it load on 6.1 and later.
set -eu
cd "$(dirname "$0")"
bpftool btf dump file /sys/kernel/btf/vmlinux format c > "vmlinux_$(uname -m).h"
