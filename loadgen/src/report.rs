//! Tallies: what each worker counted, how tallies of several workers add up, and the final
//! report (one JSON line on stdout, a table on stderr).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::job::Mode;
use crate::procfs::ServerSample;
use crate::stats::{Histogram, Summary};

/// Rider connections of one worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RiderTally {
    pub attempted: u64,
    /// Got `200 text/event-stream` (stream modes) or a TCP connection (poll mode).
    pub connected: u64,
    /// Failed attempts by kind (`http_503`, `timeout`, `io_connectionrefused`, …).
    pub failures: BTreeMap<String, u64>,
    pub connect_us: Histogram,
    /// Streams still open when the report was taken.
    pub open_at_end: u64,
    /// Streams the server ended before `go` (a full server answers 200 then ends at once).
    pub closed_before_go: u64,
    pub closed_during_run: u64,
}

/// Driver connections and sends of one worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DriverTally {
    pub attempted: u64,
    pub connected: u64,
    pub failures: BTreeMap<String, u64>,
    pub sends: u64,
    /// Sends the server under test should push: those that changed grid cell (origin), every
    /// one (Nchan).
    pub pushes: u64,
    /// Sends that changed grid cell.
    #[serde(default)]
    pub cell_changes: u64,
    pub send_errors: u64,
    /// `{"type":"error",...}` frames from the server (Nchan: publish answers other than 2xx).
    pub error_frames: u64,
    /// Connections lost (closed by the server or failed).
    pub disconnects: u64,
    /// Connections opened again after a loss (Nchan publishers reconnect; WebSockets do not).
    #[serde(default)]
    pub reconnects: u64,
    /// Time to connect (WebSocket: through the upgrade; Nchan: TCP).
    #[serde(default)]
    pub connect_us: Histogram,
}

impl DriverTally {
    /// Driver connections still open: connected, minus lost, plus opened again.
    pub fn open_at_end(&self) -> u64 {
        (self.connected + self.reconnects).saturating_sub(self.disconnects)
    }
}

/// Location events seen by one worker's riders.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventTally {
    /// New events sent during the measured window; each one is a latency sample.
    pub received: u64,
    /// Events older than the window (the current value sent on connect).
    pub before_window: u64,
    /// Events not newer than one already seen on the same stream.
    pub duplicate: u64,
    /// Events for updates that stayed in the same cell (which should not be pushed).
    pub not_a_push: u64,
    /// Other events, or location events without a usable `ts`.
    pub other: u64,
    /// Comment lines (heartbeats).
    pub comments: u64,
    /// Bytes read by the rider streams from `go` on: events, heartbeats, HTTP framing.
    #[serde(default)]
    pub bytes_read: u64,
    pub latency_us: Histogram,
    /// Samples whose send instant was estimated from `ts` (driver in another process).
    pub latency_estimated: u64,
}

/// Poll-mode requests of one worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PollTally {
    pub requests: u64,
    pub ok: u64,
    pub not_modified: u64,
    pub not_found: u64,
    pub other_status: u64,
    pub errors: u64,
    pub reconnects: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// 200 responses that showed a newer location than the rider had.
    #[serde(default)]
    pub fresh: u64,
    pub request_us: Histogram,
    /// From a driver's send to the first response showing it (or something newer).
    pub staleness_us: Histogram,
    /// The same, for the updates that changed cell only (the ones push delivers).
    #[serde(default)]
    pub staleness_cell_change_us: Histogram,
    pub staleness_estimated: u64,
}

/// Everything one worker counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    pub riders: RiderTally,
    pub drivers: DriverTally,
    pub events: EventTally,
    pub poll: PollTally,
    /// `(driver, riders connected)` for the riders of this worker.
    pub riders_by_driver: Vec<(u32, u64)>,
    /// `(driver, pushes)` for the drivers this worker simulated.
    pub pushes_by_driver: Vec<(u32, u64)>,
    /// The generator's own cost, so that its per-connection weight stays in view.
    #[serde(default)]
    pub generator: GeneratorTally,
}

/// What the worker processes themselves used, summed over workers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GeneratorTally {
    /// Resident memory when the report was taken, every connection still open.
    pub rss_kb: u64,
    /// User plus system CPU time since the process started.
    pub cpu_us: u64,
}

fn add_map(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (kind, n) in from {
        *into.entry(kind.clone()).or_default() += n;
    }
}

impl WorkerReport {
    /// Adds another worker's tallies to these.
    pub fn merge(&mut self, other: &WorkerReport) {
        let (r, o) = (&mut self.riders, &other.riders);
        r.attempted += o.attempted;
        r.connected += o.connected;
        add_map(&mut r.failures, &o.failures);
        r.connect_us.merge(&o.connect_us);
        r.open_at_end += o.open_at_end;
        r.closed_before_go += o.closed_before_go;
        r.closed_during_run += o.closed_during_run;

        let (d, o) = (&mut self.drivers, &other.drivers);
        d.attempted += o.attempted;
        d.connected += o.connected;
        add_map(&mut d.failures, &o.failures);
        d.sends += o.sends;
        d.pushes += o.pushes;
        d.cell_changes += o.cell_changes;
        d.send_errors += o.send_errors;
        d.error_frames += o.error_frames;
        d.disconnects += o.disconnects;
        d.reconnects += o.reconnects;
        d.connect_us.merge(&o.connect_us);

        let (e, o) = (&mut self.events, &other.events);
        e.received += o.received;
        e.before_window += o.before_window;
        e.duplicate += o.duplicate;
        e.not_a_push += o.not_a_push;
        e.other += o.other;
        e.comments += o.comments;
        e.bytes_read += o.bytes_read;
        e.latency_us.merge(&o.latency_us);
        e.latency_estimated += o.latency_estimated;

        let (p, o) = (&mut self.poll, &other.poll);
        p.requests += o.requests;
        p.ok += o.ok;
        p.not_modified += o.not_modified;
        p.not_found += o.not_found;
        p.other_status += o.other_status;
        p.errors += o.errors;
        p.reconnects += o.reconnects;
        p.bytes_read += o.bytes_read;
        p.bytes_written += o.bytes_written;
        p.fresh += o.fresh;
        p.request_us.merge(&o.request_us);
        p.staleness_us.merge(&o.staleness_us);
        p.staleness_cell_change_us.merge(&o.staleness_cell_change_us);
        p.staleness_estimated += o.staleness_estimated;

        self.riders_by_driver.extend_from_slice(&other.riders_by_driver);
        self.pushes_by_driver.extend_from_slice(&other.pushes_by_driver);
        self.generator.rss_kb += other.generator.rss_kb;
        self.generator.cpu_us += other.generator.cpu_us;
    }

    /// Events the riders should have received: each driver's pushes times its connected
    /// riders.
    pub fn expected_events(&self) -> u64 {
        let mut riders: BTreeMap<u32, u64> = BTreeMap::new();
        for &(d, n) in &self.riders_by_driver {
            *riders.entry(d).or_default() += n;
        }
        self.pushes_by_driver.iter().map(|&(d, pushes)| pushes * riders.get(&d).copied().unwrap_or(0)).sum()
    }
}

/// The server readings of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerReadings {
    pub pids: Vec<u32>,
    /// Before any connection was opened.
    pub before: ServerSample,
    /// With every connection open, at `go`.
    pub at_go: ServerSample,
    /// At the end: after the hold (idle) or after the drain.
    pub at_end: ServerSample,
}

/// The facts of a run that are not counted by workers.
#[derive(Debug, Clone, Serialize)]
pub struct RunFacts {
    pub mode: Mode,
    pub procs: usize,
    pub urls: Vec<String>,
    pub run_tag: String,
    /// The mode's parameters as given.
    pub params: serde_json::Value,
    /// Seconds from `go` to `stop`.
    pub window_secs: f64,
}

#[derive(Debug, Serialize)]
struct Delivery {
    expected: u64,
    received: u64,
    /// Expected events that never arrived (0 when nothing was lost).
    lost: u64,
    ratio: Option<f64>,
    /// Events delivered per second of the window, over all riders.
    per_sec: Option<f64>,
}

#[derive(Debug, Serialize)]
struct ServerOut {
    pids: Vec<u32>,
    rss_kb_before: Option<u64>,
    rss_kb_at_go: Option<u64>,
    rss_kb_at_end: Option<u64>,
    /// (RSS at end − RSS before) / connections (rider streams and drivers) open at the end.
    rss_bytes_per_connection: Option<f64>,
    /// CPU time (user + system) from `go` to the end.
    cpu_us: Option<u64>,
    cpu_percent_of_one_core: Option<f64>,
    cpu_us_per_delivered_event: Option<f64>,
    /// Server CPU / driver fixes sent: what one driver update costs, whether pushed or not.
    cpu_us_per_fix: Option<f64>,
    cpu_us_per_request: Option<f64>,
    samples: ServerReadingsOut,
}

#[derive(Debug, Serialize)]
struct ServerReadingsOut {
    before: ServerSample,
    at_go: ServerSample,
    at_end: ServerSample,
}

#[derive(Debug, Serialize)]
struct PollOut {
    requests: u64,
    requests_per_sec: Option<f64>,
    responses: u64,
    ok_200: u64,
    not_modified_304: u64,
    not_found_404: u64,
    other_status: u64,
    errors: u64,
    reconnects: u64,
    ratio_304: Option<f64>,
    /// 200 responses showing a newer location: the useful ones.
    fresh_200: u64,
    bytes_read: u64,
    bytes_written: u64,
    bytes_read_per_response: Option<f64>,
    bytes_written_per_request: Option<f64>,
    /// (bytes read + written) / fresh responses.
    wire_bytes_per_useful_update: Option<f64>,
    request_us: Summary,
    staleness_us: Summary,
    staleness_cell_change_us: Summary,
    staleness_estimated: u64,
}

/// The final report, as printed.
#[derive(Debug, Serialize)]
pub struct RunReport {
    #[serde(flatten)]
    facts: RunFacts,
    /// Rider streams (or poll connections) and driver connections open at the end.
    connections_open_at_end: u64,
    riders: RiderOut,
    drivers: DriverOut,
    delivery: Option<Delivery>,
    latency_us: Option<Summary>,
    events: EventsOut,
    poll: Option<PollOut>,
    server: ServerOut,
    generator: GeneratorOut,
}

#[derive(Debug, Serialize)]
struct GeneratorOut {
    rss_kb: u64,
    /// Generator RSS / connections open at the end (includes the process's fixed cost).
    rss_bytes_per_connection: Option<f64>,
    cpu_us: u64,
}

#[derive(Debug, Serialize)]
struct RiderOut {
    attempted: u64,
    connected: u64,
    failed: u64,
    failures: BTreeMap<String, u64>,
    open_at_end: u64,
    closed_before_go: u64,
    closed_during_run: u64,
    connect_us: Summary,
}

#[derive(Debug, Serialize)]
struct DriverOut {
    attempted: u64,
    connected: u64,
    failures: BTreeMap<String, u64>,
    sends: u64,
    pushes: u64,
    cell_changes: u64,
    send_errors: u64,
    error_frames: u64,
    disconnects: u64,
    reconnects: u64,
    open_at_end: u64,
    connect_us: Summary,
}

#[derive(Debug, Serialize)]
struct EventsOut {
    received: u64,
    before_window: u64,
    duplicate: u64,
    not_a_push: u64,
    other: u64,
    comments: u64,
    latency_estimated: u64,
    bytes_read: u64,
    /// Stream bytes read per new event: the wire cost of one useful update.
    wire_bytes_per_useful_update: Option<f64>,
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

fn per(num: Option<u64>, den: u64) -> Option<f64> {
    num.and_then(|n| ratio(n, den))
}

impl RunReport {
    /// Combines the workers' merged tallies with the run's facts and server readings.
    pub fn new(facts: RunFacts, all: &WorkerReport, server: &ServerReadings) -> Self {
        let streams = facts.mode != Mode::Poll;
        let pushes = facts.mode.has_drivers() && streams;
        let cpu_us = match (server.at_end.cpu_us(), server.at_go.cpu_us()) {
            (Some(end), Some(go)) => Some(end.saturating_sub(go)),
            _ => None,
        };
        let rss_growth_bytes = match (server.at_end.rss_kb(), server.before.rss_kb()) {
            (Some(end), Some(before)) => Some(end.saturating_sub(before) * 1024),
            _ => None,
        };
        let open = if streams { all.riders.open_at_end } else { all.riders.connected } + all.drivers.open_at_end();
        let p = &all.poll;
        let responses = p.ok + p.not_modified + p.not_found + p.other_status;
        let poll = (facts.mode == Mode::Poll).then(|| PollOut {
            requests: p.requests,
            requests_per_sec: (facts.window_secs > 0.0).then(|| p.requests as f64 / facts.window_secs),
            responses,
            ok_200: p.ok,
            not_modified_304: p.not_modified,
            not_found_404: p.not_found,
            other_status: p.other_status,
            errors: p.errors,
            reconnects: p.reconnects,
            ratio_304: ratio(p.not_modified, responses),
            fresh_200: p.fresh,
            bytes_read: p.bytes_read,
            bytes_written: p.bytes_written,
            bytes_read_per_response: ratio(p.bytes_read, responses),
            bytes_written_per_request: ratio(p.bytes_written, p.requests),
            wire_bytes_per_useful_update: ratio(p.bytes_read + p.bytes_written, p.fresh),
            request_us: p.request_us.summary(),
            staleness_us: p.staleness_us.summary(),
            staleness_cell_change_us: p.staleness_cell_change_us.summary(),
            staleness_estimated: p.staleness_estimated,
        });
        let server_out = ServerOut {
            pids: server.pids.clone(),
            rss_kb_before: server.before.rss_kb(),
            rss_kb_at_go: server.at_go.rss_kb(),
            rss_kb_at_end: server.at_end.rss_kb(),
            rss_bytes_per_connection: per(rss_growth_bytes, open),
            cpu_us,
            cpu_percent_of_one_core: cpu_us
                .filter(|_| facts.window_secs > 0.0)
                .map(|us| us as f64 / (facts.window_secs * 1e6) * 100.0),
            cpu_us_per_delivered_event: if pushes { per(cpu_us, all.events.received) } else { None },
            // The same CPU reading (from `go` to the end of the drain) over the fixes sent
            // between `go` and `stop`: the drain only finishes delivering those fixes.
            cpu_us_per_fix: if facts.mode.has_drivers() { per(cpu_us, all.drivers.sends) } else { None },
            cpu_us_per_request: if facts.mode == Mode::Poll { per(cpu_us, p.requests) } else { None },
            samples: ServerReadingsOut {
                before: server.before.clone(),
                at_go: server.at_go.clone(),
                at_end: server.at_end.clone(),
            },
        };
        let r = &all.riders;
        let e = &all.events;
        Self {
            connections_open_at_end: open,
            riders: RiderOut {
                attempted: r.attempted,
                connected: r.connected,
                failed: r.failures.values().sum(),
                failures: r.failures.clone(),
                open_at_end: r.open_at_end,
                closed_before_go: r.closed_before_go,
                closed_during_run: r.closed_during_run,
                connect_us: r.connect_us.summary(),
            },
            drivers: DriverOut {
                attempted: all.drivers.attempted,
                connected: all.drivers.connected,
                failures: all.drivers.failures.clone(),
                sends: all.drivers.sends,
                pushes: all.drivers.pushes,
                cell_changes: all.drivers.cell_changes,
                send_errors: all.drivers.send_errors,
                error_frames: all.drivers.error_frames,
                disconnects: all.drivers.disconnects,
                reconnects: all.drivers.reconnects,
                open_at_end: all.drivers.open_at_end(),
                connect_us: all.drivers.connect_us.summary(),
            },
            delivery: pushes.then(|| {
                let expected = all.expected_events();
                Delivery {
                    expected,
                    received: e.received,
                    lost: expected.saturating_sub(e.received),
                    ratio: ratio(e.received, expected),
                    per_sec: (facts.window_secs > 0.0).then(|| e.received as f64 / facts.window_secs),
                }
            }),
            latency_us: pushes.then(|| e.latency_us.summary()),
            events: EventsOut {
                received: e.received,
                before_window: e.before_window,
                duplicate: e.duplicate,
                not_a_push: e.not_a_push,
                other: e.other,
                comments: e.comments,
                latency_estimated: e.latency_estimated,
                bytes_read: e.bytes_read,
                wire_bytes_per_useful_update: if pushes { ratio(e.bytes_read, e.received) } else { None },
            },
            poll,
            server: server_out,
            generator: GeneratorOut {
                rss_kb: all.generator.rss_kb,
                rss_bytes_per_connection: ratio(all.generator.rss_kb * 1024, open),
                cpu_us: all.generator.cpu_us,
            },
            facts,
        }
    }

    /// The report as one line of JSON.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"report not serializable: {e}\"}}"))
    }

    /// The report as a table for people.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let f = &self.facts;
        let _ = writeln!(
            t,
            "ridecast-loadgen {} | procs {} | urls {} | window {:.1} s | params {}",
            f.mode.as_str(),
            f.procs,
            f.urls.join(","),
            f.window_secs,
            f.params
        );
        let r = &self.riders;
        // Idle driver runs have no riders: no rider lines then.
        let riders = r.attempted > 0 || f.mode != Mode::Idle;
        if riders {
            let _ = writeln!(
                t,
                "  riders     attempted {:>7}  connected {:>7}  failed {:>6}  open at end {:>7}  closed before go {}  closed during run {}",
                r.attempted, r.connected, r.failed, r.open_at_end, r.closed_before_go, r.closed_during_run
            );
            if !r.failures.is_empty() {
                let _ = writeln!(t, "             failures {}", kinds(&r.failures));
            }
            let _ = writeln!(t, "  connect    {}", ms_line(&r.connect_us));
        }
        if f.mode.has_drivers() || self.drivers.attempted > 0 {
            let d = &self.drivers;
            let _ = writeln!(
                t,
                "  drivers    attempted {:>7}  connected {:>7}  sends {:>8}  pushes {:>8}  send errors {}  error frames {}  disconnects {}  reconnects {}",
                d.attempted, d.connected, d.sends, d.pushes, d.send_errors, d.error_frames, d.disconnects, d.reconnects
            );
            if !d.failures.is_empty() {
                let _ = writeln!(t, "             failures {}", kinds(&d.failures));
            }
            let _ = writeln!(t, "  connect    {}", ms_line(&d.connect_us));
            if f.mode.has_drivers() {
                let _ = writeln!(
                    t,
                    "  fixes      sent {:>8}  changed cell {:>8} ({} %)  pushed by the server {:>8}",
                    d.sends,
                    d.cell_changes,
                    opt(ratio(d.cell_changes, d.sends).map(|r| r * 100.0), 1),
                    d.pushes
                );
            }
        }
        if let Some(delivery) = &self.delivery {
            let _ = writeln!(
                t,
                "  delivery   expected {:>8}  received {:>8}  lost {:>8}{}  ratio {}  ({}/s)",
                delivery.expected,
                delivery.received,
                delivery.lost,
                if delivery.lost == 0 { " (nothing lost)" } else { " (SOME LOST)" },
                delivery.ratio.map_or("n/a".into(), |r| format!("{:.4}", r)),
                opt(delivery.per_sec, 1)
            );
            let e = &self.events;
            let _ = writeln!(
                t,
                "  events     old {}  duplicate {}  not-a-push {}  other {}  comments {}  estimated-latency {}",
                e.before_window, e.duplicate, e.not_a_push, e.other, e.comments, e.latency_estimated
            );
            let _ = writeln!(
                t,
                "  wire       read {} B in all = {} B per delivered event",
                e.bytes_read,
                opt(e.wire_bytes_per_useful_update, 1)
            );
        } else if f.mode == Mode::Idle && riders {
            let _ =
                writeln!(t, "  events     comments (heartbeats) {}  other {}", self.events.comments, self.events.other);
        }
        if let Some(latency) = &self.latency_us {
            let _ = writeln!(t, "  latency    {}", ms_line(latency));
        }
        if let Some(p) = &self.poll {
            let _ = writeln!(
                t,
                "  poll       requests {}  ({}/s)  200 {}  304 {}  404 {}  other {}  errors {}  reconnects {}  304 ratio {}",
                p.requests,
                opt(p.requests_per_sec, 1),
                p.ok_200,
                p.not_modified_304,
                p.not_found_404,
                p.other_status,
                p.errors,
                p.reconnects,
                opt(p.ratio_304, 4)
            );
            let _ = writeln!(
                t,
                "  wire       read {} B/response  written {} B/request  (total read {} B, written {} B)",
                opt(p.bytes_read_per_response, 1),
                opt(p.bytes_written_per_request, 1),
                p.bytes_read,
                p.bytes_written
            );
            let _ = writeln!(
                t,
                "  useful     {} responses showed a newer location = {} B on the wire per useful update",
                p.fresh_200,
                opt(p.wire_bytes_per_useful_update, 1)
            );
            let _ = writeln!(t, "  request    {}", ms_line(&p.request_us));
            let _ = writeln!(t, "  staleness  {}  estimated {}", ms_line(&p.staleness_us), p.staleness_estimated);
            let _ = writeln!(t, "   cell chg  {}", ms_line(&p.staleness_cell_change_us));
        }
        let s = &self.server;
        if s.pids.is_empty() {
            let _ = writeln!(t, "  server     (no --server-pid given)");
        } else {
            let _ = writeln!(
                t,
                "  server     pids {:?}  rss before {}  at go {}  at end {}  = {} per connection ({} open)",
                s.pids,
                kib(s.rss_kb_before),
                kib(s.rss_kb_at_go),
                kib(s.rss_kb_at_end),
                s.rss_bytes_per_connection.map_or("n/a".into(), |b| format!("{:.0} B", b)),
                self.connections_open_at_end
            );
            let _ = writeln!(
                t,
                "             cpu {} ms ({} % of one core){}{}{}",
                s.cpu_us.map_or("n/a".into(), |us| format!("{:.0}", us as f64 / 1000.0)),
                opt(s.cpu_percent_of_one_core, 1),
                s.cpu_us_per_delivered_event.map_or(String::new(), |us| format!("  = {us:.2} µs per delivered event")),
                s.cpu_us_per_fix.map_or(String::new(), |us| format!("  = {us:.2} µs per fix")),
                s.cpu_us_per_request.map_or(String::new(), |us| format!("  = {us:.2} µs per request")),
            );
        }
        let g = &self.generator;
        let _ = writeln!(
            t,
            "  generator  rss {} = {} per connection  cpu {:.0} ms",
            kib(Some(g.rss_kb)),
            g.rss_bytes_per_connection.map_or("n/a".into(), |b| format!("{:.0} B", b)),
            g.cpu_us as f64 / 1000.0
        );
        t
    }
}

fn kinds(map: &BTreeMap<String, u64>) -> String {
    map.iter().map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>().join(" ")
}

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or("n/a".into(), |v| format!("{v:.decimals$}"))
}

fn kib(kb: Option<u64>) -> String {
    kb.map_or("n/a".into(), |kb| format!("{:.1} MiB", kb as f64 / 1024.0))
}

fn ms_line(s: &Summary) -> String {
    let ms = |v: Option<u64>| v.map_or("n/a".into(), |us| format!("{:.3}", us as f64 / 1000.0));
    format!(
        "n {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {} ms  (mean {})",
        s.count,
        ms(s.p50),
        ms(s.p90),
        ms(s.p99),
        ms(s.p999),
        ms(s.max),
        s.mean.map_or("n/a".into(), |m| format!("{:.3}", m / 1000.0))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(riders: &[(u32, u64)], pushes: &[(u32, u64)], latencies: &[u64]) -> WorkerReport {
        let mut report =
            WorkerReport { riders_by_driver: riders.to_vec(), pushes_by_driver: pushes.to_vec(), ..Default::default() };
        report.events.latency_us = Histogram::from_samples(latencies);
        report.events.received = latencies.len() as u64;
        report.riders.connected = riders.iter().map(|r| r.1).sum();
        report.riders.failures.insert("http_503".into(), 1);
        report
    }

    #[test]
    fn expected_events_count_riders_of_a_driver_across_workers() {
        // Driver 0 lives in worker A; its riders are split over A and B.
        let mut all = worker(&[(0, 60)], &[(0, 30)], &[1000, 2000]);
        all.merge(&worker(&[(0, 40), (1, 100)], &[(1, 10)], &[3000]));
        assert_eq!(all.expected_events(), 30 * 100 + 10 * 100);
        assert_eq!(all.events.received, 3);
        assert_eq!(all.events.latency_us.count(), 3);
        assert_eq!(all.riders.failures.get("http_503"), Some(&2));
        assert_eq!(all.riders.connected, 200);
    }

    #[test]
    fn the_report_derives_ratios_and_server_costs() {
        let mut all = worker(&[(0, 2)], &[(0, 2)], &[1000, 2000, 3000, 4000]);
        all.riders.open_at_end = 2;
        all.drivers.sends = 8;
        all.drivers.pushes = 2;
        all.drivers.cell_changes = 2;
        let sample = |rss, cpu| ServerSample {
            processes: vec![crate::procfs::ProcSample { pid: 1, rss_kb: Some(rss), cpu_us: Some(cpu) }],
        };
        let server = ServerReadings {
            pids: vec![1],
            before: sample(1000, 0),
            at_go: sample(1100, 500),
            at_end: sample(1200, 4500),
        };
        let facts = RunFacts {
            mode: Mode::Fanout,
            procs: 1,
            urls: vec!["http://x".into()],
            run_tag: "t".into(),
            params: serde_json::json!({}),
            window_secs: 2.0,
        };
        let report = RunReport::new(facts, &all, &server);
        let json: serde_json::Value = serde_json::from_str(&report.to_json_line()).expect("json");
        assert_eq!(json["delivery"]["expected"], 4);
        assert_eq!(json["delivery"]["ratio"], 1.0);
        assert_eq!(json["server"]["cpu_us"], 4000);
        assert_eq!(json["server"]["cpu_us_per_delivered_event"], 1000.0);
        assert_eq!(json["server"]["cpu_us_per_fix"], 4000.0 / 8.0);
        assert_eq!(json["drivers"]["cell_changes"], 2);
        assert_eq!(json["delivery"]["lost"], 0);
        assert_eq!(json["server"]["rss_bytes_per_connection"], 200.0 * 1024.0 / 2.0);
        assert_eq!(json["mode"], "fanout");
        assert_eq!(json["delivery"]["per_sec"], 2.0);
        let table = report.table();
        assert!(table.contains("delivery   expected        4"), "{table}");
        assert!(table.contains("(nothing lost)") && table.contains("500.00 µs per fix"), "{table}");
        assert!(table.contains("changed cell        2 (25.0 %)"), "{table}");
    }

    fn facts(mode: Mode) -> RunFacts {
        RunFacts {
            mode,
            procs: 1,
            urls: vec!["http://x".into()],
            run_tag: "t".into(),
            params: serde_json::json!({}),
            window_secs: 10.0,
        }
    }

    fn rss(before: u64, end: u64) -> ServerReadings {
        let sample = |rss| ServerSample {
            processes: vec![crate::procfs::ProcSample { pid: 1, rss_kb: Some(rss), cpu_us: Some(0) }],
        };
        ServerReadings { pids: vec![1], before: sample(before), at_go: sample(end), at_end: sample(end) }
    }

    #[test]
    fn idle_drivers_count_as_connections_for_memory() {
        let mut all = WorkerReport::default();
        all.drivers.attempted = 1000;
        all.drivers.connected = 1000;
        all.drivers.disconnects = 10;
        let report = RunReport::new(facts(Mode::Idle), &all, &rss(10_000, 20_000));
        let json: serde_json::Value = serde_json::from_str(&report.to_json_line()).expect("json");
        assert_eq!(json["connections_open_at_end"], 990);
        assert_eq!(json["server"]["rss_bytes_per_connection"], 10_000.0 * 1024.0 / 990.0);
        assert!(report.table().contains("drivers    attempted    1000"), "{}", report.table());
    }

    #[test]
    fn wire_bytes_per_useful_update_for_push_and_poll() {
        let mut push = WorkerReport::default();
        push.events.received = 50;
        push.events.bytes_read = 10_000;
        push.riders_by_driver = vec![(0, 10)];
        push.pushes_by_driver = vec![(0, 5)];
        let json: serde_json::Value =
            serde_json::from_str(&RunReport::new(facts(Mode::Realistic), &push, &rss(1, 1)).to_json_line())
                .expect("json");
        assert_eq!(json["events"]["wire_bytes_per_useful_update"], 200.0);

        let mut poll = WorkerReport::default();
        poll.poll.requests = 100;
        poll.poll.ok = 30;
        poll.poll.not_modified = 70;
        poll.poll.fresh = 25;
        poll.poll.bytes_read = 20_000;
        poll.poll.bytes_written = 30_000;
        let json: serde_json::Value =
            serde_json::from_str(&RunReport::new(facts(Mode::Poll), &poll, &rss(1, 1)).to_json_line()).expect("json");
        assert_eq!(json["poll"]["wire_bytes_per_useful_update"], 2000.0);
        assert_eq!(json["poll"]["requests_per_sec"], 10.0);
        assert!(json["events"]["wire_bytes_per_useful_update"].is_null());
    }
}
