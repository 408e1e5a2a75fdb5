#!/usr/bin/env bash
# verify-generated.sh regenerates the deepcopy code, the CRD and RBAC manifests and the chart's
# copies of them (make generate manifests), and fails if that changed anything in api/, config/
# or charts/: generated files must be committed up to date.
#
# It compares the trees before and after regeneration, so it works in a fresh clone (as in CI,
# where this equals `git diff --exit-code`) and in a work tree with uncommitted edits alike.
set -euo pipefail
cd "$(dirname "$0")/.."

dirs=(api config charts)
before=$(mktemp -d)
trap 'rm -rf "$before"' EXIT
for d in "${dirs[@]}"; do
	if [ -d "$d" ]; then
		cp -a "$d" "$before/"
	fi
done

make --no-print-directory generate manifests >/dev/null

status=0
for d in "${dirs[@]}"; do
	if [ -d "$before/$d" ] || [ -d "$d" ]; then
		if ! diff -ruN "$before/$d" "$d" >"$before/$d.diff" 2>&1; then
			status=1
			echo "verify-generated: $d/ is not up to date:"
			sed -n '1,200p' "$before/$d.diff"
		fi
	fi
done
if [ "$status" -ne 0 ]; then
	echo "verify-generated: FAILED: run 'make generate manifests' and commit the result"
	exit 1
fi
if [ -n "${CI:-}" ] && git rev-parse --verify -q HEAD >/dev/null 2>&1; then
	# In CI the tree is a fresh clone: the regenerated files must also equal the commit.
	git diff --exit-code -- "${dirs[@]}"
fi
echo "verify-generated: ok (api/, config/, charts/ match the generators)"
