//! The dead-letter record format, defined once for every writer (the pipeline's stages and
//! `kafkabox handle`) and reader (`pipeline::dead_letters`): the topic's name
//! ([`dead_letter_topic`], [`DEAD_LETTER_SUFFIX`]) and the `kafkabox.dlq.*` headers added to
//! the original record's own ([`DeadLetterHeaders`]). Clients can neither create nor write a
//! `.dlq` topic (`dead.letter.topics.reserved`, `Topics::reserved`).

/// What names a dead-letter topic after its source topic.
pub const DEAD_LETTER_SUFFIX: &str = ".dlq";

/// The dead-letter topic of `topic`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}{DEAD_LETTER_SUFFIX}")
}

/// What the names of the headers kafkabox adds to a dead letter start with.
pub const HEADER_PREFIX: &str = "kafkabox.dlq.";
/// Why the record is a dead letter.
pub const REASON_HEADER: &str = "kafkabox.dlq.reason";
/// The `source` field of the event (`unknown` when it has none).
pub const SOURCE_HEADER: &str = "kafkabox.dlq.source";
/// The stage that refused it: `pipeline::DEAD_LETTER_STAGE` or a handler's name.
pub const STAGE_HEADER: &str = "kafkabox.dlq.stage";
/// The topic of the original record.
pub const TOPIC_HEADER: &str = "kafkabox.dlq.topic";
/// The partition of the original record.
pub const PARTITION_HEADER: &str = "kafkabox.dlq.partition";
/// The offset of the original record (of the first record, for an undecodable batch).
pub const OFFSET_HEADER: &str = "kafkabox.dlq.offset";
/// The timestamp of the original record (ms since the epoch).
pub const TIMESTAMP_HEADER: &str = "kafkabox.dlq.timestamp";

/// The values of the `kafkabox.dlq.*` headers of one dead letter (numbers as decimal text).
#[derive(Debug, Clone, Copy)]
pub struct DeadLetterHeaders<'a> {
    pub reason: &'a str,
    /// The event's source; `unknown` when `None`.
    pub source: Option<&'a str>,
    pub stage: &'a str,
    pub topic: &'a str,
    pub partition: &'a str,
    pub offset: &'a str,
    pub timestamp: &'a str,
}

impl<'a> DeadLetterHeaders<'a> {
    /// Each header's (name, value), in the order they follow the original record's headers.
    pub fn pairs(&self) -> [(&'static str, &'a str); 7] {
        [
            (REASON_HEADER, self.reason),
            (SOURCE_HEADER, self.source.unwrap_or("unknown")),
            (STAGE_HEADER, self.stage),
            (TOPIC_HEADER, self.topic),
            (PARTITION_HEADER, self.partition),
            (OFFSET_HEADER, self.offset),
            (TIMESTAMP_HEADER, self.timestamp),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_headers_keep_their_names_and_order() {
        let h = DeadLetterHeaders {
            reason: "bad",
            source: None,
            stage: "contract",
            topic: "t",
            partition: "1",
            offset: "2",
            timestamp: "3",
        };
        let pairs = h.pairs();
        let names: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "kafkabox.dlq.reason",
                "kafkabox.dlq.source",
                "kafkabox.dlq.stage",
                "kafkabox.dlq.topic",
                "kafkabox.dlq.partition",
                "kafkabox.dlq.offset",
                "kafkabox.dlq.timestamp",
            ]
        );
        assert!(names.iter().all(|n| n.starts_with(HEADER_PREFIX)));
        assert_eq!(pairs[1].1, "unknown");
        assert_eq!(pairs[2].1, "contract");
    }
}
