//! Values in the proxy's messages: libSQL's `Value` enum as bincode 1
//! (its default configuration) writes it, which is what the clients send
//! and read. Little-endian throughout:
//!
//! ```text
//!   Null        00 00 00 00
//!   Integer     01 00 00 00  i64
//!   Real        02 00 00 00  f64 bits
//!   Text        03 00 00 00  length u64  UTF-8 bytes
//!   Blob        04 00 00 00  length u64  bytes
//! ```
//!
//! Forty lines against a dependency on bincode and serde for one enum.

use storage::Value;

/// A value's bytes.
pub fn encode(value: &Value) -> Vec<u8> {
    let tagged = |tag: u32, body: &[u8], with_len: bool| {
        let mut out = Vec::with_capacity(12 + body.len());
        out.extend_from_slice(&tag.to_le_bytes());
        if with_len {
            out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        }
        out.extend_from_slice(body);
        out
    };
    match value {
        Value::Null => tagged(0, &[], false),
        Value::Integer(i) => tagged(1, &i.to_le_bytes(), false),
        Value::Real(f) => tagged(2, &f.to_bits().to_le_bytes(), false),
        Value::Text(s) => tagged(3, s.as_bytes(), true),
        Value::Blob(b) => tagged(4, b, true),
    }
}

/// Why a value's bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("a value of {0} bytes is too short for its kind")]
    Short(usize),
    #[error("unknown value kind {0} (0-4: null, integer, real, text, blob)")]
    Kind(u32),
    #[error("a text value is not UTF-8")]
    NotUtf8,
}

/// Read a value's bytes (trailing bytes are ignored, as bincode does).
pub fn decode(data: &[u8]) -> Result<Value, ValueError> {
    let short = || ValueError::Short(data.len());
    let tag = u32::from_le_bytes(
        data.get(0..4)
            .ok_or_else(short)?
            .try_into()
            .map_err(|_| short())?,
    );
    let eight = |at: usize| -> Result<[u8; 8], ValueError> {
        data.get(at..at + 8)
            .ok_or_else(short)?
            .try_into()
            .map_err(|_| short())
    };
    let bytes = || -> Result<&[u8], ValueError> {
        let len = usize::try_from(u64::from_le_bytes(eight(4)?)).map_err(|_| short())?;
        data.get(12..12usize.checked_add(len).ok_or_else(short)?)
            .ok_or_else(short)
    };
    Ok(match tag {
        0 => Value::Null,
        1 => Value::Integer(i64::from_le_bytes(eight(4)?)),
        2 => Value::Real(f64::from_bits(u64::from_le_bytes(eight(4)?))),
        3 => Value::Text(
            std::str::from_utf8(bytes()?)
                .map_err(|_| ValueError::NotUtf8)?
                .to_owned(),
        ),
        4 => Value::Blob(bytes()?.to_vec()),
        other => return Err(ValueError::Kind(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_bincodes_exact_bytes_and_reads_back() {
        let cases: Vec<(Value, Vec<u8>)> = vec![
            (Value::Null, vec![0, 0, 0, 0]),
            (
                Value::Integer(-2),
                vec![1, 0, 0, 0, 254, 255, 255, 255, 255, 255, 255, 255],
            ),
            (
                Value::Real(1.5),
                [vec![2, 0, 0, 0], 1.5f64.to_bits().to_le_bytes().to_vec()].concat(),
            ),
            (
                Value::Text("hé".into()),
                vec![3, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, b'h', 0xc3, 0xa9],
            ),
            (
                Value::Blob(vec![9]),
                vec![4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9],
            ),
        ];
        for (value, bytes) in cases {
            assert_eq!(encode(&value), bytes, "{value:?}");
            assert_eq!(decode(&bytes), Ok(value));
        }
    }

    #[test]
    fn bad_bytes_are_refused_not_panicked_on() {
        assert_eq!(decode(&[]), Err(ValueError::Short(0)));
        assert_eq!(decode(&[1, 0, 0, 0, 1]), Err(ValueError::Short(5)));
        assert_eq!(decode(&[9, 0, 0, 0]), Err(ValueError::Kind(9)));
        let huge = [vec![3, 0, 0, 0], u64::MAX.to_le_bytes().to_vec()].concat();
        assert_eq!(decode(&huge), Err(ValueError::Short(12)));
        assert_eq!(
            decode(&[3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xff]),
            Err(ValueError::NotUtf8)
        );
    }
}
