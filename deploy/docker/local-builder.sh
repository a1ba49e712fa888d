#!/usr/bin/env bash
# Makes a local builder image (Debian bookworm + gcc + this machine's Rust
# toolchain and CA roots) for Docker engines that cannot pull from a registry:
#   deploy/docker/local-builder.sh && deploy/docker/smoke-test.sh local/rust-builder:1.95
set -euo pipefail
image=${1:-local/rust-builder:1.95}
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
mirror=$("$(dirname "$0")/debian-mirror.sh")
debootstrap --variant=minbase --include=gcc,libc6-dev,ca-certificates bookworm "$rootfs" ${mirror:+"$mirror"}
toolchain=$(rustc --print sysroot)
mkdir -p "$rootfs/opt/rust"
(cd "$toolchain" && tar --exclude=./share/doc --exclude=./lib/rustlib/src -cf - .) | tar -C "$rootfs/opt/rust" -xf -
ln -sf /opt/rust/bin/cargo "$rootfs/usr/local/bin/cargo"
ln -sf /opt/rust/bin/rustc "$rootfs/usr/local/bin/rustc"
# The host's CA roots: a TLS-inspecting proxy's CA must be trusted inside the build too.
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
tar -C "$rootfs" -c . | docker import - "$image"
echo "built $image"
