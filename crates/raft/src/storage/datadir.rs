//! The data directory's memory of its own log: a small durable record, `<data_dir>/WAL_HEAD`,
//! naming the newest WAL segment ever created, so that a log that went backwards is noticed.
//!
//! # Why
//! The WAL alone cannot tell "this is the whole log" from "the newest segment, or the whole
//! `wal/` directory, was deleted": what is left replays cleanly, and the node would start with
//! acknowledged entries missing and its term and vote rolled back (a rolled-back vote can vote
//! twice in one term). The head record lives outside `wal/`, and is updated whenever a new
//! segment is created, so on open:
//! - `wal/` missing while the record exists → refuse (the log was deleted);
//! - the newest segment found is older than the record → refuse, naming the missing file;
//! - a gap between segments → refuse (segments are only ever deleted from the front, oldest
//!   first, by compaction);
//! - a segment newer than the record → fine: the process stopped between creating a segment
//!   and recording it (the segment is created first, the record second, and nothing is
//!   written into a segment before its record is durable), so the record is brought up to date.
//!
//! A data dir from a version without the record (or a fresh one) opens as it is, and the
//! record is created from what is found. What it cannot see: the record and the newest segment
//! deleted together, or the whole data dir deleted (the peers' memory of this member's
//! identity covers that), or the tail of the newest segment cut off or zeroed to its end (see
//! the WAL's recovery rules).
//!
//! # Format
//! Text, written to a temp file, fsynced, renamed over the old one, directory fsynced:
//! ```text
//! coordinate wal head v1
//! newest_segment <16 hex digits>
//! crc32c <8 hex digits of the CRC of the lines above>
//! ```

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::storage::wal::sync_dir;

/// The record's file name, in the data directory (the WAL directory's parent).
pub const WAL_HEAD: &str = "WAL_HEAD";
const HEADER_LINE: &str = "coordinate wal head v1";
/// A head record is a few dozen bytes; anything larger is not one.
const MAX_HEAD_BYTES: u64 = 4096;

/// Where the head record of the log in `wal_dir` lives: beside it, so deleting `wal/` leaves it.
pub fn head_path(wal_dir: &Path) -> PathBuf {
    match wal_dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.join(WAL_HEAD),
        _ => PathBuf::from(WAL_HEAD),
    }
}

/// Reads the newest segment number the record holds; `None` if there is no record.
pub fn read_head(path: &Path) -> Result<Option<u64>> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let corrupt = |reason: &str| Error::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason: reason.to_string(),
    };
    if meta.len() > MAX_HEAD_BYTES {
        return Err(corrupt("not a WAL head record (too large)"));
    }
    let text = fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let text = String::from_utf8(text).map_err(|_| corrupt("not a WAL head record"))?;
    parse_head(&text).map(Some).map_err(corrupt)
}

/// Parses the record's text (see the module doc).
fn parse_head(text: &str) -> std::result::Result<u64, &'static str> {
    let mut lines = text.lines();
    if lines.next() != Some(HEADER_LINE) {
        return Err("not a WAL head record");
    }
    let seq_line = lines.next().ok_or("WAL head record cut short")?;
    let crc_line = lines.next().ok_or("WAL head record cut short")?;
    if lines.next().is_some() {
        return Err("trailing lines in the WAL head record");
    }
    let seq = seq_line
        .strip_prefix("newest_segment ")
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or("bad newest_segment line in the WAL head record")?;
    let crc = crc_line
        .strip_prefix("crc32c ")
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .ok_or("bad crc32c line in the WAL head record")?;
    if crc != crc32c::crc32c(format!("{HEADER_LINE}\n{seq_line}\n").as_bytes()) {
        return Err("WAL head record checksum mismatch");
    }
    Ok(seq)
}

fn format_head(seq: u64) -> String {
    let body = format!("{HEADER_LINE}\nnewest_segment {seq:016x}\n");
    let crc = crc32c::crc32c(body.as_bytes());
    format!("{body}crc32c {crc:08x}\n")
}

/// Durably records `seq` as the newest segment (temp file, fsync, rename, fsync directory).
pub fn write_head(path: &Path, seq: u64) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(format_head(seq).as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Checks the segment numbers found on disk (sorted, ascending) against the head record:
/// `Err` says what is missing. The rule is in the module doc.
pub fn check_segments(found: &[u64], head: Option<u64>) -> std::result::Result<(), String> {
    if let Some(pair) = found.windows(2).find(|w| w[1] != w[0] + 1) {
        return Err(format!(
            "segment {:016x}.wal is missing (the log jumps from {:016x}.wal to {:016x}.wal); \
             acknowledged entries would be lost",
            pair[0] + 1,
            pair[0],
            pair[1]
        ));
    }
    let Some(head) = head else {
        return Ok(());
    };
    match found.last() {
        None => Err(format!(
            "the newest WAL segment {head:016x}.wal is missing (the WAL holds no segment at \
             all): the log was deleted; acknowledged entries, the term and the vote would be \
             lost"
        )),
        Some(&newest) if newest < head => Err(format!(
            "the newest WAL segment {head:016x}.wal is missing (the newest found is \
             {newest:016x}.wal); acknowledged entries, the term and the vote would be lost"
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(WAL_HEAD);
        assert_eq!(read_head(&path).unwrap(), None);
        write_head(&path, 0x2a).unwrap();
        assert_eq!(read_head(&path).unwrap(), Some(0x2a));
        write_head(&path, 0x2b).unwrap();
        assert_eq!(read_head(&path).unwrap(), Some(0x2b));
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replace("002b", "002c")).unwrap();
        let err = read_head(&path).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        assert!(err.contains(WAL_HEAD), "{err}");
        fs::write(&path, "garbage").unwrap();
        assert!(read_head(&path).is_err());
    }

    #[test]
    fn head_path_is_beside_the_wal_dir() {
        assert_eq!(
            head_path(Path::new("/d/wal")),
            PathBuf::from("/d").join(WAL_HEAD)
        );
        assert_eq!(head_path(Path::new("wal")), PathBuf::from(WAL_HEAD));
    }

    #[test]
    fn missing_and_skipped_segments_are_refused() {
        // Fresh, or a data dir from before the record existed.
        assert_eq!(check_segments(&[], None), Ok(()));
        assert_eq!(check_segments(&[3, 4, 5], None), Ok(()));
        assert_eq!(check_segments(&[3, 4, 5], Some(5)), Ok(()));
        // Stopped between creating segment 6 and recording it.
        assert_eq!(check_segments(&[5, 6], Some(5)), Ok(()));
        // The newest segment deleted.
        let e = check_segments(&[3, 4], Some(5)).unwrap_err();
        assert!(e.contains("0000000000000005.wal is missing"), "{e}");
        // Every segment deleted.
        let e = check_segments(&[], Some(5)).unwrap_err();
        assert!(e.contains("no segment"), "{e}");
        // A segment in the middle deleted, with or without a record.
        let e = check_segments(&[3, 5], None).unwrap_err();
        assert!(e.contains("0000000000000004.wal is missing"), "{e}");
        assert!(check_segments(&[3, 5, 6], Some(6)).is_err());
    }

    #[test]
    fn parse_refuses_what_format_does_not_make() {
        assert_eq!(parse_head(&format_head(7)), Ok(7));
        assert!(parse_head("").is_err());
        assert!(parse_head(&format!("{}extra\n", format_head(7))).is_err());
        assert!(parse_head(&format_head(7).replace("newest_segment", "newest")).is_err());
    }
}
