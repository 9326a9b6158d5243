#!/usr/bin/env bash
# libstrata.so (capi/) as a drop-in malloc: builds it, runs the C edge-case
# test under LD_PRELOAD, then real programs (multi-threaded CPython with
# PYTHONMALLOC=malloc, git on a generated repository, sort on 2M lines)
# with and without the preload, and fails if any output differs.
# About 1-2 minutes on 2 cores. Needs cc, python3, git, coreutils.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo build --release -p strata-capi"
cargo build --release -p strata-capi
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
LIB="$(cd "$TARGET_DIR/release" && pwd)/libstrata.so"
test -f "$LIB"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/strata-capi.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# Runs "$@" under the preload.
strata() { LD_PRELOAD="$LIB" "$@"; }

step "the library is really used (STRATA_SHOW_STATS report at exit)"
STRATA_SHOW_STATS=1 LD_PRELOAD="$LIB" PYTHONMALLOC=malloc python3 -c 'x = [str(i) for i in range(100000)]' 2>"$WORK/stats-py.txt"
grep -q "strata-alloc stats" "$WORK/stats-py.txt" || {
  echo "no stats report from a preloaded python3" >&2
  cat "$WORK/stats-py.txt" >&2
  exit 1
}
echo "ok: stats report printed at exit"
STRATA_PURGE_DELAY=bogus LD_PRELOAD="$LIB" ls / >/dev/null 2>"$WORK/warn.txt"
grep -q "STRATA_PURGE_DELAY" "$WORK/warn.txt"
echo "ok: STRATA_PURGE_DELAY is read"

step "C edge cases (capi/tests/c/edge_cases.c)"
cc -O1 -g -Wall -Wextra -Werror -fno-builtin -pthread \
  -o "$WORK/edge_cases" capi/tests/c/edge_cases.c -ldl
cc -O1 -g -fno-builtin -pthread -DGLIBC_REFERENCE \
  -o "$WORK/edge_cases_ref" capi/tests/c/edge_cases.c -ldl
"$WORK/edge_cases_ref" >/dev/null # the expectations hold for glibc too
strata "$WORK/edge_cases"

# same NAME CMD...: runs CMD with and without the preload; the outputs
# (stdout) must be identical.
same() {
  local name="$1"
  shift
  "$@" >"$WORK/$name.glibc"
  strata "$@" >"$WORK/$name.strata"
  if ! cmp -s "$WORK/$name.glibc" "$WORK/$name.strata"; then
    echo "FAIL: $name output differs under libstrata.so" >&2
    diff "$WORK/$name.glibc" "$WORK/$name.strata" | head -20 >&2
    exit 1
  fi
  echo "ok: $name: $(head -c 64 "$WORK/$name.strata" | head -1)"
}

step "python3, 4 threads, PYTHONMALLOC=malloc"
export PYTHONMALLOC=malloc PYTHONHASHSEED=0
same python python3 capi/tests/programs/py_threads.py 200000
unset PYTHONMALLOC PYTHONHASHSEED

step "git on a generated repository"
python3 capi/tests/programs/gen_repo_files.py "$WORK/files" 400
git_run() { # git_run DIR: init, add, commit in 4 steps, log, gc, fsck
  local dir="$1"
  rm -rf "$dir"
  mkdir -p "$dir"
  cp -r "$WORK/files/." "$dir/"
  (
    cd "$dir"
    export GIT_AUTHOR_NAME=strata GIT_AUTHOR_EMAIL=strata@example.com
    export GIT_COMMITTER_NAME=strata GIT_COMMITTER_EMAIL=strata@example.com
    export GIT_AUTHOR_DATE="2024-01-01T00:00:00Z" GIT_COMMITTER_DATE="2024-01-01T00:00:00Z"
    export GIT_CONFIG_NOSYSTEM=1 HOME="$dir"
    git init -q -b main .
    for part in 0 1 2 3; do
      git add "part$part"
      git commit -q -m "part $part"
    done
    sed -i 's/3/three/g' part1/* && git commit -q -am "edit part 1"
    git log --stat | sha256sum
    git gc -q --aggressive
    git fsck --no-progress 2>&1
    git count-objects -v | grep -E '^(count|in-pack|packs)'
    git log --stat | sha256sum
    git diff HEAD~3 --stat | tail -1
  )
}
git_run "$WORK/repo-glibc" >"$WORK/git.glibc"
LD_PRELOAD="$LIB" bash -c "$(declare -f git_run); WORK='$WORK'; git_run '$WORK/repo-strata'" >"$WORK/git.strata"
if ! cmp -s "$WORK/git.glibc" "$WORK/git.strata"; then
  echo "FAIL: git output differs under libstrata.so" >&2
  diff "$WORK/git.glibc" "$WORK/git.strata" >&2
  exit 1
fi
echo "ok: git: $(head -1 "$WORK/git.strata")"

step "sort on 2M generated lines"
python3 capi/tests/programs/gen_lines.py 2000000 >"$WORK/lines.txt"
same sort-lines sort "$WORK/lines.txt" -o /dev/stdout
same sort-numeric sort -t, -k2,2n -k1,1 --parallel=2 "$WORK/lines.txt"

printf '\nci/capi.sh: all passed\n'
