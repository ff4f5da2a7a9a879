#!/usr/bin/env bash
# make bench: derp-bench against kderpd with the raw-TCP baseline measured
# in the same run, for each payload size x pair count, unpaced and paced,
# plus RTT at idle and at 50% load. Prints one table, writes
# BUILD/bench/results.{json,tsv} and, with gnuplot, BUILD/bench/bench.png.
# Not a test: numbers on a shared machine are noisy; compare ratios.
set -u
build=${1:-build}
dur=${KD_BENCH_SECONDS:-3}
out="$build/bench"
mkdir -p "$out"
for b in kderpd derp-bench kderpctl; do
	[ -x "$build/$b" ] || { echo "bench: build $build/$b first (make)" >&2; exit 2; }
done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port/derp"

"$build/kderpd" -dev -a "127.0.0.1:$port" -stun=false 2>"$out/kderpd.log" &
kd=$!
trap 'kill $kd 2>/dev/null; wait $kd 2>/dev/null' EXIT
for _ in $(seq 50); do
	"$build/kderpctl" probe "$url" --timeout 500 >/dev/null 2>&1 && break
	sleep 0.1
done

json="$out/results.json"
: >"$json"
run() { # label args...
	local label=$1
	shift
	local r
	r=$("$build/derp-bench" --url "$url" --server-pid "$kd" --duration "$dur" --quiet --json "$@") || return 1
	printf '{"label":"%s",%s\n' "$label" "${r#\{}" >>"$json"
	printf '%s\n' "$r"
}

field() { # json path-ish: relay.delivered_pps
	python3 -c 'import json,sys
d=json.loads(sys.argv[1])
for k in sys.argv[2].split("."):
    d=d.get(k,{}) if isinstance(d,dict) else {}
print(d if d!={} else "-")' "$1" "$2"
}

# raw: the same senders and receivers over one direct connection; fwd: through
# a byte forwarder with no DERP work (derp-bench's forward.c), the ceiling for
# any userspace relay here. r/raw and r/fwd: kderpd's delivered pkt/s over each.
printf '%-22s %10s %8s %7s %11s %9s %10s %7s %6s %6s %8s %8s\n' config relay_pps relay_Gb loss% raw_pps raw_Gb fwd_pps fwd_Gb r/raw r/fwd relayCPU machCPU
printf 'config\trelay_pps\trelay_gbps\tloss_pct\traw_pps\traw_gbps\tfwd_pps\tfwd_gbps\tratio_raw\tratio_fwd\trelay_cpu\tmachine_cpu\n' >"$out/results.tsv"
row() {
	local label=$1 r=$2
	local rp rg rl tp tg fp fg ratio rf cpu mc
	rp=$(field "$r" relay.delivered_pps); rg=$(field "$r" relay.delivered_gbps)
	rl=$(field "$r" relay.loss_pct); tp=$(field "$r" raw_tcp.delivered_pps)
	tg=$(field "$r" raw_tcp.delivered_gbps); ratio=$(field "$r" relay_to_raw_pps)
	fp=$(field "$r" forwarder.delivered_pps); fg=$(field "$r" forwarder.delivered_gbps)
	rf=$(field "$r" relay_to_forwarder_pps)
	cpu=$(field "$r" relay.cpu.server_pct); mc=$(field "$r" relay.cpu.machine_pct)
	printf '%-22s %10.0f %8.2f %7.3f %11s %9.2f %10s %7.2f %6.3f %6.3f %8s %8s\n' "$label" "$rp" "$rg" "$rl" \
		"${tp%.*}" "$tg" "${fp%.*}" "$fg" "$ratio" "$rf" "$cpu" "$mc"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$rp" "$rg" "$rl" "$tp" "$tg" "$fp" "$fg" \
		"$ratio" "$rf" "$cpu" "$mc" >>"$out/results.tsv"
}

for size in 100 1400 16384; do
	for pairs in 1 10 100; do
		r=$(run "s${size}_p${pairs}" --pairs "$pairs" --size "$size" --baseline) || continue
		row "${size}B x${pairs} unpaced" "$r"
	done
done
for rate in 1g 2g; do
	r=$(run "s1400_p10_${rate}" --pairs 10 --size 1400 --rate "$rate" --baseline) || continue
	row "1400B x10 paced $rate" "$r"
done

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$kd/status"; }
echo "relay RSS after the loads: $(rss_kib) KiB"

# RTT: idle, then under ~50% of the unpaced 1400 B x10 relay rate
idle=$(run latency_idle --pairs 0 --latency --size 1400 --baseline)
half=$(python3 -c 'import json,sys
rows=[json.loads(l) for l in open(sys.argv[1])]
r=[x for x in rows if x["label"]=="s1400_p10"]
print(int(r[0]["relay"]["delivered_pps"]*0.5) if r else 100000)' "$json")
loaded=$(run latency_half --pairs 10 --size 1400 --rate "${half}pps" --latency --baseline)
echo
printf '%-22s %10s %10s %10s %10s\n' rtt p50_us p99_us p999_us max_us
printf 'path\tp50_us\tp99_us\tp999_us\tmax_us\n' >"$out/latency.tsv"
for l in idle loaded; do
	r=${!l}
	for m in relay raw_tcp forwarder; do
		p50=$(field "$r" $m.latency.p50_us); p99=$(field "$r" $m.latency.p99_us)
		p999=$(field "$r" $m.latency.p999_us); pmax=$(field "$r" $m.latency.max_us)
		printf '%-22s %10s %10s %10s %10s\n' "$l/$m" "$p50" "$p99" "$p999" "$pmax"
		printf '%s\t%s\t%s\t%s\t%s\n' "$l/$m" "$p50" "$p99" "$p999" "$pmax" >>"$out/latency.tsv"
	done
done


# memory per idle connected client, from a fresh relay's own RSS (the one
# above has been through every load and keeps its allocator's high water)
kill $kd 2>/dev/null; wait $kd 2>/dev/null
"$build/kderpd" -dev -a "127.0.0.1:$port" -stun=false 2>>"$out/kderpd.log" &
kd=$!
for _ in $(seq 50); do
	"$build/kderpctl" probe "$url" --timeout 500 >/dev/null 2>&1 && break
	sleep 0.1
done
idle_n=${KD_BENCH_IDLE:-10000}
rss() { awk '/VmRSS/ {print $2}' "/proc/$kd/status"; }
before=$(rss)
"$build/idle-clients" "$url" "$idle_n" 4 >"$out/idle.out" 2>&1 &
ic=$!
for _ in $(seq 240); do grep -q '^ready' "$out/idle.out" && break; sleep 0.25; done
got=$(awk '/^ready/ {print $2}' "$out/idle.out")
after=$(rss)
wait $ic
echo
if [ -n "$got" ] && [ "$got" -gt 0 ]; then
	echo "idle clients: $got connected, relay RSS $before KiB -> $after KiB:" \
		"$(( (after - before) * 1024 / got )) bytes per client"
else
	echo "idle clients: login failed, see $out/idle.out"
fi

if command -v gnuplot >/dev/null; then
	gnuplot <<EOF 2>/dev/null && echo "plot: $out/bench.png"
set terminal png size 1100,900
set output "$out/bench.png"
set multiplot layout 2,1
set style data histograms
set style fill solid 0.8
set logscale y
set xtics rotate by -30
set key top left
set datafile separator "\t"
set ylabel "delivered Gbit/s (log)"
plot "$out/results.tsv" every ::1 using 3:xtic(1) title "kderpd", "" every ::1 using 8 title "byte forwarder (no DERP)", "" every ::1 using 6 title "raw TCP (no relay)"
set ylabel "ping/echo RTT, us (log)"
plot "$out/latency.tsv" every ::1 using 2:xtic(1) title "p50", "" every ::1 using 3 title "p99", "" every ::1 using 4 title "p99.9"
unset multiplot
EOF
fi
echo "results: $json $out/results.tsv"
