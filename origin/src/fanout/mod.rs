//! Local fan-out: one latest-value hub per followed key and one room per ride chat on this
//! instance, and the instance's single bus subscription for each.
//!
//! | module | what it holds |
//! |---|---|
//! | [`hubs`] | latest-value hubs (driver locations, surge zones, ride statuses) and their subscriptions |
//! | [`chat_rooms`] | a ride chat's participants on this instance, woken by notices |
//! | [`requests`] | the queue in which hubs and rooms ask for a channel and let it go |
//! | [`subscriptions`] | the manager applying them: bus subscriptions equal to the local hubs and rooms, and what arrives handed to them |
//! | [`snapshots`] | where a hub reads its key's current value (bus or ride store) |

pub mod chat_rooms;
pub mod hubs;
pub mod requests;
pub mod snapshots;
pub mod subscriptions;
