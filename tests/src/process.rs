//! What the kernel says about a running process: its open file descriptors and its resident
//! memory, read from `/proc/<pid>` (Linux only).
//!
//! The fault tests use these to show that an origin gives back what a crowd of connections or a
//! stalled reader cost it. Both are facts the process cannot misreport: a leaked socket is an
//! open descriptor, a queue that grows is resident memory.

use std::fmt;

/// Open file descriptors of process `pid`: the entries of `/proc/<pid>/fd`.
///
/// # Panics
/// If the directory cannot be read (the process is gone, or this is not Linux).
pub fn fd_count(pid: u32) -> usize {
    let dir = format!("/proc/{pid}/fd");
    std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {dir}: {e}")).count()
}

/// Resident memory of process `pid`: `VmRSS` in `/proc/<pid>/status`.
///
/// # Panics
/// If the file cannot be read or has no `VmRSS` line in kB.
pub fn rss(pid: u32) -> Bytes {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{path} has no `VmRSS: <n> kB` line:\n{status}"));
    Bytes(kib * 1024)
}

/// A number of bytes, shown in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Bytes(pub u64);

impl Bytes {
    /// `n` MiB.
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }

    /// How much `self` exceeds `base` (zero if it does not).
    pub fn above(self, base: Bytes) -> Bytes {
        Bytes(self.0.saturating_sub(base.0))
    }
}

impl std::ops::Add for Bytes {
    type Output = Bytes;

    fn add(self, other: Bytes) -> Bytes {
        Bytes(self.0 + other.0)
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1} MiB", self.0 as f64 / (1024.0 * 1024.0))
    }
}

/// The highest resident memory seen over a series of samples.
#[derive(Debug, Clone, Copy)]
pub struct RssPeak {
    pid: u32,
    peak: Bytes,
    samples: usize,
}

impl RssPeak {
    /// Starts watching `pid`, with its resident memory now as the first sample.
    pub fn new(pid: u32) -> Self {
        Self { pid, peak: rss(pid), samples: 1 }
    }

    /// Takes one more sample and returns it.
    pub fn sample(&mut self) -> Bytes {
        let now = rss(self.pid);
        self.peak = self.peak.max(now);
        self.samples += 1;
        now
    }

    /// The highest sample so far.
    pub fn peak(&self) -> Bytes {
        self.peak
    }

    /// How many samples were taken.
    pub fn samples(&self) -> usize {
        self.samples
    }
}
