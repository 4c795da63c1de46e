//! Spark SQL text to a DataFusion plan. `sql` steps hold Spark SQL pasted from Spark
//! jobs; DataFusion's parser (its generic dialect) reads most of it, and this module
//! reads the rest before planning:
//!
//! - `a DIV b`, Spark's integral division, is read as the generic dialect's `a // b`
//!   (the precedence of `*` and `/`) and planned as Sluice's `div(a, b)` (DataFusion
//!   plans no integer-division operator). Spark's own dialect in sqlparser parses the
//!   right side as a whole expression (`7 div 2 + 1` as `7 div 3`) and drops syntax the
//!   generic dialect reads, so the dialect stays generic and only the token changes.
//! - `x RLIKE p` and `x REGEXP p` (which DataFusion parses but does not plan) become
//!   `regexp_like(x, p)`: Spark's and Rust's regexes both match anywhere in the text.

use std::ops::ControlFlow;

use datafusion::error::Result;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::ast::{self, VisitMut, VisitorMut};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

/// Plans one query of Spark SQL in `ctx`, refusing what `options` refuses.
pub async fn query(ctx: &SessionContext, sql: &str, options: SQLOptions) -> Result<DataFrame> {
    let state = ctx.state();
    let statement = parse(
        sql,
        state.config().options().sql_parser.recursion_limit.get(),
    )?;
    let plan = state.statement_to_plan(statement).await?;
    options.verify_plan(&plan)?;
    ctx.execute_logical_plan(plan).await
}

/// Plans one Spark SQL expression (a `derive`, `filter`, rule or ordering) over
/// `frame`'s columns.
pub fn expression(frame: &DataFrame, sql: &str) -> Result<datafusion::logical_expr::Expr> {
    let (state, _) = frame.clone().into_parts();
    let mut parser = Parser::new(&GenericDialect {})
        .with_tokens_with_locations(tokens(sql)?)
        .with_recursion_limit(state.config().options().sql_parser.recursion_limit.get());
    let mut expr = parser.parse_expr()?;
    let rest = parser.peek_token();
    if rest.token != Token::EOF {
        return datafusion::common::plan_err!(
            "unexpected {} after the expression (at {})",
            rest.token,
            rest.span.start
        );
    }
    let _ = expr.visit(&mut SparkExpressions);
    state
        .create_logical_expr_from_sql_expr(ast::ExprWithAlias { expr, alias: None }, frame.schema())
}

/// Parses one statement of Spark SQL into DataFusion's AST, with Spark's syntax
/// rewritten to DataFusion's.
pub fn parse(sql: &str, recursion_limit: usize) -> Result<Statement> {
    let mut statements = DFParserBuilder::new(tokens(sql)?)
        .with_dialect(&GenericDialect {})
        .with_recursion_limit(recursion_limit)
        .build()?
        .parse_statements()?;
    if statements.len() != 1 {
        return datafusion::common::plan_err!(
            "expected one SQL statement, found {}",
            statements.len()
        );
    }
    let mut statement = statements.pop_front().ok_or_else(|| {
        datafusion::common::DataFusionError::Plan("expected one SQL statement".into())
    })?;
    if let Statement::Statement(inner) = &mut statement {
        let _ = inner.visit(&mut SparkExpressions);
    }
    Ok(statement)
}

/// The text's tokens in the generic dialect, with Spark's `DIV` as `//`.
fn tokens(sql: &str) -> Result<Vec<TokenWithSpan>> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(ParserError::from)?;
    Ok(integer_division(tokens))
}

/// Replaces each `DIV` between two operands with `//`. A `div` that names a column or
/// an alias (`SELECT div FROM t`, `a AS div`) stays a word.
fn integer_division(mut tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let significant: Vec<usize> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t.token, Token::Whitespace(_)))
        .map(|(index, _)| index)
        .collect();
    for (position, &index) in significant.iter().enumerate() {
        let Token::Word(word) = &tokens[index].token else {
            continue;
        };
        if word.keyword != Keyword::DIV || word.quote_style.is_some() || position == 0 {
            continue;
        }
        let before = &tokens[significant[position - 1]].token;
        let after = significant.get(position + 1).map(|&i| &tokens[i].token);
        if ends_operand(before) && after.is_some_and(starts_operand) {
            tokens[index].token = Token::DuckIntDiv;
        }
    }
    tokens
}

/// Whether an expression can end with `token`.
fn ends_operand(token: &Token) -> bool {
    match token {
        Token::Number(..)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::RParen
        | Token::RBracket => true,
        Token::Word(word) => {
            word.quote_style.is_some()
                || matches!(
                    word.keyword,
                    // `div` itself, as a column's name: `div DIV 2`.
                    Keyword::NoKeyword
                        | Keyword::DIV
                        | Keyword::NULL
                        | Keyword::TRUE
                        | Keyword::FALSE
                        | Keyword::END
                )
        }
        _ => false,
    }
}

/// Whether an expression can start with `token`.
fn starts_operand(token: &Token) -> bool {
    match token {
        Token::Number(..)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::LParen
        | Token::Minus
        | Token::Plus => true,
        Token::Word(word) => {
            word.quote_style.is_some()
                || !matches!(
                    word.keyword,
                    Keyword::FROM
                        | Keyword::WHERE
                        | Keyword::GROUP
                        | Keyword::ORDER
                        | Keyword::HAVING
                        | Keyword::LIMIT
                        | Keyword::OFFSET
                        | Keyword::UNION
                        | Keyword::EXCEPT
                        | Keyword::INTERSECT
                        | Keyword::JOIN
                        | Keyword::INNER
                        | Keyword::LEFT
                        | Keyword::RIGHT
                        | Keyword::FULL
                        | Keyword::CROSS
                        | Keyword::ON
                        | Keyword::AS
                        | Keyword::AND
                        | Keyword::OR
                        | Keyword::WINDOW
                        | Keyword::QUALIFY
                        | Keyword::LATERAL
                        | Keyword::WHEN
                        | Keyword::THEN
                        | Keyword::ELSE
                        | Keyword::END
                        | Keyword::SORT
                        | Keyword::DISTRIBUTE
                        | Keyword::CLUSTER
                )
        }
        _ => false,
    }
}

/// Rewrites Spark's expressions DataFusion parses but does not plan.
struct SparkExpressions;

impl VisitorMut for SparkExpressions {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut ast::Expr) -> ControlFlow<()> {
        if let ast::Expr::BinaryOp {
            left,
            op: ast::BinaryOperator::DuckIntegerDivide | ast::BinaryOperator::MyIntegerDivide,
            right,
        } = expr
        {
            *expr = function("div", vec![*left.clone(), *right.clone()]);
        } else if let ast::Expr::RLike {
            negated,
            expr: text,
            pattern,
            ..
        } = expr
        {
            let call = function("regexp_like", vec![*text.clone(), *pattern.clone()]);
            *expr = if *negated {
                ast::Expr::UnaryOp {
                    op: ast::UnaryOperator::Not,
                    expr: Box::new(ast::Expr::Nested(Box::new(call))),
                }
            } else {
                call
            };
        }
        ControlFlow::Continue(())
    }
}

/// A call of the function `name` with `args`.
fn function(name: &str, args: Vec<ast::Expr>) -> ast::Expr {
    ast::Expr::Function(ast::Function {
        name: ast::ObjectName::from(vec![ast::Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: ast::FunctionArguments::None,
        args: ast::FunctionArguments::List(ast::FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|arg| ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(arg)))
                .collect(),
            clauses: Vec::new(),
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query's text after the rewrites, as DataFusion's parser would print it.
    fn rewritten(sql: &str) -> String {
        parse(sql, 50).unwrap().to_string()
    }

    #[test]
    fn div_is_integer_division_at_the_precedence_of_multiplication() {
        assert_eq!(rewritten("SELECT 7 div 2 + 1"), "SELECT div(7, 2) + 1");
        assert_eq!(
            rewritten("SELECT a DIV (b - 1) * 2 FROM t"),
            "SELECT div(a, (b - 1)) * 2 FROM t"
        );
        assert_eq!(rewritten("SELECT -7 DIV -2"), "SELECT div(-7, -2)");
    }

    #[test]
    fn a_column_or_alias_named_div_stays_a_name() {
        assert_eq!(rewritten("SELECT div FROM t"), "SELECT div FROM t");
        assert_eq!(
            rewritten("SELECT div DIV 2 FROM t"),
            "SELECT div(div, 2) FROM t"
        );
        assert_eq!(
            rewritten("SELECT a AS div FROM t"),
            "SELECT a AS div FROM t"
        );
    }

    #[test]
    fn rlike_and_regexp_plan_as_regexp_like() {
        assert_eq!(
            rewritten("SELECT * FROM t WHERE ndc RLIKE '^[0-9]{11}$'"),
            "SELECT * FROM t WHERE regexp_like(ndc, '^[0-9]{11}$')"
        );
        assert_eq!(
            rewritten("SELECT x NOT REGEXP 'a' FROM t"),
            "SELECT NOT (regexp_like(x, 'a')) FROM t"
        );
    }

    /// `derive` and `filter` expressions take the same syntax as `sql` steps.
    #[tokio::test]
    async fn expressions_take_div_and_rlike() {
        let stores = crate::ObjectStores::new(Default::default());
        let state =
            crate::session::session_state(crate::session::default_session_config(), &stores)
                .unwrap();
        let ctx = SessionContext::new_with_state(state);
        let frame = ctx
            .sql("SELECT * FROM (VALUES (7, 'ab'), (-9, 'ba'), (20, 'abc')) AS t(n, s)")
            .await
            .unwrap();
        let halves = expression(&frame, "n div 2 + 1").unwrap();
        let starts = expression(&frame, "s RLIKE '^a' AND NOT s REGEXP 'c$'").unwrap();
        assert!(expression(&frame, "n div").is_err());
        assert!(expression(&frame, "n 2").is_err());
        let rows = frame
            .filter(starts)
            .unwrap()
            .select(vec![halves.alias("h")])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&rows)
            .unwrap()
            .to_string();
        // 'ab' only: 7 div 2 + 1 = 4.
        assert_eq!(
            text.lines().filter(|l| l.contains("| 4 ")).count(),
            1,
            "{text}"
        );
        assert_eq!(
            rows.iter().map(|b| b.num_rows()).sum::<usize>(),
            1,
            "{text}"
        );
    }

    #[test]
    fn one_statement_only() {
        assert!(parse("SELECT 1; SELECT 2", 50).is_err());
    }
}
