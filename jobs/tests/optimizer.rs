//! Sluice's optimizer rules give the answers (names and types too) DataFusion gives
//! without them.

use std::sync::Arc;

use datafusion::arrow::array::{Decimal128Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use sluice_jobs::ObjectStores;
use sluice_jobs::session::{default_session_config, session_state};

/// Claims-like rows: groups, a patient column with repeats and NULLs, numbers with
/// NULLs, and amounts as decimals.
fn claims() -> RecordBatch {
    let rows = 500;
    let id: Int64Array = (0..rows).map(|i| Some(i as i64)).collect();
    let group: StringArray = (0..rows).map(|i| Some(["CA", "TX", "NY"][i % 3])).collect();
    let patient: StringArray = (0..rows)
        .map(|i| (i % 11 != 0).then(|| format!("p{}", i % 37)))
        .collect();
    let quantity: Int64Array = (0..rows)
        .map(|i| (i % 7 != 0).then_some((i % 13) as i64))
        .collect();
    let paid = Decimal128Array::from(
        (0..rows)
            .map(|i| (i % 5 != 0).then_some(((i * 7919) % 100_000) as i128))
            .collect::<Vec<_>>(),
    )
    .with_precision_and_scale(12, 2)
    .expect("decimal");
    let schema = Schema::new(vec![
        Field::new("state", DataType::Utf8, false),
        Field::new("patient", DataType::Utf8, true),
        Field::new("quantity", DataType::Int64, true),
        Field::new("paid", DataType::Decimal128(12, 2), true),
        Field::new("id", DataType::Int64, false),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(group),
            Arc::new(patient),
            Arc::new(quantity),
            Arc::new(paid),
            Arc::new(id),
        ],
    )
    .expect("batch")
}

fn register(ctx: &SessionContext) {
    let batch = claims();
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).expect("table");
    ctx.register_table("claims", Arc::new(table))
        .expect("registered");
}

async fn answer(
    ctx: &SessionContext,
    sql: &str,
) -> (String, Arc<datafusion::arrow::datatypes::Schema>) {
    let frame = ctx.sql(sql).await.expect("planned");
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await.expect("executed");
    (
        pretty_format_batches(&batches)
            .expect("printed")
            .to_string(),
        schema,
    )
}

/// The plans of a query, as text.
async fn explain(ctx: &SessionContext, sql: &str) -> String {
    let plan = ctx
        .sql(&format!("EXPLAIN {sql}"))
        .await
        .expect("explained")
        .collect()
        .await
        .expect("explained");
    pretty_format_batches(&plan).expect("printed").to_string()
}

const QUERIES: [&str; 9] = [
    "SELECT id, row_number() OVER (PARTITION BY patient ORDER BY quantity DESC, id) AS rn \
     FROM claims ORDER BY id",
    "SELECT id, row_number() OVER (PARTITION BY state, patient ORDER BY id) AS rn, \
     sum(quantity) OVER (PARTITION BY state) AS state_units FROM claims ORDER BY id",
    "SELECT state, sum(CASE WHEN n = 1 THEN 1 ELSE 0 END) AS firsts, max(n) AS most FROM \
     (SELECT state, row_number() OVER (PARTITION BY patient, state ORDER BY paid, id) AS n \
      FROM claims) t GROUP BY state ORDER BY state",
    "SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY upper(patient) ORDER BY id DESC) AS n \
     FROM claims) t WHERE n = 1 ORDER BY id",
    "SELECT state, count(DISTINCT patient) AS patients, count(*) AS claims, count(quantity) AS with_quantity, \
     sum(quantity) AS units, sum(paid) AS paid, min(paid) AS least, max(quantity) AS most \
     FROM claims GROUP BY state ORDER BY state",
    "SELECT upper(state) AS s, count(DISTINCT patient) AS patients, count(*) AS n \
     FROM claims GROUP BY upper(state) ORDER BY s",
    "SELECT count(DISTINCT patient) AS patients, count(*) AS n, sum(paid) AS paid FROM claims",
    "SELECT count(DISTINCT patient) AS patients, count(*) AS n, count(quantity) AS q, max(paid) AS m \
     FROM claims WHERE quantity > 1000",
    "SELECT state, count(DISTINCT patient) AS patients, count(*) AS n FROM claims \
     WHERE quantity > 1000 GROUP BY state",
];

#[tokio::test]
async fn rewritten_aggregates_and_row_numbers_answer_as_datafusion_does() {
    let stores = ObjectStores::new(Default::default());
    let sluice = SessionContext::new_with_state(
        session_state(default_session_config(), &stores).expect("session"),
    );
    // The same settings (Spark's NULL ordering among them), DataFusion's rules alone.
    let plain = SessionContext::new_with_config(default_session_config());
    register(&sluice);
    register(&plain);
    for sql in QUERIES {
        let (ours, our_schema) = answer(&sluice, sql).await;
        let (theirs, their_schema) = answer(&plain, sql).await;
        assert_eq!(ours, theirs, "answers differ for\n{sql}");
        assert_eq!(
            our_schema
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone()))
                .collect::<Vec<_>>(),
            their_schema
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone()))
                .collect::<Vec<_>>(),
            "result types differ for\n{sql}"
        );
    }
    // The rule did fire: two group-bys, the inner one over the distinct value.
    let text = explain(&sluice, QUERIES[4]).await;
    assert!(
        text.contains("__sluice_distinct_value"),
        "the rewrite did not apply:\n{text}"
    );
    let text = explain(&sluice, QUERIES[0]).await;
    assert!(
        text.contains("__sluice_key_bucket") && text.contains("rank()"),
        "the row_number rewrite did not apply:\n{text}"
    );
}
