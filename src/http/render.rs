//! Record bytes in JSON: keys, values and header values shown as JSON, UTF-8 text or base64,
//! with the encoding used. The HTTP API's answers and the client commands' JSON output
//! (`kafkabox consume --format json`, `kafkabox dump`) both use them.

/// Bytes shown in JSON: the JSON value itself when they are JSON, else a UTF-8 string, else
/// base64; with the encoding used (`json`, `utf8`, `base64`, or null for null).
pub fn shown(bytes: Option<&[u8]>) -> (serde_json::Value, serde_json::Value) {
    use base64::Engine as _;
    match bytes {
        None => (serde_json::Value::Null, serde_json::Value::Null),
        Some(b) => {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(b) {
                (v, "json".into())
            } else if let Ok(s) = std::str::from_utf8(b) {
                (s.into(), "utf8".into())
            } else {
                (
                    base64::engine::general_purpose::STANDARD.encode(b).into(),
                    "base64".into(),
                )
            }
        }
    }
}

/// A record key in JSON: a JSON object or array as itself, else as [`shown`] but never as a
/// JSON number or string (a key `42` is the text "42").
pub fn shown_key(bytes: Option<&[u8]>) -> (serde_json::Value, serde_json::Value) {
    match bytes {
        Some(b) if !matches!(b.first(), Some(b'{' | b'[')) => match std::str::from_utf8(b) {
            Ok(s) => (s.into(), "utf8".into()),
            Err(_) => shown(Some(b)),
        },
        other => shown(other),
    }
}

/// Bytes as exact text: a UTF-8 string when they are UTF-8, else base64; with the encoding
/// used (`utf8`, `base64`, or null for null).
pub fn utf8_or_base64(bytes: Option<&[u8]>) -> (serde_json::Value, serde_json::Value) {
    use base64::Engine as _;
    match bytes {
        None => (serde_json::Value::Null, serde_json::Value::Null),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => (s.into(), "utf8".into()),
            Err(_) => (
                base64::engine::general_purpose::STANDARD.encode(b).into(),
                "base64".into(),
            ),
        },
    }
}

/// A header value as text: UTF-8 when it is, else base64 (`value_encoding` says which).
pub fn header_json(k: &[u8], v: Option<&[u8]>) -> serde_json::Value {
    let (value, enc) = utf8_or_base64(v);
    serde_json::json!({
        "key": String::from_utf8_lossy(k),
        "value": value,
        "value_encoding": enc,
    })
}
