//! Every request frame goes through the bounded pre-check and then the kafka-protocol decoder.
//! Neither may panic or allocate more than the frame justifies (run with -malloc_limit_mb).
#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafkabox::api::{decode_frame, APIS as SUPPORTED_APIS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    // Steer most inputs to a supported API and version so the body decoders get exercised;
    // data[2] bit 0 clear keeps the raw bytes as the whole frame (header fuzzing).
    let frame = if data[2] & 1 == 0 {
        Bytes::copy_from_slice(&data[3..])
    } else {
        let api = &SUPPORTED_APIS[data[0] as usize % SUPPORTED_APIS.len()];
        let span = (api.max - api.min + 1) as u8;
        let version = api.min + (data[1] % span) as i16;
        let mut f = Vec::with_capacity(data.len() + 12);
        f.extend_from_slice(&api.key.to_be_bytes());
        f.extend_from_slice(&version.to_be_bytes());
        f.extend_from_slice(&1i32.to_be_bytes());
        f.extend_from_slice(&[0, 1, b'f']);
        let key = ApiKey::try_from(api.key).expect("a known key");
        if key.request_header_version(version) >= 2 {
            f.push(0);
        }
        f.extend_from_slice(&data[3..]);
        Bytes::from(f)
    };
    let _ = decode_frame(frame);
});
