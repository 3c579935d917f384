//! The rider's side: `GET /api/sse/drivers/{id}/location` through reqwest and eventsource-stream,
//! an SSE parser this project did not write.

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;

use crate::driver::Fix;
use crate::http::{Auth, Endpoint, client};
use crate::wait::EXPECT;

/// A location as riders receive it. Unknown fields are refused: the contract lists them all.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SeenLocation {
    pub driver_id: String,
    pub lat: f64,
    pub lng: f64,
    #[serde(default)]
    pub heading: Option<f64>,
    #[serde(default)]
    pub speed: Option<f64>,
    pub ts: u64,
}

impl SeenLocation {
    /// Parses a location body (SSE data or polling answer).
    ///
    /// # Panics
    /// If `json` is not the contract's location shape.
    pub fn parse(json: &str) -> Self {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("not a contract location ({e}): {json}"))
    }

    /// Asserts that this is `fix`, reported by `driver`: same driver and `ts`, numbers equal
    /// within [`SAME_NUMBER`] (the bit-exact check is its own test, see
    /// [`SeenLocation::assert_exactly`]).
    pub fn assert_is(&self, driver: &str, fix: &Fix, what: &str) {
        let expected = Self::expected(driver, fix);
        let close = |a: f64, b: f64| (a - b).abs() <= SAME_NUMBER;
        let close_opt = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => close(a, b),
            (None, None) => true,
            _ => false,
        };
        let same = self.driver_id == expected.driver_id
            && self.ts == expected.ts
            && close(self.lat, expected.lat)
            && close(self.lng, expected.lng)
            && close_opt(self.heading, expected.heading)
            && close_opt(self.speed, expected.speed);
        assert!(same, "{what}:\n  got      {self:?}\n  expected {expected:?}");
    }

    /// Asserts that this is `fix`, reported by `driver`, with every number bit for bit as sent.
    pub fn assert_exactly(&self, driver: &str, fix: &Fix, what: &str) {
        assert_eq!(self, &Self::expected(driver, fix), "{what}");
    }

    fn expected(driver: &str, fix: &Fix) -> Self {
        Self {
            driver_id: driver.to_owned(),
            lat: fix.lat,
            lng: fix.lng,
            heading: fix.heading,
            speed: fix.speed,
            ts: fix.ts,
        }
    }
}

/// How far two numbers of a location may differ and still count as the same: 1e-9 degrees is
/// about 0.1 mm. Exactly-as-sent is checked separately, so that a last-bit rounding difference
/// does not hide every other behaviour.
pub const SAME_NUMBER: f64 = 1e-9;

type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// An open SSE stream.
pub struct RiderStream {
    events: Events,
    headers: reqwest::header::HeaderMap,
}

impl std::fmt::Debug for RiderStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RiderStream").field("headers", &self.headers).finish_non_exhaustive()
    }
}

/// The path of a driver's location stream.
pub fn location_path(driver: &str) -> String {
    format!("/api/sse/drivers/{driver}/location")
}

impl RiderStream {
    /// Opens `driver`'s location stream with `Authorization: Bearer <token>`.
    ///
    /// # Panics
    /// Unless the answer is `200`.
    pub async fn open(origin: &impl Endpoint, driver: &str, token: &str) -> Self {
        Self::open_with(origin, &location_path(driver), Auth::Bearer(token), None).await
    }

    /// Opens `path` with `auth`, sending `Last-Event-ID` when given.
    ///
    /// # Panics
    /// Unless the answer is `200`.
    pub async fn open_with(origin: &impl Endpoint, path: &str, auth: Auth<'_>, last_event_id: Option<&str>) -> Self {
        match Self::try_open(origin, path, auth, last_event_id).await {
            Ok(stream) => stream,
            Err((status, body)) => panic!("SSE {path} answered {status}, expected 200: {body}"),
        }
    }

    /// Opens `path`, returning status and body when the answer is not `200`.
    pub async fn try_open(
        origin: &impl Endpoint,
        path: &str,
        auth: Auth<'_>,
        last_event_id: Option<&str>,
    ) -> Result<Self, (u16, String)> {
        let url = auth.apply_to_url(&origin.url(path));
        let mut request = client().get(&url).header("accept", "text/event-stream");
        if let Some(value) = auth.header() {
            request = request.header("authorization", value);
        }
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = tokio::time::timeout(EXPECT, request.send())
            .await
            .unwrap_or_else(|_| panic!("no answer to GET {url} within {EXPECT:?}"))
            .unwrap_or_else(|e| panic!("GET {url} failed: {e}"));
        let status = response.status().as_u16();
        if status != 200 {
            return Err((status, response.text().await.unwrap_or_default()));
        }
        let headers = response.headers().clone();
        Ok(Self { events: Box::pin(response.bytes_stream().eventsource()), headers })
    }

    /// The response headers.
    pub fn headers(&self) -> &reqwest::header::HeaderMap {
        &self.headers
    }

    /// The next event (frames without data, such as `retry:` or comments, are not events).
    ///
    /// # Panics
    /// If none arrives within `limit`, or the stream ends or breaks first.
    pub async fn next_event(&mut self, limit: Duration, what: &str) -> Event {
        match tokio::time::timeout(limit, self.events.next()).await {
            Ok(Some(Ok(event))) => event,
            Ok(Some(Err(e))) => panic!("SSE stream broke while waiting for {what}: {e}"),
            Ok(None) => panic!("SSE stream ended while waiting for {what}"),
            Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
        }
    }

    /// The next event, which must be a `location` whose `id` is its `ts`.
    pub async fn next_location(&mut self, what: &str) -> SeenLocation {
        let event = self.next_event(EXPECT, what).await;
        assert_eq!(event.event, "location", "event name of {what}");
        let location = SeenLocation::parse(&event.data);
        assert_eq!(event.id, location.ts.to_string(), "a location event's id is its ts ({what})");
        location
    }

    /// The next location if one arrives within `limit` (`None` if none does).
    ///
    /// # Panics
    /// If the stream ends or breaks, or the event is not a location.
    pub async fn location_within(&mut self, limit: Duration, what: &str) -> Option<SeenLocation> {
        let event = match tokio::time::timeout(limit, self.events.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(event))) => event,
            Ok(Some(Err(e))) => panic!("SSE stream broke while waiting for {what}: {e}"),
            Ok(None) => panic!("SSE stream ended while waiting for {what}"),
        };
        assert_eq!(event.event, "location", "event name of {what}");
        Some(SeenLocation::parse(&event.data))
    }

    /// Waits for the next location and asserts it is `fix` from `driver`.
    pub async fn expect_location(&mut self, driver: &str, fix: &Fix, what: &str) {
        self.next_location(what).await.assert_is(driver, fix, what);
    }

    /// Asserts that no event arrives for `quiet` (proving an absence) and the stream stays open.
    pub async fn expect_quiet(&mut self, quiet: Duration, why: &str) {
        if let Ok(next) = tokio::time::timeout(quiet, self.events.next()).await {
            match next {
                Some(Ok(event)) => panic!("expected no event for {quiet:?} ({why}), got {event:?}"),
                Some(Err(e)) => panic!("SSE stream broke during a quiet period ({why}): {e}"),
                None => panic!("SSE stream ended during a quiet period ({why})"),
            }
        }
    }

    /// Waits for the stream to end; `Ok` for a clean end, `Err` for a broken connection.
    ///
    /// # Panics
    /// If it is still open after `limit`, or an event arrives.
    pub async fn expect_end(&mut self, limit: Duration, what: &str) -> Result<(), String> {
        match tokio::time::timeout(limit, self.events.next()).await {
            Ok(None) => Ok(()),
            Ok(Some(Err(e))) => Err(e.to_string()),
            Ok(Some(Ok(event))) => panic!("expected the stream to end ({what}), got {event:?}"),
            Err(_) => panic!("SSE stream still open after {limit:?}; expected it to end: {what}"),
        }
    }
}

/// The path of a driver's polling endpoint.
pub fn polling_path(driver: &str) -> String {
    format!("/api/drivers/{driver}/location")
}

/// One answer of the polling endpoint.
#[derive(Debug, Clone)]
pub struct Polled {
    pub status: u16,
    pub etag: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
}

impl Polled {
    /// The location in a `200` answer.
    ///
    /// # Panics
    /// If the answer is not `200` with a contract location.
    pub fn location(&self) -> SeenLocation {
        assert_eq!(self.status, 200, "expected a 200 polling answer, got {} {}", self.status, self.body);
        SeenLocation::parse(&self.body)
    }
}

/// `GET /api/drivers/{driver}/location` with a bearer token and optional `If-None-Match`.
pub async fn poll(origin: &impl Endpoint, driver: &str, token: &str, if_none_match: Option<&str>) -> Polled {
    let headers: Vec<(&str, &str)> = if_none_match.map(|tag| ("if-none-match", tag)).into_iter().collect();
    let response = crate::http::get(&origin.url(&polling_path(driver)), Auth::Bearer(token), &headers).await;
    Polled {
        status: response.status().as_u16(),
        etag: crate::http::header(&response, "etag"),
        content_type: crate::http::header(&response, "content-type"),
        body: response.text().await.unwrap_or_default(),
    }
}

/// Polls `origin` until it stores `fix` as `driver`'s location, proving the update was accepted.
///
/// # Panics
/// If it does not show up within [`EXPECT`]; the message names the last answer.
pub async fn wait_until_stored(origin: &impl Endpoint, driver: &str, token: &str, fix: &Fix, what: &str) -> Polled {
    let polled =
        crate::wait::poll_until(EXPECT, format!("the polling endpoint to show {what} (ts {})", fix.ts), || async {
            let polled = poll(origin, driver, token, None).await;
            let stored = polled.status == 200 && SeenLocation::parse(&polled.body).ts == fix.ts;
            stored.then_some(polled)
        })
        .await;
    polled.location().assert_is(driver, fix, what);
    polled
}
