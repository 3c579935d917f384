//! WebSocket paths asked with plain HTTP (PROTOCOL v1.1 "WebSocket paths"): the same checks as an
//! upgrade, in the contract's order (401, 400, 403, 404), each answered with the JSON error form;
//! then a request that passed them but is no upgrade gets `426 upgrade_required` (with
//! `Upgrade: websocket`), and another method than `GET` `405 method_not_allowed` (with
//! `Allow: GET`). Clients that forget the upgrade, or a proxy that strips it, get an answer they
//! can read instead of a bare text body.

use reqwest::Method;
use ridecast_tests::Origin;
use ridecast_tests::http::{Auth, expect_error, header, post_json, send};
use ridecast_tests::tokens::{
    GARBAGE_TOKEN, driver_token, edge_token, ops_token, rider_token, rider_token_without_drv,
};
use serde_json::{Value, json};

/// One WebSocket path, with what each check needs.
struct WsPath {
    /// The path as a client with the right token asks for it.
    path: String,
    /// The same path with a malformed id, if it takes one.
    bad_id: Option<String>,
    /// The same path naming something unknown, if it can (404).
    unknown: Option<String>,
    /// A token it accepts, and one of another role.
    right: String,
    wrong_role: String,
}

/// A plain `GET` with `auth`: no upgrade headers.
async fn plain_get(origin: &Origin, path: &str, auth: Auth<'_>) -> reqwest::Response {
    send(Method::GET, &origin.url(path), auth, None).await
}

/// Every WebSocket path the origin serves: the driver's, the chat's (of a ride `rider` requested)
/// and the edge links.
async fn ws_paths(origin: &Origin) -> Vec<WsPath> {
    let rider = rider_token_without_drv("r-plain");
    let body =
        json!({ "pickup": { "lat": 37.7749, "lng": -122.4194 }, "dropoff": { "lat": 37.8044, "lng": -122.2712 } });
    let created = post_json(&origin.url("/api/rides"), Auth::Bearer(&rider), body.to_string()).await;
    assert_eq!(created.status().as_u16(), 201, "a ride to chat about");
    let created: Value =
        serde_json::from_str(&created.text().await.unwrap_or_default()).expect("the created ride is JSON");
    let ride = created["rideId"].as_str().expect("a rideId").to_owned();
    vec![
        WsPath {
            path: "/ws/rides".into(),
            bad_id: None,
            unknown: None,
            right: driver_token("d-plain"),
            wrong_role: rider_token("r-plain", "d-plain"),
        },
        WsPath {
            path: format!("/ws/chat/{ride}"),
            bad_id: Some("/ws/chat/a.b".into()),
            unknown: Some("/ws/chat/no-such-ride".into()),
            right: rider,
            wrong_role: ops_token("ops-plain"),
        },
        WsPath {
            path: "/edge/v1/drivers/d-plain".into(),
            bad_id: Some("/edge/v1/drivers/a.b".into()),
            unknown: None,
            right: edge_token("edge-plain"),
            wrong_role: rider_token("r-plain", "d-plain"),
        },
        WsPath {
            path: "/edge/v1/surge/zone-1".into(),
            bad_id: Some("/edge/v1/surge/a.b".into()),
            unknown: None,
            right: edge_token("edge-plain"),
            wrong_role: ops_token("ops-plain"),
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_requests_to_websocket_paths_get_json_errors_in_the_contract_order() {
    let origin = Origin::builder().start().await;
    for ws in ws_paths(&origin).await {
        let path = ws.path.as_str();
        expect_error(plain_get(&origin, path, Auth::None).await, 401, &format!("GET {path} without a token")).await;
        let garbage = plain_get(&origin, path, Auth::Bearer(GARBAGE_TOKEN)).await;
        expect_error(garbage, 401, &format!("GET {path} with a garbage token")).await;
        if let Some(bad_id) = &ws.bad_id {
            let answer = plain_get(&origin, bad_id, Auth::Bearer(&ws.right)).await;
            expect_error(answer, 400, &format!("GET {bad_id}: a malformed id, no upgrade")).await;
            let answer = plain_get(&origin, bad_id, Auth::Bearer(&ws.wrong_role)).await;
            expect_error(answer, 400, &format!("GET {bad_id} with another role: 400 before 403")).await;
        }
        let answer = plain_get(&origin, path, Auth::Bearer(&ws.wrong_role)).await;
        expect_error(answer, 403, &format!("GET {path} with another role's token, no upgrade")).await;
        if let Some(unknown) = &ws.unknown {
            let answer = plain_get(&origin, unknown, Auth::Bearer(&ws.right)).await;
            expect_error(answer, 404, &format!("GET {unknown}: nothing known, no upgrade")).await;
        }

        let plain = plain_get(&origin, path, Auth::Bearer(&ws.right)).await;
        let upgrade = header(&plain, "upgrade");
        let answer = expect_error(plain, 426, &format!("GET {path}: every check passed, but no upgrade")).await;
        assert_eq!(answer.code, "upgrade_required", "GET {path} without upgrade: {answer:?}");
        assert_eq!(upgrade.as_deref(), Some("websocket"), "a 426 says which upgrade it needs");
        // Query tokens (what browsers use) meet the same answer.
        let plain = plain_get(&origin, path, Auth::Query(&ws.right)).await;
        expect_error(plain, 426, &format!("GET {path}?token=, no upgrade")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_method_on_a_websocket_path_is_a_json_405_after_the_token_check() {
    let origin = Origin::builder().start().await;
    for ws in ws_paths(&origin).await {
        let path = ws.path.as_str();
        for method in [Method::POST, Method::DELETE, Method::PUT] {
            let answer = send(method.clone(), &origin.url(path), Auth::Bearer(&ws.right), None).await;
            let allow = header(&answer, "allow");
            let error = expect_error(answer, 405, &format!("{method} {path} with the right token")).await;
            assert_eq!(error.code, "method_not_allowed", "{method} {path}: {error:?}");
            assert_eq!(allow.as_deref(), Some("GET"), "{method} {path}: a 405 says which method is allowed");
            let anonymous = send(method.clone(), &origin.url(path), Auth::None, None).await;
            expect_error(anonymous, 401, &format!("{method} {path} without a token: the token is checked first")).await;
        }
    }
}
