//! `percentile_cont` computed exactly, as `cdlake dora` computes its medians and p90s.
//!
//! DataFusion 55's `percentile_cont` rounds the interpolation weight down to six decimals
//! (apache/datafusion#25266): `percentile_cont(0.9)` over 1..10 gives 9.099999, not 9.1, so a
//! Grafana panel and the report disagreed in the seventh digit. This one keeps DataFusion's
//! signature, its `WITHIN GROUP (ORDER BY …)` form, its alias `quantile_cont` and its rewrite of
//! the 0 and 1 percentiles to `min`/`max`, and interpolates in full precision:
//! `lower + (upper - lower) × (p × (n - 1) - ⌊p × (n - 1)⌋)` over the non-null values in
//! order ([`crate::dora::percentile`], the report's own). `DISTINCT` and non-`Float64` inputs go to DataFusion's own implementation.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, ListArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::functions_aggregate::percentile_cont::PercentileCont;
use datafusion::logical_expr::function::{
    AccumulatorArgs, AggregateFunctionSimplification, StateFieldsArgs,
};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, Documentation, EmitTo,
    GroupsAccumulator, Signature,
};

/// `percentile_cont`, exact for `Float64` (the type every cdlake duration is).
#[derive(Debug, PartialEq, Eq, Hash, Default)]
pub struct ExactPercentileCont {
    inner: PercentileCont,
}

/// The UDAF to register in a session (it replaces DataFusion's of the same name).
pub fn udaf() -> AggregateUDF {
    AggregateUDF::from(ExactPercentileCont::default())
}

impl ExactPercentileCont {
    fn exact(args: &AccumulatorArgs) -> bool {
        !args.is_distinct && args.expr_fields[0].data_type() == &DataType::Float64
    }
}

impl AggregateUDFImpl for ExactPercentileCont {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if !Self::exact(&args) {
            return self.inner.accumulator(args);
        }
        Ok(Box::new(Exact {
            percentile: percentile(&args)?,
            values: Vec::new(),
        }))
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        Self::exact(&args) || self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        if !Self::exact(&args) {
            return self.inner.create_groups_accumulator(args);
        }
        Ok(Box::new(ExactGroups {
            percentile: percentile(&args)?,
            groups: Vec::new(),
        }))
    }

    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        self.inner.simplify()
    }

    fn supports_within_group_clause(&self) -> bool {
        self.inner.supports_within_group_clause()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// The percentile argument (a literal between 0 and 1), mirrored for a descending order.
fn percentile(args: &AccumulatorArgs) -> Result<f64> {
    // A literal evaluates to itself over a batch of no rows and no columns.
    let empty = arrow::array::RecordBatch::new_empty(Arc::new(arrow::datatypes::Schema::empty()));
    let value = match args.exprs.get(1).map(|e| e.evaluate(&empty)) {
        Some(Ok(ColumnarValue::Scalar(value))) => value,
        _ => {
            return exec_err!("percentile_cont: the percentile must be a literal between 0 and 1");
        }
    };
    let p = match value.cast_to(&DataType::Float64)? {
        ScalarValue::Float64(Some(p)) if (0.0..=1.0).contains(&p) => p,
        other => {
            return exec_err!(
                "percentile_cont: the percentile must be between 0 and 1, not {other}"
            );
        }
    };
    let descending = args.order_bys.first().is_some_and(|s| s.options.descending);
    Ok(if descending { 1.0 - p } else { p })
}

#[derive(Debug)]
struct Exact {
    percentile: f64,
    values: Vec<f64>,
}

impl Accumulator for Exact {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let array = values[0].as_primitive::<Float64Type>();
        self.values.extend(array.iter().flatten());
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists = states[0].as_list::<i32>();
        for list in lists.iter().flatten() {
            self.values
                .extend(list.as_primitive::<Float64Type>().iter().flatten());
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let list = value_lists(vec![std::mem::take(&mut self.values)]);
        Ok(vec![ScalarValue::List(Arc::new(list))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(crate::dora::percentile(
            &mut self.values,
            self.percentile,
        )))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.values.capacity() * std::mem::size_of::<f64>()
    }
}

/// [`Exact`] for many groups at once: a value list per group.
#[derive(Debug)]
struct ExactGroups {
    percentile: f64,
    groups: Vec<Vec<f64>>,
}

impl GroupsAccumulator for ExactGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize(total_num_groups, Vec::new());
        let values = values[0].as_primitive::<Float64Type>();
        for (row, &group) in group_indices.iter().enumerate() {
            if let Some(value) = kept(values, opt_filter, row) {
                self.groups[group].push(value);
            }
        }
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize(total_num_groups, Vec::new());
        let lists = values[0].as_list::<i32>();
        for (list, &group) in lists.iter().zip(group_indices) {
            if let Some(list) = list {
                self.groups[group].extend(list.as_primitive::<Float64Type>().iter().flatten());
            }
        }
        Ok(())
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let groups = emit_to.take_needed(&mut self.groups);
        Ok(vec![Arc::new(value_lists(groups))])
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let groups = emit_to.take_needed(&mut self.groups);
        let out: Float64Array = groups
            .into_iter()
            .map(|mut values| crate::dora::percentile(&mut values, self.percentile))
            .collect();
        Ok(Arc::new(out))
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // Each row its own group: a list of its value, or an empty list when it is NULL or
        // filtered out.
        let values = values[0].as_primitive::<Float64Type>();
        let lists = (0..values.len())
            .map(|row| kept(values, opt_filter, row).into_iter().collect())
            .collect();
        Ok(vec![Arc::new(value_lists(lists))])
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self.groups.capacity() * std::mem::size_of::<Vec<f64>>()
            + self
                .groups
                .iter()
                .map(|g| g.capacity() * std::mem::size_of::<f64>())
                .sum::<usize>()
    }
}

/// The value of `row` when it is not NULL and `opt_filter` keeps it.
fn kept(values: &Float64Array, opt_filter: Option<&BooleanArray>, row: usize) -> Option<f64> {
    let kept = opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row));
    (kept && values.is_valid(row)).then(|| values.value(row))
}

/// A list of `Float64` per entry of `lists`: the state of one or many groups.
fn value_lists(lists: Vec<Vec<f64>>) -> ListArray {
    let offsets = OffsetBuffer::from_lengths(lists.iter().map(Vec::len));
    let values = Float64Array::from(lists.into_iter().flatten().collect::<Vec<f64>>());
    ListArray::new(
        Arc::new(Field::new_list_field(DataType::Float64, true)),
        offsets,
        Arc::new(values),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn one(sql: &str) -> String {
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_udaf(udaf());
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
            .lines()
            .nth(3)
            .unwrap()
            .trim_matches(|c| c == '|' || c == ' ')
            .to_string()
    }

    const ONE_TO_TEN: &str = "(SELECT CAST(v AS DOUBLE) AS v FROM (VALUES (3),(1),(2),(10),(5),(4),(6),(8),(7),(9),(NULL)) t(v))";

    #[tokio::test]
    async fn p90_of_one_to_ten_is_nine_point_one_exactly() {
        // PostgreSQL: percentile_cont(0.9) over 1..10 is 1 + 0.9 × 9 = 9.1.
        assert_eq!(
            one(&format!(
                "SELECT percentile_cont(0.9) WITHIN GROUP (ORDER BY v) = 9.1 FROM {ONE_TO_TEN}"
            ))
            .await,
            "true"
        );
        assert_eq!(
            one(&format!("SELECT quantile_cont(v, 0.5) FROM {ONE_TO_TEN}")).await,
            "5.5"
        );
        // Descending order mirrors the percentile; grouped, each group has its own.
        assert_eq!(
            one(&format!(
                "SELECT percentile_cont(0.1) WITHIN GROUP (ORDER BY v DESC) = 9.1 FROM {ONE_TO_TEN}"
            ))
            .await,
            "true"
        );
        assert_eq!(
            one(&format!(
                "SELECT string_agg(CAST(round(p, 9) AS VARCHAR), ',' ORDER BY g) FROM (SELECT v > 5 AS g, percentile_cont(0.9) WITHIN GROUP (ORDER BY v) AS p FROM {ONE_TO_TEN} WHERE v IS NOT NULL GROUP BY v > 5)"
            ))
            .await,
            "4.6,9.6"
        );
        // Grouped with a filter, through the groups accumulator: {2, 4} and {1, 3, 5}.
        assert_eq!(
            one(&format!(
                "SELECT string_agg(CAST(round(p, 9) AS VARCHAR), ',' ORDER BY g) FROM (SELECT CAST(v AS BIGINT) % 2 AS g, percentile_cont(0.9) WITHIN GROUP (ORDER BY v) FILTER (WHERE v <= 5) AS p FROM {ONE_TO_TEN} WHERE v IS NOT NULL GROUP BY CAST(v AS BIGINT) % 2)"
            ))
            .await,
            "3.8,4.6"
        );
    }
}
