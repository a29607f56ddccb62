//! Bounded decompression of record batch payloads, in every framing real clients write: gzip,
//! raw snappy (librdkafka) and xerial-framed snappy (Java, kafka-python), lz4 frames, zstd.
//!
//! Every decoder stops at `limit` output bytes: a batch that claims or inflates to more is an
//! error, never an allocation of the claimed size (KAFKA-PROTOCOL-NOTES.md §7, §9).

use std::io::Read;

use crate::batch::Codec;

/// Why a payload could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    #[error("{codec:?} payload inflates past the limit of {limit} bytes")]
    TooLarge { codec: Codec, limit: usize },
    #[error("{codec:?} payload is corrupt: {message}")]
    Corrupt { codec: Codec, message: String },
}

/// The xerial snappy stream header: magic, then version and compatible version (int32 each).
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

fn corrupt(codec: Codec, e: impl std::fmt::Display) -> DecompressError {
    DecompressError::Corrupt {
        codec,
        message: e.to_string(),
    }
}

/// Reads at most `limit` bytes from `r`; more is an error.
fn read_bounded(codec: Codec, r: impl Read, limit: usize) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    r.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(codec, e))?;
    if out.len() > limit {
        return Err(DecompressError::TooLarge { codec, limit });
    }
    Ok(out)
}

fn snappy_raw_into(block: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), DecompressError> {
    let codec = Codec::Snappy;
    let len = snap::raw::decompress_len(block).map_err(|e| corrupt(codec, e))?;
    if len > limit.saturating_sub(out.len()) {
        return Err(DecompressError::TooLarge { codec, limit });
    }
    let start = out.len();
    out.resize(start + len, 0);
    let n = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| corrupt(codec, e))?;
    out.truncate(start + n);
    Ok(())
}

fn snappy(buf: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let codec = Codec::Snappy;
    let mut out = Vec::new();
    if let Some(mut rest) = buf.strip_prefix(XERIAL_MAGIC) {
        if rest.len() < 8 {
            return Err(corrupt(codec, "xerial header truncated"));
        }
        rest = &rest[8..];
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(corrupt(codec, "xerial block length truncated"));
            }
            let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            rest = &rest[4..];
            if n > rest.len() {
                return Err(corrupt(
                    codec,
                    format!("xerial block of {n} bytes, {} left", rest.len()),
                ));
            }
            snappy_raw_into(&rest[..n], limit, &mut out)?;
            rest = &rest[n..];
        }
        Ok(out)
    } else {
        snappy_raw_into(buf, limit, &mut out)?;
        Ok(out)
    }
}

/// Decompresses a batch payload (the bytes after the 61-byte header) of codec `codec`.
pub fn decompress(codec: Codec, buf: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    match codec {
        Codec::None => {
            if buf.len() > limit {
                return Err(DecompressError::TooLarge { codec, limit });
            }
            Ok(buf.to_vec())
        }
        Codec::Gzip => read_bounded(codec, flate2::read::GzDecoder::new(buf), limit),
        Codec::Snappy => snappy(buf, limit),
        Codec::Lz4 => read_bounded(codec, lz4_flex::frame::FrameDecoder::new(buf), limit),
        Codec::Zstd => {
            let d = ruzstd::decoding::StreamingDecoder::new(buf).map_err(|e| corrupt(codec, e))?;
            read_bounded(codec, d, limit)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn every_codec_round_trips_and_is_bounded() {
        let data = vec![7u8; 10_000];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let raw_snappy = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        let mut xerial = XERIAL_MAGIC.to_vec();
        xerial.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        xerial.extend_from_slice(&(raw_snappy.len() as u32).to_be_bytes());
        xerial.extend_from_slice(&raw_snappy);
        let mut lz = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
        lz.write_all(&data).unwrap();
        let (lz, r) = lz.finish();
        r.unwrap();
        let zs = zstd::encode_all(&data[..], 1).unwrap();
        for (codec, buf) in [
            (Codec::Gzip, &gz),
            (Codec::Snappy, &raw_snappy),
            (Codec::Snappy, &xerial),
            (Codec::Lz4, &lz),
            (Codec::Zstd, &zs),
        ] {
            assert_eq!(decompress(codec, buf, 10_000).unwrap(), data, "{codec:?}");
            assert_eq!(
                decompress(codec, buf, 9_999).unwrap_err(),
                DecompressError::TooLarge {
                    codec,
                    limit: 9_999
                },
                "{codec:?}"
            );
        }
    }

    #[test]
    fn snappy_length_claim_is_not_allocated() {
        // A raw snappy block whose varint claims 4 GiB - 1 of output.
        let block = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        let e = decompress(Codec::Snappy, &block, 1 << 20).unwrap_err();
        assert!(matches!(e, DecompressError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn garbage_is_corrupt() {
        for codec in [Codec::Gzip, Codec::Lz4, Codec::Zstd] {
            assert!(matches!(
                decompress(codec, b"not compressed at all", 1 << 20),
                Err(DecompressError::Corrupt { .. })
            ));
        }
    }
}
