//! The library's one error type: every variant names the file, path, entry or digest involved.

use std::path::PathBuf;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reading inputs or writing images.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on a named path failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading", "creating", …).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A layer source path does not exist.
    #[error("layer source {0} does not exist")]
    MissingSource(PathBuf),
    /// A layer source is neither a directory, a regular file nor a tarball.
    #[error("layer source {path} is not a directory, a regular file or a tarball ({kind})")]
    UnsupportedSource {
        /// The source path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// A file inside a directory source has a type a layer cannot carry (socket, device, fifo).
    #[error("{path}: {kind} files cannot be put in a layer")]
    UnsupportedFileType {
        /// The offending file.
        path: PathBuf,
        /// Its type.
        kind: &'static str,
    },
    /// A tarball entry would land outside the layer's destination or is otherwise unsafe.
    #[error("tarball {archive}: entry {entry:?} refused: {reason}")]
    UnsafeEntry {
        /// The tarball.
        archive: PathBuf,
        /// The entry name as stored in the archive.
        entry: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A tarball could not be read.
    #[error("tarball {archive}: {message}")]
    BadArchive {
        /// The tarball.
        archive: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A value given by the user does not parse.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidValue {
        /// The kind of value ("--env", "platform", …).
        what: &'static str,
        /// The value as given.
        value: String,
        /// What a valid one looks like.
        reason: &'static str,
    },
    /// A JSON document (manifest, config, index) does not parse.
    #[error("{what} {location}: {source}")]
    BadJson {
        /// Which document.
        what: &'static str,
        /// Where it came from (file or digest).
        location: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A directory is not a usable OCI image layout.
    #[error("{path} is not an OCI image layout: {reason}")]
    NotALayout {
        /// The layout directory.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// A tag is not present in a layout.
    #[error("tag {tag:?} not found in OCI layout {path} (tags there: {available})")]
    TagNotFound {
        /// The layout directory.
        path: PathBuf,
        /// The tag asked for.
        tag: String,
        /// The tags that exist, comma-separated.
        available: String,
    },
    /// No manifest in an index matches the requested platform.
    #[error("{location}: no manifest for platform {platform} (available: {available})")]
    PlatformNotFound {
        /// The index location.
        location: String,
        /// The requested platform.
        platform: String,
        /// The platforms that exist.
        available: String,
    },
    /// A layout holds several images and none was named.
    #[error("OCI layout {path} holds {count} images: name one with :TAG")]
    AmbiguousImage {
        /// The layout directory.
        path: PathBuf,
        /// How many there are.
        count: usize,
    },
    /// Bytes read do not hash to the digest that names them.
    #[error("blob {expected} at {location}: content has digest {found} ({size} bytes)")]
    DigestMismatch {
        /// Where the blob was read.
        location: String,
        /// The digest it should have.
        expected: String,
        /// The digest it has.
        found: String,
        /// How many bytes were read.
        size: u64,
    },
    /// A digest string is malformed or uses an unsupported algorithm.
    #[error("invalid digest {0:?}: expected sha256:<64 hex digits>")]
    InvalidDigest(String),
    /// A media type hoist does not know how to handle.
    #[error("{location}: unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        /// Where it was found.
        location: String,
        /// The media type.
        media_type: String,
    },
    /// A document exceeds the size hoist accepts for it.
    #[error("{location}: {what} is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Which document.
        what: &'static str,
        /// Where it came from.
        location: String,
        /// Its size.
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// An HTTP request to a registry could not be sent or its answer not read.
    #[error("{method} {url}: {source}{hint}")]
    Http {
        /// The HTTP method.
        method: &'static str,
        /// The URL (never holds credentials).
        url: String,
        /// What to check, when known (e.g. the CA options for a TLS failure).
        hint: &'static str,
        /// The transport error, without its URL: `url` names the request, and a redirect target
        /// may carry a signature.
        #[source]
        source: reqwest::Error,
    },
    /// A registry answered with a status hoist cannot go on from.
    #[error("{method} {url}: HTTP {status}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    RegistryStatus {
        /// The HTTP method.
        method: &'static str,
        /// The URL.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The registry's error codes and messages (the spec's JSON envelope), if any.
        message: String,
        /// Seconds to wait before retrying, from `Retry-After`.
        retry_after: Option<u64>,
    },
    /// A registry could not be reached at all (after retries).
    #[error("registry {host} cannot be reached")]
    Unreachable {
        /// The registry host.
        host: String,
        /// The last error.
        #[source]
        source: Box<Error>,
    },
    /// A transfer from or to a registry broke off midway.
    #[error("{url}: the transfer broke off: {source}")]
    Interrupted {
        /// The URL.
        url: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A registry reports a different digest (`Docker-Content-Digest`) for what hoist uploaded.
    #[error("{url}: the registry reports digest {returned}, but hoist sent {expected}")]
    WrongDigestReturned {
        /// The URL of the upload.
        url: String,
        /// The digest of the bytes hoist sent.
        expected: String,
        /// The digest the registry returned.
        returned: String,
    },
    /// A registry answered without something the protocol requires (a header, a field).
    #[error("{url}: {reason}")]
    BadResponse {
        /// The URL.
        url: String,
        /// What is missing or wrong.
        reason: String,
    },
    /// The registry refused the credentials hoist sent.
    #[error(
        "authentication failed for {host}: the registry refused the credentials from {source_name}"
    )]
    AuthFailed {
        /// The registry host.
        host: String,
        /// Where the credentials came from (never the secret itself).
        source_name: String,
    },
    /// The registry wants credentials and none were found.
    #[error("{url}: {host} requires authentication and no credentials were found (use --username and --password-stdin, or docker/podman login)")]
    AuthRequired {
        /// The registry host.
        host: String,
        /// The URL that was refused.
        url: String,
    },
    /// A credential helper or credentials file could not be used.
    #[error("credentials for {host} from {source_name}: {reason}")]
    Credentials {
        /// The registry host.
        host: String,
        /// The helper or file.
        source_name: String,
        /// What went wrong.
        reason: String,
    },
    /// A CA certificate file could not be used.
    #[error("CA certificate {path}: {reason}")]
    BadCertificate {
        /// The PEM file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A build file (hoist.toml) is invalid.
    #[error("build file {path}: {message}")]
    BuildFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The compatibility checks found errors; nothing was written.
    #[error("the checks found {errors} error(s) (report above); nothing was written: fix them, or build with --check=warn (report only) or --no-check")]
    CheckFailed {
        /// How many errors.
        errors: usize,
        /// The whole report.
        report: Box<crate::check::Report>,
    },
    /// A layer source changed while the build read it twice.
    #[error(
        "layer source {src} changed during the build: {detail}; nothing was tagged, build again"
    )]
    SourceChanged {
        /// The source.
        src: PathBuf,
        /// What differs.
        detail: String,
    },
    /// A layer destination goes through a path the image below the layer has as a symlink or a
    /// file (in its base, or written by an earlier layer).
    #[error("layer destination {dest}: {parent} is {found} in the image below this layer; a folder written there would replace it (and hide what a symlink points to): use a destination that does not go through it")]
    DestinationThroughNonFolder {
        /// The destination asked for.
        dest: String,
        /// The path on the way that is not a folder.
        parent: String,
        /// What it is (`a symlink to usr/lib`, `a file`).
        found: String,
    },
    /// A Playwright browsers folder is not usable.
    #[error("browsers folder {path}: {problem}")]
    BadBrowsers {
        /// The folder.
        path: PathBuf,
        /// What is wrong (missing markers, no browser folder).
        problem: String,
    },
}

impl Error {
    /// Builds an [`Error::Io`] for `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Joins an error's messages, outermost first, with `: `, leaving out a message already part of
/// the text (many errors repeat their source in their own message) and letting one that starts
/// with the whole text so far replace it.
pub fn join_causes(messages: impl IntoIterator<Item = String>) -> String {
    let mut out = String::new();
    for m in messages {
        if out.is_empty() || m.starts_with(&out) {
            out = m;
        } else if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
    }
    out
}

/// `e` with every cause behind it, as one line (see [`join_causes`]).
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    join_causes(std::iter::successors(Some(e), |e| e.source()).map(|e| e.to_string()))
}

/// Attaches a path and action to I/O results.
pub(crate) trait IoContext<T> {
    /// Converts an I/O error into [`Error::Io`] naming `path`.
    fn at(self, action: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, action: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(action, path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_joined_once() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = Error::io("reading", "/x/index.json", io);
        assert_eq!(describe(&e), "reading /x/index.json: denied");
        let nested = std::io::Error::other(e);
        assert_eq!(describe(&nested), "reading /x/index.json: denied");
        assert_eq!(
            join_causes(["a: b".to_string(), "c".into(), "b".into(), "d".into()]),
            "a: b: c: d"
        );
        assert_eq!(
            join_causes(["GET u".to_string(), "GET u: refused".into()]),
            "GET u: refused"
        );
    }
}
