//! A bounded walk over a request body, run before the kafka-protocol decoder sees it.
//!
//! kafka-protocol 0.18 calls `Vec::with_capacity(n)` with element counts read straight off the
//! wire, so a 7-byte Metadata body claiming 2^31 topics aborts the process with a failed
//! 154 GB allocation (KAFKA-PROTOCOL-NOTES.md §9). This module walks the body with a schema of
//! each accepted request (field types and the versions that carry them, taken from Kafka's
//! message specs) and proves that every array, string and byte count fits in the bytes that are
//! actually there. Only a body that passes is handed to the crate, so every allocation the crate
//! makes is bounded by the frame size times a small per-element factor.
//!
//! The walk allocates nothing and every loop is bounded by the remaining bytes.

/// One field of a request struct, present for versions `since..=until`.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    ty: Ty,
    since: i16,
    until: i16,
}

/// Wire types. Strings, bytes and arrays may be null (-1 / compact 0) everywhere: the crate
/// rejects a null where the spec forbids one, cleanly, so the walk need not.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    I8,
    I16,
    I32,
    I64,
    Uuid,
    Str,
    Bytes,
    /// Array of fixed-size elements of this many bytes (int8/16/32/64, uuid).
    ArrayFixed(u8),
    /// Array of strings (no per-element tagged fields).
    ArrayStr,
    /// Array of structs.
    Array(&'static [Field]),
}

/// The schema of one request body.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    fields: &'static [Field],
    /// First version using compact encodings and tagged fields.
    flexible_since: i16,
}

/// A field of type `ty` present in versions `since..=until`.
pub const fn f(ty: Ty, since: i16, until: i16) -> Field {
    Field { ty, since, until }
}
/// `until` of a field still present in the newest version.
pub const ALL: i16 = i16::MAX;
/// `flexible_since` of a request that never uses flexible encodings.
pub const NEVER: i16 = i16::MAX;

impl Schema {
    /// The schema of a request body whose top-level fields are `fields` and whose versions from
    /// `flexible_since` on use compact encodings and tagged fields.
    pub const fn new(fields: &'static [Field], flexible_since: i16) -> Schema {
        Schema {
            fields,
            flexible_since,
        }
    }
}

/// Why a body was refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrecheckError {
    #[error("request body ends early: {what} needs {need} bytes at offset {at}, {have} left")]
    Truncated {
        what: &'static str,
        at: usize,
        need: u64,
        have: usize,
    },
    #[error("invalid length {len} for {what} at offset {at}")]
    BadLength {
        what: &'static str,
        at: usize,
        len: i64,
    },
    #[error("malformed varint at offset {at}")]
    BadVarint { at: usize },
}

struct Walker<'a> {
    buf: &'a [u8],
    pos: usize,
    version: i16,
    flexible: bool,
}

impl<'a> Walker<'a> {
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn skip(&mut self, n: u64, what: &'static str) -> Result<(), PrecheckError> {
        if n > self.left() as u64 {
            return Err(PrecheckError::Truncated {
                what,
                at: self.pos,
                need: n,
                have: self.left(),
            });
        }
        self.pos += n as usize;
        Ok(())
    }

    fn take<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], PrecheckError> {
        let at = self.pos;
        self.skip(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[at..at + N]);
        Ok(out)
    }

    fn uvarint(&mut self) -> Result<u64, PrecheckError> {
        let at = self.pos;
        let mut value: u64 = 0;
        for i in 0..5 {
            let [b] = self.take::<1>("varint")?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(PrecheckError::BadVarint { at })
    }

    /// Reads a length or count: i16 (strings) or i32 (bytes, arrays) in classic versions, an
    /// unsigned varint holding n+1 in flexible ones. Returns None for null.
    fn length(
        &mut self,
        classic_i16: bool,
        what: &'static str,
    ) -> Result<Option<u64>, PrecheckError> {
        let at = self.pos;
        let len: i64 = if self.flexible {
            self.uvarint()? as i64 - 1
        } else if classic_i16 {
            i64::from(i16::from_be_bytes(self.take::<2>(what)?))
        } else {
            i64::from(i32::from_be_bytes(self.take::<4>(what)?))
        };
        match len {
            -1 => Ok(None),
            n if n < 0 => Err(PrecheckError::BadLength { what, at, len: n }),
            n => Ok(Some(n as u64)),
        }
    }

    fn tagged_fields(&mut self) -> Result<(), PrecheckError> {
        let count = self.uvarint()?;
        // Each tagged field takes at least two bytes (tag and size).
        if count.saturating_mul(2) > self.left() as u64 {
            return Err(PrecheckError::BadLength {
                what: "tagged field count",
                at: self.pos,
                len: count as i64,
            });
        }
        for _ in 0..count {
            let _tag = self.uvarint()?;
            let size = self.uvarint()?;
            self.skip(size, "tagged field")?;
        }
        Ok(())
    }

    fn walk_struct(&mut self, fields: &'static [Field]) -> Result<(), PrecheckError> {
        for field in fields {
            if self.version < field.since || self.version > field.until {
                continue;
            }
            self.walk_ty(field.ty)?;
        }
        if self.flexible {
            self.tagged_fields()?;
        }
        Ok(())
    }

    /// An array whose elements `elem` walks. Every element takes at least one byte: a count
    /// the frame cannot hold is refused at once, then walking the elements bounds it exactly.
    fn walk_array(
        &mut self,
        mut elem: impl FnMut(&mut Self) -> Result<(), PrecheckError>,
    ) -> Result<(), PrecheckError> {
        let at = self.pos;
        let Some(n) = self.length(false, "array")? else {
            return Ok(());
        };
        if n > self.left() as u64 {
            return Err(PrecheckError::BadLength {
                what: "array count",
                at,
                len: n as i64,
            });
        }
        for _ in 0..n {
            elem(self)?;
        }
        Ok(())
    }

    fn walk_ty(&mut self, ty: Ty) -> Result<(), PrecheckError> {
        match ty {
            Ty::I8 => self.skip(1, "int8"),
            Ty::I16 => self.skip(2, "int16"),
            Ty::I32 => self.skip(4, "int32"),
            Ty::I64 => self.skip(8, "int64"),
            Ty::Uuid => self.skip(16, "uuid"),
            Ty::Str => match self.length(true, "string")? {
                Some(n) => self.skip(n, "string"),
                None => Ok(()),
            },
            Ty::Bytes => match self.length(false, "bytes")? {
                Some(n) => self.skip(n, "bytes"),
                None => Ok(()),
            },
            Ty::ArrayFixed(width) => match self.length(false, "array")? {
                Some(n) => self.skip(n.saturating_mul(u64::from(width)), "fixed-size array"),
                None => Ok(()),
            },
            Ty::ArrayStr => self.walk_array(|w| w.walk_ty(Ty::Str)),
            Ty::Array(fields) => self.walk_array(|w| w.walk_struct(fields)),
        }
    }
}

impl Schema {
    /// Walks `body` as this request at `version`. On success every count in the body is
    /// backed by bytes that are present.
    pub fn check(&self, body: &[u8], version: i16) -> Result<(), PrecheckError> {
        let mut w = Walker {
            buf: body,
            pos: 0,
            version,
            flexible: version >= self.flexible_since,
        };
        w.walk_struct(self.fields)
    }
}

/// Walks a request header after its fixed 8-byte prefix: client_id (always an int16-length
/// string) and, for header v2, tagged fields. Returns the offset where the body starts.
pub fn check_header_tail(buf: &[u8], flexible: bool) -> Result<usize, PrecheckError> {
    let mut w = Walker {
        buf,
        pos: 0,
        version: 0,
        flexible: false,
    };
    if let Some(n) = w.length(true, "client_id")? {
        w.skip(n, "client_id")?;
    }
    if flexible {
        w.tagged_fields()?;
    }
    Ok(w.pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    const METADATA: Schema = Schema::new(
        &[
            f(
                Ty::Array(&[f(Ty::Uuid, 10, ALL), f(Ty::Str, 0, ALL)]),
                0,
                ALL,
            ),
            f(Ty::I8, 4, ALL),
            f(Ty::I8, 8, 10),
            f(Ty::I8, 8, ALL),
        ],
        9,
    );
    const CREATABLE_TOPIC: &[Field] = &[
        f(Ty::Str, 0, ALL),
        f(Ty::I32, 0, ALL),
        f(Ty::I16, 0, ALL),
        f(
            Ty::Array(&[f(Ty::I32, 0, ALL), f(Ty::ArrayFixed(4), 0, ALL)]),
            0,
            ALL,
        ),
        f(Ty::Array(&[f(Ty::Str, 0, ALL), f(Ty::Str, 0, ALL)]), 0, ALL),
    ];
    const CREATE_TOPICS: Schema = Schema::new(
        &[
            f(Ty::Array(CREATABLE_TOPIC), 0, ALL),
            f(Ty::I32, 0, ALL),
            f(Ty::I8, 1, ALL),
        ],
        5,
    );

    #[test]
    fn metadata_v1_huge_topic_count_is_refused() {
        // KAFKA-PROTOCOL-NOTES.md §9: this body makes the crate allocate 154 GB.
        let body = [0x7f, 0xff, 0xff, 0xff, 0x00, 0x01, 0x61];
        let err = METADATA.check(&body, 1).unwrap_err();
        assert!(
            matches!(
                err,
                PrecheckError::BadLength {
                    what: "array count",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn compact_array_huge_count_is_refused() {
        // Metadata v9: compact array count 0x0fffffff (+1) as a varint, then nothing.
        let body = [0xff, 0xff, 0xff, 0x7f, 0x00];
        assert!(METADATA.check(&body, 9).is_err());
    }

    #[test]
    fn valid_metadata_passes() {
        // v1: one topic "a"
        let body = [0, 0, 0, 1, 0, 1, b'a'];
        METADATA.check(&body, 1).unwrap();
        // v1: null topic list (all topics)
        METADATA.check(&[0xff, 0xff, 0xff, 0xff], 1).unwrap();
    }

    #[test]
    fn overlong_varint_is_refused() {
        let body = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            METADATA.check(&body, 9),
            Err(PrecheckError::BadVarint { .. })
        ));
    }

    #[test]
    fn int32_array_count_must_fit() {
        // CreateTopics v2, one topic "t", 1 partition, rf 1, one assignment claiming 2^30 brokers.
        let mut body = vec![
            0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0,
        ];
        body.extend_from_slice(&[0x40, 0, 0, 0]);
        assert!(CREATE_TOPICS.check(&body, 2).is_err());
    }
}
