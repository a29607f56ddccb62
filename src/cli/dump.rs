//! `kafkabox dump TOPIC > file.jsonl` and `kafkabox load TOPIC < file.jsonl`: a topic's records
//! as JSON lines (partition, offset, timestamp, key, value, headers), so a test suite seeds a
//! topic from a file and a failing run's input can be replayed. Keys, values and header values
//! are UTF-8 text (`"utf8"`) or base64 (`"base64"`), so a dump loads back byte for byte; a
//! hand-written file may also give a value as JSON (`"value_encoding": "json"`, or an object
//! or array with no encoding).

use std::io::BufRead;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use super::consume::{ConsumeArgs, Format};
use super::{KafkaArgs, NotFound};

#[derive(Debug, clap::Args)]
pub struct DumpArgs {
    pub topic: String,
    /// Only this partition (default: all).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    pub topic: String,
    /// Write every record to this partition (default: the line's `partition`, else by key).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Ignore the lines' partitions: spread records by key, Kafka's partitioner.
    #[arg(long, conflicts_with = "partition")]
    pub by_key: bool,
    /// Ignore the lines' timestamps: records get the time they are loaded.
    #[arg(long)]
    pub now: bool,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// Every committed record from the beginning to the end of the log, then exit (aborted
/// transactions are not part of a topic's data; an open one's records wait for it).
pub async fn dump(args: DumpArgs) -> Result<()> {
    super::consume::run(ConsumeArgs {
        topic: args.topic,
        partition: args.partition,
        offset: None,
        from_time: None,
        from_end: false,
        count: None,
        follow: false,
        group: None,
        format: Format::Dump,
        print_key: false,
        isolation: super::consume::Isolation::ReadCommitted,
        kafka: args.kafka,
    })
    .await
}

/// Bytes of a key or value from its JSON and encoding.
fn bytes_of(v: &serde_json::Value, encoding: Option<&str>, what: &str) -> Result<Option<Vec<u8>>> {
    match (v, encoding) {
        (serde_json::Value::Null, _) => Ok(None),
        (serde_json::Value::String(s), None | Some("utf8")) => Ok(Some(s.as_bytes().to_vec())),
        (serde_json::Value::String(s), Some("base64")) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(Some)
            .with_context(|| format!("{what} is not valid base64")),
        (v, None | Some("json")) => Ok(Some(serde_json::to_vec(v)?)),
        (_, Some(e)) => {
            bail!("{what}: encoding '{e}' is not utf8, base64 or json (or {what} does not fit it)")
        }
    }
}

/// A record read from a line.
#[derive(Debug)]
struct Loaded {
    partition: Option<i32>,
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn parse_line(line: &str) -> Result<Loaded> {
    let v: serde_json::Value = serde_json::from_str(line).context("not JSON")?;
    let Some(o) = v.as_object() else {
        bail!("not a JSON object");
    };
    for k in o.keys() {
        if ![
            "topic",
            "partition",
            "offset",
            "timestamp",
            "key",
            "key_encoding",
            "value",
            "value_encoding",
            "headers",
        ]
        .contains(&k.as_str())
        {
            bail!("unknown field '{k}'");
        }
    }
    let int = |name: &str| -> Result<Option<i64>> {
        match o.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(x) => x
                .as_i64()
                .map(Some)
                .with_context(|| format!("{name} is not an integer")),
        }
    };
    let enc = |name: &str| o.get(name).and_then(|e| e.as_str());
    let null = serde_json::Value::Null;
    let partition = int("partition")?
        .map(|p| {
            i32::try_from(p)
                .ok()
                .filter(|p| *p >= 0)
                .context("partition out of range")
        })
        .transpose()?;
    let mut headers = Vec::new();
    for h in o
        .get("headers")
        .and_then(|h| h.as_array())
        .into_iter()
        .flatten()
    {
        let name = h["key"].as_str().context("a header without a key")?;
        let value = bytes_of(&h["value"], h["value_encoding"].as_str(), "header value")?;
        headers.push((name.to_string(), value));
    }
    Ok(Loaded {
        partition,
        timestamp: int("timestamp")?.filter(|t| *t >= 0),
        key: bytes_of(o.get("key").unwrap_or(&null), enc("key_encoding"), "key")?,
        value: bytes_of(
            o.get("value").unwrap_or(&null),
            enc("value_encoding"),
            "value",
        )?,
        headers,
    })
}

/// Records in flight before waiting for their acknowledgements.
const WINDOW: usize = 10_000;

/// Produces every line of stdin (acks=all, idempotent: in order per partition).
pub async fn load(args: LoadArgs) -> Result<()> {
    let producer = super::produce::idempotent_producer(&args.kafka)?;
    let (p, topic, timeout) = (producer.clone(), args.topic.clone(), args.kafka.timeout());
    let partitions = tokio::task::spawn_blocking(move || -> Result<usize> {
        use rdkafka::producer::Producer;
        let md = p.client().fetch_metadata(Some(&topic), timeout)?;
        match md.topics().first() {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(t.partitions().len()),
            _ => Err(NotFound(format!(
                "no topic '{topic}' (and the cluster did not create it); create it first: kafkabox topics create {topic} --partitions N"
            ))
            .into()),
        }
    })
    .await??;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, Loaded)>(1024);
    let reader = tokio::task::spawn_blocking(move || -> Result<()> {
        for (i, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line.context("reading stdin")?;
            if line.trim().is_empty() {
                continue;
            }
            let rec = parse_line(&line).with_context(|| format!("line {}", i + 1))?;
            if tx.blocking_send((i + 1, rec)).is_err() {
                break;
            }
        }
        Ok(())
    });
    let mut pending = Vec::with_capacity(WINDOW);
    let mut sent = 0u64;
    let mut failure: Option<String> = None;
    while let Some((line, rec)) = rx.recv().await {
        let partition = if args.by_key {
            None
        } else {
            args.partition.or(rec.partition)
        };
        if let Some(p) = partition {
            if p as usize >= partitions {
                failure = Some(format!(
                    "line {line}: partition {p}, but {} has {}: load with --by-key to spread the records by key, or --partition N to put them all in one, or into a topic with at least {} partitions",
                    args.topic,
                    super::count(partitions as u64, "partition"),
                    p + 1
                ));
                break;
            }
        }
        let mut headers = OwnedHeaders::new();
        for (k, v) in &rec.headers {
            headers = headers.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&args.topic).headers(headers);
        if let Some(k) = &rec.key {
            r = r.key(k.as_slice());
        }
        if let Some(v) = &rec.value {
            r = r.payload(v.as_slice());
        }
        if let Some(p) = partition {
            r = r.partition(p);
        }
        if let (Some(t), false) = (rec.timestamp, args.now) {
            r = r.timestamp(t);
        }
        match producer.send_result(r) {
            Ok(f) => pending.push((line, f)),
            Err((e, _)) => {
                failure = Some(format!("line {line}: {e}"));
                break;
            }
        }
        if pending.len() >= WINDOW {
            sent += super::produce::settle(&mut pending, &mut failure).await;
            if failure.is_some() {
                break;
            }
        }
    }
    drop(rx);
    sent += super::produce::settle(&mut pending, &mut failure).await;
    let read = reader.await.context("stdin reader")?;
    if let Some(f) = failure {
        bail!(
            "{} loaded into {}, then: {f}",
            super::count(sent, "record"),
            args.topic
        );
    }
    if let Err(e) = read {
        bail!(
            "{} loaded into {}, then: {e:#}",
            super::count(sent, "record"),
            args.topic
        );
    }
    eprintln!(
        "{} loaded into {}",
        super::count(sent, "record"),
        args.topic
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_exactly() {
        let r = parse_line(r#"{"partition":1,"offset":5,"timestamp":1700000000000,"key":"k","key_encoding":"utf8","value":"/w==","value_encoding":"base64","headers":[{"key":"h","value":"v","value_encoding":"utf8"},{"key":"n","value":null,"value_encoding":null}]}"#).unwrap();
        assert_eq!(r.partition, Some(1));
        assert_eq!(r.timestamp, Some(1_700_000_000_000));
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value.as_deref(), Some(&[0xffu8][..]));
        assert_eq!(r.headers.len(), 2);
        assert_eq!(r.headers[1].1, None);
        let r = parse_line(r#"{"value":{"a":1}}"#).unwrap();
        assert_eq!(r.value.as_deref(), Some(&br#"{"a":1}"#[..]));
        assert!(parse_line(r#"{"valu":1}"#)
            .unwrap_err()
            .to_string()
            .contains("unknown field"));
        assert!(parse_line(r#"{"partition":-1}"#).is_err());
        assert!(parse_line(r#"{"value":"%%","value_encoding":"base64"}"#).is_err());
    }
}
