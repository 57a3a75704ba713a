//! A Server-Sent Events parser for `/v1/watch` streams (the WHATWG `text/event-stream`
//! format, as much of it as a client needs).
//!
//! The stream is lines; a blank line ends an event. `event: <type>` names it (default
//! `message`), each `data: <text>` line adds a line of data, `id: <id>` sets its id. A line
//! starting with `:` is a comment (the server's keep-alives); unknown fields are ignored, and
//! one space after the colon is not part of the value. Lines end with `\n` or `\r\n`. Bytes
//! arrive in arbitrary chunks, so a partial line waits for the rest.
//!
//! [`Parser`] is pure (bytes in, events out); [`Events`] runs it over a [`Stream`].

use std::collections::VecDeque;

use crate::conn::Stream;
use crate::error::ClientError;

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `put`, `delete`, `error`, ... (`message` when the stream did not say).
    pub event: String,
    /// The data lines, joined with `\n`.
    pub data: String,
    /// The last `id:` seen on the stream, if any.
    pub id: Option<String>,
}

/// Incremental parser: feed it chunks, get complete events.
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of a line not yet terminated.
    partial: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
    /// The last event id: per the format it carries over to later events.
    id: Option<String>,
}

impl Parser {
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Consumes a chunk; returns the events it completed, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..nl]);
            rest = &rest[nl + 1..];
            let mut line = std::mem::take(&mut self.partial);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if let Some(event) = self.line(&String::from_utf8_lossy(&line)) {
                out.push(event);
            }
        }
        self.partial.extend_from_slice(rest);
        out
    }

    /// Handles one complete line; a blank line dispatches the pending event.
    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            let event = self.event.take();
            // An event without data is not dispatched.
            let data = self.data.take()?;
            return Some(Event {
                event: event.unwrap_or_else(|| "message".into()),
                data,
                id: self.id.clone(),
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => match self.data.as_mut() {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            _ => {}
        }
        None
    }
}

/// The events of a streamed answer, one at a time.
#[derive(Debug)]
pub struct Events {
    stream: Stream,
    parser: Parser,
    ready: VecDeque<Event>,
}

impl Events {
    pub(crate) fn new(stream: Stream) -> Events {
        Events {
            stream,
            parser: Parser::new(),
            ready: VecDeque::new(),
        }
    }

    /// The next event: `Ok(None)` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<Event>, ClientError> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            match self.stream.next_chunk().await? {
                Some(chunk) => self.ready.extend(self.parser.feed(&chunk)),
                None => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str, id: Option<&str>) -> Event {
        Event {
            event: event.into(),
            data: data.into(),
            id: id.map(String::from),
        }
    }

    #[test]
    fn parses_the_servers_events() {
        let stream = "event: put\nid: 6\ndata: {\"key\":\"w\",\"revision\":6}\n\n\
                      event: delete\nid: 8\ndata: {\"key\":\"w\",\"revision\":8}\n\n";
        let mut p = Parser::new();
        assert_eq!(
            p.feed(stream.as_bytes()),
            vec![
                ev("put", r#"{"key":"w","revision":6}"#, Some("6")),
                ev("delete", r#"{"key":"w","revision":8}"#, Some("8")),
            ]
        );
    }

    #[test]
    fn chunks_split_anywhere() {
        let stream = b"event: put\r\nid: 1\r\ndata: {\"a\":1}\r\n\r\n: keep-alive\n\nevent: error\ndata: x\n\n";
        for split in 0..stream.len() {
            let mut p = Parser::new();
            let mut events = p.feed(&stream[..split]);
            events.extend(p.feed(&stream[split..]));
            assert_eq!(
                events,
                vec![
                    ev("put", r#"{"a":1}"#, Some("1")),
                    ev("error", "x", Some("1")),
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn comments_fields_and_multiline_data() {
        let mut p = Parser::new();
        // A comment alone, or an event with no data, dispatches nothing.
        assert!(p.feed(b":\n\n: ping\n\nevent: put\n\n").is_empty());
        // The event type of a data-less event does not leak into the next one.
        assert_eq!(p.feed(b"data: a\n\n"), vec![ev("message", "a", None)]);
        // Several data lines; no space after the colon; a field with no colon; unknown fields.
        assert_eq!(
            p.feed(b"data:one\ndata\ndata:  two\nretry: 5\nfoo: bar\n\n"),
            vec![ev("message", "one\n\n two", None)]
        );
        // A line without its newline waits.
        assert!(p.feed(b"data: late").is_empty());
        assert_eq!(p.feed(b"\n\n"), vec![ev("message", "late", None)]);
    }
}
