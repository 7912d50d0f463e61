//! Functions whose output can be far larger than their input, bounded before they allocate.
//!
//! DataFusion's memory pool accounts for operators (sorts, joins, aggregates), not for what a
//! scalar function allocates: `repeat('ab', 1000000000)` or `range(0, 300000000)` would take
//! gigabytes in one call. The [`BoundFunctions`] analyzer rule wraps every call of such a
//! function in [`Bounded`], which computes from the arguments how many bytes the call would
//! produce for the batch and refuses it past `limits.max_function_output_mb`, naming the limit,
//! before the function runs. `a || b` is bounded by checking its operands (its output is their
//! sum), so a chain of concatenations can grow to at most twice the limit before it is refused.
//!
//! The bounded functions: `repeat`, `lpad`, `rpad`, `replace`, `regexp_replace`, `translate`,
//! `overlay`, `encode`, `concat`, `concat_ws`, `range`, `generate_series`, `array_repeat`,
//! `array_resize`, `array_concat`, `array_append`, `array_prepend`, `make_array`, and `||`.
//! Every other function's output is at most a small constant times its input.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array};
use arrow::datatypes::{DataType, FieldRef, Int64Type, IntervalMonthDayNanoType, TimeUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, ExprSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Documentation, Expr, LogicalPlan, Operator, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

use crate::error::LimitExceeded;

/// How the output size of a bounded function follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Estimate {
    /// `repeat(s, n)`: Σ len(s) × n.
    Repeat,
    /// `lpad/rpad(s, n [, fill])`: Σ 4 × n (a character is at most 4 bytes).
    Pad,
    /// `replace(s, from, to)`: Σ len(s) + len(s) / len(from) × (len(to) − len(from)).
    Replace,
    /// `regexp_replace(s, re, repl [, flags])`: Σ (len(s) + 1) × (2 len(repl) + 1).
    RegexpReplace,
    /// `translate`, `encode`: a constant times the input.
    Times(u64),
    /// `overlay`, `concat`, `concat_ws`, `array_concat`, `array_append`, `array_prepend`,
    /// `make_array`: the sum of the inputs.
    Sum,
    /// `range(start, stop, step)` (exclusive) and `generate_series` (inclusive): elements × 8.
    Series { inclusive: bool },
    /// `array_repeat(element, n)`: size(element) × n.
    ArrayRepeat,
    /// `array_resize(array, n [, fill])`: n × 16.
    ArrayResize,
}

fn estimate_of(name: &str) -> Option<Estimate> {
    Some(match name {
        "repeat" => Estimate::Repeat,
        "lpad" | "rpad" => Estimate::Pad,
        "replace" => Estimate::Replace,
        "regexp_replace" => Estimate::RegexpReplace,
        "translate" => Estimate::Times(4),
        "encode" => Estimate::Times(2),
        "overlay" | "concat" | "concat_ws" | "array_concat" | "array_append" | "array_prepend"
        | "make_array" => Estimate::Sum,
        "range" => Estimate::Series { inclusive: false },
        "generate_series" => Estimate::Series { inclusive: true },
        "array_repeat" => Estimate::ArrayRepeat,
        "array_resize" => Estimate::ArrayResize,
        _ => return None,
    })
}

/// The analyzer rule wrapping the bounded functions of every plan (subqueries included).
#[derive(Debug)]
pub struct BoundFunctions {
    max_bytes: u64,
}

impl BoundFunctions {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes: max_bytes as u64,
        }
    }
}

impl AnalyzerRule for BoundFunctions {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        let max = self.max_bytes;
        plan.transform_up_with_subqueries(|node| {
            node.map_expressions(|e| e.transform_up(|e| Ok(bound(e, max))))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "cdlake_bound_functions"
    }
}

/// Wrap `e` if it is a call of a bounded function or a `||`.
fn bound(e: Expr, max: u64) -> Transformed<Expr> {
    match e {
        Expr::ScalarFunction(ScalarFunction { func, args })
            if func.inner().downcast_ref::<Bounded>().is_none()
                && func.inner().downcast_ref::<SizeCheck>().is_none() =>
        {
            match estimate_of(func.name()) {
                Some(estimate) => Transformed::yes(Expr::ScalarFunction(ScalarFunction {
                    func: Arc::new(ScalarUDF::new_from_impl(Bounded {
                        inner: func.as_ref().clone(),
                        estimate,
                        max,
                    })),
                    args,
                })),
                None => Transformed::no(Expr::ScalarFunction(ScalarFunction { func, args })),
            }
        }
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::StringConcat,
            right,
        }) => {
            let check = |e: Expr| {
                if matches!(&e, Expr::ScalarFunction(f) if f.func.inner().downcast_ref::<SizeCheck>().is_some())
                    || matches!(&e, Expr::Literal(..))
                {
                    e
                } else {
                    Expr::ScalarFunction(ScalarFunction {
                        func: Arc::new(ScalarUDF::new_from_impl(SizeCheck::new(max))),
                        args: vec![e],
                    })
                }
            };
            Transformed::yes(Expr::BinaryExpr(BinaryExpr {
                left: Box::new(check(*left)),
                op: Operator::StringConcat,
                right: Box::new(check(*right)),
            }))
        }
        e => Transformed::no(e),
    }
}

fn wrap_all(e: Expr, max: u64) -> Result<Expr> {
    e.transform_up(|e| Ok(bound(e, max))).map(|t| t.data)
}

fn refuse(name: &str, bytes: u64, max: u64) -> DataFusionError {
    LimitExceeded {
        limit: "max_function_output_mb",
        message: format!(
            "{name}(…) would produce about {} MiB for one batch of rows, more than the {} MiB a function call may",
            bytes >> 20,
            max >> 20
        ),
    }
    .into()
}

/// A bounded function: the output size is checked from the arguments before `inner` runs.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Bounded {
    inner: ScalarUDF,
    estimate: Estimate,
    max: u64,
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.schema_name(args)
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

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    #[allow(deprecated)]
    fn is_nullable(&self, args: &[Expr], schema: &dyn ExprSchema) -> bool {
        self.inner.is_nullable(args, schema)
    }

    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = estimate(self.estimate, &args.args, args.number_rows)?;
        if bytes > self.max {
            return Err(refuse(self.inner.name(), bytes, self.max));
        }
        self.inner.invoke_with_args(args)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        Ok(match self.inner.simplify(args, info)? {
            ExprSimplifyResult::Simplified(e) => {
                ExprSimplifyResult::Simplified(wrap_all(e, self.max)?)
            }
            original => original,
        })
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.inner.evaluate_bounds(input)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// The identity, refusing a value larger than the limit: the operands of `||`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SizeCheck {
    signature: Signature,
    max: u64,
}

impl SizeCheck {
    fn new(max: u64) -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
            max,
        }
    }
}

impl ScalarUDFImpl for SizeCheck {
    fn name(&self) -> &str {
        "cdlake_size_check"
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        // Shown as its operand, so column names stay what the user wrote.
        Ok(args.first().map(|a| a.to_string()).unwrap_or_default())
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        Ok(args
            .first()
            .map(|a| a.schema_name().to_string())
            .unwrap_or_default())
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types.first().cloned().unwrap_or(DataType::Null))
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let value = args.args.swap_remove(0);
        let bytes = total(&value, args.number_rows);
        if bytes > self.max {
            return Err(refuse("||", bytes, self.max));
        }
        Ok(value)
    }
}

// ---- estimates ----------------------------------------------------------------------------

/// One argument as 64-bit integers per row (after a cast), broadcasting a scalar.
enum Ints {
    Scalar(Option<i64>),
    Array(Int64Array),
}

impl Ints {
    fn get(&self, i: usize) -> Option<i64> {
        match self {
            Ints::Scalar(v) => *v,
            Ints::Array(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

fn ints(v: &ColumnarValue) -> Result<Ints> {
    Ok(match v {
        ColumnarValue::Scalar(s) => match s.cast_to(&DataType::Int64)? {
            ScalarValue::Int64(v) => Ints::Scalar(v),
            _ => Ints::Scalar(None),
        },
        ColumnarValue::Array(a) => {
            let a = arrow::compute::cast(a, &DataType::Int64)?;
            Ints::Array(a.as_primitive::<Int64Type>().clone())
        }
    })
}

/// Byte lengths of a string or binary argument per row (0 for other types).
fn lengths(v: &ColumnarValue) -> Result<Ints> {
    let array = match v {
        ColumnarValue::Scalar(s) => s.to_array_of_size(1)?,
        ColumnarValue::Array(a) => a.clone(),
    };
    let l = match arrow::compute::kernels::length::length(array.as_ref()) {
        Ok(l) => arrow::compute::cast(&l, &DataType::Int64)?,
        Err(_) => return Ok(Ints::Scalar(Some(0))),
    };
    let l = l.as_primitive::<Int64Type>().clone();
    Ok(match v {
        ColumnarValue::Scalar(_) => Ints::Scalar(l.is_valid(0).then(|| l.value(0))),
        ColumnarValue::Array(_) => Ints::Array(l),
    })
}

/// The bytes of a value for `rows` rows (a scalar counts once per row).
fn total(v: &ColumnarValue, rows: usize) -> u64 {
    match v {
        ColumnarValue::Array(a) => sliced_bytes(a.as_ref()),
        ColumnarValue::Scalar(s) => (s.size() as u64).saturating_mul(rows as u64),
    }
}

/// The bytes an array's rows take: its slice, not the whole buffers it may share with other
/// arrays (a Parquet page behind string views, the unsliced parent of a slice).
pub(crate) fn sliced_bytes(a: &dyn Array) -> u64 {
    let views = |views: &[u128]| {
        views.iter().fold(16 * views.len() as u64, |acc, v| {
            let len = *v as u32;
            acc + if len > 12 { u64::from(len) } else { 0 }
        })
    };
    match a.data_type() {
        DataType::Utf8View => views(a.as_string_view().views()),
        DataType::BinaryView => views(a.as_binary_view().views()),
        _ => a
            .to_data()
            .get_slice_memory_size()
            .unwrap_or_else(|_| a.get_array_memory_size()) as u64,
    }
}

fn sum_rows(rows: usize, f: impl Fn(usize) -> u64) -> u64 {
    (0..rows).fold(0u64, |acc, i| acc.saturating_add(f(i)))
}

fn arg(args: &[ColumnarValue], i: usize) -> Result<&ColumnarValue> {
    args.get(i)
        .ok_or_else(|| DataFusionError::Plan(format!("missing argument {}", i + 1)))
}

/// The output bytes a call would produce for `rows` rows.
fn estimate(kind: Estimate, args: &[ColumnarValue], rows: usize) -> Result<u64> {
    let pos = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
    Ok(match kind {
        Estimate::Repeat => {
            let (s, n) = (lengths(arg(args, 0)?)?, ints(arg(args, 1)?)?);
            sum_rows(rows, |i| pos(s.get(i)).saturating_mul(pos(n.get(i))))
        }
        Estimate::Pad => {
            let n = ints(arg(args, 1)?)?;
            sum_rows(rows, |i| pos(n.get(i)).saturating_mul(4))
        }
        Estimate::Replace => {
            let (s, from, to) = (
                lengths(arg(args, 0)?)?,
                lengths(arg(args, 1)?)?,
                lengths(arg(args, 2)?)?,
            );
            sum_rows(rows, |i| {
                let (s, from, to) = (pos(s.get(i)), pos(from.get(i)).max(1), pos(to.get(i)));
                s.saturating_add((s / from).saturating_mul(to.saturating_sub(from)))
            })
        }
        Estimate::RegexpReplace => {
            let (s, repl) = (lengths(arg(args, 0)?)?, lengths(arg(args, 2)?)?);
            sum_rows(rows, |i| {
                (pos(s.get(i)) + 1).saturating_mul(pos(repl.get(i)).saturating_mul(2) + 1)
            })
        }
        Estimate::Times(k) => args.first().map_or(0, |a| total(a, rows)).saturating_mul(k),
        Estimate::Sum => args
            .iter()
            .fold(0u64, |acc, a| acc.saturating_add(total(a, rows))),
        Estimate::Series { inclusive } => series(args, rows, inclusive)?,
        Estimate::ArrayRepeat => {
            let element = arg(args, 0)?;
            let per_row = total(element, rows) / rows.max(1) as u64 + 8;
            let n = ints(arg(args, 1)?)?;
            sum_rows(rows, |i| per_row.saturating_mul(pos(n.get(i))))
        }
        Estimate::ArrayResize => {
            let n = ints(arg(args, 1)?)?;
            sum_rows(rows, |i| pos(n.get(i)).saturating_mul(16))
        }
    })
}

/// Bytes of `range`/`generate_series` lists: (start, stop, step) as integers, dates or
/// timestamps with an interval step.
fn series(args: &[ColumnarValue], rows: usize, inclusive: bool) -> Result<u64> {
    let (start, stop, step) = match args.len() {
        1 => (None, &args[0], None),
        2 => (Some(&args[0]), &args[1], None),
        _ => (Some(&args[0]), &args[1], Some(&args[2])),
    };
    let data_type = stop.data_type();
    let temporal = matches!(
        data_type,
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(..)
    );
    let as_micros = |v: &ColumnarValue| -> Result<Ints> {
        if !temporal {
            return ints(v);
        }
        let micros = DataType::Timestamp(TimeUnit::Microsecond, None);
        match v {
            ColumnarValue::Scalar(s) => ints(&ColumnarValue::Scalar(s.cast_to(&micros)?)),
            ColumnarValue::Array(a) => {
                ints(&ColumnarValue::Array(arrow::compute::cast(a, &micros)?))
            }
        }
    };
    let stop = as_micros(stop)?;
    let start = match start {
        Some(s) => as_micros(s)?,
        None => Ints::Scalar(Some(0)),
    };
    // The smallest step in microseconds (a month counts as 28 days), or in units.
    let step: Box<dyn Fn(usize) -> Option<i64>> = match step {
        None => Box::new(|_| Some(if temporal { 86_400_000_000 } else { 1 })),
        Some(v) if matches!(v.data_type(), DataType::Interval(_)) => {
            let array = match v {
                ColumnarValue::Scalar(s) => s.to_array_of_size(1)?,
                ColumnarValue::Array(a) => a.clone(),
            };
            let array = arrow::compute::cast(
                &array,
                &DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano),
            )?;
            let steps: Vec<Option<i64>> = array
                .as_primitive::<IntervalMonthDayNanoType>()
                .iter()
                .map(|v| {
                    v.map(|v| {
                        i64::from(v.months) * 28 * 86_400_000_000
                            + i64::from(v.days) * 86_400_000_000
                            + v.nanoseconds / 1000
                    })
                })
                .collect();
            let scalar = matches!(v, ColumnarValue::Scalar(_));
            Box::new(move |i| {
                if scalar {
                    steps[0]
                } else {
                    steps.get(i).copied().flatten()
                }
            })
        }
        Some(v) => {
            let step = ints(v)?;
            Box::new(move |i| step.get(i))
        }
    };
    Ok(sum_rows(rows, |i| {
        let (Some(a), Some(b), Some(s)) = (start.get(i), stop.get(i), step(i)) else {
            return 0;
        };
        if s == 0 {
            return 0;
        }
        let span = (i128::from(b) - i128::from(a)) / i128::from(s);
        let elements = span.max(0) as u64 + u64::from(inclusive);
        elements.saturating_mul(8)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(v: ScalarValue) -> ColumnarValue {
        ColumnarValue::Scalar(v)
    }

    #[test]
    fn estimates_follow_the_arguments() {
        let s = |v: &str| scalar(ScalarValue::Utf8(Some(v.to_string())));
        let n = |v: i64| scalar(ScalarValue::Int64(Some(v)));
        assert_eq!(
            estimate(Estimate::Repeat, &[s("ab"), n(1_000_000_000)], 1).unwrap(),
            2_000_000_000
        );
        assert_eq!(estimate(Estimate::Repeat, &[s("ab"), n(-5)], 1).unwrap(), 0);
        assert_eq!(
            estimate(Estimate::Repeat, &[s("x"), n(10)], 8192).unwrap(),
            81_920
        );
        assert_eq!(
            estimate(Estimate::Pad, &[s("x"), n(2_147_483_647)], 1).unwrap(),
            4 * 2_147_483_647
        );
        assert_eq!(
            estimate(
                Estimate::Series { inclusive: false },
                &[n(0), n(300_000_000)],
                1
            )
            .unwrap(),
            2_400_000_000
        );
        assert_eq!(
            estimate(
                Estimate::Series { inclusive: true },
                &[n(1), n(10), n(3)],
                1
            )
            .unwrap(),
            (3 + 1) * 8
        );
        assert_eq!(
            estimate(Estimate::Replace, &[s("aaaa"), s("a"), s("bbb")], 1).unwrap(),
            4 + 4 * 2
        );
        let days = ScalarValue::IntervalMonthDayNano(Some(
            arrow::datatypes::IntervalMonthDayNano::new(0, 0, 1_000_000_000),
        ));
        let d = |v: i32| scalar(ScalarValue::Date32(Some(v)));
        // A century of seconds.
        let bytes = estimate(
            Estimate::Series { inclusive: true },
            &[d(0), d(36_500), scalar(days)],
            1,
        )
        .unwrap();
        assert_eq!(bytes, (36_500 * 86_400 + 1) * 8);
    }
}
