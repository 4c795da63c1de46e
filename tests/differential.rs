//! Differential correctness: each query of a corpus runs as a `sql` step on the embedded
//! cluster (a scheduler and two executors, plans serialized to them as to remote ones) at
//! several shuffle partition counts, and in one process (`--engine datafusion`); the
//! rows must be equal as multisets (in order where the query orders). The corpus aims at
//! what distributed planning gets wrong: set operations with constant and empty
//! branches, UNION ALL of differently partitioned inputs, LIMIT/OFFSET over a total
//! order, windows, every join type, empty inputs, nested types and functions only some
//! registries have (`array_sort`) — and the benchmark's TPC-H queries over generated
//! TPC-H data.
//!
//! A failure prints the query, the partition count and both answers.

use std::path::Path;
use std::process::Command;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::common;

/// The corpus: (name, SQL, ordered). `t1(a bigint, b string, g string)` has 40 rows with
/// duplicate keys and nulls; `t2(a bigint, c double)` (types inferred from the CSV) 25 rows overlapping `t1` on `a`.
const QUERIES: &[(&str, &str, bool)] = &[
    (
        "intersect_then_union_with_a_constant",
        "SELECT a FROM t1 INTERSECT SELECT a FROM t2 UNION SELECT 42 AS a",
        false,
    ),
    (
        "except_union_all_constant_and_empty_branch",
        "SELECT a FROM t1 EXCEPT SELECT a FROM t2 UNION ALL SELECT 7 AS a \
         UNION ALL SELECT a FROM t2 WHERE a < 0",
        false,
    ),
    (
        "union_all_of_differently_partitioned_inputs",
        "SELECT a FROM t1 UNION ALL SELECT a FROM (SELECT a FROM t2 GROUP BY a) \
         UNION ALL SELECT 1 AS a",
        false,
    ),
    (
        "group_by_with_nulls",
        "SELECT g, count(*) AS n, sum(a) AS s, count(DISTINCT b) AS d FROM t1 GROUP BY g",
        false,
    ),
    (
        "windows_over_ties",
        "SELECT a, g, row_number() OVER (PARTITION BY g ORDER BY a, b) AS rn, \
         rank() OVER (PARTITION BY g ORDER BY a) AS rk, sum(a) OVER (PARTITION BY g) AS s \
         FROM t1",
        false,
    ),
    (
        "joins_of_every_type",
        "SELECT 'left' AS k, t1.a, t2.c FROM t1 LEFT JOIN t2 ON t1.a = t2.a \
         UNION ALL SELECT 'right', t2.a, t2.c FROM t1 RIGHT JOIN t2 ON t1.a = t2.a \
         UNION ALL SELECT 'full', coalesce(t1.a, t2.a), t2.c FROM t1 FULL JOIN t2 ON t1.a = t2.a \
         UNION ALL SELECT 'semi', a, NULL FROM t1 WHERE a IN (SELECT a FROM t2) \
         UNION ALL SELECT 'anti', a, NULL FROM t1 WHERE NOT EXISTS (SELECT 1 FROM t2 WHERE t2.a = t1.a)",
        false,
    ),
    (
        "order_limit_offset_over_a_total_order",
        "SELECT a, b, g FROM t1 ORDER BY g NULLS FIRST, a, b LIMIT 7 OFFSET 3",
        true,
    ),
    (
        "aggregates_over_an_empty_input",
        "SELECT count(*) AS n, max(a) AS m, sum(c) AS s FROM t2 WHERE a < 0",
        false,
    ),
    (
        "nested_types_and_array_sort",
        "SELECT g, array_sort(array_agg(a)) AS xs FROM t1 WHERE a IS NOT NULL GROUP BY g",
        false,
    ),
    (
        "distinct_and_a_one_row_input",
        "SELECT DISTINCT g FROM t1 UNION ALL SELECT max(g) FROM t1 WHERE a = 3",
        false,
    ),
];

/// Shuffle partition counts the distributed runs use.
const PARTITIONS: &[usize] = &[1, 2, 7];

fn write_tables(dir: &Path) {
    let groups = ["x", "y", "z", ""];
    let mut t1 = String::from("a,b,g\n");
    for i in 0..40 {
        let a = if i % 11 == 10 {
            String::new()
        } else {
            (i % 13).to_string()
        };
        t1.push_str(&format!("{a},b{},{}\n", i % 5, groups[i % 4]));
    }
    let mut t2 = String::from("a,c\n");
    for i in 0..25 {
        t2.push_str(&format!("{},{}.5\n", (i * 3) % 17, i));
    }
    std::fs::create_dir_all(dir.join("t1")).unwrap();
    std::fs::create_dir_all(dir.join("t2")).unwrap();
    std::fs::write(dir.join("t1/part-0.csv"), t1).unwrap();
    std::fs::write(dir.join("t2/part-0.csv"), t2).unwrap();
}

fn definition(sql: &str, partitions: usize) -> String {
    let one_line = sql.replace('\n', " ");
    format!(
        "apiVersion: sluice/v1\nname: differential\nparams:\n  out: {{type: string, required: true}}\n\
         sources:\n  t1: {{format: csv, path: data/t1, csv: {{infer_schema: true}}}}\n  t2: {{format: csv, path: data/t2, csv: {{infer_schema: true}}}}\n\
         input: t1\nsteps:\n  - sql: \"{one_line}\"\noutputs:\n  - {{name: result, path: \"{{{{out}}}}\"}}\n\
         conf:\n  spark.sql.shuffle.partitions: {partitions}\n"
    )
}

/// Every row of every Parquet file below `root`, formatted, in file and row order.
fn rows(root: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    for batches in common::read_partitioned(root).values() {
        for batch in batches {
            rows.extend(format_rows(batch));
        }
    }
    rows
}

fn format_rows(batch: &RecordBatch) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let formatters: Vec<ArrayFormatter> = batch
        .columns()
        .iter()
        .map(|column| ArrayFormatter::try_new(column.as_ref(), &options).unwrap())
        .collect();
    (0..batch.num_rows())
        .map(|row| {
            formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect()
}

/// Runs `file` with `sluice run` (`extra` arguments after the params) and returns the
/// rows it wrote to `out`.
fn run(dir: &Path, file: &Path, params: &[String], out: &Path, extra: &[&str]) -> Vec<String> {
    let output = Command::new(common::sluice_bin())
        .arg("run")
        .arg(file)
        .args(params.iter().flat_map(|param| ["-p", param.as_str()]))
        .arg("-p")
        .arg(format!("out={}", out.display()))
        .args(extra)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{} {extra:?} failed:\n{}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    rows(out)
}

#[test]
fn distributed_runs_give_the_single_process_answer() {
    let _serial = common::one_cluster_at_a_time_blocking();
    let dir = tempfile::tempdir().unwrap();
    write_tables(&dir.path().join("data"));
    let mut differences = Vec::new();
    for (name, sql, ordered) in QUERIES {
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, definition(sql, PARTITIONS[0])).unwrap();
        let mut expected = run(
            dir.path(),
            &file,
            &[],
            &dir.path().join(format!("out/{name}/one-process")),
            &["--engine", "datafusion"],
        );
        if !ordered {
            expected.sort();
        }
        assert!(
            !expected.is_empty() || name.contains("empty"),
            "{name}: the corpus query returned nothing"
        );
        for &partitions in PARTITIONS {
            std::fs::write(&file, definition(sql, partitions)).unwrap();
            let out = dir
                .path()
                .join(format!("out/{name}/distributed-{partitions}"));
            let mut actual = run(dir.path(), &file, &[], &out, &[]);
            if !ordered {
                actual.sort();
            }
            if actual != expected {
                differences.push(format!(
                    "{name} at {partitions} partitions:\n  {sql}\n  one process: {expected:?}\n  distributed: {actual:?}"
                ));
            }
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

/// The benchmark's TPC-H queries (`benches/tpch/`) over TPC-H at scale 0.01, distributed
/// at 1, 2 and 7 partitions and in one process: equal answers (as multisets).
#[test]
fn tpch_queries_give_the_single_process_answer() {
    let _serial = common::one_cluster_at_a_time_blocking();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let generator = Path::new(common::moto::VENV).join("bin/tpchgen-cli");
    assert!(
        generator.exists(),
        "{} is missing: .ci/run installs it (benches/requirements.txt)",
        generator.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let tpch = dir.path().join("tpch");
    let generated = Command::new(&generator)
        .args([
            "parquet",
            "--scale-factor",
            "0.01",
            "--parts",
            "2",
            "--output-dir",
        ])
        .arg(&tpch)
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
    let mut queries: Vec<_> = std::fs::read_dir(root.join("benches/tpch"))
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    queries.sort();
    assert!(queries.len() >= 6, "the TPC-H queries are in benches/tpch");
    let mut differences = Vec::new();
    for query in &queries {
        let name = query.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(query).unwrap();
        assert!(text.contains("spark.sql.shuffle.partitions: 4"), "{name}");
        let results = |label: &str, partitions: usize, extra: &[&str]| {
            let file = dir.path().join(format!("{name}-{label}.yaml"));
            std::fs::write(
                &file,
                text.replace(
                    "spark.sql.shuffle.partitions: 4",
                    &format!("spark.sql.shuffle.partitions: {partitions}"),
                ),
            )
            .unwrap();
            let out = dir.path().join(format!("out/{name}/{label}"));
            let tpch_param = format!("tpch={}", tpch.display());
            let mut rows = run(dir.path(), &file, &[tpch_param], &out, extra);
            rows.sort();
            rows
        };
        let expected = results("one-process", 4, &["--engine", "datafusion"]);
        assert!(!expected.is_empty(), "{name} returned nothing");
        for &partitions in PARTITIONS {
            let actual = results(&format!("distributed-{partitions}"), partitions, &[]);
            if !same_rows(&actual, &expected) {
                differences.push(format!(
                    "{name} at {partitions} partitions: {} rows vs {} in one process; first \
                     difference: {:?}",
                    actual.len(),
                    expected.len(),
                    actual.iter().zip(&expected).find(|(a, e)| !same_row(a, e))
                ));
            }
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

/// Rows equal field by field; floating-point fields (sums and averages of doubles, whose
/// last digits depend on the order rows were added in) within 1e-9 relative.
fn same_rows(actual: &[String], expected: &[String]) -> bool {
    actual.len() == expected.len() && actual.iter().zip(expected).all(|(a, e)| same_row(a, e))
}

fn same_row(actual: &str, expected: &str) -> bool {
    let (a, e): (Vec<&str>, Vec<&str>) = (
        actual.split(" | ").collect(),
        expected.split(" | ").collect(),
    );
    a.len() == e.len()
        && a.iter().zip(&e).all(|(a, e)| {
            a == e
                || match (a.parse::<f64>(), e.parse::<f64>()) {
                    (Ok(a), Ok(e)) => (a - e).abs() <= 1e-9 * e.abs().max(1.0),
                    _ => false,
                }
        })
}

#[test]
fn float_fields_compare_within_a_relative_tolerance() {
    assert!(same_row("A | 35785.709306937235", "A | 35785.70930693734"));
    assert!(!same_row("A | 35785.7093", "A | 35785.7094"));
    assert!(!same_row("A | 1", "B | 1"));
}
