//! The replicated state machine: an ordered map from key to value, plus the cluster's member
//! list (id → peer URL), changed only by applying committed raft entries in log order.
//!
//! Everything here is deterministic: every node applies the same entries and ends in the same
//! state. A command that fails to decode is skipped identically everywhere (the proposer gets
//! an error), so it can never make replicas diverge.
//!
//! Commands and snapshots use a small explicit binary encoding (little-endian lengths), not a
//! general serializer: the format is part of the on-disk and on-wire contract.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};

const SNAPSHOT_MAGIC: &[u8; 4] = b"KVS2";

/// A state-machine command carried in a raft entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Put { key: String, value: Bytes },
}

const OP_PUT: u8 = 1;

impl Command {
    /// Encodes the command for a raft entry.
    pub fn encode(&self) -> Bytes {
        match self {
            Command::Put { key, value } => {
                let mut b = BytesMut::with_capacity(1 + 4 + key.len() + value.len());
                b.put_u8(OP_PUT);
                b.put_u32_le(key.len() as u32);
                b.put_slice(key.as_bytes());
                b.put_slice(value);
                b.freeze()
            }
        }
    }

    /// Decodes a command from a committed entry, sharing the entry's buffer for the value.
    pub fn decode(mut data: Bytes) -> Result<Command> {
        let bad = |why: &str| Error::Invalid(format!("malformed command: {why}"));
        if data.remaining() < 5 {
            return Err(bad("too short"));
        }
        match data.get_u8() {
            OP_PUT => {
                let klen = data.get_u32_le() as usize;
                if data.remaining() < klen {
                    return Err(bad("key length"));
                }
                let key = String::from_utf8(data.split_to(klen).to_vec())
                    .map_err(|_| bad("key is not UTF-8"))?;
                Ok(Command::Put { key, value: data })
            }
            op => Err(bad(&format!("unknown op {op}"))),
        }
    }
}

/// The key-value map and the member list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Kv {
    data: BTreeMap<String, Bytes>,
    /// Current members: id → peer URL (voters and learners alike; raft's ConfState says which).
    members: BTreeMap<u64, String>,
    /// Ids removed from the cluster and not added back: their messages are refused.
    removed: BTreeSet<u64>,
}

impl Kv {
    /// A fresh state holding only the founding members.
    pub fn with_members(members: BTreeMap<u64, String>) -> Kv {
        Kv {
            members,
            ..Kv::default()
        }
    }

    /// Records a member added (or its URL changed). Promotion keeps the known URL.
    pub fn add_member(&mut self, id: u64, url: Option<String>) {
        self.removed.remove(&id);
        match url {
            Some(url) => {
                self.members.insert(id, url);
            }
            None => {
                self.members.entry(id).or_default();
            }
        }
    }

    /// Records a member removed.
    pub fn remove_member(&mut self, id: u64) {
        self.members.remove(&id);
        self.removed.insert(id);
    }

    /// True if this id was removed and not added back.
    pub fn is_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }

    /// Applies one committed command.
    pub fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Put { key, value } => {
                self.data.insert(key, value);
            }
        }
    }

    /// Reads one key.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.data.get(key).cloned()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when no key is stored.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The member list (id → peer URL).
    pub fn members(&self) -> &BTreeMap<u64, String> {
        &self.members
    }

    /// Serializes the whole state for a snapshot.
    pub fn snapshot(&self) -> Bytes {
        let size: usize = self
            .data
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum::<usize>()
            + self.members.values().map(|u| 12 + u.len()).sum::<usize>()
            + self.removed.len() * 8
            + 20;
        let mut b = BytesMut::with_capacity(size);
        b.put_slice(SNAPSHOT_MAGIC);
        b.put_u32_le(self.members.len() as u32);
        for (id, url) in &self.members {
            b.put_u64_le(*id);
            b.put_u32_le(url.len() as u32);
            b.put_slice(url.as_bytes());
        }
        b.put_u32_le(self.removed.len() as u32);
        for id in &self.removed {
            b.put_u64_le(*id);
        }
        b.put_u64_le(self.data.len() as u64);
        for (k, v) in &self.data {
            b.put_u32_le(k.len() as u32);
            b.put_slice(k.as_bytes());
            b.put_u32_le(v.len() as u32);
            b.put_slice(v);
        }
        b.freeze()
    }

    /// Rebuilds the state from snapshot data; values share the snapshot's buffer.
    pub fn restore(mut data: Bytes) -> Result<Kv> {
        let bad = |why: &str| Error::Invalid(format!("malformed snapshot data: {why}"));
        if data.remaining() < 8 || &data[..4] != SNAPSHOT_MAGIC {
            return Err(bad("missing header"));
        }
        data.advance(4);
        let mut kv = Kv::default();
        let members = data.get_u32_le();
        for _ in 0..members {
            if data.remaining() < 12 {
                return Err(bad("member cut short"));
            }
            let id = data.get_u64_le();
            let url = take_string(&mut data).ok_or_else(|| bad("member URL"))?;
            kv.members.insert(id, url);
        }
        if data.remaining() < 4 {
            return Err(bad("removed count cut short"));
        }
        let removed = data.get_u32_le();
        for _ in 0..removed {
            if data.remaining() < 8 {
                return Err(bad("removed id cut short"));
            }
            kv.removed.insert(data.get_u64_le());
        }
        if data.remaining() < 8 {
            return Err(bad("key count cut short"));
        }
        let count = data.get_u64_le();
        for _ in 0..count {
            let key = take_string(&mut data).ok_or_else(|| bad("key"))?;
            let value = take_bytes(&mut data).ok_or_else(|| bad("value"))?;
            kv.data.insert(key, value);
        }
        if data.has_remaining() {
            return Err(bad("trailing bytes"));
        }
        Ok(kv)
    }
}

fn take_bytes(data: &mut Bytes) -> Option<Bytes> {
    if data.remaining() < 4 {
        return None;
    }
    let len = data.get_u32_le() as usize;
    if data.remaining() < len {
        return None;
    }
    Some(data.split_to(len))
}

fn take_string(data: &mut Bytes) -> Option<String> {
    take_bytes(data).and_then(|b| String::from_utf8(b.to_vec()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Command {
        Command::Put {
            key: k.into(),
            value: Bytes::copy_from_slice(v.as_bytes()),
        }
    }

    #[test]
    fn command_round_trip() {
        let cmd = put("a/b c", "hello");
        assert_eq!(Command::decode(cmd.encode()).unwrap(), cmd);
        assert!(Command::decode(Bytes::from_static(b"\x09abcd")).is_err());
        assert!(Command::decode(Bytes::from_static(b"\x01\xff\0\0\0ab")).is_err());
    }

    #[test]
    fn apply_and_restore() {
        let mut kv = Kv::with_members([(1, "http://127.0.0.1:1".to_string())].into());
        kv.add_member(2, Some("http://127.0.0.1:2".into()));
        kv.add_member(3, Some("http://127.0.0.1:3".into()));
        kv.remove_member(3);
        assert!(kv.is_removed(3));
        kv.add_member(2, None);
        assert_eq!(kv.members()[&2], "http://127.0.0.1:2");
        kv.apply(put("x", "1"));
        kv.apply(put("y", ""));
        kv.apply(put("x", "2"));
        assert_eq!(kv.get("x").as_deref(), Some(&b"2"[..]));
        assert_eq!(kv.get("y").as_deref(), Some(&b""[..]));
        assert_eq!(kv.get("z"), None);
        let restored = Kv::restore(kv.snapshot()).unwrap();
        assert_eq!(restored, kv);
        assert_eq!(restored.len(), 2);
    }

    #[test]
    fn truncated_snapshot_is_rejected() {
        let mut kv = Kv::default();
        kv.apply(put("key", "value"));
        let snap = kv.snapshot();
        for cut in 0..snap.len() {
            assert!(Kv::restore(snap.slice(..cut)).is_err(), "cut at {cut}");
        }
    }
}
