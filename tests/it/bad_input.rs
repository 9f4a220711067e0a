//! Bad input: each case exits 1 with a message naming the thing, and a layout already in the
//! output folder stays valid and unchanged.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::*;

/// Writes a tar.gz with Python's tarfile from a small script describing its members.
fn evil_tarball(dir: &Path, name: &str, members: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let script = format!(
        r#"
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w:gz") as t:
    def add(name, kind="f", link="", data=b"x"):
        i = tarfile.TarInfo(name)
        if kind == "f":
            i.size = len(data); t.addfile(i, io.BytesIO(data)); return
        i.type = {{"d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE, "c": tarfile.CHRTYPE}}[kind]
        i.linkname = link
        t.addfile(i)
{members}
"#
    );
    run(Command::new("python3").arg("-c").arg(script).arg(&path)).ok();
    path
}

#[test]
fn bad_input_exits_1_naming_it_and_leaves_the_layout_unchanged() {
    if !have_tool("python3") {
        return;
    }
    let t = tempdir();
    let out = t.path().join("out");
    let app = app_dir(t.path());
    let good = hoist_run(&[
        "build",
        "--base",
        "scratch",
        "--layer",
        &format!("{}:/app", app.display()),
        "--output",
        &format!("oci:{}:good", out.display()),
    ]);
    good.ok();
    let base_ref = format!("oci:{}:good", out.display());
    let before = snapshot(&out);
    let bad_out = format!("oci:{}:bad", out.display());

    let cases: Vec<(&str, Vec<String>, Vec<String>)> = vec![
        (
            "missing source",
            vec!["--layer".into(), format!("{}/nope:/x", t.path().display())],
            vec![
                format!("{}/nope", t.path().display()),
                "does not exist".into(),
            ],
        ),
        (
            "malformed --env",
            vec!["--env".into(), "NOVALUE".into()],
            vec!["--env".into(), "NOVALUE".into()],
        ),
        (
            "malformed --layer",
            vec!["--layer".into(), "just-a-path".into()],
            vec!["just-a-path".into()],
        ),
        (
            "bad --entrypoint",
            vec!["--entrypoint".into(), "[1, 2]".into()],
            vec!["--entrypoint".into()],
        ),
        (
            "bad --expose",
            vec!["--expose".into(), "99999".into()],
            vec!["99999".into()],
        ),
        (
            "bad platform",
            vec!["--platform".into(), "amd64".into()],
            vec!["amd64".into()],
        ),
    ];
    for (what, extra, needles) in cases {
        let mut args = vec![
            "build".to_string(),
            "--base".into(),
            base_ref.clone(),
            "--output".into(),
            bad_out.clone(),
        ];
        args.extend(extra);
        let r = run(hoist().args(&args));
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        r.fails_with(1, &needles);
        assert_eq!(snapshot(&out), before, "{what}: the layout changed");
    }

    // An unknown base tag names the tag and the tags that exist.
    let r = hoist_run(&[
        "build",
        "--base",
        &format!("oci:{}:nope", out.display()),
        "--output",
        &bad_out,
    ]);
    r.fails_with(1, &["\"nope\"", "good"]);
    assert_eq!(snapshot(&out), before);

    // Malicious tarballs: every escape is refused, naming the entry; nothing is written.
    let tarballs = [
        ("abs.tar.gz", "    add('/etc/evil')", "/etc/evil"),
        (
            "dotdot.tar.gz",
            "    add('top/../../evil')",
            "top/../../evil",
        ),
        (
            "symlink-abs.tar.gz",
            "    add('top/link', 'l', '/etc/passwd')",
            "top/link",
        ),
        (
            "symlink-up.tar.gz",
            "    add('top/link', 'l', '../../../etc')",
            "top/link",
        ),
        (
            "hardlink-missing.tar.gz",
            "    add('top/h', 'h', 'top/missing')",
            "top/h",
        ),
        (
            "through-symlink.tar.gz",
            "    add('top/d', 'l', 'sub')\n    add('top/sub', 'd')\n    add('top/d/file')",
            "top/d/file",
        ),
        ("device.tar.gz", "    add('top/dev', 'c')", "top/dev"),
    ];
    for (name, members, entry) in tarballs {
        let tb = evil_tarball(t.path(), name, members);
        let r = hoist_run(&[
            "build",
            "--base",
            &base_ref,
            "--layer",
            &format!("{}:/x", tb.display()),
            "--output",
            &bad_out,
        ]);
        r.fails_with(1, &[name, entry]);
        assert_eq!(snapshot(&out), before, "{name}: the layout changed");
    }

    // A compressed tarball is decompressed once into TMPDIR: one that cannot be written there
    // fails naming the tarball and the folder, and nothing is written.
    let good_tb = evil_tarball(t.path(), "fine.tar.gz", "    add('top/ok')");
    let r = run(hoist()
        .env("TMPDIR", t.path().join("no-such-tmp"))
        .args(["build", "--base", &base_ref, "--layer"])
        .arg(format!("{}:/x", good_tb.display()))
        .args(["--output", &bad_out]));
    r.fails_with(1, &["fine.tar.gz", "no-such-tmp"]);
    assert_eq!(snapshot(&out), before, "TMPDIR: the layout changed");

    // An output that cannot be written: a path below a regular file.
    let file = t.path().join("plain-file");
    fs::write(&file, b"x").unwrap();
    let r = hoist_run(&[
        "build",
        "--base",
        &base_ref,
        "--output",
        &format!("oci:{}/sub:t", file.display()),
    ]);
    r.fails_with(1, &[&file.display().to_string()]);

    // A non-empty folder that is not a layout is not written into.
    let precious = t.path().join("precious");
    fs::create_dir(&precious).unwrap();
    fs::write(precious.join("notes.txt"), b"mine").unwrap();
    let r = hoist_run(&[
        "build",
        "--base",
        &base_ref,
        "--output",
        &format!("oci:{}:t", precious.display()),
    ]);
    r.fails_with(1, &[&precious.display().to_string(), "not empty"]);
    assert_eq!(fs::read_dir(&precious).unwrap().count(), 1);

    // The same layout, read-only for an unprivileged user: the build fails naming the folder.
    if is_root() && have_tool("setpriv") {
        let readable = t.path().join("pub");
        write_file(&readable.join("f"), b"f", 0o644);
        let mut c = Command::new("setpriv");
        c.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(hoist_bin());
        c.args([
            "build",
            "--base",
            &base_ref,
            "--layer",
            &format!("{}:/x", readable.display()),
            "--output",
            &bad_out,
        ]);
        run(&mut c).fails_with(1, &[&out.display().to_string(), "Permission denied"]);
    }
    assert_eq!(
        snapshot(&out),
        before,
        "the layout is unchanged after every failure"
    );
    if have_tool("oci-image-tool") {
        run(Command::new("oci-image-tool")
            .args(["validate", "--type", "image", "--ref", "name=good"])
            .arg(&out))
        .ok();
    }
}

#[test]
fn usage_errors_exit_2() {
    hoist_run(&["build", "--no-such-flag"]).fails_with(2, &["--no-such-flag"]);
    hoist_run(&["frobnicate"]).fails_with(2, &["frobnicate"]);
}
