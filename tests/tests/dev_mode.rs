//! Dev mode is local only (PROTOCOL v1.1): without `RIDECAST_TOKEN_SECRET` every token is signed
//! with a secret anyone can read in our source, so an origin runs like that only on a loopback
//! address and without Redis, and otherwise exits with status 2 naming the variable. Its ready-made
//! tokens are printed once on stdout for the person at the console, never into the log. `*` as a
//! CORS origin is accepted in dev mode only.

use std::net::SocketAddr;
use std::time::Duration;

use ridecast_tests::net::free_port;
use ridecast_tests::{Auth, DriverSocket, Exited, Origin, RedisServer};

/// Refusing a configuration happens before anything is bound: well within this.
const EXIT_LIMIT: Duration = Duration::from_secs(15);

/// Every interface, on a free port: what the container image configures.
fn every_interface() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], free_port()))
}

/// Checks that `run` was refused as a configuration: status 2, the log naming `words`, and
/// nothing ever answering `/readyz`.
fn assert_refused(run: &Exited, words: &[&str], what: &str) {
    assert_eq!(run.status.code(), Some(2), "{what}: expected exit status 2; log:\n{}", run.log);
    for word in words {
        assert!(run.log.contains(word), "{what}: the error should name {word:?}; log:\n{}", run.log);
    }
    assert!(!run.readyz_answered, "{what}: /readyz answered while it should never have served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_an_origin_on_every_interface_exits_with_2_naming_the_secret() {
    let run = Origin::builder().dev_mode().listen_on(every_interface()).run_to_exit(EXIT_LIMIT).await;
    assert_refused(&run, &["RIDECAST_TOKEN_SECRET", "loopback"], "no secret, --listen 0.0.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_the_demo_on_every_interface_exits_with_2_too() {
    let run = Origin::builder().demo().dev_mode().listen_on(every_interface()).run_to_exit(EXIT_LIMIT).await;
    assert_refused(&run, &["RIDECAST_TOKEN_SECRET", "loopback"], "ridecast-demo, no secret, --listen 0.0.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_an_origin_with_redis_exits_with_2_even_on_loopback() {
    let redis = RedisServer::start().await;
    let run = Origin::builder().dev_mode().redis(&redis).run_to_exit(EXIT_LIMIT).await;
    assert_refused(&run, &["RIDECAST_TOKEN_SECRET", "Redis"], "no secret, loopback, --redis-url");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_secret_with_open_cors_exits_with_2() {
    let run = Origin::builder().flag("--cors-origins", "*").run_to_exit(EXIT_LIMIT).await;
    assert_refused(&run, &["--cors-origins", "RIDECAST_TOKEN_SECRET"], "a secret and --cors-origins '*'");
    let run = Origin::builder().env("RIDECAST_CORS_ORIGINS", "https://app.example,*").run_to_exit(EXIT_LIMIT).await;
    assert_refused(&run, &["--cors-origins"], "a secret and RIDECAST_CORS_ORIGINS with * in the list");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_secret_serves_on_every_interface() {
    let origin = Origin::builder().listen_on(every_interface()).start().await;
    assert_eq!(origin.readyz().await, Some(200), "an origin with a secret on 0.0.0.0 is ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_on_loopback_prints_working_tokens_on_stdout_once_and_never_logs_them() {
    let origin = Origin::builder().dev_mode().start().await;
    let stdout = banner_of(&origin).await;
    assert!(stdout.contains("RIDECAST_LISTENING"), "stdout announces the address:\n{stdout}");
    assert_eq!(stdout.matches("DEV MODE").count(), 1, "the banner is printed once:\n{stdout}");
    let driver_token = line_after(&stdout, "driver d-1 token");
    let rider_url = line_after(&stdout, "rider URL following d-1");
    let rider_token = rider_url.rsplit_once("token=").map(|(_, t)| t.to_owned()).expect("a token in the rider URL");

    // The banner's tokens work: they are signed with the dev secret this origin uses.
    let socket = DriverSocket::try_connect(&origin, Auth::Bearer(&driver_token)).await;
    assert!(socket.is_ok(), "the banner's driver token opens /ws/rides: {:?}", socket.err());
    let polled = ridecast_tests::http::get(&rider_url.replace("/api/sse/", "/api/"), Auth::None, &[]).await;
    assert_ne!(polled.status().as_u16(), 401, "the banner's rider token is accepted");

    let log = origin.log();
    assert!(log.contains("DEV MODE"), "the log says dev mode is on, loudly:\n{log}");
    for (name, token) in [("driver", &driver_token), ("rider", &rider_token)] {
        let signature = token.rsplit('.').next().unwrap_or(token);
        let leaking: Vec<&str> = log.lines().filter(|line| line.contains(signature)).collect();
        assert!(leaking.is_empty(), "the dev {name} token reached the log: {leaking:#?}");
    }
}

/// The origin's stdout once its dev banner is complete.
async fn banner_of(origin: &Origin) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stdout = origin.stdout();
        if stdout.contains("rider URL following d-1") && stdout.trim_end().ends_with(|c: char| c.is_alphanumeric()) {
            return stdout;
        }
        assert!(tokio::time::Instant::now() < deadline, "no dev banner on stdout; stdout:\n{stdout}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The trimmed line after the one containing `label`.
fn line_after(text: &str, label: &str) -> String {
    let mut lines = text.lines().skip_while(|line| !line.contains(label));
    lines.next();
    lines.next().map(|line| line.trim().to_owned()).unwrap_or_else(|| panic!("no line after {label:?} in:\n{text}"))
}
