//! The storage layout: every path cdlake reads or writes in the object store is built here.
//!
//! ```text
//! <store>/events/date=YYYY-MM-DD/<file id>.parquet
//! <store>/dead_letters/date=YYYY-MM-DD/<file id>.parquet
//! <store>/spans/date=YYYY-MM-DD/<file id>.parquet
//! <store>/_cdlake/<name>                     (cdlake's own small state, e.g. the demo anchor)
//! ```
//!
//! Partitions are Hive-style, so DuckDB, Spark, Trino and DataFusion read them as they are. File
//! ids are chosen by the writer from the content, so a retried write of the same rows lands on
//! the same name and a create-if-absent put cannot store it twice.

use std::fmt;

use chrono::NaiveDate;

/// A table stored in the object store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Events,
    DeadLetters,
    Spans,
}

impl Table {
    /// The table's directory under the store root, which is also its SQL name.
    pub fn dir(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::DeadLetters => "dead_letters",
            Table::Spans => "spans",
        }
    }

    /// The Hive partition column.
    pub const PARTITION_COLUMN: &'static str = "date";

    /// `events/` (with the trailing slash listing tables expect).
    pub fn prefix(self) -> String {
        format!("{}/", self.dir())
    }

    /// `events/date=2026-11-28/`.
    pub fn partition_prefix(self, date: NaiveDate) -> String {
        format!(
            "{}/{}={}/",
            self.dir(),
            Self::PARTITION_COLUMN,
            date.format("%Y-%m-%d")
        )
    }
}

/// The path of one Parquet data file: `<table>/date=<date>/<id>.parquet`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataFilePath {
    pub table: Table,
    pub date: NaiveDate,
    pub id: String,
}

impl DataFilePath {
    pub fn new(table: Table, date: NaiveDate, id: impl Into<String>) -> Self {
        Self {
            table,
            date,
            id: id.into(),
        }
    }

    /// Parse a path produced by [`fmt::Display`]; `None` for anything else (temporary files,
    /// foreign files).
    pub fn parse(path: &str) -> Option<Self> {
        let mut parts = path.split('/');
        let table = match parts.next()? {
            "events" => Table::Events,
            "dead_letters" => Table::DeadLetters,
            "spans" => Table::Spans,
            _ => return None,
        };
        let date = parts.next()?.strip_prefix("date=")?;
        let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
        let id = parts.next()?.strip_suffix(".parquet")?;
        if parts.next().is_some() || id.is_empty() || id.starts_with('.') {
            return None;
        }
        Some(Self::new(table, date, id))
    }
}

impl fmt::Display for DataFilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}.parquet",
            self.table.partition_prefix(self.date),
            self.id
        )
    }
}

/// A small object of cdlake's own state under `_cdlake/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePath(pub &'static str);

impl StatePath {
    /// The anchor (end time) of the demo history in this store, so `cdlake demo` run again
    /// regenerates the same events and stores nothing twice.
    pub const DEMO: StatePath = StatePath("demo.json");
}

impl fmt::Display for StatePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "_cdlake/{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_file_paths_round_trip() {
        let date = NaiveDate::from_ymd_opt(2026, 3, 9).unwrap();
        let p = DataFilePath::new(Table::Events, date, "abc123");
        assert_eq!(p.to_string(), "events/date=2026-03-09/abc123.parquet");
        assert_eq!(DataFilePath::parse(&p.to_string()), Some(p));
        assert_eq!(
            DataFilePath::parse("events/date=2026-03-09/.abc.parquet.tmp"),
            None
        );
        assert_eq!(DataFilePath::parse("events/date=bad/abc.parquet"), None);
        assert_eq!(
            DataFilePath::parse("other/date=2026-03-09/abc.parquet"),
            None
        );
    }
}
