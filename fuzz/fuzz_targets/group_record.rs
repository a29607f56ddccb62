//! Group records as the coordinator reads them back from the disk at start-up: any bytes may
//! be there (a damaged file, a record written by an older version). No input may panic; a
//! record that decodes restores a group whose own record reads back equal, and whose timers
//! run out without panicking.
#![no_main]

use kafkabox::services::groups::group::StoredGroup;
use kafkabox::services::groups::{restore_record, Restored};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Restored::Classic(mut group) = restore_record("g", data, NOW) else {
        return;
    };
    let stored = group.to_stored();
    let bytes = serde_json::to_vec(&stored).expect("a group record always encodes");
    let back: StoredGroup = serde_json::from_slice(&bytes).expect("a written record reads back");
    assert_eq!(back, stored);
    let Restored::Classic(again) = restore_record("g", &bytes, NOW) else {
        panic!("a classic group's record restored as another kind");
    };
    assert_eq!(again.to_stored().members, stored.members);
    // Every member's session and the rebalance run out.
    group.tick(NOW + 24 * 3_600_000);
    let _ = group.to_stored();
});
