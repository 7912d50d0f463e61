//! [`StoreTable`]: a listing table over one table of the store that reads only the files
//! compaction has left visible (see [`cdlake_schemas::compaction`]).
//!
//! DataFusion's `ListingTable` lists a table's directory at every scan. During a compaction a
//! partition holds both the merged files and their replacement for a grace period, so a plain
//! listing would count those rows twice. `StoreTable` reads the compaction manifests first,
//! then lets the listing table plan the scan, then drops the files the manifests hide.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use cdlake_schemas::compaction::ManifestCache;
use cdlake_schemas::paths::Table;
use cdlake_schemas::store::Store;
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::common::Statistics;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;

/// A table of the store as readers should see it.
#[derive(Debug)]
pub(crate) struct StoreTable {
    inner: Arc<ListingTable>,
    store: Store,
    table: Table,
    root: String,
    manifests: ManifestCache,
}

impl StoreTable {
    pub(crate) fn new(inner: ListingTable, store: Store, table: Table) -> Self {
        Self {
            inner: Arc::new(inner),
            root: store.root_location(),
            store,
            table,
            manifests: ManifestCache::default(),
        }
    }
}

#[async_trait]
impl TableProvider for StoreTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let args = ScanArgs::default()
            .with_projection(projection.map(|p| p.as_slice()))
            .with_filters(Some(filters))
            .with_limit(limit);
        Ok(self.scan_with_args(state, args).await?.into_inner())
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> Result<ScanResult> {
        // Manifests first, then the files: see the module documentation.
        let visibility = self
            .manifests
            .visibility(&self.store, self.table)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        // The listing table may stop listing files once their statistics cover a limit; with
        // files removed afterwards that could return too few rows, so plan without the limit
        // (the limit itself stays in the plan above the scan).
        let args = args.with_limit(None);
        let plan = self.inner.scan_with_args(state, args).await?.into_inner();
        let Some(exec) = plan.downcast_ref::<DataSourceExec>() else {
            return Ok(plan.into()); // no files at all: an empty scan
        };
        let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>() else {
            return Ok(plan.into());
        };
        let visible = |location: &str| {
            let relative = location
                .strip_prefix(self.root.as_str())
                .unwrap_or(location);
            visibility.is_visible(relative)
        };
        let hides_any = config
            .file_groups
            .iter()
            .flat_map(|g| g.iter())
            .any(|f| !visible(f.object_meta.location.as_ref()));
        if !hides_any {
            return Ok(plan.into());
        }
        let groups: Vec<FileGroup> = config
            .file_groups
            .iter()
            .map(|g| {
                FileGroup::new(
                    g.iter()
                        .filter(|f| visible(f.object_meta.location.as_ref()))
                        .cloned()
                        .collect(),
                )
            })
            .filter(|g| !g.is_empty())
            .collect();
        // The table-level statistics counted the hidden files too: a `count(*)` answered from
        // them would be wrong, so they become unknown for this scan.
        let statistics =
            Statistics::new_unknown(config.file_source().table_schema().table_schema());
        let config = FileScanConfigBuilder::from(config.clone())
            .with_file_groups(groups)
            .with_statistics(statistics)
            .build();
        let exec: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
        Ok(exec.into())
    }
}
