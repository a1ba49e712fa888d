#!/usr/bin/env bash
# Prints the first Debian mirror (…/debian) an apt configuration actually uses:
# the `URIs:` fields of deb822 .sources files and the `deb` lines of .list
# files. Commented lines (e.g. a `# http://snapshot.debian.org/…` note) never
# count. Prints nothing when there is none; debootstrap then uses its default.
#   deploy/docker/debian-mirror.sh [FILE…]   (default: this machine's apt sources)
set -euo pipefail
[ $# -gt 0 ] || set -- /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list
for f in "$@"; do
  [ -r "$f" ] || continue
  sed -nE \
    -e 's/^[[:space:]]*URIs:[[:space:]]*(.*)$/\1/p' \
    -e 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/p' "$f" |
    tr ' ' '\n'
done | grep -m1 -E '^https?://[^[:space:]]+/debian/?$' || true
