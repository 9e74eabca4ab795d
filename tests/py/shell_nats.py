"""Following a live sshq shell with a plain NATS client (nats-py), signed in with an API key.

Usage: shell_nats.py MODE URL TOKEN INBOX [ARGS...]
  follow OUT_SUBJECT     subscribe (prints "subscribed"), collect the shell's output frames
                         until its `closed` frame; one JSON document: every frame's kind and
                         sequence, the terminal text, the decoded control messages
  refused OUT IN OPEN    try what a key must not do on a shell: follow its output (when OUT
                         is not "-"), type into it, listen to its input, open a shell; what
                         the server refused (None: allowed)
The last line printed is one JSON document.
"""
import asyncio
import json
import sys

import nats
from nats_refusals import refusals


async def main():
    mode, url, token, inbox = sys.argv[1:5]
    args = sys.argv[5:]
    errors = []

    async def error_cb(e):
        errors.append(str(e))

    nc = await nats.connect(servers=[url], token=token, inbox_prefix=inbox,
                            error_cb=error_cb, allow_reconnect=False, connect_timeout=5)
    if mode == "follow":
        sub = await nc.subscribe(args[0])
        await nc.flush()
        print("subscribed", flush=True)
        frames, text, control = [], b"", []
        while True:
            msg = await sub.next_msg(timeout=30)
            headers = msg.headers or {}
            kind = headers.get("Sshq-Shell")
            frames.append({"kind": kind, "seq": int(headers.get("Sshq-Seq", "0"))})
            if kind == "data":
                text += msg.data
            else:
                control.append(json.loads(msg.data))
            if kind == "closed":
                break
        print(json.dumps({
            "frames": frames,
            "text": text.decode("utf-8", "replace"),
            "control": control,
            "errors": errors,
        }))
    elif mode == "refused":
        out, into, open_ = args
        refused, attempt = refusals(nc, errors)
        if out != "-":
            await attempt("follow output", nc.subscribe(out))
        await attempt("type into the shell", nc.publish(into, b"\x00\x05touch /tmp/x\r"))
        await attempt("listen to the input", nc.subscribe(into))
        await attempt("open a shell", nc.publish(open_, b"x"))
        print(json.dumps({"refused": refused, "errors": errors}))
    await nc.close()


asyncio.run(main())
