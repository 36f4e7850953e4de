#!/usr/bin/env bash
# Runs every fuzz target in the module for $FUZZTIME (default 10s) each,
# starting from its committed seed corpus. A run that ends without a
# finding but with an error of the fuzzing engine itself (its coordinator
# sometimes reports "context deadline exceeded" on a loaded machine) is
# tried once more; a finding ("Failing input written") always fails.
set -uo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10s}
status=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
while IFS= read -r file; do
	pkg=./$(dirname "$file")
	for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)' "$file" | awk '{print $2}'); do
		for try in 1 2; do
			echo "fuzz $pkg $target ($fuzztime, try $try)"
			if go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" -fuzzminimizetime=2s "$pkg" 2>&1 | tee "$log"; then
				break
			fi
			if grep -q "Failing input written" "$log" || [ "$try" = 2 ]; then
				echo "FUZZ FAILURE: $pkg $target"
				status=1
				break
			fi
			echo "fuzzing engine error without a finding; trying again"
		done
	done
done < <(grep -rlE '^func Fuzz' --include='*_test.go' . | sort)
exit $status
