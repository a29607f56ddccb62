//! One partition's events through its topic's chain: the contract check, the handlers (with
//! retries and backoff), the valid events re-keyed by customer into the repartition topic when
//! the topic keeps profiles, and the dead letters (the record format of
//! [`crate::services::dead_letters`]) sent to `<topic>.dlq`.

use anyhow::{bail, Result};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use super::{repartition_topic, Runner, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC};
use crate::handlers::event_headers;
use crate::pipeline::{Event, HandlerError, BACKOFF_FIRST, BACKOFF_MAX, DEAD_LETTER_STAGE};
use crate::services::dead_letters::{dead_letter_topic, DeadLetterHeaders};

impl Runner {
    /// One partition's events: contract, handlers, then the re-keyed events and dead letters
    /// sent; returns their deliveries.
    pub(super) async fn handle(
        &mut self,
        topic: &str,
        partition: i32,
        events: Vec<Event>,
    ) -> Result<Vec<rdkafka::producer::DeliveryFuture>> {
        let chain = &self.chains[topic];
        let mut rejected: Vec<(&Event, String, Option<String>, &str)> = Vec::new();
        let mut valid: Vec<(serde_json::Value, &Event)> = Vec::new();
        for e in &events {
            match &chain.contract {
                Some(contract) => match contract.check(e.value.as_deref()) {
                    Ok(v) => valid.push((v, e)),
                    Err(r) => rejected.push((e, r.reason, r.source, DEAD_LETTER_STAGE)),
                },
                None => {
                    let v = e
                        .value
                        .as_deref()
                        .and_then(|b| serde_json::from_slice(b).ok())
                        .unwrap_or(serde_json::Value::Null);
                    valid.push((v, e));
                }
            }
        }
        // Valid events with a customer id go to the repartition topic, keyed by it: the
        // profile stage reads them there, one customer on one partition.
        let mut rekeyed: Vec<(String, &Event)> = Vec::new();
        if chain.profiles {
            for (v, e) in &valid {
                if let Some(customer) = v.get("customer_id").and_then(|c| c.as_str()) {
                    rekeyed.push((customer.to_string(), e));
                }
            }
        }
        // Handlers see the valid events (all of them on a topic without a contract).
        let valid_events: Vec<Event> = valid.iter().map(|(_, e)| (*e).clone()).collect();
        let mut refused: Vec<(Event, String, String)> = Vec::new();
        for h in &chain.handlers {
            if valid_events.is_empty() {
                break;
            }
            let mut backoff = BACKOFF_FIRST;
            loop {
                match h.handle(&valid_events).await {
                    Ok(()) => break,
                    Err(HandlerError::Permanent(reason)) => {
                        for e in &valid_events {
                            refused.push((
                                e.clone(),
                                format!("handler {}: {reason}", h.name()),
                                h.name().to_string(),
                            ));
                        }
                        break;
                    }
                    Err(HandlerError::Transient(reason)) => {
                        tracing::warn!(handler = h.name(), %reason, backoff_ms = backoff.as_millis() as u64, "handler failed; retrying");
                        let mut shutdown = self.shutdown.clone();
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.changed() => bail!("stopped while handler {} was failing: the events are handled again at the next start", h.name()),
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
        for (e, reason, stage) in &refused {
            rejected.push((e, reason.clone(), None, stage.as_str()));
        }
        // Re-keyed events and dead letters, then wait for every acknowledgement.
        let mut deliveries = Vec::new();
        let repartition = repartition_topic(&self.builder.group, topic);
        for (customer, e) in &rekeyed {
            let (p, o) = (e.partition.to_string(), e.offset.to_string());
            let mut headers = OwnedHeaders::new();
            for (k, v) in [
                (SOURCE_TOPIC, topic),
                (SOURCE_PARTITION, p.as_str()),
                (SOURCE_OFFSET, o.as_str()),
            ] {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&repartition)
                .key(customer.as_bytes())
                .headers(headers)
                .timestamp(e.timestamp);
            if let Some(v) = &e.value {
                r = r.payload(v.as_ref());
            }
            let f = self
                .producer
                .send_result(r)
                .map_err(|(e, _)| anyhow::anyhow!("repartition: {e}"))?;
            deliveries.push(f);
        }
        let dlq = dead_letter_topic(topic);
        let dlq_partitions = self.partitions.get(topic).copied().unwrap_or(1).max(1);
        for (e, reason, source, stage) in &rejected {
            let (p, o, t) = (
                partition.to_string(),
                e.offset.to_string(),
                e.timestamp.to_string(),
            );
            let dead_letter = DeadLetterHeaders {
                reason,
                source: source.as_deref(),
                stage,
                topic,
                partition: &p,
                offset: &o,
                timestamp: &t,
            };
            let mut headers = event_headers(e);
            for (k, v) in dead_letter.pairs() {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&dlq)
                .partition(partition % dlq_partitions)
                .headers(headers);
            if let Some(k) = &e.key {
                r = r.key(k.as_ref());
            }
            if let Some(v) = &e.value {
                r = r.payload(v.as_ref());
            }
            let f = self
                .producer
                .send_result(r)
                .map_err(|(e, _)| anyhow::anyhow!("dead letter: {e}"))?;
            deliveries.push(f);
            tracing::warn!(topic, partition, offset = e.offset, %reason, "event sent to the dead-letter topic");
        }
        self.handled += events.len() as u64;
        Ok(deliveries)
    }
}
