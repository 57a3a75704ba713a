//! Routes raft-rs's `slog` records into `tracing`, so the process has one log stream.
//! raft-rs is chatty at info level (every vote and state change); those lines go to `debug`
//! under the `raft` target, while the node itself logs leader changes at info.

use std::fmt::Write as _;

struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        let level = match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::Level::ERROR,
            slog::Level::Warning => tracing::Level::WARN,
            _ => tracing::Level::DEBUG,
        };
        let enabled = match level {
            tracing::Level::ERROR => tracing::enabled!(target: "raft", tracing::Level::ERROR),
            tracing::Level::WARN => tracing::enabled!(target: "raft", tracing::Level::WARN),
            _ => tracing::enabled!(target: "raft", tracing::Level::DEBUG),
        };
        if !enabled {
            return Ok(());
        }
        let mut line = record.msg().to_string();
        let mut kv = KvLine(&mut line);
        let _ = slog::KV::serialize(&record.kv(), record, &mut kv);
        let _ = slog::KV::serialize(values, record, &mut kv);
        match level {
            tracing::Level::ERROR => tracing::error!(target: "raft", "{line}"),
            tracing::Level::WARN => tracing::warn!(target: "raft", "{line}"),
            _ => tracing::debug!(target: "raft", "{line}"),
        }
        Ok(())
    }
}

struct KvLine<'a>(&'a mut String);

impl slog::Serializer for KvLine<'_> {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

/// A slog logger for raft-rs that writes through `tracing`.
pub fn raft_logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}
