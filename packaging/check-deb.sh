#!/usr/bin/env bash
# Install the Debian package built by packaging/build.sh on this machine, run the installed
# command, and remove (purge) it again, leaving the machine as it was. Needs root; refuses to
# run where mailhook is already installed or configured.
#
#   packaging/check-deb.sh dist/mailhook-trueconf_VERSION_ARCH.deb
set -euo pipefail
deb=$1
version=$(dpkg-deb --field "$deb" Version)

fail() { echo "check-deb: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (it installs the package)"
if dpkg-query --show --showformat='${Status}' mailhook-trueconf 2>/dev/null | grep -q installed \
        || [ -e /etc/mailhook ] || [ -e /opt/mailhook ]; then
    fail "mailhook is already installed or configured here; not touching it"
fi
trap 'dpkg --purge mailhook-trueconf >/dev/null 2>&1 || true' EXIT

dpkg -i "$deb" >/dev/null
# The installed command runs with the system's python3 and says the package's version.
[ "$(/usr/bin/mailhook version)" = "mailhook $version" ] || fail "mailhook version is not $version"
[ "$(mailhook --version)" = "mailhook $version" ] || fail "mailhook --version is not $version"
# The unit runs the installed command.
grep -qx 'ExecStart=/usr/bin/mailhook serve --config /etc/mailhook/mailhook.toml' \
    /lib/systemd/system/mailhook.service || fail "the unit does not run /usr/bin/mailhook"
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify /lib/systemd/system/mailhook.service \
        || fail "systemd-analyze verify finds fault with the installed unit"
fi
[ "$(dpkg-query --control-show mailhook-trueconf conffiles)" = /etc/mailhook/mailhook.toml ] \
    || fail "/etc/mailhook/mailhook.toml is not a conffile"
# As installed, the config names what the admin must set ...
if out=$(mailhook check-config --config /etc/mailhook/mailhook.toml 2>&1); then
    fail "check-config passed on the unconfigured config"
fi
echo "$out" | grep -q "missing setting trueconf.server_url" || fail "unclear config error: $out"
# ... and passes once it is set, the way the unit hands over the secret.
secret=$(mktemp)
echo example-secret >"$secret"
MAILHOOK_TRUECONF__SERVER_URL=https://video.example.com MAILHOOK_TRUECONF__CLIENT_ID=mailhook \
    MAILHOOK_TRUECONF__CLIENT_SECRET_FILE="$secret" MAILHOOK_POLICY__LOCAL_DOMAINS=example.com \
    mailhook check-config --config /etc/mailhook/mailhook.toml >/dev/null \
    || fail "check-config failed with the required settings given"
rm -f "$secret"

dpkg --purge mailhook-trueconf >/dev/null
trap - EXIT
for left in /opt/mailhook /usr/bin/mailhook /lib/systemd/system/mailhook.service /etc/mailhook; do
    [ ! -e "$left" ] || fail "$left is left after the purge"
done
echo "check-deb: $deb installs, runs mailhook $version, passes check-config once configured, and purges cleanly"
