//! Record batch (magic 2) helpers: read and check the 61-byte header, verify the CRC, walk the
//! records of an uncompressed batch with bounded reads, and rewrite the broker-owned fields
//! (base offset, partition leader epoch) that lie outside the CRC.
//!
//! Nothing here decompresses or re-encodes: the produce path stores the batch as the client sent
//! it (DESIGN.md, data path step 2).

use kafka_protocol::ResponseError;

/// Size of the v2 batch header.
pub const HEADER_LEN: usize = 61;
/// Bytes in front of `batchLength`'s count: base offset (8) + batch length (4).
pub const LOG_OVERHEAD: usize = 12;

/// The fixed fields of a v2 record batch header (KAFKA-PROTOCOL-NOTES.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

/// Compression codec of a batch (attributes bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl BatchHeader {
    /// Total size of the batch on the wire.
    pub fn total_len(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }

    /// Offset of the last record, given the base offset in the header.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Sequence number of the last record (wraps at i32::MAX as Kafka does).
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        if last > i64::from(i32::MAX) {
            (last - i64::from(i32::MAX) - 1) as i32
        } else {
            last as i32
        }
    }

    pub fn codec(&self) -> Option<Codec> {
        match self.attributes & 0x07 {
            0 => Some(Codec::None),
            1 => Some(Codec::Gzip),
            2 => Some(Codec::Snappy),
            3 => Some(Codec::Lz4),
            4 => Some(Codec::Zstd),
            _ => None,
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }
}

/// Why a batch was refused, with the Kafka error code the produce response carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch too short: {0} bytes, a v2 header needs 61")]
    TooShort(usize),
    #[error("record batch length field says {declared} bytes but {actual} are present")]
    LengthMismatch { declared: i64, actual: usize },
    #[error("record batch magic {0} is not supported; only magic 2 (Kafka 0.11+ record batches)")]
    BadMagic(i8),
    #[error("record batch CRC mismatch: header says {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record batch of {size} bytes exceeds message.max.bytes = {max}")]
    TooLarge { size: usize, max: usize },
    #[error("unsupported compression codec {0}")]
    BadCodec(i16),
    #[error("invalid record batch: {0}")]
    Invalid(String),
    #[error("record batch payload: {0}")]
    Decompress(#[from] crate::compression::DecompressError),
}

impl BatchError {
    /// The Kafka error a produce response reports for this batch.
    pub fn kafka_error(&self) -> ResponseError {
        match self {
            BatchError::CrcMismatch { .. } => ResponseError::CorruptMessage,
            BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
            BatchError::BadCodec(_) => ResponseError::UnsupportedCompressionType,
            _ => ResponseError::InvalidRecord,
        }
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Reads the header of the batch at the start of `buf`. Checks only that 61 bytes are there.
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    if buf.len() < HEADER_LEN {
        return Err(BatchError::TooShort(buf.len()));
    }
    Ok(BatchHeader {
        base_offset: be_i64(buf, 0),
        batch_length: be_i32(buf, 8),
        partition_leader_epoch: be_i32(buf, 12),
        magic: buf[16] as i8,
        crc: be_i32(buf, 17) as u32,
        attributes: be_i16(buf, 21),
        last_offset_delta: be_i32(buf, 23),
        base_timestamp: be_i64(buf, 27),
        max_timestamp: be_i64(buf, 35),
        producer_id: be_i64(buf, 43),
        producer_epoch: be_i16(buf, 51),
        base_sequence: be_i32(buf, 53),
        records_count: be_i32(buf, 57),
    })
}

/// Reads the header of the single batch in `buf` and checks what every reader needs: magic 2,
/// a length that covers exactly `buf`, and the CRC-32C.
fn check_frame(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = parse_header(buf)?;
    if h.magic != 2 {
        return Err(BatchError::BadMagic(h.magic));
    }
    let declared = i64::from(h.batch_length) + LOG_OVERHEAD as i64;
    if declared != buf.len() as i64 {
        return Err(BatchError::LengthMismatch {
            declared,
            actual: buf.len(),
        });
    }
    let computed = crc32c::crc32c(&buf[21..]);
    if computed != h.crc {
        return Err(BatchError::CrcMismatch {
            stored: h.crc,
            computed,
        });
    }
    Ok(h)
}

/// Checks that `buf` holds exactly one well-formed v2 batch as a producer sends it:
/// size within `max_batch_bytes`, lengths consistent, magic 2, CRC-32C correct, a known codec,
/// not a control batch, `records_count == last_offset_delta + 1`, and every record parses within
/// its declared length. A compressed payload is inflated (at most `inflate_limit` bytes) to
/// check its records, as Kafka does; `None` skips that check. The batch itself is never changed.
pub fn validate_produce_batch(
    buf: &[u8],
    max_batch_bytes: usize,
    inflate_limit: Option<usize>,
) -> Result<BatchHeader, BatchError> {
    if buf.len() > max_batch_bytes {
        return Err(BatchError::TooLarge {
            size: buf.len(),
            max: max_batch_bytes,
        });
    }
    let h = check_frame(buf)?;
    let Some(codec) = h.codec() else {
        return Err(BatchError::BadCodec(h.attributes & 0x07));
    };
    if h.is_control() {
        return Err(BatchError::Invalid(
            "control batches may not be produced by clients".into(),
        ));
    }
    if h.records_count <= 0 {
        return Err(BatchError::Invalid(format!(
            "records count {} must be positive",
            h.records_count
        )));
    }
    if h.last_offset_delta != h.records_count - 1 {
        return Err(BatchError::Invalid(format!(
            "last offset delta {} does not match records count {}",
            h.last_offset_delta, h.records_count
        )));
    }
    if h.max_timestamp < h.base_timestamp && h.max_timestamp != -1 {
        return Err(BatchError::Invalid(format!(
            "max timestamp {} is below base timestamp {}",
            h.max_timestamp, h.base_timestamp
        )));
    }
    match (codec, inflate_limit) {
        (Codec::None, _) => walk_records(&buf[HEADER_LEN..], h.records_count)?,
        (_, Some(limit)) => {
            let inflated = crate::compression::decompress(codec, &buf[HEADER_LEN..], limit)?;
            walk_records(&inflated, h.records_count)?;
        }
        (_, None) => {}
    }
    Ok(h)
}

/// CRC-32C (Castagnoli), the checksum of v2 batches (over bytes 21..end).
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// Rewrites the base offset (bytes 0..8). Outside the CRC: no checksum to recompute.
pub fn set_base_offset(buf: &mut [u8], base_offset: i64) {
    buf[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Stamps the partition leader epoch (bytes 12..16), also outside the CRC.
pub fn set_leader_epoch(buf: &mut [u8], epoch: i32) {
    buf[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Turns a batch into a LogAppendTime batch stamped `now_ms`: sets attribute bit 3, writes
/// `now_ms` as the max timestamp and recomputes the CRC (both lie inside it), as Kafka's
/// `setMaxTimestamp` does. `buf` must be a whole checked batch.
pub fn set_log_append_time(buf: &mut [u8], now_ms: i64) {
    if buf.len() < HEADER_LEN {
        return;
    }
    let attributes = i16::from_be_bytes([buf[21], buf[22]]) | 0x08;
    buf[21..23].copy_from_slice(&attributes.to_be_bytes());
    buf[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c(&buf[21..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// One record of an uncompressed batch, as slices of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: &str) -> BatchError {
        BatchError::Invalid(format!("{what} at byte {} of the records", self.pos))
    }

    fn varlong(&mut self) -> Result<i64, BatchError> {
        let mut raw: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err("truncated varint"));
            };
            self.pos += 1;
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(self.err("overlong varint"))
    }

    fn varint(&mut self) -> Result<i32, BatchError> {
        let v = self.varlong()?;
        i32::try_from(v).map_err(|_| self.err("varint out of int32 range"))
    }

    fn bytes(&mut self, len: i32) -> Result<Option<&'a [u8]>, BatchError> {
        if len == -1 {
            return Ok(None);
        }
        if len < 0 || len as usize > self.buf.len() - self.pos {
            return Err(self.err(&format!("length {len} out of bounds")));
        }
        let s = &self.buf[self.pos..self.pos + len as usize];
        self.pos += len as usize;
        Ok(Some(s))
    }
}

/// Parses `count` records from `buf` (the bytes after an uncompressed batch header). Every count
/// and length is checked against the bytes present before anything is allocated.
pub fn decode_records(buf: &[u8], count: i32) -> Result<Vec<RecordView<'_>>, BatchError> {
    // A record takes at least 7 bytes; refuse counts the buffer cannot hold before reserving.
    if count < 0 || count as usize > buf.len() / 7 {
        return Err(BatchError::Invalid(format!(
            "records count {count} cannot fit in {} bytes",
            buf.len()
        )));
    }
    let mut out = Vec::with_capacity(count as usize);
    let mut c = Cursor { buf, pos: 0 };
    for i in 0..count {
        let len = c.varint()?;
        if len < 0 || len as usize > buf.len() - c.pos {
            return Err(c.err(&format!("record {i} length {len} out of bounds")));
        }
        let end = c.pos + len as usize;
        let mut r = Cursor {
            buf: &buf[..end],
            pos: c.pos,
        };
        let _attributes = r.bytes(1)?;
        let timestamp_delta = r.varlong()?;
        let offset_delta = r.varint()?;
        if offset_delta != i {
            return Err(r.err(&format!("record {i} has offset delta {offset_delta}")));
        }
        let key_len = r.varint()?;
        let key = r.bytes(key_len)?;
        let value_len = r.varint()?;
        let value = r.bytes(value_len)?;
        let header_count = r.varint()?;
        // A header takes at least 2 bytes.
        if header_count < 0 || header_count as usize > (end - r.pos) / 2 {
            return Err(r.err(&format!(
                "record {i} header count {header_count} out of bounds"
            )));
        }
        let mut headers = Vec::with_capacity(header_count as usize);
        for _ in 0..header_count {
            let hk_len = r.varint()?;
            let hk = r.bytes(hk_len)?.ok_or_else(|| r.err("null header key"))?;
            let hv_len = r.varint()?;
            let hv = r.bytes(hv_len)?;
            headers.push((hk, hv));
        }
        if r.pos != end {
            return Err(r.err(&format!("record {i} has {} trailing bytes", end - r.pos)));
        }
        c.pos = end;
        out.push(RecordView {
            offset_delta,
            timestamp_delta,
            key,
            value,
            headers,
        });
    }
    if c.pos != buf.len() {
        return Err(c.err(&format!(
            "{} bytes after the last record",
            buf.len() - c.pos
        )));
    }
    Ok(out)
}

fn walk_records(buf: &[u8], count: i32) -> Result<(), BatchError> {
    decode_records(buf, count).map(|_| ())
}

/// One record of a stored batch, owned, with its absolute offset and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    /// CreateTime (base timestamp + delta), or the batch's max timestamp for LogAppendTime.
    pub timestamp: i64,
    pub key: Option<bytes::Bytes>,
    pub value: Option<bytes::Bytes>,
    /// In order, duplicates kept.
    pub headers: Vec<(bytes::Bytes, Option<bytes::Bytes>)>,
}

/// Decodes every record of one v2 batch (header, CRC and records checked), whatever its codec:
/// gzip, raw or xerial snappy, lz4 frames, zstd. A compressed payload may inflate to at most
/// `inflate_limit` bytes. Offsets are absolute (the batch's base offset plus each delta).
pub fn decode_batch(
    buf: &[u8],
    inflate_limit: usize,
) -> Result<(BatchHeader, Vec<Record>), BatchError> {
    let h = check_frame(buf)?;
    let codec = h.codec().ok_or(BatchError::BadCodec(h.attributes & 0x07))?;
    let inflated;
    let payload: &[u8] = match codec {
        Codec::None => &buf[HEADER_LEN..],
        _ => {
            inflated = crate::compression::decompress(codec, &buf[HEADER_LEN..], inflate_limit)?;
            &inflated
        }
    };
    let log_append_time = h.attributes & 0x08 != 0;
    let owned = |s: &[u8]| bytes::Bytes::copy_from_slice(s);
    let records = decode_records(payload, h.records_count)?
        .into_iter()
        .map(|r| Record {
            offset: h.base_offset + i64::from(r.offset_delta),
            timestamp: if log_append_time {
                h.max_timestamp
            } else {
                h.base_timestamp.saturating_add(r.timestamp_delta)
            },
            key: r.key.map(owned),
            value: r.value.map(owned),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (owned(k), v.map(owned)))
                .collect(),
        })
        .collect();
    Ok((h, records))
}

/// Iterates over the batches concatenated in `buf` (a fetch response's records), yielding each
/// batch's header and bytes. Stops with an error at the first inconsistent length.
pub fn split_batches(buf: &[u8]) -> impl Iterator<Item = Result<(BatchHeader, &[u8]), BatchError>> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        if pos >= buf.len() {
            return None;
        }
        let rest = &buf[pos..];
        let h = match parse_header(rest) {
            Ok(h) => h,
            Err(e) => {
                pos = buf.len();
                return Some(Err(e));
            }
        };
        let total = i64::from(h.batch_length) + LOG_OVERHEAD as i64;
        if total < HEADER_LEN as i64 || total > rest.len() as i64 {
            pos = buf.len();
            return Some(Err(BatchError::LengthMismatch {
                declared: total,
                actual: rest.len(),
            }));
        }
        pos += total as usize;
        Some(Ok((h, &rest[..total as usize])))
    })
}

/// A record as `(key, value)`, either possibly null.
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Producer fields of a batch header; `NONE` for a plain (non-idempotent) producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl ProducerFields {
    pub const NONE: ProducerFields = ProducerFields {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// A record header as slices: key and possibly-null value.
pub type HeaderRef<'a> = (&'a [u8], Option<&'a [u8]>);

/// A record to encode: key, value and headers, each possibly null (header keys are not).
#[derive(Debug, Clone, Copy, Default)]
pub struct OutRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [HeaderRef<'a>],
}

/// Encodes an uncompressed v2 batch of `(key, value)` records, base offset 0, all records at
/// `timestamp_ms`. For tools and tests that produce without a client library.
pub fn encode_uncompressed(
    records: &[KeyValue<'_>],
    timestamp_ms: i64,
    producer: ProducerFields,
) -> Vec<u8> {
    let out: Vec<OutRecord<'_>> = records
        .iter()
        .map(|(key, value)| OutRecord {
            key: *key,
            value: *value,
            headers: &[],
        })
        .collect();
    encode_records(&out, timestamp_ms, producer)
}

/// Encodes an uncompressed v2 batch, base offset 0, all records at `timestamp_ms`.
pub fn encode_records(
    records: &[OutRecord<'_>],
    timestamp_ms: i64,
    producer: ProducerFields,
) -> Vec<u8> {
    let out: Vec<RecordOut<'_>> = records
        .iter()
        .enumerate()
        .map(|(i, r)| RecordOut {
            offset_delta: i as i64,
            timestamp_delta: 0,
            key: r.key,
            value: r.value,
            headers: r.headers.to_vec(),
        })
        .collect();
    encode_v2(
        &V2Header {
            base_offset: 0,
            attributes: 0,
            last_offset_delta: records.len() as i32 - 1,
            base_timestamp: timestamp_ms,
            max_timestamp: timestamp_ms,
            producer,
        },
        &out,
    )
}

/// Encodes what log compaction keeps of a stored batch: `records` (a subset of the batch's, in
/// order) as one uncompressed v2 batch with the original batch's base offset, last offset
/// delta, timestamps, timestamp type and producer fields, so offsets, timestamps and the
/// batch's offset range are preserved (the gaps are the records removed).
pub fn encode_retained(h: &BatchHeader, records: &[Record]) -> Vec<u8> {
    let log_append_time = h.attributes & 0x08 != 0;
    let out: Vec<RecordOut<'_>> = records
        .iter()
        .map(|r| RecordOut {
            offset_delta: r.offset - h.base_offset,
            timestamp_delta: if log_append_time {
                0
            } else {
                r.timestamp - h.base_timestamp
            },
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.as_ref(), v.as_deref()))
                .collect(),
        })
        .collect();
    encode_v2(
        &V2Header {
            base_offset: h.base_offset,
            // The timestamp type, and the transactional and control bits, which readers
            // filter by (a compacted transaction's batches stay transactional).
            attributes: h.attributes & 0x38,
            last_offset_delta: h.last_offset_delta,
            base_timestamp: h.base_timestamp,
            max_timestamp: h.max_timestamp,
            producer: ProducerFields {
                producer_id: h.producer_id,
                producer_epoch: h.producer_epoch,
                base_sequence: h.base_sequence,
            },
        },
        &out,
    )
}

/// Attributes of a transaction marker: transactional (bit 4) and control (bit 5).
pub const MARKER_ATTRIBUTES: i16 = 0x30;

/// The control record types of a transaction marker (Kafka's `ControlRecordType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Abort,
    Commit,
}

impl Marker {
    fn code(self) -> i16 {
        match self {
            Marker::Abort => 0,
            Marker::Commit => 1,
        }
    }
}

/// Encodes the COMMIT or ABORT marker that ends producer `producer_id`'s transaction on a
/// partition, as Kafka writes it (KAFKA-PROTOCOL-NOTES.md §10): one uncompressed control
/// record, key `version 0, type`, value `version 0, coordinator epoch`, no sequence, base
/// offset 0 (the log assigns it).
pub fn encode_marker(
    marker: Marker,
    producer_id: i64,
    producer_epoch: i16,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> Vec<u8> {
    let mut key = [0u8; 4];
    key[2..].copy_from_slice(&marker.code().to_be_bytes());
    let mut value = [0u8; 6];
    value[2..].copy_from_slice(&coordinator_epoch.to_be_bytes());
    encode_v2(
        &V2Header {
            base_offset: 0,
            attributes: MARKER_ATTRIBUTES,
            last_offset_delta: 0,
            base_timestamp: timestamp_ms,
            max_timestamp: timestamp_ms,
            producer: ProducerFields {
                producer_id,
                producer_epoch,
                base_sequence: -1,
            },
        },
        &[RecordOut {
            offset_delta: 0,
            timestamp_delta: 0,
            key: Some(&key),
            value: Some(&value),
            headers: Vec::new(),
        }],
    )
}

/// The marker a control batch `buf` (header `h`) holds, if it is a transaction marker
/// (other control records, and damaged ones, give `None`).
pub fn marker_of(h: &BatchHeader, buf: &[u8]) -> Option<Marker> {
    if !h.is_control() || h.codec() != Some(Codec::None) || h.records_count < 1 {
        return None;
    }
    let records = decode_records(buf.get(HEADER_LEN..)?, 1).ok()?;
    let key = records.first()?.key?;
    if key.len() < 4 || key[..2] != [0, 0] {
        return None;
    }
    match i16::from_be_bytes([key[2], key[3]]) {
        0 => Some(Marker::Abort),
        1 => Some(Marker::Commit),
        _ => None,
    }
}

/// What a read_committed reader hands on of the batches a read_committed fetch returned
/// (Kafka's consumer logic): neither control batches nor the batches of an aborted
/// transaction (a producer named in the fetch's aborted transactions, from its first offset
/// to its ABORT marker).
#[derive(Debug, Default)]
pub struct CommittedFilter {
    /// Aborted transactions not reached yet, the earliest last.
    pending: Vec<(i64, i64)>,
    /// Producers whose aborted transaction the batches are in now.
    active: std::collections::HashSet<i64>,
}

impl CommittedFilter {
    /// `aborted`: (producer id, first offset) of the aborted transactions of the range.
    pub fn new(aborted: impl IntoIterator<Item = (i64, i64)>) -> CommittedFilter {
        let mut pending: Vec<(i64, i64)> = aborted.into_iter().collect();
        pending.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
        CommittedFilter {
            pending,
            active: Default::default(),
        }
    }

    /// Whether the batch `buf` (header `h`), next in offset order, is handed on.
    pub fn keep(&mut self, h: &BatchHeader, buf: &[u8]) -> bool {
        while let Some(&(producer_id, first)) = self.pending.last() {
            if first > h.last_offset() {
                break;
            }
            self.active.insert(producer_id);
            self.pending.pop();
        }
        if h.is_control() {
            if marker_of(h, buf) == Some(Marker::Abort) {
                self.active.remove(&h.producer_id);
            }
            return false;
        }
        !(h.is_transactional() && self.active.contains(&h.producer_id))
    }
}

/// One record to encode, relative to its batch.
struct RecordOut<'a> {
    offset_delta: i64,
    timestamp_delta: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Vec<HeaderRef<'a>>,
}

/// The batch header fields an encoded batch gets.
struct V2Header {
    base_offset: i64,
    attributes: i16,
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer: ProducerFields,
}

fn encode_v2(h: &V2Header, records: &[RecordOut<'_>]) -> Vec<u8> {
    fn zz(v: i64, out: &mut Vec<u8>) {
        let mut u = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            let b = (u & 0x7f) as u8;
            u >>= 7;
            if u == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
    }
    fn bytes(v: Option<&[u8]>, out: &mut Vec<u8>) {
        match v {
            Some(v) => {
                zz(v.len() as i64, out);
                out.extend_from_slice(v);
            }
            None => zz(-1, out),
        }
    }
    let mut recs = Vec::new();
    for r in records {
        let mut body = vec![0u8];
        zz(r.timestamp_delta, &mut body);
        zz(r.offset_delta, &mut body);
        bytes(r.key, &mut body);
        bytes(r.value, &mut body);
        zz(r.headers.len() as i64, &mut body);
        for (k, v) in &r.headers {
            bytes(Some(k), &mut body);
            bytes(*v, &mut body);
        }
        zz(body.len() as i64, &mut recs);
        recs.extend_from_slice(&body);
    }
    let n = records.len() as i32;
    let mut b = Vec::with_capacity(HEADER_LEN + recs.len());
    b.extend_from_slice(&h.base_offset.to_be_bytes());
    b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + recs.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&[0, 0, 0, 0]);
    b.extend_from_slice(&h.attributes.to_be_bytes());
    b.extend_from_slice(&h.last_offset_delta.to_be_bytes());
    b.extend_from_slice(&h.base_timestamp.to_be_bytes());
    b.extend_from_slice(&h.max_timestamp.to_be_bytes());
    b.extend_from_slice(&h.producer.producer_id.to_be_bytes());
    b.extend_from_slice(&h.producer.producer_epoch.to_be_bytes());
    b.extend_from_slice(&h.producer.base_sequence.to_be_bytes());
    b.extend_from_slice(&n.to_be_bytes());
    b.extend_from_slice(&recs);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_batch(records: &[KeyValue<'_>]) -> Vec<u8> {
        encode_uncompressed(records, 1000, ProducerFields::NONE)
    }

    #[test]
    fn valid_batch_passes_and_rewrite_keeps_crc() {
        let mut b = build_batch(&[(Some(b"k"), Some(b"v")), (None, None)]);
        let h = validate_produce_batch(&b, 1 << 20, Some(1 << 20)).unwrap();
        assert_eq!(h.records_count, 2);
        set_base_offset(&mut b, 1234);
        set_leader_epoch(&mut b, 7);
        let h2 = validate_produce_batch(&b, 1 << 20, Some(1 << 20)).unwrap();
        assert_eq!(h2.base_offset, 1234);
        assert_eq!(h2.last_offset(), 1235);
        let recs = decode_records(&b[HEADER_LEN..], 2).unwrap();
        assert_eq!(recs[0].key, Some(&b"k"[..]));
        assert_eq!(recs[1].value, None);
    }

    #[test]
    fn markers_are_kafkas_bytes() {
        // The COMMIT marker Kafka writes for producer 1000, epoch 0, coordinator epoch 0 at
        // 1700000000000 (base offset 5, leader epoch 0): 78 bytes, CRC a1ac499f.
        let mut b = encode_marker(Marker::Commit, 1000, 0, 0, 1_700_000_000_000);
        set_base_offset(&mut b, 5);
        set_leader_epoch(&mut b, 0);
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(
            hex,
            "0000000000000005000000420000000002a1ac499f0030000000000000018bcfe56800\
             0000018bcfe5680000000000000003e80000ffffffff0000000120000000080000000\
             10c00000000000000"
        );
        let h = parse_header(&b).unwrap();
        assert!(h.is_control() && h.is_transactional());
        assert_eq!(marker_of(&h, &b), Some(Marker::Commit));
        let a = encode_marker(Marker::Abort, 1000, 0, 0, 1_700_000_000_000);
        assert_eq!(&a[17..21], &[0x55, 0x92, 0x9f, 0xd7]);
        assert_eq!(
            marker_of(&parse_header(&a).unwrap(), &a),
            Some(Marker::Abort)
        );
        let plain = build_batch(&[(Some(b"k"), Some(b"v"))]);
        assert_eq!(marker_of(&parse_header(&plain).unwrap(), &plain), None);
    }

    #[test]
    fn crc_mismatch_is_corrupt_message() {
        let mut b = build_batch(&[(None, Some(b"v"))]);
        let last = b.len() - 1;
        b[last] ^= 0xff;
        let e = validate_produce_batch(&b, 1 << 20, Some(1 << 20)).unwrap_err();
        assert_eq!(e.kafka_error(), ResponseError::CorruptMessage);
    }

    #[test]
    fn huge_record_count_is_refused_without_allocating() {
        let mut b = build_batch(&[(None, Some(b"v"))]);
        b[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        b[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        let e = validate_produce_batch(&b, 1 << 20, Some(1 << 20)).unwrap_err();
        assert_eq!(e.kafka_error(), ResponseError::InvalidRecord);
        assert!(decode_records(&b[HEADER_LEN..], i32::MAX).is_err());
    }

    #[test]
    fn huge_header_count_is_refused() {
        // One record whose header count varint claims 2^30 headers.
        let body = [0u8, 0, 0, 1, 0, 0x80, 0x80, 0x80, 0x80, 0x08];
        let mut recs = vec![(body.len() as u8) << 1];
        recs.extend_from_slice(&body);
        assert!(decode_records(&recs, 1).is_err());
    }

    #[test]
    fn decode_batch_gives_absolute_offsets() {
        let mut b = build_batch(&[(Some(b"k"), Some(b"v1")), (None, None)]);
        set_base_offset(&mut b, 40);
        let (h, recs) = decode_batch(&b, 1 << 20).unwrap();
        assert_eq!(h.records_count, 2);
        assert_eq!(recs[0].offset, 40);
        assert_eq!(recs[1].offset, 41);
        assert_eq!(recs[0].timestamp, 1000);
        assert_eq!(recs[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(recs[1].value, None);
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(matches!(
            decode_batch(&b, 1 << 20),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn too_large_batch() {
        let b = build_batch(&[(None, Some(&[0u8; 200]))]);
        let e = validate_produce_batch(&b, 100, None).unwrap_err();
        assert_eq!(e.kafka_error(), ResponseError::MessageTooLarge);
    }
}
