//! The deployment's storage zones: the only places a job may read and write.
//!
//! A deployment declares its zones (`landing` read-only, `staging` and `curated`
//! read-write, as S3 prefixes or local roots); a definition's sources must lie inside a
//! zone and its outputs and quarantine inside a writable one. The check runs on the
//! rendered paths before anything is listed or read, so a job pointed at
//! `/etc/passwd` or at another team's bucket is refused with nothing read or written.
//! Locations compare canonically, as the overlap check compares them (`s3a://` is
//! `s3://`, `..` is resolved, local symlinks followed). No zones, no check: the embedded
//! mode and `sluice validate` run on the user's own machine.

use std::path::Path as FsPath;

use super::overlap::Canonical;
use super::{PreparedJob, to_location};
use crate::definition::position;
use crate::error::{JobError, Position, Result};

/// One zone: a location prefix, readable, and writable when said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageZone {
    /// The prefix as given (`s3://lake/landing`, `/data/curated`).
    pub location: String,
    /// Outputs may be written below it.
    pub writable: bool,
}

/// The zones of a deployment; empty when none are declared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageZones {
    zones: Vec<StorageZone>,
}

impl StorageZones {
    /// Zones readable at `read` and readable and writable at `write` (URLs or local
    /// paths; relative ones against the current directory).
    pub fn new(read: &[String], write: &[String]) -> Self {
        let zone = |location: &String, writable| StorageZone {
            location: to_location(
                location,
                &std::env::current_dir().unwrap_or_default(),
                false,
            ),
            writable,
        };
        Self {
            zones: read
                .iter()
                .map(|l| zone(l, false))
                .chain(write.iter().map(|l| zone(l, true)))
                .collect(),
        }
    }

    /// Whether no zone is declared (nothing is checked).
    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    /// Whether `location` lies inside a zone that allows it.
    fn admits(&self, location: &str, writes: bool) -> bool {
        let place = Canonical::of(location);
        self.zones
            .iter()
            .filter(|zone| zone.writable || !writes)
            .any(|zone| Canonical::of(&zone.location).holds(&place))
    }

    fn describe(&self, writes: bool) -> String {
        let listed: Vec<String> = self
            .zones
            .iter()
            .filter(|zone| zone.writable || !writes)
            .map(|zone| {
                let access = if zone.writable { "read-write" } else { "read" };
                format!("{} ({access})", zone.location)
            })
            .collect();
        if listed.is_empty() {
            "none".to_owned()
        } else {
            listed.join(", ")
        }
    }
}

impl PreparedJob {
    /// Refuses a source outside every zone and an output or quarantine outside every
    /// writable one, before anything is read. Relative local paths resolve against
    /// `base_dir`, as [`compile`](PreparedJob::compile) resolves them.
    pub(super) fn check_zones(&self, base_dir: &FsPath) -> Result<()> {
        if self.zones.is_empty() {
            return Ok(());
        }
        let definition = &self.definition;
        let mut places: Vec<(Position, String, String, bool)> = Vec::new();
        for (name, source) in &definition.sources {
            let at = position(&self.origin, &source.referenced);
            let field = format!("sources.{name}.path");
            places.push((
                at.clone(),
                field.clone(),
                self.params.render(&source.value.path, &field)?,
                false,
            ));
            if let Some(base) = &source.value.base_path {
                let field = format!("sources.{name}.base_path");
                places.push((at, field.clone(), self.params.render(base, &field)?, false));
            }
        }
        for (index, output) in definition.outputs.iter().enumerate() {
            let field = format!("outputs[{index}].path");
            let rendered = self.params.render(&output.value.path, &field)?;
            places.push((
                position(&self.origin, &output.referenced),
                field,
                rendered,
                true,
            ));
        }
        if let Some(quarantine) = definition
            .quality
            .as_ref()
            .and_then(|q| q.quarantine.as_ref())
        {
            let field = "quality.quarantine.path".to_owned();
            let rendered = self.params.render(&quarantine.path, &field)?;
            places.push((self.top(), field, rendered, true));
        }
        for (at, field, rendered, writes) in places {
            let location = to_location(&rendered, base_dir, false);
            if !self.zones.admits(&location, writes) {
                let (verb, kind) = if writes {
                    ("writes", "writable zones")
                } else {
                    ("reads", "zones")
                };
                return Err(JobError::Invalid {
                    at,
                    field,
                    message: format!(
                        "{location} lies outside the deployment's {kind}, so this job {verb} \
                         nothing there (zones: {})",
                        self.zones.describe(writes)
                    ),
                });
            }
        }
        Ok(())
    }

    /// The deployment's zones, checked when the job compiles.
    pub fn with_zones(mut self, zones: StorageZones) -> Self {
        self.zones = zones;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_hold_what_lies_below_them_compared_canonically() {
        let zones = StorageZones::new(
            &["s3://lake/landing".into()],
            &["s3://lake/staging/".into()],
        );
        assert!(zones.admits("s3a://LAKE/landing/claims/part-0.csv", false));
        assert!(zones.admits("s3://lake/landing", false));
        assert!(
            !zones.admits("s3://lake/landing/claims", true),
            "landing is read-only"
        );
        assert!(zones.admits("s3://lake/staging/claims", true));
        assert!(
            zones.admits("s3://lake/staging/claims", false),
            "a writable zone is readable"
        );
        assert!(
            !zones.admits("s3://lake/landing-archive/x", false),
            "a zone is a folder, not a prefix of names"
        );
        assert!(!zones.admits("s3://lake/staging/../landing/x", true));
        assert!(!zones.admits("s3://other/landing/x", false));
        assert!(!zones.admits("file:///etc/passwd", false));
        assert!(StorageZones::default().is_empty());
    }
}
