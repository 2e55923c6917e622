//! A server-sent events parser (the WHATWG event-stream format), fed with whatever
//! chunks the connection delivers. Small enough to own rather than pull in a crate.

use crate::{E2eError, Result};

/// Longest line accepted: a 64 KiB ciphertext in base64url plus its JSON fits easily.
const MAX_LINE: usize = 1024 * 1024;

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, empty when absent.
    pub event: String,
    /// The `id:` field of this event, if it had one.
    pub id: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Incremental parser: feed bytes, get the events completed by them.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    after_cr: bool,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes `bytes`; lines may end in `\n`, `\r\n` or `\r`, split anywhere.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>> {
        let mut out = Vec::new();
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.line_done(&line) {
                        out.push(event);
                    }
                }
                _ => {
                    self.after_cr = false;
                    if self.line.len() >= MAX_LINE {
                        return Err(E2eError::Protocol("event stream line too long".into()));
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(out)
    }

    fn line_done(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        let line = String::from_utf8_lossy(line);
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.current.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.current.id = Some(value.to_string()),
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = std::mem::take(&mut self.current);
        let had_data = std::mem::replace(&mut self.has_data, false);
        // Unlike a browser, an event with a name and no data is kept: `event: end` may
        // come without any.
        (had_data || !event.event.is_empty()).then_some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(parser: &mut SseParser, chunks: &[&[u8]]) -> Vec<SseEvent> {
        chunks
            .iter()
            .flat_map(|c| parser.feed(c).unwrap())
            .collect()
    }

    #[test]
    fn parses_events_comments_and_ids() {
        let mut p = SseParser::new();
        let events = all(
            &mut p,
            &[b": keep-alive\n\nevent: utterance\nid: 1\ndata: {\"a\":1}\n\nevent: end\n\n"],
        );
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: "utterance".into(),
                    id: Some("1".into()),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: "end".into(),
                    id: None,
                    data: String::new()
                },
            ]
        );
    }

    #[test]
    fn handles_any_split_and_line_ending() {
        let text = b"event:utterance\r\nid:7\r\ndata:line one\r\ndata: line two\r\n\r\ndata:x\r\r";
        for split in 0..text.len() {
            let mut p = SseParser::new();
            let events = all(&mut p, &[&text[..split], &text[split..]]);
            assert_eq!(events.len(), 2, "split at {split}");
            assert_eq!(events[0].event, "utterance");
            assert_eq!(events[0].id.as_deref(), Some("7"));
            assert_eq!(events[0].data, "line one\nline two");
            assert_eq!(events[1].event, "");
            assert_eq!(events[1].data, "x");
        }
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        let mut p = SseParser::new();
        assert!(p.feed(b"event: utterance\ndata: {}\n").unwrap().is_empty());
    }

    #[test]
    fn refuses_endless_lines() {
        let mut p = SseParser::new();
        let big = vec![b'a'; MAX_LINE + 1];
        assert!(p.feed(&big).is_err());
    }
}
