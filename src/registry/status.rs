//! What a failed request means: transport errors with a hint (untrusted certificate, plain
//! HTTP), unexpected statuses with the registry's error envelope and `Retry-After`, and which of
//! them are worth another attempt.

use reqwest::blocking::Response;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::error::Error;

/// True for errors worth another attempt: connection failures, 408, 429 and 5xx.
pub(crate) fn is_transient(e: &Error) -> bool {
    match e {
        Error::Http { hint, .. } => hint.is_empty(),
        Error::Interrupted { .. } => true,
        Error::RegistryStatus { status, .. } => matches!(status, 408 | 429 | 500..=599),
        _ => false,
    }
}

pub(crate) const UNTRUSTED_HINT: &str = " (the registry's TLS certificate is not trusted: pass --ca-file, or put the CA in certs.d/HOST:PORT/ca.crt; for a registry without TLS use --insecure-registry HOST:PORT)";
const PLAIN_HTTP_HINT: &str = " (the registry does not answer TLS; if it serves plain HTTP, pass --insecure-registry HOST:PORT)";

/// Maps a transport error, with a hint when it looks like a certificate problem.
pub(crate) fn http_error(method: &'static str, url: &str, source: reqwest::Error) -> Error {
    let chain = format!("{source:?}");
    let https = url.starts_with("https://");
    let untrusted = ["certificate", "Certificate", "UnknownIssuer"]
        .iter()
        .any(|w| chain.contains(w));
    let plain = [
        "InvalidContentType",
        "corrupt message",
        "wrong version number",
    ]
    .iter()
    .any(|w| chain.contains(w));
    Error::Http {
        method,
        url: url.into(),
        hint: match (https, untrusted, plain) {
            (true, true, _) => UNTRUSTED_HINT,
            (true, _, true) => PLAIN_HTTP_HINT,
            _ => "",
        },
        source: source.without_url(),
    }
}

/// An unexpected status, with the registry's error envelope (`{"errors":[{code,message}]}`).
pub(crate) fn status_error(method: &'static str, url: &str, status: u16, resp: Response) -> Error {
    use std::io::Read;
    let headers = resp.headers().clone();
    let mut raw = Vec::new();
    let _ = resp.take(ERROR_BODY_MAX).read_to_end(&mut raw);
    status_error_parts(method, url, status, &headers, &raw)
}

/// The most of an error answer's body that is read.
pub(crate) const ERROR_BODY_MAX: u64 = 64 << 10;

/// [`status_error`] from an answer already read: its headers and (the start of) its body.
pub(crate) fn status_error_parts(
    method: &'static str,
    url: &str,
    status: u16,
    headers: &HeaderMap,
    raw: &[u8],
) -> Error {
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let message = serde_json::from_slice::<serde_json::Value>(raw)
        .ok()
        .and_then(|v| {
            let errs = v["errors"]
                .as_array()?
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["code"].as_str().unwrap_or(""),
                        e["message"].as_str().unwrap_or("")
                    )
                    .trim()
                    .to_string()
                })
                .collect::<Vec<_>>();
            Some(errs.join("; "))
        })
        .unwrap_or_default();
    Error::RegistryStatus {
        method,
        url: url.into(),
        status,
        message,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors() {
        let st = |status| Error::RegistryStatus {
            method: "GET",
            url: "u".into(),
            status,
            message: String::new(),
            retry_after: None,
        };
        assert!(is_transient(&st(503)) && is_transient(&st(429)) && is_transient(&st(408)));
        assert!(!is_transient(&st(404)) && !is_transient(&st(400)));
        assert!(!is_transient(&Error::AuthFailed {
            host: "h".into(),
            source_name: "s".into()
        }));
    }

    #[test]
    fn status_errors_carry_the_spec_envelope_and_retry_after() {
        let body = r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;
        let resp = http::Response::builder()
            .status(429)
            .header("Retry-After", "7")
            .body(body)
            .unwrap();
        match status_error("PUT", "http://r/v2/x/manifests/1", 429, resp.into()) {
            Error::RegistryStatus {
                status: 429,
                retry_after: Some(7),
                message,
                url,
                ..
            } => {
                assert_eq!(message, "DENIED requested access to the resource is denied");
                assert_eq!(url, "http://r/v2/x/manifests/1");
            }
            other => panic!("{other:?}"),
        }
        let resp = http::Response::builder().status(500).body("oops").unwrap();
        assert!(
            matches!(status_error("GET", "u", 500, resp.into()), Error::RegistryStatus { retry_after: None, ref message, .. } if message.is_empty())
        );
    }
}
