#!/usr/bin/env bash
# After a failed ctest run: each failed test's failure lines (gtest's "Failure"/"FAILED", a
# script's "FAIL", errors) and the last lines of its output, printed together at the end of the
# log. ctest prints a failed test's output where it ran; a log shown only by its tail lost it.
# Usage: tests/failure_digest.sh BUILD_DIR
set -uo pipefail
dir=${1:?usage: failure_digest.sh BUILD_DIR}
log=$dir/Testing/Temporary/LastTest.log
failed=$dir/Testing/Temporary/LastTestsFailed.log
[[ -r $log && -r $failed ]] || { echo "failure digest: no ctest logs in $dir" >&2; exit 0; }
echo
echo "==================== failed tests: digest ===================="
while IFS= read -r line; do
    name=${line#*:}
    echo "---- $name"
    awk -v name="$name" '
        $0 ~ "^[0-9]+/[0-9]+ Test: " name "$" { inside = 1; out = 0; n = 0; next }
        inside && /^Output:/ { out = 1; next }
        out && n == 0 && /^-+$/ { next }
        inside && /^<end of output>/ { inside = 0; out = 0; next }
        out { buf[n++] = $0 }
        END {
            shown = 0
            for (i = 0; i < n && shown < 40; i++)
                if (buf[i] ~ /Failure|FAILED|FAIL|[Ee]rror|Expected|Which is|Value of|Actual/) {
                    print "  " buf[i]; shown++
                }
            print "  .. last lines:"
            for (i = (n > 15 ? n - 15 : 0); i < n; i++) print "  " buf[i]
        }' "$log"
done < "$failed"
