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
sera="$venv/bin/sera"

repo="${1:-}"
task="${2:-add() in calc.py returns the wrong result: add(2, 3) gives -1 instead of 5. Fix it.}"
if [ -z "$repo" ]; then
  repo="$(mktemp -d)/demo"
  mkdir -p "$repo"
  git -C "$repo" init -q
  printf 'def add(a, b):\n    """Return the sum of a and b."""\n    return a - b\n' > "$repo/calc.py"
  git -C "$repo" add calc.py
  git -C "$repo" -c user.name=sera -c user.email=sera@localhost commit -qm "calc: add()"
  echo "demo repository: $repo"
fi
repo="$(cd "$repo" && pwd)"
# Small local models ramble; a shorter reply limit keeps a CPU step to seconds, not a minute.
export SERA_MODEL_MAX_TOKENS="${SERA_MODEL_MAX_TOKENS:-400}"
# Run from here with -C, not from inside the repository: the apply and undo commands solve prints
# at the end then carry -C and sera's full path, and work as typed in this shell.
"$sera" -C "$repo" solve --candidates "${SERA_CANDIDATES:-2}" --max-steps "${SERA_MAX_STEPS:-12}" "$task"

run="$("$sera" -C "$repo" runs | awk 'NR == 1 {print $1}')"
echo
echo "browse the candidates in the terminal app:"
printf '  %q -C %q tui --run %q\n' "$sera" "$repo" "$run"
echo "to type just \`sera\`, put it on PATH (this shell only; add the line to ~/.bashrc to keep it):"
printf '  export PATH=%q:"$PATH"\n' "$venv/bin"
