//! No run writes where it reads: an output, the quarantine (and the staging folder
//! below each) may not equal, contain or lie inside a source or another output, nor
//! equal or contain a location the process protects (the scheduler's state directory). A commit replaces
//! what is below its output, so an output over its own landing files deletes them.
//!
//! Locations are compared canonically: `s3a://` and `s3n://` are `s3://`, bucket names
//! and schemes ignore case, `.` and `..` are resolved, repeated and trailing slashes
//! dropped, a glob counts from the folder before its first wildcard, and local paths
//! are compared after resolving symlinks of the part that exists.

use std::path::{Component, Path, PathBuf};

use crate::compile::CompiledJob;
use crate::error::{JobError, Position, Result};

/// A location reduced to what decides whether two locations overlap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Canonical {
    scheme: String,
    authority: String,
    segments: Vec<String>,
}

impl Canonical {
    /// The canonical form of a location URL (`file:///…`, `s3://bucket/…`) or a local
    /// path.
    pub(crate) fn of(location: &str) -> Self {
        let (scheme, rest) = match location.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("file".to_owned(), location),
        };
        if scheme == "file" {
            return Self {
                scheme,
                authority: String::new(),
                segments: local_segments(rest),
            };
        }
        let scheme = match scheme.as_str() {
            "s3a" | "s3n" => "s3".to_owned(),
            "gcs" => "gs".to_owned(),
            _ => scheme,
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        Self {
            scheme,
            authority: authority.to_ascii_lowercase(),
            segments: normalized(path.split('/').map(str::to_owned)),
        }
    }

    /// Whether `other` is this location or lies below it.
    pub(crate) fn holds(&self, other: &Self) -> bool {
        matches!(
            self.relation(other),
            Some("is the same location as" | "contains")
        )
    }

    /// How `self` relates to `other`, if they overlap.
    fn relation(&self, other: &Self) -> Option<&'static str> {
        if self.scheme != other.scheme || self.authority != other.authority {
            return None;
        }
        let common = self.segments.len().min(other.segments.len());
        if self.segments[..common] != other.segments[..common] {
            None
        } else if self.segments.len() == other.segments.len() {
            Some("is the same location as")
        } else if self.segments.len() < other.segments.len() {
            Some("contains")
        } else {
            Some("lies inside")
        }
    }
}

/// Path segments with `.`, `..` and empty segments resolved, cut before the first
/// segment with a glob wildcard.
fn normalized(segments: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for segment in segments {
        if segment.contains(['*', '?', '[', '{']) {
            break;
        }
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            _ => out.push(segment),
        }
    }
    out
}

/// A local path's segments, with symlinks resolved in the longest part that exists.
fn local_segments(path: &str) -> Vec<String> {
    let lexical: PathBuf = normalized(path.split('/').map(str::to_owned))
        .into_iter()
        .fold(PathBuf::from("/"), |mut p, s| {
            p.push(s);
            p
        });
    let mut existing = lexical.as_path();
    let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
    let resolved = loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            break real;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => break PathBuf::from("/"),
        }
    };
    let full = rest.into_iter().rev().fold(resolved, |mut p, s| {
        p.push(s);
        p
    });
    full.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

/// One place a run touches, for the overlap check and its messages.
struct Place<'a> {
    /// What it is, as a message names it (``output `claims` ``).
    what: String,
    /// The definition field to blame when it is written.
    field: String,
    location: &'a str,
    canonical: Canonical,
    writes: bool,
    /// A protected place may hold outputs below it (the image keeps its state in its
    /// working directory); only an output that is it, or holds it, is refused.
    protected: bool,
}

impl CompiledJob {
    /// Fails when an output or the quarantine overlaps a source, another output, or one
    /// of `protected` (`(what, location)`, such as the scheduler's state directory).
    pub fn check_overlaps(&self, origin: &str, protected: &[(&str, &Path)]) -> Result<()> {
        let mut places: Vec<Place> = Vec::new();
        for source in &self.sources {
            places.push(Place {
                what: format!("source `{}`", source.name),
                field: format!("sources.{}.path", source.name),
                location: &source.location,
                canonical: Canonical::of(&source.location),
                writes: false,
                protected: false,
            });
        }
        let protected: Vec<(String, String)> = protected
            .iter()
            .map(|(what, path)| {
                let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
                ((*what).to_owned(), format!("file://{}", absolute.display()))
            })
            .collect();
        for (what, location) in &protected {
            places.push(Place {
                what: what.clone(),
                field: String::new(),
                location,
                canonical: Canonical::of(location),
                writes: false,
                protected: true,
            });
        }
        for (index, output) in self.outputs.iter().enumerate() {
            places.push(Place {
                what: format!("output `{}`", output.name),
                field: format!("outputs[{index}].path"),
                location: &output.location,
                canonical: Canonical::of(&output.location),
                writes: true,
                protected: false,
            });
        }
        if let Some(quarantine) = &self.quarantine {
            places.push(Place {
                what: "the quarantine".to_owned(),
                field: "quality.quarantine.path".to_owned(),
                location: &quarantine.location,
                canonical: Canonical::of(&quarantine.location),
                writes: true,
                protected: false,
            });
        }
        for (i, written) in places.iter().enumerate().filter(|(_, p)| p.writes) {
            for (j, other) in places.iter().enumerate() {
                // Each pair of written places once; a written place against every read one.
                if i == j || (other.writes && j < i) {
                    continue;
                }
                if let Some(relation) = written.canonical.relation(&other.canonical)
                    && !(other.protected && relation == "lies inside")
                {
                    return Err(JobError::Invalid {
                        at: Position {
                            origin: origin.to_owned(),
                            line: 0,
                            column: 0,
                        },
                        field: written.field.clone(),
                        message: format!(
                            "{} ({}) {relation} {} ({}): a run replaces what is below its \
                             outputs, so it would delete or rewrite what it reads or what \
                             another output holds; give each output a folder of its own",
                            written.what, written.location, other.what, other.location
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation(a: &str, b: &str) -> Option<&'static str> {
        Canonical::of(a).relation(&Canonical::of(b))
    }

    #[test]
    fn locations_compare_canonically() {
        assert_eq!(
            relation("s3://lake/x", "s3a://LAKE/x/"),
            Some("is the same location as")
        );
        assert_eq!(
            relation("s3://lake/x/./y/../", "s3://lake/x"),
            Some("is the same location as")
        );
        assert_eq!(relation("s3://lake/x", "s3://lake/x/y"), Some("contains"));
        assert_eq!(
            relation("s3://lake/x/y", "s3://lake//x"),
            Some("lies inside")
        );
        assert_eq!(relation("s3://lake/x", "s3://lake/xy"), None);
        assert_eq!(relation("s3://lake/x", "s3://other/x"), None);
        assert_eq!(relation("s3://lake/x", "file:///lake/x"), None);
        assert_eq!(
            relation("s3://lake/landing/*.csv", "s3://lake/landing"),
            Some("is the same location as")
        );
    }

    #[test]
    fn local_paths_resolve_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir_all(real.join("landing")).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let through_link = format!("file://{}/landing/new/out", link.display());
        let direct = format!("file://{}/landing", real.display());
        assert_eq!(relation(&through_link, &direct), Some("lies inside"));
    }
}
