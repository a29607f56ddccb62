//! A probe for the segmented store (issue 8): is a sealed sled database cheap to reopen, and do
//! many small open databases keep RSS bounded? Writes into a scratch directory, prints figures.
//!
//! `cargo run --release -p kafkabox-storage --example segment_probe -- [DIR] [SEGMENT_MIB] [SEGMENTS]`
//! (`PROBE_KEEP=1` keeps DIR; then `PROBE_OPEN_ONLY=1` with the same arguments opens the sealed
//! segments in a fresh process and reports its RSS).

use std::time::Instant;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    let out = std::process::Command::new("du")
        .arg("-sb")
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn open(path: &std::path::Path, cache: u64) -> sled::Db {
    sled::Config::new()
        .path(path)
        .cache_capacity(cache)
        .segment_size(
            std::env::var("PROBE_SLED_SEGMENT_KIB")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(512)
                << 10,
        )
        .flush_every_ms(
            std::env::var("PROBE_SLED_FLUSH_MS")
                .ok()
                .and_then(|v| v.parse().ok()),
        )
        .mode(sled::Mode::HighThroughput)
        .open()
        .expect("open")
}

fn fill(db: &sled::Db, mib: usize) {
    let tree = db.open_tree("log").unwrap();
    let kib: usize = std::env::var("PROBE_VALUE_KIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let value: Vec<u8> = (0..kib * 1024).map(|i| (i * 7919 % 251) as u8).collect();
    for i in 0..(mib * 1024 / kib) as u64 {
        tree.insert(i.to_be_bytes(), value.as_slice()).unwrap();
        if let Some(us) = std::env::var("PROBE_PAUSE_US")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            std::thread::sleep(std::time::Duration::from_micros(us));
        }
        if i % (16384 / kib as u64) == 0 {
            db.flush().unwrap();
        }
    }
    db.flush().unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).cloned().unwrap_or_else(|| {
        std::env::temp_dir()
            .join(format!("segment-probe-{}", std::process::id()))
            .display()
            .to_string()
    }));
    let seg_mib: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(256);
    let segments: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(16);
    std::fs::create_dir_all(&dir).unwrap();
    if std::env::var_os("PROBE_OPEN_ONLY").is_some() {
        // A fresh process opening segments written by an earlier run (keep DIR): RSS without
        // the writer's memory.
        let before = rss_kib();
        let t = Instant::now();
        let dbs: Vec<sled::Db> = (0..segments)
            .map(|s| open(&dir.join(format!("seg-{s}")), 1 << 20))
            .collect();
        let opened = t.elapsed();
        let mut n = 0;
        for db in &dbs {
            let tree = db.open_tree("log").unwrap();
            for item in tree.iter().take(64) {
                n += item.unwrap().1.len();
            }
        }
        println!(
            "{segments} sealed segments opened in {:.1} ms, 4 MiB read from each ({} MiB): RSS {} MiB (process started at {} MiB)",
            opened.as_secs_f64() * 1e3,
            n >> 20,
            rss_kib() / 1024,
            before / 1024
        );
        return;
    }
    if let Some(cycles) = std::env::var("PROBE_CYCLES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        // One database closed and reopened every SEGMENT_MIB written, as the store recycles a
        // written segment: does memory come back at each close?
        let path = dir.join("cycle");
        let tree_value = vec![5u8; 64 * 1024];
        let mut key = 0u64;
        for c in 0..cycles {
            let db = open(&path, 8 << 20);
            let tree = db.open_tree("log").unwrap();
            for i in 0..(seg_mib * 16) {
                tree.insert(key.to_be_bytes(), tree_value.as_slice())
                    .unwrap();
                key += 1;
                if i % 4 == 3 {
                    db.flush().unwrap();
                }
            }
            db.flush().unwrap();
            drop(tree);
            drop(db);
            if c % 8 == 7 {
                println!(
                    "after {} closes ({} MiB written): RSS {} MiB",
                    c + 1,
                    (c + 1) * seg_mib as u64,
                    rss_kib() / 1024
                );
            }
        }
        return;
    }
    if std::env::var_os("PROBE_ROLL").is_some() {
        // Segments written one after the other, each closed before the next (a partition that
        // rolls): does the writer's RSS stay flat? The last one is left unclosed, as kill -9
        // leaves it; PROBE_OPEN_ACTIVE=1 then times its recovery in a fresh process.
        let cache: u64 = std::env::var("PROBE_CACHE_MIB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(8)
            << 20;
        for s in 0..segments {
            let t = Instant::now();
            let db = open(&dir.join(format!("roll-{s}")), cache);
            fill(&db, seg_mib);
            let secs = t.elapsed().as_secs_f64();
            println!(
                "segment {s}: {seg_mib} MiB in {secs:.2} s ({:.0} MiB/s), RSS {} MiB",
                seg_mib as f64 / secs,
                rss_kib() / 1024
            );
            if s + 1 == segments {
                std::process::exit(0);
            }
        }
        return;
    }
    if let Some(secs) = std::env::var("PROBE_GC_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        // Reopen segment 0 with sled's own flusher on (it is also what cleans sled's log) and
        // let it work: how much space does it give back?
        let path = dir.join("roll-0");
        let before = dir_bytes(&path);
        let db = open(&path, 8 << 20);
        std::thread::sleep(std::time::Duration::from_secs(secs));
        db.flush().unwrap();
        drop(db);
        println!(
            "segment 0 after {secs} s with sled's flusher: {} -> {} MiB",
            before >> 20,
            dir_bytes(&path) >> 20
        );
        return;
    }
    if std::env::var_os("PROBE_OPEN_ACTIVE").is_some() {
        let t = Instant::now();
        let db = open(&dir.join(format!("roll-{}", segments - 1)), 8 << 20);
        let tree = db.open_tree("log").unwrap();
        let last = tree.last().unwrap().map(|(k, _)| k.to_vec());
        println!(
            "active segment of {seg_mib} MiB recovered in {:.1} ms after exit without close (last key {last:?}), RSS {} MiB",
            t.elapsed().as_secs_f64() * 1e3,
            rss_kib() / 1024
        );
        return;
    }
    println!(
        "probe in {}: segments of {seg_mib} MiB, {segments} of them",
        dir.display()
    );

    // 1. One segment: open times after writing, then after clean closes.
    let one = dir.join("one");
    let t = Instant::now();
    {
        let db = open(&one, 64 << 20);
        fill(&db, seg_mib);
    }
    println!(
        "write {seg_mib} MiB and close: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    for round in 1..=3 {
        let t = Instant::now();
        let db = open(&one, 1 << 20);
        let opened = t.elapsed();
        let tree = db.open_tree("log").unwrap();
        let t2 = Instant::now();
        let first = tree.first().unwrap().is_some();
        let last = tree.last().unwrap().is_some();
        println!(
            "reopen #{round}: open {:.1} ms, first+last key {:.2} ms ({first} {last}), RSS {} MiB",
            opened.as_secs_f64() * 1e3,
            t2.elapsed().as_secs_f64() * 1e3,
            rss_kib() / 1024
        );
        drop(tree);
        drop(db);
    }

    // 2. Many sealed segments open at once, small caches: RSS.
    let before = rss_kib();
    for s in 0..segments {
        let db = open(&dir.join(format!("seg-{s}")), 1 << 20);
        fill(&db, seg_mib / 8);
    }
    let t = Instant::now();
    let dbs: Vec<sled::Db> = (0..segments)
        .map(|s| open(&dir.join(format!("seg-{s}")), 1 << 20))
        .collect();
    let open_all = t.elapsed();
    for db in &dbs {
        let tree = db.open_tree("log").unwrap();
        let _ = tree.get(0u64.to_be_bytes()).unwrap();
    }
    println!(
        "{segments} sealed segments of {} MiB opened in {:.1} ms, one read each: RSS {} MiB (was {} MiB)",
        seg_mib / 8,
        open_all.as_secs_f64() * 1e3,
        rss_kib() / 1024,
        before / 1024
    );
    drop(dbs);
    if std::env::var_os("PROBE_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
