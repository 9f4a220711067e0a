//! Registry authentication: the `WWW-Authenticate` challenge (Basic or Bearer with realm,
//! service and scope), token requests, and the scopes a pull or push needs.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::registry::credentials::Credentials;

/// How a registry wants requests authenticated, from its `/v2/` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// No authentication.
    None,
    /// HTTP Basic.
    Basic,
    /// The token flow: ask `realm` for a token for `service` and the scopes.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The `service` parameter.
        service: Option<String>,
        /// The scope the registry named in this challenge, if any.
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses a `WWW-Authenticate` header value.
    pub(crate) fn parse(header: &str) -> Challenge {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Challenge::Basic,
            "bearer" => {
                let params = parse_params(rest);
                match params.get("realm") {
                    Some(realm) => Challenge::Bearer {
                        realm: realm.clone(),
                        service: params.get("service").cloned(),
                        scope: params.get("scope").cloned(),
                    },
                    None => Challenge::None,
                }
            }
            _ => Challenge::None,
        }
    }
}

/// `k="v", k2=v2` → map (quoted values may hold commas).
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_string());
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// The access a request needs: pull (or pull+push) on a repository, plus pull on the
/// repositories blobs may be mounted from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Scope {
    /// The repository path.
    pub repo: String,
    /// Whether push is needed.
    pub push: bool,
    /// Repositories (same registry) to mount from: pull on each.
    pub mount_from: Vec<String>,
}

impl Scope {
    /// Pull access to `repo`.
    pub(crate) fn pull(repo: &str) -> Scope {
        Scope {
            repo: repo.into(),
            push: false,
            mount_from: Vec::new(),
        }
    }

    /// Push (and pull) access to `repo`, and pull on each mount source.
    pub(crate) fn push(repo: &str, mount_from: &[String]) -> Scope {
        let mut from: Vec<String> = mount_from.iter().filter(|r| *r != repo).cloned().collect();
        from.sort();
        from.dedup();
        Scope {
            repo: repo.into(),
            push: true,
            mount_from: from,
        }
    }

    /// The token-request `scope` values.
    pub(crate) fn strings(&self) -> Vec<String> {
        let actions = if self.push { "pull,push" } else { "pull" };
        let mut out = vec![format!("repository:{}:{actions}", self.repo)];
        out.extend(
            self.mount_from
                .iter()
                .map(|r| format!("repository:{r}:pull")),
        );
        out
    }
}

/// Asks the token endpoint for a token covering `scopes`; credentials (if any) go as Basic.
pub(crate) fn fetch_token(
    http: &reqwest::blocking::Client,
    host: &str,
    realm: &str,
    service: Option<&str>,
    scopes: &[String],
    creds: Option<&Credentials>,
) -> Result<String> {
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(s) = service {
        query.push(("service", s));
    }
    for s in scopes {
        query.push(("scope", s));
    }
    let mut url = reqwest::Url::parse(realm).map_err(|_| Error::BadResponse {
        url: realm.into(),
        reason: format!("the token realm of {host} is not a URL"),
    })?;
    let identity = creds.filter(|c| c.is_identity_token());
    let (method, req) = match identity {
        // An identity (refresh) token is exchanged with the OAuth2 POST form of the token
        // endpoint (docker's "identitytoken", helpers answering Username "<token>").
        Some(c) => {
            let mut form = reqwest::Url::parse("form:").map_err(|_| Error::BadResponse {
                url: realm.into(),
                reason: "internal: form encoding".into(),
            })?;
            form.query_pairs_mut()
                .append_pair("grant_type", "refresh_token")
                .append_pair("client_id", "hoist")
                .append_pair("refresh_token", &c.secret)
                .append_pair("scope", &scopes.join(" "));
            if let Some(s) = service {
                form.query_pairs_mut().append_pair("service", s);
            }
            let body = form.query().unwrap_or_default().to_string();
            (
                "POST",
                http.post(url.clone())
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(body),
            )
        }
        None => {
            url.query_pairs_mut().extend_pairs(query);
            let mut req = http.get(url.clone());
            if let Some(c) = creds {
                req = req.header(reqwest::header::AUTHORIZATION, c.basic_header());
            }
            ("GET", req)
        }
    };
    let resp = req.send().map_err(|source| Error::Http {
        method,
        url: url.to_string(),
        hint: "",
        source: source.without_url(),
    })?;
    let status = resp.status().as_u16();
    if status == 401 || status == 403 {
        return Err(match creds {
            Some(c) => Error::AuthFailed {
                host: host.into(),
                source_name: c.source.clone(),
            },
            None => Error::AuthRequired {
                host: host.into(),
                url: url.to_string(),
            },
        });
    }
    if status != 200 {
        return Err(Error::RegistryStatus {
            method,
            url: url.to_string(),
            status,
            message: "token request refused".into(),
            retry_after: None,
        });
    }
    let raw = resp.bytes().map_err(|source| Error::Http {
        method,
        url: url.to_string(),
        hint: "",
        source: source.without_url(),
    })?;
    let doc: Value = crate::manifest::parse_json(&raw, "token response", url.as_str())?;
    doc["token"]
        .as_str()
        .or(doc["access_token"].as_str())
        .map(str::to_string)
        .ok_or_else(|| Error::BadResponse {
            url: url.to_string(),
            reason: "the token response holds no token".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Challenge::Basic
        );
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull,push""#
            ),
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/ubuntu:pull,push".into()),
            }
        );
        assert_eq!(
            Challenge::parse("bearer realm=https://r/token, service=r"),
            Challenge::Bearer {
                realm: "https://r/token".into(),
                service: Some("r".into()),
                scope: None
            }
        );
        assert_eq!(Challenge::parse("Bearer service=x"), Challenge::None);
        assert_eq!(Challenge::parse(""), Challenge::None);
    }

    #[test]
    fn push_scope_pulls_from_mount_sources() {
        let s = Scope::push(
            "acme/app",
            &[
                "library/ubuntu".into(),
                "acme/app".into(),
                "library/ubuntu".into(),
            ],
        );
        assert_eq!(
            s.strings(),
            [
                "repository:acme/app:pull,push",
                "repository:library/ubuntu:pull"
            ]
        );
        assert_eq!(Scope::pull("x").strings(), ["repository:x:pull"]);
    }
}
