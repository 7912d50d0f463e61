//! A Server-Sent Events parser: bytes in, complete events out. Lines end with `\n` (a `\r`
//! before it is dropped); a blank line ends an event; `:` lines are comments.

/// One complete event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, `message` when absent.
    pub event: String,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// Incremental parser; feed it chunks as they arrive.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    event: String,
    data: Option<String>,
}

/// A line longer than this is dropped rather than kept growing.
const MAX_LINE: usize = 16 << 20;

impl SseParser {
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) {
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.line_done(&String::from_utf8_lossy(&line), out);
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
    }

    fn line_done(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            if let Some(data) = self.data.take() {
                out.push(SseEvent {
                    event: if event.is_empty() {
                        "message".into()
                    } else {
                        event
                    },
                    data,
                });
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = value.to_string(),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks() {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        p.push(b"event: event\r\nid: a/1\ndata: {\"a\"", &mut out);
        assert!(out.is_empty());
        p.push(
            b":1}\n\n: keep-alive\n\ndata: x\ndata: y\n\nevent: lagged\ndata:{}\n\n",
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                SseEvent {
                    event: "event".into(),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: "message".into(),
                    data: "x\ny".into()
                },
                SseEvent {
                    event: "lagged".into(),
                    data: "{}".into()
                },
            ]
        );
    }

    #[test]
    fn garbage_does_not_panic() {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        p.push(
            &[0xff, 0xfe, b'\n', b':', b'\n', b'\n', 0, b'\r', b'\n'],
            &mut out,
        );
        assert!(out.is_empty());
    }
}
