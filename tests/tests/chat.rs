//! Ride chat, `GET /ws/chat/{rideId}`: the ride's rider and its assigned driver talk from any
//! instances in one total order per ride, each getting its own message back as the ack; history
//! comes first on connect and `?since=` resumes after exactly one message; a participant whose
//! instance dies comes back elsewhere and misses nothing; a retried `clientMsgId` is stored once;
//! anyone else is refused before the upgrade, in the contract's order of checks; typing is
//! relayed and never stored; bad, oversized and flooding messages get the contract's errors; and
//! messages outlive every origin. Once the ride is over, new messages are refused as
//! `ride_ended` while the history is still returned.
//!
//! Contract: PROTOCOL.md, "Chat WebSocket", "Errors" (WebSocket errors), "Tokens", "Precise
//! points / Who is who, Chat echo, WebSocket auth, Order of checks, Numbers".

use std::collections::HashSet;

use ridecast_protocol::ErrorCode;
use ridecast_protocol::chat::{ChatMessage, ChatRole, ChatServerFrame};
use ridecast_tests::chat::{AssignedRide, MAX_FRAME, MAX_TEXT_CHARS, Next, message_frame, parse_server_frame};
use ridecast_tests::driver::Ending;
use ridecast_tests::http::Auth;
use ridecast_tests::tokens::{
    GARBAGE_TOKEN, bad_signature_rider_token, driver_token, edge_token, expired_rider_token, ops_token, ride_token,
    rider_token, rider_token_without_drv,
};
use ridecast_tests::{
    ChatSocket, Cluster, EXPECT, Mode, Origin, OriginBuilder, QUIET, in_both_modes, on_a_redis_cluster_too,
};
use serde_json::json;

/// Chat pace for every test but the flooding ones: far beyond anything they send, so that no
/// refusal there can come from the rate limit.
const EASY_RATE: u32 = 1_000;
const EASY_BURST: u32 = 1_000;

/// Chat pace for the flood: ten at once, then two a second.
const FLOOD_RATE: u32 = 2;
const FLOOD_BURST: u32 = 10;
/// How many messages the flood sends as fast as it can: well past the burst.
const FLOOD: usize = 40;

/// Refusals in a row after which the origin closes a chat socket with 1008.
const ABUSE_STREAK: usize = 100;

/// A ride id nobody made (it follows the id rule).
const UNKNOWN_RIDE: &str = "0123456789abcdef0123456789abcdef";

fn easy_chat(origin: OriginBuilder) -> OriginBuilder {
    origin.flag("--chat-rate", EASY_RATE).flag("--chat-burst", EASY_BURST)
}

async fn cluster(mode: Mode) -> Cluster {
    Cluster::start(mode, easy_chat).await
}

/// The ride to chat on: requested on the rider's instance, accepted through the driver's.
async fn ride_on(cluster: &Cluster) -> AssignedRide {
    AssignedRide::start(cluster.rider_side(), cluster.driver_side(), "r-chat", "d-chat").await
}

/// The rider's chat (with the ride-scoped token, as the app holds it) on `origin`.
async fn rider_chat(origin: &Origin, ride: &AssignedRide, since: Option<&str>) -> ChatSocket {
    ChatSocket::connect(origin, &ride.ride_id, &ride.ride_token, since).await
}

/// The assigned driver's chat on `origin`.
async fn driver_chat(origin: &Origin, ride: &AssignedRide, since: Option<&str>) -> ChatSocket {
    ChatSocket::connect(origin, &ride.ride_id, &ride.driver_token, since).await
}

/// The instance neither side of the ride used (Redis mode), or the one instance.
fn third(cluster: &Cluster) -> &Origin {
    cluster.origins.last().expect("a cluster has an origin")
}

/// Asserts that a participant connecting to `origin` now gets exactly `expected` as history,
/// oldest first, and nothing after it.
async fn assert_history(origin: &Origin, ride: &AssignedRide, expected: &[ChatMessage], what: &str) {
    let mut late = ChatSocket::connect(origin, &ride.ride_id, &ride.rider_token, None).await;
    let history = late.next_messages(expected.len(), what).await;
    assert_eq!(history, expected, "{what}");
    late.expect_quiet(QUIET, &format!("nothing but the stored messages ({what})")).await;
}

fn assert_unique(messages: &[ChatMessage], what: &str) {
    let mut seen = HashSet::new();
    for message in messages {
        assert!(seen.insert(message.id.as_str()), "{what}: message {} appears twice in {messages:#?}", message.id);
    }
}

/// The `clientMsgId`s of `from`'s messages, in the order they appear.
fn sent_by(messages: &[ChatMessage], from: ChatRole) -> Vec<&str> {
    messages.iter().filter(|m| m.from == from).map(|m| m.client_msg_id.as_str()).collect()
}

in_both_modes!(
    rider_and_driver_chat_both_ways_in_one_order,
    history_comes_first_and_since_resumes_after_exactly_that_message,
    a_retried_client_msg_id_is_stored_once_and_answered_with_the_original,
    only_the_rides_rider_and_its_assigned_driver_may_open_its_chat,
    chat_refusals_come_in_the_contracts_order,
    typing_reaches_the_other_side_and_is_never_stored,
    a_bad_message_gets_an_error_frame_and_the_socket_stays_open,
    a_4_kib_frame_is_a_message_and_a_bigger_one_closes_the_socket_with_1009,
    a_flood_is_rate_limited_and_only_what_was_echoed_is_stored,
    after_completed_a_new_message_is_ride_ended_and_connecting_still_returns_the_history,
);

on_a_redis_cluster_too!(
    rider_and_driver_chat_both_ways_in_one_order,
    history_comes_first_and_since_resumes_after_exactly_that_message,
    a_retried_client_msg_id_is_stored_once_and_answered_with_the_original,
);

async fn rider_and_driver_chat_both_ways_in_one_order(mode: Mode) {
    let cluster = cluster(mode).await;
    let ride = ride_on(&cluster).await;
    // In Redis mode the two sockets are on different instances: every message crosses the bus.
    let mut rider = rider_chat(cluster.rider_side(), &ride, None).await;
    let mut driver = driver_chat(cluster.driver_side(), &ride, None).await;
    tokio::join!(
        rider.expect_quiet(QUIET, "a new chat has no history"),
        driver.expect_quiet(QUIET, "a new chat has no history"),
    );

    let hello = rider.say("r-1", "I'm at the corner by the bakery").await;
    assert_eq!(hello.from, ChatRole::Rider, "the rider's echo: {hello:?}");
    assert_eq!(driver.next_message("the rider's message").await, hello, "the driver gets what the rider's ack says");
    let reply = driver.say("d-1", "Two minutes away").await;
    assert_eq!(reply.from, ChatRole::Driver, "the driver's echo: {reply:?}");
    assert_eq!(rider.next_message("the driver's reply").await, reply, "the rider gets what the driver's ack says");
    assert_ne!(hello.id, reply.id, "every message has its own id");

    // Both talk at once, without waiting for anything.
    const EACH: usize = 5;
    tokio::join!(
        async {
            for k in 0..EACH {
                rider.send_message(&format!("r-burst-{k}"), &format!("rider line {k}")).await;
            }
        },
        async {
            for k in 0..EACH {
                driver.send_message(&format!("d-burst-{k}"), &format!("driver line {k}")).await;
            }
        },
    );
    let (seen_by_rider, seen_by_driver) = tokio::join!(
        rider.next_messages(2 * EACH, "both sides' lines and the rider's echoes"),
        driver.next_messages(2 * EACH, "both sides' lines and the driver's echoes"),
    );
    assert_eq!(seen_by_rider, seen_by_driver, "one total order: both sides see the same messages in the same order");
    assert_unique(&seen_by_rider, "the lines sent at once");
    let in_order = |prefix: &str| (0..EACH).map(|k| format!("{prefix}-burst-{k}")).collect::<Vec<_>>();
    assert_eq!(sent_by(&seen_by_rider, ChatRole::Rider), in_order("r"), "the rider's lines, in the order sent");
    assert_eq!(sent_by(&seen_by_rider, ChatRole::Driver), in_order("d"), "the driver's lines, in the order sent");
    for message in &seen_by_rider {
        let (who, k) = message.client_msg_id.split_once("-burst-").expect("one of the burst's ids");
        let expected = if who == "r" { format!("rider line {k}") } else { format!("driver line {k}") };
        assert_eq!(message.text, expected, "text and clientMsgId belong together: {message:?}");
    }

    let conversation: Vec<ChatMessage> = [hello, reply].into_iter().chain(seen_by_rider).collect();
    assert_history(third(&cluster), &ride, &conversation, "the whole conversation, for a late joiner").await;
    tokio::join!(
        rider.expect_quiet(QUIET, "every message was delivered once"),
        driver.expect_quiet(QUIET, "every message was delivered once"),
    );
}

async fn history_comes_first_and_since_resumes_after_exactly_that_message(mode: Mode) {
    let cluster = cluster(mode).await;
    let ride = ride_on(&cluster).await;
    let mut rider = rider_chat(cluster.rider_side(), &ride, None).await;
    let mut driver = driver_chat(cluster.driver_side(), &ride, None).await;
    let mut said = Vec::new();
    for k in 1..=3 {
        said.push(rider.say(&format!("h-r{k}"), &format!("rider {k}")).await);
    }
    assert_eq!(driver.next_messages(3, "the rider's three messages").await, said);
    said.push(driver.say("h-d1", "driver 1").await);
    assert_eq!(rider.next_message("the driver's message").await, said[3]);
    said.push(rider.say("h-r4", "rider 4").await);
    assert_eq!(driver.next_message("the rider's fourth message").await, said[4]);

    let origin = third(&cluster);
    // Without `since`: everything, oldest first.
    let mut from_start = ChatSocket::connect(origin, &ride.ride_id, &ride.rider_token, None).await;
    assert_eq!(from_start.next_messages(said.len(), "the history from the start").await, said);
    // With `since`: exactly the messages after that one, whichever it is, for either participant.
    let mut after_first = rider_chat(origin, &ride, Some(&said[0].id)).await;
    assert_eq!(after_first.next_messages(4, "the history after the first message").await, said[1..]);
    let mut after_third = driver_chat(origin, &ride, Some(&said[2].id)).await;
    assert_eq!(after_third.next_messages(2, "the history after the third message").await, said[3..]);
    let since_query = ChatSocket::try_connect(origin, &ride.ride_id, Auth::Query(&ride.ride_token), Some(&said[3].id));
    let mut after_fourth = since_query.await.unwrap_or_else(|r| panic!("?since with ?token= refused: {}", r.status));
    assert_eq!(after_fourth.next_messages(1, "the history after the fourth message").await, said[4..]);
    let mut after_last = driver_chat(origin, &ride, Some(&said[4].id)).await;
    let mut resumed = [&mut from_start, &mut after_first, &mut after_third, &mut after_fourth, &mut after_last];
    futures_util::future::join_all(
        resumed.iter_mut().map(|socket| socket.expect_quiet(QUIET, "nothing after the history: no duplicate")),
    )
    .await;

    // Live messages follow the history on every socket.
    let live = driver.say("h-d2", "driver 2, live").await;
    assert_eq!(rider.next_message("the live message").await, live);
    for socket in &mut resumed {
        assert_eq!(socket.next_message("the live message after the history").await, live);
    }
}

/// Kills the instance that `moving`'s chat is on in the middle of a conversation; the other side
/// keeps talking, before and while `moving` reconnects to another instance with `since`.
async fn a_participant_whose_instance_dies_resumes_elsewhere_and_misses_nothing(moving: ChatRole) {
    let mut cluster = cluster(Mode::Redis).await;
    let ride = AssignedRide::start(&cluster.origins[1], &cluster.origins[0], "r-kill", "d-kill").await;
    let token_of = |role: ChatRole| match role {
        ChatRole::Rider => ride.ride_token.clone(),
        ChatRole::Driver => ride.driver_token.clone(),
    };
    let staying = if moving == ChatRole::Rider { ChatRole::Driver } else { ChatRole::Rider };
    // The staying side chats on origin 1; the moving side on origin 2, which dies, then on origin 0.
    let mut stayer = ChatSocket::connect(&cluster.origins[1], &ride.ride_id, &token_of(staying), None).await;
    let mut mover = ChatSocket::connect(&cluster.origins[2], &ride.ride_id, &token_of(moving), None).await;
    let (mut stayer_seen, mut mover_seen) = (Vec::new(), Vec::new());
    for k in 0..3 {
        let said = stayer.say(&format!("s-{k}"), &format!("staying side, line {k}")).await;
        assert_eq!(mover.next_message("the staying side's line").await, said);
        stayer_seen.push(said.clone());
        mover_seen.push(said);
        let said = mover.say(&format!("m-{k}"), &format!("moving side, line {k}")).await;
        assert_eq!(stayer.next_message("the moving side's line").await, said);
        stayer_seen.push(said.clone());
        mover_seen.push(said);
    }

    cluster.origins[2].kill9().await;
    let (frames, _ending) = mover.expect_end(EXPECT, "the chat on the killed instance").await;
    assert!(frames.is_empty(), "nothing was sent after the last message read, got {frames:?}");

    // The staying side keeps talking while the other is away...
    const AWAY: usize = 3;
    for k in 0..AWAY {
        stayer_seen.push(stayer.say(&format!("s-away-{k}"), &format!("are you there? ({k})")).await);
    }
    // ...and while it reconnects, with `since` = the last message it saw.
    const MEANWHILE: usize = 10;
    let last_seen = mover_seen.last().expect("the moving side saw messages").id.clone();
    let moving_token = token_of(moving);
    let (mut mover, said_meanwhile) =
        tokio::join!(ChatSocket::connect(&cluster.origins[0], &ride.ride_id, &moving_token, Some(&last_seen)), async {
            let mut said = Vec::new();
            for k in 0..MEANWHILE {
                said.push(stayer.say(&format!("s-meanwhile-{k}"), &format!("still here ({k})")).await);
            }
            said
        },);
    stayer_seen.extend(said_meanwhile);
    // History, then live: everything since its last message, no gap, no duplicate.
    mover_seen.extend(mover.next_messages(AWAY + MEANWHILE, "everything after the last message seen").await);

    let back = mover.say("m-back", "back, sorry").await;
    assert_eq!(stayer.next_message("the moving side's first line after reconnecting").await, back);
    stayer_seen.push(back.clone());
    mover_seen.push(back);
    let last = stayer.say("s-last", "see you").await;
    assert_eq!(mover.next_message("the staying side's last line").await, last);
    stayer_seen.push(last.clone());
    mover_seen.push(last);

    assert_eq!(mover_seen, stayer_seen, "both sides end with the same complete sequence in the same order");
    assert_unique(&stayer_seen, "the conversation across the kill");
    assert_history(&cluster.origins[0], &ride, &stayer_seen, "the stored conversation").await;
    tokio::join!(
        stayer.expect_quiet(QUIET, "every message was delivered once"),
        mover.expect_quiet(QUIET, "every message was delivered once"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_whose_instance_dies_resumes_elsewhere_and_misses_nothing() {
    a_participant_whose_instance_dies_resumes_elsewhere_and_misses_nothing(ChatRole::Driver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rider_whose_instance_dies_resumes_elsewhere_and_misses_nothing() {
    a_participant_whose_instance_dies_resumes_elsewhere_and_misses_nothing(ChatRole::Rider).await;
}

async fn a_retried_client_msg_id_is_stored_once_and_answered_with_the_original(mode: Mode) {
    let cluster = cluster(mode).await;
    let ride = ride_on(&cluster).await;
    let mut rider = rider_chat(cluster.rider_side(), &ride, None).await;
    let mut driver = driver_chat(cluster.driver_side(), &ride, None).await;
    let original = rider.say("c-retry", "Is it the blue car?").await;
    assert_eq!(driver.next_message("the message").await, original);

    // The app sends it again (it never saw the ack, say): the answer is the stored message.
    rider.send_message("c-retry", "Is it the blue car?").await;
    assert_eq!(rider.next_message("the answer to a retry").await, original, "a retry is answered with the original");
    // Again after reconnecting, to another instance in Redis mode, resuming after the original.
    rider.close().await;
    let mut rider = rider_chat(third(&cluster), &ride, Some(&original.id)).await;
    rider.send_message("c-retry", "Is it the blue car?").await;
    assert_eq!(rider.next_message("the answer to a retry after reconnecting").await, original, "same id again");
    driver.expect_quiet(QUIET, "the other side sees a retried message only once").await;

    // A `clientMsgId` belongs to its sender: the driver's own "c-retry" is a new message.
    let answer = driver.say("c-retry", "Yes, blue").await;
    assert_eq!(answer.from, ChatRole::Driver, "{answer:?}");
    assert_ne!(answer.id, original.id, "the driver's message is not the rider's");
    assert_eq!(rider.next_message("the driver's answer").await, answer);
    rider.expect_quiet(QUIET, "nothing else").await;
    assert_history(third(&cluster), &ride, &[original, answer], "each message stored once").await;
}

async fn only_the_rides_rider_and_its_assigned_driver_may_open_its_chat(mode: Mode) {
    let cluster = cluster(mode).await;
    let ride = ride_on(&cluster).await;
    let other = AssignedRide::start(cluster.rider_side(), cluster.driver_side(), "r-other", "d-other").await;
    // In Redis mode an instance that neither made the ride nor holds its driver decides.
    let origin = third(&cluster);

    let outsiders = [
        ("another rider's own token", rider_token_without_drv(&other.rider)),
        ("another ride's ride-scoped token", other.ride_token.clone()),
        ("a token scoped to another ride, for a third rider", ride_token("r-third", &other.ride_id)),
        ("a rider token tracking this ride's driver", rider_token("r-third", &ride.driver)),
        ("a rider token whose sub is this ride's driver", rider_token_without_drv(&ride.driver)),
        ("the driver of another ride", other.driver_token.clone()),
        ("a driver on no ride", driver_token("d-stranger")),
        ("a driver token whose sub is this ride's rider", driver_token(&ride.rider)),
        ("an ops token", ops_token("ops-1")),
        ("an ops token whose sub is this ride's rider", ops_token(&ride.rider)),
        ("an edge token", edge_token("edge-1")),
    ];
    for (what, token) in &outsiders {
        for (how, auth) in [("header", Auth::Bearer(token)), ("?token=", Auth::Query(token))] {
            let what = format!("the chat with {what} ({how})");
            let answer = ChatSocket::expect_refused(origin, &ride.ride_id, auth, None, 403, &what).await;
            assert_eq!(answer.code, "forbidden", "{what}");
        }
    }
    for (what, token) in [
        ("a token scoped to the unknown ride", ride_token(&ride.rider, UNKNOWN_RIDE)),
        ("a rider's own token", ride.rider_token.clone()),
    ] {
        let what = format!("the chat of an unknown ride with {what}");
        let answer = ChatSocket::expect_refused(origin, UNKNOWN_RIDE, Auth::Bearer(&token), None, 404, &what).await;
        assert_eq!(answer.code, "not_found", "{what}");
    }

    // Allowed: the creator's own token, the ride-scoped token (also in the query, as a browser
    // sends it), a token whose `ride` is this ride whatever its `sub`, and the assigned driver.
    let shared = ride_token("r-shared", &ride.ride_id);
    let mut riders = vec![
        admitted(origin, &ride, Auth::Bearer(&ride.rider_token), "the creator's own token").await,
        admitted(origin, &ride, Auth::Bearer(&ride.ride_token), "the ride-scoped token").await,
        admitted(origin, &ride, Auth::Query(&ride.ride_token), "the ride-scoped token in ?token=").await,
        admitted(origin, &ride, Auth::Bearer(&shared), "a token scoped to the ride, whatever its sub").await,
    ];
    let mut driver = admitted(origin, &ride, Auth::Query(&ride.driver_token), "the assigned driver").await;
    let hello = driver.say("allowed-1", "Hello, I'm outside").await;
    for rider in &mut riders {
        assert_eq!(rider.next_message("the driver's message on every rider socket").await, hello);
    }
}

/// Opens the ride's chat with `auth`, which must be let in.
async fn admitted(origin: &Origin, ride: &AssignedRide, auth: Auth<'_>, what: &str) -> ChatSocket {
    match ChatSocket::try_connect(origin, &ride.ride_id, auth, None).await {
        Ok(socket) => socket,
        Err(refusal) => panic!("{what} may chat, but was refused with {}: {}", refusal.status, refusal.body),
    }
}

async fn chat_refusals_come_in_the_contracts_order(mode: Mode) {
    let cluster = cluster(mode).await;
    let ride = ride_on(&cluster).await;
    let origin = third(&cluster);
    let ride_id = ride.ride_id.as_str();

    // 401 first: no token or a bad one, whatever else is wrong with the request.
    let expired = expired_rider_token(&ride.rider, &ride.driver);
    let bad_signature = bad_signature_rider_token(&ride.rider, &ride.driver);
    for (target, path_ride, since) in [
        ("this ride", ride_id, None),
        ("a malformed ride id", "a.b", None),
        ("a malformed since", ride_id, Some("a.b")),
        ("an unknown ride", UNKNOWN_RIDE, None),
    ] {
        for (how, auth) in [
            ("no token", Auth::None),
            ("a token that is not a JWT", Auth::Bearer(GARBAGE_TOKEN)),
            ("an expired ?token=", Auth::Query(&expired)),
            ("a token signed with another secret", Auth::Bearer(&bad_signature)),
        ] {
            ChatSocket::expect_refused(origin, path_ride, auth, since, 401, &format!("{target} with {how}")).await;
        }
    }

    // 400 next: a malformed ride id or `since`, before it matters who asks or whether the ride exists.
    let too_long_ride = "r".repeat(65);
    let too_long_since = "1".repeat(65);
    let stranger = driver_token("d-stranger");
    let scoped_to_unknown = ride_token(&ride.rider, UNKNOWN_RIDE);
    for (target, path_ride, since) in [
        ("a ride id with a dot", "a.b", None),
        ("a ride id of 65 characters", too_long_ride.as_str(), None),
        ("a since with a dot", ride_id, Some("a.b")),
        ("a since with a space", ride_id, Some("1%202")),
        ("a since of 65 characters", ride_id, Some(too_long_since.as_str())),
        ("an unknown ride and a malformed since", UNKNOWN_RIDE, Some("a.b")),
    ] {
        for (who, token) in [
            ("the ride's rider", &ride.ride_token),
            ("the ride's driver", &ride.driver_token),
            ("a driver not on the ride", &stranger),
            ("a token scoped to the unknown ride", &scoped_to_unknown),
        ] {
            let what = format!("{target}, asked by {who}");
            let answer = ChatSocket::expect_refused(origin, path_ride, Auth::Bearer(token), since, 400, &what).await;
            assert_eq!(answer.code, "invalid_id", "{what}");
        }
    }

    // Then 403 (not allowed) and 404 (unknown ride), each on its own.
    let answer =
        ChatSocket::expect_refused(origin, ride_id, Auth::Bearer(&stranger), None, 403, "a stranger, this ride").await;
    assert_eq!(answer.code, "forbidden");
    let answer =
        ChatSocket::expect_refused(origin, UNKNOWN_RIDE, Auth::Bearer(&scoped_to_unknown), None, 404, "unknown").await;
    assert_eq!(answer.code, "not_found");

    // None of it hurt the ride's chat.
    let mut rider = rider_chat(origin, &ride, None).await;
    rider.say("after-refusals", "still works").await;
}

async fn typing_reaches_the_other_side_and_is_never_stored(mode: Mode) {
    let cluster = cluster(mode).await;
    let ride = ride_on(&cluster).await;
    let mut rider = rider_chat(cluster.rider_side(), &ride, None).await;
    let mut driver = driver_chat(cluster.driver_side(), &ride, None).await;

    rider
        .type_until_seen(
            &mut driver,
            ChatRole::Rider,
            "the rider typing, exactly {\"type\":\"typing\",\"from\":\"rider\"}",
        )
        .await;
    driver
        .type_until_seen(
            &mut rider,
            ChatRole::Driver,
            "the driver typing, exactly {\"type\":\"typing\",\"from\":\"driver\"}",
        )
        .await;
    tokio::join!(
        rider.expect_quiet(QUIET, "nobody is told of their own typing"),
        driver.expect_quiet(QUIET, "nobody is told of their own typing"),
    );

    let said = rider.say("t-1", "I see you").await;
    assert_eq!(driver.next_message("the message after typing").await, said);
    // A late joiner gets the message and no typing: typing is never stored.
    assert_history(third(&cluster), &ride, std::slice::from_ref(&said), "the history after typing").await;
    let mut resumed = driver_chat(third(&cluster), &ride, Some(&said.id)).await;
    resumed.expect_quiet(QUIET, "no typing replayed after the last message").await;

    // Typing still reaches the other side after messages, on every socket it has. (The quiet
    // periods above put this well over a second after the rider's first typing: the origin relays
    // at most one a second per socket, docs/API.md.)
    rider.send_typing().await;
    driver.expect_typing(ChatRole::Rider, "the rider typing again").await;
    resumed.expect_typing(ChatRole::Rider, "the rider typing, on the driver's second socket").await;
}

async fn a_bad_message_gets_an_error_frame_and_the_socket_stays_open(mode: Mode) {
    let cluster = cluster(mode).await;
    let ride = ride_on(&cluster).await;
    let mut rider = rider_chat(cluster.rider_side(), &ride, None).await;
    let mut driver = driver_chat(cluster.driver_side(), &ride, None).await;

    let cases = [
        ("an empty text", message_frame("bad-empty", "")),
        ("a text of 1001 characters", message_frame("bad-long", &"a".repeat(MAX_TEXT_CHARS + 1))),
        ("a text of 1001 two-byte characters", message_frame("bad-long-2", &"\u{e9}".repeat(MAX_TEXT_CHARS + 1))),
        ("a frame that is not JSON", "{\"type\":\"message\",".to_owned()),
        ("a frame of another type", json!({ "type": "shout", "text": "hi" }).to_string()),
        ("a message without clientMsgId", json!({ "type": "message", "text": "hi" }).to_string()),
        ("a message without text", json!({ "type": "message", "clientMsgId": "bad-no-text" }).to_string()),
        ("a text that is a number", json!({ "type": "message", "clientMsgId": "bad-num", "text": 5 }).to_string()),
    ];
    let mut stored = Vec::new();
    for (k, (what, frame)) in cases.into_iter().enumerate() {
        rider.send_raw(frame).await;
        rider.expect_error("invalid_message", what).await;
        // The socket stays open: the next valid message goes through.
        let fine = rider.say(&format!("fine-{k}"), &format!("a valid message after {what}")).await;
        assert_eq!(driver.next_message(&format!("the valid message after {what}")).await, fine);
        stored.push(fine);
    }
    // The bounds themselves: 1000 characters, one byte or two each.
    for (id, text) in [("max-ascii", "a".repeat(MAX_TEXT_CHARS)), ("max-two-byte", "\u{e9}".repeat(MAX_TEXT_CHARS))] {
        let longest = rider.say(id, &text).await;
        assert_eq!(driver.next_message("the longest text allowed").await, longest);
        stored.push(longest);
    }

    driver.expect_quiet(QUIET, "no refused message reaches the other side").await;
    assert_history(third(&cluster), &ride, &stored, "only the valid messages are stored").await;
}

/// A message frame of exactly `size` bytes: `text`, with its `clientMsgId` as the padding.
fn sized_message(text: &str, size: usize) -> (String, String) {
    let bare = message_frame("", text).len();
    assert!(bare < size, "the frame without clientMsgId ({bare} bytes) must be shorter than {size}");
    let client_msg_id = "x".repeat(size - bare);
    let frame = message_frame(&client_msg_id, text);
    assert_eq!(frame.len(), size, "the padded frame's size");
    (client_msg_id, frame)
}

async fn a_4_kib_frame_is_a_message_and_a_bigger_one_closes_the_socket_with_1009(mode: Mode) {
    let cluster = cluster(mode).await;
    let ride = ride_on(&cluster).await;
    let mut rider = rider_chat(cluster.rider_side(), &ride, None).await;
    let mut driver = driver_chat(cluster.driver_side(), &ride, None).await;

    // 1000 four-byte characters: a valid text (characters, not bytes, are counted), which makes
    // a frame of exactly 4096 bytes with a 51-byte clientMsgId.
    let text = "\u{1F697}".repeat(MAX_TEXT_CHARS);
    let (client_msg_id, at_limit) = sized_message(&text, MAX_FRAME);
    rider.send_raw(at_limit).await;
    let echo = rider.next_message("the echo of a 4096-byte frame").await;
    assert_eq!((echo.client_msg_id.as_str(), echo.text.as_str()), (client_msg_id.as_str(), text.as_str()));
    assert_eq!(driver.next_message("a message in a 4096-byte frame").await, echo);

    let (_, over_limit) = sized_message(&text, MAX_FRAME + 1);
    rider.send_raw(over_limit).await;
    let (frames, ending) = rider.expect_end(EXPECT, "a 4097-byte frame").await;
    let codes: Vec<_> = frames.iter().map(|frame| (frame["type"].clone(), frame["code"].clone())).collect();
    assert_eq!(codes, [(json!("error"), json!("too_large"))], "an error frame too_large comes first: {frames:?}");
    assert_eq!(ending, Ending::Closed(Some(1009)), "then the socket closes with 1009 (message too big)");

    driver.expect_quiet(QUIET, "the oversized frame is not delivered").await;
    assert_history(third(&cluster), &ride, &[echo], "the oversized frame is not stored").await;
}

async fn a_flood_is_rate_limited_and_only_what_was_echoed_is_stored(mode: Mode) {
    let cluster =
        Cluster::start(mode, |origin| origin.flag("--chat-rate", FLOOD_RATE).flag("--chat-burst", FLOOD_BURST)).await;
    let ride = ride_on(&cluster).await;
    let mut rider = rider_chat(cluster.rider_side(), &ride, None).await;
    let mut driver = driver_chat(cluster.driver_side(), &ride, None).await;

    let ids: Vec<String> = (0..FLOOD).map(|k| format!("flood-{k:02}")).collect();
    for id in &ids {
        rider.send_message(id, &format!("message {id}")).await;
    }
    // One answer per message: its echo, or a rate_limited error.
    let (mut echoed, mut refused) = (Vec::new(), 0usize);
    for k in 0..FLOOD {
        match rider.next_server_frame(&format!("answer {} of {FLOOD} to the flood", k + 1)).await {
            ChatServerFrame::Message(message) => echoed.push(message),
            ChatServerFrame::Error { code: ErrorCode::RateLimited, .. } => refused += 1,
            other => panic!("a flooded message is echoed or refused with rate_limited, got {other:?}"),
        }
    }
    rider.expect_quiet(QUIET, "one answer per message, the socket still open").await;
    assert!(refused >= 1, "{FLOOD} messages at once against a burst of {FLOOD_BURST}: some are refused");
    assert!(!echoed.is_empty(), "the first messages fit in the burst");
    assert_eq!(echoed.len() + refused, FLOOD);
    let echoed_ids: Vec<&str> = echoed.iter().map(|m| m.client_msg_id.as_str()).collect();
    let sent_order: Vec<&str> = ids.iter().map(String::as_str).filter(|id| echoed_ids.contains(id)).collect();
    assert_eq!(echoed_ids, sent_order, "echoes are of distinct messages sent, in the order sent");
    for message in &echoed {
        assert_eq!(
            (message.from, message.text.clone()),
            (ChatRole::Rider, format!("message {}", message.client_msg_id))
        );
    }

    // The other side gets exactly what was echoed; only that is stored.
    assert_eq!(driver.next_messages(echoed.len(), "the messages that were not refused").await, echoed);
    driver.expect_quiet(QUIET, "refused messages are not delivered").await;
    assert_history(third(&cluster), &ride, &echoed, "only messages that were not refused are stored").await;

    // Once the rate allows it again, a refused message can be sent again and is stored then.
    let retried = ids.iter().find(|id| !echoed_ids.contains(&id.as_str())).expect("a refused message");
    let deadline = tokio::time::Instant::now() + EXPECT * 2;
    let stored = loop {
        rider.send_message(retried, &format!("message {retried}")).await;
        match rider.next_server_frame("the answer to a refused message, sent again").await {
            ChatServerFrame::Message(message) => break message,
            ChatServerFrame::Error { code: ErrorCode::RateLimited, .. } if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(1_000 / u64::from(FLOOD_RATE))).await;
            }
            other => panic!("a refused message sent again later is stored, got {other:?}"),
        }
    };
    assert_eq!(stored.client_msg_id, *retried, "{stored:?}");
    assert_eq!(driver.next_message("the message that was refused before").await, stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_refused_a_hundred_times_in_a_row_is_closed_with_1008() {
    let cluster = Cluster::start(Mode::Embedded, |origin| origin.flag("--chat-rate", 1).flag("--chat-burst", 1)).await;
    let ride = ride_on(&cluster).await;
    let mut rider = rider_chat(cluster.rider_side(), &ride, None).await;
    let mut refused_in_a_row = 0usize;
    // In lockstep: each answer is read before the next message goes, so the close frame is not
    // lost behind frames the origin never read.
    for k in 0..ABUSE_STREAK * 4 {
        let _ = rider.try_send_raw(message_frame(&format!("spam-{k}"), "spam")).await;
        match rider.next(EXPECT, &format!("the answer to spam message {k}")).await {
            Next::Text(text) => match parse_server_frame(&text, "an answer to spam") {
                ChatServerFrame::Message(_) => refused_in_a_row = 0,
                ChatServerFrame::Error { code: ErrorCode::RateLimited, .. } => refused_in_a_row += 1,
                other => panic!("spam is echoed or refused with rate_limited, got {other:?}"),
            },
            Next::Ended(ending) => {
                assert_eq!(ending, Ending::Closed(Some(1008)), "abuse closes the socket with 1008 (policy)");
                assert!(
                    refused_in_a_row + 1 >= ABUSE_STREAK,
                    "closed only after {ABUSE_STREAK} refusals in a row, but after {refused_in_a_row}"
                );
                return;
            }
        }
    }
    panic!("still open after {} messages ({refused_in_a_row} refused in a row)", ABUSE_STREAK * 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_survive_restarting_every_origin() {
    let mut cluster = cluster(Mode::Redis).await;
    let ride = ride_on(&cluster).await;
    let mut rider = rider_chat(cluster.rider_side(), &ride, None).await;
    let mut driver = driver_chat(cluster.driver_side(), &ride, None).await;
    let mut said = Vec::new();
    for k in 0..2 {
        let line = rider.say(&format!("keep-r{k}"), &format!("rider {k}")).await;
        assert_eq!(driver.next_message("the rider's line").await, line);
        said.push(line);
        let line = driver.say(&format!("keep-d{k}"), &format!("driver {k}")).await;
        assert_eq!(rider.next_message("the driver's line").await, line);
        said.push(line);
    }
    drop((rider, driver));

    for origin in &mut cluster.origins {
        origin.kill9().await;
    }
    let redis = cluster.redis.as_ref().expect("Redis mode has a Redis");
    let mut restarted = Vec::new();
    for _ in 0..cluster.origins.len() {
        restarted.push(easy_chat(Origin::builder().redis(redis)).start().await);
    }
    cluster.origins = restarted;

    let mut rider = rider_chat(cluster.rider_side(), &ride, None).await;
    assert_eq!(rider.next_messages(said.len(), "the history after every origin restarted").await, said);
    let mut driver = driver_chat(cluster.driver_side(), &ride, None).await;
    assert_eq!(driver.next_messages(said.len(), "the driver's history after the restart").await, said);
    tokio::join!(
        rider.expect_quiet(QUIET, "the history holds each message once"),
        driver.expect_quiet(QUIET, "the history holds each message once"),
    );
    let more = rider.say("after-restart", "still here").await;
    assert_eq!(driver.next_message("a message after the restart").await, more);
}

async fn after_completed_a_new_message_is_ride_ended_and_connecting_still_returns_the_history(mode: Mode) {
    let cluster = cluster(mode).await;
    let mut ride = ride_on(&cluster).await;
    let mut rider = rider_chat(cluster.rider_side(), &ride, None).await;
    let mut driver = driver_chat(cluster.driver_side(), &ride, None).await;
    let question = rider.say("r-1", "Which car are you?").await;
    assert_eq!(driver.next_message("the rider's question").await, question);
    let answer = driver.say("d-1", "The blue one.").await;
    assert_eq!(rider.next_message("the driver's answer").await, answer);

    let ride_id = ride.ride_id.clone();
    assert_eq!(ride.driver_socket.report_step(&ride_id, "completed").await, "ok", "the drop-off");
    // On sockets opened before the end, on both sides and instances.
    rider.send_message("r-2", "Thanks!").await;
    rider.expect_error("ride_ended", "the rider's message after completed").await;
    driver.send_message("d-2", "Bye!").await;
    driver.expect_error("ride_ended", "the driver's message after completed").await;
    // A retry of a message stored before the end is refused too: nothing new is stored.
    rider.send_message("r-1", "Which car are you?").await;
    rider.expect_error("ride_ended", "a retry after completed").await;

    // Connecting afterwards, on any instance, still returns the conversation, and only it.
    for origin in &cluster.origins {
        assert_history(origin, &ride, &[question.clone(), answer.clone()], "the history after completed").await;
    }
}
