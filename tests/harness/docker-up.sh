#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine, installing Debian's
# docker.io, docker-compose and debootstrap when they are missing and starting dockerd in the
# background when no engine runs. Idempotent: does nothing when docker works.
set -euo pipefail

log() { printf '[docker-up] %s\n' "$*" >&2; }

need_pkgs=()
[ -x /usr/sbin/dockerd ] || need_pkgs+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
# The container scenario runs the README's compose example.
command -v docker-compose >/dev/null 2>&1 || need_pkgs+=(docker-compose)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing ${need_pkgs[*]} from Debian's archive"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if docker info >/dev/null 2>&1; then
  log "engine already running"
  exit 0
fi

log "starting dockerd (log: /var/log/dockerd.log)"
nohup /usr/sbin/dockerd >>/var/log/dockerd.log 2>&1 </dev/null &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    log "engine ready"
    exit 0
  fi
  sleep 1
done
log "dockerd did not answer within 60 s; last lines of its log:"
tail -n 20 /var/log/dockerd.log >&2
exit 1
