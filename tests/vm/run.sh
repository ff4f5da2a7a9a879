#!/usr/bin/env bash
# The kernel matrix: runs test programs on this host's kernel and on Debian
# kernels booted under QEMU (TCG), and prints one table per kernel, a
# test x kernel matrix and a closing line "N passed, N failed, N skipped".
#
#   tests/vm/run.sh TEST...        TEST = NAME:PATH[:ARGS] or PATH
#
# Environment:
#   KD_VM_KERNELS  kernels to boot (default "6.1 6.12 sid", see fetch-kernels.sh)
#   KD_VM_HOST     1 (default) also runs the tests on the host kernel, 0 not
#   KD_VM_CACHE    download cache (default build/vm-cache, reused across runs)
#   KD_VM_OUT      initramfs images, console logs, results.md (default build/vm)
#   KD_VM_TIMEOUT  seconds per test inside a VM (default 120)
#   KD_VM_BOOT_TIMEOUT  seconds per VM, boot to poweroff (default 600)
#   KD_VM_MODULES  replaces the module list of mkinitramfs.sh (experiments)
# Exit status: 0 when nothing failed, 1 otherwise (a kernel that cannot be
# fetched or does not finish booting counts as a failure).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
kernels=${KD_VM_KERNELS:-6.1 6.12 sid}
cache=${KD_VM_CACHE:-build/vm-cache}
out=${KD_VM_OUT:-build/vm}
test_tmo=${KD_VM_TIMEOUT:-120}
boot_tmo=${KD_VM_BOOT_TIMEOUT:-600}
[ $# -gt 0 ] || { echo "usage: $0 NAME:PATH[:ARGS]|PATH..." >&2; exit 2; }
command -v qemu-system-x86_64 >/dev/null || { echo "run.sh: qemu-system-x86_64 missing (make deps)" >&2; exit 1; }
mkdir -p "$out"

specs=()
for t in "$@"; do
	case $t in *:*) specs+=("$t") ;; *) specs+=("$(basename "$t"):$t") ;; esac
done

t_all=$(date +%s.%N)
pass=0 fail=0 skip=0
cols=()                       # kernel labels in order
declare -A cell=() detail=() tests_seen=() kinfo=()
test_order=()

secs() { awk -v s="$1" -v e="$2" 'BEGIN { printf "%.1f", e - s }'; }

# Reads VMTEST lines from a cleaned log and records them under column $1.
collect() {
	local col=$1 log=$2 name verdict rest
	while read -r _ name verdict rest; do
		case $verdict in PASS | FAIL | SKIP) ;; *) continue ;; esac
		[ -n "${tests_seen[$name]:-}" ] || { tests_seen[$name]=1; test_order+=("$name"); }
		cell[$col/$name]=$verdict
		detail[$col/$name]=$rest
		case $verdict in PASS) pass=$((pass + 1)) ;; FAIL) fail=$((fail + 1)) ;; SKIP) skip=$((skip + 1)) ;; esac
	done < <(grep -a -o 'VMTEST .*' "$log")
}

kernel_fail() {  # col message
	local name="vm.$1"
	[ -n "${tests_seen[$name]:-}" ] || { tests_seen[$name]=1; test_order+=("$name"); }
	cell[$1/$name]=FAIL
	detail[$1/$name]=$2
	fail=$((fail + 1))
}

print_kernel() {
	local col=$1 n
	echo "== $col: ${kinfo[$col]}"
	for n in "${test_order[@]}"; do
		[ -n "${cell[$col/$n]:-}" ] || continue
		printf '  %-4s %-52s %s\n' "${cell[$col/$n]}" "$n" "${detail[$col/$n]:0:150}"
	done
}

# --- the host kernel, outside any VM ---
if [ "${KD_VM_HOST:-1}" = 1 ]; then
	col="host"
	cols+=("$col")
	log=$out/host.log
	: >"$log"
	t0=$(date +%s.%N)
	for s in "${specs[@]}"; do
		IFS=: read -r name path args <<<"$s"
		# shellcheck disable=SC2086
		timeout -s KILL "$test_tmo" "$path" $args >>"$log" 2>&1
		rc=$?
		if [ $rc -eq 137 ]; then echo "VMTEST $name FAIL timeout after ${test_tmo}s" >>"$log"
		elif [ $rc -ne 0 ] && ! grep -q '^VMTEST .* FAIL' "$log"; then echo "VMTEST $name FAIL exit $rc" >>"$log"; fi
	done
	kinfo[$col]="$(uname -r) (this host, no VM), $(secs "$t0" "$(date +%s.%N)")s"
	collect "$col" "$log"
	grep -a '^# SKIP' "$log" | sort -u | head -n 3 | sed 's/^/  host: /'
	print_kernel "$col"
fi

# --- Debian kernels under QEMU ---
for k in $kernels; do
	cols+=("$k")
	if ! line=$("$here/fetch-kernels.sh" -c "$cache" "$k" 2>"$out/fetch-$k.log"); then
		kinfo[$k]="fetch failed"
		kernel_fail "$k" "cannot fetch kernel: $(grep ERROR "$out/fetch-$k.log" | tail -n1)"
		print_kernel "$k"
		continue
	fi
	read -r _ release kdir <<<"$line"
	img=$out/initramfs-$k.cpio.gz
	if ! "$here/mkinitramfs.sh" -k "$kdir" -o "$img" -t "$test_tmo" ${KD_VM_MODULES:+-m "$KD_VM_MODULES"} "${specs[@]}" 2>"$out/mkinitramfs-$k.log"; then
		kinfo[$k]="$release, initramfs failed"
		kernel_fail "$k" "mkinitramfs: $(tail -n1 "$out/mkinitramfs-$k.log")"
		print_kernel "$k"
		continue
	fi
	raw=$out/console-$k.raw
	log=$out/console-$k.log
	t0=$(date +%s.%N)
	timeout -s KILL "$boot_tmo" qemu-system-x86_64 -accel tcg -cpu max -m 1024 -nographic -no-reboot \
		-nic none -kernel "$kdir/vmlinuz" -initrd "$img" \
		-append "console=ttyS0 panic=-1 quiet" </dev/null >"$raw" 2>&1
	qrc=$?
	t1=$(date +%s.%N)
	# the console carries terminal escapes and CRs around our lines
	tr -d '\r' <"$raw" | sed 's/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g; s/\x1b[()][0-9A-Za-z]//g' >"$log"
	boot=$(grep -a -o 'VMBOOT .*' "$log" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^uptime=/) { sub(/uptime=/, "", $i); print $i } }')
	kinfo[$k]="$release, to /init ${boot:-?}s, VM total $(secs "$t0" "$t1")s"
	collect "$k" "$log"
	if ! grep -q '^VMDONE' "$log"; then
		kernel_fail "$k" "VM did not finish (qemu rc=$qrc, ${boot_tmo}s limit); see $log"
	fi
	mods=$(grep -a '^VMMODULES' "$log" | head -n1)
	echo "$mods" | grep -q 'failed: none' || echo "  $k: $mods" | cut -c1-400
	print_kernel "$k"
done

# --- test x kernel matrix (markdown, the source of tests/vm/RESULTS.md) ---
# A kTLS test cell is its verdict; a sockmap x kTLS cell is the observation
# ("works" / "fails: STEP ERRNO"), since every such cell passes when it ran.
short() {  # col test
	local v=${cell[$1/$2]:-} d=${detail[$1/$2]:-}
	case $2:$v in
	sockmap_ktls.summary:PASS) echo "$d" ;;
	sockmap_ktls.*.*:PASS) echo "${d%%;*}" ;;
	*:) echo "not run" ;;
	*) echo "$v" ;;
	esac
}
md=$out/results.md
{
	printf '| test |'; for c in "${cols[@]}"; do printf ' %s |' "$c"; done; echo
	printf '|---|'; for _ in "${cols[@]}"; do printf -- '---|'; done; echo
	for n in "${test_order[@]}"; do
		printf '| %s |' "$n"
		for c in "${cols[@]}"; do printf ' %s |' "$(short "$c" "$n")"; done
		echo
	done
	echo
	for c in "${cols[@]}"; do echo "- $c: ${kinfo[$c]}"; done
} >"$md"
echo "== matrix (markdown in $md)"
printf '  %-52s' test; for c in "${cols[@]}"; do printf ' %-20s' "$c"; done; echo
for n in "${test_order[@]}"; do
	printf '  %-52s' "${n#sockmap_ktls.}"
	for c in "${cols[@]}"; do printf ' %-20s' "$(short "$c" "$n" | sed 's/^fails: //')"; done
	echo
done
for c in "${cols[@]}"; do echo "  $c: ${kinfo[$c]}"; done
if grep -q 'possible=yes' "$out"/console-*.log "$out/host.log" 2>/dev/null; then
	echo "NOTICE: a kernel lets one socket carry kTLS and sockmap; see sockmap_ktls.summary and DESIGN.md §2"
fi
echo "matrix time $(secs "$t_all" "$(date +%s.%N)")s for ${#cols[@]} kernels"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
