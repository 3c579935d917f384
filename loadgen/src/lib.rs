//! Ridecast's load generator: many riders, some drivers, and numbers about the origin.
//!
//! From the top down: each module uses only those below it.
//!
//! | module | what it holds |
//! |---|---|
//! | [`coordinator`] | starts workers (in-process or as child processes), runs the phases, samples the server, prints the report |
//! | [`cli`] | the command line (one subcommand per mode) and its translation into a worker's job |
//! | [`worker`] | one process's phase loop: spawns its drivers and riders, then builds its report |
//! | [`driver`] | a simulated driver: WebSocket to `/ws/rides`, one location per interval (or idle) |
//! | [`publisher`] | a simulated driver against Nchan: `POST /pub/{id}` on a keep-alive connection |
//! | [`rider`] | a simulated rider: an SSE stream (origin or Nchan), or a keep-alive poller |
//! | [`shared`] | what every task of a worker shares (phase signals, pacing, counters), and each connection's [`shared::Outcome`] |
//! | [`book`] | the send records of this process's drivers, for riders to look up send instants |
//! | [`trip`] | the fixes a driver sends: stamped, and marked as pushed or not, for both kinds of server |
//! | [`fleet`] | a fleet's drivers: driving as the street walker does, or standing for minutes with a phone that reports every 30 s |
//! | [`motion`] | how drivers move: a cell hopper (every update pushed), a 10 m creeper, and a street walker that waits at lights, with GPS noise |
//! | [`report`] | per-worker tallies, their merge, and the final JSON line and table |
//! | [`job`] | what a worker is asked to do: the mode, the server under test, how drivers move, where to connect |
//! | [`plan`] | who connects where: riders grouped by driver, split over processes, source addresses |
//! | [`http`] | a minimal HTTP/1.1 client: request, response head, chunked bodies |
//! | [`sse`] | an incremental Server-Sent Events reader |
//! | [`stats`] | a mergeable latency histogram with percentiles |
//! | [`procfs`] | the server's RSS and CPU time from `/proc` |
//! | [`net`] | the fd limit, client sockets bound to a chosen source address, connection pacing |
//! | [`clock`] | the wall clock that sends and receipts are stamped with |
#![forbid(unsafe_code)]

pub mod book;
pub mod cli;
pub mod clock;
pub mod coordinator;
pub mod driver;
pub mod fleet;
pub mod http;
pub mod job;
pub mod motion;
pub mod net;
pub mod plan;
pub mod procfs;
pub mod publisher;
pub mod report;
pub mod rider;
pub mod shared;
pub mod sse;
pub mod stats;
pub mod trip;
pub mod worker;
