//! The guard every user statement passes, on every protocol, before anything is planned.
//!
//! 1. [`check_text`]: the text's size, then its tokens: how many operators of every kind and
//!    how deeply parentheses nest. Tokenising does not recurse, so this bounds the statement
//!    before the recursive parser and planner see it. Text the tokenizer cannot read is
//!    refused (the parser could not read it either): the check fails closed.
//! 2. [`parse`]: DataFusion's parser, with its recursion limit.
//! 3. [`check_statement`]: what the statement is ([`Class`]: only queries are planned, session
//!    statements are answered by the protocol, everything else is refused as read-only), that
//!    it reads no file or URL as a table, and how deep its expressions and subqueries nest and
//!    how many operators it holds, measured on the parsed tree.
//!
//! After the guard, [`crate::Engine`] plans the statement, checks the plan is read-only, and
//! collects its result within the row, byte, memory and time limits.

use std::ops::ControlFlow;

use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{self, Expr, Statement, Visit, Visitor, visit_relations};
use datafusion::sql::sqlparser::dialect::{
    Dialect as SqlDialect, GenericDialect, PostgreSqlDialect,
};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::config::Limits;
use crate::{Error, Result};

/// How deeply parentheses may nest in the text (the parser recurses once per level).
pub const MAX_NESTING: usize = 100;

/// How deeply calls (`name(`) may nest in a statement sent over the Postgres protocol.
pub const MAX_PG_CALL_NESTING: usize = 16;

/// Which SQL dialect a protocol speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// DataFusion's default (HTTP, the CLI).
    #[default]
    Generic,
    /// The Postgres wire protocol.
    Postgres,
}

impl Dialect {
    fn sqlparser(self) -> Box<dyn SqlDialect> {
        match self {
            Dialect::Generic => Box::new(GenericDialect {}),
            Dialect::Postgres => Box::new(PostgreSqlDialect {}),
        }
    }
}

/// What a statement is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Planned, checked read-only, run under the limits.
    Query,
    /// A session setting a client may make (answered by the protocol, never applied to the
    /// engine); `recorded` settings are remembered per connection.
    Set { recorded: bool },
    /// `SHOW variable`.
    Show,
    /// `BEGIN`, `COMMIT`, `ROLLBACK`.
    Transaction,
}

/// Session variables a client may `SET` (answered without changing DataFusion's
/// configuration). Everything else, `datafusion.*` above all, is refused.
const SETTABLE: &[&str] = &[
    "application_name",
    "extra_float_digits",
    "datestyle",
    "intervalstyle",
    "bytea_output",
    "search_path",
    "statement_timeout",
    "timezone",
    "client_encoding",
    "client_min_messages",
    "standard_conforming_strings",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "transaction_read_only",
    "jit",
];

/// The subset of [`SETTABLE`] a protocol records per connection; the rest are accepted with no
/// effect.
const RECORDED: &[&str] = &[
    "application_name",
    "extra_float_digits",
    "datestyle",
    "intervalstyle",
    "bytea_output",
    "search_path",
    "statement_timeout",
];

/// Step 1: the text's size, operators and nesting, before parsing.
pub fn check_text(sql: &str, dialect: Dialect, limits: &Limits) -> Result<()> {
    if sql.len() > limits.statement_bytes() {
        return Err(Error::Limit {
            limit: "max_statement_kb",
            message: format!(
                "the statement is {} KiB, more than the {} KiB cdlake accepts",
                sql.len().div_ceil(1024),
                limits.max_statement_kb
            ),
        });
    }
    let postgres = dialect == Dialect::Postgres;
    let dialect = dialect.sqlparser();
    let tokens = Tokenizer::new(dialect.as_ref(), sql)
        .tokenize()
        .map_err(|e| Error::Sql {
            message: format!("SQL syntax: {e}"),
            sqlstate: "42601",
        })?;
    let (mut operators, mut depth, mut deepest) = (0usize, 0usize, 0usize);
    let mut previous_word = false;
    // Which open parentheses follow a word (a call, `CAST(`, `IN (`…), and how deeply those nest.
    let mut calls: Vec<bool> = Vec::new();
    let (mut call_depth, mut deepest_calls) = (0usize, 0usize);
    for token in &tokens {
        let is_word = matches!(token, Token::Word(_));
        match token {
            Token::LParen => {
                // `name(`: a function call.
                operators += usize::from(previous_word);
                depth += 1;
                deepest = deepest.max(depth);
                calls.push(previous_word);
                call_depth += usize::from(previous_word);
                deepest_calls = deepest_calls.max(call_depth);
            }
            Token::RParen => {
                depth = depth.saturating_sub(1);
                if calls.pop() == Some(true) {
                    call_depth -= 1;
                }
            }
            Token::Word(w) => operators += usize::from(operator_keyword(w.keyword)),
            t if is_operator_token(t) => operators += 1,
            _ => {}
        }
        if !matches!(token, Token::Whitespace(_)) {
            previous_word = is_word;
        }
    }
    if operators > limits.max_operators {
        return Err(too_many_operators(operators, limits));
    }
    // Each level of parentheses is at least one level of the tree: refused here, a statement
    // nested past the limit is never parsed (parsing nested calls with the Postgres dialect
    // takes time exponential in the nesting).
    if deepest > limits.max_expression_depth {
        return Err(Error::Limit {
            limit: "max_expression_depth",
            message: format!(
                "the statement nests parentheses {deepest} deep, more than the {} allowed",
                limits.max_expression_depth
            ),
        });
    }
    // The Postgres dialect's parser takes time exponential in how deeply calls nest (about
    // twice as long per level: 20 levels take seconds, 30 would take hours, and a parse cannot
    // be stopped), so that protocol refuses what it cannot parse in good time.
    if postgres && deepest_calls > MAX_PG_CALL_NESTING {
        return Err(Error::Limit {
            limit: "max_expression_depth",
            message: format!(
                "the statement nests calls {deepest_calls} deep, more than the {MAX_PG_CALL_NESTING} cdlake's Postgres endpoint parses; flatten it (a WITH clause), or send it to the HTTP API, which parses deeper nesting"
            ),
        });
    }
    if deepest > MAX_NESTING {
        return Err(Error::Limit {
            limit: "max_expression_depth",
            message: format!(
                "the statement nests parentheses {deepest} deep, more than the {MAX_NESTING} cdlake parses"
            ),
        });
    }
    Ok(())
}

fn too_many_operators(operators: usize, limits: &Limits) -> Error {
    Error::Limit {
        limit: "max_operators",
        message: format!(
            "the statement has {operators} operators, more than the {} cdlake plans safely: use IN (…) for long lists of values",
            limits.max_operators
        ),
    }
}

/// Keywords that are operators.
fn operator_keyword(k: Keyword) -> bool {
    matches!(
        k,
        Keyword::OR
            | Keyword::AND
            | Keyword::NOT
            | Keyword::XOR
            | Keyword::IS
            | Keyword::LIKE
            | Keyword::ILIKE
            | Keyword::SIMILAR
            | Keyword::REGEXP
            | Keyword::RLIKE
            | Keyword::BETWEEN
            | Keyword::IN
            | Keyword::CASE
            | Keyword::WHEN
            | Keyword::CAST
            | Keyword::TRY_CAST
            | Keyword::COLLATE
            | Keyword::AT
            | Keyword::EXISTS
            | Keyword::ANY
            | Keyword::ALL
            | Keyword::SOME
            | Keyword::OVERLAPS
            | Keyword::DIV
    )
}

/// Tokens that are operators: everything but words, literals, punctuation and whitespace.
fn is_operator_token(t: &Token) -> bool {
    !matches!(
        t,
        Token::EOF
            | Token::Word(_)
            | Token::Number(..)
            | Token::Char(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Comma
            | Token::Whitespace(_)
            | Token::LParen
            | Token::RParen
            | Token::Period
            | Token::SemiColon
            | Token::RBracket
            | Token::LBrace
            | Token::RBrace
            | Token::Placeholder(_)
    )
}

/// Step 2: parse with DataFusion's parser (the recursion limit matches [`MAX_NESTING`]).
pub fn parse(sql: &str, dialect: Dialect) -> Result<Vec<DfStatement>> {
    let d = dialect.sqlparser();
    let mut parser = DFParserBuilder::new(sql)
        .with_dialect(d.as_ref())
        .with_recursion_limit(MAX_NESTING)
        .build()
        .map_err(syntax)?;
    let statements = parser.parse_statements().map_err(syntax)?;
    Ok(statements.into_iter().collect())
}

fn syntax(e: impl std::fmt::Display) -> Error {
    Error::Sql {
        message: format!("SQL syntax: {e}"),
        sqlstate: "42601",
    }
}

/// Step 3: classify a statement and, for a query, check what it reads and how large it is.
pub fn check_statement(statement: &DfStatement, limits: &Limits) -> Result<Class> {
    match statement {
        DfStatement::Statement(s) => {
            let class = classify(s)?;
            if class == Class::Query {
                measure(s.as_ref(), limits)?;
            }
            Ok(class)
        }
        DfStatement::Explain(explain) => match check_statement(&explain.statement, limits)? {
            Class::Query => Ok(Class::Query),
            _ => Err(read_only("EXPLAIN of a non-query")),
        },
        DfStatement::CreateExternalTable(_) => Err(read_only("CREATE EXTERNAL TABLE")),
        DfStatement::CopyTo(_) => Err(read_only("COPY")),
        DfStatement::Reset(_) => Err(read_only("RESET")),
    }
}

fn read_only(what: impl Into<String>) -> Error {
    Error::ReadOnly { what: what.into() }
}

/// Sort a statement into a [`Class`], or refuse it.
pub fn classify(statement: &Statement) -> Result<Class> {
    match statement {
        Statement::Query(_)
        | Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. } => {
            check_relations(statement)?;
            Ok(Class::Query)
        }
        Statement::Explain {
            statement: inner, ..
        } => match classify(inner)? {
            Class::Query => Ok(Class::Query),
            _ => Err(read_only("EXPLAIN of a non-query")),
        },
        Statement::Set(set) => classify_set(set),
        Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCatalogs { .. } => Ok(Class::Show),
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. } => Ok(Class::Transaction),
        other => Err(read_only(statement_name(other))),
    }
}

fn classify_set(set: &ast::Set) -> Result<Class> {
    match set {
        ast::Set::SingleAssignment {
            variable, values, ..
        } => {
            let name = variable
                .0
                .iter()
                .filter_map(|part| part.as_ident())
                .map(|ident| ident.value.to_lowercase())
                .collect::<Vec<_>>()
                .join(".");
            if values.is_empty() || !SETTABLE.contains(&name.as_str()) {
                return Err(read_only(format!(
                    "SET {name} (only client session settings such as application_name, \
                     extra_float_digits, DateStyle and TimeZone may be set)"
                )));
            }
            Ok(Class::Set {
                recorded: RECORDED.contains(&name.as_str()),
            })
        }
        ast::Set::SetTimeZone { local: false, .. } => Ok(Class::Set { recorded: true }),
        ast::Set::SetTimeZone { local: true, .. }
        | ast::Set::SetNames { .. }
        | ast::Set::SetTransaction { .. } => Ok(Class::Set { recorded: false }),
        _ => Err(read_only("this SET statement")),
    }
}

/// A name for a refused statement, without printing it (a statement can be huge).
fn statement_name(statement: &Statement) -> &'static str {
    match statement {
        Statement::Insert(_) => "INSERT",
        Statement::Update(_) => "UPDATE",
        Statement::Delete(_) => "DELETE",
        Statement::Merge(_) => "MERGE",
        Statement::Truncate(_) => "TRUNCATE",
        Statement::Copy { .. } | Statement::CopyIntoSnowflake { .. } => "COPY",
        Statement::CreateTable(_) => "CREATE TABLE",
        Statement::CreateView(_) => "CREATE VIEW",
        Statement::CreateSchema { .. } => "CREATE SCHEMA",
        Statement::CreateDatabase { .. } => "CREATE DATABASE",
        Statement::CreateFunction(_) => "CREATE FUNCTION",
        Statement::CreateIndex(_) => "CREATE INDEX",
        Statement::Drop { .. } => "DROP",
        Statement::AlterTable(_) => "ALTER TABLE",
        Statement::Declare { .. } | Statement::Fetch { .. } | Statement::Close { .. } => {
            "a cursor statement"
        }
        Statement::Prepare { .. } | Statement::Execute { .. } | Statement::Deallocate { .. } => {
            "PREPARE/EXECUTE"
        }
        Statement::Use(_) => "USE",
        _ => "this statement",
    }
}

/// Refuse tables named by a path or URL (`SELECT * FROM '/etc/passwd'`): SQL reads only the
/// store's tables.
fn check_relations(statement: &Statement) -> Result<()> {
    let flow = visit_relations(statement, |name: &ast::ObjectName| {
        let path_like = name
            .0
            .iter()
            .filter_map(|part| part.as_ident())
            .any(|ident| {
                ident.quote_style == Some('\'')
                    || ident.value.contains('/')
                    || ident.value.contains('\\')
                    || ident.value.contains("://")
            });
        if path_like {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    if flow.is_break() {
        return Err(read_only(
            "reading a file or URL (SQL reads only the tables of the store)",
        ));
    }
    Ok(())
}

/// The table and view names a statement reads (lower-cased last parts: `cdlake.public.events`
/// is `events`), for choosing how to run it.
pub fn relations(statement: &DfStatement) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |s: &Statement| {
        let _ = visit_relations(s, |name: &ast::ObjectName| {
            if let Some(ident) = name.0.last().and_then(|p| p.as_ident()) {
                let table = ident.value.to_lowercase();
                if !out.contains(&table) {
                    out.push(table);
                }
            }
            ControlFlow::<()>::Continue(())
        });
    };
    let mut current = statement;
    loop {
        match current {
            DfStatement::Statement(s) => {
                add(s);
                break;
            }
            DfStatement::Explain(e) => current = &e.statement,
            _ => break,
        }
    }
    out
}

/// Walks a parsed statement measuring how deep expressions and subqueries nest and how many
/// operators it holds; stops at the first limit passed.
struct Measure<'a> {
    limits: &'a Limits,
    depth: usize,
    operators: usize,
}

impl Visitor for Measure<'_> {
    type Break = Error;

    fn pre_visit_query(&mut self, _query: &ast::Query) -> ControlFlow<Error> {
        self.enter()
    }

    fn post_visit_query(&mut self, _query: &ast::Query) -> ControlFlow<Error> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Error> {
        if !matches!(
            expr,
            Expr::Identifier(_)
                | Expr::CompoundIdentifier(_)
                | Expr::Value(_)
                | Expr::Nested(_)
                | Expr::Wildcard(_)
                | Expr::QualifiedWildcard(..)
                | Expr::TypedString { .. }
        ) {
            self.operators += 1;
            if self.operators > self.limits.max_operators {
                return ControlFlow::Break(too_many_operators(self.operators, self.limits));
            }
        }
        self.enter()
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<Error> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

impl Measure<'_> {
    fn enter(&mut self) -> ControlFlow<Error> {
        self.depth += 1;
        if self.depth > self.limits.max_expression_depth {
            return ControlFlow::Break(Error::Limit {
                limit: "max_expression_depth",
                message: format!(
                    "the statement's expressions and subqueries nest more than {} deep: use IN (…) for long lists of values, or a CTE for nested subqueries",
                    self.limits.max_expression_depth
                ),
            });
        }
        ControlFlow::Continue(())
    }
}

/// Depth and operator count of a parsed statement against the limits.
fn measure(statement: &Statement, limits: &Limits) -> Result<()> {
    let mut m = Measure {
        limits,
        depth: 0,
        operators: 0,
    };
    match statement.visit(&mut m) {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

#[cfg(test)]
mod tests;
