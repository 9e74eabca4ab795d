#!/usr/bin/env python3
"""Interactive shells, for ops/bench's `shells` part (run with the bench venv's Python, which
has `websockets`). JSON on stdout, progress on stderr.

  bench-shells.py latency --api-url URL --api-key KEY --device ID --port PORT --key FILE \
      --known-hosts FILE --user USER [--keystrokes 500] [--rounds 5] [--warmup 50] [--gap-ms 20]
      Keystroke echo: one shell through sshq's WebSocket bridge
      (GET /v1/devices/{id}/shell) and one `ssh -tt` session (on a pty of its own) to the same
      device, both open at once; single characters are sent one at a time and each is timed
      until its echo comes back. The two alternate in rounds (which one goes first alternates
      too), after a warm-up on each that is not counted.

  bench-shells.py idle --api-url URL --api-key KEY --devices FILE --shells N --worker-pid PID \
      [--api-pid PID] [--settle 10]
      Idle shells: the worker's RSS (/proc/PID/status VmRSS), then N shells opened (spread
      over the devices in FILE, one id a line, round robin) and left idle, the RSS again, then
      the shells closed and the RSS once more.

  bench-shells.py churn --api-url URL --api-key KEY --devices FILE --shells N --rounds K \
      --api-pid PID [--worker-pid PID] [--settle 3] [--nats-monitor URL]
      Shell churn, for the API's memory: K rounds of N shells opened (each waited on until it
      answers), then all closed by their clients; after each round, once the API's
      `sshq_api_shells_open` is back to 0 and `--settle` seconds more, the API's RSS and its
      `/metrics` gauges (open shells, watchers, live tasks) and the NATS subscriptions of the
      API's connections (nats-server's /connz, user `api`). RSS that grows round after round
      is a leak; RSS that stops growing after the first rounds is memory the allocator keeps.
"""

import argparse
import asyncio
import fcntl
import json
import os
import pty
import statistics
import struct
import subprocess
import sys
import termios
import time
import urllib.request

import websockets
from websockets.asyncio.client import connect

LETTERS = b"abcdefghijklmnopqrstuvwxyz"
READY = b"echo SSHQ_READY_$((6*7))\r"
READY_SEEN = b"SSHQ_READY_42"
KILL_LINE = b"\x15"  # ^U: readline empties the line
KEYS_PER_LINE = 40  # then ^U, so that the line never wraps


def log(*a):
    print("bench-shells:", *a, file=sys.stderr, flush=True)


def ws_url(api_url, device):
    base = api_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    return f"{base}/v1/devices/{device}/shell?term=xterm&cols=80&rows=24"


class Term:
    """Output received so far and an event set on each arrival."""

    def __init__(self):
        self.buf = bytearray()
        self.arrived = asyncio.Event()
        self.closed = None

    def feed(self, data):
        self.buf += data
        self.arrived.set()

    async def wait_for(self, needle, start, timeout):
        deadline = time.monotonic() + timeout
        while True:
            if self.buf.find(needle, start) >= 0:
                return
            if self.closed:
                raise RuntimeError(f"closed while waiting for {needle!r}: {self.closed}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {needle!r} within {timeout} s; last output {bytes(self.buf[-200:])!r}")
            self.arrived.clear()
            if self.buf.find(needle, start) >= 0:
                return
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def quiet(self, seconds=0.3, longest=5.0):
        """Waits until nothing has arrived for `seconds`."""
        deadline = time.monotonic() + longest
        while time.monotonic() < deadline:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), seconds)
            except asyncio.TimeoutError:
                return


class WsShell(Term):
    name = "sshq"

    def __init__(self, ws):
        super().__init__()
        self.ws = ws
        self.session = None
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, api_url, api_key, device):
        ws = await connect(
            ws_url(api_url, device),
            additional_headers={"X-API-Key": api_key},
            compression=None,
            ping_interval=None,
            max_size=None,
            open_timeout=30,
        )
        return cls(ws)

    async def _read(self):
        try:
            async for frame in self.ws:
                if isinstance(frame, bytes):
                    self.feed(frame)
                else:
                    msg = json.loads(frame)
                    if msg.get("type") == "session":
                        self.session = msg.get("id")
                    elif msg.get("type") == "closed":
                        self.closed = msg.get("reason") or "closed"
                        self.arrived.set()
        except websockets.ConnectionClosed as e:
            self.closed = self.closed or f"connection closed: {e}"
            self.arrived.set()

    async def send(self, data):
        await self.ws.send(data)

    async def close(self):
        await self.ws.close()
        self.reader.cancel()


class SshShell(Term):
    name = "ssh -tt"

    def __init__(self, argv):
        super().__init__()
        # The pty is left as a terminal starts (cooked, echo on): ssh sends its modes to the
        # device's pty and puts this one in raw mode itself, as in front of a person.
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        env = dict(os.environ, TERM="xterm")
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
        os.close(slave)
        self.master = master
        asyncio.get_running_loop().add_reader(master, self._readable)

    def _readable(self):
        try:
            data = os.read(self.master, 65536)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
            self.closed = f"ssh exited ({self.proc.poll()})"
            self.arrived.set()
            return
        self.feed(data)

    async def send(self, data):
        os.write(self.master, data)

    async def close(self):
        try:
            os.write(self.master, b"\x15exit\r")
            await asyncio.get_running_loop().run_in_executor(None, self.proc.wait, 5)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.master)
        os.close(self.master)


async def ready(term, timeout=30):
    deadline = time.monotonic() + timeout
    while not term.buf and not term.closed and time.monotonic() < deadline:  # the login's first output
        term.arrived.clear()
        try:
            await asyncio.wait_for(term.arrived.wait(), 0.5)
        except asyncio.TimeoutError:
            pass
    await term.quiet()
    start = len(term.buf)
    await term.send(READY)
    await term.wait_for(READY_SEEN, start, timeout)  # the echoed command is `$((6*7))`, not 42
    await term.quiet()


async def keystrokes(term, count, gap, typed):
    """`count` single characters, each timed until its echo; `typed` counts across calls."""
    out = []
    for _ in range(count):
        if typed[term.name] and typed[term.name] % KEYS_PER_LINE == 0:
            await term.send(KILL_LINE)
            await term.quiet(0.05)
        ch = LETTERS[typed[term.name] % len(LETTERS) : typed[term.name] % len(LETTERS) + 1]
        typed[term.name] += 1
        start = len(term.buf)
        t0 = time.perf_counter()
        await term.send(ch)
        await term.wait_for(ch, start, 10)
        out.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(gap)
    return out


def pct(values, p):
    s = sorted(values)
    if not s:
        return None
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values):
    return {
        "count": len(values),
        "p50_ms": pct(values, 50),
        "p90_ms": pct(values, 90),
        "p99_ms": pct(values, 99),
        "mean_ms": statistics.fmean(values) if values else None,
        "min_ms": min(values) if values else None,
        "max_ms": max(values) if values else None,
    }


async def latency(a):
    argv = [
        "ssh", "-tt", "-F", "/dev/null", "-i", a.key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={a.known_hosts}", "-o", "LogLevel=ERROR",
        "-p", str(a.port), f"{a.user}@127.0.0.1",
    ]  # fmt: skip
    log(f"opening a shell through sshq and `{' '.join(argv)}`")
    t0 = time.perf_counter()
    ws = await WsShell.open(a.api_url, a.api_key, a.device)
    await ready(ws)
    ws_open_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    ssh = SshShell(argv)
    await ready(ssh)
    ssh_open_ms = (time.perf_counter() - t0) * 1000
    gap = a.gap_ms / 1000
    typed = {ws.name: 0, ssh.name: 0}
    log(f"warm-up: {a.warmup} keystrokes on each")
    for term in (ws, ssh):
        await keystrokes(term, a.warmup, gap, typed)
    per_round = a.keystrokes // a.rounds
    results = {ws.name: [], ssh.name: []}
    rounds = []
    for r in range(a.rounds):
        order = (ws, ssh) if r % 2 == 0 else (ssh, ws)
        row = {}
        for term in order:
            values = await keystrokes(term, per_round, gap, typed)
            results[term.name] += values
            row[term.name] = {"first": term is order[0], **summary(values)}
        rounds.append(row)
        log(
            f"round {r + 1}/{a.rounds}: p50 sshq {row['sshq']['p50_ms']:.2f} ms, "
            f"ssh -tt {row['ssh -tt']['p50_ms']:.2f} ms ({per_round} keystrokes each)"
        )
    session = ws.session
    await ws.close()
    await ssh.close()
    out = {
        "device": a.device,
        "port": a.port,
        "keystrokes_per_tool": per_round * a.rounds,
        "rounds": a.rounds,
        "warmup": a.warmup,
        "gap_ms": a.gap_ms,
        "session": session,
        "open_ms": {"sshq": ws_open_ms, "ssh -tt": ssh_open_ms},
        "sshq": summary(results["sshq"]),
        "ssh": summary(results["ssh -tt"]),
        "per_round": rounds,
    }
    json.dump(out, sys.stdout, indent=1)
    print()


def vm(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "Threads"):
                out[k] = int(v.split()[0])
    return {"vm_rss_kib": out["VmRSS"], "vm_hwm_kib": out["VmHWM"], "rss_anon_kib": out.get("RssAnon"), "threads": out["Threads"]}


def snapshot(a):
    s = {"worker": vm(a.worker_pid)}
    if a.api_pid:
        s["api"] = vm(a.api_pid)
    return s


async def idle(a):
    devices = [line.strip() for line in open(a.devices) if line.strip()]
    await asyncio.sleep(a.settle / 2)
    before = snapshot(a)
    log(f"worker RSS before: {before['worker']['vm_rss_kib'] / 1024:.1f} MiB; opening {a.shells} shells over {len(devices)} devices")
    shells, failures = [], {}
    gate = asyncio.Semaphore(a.parallelism)

    async def one(i):
        async with gate:
            try:
                term = await WsShell.open(a.api_url, a.api_key, devices[i % len(devices)])
                await ready(term)
                shells.append(term)
            except Exception as e:
                key = f"{type(e).__name__}: {e}"[:160]
                failures[key] = failures.get(key, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(a.shells)))
    open_s = time.perf_counter() - t0
    log(f"{len(shells)} shells open in {open_s:.1f} s ({sum(failures.values())} failed); idle for {a.settle} s")
    await asyncio.sleep(a.settle)
    held = snapshot(a)
    alive = sum(1 for s in shells if not s.closed)
    # Still answering? One keystroke on each (not timed), then idle again.
    answered = 0

    async def poke(term):
        nonlocal answered
        async with gate:
            try:
                start = len(term.buf)
                await term.send(b"z")
                await term.wait_for(b"z", start, 15)
                answered += 1
            except Exception:
                pass

    await asyncio.gather(*(poke(s) for s in shells))
    await asyncio.sleep(a.settle / 2)
    held_after_poke = snapshot(a)
    log(f"worker RSS holding them: {held['worker']['vm_rss_kib'] / 1024:.1f} MiB; {answered} answered a keystroke; closing")
    await asyncio.gather(*(s.close() for s in shells), return_exceptions=True)
    await asyncio.sleep(a.settle)
    after_close = snapshot(a)
    grew = held["worker"]["vm_rss_kib"] - before["worker"]["vm_rss_kib"]
    out = {
        "shells_wanted": a.shells,
        "devices": len(devices),
        "shells_open": len(shells),
        "shells_alive_after_idle": alive,
        "shells_answering": answered,
        "failures": failures,
        "open_seconds": open_s,
        "settle_seconds": a.settle,
        "before": before,
        "holding": held,
        "holding_after_keystroke": held_after_poke,
        "after_close": after_close,
        "worker_rss_growth_kib": grew,
        "worker_rss_per_shell_kib": grew / len(shells) if shells else None,
        "shells_per_100_mib": len(shells) / (grew / 102400) if grew > 0 and shells else None,
    }
    json.dump(out, sys.stdout, indent=1)
    print()


def api_metrics(api_url):
    """The API's /metrics gauges, name -> value."""
    out = {}
    with urllib.request.urlopen(f"{api_url}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
    return out


def api_subscriptions(monitor):
    """NATS subscriptions held by the connections of the user `api` (nats-server's /connz)."""
    with urllib.request.urlopen(f"{monitor}/connz?auth=1&limit=1024", timeout=10) as r:
        conns = json.load(r).get("connections") or []
    return sum(c.get("subscriptions", 0) for c in conns if c.get("authorized_user") == "api")


def churn_snapshot(a):
    s = {"api": vm(a.api_pid), "metrics": api_metrics(a.api_url)}
    if a.nats_monitor:
        s["api_nats_subscriptions"] = api_subscriptions(a.nats_monitor)
    if a.worker_pid:
        s["worker"] = vm(a.worker_pid)
    return s


async def churn(a):
    devices = [line.strip() for line in open(a.devices) if line.strip()]
    await asyncio.sleep(a.settle)
    before = churn_snapshot(a)
    log(f"API RSS before: {before['api']['vm_rss_kib'] / 1024:.1f} MiB, {before['metrics'].get('sshq_api_tokio_alive_tasks')} tasks; "
        f"{a.rounds} rounds of {a.shells} shells over {len(devices)} devices")
    gate = asyncio.Semaphore(a.parallelism)
    rounds = []
    for k in range(a.rounds):
        shells, failures = [], {}

        async def one(i):
            async with gate:
                try:
                    term = await WsShell.open(a.api_url, a.api_key, devices[i % len(devices)])
                    shells.append(term)
                    await ready(term)
                except Exception as e:
                    key = f"{type(e).__name__}: {e}"[:160]
                    failures[key] = failures.get(key, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(a.shells)))
        open_s = time.perf_counter() - t0
        holding = churn_snapshot(a)
        await asyncio.gather(*(s.close() for s in shells), return_exceptions=True)
        # Bridges end once the worker confirms (or within the bridge's own bounds): wait for
        # the gauge rather than guessing a time.
        t1 = time.perf_counter()
        drained = None
        while time.perf_counter() - t1 < 60:
            if api_metrics(a.api_url).get("sshq_api_shells_open") == 0:
                drained = time.perf_counter() - t1
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(a.settle)
        after = churn_snapshot(a)
        r = {
            "round": k + 1,
            "opened": len(shells) - sum(failures.values()),
            "failures": failures,
            "open_seconds": open_s,
            "drained_seconds": drained,
            "holding": holding,
            "after": after,
        }
        rounds.append(r)
        log(f"round {k + 1}: {r['opened']} opened in {open_s:.1f} s ({sum(failures.values())} failed); API RSS holding "
            f"{holding['api']['vm_rss_kib'] / 1024:.1f} MiB ({holding['metrics'].get('sshq_api_shells_open'):.0f} open, "
            f"{holding['metrics'].get('sshq_api_tokio_alive_tasks'):.0f} tasks, {holding.get('api_nats_subscriptions')} NATS subscriptions), after closing "
            f"{after['api']['vm_rss_kib'] / 1024:.1f} MiB ({after['metrics'].get('sshq_api_shells_open'):.0f} open, "
            f"{after['metrics'].get('sshq_api_tokio_alive_tasks'):.0f} tasks, {after.get('api_nats_subscriptions')} NATS subscriptions)")
    out = {
        "shells_per_round": a.shells,
        "rounds_wanted": a.rounds,
        "devices": len(devices),
        "settle_seconds": a.settle,
        "before": before,
        "rounds": rounds,
    }
    json.dump(out, sys.stdout, indent=1)
    print()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    lat = sub.add_parser("latency")
    idl = sub.add_parser("idle")
    chu = sub.add_parser("churn")
    for s in (lat, idl, chu):
        s.add_argument("--api-url", required=True)
        s.add_argument("--api-key", required=True)
    lat.add_argument("--device", required=True)
    lat.add_argument("--port", type=int, required=True)
    lat.add_argument("--key", required=True)
    lat.add_argument("--known-hosts", required=True)
    lat.add_argument("--user", required=True)
    lat.add_argument("--keystrokes", type=int, default=500)
    lat.add_argument("--rounds", type=int, default=5)
    lat.add_argument("--warmup", type=int, default=50)
    lat.add_argument("--gap-ms", type=float, default=20)
    idl.add_argument("--devices", required=True)
    idl.add_argument("--shells", type=int, default=500)
    idl.add_argument("--worker-pid", type=int, required=True)
    idl.add_argument("--api-pid", type=int)
    idl.add_argument("--settle", type=float, default=10)
    idl.add_argument("--parallelism", type=int, default=16)
    chu.add_argument("--devices", required=True)
    chu.add_argument("--shells", type=int, default=500)
    chu.add_argument("--rounds", type=int, default=5)
    chu.add_argument("--api-pid", type=int, required=True)
    chu.add_argument("--worker-pid", type=int)
    chu.add_argument("--settle", type=float, default=3)
    chu.add_argument("--nats-monitor", help="nats-server's monitoring URL: the API's subscriptions from /connz")
    chu.add_argument("--parallelism", type=int, default=16)
    a = p.parse_args()
    run = {"latency": latency, "idle": idle, "churn": churn}[a.cmd]
    asyncio.run(run(a))


if __name__ == "__main__":
    main()
