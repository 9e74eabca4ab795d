//! Measuring helpers shared by the `sshq-bench` subcommands: latency percentiles, CPU time
//! per process tree from `/proc`, and memory (RSS, PSS) of processes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};

/// Latency figures in milliseconds (nearest-rank percentiles).
pub fn latency_summary(mut samples: Vec<Duration>) -> Value {
    if samples.is_empty() {
        return json!(null);
    }
    samples.sort();
    let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
    let pct = |p: f64| {
        let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
        ms(samples[rank.clamp(1, samples.len()) - 1])
    };
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    json!({
        "count": samples.len(),
        "min_ms": ms(samples[0]),
        "p50_ms": pct(50.0),
        "p90_ms": pct(90.0),
        "p99_ms": pct(99.0),
        "max_ms": ms(*samples.last().unwrap()),
        "mean_ms": ms(mean),
    })
}

/// One process as `/proc/<pid>/stat` shows it.
struct ProcStat {
    ppid: u32,
    /// utime + stime + cutime + cstime, in clock ticks: the process's own CPU and that of
    /// every descendant it has reaped.
    ticks: u64,
}

fn read_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: cut past the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is the state (field 3 of stat); utime is field 14, so fields[11].
    let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(ProcStat {
        ppid: num(1)? as u32,
        ticks: num(11)? + num(12)? + num(13)? + num(14)?,
    })
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every live process, with its parent.
fn snapshot() -> HashMap<u32, ProcStat> {
    all_pids()
        .into_iter()
        .filter_map(|pid| Some((pid, read_stat(pid)?)))
        .collect()
}

/// `roots` and all their live descendants.
fn tree(roots: &[u32], procs: &HashMap<u32, ProcStat>) -> HashSet<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, stat) in procs {
        children.entry(stat.ppid).or_default().push(*pid);
    }
    let mut seen = HashSet::new();
    let mut todo: Vec<u32> = roots
        .iter()
        .copied()
        .filter(|p| procs.contains_key(p))
        .collect();
    while let Some(pid) = todo.pop() {
        if seen.insert(pid) {
            todo.extend(children.get(&pid).into_iter().flatten().copied());
        }
    }
    seen
}

/// `roots` and all their live descendants, from a fresh look at `/proc`.
pub fn process_tree(roots: &[u32]) -> Vec<u32> {
    let mut pids: Vec<u32> = tree(roots, &snapshot()).into_iter().collect();
    pids.sort();
    pids
}

fn clock_ticks_per_second() -> f64 {
    // Linux reports CPU times in USER_HZ, which is 100 on every architecture we run on.
    100.0
}

/// Busy and total jiffies of the whole machine, from `/proc/stat`.
fn machine_ticks() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = text.lines().next().unwrap_or_default();
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest times are inside user/nice).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Named groups of process trees whose CPU time is measured over a window.
///
/// A group is `name=pid[,pid...]`: those processes and all their descendants. A descendant
/// that exits during the window is still counted, through its parent's `cutime`/`cstime`
/// once reaped (every tree we measure reaps its children: sshd, the postmaster, this client).
pub struct CpuGroups {
    groups: Vec<(String, Vec<u32>)>,
    start: Option<(BTreeMap<String, u64>, (u64, u64))>,
}

impl CpuGroups {
    pub fn parse(specs: &[String]) -> anyhow::Result<Self> {
        let mut groups = Vec::new();
        for spec in specs {
            let (name, pids) = spec
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--cpu wants name=pid[,pid...], got {spec}"))?;
            let pids = pids
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| p.trim().parse::<u32>())
                .collect::<Result<Vec<_>, _>>()?;
            groups.push((name.to_owned(), pids));
        }
        groups.push((
            "client (sshq-bench and its children)".into(),
            vec![std::process::id()],
        ));
        Ok(Self {
            groups,
            start: None,
        })
    }

    fn sample(&self) -> BTreeMap<String, u64> {
        let procs = snapshot();
        self.groups
            .iter()
            .map(|(name, roots)| {
                let ticks = tree(roots, &procs).iter().map(|pid| procs[pid].ticks).sum();
                (name.clone(), ticks)
            })
            .collect()
    }

    pub fn begin(&mut self) {
        self.start = Some((self.sample(), machine_ticks()));
    }

    /// CPU seconds per group since `begin`, and per execution in milliseconds.
    pub fn end(&self, executions: usize, wall: Duration) -> Value {
        let Some((start, (busy0, total0))) = &self.start else {
            return json!(null);
        };
        let now = self.sample();
        let (busy1, total1) = machine_ticks();
        let hz = clock_ticks_per_second();
        let mut groups = serde_json::Map::new();
        let mut measured = 0.0;
        for (name, ticks) in &now {
            let seconds = ticks.saturating_sub(start.get(name).copied().unwrap_or(0)) as f64 / hz;
            measured += seconds;
            groups.insert(
                name.clone(),
                json!({
                    "cpu_seconds": seconds,
                    "cpu_ms_per_execution": seconds * 1000.0 / executions.max(1) as f64,
                    "cores": seconds / wall.as_secs_f64(),
                }),
            );
        }
        let busy = (busy1 - busy0) as f64 / hz;
        let total = (total1 - total0) as f64 / hz;
        json!({
            "groups": groups,
            "machine_busy_cpu_seconds": busy,
            "machine_busy_fraction": if total > 0.0 { busy / total } else { 0.0 },
            "machine_cpu_ms_per_execution": busy * 1000.0 / executions.max(1) as f64,
            // Kernel work outside any process (softirq: loopback TCP) and other processes.
            "unattributed_cpu_seconds": (busy - measured).max(0.0),
        })
    }
}

/// `VmRSS`, `VmHWM` and `RssAnon` of a process, in KiB.
pub fn rss_kib(pid: u32) -> Value {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    json!({
        "vm_rss_kib": field("VmRSS:"),
        "vm_hwm_kib": field("VmHWM:"),
        "rss_anon_kib": field("RssAnon:"),
        "threads": field("Threads:"),
    })
}

/// Proportional set size of a process in KiB (shared pages split among their users).
pub fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Established TCP connections (IPv4 loopback) owned by `pid` whose remote port is in `ports`.
pub fn established_to(pid: u32, ports: &HashSet<u16>) -> usize {
    let inodes: HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| {
                let link = std::fs::read_link(e.ok()?.path()).ok()?;
                let link = link.to_str()?;
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()
            })
            .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            let remote_port = f
                .get(2)
                .and_then(|r| r.split(':').nth(1))
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let established = f.get(3) == Some(&"01");
            let inode = f.get(9).and_then(|i| i.parse::<u64>().ok());
            established
                && remote_port.is_some_and(|p| ports.contains(&p))
                && inode.is_some_and(|i| inodes.contains(&i))
        })
        .count()
}
