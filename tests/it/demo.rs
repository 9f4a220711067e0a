//! The README's demo command works offline on the committed tiny base.

use std::path::Path;
use std::process::Command;

use crate::common::*;

#[test]
fn readme_demo_builds_offline_and_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains("build -f testdata/demo/hoist.toml --output oci:out/demo:latest"),
        "README shows the demo command"
    );
    let t = tempdir();
    let out = t.path().join("out/demo");
    let r = run(hoist()
        .current_dir(root)
        .args(["build", "-f", "testdata/demo/hoist.toml", "--output"])
        .arg(format!("oci:{}:latest", out.display())));
    r.ok();
    let idx = index_json(&out);
    let m = blob_json(&out, idx["manifests"][0]["digest"].as_str().unwrap());
    assert_eq!(
        m["layers"].as_array().unwrap().len(),
        4,
        "base layer + three demo layers"
    );
    for entry in std::fs::read_dir(out.join("blobs/sha256")).unwrap() {
        use std::os::unix::fs::PermissionsExt;
        let mode = entry.unwrap().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "blobs are readable by everyone");
    }
    if have_tool("oci-image-tool") {
        run(Command::new("oci-image-tool")
            .args(["validate", "--type", "image", "--ref", "name=latest"])
            .arg(&out))
        .ok();
    }
    let table = hoist_run(&["inspect", &format!("oci:{}:latest", out.display())]).ok();
    assert!(
        table.contains("PLAYWRIGHT_BROWSERS_PATH=/openhands/browser/ms-playwright"),
        "{table}"
    );
    let json: serde_json::Value = serde_json::from_str(
        &hoist_run(&[
            "inspect",
            "--json",
            &format!("oci:{}:latest", out.display()),
        ])
        .ok(),
    )
    .unwrap();
    assert_eq!(json["config"]["config"]["User"], "openhands");
    assert_eq!(json["digest"], idx["manifests"][0]["digest"]);
}
