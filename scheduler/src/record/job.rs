//! Registered job definitions: one record per version of a job, as the run store keeps
//! them (JSON in the `job_versions` table).

/// One registered version of a job definition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobVersion {
    /// The job's name (from the definition).
    pub name: String,
    /// 1 for the first registration, then one more per changed definition.
    pub version: u32,
    /// The definition's description.
    pub description: String,
    /// When it was registered.
    pub registered_at: chrono::DateTime<chrono::Utc>,
    /// The definition's text.
    pub definition_yaml: String,
}
