#!/usr/bin/env bash
# Runs every fuzz target in the module for $FUZZTIME (default 10s) each,
# starting from its committed seed corpus. A run that ends without a
# finding but with the fuzzing engine's own "context deadline exceeded"
# (its coordinator reports it when fuzztime ends while a worker is still
# busy with a new interesting input, more often on a loaded machine) is
# tried again, up to three tries; a finding ("Failing input written") or
# any other failure fails at once.
set -uo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10s}
status=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
while IFS= read -r file; do
	pkg=./$(dirname "$file")
	for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)' "$file" | awk '{print $2}'); do
		for try in 1 2 3; do
			echo "fuzz $pkg $target ($fuzztime, try $try)"
			if go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" -fuzzminimizetime=2s "$pkg" 2>&1 | tee "$log"; then
				break
			fi
			if grep -q "Failing input written" "$log" || ! grep -q "context deadline exceeded" "$log" || [ "$try" = 3 ]; then
				echo "FUZZ FAILURE: $pkg $target"
				status=1
				break
			fi
			echo "fuzzing engine error without a finding; trying again"
		done
	done
done < <(grep -rlE '^func Fuzz' --include='*_test.go' . | sort)
exit $status
