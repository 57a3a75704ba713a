//! Human output: aligned tables, values as text, one line per watch event. Every function
//! returns a `String`, so formatting is tested without a server or a terminal.

use base64::Engine as _;
use serde_json::{json, Map, Value};

/// Longest value shown in a table cell on a terminal before it is cut with `…`.
pub const CELL_WIDTH: usize = 60;

/// Columns separated by two spaces, each as wide as its widest cell (the last one unpadded).
/// A row shorter than the header ends in a cell that spans the rest (an error message), and
/// that cell does not widen its column.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        let counted = if row.len() < header.len() {
            row.len().saturating_sub(1)
        } else {
            row.len()
        };
        for (i, cell) in row.iter().take(counted).enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                let width = widths.get(i).copied().unwrap_or(0);
                line.extend(std::iter::repeat_n(
                    ' ',
                    width.saturating_sub(cell.chars().count()),
                ));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A value for a human: its text if it is UTF-8 (control characters escaped, so one value
/// stays on one line), else `<N bytes, binary>`; cut to `max` characters if given.
pub fn show_value(bytes: &[u8], max: Option<usize>) -> String {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return format!("<{} bytes, binary>", bytes.len());
    };
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    match max {
        Some(max) if out.chars().count() > max => {
            let cut: String = out.chars().take(max.saturating_sub(1)).collect();
            format!("{cut}…")
        }
        _ => out,
    }
}

/// `get` on a terminal: the value as it is when it is UTF-8 text (line breaks and tabs kept,
/// other control characters escaped so a value cannot drive the terminal), ending in a line
/// break; a note for a binary value, which only a redirect or `--json` shows faithfully.
pub fn terminal_text(bytes: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return format!(
            "<{} bytes, binary: redirect stdout to get them, or use --json>\n",
            bytes.len()
        );
    };
    let mut out = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// The bytes of a value as the JSON API gives it (`"encoding": "base64"` on binary values).
pub fn value_bytes(item: &Value, base64_everywhere: bool) -> Vec<u8> {
    let text = item.get("value").and_then(Value::as_str).unwrap_or("");
    let base64 =
        base64_everywhere || item.get("encoding").and_then(Value::as_str) == Some("base64");
    if base64 {
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(text) {
            return bytes;
        }
    }
    text.as_bytes().to_vec()
}

/// A value for JSON output: a string, or base64 with `"encoding": "base64"` when binary (as
/// the server's own listings do).
pub fn json_value(obj: &mut Map<String, Value>, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            obj.insert("value".into(), Value::String(text.into()));
        }
        Err(_) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
            obj.insert("value".into(), Value::String(encoded));
            obj.insert("encoding".into(), Value::String("base64".into()));
        }
    }
}

fn num(v: &Value, field: &str) -> String {
    match v.get(field) {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

/// `ls`: one row per key.
pub fn kvs_table(kvs: &[Value], cut: bool) -> String {
    let rows: Vec<Vec<String>> = kvs
        .iter()
        .map(|kv| {
            let key = kv.get("key").and_then(Value::as_str).unwrap_or("");
            vec![
                show_value(key.as_bytes(), None),
                num(kv, "mod_revision"),
                num(kv, "version"),
                show_value(&value_bytes(kv, false), cut.then_some(CELL_WIDTH)),
            ]
        })
        .collect();
    table(&["KEY", "MOD_REVISION", "VERSION", "VALUE"], &rows)
}

/// `members`: one row per member.
pub fn members_table(members: &[Value]) -> String {
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            let leader = m.get("is_leader").and_then(Value::as_bool) == Some(true);
            vec![
                num(m, "id"),
                num(m, "role"),
                if leader { "yes".into() } else { String::new() },
                num(m, "peer_url"),
                num(m, "match_index"),
            ]
        })
        .collect();
    table(&["ID", "ROLE", "LEADER", "PEER_URL", "MATCH_INDEX"], &rows)
}

/// Fields of `/v1/status` in the order a human reads them (unknown fields follow).
const STATUS_FIELDS: &[&str] = &[
    "id",
    "role",
    "leader",
    "term",
    "commit_index",
    "applied_index",
    "snapshot_index",
    "first_index",
    "last_index",
    "revision",
    "compact_revision",
    "keys",
    "data_bytes",
    "total_bytes",
    "leases",
    "wal_bytes",
    "voters",
];

/// `status`: the node's fields as aligned `name  value` lines, then its members.
pub fn status_text(endpoint: &str, status: &Value) -> String {
    let mut rows = vec![vec!["endpoint".to_string(), endpoint.to_string()]];
    for field in STATUS_FIELDS {
        rows.push(vec![field.to_string(), num(status, field)]);
    }
    if let Value::Object(obj) = status {
        for (k, _) in obj {
            if !STATUS_FIELDS.contains(&k.as_str()) && k != "members" {
                rows.push(vec![k.clone(), num(status, k)]);
            }
        }
    }
    // `table` with an empty header row: drop that first line.
    let text = table(&["", ""], &rows);
    let mut out: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    if let Some(Value::Array(members)) = status.get("members") {
        out.push_str("\nmembers:\n");
        for line in members_table(members).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

/// `status --all`: one row per endpoint; an endpoint that did not answer shows why.
pub fn status_table(rows: &[(String, Result<Value, String>)]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(endpoint, status)| match status {
            Ok(s) => {
                let mut row = vec![endpoint.clone()];
                // id, role, leader, term, commit_index, applied_index
                for f in &STATUS_FIELDS[..6] {
                    row.push(num(s, f));
                }
                row.push(num(s, "revision"));
                row.push(num(s, "keys"));
                row
            }
            Err(e) => vec![endpoint.clone(), format!("error: {e}")],
        })
        .collect();
    table(
        &[
            "ENDPOINT", "ID", "ROLE", "LEADER", "TERM", "COMMIT", "APPLIED", "REVISION", "KEYS",
        ],
        &cells,
    )
}

/// One watch event's data (`{"type","key","value","revision"}`) as one line.
pub fn event_line(data: &Value) -> String {
    let kind = data.get("type").and_then(Value::as_str).unwrap_or("?");
    let key = data.get("key").and_then(Value::as_str).unwrap_or("");
    let rev = num(data, "revision");
    let key = show_value(key.as_bytes(), None);
    if data.get("value").is_some() {
        let value = show_value(&value_bytes(data, false), None);
        format!("{kind} {key} = {value} (revision {rev})")
    } else {
        format!("{kind} {key} (revision {rev})")
    }
}

/// `get --json`: the value and its revisions (taken from the answer's headers).
pub fn get_json(
    key: &str,
    value: &[u8],
    create_revision: Option<u64>,
    mod_revision: Option<u64>,
    version: Option<u64>,
    revision: Option<u64>,
) -> Value {
    let mut obj = Map::new();
    obj.insert("key".into(), Value::String(key.into()));
    json_value(&mut obj, value);
    for (name, v) in [
        ("create_revision", create_revision),
        ("mod_revision", mod_revision),
        ("version", version),
        ("revision", revision),
    ] {
        if let Some(v) = v {
            obj.insert(name.into(), json!(v));
        }
    }
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["a".to_string(), "1".to_string(), "x".to_string()],
            vec!["longer/key".to_string(), "22".to_string(), "".to_string()],
        ];
        assert_eq!(
            table(&["KEY", "N", "VALUE"], &rows),
            "KEY         N   VALUE\n\
             a           1   x\n\
             longer/key  22\n"
        );
        // Non-ASCII counts as one column per character.
        let rows = vec![vec!["✓".to_string(), "b".to_string()]];
        assert_eq!(table(&["AB", "C"], &rows), "AB  C\n✓   b\n");
    }

    #[test]
    fn values_are_text_when_they_can_be() {
        assert_eq!(show_value(b"hello", None), "hello");
        assert_eq!(show_value(b"a\nb\tc\\", None), "a\\nb\\tc\\\\");
        assert_eq!(show_value(b"\x07", None), "\\u{7}");
        assert_eq!(show_value(&[0xff, 0xfe], None), "<2 bytes, binary>");
        assert_eq!(show_value("ünïcødé".as_bytes(), None), "ünïcødé");
        assert_eq!(show_value(b"abcdef", Some(4)), "abc…");
        assert_eq!(show_value(b"abcd", Some(4)), "abcd");
    }

    #[test]
    fn get_on_a_terminal_keeps_lines_and_escapes_the_rest() {
        assert_eq!(terminal_text(b"a\nb\tc"), "a\nb\tc\n");
        assert_eq!(terminal_text(b"line\n"), "line\n");
        assert_eq!(terminal_text(b"\x1b[31mred"), "\\u{1b}[31mred\n");
        assert_eq!(terminal_text(b""), "\n");
        assert!(terminal_text(&[0xff]).starts_with("<1 bytes, binary"));
    }

    #[test]
    fn listing_decodes_binary_values() {
        let kvs: Vec<Value> = serde_json::from_str(
            r#"[{"key":"a","value":"x","mod_revision":2,"version":1,"create_revision":2},
                {"key":"bin","value":"//4=","encoding":"base64","mod_revision":3,"version":4}]"#,
        )
        .unwrap();
        assert_eq!(
            kvs_table(&kvs, true),
            "KEY  MOD_REVISION  VERSION  VALUE\n\
             a    2             1        x\n\
             bin  3             4        <2 bytes, binary>\n"
        );
        assert_eq!(value_bytes(&kvs[1], false), vec![0xff, 0xfe]);
        assert_eq!(value_bytes(&json!({"value": "eA=="}), true), b"x");
    }

    #[test]
    fn members_and_status() {
        let members: Vec<Value> = serde_json::from_str(
            r#"[{"id":1,"peer_url":"http://127.0.0.1:12379","role":"voter","is_leader":true,"match_index":20},
                {"id":2,"peer_url":"http://127.0.0.1:22379","role":"learner","is_leader":false}]"#,
        )
        .unwrap();
        assert_eq!(
            members_table(&members),
            "ID  ROLE     LEADER  PEER_URL                MATCH_INDEX\n\
             1   voter    yes     http://127.0.0.1:12379  20\n\
             2   learner          http://127.0.0.1:22379  -\n"
        );
        let status = json!({
            "id": 1, "role": "leader", "leader": 1, "term": 2, "commit_index": 9,
            "applied_index": 9, "snapshot_index": 1, "first_index": 2, "last_index": 9,
            "keys": 3, "data_bytes": 40, "revision": 7, "wal_bytes": 900, "voters": [1, 2],
            "members": members, "future_field": "x"
        });
        let text = status_text("127.0.0.1:12380", &status);
        assert!(
            text.starts_with(
                "endpoint          127.0.0.1:12380\nid                1\nrole              leader\n"
            ),
            "{text}"
        );
        assert!(text.contains("\nvoters            1,2\n"), "{text}");
        assert!(text.contains("\nfuture_field      x\n"), "{text}");
        assert!(text.contains("\nmembers:\n  ID  ROLE "), "{text}");

        let all = status_table(&[
            ("a:1".into(), Ok(status.clone())),
            ("b:2".into(), Err("cannot connect: refused".into())),
        ]);
        assert_eq!(
            all,
            "ENDPOINT  ID  ROLE    LEADER  TERM  COMMIT  APPLIED  REVISION  KEYS\n\
             a:1       1   leader  1       2     9       9        7         3\n\
             b:2       error: cannot connect: refused\n"
        );
    }

    #[test]
    fn watch_events_read_as_lines() {
        assert_eq!(
            event_line(&json!({"type":"put","key":"k","value":"v\n","revision":6})),
            "put k = v\\n (revision 6)"
        );
        assert_eq!(
            event_line(&json!({"type":"delete","key":"k","revision":8})),
            "delete k (revision 8)"
        );
        assert_eq!(
            event_line(
                &json!({"type":"put","key":"b","value":"//4=","encoding":"base64","revision":9})
            ),
            "put b = <2 bytes, binary> (revision 9)"
        );
    }

    #[test]
    fn get_json_carries_the_revisions() {
        assert_eq!(
            get_json("k", b"v", Some(1), Some(2), Some(2), Some(5)),
            json!({"key":"k","value":"v","create_revision":1,"mod_revision":2,"version":2,"revision":5})
        );
        assert_eq!(
            get_json("k", &[0xff], None, None, None, None),
            json!({"key":"k","value":"/w==","encoding":"base64"})
        );
    }
}
