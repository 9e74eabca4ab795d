"""A third-party NATS client (nats-py) reading a job's live output, with no sshq code.

Usage: live_output.py URL STREAM FILTER MODE
  MODE=live    core NATS subscription (start it before the job runs)
  MODE=replay  JetStream ordered consumer from the start of the job (a late subscriber)
Prints one JSON list of the messages up to and including the `end` message.
"""
import asyncio
import json
import sys

import nats


async def main():
    url, stream, subject, mode = sys.argv[1:5]
    nc = await nats.connect(url)
    if mode == "live":
        sub = await nc.subscribe(subject)
        print("subscribed", flush=True)
    else:
        sub = await nc.jetstream().subscribe(subject, stream=stream, ordered_consumer=True)
    received = []
    while True:
        msg = await sub.next_msg(timeout=30)
        part = msg.subject.rsplit(".", 1)[1]
        headers = msg.headers or {}
        received.append({
            "part": part,
            "seq": int(headers["Sshq-Seq"]),
            "data": msg.data.decode("utf-8", "replace"),
            "status": headers.get("Sshq-Status"),
            "exit_status": headers.get("Sshq-Exit-Status"),
        })
        if part == "end":
            break
    print(json.dumps(received), flush=True)
    await nc.close()


asyncio.run(main())
