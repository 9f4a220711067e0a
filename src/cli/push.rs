//! `hoist push oci:DIR[:TAG] REF`: a layout's image or index to a registry.

use std::io::Write;

use anyhow::{bail, Context};
use clap::Args;
use hoist::layout::Layout;
use hoist::reference::ImageRef;
use hoist::registry::push::push_layout;

use super::registry::RegistryArgs;

/// Flags of `hoist push`.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// The image to push: oci:DIR[:TAG].
    #[arg(value_name = "SRC")]
    src: String,
    /// Where to push it: [HOST[:PORT]/]PATH[:TAG].
    #[arg(value_name = "DEST")]
    dest: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// Runs `hoist push`.
pub fn run(args: PushArgs, quiet: bool) -> anyhow::Result<()> {
    let ImageRef::Layout(src) = ImageRef::parse(&args.src)? else {
        bail!(
            "push reads an OCI layout: SRC must be oci:DIR[:TAG], not {}",
            args.src
        )
    };
    let ImageRef::Registry(dest) = ImageRef::parse(&args.dest)? else {
        bail!(
            "push writes to a registry: DEST must be a registry reference, not {}",
            args.dest
        )
    };
    let client = args.registry.client(quiet)?;
    let layout = Layout::open(&src.dir)?;
    let digest = push_layout(&client, &layout, src.tag.as_deref(), &dest)
        .with_context(|| format!("pushing {src} to {dest}"))?;
    writeln!(std::io::stdout(), "{}", dest.with_digest(digest))?;
    Ok(())
}
