//! `kafkabox check DIR` and `kafkabox repair DIR`: offline checks of a data dir and the
//! truncation of damaged partitions (see `kafkabox_storage`'s check module).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kafkabox_storage::{PartitionCheck, Store, StoreConfig};

#[derive(Debug, clap::Args)]
pub struct DirArgs {
    /// The data directory (kafkabox must not be running on it).
    pub dir: PathBuf,
}

fn open(dir: &Path) -> Result<Store> {
    if !dir.join("conf").exists() {
        bail!(
            "{} is not a kafkabox data directory (no sled database in it)",
            dir.display()
        );
    }
    let mut config = StoreConfig::new(dir);
    // Checking and repairing write only a few bytes.
    config.min_free_bytes = 0;
    Store::open(config).with_context(|| format!("opening {}", dir.display()))
}

fn print_check(checks: &[PartitionCheck]) -> usize {
    let mut damaged = 0;
    for c in checks {
        match &c.damage {
            None => println!(
                "{}-{}: ok, {} batches, {} bytes, intact up to offset {}",
                c.topic, c.partition, c.batches, c.bytes, c.intact_end
            ),
            Some(d) => {
                damaged += 1;
                println!(
                    "{}-{}: DAMAGED from offset {}: {}{}",
                    c.topic,
                    c.partition,
                    d.from,
                    d.what,
                    c.durable_end
                        .map(|e| format!(" (offsets up to {e} were stored)"))
                        .unwrap_or_default()
                );
            }
        }
    }
    damaged
}

/// Exit code 0: no damage; 1: damage found (or the store does not open).
pub async fn check(args: DirArgs) -> Result<()> {
    let dir = args.dir.clone();
    let (checks, store) = tokio::task::spawn_blocking(move || -> Result<_> {
        let store = open(&dir)?;
        Ok((store.check(), store))
    })
    .await??;
    let damaged = print_check(&checks);
    tokio::task::spawn_blocking(move || store.close()).await??;
    println!("{} partitions checked, {damaged} damaged", checks.len());
    if damaged > 0 {
        bail!(
            "{damaged} damaged partitions in {}; `kafkabox repair {}` truncates them to their last intact batch",
            args.dir.display(),
            args.dir.display()
        );
    }
    Ok(())
}

pub async fn repair(args: DirArgs) -> Result<()> {
    let dir = args.dir.clone();
    let repairs = tokio::task::spawn_blocking(move || -> Result<_> {
        let store = open(&dir)?;
        let r = store.repair()?;
        store.close()?;
        Ok(r)
    })
    .await??;
    for r in &repairs {
        println!(
            "{}-{}: dropped offsets {}..{} ({} bytes of stored batches): {}; the next record gets offset {}",
            r.topic, r.partition, r.dropped_from, r.dropped_to, r.bytes_dropped, r.what, r.next_offset
        );
    }
    println!("{} partitions repaired", repairs.len());
    // Check again, from a fresh open.
    let dir = args.dir.clone();
    let checks = tokio::task::spawn_blocking(move || -> Result<_> {
        let store = open(&dir)?;
        let c = store.check();
        store.close()?;
        Ok(c)
    })
    .await??;
    let damaged = checks.iter().filter(|c| c.damage.is_some()).count();
    if damaged > 0 {
        print_check(&checks);
        bail!("{damaged} partitions are still damaged after the repair");
    }
    println!(
        "{} partitions checked after the repair: all intact",
        checks.len()
    );
    Ok(())
}
