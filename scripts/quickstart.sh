#!/usr/bin/env bash
# Set up sera with the embedded default model and run it on a repository.
#   bash scripts/quickstart.sh                 # on a small demo repository with a known bug
#   bash scripts/quickstart.sh /path/to/repo "describe the task"
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${SERA_VENV:-$here/.venv}"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e "$here[embedded]"

repo="${1:-}"
task="${2:-add() in calc.py returns the wrong result: add(2, 3) gives -1 instead of 5. Fix it.}"
if [ -z "$repo" ]; then
  repo="$(mktemp -d)/demo"
  mkdir -p "$repo" && cd "$repo"
  git init -q
  printf 'def add(a, b):\n    """Return the sum of a and b."""\n    return a - b\n' > calc.py
  git add calc.py
  git -c user.name=sera -c user.email=sera@localhost commit -qm "calc: add()"
  echo "demo repository: $repo"
fi
cd "$repo"
# Small local models ramble; a shorter reply limit keeps a CPU step to seconds, not a minute.
export SERA_MODEL_MAX_TOKENS="${SERA_MODEL_MAX_TOKENS:-400}"
"$venv/bin/sera" solve --candidates "${SERA_CANDIDATES:-2}" --max-steps "${SERA_MAX_STEPS:-12}" "$task"
