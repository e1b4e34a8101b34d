#!/usr/bin/env bash
# Build mailhook's release artifacts into dist/:
#   mailhook_trueconf-VERSION.tar.gz            the source distribution
#   mailhook_trueconf-VERSION-py3-none-any.whl  the wheel (built from the sdist)
#   mailhook-trueconf_VERSION_ARCH.deb          the Debian package
#
# The Debian package holds a virtual environment in /opt/mailhook made with the system's
# /usr/bin/python3 and the wheel installed into it (its dependencies come from the package
# index at build time), /usr/bin/mailhook, the systemd unit and /etc/mailhook/mailhook.toml as
# a conffile. The environment's python is a symlink to /usr/bin/python3 and its packages are
# in lib/pythonX.Y (some compiled for this architecture), so the package depends on python3 of
# exactly the build machine's X.Y and architecture: build it on the release you install on.
#
# Needs python3 with venv (python3-venv) and dpkg-deb; network access to the package index.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p dist
rm -f dist/mailhook_trueconf-* dist/mailhook-trueconf_*.deb  # one release's artifacts at a time

# 1. sdist and wheel, in an isolated build (the sdist is built first, the wheel from it).
python3 -m venv "$work/build-env"
"$work/build-env/bin/pip" install --quiet --disable-pip-version-check build
"$work/build-env/bin/python" -m build --outdir dist . >"$work/build.log" 2>&1 || {
    cat "$work/build.log"; exit 1; }
wheel="dist/mailhook_trueconf-$version-py3-none-any.whl"
test -f "$wheel"

# 2. The Debian package, from a staging root.
stage="$work/root"
venv="$stage/opt/mailhook"
/usr/bin/python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-compile "$wheel"
# Nothing installs into it after the build: no pip (nor the setuptools it brought) in it.
"$venv/bin/pip" uninstall --quiet --yes setuptools pip
# The environment was made in the staging root: its scripts must name /opt/mailhook.
grep -rlI --null "$stage" "$venv/bin" "$venv/pyvenv.cfg" | xargs -0 -r sed -i "s|$stage||g"
# Bytecode now, with the paths it will have (the service cannot write it at run time).
"$venv/bin/python" -m compileall -q -j 0 -s "$stage" -p / "$venv/lib" >/dev/null
mkdir -p "$stage/usr/bin" "$stage/lib/systemd/system"
ln -s /opt/mailhook/bin/mailhook "$stage/usr/bin/mailhook"
"$venv/bin/python" -m mailhook install-files --prefix "$stage" --command /usr/bin/mailhook >/dev/null
mv "$stage/etc/systemd/system/mailhook.service" "$stage/lib/systemd/system/mailhook.service"
rmdir "$stage/etc/systemd/system" "$stage/etc/systemd"

python=$(/usr/bin/python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
next_python=$(/usr/bin/python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1] + 1}")')
arch=$(dpkg --print-architecture)
mkdir -p "$stage/DEBIAN"
cat >"$stage/DEBIAN/control" <<CONTROL
Package: mailhook-trueconf
Version: $version
Architecture: $arch
Maintainer: ${DEB_MAINTAINER:-mailhook maintainers <mailhook@localhost>}
Depends: python3 (>= $python), python3 (<< $next_python)
Section: mail
Priority: optional
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Description: SMTP content filter adding TrueConf conferences to calendar invitations
 mailhook sits in the outgoing mail flow (a Postfix content filter, or a smarthost for any
 MTA). When an organizer's invitation asks for a TrueConf video conference, it creates the
 conference on TrueConf Server, writes the join link into the invitation and keeps the
 conference in step with updates and cancellations.
 .
 The service is installed but not started: configure /etc/mailhook/mailhook.toml and
 /etc/mailhook/trueconf-secret first (see /usr/share/doc/mailhook-trueconf/docs/systemd.md).
CONTROL
echo /etc/mailhook/mailhook.toml >"$stage/DEBIAN/conffiles"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm \
    "$stage/DEBIAN/"
find "$stage" -path "$stage/DEBIAN" -prune -o -type d -exec chmod 0755 {} +
deb="dist/mailhook-trueconf_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
ls -l dist/
