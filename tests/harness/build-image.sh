#!/usr/bin/env bash
# Build a Debian test image from Debian's packages when it is missing (no image
# registry is reachable). Usage: build-image.sh SUITE [KIND]
#   SUITE: bullseye | bookworm | trixie
#   KIND:  host (default): uwsgi-role-test:SUITE, a systemd-capable "bare host":
#          systemd, python3 and sudo (for Ansible), iproute2 (ss), procps and
#          python3-flask for the test app.
#          container: uwsgi-role-test:SUITE-container, the same without systemd
#          and sudo, as a container image's base is.
# No uWSGI, no Supervisor and no python3-apt (a minimal Debian lacks it; the
# role's check mode must cope): the role installs them. An image built by
# another version of this script is rebuilt; FORCE=1 rebuilds anyway.
set -euo pipefail

suite="${1:?usage: build-image.sh SUITE [host|container]}"
kind="${2:-host}"
case "$kind" in
  host)
    image="uwsgi-role-test:${suite}"
    include=python3,sudo,systemd,systemd-sysv,iproute2,procps,python3-flask,ca-certificates
    cmd='["/sbin/init"]' ;;
  container)
    image="uwsgi-role-test:${suite}-container"
    include=python3,iproute2,procps,python3-flask,ca-certificates
    cmd='["sleep", "infinity"]' ;;
  *) echo "build-image.sh: KIND is host or container, not $kind" >&2; exit 2 ;;
esac
log() { printf '[build-image %s] %s\n' "$suite $kind" "$*" >&2; }

recipe="$(sha256sum "$0" | cut -c1-16)"
if [ "${FORCE:-0}" != 1 ] && [ "$(docker image inspect -f '{{ index .Config.Labels "uwsgi.recipe" }}' "$image" 2>/dev/null)" = "$recipe" ]; then
  log "$image present"
  exit 0
fi

root="$(mktemp -d /var/tmp/uwsgi-role-rootfs.XXXXXX)"
trap 'rm -rf "$root"' EXIT
log "debootstrap $suite into $root (about a minute)"
debootstrap --variant=minbase \
  --include="$include" \
  "$suite" "$root" >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# Test images carry no sysctl.d files but the role's (a key outside the
# container's network namespace written at boot would change the machine).
rm -f "$root"/etc/sysctl.d/*.conf "$root"/usr/lib/sysctl.d/*.conf
# Containers have no consoles to start gettys on.
rm -f "$root"/etc/systemd/system/getty.target.wants/*
printf 'uwsgi-test\n' >"$root/etc/hostname"
log "importing as $image"
tar -C "$root" -c . | docker import -c "CMD $cmd" -c "LABEL uwsgi.recipe=$recipe" - "$image" >/dev/null
log "$image built"
