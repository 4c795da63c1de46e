//! The checks a definition passes before anything reads data: names, templates, types,
//! patterns, rule references and sizes — each error names the file, line and field.

use std::collections::BTreeSet;

use crate::definition::{JobDefinition, ParamType, RuleAction, SourceFormat, Step, position};
use crate::error::{JobError, Position, Result};

impl JobDefinition {
    /// Checks what can be checked without reading any data.
    pub(super) fn check(&self, origin: &str) -> Result<()> {
        let top = |field: &str, message: String| JobError::Invalid {
            at: Position {
                origin: origin.to_owned(),
                line: 0,
                column: 0,
            },
            field: field.to_owned(),
            message,
        };
        if !is_name(&self.name) {
            return Err(top(
                "name",
                format!(
                    "`{}` is not a job name (letters, digits, `_` and `-`)",
                    self.name
                ),
            ));
        }
        for name in self.params.keys() {
            if !is_identifier(name) {
                return Err(top(
                    &format!("params.{name}"),
                    "param names are letters, digits and `_`, starting with a letter".into(),
                ));
            }
        }
        for (name, spec) in &self.params {
            if let Some(default) = &spec.default {
                crate::definition::ParamValue::parse(name, spec.param_type, &default.to_string())?;
            }
        }
        if self.sources.is_empty() {
            return Err(top("sources", "a job needs at least one source".into()));
        }
        for (name, source) in &self.sources {
            let at = position(origin, &source.referenced);
            if !is_identifier(name) {
                return Err(JobError::Invalid {
                    at,
                    field: format!("sources.{name}"),
                    message: "source names are letters, digits and `_`, starting with a letter"
                        .into(),
                });
            }
            self.check_templates(&source.value.path, &format!("sources.{name}.path"), &at)?;
            if let Some(base) = &source.value.base_path {
                self.check_templates(base, &format!("sources.{name}.base_path"), &at)?;
            }
            if let Some(csv) = &source.value.csv {
                for (field, value) in [("delimiter", &csv.delimiter), ("quote", &csv.quote)] {
                    if value.len() != 1 {
                        return Err(JobError::Invalid {
                            at: at.clone(),
                            field: format!("sources.{name}.csv.{field}"),
                            message: format!("must be one ASCII character, not `{value}`"),
                        });
                    }
                }
            }
            let option_for = |field: &str, format: SourceFormat| JobError::Invalid {
                at: at.clone(),
                field: format!("sources.{name}.{field}"),
                message: format!("applies to `format: {}` sources", format.name()),
            };
            if source.value.csv.is_some() && source.value.format != SourceFormat::Csv {
                return Err(option_for("csv", SourceFormat::Csv));
            }
            if source.value.json.is_some() && source.value.format != SourceFormat::Json {
                return Err(option_for("json", SourceFormat::Json));
            }
            match (&source.value.fixed_width, source.value.format) {
                (Some(layout), SourceFormat::FixedWidth) => {
                    check_fixed_width(layout).map_err(|(field, message)| JobError::Invalid {
                        at: at.clone(),
                        field: format!("sources.{name}.fixed_width.{field}"),
                        message,
                    })?;
                }
                (None, SourceFormat::FixedWidth) => {
                    return Err(JobError::Invalid {
                        at: at.clone(),
                        field: format!("sources.{name}.fixed_width"),
                        message: "a fixed_width source needs its layout: `fixed_width: \
                                  {columns: [{name, start, width}, …]}`"
                            .into(),
                    });
                }
                (Some(_), _) => return Err(option_for("fixed_width", SourceFormat::FixedWidth)),
                (None, _) => {}
            }
        }
        match &self.input {
            Some(input) if !self.sources.contains_key(input) => {
                return Err(top(
                    "input",
                    format!(
                        "`{input}` is not one of the sources ({})",
                        self.source_names()
                    ),
                ));
            }
            None if self.sources.len() > 1 => {
                return Err(top(
                    "input",
                    format!(
                        "the job has several sources ({}); name the one the steps start from",
                        self.source_names()
                    ),
                ));
            }
            _ => {}
        }
        for (index, step) in self.steps.iter().enumerate() {
            let at = position(origin, &step.referenced);
            let field = format!("steps[{index}].{}", step.value.kind());
            let invalid = |message: String| JobError::Invalid {
                at: at.clone(),
                field: field.clone(),
                message,
            };
            match &step.value {
                Step::Select(columns) | Step::Drop(columns) if columns.is_empty() => {
                    return Err(invalid("names no columns".into()));
                }
                Step::Dedupe(dedupe) if dedupe.keys.is_empty() => {
                    return Err(invalid("`keys` must name at least one column".into()));
                }
                Step::Cast(columns) => {
                    for (column, ty) in columns {
                        crate::definition::parse_column_type(&ty.0)
                            .map_err(|message| invalid(format!("column `{column}`: {message}")))?;
                    }
                }
                Step::Parse(columns) => {
                    for (column, entry) in columns {
                        let spec = entry.spec();
                        crate::definition::parse_column_type(&spec.column_type.0)
                            .map_err(|message| invalid(format!("column `{column}`: {message}")))?;
                        for format in &spec.formats {
                            crate::functions::spark_pattern_to_chrono(format).map_err(
                                |message| invalid(format!("column `{column}`: {message}")),
                            )?;
                        }
                        if let Some(rule) = &spec.rule
                            && !is_identifier(rule)
                        {
                            return Err(invalid(format!(
                                "column `{column}`: rule names are letters, digits and `_`"
                            )));
                        }
                    }
                }
                Step::RegexReplace(replace) => {
                    regex::Regex::new(&replace.pattern)
                        .map_err(|err| invalid(format!("pattern `{}`: {err}", replace.pattern)))?;
                }
                Step::Standardize(standardize)
                    if !self.sources.contains_key(&standardize.reference) =>
                {
                    return Err(invalid(format!(
                        "reference `{}` is not one of the sources ({})",
                        standardize.reference,
                        self.source_names()
                    )));
                }
                Step::Mask(mask) => {
                    if mask.columns.is_empty() {
                        return Err(invalid("names no columns".into()));
                    }
                    let keyed = mask.columns.values().any(|method| method.is_keyed());
                    match &mask.key {
                        None if keyed => {
                            return Err(invalid(
                                "hmac_sha256 and tokenize need `key` (`env:NAME` or `file:/path`)"
                                    .into(),
                            ));
                        }
                        Some(key) => {
                            self.check_templates(key, &format!("{field}.key"), &at)?;
                            if crate::definition::template_names(key).is_empty() {
                                crate::functions::SecretRef::parse(key).map_err(&invalid)?;
                            }
                        }
                        None => {}
                    }
                }
                _ => {}
            }
        }
        self.check_quality(origin)?;
        if self.outputs.is_empty() {
            return Err(top("outputs", "a job needs at least one output".into()));
        }
        let mut names = BTreeSet::new();
        for (index, output) in self.outputs.iter().enumerate() {
            let at = position(origin, &output.referenced);
            let spec = &output.value;
            if !names.insert(spec.name.as_str()) {
                return Err(JobError::Invalid {
                    at,
                    field: format!("outputs[{index}].name"),
                    message: format!("output name `{}` is used twice", spec.name),
                });
            }
            self.check_templates(&spec.path, &format!("outputs[{index}].path"), &at)?;
            if let Some(size) = &spec.target_file_size {
                crate::definition::parse_byte_size(size).map_err(|message| JobError::Invalid {
                    at: at.clone(),
                    field: format!("outputs[{index}].target_file_size"),
                    message,
                })?;
            }
        }
        Ok(())
    }

    fn check_templates(&self, template: &str, field: &str, at: &Position) -> Result<()> {
        for name in crate::definition::template_names(template) {
            if !self.params.contains_key(&name) {
                return Err(JobError::Invalid {
                    at: at.clone(),
                    field: field.to_owned(),
                    message: format!("`{{{{{name}}}}}` names no declared param"),
                });
            }
        }
        Ok(())
    }

    /// Rule names, checks and actions; a quarantine output when anything quarantines.
    fn check_quality(&self, origin: &str) -> Result<()> {
        let top = |field: String, message: String| JobError::Invalid {
            at: Position {
                origin: origin.to_owned(),
                line: 0,
                column: 0,
            },
            field,
            message,
        };
        let mut names: BTreeSet<String> = BTreeSet::new();
        let mut quarantines = false;
        for (index, step) in self.steps.iter().enumerate() {
            if let Step::Parse(columns) = &step.value {
                for (column, entry) in columns {
                    let spec = entry.spec();
                    let name = spec
                        .rule
                        .clone()
                        .unwrap_or_else(|| format!("{column}_parses"));
                    if !names.insert(name.clone()) {
                        return Err(JobError::Invalid {
                            at: position(origin, &step.referenced),
                            field: format!("steps[{index}].parse.{column}"),
                            message: format!("rule name `{name}` is used twice"),
                        });
                    }
                    quarantines |=
                        spec.action.unwrap_or(RuleAction::Quarantine) == RuleAction::Quarantine;
                }
            }
        }
        let Some(quality) = &self.quality else {
            if quarantines {
                return Err(top(
                    "quality.quarantine".into(),
                    "a parse step quarantines rows that do not parse, but the job has no \
                     `quality.quarantine` output (add one, or give the parse entries \
                     `action: fail` or `warn`)"
                        .into(),
                ));
            }
            return Ok(());
        };
        for (index, rule) in quality.rules.iter().enumerate() {
            let at = position(origin, &rule.referenced);
            let rule = &rule.value;
            let invalid = |message: String| JobError::Invalid {
                at: at.clone(),
                field: format!("quality.rules[{index}]"),
                message,
            };
            if !is_identifier(&rule.name) {
                return Err(invalid(format!(
                    "`{}` is not a rule name (letters, digits and `_`, starting with a letter)",
                    rule.name
                )));
            }
            if !names.insert(rule.name.clone()) {
                return Err(invalid(format!("rule name `{}` is used twice", rule.name)));
            }
            match rule.kinds().as_slice() {
                [_] => {}
                [] => {
                    return Err(invalid(format!(
                        "rule `{}` names no check (not_null, unique, accepted_values, range, \
                         regex, referential, row_count, freshness or expr)",
                        rule.name
                    )));
                }
                several => {
                    return Err(invalid(format!(
                        "rule `{}` names several checks ({}); write one rule per check",
                        rule.name,
                        several.join(", ")
                    )));
                }
            }
            if rule.is_dataset_check() && rule.action == Some(RuleAction::Quarantine) {
                return Err(invalid(format!(
                    "rule `{}` checks the whole dataset, so it can fail or warn but not \
                     quarantine rows",
                    rule.name
                )));
            }
            quarantines |= rule.effective_action() == RuleAction::Quarantine;
            if let Some(regex) = &rule.regex {
                regex::Regex::new(&regex.pattern)
                    .map_err(|err| invalid(format!("pattern `{}`: {err}", regex.pattern)))?;
            }
            if let Some(referential) = &rule.referential
                && !self.sources.contains_key(&referential.reference)
            {
                return Err(invalid(format!(
                    "reference `{}` is not one of the sources ({})",
                    referential.reference,
                    self.source_names()
                )));
            }
            if let Some(columns) = &rule.not_null
                && columns.is_empty()
            {
                return Err(invalid("not_null names no columns".into()));
            }
            if let Some(unique) = &rule.unique
                && unique.columns.is_empty()
            {
                return Err(invalid("unique names no columns".into()));
            }
            if let Some(range) = &rule.range
                && range.min.is_none()
                && range.max.is_none()
            {
                return Err(invalid("range needs `min`, `max` or both".into()));
            }
            if let Some(freshness) = &rule.freshness
                && let Some(as_of) = &freshness.as_of
            {
                match as_of.strip_prefix('$') {
                    Some(param) => match self.params.get(param) {
                        Some(spec) if spec.param_type == ParamType::Date => {}
                        _ => {
                            return Err(invalid(format!(
                                "as_of `{as_of}` names no declared date param"
                            )));
                        }
                    },
                    None => {
                        chrono::NaiveDate::parse_from_str(as_of, "%Y-%m-%d").map_err(|_| {
                            invalid(format!("as_of `{as_of}` is not `$param` or YYYY-MM-DD"))
                        })?;
                    }
                }
            }
        }
        if let Some(percent) = quality.thresholds.max_quarantined_percent
            && !(0.0..=100.0).contains(&percent)
        {
            return Err(top(
                "quality.thresholds.max_quarantined_percent".into(),
                format!("{percent} is not a percentage (0 to 100)"),
            ));
        }
        match &quality.quarantine {
            None if quarantines => Err(top(
                "quality.quarantine".into(),
                "rules quarantine rows, but the job has no `quality.quarantine` output".into(),
            )),
            Some(quarantine) => {
                let at = Position {
                    origin: origin.to_owned(),
                    line: 0,
                    column: 0,
                };
                self.check_templates(&quarantine.path, "quality.quarantine.path", &at)?;
                if let Some(size) = &quarantine.target_file_size {
                    crate::definition::parse_byte_size(size).map_err(|message| {
                        top("quality.quarantine.target_file_size".into(), message)
                    })?;
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn source_names(&self) -> String {
        self.sources
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A fixed-width layout's faults: (field, message).
fn check_fixed_width(
    layout: &crate::definition::FixedWidthOptions,
) -> std::result::Result<(), (String, String)> {
    if layout.columns.is_empty() {
        return Err(("columns".into(), "name at least one column".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (index, column) in layout.columns.iter().enumerate() {
        let field = format!("columns[{index}]");
        if column.name.trim().is_empty() {
            return Err((field, "a column needs a name".into()));
        }
        if !seen.insert(column.name.as_str()) {
            return Err((field, format!("column `{}` is named twice", column.name)));
        }
        if column.start == 0 || column.width == 0 {
            return Err((
                field,
                format!(
                    "`{}`: start counts from 1 and width is at least 1 (start {}, width {})",
                    column.name, column.start, column.width
                ),
            ));
        }
    }
    if let Some(filter) = &layout.record_type {
        if filter.start == 0 || filter.width == 0 {
            return Err((
                "record_type".into(),
                "start counts from 1 and width is at least 1".into(),
            ));
        }
        if filter.values.is_empty() {
            return Err((
                "record_type.values".into(),
                "name the record types that are rows".into(),
            ));
        }
    }
    Ok(())
}
