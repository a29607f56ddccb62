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

/// `kafkabox users`: the SASL users of a data dir, changed while kafkabox is not running on it
/// (a running box takes AlterUserScramCredentials from admin clients instead).
#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Add a user, or set its password: one line read from stdin.
    Add(UsersAddArgs),
    /// List the users and their mechanisms (never a password).
    List(UsersDirArgs),
    /// Remove a user and all its credentials.
    Remove(UsersRemoveArgs),
}

#[derive(Debug, clap::Args)]
pub struct UsersDirArgs {
    /// The data directory (`data.dir`; kafkabox must not be running on it).
    #[arg(long, default_value = "./kafkabox-data")]
    pub data_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct UsersAddArgs {
    /// The user name (its principal is User:NAME).
    pub name: String,
    /// SASL mechanism the credential is for: SCRAM-SHA-256, SCRAM-SHA-512 (both also serve
    /// PLAIN) or PLAIN (PLAIN only). Repeatable.
    #[arg(long = "mechanism", default_value = "SCRAM-SHA-512")]
    pub mechanisms: Vec<String>,
    /// Read the password from the first line of stdin (required: passwords never go on the
    /// command line).
    #[arg(long)]
    pub password_stdin: bool,
    /// SCRAM iterations (4096 to 16384).
    #[arg(long, default_value_t = crate::services::users::DEFAULT_ITERATIONS)]
    pub iterations: u32,
    /// Make a new data directory when --data-dir holds none (before the first `serve`).
    #[arg(long)]
    pub create: bool,
    #[command(flatten)]
    pub dir: UsersDirArgs,
}

#[derive(Debug, clap::Args)]
pub struct UsersRemoveArgs {
    pub name: String,
    #[command(flatten)]
    pub dir: UsersDirArgs,
}

/// Whether `dir` holds a data directory (the meta database's files).
fn is_data_dir(dir: &Path) -> bool {
    dir.join("conf").is_file() || dir.join("db").is_file()
}

/// Opens a data dir for user changes, with a clear message when kafkabox runs on it. A
/// directory that holds no data dir is refused unless `create` (`users add --create`): a
/// mistyped `--data-dir` must not make a new, empty one.
fn open_for_users(dir: &Path, create: bool) -> Result<Store> {
    if !create && !is_data_dir(dir) {
        bail!(
            "{} is not a kafkabox data directory (no such directory, or no data in it); check --data-dir, or make a new one with `kafkabox users add ... --create`",
            dir.display()
        );
    }
    let mut config = StoreConfig::new(dir);
    config.min_free_bytes = 0;
    Store::open(config).map_err(|e| {
        let text = e.to_string();
        if text.contains("in use") || text.contains("lock") || text.contains("Resource temporarily unavailable") {
            anyhow::anyhow!(
                "{} is in use (is kafkabox running on it?); change the users of a running box with an admin client (AlterUserScramCredentials, e.g. kafka-configs.sh --alter --add-config 'SCRAM-SHA-512=[password=...]' --entity-type users --entity-name NAME): {text}",
                dir.display()
            )
        } else {
            anyhow::anyhow!("opening {}: {text}", dir.display())
        }
    })
}

pub async fn users(cmd: UsersCommand) -> Result<()> {
    use crate::services::users::{Credential, Mechanism, Users, MAX_ITERATIONS, MIN_ITERATIONS};
    match cmd {
        UsersCommand::Add(a) => {
            crate::services::users::check_name(&a.name).map_err(|e| anyhow::anyhow!("{e}"))?;
            if !a.password_stdin {
                bail!("give the password on stdin with --password-stdin (never on the command line), e.g. printf '%s\\n' \"$PASSWORD\" | kafkabox users add {} --password-stdin", a.name);
            }
            if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&a.iterations) {
                bail!(
                    "--iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, got {}",
                    a.iterations
                );
            }
            let mut mechs = Vec::new();
            for m in &a.mechanisms {
                mechs.push(Mechanism::parse(m).with_context(|| {
                    format!("unknown mechanism '{m}'; one of SCRAM-SHA-256, SCRAM-SHA-512, PLAIN")
                })?);
            }
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            let password = line.trim_end_matches(['\n', '\r']).to_string();
            if password.is_empty() {
                bail!("the password read from stdin is empty");
            }
            let (dir, create) = (a.dir.data_dir.clone(), a.create);
            let name = a.name.clone();
            let iterations = a.iterations;
            let mut changes = Vec::new();
            for m in &mechs {
                let cred = Credential::new(m.scram(), &password, iterations)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                changes.push((name.clone(), *m, Some(cred)));
            }
            tokio::task::spawn_blocking(move || -> Result<()> {
                let store = open_for_users(&dir, create)?;
                Users::new(store.clone())
                    .apply(&changes)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                store.close()?;
                Ok(())
            })
            .await??;
            let names: Vec<&str> = mechs.iter().map(|m| m.name()).collect();
            println!("user {} set for {}", a.name, names.join(", "));
        }
        UsersCommand::List(d) => {
            let users = tokio::task::spawn_blocking(move || -> Result<_> {
                let store = open_for_users(&d.data_dir, false)?;
                let users = Users::new(store.clone())
                    .list()
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                store.close()?;
                Ok(users)
            })
            .await??;
            for (name, user) in &users {
                let mechs: Vec<String> = user
                    .credentials
                    .iter()
                    .map(|(m, c)| format!("{} (iterations {})", m.name(), c.iterations))
                    .collect();
                println!("{name}\t{}", mechs.join(", "));
            }
            match users.len() {
                0 => println!("no users"),
                1 => println!("1 user"),
                n => println!("{n} users"),
            }
        }
        UsersCommand::Remove(r) => {
            let name = r.name.clone();
            let removed = tokio::task::spawn_blocking(move || -> Result<bool> {
                let store = open_for_users(&r.dir.data_dir, false)?;
                let removed = Users::new(store.clone())
                    .remove(&name)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                store.close()?;
                Ok(removed)
            })
            .await??;
            if !removed {
                bail!("no user {}", r.name);
            }
            println!("user {} removed", r.name);
        }
    }
    Ok(())
}
