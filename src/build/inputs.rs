//! Content-addressed tags and "skip if it exists": a tag derived from the base and every input
//! (`--tag-from-inputs`), and the lookup that lets a build stop early when the output already
//! has it (`--skip-existing`). Layout sinks only; the registry sink will HEAD the same tag.

use serde_json::json;

use crate::config;
use crate::error::Result;
use crate::image::Image;
use crate::layer::Compression;
use crate::layout::Layout;
use crate::manifest::{canonical_json, Descriptor};
use crate::Digest;

/// Bumped when the recipe changes, so old tags are never reused for different content.
const RECIPE: &str = "hoist-inputs-v1";

/// The tag for a build: `inputs-` and 32 hex digits of a sha256 over the base manifest digest,
/// the final config (every layer's diff_id, config edits, history, created time) and the
/// compression. `layers` are the new layers' diff_ids and history lines.
pub fn inputs_tag(
    image: &Image,
    layers: &[(Digest, String)],
    edits: &config::ConfigEdits,
    compression: Compression,
    epoch: u64,
) -> Result<String> {
    let mut image = image.clone();
    let created = config::rfc3339(epoch);
    for (id, created_by) in layers {
        config::add_layer(&mut image.config, id, &created, created_by);
    }
    image.edit(edits);
    config::set_created(&mut image.config, &created);
    let doc = json!({
        "recipe": RECIPE,
        "base": image.base.as_ref().map(|b| b.digest.to_string()),
        "config": image.config,
        "compression": compression.to_string(),
    });
    let hex = Digest::of(&canonical_json(&doc)).hex();
    Ok(format!("inputs-{}", &hex[..32]))
}

/// The manifest descriptor tagged `tag` in the layout at `dir`, if the layout and tag exist.
pub fn existing(dir: &std::path::Path, tag: &str) -> Result<Option<Descriptor>> {
    if !dir.join("index.json").is_file() {
        return Ok(None);
    }
    Layout::open(dir)?.tagged(tag)
}
