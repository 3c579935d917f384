//! The server's resource use, read from `/proc/<pid>` of each `--server-pid`.
//!
//! Memory is `VmRSS` from `status`; CPU is `utime + stime` from `stat`, which also counts
//! threads that have exited (unlike summing the live threads' `schedstat`).

use serde::Serialize;

/// Clock ticks per second of `utime`/`stime`. The kernel fixes `USER_HZ` at 100 on every
/// architecture Linux exposes to user space (`sysconf(_SC_CLK_TCK)` would need `unsafe`).
pub const USER_HZ: u64 = 100;

/// One reading of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProcSample {
    pub pid: u32,
    pub rss_kb: Option<u64>,
    /// User plus system CPU time, microseconds (10 ms resolution).
    pub cpu_us: Option<u64>,
}

/// One reading of every server process, with totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ServerSample {
    pub processes: Vec<ProcSample>,
}

impl ServerSample {
    /// Reads every pid; a process that cannot be read contributes `None`s.
    pub fn take(pids: &[u32]) -> Self {
        Self { processes: pids.iter().map(|&pid| sample(pid)).collect() }
    }

    /// Total RSS, when every process could be read and there is at least one.
    pub fn rss_kb(&self) -> Option<u64> {
        total(self.processes.iter().map(|p| p.rss_kb))
    }

    /// Total CPU time, when every process could be read and there is at least one.
    pub fn cpu_us(&self) -> Option<u64> {
        total(self.processes.iter().map(|p| p.cpu_us))
    }
}

fn total(values: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    let mut sum = None;
    for value in values {
        sum = Some(sum.unwrap_or(0) + value?);
    }
    sum
}

/// Reads one process.
pub fn sample(pid: u32) -> ProcSample {
    let rss_kb = std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|s| parse_vm_rss_kb(&s));
    let cpu_us = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| parse_cpu_ticks(&s))
        .map(|ticks| ticks * 1_000_000 / USER_HZ);
    ProcSample { pid, rss_kb, cpu_us }
}

/// `VmRSS:   12345 kB` from `/proc/<pid>/status`.
pub fn parse_vm_rss_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..].split_whitespace().next()?.parse().ok()
}

/// `utime + stime` (fields 14 and 15) from `/proc/<pid>/stat`.
///
/// The command name (field 2) is in parentheses and may itself hold spaces and `)`, so fields
/// are counted from the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    // After the name come field 3 (state) onwards; utime is field 14, i.e. the 12th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss() {
        let status = "Name:\tridecast-origin\nVmPeak:\t  100 kB\nVmRSS:\t   45678 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss_kb(status), Some(45_678));
        assert_eq!(parse_vm_rss_kb("Name: x\n"), None);
    }

    #[test]
    fn reads_cpu_ticks_even_with_a_tricky_name() {
        let stat = "4242 (we) ird name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 3 0 100 1000000 500";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn our_own_process_can_be_read() {
        let me = sample(std::process::id());
        assert!(me.rss_kb.is_some_and(|kb| kb > 0));
        assert!(me.cpu_us.is_some());
        let both = ServerSample::take(&[std::process::id(), std::process::id()]);
        assert!(both.rss_kb() >= me.rss_kb);
        assert_eq!(ServerSample::take(&[]).rss_kb(), None);
        assert_eq!(ServerSample::take(&[u32::MAX]).cpu_us(), None);
    }
}
