//! Rendering query results as text: a table for people, CSV and JSON for tools, an Arrow IPC
//! stream for programs. Every rendering stops at a byte limit (`limits.max_result_mb`), so a
//! result that is small as Arrow but large as text (many rows of long column names in JSON)
//! cannot grow an answer without bound.
//!
//! Values a format cannot hold natively are written as their text form rather than refused:
//! lists, structs and maps in CSV, maps with non-string keys in JSON.

use std::io::Write;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::{Error, QueryResult, Result};

/// Output formats of `cdlake sql` and `POST /api/v1/sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    /// A JSON array of objects, one per row.
    Json,
    /// An Arrow IPC stream.
    ArrowIpc,
}

/// A writer that fails once more than `max` bytes were written.
struct Limited {
    buf: Vec<u8>,
    max: usize,
}

impl Write for Limited {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.max {
            return Err(std::io::Error::other(LIMIT_REACHED));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const LIMIT_REACHED: &str = "cdlake: result byte limit reached";

/// Render a result in `format`, at most `max_result_mb` MiB.
pub fn render(result: &QueryResult, format: Format, max_result_mb: usize) -> Result<Vec<u8>> {
    let mut out = Limited {
        buf: Vec::new(),
        max: max_result_mb.max(1).saturating_mul(1 << 20),
    };
    let written = write(result, format, &mut out);
    match written {
        Ok(()) => Ok(out.buf),
        Err(e) if e.to_string().contains(LIMIT_REACHED) => {
            Err(Error::result_too_large(max_result_mb))
        }
        Err(e) => Err(crate::Error::internal("rendering the result", e)),
    }
}

/// Render as text (table, CSV or JSON), at most `max_result_mb` MiB.
pub fn render_text(result: &QueryResult, format: Format, max_result_mb: usize) -> Result<String> {
    let bytes = render(result, format, max_result_mb)?;
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

fn write(
    result: &QueryResult,
    format: Format,
    out: &mut Limited,
) -> Result<(), arrow::error::ArrowError> {
    let batches: &[RecordBatch] = &result.batches;
    match format {
        Format::Table => {
            let text = if batches.is_empty() {
                let empty = RecordBatch::new_empty(result.schema.clone());
                arrow::util::pretty::pretty_format_batches(&[empty])?.to_string()
            } else {
                let opts = FormatOptions::default().with_null("NULL");
                arrow::util::pretty::pretty_format_batches_with_options(batches, &opts)?.to_string()
            };
            out.write_all(text.as_bytes())?;
        }
        Format::Csv => {
            let schema = text_schema(&result.schema, needs_text_in_csv);
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            if batches.is_empty() {
                w.write(&RecordBatch::new_empty(schema.clone()))?;
            }
            for b in batches {
                w.write(&as_text(b, &schema, needs_text_in_csv)?)?;
            }
        }
        Format::Json => {
            let schema = text_schema(&result.schema, needs_text_in_json);
            if batches.is_empty() {
                out.write_all(b"[]")?;
                return Ok(());
            }
            let mut w = arrow::json::ArrayWriter::new(&mut *out);
            for b in batches {
                w.write(&as_text(b, &schema, needs_text_in_json)?)?;
            }
            w.finish()?;
        }
        Format::ArrowIpc => {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut *out, &result.schema)?;
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
    }
    Ok(())
}

/// CSV holds flat values only.
fn needs_text_in_csv(t: &DataType) -> bool {
    t.is_nested() || matches!(t, DataType::Union(..))
}

/// JSON objects need string keys; anything holding a map with other keys is written as text.
fn needs_text_in_json(t: &DataType) -> bool {
    match t {
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(fields) => {
                fields.first().is_none_or(|k| {
                    !matches!(
                        k.data_type(),
                        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                    )
                }) || fields.iter().any(|f| needs_text_in_json(f.data_type()))
            }
            _ => true,
        },
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            needs_text_in_json(f.data_type())
        }
        DataType::Struct(fields) => fields.iter().any(|f| needs_text_in_json(f.data_type())),
        DataType::Union(..) => true,
        _ => false,
    }
}

fn text_schema(schema: &SchemaRef, needs_text: fn(&DataType) -> bool) -> SchemaRef {
    if !schema.fields().iter().any(|f| needs_text(f.data_type())) {
        return schema.clone();
    }
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                if needs_text(f.data_type()) {
                    Arc::new(Field::new(f.name(), DataType::Utf8, true))
                } else {
                    f.clone()
                }
            })
            .collect::<Vec<_>>(),
    ))
}

/// `batch` with the columns `needs_text` names replaced by their text form.
fn as_text(
    batch: &RecordBatch,
    schema: &SchemaRef,
    needs_text: fn(&DataType) -> bool,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    if Arc::ptr_eq(schema, &batch.schema()) || schema == &batch.schema() {
        return Ok(batch.clone());
    }
    let options = FormatOptions::default();
    let columns = batch
        .columns()
        .iter()
        .map(|c| {
            if !needs_text(c.data_type()) {
                return Ok(c.clone());
            }
            let f = ArrayFormatter::try_new(c.as_ref(), &options)?;
            let text: StringArray = (0..c.len())
                .map(|i| c.is_valid(i).then(|| f.value(i).to_string()))
                .collect();
            Ok(Arc::new(text) as ArrayRef)
        })
        .collect::<Result<Vec<_>, arrow::error::ArrowError>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int32Array, Int64Builder, ListArray, MapBuilder, StringBuilder};
    use arrow::datatypes::Int32Type;

    use super::*;

    fn result(columns: Vec<(&str, ArrayRef)>) -> QueryResult {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        QueryResult {
            schema: batch.schema(),
            batches: vec![batch],
        }
    }

    #[test]
    fn lists_in_csv_and_integer_keyed_maps_in_json_are_written_as_text() {
        let list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
        ]));
        let n: ArrayRef = Arc::new(Int32Array::from(vec![1, 2]));
        let r = result(vec![("n", n), ("l", list)]);
        let csv = render_text(&r, Format::Csv, 1).unwrap();
        assert_eq!(csv, "n,l\n1,\"[1, 2]\"\n2,\n");
        let json = render_text(&r, Format::Json, 1).unwrap();
        assert_eq!(json, r#"[{"n":1,"l":[1,2]},{"n":2}]"#);

        let mut map = MapBuilder::new(None, Int64Builder::new(), StringBuilder::new());
        map.keys().append_value(7);
        map.values().append_value("seven");
        map.append(true).unwrap();
        let r = result(vec![("m", Arc::new(map.finish()) as ArrayRef)]);
        let json = render_text(&r, Format::Json, 1).unwrap();
        assert_eq!(json, r#"[{"m":"{7: seven}"}]"#);
    }

    #[test]
    fn renderings_stop_at_the_byte_limit() {
        let long: ArrayRef = Arc::new(StringArray::from(vec!["x".repeat(600_000); 2]));
        let r = result(vec![("s", long)]);
        for format in [Format::Csv, Format::Json, Format::Table, Format::ArrowIpc] {
            let e = render(&r, format, 1).expect_err("over 1 MiB");
            assert!(
                e.to_string().contains("limits.max_result_mb"),
                "{format:?}: {e}"
            );
            assert!(render(&r, format, 2).is_ok(), "{format:?}");
        }
    }
}
