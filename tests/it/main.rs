//! hoist's integration tests: one binary, fixtures generated at run time, output read back by
//! third-party tools (umoci, skopeo, oci-image-tool, GNU tar, Python's tarfile), and check
//! verdicts compared with the real loader in chroots of Debian root file systems.

mod bad_input;
mod build;
mod cache;
mod check;
mod common;
mod compression;
mod demo;
mod fixtures;
mod inputs;
mod pyinstaller;
mod registry;
mod registry_auth;
mod registry_faults;
mod registry_harness;
mod registry_tls;
mod runtime;
mod sources;
