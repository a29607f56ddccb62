//! Embedding kafkabox in a Rust program or test: start a broker on a free port over a data
//! directory, point a Kafka client at `server.kafka_addr()`, shut it down cleanly.
//!
//! Run: `cargo run --example embedded_broker`

use kafkabox::{Config, Server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("kafkabox-example-{}", std::process::id()));
    let mut config = Config::default();
    config.set("listen", "127.0.0.1:0")?;
    config.data_dir = dir.clone();
    let server = Server::start(config).await?;
    println!("Kafka bootstrap address: {}", server.kafka_addr());

    // Any Kafka client works here; the records land in server.store().
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", server.kafka_addr().to_string())
        .create()?;
    let delivery = producer
        .send(
            FutureRecord::<(), _>::to("customer-events").payload(r#"{"source":"in"}"#),
            std::time::Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    println!(
        "stored at partition {} offset {}",
        delivery.partition, delivery.offset
    );

    server.shutdown().await?;
    std::fs::remove_dir_all(dir)?;
    Ok(())
}
