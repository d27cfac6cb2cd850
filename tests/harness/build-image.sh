#!/usr/bin/env bash
# Build a systemd-capable Debian test image from Debian's packages when it is
# missing (no image registry is reachable). Usage: build-image.sh SUITE
#   SUITE: bullseye | bookworm | trixie
# The image is a "bare host": systemd, python3 and sudo (for Ansible), python3-apt (for
# the apt module, also in check mode), iproute2 (ss), procps and python3-flask
# for the test app. No uWSGI and no Supervisor: the role installs those.
# Rebuild with FORCE=1.
set -euo pipefail

suite="${1:?usage: build-image.sh SUITE}"
image="uwsgi-role-test:${suite}"
log() { printf '[build-image %s] %s\n' "$suite" "$*" >&2; }

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
  log "$image present"
  exit 0
fi

root="$(mktemp -d /var/tmp/uwsgi-role-rootfs.XXXXXX)"
trap 'rm -rf "$root"' EXIT
log "debootstrap $suite into $root (about a minute)"
debootstrap --variant=minbase \
  --include=python3,python3-apt,sudo,systemd,systemd-sysv,iproute2,procps,python3-flask,ca-certificates \
  "$suite" "$root" >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# Test images carry no sysctl.d files but the role's (a key outside the
# container's network namespace written at boot would change the machine).
rm -f "$root"/etc/sysctl.d/*.conf "$root"/usr/lib/sysctl.d/*.conf
# Containers have no consoles to start gettys on.
rm -f "$root"/etc/systemd/system/getty.target.wants/*
printf 'uwsgi-test\n' >"$root/etc/hostname"
log "importing as $image"
tar -C "$root" -c . | docker import -c 'CMD ["/sbin/init"]' - "$image" >/dev/null
log "$image built"
