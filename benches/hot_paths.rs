//! criterion benchmarks of the functions every record goes through: produce batch validation,
//! the customer-events contract check, and the profile update. `cargo bench --bench hot_paths`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kafkabox::contract::Contract;
use kafkabox::profile::{Profile, Profiles, Valid};
use kafkabox_protocol::batch::{self, ProducerFields};

fn event(i: usize) -> String {
    format!(
        r#"{{"source":"billing","source_name":"Billing","customer_id":"{}","event_type":"recharge","timestamp":"2024-01-15T10:30:00.123456Z","value":{}.5,"metadata":{{"channel":"app"}}}}"#,
        100_000 + i % 1000,
        i % 100
    )
}

fn batch_validation(c: &mut Criterion) {
    let values: Vec<String> = (0..1000).map(event).collect();
    let records: Vec<batch::KeyValue<'_>> =
        values.iter().map(|v| (None, Some(v.as_bytes()))).collect();
    let bytes = batch::encode_uncompressed(&records, 1_700_000_000_000, ProducerFields::NONE);
    let mut g = c.benchmark_group("produce");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("validate_produce_batch, 1,000 records", |b| {
        b.iter(|| batch::validate_produce_batch(&bytes, 16 << 20, Some(64 << 20)).unwrap())
    });
    g.finish();
}

fn contract_check(c: &mut Criterion) {
    let contract = Contract::default_contract().unwrap();
    let valid = event(7);
    let invalid = r#"{"source":"billing","customer_id":"1","event_type":"teleport"}"#;
    let mut g = c.benchmark_group("contract");
    g.throughput(Throughput::Elements(1));
    g.bench_function("check, valid event", |b| {
        b.iter(|| contract.check(Some(valid.as_bytes())).unwrap())
    });
    g.bench_function("check, invalid event", |b| {
        b.iter(|| contract.check(Some(invalid.as_bytes())).unwrap_err())
    });
    g.finish();
}

fn profile_update(c: &mut Criterion) {
    let raw: Vec<String> = (0..1000).map(event).collect();
    let parsed: Vec<serde_json::Value> = raw
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
    let valid: Vec<Valid<'_>> = parsed
        .iter()
        .zip(&raw)
        .enumerate()
        .map(|(i, (event, raw))| Valid {
            event,
            raw: raw.as_bytes(),
            partition: 0,
            offset: i as i64,
        })
        .collect();
    let mut g = c.benchmark_group("profile");
    g.throughput(Throughput::Elements(1));
    g.bench_function("Profile::apply, one event", |b| {
        b.iter_batched(
            Profile::default,
            |mut p| {
                p.apply(&valid[0]);
                p
            },
            BatchSize::SmallInput,
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let store =
        kafkabox_storage::Store::open(kafkabox_storage::StoreConfig::new(dir.path())).unwrap();
    let mut profiles = Profiles::new(kafkabox::profile::CACHE_BYTES);
    g.throughput(Throughput::Elements(1000));
    g.bench_function(
        "Profiles::apply, 1,000 events over 1,000 cached customers (with encoding)",
        |b| b.iter(|| profiles.apply(&store, &valid).unwrap()),
    );
    g.finish();
}

criterion_group!(benches, batch_validation, contract_check, profile_update);
criterion_main!(benches);
