//! `kafkabox customers`, `dlq` and `faults`: Kafka has no word for profiles, dead-letter replay
//! or fault injection, so these call kafkabox's HTTP API (docs/http-api.md).

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{HttpArgs, NotFound};

#[derive(Debug, clap::Subcommand)]
pub enum CustomersCommand {
    /// A customer's profile and recent events.
    Show {
        customer_id: String,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Customers whose id contains QUERY (all when empty).
    Search {
        #[arg(default_value = "")]
        query: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        http: HttpArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct DlqFilter {
    /// Original topic or its dead-letter topic.
    #[arg(long)]
    topic: Option<String>,
    #[arg(long)]
    source: Option<String>,
    /// A part of the reason.
    #[arg(long)]
    reason: Option<String>,
    /// `contract` or a handler's name.
    #[arg(long)]
    stage: Option<String>,
    /// Dead-lettered at or after (ms since the epoch).
    #[arg(long)]
    since: Option<i64>,
    /// Dead-lettered before (ms since the epoch).
    #[arg(long)]
    until: Option<i64>,
}

/// The dead letters a replay or skip acts on, and where the API is.
#[derive(Debug, clap::Args)]
pub struct DlqTarget {
    #[command(flatten)]
    filter: DlqFilter,
    /// The partition of the record: of the original topic when --topic names it, else of
    /// the `.dlq` topic.
    #[arg(long)]
    partition: Option<i32>,
    /// The offset of the record: the original record's when --topic names the original
    /// topic, the dead letter's own when it names the `.dlq` topic.
    #[arg(long)]
    offset: Option<i64>,
    #[command(flatten)]
    http: HttpArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Dead letters, newest first.
    List {
        #[command(flatten)]
        filter: DlqFilter,
        /// any, pending, replayed or skipped.
        #[arg(long, default_value = "any")]
        status: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// One JSON object per dead letter.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Hand dead letters a handler refused back to it: one (--topic, --partition, --offset)
    /// or every pending one whose reason contains --reason.
    Replay(DlqTarget),
    /// Mark dead letters as skipped (same selection as replay).
    Skip(DlqTarget),
}

/// (status, JSON body) of one request.
async fn call(
    http: &HttpArgs,
    method: hyper::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<(u16, serde_json::Value)> {
    let url = format!("{}{path}", http.http.trim_end_matches('/'));
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(&url)
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(t) = &http.token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .with_context(|| format!("bad URL {url}"))?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = tokio::time::timeout(std::time::Duration::from_secs(60), client.request(req))
        .await
        .with_context(|| format!("{url}: no answer within 60 s"))?
        .with_context(|| format!("cannot reach kafkabox's HTTP API at {}", http.http))?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{url}: answer is not JSON (HTTP {status})"))?;
    match status {
        200..=299 => Ok((status, v)),
        404 => Err(NotFound(v["error"].as_str().unwrap_or("not found").to_string()).into()),
        401 => bail!(
            "{} (pass --token or set KAFKABOX_HTTP_TOKEN)",
            v["error"].as_str().unwrap_or("unauthorized")
        ),
        _ => Ok((status, v)),
    }
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub async fn customers(cmd: CustomersCommand) -> Result<()> {
    match cmd {
        CustomersCommand::Show { customer_id, http } => {
            let (_, profile) = call(
                &http,
                hyper::Method::GET,
                &format!("/api/customers/{}", enc(&customer_id)),
                None,
            )
            .await?;
            super::line(serde_json::to_string_pretty(&profile)?);
        }
        CustomersCommand::Search { query, limit, http } => {
            let (_, found) = call(
                &http,
                hyper::Method::GET,
                &format!("/api/customers?q={}&limit={limit}", enc(&query)),
                None,
            )
            .await?;
            let mut table = super::render::Table::new(&["CUSTOMER", "EVENTS", "LAST EVENT"]);
            for c in found["customers"].as_array().into_iter().flatten() {
                table.row(vec![
                    c["customer_id"].as_str().unwrap_or_default().to_string(),
                    super::thousands(c["events"].as_u64().unwrap_or(0)),
                    c["last_event"]["timestamp"]
                        .as_str()
                        .unwrap_or("-")
                        .to_string(),
                ]);
            }
            table.print(&if query.is_empty() {
                "no customers yet".to_string()
            } else {
                format!("no customer id contains '{query}'")
            });
        }
    }
    Ok(())
}

/// The dead letter (in `<topic>.dlq`) of the record at `offset` of `topic`'s `partition`, as a
/// replay or skip body: found among the newest dead letters of the topic (`dlq list`'s order).
async fn dead_letter_of(
    http: &HttpArgs,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<serde_json::Value> {
    let q = format!(
        "/api/dlq?status=any&limit={}&topic={}",
        kafkabox::pipeline::dead_letters::MAX_LIST,
        enc(topic)
    );
    let (status, found) = call(http, hyper::Method::GET, &q, None).await?;
    if status != 200 {
        bail!("{}", found["error"].as_str().unwrap_or("failed"));
    }
    let matches: Vec<&serde_json::Value> = found["dead_letters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| {
            d["original"]["partition"].as_i64() == Some(i64::from(partition))
                && d["original"]["offset"].as_i64() == Some(offset)
        })
        .collect();
    let at = |d: &serde_json::Value| {
        format!(
            "{}/{}@{}",
            d["topic"].as_str().unwrap_or_default(),
            d["partition"],
            d["offset"]
        )
    };
    match matches.as_slice() {
        [d] => Ok(serde_json::json!({
            "topic": d["topic"],
            "partition": d["partition"],
            "offset": d["offset"],
        })),
        [] => Err(super::NotFound(format!(
            "no dead letter of {topic}/{partition}@{offset} among the newest {} of {topic}; `kafkabox dlq list --topic {topic}` shows them, and --topic {} names one by its own offset",
            kafkabox::pipeline::dead_letters::MAX_LIST,
            kafkabox::services::dead_letters::dead_letter_topic(topic)
        ))
        .into()),
        several => bail!(
            "{topic}/{partition}@{offset} was dead-lettered {} times ({}): name one with --topic {} and its own offset",
            several.len(),
            several.iter().map(|d| at(d)).collect::<Vec<_>>().join(", "),
            kafkabox::services::dead_letters::dead_letter_topic(topic)
        ),
    }
}

fn selection(
    filter: DlqFilter,
    partition: Option<i32>,
    offset: Option<i64>,
) -> Result<serde_json::Value> {
    let mut v = serde_json::json!({});
    if let (Some(p), Some(o)) = (partition, offset) {
        let topic = filter
            .topic
            .context("one dead letter needs --topic, --partition and --offset")?;
        let topic = if topic.ends_with(kafkabox::services::dead_letters::DEAD_LETTER_SUFFIX) {
            topic
        } else {
            kafkabox::services::dead_letters::dead_letter_topic(&topic)
        };
        v = serde_json::json!({"topic": topic, "partition": p, "offset": o});
        return Ok(v);
    }
    if partition.is_some() || offset.is_some() {
        return Err(super::Usage(
            "one dead letter needs --topic, --partition and --offset".to_string(),
        )
        .into());
    }
    let Some(reason) = filter.reason else {
        return Err(super::Usage(
            "give --topic, --partition and --offset of one dead letter, or --reason for all of a reason"
                .to_string(),
        )
        .into());
    };
    v["reason"] = reason.into();
    for (k, val) in [
        ("topic", filter.topic),
        ("source", filter.source),
        ("stage", filter.stage),
    ] {
        if let Some(val) = val {
            v[k] = val.into();
        }
    }
    if let Some(s) = filter.since {
        v["since"] = s.into();
    }
    if let Some(u) = filter.until {
        v["until"] = u.into();
    }
    Ok(v)
}

pub async fn dlq(cmd: DlqCommand) -> Result<()> {
    let (action, target) = match cmd {
        DlqCommand::List {
            filter,
            status,
            limit,
            json,
            http,
        } => {
            let mut q = format!("/api/dlq?status={}&limit={limit}", enc(&status));
            for (k, v) in [
                ("topic", &filter.topic),
                ("source", &filter.source),
                ("reason", &filter.reason),
                ("stage", &filter.stage),
            ] {
                if let Some(v) = v {
                    q.push_str(&format!("&{k}={}", enc(v)));
                }
            }
            for (k, v) in [("since", filter.since), ("until", filter.until)] {
                if let Some(v) = v {
                    q.push_str(&format!("&{k}={v}"));
                }
            }
            let (status, found) = call(&http, hyper::Method::GET, &q, None).await?;
            if status != 200 {
                bail!("{}", found["error"].as_str().unwrap_or("failed"));
            }
            let mut table = super::render::Table::new(&[
                "DEAD LETTER",
                "ORIGINAL",
                "STATUS",
                "SOURCE",
                "STAGE",
                "REASON",
            ]);
            for d in found["dead_letters"].as_array().into_iter().flatten() {
                if json {
                    super::line(format!("{d}"));
                } else {
                    table.row(vec![
                        format!(
                            "{}/{}@{}",
                            d["topic"].as_str().unwrap_or_default(),
                            d["partition"],
                            d["offset"]
                        ),
                        format!(
                            "{}/{}@{}",
                            d["original"]["topic"].as_str().unwrap_or("-"),
                            d["original"]["partition"],
                            d["original"]["offset"]
                        ),
                        d["status"].as_str().unwrap_or_default().to_string(),
                        d["source"].as_str().unwrap_or("-").to_string(),
                        d["stage"].as_str().unwrap_or("-").to_string(),
                        d["reason"].as_str().unwrap_or_default().to_string(),
                    ]);
                }
            }
            if !json {
                table.print("no dead letters match");
            }
            return Ok(());
        }
        DlqCommand::Replay(t) => ("replay", t),
        DlqCommand::Skip(t) => ("skip", t),
    };
    let DlqTarget {
        filter,
        partition,
        offset,
        http,
    } = target;
    let body = match (&filter.topic, partition, offset) {
        // The original topic named: the offset is the original record's.
        (Some(topic), Some(p), Some(o))
            if !topic.ends_with(kafkabox::services::dead_letters::DEAD_LETTER_SUFFIX) =>
        {
            dead_letter_of(&http, topic, p, o).await?
        }
        _ => selection(filter, partition, offset)?,
    };
    let (status, out) = call(
        &http,
        hyper::Method::POST,
        &format!("/api/dlq/{action}"),
        Some(body),
    )
    .await?;
    if status == 400 {
        bail!("{}", out["error"].as_str().unwrap_or("bad request"));
    }
    let mut problems = 0;
    for r in out["results"].as_array().into_iter().flatten() {
        let result = r["result"].as_str().unwrap_or_default();
        if result == "failed" || result == "refused" {
            problems += 1;
        }
        super::line(format!(
            "{}/{}@{}\t{result}\t{}",
            r["topic"].as_str().unwrap_or_default(),
            r["partition"],
            r["offset"],
            r["error"].as_str().unwrap_or("")
        ));
    }
    let done = out["done"].as_u64().unwrap_or(0);
    eprintln!(
        "{done} dead letter{} {}",
        if done == 1 { "" } else { "s" },
        if action == "replay" {
            "replayed"
        } else {
            "skipped"
        }
    );
    if problems > 0 {
        bail!(
            "{problems} could not be {}",
            if action == "replay" {
                "replayed"
            } else {
                "skipped"
            }
        );
    }
    Ok(())
}

#[derive(Debug, clap::Subcommand)]
pub enum FaultsCommand {
    /// Inject a fault (a box started with --ephemeral or --allow-faults): one of --error,
    /// --latency-ms, --disconnect, --stall (with --api), or --refuse-connections-ms.
    Add {
        /// The Kafka API: Kafka's name (Produce, Fetch, ...) or its key.
        #[arg(long)]
        api: Option<String>,
        /// Answer with this error instead of carrying the request out, e.g.
        /// NOT_LEADER_OR_FOLLOWER or 6.
        #[arg(long)]
        error: Option<String>,
        /// Answer this many milliseconds late.
        #[arg(long)]
        latency_ms: Option<u64>,
        /// Carry the request out, close the connection instead of answering.
        #[arg(long)]
        disconnect: bool,
        /// Carry the request out, hold the answer until the faults are cleared.
        #[arg(long)]
        stall: bool,
        /// Close every new Kafka connection at once for this many milliseconds.
        #[arg(long)]
        refuse_connections_ms: Option<u64>,
        /// Only the next N matching requests (default: until cleared).
        #[arg(long)]
        count: Option<u64>,
        /// Each matching request with this probability (0 < P <= 1).
        #[arg(long)]
        probability: Option<f64>,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// The faults in effect: id, what, how often it applied.
    List {
        /// One JSON object per fault.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Clear one fault (ID) or all of them; stalled answers go out.
    Clear {
        id: Option<u64>,
        #[command(flatten)]
        http: HttpArgs,
    },
}

fn fault_line(f: &serde_json::Value) -> String {
    let what: Vec<String> = [
        "api",
        "error",
        "latency_ms",
        "disconnect",
        "stall",
        "refuse_connections_ms",
        "count",
        "probability",
    ]
    .iter()
    .filter_map(|k| {
        f.get(*k)
            .map(|v| format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_string)))
    })
    .collect();
    format!(
        "{}\t{}\tinjected={}",
        f["id"],
        what.join(" "),
        f["injected"]
    )
}

pub async fn faults(cmd: FaultsCommand) -> Result<()> {
    match cmd {
        FaultsCommand::Add {
            api,
            error,
            latency_ms,
            disconnect,
            stall,
            refuse_connections_ms,
            count,
            probability,
            http,
        } => {
            let request = kafkabox::appliance::FaultRequest {
                api,
                error,
                latency_ms,
                disconnect,
                stall,
                refuse_connections_ms,
                count,
                probability,
            };
            let (status, out) = call(
                &http,
                hyper::Method::POST,
                "/api/faults",
                Some(serde_json::to_value(&request)?),
            )
            .await?;
            if status != 201 {
                bail!("{}", out["error"].as_str().unwrap_or("refused"));
            }
            super::line(fault_line(&out));
        }
        FaultsCommand::List { json, http } => {
            let (status, out) = call(&http, hyper::Method::GET, "/api/faults", None).await?;
            if status != 200 {
                bail!("{}", out["error"].as_str().unwrap_or("failed"));
            }
            let faults = out["faults"].as_array().cloned().unwrap_or_default();
            if faults.is_empty() && !json {
                eprintln!("no faults in effect");
            }
            if !faults.is_empty() && !json {
                super::line("ID\tFAULT\tINJECTED");
            }
            for f in &faults {
                super::line(if json { f.to_string() } else { fault_line(f) });
            }
        }
        FaultsCommand::Clear { id, http } => {
            let path = match id {
                Some(id) => format!("/api/faults/{id}"),
                None => "/api/faults".to_string(),
            };
            let (status, out) = call(&http, hyper::Method::DELETE, &path, None).await?;
            if status != 200 {
                bail!("{}", out["error"].as_str().unwrap_or("failed"));
            }
            eprintln!(
                "{} cleared",
                super::count(out["cleared"].as_u64().unwrap_or(0), "fault")
            );
        }
    }
    Ok(())
}
