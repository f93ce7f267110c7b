#!/usr/bin/env bash
# Build the vSphere API simulator used by the vSphere tests (see README.md here).
#
#   tools/vcsim/build.sh          # builds once into .cache/vcsim/, then says "up to date"
#
# Inputs: Debian's golang-go (Go 1.19) and golang-github-vmware-govmomi-dev
# (govmomi 0.24.2 sources, installed with apt-get when missing), our main.go and
# patches/*.patch. Nothing else is fetched: GO111MODULE=off, GOPROXY=off.
# Environment: VCSIM_CACHE_DIR (default <repo>/.cache/vcsim, git-ignored).
# Result: $VCSIM_CACHE_DIR/bin/vcsim-ventana; its stamp file records a hash of
# every input, and the build is skipped while that hash is unchanged.
# Also $VCSIM_CACHE_DIR/bin/inventory-bench (inventory-bench/main.go, the govc-style
# peer of `make bench`), from the unpatched Debian sources, with its own stamp.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${VCSIM_CACHE_DIR:-$repo/.cache/vcsim}
bin=$cache/bin/vcsim-ventana
stamp=$cache/bin/vcsim-ventana.stamp
debian_src=/usr/share/gocode/src/github.com/vmware/govmomi
packages=(golang-go golang-github-vmware-govmomi-dev)

step() { printf 'vcsim: %s\n' "$*"; }
die() { printf 'vcsim: error: %s\n' "$*" >&2; exit 1; }

# One build at a time (parallel make, two test runs): later ones wait, then see the stamp.
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

# 1. Debian packages, only when missing (patch(1) too: minimal images lack it).
missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$p")
done
command -v patch >/dev/null || missing+=(patch)
if ((${#missing[@]})); then
    sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
        sudo=(sudo)
    fi
    step "installing ${missing[*]} with apt-get"
    apt_log=$cache/apt.log
    if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$apt_log" 2>&1; then
        cat "$apt_log" >&2
        die "apt-get install ${missing[*]} failed (log above, also in $apt_log)"
    fi
else
    step "Debian packages present: ${packages[*]}"
fi
[[ -d $debian_src/simulator ]] || die "$debian_src/simulator not found after installing golang-github-vmware-govmomi-dev"
command -v go >/dev/null || die "go not found after installing golang-go"

# 2. Hash of the inputs: Debian package versions (with govmomi's one dependency), go version, this script, main.go, patches.
shopt -s nullglob
patches=("$here"/patches/*.patch)
shopt -u nullglob
inputs=$(
    dpkg-query -W -f='${Package} ${Version}\n' "${packages[@]}" golang-github-google-uuid-dev
    go version
    sha256sum "$here/build.sh" "$here/main.go" ${patches[@]+"${patches[@]}"} | sed "s|$here/||"
)
hash=$(printf '%s\n' "$inputs" | sha256sum | cut -d' ' -f1)
build_vcsim() {

# 3. Private GOPATH: a copy of the Debian sources with our patches; the rest of
#    the Debian GOPATH (github.com/google/uuid) stays where it is.
gopath=$cache/gopath
work=$gopath/src/github.com/vmware/govmomi
step "copying $debian_src to $work"
rm -rf "$gopath"
mkdir -p "$(dirname "$work")" "$gopath/src/ventana/vcsim" "$cache/bin"
cp -a "$debian_src" "$work"
for p in ${patches[@]+"${patches[@]}"}; do
    step "patch $(basename "$p"): $(head -n1 "$p" | sed 's/^Reason: //')"
    patch -p1 -s --forward --no-backup-if-mismatch -d "$work" <"$p" || die "patch $(basename "$p") does not apply"
done
cp "$here/main.go" "$gopath/src/ventana/vcsim/main.go"

# 4. Build (Go 1.19, GOPATH mode, offline).
step "go build (GO111MODULE=off, $(go version | cut -d' ' -f3))"
start=$(date +%s)
(cd "$gopath/src/ventana/vcsim" &&
    GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$gopath:/usr/share/gocode" \
        GOCACHE="$cache/go-build" go build -o "$bin.tmp" .) || die "go build failed"
mv -f "$bin.tmp" "$bin"
printf '%s\n' "$hash" >"$stamp"
step "built $bin in $(($(date +%s) - start)) s (inputs ${hash:0:12})"
}
if [[ -x $bin && -f $stamp && $(cat "$stamp") == "$hash" ]]; then
    step "up to date: $bin (inputs ${hash:0:12})"
else
    build_vcsim
fi

# 5. The benchmark peer: govmomi's client packages as Debian ships them (no patches).
bench_bin=$cache/bin/inventory-bench
bench_stamp=$bench_bin.stamp
bench_hash=$(
    printf '%s\n' "$inputs" | grep -v '\.patch$' | grep -v ' main.go$'
    sha256sum "$here/inventory-bench/main.go" | sed "s|$here/||"
)
bench_hash=$(printf '%s\n' "$bench_hash" | sha256sum | cut -d' ' -f1)
if [[ -x $bench_bin && -f $bench_stamp && $(cat "$bench_stamp") == "$bench_hash" ]]; then
    step "up to date: $bench_bin (inputs ${bench_hash:0:12})"
    exit 0
fi
bench_gopath=$cache/bench-gopath
rm -rf "$bench_gopath"
mkdir -p "$bench_gopath/src/ventana/inventory-bench"
cp "$here/inventory-bench/main.go" "$bench_gopath/src/ventana/inventory-bench/main.go"
step "go build inventory-bench (GO111MODULE=off)"
start=$(date +%s)
(cd "$bench_gopath/src/ventana/inventory-bench" &&
    GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$bench_gopath:/usr/share/gocode" \
        GOCACHE="$cache/go-build" go build -o "$bench_bin.tmp" .) || die "go build inventory-bench failed"
mv -f "$bench_bin.tmp" "$bench_bin"
printf '%s\n' "$bench_hash" >"$bench_stamp"
step "built $bench_bin in $(($(date +%s) - start)) s (inputs ${bench_hash:0:12})"
