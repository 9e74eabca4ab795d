"""What ops/bench's Python helpers share (bench-report.py, bench-peers.py, bench-fanout.py):
CPU accounting from /proc, the device target lists, and how the Python peers (Ansible,
parallel-ssh) are set up over those devices. Imported from the scripts' own directory.
"""

import os
import subprocess


# ------------------------------------------------------------------ CPU accounting
def proc_table():
    """pid -> (ppid, utime+stime+cutime+cstime in clock ticks) of every live process."""
    procs = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                text = f.read()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        procs[int(name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    return procs


def tree_ticks(roots, procs=None):
    """CPU clock ticks of `roots` and all their live descendants (from `procs`, else now)."""
    procs = proc_table() if procs is None else procs
    children = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo = set(), [p for p in roots if p in procs]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, []))
    return sum(procs[p][1] for p in seen)


def machine_ticks():
    """(busy, total) clock ticks of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    return sum(values) - values[3] - values[4], sum(values)


def pid_groups(specs):
    """`name=pid[,pid...]` arguments as (name, [pids]) pairs."""
    groups = []
    for spec in specs:
        name, pids = spec.split("=", 1)
        groups.append((name, [int(p) for p in pids.split(",") if p]))
    return groups


# ------------------------------------------------------------------ devices and peers
def read_targets(path):
    """The devices of a targets file: lines `name port dir`."""
    targets = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                targets.append({"name": parts[0], "port": int(parts[1]), "dir": parts[2]})
    return targets


def ansible_setup(work, hosts, user, key, known_hosts):
    """Writes an inventory of `hosts` ((name, port) pairs) into `work` and returns its path
    and the environment Ansible runs with: its default ssh args (ControlMaster=auto,
    ControlPersist=60s) plus our pinned host keys, control sockets in `work`."""
    inventory = os.path.join(work, "inventory")
    with open(inventory, "w") as f:
        f.write("[devices]\n")
        for name, port in hosts:
            f.write(
                f"{name} ansible_host=127.0.0.1 ansible_port={port} "
                f"ansible_user={user} ansible_python_interpreter=/usr/bin/python3\n"
            )
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_PRIVATE_KEY_FILE": key,
            "ANSIBLE_SSH_ARGS": f"-C -o ControlMaster=auto -o ControlPersist=60s "
            f"-o UserKnownHostsFile={known_hosts} -o IdentitiesOnly=yes",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": work,
            "ANSIBLE_LOCAL_TEMP": os.path.join(work, "tmp"),
            "ANSIBLE_REMOTE_TEMP": "/tmp/.ansible-sshq-bench",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "False",
        }
    )
    return inventory, env


def stop_control_masters(work):
    """Ends the ControlPersist masters whose sockets are in `work`."""
    for name in os.listdir(work):
        path = os.path.join(work, name)
        if not os.path.isdir(path):
            subprocess.run(["ssh", "-S", path, "-O", "exit", "x"], capture_output=True)


def pssh_client(targets, user, key, pool_size, timeout):
    """A parallel-ssh client over `targets` (one host entry each, all on 127.0.0.1)."""
    from pssh.clients import ParallelSSHClient
    from pssh.config import HostConfig

    return ParallelSSHClient(
        ["127.0.0.1"] * len(targets),
        host_config=[HostConfig(port=t["port"], user=user, private_key=key) for t in targets],
        pool_size=pool_size,
        num_retries=1,
        timeout=timeout,
    )
