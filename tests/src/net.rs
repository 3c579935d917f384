//! Free ports for the processes a test starts.

use std::net::{Ipv4Addr, TcpListener};

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is found by binding to port 0 and letting the listener go, so another process may
/// take it in between; the process starters in this crate retry with a fresh port when a
/// process they started dies early.
///
/// # Panics
/// If the loopback interface cannot be bound at all.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0 to find a free port");
    listener.local_addr().expect("a bound listener has an address").port()
}
