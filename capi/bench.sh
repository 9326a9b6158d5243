#!/usr/bin/env bash
# Real programs under glibc malloc, jemalloc, mimalloc and strata
# (LD_PRELOAD): wall time and peak RSS (/usr/bin/time -v), best of $REPS
# runs each, printed as a markdown table with ratios to glibc. Not run by
# CI (timings are reports, never assertions). Installs libjemalloc2,
# libmimalloc2.0 and time with apt-get when missing. ~5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS="${REPS:-3}"

need=()
dpkg -s libjemalloc2 >/dev/null 2>&1 || need+=(libjemalloc2)
dpkg -s libmimalloc2.0 >/dev/null 2>&1 || need+=(libmimalloc2.0)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
JEMALLOC="$(dpkg -L libjemalloc2 | grep -E '/libjemalloc\.so\.[0-9]+$' | head -1)"
MIMALLOC="$(dpkg -L libmimalloc2.0 | grep -E '/libmimalloc\.so\.[0-9.]+$' | head -1)"

cargo build --release -p strata-capi >&2
STRATA="$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)/libstrata.so"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/strata-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

python3 capi/tests/programs/gen_lines.py 2000000 >"$WORK/lines.txt"
python3 capi/tests/programs/gen_repo_files.py "$WORK/files" 400

cat >"$WORK/git.sh" <<'EOF'
set -euo pipefail
dir="$1"
rm -rf "$dir" && mkdir -p "$dir" && cp -r "$2/." "$dir/" && cd "$dir"
export GIT_AUTHOR_NAME=b GIT_AUTHOR_EMAIL=b@example.com GIT_COMMITTER_NAME=b
export GIT_COMMITTER_EMAIL=b@example.com GIT_CONFIG_NOSYSTEM=1 HOME="$dir"
git init -q -b main .
for part in 0 1 2 3; do git add "part$part" && git commit -q -m "part $part"; done
git log --stat | sha256sum >/dev/null
git gc -q --aggressive
git log -p | sha256sum >/dev/null
EOF

PROGRAMS=(python git sort)
run_program() { # run_program NAME
  case "$1" in
    python) PYTHONMALLOC=malloc python3 capi/tests/programs/py_threads.py 200000 ;;
    git) bash "$WORK/git.sh" "$WORK/repo" "$WORK/files" ;;
    sort) sort --parallel=2 "$WORK/lines.txt" -o "$WORK/sorted.txt" ;;
  esac
}

# measure NAME PRELOAD -> "seconds kib" (best of REPS)
measure() {
  local best_t="" best_m="" t m
  for _ in $(seq "$REPS"); do
    if [ -n "$2" ]; then
      LD_PRELOAD="$2" /usr/bin/time -v -o "$WORK/time.txt" bash -c "$(declare -f run_program); WORK='$WORK'; run_program $1" >/dev/null
    else
      /usr/bin/time -v -o "$WORK/time.txt" bash -c "$(declare -f run_program); WORK='$WORK'; run_program $1" >/dev/null
    fi
    t=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$WORK/time.txt")
    m=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")
    if [ -z "$best_t" ] || awk "BEGIN{exit !($t < $best_t)}"; then best_t=$t; fi
    if [ -z "$best_m" ] || [ "$m" -lt "$best_m" ]; then best_m=$m; fi
  done
  echo "$best_t $best_m"
}

ALLOCS=(glibc jemalloc mimalloc strata)
declare -A LIBS=([glibc]="" [jemalloc]="$JEMALLOC" [mimalloc]="$MIMALLOC" [strata]="$STRATA")

echo "| program | allocator | wall s | wall / glibc | peak RSS MiB | RSS / glibc |"
echo "| --- | --- | ---: | ---: | ---: | ---: |"
for prog in "${PROGRAMS[@]}"; do
  base_t="" base_m=""
  for alloc in "${ALLOCS[@]}"; do
    read -r t m < <(measure "$prog" "${LIBS[$alloc]}")
    if [ -z "$base_t" ]; then base_t=$t base_m=$m; fi
    awk -v p="$prog" -v a="$alloc" -v t="$t" -v m="$m" -v bt="$base_t" -v bm="$base_m" \
      'BEGIN { printf "| %s | %s | %.2f | %.2f | %.1f | %.2f |\n", p, a, t, t / bt, m / 1024, m / bm }'
  done
done
echo
echo "Best of $REPS runs; peak RSS is the largest single process (git: of its subprocesses)."
