//! Dirty landing files as vendors send them, run through `sluice run`: malformed CSV
//! rows become quarantined rows with their file and line (or are dropped and counted,
//! or fail the run naming the line), encodings and compression are read as declared,
//! headers match by name, and a malformed or empty file is an error naming it — never a
//! crashed or hung process. The landing files are byte-identical afterwards.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int64Type};

/// A claims file with every kind of malformed row, and what each line is. Line 5-6 is
/// one well-formed record whose quoted value spans two lines.
const DIRTY: &[u8] = b"id,name,qty\n\
1,alpha,10\n\
2,beta\n\
3,gamma,30,extra\n\
4,\"del\nta\",40\n\
5,caf\xe9,50\n\
6,zeta,60\n\
7,\"open,70";

/// The well-formed rows of [`DIRTY`]: (id, name, qty).
fn dirty_valid() -> Vec<(String, String, String)> {
    [
        ("1", "alpha", "10"),
        ("4", "del\nta", "40"),
        ("6", "zeta", "60"),
    ]
    .iter()
    .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
    .collect()
}

/// The malformed lines of [`DIRTY`]: (line, raw text).
fn dirty_malformed() -> Vec<(i64, String)> {
    vec![
        (3, "2,beta".to_owned()),
        (4, "3,gamma,30,extra".to_owned()),
        (7, "5,caf\u{fffd},50".to_owned()),
        (9, "7,\"open,70".to_owned()),
    ]
}

fn sluice(args: &[&str], cwd: &Path, env: &[(String, String)]) -> Output {
    let mut command = Command::new(common::sluice_bin());
    command.args(args).current_dir(cwd);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    eprintln!(
        "sluice {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .filter(|line| line.starts_with("error"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    output
}

fn write_job(dir: &Path, name: &str, text: &str) -> String {
    let file = format!("{name}.yaml");
    std::fs::write(dir.join(&file), text).unwrap();
    file
}

/// Every file below `dir` with its bytes.
fn tree_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push((
                    path.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&path).unwrap(),
                ));
            }
        }
    }
    files.sort();
    files
}

fn batches(root: &Path) -> Vec<RecordBatch> {
    common::read_partitioned(root)
        .into_values()
        .flatten()
        .collect()
}

/// A string column's values (NULL as `None`), in row order.
fn strings(batches: &[RecordBatch], name: &str) -> Vec<Option<String>> {
    let mut values = Vec::new();
    for batch in batches {
        let column = batch.column(batch.schema().index_of(name).unwrap());
        let column = datafusion::arrow::compute::cast(column, &DataType::Utf8).unwrap();
        let column = column.as_string::<i32>();
        for row in 0..column.len() {
            values.push((!column.is_null(row)).then(|| column.value(row).to_owned()));
        }
    }
    values
}

fn rows_of(root: &Path) -> Vec<(String, String, String)> {
    let batches = batches(root);
    let ids = strings(&batches, "id");
    let names = strings(&batches, "name");
    let qtys = strings(&batches, "qty");
    let mut rows: Vec<(String, String, String)> = ids
        .into_iter()
        .zip(names)
        .zip(qtys)
        .map(|((a, b), c)| {
            (
                a.unwrap_or_default(),
                b.unwrap_or_else(|| "NULL".into()),
                c.unwrap_or_default(),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// The quarantine's (line, raw text, rules, file) per row, by line.
fn quarantined(root: &Path) -> Vec<(i64, Option<String>, Vec<String>, String)> {
    let mut rows = Vec::new();
    for batch in batches(root) {
        let schema = batch.schema();
        let lines = batch
            .column(schema.index_of("_dq_source_line").unwrap())
            .as_primitive::<Int64Type>()
            .clone();
        let raw = strings(std::slice::from_ref(&batch), "_dq_raw_record");
        let files = strings(std::slice::from_ref(&batch), "_dq_source_file");
        let rules = batch
            .column(schema.index_of("_dq_rules").unwrap())
            .as_list::<i32>()
            .clone();
        for row in 0..batch.num_rows() {
            let broke = rules.value(row);
            let broke = broke.as_string::<i32>();
            rows.push((
                lines.value(row),
                raw[row].clone(),
                (0..broke.len())
                    .map(|i| broke.value(i).to_owned())
                    .collect(),
                files[row].clone().unwrap_or_default(),
            ));
        }
    }
    rows.sort();
    rows
}

fn dirty_landing(dir: &Path) {
    std::fs::create_dir_all(dir.join("landing/claims")).unwrap();
    std::fs::write(dir.join("landing/claims/claims.csv"), DIRTY).unwrap();
}

#[test]
fn malformed_csv_rows_are_quarantined_with_their_file_and_line() {
    // `sluice run` starts an embedded cluster: one at a time.
    let _serial = common::one_cluster_at_a_time_blocking();
    let dir = tempfile::tempdir().unwrap();
    dirty_landing(dir.path());
    let before = tree_bytes(&dir.path().join("landing"));
    let job = write_job(
        dir.path(),
        "dirty",
        "apiVersion: sluice/v1\nname: dirty\n\
         sources:\n  claims: {format: csv, path: landing/claims}\n\
         quality:\n  quarantine: {path: staging/quarantine}\n\
         outputs:\n  - {name: claims, path: staging/claims}\n",
    );
    let output = sluice(&["run", &job], dir.path(), &[]);
    assert!(output.status.success(), "the run failed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("malformed_row") && stdout.contains("4 failed"),
        "{stdout}"
    );
    assert_eq!(rows_of(&dir.path().join("staging/claims")), dirty_valid());
    let quarantine = quarantined(&dir.path().join("staging/quarantine"));
    let expected: Vec<(i64, Option<String>)> = dirty_malformed()
        .into_iter()
        .map(|(line, raw)| (line, Some(raw)))
        .collect();
    assert_eq!(
        quarantine
            .iter()
            .map(|(line, raw, _, _)| (*line, raw.clone()))
            .collect::<Vec<_>>(),
        expected
    );
    for (line, _, rules, file) in &quarantine {
        assert_eq!(rules, &vec!["malformed_row".to_owned()], "line {line}");
        assert!(file.ends_with("landing/claims/claims.csv"), "{file}");
    }
    assert_eq!(tree_bytes(&dir.path().join("landing")), before);
}

#[test]
fn dropmalformed_counts_the_rows_and_failfast_names_the_first_line() {
    // `sluice run` starts an embedded cluster: one at a time.
    let _serial = common::one_cluster_at_a_time_blocking();
    let dir = tempfile::tempdir().unwrap();
    dirty_landing(dir.path());
    let before = tree_bytes(&dir.path().join("landing"));
    let job = |mode: &str| {
        format!(
            "apiVersion: sluice/v1\nname: dirty\n\
             sources:\n  claims: {{format: csv, path: landing/claims, csv: {{mode: {mode}}}}}\n\
             outputs:\n  - {{name: claims, path: staging/{mode}}}\n"
        )
    };
    let dropping = write_job(dir.path(), "drop", &job("DROPMALFORMED"));
    let output = sluice(&["run", &dropping], dir.path(), &[]);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("4 of 7 rows") && stdout.contains("(dropped)"),
        "{stdout}"
    );
    assert_eq!(
        rows_of(&dir.path().join("staging/DROPMALFORMED")),
        dirty_valid()
    );

    let failing = write_job(dir.path(), "fail", &job("FAILFAST"));
    let output = sluice(&["run", &failing], dir.path(), &[]);
    assert!(
        !output.status.success(),
        "FAILFAST ran through a malformed row"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "landing/claims/claims.csv: line 3: malformed row (2 fields where the header has 3)"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("DataFusionError"), "{stderr}");
    assert!(common::data_files(&dir.path().join("staging/FAILFAST")).is_empty());
    assert_eq!(tree_bytes(&dir.path().join("landing")), before);
}

/// `text` as UTF-16 little-endian with a BOM.
fn utf16le(text: &str) -> Vec<u8> {
    let mut bytes = vec![0xff, 0xfe];
    for unit in text.encode_utf16() {
        bytes.extend_from_slice(&unit.to_le_bytes());
    }
    bytes
}

#[test]
fn encodings_compression_and_reordered_headers_read_as_declared() {
    // `sluice run` starts an embedded cluster: one at a time.
    let _serial = common::one_cluster_at_a_time_blocking();
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    std::fs::create_dir_all(landing.join("mixed")).unwrap();
    std::fs::create_dir_all(landing.join("latin")).unwrap();
    std::fs::create_dir_all(landing.join("wide")).unwrap();
    std::fs::write(landing.join("mixed/a.csv"), "id,name,qty\n1,a,10\n").unwrap();
    // The second delivery: gzipped, its columns reordered and one left out.
    std::fs::write(landing.join("mixed/b.csv"), "qty,id\r\n20,2\r\n").unwrap();
    let gzip = Command::new("gzip")
        .arg(landing.join("mixed/b.csv"))
        .status()
        .unwrap();
    assert!(gzip.success());
    std::fs::write(landing.join("latin/a.csv"), b"id,name,qty\n3,Jos\xe9,30\n").unwrap();
    std::fs::write(
        landing.join("wide/a.csv"),
        utf16le("id,name,qty\n4,Zo\u{eb},40\n"),
    )
    .unwrap();
    let before = tree_bytes(&landing);
    let job = |name: &str, csv: &str| {
        write_job(
            dir.path(),
            name,
            &format!(
                "apiVersion: sluice/v1\nname: {name}\n\
                 sources:\n  s: {{format: csv, path: landing/{name}, csv: {csv}}}\n\
                 outputs:\n  - {{name: o, path: staging/{name}}}\n"
            ),
        )
    };
    for (name, csv, expected) in [
        ("mixed", "{}", vec![("1", "a", "10"), ("2", "NULL", "20")]),
        ("latin", "{encoding: latin1}", vec![("3", "José", "30")]),
        ("wide", "{encoding: utf-16}", vec![("4", "Zoë", "40")]),
    ] {
        let file = job(name, csv);
        let output = sluice(&["run", &file], dir.path(), &[]);
        assert!(output.status.success(), "{name}");
        let expected: Vec<(String, String, String)> = expected
            .into_iter()
            .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
            .collect();
        assert_eq!(
            rows_of(&dir.path().join("staging").join(name)),
            expected,
            "{name}"
        );
    }
    // Told to fail on drift, the run names the file that differs and how.
    let file = write_job(
        dir.path(),
        "strict",
        "apiVersion: sluice/v1\nname: strict\n\
         sources:\n  s: {format: csv, path: landing/mixed, csv: {schema_drift: fail}}\n\
         outputs:\n  - {name: o, path: staging/strict}\n",
    );
    let output = sluice(&["run", &file], dir.path(), &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("mixed/b.csv.gz") && stderr.contains("differs"),
        "{stderr}"
    );
    assert_eq!(tree_bytes(&landing), before);
}

/// Ten deliveries of a feed, the last with a column added, and an empty file: by
/// default every column of any file is read (the added one NULL in the older files'
/// rows), and the run's warnings and its DQ report list the two headers with the files
/// of each and the empty file. With `quarantine_file`, the header most files have is
/// the source's and the odd file is quarantined whole.
#[test]
fn a_column_added_in_a_later_delivery_is_read_and_the_report_lists_each_header() {
    let _serial = common::one_cluster_at_a_time_blocking();
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("landing/feed");
    std::fs::create_dir_all(&feed).unwrap();
    // More files than the first ones a source's schema used to be read from (8).
    for day in 0..9 {
        std::fs::write(
            feed.join(format!("rx_{day:02}.csv")),
            format!("id,name,qty\n{day},n{day},{day}0\n"),
        )
        .unwrap();
    }
    std::fs::write(
        feed.join("rx_09.csv"),
        "id,name,qty,channel\n9,n9,90,retail\n",
    )
    .unwrap();
    std::fs::write(feed.join("rx_10.csv"), "").unwrap();
    let before = tree_bytes(&dir.path().join("landing"));
    let url = |name: &str| format!("file://{}", feed.join(name).display());

    let job = write_job(
        dir.path(),
        "union",
        "apiVersion: sluice/v1\nname: union\n\
         sources:\n  feed: {format: csv, path: landing/feed}\n\
         outputs:\n  - {name: o, path: staging/union}\n",
    );
    let output = sluice(&["run", &job], dir.path(), &[]);
    assert!(output.status.success(), "the run failed");
    let staging = dir.path().join("staging/union");
    let written = batches(&staging);
    let mut rows: Vec<(Option<String>, Option<String>)> = strings(&written, "id")
        .into_iter()
        .zip(strings(&written, "channel"))
        .collect();
    rows.sort();
    let mut expected: Vec<(Option<String>, Option<String>)> =
        (0..9).map(|day| (Some(day.to_string()), None)).collect();
    expected.push((Some("9".into()), Some("retail".into())));
    assert_eq!(rows, expected);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!(
            "source `feed`: 1 of 11 files are empty (0 bytes) and hold no rows: {}",
            url("rx_10.csv")
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "its files have 2 different headers (columns are matched by name; a column a \
             file lacks is NULL in its rows): 9 files ({}, {}, {}, {}, {}, …): it lacks \
             `channel`; 1 file ({}): the source's columns",
            url("rx_00.csv"),
            url("rx_01.csv"),
            url("rx_02.csv"),
            url("rx_03.csv"),
            url("rx_04.csv"),
            url("rx_09.csv")
        )),
        "{stdout}"
    );
    // The report beside the output lists the headers and the files of each.
    let report = std::fs::read_dir(staging.join("_dq"))
        .unwrap()
        .flatten()
        .next()
        .expect("a DQ report");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.path()).unwrap()).unwrap();
    let source = &report["sources"][0];
    assert_eq!(source["source"], "feed");
    assert_eq!(source["file_count"], 11);
    assert_eq!(source["empty"], serde_json::json!([url("rx_10.csv")]));
    assert_eq!(
        source["headers"],
        serde_json::json!([
            {"columns": ["id", "name", "qty"], "file_count": 9,
             "files": (0..5).map(|day| url(&format!("rx_{day:02}.csv"))).collect::<Vec<_>>()},
            {"columns": ["id", "name", "qty", "channel"], "file_count": 1,
             "files": [url("rx_09.csv")]},
        ])
    );

    // Set aside instead: the common header is the source's, the odd file quarantined.
    let job = write_job(
        dir.path(),
        "aside",
        "apiVersion: sluice/v1\nname: aside\n\
         sources:\n  feed: {format: csv, path: landing/feed, csv: {schema_drift: quarantine_file}}\n\
         quality:\n  quarantine: {path: staging/aside_quarantine}\n\
         outputs:\n  - {name: o, path: staging/aside}\n",
    );
    let output = sluice(&["run", &job], dir.path(), &[]);
    assert!(output.status.success(), "the run failed");
    let valid = batches(&dir.path().join("staging/aside"));
    assert!(
        valid
            .iter()
            .all(|b| b.schema().index_of("channel").is_err())
    );
    let mut ids: Vec<Option<String>> = strings(&valid, "id");
    ids.sort();
    assert_eq!(
        ids,
        (0..9).map(|day| Some(day.to_string())).collect::<Vec<_>>()
    );
    let quarantine = quarantined(&dir.path().join("staging/aside_quarantine"));
    assert_eq!(quarantine.len(), 1, "{quarantine:?}");
    assert_eq!(quarantine[0].3, url("rx_09.csv"));
    assert_eq!(tree_bytes(&dir.path().join("landing")), before);
}

#[test]
fn a_malformed_or_empty_landing_file_is_named_and_nothing_crashes() {
    // `sluice run` starts an embedded cluster: one at a time.
    let _serial = common::one_cluster_at_a_time_blocking();
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    // A Parquet file that the parquet crate's footer decoder panicked on, alone and in
    // a second partition (read only when the run plans, after the schema is known).
    std::fs::create_dir_all(landing.join("alone")).unwrap();
    std::fs::write(landing.join("alone/x.parquet"), b"PAR1garbagePAR1").unwrap();
    std::fs::create_dir_all(landing.join("parted/p=1")).unwrap();
    std::fs::create_dir_all(landing.join("parted/p=2")).unwrap();
    write_parquet(&landing.join("parted/p=1/good.parquet"));
    std::fs::write(landing.join("parted/p=2/bad.parquet"), b"PAR1garbagePAR1").unwrap();
    // A truncated copy of a good file.
    std::fs::create_dir_all(landing.join("cut")).unwrap();
    let good = std::fs::read(landing.join("parted/p=1/good.parquet")).unwrap();
    std::fs::write(landing.join("cut/x.parquet"), &good[..good.len() / 2]).unwrap();
    std::fs::create_dir_all(landing.join("empty")).unwrap();
    std::fs::write(landing.join("empty/a.csv"), b"").unwrap();
    let before = tree_bytes(&landing);
    for (name, format, named) in [
        ("alone", "parquet", "alone/x.parquet"),
        ("parted", "parquet", "parted/p=2/bad.parquet"),
        ("cut", "parquet", "cut/x.parquet"),
        ("empty", "csv", "empty/a.csv"),
    ] {
        let file = write_job(
            dir.path(),
            name,
            &format!(
                "apiVersion: sluice/v1\nname: {name}\n\
                 sources:\n  s: {{format: {format}, path: landing/{name}}}\n\
                 outputs:\n  - {{name: o, path: staging/{name}}}\n"
            ),
        );
        let started = std::time::Instant::now();
        let output = sluice(&["run", &file], dir.path(), &[]);
        assert!(!output.status.success(), "{name} ran");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let error = stderr
            .lines()
            .find(|line| line.starts_with("error:"))
            .unwrap_or_default();
        assert!(error.contains(named), "{name}: {stderr}");
        assert!(!error.contains("h2 protocol"), "{name}: {error}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{name} hung"
        );
        assert!(common::data_files(&dir.path().join("staging").join(name)).is_empty());
    }
    let empty = String::from_utf8_lossy(&sluice(&["run", "empty.yaml"], dir.path(), &[]).stderr)
        .to_string();
    assert!(empty.contains("empty (0 bytes)"), "{empty}");
    assert_eq!(tree_bytes(&landing), before);
}

/// A small Parquet file with one `a` column.
fn write_parquet(path: &Path) {
    use datafusion::arrow::array::Int64Array;
    use std::sync::Arc;
    let batch = RecordBatch::try_from_iter([(
        "a",
        Arc::new(Int64Array::from(vec![1, 2, 3])) as Arc<dyn Array>,
    )])
    .unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// The same dirty file in a bucket on moto: the same quarantine, and the landing
/// object unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_rows_of_a_landing_file_on_s3_are_quarantined() {
    // The file is small, and split into four byte ranges read by four tasks.
    let _serial = common::one_cluster_at_a_time().await;
    use object_store::ObjectStoreExt;
    use object_store::path::Path as ObjectPath;

    let dir = tempfile::tempdir().unwrap();
    let moto = common::moto::Moto::start(dir.path().join("moto.log"));
    moto.create_bucket("lake");
    let store = moto.store("lake");
    store
        .put(
            &ObjectPath::from("landing/claims/claims.csv"),
            DIRTY.to_vec().into(),
        )
        .await
        .unwrap();
    let job = write_job(
        dir.path(),
        "dirty",
        "apiVersion: sluice/v1\nname: dirty\n\
         sources:\n  claims: {format: csv, path: \"s3://lake/landing/claims\"}\n\
         quality:\n  quarantine: {path: \"s3://lake/staging/quarantine\"}\n\
         outputs:\n  - {name: claims, path: \"s3://lake/staging/claims\"}\n\
         conf:\n  datafusion.execution.target_partitions: 4\n\
         \x20 datafusion.optimizer.repartition_file_min_size: 16\n",
    );
    let env = moto.env();
    let cwd = dir.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || sluice(&["run", &job], &cwd, &env))
        .await
        .unwrap();
    assert!(output.status.success());
    // Download what the run wrote and read it as a user would.
    let local = dir.path().join("downloaded");
    let mut listing = store.list(Some(&ObjectPath::from("staging")));
    use futures::StreamExt;
    let mut objects: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    while let Some(meta) = listing.next().await {
        let meta = meta.unwrap();
        let bytes = store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        objects.insert(meta.location.to_string(), bytes.to_vec());
    }
    for (key, bytes) in &objects {
        let path = local.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    assert_eq!(rows_of(&local.join("staging/claims")), dirty_valid());
    let lines: Vec<(i64, Option<String>)> = quarantined(&local.join("staging/quarantine"))
        .into_iter()
        .map(|(line, raw, _, _)| (line, raw))
        .collect();
    let expected: Vec<(i64, Option<String>)> = dirty_malformed()
        .into_iter()
        .map(|(line, raw)| (line, Some(raw)))
        .collect();
    assert_eq!(lines, expected);
    let landed = store
        .get(&ObjectPath::from("landing/claims/claims.csv"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(landed.as_ref(), DIRTY);
}

/// A string-read CSV source (its valid rows through the steps, its malformed rows in a
/// union before the write) gives the single-process answer on the embedded cluster at
/// several shuffle partition counts. The union's scan branch once reported an empty
/// partition for tasks that owned none of it, which shifted the union's partitions and
/// lost an aggregate partition.
#[test]
fn a_dirty_csv_aggregated_distributed_gives_the_single_process_answer() {
    // `sluice run` starts an embedded cluster: one at a time.
    let _serial = common::one_cluster_at_a_time_blocking();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("landing/claims")).unwrap();
    let mut text = String::from("id,state,qty\n");
    for i in 0..3000 {
        let state = ["CA", "NY", " TX", "fl", "Ohio", ""][i % 6];
        if i % 97 == 0 {
            text.push_str(&format!("{i},{state}\n")); // malformed: a field short
        } else {
            text.push_str(&format!("{i},{state},{}\n", i % 13));
        }
    }
    std::fs::write(dir.path().join("landing/claims/a.csv"), &text).unwrap();
    let expected_malformed = (0..3000).filter(|i| i % 97 == 0).count();
    let mut answers = Vec::new();
    for (partitions, engine) in [(7, None), (2, None), (7, Some("datafusion"))] {
        let name = format!("agg_{partitions}_{}", engine.unwrap_or("cluster"));
        let file = write_job(
            dir.path(),
            &name,
            &format!(
                "apiVersion: sluice/v1\nname: agg\n\
                 sources:\n  claims: {{format: csv, path: landing/claims}}\n\
                 steps:\n  - sql: \"SELECT state, count(*) AS n, sum(CAST(qty AS INT)) AS q \
                 FROM input GROUP BY state\"\n\
                 outputs:\n  - {{name: o, path: staging/{name}}}\n\
                 conf:\n  spark.sql.shuffle.partitions: {partitions}\n"
            ),
        );
        let mut args = vec!["run", file.as_str()];
        if let Some(engine) = engine {
            args.extend(["--engine", engine]);
        }
        let output = sluice(&args, dir.path(), &[]);
        assert!(output.status.success(), "{name}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        // The rules count the rows that reach the write: 6 groups and the malformed rows.
        assert!(
            stdout.contains(&format!(
                "{expected_malformed} of {} rows",
                6 + expected_malformed
            )),
            "{name}: {stdout}"
        );
        let batches = batches(&dir.path().join("staging").join(&name));
        let mut rows: Vec<(Option<String>, Option<String>, Option<String>)> =
            strings(&batches, "state")
                .into_iter()
                .zip(strings(&batches, "n"))
                .zip(strings(&batches, "q"))
                .map(|((a, b), c)| (a, b, c))
                .collect();
        rows.sort();
        answers.push(rows);
    }
    assert_eq!(answers[0].len(), 6, "{:?}", answers[0]);
    assert_eq!(
        answers[0], answers[2],
        "7 partitions distributed vs one process"
    );
    assert_eq!(
        answers[1], answers[2],
        "2 partitions distributed vs one process"
    );
}

/// A multi-record fixed-width pharmacy feed (header, detail and trailer lines) in
/// Latin-1: the detail lines become rows by position, a short detail line is quarantined
/// with its line, the others are skipped, the landing file is unchanged.
#[test]
fn a_fixed_width_feed_reads_by_position_and_quarantines_short_lines() {
    let _serial = common::one_cluster_at_a_time_blocking();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("landing/rx")).unwrap();
    // Columns: record type 1, rx id 2-6, pharmacy 7-16 (Latin-1 é in one line), qty 17-20.
    let mut feed = Vec::new();
    feed.extend_from_slice(b"H2024-03-01 ACME PHARMACY FEED\n");
    feed.extend_from_slice(b"D00001Caf\xe9 Rx   0030\n");
    feed.extend_from_slice(b"D00002Main St   0090\n");
    feed.extend_from_slice(b"D00003Short\n");
    feed.extend_from_slice(b"D00004   N/A    0010\n");
    feed.extend_from_slice(b"T0000004\n");
    std::fs::write(dir.path().join("landing/rx/feed.txt"), &feed).unwrap();
    let before = tree_bytes(&dir.path().join("landing"));
    let job = write_job(
        dir.path(),
        "rx",
        "apiVersion: sluice/v1\nname: rx\n\
         sources:\n  rx:\n    format: fixed_width\n    path: landing/rx\n    fixed_width:\n\
         \x20     encoding: latin1\n      null_values: [N/A]\n\
         \x20     record_type: {start: 1, width: 1, values: [D]}\n\
         \x20     columns:\n\
         \x20       - {name: rx_id, start: 2, width: 5}\n\
         \x20       - {name: pharmacy, start: 7, width: 10}\n\
         \x20       - {name: qty, start: 17, width: 4}\n\
         steps:\n  - cast: {qty: int}\n\
         quality:\n  quarantine: {path: staging/quarantine}\n\
         outputs:\n  - {name: rx, path: staging/rx}\n",
    );
    let output = sluice(&["run", &job], dir.path(), &[]);
    assert!(output.status.success(), "the run failed");
    let rows = batches(&dir.path().join("staging/rx"));
    let mut got: Vec<(Option<String>, Option<String>, Option<String>)> = strings(&rows, "rx_id")
        .into_iter()
        .zip(strings(&rows, "pharmacy"))
        .zip(strings(&rows, "qty"))
        .map(|((a, b), c)| (a, b, c))
        .collect();
    got.sort();
    let some = |text: &str| Some(text.to_owned());
    assert_eq!(
        got,
        vec![
            (some("00001"), some("Café Rx"), some("30")),
            (some("00002"), some("Main St"), some("90")),
            (some("00004"), None, some("10")),
        ]
    );
    let quarantine = quarantined(&dir.path().join("staging/quarantine"));
    assert_eq!(quarantine.len(), 1, "{quarantine:?}");
    let (line, raw, rules, file) = &quarantine[0];
    assert_eq!((*line, raw.as_deref()), (4, Some("D00003Short")));
    assert_eq!(rules, &vec!["malformed_row".to_owned()]);
    assert!(file.ends_with("landing/rx/feed.txt"), "{file}");
    assert_eq!(tree_bytes(&dir.path().join("landing")), before);
}

/// An ANSI cast that fails at run time names the file, the line, the step and the
/// column (the value withheld when a mask step masks the column), not Arrow's bare
/// `Cannot cast string …`; exit 1 and nothing written.
#[test]
fn a_failed_cast_names_the_file_line_step_and_column() {
    let _serial = common::one_cluster_at_a_time_blocking();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("landing/claims")).unwrap();
    std::fs::write(
        dir.path().join("landing/claims/a.csv"),
        "id,qty,ssn\n1,10,111\n2,20,222\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("landing/claims/b.csv"),
        "id,qty,ssn\n3,30,333\n4,N/A,444\n5,50,x55\n",
    )
    .unwrap();
    let job = |cast: &str| {
        format!(
            "apiVersion: sluice/v1\nname: strict\n\
             sources:\n  claims: {{format: csv, path: landing/claims}}\n\
             steps:\n  - trim: []\n  - cast: {{{cast}}}\n  - mask: {{columns: {{ssn: redact}}}}\n\
             outputs:\n  - {{name: claims, path: staging/claims}}\n"
        )
    };
    let strict = write_job(dir.path(), "strict", &job("qty: int"));
    let output = sluice(&["run", &strict], dir.path(), &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "landing/claims/b.csv: line 3: steps[1].cast: `qty` value 'N/A' is not a valid int"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("DataFusionError"), "{stderr}");
    assert!(common::data_files(&dir.path().join("staging/claims")).is_empty());

    // A masked column's value stays out of the error.
    let masked = write_job(dir.path(), "masked", &job("ssn: int"));
    let output = sluice(&["run", &masked], dir.path(), &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("landing/claims/b.csv: line 4: steps[1].cast: `ssn` value <masked"),
        "{stderr}"
    );
    assert!(!stderr.contains("x55"), "{stderr}");
}

/// JSON lines with a line that is not JSON, one that is not an object, and one whose
/// value does not fit its column's inferred type: each quarantined with its line and
/// raw text under PERMISSIVE, the run failed naming the first under FAILFAST.
#[test]
fn malformed_json_lines_are_quarantined_with_their_line() {
    let _serial = common::one_cluster_at_a_time_blocking();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("landing/events")).unwrap();
    // 1000 objects type the columns (id, qty: bigint; name: string); then the faults.
    let mut text = String::new();
    for id in 1..=1000 {
        text.push_str(&format!(
            "{{\"id\": {id}, \"name\": \"n{id}\", \"qty\": {}}}\n",
            id % 7
        ));
    }
    text.push_str("{\"id\": 1001, \"name\": \"lots\", \"qty\": \"many\"}\n"); // line 1001
    text.push_str("{\"id\": 1002, \"name\": \"cut\"\n"); // line 1002
    text.push_str("[1, 2, 3]\n"); // line 1003
    text.push('\n'); // line 1004, blank: skipped
    text.push_str("{\"id\": 1005, \"qty\": 5}\n"); // line 1005, name missing: NULL
    std::fs::write(dir.path().join("landing/events/e.json"), &text).unwrap();
    let before = tree_bytes(&dir.path().join("landing"));
    let job = |mode: &str, out: &str| {
        format!(
            "apiVersion: sluice/v1\nname: events\n\
             sources:\n  events: {{format: json, path: landing/events, json: {{mode: {mode}}}}}\n\
             quality:\n  quarantine: {{path: staging/{out}_quarantine}}\n\
             outputs:\n  - {{name: events, path: staging/{out}}}\n"
        )
    };
    let permissive = write_job(dir.path(), "permissive", &job("PERMISSIVE", "events"));
    let output = sluice(&["run", &permissive], dir.path(), &[]);
    assert!(output.status.success(), "the run failed");
    let rows = batches(&dir.path().join("staging/events"));
    let ids = strings(&rows, "id");
    assert_eq!(ids.len(), 1001, "1000 objects and line 1005");
    assert_eq!(
        rows[0].schema().field_with_name("qty").unwrap().data_type(),
        &DataType::Int64
    );
    let quarantine = quarantined(&dir.path().join("staging/events_quarantine"));
    let lines: Vec<(i64, Option<String>)> = quarantine
        .iter()
        .map(|(line, raw, _, _)| (*line, raw.clone()))
        .collect();
    assert_eq!(
        lines,
        vec![
            (
                1001,
                Some("{\"id\": 1001, \"name\": \"lots\", \"qty\": \"many\"}".to_owned())
            ),
            (1002, Some("{\"id\": 1002, \"name\": \"cut\"".to_owned())),
            (1003, Some("[1, 2, 3]".to_owned())),
        ]
    );

    let failing = write_job(dir.path(), "failing", &job("FAILFAST", "failfast"));
    let output = sluice(&["run", &failing], dir.path(), &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("landing/events/e.json: line 1001: malformed row"),
        "{stderr}"
    );
    assert!(common::data_files(&dir.path().join("staging/failfast")).is_empty());
    assert_eq!(tree_bytes(&dir.path().join("landing")), before);
}

/// One large CSV file is split into byte ranges, one task each (fewer files than
/// tasks), and gives the answer of a whole read: every well-formed row once, every
/// malformed row quarantined with its exact line, a quoted value spanning two lines
/// kept whole wherever a split falls.
#[test]
fn a_large_file_split_across_tasks_keeps_every_row_and_line() {
    let _serial = common::one_cluster_at_a_time_blocking();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("landing/claims")).unwrap();
    // Each copy: 7 lines; well-formed records at +0, +3 (spanning +3..+4), +6;
    // malformed at +1 (too few fields), +2 (too many), +5 (not UTF-8).
    const COPY: &[u8] =
        b"1,alpha,10\n2,beta\n3,gamma,30,extra\n4,\"del\nta\",40\n5,caf\xe9,50\n6,zeta,60\n";
    const COPIES: i64 = 4000;
    let mut file = b"id,name,qty\n".to_vec();
    for _ in 0..COPIES {
        file.extend_from_slice(COPY);
    }
    std::fs::write(dir.path().join("landing/claims/big.csv"), &file).unwrap();
    let before = tree_bytes(&dir.path().join("landing"));
    let job = write_job(
        dir.path(),
        "big",
        "apiVersion: sluice/v1\nname: big\n\
         sources:\n  claims: {format: csv, path: landing/claims}\n\
         quality:\n  quarantine: {path: staging/quarantine}\n\
         outputs:\n  - {name: claims, path: staging/claims}\n\
         conf:\n  datafusion.execution.target_partitions: 4\n\
         \x20 datafusion.optimizer.repartition_file_min_size: 4096\n",
    );
    let explain = sluice(&["validate", &job, "--explain"], dir.path(), &[]);
    assert!(explain.status.success());
    let plan = String::from_utf8_lossy(&explain.stdout);
    assert!(
        plan.contains("file_groups={4 groups") && plan.contains("big.csv:0.."),
        "the file is not split:\n{plan}"
    );
    let output = sluice(&["run", &job], dir.path(), &[]);
    assert!(output.status.success(), "the run failed");
    let rows = rows_of(&dir.path().join("staging/claims"));
    assert_eq!(rows.len() as i64, 3 * COPIES);
    let mut expected_rows: Vec<(String, String, String)> = (0..COPIES)
        .flat_map(|_| {
            [
                ("1", "alpha", "10"),
                ("4", "del\nta", "40"),
                ("6", "zeta", "60"),
            ]
            .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
        })
        .collect();
    expected_rows.sort();
    assert_eq!(rows, expected_rows);
    let lines: Vec<i64> = quarantined(&dir.path().join("staging/quarantine"))
        .into_iter()
        .map(|(line, _, _, _)| line)
        .collect();
    let mut expected: Vec<i64> = (0..COPIES)
        .flat_map(|copy| [1, 2, 5].map(|at| 2 + 7 * copy + at))
        .collect();
    expected.sort();
    assert_eq!(lines, expected);
    assert_eq!(tree_bytes(&dir.path().join("landing")), before);
}

/// JSON lines and a fixed-width feed landed on S3 (moto): their malformed lines
/// quarantined on S3 with their line, the landed objects unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_fixed_width_files_on_s3_quarantine_their_malformed_lines() {
    let _serial = common::one_cluster_at_a_time().await;
    use futures::StreamExt;
    use object_store::ObjectStoreExt;
    use object_store::path::Path as ObjectPath;

    let dir = tempfile::tempdir().unwrap();
    let moto = common::moto::Moto::start(dir.path().join("moto.log"));
    moto.create_bucket("lake");
    let store = moto.store("lake");
    const EVENTS: &[u8] = b"{\"id\": 1, \"qty\": 2}\nnot json\n{\"id\": 3, \"qty\": 4}\n";
    const FEED: &[u8] = b"D001A  0010\nD002\nD003B  0020\n";
    for (key, bytes) in [
        ("landing/events/e.json", EVENTS),
        ("landing/rx/feed.txt", FEED),
    ] {
        store
            .put(&ObjectPath::from(key), bytes.to_vec().into())
            .await
            .unwrap();
    }
    let jobs = [
        (
            "events",
            "sources:\n  events: {format: json, path: \"s3://lake/landing/events\"}\n",
        ),
        (
            "rx",
            "sources:\n  rx:\n    format: fixed_width\n    path: \"s3://lake/landing/rx\"\n    fixed_width:\n      columns:\n        - {name: id, start: 2, width: 3}\n        - {name: qty, start: 8, width: 4}\n",
        ),
    ];
    for (name, sources) in jobs {
        let job = write_job(
            dir.path(),
            name,
            &format!(
                "apiVersion: sluice/v1\nname: {name}\n{sources}\
                 quality:\n  quarantine: {{path: \"s3://lake/staging/{name}_quarantine\"}}\n\
                 outputs:\n  - {{name: {name}, path: \"s3://lake/staging/{name}\"}}\n"
            ),
        );
        let env = moto.env();
        let cwd = dir.path().to_path_buf();
        let output = tokio::task::spawn_blocking(move || sluice(&["run", &job], &cwd, &env))
            .await
            .unwrap();
        assert!(output.status.success(), "{name} failed");
    }
    let local = dir.path().join("downloaded");
    let mut listing = store.list(Some(&ObjectPath::from("staging")));
    while let Some(meta) = listing.next().await {
        let meta = meta.unwrap();
        let bytes = store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let path = local.join(meta.location.to_string());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    for (name, raw) in [("events", "not json"), ("rx", "D002")] {
        let rows = batches(&local.join(format!("staging/{name}")));
        let ids = strings(&rows, "id");
        assert_eq!(ids.len(), 2, "{name}: {ids:?}");
        let quarantine: Vec<(i64, Option<String>)> =
            quarantined(&local.join(format!("staging/{name}_quarantine")))
                .into_iter()
                .map(|(line, raw, _, _)| (line, raw))
                .collect();
        assert_eq!(quarantine, vec![(2, Some(raw.to_owned()))], "{name}");
    }
    for (key, bytes) in [
        ("landing/events/e.json", EVENTS),
        ("landing/rx/feed.txt", FEED),
    ] {
        let landed = store
            .get(&ObjectPath::from(key))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(landed.as_ref(), bytes, "{key}");
    }
}
