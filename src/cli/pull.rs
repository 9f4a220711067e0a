//! `hoist pull REF oci:DIR[:TAG]`: a registry image, every blob, into a layout.

use std::io::Write;

use anyhow::{bail, Context};
use clap::Args;
use hoist::manifest::Platform;
use hoist::reference::ImageRef;
use hoist::registry::mirror::pull;

use super::registry::RegistryArgs;

/// Flags of `hoist pull`.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// The image to pull: [HOST[:PORT]/]PATH[:TAG][@DIGEST].
    #[arg(value_name = "REF")]
    src: String,
    /// Where to write it: oci:DIR[:TAG].
    #[arg(value_name = "DEST")]
    dest: String,
    /// Pull only this platform of a multi-platform image (default: every platform).
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// Runs `hoist pull`.
pub fn run(args: PullArgs, quiet: bool) -> anyhow::Result<()> {
    let ImageRef::Registry(src) = ImageRef::parse(&args.src)? else {
        bail!(
            "pull reads from a registry: REF must be a registry reference, not {}",
            args.src
        )
    };
    let ImageRef::Layout(dest) = ImageRef::parse(&args.dest)? else {
        bail!(
            "pull writes an OCI layout: DEST must be oci:DIR[:TAG], not {}",
            args.dest
        )
    };
    let platform: Option<Platform> = args.platform.as_deref().map(str::parse).transpose()?;
    let client = args.registry.client(quiet)?;
    let desc = pull(&client, &src, &dest, platform.as_ref())
        .with_context(|| format!("pulling {src} into {dest}"))?;
    writeln!(std::io::stdout(), "{dest}@{}", desc.digest)?;
    Ok(())
}
