//! `hoist inspect`: a readable summary of an image, or its raw documents as JSON.

use std::io::Write;

use anyhow::{bail, Context};
use clap::Args;
use hoist::layout::{Layout, ResolvedManifest};
use hoist::manifest::{parse_json, Platform};
use hoist::reference::ImageRef;
use hoist::registry::pull::resolve_image;
use serde_json::{json, Value};

use super::registry::RegistryArgs;

/// Flags of `hoist inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The image: oci:DIR[:TAG] or a registry reference.
    #[arg(value_name = "REF")]
    reference: String,
    /// Platform to pick from a multi-platform image.
    #[arg(long)]
    platform: Option<String>,
    /// Print {"reference","digest","manifest","config"} as JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// Reads the image `reference` names: from a layout, or from a registry (manifest and config
/// only).
fn resolve(
    reference: &ImageRef,
    platform: Option<&Platform>,
    registry: &RegistryArgs,
    quiet: bool,
) -> anyhow::Result<ResolvedManifest> {
    match reference {
        ImageRef::Scratch => bail!("scratch has nothing to inspect"),
        ImageRef::Layout(r) => Ok(Layout::open(&r.dir)?
            .resolve(r.tag.as_deref(), platform)
            .with_context(|| format!("reading {r}"))?),
        ImageRef::Registry(r) => {
            let client = registry.client(quiet)?;
            let img = resolve_image(&client, &r.repository, &r.reference(), platform)
                .with_context(|| format!("reading {r}"))?;
            let mut descriptor = img.manifest_raw.descriptor();
            descriptor.platform = img.platform;
            Ok(ResolvedManifest {
                descriptor,
                raw_manifest: img.manifest_raw.raw,
                manifest: img.manifest,
                raw_config: img.raw_config,
            })
        }
    }
}

/// Runs `hoist inspect`.
pub fn run(args: InspectArgs, quiet: bool) -> anyhow::Result<()> {
    let r = ImageRef::parse(&args.reference)?;
    let platform: Option<Platform> = args.platform.as_deref().map(str::parse).transpose()?;
    let resolved = resolve(&r, platform.as_ref(), &args.registry, quiet)?;
    let manifest: Value = parse_json(&resolved.raw_manifest, "manifest", &r.to_string())?;
    let config: Value = parse_json(&resolved.raw_config, "config", &r.to_string())?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = json!({"reference": r.to_string(), "digest": resolved.descriptor.digest.to_string(), "manifest": manifest, "config": config});
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    let c = &config["config"];
    let show = |v: &Value| {
        if v.is_null() {
            "-".to_string()
        } else {
            v.to_string()
        }
    };
    let field = |out: &mut dyn Write, k: &str, v: String| writeln!(out, "{k:<12}{v}");
    field(&mut out, "Reference", r.to_string())?;
    field(&mut out, "Digest", resolved.descriptor.digest.to_string())?;
    field(
        &mut out,
        "Media type",
        resolved.descriptor.media_type.clone(),
    )?;
    field(
        &mut out,
        "Platform",
        hoist::config::platform_of(&config).map_or("-".into(), |p| p.to_string()),
    )?;
    field(
        &mut out,
        "Created",
        config["created"].as_str().unwrap_or("-").to_string(),
    )?;
    field(&mut out, "Entrypoint", show(&c["Entrypoint"]))?;
    field(&mut out, "Cmd", show(&c["Cmd"]))?;
    field(
        &mut out,
        "WorkingDir",
        c["WorkingDir"].as_str().unwrap_or("-").to_string(),
    )?;
    field(
        &mut out,
        "User",
        c["User"].as_str().unwrap_or("-").to_string(),
    )?;
    field(
        &mut out,
        "Ports",
        c["ExposedPorts"].as_object().map_or("-".into(), |m| {
            m.keys().cloned().collect::<Vec<_>>().join(" ")
        }),
    )?;
    for (i, e) in c["Env"].as_array().into_iter().flatten().enumerate() {
        field(
            &mut out,
            if i == 0 { "Env" } else { "" },
            e.as_str().unwrap_or_default().to_string(),
        )?;
    }
    for (i, (k, v)) in c["Labels"].as_object().into_iter().flatten().enumerate() {
        field(
            &mut out,
            if i == 0 { "Labels" } else { "" },
            format!("{k}={}", v.as_str().unwrap_or_default()),
        )?;
    }
    for (k, v) in resolved.manifest.annotations.iter() {
        field(&mut out, "Annotation", format!("{k}={v}"))?;
    }
    let history: Vec<&Value> = config["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| !h["empty_layer"].as_bool().unwrap_or(false))
        .collect();
    writeln!(out, "\nLayers ({}):", resolved.manifest.layers.len())?;
    writeln!(
        out,
        "  {:<3} {:<71} {:>12}  {:<44} CREATED BY",
        "#", "DIGEST", "SIZE", "MEDIA TYPE"
    )?;
    for (i, l) in resolved.manifest.layers.iter().enumerate() {
        let by = history
            .get(i)
            .and_then(|h| h["created_by"].as_str())
            .unwrap_or("-");
        writeln!(
            out,
            "  {:<3} {:<71} {:>12}  {:<44} {}",
            i + 1,
            l.digest.to_string(),
            l.size,
            l.media_type,
            by
        )?;
    }
    Ok(())
}
