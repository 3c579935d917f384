//! Local fan-out: one latest-value hub per followed key and one room per ride chat on this
//! instance, and the instance's single bus subscription for each.
//!
//! | module | what it holds |
//! |---|---|
//! | [`hubs`] | latest-value hubs (driver locations, surge zones, ride statuses) and their subscriptions |
//! | [`chat_rooms`] | a ride chat's participants on this instance, woken by notices |
//! | [`subscriptions`] | the subscription manager: bus subscriptions equal to the local hubs and rooms |

pub mod chat_rooms;
pub mod hubs;
pub mod subscriptions;
