#!/usr/bin/env bash
# Stop exactly the daemons that .ci/slurm/setup.sh started (listed in $TMEXP_SLURM_DIR/started.pids), newest first.
# Daemons that were already running before setup.sh are left alone. Safe to call twice or without a setup.
set -uo pipefail

STATE_DIR="${TMEXP_SLURM_DIR:-/tmp/tmexp-slurm}"
PIDS_FILE="$STATE_DIR/started.pids"
[ -s "$PIDS_FILE" ] || { echo "[slurm-stop] nothing to stop ($PIDS_FILE is empty or missing)"; exit 0; }

# The process must still be the daemon we started (a pid may have been reused since).
is_ours() { [ "$(cat "/proc/$2/comm" 2>/dev/null)" = "$1" ]; }

# Cancel leftover jobs first so slurmd does not leave their processes behind.
if grep -q '^slurmctld ' "$PIDS_FILE"; then
    scancel --full --quiet --user=root 2>/dev/null || true
fi

tac "$PIDS_FILE" | while read -r name pid; do
    [ -n "${pid:-}" ] || continue
    if ! is_ours "$name" "$pid"; then
        echo "[slurm-stop] $name ($pid) already gone"
        continue
    fi
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do is_ours "$name" "$pid" || break; sleep 0.2; done
    if is_ours "$name" "$pid"; then
        echo "[slurm-stop] $name ($pid) ignored SIGTERM for 10 s: killing it"
        kill -KILL "$pid" 2>/dev/null
    fi
    echo "[slurm-stop] stopped $name ($pid)"
done
rm -f "$PIDS_FILE"
