#!/bin/sh
# Tests the Debian package the way a customer meets it: `make deb-test` (and `make test`).
#
#  1. builds the package of this tree (packaging/build-deb.sh) and one of the previous
#     commit (HEAD~1, from a temporary `git worktree`; cached per commit);
#  2. lintian: no errors; systemd-analyze security: the unit's exposure score; the
#     extensions also build with bookworm's cython3 (0.29) on Debian's python3;
#  3. in a fresh Debian bookworm tree (debootstrap --variant=minbase, plus systemd, from
#     the mirror the machine's apt uses; cached as a tarball):
#     a. apt-get install of the package; files, owners and modes; every extension module
#        imports; systemd-analyze verify; check-config as the service user; the unit's
#        command runs as the service user until READY=1, an instance is created through
#        the API, /metrics answers (packaging/installed_check.py); purge leaves nothing;
#     (its dependencies are installed before the first snapshot of the tree)
#     b. install of the previous commit's package, an edited config and an instance, an
#        upgrade to this tree's package: the edit and the instance are still there; purge.
#
# Skips (exit 0, with the reason) only when it cannot run at all: not root, no chroot.
# DEB_TEST_CACHE (default /var/cache/sip-push-gateway-deb-test) keeps the tarball and the
# previous commit's package between runs.
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd)
STARTED=$(date +%s)
CACHE=${DEB_TEST_CACHE:-/var/cache/sip-push-gateway-deb-test}
SUITE=bookworm
ARCH=$(dpkg --print-architecture 2>/dev/null || echo unknown)

say() { echo "deb-test: $*"; }
skip() { say "SKIPPED: $*"; exit 0; }
die() { say "FAILED: $*" >&2; exit 1; }
step() { say "== $* ($(( $(date +%s) - STARTED )) s)"; }

[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, chroot, mount, unshare): run it as root"
[ "$ARCH" = amd64 ] || skip "the package is built and tested on amd64 only (this is $ARCH)"

missing=$(for p in debootstrap lintian systemd util-linux cython3 python3-setuptools; do
    dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done | xargs)
if [ -n "$missing" ]; then
    say "installing $missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi

WORK=$(mktemp -d /var/tmp/sip-push-gateway-deb-test.XXXXXX)
TREE=$WORK/root
PREV_SRC=
cleanup() {
    for m in "$TREE/proc"; do mountpoint -q "$m" 2>/dev/null && umount -l "$m"; done
    [ -z "$PREV_SRC" ] || git worktree remove --force "$PREV_SRC" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# --- the packages -------------------------------------------------------------------
step "building this tree's package"
packaging/build-deb.sh >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; die "build failed"; }
DEB=$(sed -n 's/^build-deb: \(.*\.deb\) .*/\1/p' "$WORK/build.log")
VERSION=$(dpkg-deb -f "$DEB" Version)
say "package: $DEB"

mkdir -p "$CACHE/prev"
PREV_COMMIT=$(git rev-parse HEAD~1 2>/dev/null || true)
if [ -n "$PREV_COMMIT" ] && git cat-file -e "$PREV_COMMIT:packaging/build-deb.sh" 2>/dev/null; then
    PREV_DEB=$(ls "$CACHE/prev/$PREV_COMMIT"/*.deb 2>/dev/null | head -1 || true)
    if [ -z "$PREV_DEB" ]; then
        step "building the package of the previous commit ${PREV_COMMIT%${PREV_COMMIT#??????????}}"
        PREV_SRC=$WORK/prev-src
        git worktree add --detach -q "$PREV_SRC" "$PREV_COMMIT"
        "$PREV_SRC/packaging/build-deb.sh" --out "$WORK/prev" >"$WORK/build-prev.log" 2>&1 ||
            { tail -40 "$WORK/build-prev.log"; die "the previous commit's package does not build"; }
        mkdir -p "$CACHE/prev/$PREV_COMMIT"
        cp "$WORK"/prev/*.deb "$CACHE/prev/$PREV_COMMIT/"
        PREV_DEB=$(ls "$CACHE/prev/$PREV_COMMIT"/*.deb | head -1)
    fi
    say "upgrade from: $PREV_DEB (built from the previous commit)"
else
    step "HEAD~1 has no packaging yet: upgrading from this tree built with a lower version"
    packaging/build-deb.sh --version "${VERSION%.dirty}~prev" --out "$WORK/prev" \
        >"$WORK/build-prev.log" 2>&1 || { tail -40 "$WORK/build-prev.log"; die "build failed"; }
    PREV_DEB=$(ls "$WORK"/prev/*.deb | head -1)
    say "upgrade from: $PREV_DEB (this tree, version ${VERSION%.dirty}~prev)"
fi
dpkg --compare-versions "$(dpkg-deb -f "$PREV_DEB" Version)" lt "$VERSION" ||
    die "$PREV_DEB is not older than $VERSION"

# --- static checks --------------------------------------------------------------------
step "lintian"
if lintian --fail-on error "$DEB" >"$WORK/lintian.txt" 2>&1; then LINTIAN_OK=1; else LINTIAN_OK=; fi
grep -v 'running with root privileges' "$WORK/lintian.txt" | sed 's/^/    /' || true
[ -n "$LINTIAN_OK" ] || die "lintian reports errors"
say "lintian: no errors ($(grep -c '^W:' "$WORK/lintian.txt" || true) warnings)"

step "systemd-analyze security"
dpkg-deb -x "$DEB" "$WORK/deb"
UNIT_FILE=$WORK/deb/lib/systemd/system/sip-push-gateway.service
systemd-analyze security --offline=true "$UNIT_FILE" >"$WORK/security.txt" 2>&1 || true
EXPOSURE=$(sed -n 's/.*Overall exposure level for [^:]*: *\([0-9.]*\) \([A-Z]*\).*/\1 \2/p' "$WORK/security.txt")
[ -n "$EXPOSURE" ] || { cat "$WORK/security.txt"; die "systemd-analyze security gave no score"; }
say "systemd-analyze security: exposure $EXPOSURE"

step "the extensions also build with bookworm's Cython $(dpkg-query -W -f='${Version}' cython3)"
mkdir -p "$WORK/cython3"
git ls-files -z setup.py pyproject.toml README.md requirements.txt requirements-test.txt _ext gateway |
    tar --null -T - -cf - | tar -xf - -C "$WORK/cython3"
(cd "$WORK/cython3" && /usr/bin/python3 setup.py -q build_ext --inplace) >"$WORK/cython3.log" 2>&1 ||
    { tail -30 "$WORK/cython3.log"; die "the extensions do not build with Debian's cython3"; }
say "built with cython3: $(cd "$WORK/cython3" && ls gateway/_*.so | xargs -n1 basename | xargs)"

# --- the bookworm tree ----------------------------------------------------------------
mirror() {
    # The first source of $SUITE in apt's configuration, one-line or deb822 format.
    { cat /etc/apt/sources.list 2>/dev/null; cat /etc/apt/sources.list.d/*.list 2>/dev/null; } |
        awk -v s="$SUITE" '$1 == "deb" { for (i = 2; i < NF; i++) if ($i ~ /:\/\//) {
            if ($(i + 1) == s) { print $i; exit } break } }' | head -1 | grep . && return
    cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v s="$SUITE" 'BEGIN { RS = "" }
        { uri = ""; ok = 0; n = split($0, lines, "\n")
          for (i = 1; i <= n; i++) {
              if (lines[i] ~ /^URIs:/) { split(lines[i], f, /[ \t]+/); uri = f[2] }
              if (lines[i] ~ /^Suites:/) { m = split(lines[i], f, /[ \t]+/)
                  for (j = 2; j <= m; j++) if (f[j] == s) ok = 1 } }
          if (ok && uri != "") { print uri; exit } }'
}
TARBALL=$CACHE/$SUITE-minbase-systemd-$ARCH.tar.gz
if [ ! -s "$TARBALL" ] || [ -n "$(find "$TARBALL" -mtime +30)" ]; then
    MIRROR=$(mirror)
    [ -n "$MIRROR" ] || die "no $SUITE source in /etc/apt/sources.list(.d): which mirror?"
    step "debootstrap $SUITE from $MIRROR (cached in $TARBALL)"
    # minbase plus systemd, as on any bookworm server (not running: there is no init in a
    # chroot); systemd-analyze verify needs its units.
    debootstrap --variant=minbase --include=systemd "$SUITE" "$WORK/new-tree" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
        { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
    # The package lists and Python come with the tarball, so that each run does not
    # download them again; they are not installed (the tree stays minimal).
    cp /etc/resolv.conf "$WORK/new-tree/etc/resolv.conf"
    mount -t proc proc "$WORK/new-tree/proc"
    chroot "$WORK/new-tree" sh -c 'apt-get update -qq &&
        apt-get install -qq -y --download-only python3.11 adduser init-system-helpers' ||
        { umount -l "$WORK/new-tree/proc"; die "apt-get in the new tree failed"; }
    umount -l "$WORK/new-tree/proc"
    tar -C "$WORK/new-tree" -czf "$TARBALL.new" . && mv "$TARBALL.new" "$TARBALL"
    rm -rf "$WORK/new-tree"
fi

step "unpacking the $SUITE tree"
mkdir -p "$TREE"
tar -C "$TREE" -xzf "$TARBALL"
cp /etc/resolv.conf "$TREE/etc/resolv.conf"
mount -t proc proc "$TREE/proc" 2>/dev/null || skip "cannot mount /proc in a chroot here"
in_tree() { chroot "$TREE" "$@"; }
cp "$DEB" "$PREV_DEB" packaging/installed_check.py "$TREE/tmp/"
DEB_IN=/tmp/$(basename "$DEB")
PREV_IN=/tmp/$(basename "$PREV_DEB")
PY=/usr/lib/sip-push-gateway/bin/python
CONFIG=/etc/sip-push-gateway/gateway.toml
# Outside the tree's network: the service and its client get their own loopback.
isolated() { unshare --net sh -c 'ip link set lo up 2>/dev/null || true; exec "$@"' _ chroot "$TREE" "$@"; }

snapshot() {
    in_tree find / -xdev \( -path /proc -o -path /dev -o -path /tmp -o -path /run \
        -o -path /var/cache -o -path /var/lib/apt/lists -o -path /var/log \) -prune -o -print |
        sort >"$1"
}
apt_install() {
    in_tree env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        -o Dpkg::Options::=--force-confold "$@" >"$WORK/apt.log" 2>&1 ||
        { tail -30 "$WORK/apt.log"; die "apt-get install $* failed"; }
    grep -E '^(sip-push-gateway|Setting up sip-push-gateway)' "$WORK/apt.log" | sed 's/^/    /' || true
}
purge_and_compare() {
    in_tree env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q sip-push-gateway >"$WORK/apt.log" 2>&1 ||
        { tail -30 "$WORK/apt.log"; die "apt-get purge failed"; }
    snapshot "$WORK/after"
    # Package-manager bookkeeping and the user database's backup copies are not ours.
    comm -13 "$WORK/before" "$WORK/after" |
        grep -vE '^/var/lib/(dpkg|apt|ucf)(/|$)|^/etc/(passwd|group|shadow|gshadow)-$|^/etc/ld\.so\.cache$' \
        >"$WORK/left" || true
    owned=$(in_tree find / -xdev -user sip-push-gateway 2>/dev/null | grep -v '^/proc' || true)
    if [ -s "$WORK/left" ] || [ -n "$owned" ]; then
        cat "$WORK/left"; echo "$owned"; die "purge left files behind (above)"
    fi
    say "purge: no file of the package is left"
}
mode_of() { in_tree stat -c '%a %U:%G' "$1"; }
expect_mode() {
    got=$(mode_of "$1") || die "$1 is missing"
    [ "$got" = "$2" ] || die "$1 is $got, expected $2"
    say "  $1: $got"
}

# The package's dependencies first (resolved from its Depends, from the mirror), so that
# the snapshot before it and the one after its purge differ only by what it left.
in_tree env DEBIAN_FRONTEND=noninteractive apt-get satisfy -y -q "$(dpkg-deb -f "$DEB" Depends)" \
    >"$WORK/apt.log" 2>&1 || { tail -30 "$WORK/apt.log"; die "its dependencies do not install"; }
snapshot "$WORK/before"

step "fresh install of $VERSION"
apt_install "$DEB_IN"
INSTALLED_KB=$(in_tree du -sk /usr/lib/sip-push-gateway | cut -f1)
expect_mode /var/lib/sip-push-gateway "750 sip-push-gateway:sip-push-gateway"
expect_mode /var/lib/sip-push-gateway/store.key "600 sip-push-gateway:sip-push-gateway"
expect_mode /var/lib/sip-push-gateway/tls/self-signed.key "600 sip-push-gateway:sip-push-gateway"
expect_mode /etc/sip-push-gateway/keys/default.key "640 root:sip-push-gateway"
expect_mode $CONFIG "644 root:root"
in_tree dpkg-query -W -f='${Conffiles}\n' sip-push-gateway | grep -q " $CONFIG " ||
    die "$CONFIG is not a conffile"
in_tree $PY -c '
import importlib, pathlib, sys
site = pathlib.Path(sys.prefix, "lib", "python3.11", "site-packages")
names = sorted(".".join(p.relative_to(site).with_suffix("").with_suffix("").parts)
               for p in site.rglob("*.so"))
for name in names:
    importlib.import_module(name)
from gateway import _accel
import gateway.sip.parsing, gateway.timers  # where the twins are chosen
assert _accel.accelerated(), _accel.chosen
print(f"deb-test:   {len(names)} extension modules import; gateway accelerated: {_accel.chosen}")
' || die "the installed extension modules do not import"
in_tree systemd-analyze verify /lib/systemd/system/sip-push-gateway.service ||
    die "systemd-analyze verify failed"
say "systemd-analyze verify: OK"
in_tree runuser -u sip-push-gateway -- sip-push-gateway --config $CONFIG check-config ||
    die "check-config fails on the packaged config"
isolated $PY /tmp/installed_check.py create /tmp/fresh.json || die "the installed service failed"

step "purge"
purge_and_compare

step "upgrade from $(dpkg-deb -f "$PREV_DEB" Version)"
apt_install "$PREV_IN"
in_tree sed -i -e 's/^rate_burst = .*/rate_burst = 77  # edited by deb-test/' $CONFIG
in_tree grep -q '^rate_burst = 77' $CONFIG || die "could not edit $CONFIG"
isolated $PY /tmp/installed_check.py create /tmp/upgrade.json --old || die "the previous package's service failed"
apt_install "$DEB_IN"
[ "$(in_tree dpkg-query -W -f='${Version}' sip-push-gateway)" = "$VERSION" ] || die "not upgraded"
in_tree grep -q '^rate_burst = 77  # edited by deb-test' $CONFIG || die "the upgrade lost the edited config"
say "the edited config is kept"
expect_mode /var/lib/sip-push-gateway/store.key "600 sip-push-gateway:sip-push-gateway"
in_tree runuser -u sip-push-gateway -- sip-push-gateway --config $CONFIG check-config ||
    die "check-config fails after the upgrade"
isolated $PY /tmp/installed_check.py find /tmp/upgrade.json || die "the upgraded service failed"

step "purge after the upgrade"
purge_and_compare

DEB_KB=$(du -k "$DEB" | cut -f1)
say "OK in $(( $(date +%s) - STARTED )) s: $(basename "$DEB") is $DEB_KB KiB," \
    "installed /usr/lib/sip-push-gateway $INSTALLED_KB KiB, unit exposure $EXPOSURE"
