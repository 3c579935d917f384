//! The origin's request/response API, driven in-process: each test starts one embedded
//! [`Instance`] and sends requests straight into its router with `oneshot`, the way axum's
//! `testing` example does. No listener, no process, no Redis.
//!
//! What is here: who may call what and in which order the checks run (401, then 400, then 403,
//! then 404), the error body, rides, surge, polling and the operations endpoints. What crosses
//! processes or needs a real connection (WebSocket upgrades, SSE bytes on the wire, Redis, the
//! connection front) stays in the end-to-end suite, `tests/tests/`.
//!
//! Contract: PROTOCOL.md, "Tokens", "Errors", "Rider HTTP and SSE", "Surge", "Operations" and
//! "Precise points".

use std::time::{SystemTime, UNIX_EPOCH};

use axum::{Router, body::Body};
use bytes::Bytes;
use clap::{CommandFactory, FromArgMatches};
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use ridecast_origin::app::{
    config::{Cli, Config, Secrets, env},
    server::Instance,
};
use ridecast_protocol::{Claims, Id, LocationReport, Role, TokenKeys};
use serde_json::{Value, json};
use tower::ServiceExt;

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

/// The secret the instance under test verifies tokens with.
const SECRET: &str = "ridecast-router-test-secret-0123456789";
/// A secret the instance does not know.
const FOREIGN_SECRET: &str = "not-the-instance-secret-9876543210";
/// Not a JWT at all.
const GARBAGE_TOKEN: &str = "not-a-jwt";
/// A well-formed ride id no ride has.
const UNKNOWN_RIDE: &str = "0123456789abcdef0123456789abcdef";
/// A body `POST /api/rides` accepts.
const RIDE_BODY: &str = r#"{"pickup":{"lat":37.77493,"lng":-122.41942},"dropoff":{"lat":37.80,"lng":-122.27}}"#;
/// The `--ride-token-ttl-secs` every instance here runs with, to see that the flag is used.
const RIDE_TOKEN_TTL_SECS: u64 = 900;

/// One in-process origin instance: its router, and keys that sign tokens it accepts.
struct TestApi {
    instance: Instance,
    router: Router,
    keys: TokenKeys,
}

impl TestApi {
    /// An embedded instance with the default flags (and [`RIDE_TOKEN_TTL_SECS`]).
    async fn start() -> Self {
        Self::with_flags(&[]).await
    }

    /// An embedded instance with `flags` added to the command line.
    async fn with_flags(flags: &[&str]) -> Self {
        let ttl = RIDE_TOKEN_TTL_SECS.to_string();
        let mut args = vec!["ridecast-origin", "--drain-secs", "1", "--ride-token-ttl-secs", &ttl];
        args.extend_from_slice(flags);
        // The flags' `RIDECAST_*` fallbacks are switched off: what the machine running the tests
        // has in its environment (a Redis URL, say) must not change the instance under test.
        let matches = Cli::command().mut_args(|arg| arg.env(None)).try_get_matches_from(args).expect("valid flags");
        let cli = Cli::from_arg_matches(&matches).expect("flags for the serve command");
        let secrets = Secrets::load(|name| (name == env::TOKEN_SECRET).then(|| SECRET.to_owned())).expect("secret");
        let config = Config::new(cli.serve, secrets);
        assert!(config.redis_url.is_none(), "the instance under test is embedded");
        let instance = Instance::start(config).await.expect("an embedded instance starts");
        let router = instance.router(Router::new());
        Self { instance, router, keys: TokenKeys::new(SECRET.as_bytes(), None).expect("keys") }
    }

    /// Drains the instance, as a stopping server does.
    async fn stop(self) {
        self.instance.stop().await;
    }

    fn get(&self, path: &str) -> Call {
        self.call(Method::GET, path)
    }

    fn post(&self, path: &str) -> Call {
        self.call(Method::POST, path)
    }

    fn delete(&self, path: &str) -> Call {
        self.call(Method::DELETE, path)
    }

    fn call(&self, method: Method, path: &str) -> Call {
        Call { router: self.router.clone(), request: Request::builder().method(method).uri(path), body: Body::empty() }
    }

    fn mint(&self, claims: &Claims) -> String {
        self.keys.mint(claims).expect("signing a token")
    }

    /// A rider token with neither `drv` nor `ride`: it creates rides.
    fn rider(&self, sub: &str) -> String {
        self.mint(&claims(Role::Rider, sub))
    }

    /// A rider token that may track `driver` (`drv`).
    fn tracker(&self, sub: &str, driver: &str) -> String {
        self.mint(&tracking(sub, driver))
    }

    /// A rider token scoped to `ride` (`ride`), minted here rather than by `POST /api/rides`.
    fn ride_scoped(&self, sub: &str, ride: &str) -> String {
        self.mint(&Claims { ride: Some(id(ride)), ..claims(Role::Rider, sub) })
    }

    fn role(&self, role: Role, sub: &str) -> String {
        self.mint(&claims(role, sub))
    }

    /// Requests a ride as `rider_token` and returns its id and ride-scoped token.
    async fn request_ride(&self, rider_token: &str) -> (String, String) {
        let answer = self.post("/api/rides").bearer(rider_token).json(RIDE_BODY).send().await;
        assert_eq!(answer.status, StatusCode::CREATED, "POST /api/rides: {}", answer.text());
        let body = answer.json();
        let field = |name: &str| body[name].as_str().unwrap_or_else(|| panic!("{name} in {body}")).to_owned();
        (field("rideId"), field("token"))
    }

    /// Stores `report` as `driver`'s latest location, as the driver socket would after
    /// validating it.
    async fn locate(&self, driver: &str, report: LocationReport) {
        self.instance
            .state
            .ingestor
            .ingest(&id(driver), report, &mut ridecast_origin::ingest::DriverTrack::default())
            .await
            .expect("the embedded store takes a location");
    }

    /// Counter `ridecast_<name>` as `/metrics` shows it.
    async fn counter(&self, name: &str) -> u64 {
        let text = self.get("/metrics").send().await.text();
        let prefix = format!("ridecast_{name} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("/metrics has no counter ridecast_{name}:\n{text}"))
    }
}

/// One request being built.
struct Call {
    router: Router,
    request: http::request::Builder,
    body: Body,
}

impl Call {
    /// `Authorization: Bearer <token>`.
    fn bearer(self, token: &str) -> Self {
        self.header(header::AUTHORIZATION.as_str(), &format!("Bearer {token}"))
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.request = self.request.header(name, value);
        self
    }

    /// `body` as it is, sent as JSON.
    fn json(mut self, body: &str) -> Self {
        self.request = self.request.header(header::CONTENT_TYPE, "application/json");
        self.body = Body::from(body.to_owned());
        self
    }

    async fn send(self) -> Answer {
        let request = self.request.body(self.body).expect("a well-formed request");
        let what = format!("{} {}", request.method(), request.uri());
        let response = self.router.oneshot(request).await.unwrap_or_else(|never| match never {});
        let (parts, body) = response.into_parts();
        // An event stream's body never ends; its status and headers are what these tests need.
        let is_stream = parts.headers.get(header::CONTENT_TYPE).is_some_and(|v| v == "text/event-stream");
        let body = if is_stream { Bytes::new() } else { body.collect().await.expect("a body").to_bytes() };
        Answer { what, status: parts.status, headers: parts.headers, body }
    }
}

/// A response, read whole.
#[derive(Debug)]
struct Answer {
    /// The request, for failure messages.
    what: String,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    fn json(&self) -> Value {
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(content_type.starts_with("application/json"), "{}: JSON, got Content-Type {content_type:?}", self.what);
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", self.what, self.text()))
    }

    /// Checks that this is the contract's error: `status`, and a JSON body that is exactly
    /// `{"error":{"code":<code>,"message":<text>}}`. Returns the message.
    #[track_caller]
    fn expect_error(&self, status: u16, code: &str, why: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "{why}: {} answered {}", self.what, self.text());
        let body = self.json();
        let error = &body["error"];
        let shape = body.as_object().map(|o| o.len()) == Some(1)
            && error.as_object().map(|o| o.len()) == Some(2)
            && error["message"].as_str().is_some_and(|m| !m.is_empty());
        assert!(shape, "{why}: {} error body is not {{\"error\":{{\"code\",\"message\"}}}}: {body}", self.what);
        assert_eq!(error["code"], code, "{why}: {} error code, in {body}", self.what);
        error["message"].as_str().unwrap_or_default().to_owned()
    }
}

fn id(raw: &str) -> Id {
    Id::parse(raw).unwrap_or_else(|e| panic!("{raw:?} is not an id: {e}"))
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

fn now_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis()).expect("ms fit u64")
}

/// Claims for `role` `sub`, valid for an hour, with no `drv` or `ride`.
fn claims(role: Role, sub: &str) -> Claims {
    Claims { sub: id(sub), role, exp: now_secs() + 3600, drv: None, ride: None }
}

/// Claims of a rider `sub` that may track `driver` (`drv`).
fn tracking(sub: &str, driver: &str) -> Claims {
    Claims { drv: Some(id(driver)), ..claims(Role::Rider, sub) }
}

/// `claims` that expired two minutes ago: well past the contract's 30 s leeway.
fn expired(claims: Claims) -> Claims {
    Claims { exp: now_secs() - 120, ..claims }
}

/// A token the instance would accept but for its signature.
fn foreign(claims: &Claims) -> String {
    TokenKeys::new(FOREIGN_SECRET.as_bytes(), None).expect("keys").mint(claims).expect("signing a token")
}

/// A location report at `ts`, heading west at 8.3 m/s.
fn report(lat: f64, lng: f64, ts: u64) -> LocationReport {
    LocationReport { lat, lng, heading: Some(270.0), speed: Some(8.3), ts }
}

/// An endpoint under test: a well-formed request to it, a malformed one (a bad id or body),
/// and the claims of a token allowed there.
struct Endpoint {
    method: Method,
    path: String,
    body: Option<&'static str>,
    malformed_path: String,
    malformed_body: Option<&'static str>,
    allowed: Claims,
}

impl Endpoint {
    /// Every endpoint that takes a token, apart from the SSE streams.
    fn taking_tokens() -> Vec<Self> {
        let unknown_ride = |prefix: &str| format!("{prefix}/{UNKNOWN_RIDE}");
        vec![
            Self {
                method: Method::GET,
                path: "/api/drivers/d1/location".into(),
                body: None,
                malformed_path: "/api/drivers/a.b/location".into(),
                malformed_body: None,
                allowed: tracking("r1", "d1"),
            },
            Self {
                method: Method::POST,
                path: "/api/rides".into(),
                body: Some(RIDE_BODY),
                malformed_path: "/api/rides".into(),
                malformed_body: Some("{"),
                allowed: claims(Role::Rider, "r1"),
            },
            Self {
                method: Method::DELETE,
                path: unknown_ride("/api/rides"),
                body: None,
                malformed_path: "/api/rides/a.b".into(),
                malformed_body: None,
                allowed: claims(Role::Rider, "r1"),
            },
            Self {
                method: Method::POST,
                path: "/api/surge/z-1".into(),
                body: Some(r#"{"multiplier":1.8}"#),
                malformed_path: "/api/surge/a.b".into(),
                malformed_body: Some("{"),
                allowed: claims(Role::Ops, "ops-1"),
            },
            Self {
                method: Method::GET,
                path: "/ws/rides".into(),
                body: None,
                malformed_path: "/ws/rides".into(),
                malformed_body: None,
                allowed: claims(Role::Driver, "d1"),
            },
            Self {
                method: Method::GET,
                path: unknown_ride("/ws/chat"),
                body: None,
                malformed_path: "/ws/chat/a.b".into(),
                malformed_body: None,
                allowed: claims(Role::Rider, "r1"),
            },
        ]
    }

    fn call(&self, api: &TestApi, path: &str, body: Option<&str>) -> Call {
        let call = api.call(self.method.clone(), path);
        match body {
            Some(body) => call.json(body),
            None => call,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Order of checks: 401, then 400, then 403, then 404
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_missing_invalid_expired_or_foreign_token_is_401_before_any_other_check() {
    let api = TestApi::start().await;
    for endpoint in Endpoint::taking_tokens() {
        let allowed = &endpoint.allowed;
        let (expired, foreign) = (api.mint(&expired(allowed.clone())), foreign(allowed));
        let cases: [(&str, Option<&str>, &str); 4] = [
            ("no token", None, "missing_token"),
            ("a token that is not a JWT", Some(GARBAGE_TOKEN), "invalid_token"),
            ("a token that expired two minutes ago", Some(&expired), "token_expired"),
            ("a token signed with another secret", Some(&foreign), "invalid_token"),
        ];
        for (what, token, code) in cases {
            // The malformed request too: the token is judged before ids and bodies.
            let requests = [(&endpoint.path, endpoint.body), (&endpoint.malformed_path, endpoint.malformed_body)];
            for (path, body) in requests {
                let call = endpoint.call(&api, path, body);
                let call = match token {
                    Some(token) => call.bearer(token),
                    None => call,
                };
                call.send().await.expect_error(401, code, what);
            }
        }
        // `?token=` is judged the same way.
        let query = format!("{}?token={expired}", endpoint.path);
        endpoint.call(&api, &query, endpoint.body).send().await.expect_error(401, "token_expired", "?token=");
    }
    api.stop().await;
}

#[tokio::test]
async fn malformed_ids_and_bodies_are_400_before_the_token_is_asked_what_it_may_do() {
    let api = TestApi::start().await;
    let (rider, driver, ops) = (api.tracker("r1", "d1"), api.role(Role::Driver, "d1"), api.role(Role::Ops, "ops-1"));
    let too_long = format!("/api/drivers/{}/location", "a".repeat(65));
    // Each token here would be 403 on a well-formed request.
    let cases: [(&str, Call, &str); 10] = [
        ("polling a driver id with a dot", api.get("/api/drivers/a.b/location").bearer(&driver), "invalid_id"),
        ("polling a 65-character driver id", api.get(&too_long).bearer(&ops), "invalid_id"),
        ("a ride request with truncated JSON", api.post("/api/rides").bearer(&driver).json("{"), "invalid_message"),
        (
            "a ride request whose lat is a string",
            api.post("/api/rides").bearer(&ops).json(r#"{"pickup":{"lat":"1","lng":2},"dropoff":{"lat":1,"lng":2}}"#),
            "invalid_message",
        ),
        (
            "a ride request off the map",
            api.post("/api/rides").bearer(&driver).json(r#"{"pickup":{"lat":91,"lng":2},"dropoff":{"lat":1,"lng":2}}"#),
            "invalid_location",
        ),
        ("cancelling a ride id with a dot", api.delete("/api/rides/a.b").bearer(&driver), "invalid_id"),
        ("a surge for a zone id with a dot", api.post("/api/surge/a.b").bearer(&rider).json("{}"), "invalid_id"),
        ("a surge body that is truncated JSON", api.post("/api/surge/z-1").bearer(&rider).json("{"), "invalid_message"),
        (
            "a surge multiplier that is a string",
            api.post("/api/surge/z-1").bearer(&rider).json(r#"{"multiplier":"1.8"}"#),
            "invalid_message",
        ),
        ("a chat of a ride id with a dot", api.get("/ws/chat/a.b").bearer(&ops), "invalid_id"),
    ];
    for (what, call, code) in cases {
        // 400 and not axum's 422: the body is JSON of the wrong shape, which is bad input.
        call.send().await.expect_error(400, code, what);
    }
    api.stop().await;
}

#[tokio::test]
async fn a_token_not_allowed_here_is_403_before_an_unknown_thing_is_404() {
    let api = TestApi::start().await;
    let unknown_ride = format!("/api/rides/{UNKNOWN_RIDE}");
    let polling_d2 = "/api/drivers/d2/location";

    let not_allowed: [(&str, Call); 4] = [
        (
            "polling a driver with no location, not the token's drv",
            api.get(polling_d2).bearer(&api.tracker("r1", "d1")),
        ),
        (
            "polling a driver with no location, with its own token",
            api.get(polling_d2).bearer(&api.role(Role::Driver, "d2")),
        ),
        (
            "cancelling an unknown ride with a driver token",
            api.delete(&unknown_ride).bearer(&api.role(Role::Driver, "r1")),
        ),
        ("cancelling an unknown ride with an ops token", api.delete(&unknown_ride).bearer(&api.role(Role::Ops, "r1"))),
    ];
    for (what, call) in not_allowed {
        call.send().await.expect_error(403, "forbidden", what);
    }

    let allowed_but_unknown: [(&str, Call); 3] = [
        ("polling a driver with no location, the token's drv", api.get(polling_d2).bearer(&api.tracker("r1", "d2"))),
        ("cancelling an unknown ride as any rider", api.delete(&unknown_ride).bearer(&api.rider("r1"))),
        (
            "cancelling an unknown ride with a token scoped to it",
            api.delete(&unknown_ride).bearer(&api.ride_scoped("r1", UNKNOWN_RIDE)),
        ),
    ];
    for (what, call) in allowed_but_unknown {
        call.send().await.expect_error(404, "not_found", what);
    }
    api.stop().await;
}

#[tokio::test]
async fn a_plain_get_on_a_websocket_path_gets_every_check_of_an_upgrade_then_426_in_the_json_form() {
    // PROTOCOL v1.1 ("WebSocket paths"): the same 401/400/403/404 checks as an upgrade, in that
    // order, then the JSON error form for the missing upgrade.
    let api = TestApi::start().await;
    api.get("/ws/rides").send().await.expect_error(401, "missing_token", "/ws/rides without a token");
    let chat = format!("/ws/chat/{UNKNOWN_RIDE}");
    api.get(&chat).send().await.expect_error(401, "missing_token", "/ws/chat without a token");
    let rider = api.rider("r1");
    api.get("/ws/chat/a.b").bearer(&rider).send().await.expect_error(400, "invalid_id", "/ws/chat/a.b");

    let (ride, _) = api.request_ride(&rider).await;
    let refused = [
        ("the driver socket, a rider token", "/ws/rides".to_owned(), api.tracker("r1", "d1"), 403),
        ("an unknown ride's chat", chat.clone(), rider.clone(), 404),
        ("a ride's chat, an ops token", format!("/ws/chat/{ride}"), api.role(Role::Ops, "r1"), 403),
        ("a ride's chat, another rider", format!("/ws/chat/{ride}"), api.rider("r2"), 403),
    ];
    for (what, path, token, status) in refused {
        let answer = api.get(&path).bearer(&token).send().await;
        assert_eq!(answer.status.as_u16(), status, "{what}: {}", answer.text());
    }
    let allowed = [
        ("the driver socket, a driver token", "/ws/rides".to_owned(), api.role(Role::Driver, "d1")),
        ("a ride's chat, its creator", format!("/ws/chat/{ride}"), rider.clone()),
    ];
    for (what, path, token) in allowed {
        api.get(&path).bearer(&token).send().await.expect_error(426, "upgrade_required", what);
    }
    api.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_known_path_asked_with_another_method_is_405_in_the_json_error_form() {
    let api = TestApi::start().await;
    for (method, path) in [
        (Method::GET, "/api/rides"),
        (Method::PUT, "/api/rides/x"),
        (Method::GET, "/api/surge/z1"),
        (Method::POST, "/api/drivers/d1/location"),
    ] {
        let what = format!("{method} {path}");
        let message = api.call(method.clone(), path).send().await.expect_error(405, "method_not_allowed", &what);
        assert!(message.contains(path), "the message names the path {path}: {message:?}");
    }
    api.stop().await;
}

#[tokio::test]
async fn an_unknown_route_is_404_in_the_json_error_form() {
    let api = TestApi::start().await;
    for (method, path) in [(Method::GET, "/nowhere"), (Method::POST, "/api/nowhere"), (Method::GET, "/api/drivers/d1")]
    {
        let message = api.call(method.clone(), path).send().await.expect_error(404, "not_found", "an unknown route");
        assert!(message.contains(path), "the message names the path {path}: {message:?}");
    }
    api.stop().await;
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_413_and_one_at_the_limit_is_taken() {
    const LIMIT: usize = 256;
    let api = TestApi::with_flags(&["--max-body-bytes", "256"]).await;
    // Fields a ride request does not name are ignored: padding makes a body of any length.
    let padded = |len: usize| {
        let bare = r#"{"pickup":{"lat":1,"lng":2},"dropoff":{"lat":1,"lng":2},"note":""}"#;
        bare.replace(r#""note":"""#, &format!(r#""note":"{}""#, "x".repeat(len - bare.len())))
    };
    let (at_limit, over) = (padded(LIMIT), padded(LIMIT + 1));
    assert_eq!((at_limit.len(), over.len()), (LIMIT, LIMIT + 1));

    api.post("/api/rides").json(&over).send().await.expect_error(401, "missing_token", "no token, a large body");
    let rider = api.rider("r1");
    api.post("/api/rides").bearer(&rider).json(&over).send().await.expect_error(413, "too_large", "257 bytes");
    let surge = format!(r#"{{"multiplier":1.5,"pad":"{}"}}"#, "x".repeat(LIMIT));
    let ops = api.role(Role::Ops, "ops-1");
    api.post("/api/surge/z-1").bearer(&ops).json(&surge).send().await.expect_error(413, "too_large", "a surge body");
    assert_eq!(api.counter("rides_created_total").await, 0, "a refused body creates nothing");

    let taken = api.post("/api/rides").bearer(&rider).json(&at_limit).send().await;
    assert_eq!(taken.status, StatusCode::CREATED, "a body of exactly --max-body-bytes: {}", taken.text());
    api.stop().await;
}

#[tokio::test]
async fn a_query_token_is_taken_where_headers_cannot_be_set_and_the_header_wins_over_it() {
    let api = TestApi::start().await;
    let driver = "d-query";
    api.locate(driver, report(37.77493, -122.41942, now_ms())).await;
    let (good, expired) = (api.tracker("r1", driver), api.mint(&expired(claims(Role::Rider, "r1"))));
    let polling = format!("/api/drivers/{driver}/location");
    let stream = format!("/api/sse/drivers/{driver}/location");

    for path in [&polling, &stream] {
        let answer = api.get(&format!("{path}?token={good}")).send().await;
        assert_eq!(answer.status, StatusCode::OK, "{path}?token=<good>: {}", answer.text());
        let answer = api.get(&format!("{path}?since=1&token={good}")).send().await;
        assert_eq!(answer.status, StatusCode::OK, "{path}?since=1&token=<good>: {}", answer.text());
    }
    let answer = api.get(&format!("{polling}?token={expired}")).bearer(&good).send().await;
    assert_eq!(answer.status, StatusCode::OK, "a good header beside an expired ?token=: {}", answer.text());
    let answer = api.get(&format!("{polling}?token={good}")).bearer(GARBAGE_TOKEN).send().await;
    answer.expect_error(401, "invalid_token", "a garbage header beside a good ?token=: the header wins");
    api.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Rides
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_requested_ride_is_201_searching_with_a_token_scoped_to_it() {
    let api = TestApi::start().await;
    let answer = api.post("/api/rides").bearer(&api.rider("r1")).json(RIDE_BODY).send().await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
    let body = answer.json();
    let fields: Vec<&String> = body.as_object().expect("an object").keys().collect();
    assert_eq!(fields, ["rideId", "status", "token"], "the 201 answer has these fields and no others: {body}");
    assert_eq!(body["status"], "searching");
    let ride = body["rideId"].as_str().expect("rideId is a string");
    assert!(Id::parse(ride).is_ok() && ride.len() == 32, "a ride id of 32 characters of the id rule: {ride:?}");

    let token = body["token"].as_str().expect("token is a string");
    let scoped = api.keys.verify(token, now_secs()).expect("the ride token verifies with the instance's secret");
    assert_eq!(
        (scoped.sub.as_str(), scoped.role, scoped.drv, scoped.ride.as_ref().map(Id::as_str)),
        ("r1", Role::Rider, None, Some(ride)),
        "a rider token for the creator, scoped to the ride, tracking nobody"
    );
    let expected_exp = now_secs() + RIDE_TOKEN_TTL_SECS;
    assert!(scoped.exp.abs_diff(expected_exp) <= 5, "exp {} is --ride-token-ttl-secs from now", scoped.exp);
    assert_eq!(api.counter("rides_created_total").await, 1);
    api.stop().await;
}

#[tokio::test]
async fn only_rider_tokens_request_rides() {
    let api = TestApi::start().await;
    for role in [Role::Driver, Role::Ops, Role::Edge] {
        let answer = api.post("/api/rides").bearer(&api.role(role, "r1")).json(RIDE_BODY).send().await;
        answer.expect_error(403, "forbidden", &format!("POST /api/rides with a {} token", role.as_str()));
    }
    assert_eq!(api.counter("rides_created_total").await, 0, "no refused request created a ride");
    api.stop().await;
}

#[tokio::test]
async fn a_rider_requesting_rides_past_its_burst_gets_429_rate_limited_with_retry_after() {
    // Two at once, then one per 100 s: nothing refills while the test runs.
    let api = TestApi::with_flags(&["--ride-create-rate", "0.01", "--ride-create-burst", "2"]).await;
    let rider = api.rider("r-eager");
    for _ in 0..2 {
        let (ride, token) = api.request_ride(&rider).await;
        // One open ride per rider: cancel it (or it already ended) before the next.
        let _ = api.delete(&format!("/api/rides/{ride}")).bearer(&token).send().await;
    }
    let refused = api.post("/api/rides").bearer(&rider).json(RIDE_BODY).send().await;
    let message = refused.expect_error(429, "rate_limited", "a third ride request with a burst of two");
    let retry_after: u64 =
        refused.header("retry-after").and_then(|v| v.parse().ok()).expect("a Retry-After in seconds");
    assert!(
        (1..=100).contains(&retry_after),
        "Retry-After is the wait for one more request: {retry_after} ({message})"
    );
    assert_eq!(api.counter("rides_created_total").await, 2, "the refused request created no ride");

    // A fresh token of the same rider does not get a fresh allowance; another rider has its own.
    let again = api.post("/api/rides").bearer(&api.rider("r-eager")).json(RIDE_BODY).send().await;
    again.expect_error(429, "rate_limited", "the same sub with a newly minted token");
    api.request_ride(&api.rider("r-other")).await;
    api.stop().await;
}

#[tokio::test]
async fn cancelling_answers_the_ride_as_cancelled_and_a_second_cancel_changes_nothing() {
    let api = TestApi::start().await;
    let (ride, token) = api.request_ride(&api.rider("r1")).await;
    let path = format!("/api/rides/{ride}");

    let first = api.delete(&path).bearer(&token).send().await;
    assert_eq!(first.status, StatusCode::OK, "DELETE {path}: {}", first.text());
    let cancelled = first.json();
    let fields: Vec<&String> = cancelled.as_object().expect("an object").keys().collect();
    assert_eq!(fields, ["rideId", "status", "ts"], "a cancelled ride names no driver: {cancelled}");
    assert_eq!((cancelled["rideId"].as_str(), cancelled["status"].as_str()), (Some(ride.as_str()), Some("cancelled")));

    // The creator's own token this time: the ride already is cancelled.
    let second = api.delete(&path).bearer(&api.rider("r1")).send().await;
    assert_eq!(second.status, StatusCode::OK, "a second DELETE: {}", second.text());
    assert_eq!(second.json(), cancelled, "a second DELETE answers the ride as it is, with the same ts");
    assert_eq!(api.counter("rides_cancelled_total").await, 1, "one cancellation, counted once");
    api.stop().await;
}

#[tokio::test]
async fn only_the_creator_or_a_token_scoped_to_the_ride_may_cancel_it() {
    let api = TestApi::start().await;
    let (ride, _) = api.request_ride(&api.rider("r1")).await;
    let (others_ride, others_token) = api.request_ride(&api.rider("r2")).await;
    let path = format!("/api/rides/{ride}");

    let refused = [
        ("another rider's token", api.rider("r2")),
        ("a token scoped to another ride", others_token),
        ("a token scoped to another ride, minted elsewhere", api.ride_scoped("r3", &others_ride)),
        ("a tracking token of another rider", api.tracker("r2", "d1")),
        ("a driver token with the creator's sub", api.role(Role::Driver, "r1")),
        ("an ops token with the creator's sub", api.role(Role::Ops, "r1")),
        ("an edge token with the creator's sub", api.role(Role::Edge, "r1")),
    ];
    for (what, token) in refused {
        api.delete(&path).bearer(&token).send().await.expect_error(403, "forbidden", what);
    }
    assert_eq!(api.counter("rides_cancelled_total").await, 0, "no refused DELETE cancelled anything");

    // A token whose `ride` is the ride may cancel it, whatever its `sub`.
    let answer = api.delete(&path).bearer(&api.ride_scoped("r-shared", &ride)).send().await;
    assert_eq!(answer.status, StatusCode::OK, "a token scoped to the ride: {}", answer.text());
    assert_eq!(answer.json()["status"], "cancelled");
    api.stop().await;
}

#[tokio::test]
async fn a_ride_that_ended_without_a_driver_cannot_be_cancelled() {
    let api = TestApi::start().await;
    let (ride, token) = api.request_ride(&api.rider("r1")).await;
    api.instance.state.rides.no_driver(&id(&ride)).await.expect("the embedded store takes the change");

    let path = format!("/api/rides/{ride}");
    let message = api.delete(&path).bearer(&token).send().await.expect_error(409, "conflict", "a no_driver ride");
    assert!(message.contains(&ride), "the message names the ride: {message:?}");
    assert_eq!(api.counter("rides_cancelled_total").await, 0);
    api.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Surge
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_operator_sets_surge_with_202_and_the_stored_value() {
    let api = TestApi::start().await;
    let before = now_ms();
    let ops = api.role(Role::Ops, "ops-1");
    let answer = api.post("/api/surge/z-downtown").bearer(&ops).json(r#"{"multiplier":1.8}"#).send().await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    let stored = answer.json();
    let ts = stored["ts"].as_u64().expect("ts is epoch ms");
    assert_eq!(stored, json!({ "zoneId": "z-downtown", "multiplier": 1.8, "ts": ts }));
    assert!((before..=now_ms()).contains(&ts), "ts {ts} is the server's clock at the set");
    assert_eq!(api.counter("surge_updates_total").await, 1);
    api.stop().await;
}

#[tokio::test]
async fn the_multiplier_bounds_1_and_10_are_included_and_just_outside_them_is_400() {
    let api = TestApi::start().await;
    let ops = api.role(Role::Ops, "ops-1");
    for multiplier in ["1.0", "10.0", "1", "10"] {
        let body = format!(r#"{{"multiplier":{multiplier}}}"#);
        let answer = api.post("/api/surge/z-1").bearer(&ops).json(&body).send().await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "multiplier {multiplier}: {}", answer.text());
    }
    for multiplier in ["0.99", "10.01", "0", "-2"] {
        let body = format!(r#"{{"multiplier":{multiplier}}}"#);
        let answer = api.post("/api/surge/z-1").bearer(&ops).json(&body).send().await;
        answer.expect_error(400, "invalid_surge", &format!("multiplier {multiplier}"));
    }
    assert_eq!(api.counter("surge_updates_total").await, 4, "only the accepted values were stored");
    api.stop().await;
}

#[tokio::test]
async fn only_ops_tokens_set_surge() {
    let api = TestApi::start().await;
    let refused = [
        ("a rider token", api.rider("r1")),
        ("a tracking token", api.tracker("r1", "d1")),
        ("a driver token", api.role(Role::Driver, "d1")),
        ("an edge token", api.role(Role::Edge, "edge-1")),
    ];
    for (what, token) in refused {
        let answer = api.post("/api/surge/z-1").bearer(&token).json(r#"{"multiplier":1.8}"#).send().await;
        answer.expect_error(403, "forbidden", what);
    }
    assert_eq!(api.counter("surge_updates_total").await, 0, "no refused set was stored");
    api.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn polling_is_404_before_any_location() {
    let api = TestApi::start().await;
    let answer = api.get("/api/drivers/d-unknown/location").bearer(&api.tracker("r1", "d-unknown")).send().await;
    answer.expect_error(404, "not_found", "a driver that never reported");
    api.stop().await;
}

#[tokio::test]
async fn polling_answers_the_location_with_an_etag_and_304_when_it_matches() {
    let api = TestApi::start().await;
    let driver = "d-poll";
    let path = format!("/api/drivers/{driver}/location");
    let token = api.tracker("r1", driver);
    let first_ts = now_ms();
    api.locate(driver, report(37.77493, -122.41942, first_ts)).await;

    let answer = api.get(&path).bearer(&token).send().await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let location = json!({ "driverId": driver, "lat": 37.77493, "lng": -122.41942, "heading": 270.0, "speed": 8.3, "ts": first_ts });
    assert_eq!(answer.json(), location, "the location as the contract spells it");
    let etag = format!("\"{first_ts}\"");
    assert_eq!(answer.header("etag"), Some(etag.as_str()), "the ETag is the quoted ts");
    assert_eq!(answer.header("cache-control"), Some("no-cache"));

    for tag in [etag.clone(), format!("W/{etag}"), format!("\"other\", {etag}"), "*".to_owned()] {
        let answer = api.get(&path).bearer(&token).header("if-none-match", &tag).send().await;
        assert_eq!(answer.status, StatusCode::NOT_MODIFIED, "If-None-Match: {tag}: {}", answer.text());
        assert!(answer.body.is_empty(), "a 304 has no body, got {:?}", answer.text());
        assert_eq!(answer.header("etag"), Some(etag.as_str()), "a 304 still names the ETag");
    }
    let other = api.get(&path).bearer(&token).header("if-none-match", "\"other\"").send().await;
    assert_eq!((other.status, other.json()), (StatusCode::OK, location), "If-None-Match with another tag");

    // An in-cell move: stored though not pushed, so polling sees it, under a new tag.
    let second_ts = first_ts + 1000;
    api.locate(driver, report(37.77494, -122.41942, second_ts)).await;
    let newer = api.get(&path).bearer(&token).header("if-none-match", &etag).send().await;
    assert_eq!(newer.status, StatusCode::OK, "the old ETag no longer matches: {}", newer.text());
    assert_eq!(newer.json()["ts"], second_ts);
    assert_eq!(newer.header("etag"), Some(format!("\"{second_ts}\"").as_str()));
    api.stop().await;
}

#[tokio::test]
async fn polling_takes_the_same_tokens_as_the_location_stream() {
    let api = TestApi::start().await;
    let driver = "d-tokens";
    api.locate(driver, report(37.77493, -122.41942, now_ms())).await;
    // A tracking token is good only while its ride is on with the driver: this one is searching.
    let (searching, _) = api.request_ride(&api.rider("r1")).await;
    let tracking_a_searching_ride = api.mint(&Claims { ride: Some(id(&searching)), ..tracking("r1", driver) });

    let cases: [(&str, String, u16, &str); 10] = [
        ("a rider token with this drv", api.tracker("r1", driver), 200, ""),
        ("a garbage token", GARBAGE_TOKEN.to_owned(), 401, "invalid_token"),
        ("an expired token with this drv", api.mint(&expired(tracking("r1", driver))), 401, "token_expired"),
        ("a token with this drv, signed elsewhere", foreign(&tracking("r1", driver)), 401, "invalid_token"),
        ("the driver's own token", api.role(Role::Driver, driver), 403, "forbidden"),
        ("a rider token without drv", api.rider("r1"), 403, "forbidden"),
        ("a rider token for another driver", api.tracker("r1", "d-other"), 403, "forbidden"),
        ("an ops token", api.role(Role::Ops, "ops-1"), 403, "forbidden"),
        ("an edge token", api.role(Role::Edge, "edge-1"), 403, "forbidden"),
        ("a tracking token whose ride has no driver", tracking_a_searching_ride, 403, "forbidden"),
    ];
    for (what, token, status, code) in cases {
        for path in [format!("/api/drivers/{driver}/location"), format!("/api/sse/drivers/{driver}/location")] {
            let answer = api.get(&path).bearer(&token).send().await;
            if status == 200 {
                assert_eq!(answer.status, StatusCode::OK, "{path} with {what}: {}", answer.text());
            } else {
                answer.expect_error(status, code, &format!("{path} with {what}"));
            }
        }
    }
    api.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn health_readiness_and_metrics_answer_without_a_token() {
    let api = TestApi::start().await;
    let healthz = api.get("/healthz").send().await;
    assert_eq!((healthz.status, healthz.json()), (StatusCode::OK, json!({ "status": "ok" })));
    let readyz = api.get("/readyz").send().await;
    assert_eq!((readyz.status, readyz.json()), (StatusCode::OK, json!({ "status": "ready" })));

    let metrics = api.get("/metrics").send().await;
    assert_eq!(metrics.status, StatusCode::OK, "{}", metrics.text());
    assert_eq!(metrics.header("content-type"), Some("text/plain; version=0.0.4"), "Prometheus text");
    assert!(metrics.text().contains("# TYPE ridecast_rides_created_total counter"), "{}", metrics.text());
    api.stop().await;
}

#[tokio::test]
async fn readiness_is_503_with_retry_after_once_the_instance_drains() {
    let api = TestApi::start().await;
    api.instance.state.drain.begin();
    let readyz = api.get("/readyz").send().await;
    readyz.expect_error(503, "unavailable", "/readyz while draining");
    assert_eq!(readyz.header("retry-after"), Some("2"));
    let healthz = api.get("/healthz").send().await;
    assert_eq!(healthz.status, StatusCode::OK, "a draining instance is still alive");
    api.stop().await;
}
