//! The registry client: one HTTP client per registry host (TLS roots from the system, `--ca-file`
//! and `certs.d`), the scheme (HTTPS unless the host is insecure or loopback and answers plain
//! HTTP), authentication attached to every request, and bounded retries with backoff.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::blocking::{RequestBuilder, Response};
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};

use crate::digest::Digest;
use crate::error::{describe, join_causes, Error, Result};
use crate::registry::auth::{fetch_token, Challenge, Scope};
use crate::registry::credentials::{self, Credentials};
use crate::registry::name::Repository;
pub(crate) use crate::registry::status::{http_error, is_transient, status_error, UNTRUSTED_HINT};
use crate::registry::tls;

/// The `User-Agent` of every request.
const USER_AGENT: &str = concat!("hoist/", env!("CARGO_PKG_VERSION"));

/// `builder` (a blocking or an async reqwest client builder) with the settings every registry
/// client shares: timeouts, keep-alive, user agent, trust of insecure hosts and extra CAs.
macro_rules! configured {
    ($builder:expr, $certs:expr, $insecure:expr) => {{
        let certs: Vec<reqwest::Certificate> = $certs;
        let b = $builder
            .connect_timeout(Duration::from_secs(30))
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(USER_AGENT)
            .danger_accept_invalid_certs($insecure);
        match certs.is_empty() {
            true => b,
            false => b.tls_certs_merge(certs),
        }
    }};
}

/// A client that could not be built for `host`.
fn client_error(host: &str, source: reqwest::Error) -> Error {
    Error::Http {
        method: "CONNECT",
        url: host.into(),
        hint: "",
        source: source.without_url(),
    }
}

/// Receives progress lines (the library never prints).
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// Receives byte counts of blob transfers: digest, bytes done, total (for progress bars).
pub type ByteProgress = Arc<dyn Fn(&Digest, u64, u64) + Send + Sync>;

/// How to reach registries.
#[derive(Clone)]
pub struct Options {
    /// Hosts (`host` or `host:port`) that may be reached over plain HTTP or unverified TLS.
    pub insecure: Vec<String>,
    /// An extra CA certificate (PEM) trusted for every registry.
    pub ca_file: Option<PathBuf>,
    /// Directories holding `HOST[:PORT]/*.crt` CA files (docker and containers `certs.d`).
    pub certs_dirs: Vec<PathBuf>,
    /// Credentials given on the command line; they win over every file.
    pub credentials: Option<Credentials>,
    /// Blobs transferred at once.
    pub jobs: usize,
    /// Blobs up to this size are uploaded in one PUT; larger ones in PATCH chunks.
    pub monolithic_max: u64,
    /// The size of one PATCH chunk (default: the whole blob in one PATCH; many small PATCHes
    /// made the distribution registry re-read its upload and cost a third more time).
    pub chunk_size: u64,
    /// Attempts per request before giving up (the first one included).
    pub max_attempts: u32,
    /// The first backoff delay; it doubles per attempt.
    pub backoff: Duration,
    /// The time one request may take before it counts as failed (and is retried); blob
    /// transfers get one second more per MiB, manifest-sized requests at most two minutes.
    pub timeout: Duration,
    /// Where progress and retry notices go.
    pub progress: Option<Progress>,
    /// Where blob transfer byte counts go.
    pub bytes: Option<ByteProgress>,
}

impl Default for Options {
    fn default() -> Self {
        let mut certs_dirs = vec![
            PathBuf::from("/etc/containers/certs.d"),
            PathBuf::from("/etc/docker/certs.d"),
        ];
        if let Some(h) = credentials::home() {
            certs_dirs.push(h.join(".config/containers/certs.d"));
        }
        Options {
            insecure: Vec::new(),
            ca_file: None,
            certs_dirs,
            credentials: None,
            jobs: 4,
            monolithic_max: 32 << 20,
            chunk_size: u64::MAX,
            max_attempts: 5,
            backoff: Duration::from_millis(250),
            timeout: Duration::from_secs(300),
            progress: None,
            bytes: None,
        }
    }
}

/// A registry client; clones share hosts, connections and tokens.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    options: Options,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    tokens: Mutex<HashMap<(String, Vec<String>), String>>,
    /// Async clients per host, built on first use (see [`Client::async_http`]).
    async_clients: Mutex<HashMap<String, reqwest::Client>>,
}

/// What hoist knows about one registry host.
pub(crate) struct Host {
    /// `http://host:port` or `https://host:port`.
    pub base: String,
    /// The host:port.
    pub name: String,
    /// The HTTP client (TLS roots for this host).
    pub http: reqwest::blocking::Client,
    challenge: Challenge,
    credentials: Option<Credentials>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("registry::Client")
    }
}

/// True for hosts on the loopback interface (plain HTTP allowed by default).
fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    };
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

impl Client {
    /// A client with `options`.
    pub fn new(options: Options) -> Client {
        Client {
            inner: Arc::new(Inner {
                options,
                hosts: Mutex::new(HashMap::new()),
                tokens: Mutex::new(HashMap::new()),
                async_clients: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The options in force.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// Wraps a blob stream so that its byte counts reach [`Options::bytes`]; `done` is where
    /// the stream starts within the blob.
    pub(crate) fn counting<R: Read>(
        &self,
        inner: R,
        digest: Digest,
        done: u64,
        total: u64,
    ) -> Counting<R> {
        Counting {
            inner,
            digest,
            done,
            total,
            sink: self.inner.options.bytes.clone(),
        }
    }

    /// The timeout of a request without a large body.
    pub(crate) fn doc_timeout(&self) -> Duration {
        self.inner.options.timeout.min(Duration::from_secs(120))
    }

    /// The timeout of a request moving `size` bytes of blob.
    pub(crate) fn blob_timeout(&self, size: u64) -> Duration {
        self.inner.options.timeout + Duration::from_secs(size >> 20)
    }

    /// Sends a progress line.
    pub(crate) fn progress(&self, line: &str) {
        if let Some(p) = &self.inner.options.progress {
            p(line);
        }
    }

    fn insecure(&self, host: &str) -> bool {
        self.inner
            .options
            .insecure
            .iter()
            .any(|h| h == host || host.split(':').next() == Some(h.as_str()))
    }

    /// The host state of `repo`'s registry, discovering scheme and authentication on first use
    /// (under the lock, so parallel transfers discover a host once). A host that cannot be
    /// reached after the retries is [`Error::Unreachable`], which is not retried again.
    pub(crate) fn host(&self, repo: &Repository) -> Result<Arc<Host>> {
        let name = repo.api_host().to_string();
        let mut hosts = self.inner.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = hosts.get(&name) {
            return Ok(h.clone());
        }
        let host = Arc::new(self.discover(&name, &repo.registry).map_err(|e| match e {
            e if is_transient(&e) => Error::Unreachable {
                host: name.clone(),
                source: Box::new(e),
            },
            e => e,
        })?);
        hosts.insert(name, host.clone());
        Ok(host)
    }

    /// Replaces `host`'s challenge (met on a 401 after an anonymous `/v2/`), looking up
    /// credentials now that they are needed.
    fn adopt_challenge(
        &self,
        repo: &Repository,
        host: &Host,
        challenge: Challenge,
    ) -> Result<Arc<Host>> {
        let credentials = match (&host.credentials, &self.inner.options.credentials) {
            (Some(c), _) | (None, Some(c)) => Some(c.clone()),
            (None, None) => credentials::lookup(&repo.registry)?,
        };
        let new = Arc::new(Host {
            base: host.base.clone(),
            name: host.name.clone(),
            http: host.http.clone(),
            challenge,
            credentials,
        });
        self.inner
            .hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.name.clone(), new.clone());
        Ok(new)
    }

    /// GET `{base}/v2/`, with retries on transient failures when `retry`.
    fn ping(
        &self,
        http: &reqwest::blocking::Client,
        base: &str,
        name: &str,
        retry: bool,
    ) -> Result<Response> {
        let url = format!("{base}/v2/");
        let once = |_| {
            let r = http
                .get(&url)
                .timeout(self.doc_timeout())
                .send()
                .map_err(|e| http_error("GET", &url, e))?;
            match r.status().as_u16() {
                s @ (408 | 429 | 500..=599) => Err(status_error("GET", &url, s, r)),
                _ => Ok(r),
            }
        };
        match retry {
            true => self.with_retry(&format!("reaching {name}"), once),
            false => once(0),
        }
    }

    /// Builds the HTTP client for `name`, picks the scheme and reads the `/v2/` challenge.
    fn discover(&self, name: &str, registry: &str) -> Result<Host> {
        let insecure = self.insecure(name);
        let http = self.http_client(name, insecure)?;
        // HTTPS first, always. Plain HTTP only for insecure or loopback hosts, and only when the
        // HTTPS attempt shows the server does not speak TLS (or, for an insecure host, cannot be
        // reached over TLS at all): a TLS server with an untrusted certificate fails clearly
        // instead of being retried in plain text.
        let plain_allowed = insecure || is_loopback(name);
        let (base, answer) =
            match self.ping(&http, &format!("https://{name}"), name, !plain_allowed) {
                Ok(a) => (format!("https://{name}"), a),
                Err(e)
                    if plain_allowed
                        && matches!(e, Error::Http { hint, .. } if hint != UNTRUSTED_HINT) =>
                {
                    let base = format!("http://{name}");
                    let a = self.ping(&http, &base, name, true)?;
                    (base, a)
                }
                Err(e) => return Err(e),
            };
        let challenge = match answer.status().as_u16() {
            401 => answer
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(Challenge::parse)
                .unwrap_or(Challenge::Basic),
            _ => Challenge::None,
        };
        let credentials = match &self.inner.options.credentials {
            Some(c) => Some(c.clone()),
            None if challenge != Challenge::None => credentials::lookup(registry)?,
            None => None,
        };
        Ok(Host {
            base,
            name: name.into(),
            http,
            challenge,
            credentials,
        })
    }

    fn http_client(&self, name: &str, insecure: bool) -> Result<reqwest::blocking::Client> {
        let certs = tls::host_certs(&self.inner.options, name)?;
        let b = configured!(reqwest::blocking::Client::builder(), certs, insecure);
        b.timeout(None::<Duration>)
            .build()
            .map_err(|source| client_error(name, source))
    }

    /// The async HTTP client for `repo`'s registry, configured as the blocking one (same TLS
    /// roots, same trust of insecure hosts), built once per host. It keeps no idle connections,
    /// so every request can run on a runtime of its own (a push worker's, or the streamed upload
    /// of `build --push`).
    pub(crate) fn async_http(&self, repo: &Repository) -> Result<reqwest::Client> {
        let name = repo.api_host();
        let mut clients = self
            .inner
            .async_clients
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(name) {
            return Ok(c.clone());
        }
        let certs = tls::host_certs(&self.inner.options, name)?;
        let b = configured!(reqwest::Client::builder(), certs, self.insecure(name));
        let client = b
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|source| client_error(name, source))?;
        clients.insert(name.to_string(), client.clone());
        Ok(client)
    }

    /// The `Authorization` value a request on `repo` for `scope` carries now (a cached token
    /// when there is one), for requests sent outside [`Client::send`].
    pub(crate) fn authorization_for(
        &self,
        repo: &Repository,
        scope: &Scope,
    ) -> Result<Option<String>> {
        let host = self.host(repo)?;
        self.authorization(&host, scope, false)
    }

    /// The `Authorization` value for `scope` on `host`, fetching (or reusing) a token.
    fn authorization(&self, host: &Host, scope: &Scope, fresh: bool) -> Result<Option<String>> {
        match &host.challenge {
            Challenge::None => Ok(None),
            Challenge::Basic => Ok(host.credentials.as_ref().map(Credentials::basic_header)),
            Challenge::Bearer { realm, service, .. } => {
                let key = (host.name.clone(), scope.strings());
                if !fresh {
                    if let Some(t) = self
                        .inner
                        .tokens
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&key)
                    {
                        return Ok(Some(format!("Bearer {t}")));
                    }
                }
                let token = fetch_token(
                    &host.http,
                    &host.name,
                    realm,
                    service.as_deref(),
                    &key.1,
                    host.credentials.as_ref(),
                )?;
                self.inner
                    .tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, token.clone());
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// Sends one request with authentication for `scope`. `build` adds headers and body; it
    /// runs again (re-opening any body) when a fresh token is needed. A 401 that survives a fresh
    /// token is an authentication error; other statuses are the caller's to judge.
    pub(crate) fn send(
        &self,
        repo: &Repository,
        scope: &Scope,
        method: &'static str,
        url: &str,
        timeout: Duration,
        build: &dyn Fn(RequestBuilder) -> Result<RequestBuilder>,
    ) -> Result<Response> {
        let mut host = self.host(repo)?;
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut fresh = false;
        for _ in 0..3 {
            let mut req = host.http.request(m.clone(), url).timeout(timeout);
            if let Some(a) = self.authorization(&host, scope, fresh)? {
                req = req.header(AUTHORIZATION, a);
            }
            let resp = build(req)?.send().map_err(|e| http_error(method, url, e))?;
            if resp.status().as_u16() != 401 {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(Challenge::parse)
                .unwrap_or(Challenge::None);
            if host.challenge == Challenge::None && challenge != Challenge::None {
                // `/v2/` answered without a challenge but this repository wants one (some
                // registries allow anonymous pings): adopt the challenge for the host.
                host = self.adopt_challenge(repo, &host, challenge)?;
                continue;
            }
            if !fresh && matches!(host.challenge, Challenge::Bearer { .. }) {
                // The cached token may have expired or lack a scope: fetch a fresh one once.
                fresh = true;
                continue;
            }
            break;
        }
        Err(match &host.credentials {
            Some(c) => Error::AuthFailed {
                host: host.name.clone(),
                source_name: c.source.clone(),
            },
            None => Error::AuthRequired {
                host: host.name.clone(),
                url: url.into(),
            },
        })
    }

    /// `base + path` for `repo`'s registry.
    pub(crate) fn url(&self, repo: &Repository, path: &str) -> Result<String> {
        Ok(format!("{}/v2/{}/{path}", self.host(repo)?.base, repo.path))
    }

    /// Resolves a `Location` header (absolute or relative) against the registry.
    pub(crate) fn absolute(&self, repo: &Repository, location: &str) -> Result<String> {
        if location.starts_with("http://") || location.starts_with("https://") {
            return Ok(location.into());
        }
        Ok(format!("{}{location}", self.host(repo)?.base))
    }

    /// Runs `f` until it succeeds, fails with an error that is not transient, or the attempts
    /// run out; waits `Retry-After` or an exponential backoff between attempts.
    pub(crate) fn with_retry<T>(
        &self,
        what: &str,
        mut f: impl FnMut(u32) -> Result<T>,
    ) -> Result<T> {
        let o = &self.inner.options;
        let mut attempt = 0;
        loop {
            match f(attempt) {
                Err(e)
                    if attempt + 1 < o.max_attempts.max(1)
                        && is_transient(&e)
                        && crate::interrupt::requested().is_none() =>
                {
                    let wait = match &e {
                        Error::RegistryStatus {
                            retry_after: Some(s),
                            ..
                        } => Duration::from_secs((*s).min(60)),
                        _ => o
                            .backoff
                            .saturating_mul(1 << attempt.min(6))
                            .min(Duration::from_secs(8)),
                    };
                    // Most errors already name the request.
                    let message = join_causes([what.to_string(), describe(&e)]);
                    self.progress(&format!(
                        "{message}; retrying in {:.1}s",
                        wait.as_secs_f64()
                    ));
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// A reader reporting how far a blob transfer has got.
pub(crate) struct Counting<R> {
    inner: R,
    digest: Digest,
    done: u64,
    total: u64,
    sink: Option<ByteProgress>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        crate::interrupt::check()?;
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if let Some(s) = &self.sink {
            s(&self.digest, self.done, self.total);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "ghcr.io",
            "10.0.0.1:5000",
            "registry.internal:5000",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn retries_transient_errors_a_bounded_number_of_times() {
        let c = Client::new(Options {
            backoff: Duration::from_millis(1),
            max_attempts: 3,
            ..Options::default()
        });
        let st = |status| Error::RegistryStatus {
            method: "GET",
            url: "u".into(),
            status,
            message: String::new(),
            retry_after: None,
        };
        let mut n = 0;
        let r: Result<()> = c.with_retry("t", |_| {
            n += 1;
            Err(st(503))
        });
        assert!(matches!(r, Err(Error::RegistryStatus { status: 503, .. })));
        assert_eq!(n, 3);
        let mut n = 0;
        let r: Result<()> = c.with_retry("t", |_| {
            n += 1;
            Err(st(404))
        });
        assert!(matches!(r, Err(Error::RegistryStatus { status: 404, .. })));
        assert_eq!(n, 1, "a 404 is not retried");
        let r = c.with_retry("t", |attempt| {
            if attempt < 2 {
                Err(st(500))
            } else {
                Ok(attempt)
            }
        });
        assert_eq!(r.unwrap(), 2);
    }
}
