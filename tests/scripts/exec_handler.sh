#!/bin/sh
# A real command for the exec handler test. Reads the batch (JSON lines) from stdin, then:
# - exits 65 with a message on stderr when a line contains PERMANENT (bad events),
# - exits 1 once if $FAIL_ONCE exists (removing it): a transient failure,
# - otherwise appends the lines to $OUT and exits 0.
batch=$(cat)
case "$batch" in
  *PERMANENT*) echo "customer unknown to the CRM" >&2; exit 65 ;;
esac
if [ -e "$FAIL_ONCE" ]; then rm -f "$FAIL_ONCE"; echo "CRM busy" >&2; exit 1; fi
printf '%s\n' "$batch" >> "$OUT"
