#!/usr/bin/env bash
# Build (or reuse) a free-threaded CPython 3.13 ("3.13t") for testing wsthread.
#
# The interpreter is built from Debian 13's python3.13 source package (its
# upstream tarball, without Debian's patches) with ./configure --disable-gil,
# no PGO and no LTO, and installed with `make altinstall` into a cache outside
# the clone:
#
#     ${WSTHREAD_CACHE:-~/.cache/wsthread}/cpython-<version>t/bin/python3.13t
#
# keyed by the upstream version of the source package, so a machine builds it
# once. A second run finds the finished build and only checks that it works.
#
# Needs: root (or sudo) the first time, to add one deb-src entry for Debian 13
# ("trixie") and fetch its source index; the -dev packages CPython builds
# against (libssl-dev, zlib1g-dev, libffi-dev, ...); about 5 minutes of 2 cores
# and ~550 MB of disk once the build tree is deleted.
#
# Prints the interpreter's path as the last line of stdout; everything else
# goes to stderr. Exits non-zero with a message saying what failed.
#
# Environment:
#   WSTHREAD_CACHE      cache directory (default ~/.cache/wsthread)
#   WSTHREAD_FT_VERSION upstream version to use (default: what apt serves);
#                       with a finished build of that version in the cache,
#                       apt is not asked at all
#   JOBS                make -j value (default: number of cores)
set -euo pipefail

cache=${WSTHREAD_CACHE:-$HOME/.cache/wsthread}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
package=python3.13
sources_file=/etc/apt/sources.list.d/wsthread-trixie-src.sources

log() { printf '[build-free-threaded-python] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# Does this prefix hold a finished, working free-threaded build?
works() {
    local python=$1/bin/python3.13t
    [ -f "$1/.wsthread-build-complete" ] && [ -x "$python" ] || return 1
    "$python" - <<'EOF' >&2
import sys, sysconfig
assert sysconfig.get_config_var("Py_GIL_DISABLED") == 1, "not a free-threaded build"
assert not sys._is_gil_enabled(), "the GIL is enabled"
import ssl, zlib, ctypes, sqlite3, lzma, bz2, hashlib, venv, ensurepip  # noqa: F401
EOF
}

# Add the deb-src entry for trixie, copying the URI and key of the machine's
# own first Debian entry, and fetch only that entry's index.
apt_sources() {
    if [ ! -f "$sources_file" ]; then
        local uri=http://deb.debian.org/debian
        local key=/usr/share/keyrings/debian-archive-keyring.gpg
        if [ -f /etc/apt/sources.list.d/debian.sources ]; then
            uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
            key=$(awk '/^Signed-By:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
        fi
        log "adding $sources_file (deb-src, trixie, $uri)"
        printf 'Types: deb-src\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: %s\n' \
            "${uri:-http://deb.debian.org/debian}" \
            "${key:-/usr/share/keyrings/debian-archive-keyring.gpg}" \
            | as_root tee "$sources_file" >/dev/null
    fi
    if ! apt-cache showsrc "$package" 2>/dev/null | grep -q '^Version:'; then
        log "apt-get update (the trixie deb-src entry only)"
        as_root apt-get update -qq \
            -o Dir::Etc::sourcelist="$sources_file" \
            -o Dir::Etc::sourceparts=- \
            -o APT::Get::List-Cleanup=0 >&2 \
            || die "apt-get update failed for $sources_file"
    fi
}

mkdir -p "$cache"
exec 9>"$cache/.build.lock"
flock 9 # one build at a time per cache

version=${WSTHREAD_FT_VERSION:-}
if [ -n "$version" ] && works "$cache/cpython-${version}t"; then
    log "reusing $cache/cpython-${version}t"
    echo "$cache/cpython-${version}t/bin/python3.13t"
    exit 0
fi

command -v apt-get >/dev/null || die "apt-get not found: this script builds from Debian's source package"
apt_sources
debian_version=$(apt-cache showsrc "$package" 2>/dev/null | awk '/^Version:/ {print $2}' | sort -V | tail -n 1)
[ -n "$debian_version" ] || die "apt serves no source package $package (check $sources_file)"
upstream=${debian_version#*:}
upstream=${upstream%-*}
if [ -n "$version" ] && [ "$version" != "$upstream" ]; then
    die "WSTHREAD_FT_VERSION=$version but apt serves $package $debian_version"
fi
version=$upstream
prefix=$cache/cpython-${version}t
if works "$prefix"; then
    log "reusing $prefix"
    echo "$prefix/bin/python3.13t"
    exit 0
fi

start=$SECONDS
log "building CPython $version with --disable-gil into $prefix ($jobs jobs)"
rm -rf "$prefix"
build=$cache/build-$version
rm -rf "$build"
mkdir -p "$build"
buildlog=$cache/build-$version.log
: >"$buildlog"
step() { # step NAME COMMAND...: run with output in the log; on failure show its end
    local name=$1 t0=$SECONDS
    shift
    log "$name..."
    if ! "$@" >>"$buildlog" 2>&1; then
        tail -n 40 "$buildlog" >&2
        die "$name failed (full log: $buildlog)"
    fi
    log "$name: $((SECONDS - t0)) s"
}

(cd "$build" && step "apt-get source --download-only $package=$debian_version" \
    apt-get source --download-only "$package=$debian_version")
tarball=$(find "$build" -maxdepth 1 \( -name "${package}_${version}.orig.tar.xz" \
    -o -name "${package}_${version}.orig.tar.gz" \) | head -n 1)
[ -n "$tarball" ] || die "no ${package}_${version}.orig.tar.* in the downloaded source"
step "unpack $(basename "$tarball")" tar -xf "$tarball" -C "$build"
src=$(find "$build" -mindepth 1 -maxdepth 1 -type d -name 'Python-*' | head -n 1)
[ -n "$src" ] || die "no Python-* directory in $tarball"

cd "$src"
step "configure" ./configure --disable-gil --prefix="$prefix" --with-ensurepip=install
step "make -j$jobs" make -j"$jobs"
# Modules that failed to build are listed by setup; ssl or zlib missing is fatal.
if grep -q "Following modules built successfully but were removed\|Failed to build these modules" "$buildlog"; then
    grep -A3 "Failed to build these modules\|were removed" "$buildlog" >&2 || true
fi
step "make altinstall" make altinstall
cd "$cache"
touch "$prefix/.wsthread-build-complete"
if ! works "$prefix"; then
    rm -f "$prefix/.wsthread-build-complete"
    die "the build in $prefix does not work (see the errors above; log: $buildlog)"
fi
rm -rf "$build"
log "built CPython $version (free-threaded) in $((SECONDS - start)) s"
echo "$prefix/bin/python3.13t"
