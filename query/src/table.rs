//! [`LakeTable`]: a table of the store as the query engine reads it: the Delta Lake snapshot of
//! the table, refreshed before each scan so every committed file is seen by the next query.
//!
//! The scan itself is `deltalake`'s (`DeltaScan`): it lists the snapshot's files (no directory
//! listing), prunes them by the `date` partition and the time statistics, and answers
//! `count(*)` from the files' row counts. Partition values come back as plain `Utf8` (not
//! dictionaries) and strings as `Utf8View`, as DataFusion's own Parquet tables give them.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use cdlake_schemas::lake::TableLog;
use datafusion::catalog::{Session, TableProvider};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use deltalake_core::delta_datafusion::{DeltaScanConfig, DeltaScanNext};

/// A table of the store, read from its Delta log.
#[derive(Debug)]
pub(crate) struct LakeTable {
    log: Arc<TableLog>,
    schema: SchemaRef,
}

fn config() -> DeltaScanConfig {
    DeltaScanConfig::new().with_wrap_partition_values(false)
}

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl LakeTable {
    pub(crate) async fn new(log: Arc<TableLog>) -> Result<Self> {
        let snapshot = log.snapshot().await.map_err(external)?;
        let schema = DeltaScanNext::new(snapshot, config())
            .map_err(external)?
            .schema();
        Ok(Self { log, schema })
    }

    /// A scan of the newest snapshot (or the pinned one).
    async fn current(&self) -> Result<DeltaScanNext> {
        self.log.refresh().await.map_err(external)?;
        let snapshot = self.log.snapshot().await.map_err(external)?;
        DeltaScanNext::new(snapshot, config()).map_err(external)
    }
}

#[async_trait]
impl TableProvider for LakeTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // The scan prunes files with the filters; the rows are filtered above it.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let scan = self.current().await?;
        if scan.schema().fields() != self.schema.fields() {
            // A column was added since the engine opened the table: the session's plans were
            // made with the old columns, which the new files still have.
            tracing::debug!(
                table = self.log.table().dir(),
                "The table's schema changed; reading the columns the engine knows."
            );
        }
        scan.scan(state, projection, filters, limit).await
    }
}
