//! Parquet encoding of the tables cdlake writes.
//!
//! Files are zstd-compressed with column statistics (per page) so readers prune by `time`, rows
//! sorted by `time` (recorded as the file's sorting columns), dictionaries on the low-
//! cardinality columns and not on ids and payloads, where they only cost.

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use cdlake_schemas::paths::Table;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

/// How files are encoded.
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// zstd level (1 is fast and already about 4x smaller than the JSON).
    pub zstd_level: i32,
    /// Rows per row group.
    pub row_group_rows: usize,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            zstd_level: 1,
            row_group_rows: 128 * 1024,
        }
    }
}

/// The writer properties for a table whose rows are sorted by the column `sort_column`.
pub fn writer_properties(
    schema: &SchemaRef,
    sort_column: &str,
    opts: &EncodeOptions,
) -> WriterProperties {
    let level = ZstdLevel::try_new(opts.zstd_level).unwrap_or_default();
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(opts.row_group_rows))
        .set_created_by(concat!("cdlake ", env!("CARGO_PKG_VERSION")).to_string());
    if let Ok(idx) = schema.index_of(sort_column) {
        b = b.set_sorting_columns(Some(vec![SortingColumn {
            column_idx: idx as i32,
            descending: false,
            nulls_first: false,
        }]));
    }
    for high_cardinality in [
        "event_id", "payload", "span_id", "url", "trace_id", "chain_id",
    ] {
        if schema.index_of(high_cardinality).is_ok() {
            b = b.set_column_dictionary_enabled(ColumnPath::from(high_cardinality), false);
        }
    }
    b.build()
}

/// Encode batches (all of `schema`) as one Parquet file.
pub fn encode(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    props: WriterProperties,
) -> Result<Vec<u8>, parquet::errors::ParquetError> {
    let mut buf = Vec::with_capacity(batches.iter().map(|b| b.get_array_memory_size() / 4).sum());
    let mut w = ArrowWriter::try_new(&mut buf, schema.clone(), Some(props))?;
    for b in batches {
        w.write(b)?;
    }
    w.close()?;
    Ok(buf)
}

/// The identity keys of every row of a file of `table`: `(event_source, event_id)` for
/// events, `(trace_id, span_id)` for spans (dead letters have none).
pub fn read_identity_keys(
    file: Vec<u8>,
    table: Table,
) -> Result<Vec<u128>, parquet::errors::ParquetError> {
    let (first, second) = match table {
        Table::Events => ("event_source", "event_id"),
        Table::Spans => ("trace_id", "span_id"),
        Table::DeadLetters => return Ok(Vec::new()),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file))?;
    let schema = builder.parquet_schema();
    let wanted: Vec<usize> = (0..schema.num_columns())
        .filter(|&i| [first, second].contains(&schema.column(i).name()))
        .collect();
    let mask = ProjectionMask::leaves(schema, wanted);
    let reader = builder.with_projection(mask).build()?;
    let mut keys = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?;
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
                .ok_or_else(|| {
                    parquet::errors::ParquetError::General(format!("no utf8 column {name}"))
                })
        };
        let (source, id) = (col(first)?, col(second)?);
        keys.extend(
            (0..batch.num_rows())
                .filter(|&i| source.is_valid(i) && id.is_valid(i))
                .map(|i| cdlake_schemas::identity_key(source.value(i), id.value(i))),
        );
    }
    Ok(keys)
}
