#!/usr/bin/env python3
"""The exec workload through the Python peers, for ops/bench: Ansible ad-hoc and parallel-ssh.

Prints one JSON object in the shape of `sshq-bench exec`'s (executions_ok, seconds,
executions_per_second, latency {p50_ms, p99_ms, ...}, cpu {...}).

  bench-peers.py ansible --targets FILE --executions M --parallelism P --key KEY --known-hosts F
  bench-peers.py pssh    --targets FILE --executions M --parallelism P --key KEY

`--targets` has lines `name port dir`. Both peers run a command on a list of P hosts at once
(device i mod N for entry i, so P commands are in flight as with the other clients), in rounds
until M executions are done:

* ansible: one `ansible all -m command -a CMD -f P` invocation per round over an inventory of
  P entries (Ansible's defaults otherwise: its ssh connection plugin with ControlPersist, no
  pipelining). An execution's latency is its invocation's wall time: that is when the
  caller has the results.
* pssh: one ParallelSSHClient (libssh2) kept for the whole run, so its connections are reused
  like sshq's; `run_command` per round. An execution's latency runs from the round's start to
  its output having been read (outputs are read in host order).
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

from bench_common import (
    ansible_setup,
    machine_ticks,
    pid_groups,
    pssh_client,
    read_targets,
    stop_control_masters,
    tree_ticks,
)


def latency_summary(samples):
    if not samples:
        return None
    s = sorted(samples)

    def pct(p):  # nearest rank
        rank = min(len(s), max(1, math.ceil(p / 100 * len(s))))
        return round(s[rank - 1] * 1000, 2)

    return {
        "count": len(s),
        "min_ms": round(s[0] * 1000, 2),
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": round(s[-1] * 1000, 2),
        "mean_ms": round(sum(s) / len(s) * 1000, 2),
    }


class Cpu:
    def __init__(self, groups):
        self.groups = dict(groups)
        self.groups["client (driver and its children)"] = [os.getpid()]

    def begin(self):
        self.start = {n: tree_ticks(p) for n, p in self.groups.items()}, machine_ticks()

    def end(self, executions, wall):
        (start, (busy0, total0)) = self.start
        busy1, total1 = machine_ticks()
        groups, measured = {}, 0.0
        for name, pids in self.groups.items():
            seconds = (tree_ticks(pids) - start[name]) / 100.0
            measured += seconds
            groups[name] = {
                "cpu_seconds": seconds,
                "cpu_ms_per_execution": seconds * 1000 / max(1, executions),
                "cores": seconds / wall,
            }
        busy = (busy1 - busy0) / 100.0
        total = (total1 - total0) / 100.0
        return {
            "groups": groups,
            "machine_busy_cpu_seconds": busy,
            "machine_busy_fraction": busy / total if total else 0.0,
            "machine_cpu_ms_per_execution": busy * 1000 / max(1, executions),
            "unattributed_cpu_seconds": max(0.0, busy - measured),
        }


def ansible(args, targets, cpu):
    venv_bin = os.path.dirname(os.path.abspath(sys.executable))
    work = tempfile.mkdtemp(prefix="sshq-ansible-")
    hosts = [(f"h{i:04d}", targets[i % len(targets)]["port"]) for i in range(args.parallelism)]
    inventory, env = ansible_setup(work, hosts, args.user, args.key, args.known_hosts)
    command = [
        os.path.join(venv_bin, "ansible"), "all", "-i", inventory, "-m", "command",
        "-a", args.command, "-f", str(args.parallelism), "-o",
    ]

    def one_round():
        began = time.monotonic()
        p = subprocess.run(command, env=env, capture_output=True, text=True)
        took = time.monotonic() - began
        ok = p.stdout.count("| CHANGED | rc=0") + p.stdout.count("| SUCCESS | rc=0")
        return took, ok, p

    # Warm-up round: ControlPersist masters up, as sshq's and the other peers' connections are.
    took, ok, p = one_round()
    if ok != args.parallelism:
        raise SystemExit(f"ansible warm-up: {ok}/{args.parallelism} ok\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    rounds = max(1, args.executions // args.parallelism)
    latencies, failures, first_error = [], 0, None
    cpu.begin()
    began = time.monotonic()
    for _ in range(rounds):
        took, ok, p = one_round()
        latencies.extend([took] * ok)
        if ok < args.parallelism:
            failures += args.parallelism - ok
            first_error = first_error or (p.stdout[-1000:] + p.stderr[-1000:])
    wall = time.monotonic() - began
    result_cpu = cpu.end(len(latencies), wall)
    # The ControlPersist masters go with the temporary directory's sockets.
    stop_control_masters(work)
    return latencies, failures, first_error, wall, result_cpu, {"rounds": rounds}


def pssh(args, targets, cpu):
    entries = [targets[i % len(targets)] for i in range(args.parallelism)]
    client = pssh_client(entries, args.user, args.key, pool_size=args.parallelism, timeout=30)

    def one_round():
        began = time.monotonic()
        output = client.run_command(args.command, stop_on_errors=False)
        done = []
        for host_out in output:
            if host_out.exception is not None:
                done.append((None, repr(host_out.exception)))
                continue
            text = "".join(host_out.stdout)
            host_out.client.wait_finished(host_out)
            exit_code = host_out.exit_code
            ok = bool(text) and exit_code == 0
            done.append((time.monotonic() - began if ok else None, f"exit {exit_code}"))
        return done

    for took, error in one_round():  # warm-up: connect every entry
        if took is None:
            raise SystemExit(f"parallel-ssh warm-up failed: {error}")
    rounds = max(1, args.executions // args.parallelism)
    latencies, failures, first_error = [], 0, None
    cpu.begin()
    began = time.monotonic()
    for _ in range(rounds):
        for took, error in one_round():
            if took is None:
                failures += 1
                first_error = first_error or error
            else:
                latencies.append(took)
    wall = time.monotonic() - began
    return latencies, failures, first_error, wall, cpu.end(len(latencies), wall), {"rounds": rounds}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("peer", choices=["ansible", "pssh"])
    ap.add_argument("--targets", required=True)
    ap.add_argument("--executions", type=int, default=200)
    ap.add_argument("--parallelism", type=int, default=40)
    ap.add_argument("--command", default="uptime")
    ap.add_argument("--key", required=True)
    ap.add_argument("--known-hosts")
    ap.add_argument("--user", default="sshq-device")
    ap.add_argument("--cpu", action="append", default=[], help="name=pid[,pid...]")
    args = ap.parse_args()
    targets = read_targets(args.targets)
    cpu = Cpu(pid_groups(args.cpu))
    run = ansible if args.peer == "ansible" else pssh
    latencies, failures, first_error, wall, result_cpu, extra = run(args, targets, cpu)
    result = {
        "executions_ok": len(latencies),
        "failures": {"failed": failures} if failures else {},
        "first_error": first_error,
        "seconds": wall,
        "executions_per_second": len(latencies) / wall,
        "latency": latency_summary(latencies),
        "devices": len(targets),
        "executions": args.executions,
        "parallelism": args.parallelism,
        "cpu": result_cpu,
        **extra,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
