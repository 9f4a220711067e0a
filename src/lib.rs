//! hoist builds OCI container images without a daemon: sources give an [`image::Image`], layer
//! builders turn directories and tarballs into blobs, pure edits change the config, and sinks
//! (an OCI image layout) write the result.

pub mod digest;
pub mod error;
pub mod layer;
pub mod manifest;
pub mod media;

pub use digest::Digest;
pub use error::{Error, Result};
pub mod browsers;
pub mod build;
pub mod cache;
pub mod check;
pub mod config;
pub mod image;
pub mod interrupt;
pub mod layout;
pub mod reference;
pub mod registry;
