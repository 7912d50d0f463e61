//! Compaction's contract between the writer that merges files and every reader.
//!
//! Streaming commits many small files per date partition. Compaction merges some of them
//! (its *inputs*) into larger files (its *outputs*, named `compact-<id>-<n>.parquet`) and then
//! commits a manifest, `_cdlake/compactions/<table>/date=YYYY-MM-DD/compact-<id>.json`, naming
//! both. The manifest's create-if-absent put is the single atomic step:
//!
//! - an output is visible only once its manifest exists;
//! - an input named by an existing manifest is hidden.
//!
//! So a reader that lists manifests *before* it lists data files sees either the inputs or the
//! outputs of a compaction, never both and never neither: outputs are written before their
//! manifest, and inputs are deleted only a grace period after it (longer than any query runs).
//! A crash before the manifest leaves invisible outputs that a later run removes; a crash after
//! it leaves hidden inputs that a later run removes.
//!
//! Readers other than cdlake (DuckDB, Spark) do not read manifests: during the grace period
//! they see a compacted partition's rows twice, which `(event_source, event_id)`
//! de-duplication removes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::paths::{DataFilePath, Table};
use crate::store::{Result, Store, StoreError};

/// Where manifests live.
pub const MANIFEST_DIR: &str = "_cdlake/compactions";
/// The file id prefix of compaction outputs.
pub const OUTPUT_PREFIX: &str = "compact-";

/// One committed compaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// `compact-<hex>`: the hash of the sorted input paths.
    pub id: String,
    pub table: String,
    pub date: NaiveDate,
    /// Store-relative paths of the merged files, hidden from the moment the manifest exists.
    pub inputs: Vec<String>,
    /// Store-relative paths of the files that replace them.
    pub outputs: Vec<String>,
    /// Rows in the outputs (after de-duplication) and in the inputs.
    pub rows: u64,
    pub input_rows: u64,
    pub committed_at: DateTime<Utc>,
}

impl Manifest {
    /// `_cdlake/compactions/events/` (every manifest of a table).
    pub fn table_prefix(table: Table) -> String {
        format!("{MANIFEST_DIR}/{}/", table.dir())
    }

    /// `_cdlake/compactions/events/date=2026-11-28/compact-ab12.json`.
    pub fn path_of(table: Table, date: NaiveDate, id: &str) -> String {
        format!("{MANIFEST_DIR}/{}{id}.json", table.partition_prefix(date))
    }

    /// The manifest path that commits the output file `path`, if `path` is an output.
    pub fn path_for_output(path: &DataFilePath) -> Option<String> {
        let rest = path.id.strip_prefix(OUTPUT_PREFIX)?;
        let (hash, n) = rest.rsplit_once('-')?;
        if hash.is_empty() || n.parse::<u32>().is_err() {
            return None;
        }
        Some(Self::path_of(
            path.table,
            path.date,
            &format!("{OUTPUT_PREFIX}{hash}"),
        ))
    }

    /// The output file id `compact-<hash>-<n>` of this manifest's `n`th output.
    pub fn output_id(id: &str, n: usize) -> String {
        format!("{id}-{n}")
    }
}

/// Which data files a reader may read, from the manifests that existed when it looked.
#[derive(Debug, Clone, Default)]
pub struct Visibility {
    hidden: HashSet<String>,
    committed: HashSet<String>,
}

impl Visibility {
    pub fn from_manifests<'a>(
        manifests: impl IntoIterator<Item = (&'a str, &'a Manifest)>,
    ) -> Self {
        let mut v = Self::default();
        for (path, m) in manifests {
            v.committed.insert(path.to_string());
            v.hidden.extend(m.inputs.iter().cloned());
        }
        v
    }

    /// Whether the store-relative `path` is part of the table as a reader sees it.
    pub fn is_visible(&self, path: &str) -> bool {
        if self.hidden.contains(path) {
            return false;
        }
        match DataFilePath::parse(path)
            .as_ref()
            .and_then(Manifest::path_for_output)
        {
            Some(manifest) => self.committed.contains(&manifest),
            None => true,
        }
    }
}

/// Manifests read so far (they never change once written), keyed by path.
#[derive(Debug, Default)]
pub struct ManifestCache {
    read: Mutex<HashMap<String, Arc<Manifest>>>,
}

impl ManifestCache {
    /// List the manifests of `table` now (before listing data files) and read the new ones.
    pub async fn manifests(
        &self,
        store: &Store,
        table: Table,
    ) -> Result<Vec<(String, Arc<Manifest>)>> {
        let paths = store.list(&Manifest::table_prefix(table)).await?;
        let mut out = Vec::with_capacity(paths.len());
        for path in paths.into_iter().filter(|p| p.ends_with(".json")) {
            let cached = self.read.lock().expect("not poisoned").get(&path).cloned();
            let manifest = match cached {
                Some(m) => m,
                None => {
                    // Deleted between the listing and the read: a vacuum removed it, so its
                    // outputs are gone too and it no longer matters.
                    let Some(bytes) = store.get(&path).await? else {
                        continue;
                    };
                    let m: Manifest =
                        serde_json::from_slice(&bytes).map_err(|e| StoreError::Location {
                            location: path.clone(),
                            reason: format!("unreadable compaction manifest: {e}"),
                        })?;
                    let m = Arc::new(m);
                    self.read
                        .lock()
                        .expect("not poisoned")
                        .insert(path.clone(), m.clone());
                    m
                }
            };
            out.push((path, manifest));
        }
        let listed: HashSet<&str> = out.iter().map(|(p, _)| p.as_str()).collect();
        self.read
            .lock()
            .expect("not poisoned")
            .retain(|p, _| listed.contains(p.as_str()));
        Ok(out)
    }

    /// The visibility of `table`'s files as of now.
    pub async fn visibility(&self, store: &Store, table: Table) -> Result<Visibility> {
        let manifests = self.manifests(store, table).await?;
        Ok(Visibility::from_manifests(
            manifests.iter().map(|(p, m)| (p.as_str(), m.as_ref())),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 28).unwrap()
    }

    #[test]
    fn outputs_are_visible_only_with_their_manifest_and_inputs_only_without() {
        let out = DataFilePath::new(Table::Events, date(), Manifest::output_id("compact-ab", 0));
        let manifest_path = Manifest::path_for_output(&out).unwrap();
        assert_eq!(
            manifest_path,
            "_cdlake/compactions/events/date=2026-11-28/compact-ab.json"
        );
        let input = "events/date=2026-11-28/0011.parquet".to_string();
        let other = "events/date=2026-11-28/0022.parquet";
        let m = Manifest {
            id: "compact-ab".into(),
            table: "events".into(),
            date: date(),
            inputs: vec![input.clone()],
            outputs: vec![out.to_string()],
            rows: 1,
            input_rows: 1,
            committed_at: Utc::now(),
        };
        let before = Visibility::default();
        assert!(before.is_visible(&input));
        assert!(!before.is_visible(&out.to_string()));
        assert!(before.is_visible(other));
        let after = Visibility::from_manifests([(manifest_path.as_str(), &m)]);
        assert!(!after.is_visible(&input));
        assert!(after.is_visible(&out.to_string()));
        assert!(after.is_visible(other));
    }

    #[test]
    fn only_well_formed_output_names_need_a_manifest() {
        for id in ["compact-", "compact-x", "compact--1", "compactab-0"] {
            let p = DataFilePath::new(Table::Events, date(), id);
            let visible = Visibility::default().is_visible(&p.to_string());
            assert_eq!(visible, Manifest::path_for_output(&p).is_none(), "{id}");
        }
    }
}
