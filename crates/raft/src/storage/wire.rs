//! A check of protobuf wire format run before bytes from the disk or a peer reach the `protobuf` 2.28
//! parser, which trusts length fields: parsing a plain slice it reserves a length-delimited
//! field (a bytes field, or any unknown field) by its length, up to 10 MB, before finding out
//! the input is shorter — so 20 damaged bytes can cost 10 MB, per record. The check walks the
//! fields and refuses a length that runs past its enclosing message, a malformed varint, and
//! groups (deprecated; nothing of ours uses them, and skipping them is where protobuf 2
//! recurses), descending into the fields the shape names as messages.

/// The fields of one message type: numbers `1..=last` (a higher one is refused as unknown),
/// of which `nested` are messages themselves (checked recursively); any other
/// length-delimited field is bytes (or packed scalars), only its length is checked.
pub struct Shape {
    pub last: u64,
    pub nested: &'static [(u64, &'static Shape)],
}

/// Any field number protobuf allows.
pub const ANY_FIELD: u64 = (u32::MAX >> 3) as u64;
/// A message without message fields (`Entry`, `HardState`, `ConfState`), any field number.
pub const FLAT: Shape = Shape {
    last: ANY_FIELD,
    nested: &[],
};
/// raft's `SnapshotMetadata`: field 1 is its `ConfState`.
pub const SNAPSHOT_METADATA: Shape = Shape {
    last: ANY_FIELD,
    nested: &[(1, &FLAT)],
};

/// Why bytes are not a well-formed message of their shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("unknown protobuf field {0}")]
    UnknownField(u64),
    #[error("{0}")]
    Malformed(&'static str),
}

impl WireError {
    /// The reason without the field number.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::UnknownField(_) => "unknown protobuf field",
            WireError::Malformed(why) => why,
        }
    }
}

const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_FIXED32: u64 = 5;

/// Checks that `data` is a well-formed message of `shape` as far as lengths go.
pub fn check(data: &[u8], shape: &Shape) -> Result<(), WireError> {
    check_with(data, shape, &mut |_| {})
}

/// [`check`], calling `seen` with the shape of every nested message it walks (to count them).
pub fn check_with(
    data: &[u8],
    shape: &Shape,
    seen: &mut dyn FnMut(&Shape),
) -> Result<(), WireError> {
    let mut pos = 0;
    while pos < data.len() {
        let tag = varint(data, &mut pos)?;
        let field = tag >> 3;
        if field == 0 || field > ANY_FIELD {
            return Err(WireError::Malformed("bad protobuf field number"));
        }
        if field > shape.last {
            return Err(WireError::UnknownField(field));
        }
        let nested = shape.nested.iter().find(|(f, _)| *f == field);
        match tag & 7 {
            WIRE_LEN => {
                let len = varint(data, &mut pos)?;
                let len = usize::try_from(len)
                    .map_err(|_| WireError::Malformed("protobuf length out of range"))?;
                let end = skip(data, pos, len)?;
                if let Some((_, inner)) = nested {
                    seen(inner);
                    check_with(&data[pos..end], inner, seen)?;
                }
                pos = end;
            }
            _ if nested.is_some() => {
                return Err(WireError::Malformed(
                    "a message field is not length-delimited",
                ))
            }
            WIRE_VARINT => {
                varint(data, &mut pos)?;
            }
            WIRE_FIXED64 => pos = skip(data, pos, 8)?,
            WIRE_FIXED32 => pos = skip(data, pos, 4)?,
            _ => return Err(WireError::Malformed("unsupported protobuf wire type")),
        }
    }
    Ok(())
}

fn skip(data: &[u8], pos: usize, len: usize) -> Result<usize, WireError> {
    match pos.checked_add(len) {
        Some(end) if end <= data.len() => Ok(end),
        _ => Err(WireError::Malformed(
            "protobuf field runs past the end of its message",
        )),
    }
}

fn varint(data: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *data
            .get(*pos)
            .ok_or(WireError::Malformed("protobuf varint cut short"))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(WireError::Malformed("protobuf varint too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::Message as _;
    use raft::eraftpb::{Entry, SnapshotMetadata};

    #[test]
    fn what_protobuf_writes_passes() {
        let e = Entry {
            index: 7,
            term: 3,
            data: vec![1u8; 300].into(),
            context: b"ctx".to_vec().into(),
            ..Default::default()
        };
        assert_eq!(check(&e.write_to_bytes().unwrap(), &FLAT), Ok(()));
        let mut m = SnapshotMetadata {
            index: 9,
            ..Default::default()
        };
        m.mut_conf_state().voters = vec![1, 2, 3];
        m.mut_conf_state().learners = vec![u64::MAX];
        let bytes = m.write_to_bytes().unwrap();
        assert_eq!(check(&bytes, &SNAPSHOT_METADATA), Ok(()));
    }

    #[test]
    fn lengths_past_the_end_groups_and_bad_varints_are_refused() {
        // Field 4 (data), length 131072, two bytes of it.
        assert!(check(&[0x22, 0x80, 0x80, 0x08, 1, 2], &FLAT).is_err());
        // An unknown field 14, length-delimited, too long.
        assert!(check(&[0x72, 0x80, 0x80, 0x08], &FLAT).is_err());
        // A group.
        assert!(check(&[0x0b, 0x0c], &FLAT).is_err());
        // A varint that never ends.
        assert!(check(&[0x08, 0xff, 0xff], &FLAT).is_err());
        let mut long = vec![0x08];
        long.extend([0xff; 10]);
        long.push(0x01);
        assert!(check(&long, &FLAT).is_err());
        // Field number 0.
        assert!(check(&[0x00, 0x01], &FLAT).is_err());
        // Inside a nested ConfState: field 1 (voters, packed) runs past the ConfState.
        assert!(check(&[0x0a, 0x02, 0x0a, 0x05], &SNAPSHOT_METADATA).is_err());
        // The same bytes where the shape says "bytes" are fine.
        assert_eq!(check(&[0x0a, 0x02, 0x0a, 0x05], &FLAT), Ok(()));
    }
}
