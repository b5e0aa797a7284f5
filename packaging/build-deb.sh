#!/bin/sh
# Builds the Debian package of the gateway: `make deb` runs this.
#
#   packaging/build-deb.sh [--version VERSION] [--out DIR]
#
# Installs the build dependencies (apt, as root or with sudo) when missing, copies the
# tree (tracked and untracked-but-not-ignored files) into build/deb/, puts
# packaging/debian/ there as debian/, adds a changelog entry for VERSION and runs
# dpkg-buildpackage. The .deb lands in DIR (default dist/).
#
# VERSION defaults to <gateway.__version__>+git<commits>.<short hash>, so a package of a
# later commit always upgrades one of an earlier commit; ".dirty" marks uncommitted changes.
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=$ROOT/dist
VERSION=
while [ $# -gt 0 ]; do
    case "$1" in
        --version) VERSION=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        *) echo "usage: $0 [--version VERSION] [--out DIR]" >&2; exit 2 ;;
    esac
done

BUILD_DEPS="debhelper dh-virtualenv dpkg-dev python3 python3-dev python3-venv libssl-dev gcc"
missing=$(for p in $BUILD_DEPS; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done | xargs)
if [ -n "$missing" ]; then
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    echo "build-deb: installing build dependencies: $missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

if [ -z "$VERSION" ]; then
    upstream=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' gateway/__init__.py)
    VERSION="$upstream+git$(git rev-list --count HEAD).$(git rev-parse --short=10 HEAD)"
    [ -z "$(git status --porcelain --untracked-files=no)" ] || VERSION="$VERSION.dirty"
fi

ARCH=$(dpkg --print-architecture)
case "$VERSION" in
    *.dirty) ;;
    *) if [ -s "$OUT/sip-push-gateway_${VERSION}_$ARCH.deb" ]; then
           # A committed tree builds the same package again: keep the one we have.
           echo "build-deb: $OUT/sip-push-gateway_${VERSION}_$ARCH.deb (up to date)"
           exit 0
       fi ;;
esac

SRC=$ROOT/build/deb/sip-push-gateway-$VERSION
rm -rf "$ROOT/build/deb"
mkdir -p "$SRC" "$OUT"
# (--ignore-failed-read: files deleted but not yet committed are simply left out)
git ls-files -z --cached --others --exclude-standard |
    tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$SRC"
cp -r packaging/debian "$SRC/debian"

# The entry on top of the changelog names the version being built.
{
    echo "sip-push-gateway ($VERSION) bookworm; urgency=medium"
    echo
    echo "  * Built from $(git rev-parse --short=10 HEAD)."
    echo
    echo " -- $(sed -n 's/^Maintainer: //p' packaging/debian/control)  $(date -R)"
    echo
    cat packaging/debian/changelog
} >"$SRC/debian/changelog"

cd "$SRC"
dpkg-buildpackage -us -uc -b
cd "$ROOT"
deb=build/deb/sip-push-gateway_${VERSION}_$ARCH.deb
cp "$deb" "$OUT/"
echo "build-deb: $OUT/$(basename "$deb") ($(du -k "$deb" | cut -f1) KiB)"
