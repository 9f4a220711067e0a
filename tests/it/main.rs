//! hoist's integration tests: one binary, fixtures generated at run time, output read back by
//! third-party tools (umoci, skopeo, oci-image-tool, GNU tar, Python's tarfile).

mod bad_input;
mod build;
mod cache;
mod common;
mod compression;
mod demo;
mod pyinstaller;
mod sources;
