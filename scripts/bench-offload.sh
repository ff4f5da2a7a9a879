#!/usr/bin/env bash
# make bench-offload: kderpd -offload=sockmap against -offload=off, both
# running, the same derp-bench load through each in turn, on loopback and
# on a veth pair (MTU 1500) between two network namespaces. For each
# payload x pair count: unpaced (delivered rate, loss), then paced at half
# the slower plane's unpaced rate so both deliver the same, where whole-
# machine CPU per delivered Gbit/s is the cost. The kernel-frames column is
# kderp_offload_frames_total{reason="redirected"} from /debug/varz over the
# row divided by the packets received: ~1 means the kernel really relayed.
# Not a test; needs root and BPF (prints SKIP otherwise).
#
# Knobs (environment): KD_BENCH_SECONDS (3), KD_BENCH_SIZES ("100 1400 16384
# 65536"), KD_BENCH_PAIRS ("1 8"), KD_BENCH_TOPOS ("lo veth"),
# KD_OFFLOAD_VARIANTS: extra sockmap kderpds with KDERP_OFFLOAD_SOCKOPTS,
# e.g. "cork nagle sndbuf=4194304" (each becomes a column group).
set -u
build=${1:-build}
dur=${KD_BENCH_SECONDS:-3}
sizes=${KD_BENCH_SIZES:-100 1400 16384 65536}
pairs_list=${KD_BENCH_PAIRS:-1 8}
topos=${KD_BENCH_TOPOS:-lo veth}
variants=${KD_OFFLOAD_VARIANTS:-}
out="$build/bench"
for b in kderpd derp-bench; do
	[ -x "$build/$b" ] || { echo "bench-offload: build $build/$b first (make)" >&2; exit 2; }
done
if [ "$(id -u)" != 0 ]; then
	echo "# SKIP bench-offload: needs root (BPF sockmap, network namespaces)"
	exit 0
fi
mkdir -p "$out"
if [ ! -r /sys/kernel/btf/vmlinux ]; then
	echo "# SKIP bench-offload: no /sys/kernel/btf/vmlinux (the relay programs need BTF)"
	exit 0
fi

tag=kb$$
nsS=${tag}s nsC=${tag}c
pids=()
pindirs=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	for d in "${pindirs[@]}"; do rm -rf "$d" 2>/dev/null; done
	ip netns del "$nsS" 2>/dev/null
	ip netns del "$nsC" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# planes: off, sockmap, then one per variant
planes=(off sockmap)
for v in $variants; do planes+=("sockmap:$v"); done

# start_plane TOPO PLANE PORT -> sets KD_PID; kderpd runs in nsS for veth
start_plane() {
	local topo=$1 plane=$2 port=$3 addr pin="" env=()
	local args=(-dev -stun=false)
	if [ "$topo" = lo ]; then addr=127.0.0.1:$port; else addr=0.0.0.0:$port; fi
	case $plane in
	off) args+=(-offload=off) ;;
	sockmap*)
		pin=/sys/fs/bpf/kderp-bench-$$-$port
		pindirs+=("$pin")
		args+=(-offload=sockmap -offload-pin-dir="$pin")
		[ "$plane" != sockmap ] && env=(KDERP_OFFLOAD_SOCKOPTS="${plane#sockmap:}")
		;;
	esac
	local pre=()
	[ "$topo" = veth ] && pre=(ip netns exec "$nsS")
	env "${env[@]}" "${pre[@]}" "$build/kderpd" "${args[@]}" -a "$addr" 2>"$out/offload-$topo-$port.log" &
	KD_PID=$!
	pids+=("$KD_PID")
}

varz() { # TOPO PORT -> redirected counter
	local pre=()
	[ "$1" = veth ] && pre=(ip netns exec "$nsS")
	"${pre[@]}" curl -s "http://127.0.0.1:$2/debug/varz" |
		awk '/^kderp_offload_frames_total\{reason="redirected"\}/ {print $2; f=1} END {if (!f) print 0}'
}

# The host is shared: whole-machine CPU (derp-bench's machine_pct) carries
# other jobs' load. "own" CPU is what this load costs: derp-bench and kderpd
# (their /proc times) plus the kernel work that no process is charged for:
# softirq time (/proc/stat) and the kworker/ksoftirqd threads that run the
# psock backlog. Other jobs' softirq still leaks in; compare within a row.
kticks() { # softirq ticks + kernel-thread ticks, machine-wide
	python3 - <<'PY'
import os
t = 0
for p in os.listdir('/proc'):
    if not p.isdigit():
        continue
    try:
        s = open('/proc/%s/stat' % p).read()
    except OSError:
        continue
    comm = s[s.index('(') + 1:s.rindex(')')]
    if comm.startswith(('kworker', 'ksoftirqd')):
        f = s[s.rindex(')') + 2:].split()
        t += int(f[11]) + int(f[12])
print(int(open('/proc/stat').readline().split()[7]) + t)
PY
}

field() { # json key.key
	python3 -c 'import json,sys
d=json.loads(sys.argv[1])
for k in sys.argv[2].split("."):
    d=d.get(k,{}) if isinstance(d,dict) else {}
print(d if d!={} else 0)' "$1" "$2"
}

tsv="$out/offload.tsv"
printf 'topo\tsize\tpairs\tmode\tplane\tpps\tgbps\tloss_pct\tmachine_cpu\town_cpu\town_cpu_per_gbps\tkernel_frac\n' >"$tsv"

for topo in $topos; do
	host=127.0.0.1
	pre=()
	if [ "$topo" = veth ]; then
		ip netns add "$nsS" && ip netns add "$nsC" &&
			ip link add "${tag}a" type veth peer name "${tag}b" &&
			ip link set "${tag}a" netns "$nsS" && ip link set "${tag}b" netns "$nsC" &&
			ip -n "$nsS" addr add 10.201.0.1/24 dev "${tag}a" &&
			ip -n "$nsC" addr add 10.201.0.2/24 dev "${tag}b" &&
			ip -n "$nsS" link set "${tag}a" mtu 1500 up && ip -n "$nsC" link set "${tag}b" mtu 1500 up &&
			ip -n "$nsS" link set lo up && ip -n "$nsC" link set lo up || {
			echo "# SKIP bench-offload veth: cannot create namespaces/veth"
			continue
		}
		host=10.201.0.1
		pre=(ip netns exec "$nsC")
	fi
	declare -A port kd
	i=0
	for pl in "${planes[@]}"; do
		port[$pl]=$((20000 + ($$ % 20000) + i))
		start_plane "$topo" "$pl" "${port[$pl]}"
		kd[$pl]=$KD_PID
		i=$((i + 1))
	done
	for pl in "${planes[@]}"; do
		for _ in $(seq 50); do
			"${pre[@]}" "$build/derp-bench" --url "http://$host:${port[$pl]}/derp" --pairs 1 --duration 0.1 \
				--quiet >/dev/null 2>&1 && break
			sleep 0.1
		done
		if [[ $pl == sockmap* ]] && ! grep -q 'kernel plane: plain-TCP clients' "$out/offload-$topo-${port[$pl]}.log"; then
			echo "# SKIP bench-offload: kderpd -offload=sockmap did not load the kernel plane:" \
				"$(grep -m1 'kernel plane' "$out/offload-$topo-${port[$pl]}.log")"
			exit 0
		fi
	done

	echo
	echo "== $topo$([ "$topo" = veth ] && echo ' (kderpd and derp-bench in two netns, MTU 1500)'), ${dur}s per row; mCPU% = machine CPU (all cores = 100%, includes other jobs), own% = derp-bench + kderpd + softirq + kworkers (1 core = 100%), own/G = own% per delivered Gbit/s"
	hdr=$(printf '%-6s %-3s %-8s' size prs mode)
	for pl in "${planes[@]}"; do hdr+=$(printf ' | %-10s %7s %7s %6s %6s %6s %5s' "$pl" Gbit/s loss% mCPU% own% own/G kfrac); done
	echo "$hdr"
	for size in $sizes; do
		for np in $pairs_list; do
			declare -A pps
			for mode in unpaced paced; do
				rate=()
				if [ "$mode" = paced ]; then
					min=""
					for pl in "${planes[@]}"; do
						v=${pps[$pl]:-0}
						[ -z "$min" ] || python3 -c "import sys; sys.exit(0 if $v < $min else 1)" && min=$v
					done
					r=$(python3 -c "print(max(1000, int($min * 0.5)))")
					rate=(--rate "${r}pps")
				fi
				line=$(printf '%-6s %-3s %-8s' "$size" "$np" "$mode")
				for pl in "${planes[@]}"; do
					before=0
					[[ $pl == sockmap* ]] && before=$(varz "$topo" "${port[$pl]}")
					k0=$(kticks); t0=$(date +%s.%N)
					j=$("${pre[@]}" "$build/derp-bench" --url "http://$host:${port[$pl]}/derp" \
						--server-pid "${kd[$pl]}" --duration "$dur" --quiet --json \
						--pairs "$np" --size "$size" "${rate[@]}") || j='{}'
					k1=$(kticks); t1=$(date +%s.%N)
					after=0
					[[ $pl == sockmap* ]] && after=$(varz "$topo" "${port[$pl]}")
					p=$(field "$j" delivered_pps); g=$(field "$j" delivered_gbps)
					l=$(field "$j" loss_pct); m=$(field "$j" cpu.machine_pct)
					rcv=$(field "$j" received)
					[ "$mode" = unpaced ] && pps[$pl]=$p
					bp=$(field "$j" cpu.bench_pct); sp=$(field "$j" cpu.server_pct)
					own=$(python3 -c "import os
print('%.1f' % ($bp * $dur / ($t1 - $t0) + $sp * $dur / ($t1 - $t0) + 100.0 * ($k1 - $k0) / os.sysconf('SC_CLK_TCK') / ($t1 - $t0)))")
					cg=$(python3 -c "print('%.1f' % ($own / $g) if $g > 0 else '-')")
					kf=$(python3 -c "print('%.2f' % (($after - $before) / $rcv) if $rcv > 0 else '-')")
					[[ $pl == sockmap* ]] || kf=-
					line+=$(printf ' | %-10.0f %7.3f %7.2f %6.1f %6.1f %6s %5s' "$p" "$g" "$l" "$m" "$own" "$cg" "$kf")
					printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$topo" "$size" "$np" "$mode" "$pl" \
						"$p" "$g" "$l" "$m" "$own" "$cg" "$kf" >>"$tsv"
				done
				echo "$line"
			done
			unset pps
		done
	done
	for pl in "${planes[@]}"; do kill "${kd[$pl]}" 2>/dev/null; wait "${kd[$pl]}" 2>/dev/null; done
	unset port kd
done
echo "results: $tsv (first column group per plane is delivered pkt/s)"
