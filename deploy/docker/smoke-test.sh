#!/usr/bin/env bash
# Builds the image and smoke-tests the container: it starts, reports healthy
# through its own HEALTHCHECK, and signs a request against a stub session check.
# Needs a Docker engine. Usage: deploy/docker/smoke-test.sh [BUILDER_IMAGE]
set -euo pipefail
cd "$(dirname "$0")/../.."
builder=${1:-rust:1.95-bookworm}
docker build -f deploy/docker/Dockerfile --build-arg BUILDER_IMAGE="$builder" -t pusher-dual-auth:smoke .

work=$(mktemp -d)
trap 'docker rm -f dual-auth-smoke >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
cat > "$work/config.toml" <<TOML
[server]
listen = "0.0.0.0:8080"
[session_check]
# The container's own demo-like stub is not shipped; the healthcheck and a 502 prove the wiring.
url = "http://127.0.0.1:9/check"
timeout_ms = 500
[apps.new]
app_id = "1"
key = "smoke-key"
secret_file = "/run/secrets/pusher/new"
TOML
mkdir -p "$work/secrets" && echo "smoke-secret" > "$work/secrets/new"
chmod -R a+r "$work"
docker run -d --name dual-auth-smoke -p 127.0.0.1:18080:8080 \
  -v "$work/config.toml:/config/config.toml:ro" -v "$work/secrets:/run/secrets/pusher:ro" pusher-dual-auth:smoke
for _ in $(seq 1 30); do
  status=$(docker inspect -f '{{.State.Health.Status}}' dual-auth-smoke)
  [ "$status" = healthy ] && break
  sleep 1
done
[ "$status" = healthy ] || { docker logs dual-auth-smoke; echo "not healthy: $status"; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:18080/auth/new -d socket_id=1.1 -d channel_name=private-a)
[ "$code" = 502 ] || { echo "expected 502 from an unreachable session check, got $code"; exit 1; }
docker exec dual-auth-smoke /pusher-dual-auth sign --app new --socket-id 1234.1234 --channel private-foobar
echo "smoke test passed: healthy, fails closed, signs offline; runs as $(docker inspect -f '{{.Config.User}}' pusher-dual-auth:smoke)"
