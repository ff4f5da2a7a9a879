#!/usr/bin/env bash
# Runs every libFuzzer binary in DIR for SECONDS each, on a copy of its seed
# corpus (tests/fuzz/seeds/<name>/), and prints executions and findings.
# Exit status is non-zero if any fuzzer found a crash, leak or timeout.
set -u
dir=${1:?usage: tests/fuzz/run.sh FUZZ_BUILD_DIR SECONDS}
secs=${2:-10}
fail=0 ran=0
for bin in "$dir"/fuzz_*; do
	[ -x "$bin" ] || continue
	case "$bin" in *.o|*.d) continue ;; esac
	name=$(basename "$bin")
	seeds="tests/fuzz/seeds/$name"
	[ -d "$seeds" ] || seeds="tests/fuzz/seeds/${name#fuzz_}"
	corpus="$dir/corpus-$name"
	mkdir -p "$corpus" "$dir/artifacts"
	[ -d "$seeds" ] && cp -n "$seeds"/* "$corpus"/ 2>/dev/null
	log="$dir/$name.log"
	"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$dir/artifacts/$name-" "$corpus" >"$log" 2>&1
	rc=$?
	ran=$((ran + 1))
	execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
	if [ $rc -ne 0 ]; then
		fail=$((fail + 1))
		printf '  FAIL %-28s rc=%d (see %s)\n' "$name" "$rc" "$log"
		grep -m5 -E 'ERROR|SUMMARY|Test unit written' "$log" | sed 's/^/        /'
	else
		printf '  ok   %-28s %10s execs in %ss\n' "$name" "${execs:-?}" "$secs"
	fi
done
echo "[fuzz]"
echo "fuzz: $((ran - fail)) passed, $fail failed"
[ $fail -eq 0 ]
