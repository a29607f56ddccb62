//! The bytes of Kafka's consumer protocol (ConsumerProtocolSubscription and
//! ConsumerProtocolAssignment, version 0) that the coordinator reads or writes itself: the
//! topics a classic member subscribes to (OffsetDelete refuses those), and the subscription
//! and assignment DescribeGroups shows for pipeline groups and KIP-848 members.

use std::sync::Arc;

use bytes::Bytes;
use kafkabox_storage::{Store, Topic};

/// Topics named in a ConsumerProtocolSubscription (version, topics, user data ...); empty when
/// the metadata is not one.
pub(super) fn subscribed_topics(metadata: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut pos = 2usize;
    let read_i32 = |p: usize| -> Option<i32> {
        Some(i32::from_be_bytes(metadata.get(p..p + 4)?.try_into().ok()?))
    };
    let Some(n) = read_i32(pos) else { return out };
    pos += 4;
    for _ in 0..n.clamp(0, 10_000) {
        let Some(len) = metadata.get(pos..pos + 2) else {
            break;
        };
        let len = i16::from_be_bytes([len[0], len[1]]);
        pos += 2;
        if len < 0 {
            break;
        }
        let Some(name) = metadata.get(pos..pos + len as usize) else {
            break;
        };
        out.push(String::from_utf8_lossy(name).into_owned());
        pos += len as usize;
    }
    out
}

/// A ConsumerProtocolSubscription v0 naming `topics`.
pub(super) fn consumer_subscription(topics: &[String]) -> Bytes {
    let mut b = Vec::new();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for t in topics {
        b.extend_from_slice(&(t.len() as i16).to_be_bytes());
        b.extend_from_slice(t.as_bytes());
    }
    b.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(b)
}

/// A ConsumerProtocolAssignment v0 of every partition of `topics`.
pub(super) fn consumer_assignment(store: &Store, topics: &[String]) -> Bytes {
    let mut b = Vec::new();
    b.extend_from_slice(&0i16.to_be_bytes());
    let known: Vec<Arc<Topic>> = topics.iter().filter_map(|t| store.topic(t)).collect();
    b.extend_from_slice(&(known.len() as i32).to_be_bytes());
    for t in known {
        b.extend_from_slice(&(t.meta.name.len() as i16).to_be_bytes());
        b.extend_from_slice(t.meta.name.as_bytes());
        b.extend_from_slice(&(t.partitions.len() as i32).to_be_bytes());
        for p in &t.partitions {
            b.extend_from_slice(&p.index.to_be_bytes());
        }
    }
    b.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_round_trip() {
        let s = consumer_subscription(&["a".into(), "bb".into()]);
        assert_eq!(
            subscribed_topics(&s),
            vec!["a".to_string(), "bb".to_string()]
        );
        assert!(subscribed_topics(b"\x00").is_empty());
        assert!(subscribed_topics(b"\x00\x00\x7f\xff\xff\xff").is_empty());
    }
}
