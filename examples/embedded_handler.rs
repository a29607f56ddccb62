//! Embedding kafkabox with an event handler: the broker, the customer-events contract (invalid
//! events go to customer-events.dlq), customer profiles, and a handler of your own that gets
//! the valid events in offset order per partition, with at-least-once delivery.
//!
//! Run: `cargo run --example embedded_handler`

use kafkabox::pipeline::{Event, Handler, HandlerError};
use kafkabox::Appliance;

/// Prints each valid customer event. Returning `HandlerError::Transient` would make the
/// pipeline retry the same events later; `HandlerError::Permanent` dead-letters them.
struct PrintEvents;

#[async_trait::async_trait]
impl Handler for PrintEvents {
    fn name(&self) -> &str {
        "print-events"
    }

    async fn handle(&self, events: &[Event]) -> Result<(), HandlerError> {
        for e in events {
            let value = e.value.as_deref().map(String::from_utf8_lossy);
            println!(
                "partition {} offset {}: {}",
                e.partition,
                e.offset,
                value.unwrap_or_default()
            );
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("kafkabox-handler-example-{}", std::process::id()));
    let app = Appliance::builder()
        .data_dir(&dir)
        .listen("127.0.0.1:0")
        .profiles("customer-events")
        .handler("customer-events", PrintEvents)
        .start()
        .await?;
    println!("bootstrap.servers = {}", app.kafka_addr());

    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", app.kafka_addr().to_string())
        .create()?;
    for value in [
        r#"{"source":"in","customer_id":"1234567890","event_type":"data_usage","timestamp":"2024-01-15T10:30:00Z","value":500.5}"#,
        r#"{"source":"in","customer_id":"1234567890","event_type":"no_such_type","timestamp":"2024-01-15T10:31:00Z"}"#,
    ] {
        producer
            .send(
                FutureRecord::<(), _>::to("customer-events").payload(value),
                std::time::Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    // Give the pipeline a moment, then show what it made of the events.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    println!(
        "profile: {}",
        app.profile("1234567890")?.unwrap_or_default()
    );
    println!("ingest status: {:?}", app.ingest_status()?);
    println!("lag: {}", app.lag().total());

    drop(producer);
    app.shutdown().await?;
    std::fs::remove_dir_all(dir)?;
    Ok(())
}
