//! Sockets: the file-descriptor limit, client connections from chosen source addresses, and
//! the pace at which they are opened.
//!
//! A TCP connection is named by (source ip, source port, destination ip, destination port). To
//! one origin port a single source address offers only so many ports, so large runs spread
//! their connections over 127.0.0.2, 127.0.0.3, … — every address in 127.0.0.0/8 reaches the
//! loopback interface on Linux.
//!
//! Ports are chosen here rather than by the kernel: `bind(ip, 0)` makes the kernel search the
//! whole ephemeral range for a free port, and with ~19,000 ports taken that search cost about a
//! millisecond of system time per connection (20 s for 19,000 riders), starving the server
//! under test of CPU. Binding an explicit port is a single hash lookup.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// Raises the soft limit on open files to the hard limit and returns the new soft limit.
///
/// # Errors
/// The `setrlimit` failure, if the kernel refuses.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Lowest source port handed out (clear of the usual service ports).
const FIRST_PORT: u64 = 10_000;
/// Ports per source address.
const PORT_SPAN: u64 = 65_536 - FIRST_PORT;
/// Attempts before giving up on finding a free (address, port).
const BIND_ATTEMPTS: usize = 64;

/// Hands out (source address, port) pairs round-robin over the addresses.
#[derive(Debug)]
pub struct SourcePorts {
    ips: Vec<Ipv4Addr>,
    next: AtomicU64,
    /// Where in the port range this run starts, so that consecutive runs do not reuse the
    /// 4-tuples the previous one left in TIME_WAIT.
    offset: u64,
}

impl SourcePorts {
    /// Pairs on `ips` (none: let the kernel choose), starting at a point derived from `seed`.
    pub fn new(ips: Vec<Ipv4Addr>, seed: u64) -> Self {
        Self { ips, next: AtomicU64::new(0), offset: seed % PORT_SPAN }
    }

    /// The next pair, or `None` when no source address is configured.
    pub fn next(&self) -> Option<SocketAddr> {
        if self.ips.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let len = self.ips.len() as u64;
        let ip = self.ips[(n % len) as usize];
        let port = FIRST_PORT + (self.offset + n / len) % PORT_SPAN;
        Some(SocketAddr::V4(SocketAddrV4::new(ip, port as u16)))
    }
}

/// Connects to `addr` from the next free source pair of `sources`.
///
/// # Errors
/// The socket, bind or connect failure; [`ErrorKind::AddrInUse`] when no free pair was found.
pub async fn connect(addr: SocketAddr, sources: &SourcePorts) -> std::io::Result<TcpStream> {
    let mut last_error = None;
    for _ in 0..BIND_ATTEMPTS {
        let socket = TcpSocket::new_v4()?;
        if let Some(local) = sources.next() {
            // Lets a port whose previous connection sits in TIME_WAIT be bound again.
            socket.set_reuseaddr(true)?;
            if let Err(e) = socket.bind(local) {
                if e.kind() == ErrorKind::AddrInUse {
                    last_error = Some(e);
                    continue;
                }
                return Err(e);
            }
        }
        match socket.connect(addr).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            // The 4-tuple is still taken (TIME_WAIT not reusable): try the next port.
            Err(e) if e.kind() == ErrorKind::AddrNotAvailable || e.kind() == ErrorKind::AddrInUse => {
                last_error = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| ErrorKind::AddrInUse.into()))
}

/// Spaces connection attempts evenly: at most `rate` starts per second.
///
/// `--connect-concurrency` bounds the attempts in flight, but on loopback an attempt takes
/// well under a millisecond, so 100,000 connections would still arrive as one burst that
/// overflows the server's accept backlog (and, with several origins, lands unevenly). Each
/// attempt takes the next free slot; the lock is held only to take it, never across a wait.
#[derive(Debug)]
pub struct Pacer {
    period: Option<Duration>,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer letting `per_second` attempts start each second; 0 lets every attempt go at once.
    pub fn new(per_second: u64) -> Self {
        let period = (per_second > 0).then(|| Duration::from_nanos(1_000_000_000 / per_second));
        Self { period, next: Mutex::new(None) }
    }

    /// Waits for this attempt's slot.
    pub async fn wait(&self) {
        let Some(period) = self.period else { return };
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            take_slot(&mut next, Instant::now(), period)
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// The slot of an attempt made at `now`: the next free one, never in the past; the one after
/// it becomes free `period` later. Time left unused is not saved up for a later burst.
fn take_slot(next: &mut Option<Instant>, now: Instant, period: Duration) -> Instant {
    let slot = match *next {
        Some(free) if free > now => free,
        _ => now,
    };
    *next = Some(slot + period);
    slot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_rotate_over_addresses_then_ports_and_wrap() {
        let a = Ipv4Addr::new(127, 0, 0, 2);
        let b = Ipv4Addr::new(127, 0, 0, 3);
        let sources = SourcePorts::new(vec![a, b], PORT_SPAN - 1);
        let got: Vec<SocketAddr> = (0..4).filter_map(|_| sources.next()).collect();
        assert_eq!(
            got,
            vec![
                SocketAddr::from((a, 65_535)),
                SocketAddr::from((b, 65_535)),
                SocketAddr::from((a, 10_000)),
                SocketAddr::from((b, 10_000)),
            ]
        );
        assert_eq!(SourcePorts::new(Vec::new(), 0).next(), None);
    }

    #[test]
    fn paced_attempts_are_one_period_apart_and_idle_time_is_not_saved_up() {
        let t0 = Instant::now();
        let period = Duration::from_millis(10);
        let mut next = None;
        // Five attempts at once: slots 0, 10, 20, 30, 40 ms.
        let slots: Vec<Duration> = (0..5).map(|_| take_slot(&mut next, t0, period) - t0).collect();
        assert_eq!(slots, (0..5).map(|i| period * i).collect::<Vec<_>>());
        // One more at 45 ms gets its slot at 50 ms.
        assert_eq!(take_slot(&mut next, t0 + Duration::from_millis(45), period) - t0, Duration::from_millis(50));
        // After a quiet second the next attempt goes at once, and only one does.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(take_slot(&mut next, later, period), later);
        assert_eq!(take_slot(&mut next, later, period), later + period);
    }

    #[tokio::test]
    async fn an_unpaced_pacer_never_waits() {
        let pacer = Pacer::new(0);
        let started = std::time::Instant::now();
        for _ in 0..1000 {
            pacer.wait().await;
        }
        assert!(started.elapsed() < Duration::from_millis(100));
        assert_eq!(Pacer::new(4).period, Some(Duration::from_millis(250)));
    }

    #[tokio::test]
    async fn connects_from_the_chosen_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listener");
        let addr = listener.local_addr().expect("addr");
        let sources = SourcePorts::new(vec![Ipv4Addr::new(127, 0, 0, 2)], std::process::id().into());
        let stream = connect(addr, &sources).await.expect("connects");
        let (_, peer) = listener.accept().await.expect("accepts");
        assert_eq!(peer, stream.local_addr().expect("local"));
        assert_eq!(peer.ip(), Ipv4Addr::new(127, 0, 0, 2));
    }
}
