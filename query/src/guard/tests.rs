use proptest::prelude::*;

use super::*;

fn limits() -> Limits {
    Limits::default()
}

/// The guard's whole path for one text: text, parse, every statement.
fn guard(sql: &str, dialect: Dialect) -> Result<Vec<Class>> {
    let l = limits();
    check_text(sql, dialect, &l)?;
    parse(sql, dialect)?
        .iter()
        .map(|s| check_statement(s, &l))
        .collect()
}

fn limit_of(e: &Error) -> Option<&'static str> {
    match e {
        Error::Limit { limit, .. } => Some(limit),
        _ => None,
    }
}

#[test]
fn every_operator_kind_counts_and_long_chains_are_refused_before_parsing() {
    let l = limits();
    for op in [
        " + 1",
        " | 1",
        " & 1",
        " << 1",
        " || 'a'",
        "::BIGINT",
        " IS NULL",
        " LIKE 'a'",
        " = 1",
        " * 2",
        " % 3",
        " ^ 1",
    ] {
        let sql = format!("SELECT 1{}", op.repeat(l.max_operators + 1));
        for dialect in [Dialect::Generic, Dialect::Postgres] {
            let e = check_text(&sql, dialect, &l).expect_err(op);
            assert_eq!(limit_of(&e), Some("max_operators"), "{op}: {e}");
            assert!(e.to_string().contains("limits.max_operators"), "{e}");
        }
    }
    // Nested function calls count as operators too.
    let sql = format!(
        "SELECT {}1{}",
        "abs(".repeat(l.max_operators + 1),
        ")".repeat(l.max_operators + 1)
    );
    assert!(check_text(&sql, Dialect::Generic, &l).is_err());
}

#[test]
fn text_the_tokenizer_cannot_read_is_refused_not_waved_through() {
    let l = limits();
    let ors = (0..3000)
        .map(|i| format!("x = {i}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    for dialect in [Dialect::Generic, Dialect::Postgres] {
        let sql = format!("SELECT q' ' FROM t WHERE {ors}");
        let e = check_text(&sql, dialect, &l).expect_err("refused");
        assert!(
            limit_of(&e) == Some("max_operators") || e.sqlstate() == "42601",
            "{dialect:?}: {e}"
        );
        let e = check_text("SELECT 'unterminated", dialect, &l).expect_err("refused");
        assert_eq!(e.sqlstate(), "42601", "{e}");
    }
}

#[test]
fn statements_past_the_size_or_nesting_limits_name_them() {
    let l = limits();
    let sql = format!("SELECT '{}'", "x".repeat(l.statement_bytes()));
    let e = check_text(&sql, Dialect::Generic, &l).expect_err("too long");
    assert_eq!(limit_of(&e), Some("max_statement_kb"));

    let sql = format!("SELECT {}1{}", "(".repeat(150), ")".repeat(150));
    let e = check_text(&sql, Dialect::Generic, &l).expect_err("too deep");
    assert_eq!(limit_of(&e), Some("max_expression_depth"));
}

#[test]
fn postgres_refuses_calls_nested_past_what_its_parser_takes_in_good_time() {
    let nested = |n: usize| format!("SELECT {}1{}", "abs(".repeat(n), ")".repeat(n));
    let l = limits();
    // At the bound: accepted and parsed, on both dialects.
    let at = nested(MAX_PG_CALL_NESTING);
    guard(&at, Dialect::Postgres).expect("nesting at the bound");
    // One past: Postgres refuses it before parsing and names the limit; HTTP's dialect parses
    // nesting in linear time and takes it.
    let past = nested(MAX_PG_CALL_NESTING + 1);
    let e = check_text(&past, Dialect::Postgres, &l).expect_err("too deep for Postgres");
    assert_eq!(limit_of(&e), Some("max_expression_depth"));
    assert!(e.to_string().contains("nests calls"), "{e}");
    guard(&past, Dialect::Generic).expect("the HTTP dialect parses it");
    // Plain parentheses and calls side by side do not count as nested calls.
    let wide = format!("SELECT {}", vec!["abs(1)"; 40].join(" + "));
    guard(&wide, Dialect::Postgres).expect("calls side by side");
    let parens = format!("SELECT {}abs(1){}", "(".repeat(40), ")".repeat(40));
    guard(&parens, Dialect::Postgres).expect("parentheses around one call");
}

#[test]
fn depth_is_measured_on_the_parsed_tree_through_subqueries() {
    let mut l = limits();
    l.max_expression_depth = 20;
    let nested = |n: usize| {
        let mut sql = "SELECT 1".to_string();
        for _ in 0..n {
            sql = format!("SELECT * FROM ({sql}) t");
        }
        sql
    };
    let ok = parse(&nested(5), Dialect::Generic).unwrap();
    assert_eq!(check_statement(&ok[0], &l).unwrap(), Class::Query);
    let deep = parse(&nested(25), Dialect::Generic).unwrap();
    let e = check_statement(&deep[0], &l).expect_err("too deep");
    assert_eq!(limit_of(&e), Some("max_expression_depth"));

    // A left-deep chain is as deep as it is long.
    let chain = format!("SELECT 1{}", " + 1".repeat(30));
    let parsed = parse(&chain, Dialect::Generic).unwrap();
    assert!(check_statement(&parsed[0], &l).is_err());
    l.max_expression_depth = 100;
    assert!(check_statement(&parsed[0], &l).is_ok());
}

#[test]
fn only_queries_are_planned_and_writes_are_refused_as_read_only() {
    for sql in [
        "SELECT 1",
        "WITH a AS (SELECT 1) SELECT * FROM a",
        "EXPLAIN SELECT 1",
        "SHOW TABLES",
        "VALUES (1)",
    ] {
        assert_eq!(
            guard(sql, Dialect::Generic).unwrap(),
            [Class::Query],
            "{sql}"
        );
    }
    for sql in [
        "INSERT INTO events (event_id) VALUES ('x')",
        "CREATE EXTERNAL TABLE p (l VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
        "COPY (SELECT 1) TO '/tmp/x'",
        "DROP TABLE events",
        "SET datafusion.execution.batch_size = 1",
        "EXPLAIN INSERT INTO teams VALUES ('a', 'b')",
        "SELECT * FROM '/etc/passwd'",
        "SELECT count(*) FROM events e JOIN 'file:///etc/hosts' h ON true",
        "CREATE VIEW v AS SELECT 1",
    ] {
        let e = guard(sql, Dialect::Generic).expect_err(sql);
        assert!(matches!(e, Error::ReadOnly { .. }), "{sql}: {e}");
        assert_eq!(e.sqlstate(), "42501");
    }
    assert_eq!(
        guard("SET application_name = 'psql'", Dialect::Postgres).unwrap(),
        [Class::Set { recorded: true }]
    );
    assert_eq!(
        guard("BEGIN", Dialect::Postgres).unwrap(),
        [Class::Transaction]
    );
}

#[test]
fn relations_are_read_from_the_tree_not_from_words() {
    let names = |sql: &str| relations(&parse(sql, Dialect::Generic).unwrap()[0]);
    assert_eq!(names("SELECT 1 AS dora_deployments"), Vec::<String>::new());
    assert_eq!(
        names("SELECT * FROM cdlake.public.Deployments d JOIN incidents i USING (service)"),
        ["deployments", "incidents"]
    );
    assert_eq!(
        names("EXPLAIN SELECT count(*) FROM (SELECT * FROM dora_changes) c"),
        ["dora_changes"]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the text, the guard answers (accepts or refuses); it never panics.
    #[test]
    fn any_text_gets_an_answer(sql in "\\PC{0,200}") {
        let _ = guard(&sql, Dialect::Generic);
        let _ = guard(&sql, Dialect::Postgres);
    }

    /// Statements built from SQL's own pieces, too.
    #[test]
    fn any_mix_of_sql_pieces_gets_an_answer(pieces in proptest::collection::vec(
        prop::sample::select(vec![
            "SELECT", "1", "+", "(", ")", "FROM", "events", "WHERE", "x", "=", "'a'", "OR",
            "AND", "NOT", "::", "BIGINT", "IS", "NULL", "LIKE", ",", "CASE", "WHEN", "THEN",
            "END", "IN", "abs(", "[", "]", "||", "<<", "|", "&", "-", "*", "q'", "$1", ";",
            "EXPLAIN", "WITH", "AS", "INSERT", "INTO", "VALUES",
        ]),
        0..60,
    )) {
        let sql = pieces.join(" ");
        let _ = guard(&sql, Dialect::Generic);
        let _ = guard(&sql, Dialect::Postgres);
    }

    /// A chain of any operator past the limit is refused before parsing, naming the limit.
    #[test]
    fn chains_past_the_limit_are_refused(
        op in prop::sample::select(vec!["+", "-", "*", "/", "%", "|", "&", "<<", ">>", "||", "=", "<>", "AND", "OR"]),
        extra in 1usize..50,
    ) {
        let l = limits();
        let sql = format!("SELECT 1 {}", format!("{op} 1 ").repeat(l.max_operators + extra));
        let e = check_text(&sql, Dialect::Generic, &l).unwrap_err();
        prop_assert_eq!(limit_of(&e), Some("max_operators"));
    }
}
