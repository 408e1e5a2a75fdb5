#!/usr/bin/env bash
# run-tests.sh runs go test on the given packages, with -race on those matching $RACE_PKGS
# (but not $RACE_SKIP) and without it on the rest, streams the verbose output (also kept in bin/test.log), and ends
# with a summary of top-level tests and any failures.
#
# Usage: RACE_PKGS="./internal/..." RACE_SKIP="./internal/sim/..." TEST_MODULES="hack/ocibuild" TEST_TIMEOUT=25m hack/run-tests.sh [go test flags] packages...
set -uo pipefail
cd "$(dirname "$0")/.."

LOG=${TEST_LOG:-bin/test.log}
TIMEOUT=${TEST_TIMEOUT:-25m}
mkdir -p "$(dirname "$LOG")"
: >"$LOG"

flags=()
pkgs=()
for a in "$@"; do
	case $a in
	-*) flags+=("$a") ;;
	*) pkgs+=("$a") ;;
	esac
done
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)

mapfile -t all < <(go list "${pkgs[@]}")
race=()
if [ -n "${RACE_PKGS:-}" ]; then
	# shellcheck disable=SC2086 # RACE_PKGS is a list of patterns
	mapfile -t race_all < <(go list $RACE_PKGS 2>/dev/null)
	for p in "${all[@]}"; do
		for r in "${race_all[@]}"; do
			if [ "$p" = "$r" ]; then race+=("$p"); break; fi
		done
	done
fi
if [ -n "${RACE_SKIP:-}" ] && [ ${#race[@]} -gt 0 ]; then
	# One pattern at a time: one that matches nothing must not hide the others.
	skip_all=()
	for pat in $RACE_SKIP; do
		mapfile -t -O "${#skip_all[@]}" skip_all < <(go list "$pat" 2>/dev/null)
	done
	kept=()
	for p in "${race[@]}"; do
		keep=1
		for r in "${skip_all[@]}"; do
			if [ "$p" = "$r" ]; then keep=; break; fi
		done
		[ -z "$keep" ] || kept+=("$p")
	done
	race=("${kept[@]}")
fi
plain=()
for p in "${all[@]}"; do
	skip=
	for r in "${race[@]}"; do
		if [ "$p" = "$r" ]; then skip=1; break; fi
	done
	[ -n "$skip" ] || plain+=("$p")
done

start=$SECONDS
rc=0
if [ ${#race[@]} -gt 0 ]; then
	echo "=== go test -race (${#race[@]} packages)"
	go test -race -count=1 -v -timeout "$TIMEOUT" "${flags[@]}" "${race[@]}" 2>&1 | tee -a "$LOG"
	[ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
fi
if [ ${#plain[@]} -gt 0 ]; then
	echo "=== go test (${#plain[@]} packages)"
	go test -count=1 -v -timeout "$TIMEOUT" "${flags[@]}" "${plain[@]}" 2>&1 | tee -a "$LOG"
	[ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
fi

# Modules of their own (build tools under hack/, $TEST_MODULES), tested in their directories.
for m in ${TEST_MODULES:-}; do
	echo "=== go test ($m, its own module)"
	(cd "$m" && go test -count=1 -v -timeout "$TIMEOUT" "${flags[@]}" ./... 2>&1) | tee -a "$LOG"
	[ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
done

count() { grep -cE "$1" "$LOG" || true; }
passed=$(count '^--- PASS: ')
failed=$(count '^--- FAIL: ')
skipped=$(count '^--- SKIP: ')
subpassed=$(count '^ +--- PASS: ')
subfailed=$(count '^ +--- FAIL: ')
echo
echo "=================================== test summary ==================================="
echo "packages: $(count '^ok  	') ok, $(count '^FAIL	') failed, $(count '^\?   	') without tests; subtests: $subpassed passed, $subfailed failed; $((SECONDS - start))s"
if [ "$failed" -gt 0 ] || [ "$subfailed" -gt 0 ]; then
	echo "failed tests:"
	grep -E '^ *--- FAIL: ' "$LOG" | sed 's/^/  /'
fi
if grep -qE '^FAIL	' "$LOG"; then
	echo "failed packages:"
	grep -E '^FAIL	' "$LOG" | sed 's/^/  /'
fi
if grep -qE '^panic: |build failed|\[setup failed\]' "$LOG"; then
	echo "panics or build failures:"
	grep -E '^panic: |build failed|\[setup failed\]' "$LOG" | sed 's/^/  /' | head -20
fi
echo "full log: $LOG"
echo "Tests: $passed passed, $failed failed, $skipped skipped" | tee "${LOG%.log}-summary.txt"
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
	echo "go test failed without a failing test (build error, panic or timeout): see above"
fi
exit "$rc"
