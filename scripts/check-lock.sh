#!/bin/sh
# After `make venv` installs: every distribution in the environment (the project itself aside)
# must be pinned in the lock at the version installed, or a fresh clone would not get what was
# tested. A dependency added to pyproject.toml without `make lock` shows here. Under CI=true this
# fails; elsewhere it warns (a developer may have installed something of their own).
# Usage: scripts/check-lock.sh VENV_BIN LOCKFILE
set -eu
bin=$1 lock=$2
unpinned=$("$bin/pip" freeze --exclude-editable | grep -v -x -F -f "$lock" || true)
[ -z "$unpinned" ] && exit 0
echo "check-lock: installed but not pinned in $lock (run \`make lock\`):" >&2
echo "$unpinned" | sed 's/^/  /' >&2
[ "${CI:-}" != true ]
