//! Driver ids in paths: 1 to 64 characters of `[A-Za-z0-9_-]`, anything else is 400 — on the
//! location stream and on the polling endpoint, checked after the token and before permission.
//!
//! Contract: PROTOCOL.md, "Location" (ids) and "Precise points / Order of checks".

use ridecast_tests::http::{Auth, expect_error, get};
use ridecast_tests::rider::{location_path, polling_path};
use ridecast_tests::tokens::rider_token;
use ridecast_tests::{Origin, RiderStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_driver_ids_in_paths_are_400() {
    let origin = Origin::builder().start().await;
    // A valid rider token for another driver: 400 must come before 403.
    let token = rider_token("r1", "d1");
    let too_long = "a".repeat(65);
    let malformed = [
        ("65 characters", too_long.as_str()),
        ("a dot", "a.b"),
        ("a colon", "a:b"),
        ("a space (encoded)", "a%20b"),
        ("a slash (encoded)", "a%2Fb"),
        ("a non-ASCII letter (encoded)", "%C3%A4"),
        ("a plus sign", "a+b"),
    ];
    for (what, id) in malformed {
        for (endpoint, path) in [("location stream", location_path(id)), ("polling endpoint", polling_path(id))] {
            let response = get(&origin.url(&path), Auth::Bearer(&token), &[]).await;
            expect_error(response, 400, &format!("{endpoint} with an id of {what} ({id:?})")).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_of_64_allowed_characters_is_not_refused() {
    let origin = Origin::builder().start().await;
    let id = format!("Az09_-{}", "x".repeat(58));
    assert_eq!(id.len(), 64);
    let token = rider_token("r1", &id);

    RiderStream::open(&origin, &id, &token).await;
    let response = get(&origin.url(&polling_path(&id)), Auth::Bearer(&token), &[]).await;
    expect_error(response, 404, "polling a valid 64-character id with no location: 404, not 400").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_driver_id_is_400() {
    // "1 to 64 characters ...; anything else is 400": an empty segment is an id of 0 characters.
    let origin = Origin::builder().start().await;
    let token = rider_token("r1", "d1");
    for (endpoint, path) in [("location stream", location_path("")), ("polling endpoint", polling_path(""))] {
        let response = get(&origin.url(&path), Auth::Bearer(&token), &[]).await;
        expect_error(response, 400, &format!("{endpoint} with an empty id ({path})")).await;
    }
}
