//! Tokens from outside this codebase: one minted by PyJWT (any standard JWT library must be
//! able to mint a valid token) and one printed by `ridecast-origin token`.
//!
//! Contract: PROTOCOL.md, "Tokens"; CLI.md, the `token` subcommand.

use std::process::Command;

use ridecast_protocol::{Role, TokenKeys};
use ridecast_tests::http::{expect_error, get};
use ridecast_tests::origin::origin_binary;
use ridecast_tests::tokens::{TEST_SECRET, driver_token};
use ridecast_tests::wait::now_secs;
use ridecast_tests::{Auth, DriverSocket, Fix, Origin, RiderStream, Route, TsClock};

/// Mints an HS256 token with PyJWT, or `None` when PyJWT is not installed. In CI (`CI` set,
/// where `scripts/test` installs PyJWT) a missing PyJWT fails instead of skipping.
fn pyjwt_token(claims: &str) -> Option<String> {
    pyjwt_token_with(claims, "jwt.encode(claims, secret, algorithm='HS256')")
}

/// Runs a PyJWT expression (`claims` and `secret` in scope, as `pyjwt_token` has them) that
/// yields a token; `None` when PyJWT is not installed (outside CI).
fn pyjwt_token_with(claims: &str, expression: &str) -> Option<String> {
    let probe = Command::new("python3").args(["-c", "import jwt"]).output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "PyJWT must be installed in CI (scripts/test installs it): {probe:?}"
        );
        eprintln!(
            "SKIPPED: PyJWT is not available (`python3 -c 'import jwt'` failed: {probe:?}); install it with `pip install PyJWT`"
        );
        return None;
    }
    let script = format!(
        "import base64, hashlib, hmac, json, os, jwt\n\
         claims, secret = json.loads(os.environ['CLAIMS']), os.environ['SECRET']\n\
         t = {expression}\n\
         print(t.decode() if isinstance(t, bytes) else t)"
    );
    let output = Command::new("python3")
        .args(["-c", &script])
        .env("CLAIMS", claims)
        .env("SECRET", TEST_SECRET)
        .output()
        .expect("running python3");
    assert!(output.status.success(), "PyJWT failed: {}", String::from_utf8_lossy(&output.stderr));
    Some(String::from_utf8(output.stdout).expect("a UTF-8 token").trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_minted_by_pyjwt_opens_the_location_stream_and_the_driver_socket() {
    let exp = now_secs() + 600;
    let Some(rider) = pyjwt_token(&format!(r#"{{"sub":"r-py","role":"rider","drv":"d-py","exp":{exp}}}"#)) else {
        return;
    };
    let driver = pyjwt_token(&format!(r#"{{"sub":"d-py","role":"driver","exp":{exp}}}"#)).expect("PyJWT is present");
    let origin = Origin::builder().start().await;

    let mut stream = RiderStream::open(&origin, "d-py", &rider).await;
    let mut socket = DriverSocket::connect(&origin, &driver).await;
    let fix = Fix::at(Route::san_francisco().point(0), TsClock::new().tick());
    socket.send_location(fix).await;
    stream.expect_location("d-py", &fix, "a location, with PyJWT tokens on both ends").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_subcommand_prints_a_rider_token_that_opens_the_drivers_stream() {
    let mut command = Command::new(origin_binary());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RIDECAST_") {
            command.env_remove(key);
        }
    }
    let output = command
        .args(["token", "--role", "rider", "--sub", "r1", "--driver", "d1", "--ttl", "3600"])
        .env("RIDECAST_TOKEN_SECRET", TEST_SECRET)
        .output()
        .expect("running ridecast-origin token");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "`ridecast-origin token` failed: {}", String::from_utf8_lossy(&output.stderr));
    let token = stdout.strip_suffix('\n').unwrap_or_else(|| panic!("one token and a newline, got {stdout:?}"));
    assert!(!token.contains(['\n', ' ']), "stdout holds exactly one token: {stdout:?}");

    let claims = TokenKeys::new(TEST_SECRET.as_bytes(), None)
        .expect("keys")
        .verify(token, now_secs())
        .unwrap_or_else(|e| panic!("the printed token does not verify with the secret: {e}"));
    assert_eq!(
        (claims.sub.as_str(), claims.role, claims.drv.as_ref().map(|d| d.as_str())),
        ("r1", Role::Rider, Some("d1"))
    );
    assert!(
        claims.exp.abs_diff(now_secs() + 3600) <= 60,
        "--ttl 3600 gives exp about an hour from now, got {}",
        claims.exp
    );

    let origin = Origin::builder().start().await;
    let mut stream = RiderStream::open(&origin, "d1", token).await;
    let mut socket = DriverSocket::connect(&origin, &driver_token("d1")).await;
    let fix = Fix::at(Route::san_francisco().point(0), TsClock::new().tick());
    socket.send_location(fix).await;
    stream.expect_location("d1", &fix, "a location, seen with the printed token").await;
}

/// What an attacker who knows the token format (but not the secret's use) would try: another
/// algorithm with the same secret, no signature at all, an RS256 header over an HMAC signature
/// (algorithm confusion), and a token past the leeway. Each is 401 `invalid_token` or
/// `token_expired`; a token expired within the documented leeway (10 s) still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_other_algorithms_unsigned_confused_or_long_expired_are_refused() {
    let now = now_secs();
    let claims = |exp: u64| format!(r#"{{"sub":"r-alg","role":"rider","drv":"d-alg","exp":{exp}}}"#);
    // An RS256 header, signed with HMAC-SHA256 and the shared secret as if it were a public key.
    let confused = "(lambda enc: (lambda si: si + '.' + enc(hmac.new(secret.encode(), si.encode(), hashlib.sha256).digest()))\
                    (enc(json.dumps({'alg': 'RS256', 'typ': 'JWT'}).encode()) + '.' + enc(json.dumps(claims).encode())))\
                    (lambda b: base64.urlsafe_b64encode(b).rstrip(b'=').decode())";
    let cases = [
        (
            "HS384 with the right secret",
            claims(now + 600),
            "jwt.encode(claims, secret, algorithm='HS384')",
            "invalid_token",
        ),
        (
            "HS512 with the right secret",
            claims(now + 600),
            "jwt.encode(claims, secret, algorithm='HS512')",
            "invalid_token",
        ),
        ("alg none", claims(now + 600), "jwt.encode(claims, None, algorithm='none')", "invalid_token"),
        ("an RS256 header over an HMAC signature", claims(now + 600), confused, "invalid_token"),
        ("expired 60 s ago", claims(now - 60), "jwt.encode(claims, secret, algorithm='HS256')", "token_expired"),
    ];
    let origin = Origin::builder().start().await;
    let path = ridecast_tests::rider::location_path("d-alg");
    for (what, claims, expression, code) in cases {
        let Some(token) = pyjwt_token_with(&claims, expression) else { return };
        let response = get(&origin.url(&path), Auth::Bearer(&token), &[]).await;
        let answer = expect_error(response, 401, what).await;
        assert_eq!(answer.code, code, "{what}");
    }
    // Its own clock reading: the cases above (a Python process each) may take seconds on a
    // loaded machine, and the leeway is only 10 s.
    let Some(within_leeway) = pyjwt_token(&claims(now_secs() - 3)) else { return };
    let mut stream = RiderStream::open(&origin, "d-alg", &within_leeway).await;
    stream.expect_quiet(std::time::Duration::from_millis(200), "a token 3 s past its exp, within the leeway").await;
}
