//! Content-addressed tags (`--tag-from-inputs`) and `--skip-existing` on layout outputs.

use crate::common::*;

#[test]
fn tag_from_inputs_is_stable_changes_with_inputs_and_skip_existing_builds_nothing() {
    let t = tempdir();
    let app = app_dir(t.path());
    let out = t.path().join("out");
    let build = |extra: &[&str]| {
        let mut args = vec![
            "build".to_string(),
            "--base".into(),
            "scratch".into(),
            "--platform".into(),
            "linux/amd64".into(),
            "--layer".into(),
            format!("{}:/app", app.display()),
            "--entrypoint".into(),
            r#"["/app/app"]"#.into(),
            "--no-check".into(),
            "--output".into(),
            format!("oci:{}", out.display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        hoist_run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let first = build(&["--tag-from-inputs"]).ok();
    let prefix = format!("oci:{}:inputs-", out.display());
    assert!(first.starts_with(&prefix), "{first}");
    let before = snapshot(&out);

    let again = build(&["--tag-from-inputs", "--skip-existing"]);
    assert_eq!(again.ok(), first, "the existing image is printed");
    assert!(
        again.stderr().contains("nothing to build"),
        "{}",
        again.stderr()
    );
    assert_eq!(snapshot(&out), before, "nothing was written");

    // Rebuilding without --skip-existing gives the same tag and digest.
    assert_eq!(build(&["--tag-from-inputs"]).ok(), first);

    // Any input change gives another tag: a file's bytes, or a config edit.
    write_file(&app.join("app"), b"#!/bin/sh\necho changed\n", 0o755);
    let changed = build(&["--tag-from-inputs"]).ok();
    assert!(
        changed.starts_with(&prefix) && changed != first,
        "{changed}"
    );
    let edited = build(&["--tag-from-inputs", "--env", "A=1"]).ok();
    assert_ne!(edited.split('@').next(), changed.split('@').next());

    // A named tag is skipped without reading anything else.
    let named = t.path().join("named");
    let out_named = format!("oci:{}:dev", named.display());
    let args = [
        "build",
        "--base",
        "scratch",
        "--layer",
        &format!("{}:/app", app.display()),
        "--no-check",
        "--output",
        &out_named,
    ];
    let built = hoist_run(&args).ok();
    let mut skip: Vec<&str> = args.to_vec();
    skip.push("--skip-existing");
    std::fs::remove_dir_all(&app).unwrap(); // the sources are not even looked at
    assert_eq!(hoist_run(&skip).ok(), built);

    hoist_run(&[
        "build",
        "--base",
        "scratch",
        "--tag-from-inputs",
        "--output",
        &out_named,
    ])
    .fails_with(1, &["--tag-from-inputs computes the tag"]);
}
