#!/usr/bin/env bash
# Builds the image and smoke-tests the container as an operator would: it runs
# as a non-root user, becomes healthy through its own HEALTHCHECK, signs a real
# request against a stub session check (the signature is checked with python's
# hmac), fails closed when the check is down, and stops cleanly on SIGTERM.
# Needs a Docker engine. Usage: deploy/docker/smoke-test.sh [BUILDER_IMAGE]
set -euo pipefail
cd "$(dirname "$0")/../.."
builder=${1:-rust:1.95-bookworm}
docker build -f deploy/docker/Dockerfile --build-arg BUILDER_IMAGE="$builder" -t pusher-dual-auth:smoke .

work=$(mktemp -d)
stub_pid=
cleanup() {
  docker rm -f dual-auth-smoke >/dev/null 2>&1 || true
  [ -n "$stub_pid" ] && kill "$stub_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
stub_port=18981; svc_port=18980
# A stub session check: 200 {"user_id":"42"} for every POST.
python3 - "$stub_port" <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b'{"user_id":"42"}'
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
stub_pid=$!
cat > "$work/config.toml" <<TOML
[server]
listen = "127.0.0.1:$svc_port"
[session_check]
url = "http://127.0.0.1:$stub_port/check"
timeout_ms = 500
[apps.new]
app_id = "1"
key = "smoke-key"
secret_file = "/run/secrets/pusher/new"
TOML
mkdir -p "$work/secrets" && printf 'smoke-secret' > "$work/secrets/new"
chmod -R a+rX "$work"
docker run -d --name dual-auth-smoke --network host --read-only --cap-drop ALL \
  -v "$work/config.toml:/config/config.toml:ro" -v "$work/secrets:/run/secrets/pusher:ro" pusher-dual-auth:smoke
status=starting
for _ in $(seq 1 40); do
  status=$(docker inspect -f '{{.State.Health.Status}}' dual-auth-smoke)
  [ "$status" = healthy ] && break
  sleep 1
done
[ "$status" = healthy ] || { docker logs dual-auth-smoke; echo "FAIL: not healthy ($status)"; exit 1; }
got=$(curl -s -X POST "http://127.0.0.1:$svc_port/auth/new" -d socket_id=1234.1234 -d channel_name=private-foobar)
want=$(python3 -c 'import hmac,hashlib;print("{\"auth\":\"smoke-key:"+hmac.new(b"smoke-secret",b"1234.1234:private-foobar",hashlib.sha256).hexdigest()+"\"}")')
[ "$got" = "$want" ] || { echo "FAIL: got $got, want $want"; exit 1; }
kill "$stub_pid"; stub_pid=
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$svc_port/auth/new" -d socket_id=1.1 -d channel_name=private-a)
[ "$code" = 502 ] || { echo "FAIL: expected 502 with the session check down, got $code"; exit 1; }
user=$(docker inspect -f '{{.Config.User}}' pusher-dual-auth:smoke)
size=$(docker image inspect -f '{{.Size}}' pusher-dual-auth:smoke)
docker stop -t 10 dual-auth-smoke >/dev/null
exit_code=$(docker inspect -f '{{.State.ExitCode}}' dual-auth-smoke)
[ "$exit_code" = 0 ] || { echo "FAIL: exit code $exit_code after SIGTERM"; exit 1; }
echo "smoke test passed: healthy, signs correctly, fails closed (502), user $user, image $((size / 1024 / 1024)) MiB, clean SIGTERM exit"
