#!/usr/bin/env python3
"""Fan-out to a whole fleet, for ops/bench's `fanout` part: sshq's batch, Ansible ad-hoc and
parallel-ssh over the same devices at the same concurrency. Prints one JSON object.

  bench-fanout.py sshq    --api-url URL --api-key KEY --devices IDS --nats-url URL --prefix P
                          --concurrency C [--command uptime]
  bench-fanout.py ansible --targets FILE --concurrency C --key KEY --known-hosts F
  bench-fanout.py pssh    --targets FILE --concurrency C --key KEY

* sshq: one `POST /v1/exec` with every device id and `max_concurrency` C; the batch's live
  progress (`<prefix>.batch.default.<batch>.>`, nats-py) gives the time of the first result
  and of the last; the batch is then read back over REST (every job finished, exit 0).
  "Wall" runs from sending the request to the last job's `ended` message.
* ansible: one `ansible all -m command -a CMD -f C -o` over an inventory of every device (cold:
  no ControlPersist master left from earlier); the first result is its first output line.
* pssh: one ParallelSSHClient over every device with pool_size C, `run_command`, then every
  host's output read; the first result is the first host whose command ended.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

from bench_common import ansible_setup, pssh_client, read_targets, stop_control_masters


def http(method, url, key, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("X-API-Key", key)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.status, json.loads(r.read() or b"null")


async def run_sshq(args):
    import nats

    ids = [line.split()[0] for line in open(args.devices) if line.strip()]
    nc = await nats.connect(args.nats_url)
    ended, first = {}, None
    done = asyncio.Event()
    state = {"batch": None, "jobs": len(ids)}

    async def on_progress(msg):
        nonlocal first
        if not msg.subject.endswith(".ended"):
            return
        now = time.monotonic()
        p = json.loads(msg.data)
        if state["batch"] and p["batch_id"] != state["batch"]:
            return
        first = first or now
        ended[p["job_id"]] = (now, p["status"], p.get("exit_status"))
        if len(ended) >= state["jobs"]:
            done.set()

    await nc.subscribe(f"{args.prefix}.batch.default.>", cb=on_progress)
    await nc.flush()
    body = {
        "command": args.command,
        "targets": {"device_ids": ids},
        "max_concurrency": args.concurrency,
        "max_errors": "100%",
    }
    loop = asyncio.get_running_loop()
    sent = time.monotonic()
    status, accepted = await loop.run_in_executor(
        None, lambda: http("POST", f"{args.api_url}/v1/exec", args.api_key, body)
    )
    answered = time.monotonic()
    if status != 202:
        raise SystemExit(f"submit: {status} {accepted}")
    state["batch"] = accepted["batch_id"]
    state["jobs"] = accepted["job_count"]
    try:
        await asyncio.wait_for(done.wait(), timeout=600)
    except asyncio.TimeoutError:
        pass
    last = max((t for t, _, _ in ended.values()), default=None)
    await nc.close()
    # The read model agrees (the projector may trail the live messages by a moment).
    batch = None
    for _ in range(300):
        _, batch = http("GET", f"{args.api_url}/v1/batches/{state['batch']}", args.api_key)
        if batch["status"] != "in_progress":
            break
        time.sleep(0.1)
    ok = sum(1 for _, s, e in ended.values() if s == "finished" and e == 0)
    wall = (last - sent) if last else None
    return {
        "tool": "sshq",
        "devices": len(ids),
        "concurrency": args.concurrency,
        "executions_ok": ok,
        "failures": len(ids) - ok,
        "seconds": wall,
        "executions_per_second": ok / wall if wall else None,
        "submit_ms": (answered - sent) * 1000,
        "first_result_after_202_ms": (first - answered) * 1000 if first else None,
        "batch_status": batch and batch["status"],
        "batch_counts": batch and batch["counts"],
    }


def run_ansible(args, targets):
    venv_bin = os.path.dirname(os.path.abspath(sys.executable))
    work = tempfile.mkdtemp(prefix="sshq-fan-ansible-")
    hosts = [(t["name"], t["port"]) for t in targets]
    inventory, env = ansible_setup(work, hosts, args.user, args.key, args.known_hosts)
    command = [
        os.path.join(venv_bin, "ansible"), "all", "-i", inventory, "-m", "command",
        "-a", args.command, "-f", str(args.concurrency), "-o",
    ]
    began = time.monotonic()
    first, ok, lines = None, 0, []
    p = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stdout:
        first = first or time.monotonic()
        lines.append(line)
        if "| CHANGED | rc=0" in line or "| SUCCESS | rc=0" in line:
            ok += 1
    p.wait()
    wall = time.monotonic() - began
    stop_control_masters(work)
    return {
        "tool": "ansible",
        "devices": len(targets),
        "concurrency": args.concurrency,
        "executions_ok": ok,
        "failures": len(targets) - ok,
        "first_error": None if ok == len(targets) else "".join(lines[-5:]) + p.stderr.read()[-1000:],
        "seconds": wall,
        "executions_per_second": ok / wall,
        "first_result_ms": (first - began) * 1000 if first else None,
    }


def run_pssh(args, targets):
    client = pssh_client(targets, args.user, args.key, pool_size=args.concurrency, timeout=60)
    began = time.monotonic()
    output = client.run_command(args.command, stop_on_errors=False)
    ok, first, error = 0, None, None
    for host_out in output:
        if host_out.exception is not None:
            error = error or repr(host_out.exception)
            continue
        text = "".join(host_out.stdout)
        host_out.client.wait_finished(host_out)
        first = first or time.monotonic()
        if text and host_out.exit_code == 0:
            ok += 1
    wall = time.monotonic() - began
    return {
        "tool": "pssh",
        "devices": len(targets),
        "concurrency": args.concurrency,
        "executions_ok": ok,
        "failures": len(targets) - ok,
        "first_error": error,
        "seconds": wall,
        "executions_per_second": ok / wall,
        "first_result_ms": (first - began) * 1000 if first else None,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tool", choices=["sshq", "ansible", "pssh"])
    ap.add_argument("--concurrency", type=int, required=True)
    ap.add_argument("--command", default="uptime")
    ap.add_argument("--api-url")
    ap.add_argument("--api-key")
    ap.add_argument("--devices")
    ap.add_argument("--nats-url")
    ap.add_argument("--prefix")
    ap.add_argument("--targets")
    ap.add_argument("--key")
    ap.add_argument("--known-hosts")
    ap.add_argument("--user", default="sshq-device")
    args = ap.parse_args()
    if args.tool == "sshq":
        result = asyncio.run(run_sshq(args))
    elif args.tool == "ansible":
        result = run_ansible(args, read_targets(args.targets))
    else:
        result = run_pssh(args, read_targets(args.targets))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
