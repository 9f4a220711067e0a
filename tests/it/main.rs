//! hoist's integration tests: one binary, fixtures generated at run time, output read back by
//! third-party tools (umoci, skopeo, oci-image-tool, GNU tar, Python's tarfile), and check
//! verdicts compared with the real loader in chroots of Debian root file systems.

mod build;
mod check;
mod common;
mod fixtures;
mod inputs;
mod runtime;
