//! Where an image comes from or goes to: `scratch`, or an OCI image layout `oci:DIR[:TAG]`
//! (skopeo's spelling).

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::registry::RegistryRef;

/// A location of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    /// The empty image.
    Scratch,
    /// An image in an OCI image layout, by tag or (without one) the only image there.
    Layout(LayoutRef),
    /// An image in a registry (docker's reference grammar).
    Registry(RegistryRef),
}

/// `oci:DIR[:TAG]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutRef {
    /// The layout directory.
    pub dir: PathBuf,
    /// The tag (`org.opencontainers.image.ref.name`), if given.
    pub tag: Option<String>,
}

impl LayoutRef {
    /// Parses the part after `oci:`. The tag is what follows the last `:` unless that text holds
    /// a `/` (then the whole value is the directory).
    pub fn parse(value: &str) -> Result<Self> {
        let bad = |reason| Error::InvalidValue {
            what: "OCI layout reference",
            value: format!("oci:{value}"),
            reason,
        };
        let (dir, tag) = match value.rsplit_once(':') {
            Some((d, t)) if !t.contains('/') => (d, Some(t)),
            _ => (value, None),
        };
        if dir.is_empty() {
            return Err(bad("expected oci:DIR[:TAG]"));
        }
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(bad(
                    "a tag is 1-128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'",
                ));
            }
        }
        Ok(LayoutRef {
            dir: PathBuf::from(dir),
            tag: tag.map(str::to_string),
        })
    }
}

/// True when `t` is a valid tag (the distribution spec's grammar).
pub fn valid_tag(t: &str) -> bool {
    let mut chars = t.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && t.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl ImageRef {
    /// Parses `scratch`, `oci:DIR[:TAG]` or a registry reference (`[docker://]REF`).
    pub fn parse(value: &str) -> Result<Self> {
        if value == "scratch" {
            return Ok(ImageRef::Scratch);
        }
        match value.strip_prefix("oci:") {
            Some(rest) => Ok(ImageRef::Layout(LayoutRef::parse(rest)?)),
            None => Ok(ImageRef::Registry(RegistryRef::parse(value)?)),
        }
    }
}

impl fmt::Display for LayoutRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci:{}", self.dir.display())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Scratch => f.write_str("scratch"),
            ImageRef::Layout(l) => l.fmt(f),
            ImageRef::Registry(r) => r.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Input, and the directory and tag it parses to (`None`: refused).
    type Case<'a> = (&'a str, Option<(&'a str, Option<&'a str>)>);

    #[test]
    fn parse_table() {
        let cases: &[Case] = &[
            ("oci:out/runtime:dev", Some(("out/runtime", Some("dev")))),
            ("oci:out/runtime", Some(("out/runtime", None))),
            ("oci:/abs/dir:1.2.3", Some(("/abs/dir", Some("1.2.3")))),
            ("oci:/a:b/c", Some(("/a:b/c", None))),
            ("oci:x:", None),
            ("oci::tag", None),
            ("oci:x:-bad", None),
            ("Ubuntu:22.04", None),
        ];
        for (input, want) in cases {
            match (ImageRef::parse(input), want) {
                (Ok(ImageRef::Layout(l)), Some((dir, tag))) => {
                    assert_eq!(l.dir, PathBuf::from(dir), "{input}");
                    assert_eq!(l.tag.as_deref(), *tag, "{input}");
                    assert_eq!(l.to_string(), *input);
                }
                (Err(Error::InvalidValue { .. }), None) => {}
                (got, _) => panic!("{input}: {got:?}"),
            }
        }
        assert_eq!(ImageRef::parse("scratch").unwrap(), ImageRef::Scratch);
        assert!(matches!(
            ImageRef::parse("ubuntu:22.04"),
            Ok(ImageRef::Registry(_))
        ));
    }
}
