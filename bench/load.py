#!/usr/bin/env python3
"""Load benchmark: pusher-dual-auth vs the Node/Express reference, side by side.

nginx (Debian) answers the session check; wrk (Debian) drives each server in turn
on loopback with the same script. Prints req/s, p50/p99, non-2xx, peak RSS and
server CPU per request, and the ratios (the numbers that matter on a shared
machine). Bounded: a few seconds of warm-up and DURATION seconds per target.

    python3 bench/load.py            # DURATION=10 CONNECTIONS=64 THREADS=2 by default
"""
import json, os, re, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DURATION = int(os.environ.get("DURATION", "10"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "64"))
THREADS = int(os.environ.get("THREADS", "2"))
CLK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def need(cmd, package):
    if shutil.which(cmd) is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], check=True)


def wait_ready(url, proc, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{url}: the server exited with {proc.returncode}")
        try:
            req = urllib.request.Request(url, data=b"socket_id=1.1&channel_name=private-ready",
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
            with urllib.request.urlopen(req, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.1)
    sys.exit(f"{url} not ready")


def tree(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            pass
    return out


def cpu_seconds(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except FileNotFoundError:
            pass
    return total / CLK


def peak_rss_mib(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
            total += int(m.group(1)) if m else 0
        except FileNotFoundError:
            pass
    return total / 1024


def wrk(url, seconds):
    cmd = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s",
           os.path.join(ROOT, "bench/wrk-auth.lua"), url]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = to_ms(*re.search(r"50%\s+([\d.]+)(us|ms|s)", out).groups())
    p99 = to_ms(*re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "requests": total, "p50_ms": p50, "p99_ms": p99,
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errors.group(1) if errors else "none"}


def measure(name, cmd, env, url, cwd=None):
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(url, proc)
        wrk(url, 2)  # warm-up: pools, JIT, caches
        pids = tree(proc.pid)
        cpu0 = cpu_seconds(pids)
        result = parse(wrk(url, DURATION))
        result["cpu_us_per_req"] = (cpu_seconds(pids) - cpu0) / max(result["requests"], 1) * 1e6
        result["peak_rss_mib"] = peak_rss_mib(tree(proc.pid))
        result["name"] = name
        return result
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def main():
    need("nginx", "nginx-light")
    need("wrk", "wrk")
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "pusher-dual-auth"], cwd=ROOT, check=True)
    ref = os.path.join(ROOT, "bench/node-reference")
    if not os.path.isdir(os.path.join(ref, "node_modules")):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ref, check=True)

    work = tempfile.mkdtemp(prefix="dual-auth-bench-")
    check_port, svc_port, node_port = free_port(), free_port(), free_port()
    with open(f"{work}/nginx.conf", "w") as f:
        f.write(f"""worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {work}/body; proxy_temp_path {work}/proxy; fastcgi_temp_path {work}/fcgi;
  uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{check_port};
    location = /check {{
      default_type application/json;
      return 200 '{{"user_id":"u-1","user_info":{{"name":"Bench"}}}}';
    }}
  }}
}}
""")
    nginx = subprocess.Popen(["nginx", "-p", work, "-c", f"{work}/nginx.conf", "-g", "daemon off;"])
    try:
        with open(f"{work}/service.toml", "w") as f:
            f.write(f"""[server]
listen = "127.0.0.1:{svc_port}"
[session_check]
url = "http://127.0.0.1:{check_port}/check"
[apps.old]
app_id = "1111"
key = "old-app-key"
secret = "old-app-secret"
[apps.new]
app_id = "2222"
key = "new-app-key"
secret = "new-app-secret"
[log]
format = "json"
level = "info"
""")
        time.sleep(0.3)
        service = [os.path.join(ROOT, "target/release/pusher-dual-auth"), "serve", "--config", f"{work}/service.toml"]
        results = [
            measure("pusher-dual-auth", service, {"RUST_LOG": ""}, f"http://127.0.0.1:{svc_port}/auth/new"),
            measure("node-express-reference", ["node", "server.js"],
                    {"PORT": str(node_port), "CHECK_URL": f"http://127.0.0.1:{check_port}/check"},
                    f"http://127.0.0.1:{node_port}/auth/new", cwd=ref),
            # The same service with one worker thread: on this 2-core machine wrk and
            # nginx need the other core, and one worker batches more work per wakeup.
            measure("pusher-dual-auth (1 worker)", service, {"RUST_LOG": "", "DUAL_AUTH__SERVER__WORKERS": "1"},
                    f"http://127.0.0.1:{svc_port}/auth/new"),
        ]
    finally:
        nginx.terminate()
        nginx.wait()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nwrk -t{THREADS} -c{CONNECTIONS} -d{DURATION}s, nginx as the session check, {os.cpu_count()} CPUs")
    print(f"{'server':<30}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'peak RSS MiB':>14}{'CPU µs/req':>12}")
    for r in results:
        print(f"{r['name']:<30}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['non2xx']:>9}"
              f"{r['peak_rss_mib']:>14.1f}{r['cpu_us_per_req']:>12.1f}")
    ref_r = results[1]
    for us in (results[0], results[2]):
        print(f"\nratios ({us['name']} / reference): throughput {us['rps'] / ref_r['rps']:.1f}x, "
              f"p99 {us['p99_ms'] / ref_r['p99_ms']:.2f}, peak RSS {us['peak_rss_mib'] / ref_r['peak_rss_mib']:.2f}, "
              f"CPU/request {us['cpu_us_per_req'] / ref_r['cpu_us_per_req']:.2f}")
    print("json: " + json.dumps(results))


if __name__ == "__main__":
    main()
