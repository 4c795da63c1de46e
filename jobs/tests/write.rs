//! The distributed Parquet write in one process: rolling files at the target size,
//! Hive folders, every row written once, Spark-readable types.

use std::sync::Arc;

use datafusion::physical_plan::collect;
use datafusion::prelude::SessionContext;
use sluice_jobs::{
    Compression, SinkSpec, TaskReport, WriteSpec, WriteTask, WrittenFile, write_plan,
};

#[tokio::test]
async fn files_roll_at_the_target_size_and_hold_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = SessionContext::new();
    let rows = 200_000;
    let frame = ctx
        .sql(&format!(
            "SELECT value AS id, CASE WHEN value % 3 = 0 THEN 'a' WHEN value % 3 = 1 THEN 'b' ELSE NULL END AS bucket, \
             md5(CAST(value AS VARCHAR)) AS payload, arrow_cast(now(), 'Timestamp(Nanosecond, Some(\"UTC\"))') AS at \
             FROM generate_series(1, {rows})"
        ))
        .await
        .unwrap();
    let physical = frame.create_physical_plan().await.unwrap();
    let spec = WriteSpec {
        output: "test".into(),
        location: format!("file://{}", dir.path().display()),
        run_id: "r-test".into(),
        partition_by: vec!["bucket".into()],
        target_file_size: 512 * 1024,
        compression: Compression::Snappy,
    };
    let task = WriteTask {
        run_id: "r-test".into(),
        sinks: vec![SinkSpec {
            spec,
            columns: vec!["id".into(), "bucket".into(), "payload".into(), "at".into()],
            quarantine: false,
        }],
        quality: None,
    };
    let plan = write_plan(physical, task, 2).unwrap();
    let manifests = collect(plan, ctx.task_ctx()).await.unwrap();
    let files: Vec<WrittenFile> = manifests
        .iter()
        .flat_map(|batch| TaskReport::from_manifest(batch).unwrap())
        .flat_map(|report| report.files)
        .collect();

    let total: u64 = files.iter().map(|f| f.rows).sum();
    assert_eq!(total, rows);
    let partitions: std::collections::BTreeSet<&str> =
        files.iter().map(|f| f.partition.as_str()).collect();
    assert_eq!(
        partitions.into_iter().collect::<Vec<_>>(),
        ["bucket=__HIVE_DEFAULT_PARTITION__", "bucket=a", "bucket=b"]
    );
    // ~67k rows of 32-byte hashes per partition do not fit in 512 KiB: files rolled.
    assert!(files.len() > 3, "{files:?}");
    for file in &files {
        let path = dir
            .path()
            .join("_temporary/r-test")
            .join(&file.partition)
            .join(&file.file);
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&path).unwrap(),
        )
        .unwrap();
        assert_eq!(
            reader.metadata().file_metadata().num_rows() as u64,
            file.rows
        );
        let schema = reader.schema().clone();
        assert!(
            schema.field_with_name("bucket").is_err(),
            "partition column in the file"
        );
        // Spark reads microsecond timestamps, not nanoseconds.
        assert_eq!(
            schema.field_with_name("at").unwrap().data_type(),
            &datafusion::arrow::datatypes::DataType::Timestamp(
                datafusion::arrow::datatypes::TimeUnit::Microsecond,
                Some(Arc::from("UTC"))
            )
        );
    }
}
