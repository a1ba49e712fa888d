"""A real non-JS Pusher client (asyncpusher, from PyPI: protocol 7, private and
presence channels) whose channel authorization goes through pusher-dual-auth
in one of three request shapes, written byte for byte:

  python  what a Python app does: aiohttp posting a form (asyncpusher leaves
          the HTTP call to the app)
  swift   pusher-websocket-swift 10.x `.endpoint`: a form body with no
          Content-Type, channel name not URL-encoded, cookies from the
          URLSession cookie store, a CFNetwork User-Agent; 200 or 201 accepted
  java    pusher-websocket-java 2.4 HttpChannelAuthorizer: Content-Type form, a
          literal `charset: UTF-8` header, headers from setHeaders() (here a
          bearer token), a Dalvik User-Agent, no redirects; 200 or 201 accepted

Usage: client.py '<json>' with ws_port, key, auth_url, shape, credential
({"cookie": "..."} or {"bearer": "..."}), channels, and optionally
wait_event {"channel", "event"}. Prints one JSON object per line:
{"type": "auth"|"subscribed"|"ready"|"event"|"error", ...}.
"""

import asyncio
import json
import logging
import sys
import urllib.parse

import aiohttp
from asyncpusher import Pusher

cfg = json.loads(sys.argv[1])
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


def out(**kv):
    print(json.dumps(kv), flush=True)


def raw_request(shape, path, host, body, credential):
    """The exact bytes the native client puts on the wire."""
    if shape == "swift":
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: {host}",
            "Accept: */*",
            "Accept-Language: en-GB,en;q=0.9",
            "Accept-Encoding: gzip, deflate, br",
            "Connection: keep-alive",
            "User-Agent: ChatApp/3.2.1 CFNetwork/1410.0.3 Darwin/22.6.0",
        ]
        if "cookie" in credential:
            lines.append(f"Cookie: {credential['cookie']}")
    elif shape == "java":
        lines = [
            f"POST {path} HTTP/1.1",
            "Content-Type: application/x-www-form-urlencoded",
            "charset: UTF-8",
        ]
        if "bearer" in credential:
            lines.append(f"Authorization: Bearer {credential['bearer']}")
        lines += [
            "User-Agent: Dalvik/2.1.0 (Linux; U; Android 13; Pixel 7 Build/TQ3A.230901.001)",
            f"Host: {host}",
            "Connection: Keep-Alive",
            "Accept-Encoding: gzip",
        ]
    else:
        raise ValueError(shape)
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def post_raw(shape, url, body, credential):
    u = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    writer.write(raw_request(shape, u.path, u.netloc, body, credential))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    text = (await reader.readexactly(length)).decode() if length else ""
    writer.close()
    return status, text


async def authorize(data):
    socket_id, channel = data["socket_id"], data["channel_name"]
    credential = cfg["credential"]
    if cfg["shape"] == "python":
        headers = {}
        if "bearer" in credential:
            headers["Authorization"] = f"Bearer {credential['bearer']}"
        if "cookie" in credential:
            headers["Cookie"] = credential["cookie"]
        async with aiohttp.ClientSession() as http:
            form = {"socket_id": socket_id, "channel_name": channel}
            async with http.post(cfg["auth_url"], data=form, headers=headers, allow_redirects=False) as r:
                status, text = r.status, await r.text()
        ok = status == 200
    elif cfg["shape"] == "swift":
        # Interpolated as-is, the way the Swift client builds it.
        body = f"socket_id={socket_id}&channel_name={channel}".encode()
        status, text = await post_raw("swift", cfg["auth_url"], body, credential)
        ok = status in (200, 201)
    else:
        q = urllib.parse.quote_plus
        body = f"socket_id={q(socket_id)}&channel_name={q(channel)}".encode()
        status, text = await post_raw("java", cfg["auth_url"], body, credential)
        ok = status in (200, 201)
    out(type="auth", channel=channel, status=status, body=text)
    if not ok:
        raise RuntimeError(f"authorization refused: {status}")
    return json.loads(text)


async def main():
    pusher = Pusher(
        cfg["key"], custom_host="127.0.0.1", custom_port=cfg["ws_port"], secure=False,
        channel_authenticator=authorize,
    )
    await asyncio.wait_for(pusher.connect(), 15)
    subscribed = {}
    for name in cfg["channels"]:
        done = asyncio.get_running_loop().create_future()

        async def on_success(data, done=done):
            if not done.done():
                done.set_result(data)

        try:
            channel = await pusher.subscribe(name)
        except RuntimeError as e:
            out(type="error", channel=name, error=str(e))
            continue
        channel.bind("pusher_internal:subscription_succeeded", on_success)
        subscribed[name] = channel
        try:
            out(type="subscribed", channel=name, data=await asyncio.wait_for(done, 10))
        except asyncio.TimeoutError:
            out(type="error", channel=name, error="no subscription_succeeded within 10 s")

    wait = cfg.get("wait_event")
    if wait and wait["channel"] in subscribed:
        got = asyncio.get_running_loop().create_future()

        async def on_event(data):
            if not got.done():
                got.set_result(data)

        subscribed[wait["channel"]].bind(wait["event"], on_event)
        out(type="ready")
        try:
            out(type="event", channel=wait["channel"], data=await asyncio.wait_for(got, 10))
        except asyncio.TimeoutError:
            out(type="error", channel=wait["channel"], error="no event within 10 s")
    await pusher.disconnect()


asyncio.run(main())
