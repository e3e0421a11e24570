#!/usr/bin/env bash
# Build benchmarks/.venv-peers: an isolated virtualenv holding the peer CATE
# libraries (econml, causalml, QuantCo metalearners) that benchmarks/peers.py
# drives.  It never touches metalearn's own environment or dependencies.
#
# Usage:
#   bash benchmarks/make_peer_venv.sh            # create / update the venv
#   bash benchmarks/make_peer_venv.sh --recreate # wipe it and start over
#
# Environment overrides:
#   PYTHON=python3.11    interpreter used to create the venv (default: python3)
#   PEER_VENV=path       venv location (default: benchmarks/.venv-peers)
#   PEERS_UNPINNED=1     install the newest peer releases instead of the
#                        combination tested below (may not resolve together)
#
# A peer that cannot be installed is skipped with a WARNING; the script still
# exits 0 as long as the common base stack (numpy/pandas/sklearn/lightgbm)
# installed.  peers.py reports {"ok": false} for jobs on a missing peer.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${PEER_VENV:-$here/.venv-peers}"
python="${PYTHON:-python3}"

if [[ "${1:-}" == "--recreate" ]]; then
    rm -rf "$venv"
fi

# Tested together on CPython 3.11 (Linux x86_64, wheels only, no compiler).
# scikit-learn is capped below 1.8 for econml; causalml >= 0.15 ships
# manylinux wheels, so no Cython/build toolchain is needed.
base_reqs=(
    "numpy>=1.26,<2.5"
    "pandas>=2.1,<3.2"
    "polars>=1.0"
    "psutil>=5.9"
    "scikit-learn>=1.5,<1.8"
    "lightgbm>=4.3,<5"
)
if [[ "${PEERS_UNPINNED:-0}" == "1" ]]; then
    declare -A peer_reqs=(
        [econml]="econml"
        [causalml]="causalml"
        [metalearners]="metalearners==0.13.*"
    )
else
    declare -A peer_reqs=(
        [econml]="econml==0.17.*"
        [causalml]="causalml==0.18.*"
        [metalearners]="metalearners==0.13.*"
    )
fi
peers=(econml causalml metalearners)

warn() { echo "WARNING: $*" >&2; }

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating $venv with $("$python" --version 2>&1)"
    "$python" -m venv "$venv" || { echo "ERROR: python -m venv failed" >&2; exit 1; }
fi
vpy="$venv/bin/python"
pip=("$vpy" -m pip install --disable-pip-version-check --prefer-binary --progress-bar off)

"$vpy" -m pip install --disable-pip-version-check -q --upgrade pip wheel \
    || warn "could not upgrade pip; continuing with $("$vpy" -m pip --version)"

# 1) Try everything in one resolver run: this gives the best chance that the
#    shared dependencies (numpy, scipy, sklearn, pandas) satisfy every peer.
all_reqs=("${base_reqs[@]}")
for p in "${peers[@]}"; do all_reqs+=("${peer_reqs[$p]}"); done
echo "installing: ${all_reqs[*]}"
if ! "${pip[@]}" "${all_reqs[@]}"; then
    warn "joint install failed; falling back to installing peers one by one"
    if ! "${pip[@]}" "${base_reqs[@]}"; then
        echo "ERROR: the base stack (${base_reqs[*]}) did not install" >&2
        exit 1
    fi
    # Freeze the base so a later peer cannot silently swap numpy/sklearn under
    # an earlier one.
    constraints="$(mktemp)"
    "$vpy" -m pip freeze | grep -iE '^(numpy|pandas|polars|scikit-learn|lightgbm|scipy)==' >"$constraints"
    for p in "${peers[@]}"; do
        "${pip[@]}" -c "$constraints" "${peer_reqs[$p]}" \
            || warn "could not install ${peer_reqs[$p]}; peers.py jobs for '$p' will report ok=false"
    done
    rm -f "$constraints"
fi

# 2) Check what actually imports.
missing=0
for p in "${peers[@]}"; do
    case "$p" in
        econml) mod="econml.metalearners, econml.dr, econml.dml" ;;
        causalml) mod="causalml.inference.meta" ;;
        metalearners) mod="metalearners" ;;
    esac
    if "$vpy" -c "import warnings; warnings.simplefilter('ignore'); import $mod" >/dev/null 2>&1; then
        echo "ok: $p imports"
    else
        warn "$p is not importable in $venv"
        missing=$((missing + 1))
    fi
done

echo "--- resolved versions ---"
"$vpy" -m pip freeze | grep -iE '^(econml|causalml|metalearners|scikit-learn|lightgbm|numpy|pandas|scipy|polars)=='
echo "peer venv ready: $vpy  (missing peers: $missing)"
exit 0
