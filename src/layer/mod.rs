//! Layers built from directories, single files and tarballs: what goes in (`spec`, `entry`,
//! `tree`, `archive`) apart from how it is serialised (`write`).

pub mod archive;
pub mod compress;
pub mod entry;
pub mod plan;
pub mod spec;
pub mod tree;
pub mod write;

pub use entry::{Entry, EntryKind, Owner};
pub use plan::LayerPlan;
pub use spec::LayerSpec;
pub use write::{Compression, LayerBlob, WriteOptions};
