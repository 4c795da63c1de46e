//! A job's `conf`: Spark keys mapped to the DataFusion / Ballista settings that mean the
//! same, DataFusion and Ballista keys passed through, and a warning for every key that
//! means nothing here — never silently ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use ballista_core::extension::SessionConfigExt;
use datafusion::prelude::SessionConfig;

use crate::definition::{Literal, parse_byte_size};
use crate::error::{JobError, Position, Result};

/// Parquet compression of outputs (`spark.sql.parquet.compression.codec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Spark's default.
    #[default]
    Snappy,
    /// Zstandard.
    Zstd,
    /// Gzip.
    Gzip,
    /// No compression.
    Uncompressed,
}

impl Compression {
    /// The infix Spark puts in file names (`part-…​.snappy.parquet`).
    pub fn file_infix(self) -> &'static str {
        match self {
            Compression::Snappy => ".snappy",
            Compression::Zstd => ".zstd",
            Compression::Gzip => ".gz",
            Compression::Uncompressed => "",
        }
    }
}

/// What a job's `conf` resolves to.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// DataFusion / Ballista session settings, `key = value`.
    pub session: BTreeMap<String, String>,
    /// Output compression.
    pub compression: Compression,
    /// Keys accepted but without effect here, with the reason.
    pub warnings: Vec<String>,
    /// `sluice.run.timeout`: the run fails (and releases its outputs) past this.
    pub timeout: Option<Duration>,
    /// `sluice.run.stall_timeout`: a distributed job in which no task starts or
    /// finishes for this long fails, naming the stage and executors it waited on.
    pub stall_timeout: Duration,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            session: BTreeMap::new(),
            compression: Compression::default(),
            warnings: Vec::new(),
            timeout: None,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        }
    }
}

/// How long a distributed job may go without any task starting or finishing.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(600);

/// A duration as a definition writes it: `90s`, `15m`, `2h`, or a number of seconds.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (90s, 15m, 2h)"))?;
    let scale = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("`{text}` is not a duration (90s, 15m, 2h)")),
    };
    let seconds = value
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too long a duration"))?;
    if seconds == 0 {
        return Err(format!("`{text}` must be longer than zero"));
    }
    Ok(Duration::from_secs(seconds))
}

impl JobSettings {
    /// Resolves a job's `conf` map.
    pub fn from_conf(conf: &BTreeMap<String, Literal>, origin: &str) -> Result<Self> {
        let mut settings = JobSettings::default();
        for (key, value) in conf {
            let text = value.to_string();
            let invalid = |message: String| JobError::Invalid {
                at: Position {
                    origin: origin.to_owned(),
                    line: 0,
                    column: 0,
                },
                field: format!("conf.{key}"),
                message,
            };
            match key.as_str() {
                "spark.sql.shuffle.partitions" | "spark.default.parallelism" => {
                    let partitions: usize = text
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| invalid(format!("`{text}` is not a positive number")))?;
                    settings.session.insert(
                        "datafusion.execution.target_partitions".into(),
                        partitions.to_string(),
                    );
                }
                "spark.sql.join.preferSortMergeJoin" => {
                    let sort_merge: bool = text
                        .parse()
                        .map_err(|_| invalid(format!("`{text}` is not true or false")))?;
                    settings.session.insert(
                        "datafusion.optimizer.prefer_hash_join".into(),
                        (!sort_merge).to_string(),
                    );
                }
                "spark.sql.autoBroadcastJoinThreshold" => {
                    let bytes = if text.trim() == "-1" {
                        0
                    } else {
                        parse_byte_size(value).map_err(invalid)?
                    };
                    settings.session.insert(
                        "datafusion.optimizer.hash_join_single_partition_threshold".into(),
                        bytes.to_string(),
                    );
                }
                "spark.sql.session.timeZone" => {
                    settings
                        .session
                        .insert("datafusion.execution.time_zone".into(), text);
                }
                "spark.sql.caseSensitive" => {
                    let sensitive: bool = text
                        .parse()
                        .map_err(|_| invalid(format!("`{text}` is not true or false")))?;
                    settings.session.insert(
                        "datafusion.sql_parser.enable_ident_normalization".into(),
                        (!sensitive).to_string(),
                    );
                }
                "spark.sql.parquet.compression.codec" => {
                    settings.compression = match text.to_ascii_lowercase().as_str() {
                        "snappy" => Compression::Snappy,
                        "zstd" => Compression::Zstd,
                        "gzip" => Compression::Gzip,
                        "none" | "uncompressed" => Compression::Uncompressed,
                        other => {
                            return Err(invalid(format!(
                                "`{other}` is not a codec Sluice writes (snappy, zstd, gzip, none)"
                            )));
                        }
                    };
                }
                "spark.executor.memory"
                | "spark.executor.cores"
                | "spark.executor.instances"
                | "spark.driver.memory"
                | "spark.driver.cores"
                | "spark.executor.memoryOverhead"
                | "spark.dynamicAllocation.enabled"
                | "spark.dynamicAllocation.maxExecutors"
                | "spark.dynamicAllocation.minExecutors" => {
                    settings.warnings.push(format!(
                        "conf {key}={text}: executors are sized and counted where they start \
                         (`sluice executor --vcores/--memory`, or the autoscaler), not per \
                         job; it has no effect on this run"
                    ));
                }
                "spark.sql.adaptive.enabled"
                | "spark.sql.adaptive.coalescePartitions.enabled"
                | "spark.sql.adaptive.skewJoin.enabled"
                | "spark.sql.adaptive.localShuffleReader.enabled"
                | "ballista.planner.adaptive.enabled" => {
                    let on: bool = text
                        .parse()
                        .map_err(|_| invalid(format!("`{text}` is not true or false")))?;
                    // Off is what Sluice does; on is refused in words, not ignored.
                    if on {
                        settings.warnings.push(format!(
                            "conf {key}=true: Sluice runs static stage plans (the stages and \
                             their partition counts are fixed when the run starts, \
                             `spark.sql.shuffle.partitions` sets them); adaptive re-planning \
                             is not used, because Ballista's adaptive planner does not recover \
                             from a lost executor — it has no effect"
                        ));
                    }
                }
                "sluice.run.timeout" => {
                    settings.timeout = Some(parse_duration(&text).map_err(invalid)?);
                }
                "sluice.run.stall_timeout" => {
                    settings.stall_timeout = parse_duration(&text).map_err(invalid)?;
                }
                _ if key.starts_with("datafusion.") || key.starts_with("ballista.") => {
                    // Checked against the real option set so a typo fails now, not later.
                    let mut probe = SessionConfig::new_with_ballista();
                    probe
                        .options_mut()
                        .set(key, &text)
                        .map_err(|err| invalid(err.to_string()))?;
                    settings.session.insert(key.clone(), text);
                }
                _ if key.starts_with("spark.") => {
                    settings.warnings.push(format!(
                        "conf {key}={text}: no equivalent in Sluice; it has no effect"
                    ));
                }
                _ => {
                    return Err(invalid(
                        "unknown key (use spark.*, datafusion.*, ballista.* or sluice.run.* keys)"
                            .into(),
                    ));
                }
            }
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spark_keys_map_or_warn() {
        let conf = BTreeMap::from([
            ("spark.sql.shuffle.partitions".to_owned(), Literal::Int(8)),
            (
                "spark.executor.memory".to_owned(),
                Literal::Text("4g".into()),
            ),
            (
                "spark.sql.parquet.compression.codec".to_owned(),
                Literal::Text("zstd".into()),
            ),
        ]);
        let settings = JobSettings::from_conf(&conf, "job.yaml").unwrap();
        assert_eq!(
            settings
                .session
                .get("datafusion.execution.target_partitions"),
            Some(&"8".to_owned())
        );
        assert_eq!(settings.compression, Compression::Zstd);
        assert_eq!(settings.warnings.len(), 1);
        assert!(settings.warnings[0].contains("spark.executor.memory"));
    }

    #[test]
    fn adaptive_execution_is_off_and_turning_it_on_is_refused_in_words() {
        let off = BTreeMap::from([
            (
                "spark.sql.adaptive.enabled".to_owned(),
                Literal::Bool(false),
            ),
            (
                "ballista.planner.adaptive.enabled".to_owned(),
                Literal::Bool(false),
            ),
        ]);
        let settings = JobSettings::from_conf(&off, "job.yaml").unwrap();
        assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
        assert!(
            !settings
                .session
                .contains_key("ballista.planner.adaptive.enabled")
        );
        let on = BTreeMap::from([("spark.sql.adaptive.enabled".to_owned(), Literal::Bool(true))]);
        let settings = JobSettings::from_conf(&on, "job.yaml").unwrap();
        assert_eq!(settings.warnings.len(), 1);
        assert!(settings.warnings[0].contains("static stage plans"));
        let config = crate::session::session_config(&settings.session).unwrap();
        use ballista_core::extension::SessionConfigExt;
        assert!(!config.ballista_adaptive_query_planner_enabled());
        let bad = BTreeMap::from([(
            "spark.sql.adaptive.enabled".to_owned(),
            Literal::Text("sometimes".into()),
        )]);
        assert!(JobSettings::from_conf(&bad, "job.yaml").is_err());
    }

    #[test]
    fn run_timeouts_read_as_durations() {
        let conf = BTreeMap::from([
            ("sluice.run.timeout".to_owned(), Literal::Text("2h".into())),
            ("sluice.run.stall_timeout".to_owned(), Literal::Int(90)),
        ]);
        let settings = JobSettings::from_conf(&conf, "job.yaml").unwrap();
        assert_eq!(settings.timeout, Some(Duration::from_secs(7200)));
        assert_eq!(settings.stall_timeout, Duration::from_secs(90));
        let bad = BTreeMap::from([(
            "sluice.run.timeout".to_owned(),
            Literal::Text("soon".into()),
        )]);
        let err = JobSettings::from_conf(&bad, "job.yaml").unwrap_err();
        assert!(err.to_string().contains("conf.sluice.run.timeout"), "{err}");
    }

    #[test]
    fn unknown_datafusion_keys_are_errors() {
        let conf = BTreeMap::from([(
            "datafusion.execution.no_such_option".to_owned(),
            Literal::Int(1),
        )]);
        let err = JobSettings::from_conf(&conf, "job.yaml").unwrap_err();
        assert!(
            err.to_string()
                .contains("conf.datafusion.execution.no_such_option")
        );
    }
}
