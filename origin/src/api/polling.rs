//! `GET /api/drivers/{driverId}/location`: the polling endpoint Ridecast replaces, kept for old
//! clients and as the benchmark's baseline. The ETag is the location's `ts`, so an unchanged
//! location costs a 304 and no body.

use axum::{
    extract::State,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;

use crate::api::{error::ApiError, extract::TrackedDriver, state::AppState};

pub async fn driver_location(
    State(state): State<AppState>,
    TrackedDriver { driver, .. }: TrackedDriver,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let json = state
        .backend
        .latest_location(&driver)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no recent location for driver {driver}")))?;
    let etag = etag_of(&json);
    let mut response = if if_none_match(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], json).into_response()
    };
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// A strong ETag from the location's timestamp: one driver's updates have distinct `ts`.
fn etag_of(json: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Stamp {
        ts: u64,
    }
    match serde_json::from_slice::<Stamp>(json) {
        Ok(Stamp { ts }) => format!("\"{ts}\""),
        Err(_) => format!("\"len-{}\"", json.len()),
    }
}

/// Whether `If-None-Match` names `etag` (or is `*`), weak or strong.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == etag
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_etag_is_the_quoted_timestamp() {
        assert_eq!(etag_of(br#"{"driverId":"d","lat":1,"lng":2,"ts":42}"#), "\"42\"");
    }

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_star() {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"1\", W/\"42\""));
        assert!(if_none_match(&headers, "\"42\""));
        assert!(!if_none_match(&headers, "\"43\""));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(if_none_match(&headers, "\"7\""));
    }
}
