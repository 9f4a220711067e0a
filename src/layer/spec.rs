//! `SRC:DEST[,owner=UID:GID][,strip=N][,parents=false][,extract=false]`: what one `--layer` asks for.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::layer::entry::Owner;

/// One layer to build: a source on the host and where its content lands in the image.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// A directory, a regular file, or a tarball (`.tar`, `.tar.gz`, `.tar.zst`, sniffed).
    pub src: PathBuf,
    /// Absolute destination path in the image.
    pub dest: String,
    /// Owner written for every entry of the source (default root, 0:0).
    #[serde(default)]
    pub owner: Option<Owner>,
    /// Leading path components dropped from tarball entries (like `tar --strip-components`).
    #[serde(default)]
    pub strip: usize,
    /// Write the parent directories of `dest` as entries (default true).
    #[serde(default = "yes")]
    pub parents: bool,
    /// Unpack tarballs under `dest` (default true); false copies the tarball as one file.
    #[serde(default = "yes")]
    pub extract: bool,
    /// Mode and owner the image below the layer gives parent folders of `dest` (by path, `a/b`),
    /// copied into their entries: filled by the build from a local base and from the earlier
    /// layers. Parents not listed are written 0755, owned by root.
    #[serde(skip)]
    pub parent_dirs: BTreeMap<String, (u32, Owner)>,
}

fn yes() -> bool {
    true
}

impl LayerSpec {
    /// A spec with default options.
    pub fn new(src: impl Into<PathBuf>, dest: impl Into<String>) -> Self {
        LayerSpec {
            src: src.into(),
            dest: dest.into(),
            owner: None,
            strip: 0,
            parents: true,
            extract: true,
            parent_dirs: BTreeMap::new(),
        }
    }

    /// Parses the `--layer` flag syntax.
    pub fn parse(value: &str) -> Result<Self> {
        let bad = |reason| Error::InvalidValue {
            what: "--layer",
            value: value.into(),
            reason,
        };
        // DEST is absolute, so the first ":/" separates it from SRC.
        let split = value.find(":/").ok_or_else(|| {
            bad("expected SRC:DEST with an absolute DEST, e.g. dist/app:/opt/app")
        })?;
        let (src, rest) = (&value[..split], &value[split + 1..]);
        if src.is_empty() {
            return Err(bad("SRC is empty"));
        }
        let mut parts = rest.split(',');
        let dest = parts.next().unwrap_or_default();
        let mut spec = LayerSpec::new(src, dest);
        for opt in parts {
            let (k, v) = opt.split_once('=').ok_or_else(|| {
                bad("options are KEY=VALUE (owner=UID:GID, strip=N, parents=BOOL, extract=BOOL)")
            })?;
            match k {
                "owner" => {
                    spec.owner = Some(Owner::parse(v).ok_or_else(|| {
                        bad("owner must be UID:GID with numeric ids, e.g. owner=1000:1000")
                    })?)
                }
                "strip" => {
                    spec.strip = v.parse().map_err(|_| bad("strip must be a whole number"))?
                }
                "parents" => {
                    spec.parents =
                        parse_bool(v).ok_or_else(|| bad("parents must be true or false"))?
                }
                "extract" => {
                    spec.extract =
                        parse_bool(v).ok_or_else(|| bad("extract must be true or false"))?
                }
                _ => {
                    return Err(bad(
                        "unknown option (known: owner, strip, parents, extract)",
                    ))
                }
            }
        }
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the destination is a clean absolute path.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason| Error::InvalidValue {
            what: "layer destination",
            value: self.dest.clone(),
            reason,
        };
        if !self.dest.starts_with('/') {
            return Err(bad("must be an absolute path"));
        }
        if self.dest.split('/').any(|c| c == "..") {
            return Err(bad("must not contain '..'"));
        }
        Ok(())
    }

    /// The destination as path components relative to the image root (empty for `/`).
    pub fn dest_components(&self) -> Vec<String> {
        self.dest
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_string)
            .collect()
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let ok = [
            ("dist/app:/opt/app", "dist/app", "/opt/app", None, 0),
            (
                "dist/app:/opt/app,owner=1000:1000",
                "dist/app",
                "/opt/app",
                Some((1000, 1000)),
                0,
            ),
            (
                "c.tar.gz:/b,strip=1,owner=0:5",
                "c.tar.gz",
                "/b",
                Some((0, 5)),
                1,
            ),
            ("/abs/src:/", "/abs/src", "/", None, 0),
        ];
        for (input, src, dest, owner, strip) in ok {
            let s = LayerSpec::parse(input).unwrap();
            assert_eq!(s.src, PathBuf::from(src), "{input}");
            assert_eq!(s.dest, dest);
            assert_eq!(s.owner.map(|o| (o.uid, o.gid)), owner);
            assert_eq!(s.strip, strip);
        }
        for bad in [
            "dist/app",
            ":/x",
            "a:/x,owner=bob",
            "a:/x,colour=red",
            "a:/x/../y",
            "a:/x,strip=-1",
            "a:/x,owner",
        ] {
            assert!(
                matches!(LayerSpec::parse(bad), Err(Error::InvalidValue { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn dest_components() {
        assert_eq!(
            LayerSpec::new("a", "/openhands//app/").dest_components(),
            ["openhands", "app"]
        );
        assert!(LayerSpec::new("a", "/").dest_components().is_empty());
    }
}
