//! Registry references as docker parses them: `[host[:port]/]path[:tag][@sha256:…]`, with
//! `docker.io` and `library/` implied, `localhost` and `host:port` recognised as registries.

use std::fmt;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::reference::valid_tag;

/// The registry Docker Hub references name when they name none.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's API is actually served (trap one of two).
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The key docker's `config.json` keeps Docker Hub credentials under (trap two of two).
pub const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";

/// A repository on a registry: `registry/path`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Repository {
    /// The registry as written by users (`docker.io`, `ghcr.io`, `localhost:5000`).
    pub registry: String,
    /// The repository path (`library/ubuntu`).
    pub path: String,
}

/// A reference to an image on a registry, by tag, by digest, or both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryRef {
    /// Where the image lives.
    pub repository: Repository,
    /// The tag (`latest` when neither tag nor digest was given).
    pub tag: Option<String>,
    /// The manifest digest, when pinned.
    pub digest: Option<Digest>,
}

impl Repository {
    /// The host:port the API is served at (`registry-1.docker.io` for `docker.io`).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.path)
    }
}

impl RegistryRef {
    /// Parses a docker-style reference (an optional `docker://` prefix is accepted).
    pub fn parse(value: &str) -> Result<Self> {
        let bad = |reason| Error::InvalidValue {
            what: "image reference",
            value: value.into(),
            reason,
        };
        let input = value.strip_prefix("docker://").unwrap_or(value);
        let (name, digest) = match input.split_once('@') {
            Some((n, d)) => (
                n,
                Some(d.parse::<Digest>().map_err(|_| {
                    bad("the part after @ must be sha256:<64 lowercase hex digits>")
                })?),
            ),
            None => (input, None),
        };
        let (name, tag) = match name.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t)),
            _ => (name, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(bad(
                    "a tag is 1-128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'",
                ));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if is_registry(first) => (first.to_string(), rest.to_string()),
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if registry.is_empty()
            || !registry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        {
            return Err(bad("the registry must be a host name or host:port"));
        }
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        let path = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if path.is_empty() || path.len() > 255 || !path.split('/').all(valid_component) {
            return Err(bad("a repository is lowercase path components of [a-z0-9] joined by '.', '_', '__' or '-', separated by '/'"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(RegistryRef {
            repository: Repository { registry, path },
            tag,
            digest,
        })
    }

    /// What goes after `/manifests/`: the digest when pinned, else the tag.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// The same repository and tag, pinned to `digest` (what hoist prints after a push).
    pub fn with_digest(&self, digest: Digest) -> String {
        let mut s = self.repository.to_string();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        format!("{s}@{digest}")
    }
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// True when the first path component names a registry (docker's rule).
fn is_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parse_table() {
        // (input, Some((registry, path, tag, has_digest)) or None for an error)
        type Want = Option<(&'static str, &'static str, Option<&'static str>, bool)>;
        let at_d = format!("ubuntu@{D}");
        let tag_d = format!("ghcr.io/a/b:1@{D}");
        let host_d = format!("localhost:5000/x@{D}");
        let cases: Vec<(&str, Want)> = vec![
            (
                "ubuntu",
                Some(("docker.io", "library/ubuntu", Some("latest"), false)),
            ),
            (
                "ubuntu:22.04",
                Some(("docker.io", "library/ubuntu", Some("22.04"), false)),
            ),
            (
                "library/ubuntu",
                Some(("docker.io", "library/ubuntu", Some("latest"), false)),
            ),
            (
                "docker.io/ubuntu",
                Some(("docker.io", "library/ubuntu", Some("latest"), false)),
            ),
            (
                "docker.io/library/ubuntu:22.04",
                Some(("docker.io", "library/ubuntu", Some("22.04"), false)),
            ),
            (
                "index.docker.io/ubuntu",
                Some(("docker.io", "library/ubuntu", Some("latest"), false)),
            ),
            (
                "docker://alpine:3",
                Some(("docker.io", "library/alpine", Some("3"), false)),
            ),
            (
                "acme/app",
                Some(("docker.io", "acme/app", Some("latest"), false)),
            ),
            (
                "acme/team/app:v1",
                Some(("docker.io", "acme/team/app", Some("v1"), false)),
            ),
            (
                "localhost/app",
                Some(("localhost", "app", Some("latest"), false)),
            ),
            (
                "localhost:5000/app:dev",
                Some(("localhost:5000", "app", Some("dev"), false)),
            ),
            (
                "127.0.0.1:5000/a/b:c",
                Some(("127.0.0.1:5000", "a/b", Some("c"), false)),
            ),
            (
                "ghcr.io/acme/runtime:1.2",
                Some(("ghcr.io", "acme/runtime", Some("1.2"), false)),
            ),
            (
                "registry.internal:5000/acme/runtime:1.2",
                Some(("registry.internal:5000", "acme/runtime", Some("1.2"), false)),
            ),
            (
                "my-registry.example.com/a_b/c__d/e-f/g.h",
                Some((
                    "my-registry.example.com",
                    "a_b/c__d/e-f/g.h",
                    Some("latest"),
                    false,
                )),
            ),
            (
                "a---b",
                Some(("docker.io", "library/a---b", Some("latest"), false)),
            ),
            (&at_d, Some(("docker.io", "library/ubuntu", None, true))),
            (&tag_d, Some(("ghcr.io", "a/b", Some("1"), true))),
            (&host_d, Some(("localhost:5000", "x", None, true))),
            (
                "[::1]:5000/app",
                Some(("[::1]:5000", "app", Some("latest"), false)),
            ),
            ("Ubuntu", None),
            ("ghcr.io/Acme/app", None),
            ("ubuntu:", None),
            ("ubuntu:-x", None),
            ("ubuntu@sha256:abc", None),
            (
                "ubuntu@md5:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                None,
            ),
            ("", None),
            ("ghcr.io/", None),
            ("a//b", None),
            ("a_/b", None),
            ("a..b", None),
            ("-a", None),
            ("ghcr.io/a b", None),
        ];
        assert!(cases.len() >= 25);
        for (input, want) in cases {
            let got = RegistryRef::parse(input);
            match (got, want) {
                (Ok(r), Some((reg, path, tag, digest))) => {
                    assert_eq!(r.repository.registry, reg, "{input}");
                    assert_eq!(r.repository.path, path, "{input}");
                    assert_eq!(r.tag.as_deref(), tag, "{input}");
                    assert_eq!(r.digest.is_some(), digest, "{input}");
                    let again = RegistryRef::parse(&r.to_string()).unwrap();
                    assert_eq!(again, r, "{input} round-trips through Display");
                }
                (Err(Error::InvalidValue { .. }), None) => {}
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn docker_hub_api_host_and_reference() {
        let r = RegistryRef::parse("ubuntu:22.04").unwrap();
        assert_eq!(r.repository.api_host(), DOCKER_HUB_API);
        assert_eq!(r.reference(), "22.04");
        let pinned = RegistryRef::parse(&format!("localhost:5000/x@{D}")).unwrap();
        assert_eq!(pinned.repository.api_host(), "localhost:5000");
        assert_eq!(pinned.reference(), D);
    }
}
