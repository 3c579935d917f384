//! The Durable Objects: one `DriverHub` per driver id and one `SurgeHub` per zone id (plus their
//! shards, `<id>#<k>`, when a key outgrows one object: [`crate::tree`]), both thin wrappers over
//! [`crate::hub::Hub`] so the mechanism exists once.

use worker::{DurableObject, Env, Request, Response, Result, State, durable_object};

use crate::hub::{Hub, HubKind, RETRY_MS};

/// Rider location streams of one driver (object named after the driver id).
#[durable_object]
#[derive(Debug)]
pub struct DriverHub {
    hub: Hub,
}

impl DurableObject for DriverHub {
    fn new(state: State, env: Env) -> Self {
        Self { hub: Hub::new(HubKind::Driver, state, env) }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        match self.hub.handle(&req).await {
            Ok(response) => Ok(response),
            Err(refused) => refused.into_sse_response(RETRY_MS),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        self.hub.on_alarm();
        Response::empty()
    }
}

/// Rider surge streams of one zone (object named after the zone id).
#[durable_object]
#[derive(Debug)]
pub struct SurgeHub {
    hub: Hub,
}

impl DurableObject for SurgeHub {
    fn new(state: State, env: Env) -> Self {
        Self { hub: Hub::new(HubKind::Surge, state, env) }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        match self.hub.handle(&req).await {
            Ok(response) => Ok(response),
            Err(refused) => refused.into_sse_response(RETRY_MS),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        self.hub.on_alarm();
        Response::empty()
    }
}
