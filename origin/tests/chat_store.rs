//! Chat history holds the same in both stores: in memory, and Redis Streams in a real Redis.
//! Each scenario runs against both.

use std::time::Duration;

use fred::prelude::{Builder, ClientLike, Config};
use ridecast_origin::chat::store::{ChatStore, embedded::EmbeddedChat, redis::RedisChat};
use ridecast_protocol::{
    Id,
    channels::{chat_ids_key, chat_stream_key},
    chat::{ChatRole, MessageId},
};
use ridecast_tests::RedisServer;
use tokio_util::sync::CancellationToken;

const T0: u64 = 1_764_240_000_000;

fn ride(raw: &str) -> Id {
    Id::parse(raw).expect("a valid id")
}

async fn in_both_stores<F, Fut>(max_len: usize, scenario: F)
where
    F: Fn(Box<dyn ChatStore>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    scenario(Box::new(EmbeddedChat::new(max_len, Duration::from_secs(3_600), CancellationToken::new()))).await;
    let redis = RedisServer::start().await;
    let client = Builder::from_config(Config::from_url(&redis.url()).expect("url")).build().expect("client");
    client.init().await.expect("connecting to the test redis");
    scenario(Box::new(RedisChat::new(client, max_len, Duration::from_secs(3600)))).await;
}

#[tokio::test]
async fn messages_come_back_in_one_order_with_growing_ids_and_resume_after_any_id() {
    in_both_stores(100, |store| async move {
        let r = ride("r1");
        let mut ids = Vec::new();
        for (n, from) in [ChatRole::Rider, ChatRole::Driver, ChatRole::Rider].into_iter().enumerate() {
            let sent = store.append(&r, from, &format!("c{n}"), &format!("text {n}"), T0).await.expect("append");
            assert!(sent.new);
            assert_eq!((sent.message.from, sent.message.text.as_str()), (from, format!("text {n}").as_str()));
            ids.push(MessageId::parse(&sent.message.id).expect("an id <ms>-<seq>"));
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");
        let all = store.history(&r, None, 100).await.expect("history");
        assert_eq!(all.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["text 0", "text 1", "text 2"]);
        let after_first = store.history(&r, Some(ids[0]), 100).await.expect("history");
        assert_eq!(after_first.iter().map(|m| m.client_msg_id.as_str()).collect::<Vec<_>>(), ["c1", "c2"]);
        assert!(store.history(&r, Some(ids[2]), 100).await.expect("history").is_empty(), "nothing after the last");
        assert_eq!(store.history(&r, None, 2).await.expect("history").len(), 2, "limited");
        assert!(store.history(&ride("other"), None, 100).await.expect("history").is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_retried_client_message_id_is_stored_once_per_sender() {
    in_both_stores(100, |store| async move {
        let r = ride("r2");
        let first = store.append(&r, ChatRole::Rider, "same", "hello", T0).await.expect("append");
        let retry = store.append(&r, ChatRole::Rider, "same", "hello", T0 + 5).await.expect("append");
        assert!(!retry.new, "a retry is not new");
        assert_eq!(retry.message, first.message, "a retry answers with the stored message");
        let other = store.append(&r, ChatRole::Driver, "same", "hi", T0 + 6).await.expect("append");
        assert!(other.new, "the other side's ids are its own");
        assert_eq!(store.history(&r, None, 100).await.expect("history").len(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_long_conversation_keeps_its_newest_messages() {
    in_both_stores(10, |store| async move {
        let r = ride("r3");
        for n in 0..200 {
            store.append(&r, ChatRole::Rider, &format!("c{n}"), "x", T0 + n).await.expect("append");
        }
        let kept = store.history(&r, None, 1_000).await.expect("history");
        assert_eq!(kept.len(), 10, "exactly the newest ten");
        assert_eq!(kept.last().map(|m| m.client_msg_id.as_str()), Some("c199"), "the newest is kept");
    })
    .await;
}

#[tokio::test]
async fn the_redis_dedupe_hash_is_trimmed_with_the_stream() {
    const HISTORY_MAX: usize = 10;
    let redis = RedisServer::start().await;
    let client = Builder::from_config(Config::from_url(&redis.url()).expect("url")).build().expect("client");
    client.init().await.expect("connecting to the test redis");
    let store = RedisChat::new(client.clone(), HISTORY_MAX, Duration::from_secs(3600));
    let r = ride("r-trim");
    for n in 0..HISTORY_MAX * 5 {
        let from = if n % 2 == 0 { ChatRole::Rider } else { ChatRole::Driver };
        store.append(&r, from, &format!("c{n}"), "x", T0 + n as u64).await.expect("append");
    }
    let count = |command: &'static str, key: String| {
        let client = client.clone();
        async move {
            let reply: i64 = client.custom(fred::cmd!(command), vec![key]).await.expect(command);
            reply
        }
    };
    let ids = count("HLEN", chat_ids_key(&r)).await;
    let stream = count("XLEN", chat_stream_key(&r)).await;
    assert_eq!(ids, HISTORY_MAX as i64, "the dedupe hash holds the kept messages' ids, not every message ever sent");
    assert_eq!(stream, HISTORY_MAX as i64, "the stream keeps --chat-history-max messages");

    // A retry of a kept message is still stored once; one of a trimmed message is new again.
    let last = HISTORY_MAX * 5 - 1;
    let retry = store.append(&r, ChatRole::Driver, &format!("c{last}"), "x", T0).await.expect("append");
    assert!(!retry.new, "a retried clientMsgId the stream still holds is not stored again");
    let forgotten = store.append(&r, ChatRole::Rider, "c0", "x", T0).await.expect("append");
    assert!(forgotten.new, "the trimmed message's dedupe entry went with it");
}
