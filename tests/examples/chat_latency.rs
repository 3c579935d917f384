//! Benchmark: ride chat delivery latency, from a message leaving one participant's socket to its
//! arrival on the other participant's socket on another instance.
//!
//! Starts a private redis-server (or with `REDIS=cluster` a Redis Cluster of three primaries and
//! three replicas) and two origins sharing it (release build), makes `RIDES` rides
//! with an assigned driver each (requested on origin A, accepted by a driver online on origin B),
//! and opens each ride's chat twice: the rider's on A, the driver's on B. Every ride then talks
//! ping-pong, all rides at once: the rider says something, and once the driver has it the driver
//! answers, and so on, until `MESSAGES` messages (split evenly over rides and directions) have
//! crossed. Each message is timed twice: delivery (send → the other side has it) and echo (send
//! → the sender's own ack). The per-sender rate limit is raised to its maximum (`--chat-rate`,
//! `--chat-burst` 1000): this measures delivery, not the limiter. Prints a markdown table and
//! one JSON line.
//!
//! ```sh
//! cargo run --release -p ridecast-tests --example chat_latency              # 20 rides, 2,000 messages
//! RIDES=50 MESSAGES=10000 TEXT_CHARS=200 cargo run --release -p ridecast-tests --example chat_latency
//! ```

use std::time::{Duration, Instant};

use ridecast_protocol::chat::ChatServerFrame;
use ridecast_tests::chat::{AssignedRide, Next, parse_server_frame};
use ridecast_tests::redis_cluster::AnyRedis;
use ridecast_tests::{ChatSocket, Origin};
use serde_json::json;

/// A generous bound for one message under load; a message slower than this counts as lost.
const LOST_AFTER: Duration = Duration::from_secs(10);

/// The highest chat rate and burst the origin takes (per second, and at once, per side of a
/// ride): far above what one ride's ping-pong sends.
const CHAT_RATE: u32 = 1_000;
const CHAT_BURST: u32 = 1_000;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    RiderToDriver,
    DriverToRider,
}

/// One message's timings, in microseconds.
#[derive(Debug, Clone, Copy)]
struct Sample {
    direction: Direction,
    delivery_us: u64,
    echo_us: u64,
}

/// Reads `socket` until the message `client_msg_id` arrives and says when; `None` if it does
/// not within [`LOST_AFTER`], an error frame (a refusal) comes, or the socket ends. Other frames
/// (echoes of earlier messages) are skipped.
async fn arrival(socket: &mut ChatSocket, client_msg_id: &str) -> Option<Instant> {
    let wait = async {
        loop {
            // The outer timeout fires first; the inner bound only has to be longer.
            let Next::Text(text) = socket.next(LOST_AFTER * 2, "a benchmark message").await else {
                return None;
            };
            match parse_server_frame(&text, "a benchmark message") {
                ChatServerFrame::Message(message) if message.client_msg_id == client_msg_id => {
                    return Some(Instant::now());
                }
                ChatServerFrame::Error { code, message } => {
                    eprintln!("[chat-latency] {client_msg_id}: error {code:?}: {message}");
                    return None;
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(LOST_AFTER, wait).await.ok().flatten()
}

/// One ride's ping-pong: `count` messages, alternating direction, each sent once the previous
/// one has arrived on both sockets. Returns the samples and how many messages were lost.
async fn converse(
    ride: usize,
    mut rider: ChatSocket,
    mut driver: ChatSocket,
    count: usize,
    text: String,
) -> (Vec<Sample>, usize) {
    let mut samples = Vec::with_capacity(count);
    let mut lost = 0;
    for k in 0..count {
        let direction = if k % 2 == 0 { Direction::RiderToDriver } else { Direction::DriverToRider };
        let (sender, receiver) = match direction {
            Direction::RiderToDriver => (&mut rider, &mut driver),
            Direction::DriverToRider => (&mut driver, &mut rider),
        };
        let id = format!("bench-{ride}-{k}");
        let sent = Instant::now();
        sender.send_message(&id, &text).await;
        let (delivered, echoed) = tokio::join!(arrival(receiver, &id), arrival(sender, &id));
        match (delivered, echoed) {
            (Some(delivered), Some(echoed)) => samples.push(Sample {
                direction,
                delivery_us: micros(delivered.saturating_duration_since(sent)),
                echo_us: micros(echoed.saturating_duration_since(sent)),
            }),
            _ => {
                lost += 1;
                eprintln!("[chat-latency] ride {ride}: message {k} not seen on both sides within {LOST_AFTER:?}");
                break;
            }
        }
    }
    (samples, lost)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// p50, p99 and max in milliseconds of `values` (microseconds), which it sorts.
fn summary(values: &mut [u64]) -> (f64, f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    values.sort_unstable();
    let pct = |p: f64| {
        let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
        values[rank.clamp(1, values.len()) - 1] as f64 / 1_000.0
    };
    (pct(50.0), pct(99.0), pct(100.0))
}

#[tokio::main]
async fn main() {
    let rides = setting("RIDES", 20).max(1);
    let messages = setting("MESSAGES", 2_000).max(2);
    let text_chars = setting("TEXT_CHARS", 40).clamp(1, 1_000);
    // Even per ride, so that both directions carry the same number.
    let per_ride = messages.div_ceil(rides).next_multiple_of(2);

    let redis = AnyRedis::start_from_env().await;
    let mut origins = Vec::new();
    for _ in 0..2 {
        let builder =
            Origin::builder().redis_url(redis.url()).flag("--chat-rate", CHAT_RATE).flag("--chat-burst", CHAT_BURST);
        origins.push(builder.start().await);
    }
    let (a, b) = (&origins[0], &origins[1]);
    eprintln!("[chat-latency] redis and 2 origins up; making {rides} rides with an assigned driver");

    let mut conversations = Vec::with_capacity(rides);
    for i in 0..rides {
        let ride = AssignedRide::start(a, b, &format!("bench-r{i}"), &format!("bench-d{i}")).await;
        let rider = ChatSocket::connect(a, &ride.ride_id, &ride.ride_token, None).await;
        let driver = ChatSocket::connect(b, &ride.ride_id, &ride.driver_token, None).await;
        conversations.push((ride, rider, driver));
    }
    eprintln!("[chat-latency] {rides} rides; {per_ride} messages each, ping-pong, all rides at once");

    let text = "x".repeat(text_chars);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(rides);
    let mut kept = Vec::with_capacity(rides);
    for (i, (ride, rider, driver)) in conversations.into_iter().enumerate() {
        tasks.push(tokio::spawn(converse(i, rider, driver, per_ride, text.clone())));
        // The driver's ride socket stays open until the end, like the ride.
        kept.push(ride);
    }
    let mut samples = Vec::with_capacity(rides * per_ride);
    let mut lost = 0;
    for task in tasks {
        let (ride_samples, ride_lost) = task.await.expect("a conversation task");
        samples.extend(ride_samples);
        lost += ride_lost;
    }
    let elapsed = started.elapsed();
    drop(kept);

    let pick = |filter: &dyn Fn(&Sample) -> bool, value: fn(&Sample) -> u64| -> Vec<u64> {
        samples.iter().filter(|s| filter(s)).map(value).collect()
    };
    let rows = [
        ("rider → driver", pick(&|s| s.direction == Direction::RiderToDriver, |s| s.delivery_us)),
        ("driver → rider", pick(&|s| s.direction == Direction::DriverToRider, |s| s.delivery_us)),
        ("both directions", pick(&|_| true, |s| s.delivery_us)),
        ("echo to the sender (ack)", pick(&|_| true, |s| s.echo_us)),
    ];
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let mut report = format!(
        "### Chat latency: 2 origins + {} ({profile} build), {rides} rides, rider on A, driver on B\n\n\
         {} messages timed, {lost} lost, {text_chars}-character texts, in {:.1} s ({:.0} messages/s)\n\n\
         | path | messages | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|\n",
        redis.describe(),
        samples.len(),
        elapsed.as_secs_f64(),
        samples.len() as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
    );
    let mut json_rows = serde_json::Map::new();
    for (name, mut values) in rows {
        let (p50, p99, max) = summary(&mut values);
        report.push_str(&format!("| {name} | {} | {p50:.3} | {p99:.3} | {max:.3} |\n", values.len()));
        json_rows
            .insert(name.to_owned(), json!({"messages": values.len(), "p50_ms": p50, "p99_ms": p99, "max_ms": max}));
    }
    eprintln!("{report}");
    println!(
        "{}",
        json!({"bench": "chat_latency", "rides": rides, "messages": samples.len(), "lost": lost,
               "text_chars": text_chars, "elapsed_s": elapsed.as_secs_f64(), "paths": json_rows})
    );
}
