#!/usr/bin/env bash
# Builds the Debian package in one command: packaging/out/retentiond_<version>_<arch>.deb.
#
# dpkg-buildpackage wants debian/ at the top of the source tree, but the repository keeps it in
# packaging/debian/ so that the root stays an ordinary CMake project. So: copy the working tree
# (what `make` would build, uncommitted changes included; never build dirs or .git) to
# packaging/out/work/, put packaging/debian there as debian/, build there, copy the .deb back.
# `--ref REF` builds a commit instead (git archive REF, debian/ from that commit too): what a
# release should ship, and immune to other people's half-written files in a shared checkout.
# Extra arguments go to dpkg-buildpackage (e.g. -nc to reuse the previous build objects; not with
# --ref, whose files carry the commit time and would look older than the objects).
# Build dependencies: the script installs what is missing (dpkg-dev, fakeroot, lintian and the
# Build-Depends of packaging/debian/control, debhelper included) with apt-get, as
# scripts/install-deps.sh does: idempotent, through sudo when not root. RETENTIOND_NO_APT=1 skips
# the installation (dpkg-checkbuilddeps then names what is missing); `--deps-only` installs them
# and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
out=$repo/packaging/out
work=$out/work/retentiond

# Installs the build dependencies that are missing; a second run installs nothing.
install_build_deps() {
  local control=$repo/packaging/debian/control tools=(dpkg-dev fakeroot lintian) missing=()
  for p in "${tools[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ] && dpkg-checkbuilddeps "$control" >/dev/null 2>&1; then
    echo "build-deb: build dependencies present"
    return
  fi
  if [ "${RETENTIOND_NO_APT:-0}" = 1 ]; then
    echo "build-deb: RETENTIOND_NO_APT=1: not installing ${missing[*]:-the Build-Depends}" >&2
    return
  fi
  local sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "build-deb: installing build dependencies: ${missing[*]:+${missing[*]} and }the" \
    "Build-Depends of debian/control"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends dpkg-dev fakeroot lintian
  # Build-Depends of the control file (debhelper-compat is provided by debhelper).
  $sudo apt-get build-dep -y -qq --no-install-recommends "$repo/packaging"
}

install_build_deps
if [ "${1:-}" = --deps-only ]; then
  exit 0
fi

mkdir -p "$work"
# Refresh the copy; keep obj-* (the CMake build dir) so that -nc can rebuild incrementally.
find "$work" -mindepth 1 -maxdepth 1 ! -name 'obj-*' -exec rm -rf {} +
if [ "${1:-}" = --ref ]; then
    git -C "$repo" archive "$2" | tar -C "$work" -xf -
    shift 2
else
    tar -C "$repo" --exclude='./.git' --exclude='./build*' --exclude='./packaging/out' \
        --exclude='./.demo' --exclude='./compile_commands.json' -cf - . | tar -C "$work" -xf -
fi
cp -a "$work/packaging/debian" "$work/debian"

cd "$work"
dpkg-checkbuilddeps
dpkg-buildpackage -us -uc -b -j"${RETENTIOND_BUILD_JOBS:-2}" "$@"

version=$(dpkg-parsechangelog -S Version)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
deb=retentiond_${version}_${arch}.deb
cp "$out/work/$deb" "$out/$deb"
echo "built $out/$deb"
