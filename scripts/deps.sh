#!/usr/bin/env bash
# Installs the Debian packages kderp builds and tests with. Idempotent; as
# root it uses apt-get directly, otherwise sudo.
set -eu
pkgs=(build-essential clang llvm pkg-config make
      libbpf-dev libxdp-dev bpftool xdp-tools ethtool libelf-dev zlib1g-dev
      libssl-dev openssl libsodium-dev libcmocka-dev libclang-rt-14-dev
      iproute2 procps gnuplot-nox busybox-static qemu-system-x86 cpio xz-utils kmod)
missing=()
for p in "${pkgs[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=; [ "$(id -u)" -eq 0 ] || sudo=sudo
echo "deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
