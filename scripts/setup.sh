#!/usr/bin/env bash
# Idempotent setup on Debian 12 (as root): system packages, then a venv in .venv
# with ctmanager (editable) and its test extra. Safe to run again and again.
# --system-only: the system packages alone (a machine that runs ctmanager from its
# Debian package: vagrant/provision).
set -euo pipefail
cd "$(dirname "$0")/.."
system_only=0
[ "${1:-}" = --system-only ] && system_only=1

# The lab rack needs LXC, sshd, daemontools (svscan in every CT), iproute2, and
# Debian's python3 (the CTs' HTTP service runs on the host /usr bound into them).
# BIND 9 (named, tsig-keygen) and dig serve and check the DNS routing records.
# collectd (every CT runs it) and graphite-carbon (the per-rack metrics store).
# Postfix (its postmap queries ctmailmap the way the mail routers do), nginx (the edge),
# Dante (the outbound SOCKS proxy). libpq5: collectd's postgresql plugin (a shipped
# plugin) needs it, and collectd-core only suggests it (found on a fresh Vagrant machine).
# PostgreSQL 15: the DC-wide store (the tests and the DC lab run private clusters of it).
# rsync: a tenant move copies each CT's /data between storage nodes with it, over SSH.
# borgbackup: the storage nodes' continuous backups (append-only repositories on a backup node).
# bird2: the border routers' BGP (and BFD) to the clouds, and the lab's "cloud" side;
# strongswan-swanctl + charon-systemd: IPsec peerings' swanctl.conf is loaded by the real charon.
# systemd: `systemd-analyze verify` checks the units in agents/ and templates/ (nothing is booted).
APT_PACKAGES=(python3 python3-venv python3-pip lxc openssh-server openssh-client daemontools iproute2 procps
              bind9 bind9-dnsutils collectd-core graphite-carbon postfix nginx-light openssl
              dante-server libpq5 postgresql-15 rsync borgbackup bird2 strongswan-swanctl charon-systemd
              systemd)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    # Postfix asks what kind of mail server this is: none; ctmanager renders its config
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ "$system_only" = 1 ] && exit 0
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    python3 -m venv .venv
fi
stamp=.venv/.ctmanager-installed
want=$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing ctmanager and test dependencies into .venv" >&2
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test]'
    echo "$want" > "$stamp"
fi
