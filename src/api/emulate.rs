//! What ApiVersions advertises and the dispatch accepts: every version of [`super::APIS`], or,
//! with `emulate.kafka` (`serve --emulate-kafka 3.5`), the part of each range that an Apache
//! Kafka release advertises, from the data table `src/config/kafka_releases.toml` (generated
//! by `scripts/gen_kafka_releases.py`, read by `config::kafka_releases`).

use std::collections::BTreeMap;

use super::APIS;

pub use crate::config::kafka_releases::{release, releases, Release};

/// The version range of each API key that this broker answers.
#[derive(Debug, Clone)]
pub struct Advertised {
    ranges: BTreeMap<i16, (i16, i16)>,
    /// The emulated release, if any.
    pub release: Option<String>,
}

impl Advertised {
    /// Every version of every API in [`APIS`].
    pub fn all() -> Advertised {
        Advertised {
            ranges: APIS.iter().map(|a| (a.key, (a.min, a.max))).collect(),
            release: None,
        }
    }

    /// `release`'s ranges cut to what kafkabox answers; APIs the release lacks, or whose
    /// versions do not overlap kafkabox's, are left out.
    pub fn emulating(release: &Release) -> Advertised {
        let ranges = APIS
            .iter()
            .filter_map(|a| {
                let (min, max) = release.apis.get(&a.key)?;
                let (lo, hi) = (a.min.max(*min), a.max.min(*max));
                (lo <= hi).then_some((a.key, (lo, hi)))
            })
            .collect();
        Advertised {
            ranges,
            release: Some(release.name.clone()),
        }
    }

    /// From `emulate.kafka` (checked when the setting was read).
    pub fn from_config(emulate: Option<&str>) -> Result<Advertised, String> {
        match emulate {
            None => Ok(Advertised::all()),
            Some(v) => Ok(Advertised::emulating(&release(v)?)),
        }
    }

    /// The range of `key`, if advertised.
    pub fn range(&self, key: i16) -> Option<(i16, i16)> {
        self.ranges.get(&key).copied()
    }

    /// Every advertised API: (key, min, max), by key.
    pub fn iter(&self) -> impl Iterator<Item = (i16, i16, i16)> + '_ {
        self.ranges.iter().map(|(k, (lo, hi))| (*k, *lo, *hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses_and_has_the_releases_users_name() {
        let names = releases();
        for v in ["2.8", "3.5", "3.9", "4.0"] {
            assert!(names.contains(&v.to_string()), "{names:?}");
            let r = release(v).unwrap();
            assert!(r.apis.len() > 30, "{v}: {}", r.apis.len());
        }
        assert_eq!(release("3.5.1").unwrap().name, "3.5");
        let e = release("9.9").unwrap_err();
        assert!(e.contains("known releases: 1.0"), "{e}");
    }

    #[test]
    fn emulation_cuts_ranges_to_both() {
        // Kafka 2.8: Produce 0-9 (kafkabox 3-12), Fetch 0-12 (4-12), no ConsumerGroupHeartbeat.
        let a = Advertised::emulating(&release("2.8").unwrap());
        assert_eq!(a.range(0), Some((3, 9)));
        assert_eq!(a.range(1), Some((4, 12)));
        assert_eq!(a.range(68), None);
        assert_eq!(a.range(18), Some((0, 3)));
        // Kafka 4.0 dropped old versions (KIP-896): ListOffsets from 1, OffsetCommit from 2.
        let a = Advertised::emulating(&release("4.0").unwrap());
        assert_eq!(a.range(2), Some((1, 10)));
        assert_eq!(a.range(8), Some((2, 9)));
        assert_eq!(a.range(68), Some((0, 1)));
        // Without emulation: the whole table.
        let all = Advertised::all();
        assert_eq!(all.iter().count(), APIS.len());
    }
}
