//! Rendering query results as text: a table for people, CSV and JSON for tools.

use arrow::array::RecordBatch;
use arrow::util::display::FormatOptions;

use crate::{QueryResult, Result};

/// Output formats of `cdlake sql` and `POST /api/v1/sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    /// A JSON array of objects, one per row.
    Json,
}

/// Render a result.
pub fn render(result: &QueryResult, format: Format) -> Result<String> {
    let batches: &[RecordBatch] = &result.batches;
    Ok(match format {
        Format::Table => {
            if batches.is_empty() {
                let empty = RecordBatch::new_empty(result.schema.clone());
                arrow::util::pretty::pretty_format_batches(&[empty])?.to_string()
            } else {
                let opts = FormatOptions::default().with_null("NULL");
                arrow::util::pretty::pretty_format_batches_with_options(batches, &opts)?.to_string()
            }
        }
        Format::Csv => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut buf);
                if batches.is_empty() {
                    w.write(&RecordBatch::new_empty(result.schema.clone()))?;
                }
                for b in batches {
                    w.write(b)?;
                }
            }
            String::from_utf8_lossy(&buf).into_owned()
        }
        Format::Json => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::json::ArrayWriter::new(&mut buf);
                for b in batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            if buf.is_empty() {
                "[]".to_string()
            } else {
                String::from_utf8_lossy(&buf).into_owned()
            }
        }
    })
}
