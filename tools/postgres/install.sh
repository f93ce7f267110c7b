#!/usr/bin/env bash
# Make sure Debian's PostgreSQL server programs are installed (the team-mode tests
# start a throwaway cluster from them: tests/peers/postgres.py).
#
#   tools/postgres/install.sh     # installs `postgresql` with apt-get when missing,
#                                 # else says which server it found; prints its bin dir
#
# Idempotent and cheap when present: it only looks for initdb/pg_ctl/postgres under
# /usr/lib/postgresql/*/bin (Debian keeps them off PATH). One run at a time (flock):
# parallel make jobs wait, then find it installed. Environment: PG_CACHE_DIR
# (default <repo>/.cache/postgres, git-ignored) holds the lock and the apt log.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${PG_CACHE_DIR:-$repo/.cache/postgres}

step() { printf 'postgres: %s\n' "$*" >&2; }
die() { printf 'postgres: error: %s\n' "$*" >&2; exit 1; }

find_bin() {
    local d
    # Newest major version first (sort -V on the version directory).
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -V -r); do
        if [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]]; then
            printf '%s\n' "$d"
            return 0
        fi
    done
    return 1
}

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

if bin=$(find_bin); then
    step "server present: $bin ($("$bin/postgres" --version))"
    printf '%s\n' "$bin"
    exit 0
fi

sudo=()
if ((EUID != 0)); then
    command -v sudo >/dev/null || die "need root (or sudo) to install postgresql"
    sudo=(sudo)
fi
step "installing postgresql with apt-get (Debian's server, for the team-mode tests)"
apt_log=$cache/apt.log
if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends postgresql; } >"$apt_log" 2>&1; then
    cat "$apt_log" >&2
    die "apt-get install postgresql failed (log above, also in $apt_log)"
fi
# Debian's package starts a system cluster; the tests never use it (they run their own).
bin=$(find_bin) || die "no initdb/pg_ctl/postgres under /usr/lib/postgresql/*/bin after installing"
step "installed: $bin ($("$bin/postgres" --version))"
printf '%s\n' "$bin"
