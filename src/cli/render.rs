//! A consumed record as one JSON object (topic, partition, offset, timestamp, key, value,
//! headers), in the two forms the client commands print: `consume --format json` (keys and
//! values that are JSON shown as JSON) and the exact dump line of `consume --format dump` and
//! `kafkabox dump` (UTF-8 text or base64, what `kafkabox load` reads back).

use kafkabox::http::{header_json, shown, shown_key, utf8_or_base64 as exact};
use rdkafka::message::{Headers, Message};

/// One record as `consume --format json` prints it.
pub fn record_json(m: &impl Message) -> serde_json::Value {
    record(m, shown_key(m.key()), shown(m.payload()))
}

/// One record as a dump line.
pub fn record_line(m: &impl Message) -> serde_json::Value {
    record(m, exact(m.key()), exact(m.payload()))
}

/// The object of a record whose key and value are already shown, each with its encoding;
/// header values are UTF-8 text or base64 in both forms.
fn record(
    m: &impl Message,
    (key, key_encoding): (serde_json::Value, serde_json::Value),
    (value, value_encoding): (serde_json::Value, serde_json::Value),
) -> serde_json::Value {
    let headers: Vec<serde_json::Value> = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| header_json(h.key.as_bytes(), h.value))
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({
        "topic": m.topic(),
        "partition": m.partition(),
        "offset": m.offset(),
        "timestamp": m.timestamp().to_millis(),
        "key": key,
        "key_encoding": key_encoding,
        "value": value,
        "value_encoding": value_encoding,
        "headers": headers,
    })
}

/// Rows printed as aligned columns under a header row, what the list commands print without
/// `--json`; nothing found is said on stderr, so stdout stays empty for scripts.
#[derive(Debug)]
pub struct Table {
    header: &'static [&'static str],
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &'static [&'static str]) -> Table {
        Table {
            header,
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Prints the table, or `empty` on stderr when it has no rows.
    pub fn print(self, empty: &str) {
        if self.rows.is_empty() {
            eprintln!("{empty}");
            return;
        }
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        for r in std::iter::once(&header).chain(&self.rows) {
            let last = r.len().saturating_sub(1);
            let line: String = r
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let pad = widths.get(i).copied().unwrap_or(0);
                    if i == last {
                        c.clone()
                    } else {
                        format!("{c:<pad$}  ")
                    }
                })
                .collect();
            super::line(line.trim_end());
        }
    }
}
