#!/bin/sh
# A local stand-in for python:3.11-slim-bookworm, built from Debian packages only, for
# `make image-test` where no image registry is reachable: debootstrap's minbase of
# bookworm plus python3 (3.11, what deploy/requirements*.lock are resolved for),
# python3-venv (ensurepip: the Dockerfile's builder makes its pip from it) and
# python-is-python3 (the Dockerfile says `python`), trimmed of apt's caches, docs and
# locales, then `podman import`ed under $TAG.
#
# The root file system is cached as a tarball under $CACHE, keyed by the package list
# and the ISO week: a rerun within the week imports it in seconds instead of spending a
# minute or more in debootstrap, and a new week picks up Debian's security updates.
# The host's own extra CAs (/usr/local/share/ca-certificates) are added at import, with
# PIP_CERT pointing pip at the system bundle: where a proxy intercepts TLS (as on the
# machine this was written on), the image build reaches PyPI through it as the host does.
#
#   deploy/image-test/base.sh TAG          (root; PODMAN: the podman command line to use)
set -eu

TAG=${1:?usage: base.sh TAG}
PODMAN=${PODMAN:-podman}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
CACHE=${GPULEDGER_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpuledger/image-test}
WEEK_KEY=$(printf '%s %s %s' "$SUITE" "$PACKAGES" "$(date -u +%G-W%V)" | sha256sum | cut -c1-16)
TARBALL="$CACHE/base-$SUITE-$WEEK_KEY.tar"
EXTRA_CAS=$(find /usr/local/share/ca-certificates -name '*.crt' 2>/dev/null | sort)
# shellcheck disable=SC2086 # one file name per word
KEY=$( { echo "$WEEK_KEY"; [ -z "$EXTRA_CAS" ] || cat $EXTRA_CAS; } | sha256sum | cut -c1-16)

if $PODMAN image exists "$TAG" 2>/dev/null \
    && [ "$($PODMAN image inspect --format '{{index .Labels "gpuledger.base.key"}}' "$TAG")" = "$KEY" ]; then
  echo "base $TAG is current ($KEY)"
  exit 0
fi

if [ ! -s "$TARBALL" ]; then
  mkdir -p "$CACHE"
  root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT INT TERM
  echo "debootstrap $SUITE minbase + $PACKAGES into $root"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -n 20 "$CACHE/debootstrap.log"; exit 1; }
  # What python:3.11-slim also leaves out: package caches and lists, docs, man pages,
  # locales (the agent runs in C.UTF-8).
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/info \
    "$root"/usr/share/locale "$root"/var/log/* "$root"/var/cache/debconf/*-old
  tar -C "$root" --numeric-owner -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
  # Earlier weeks' tarballs are stale by design.
  find "$CACHE" -maxdepth 1 -name "base-$SUITE-*.tar" ! -name "$(basename "$TARBALL")" -delete
fi

SOURCE=$TARBALL
if [ -n "$EXTRA_CAS" ]; then
  work=$(mktemp -d "$CACHE/import.XXXXXX")
  trap 'rm -rf "$work"' EXIT INT TERM
  mkdir "$work/root"
  tar -C "$work/root" --numeric-owner -xf "$TARBALL"
  # shellcheck disable=SC2086
  cp $EXTRA_CAS "$work/root/usr/local/share/ca-certificates/"
  chroot "$work/root" update-ca-certificates >/dev/null 2>&1
  tar -C "$work/root" --numeric-owner -cf "$work/base.tar" .
  SOURCE=$work/base.tar
fi

$PODMAN import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["python3"]' \
  --change "LABEL gpuledger.base.key=$KEY" \
  "$SOURCE" "$TAG" >/dev/null
echo "imported $TAG from $TARBALL"
