//! The one error type of the jobs crate.

use std::path::PathBuf;

/// Where in a definition something is wrong: the file (or other origin), and when known
/// the line and column, 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The file path or URI the definition came from.
    pub origin: String,
    /// 1-based line; 0 when unknown.
    pub line: u64,
    /// 1-based column; 0 when unknown.
    pub column: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.origin)
        } else {
            write!(f, "{}:{}:{}", self.origin, self.line, self.column)
        }
    }
}

/// Everything that can go wrong while reading, binding, compiling or writing a job.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The file could not be read.
    #[error("cannot read job definition {path}: {source}")]
    Read {
        /// The path that was read.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// YAML syntax, schema, unknown fields and wrong types.
    #[error("{at}: {message}")]
    Syntax {
        /// Where the problem is.
        at: Position,
        /// What is wrong.
        message: String,
    },
    /// A definition that parses but does not make sense (a step naming a missing
    /// column, an unknown type, a bad expression).
    #[error("{at}: {field}: {message}")]
    Invalid {
        /// Where the problem is.
        at: Position,
        /// The field, as a path (`steps[2].filter`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A parameter value that is missing, unknown or of the wrong type.
    #[error("param `{name}`: {message}")]
    Param {
        /// The parameter's name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A source whose path or glob matches no file.
    #[error("source `{source_name}`: {path} matches no files")]
    SourceEmpty {
        /// The source's name.
        source_name: String,
        /// The resolved path or glob.
        path: String,
    },
    /// A source that could not be listed or whose schema could not be read.
    #[error("source `{source_name}` ({path}): {message}")]
    Source {
        /// The source's name.
        source_name: String,
        /// The resolved path or glob.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// An output that cannot be written as declared.
    #[error("output `{output}` ({path}): {message}")]
    Output {
        /// The output's name.
        output: String,
        /// The resolved output location.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// An error from DataFusion while planning or executing, with what was being done.
    #[error("{context}: {source}")]
    DataFusion {
        /// What Sluice was doing.
        context: String,
        /// The DataFusion error.
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },
    /// Storage access failed.
    #[error("{context}: {source}")]
    Storage {
        /// What Sluice was doing.
        context: String,
        /// The object store error.
        #[source]
        source: Box<object_store::Error>,
    },
}

impl JobError {
    /// Wraps a DataFusion error with what Sluice was doing.
    pub fn datafusion(
        context: impl Into<String>,
        source: datafusion::error::DataFusionError,
    ) -> Self {
        Self::DataFusion {
            context: context.into(),
            source: Box::new(source),
        }
    }

    /// Wraps an object store error with what Sluice was doing.
    pub fn storage(context: impl Into<String>, source: object_store::Error) -> Self {
        Self::Storage {
            context: context.into(),
            source: Box::new(source),
        }
    }

    /// True when the error is the user's to fix in the definition or its params (as
    /// opposed to a failure while running).
    pub fn is_invalid_definition(&self) -> bool {
        matches!(
            self,
            Self::Read { .. }
                | Self::Syntax { .. }
                | Self::Invalid { .. }
                | Self::Param { .. }
                | Self::SourceEmpty { .. }
                | Self::Output { .. }
        )
    }
}

/// The jobs crate's result type.
pub type Result<T, E = JobError> = std::result::Result<T, E>;
