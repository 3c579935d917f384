//! Edge links: `GET /edge/v1/drivers/{driverId}` and `GET /edge/v1/surge/{zoneId}`, each a
//! WebSocket from one edge Durable Object.
//!
//! The edge terminates riders' SSE near them and keeps a single link per object to the origin.
//! The link carries what a rider stream carries, as the same JSON as SSE `data:`: the current
//! value first, then each pushed value, latest-only, fed by the same hubs as the origin's own
//! streams. Both kinds of link are one mechanism; only the [`Topic`] differs.

use axum::{
    Extension,
    extract::{
        Path, State,
        ws::{
            CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code,
            rejection::WebSocketUpgradeRejection,
        },
    },
    response::Response,
};
use ridecast_protocol::{Id, Role};

use crate::{
    api::{error::ApiError, extract::ZonePath, front::ConnectionSlot, state::AppState, websocket},
    auth::Principal,
    base::metrics::GaugeGuard,
    bus::Topic,
    fanout::hubs::HubValue,
};

/// Links only send; what the edge sends back is pings, pongs and a close.
const LINK_FRAME_LIMIT: usize = 4 * 1024;

/// `GET /edge/v1/drivers/{driverId}`: one driver's locations.
pub async fn driver_link(
    State(state): State<AppState>,
    principal: Principal,
    Path(driver_id): Path<String>,
    slot: Option<Extension<ConnectionSlot>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let driver = Id::parse(&driver_id).map_err(ApiError::invalid_id("driver id"))?;
    upgrade(state, &principal, Topic::DriverLocation(driver), slot, ws)
}

/// `GET /edge/v1/surge/{zoneId}`: one zone's surge multiplier.
pub async fn surge_link(
    State(state): State<AppState>,
    principal: Principal,
    ZonePath(zone): ZonePath,
    slot: Option<Extension<ConnectionSlot>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    upgrade(state, &principal, Topic::SurgeZone(zone), slot, ws)
}

/// Authorises (an `edge` token; before the upgrade, after the id was checked) and upgrades; a
/// request that passes and is no upgrade gets a JSON 426 (405 for another method than `GET`).
fn upgrade(
    state: AppState,
    principal: &Principal,
    topic: Topic,
    slot: Option<Extension<ConnectionSlot>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    principal.require_role(Role::Edge)?;
    if state.drain.is_draining() {
        return Err(ApiError::Unavailable("the instance is draining"));
    }
    let ws = ws?;
    Ok(websocket::sized(ws, LINK_FRAME_LIMIT).on_upgrade(move |socket| async move {
        let _slot = slot;
        serve(state, topic, socket).await;
    }))
}

async fn serve(state: AppState, topic: Topic, mut socket: WebSocket) {
    let _drain = state.drain.tracker().token();
    let _open = GaugeGuard::new(&state.metrics, |m| &m.edge_links);
    let shutdown = state.drain.token().clone();
    let mut subscription = state.hubs.subscribe(topic);
    let mut last_id = 0;
    if let Some(current) = subscription.starting_value(&state.snapshots).await
        && !send(&mut socket, &current, &mut last_id).await
    {
        return;
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                let frame = CloseFrame { code: close_code::RESTART, reason: "server restarting; reconnect".into() };
                let _ = socket.send(Message::Close(Some(frame))).await;
                return;
            }
            value = subscription.next() => match value {
                Some(value) => if !send(&mut socket, &value, &mut last_id).await { return },
                None => return,
            },
            frame = socket.recv() => match frame {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                _ => return, // closed, failed, or sent something a link never sends
            },
        }
    }
}

/// Sends `value` if it is newer than the last sent; `false` when the link is gone.
async fn send(socket: &mut WebSocket, value: &HubValue, last_id: &mut u64) -> bool {
    if value.id <= *last_id {
        return true;
    }
    let Ok(text) = Utf8Bytes::try_from(value.json.clone()) else { return true };
    *last_id = value.id;
    socket.send(Message::Text(text)).await.is_ok()
}
