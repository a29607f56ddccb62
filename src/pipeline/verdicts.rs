//! [`Verdicts`]: the invalid offsets the dead-letter (contract) stage found in its last passes
//! over a partition, so the handler stages behind it need not check the contract again.

use std::sync::Mutex;

/// What the contract stage found in the records it committed: for each pass, its offset range
/// and the offsets in it that broke the contract (or did not decode). Handler stages behind it
/// skip those without checking the contract again; records it has not reached yet are checked
/// by the handler stage itself. Bounded: the newest [`VERDICT_PASSES`] passes.
#[derive(Debug, Default)]
pub struct Verdicts {
    passes: Mutex<std::collections::VecDeque<(i64, i64, Vec<i64>)>>,
}

/// Passes of the contract stage whose verdicts are kept per partition.
const VERDICT_PASSES: usize = 1024;

impl Verdicts {
    pub(super) fn record(&self, start: i64, end: i64, invalid: Vec<i64>) {
        if let Ok(mut p) = self.passes.lock() {
            if p.back().is_some_and(|(_, e, _)| *e > start) {
                // A re-run after a failed commit: the ranges stay in order.
                p.clear();
            }
            p.push_back((start, end, invalid));
            while p.len() > VERDICT_PASSES {
                p.pop_front();
            }
        }
    }

    /// How far from `from` the verdicts reach without a gap, and the invalid offsets up to
    /// there.
    pub(super) fn lookup(&self, from: i64) -> (i64, std::collections::HashSet<i64>) {
        let mut covered = from;
        let mut invalid = std::collections::HashSet::new();
        if let Ok(p) = self.passes.lock() {
            for (start, end, bad) in p.iter() {
                if *start <= covered && *end > covered {
                    invalid.extend(bad.iter().copied().filter(|o| *o >= from));
                    covered = *end;
                }
            }
        }
        (covered, invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::Verdicts;

    #[test]
    fn verdicts_cover_contiguous_passes_only() {
        let v = Verdicts::default();
        v.record(0, 10, vec![3]);
        v.record(10, 20, vec![12, 19]);
        // From 5: both passes, without a gap.
        let (checked, invalid) = v.lookup(5);
        assert_eq!(checked, 20);
        assert_eq!(invalid, [12, 19].into_iter().collect());
        // Past what was checked: nothing is known.
        assert_eq!(v.lookup(25).0, 25);
        // A pass after a gap (records removed) is not reached from before it.
        v.record(30, 40, vec![31]);
        assert_eq!(v.lookup(0).0, 20);
        assert_eq!(v.lookup(30), (40, [31].into_iter().collect()));
        // A re-run from an earlier offset starts over.
        v.record(10, 15, vec![]);
        assert_eq!(v.lookup(0).0, 0);
        assert_eq!(v.lookup(10).0, 15);
    }
}
