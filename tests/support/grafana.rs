//! Grafana's interpolation of a PostgreSQL panel's SQL, as the dashboards test needs it: the
//! frontend's template variables (`templateSrv.replace` with the SQL data source's
//! `interpolateVariable`) and the backend's macros (`sqleng.Interpolate`, then the macro engine
//! of `pkg/tsdb/grafana-postgresql-datasource/macros.go`), with Grafana's own cases.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use regex::Regex;

/// A template variable of a dashboard.
#[derive(Debug, Clone)]
pub(crate) struct Variable {
    pub(crate) name: String,
    pub(crate) query: String,
    pub(crate) multi: bool,
    pub(crate) include_all: bool,
    pub(crate) all_value: Option<String>,
}

/// A variable's current value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Selection {
    All,
    Values(Vec<String>),
}

/// The variables of a dashboard with their current values and the options their queries gave.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scope {
    pub(crate) vars: BTreeMap<String, (Variable, Selection, Vec<String>)>,
}

/// `quoteLiteral` of Grafana's SQL data sources.
pub(crate) fn quote_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// What Grafana's frontend puts in place of a variable for a PostgreSQL query:
/// `templateSrv.replace(sql, scopedVars, SqlDatasource.interpolateVariable)`.
pub(crate) fn format_variable(var: &Variable, selection: &Selection, options: &[String]) -> String {
    match selection {
        Selection::All => match &var.all_value {
            // A custom all value skips formatting (`SkipFormattingValue`): inserted as it is.
            Some(custom) => custom.clone(),
            // Otherwise "All" is every option's value, formatted as an array.
            None => options
                .iter()
                .map(|v| quote_literal(v))
                .collect::<Vec<_>>()
                .join(","),
        },
        // A multi-value variable's value is an array (even of one value): quoted, joined by ','.
        Selection::Values(values) if var.multi => values
            .iter()
            .map(|v| quote_literal(v))
            .collect::<Vec<_>>()
            .join(","),
        // A single string: quoted when the variable is multi or include-all, else escaped only.
        Selection::Values(values) => {
            let v = values.first().map(String::as_str).unwrap_or_default();
            if var.include_all {
                quote_literal(v)
            } else {
                v.replace('\'', "''")
            }
        }
    }
}

/// Grafana's template variable syntax: `$var`, `[[var]]`, `[[var:fmt]]`, `${var}`,
/// `${var.field}`, `${var:fmt}` (the `variableRegex` of `@grafana/data`).
pub(crate) fn variable_regex() -> Regex {
    Regex::new(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}")
        .expect("variable regex")
}

/// Replace the dashboard variables in `sql`; names that are not variables (Grafana's macros
/// such as `$__timeFilter`) are left for the backend.
pub(crate) fn interpolate_variables(sql: &str, scope: &Scope) -> Result<String, String> {
    let re = variable_regex();
    let mut error = None;
    let out = re.replace_all(sql, |c: &regex::Captures<'_>| {
        let whole = c[0].to_string();
        let name = c
            .get(1)
            .or(c.get(2))
            .or(c.get(4))
            .map(|m| m.as_str())
            .unwrap_or_default();
        let Some((var, selection, options)) = scope.vars.get(name) else {
            return whole;
        };
        if c.get(3).or(c.get(5)).or(c.get(6)).is_some() {
            error.get_or_insert(format!(
                "{whole}: a format or field path would change the quoting; use ${name}"
            ));
            return whole;
        }
        format_variable(var, selection, options)
    });
    match error {
        Some(e) => Err(e),
        None => Ok(out.into_owned()),
    }
}

/// A dashboard time range, as Grafana's backend receives it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeRange {
    pub(crate) from: DateTime<Utc>,
    pub(crate) to: DateTime<Utc>,
}

/// Go's `t.UTC().Format(time.RFC3339Nano)`: the fraction without trailing zeros, none at all
/// for a whole second.
pub(crate) fn rfc3339_nano(t: DateTime<Utc>) -> String {
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    if nanos == 0 {
        format!("{base}Z")
    } else {
        let fraction = format!("{nanos:09}");
        format!("{base}.{}Z", fraction.trim_end_matches('0'))
    }
}

/// Go's `fmt.Sprintf("%v", f)` of a float64: the shortest representation, in exponent form
/// (`2.592e+06`) when the exponent is below -4 or at least 6.
pub(crate) fn go_float(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{v}")
    }
}

/// `gtime.ParseInterval` for the fixed-length units (`M` and `y` depend on the calendar).
pub(crate) fn parse_interval(s: &str) -> Result<f64, String> {
    let re = Regex::new(r"^(\d+)(ms|s|m|h|d|w)$").expect("interval regex");
    let c = re
        .captures(s)
        .ok_or_else(|| format!("error parsing interval {s}"))?;
    let n: f64 = c[1]
        .parse()
        .map_err(|_| format!("error parsing interval {s}"))?;
    let unit = match &c[2] {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => 604800.0,
    };
    Ok(n * unit)
}

/// One macro of `postgresMacroEngine.evaluateMacro` (TimescaleDB off).
pub(crate) fn evaluate_macro(
    name: &str,
    args: &[String],
    range: TimeRange,
) -> Result<String, String> {
    let arg0 = args.first().cloned().unwrap_or_default();
    let (from, to) = (rfc3339_nano(range.from), rfc3339_nano(range.to));
    let group = |args: &[String]| -> Result<String, String> {
        if args.len() < 2 {
            return Err(format!(
                "macro {name} needs time column and interval and optional fill value"
            ));
        }
        let seconds = parse_interval(args[1].trim_matches('\''))?;
        if let Some(fill) = args.get(2) {
            // The fill mode only shapes Grafana's frame, not the SQL; it must still parse.
            if fill != "NULL" && fill != "previous" && fill.parse::<f64>().is_err() {
                return Err(format!("error parsing fill value {fill}"));
            }
        }
        Ok(go_float(seconds))
    };
    Ok(match name {
        "__time" => format!("{arg0} AS \"time\""),
        "__timeEpoch" => format!("extract(epoch from {arg0}) as \"time\""),
        "__timeFilter" => format!("{arg0} BETWEEN '{from}' AND '{to}'"),
        "__timeFrom" => format!("'{from}'"),
        "__timeTo" => format!("'{to}'"),
        "__timeGroup" => {
            let s = group(args)?;
            format!("floor(extract(epoch from {arg0})/{s})*{s}")
        }
        "__timeGroupAlias" => format!(
            "{} AS \"time\"",
            evaluate_macro("__timeGroup", args, range)?
        ),
        "__unixEpochFilter" => format!(
            "{arg0} >= {} AND {arg0} <= {}",
            range.from.timestamp(),
            range.to.timestamp()
        ),
        "__unixEpochNanoFilter" => format!(
            "{arg0} >= {} AND {arg0} <= {}",
            range.from.timestamp_nanos_opt().unwrap_or_default(),
            range.to.timestamp_nanos_opt().unwrap_or_default()
        ),
        "__unixEpochNanoFrom" => range
            .from
            .timestamp_nanos_opt()
            .unwrap_or_default()
            .to_string(),
        "__unixEpochNanoTo" => range
            .to
            .timestamp_nanos_opt()
            .unwrap_or_default()
            .to_string(),
        "__unixEpochGroup" => {
            let s = group(args)?;
            format!("floor(({arg0})/{s})*{s}")
        }
        "__unixEpochGroupAlias" => format!(
            "{} AS \"time\"",
            evaluate_macro("__unixEpochGroup", args, range)?
        ),
        other => return Err(format!("unknown macro \"{other}\"")),
    })
}

/// What Grafana's backend does to the SQL before sending it: `sqleng.Interpolate` (the global
/// `$__interval…` and `$__unixEpochFrom()`/`To()`), then `postgresMacroEngine.Interpolate`:
/// every `$name(args)` (the regex `\$([_a-zA-Z0-9]+)\(([^\)]*)\)`, so arguments hold no `)`),
/// arguments split at `,` and trimmed of spaces, with the pre-5.3 rule that a `$__timeGroup(…)`
/// directly followed by `,` (at its first occurrence) means `$__timeGroupAlias(…)`.
pub(crate) fn expand_macros(sql: &str, range: TimeRange) -> Result<String, String> {
    if sql.contains("$__interval") {
        return Err(
            "$__interval depends on the panel's width: use a fixed interval (1m, 1d …)".into(),
        );
    }
    let sql = sql
        .replace("$__unixEpochFrom()", &range.from.timestamp().to_string())
        .replace("$__unixEpochTo()", &range.to.timestamp().to_string());
    let re = Regex::new(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)").expect("macro regex");
    let mut out = String::new();
    let mut last = 0;
    for c in re.captures_iter(&sql) {
        let whole = c.get(0).expect("match");
        let mut name = c[1].to_string();
        if name == "__timeGroup"
            && let Some(index) = sql.find(whole.as_str())
            && sql.as_bytes().get(index + whole.len()) == Some(&b',')
        {
            name = "__timeGroupAlias".to_string();
        }
        let args: Vec<String> = c[2]
            .split(',')
            .map(|a| a.trim_matches(' ').to_string())
            .collect();
        out.push_str(&sql[last..whole.start()]);
        out.push_str(&evaluate_macro(&name, &args, range)?);
        last = whole.end();
    }
    out.push_str(&sql[last..]);
    Ok(out)
}

/// Both steps: what the Postgres endpoint receives for `sql`.
pub(crate) fn expand(sql: &str, scope: &Scope, range: TimeRange) -> Result<String, String> {
    expand_macros(&interpolate_variables(sql, scope)?, range)
}

// ---- the expansion itself, against Grafana's own cases -------------------------------------

pub(crate) fn grafana_range() -> TimeRange {
    let from = Utc
        .with_ymd_and_hms(2018, 4, 12, 18, 0, 0)
        .single()
        .expect("time");
    TimeRange {
        from,
        to: from + chrono::Duration::minutes(5),
    }
}

/// Cases of `macros_test.go` of Grafana's PostgreSQL data source.
#[test]
pub(crate) fn macros_expand_as_grafanas_postgres_macro_engine() {
    let r = grafana_range();
    let cases = [
        (
            "select $__time(time_column)",
            "select time_column AS \"time\"",
        ),
        (
            "select min($__time(time_column))",
            "select min(time_column AS \"time\")",
        ),
        (
            "WHERE $__timeFilter(time_column)",
            "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'",
        ),
        ("select $__timeFrom()", "select '2018-04-12T18:00:00Z'"),
        ("select $__timeTo()", "select '2018-04-12T18:05:00Z'"),
        (
            "SELECT $__timeGroup(time_column,'5m'), value",
            "SELECT floor(extract(epoch from time_column)/300)*300 AS \"time\", value",
        ),
        (
            "SELECT $__timeGroup(time_column,'5m') as time, value",
            "SELECT floor(extract(epoch from time_column)/300)*300 as time, value",
        ),
        (
            "SELECT $__timeGroup(time_column,'5m')",
            "SELECT floor(extract(epoch from time_column)/300)*300",
        ),
        (
            "SELECT $__timeGroupAlias(time_column,'5m')",
            "SELECT floor(extract(epoch from time_column)/300)*300 AS \"time\"",
        ),
        (
            "$__timeGroup(time_column , '5m')",
            "floor(extract(epoch from time_column)/300)*300",
        ),
        (
            "$__timeGroupAlias(time_column , '5m')",
            "floor(extract(epoch from time_column)/300)*300 AS \"time\"",
        ),
        (
            "SELECT $__timeGroupAlias(time, 1d), count(*)",
            "SELECT floor(extract(epoch from time)/86400)*86400 AS \"time\", count(*)",
        ),
        (
            "SELECT $__timeGroupAlias(time, 30d, 0)",
            "SELECT floor(extract(epoch from time)/2.592e+06)*2.592e+06 AS \"time\"",
        ),
        (
            "SELECT $__timeGroup(time, 20ms)",
            "SELECT floor(extract(epoch from time)/0.02)*0.02",
        ),
        (
            "select $__unixEpochFilter(time)",
            "select time >= 1523556000 AND time <= 1523556300",
        ),
        (
            "select $__unixEpochNanoFilter(time)",
            "select time >= 1523556000000000000 AND time <= 1523556300000000000",
        ),
        (
            "select $__unixEpochNanoFrom()",
            "select 1523556000000000000",
        ),
        (
            "select $__unixEpochFrom(), $__unixEpochTo()",
            "select 1523556000, 1523556300",
        ),
        (
            "SELECT $__unixEpochGroup(time_column+time_adjustment,'5m')",
            "SELECT floor((time_column+time_adjustment)/300)*300",
        ),
        (
            "SELECT $__unixEpochGroupAlias(time_column+time_adjustment,'5m')",
            "SELECT floor((time_column+time_adjustment)/300)*300 AS \"time\"",
        ),
    ];
    for (sql, expected) in cases {
        assert_eq!(expand_macros(sql, r).as_deref(), Ok(expected), "{sql}");
    }
    assert!(expand_macros("select $__nope(x)", r).is_err());
    assert!(expand_macros("select $__timeGroup(x)", r).is_err());
    assert!(expand_macros("select $__timeGroup(x, 5q)", r).is_err());
    assert!(expand_macros("select $__timeGroupAlias(time, $__interval)", r).is_err());

    // RFC3339Nano: the fraction without trailing zeros.
    let half = TimeRange {
        from: Utc
            .with_ymd_and_hms(1960, 2, 1, 7, 0, 0)
            .single()
            .expect("time")
            + chrono::Duration::milliseconds(500),
        to: Utc
            .with_ymd_and_hms(1980, 2, 3, 8, 0, 0)
            .single()
            .expect("time")
            + chrono::Duration::nanoseconds(120),
    };
    assert_eq!(
        expand_macros("$__timeFilter(t)", half).as_deref(),
        Ok("t BETWEEN '1960-02-01T07:00:00.5Z' AND '1980-02-03T08:00:00.00000012Z'")
    );
    assert_eq!(go_float(604800.0), "604800");
    assert_eq!(go_float(1e6), "1e+06");
    assert_eq!(go_float(0.0001), "0.0001");
    assert_eq!(go_float(0.00001), "1e-05");
}

#[test]
pub(crate) fn variables_expand_as_grafanas_sql_data_sources() {
    let var = |name: &str, multi: bool, include_all: bool, all_value: Option<&str>| Variable {
        name: name.into(),
        query: String::new(),
        multi,
        include_all,
        all_value: all_value.map(str::to_string),
    };
    let options = vec!["cart".to_string(), "o'brien".to_string()];
    let mut scope = Scope::default();
    let mut set = |v: Variable, s: Selection| {
        scope.vars.insert(v.name.clone(), (v, s, options.clone()));
    };
    set(var("service", true, true, Some("'__all'")), Selection::All);
    set(var("team", true, true, None), Selection::All);
    set(
        var("pipeline", true, true, Some("'__all'")),
        Selection::Values(vec!["a".into(), "b'c".into()]),
    );
    set(
        var("env", false, false, None),
        Selection::Values(vec!["pr'od".into()]),
    );
    set(
        var("one", false, true, None),
        Selection::Values(vec!["x".into()]),
    );
    let cases = [
        ("service IN ($service)", "service IN ('__all')"),
        ("service IN (${service})", "service IN ('__all')"),
        ("service IN ([[service]])", "service IN ('__all')"),
        ("team IN ($team)", "team IN ('cart','o''brien')"),
        ("p IN ($pipeline)", "p IN ('a','b''c')"),
        ("e = '$env'", "e = 'pr''od'"),
        ("o = $one", "o = 'x'"),
        (
            "$services $__timeFilter(time) $1",
            "$services $__timeFilter(time) $1",
        ),
    ];
    for (sql, expected) in cases {
        assert_eq!(
            interpolate_variables(sql, &scope).as_deref(),
            Ok(expected),
            "{sql}"
        );
    }
    assert!(interpolate_variables("${service:csv}", &scope).is_err());
}
