"""A tenant's third-party NATS client (nats-py) signing in with its sshq API key.

Usage: tenant_nats.py MODE URL TOKEN INBOX [ARGS...]   (TOKEN "-" = no token)
  connect                         try to connect; {"ok": bool, "error": str}
  live SUBJECT                    subscribe (prints "subscribed"), collect output to `end`
  replay STREAM CONSUMER FILTER   a pull consumer made with the filtered create subject,
                                  fetch to `end`
  forbidden STREAM OTHER_SUBJECT  try what a tenant must not do; what the server refused
  hold                            stay connected (prints "connected"); report when the
                                  server drops the connection and what reconnecting got
The last line printed is one JSON document.
"""
import asyncio
import json
import sys
import time

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats_refusals import refusals


def parts(msg):
    part = msg.subject.rsplit(".", 1)[1]
    headers = msg.headers or {}
    return {
        "part": part,
        "seq": int(headers["Sshq-Seq"]),
        "data": msg.data.decode("utf-8", "replace"),
    }


async def main():
    mode, url, token, inbox = sys.argv[1:5]
    args = sys.argv[5:]
    errors = []
    events = {"disconnected": None, "closed": None}

    async def error_cb(e):
        errors.append(str(e))

    async def disconnected_cb():
        if events["disconnected"] is None:
            events["disconnected"] = time.monotonic()

    async def closed_cb():
        events["closed"] = time.monotonic()

    options = dict(
        servers=[url],
        error_cb=error_cb,
        disconnected_cb=disconnected_cb,
        closed_cb=closed_cb,
        connect_timeout=5,
    )
    if token != "-":
        options["token"] = token
    if inbox != "-":
        options["inbox_prefix"] = inbox
    if mode == "hold":
        options.update(max_reconnect_attempts=3, reconnect_time_wait=0.5)
    else:
        options.update(allow_reconnect=False)
    try:
        nc = await nats.connect(**options)
    except Exception as e:  # refused: authorization violation
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}", "errors": errors}))
        return
    if mode == "connect":
        print(json.dumps({"ok": True, "error": None}))
    elif mode == "live":
        sub = await nc.subscribe(args[0])
        await nc.flush()
        print("subscribed", flush=True)
        received = []
        while True:
            msg = await sub.next_msg(timeout=30)
            received.append(parts(msg))
            if received[-1]["part"] == "end":
                break
        print(json.dumps(received))
    elif mode == "replay":
        stream, consumer, subject = args
        js = nc.jetstream()
        await js.add_consumer(stream, ConsumerConfig(
            name=consumer, filter_subject=subject, ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL, inactive_threshold=60))
        psub = await js.pull_subscribe_bind(consumer, stream)
        received = []
        while not received or received[-1]["part"] != "end":
            for msg in await psub.fetch(10, timeout=10):
                received.append(parts(msg))
                await msg.ack()
        print(json.dumps(received))
    elif mode == "forbidden":
        stream, other = args
        prefix = other.split(".")[0]
        refused, attempt = refusals(nc, errors)
        js = nc.jetstream(timeout=1)

        await attempt("subscribe other tenant", nc.subscribe(other))
        await attempt("subscribe raw log", nc.subscribe(f"{prefix}.evt.>"))
        await attempt("subscribe everything", nc.subscribe(">"))
        await attempt("publish event", nc.publish(f"{prefix}.evt._sys.key.0123456789ab", b"x"))
        await attempt("publish output", nc.publish(other, b"x"))
        await attempt("stream info", js.stream_info(stream))
        await attempt("stream delete", js.delete_stream(stream))
        await attempt("consumer on the raw log", js.add_consumer(stream, ConsumerConfig(
            name="snoop", filter_subject=f"{prefix}.evt.>")))
        await attempt("unfiltered consumer", js.add_consumer(stream, ConsumerConfig(name="snoop")))
        await attempt("workers' consumer", js.consumer_info(stream, "workers"))
        # Its own consumer, but pushing its output into sshq's internal subjects.
        own = f"{inbox[len('_INBOX_'):]}"
        tenant = own.rsplit("_", 1)[0]
        try:
            await js.delete_consumer(stream, own)  # the replay's, if it is still there
        except Exception:
            pass
        await attempt("push consumer into the log", js.add_consumer(stream, ConsumerConfig(
            name=own, filter_subject=f"{prefix}.out.{tenant}.>",
            deliver_subject=f"{prefix}.evt.{tenant}.job.x.cancel")))
        # (A deliver subject outside the stream is not checked by nats-server: sshq's core
        # subscribers ignore what is not theirs, see ARCHITECTURE.md.)
        print(json.dumps({"refused": refused, "connected": nc.is_connected}))
    elif mode == "hold":
        print("connected", flush=True)
        start = time.monotonic()
        while events["closed"] is None and time.monotonic() - start < 60:
            await asyncio.sleep(0.1)
        dropped = events["disconnected"]
        print(json.dumps({
            "dropped_after_s": None if dropped is None else dropped - start,
            "closed": events["closed"] is not None,
            "errors": errors,
        }))
        return
    await nc.close()


asyncio.run(main())
