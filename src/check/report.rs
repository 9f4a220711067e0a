//! The result of the checks: findings grouped by file, each with what is wrong and how to fix it,
//! rendered as text for people or serialised as JSON.

use std::fmt::Write as _;

use serde::Serialize;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The image will fail at run time: stops a build.
    Error,
    /// Likely to fail or to surprise.
    Warning,
    /// Worth knowing.
    Info,
}

/// One finding about one file (or about the image config).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Severity.
    pub severity: Severity,
    /// The path in the image (absolute), or `config` for image settings.
    pub file: String,
    /// Short category: `glibc`, `libraries`, `loader`, `machine`, `entrypoint`, `user`,
    /// `workdir`, `bundle-leak`, `browsers`, `symlink`, `folder`.
    pub check: &'static str,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Names involved (missing sonames, missing versions), for tools.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<String>,
}

/// What a check run found and what it cost.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Number of errors (set by [`Report::sort`]).
    pub errors: usize,
    /// Number of warnings (set by [`Report::sort`]).
    pub warnings: usize,
    /// Findings, sorted by file then severity.
    pub findings: Vec<Finding>,
    /// ELF files of the new layers that were checked.
    pub elf_files: usize,
    /// Base layers read from their blobs (the others came from the cache).
    pub base_layers_read: usize,
    /// Base layers whose summary came from the cache.
    pub base_layers_cached: usize,
}

impl Report {
    /// Number of findings of a severity.
    pub fn count(&self, s: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == s).count()
    }

    /// Sorts findings by file, then severity, keeping the order of equal ones, and counts them.
    pub fn sort(&mut self) {
        self.findings
            .sort_by(|a, b| (&a.file, a.severity).cmp(&(&b.file, b.severity)));
        self.errors = self.count(Severity::Error);
        self.warnings = self.count(Severity::Warning);
    }

    /// The report for people: one block per file, then a summary line. `min` leaves out
    /// less severe findings.
    pub fn render(&self, min: Severity) -> String {
        let mut out = String::new();
        let mut last: Option<&str> = None;
        for f in self.findings.iter().filter(|f| f.severity <= min) {
            if last != Some(f.file.as_str()) {
                if last.is_some() {
                    out.push('\n');
                }
                let _ = writeln!(out, "{}", f.file);
                last = Some(&f.file);
            }
            let tag = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
                Severity::Info => "info",
            };
            let _ = writeln!(out, "  {tag}[{}]: {}", f.check, f.message);
            if let Some(fix) = &f.fix {
                let _ = writeln!(out, "    fix: {fix}");
            }
        }
        if last.is_some() {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "{} error(s), {} warning(s); {} ELF file(s) checked; base layers: {} read, {} from cache",
            self.count(Severity::Error),
            self.count(Severity::Warning),
            self.elf_files,
            self.base_layers_read,
            self.base_layers_cached
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_file() {
        let f = |file: &str, severity| Finding {
            severity,
            file: file.into(),
            check: "glibc",
            message: "m".into(),
            fix: Some("x".into()),
            items: vec![],
        };
        let mut r = Report {
            findings: vec![
                f("/b", Severity::Warning),
                f("/a", Severity::Warning),
                f("/a", Severity::Error),
            ],
            ..Default::default()
        };
        r.sort();
        let text = r.render(Severity::Info);
        assert!(text.starts_with("/a\n  error[glibc]: m\n    fix: x\n  warning"));
        assert_eq!(r.count(Severity::Error), 1);
        assert!(!r.render(Severity::Error).contains("/b"));
    }
}
