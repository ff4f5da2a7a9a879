#!/usr/bin/env bash
# Runs every unit and integration test binary under BUILD and prints one
# closing line "N passed, N failed, N skipped" over individual cmocka tests.
# A binary that crashes or prints no cmocka summary counts as failed.
set -u
build=${1:?usage: tests/run.sh BUILD_DIR [label]}
label=${2:-tests}
pass=0 fail=0 skip=0 bins_failed=()
log_dir="$build/test-logs"
mkdir -p "$log_dir"
for bin in "$build"/tests/unit/test_* "$build"/tests/integ/test_*; do
	[ -x "$bin" ] || continue
	case "$bin" in *.o|*.d) continue ;; esac
	name=$(basename "$bin")
	log="$log_dir/$name.log"
	start=$(date +%s.%N)
	timeout --kill-after=10 "${KD_TEST_TIMEOUT:-600}" "$bin" >"$log" 2>&1
	rc=$?
	secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}')
	p=$(grep -c '^\[       OK \]' "$log")
	# cmocka repeats failed/skipped names in its summary: count distinct names
	f=$(grep -E '^\[  (FAILED|ERROR)   ?\] [A-Za-z_0-9]+$' "$log" | sort -u | wc -l)
	s=$(grep -E '^\[  SKIPPED \] [A-Za-z_0-9]+$' "$log" | sort -u | wc -l)
	if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
	if ! grep -Eq '^\[==========\] .* (ran|run)\.' "$log"; then f=$((f > 0 ? f : 1)); fi
	pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
	status=ok; [ $f -gt 0 ] && status=FAIL && bins_failed+=("$name")
	printf '  %-4s %-36s %3d ok %2d failed %2d skipped  %6ss\n' "$status" "$name" "$p" "$f" "$s" "$secs"
	grep -h '^# SKIP' "$log" | sed 's/^/        /' | sort -u
	if [ $f -gt 0 ]; then sed 's/^/        | /' "$log" | tail -n 60; fi
done
echo "[$label]"
echo "tests: $pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
