#!/usr/bin/env bash
# Binding requests answered per second on a veth pair between two throwaway
# namespaces (192.0.2.0/24 only inside them): userspace server alone, then
# with the XDP responder in generic and native mode. Not a test.
#   scripts/stun-bench.sh [BUILD_DIR] [SECONDS]
set -eu
build=${1:-build}
secs=${2:-5}
[ "$(id -u)" -eq 0 ] || { echo "stun-bench: needs root (netns, XDP)" >&2; exit 2; }
for b in stun-bench; do [ -x "$build/$b" ] || { echo "build $build/$b first" >&2; exit 2; }; done
tag=$$-$RANDOM
S=kdsb-s-$tag C=kdsb-c-$tag
cleanup() {
	[ -n "${srv_pid:-}" ] && kill "$srv_pid" 2>/dev/null && wait "$srv_pid" 2>/dev/null
	ip netns del "$S" 2>/dev/null || true
	ip netns del "$C" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
ip netns add "$S"
ip netns add "$C"
ip -n "$S" link add vs type veth peer name vc netns "$C"
ip -n "$S" link set lo up
ip -n "$S" link set vs up
ip -n "$S" addr add 192.0.2.1/24 dev vs
ip -n "$C" link set lo up
ip -n "$C" link set vc up
ip -n "$C" addr add 192.0.2.2/24 dev vc
# veth leaves locally built UDP checksums partial; XDP needs them complete
ip netns exec "$C" ethtool -K vc tx off >/dev/null

run() { # label, serve args...
	local label=$1 out
	shift
	nsenter --net=/run/netns/"$S" "$build/stun-bench" serve --seconds $((secs + 5)) "$@" \
		>/tmp/stun-bench-serve.$tag 2>&1 &
	srv_pid=$!
	for _ in $(seq 50); do grep -q ready /tmp/stun-bench-serve.$tag 2>/dev/null && break; sleep 0.1; done
	out=$(ip netns exec "$C" "$build/stun-bench" blast 192.0.2.1:3478 --seconds "$secs" --json || true)
	kill "$srv_pid"; wait "$srv_pid" 2>/dev/null || true; srv_pid=
	printf '%-16s %s\n' "$label" "$out"
	grep -E '^(stun_requests\{disposition="success"|xdp_stun_server_packets_total.*tx)' \
		/tmp/stun-bench-serve.$tag | sed 's/^/                   /'
	rm -f /tmp/stun-bench-serve.$tag
}
run userspace
run xdp-generic --xdp vs --mode generic
# native XDP_TX on veth reaches the peer only if the peer runs NAPI (an XDP prog)
ip -n "$C" link set dev vc xdpdrv obj "$build/bpf/stun_xdp.bpf.o" sec xdp
run xdp-native --xdp vs --mode native
ip -n "$C" link set dev vc xdpdrv off
run userspace-peerxdp  # same peer setup minus our responder, for a fair native comparison
