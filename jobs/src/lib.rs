//! Sluice job definitions: the model, its validation, and its compilation into
//! DataFusion plans that Ballista runs distributed — plus the operators, codec and
//! session that every Sluice process (scheduler, executor, embedded) shares.
//!
//! ```text
//!  YAML ──► JobDefinition ──► PreparedJob (params bound, conf resolved)
//!                                  │ compile (lists sources, reads schemas)
//!                                  ▼
//!                             CompiledJob: one LogicalPlan per output
//!                                  │ scheduler: physical plan + ParquetWriteExec
//!                                  ▼
//!                  executors write staged Parquet ──► scheduler commits
//! ```
//!
//! The modules are layers; each uses only those below it (checked by `layers.rs`):
//!
//! ```text
//!  datagen                      sample landing data
//!  session                      the DataFusion session and the executors' registry
//!  codec                        ParquetWriteExec on the wire
//!  compile/ │ write/            the planner (scheduler) │ the write operator (executors)
//!  quality/                     rules: build, plan, evaluate, report
//!  read/                        Sluice's CSV reader: malformed rows, encodings
//!  frame, optimizer             DataFrame helpers; Sluice's logical rules
//!  conf, params                 a job's conf and bound params
//!  definition/                  the model and its validation
//!  functions/                   cleansing, claims, masking and Spark functions
//!  layout, storage              Spark/Hive names and Sluice's columns; object stores
//!  error
//! ```
//!
//! ```
//! let yaml = r#"
//! apiVersion: sluice/v1
//! name: claims_cleanse
//! params:
//!   run_month: {type: string, required: true}
//! sources:
//!   claims: {format: csv, path: "landing/claims"}
//! steps:
//!   - filter: "fill_month = $run_month"
//! outputs:
//!   - {name: claims, path: staging/claims, partition_by: [fill_month]}
//! "#;
//! let definition = sluice_jobs::JobDefinition::from_yaml(yaml, "claims.yaml").unwrap();
//! assert_eq!(definition.name, "claims_cleanse");
//!
//! let err = sluice_jobs::JobDefinition::from_yaml("apiVersion: sluice/v1\nnme: x\n", "bad.yaml")
//!     .unwrap_err();
//! assert!(err.to_string().starts_with("bad.yaml:2:1"));
//! ```

mod codec;
mod compile;
mod conf;
pub mod datagen;
mod definition;
mod error;
mod frame;
pub mod functions;
mod layers;
mod layout;
mod optimizer;
mod params;
pub mod quality;
mod read;
pub mod session;
pub mod sql;
mod storage;
mod write;

pub use codec::SluicePhysicalCodec;
pub use compile::{
    CompiledJob, CompiledOutput, DEFAULT_TARGET_FILE_SIZE, PreparedJob, ResolvedSource,
    StorageZone, StorageZones,
};
pub use conf::{Compression, JobSettings};
pub use definition::{
    API_VERSION, ApiVersion, ColumnType, CsvOptions, DedupeStep, DeriveStep, JobDefinition,
    Literal, OutputFormat, OutputSpec, ParamSpec, ParamType, ParamValue, RuleAction, SourceFormat,
    SourceSpec, Step, WriteMode, json_schema, parse_byte_size, parse_column_type,
};
pub use error::{JobError, Position, Result};
pub use frame::strip_context;
pub use layout::{HIVE_DEFAULT_PARTITION, QUARANTINE_COLUMNS, QUARANTINE_OUTPUT, STAGING_DIR};
pub use params::BoundParams;
pub use read::{HeaderGroup, SourceFiles};
pub use storage::{
    ObjectStores, S3Settings, SparkLayoutStore, StaticCredentials, StorageSettings,
    is_hidden_segment,
};
pub use write::{
    ParquetWriteExec, SinkSpec, TaskReport, WriteSpec, WriteTask, WrittenFile, manifest_schema,
    write_plan,
};
