//! The image spec's JSON documents: descriptors, manifests, indexes and platforms, with unknown
//! fields kept so that documents hoist did not write round-trip unchanged.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// Annotation naming the tag of a manifest inside an OCI layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation with the base image's reference.
pub const ANNOTATION_BASE_NAME: &str = "org.opencontainers.image.base.name";
/// Annotation with the base image's manifest digest.
pub const ANNOTATION_BASE_DIGEST: &str = "org.opencontainers.image.base.digest";
/// Annotation with the image creation time.
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";

/// A content descriptor: media type, digest and size of a blob.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The blob's media type.
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// The platform, in index entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Fields hoist does not interpret (urls, artifactType, …).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Descriptor {
    /// A descriptor with no platform, annotations or extra fields.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }
}

/// An image manifest (OCI or Docker schema2; both share this shape).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest media type (may be absent in old OCI manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layer blobs, base first.
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Fields hoist does not interpret (subject, artifactType, …).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// An image index / manifest list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// The index media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests it lists.
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Fields hoist does not interpret.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Index {
    /// An empty OCI index.
    pub fn empty() -> Self {
        Index {
            schema_version: 2,
            media_type: Some(crate::media::OCI_INDEX.to_string()),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }
}

/// An OS/architecture pair with an optional variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// Architecture, e.g. `amd64`.
    pub architecture: String,
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// Variant, e.g. `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Fields hoist does not interpret (os.version, features, …).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Platform {
    /// The platform of the machine hoist runs on, in OCI words.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: None,
            extra: BTreeMap::new(),
        }
    }

    /// True when `other` (from an index) satisfies this requested platform. A request without a
    /// variant matches any variant; `arm64` treats a missing variant as `v8`.
    pub fn matches(&self, other: &Platform) -> bool {
        if self.os != other.os || self.architecture != other.architecture {
            return false;
        }
        match (&self.variant, &other.variant) {
            (None, _) => true,
            (Some(want), Some(have)) => want == have,
            (Some(want), None) => self.architecture == "arm64" && want == "v8",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || Error::InvalidValue {
            what: "platform",
            value: s.into(),
            reason: "expected os/arch[/variant], e.g. linux/amd64",
        };
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        Ok(Platform {
            os: parts[0].into(),
            architecture: parts[1].into(),
            variant: parts.get(2).map(|v| v.to_string()),
            extra: BTreeMap::new(),
        })
    }
}

/// Serialises a value as canonical JSON: keys sorted, no insignificant whitespace.
pub fn canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    // serde_json's Value keeps object keys in a BTreeMap, so a round trip through it sorts them.
    match serde_json::to_value(value) {
        Ok(v) => serde_json::to_vec(&v).unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// Parses a JSON document, naming it and its location on failure.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    raw: &[u8],
    what: &'static str,
    location: &str,
) -> Result<T> {
    serde_json::from_slice(raw).map_err(|source| Error::BadJson {
        what,
        location: location.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_table() {
        let cases = [
            ("linux/amd64", Some(("linux", "amd64", None))),
            ("linux/arm64/v8", Some(("linux", "arm64", Some("v8")))),
            ("linux", None),
            ("linux/", None),
            ("a/b/c/d", None),
        ];
        for (input, want) in cases {
            let got = input.parse::<Platform>();
            match want {
                Some((os, arch, var)) => {
                    let p = got.unwrap();
                    assert_eq!(
                        (p.os.as_str(), p.architecture.as_str(), p.variant.as_deref()),
                        (os, arch, var)
                    );
                    assert_eq!(p.to_string(), input);
                }
                None => assert!(matches!(got, Err(Error::InvalidValue { .. })), "{input}"),
            }
        }
    }

    #[test]
    fn platform_matching() {
        let want: Platform = "linux/arm64/v8".parse().unwrap();
        assert!(want.matches(&"linux/arm64".parse().unwrap()));
        assert!(!want.matches(&"linux/arm64/v9".parse().unwrap()));
        let any: Platform = "linux/arm".parse().unwrap();
        assert!(any.matches(&"linux/arm/v7".parse().unwrap()));
        assert!(!any.matches(&"linux/amd64".parse().unwrap()));
    }

    #[test]
    fn canonical_json_sorts_and_keeps_unknown_fields() {
        let raw = br#"{"schemaVersion":2,"layers":[],"config":{"size":2,"mediaType":"x","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","urls":["u"]},"subject":{"a":1}}"#;
        let m: Manifest = parse_json(raw, "manifest", "test").unwrap();
        let out = String::from_utf8(canonical_json(&m)).unwrap();
        assert_eq!(
            out,
            r#"{"config":{"digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","mediaType":"x","size":2,"urls":["u"]},"layers":[],"schemaVersion":2,"subject":{"a":1}}"#
        );
    }
}
