//! Ridecast's load generator: many riders, some drivers, and numbers about the origin.
//!
//! | module | what it holds |
//! |---|---|
//! | [`cli`] | the command line (one subcommand per mode) and its translation into a worker's job |
//! | [`coordinator`] | starts workers (in-process or as child processes), runs the phases, samples the server, prints the report |
//! | [`worker`] | one process's drivers and riders, their shared counters and the phase loop |
//! | [`driver`] | a simulated driver: WebSocket to `/ws/rides`, one location per interval (or idle); its stamped fixes ([`driver::Trip`]) |
//! | [`publisher`] | a simulated driver against Nchan: `POST /pub/{id}` on a keep-alive connection |
//! | [`rider`] | a simulated rider: an SSE stream (origin or Nchan), or a keep-alive poller |
//! | [`motion`] | how drivers move: a cell hopper (every update pushed) and a street walker with GPS noise |
//! | [`plan`] | who connects where: riders grouped by driver, split over processes, source addresses |
//! | [`http`] | a minimal HTTP/1.1 client: request, response head, chunked bodies |
//! | [`sse`] | an incremental Server-Sent Events reader |
//! | [`stats`] | a mergeable latency histogram with percentiles |
//! | [`report`] | per-worker tallies, their merge, and the final JSON line and table |
//! | [`procfs`] | the server's RSS and CPU time from `/proc` |
//! | [`net`] | the fd limit, client sockets bound to a chosen source address, connection pacing |
#![forbid(unsafe_code)]

pub mod cli;
pub mod coordinator;
pub mod driver;
pub mod http;
pub mod motion;
pub mod net;
pub mod plan;
pub mod procfs;
pub mod publisher;
pub mod report;
pub mod rider;
pub mod sse;
pub mod stats;
pub mod worker;
