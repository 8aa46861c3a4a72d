#!/usr/bin/env bash
# Evaluate trained members under new measurement settings (e.g. flow.nu_tilt_terms) without retraining:
#   scripts/phasespace_reuse_members.sh OLD_RUN NEW_RUN key=value ...   (the preset and every --set of OLD_RUN, plus the new ones)
# simulates NEW_RUN (the same dataset bit for bit: same config and seed), copies OLD_RUN's trained members
# (checkpoints, done.json re-pointed), then runs the remaining stages there. PRESET=cpu … for another preset.
set -euo pipefail
old=$1; new=$2; shift 2
sets=()
for s in "$@"; do sets+=(--set "$s"); done
D=.venv/bin/darkml
PRESET=${PRESET:-quick}
$D phasespace simulate --preset "$PRESET" "${sets[@]}" --run-dir "$new"
# the members must have been trained on exactly these stars
.venv/bin/python - "$old" "$new" <<'PY'
import sys, numpy as np
from darkml.storage import SampleStore
a, b = (SampleStore.open(f"{d}/dataset") for d in sys.argv[1:3])
for k in a.arrays:
    if not np.array_equal(a.read(k), b.read(k), equal_nan=True):
        sys.exit(f"dataset array {k} differs between {sys.argv[1]} and {sys.argv[2]}: the members cannot be reused")
PY
for ds in original smeared reperturbed; do
  [ -d "$old/checkpoints/$ds" ] || continue
  mkdir -p "$new/checkpoints/$ds"
  cp -r "$old/checkpoints/$ds"/m* "$new/checkpoints/$ds/"
  sed -i "s#$(realpath $old)#$(realpath $new)#" "$new/checkpoints/$ds"/m*/done.json
done
$D phasespace run --preset "$PRESET" "${sets[@]}" --run-dir "$new"
