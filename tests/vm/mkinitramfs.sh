#!/usr/bin/env bash
# Builds a busybox initramfs that runs test programs on one kernel and powers off.
#
#   tests/vm/mkinitramfs.sh -k KERNEL_DIR -o OUT.cpio.gz [-t SECS] [-m MODULES] TEST...
#
# KERNEL_DIR is a directory printed by fetch-kernels.sh (holds release and
# lib/modules/RELEASE). TEST is NAME:PATH[:ARGS]: PATH is copied in with the
# shared libraries ldd names, and /init runs it under a timeout of SECS
# (default 120). The kTLS module and the crypto modules it needs are copied in
# with their dependencies (from that kernel's modules.dep), decompressed so
# busybox insmod can load them, and loaded in dependency order. -m replaces
# that module list (space-separated names), e.g. -m tls to see what OpenSSL
# does when the AEADs are missing.
#
# On the console, /init prints per test the program's own lines
#   VMTEST <name> PASS|FAIL|SKIP <detail>
# (a cmocka binary's [ OK ]/[ FAILED ]/[ SKIPPED ] lines are translated into
# these), a FAIL line when the program times out or exits non-zero without
# reporting a failure, then "VMDONE" and powers off.
set -euo pipefail

kdir='' out='' tmo=120 mods=''
while getopts k:o:t:m: opt; do
	case $opt in
	k) kdir=$OPTARG ;;
	o) out=$OPTARG ;;
	t) tmo=$OPTARG ;;
	m) mods=$OPTARG ;;
	*) exit 2 ;;
	esac
done
shift $((OPTIND - 1))
die() { echo "mkinitramfs: ERROR: $*" >&2; exit 1; }
[ -n "$kdir" ] && [ -n "$out" ] && [ $# -gt 0 ] || die "usage: $0 -k KERNEL_DIR -o OUT [-t SECS] NAME:PATH[:ARGS]..."
release=$(cat "$kdir/release") || die "$kdir/release missing (run fetch-kernels.sh)"
mdir=$kdir/lib/modules/$release
[ -r "$mdir/modules.dep" ] || die "no modules.dep in $mdir"
busybox=$(command -v busybox) || die "busybox not found (apt-get install busybox-static)"
file -L "$busybox" 2>/dev/null | grep -q 'statically linked' ||
	ldd "$busybox" 2>&1 | grep -q 'not a dynamic' || die "$busybox is not static (install busybox-static)"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,dev,proc,sys,tmp,run,modules,tests,lib64,lib/x86_64-linux-gnu}
cp "$busybox" "$stage/bin/busybox"
for a in sh mount umount ip insmod cat echo timeout poweroff sleep grep sed awk tr date uname dmesg \
	mkdir ls wc head tail true false seq; do
	ln -s busybox "$stage/bin/$a"
done

# --- test programs and their libraries ---
copy_lib() {
	local src=$1
	[ -e "$stage$src" ] && return 0
	mkdir -p "$stage$(dirname "$src")"
	cp -L "$src" "$stage$src"
}
tests_list=$stage/tests/list
: >"$tests_list"
for t in "$@"; do
	IFS=: read -r name path args <<<"$t"
	[ -n "$name" ] && [ -x "$path" ] || die "test '$t': expected NAME:PATH[:ARGS] with an executable PATH"
	cp -L "$path" "$stage/tests/$(basename "$path")"
	while read -r lib; do copy_lib "$lib"; done < <(ldd "$path" | awk '/=> \// { print $3 } /^\t\// { print $1 }')
	echo "$name $tmo /tests/$(basename "$path") $args" >>"$tests_list"
done

# --- modules: kTLS and the AEADs it asks the crypto API for, tcp_diag ---
want=(tls gcm ghash-generic ghash-clmulni-intel ctr gf128mul cryptd crypto_simd aesni-intel aes_generic
	seqiv crypto_null chacha20poly1305 chacha_generic chacha chacha-x86_64 poly1305_generic
	poly1305-x86_64 libchacha libpoly1305 libchacha20poly1305
	inet_diag tcp_diag)  # sock_diag: the offload watchdog reads unread bytes with it
# shellcheck disable=SC2206
[ -z "$mods" ] || want=($mods)
declare -A deps=() path_of=() done_=()
while IFS= read -r line; do
	m=${line%%:*}
	deps[$m]=${line#*: }
	[ "${deps[$m]}" = "$line" ] && deps[$m]=
	b=${m##*/}; b=${b%%.ko*}; b=${b//-/_}
	path_of[$b]=$m
done < <(sed 's/:$/: /' "$mdir/modules.dep")
order=()
visit() {
	local m=$1 d
	[ -n "${done_[$m]:-}" ] && return 0
	done_[$m]=1
	for d in ${deps[$m]}; do visit "$d"; done
	order+=("$m")
}
notes=()
for w in "${want[@]}"; do
	k=${w//-/_}
	if [ -n "${path_of[$k]:-}" ]; then
		visit "${path_of[$k]}"
	elif grep -qE "/${w//_/[-_]}\.ko" "$mdir/modules.builtin" 2>/dev/null; then
		notes+=("$w=builtin")
	elif [ ! -e "$mdir/modules.builtin" ]; then
		notes+=("$w=not-a-module")   # built in or not built: no modules.builtin to tell
	else
		notes+=("$w=absent")
	fi
done
i=0
: >"$stage/modules/list"
for m in "${order[@]}"; do
	i=$((i + 1))
	b=${m##*/}
	dst=$(printf '%02d-%s.ko' "$i" "${b%%.ko*}")
	case $m in
	*.ko.xz) xz -dc "$mdir/$m" >"$stage/modules/$dst" ;;
	*.ko.zst) zstd -qdc "$mdir/$m" >"$stage/modules/$dst" ;;
	*.ko.gz) gzip -dc "$mdir/$m" >"$stage/modules/$dst" ;;
	*.ko) cp "$mdir/$m" "$stage/modules/$dst" ;;
	*) die "unknown module format: $m" ;;
	esac
	echo "$dst" >>"$stage/modules/list"
done
echo "${notes[*]:-}" >"$stage/modules/notes"
echo "$release" >"$stage/release"

cat >"$stage/init" <<'EOF'
#!/bin/sh
# Runs /tests/list under timeouts, prints VMTEST lines, powers off.
export PATH=/bin:/sbin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /sys/fs/bpf /dev/pts
mount -t bpf bpf /sys/fs/bpf
mount -t tmpfs tmp /tmp
# keep printk off the console so result lines stay whole
echo 1 >/proc/sys/kernel/printk
ip link set lo up
# the firmware leaves the cursor mid-line: start ours on a fresh one
echo
echo "VMBOOT release=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)"
loaded= failed=
while read -r m; do
	if insmod "/modules/$m" 2>/tmp/insmod.err; then loaded="$loaded ${m#*-}"
	else failed="$failed ${m#*-}($(tr -d '\n' </tmp/insmod.err | sed 's/.*: //'))"; fi
done </modules/list
echo "VMMODULES loaded:${loaded:- none} failed:${failed:- none} other: $(cat /modules/notes)"
while read -r name tmo prog args; do
	start=$(cut -d' ' -f1 /proc/uptime)
	timeout -s KILL "$tmo" $prog $args >/tmp/out 2>&1
	rc=$?
	end=$(cut -d' ' -f1 /proc/uptime)
	cat /tmp/out
	# a cmocka binary reports through its own summary lines
	sed -n -e "s/^\[       OK \] \(.*\)/VMTEST $name.\1 PASS cmocka/p" \
		-e "s/^\[  FAILED  \] \([A-Za-z0-9_]*\)$/VMTEST $name.\1 FAIL cmocka/p" \
		-e "s/^\[  SKIPPED \] \([A-Za-z0-9_]*\)$/VMTEST $name.\1 SKIP cmocka/p" /tmp/out | sort -u
	if [ $rc -eq 137 ] || [ $rc -eq 124 ]; then
		echo "VMTEST $name FAIL timeout after ${tmo}s"
	elif [ $rc -ne 0 ] && ! grep -q -e '^VMTEST .* FAIL' -e '^\[  FAILED  \]' /tmp/out; then
		echo "VMTEST $name FAIL exit status $rc without a failed test"
	elif ! grep -q -e '^VMTEST ' -e '^\[==========\]' /tmp/out; then
		[ $rc -eq 0 ] && echo "VMTEST $name PASS exit 0" || echo "VMTEST $name FAIL exit $rc"
	fi
	echo "VMTIME $name $start $end"
done </tests/list
echo VMDONE
poweroff -f
EOF
chmod +x "$stage/init"
mkdir -p "$(dirname "$out")"
(cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 >"$out"
echo "mkinitramfs: $out ($release, ${#order[@]} modules, $# tests)" >&2
