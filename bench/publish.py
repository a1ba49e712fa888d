#!/usr/bin/env python3
"""Publish fan-out with recovery off and on, beside its floor, in one run.

A publish through the service (`POST /apps/{id}/events`, signed as the server SDKs
sign it) is verified, forwarded to both apps' REST APIs and, with `[recovery]`,
kept in the recovery buffer (memory mode). nginx stands in for both apps' REST
APIs (it answers 200 at once), and is measured answering the same publish
directly: one exchange, what a publish costs at best. wrk replays one signed
request (valid for 600 s) on 64 connections. Printed: publishes/s, p50/p99, the
service's CPU per publish, peak RSS, and recovery's cost over the same service
without it (the issue's goal: at most 10 % more per event).

    python3 bench/publish.py      # ROUNDS=3 DURATION=5; SERVICE_BIN= another build
"""
import hashlib, hmac, json, os, statistics, subprocess, sys, time, urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402  (the same wrk, CPU and RSS measurements as the auth bench)

ROOT = load.ROOT
KEY, SECRET = "publisher-key", "publisher-secret"
BODY = json.dumps({"name": "tick", "channel": "private-bench", "data": json.dumps({"n": 1, "pad": "x" * 100})})


def signed_path(app_id):
    path = f"/apps/{app_id}/events"
    params = {"auth_key": KEY, "auth_timestamp": str(int(time.time())), "auth_version": "1.0",
              "body_md5": hashlib.md5(BODY.encode()).hexdigest()}
    query = "&".join(f"{k}={params[k]}" for k in sorted(params))
    sig = hmac.new(SECRET.encode(), f"POST\n{path}\n{query}".encode(), hashlib.sha256).hexdigest()
    return f"{path}?{query}&auth_signature={sig}"


def nginx_conf(work, port):
    return load.nginx_http(work, f"""    listen 127.0.0.1:{port};
    location / {{ default_type application/json; return 200 '{{}}'; }}""")


def service_conf(port, rest_port, recovery):
    apps = "".join(f'[apps.{n}]\napp_id = "{i}"\nkey = "{n}-key"\nsecret = "{n}-secret"\n'
                   f'rest_url = "http://127.0.0.1:{rest_port}"\n' for n, i in (("old", "1111"), ("new", "2222")))
    return f"""[server]
listen = "127.0.0.1:{port}"
[session_check]
url = "http://127.0.0.1:9/check"
{apps}[publish]
app_id = "dual"
key = "{KEY}"
secret = "{SECRET}"
targets = ["old", "new"]
{'[recovery]' if recovery else ''}
[log]
format = "json"
level = "warn"
"""


def wrk(url, seconds):
    cmd = ["wrk", f"-t{load.THREADS}", f"-c{load.CONNECTIONS}", f"-d{seconds}s", "--latency", "-s",
           os.path.join(ROOT, "bench/wrk-post.lua"), url]
    return subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "BODY": BODY}).stdout


def measure(name, pids, url):
    wrk(url, 2)
    cpu0 = load.cpu_seconds(pids)
    r = load.parse(wrk(url, load.DURATION))
    r["cpu_us_per_req"] = (load.cpu_seconds(pids) - cpu0) / max(r["requests"], 1) * 1e6
    r["peak_rss_mib"] = load.peak_rss_mib(pids)
    r["name"] = name
    return r


def main():
    load.need("wrk", "wrk")
    load.need("nginx", "nginx-light")
    binary = os.environ.get("SERVICE_BIN") or os.path.join(ROOT, "target/release/pusher-dual-auth")
    if not os.environ.get("SERVICE_BIN"):
        subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "pusher-dual-auth"], cwd=ROOT, check=True)
    work = load.tempfile.mkdtemp(prefix="publish-bench-")
    rest = load.free_port()
    with open(f"{work}/nginx.conf", "w") as f:
        f.write(nginx_conf(work, rest))
    nginx = subprocess.Popen(["nginx", "-p", work, "-c", f"{work}/nginx.conf", "-g", "daemon off;"],
                             start_new_session=True)
    time.sleep(0.3)
    rounds = {}
    try:
        for _ in range(load.ROUNDS):
            rows = [measure("nginx, one exchange (the floor)", load.tree(nginx.pid), f"http://127.0.0.1:{rest}{signed_path('dual')}")]
            for recovery in (False, True):
                port = load.free_port()
                conf = f"{work}/service-{int(recovery)}.toml"
                with open(conf, "w") as f:
                    f.write(service_conf(port, rest, recovery))
                proc = subprocess.Popen([binary, "serve", "--config", conf], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
                try:
                    for _ in range(100):
                        try:
                            load.urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                            break
                        except Exception:
                            time.sleep(0.1)
                    name = f"service, recovery {'on' if recovery else 'off'}"
                    rows.append(measure(name, load.tree(proc.pid), f"http://127.0.0.1:{port}{signed_path('dual')}"))
                finally:
                    os.killpg(proc.pid, load.signal.SIGTERM)
                    proc.wait(timeout=30)
            for r in rows:
                rounds.setdefault(r["name"], []).append(r)
    finally:
        os.killpg(nginx.pid, load.signal.SIGTERM)
        nginx.wait()
    print(f"wrk -t{load.THREADS} -c{load.CONNECTIONS} -d{load.DURATION}s, one signed publish replayed; "
          f"medians of {load.ROUNDS} round(s); the service forwards each to both apps (nginx)")
    print(f"{'target':<34}{'pub/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'RSS MiB':>9}{'CPU µs/pub':>12}")
    med = {}
    for name, rs in rounds.items():
        m = {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms", "non2xx", "peak_rss_mib", "cpu_us_per_req")}
        med[name] = m
        print(f"{name:<34}{m['rps']:>10.0f}{m['p50_ms']:>9.2f}{m['p99_ms']:>9.2f}{m['non2xx']:>9.0f}"
              f"{m['peak_rss_mib']:>9.1f}{m['cpu_us_per_req']:>12.1f}")
    off, on = med["service, recovery off"], med["service, recovery on"]
    per_round = [b["cpu_us_per_req"] / a["cpu_us_per_req"] - 1 for a, b in
                 zip(rounds["service, recovery off"], rounds["service, recovery on"])]
    print(f"\nrecovery's cost per publish: {on['cpu_us_per_req'] - off['cpu_us_per_req']:+.1f} µs "
          f"({(on['cpu_us_per_req'] / off['cpu_us_per_req'] - 1) * 100:+.1f} % of the CPU per publish; "
          f"per round {', '.join(f'{x * 100:+.1f} %' for x in per_round)}; goal: at most +10 %)")
    print("json: " + json.dumps(rounds))


if __name__ == "__main__":
    main()
