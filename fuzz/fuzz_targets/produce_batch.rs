//! Produce-path batch validation (header, CRC, bounded decompression, record walk) on
//! arbitrary bytes. The CRC is fixed up so inputs reach the record and codec checks.
#![no_main]

use kafkabox_protocol::batch::validate_produce_batch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut b = data.to_vec();
    if b.len() >= 61 && b[0] & 1 == 1 {
        b[16] = 2;
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = kafkabox_protocol_crc(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    let _ = validate_produce_batch(&b, 1 << 20, Some(1 << 20));
});

fn kafkabox_protocol_crc(b: &[u8]) -> u32 {
    kafkabox_protocol::batch::crc32c(b)
}
