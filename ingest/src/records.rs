//! Splitting an input file into records: JSON Lines, a JSON array, or JSON values simply
//! concatenated (a pretty-printed single event is one). A malformed record does not stop the
//! rest: it is returned as a [`Record::Malformed`] spanning to the end of its line, and
//! splitting resumes on the next line.

use serde_json::value::RawValue;

/// One record of an input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// The exact bytes of one JSON value, and where it started (1-based line).
    Value { raw: &'a [u8], line: usize },
    /// Bytes that are not JSON, with the parser's reason.
    Malformed {
        raw: &'a [u8],
        line: usize,
        reason: String,
    },
}

/// Split `input` into records.
pub fn split(input: &[u8]) -> Vec<Record<'_>> {
    let start = skip_ws(input, input.strip_prefix(b"\xEF\xBB\xBF").map_or(0, |_| 3));
    if input.get(start) == Some(&b'[') {
        return split_array(input, start);
    }
    split_stream(input, start)
}

fn skip_ws(input: &[u8], mut pos: usize) -> usize {
    while pos < input.len() && input[pos].is_ascii_whitespace() {
        pos += 1;
    }
    pos
}

fn line_of(input: &[u8], pos: usize) -> usize {
    1 + input[..pos].iter().filter(|&&b| b == b'\n').count()
}

fn split_array(input: &[u8], start: usize) -> Vec<Record<'_>> {
    match serde_json::from_slice::<Vec<&RawValue>>(&input[start..]) {
        Ok(values) => values
            .into_iter()
            .map(|v| {
                let raw = v.get().as_bytes();
                // `raw` borrows from `input`: recover its offset for the line number.
                let offset = raw.as_ptr() as usize - input.as_ptr() as usize;
                Record::Value {
                    raw,
                    line: line_of(input, offset),
                }
            })
            .collect(),
        Err(e) => vec![Record::Malformed {
            raw: &input[start..],
            line: line_of(input, start),
            reason: format!("malformed JSON array: {e}"),
        }],
    }
}

fn split_stream(input: &[u8], mut pos: usize) -> Vec<Record<'_>> {
    let mut out = Vec::new();
    let mut line = line_of(input, pos);
    while pos < input.len() {
        let mut stream =
            serde_json::Deserializer::from_slice(&input[pos..]).into_iter::<&RawValue>();
        let mut resume = None;
        for item in stream.by_ref() {
            match item {
                Ok(v) => {
                    let raw = v.get().as_bytes();
                    let offset = raw.as_ptr() as usize - input.as_ptr() as usize;
                    line += input[pos..offset].iter().filter(|&&b| b == b'\n').count();
                    pos = offset;
                    out.push(Record::Value { raw, line });
                    line += raw.iter().filter(|&&b| b == b'\n').count();
                    pos += raw.len();
                }
                Err(e) => {
                    let begin = skip_ws(input, pos);
                    line += input[pos..begin].iter().filter(|&&b| b == b'\n').count();
                    let end = input[begin..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(input.len(), |i| begin + i);
                    let raw = trim_end(&input[begin..end]);
                    if !raw.is_empty() {
                        out.push(Record::Malformed {
                            raw,
                            line,
                            reason: format!("malformed JSON: {e}"),
                        });
                    }
                    resume = Some(end);
                    break;
                }
            }
        }
        match resume {
            Some(end) => pos = end,
            None => break,
        }
    }
    out
}

fn trim_end(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &b[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(records: &[Record<'_>]) -> Vec<(String, usize)> {
        records
            .iter()
            .filter_map(|r| match r {
                Record::Value { raw, line } => {
                    Some((String::from_utf8_lossy(raw).into_owned(), *line))
                }
                Record::Malformed { .. } => None,
            })
            .collect()
    }

    #[test]
    fn json_lines_with_a_bad_line_keep_the_rest() {
        let input = b"{\"a\":1}\n{oops\n\n{\"b\": 2}\n";
        let r = split(input);
        assert_eq!(
            values(&r),
            vec![("{\"a\":1}".into(), 1), ("{\"b\": 2}".into(), 4)]
        );
        let bad: Vec<_> = r
            .iter()
            .filter(|r| matches!(r, Record::Malformed { .. }))
            .collect();
        assert_eq!(bad.len(), 1);
        let Record::Malformed { raw, line, reason } = bad[0] else {
            unreachable!()
        };
        assert_eq!((*raw, *line), (&b"{oops"[..], 2));
        assert!(reason.starts_with("malformed JSON"), "{reason}");
    }

    #[test]
    fn a_pretty_printed_object_is_one_record_kept_byte_for_byte() {
        let input = b"\n{\n  \"a\": [1,\n 2]\n}\n";
        assert_eq!(
            values(&split(input)),
            vec![("{\n  \"a\": [1,\n 2]\n}".into(), 2)]
        );
    }

    #[test]
    fn arrays_give_their_elements() {
        let input = b"[\n {\"a\":1},\n {\"b\":2}\n]";
        assert_eq!(
            values(&split(input)),
            vec![("{\"a\":1}".into(), 2), ("{\"b\":2}".into(), 3)]
        );
        let r = split(b"[{\"a\":1},");
        assert!(matches!(&r[..], [Record::Malformed { reason, .. }] if reason.contains("array")));
    }

    #[test]
    fn trailing_garbage_and_invalid_utf8_are_malformed_records() {
        let r = split(b"{\"a\":1}\n\xff\xfe\n{\"c\":3}");
        assert_eq!(values(&r).len(), 2);
        assert_eq!(
            r.iter()
                .filter(|r| matches!(r, Record::Malformed { .. }))
                .count(),
            1
        );
        assert!(split(b"").is_empty() && split(b" \n\t").is_empty());
    }
}
