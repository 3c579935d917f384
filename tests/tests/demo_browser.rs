//! The live demo in a real browser: Debian's headless Chromium, driven by playwright-core
//! (`tests/browser/demo.mjs`), against `ridecast-demo` in dev mode with simulated drivers. The rider
//! page gets a driver, sees its car move and chats with it; the fleet page shows the drivers
//! moving; a human driver on the driver page takes an offer and chats with the rider.
//! Screenshots land in `target/demo-screenshots/` (the README's pictures come from there).
//!
//! Needs `chromium` (`scripts/test` installs it from Debian) and `node_modules/playwright-core`
//! (`npm ci`, from package-lock.json; it never downloads a browser of its own). Without them the
//! test prints SKIPPED and passes, except in CI (`CI` set), where it fails.
//!
//! Contract: the demo's pages speak PROTOCOL.md's public API; `/demo/...` exists only in dev mode.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ridecast_tests::Origin;
use ridecast_tests::edge::repository;

/// Where Debian's `chromium` package puts the browser; `RIDECAST_TESTS_CHROMIUM` overrides it.
const CHROMIUM: &str = "/usr/bin/chromium";
/// The whole browser run, well above what it takes (about a minute) on a busy two-core machine.
/// The script has its own, shorter limit and says which step it was on.
const BROWSER_RUN_LIMIT: Duration = Duration::from_secs(240);
const SCREENSHOTS: [&str; 3] = ["demo-rider.png", "demo-fleet.png", "demo-driver.png"];

/// The browser to use, or `None` (after saying why) when the tools are missing outside CI.
fn browser_tools() -> Option<PathBuf> {
    let chromium = std::env::var_os("RIDECAST_TESTS_CHROMIUM").map_or_else(|| PathBuf::from(CHROMIUM), PathBuf::from);
    let playwright = repository().join("node_modules/playwright-core/package.json");
    let node = std::process::Command::new("node").arg("--version").output();
    let mut missing = Vec::new();
    if !chromium.is_file() {
        missing.push(format!("{} (apt-get install chromium)", chromium.display()));
    }
    if !playwright.is_file() {
        missing.push(format!("{} (npm ci)", playwright.display()));
    }
    if !node.as_ref().is_ok_and(|o| o.status.success()) {
        missing.push(format!("node ({node:?})"));
    }
    if missing.is_empty() {
        return Some(chromium);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the browser test needs, in CI (scripts/test installs them): {}",
        missing.join(", ")
    );
    eprintln!("SKIPPED: the browser test needs {}", missing.join(", "));
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_a_rider_gets_a_driver_watches_it_come_and_chats_and_a_human_driver_takes_a_ride() {
    let Some(chromium) = browser_tools() else {
        return;
    };
    // Dev mode (no secret) is what serves /demo; offers expire after 3 s so that a simulated
    // driver ignoring one costs the test little.
    let origin =
        Origin::builder().demo().dev_mode().flag("--simulate", 12).flag("--offer-expiry-ms", 3000).start().await;
    let screenshots = repository().join("target/demo-screenshots");
    for name in SCREENSHOTS {
        let _ = std::fs::remove_file(screenshots.join(name));
    }

    let started = Instant::now();
    let run = tokio::process::Command::new("node")
        .arg(repository().join("tests/browser/demo.mjs"))
        .arg(origin.url(""))
        .arg(&screenshots)
        .env("RIDECAST_CHROMIUM", &chromium)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .current_dir(repository())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(BROWSER_RUN_LIMIT, run)
        .await
        .unwrap_or_else(|_| panic!("the browser run did not finish within {BROWSER_RUN_LIMIT:?}"))
        .expect("running node tests/browser/demo.mjs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser run failed ({}) after {:.1?}:\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        output.status,
        started.elapsed()
    );
    for name in SCREENSHOTS {
        let path = screenshots.join(name);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "expected the screenshot {} (a real picture), found {size} bytes", path.display());
    }
    println!("browser run: {:.1?}; screenshots in {}", started.elapsed(), screenshots.display());
}
