# shellcheck shell=bash
# Sourced by install.sh and build-wheelhouse.sh, which must agree byte for byte on what "this
# checkout" is: a wheelhouse built from another checkout is refused by its source hash.
#
# snapshot_source REPO DIR: copy what the package is built from (pyproject.toml, README.md,
# src/, the licence) to DIR, without caches and compiled kernels, and print its hash.
snapshot_source() {
  local repo=$1 dir=$2 f sums
  local sources=(pyproject.toml README.md src)
  for f in "$repo"/LICENSE* "$repo"/NOTICE*; do
    if [ -f "$f" ]; then sources+=("$(basename "$f")"); fi
  done
  mkdir -p "$dir"
  tar -C "$repo" --exclude=__pycache__ --exclude='*.egg-info' --exclude='*.py[co]' \
    --exclude='*.nb[ic]' -cf - "${sources[@]}" | tar -C "$dir" -xf -
  sums=$(cd "$dir" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
  printf '%s\n' "$sums" | sha256sum | cut -d' ' -f1
}
