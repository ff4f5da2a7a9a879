#!/usr/bin/env bash
# `make bench`: derp-bench against a kderpd started here (plain HTTP on a free
# loopback port), each load also over raw TCP (--baseline), then latency at
# idle and under load. Not a test: the machines are shared and noisy, so
# compare ratios within one run. Results: one JSON object per line in
# BUILD/bench/results.jsonl, a summary table on stdout.
#   scripts/bench.sh [BUILD_DIR] [SECONDS]
#   KDERPD_ARGS="--offload=sockmap" scripts/bench.sh build   (extra kderpd flags)
set -eu
build=${1:-build}
secs=${2:-5}
for b in kderpd derp-bench; do [ -x "$build/$b" ] || { echo "bench: build $build/$b first" >&2; exit 2; }; done
out_dir=$build/bench
mkdir -p "$out_dir"
results=$out_dir/results.jsonl
: >"$results"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port/derp
# shellcheck disable=SC2086
"$build/kderpd" -dev -a "127.0.0.1:$port" -stun=false ${KDERPD_ARGS:-} 2>"$out_dir/kderpd.log" &
kd_pid=$!
cleanup() { kill "$kd_pid" 2>/dev/null && wait "$kd_pid" 2>/dev/null || true; }
trap cleanup EXIT INT TERM
for _ in $(seq 100); do
	(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
	kill -0 "$kd_pid" 2>/dev/null || { echo "bench: kderpd exited, see $out_dir/kderpd.log" >&2; exit 1; }
	sleep 0.05
done

num() { sed -n "s/.*\"$2\":\([0-9.e+-]*\).*/\1/p" <<<"$1" | head -1; }
printf '%-26s %12s %10s %8s %10s %10s %8s %9s\n' load "relay pkt/s" "Gbit/s" loss% "raw pkt/s" "relay/raw" "relay%" "machine%"
for load in "1200 1" "1200 8" "16384 1" "16384 8"; do
	set -- $load
	j=$("$build/derp-bench" --url "$url" --size "$1" --pairs "$2" --duration "$secs" --baseline --json --quiet \
		--server-pid "$kd_pid") || { echo "bench: derp-bench failed for size $1 pairs $2" >&2; continue; }
	echo "$j" >>"$results"
	relay=${j%%,\"raw_tcp\"*} raw=${j#*\"raw_tcp\"}
	printf '%-26s %12.0f %10.3f %8.3f %10.0f %10.3f %8.1f %9.1f\n' "size=$1 pairs=$2" \
		"$(num "$relay" delivered_pps)" "$(num "$relay" delivered_gbps)" "$(num "$relay" loss_pct)" \
		"$(num "$raw" delivered_pps)" "$(num "$j" relay_to_raw_pps)" "$(num "$relay" server_pct)" \
		"$(num "$relay" machine_pct)"
done

printf '\n%-26s %10s %10s %10s %10s %10s\n' latency "p50 us" "p90 us" "p99 us" "p999 us" samples
for load in "idle 0" "loaded 4"; do
	set -- $load
	# under load: half the senders' unpaced rate would saturate the relay; pace at 1 Gbit/s
	extra=(); [ "$2" -gt 0 ] && extra=(--rate 1g)
	j=$("$build/derp-bench" --url "$url" --pairs "$2" --size 1200 --duration "$secs" --latency --json --quiet \
		--server-pid "$kd_pid" "${extra[@]}") || { echo "bench: latency run failed" >&2; continue; }
	echo "$j" >>"$results"
	printf '%-26s %10.1f %10.1f %10.1f %10.1f %10s\n' "$1 (pairs=$2)" "$(num "$j" p50_us)" "$(num "$j" p90_us)" \
		"$(num "$j" p99_us)" "$(num "$j" p999_us)" "$(num "$j" samples)"
done
echo "results: $results"
