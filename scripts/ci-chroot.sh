#!/usr/bin/env bash
# Runs `.ci/run` on a clean checkout of this repository's HEAD inside a brand-new Debian 12
# chroot (debootstrap minbase: none of the project's packages, no compiler, no python), the
# way a fresh CI machine would: proof that scripts/setup.sh installs everything the suite
# needs. Not part of the suite (it runs the suite); see docs/testing.md.
#
#   scripts/ci-chroot.sh [WORKDIR]     default WORKDIR: /var/tmp/vmsnap-ci-chroot
#
# The chroot gets the host's kernel interfaces the suite needs (/proc, /sys with the cgroup
# hierarchies, /dev, a private /dev/shm and /run) through mounts made in a private mount
# namespace, so nothing stays mounted on the host when it ends. It also gets the host's
# network trust, as any CI machine has its own configured (carry_trust below): the CA bundle
# (a network that inspects TLS signs with its own CA: without it npm fails with
# SELF_SIGNED_CERT_IN_CHAIN), npm's registry and proxy settings, the proxy variables and
# /etc/resolv.conf. Exit status: .ci/run's.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:-/var/tmp/vmsnap-ci-chroot}
MIRROR=${VMSNAP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOT=$WORK/root

TRUST=/etc/vmsnap-ci # in the chroot: ca.pem, npmrc
log() { printf 'ci-chroot: %s\n' "$*" >&2; }

# Copies the host's network trust into the chroot's $TRUST: its CA bundle ($SSL_CERT_FILE,
# else Debian's) and an npmrc with that bundle as cafile plus the host's registry and proxy
# settings (`npm config get`; none when the host has no npm).
carry_trust() {
        local ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt} key val
        install -d -m 0755 "$ROOT$TRUST"
        [[ -r $ca ]] && install -m 0644 "$ca" "$ROOT$TRUST/ca.pem"
        install -m 0600 /dev/null "$ROOT$TRUST/npmrc" # registry URLs may hold credentials
        (
                [[ -r $ca ]] && echo "cafile=$TRUST/ca.pem"
                command -v npm >/dev/null || exit 0
                for key in registry proxy https-proxy noproxy strict-ssl; do
                        val=$(npm config get "$key" 2>/dev/null) || continue
                        [[ -n $val && $val != null && $val != undefined ]] && echo "$key=$val"
                done
                exit 0
        ) >"$ROOT$TRUST/npmrc"
        log "carried the host's trust into $TRUST: $(ls "$ROOT$TRUST" | tr '\n' ' ')"
}

# The environment .ci/run gets: a CI machine's (CI=true), the carried trust, the host's proxies.
chroot_env() {
        local v
        printf '%s\n' PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb CI=true LANG=C.UTF-8
        [[ -f $ROOT$TRUST/ca.pem ]] && echo "NODE_EXTRA_CA_CERTS=$TRUST/ca.pem"
        [[ -f $ROOT$TRUST/npmrc ]] && echo "NPM_CONFIG_GLOBALCONFIG=$TRUST/npmrc"
        for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
                [[ -n ${!v:-} ]] && echo "$v=${!v}"
        done
        return 0
}

[[ $(id -u) == 0 ]] || { log "needs root (debootstrap, chroot, mounts)"; exit 1; }
command -v debootstrap >/dev/null || { log "debootstrap is not installed (apt-get install debootstrap)"; exit 1; }

# Inside the private mount namespace: the kernel interfaces, then .ci/run as a CI machine
# would run it (a clean clone of HEAD, CI=true).
if [[ ${1:-} == --inside ]]; then
        ROOT=$2
        mount --make-rprivate /
        mount --bind "$ROOT" "$ROOT" # `/` of the chroot is a mount point, as on a host
        mount -t proc proc "$ROOT/proc"
        mount --rbind /sys "$ROOT/sys"
        mount --rbind /dev "$ROOT/dev"
        mount -t tmpfs -o mode=1777 shm "$ROOT/dev/shm"
        mount -t tmpfs -o mode=0755 run "$ROOT/run"
        cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
        mapfile -t envs < <(chroot_env)
        exec chroot "$ROOT" /usr/bin/env -i "${envs[@]}" bash -c 'cd /src && exec bash .ci/run'
fi

rm -rf "$WORK"
mkdir -p "$WORK"
log "debootstrap bookworm minbase into $ROOT"
debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
        tail -5 "$WORK/debootstrap.log"
        log "debootstrap failed (log: $WORK/debootstrap.log)"
        exit 1
}
log "a clean clone of $(git -C "$SRC" rev-parse --short HEAD) into $ROOT/src"
git clone -q "$SRC" "$ROOT/src"
carry_trust
log "running .ci/run in the chroot (log: $WORK/ci.log)"
start=$(date +%s)
rc=0
unshare --mount -- bash "$0" --inside "$ROOT" 2>&1 | tee "$WORK/ci.log" || rc=${PIPESTATUS[0]}
log ".ci/run exited $rc after $(($(date +%s) - start)) s"
exit "$rc"
