//! The CA certificates trusted for a registry host: `--ca-file` plus the `HOST[:PORT]/*.crt`
//! files of the `certs.d` directories (docker and containers conventions), on top of the system
//! roots.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::registry::client::Options;

/// The extra certificates `options` trust for `host` (`host` or `host:port`), in a stable order.
pub(crate) fn host_certs(options: &Options, host: &str) -> Result<Vec<reqwest::Certificate>> {
    let mut certs = Vec::new();
    if let Some(ca) = &options.ca_file {
        certs.extend(read_pem(ca)?);
    }
    for dir in &options.certs_dirs {
        let Ok(entries) = std::fs::read_dir(dir.join(host)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        files.sort();
        for f in files {
            certs.extend(read_pem(&f)?);
        }
    }
    Ok(certs)
}

/// Every certificate of the PEM bundle at `path`; a file without one is an error naming it.
fn read_pem(path: &Path) -> Result<Vec<reqwest::Certificate>> {
    let raw = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    let certs = reqwest::Certificate::from_pem_bundle(&raw).map_err(|e| Error::BadCertificate {
        path: path.into(),
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(Error::BadCertificate {
            path: path.into(),
            reason: "no PEM certificate in it".into(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate").unwrap();
        assert!(matches!(read_pem(&p), Err(Error::BadCertificate { .. })));
    }

    #[test]
    fn certs_d_files_of_other_hosts_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("other:5000")).unwrap();
        std::fs::write(dir.path().join("other:5000/ca.crt"), "not a certificate").unwrap();
        let options = Options {
            certs_dirs: vec![dir.path().into()],
            ..Options::default()
        };
        assert!(host_certs(&options, "mine:5000").unwrap().is_empty());
        assert!(matches!(
            host_certs(&options, "other:5000"),
            Err(Error::BadCertificate { .. })
        ));
    }
}
