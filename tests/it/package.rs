//! The .deb (`cargo deb`): it holds the daemon, its unit, the example config as a conffile and
//! the ONNX Runtime library; it installs into a throwaway Debian 12 root (scripts/setup makes
//! one with debootstrap) where the daemon runs, and an upgrade, a remove and a purge keep or
//! delete the operator's config and the outbox as they should.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the package from the dev-profile binary (what `cargo deb` does from a release build),
/// at `version`, into `dir`.
fn build_deb(dir: &Path, version: &str) -> PathBuf {
    let out = dir.join(format!("fieldwatch_{version}.deb"));
    let status = Command::new("cargo")
        .current_dir(root())
        .args(["deb", "--no-build", "--no-strip", "--fast", "--profile", "dev", "--deb-version", version, "--output"])
        .arg(&out)
        .status()
        .expect("cargo deb (scripts/setup installs cargo-deb)");
    assert!(status.success(), "cargo deb failed");
    out
}

/// Runs `args` inside `root` (chroot): exit code and output.
fn inside(root: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new("chroot").arg(root).args(args).output().expect("chroot (the test runs as root)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn dpkg(root: &Path, args: &[&str]) {
    let (code, out) = inside(root, &[&["dpkg"], args].concat());
    assert_eq!(code, 0, "dpkg {args:?}:\n{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deb_installs_upgrades_and_removes_keeping_config_and_outbox() {
    let _serial = heavy_exclusive().await;
    assert_eq!(unsafe { libc::geteuid() }, 0, "installing into a chroot needs root");
    let dir = temp_dir("package");
    let first = build_deb(&dir, "0.1.0-1");

    let listing = Command::new("dpkg-deb").arg("-c").arg(&first).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for path in [
        "./usr/bin/fieldwatch",
        "./usr/lib/fieldwatch/libonnxruntime.so.1.31.1",
        "./lib/systemd/system/fieldwatch.service",
        "./etc/fieldwatch/fieldwatch.toml",
        "./usr/share/doc/fieldwatch/gpu.conf",
        "./usr/share/doc/fieldwatch/report-v1.md",
    ] {
        assert!(listing.lines().any(|l| l.ends_with(path)), "{path} missing from the package:\n{listing}");
    }
    let conffiles = Command::new("dpkg-deb").arg("-I").arg(&first).arg("conffiles").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&conffiles.stdout).trim(), "/etc/fieldwatch/fieldwatch.toml");

    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let untar = Command::new("tar").arg("-C").arg(&root).arg("-xf").arg(cache("debroot.tar")).status().unwrap();
    assert!(untar.success(), "unpacking .cache/debroot.tar (run scripts/setup)");
    std::fs::copy(&first, root.join("tmp/first.deb")).unwrap();
    dpkg(&root, &["-i", "/tmp/first.deb"]);

    // Installed: the user, its state directory, a config only it and root can read.
    let (_, passwd) = inside(&root, &["getent", "passwd", "fieldwatch"]);
    assert!(passwd.contains("/var/lib/fieldwatch"), "{passwd}");
    let (_, modes) =
        inside(&root, &["stat", "-c", "%n %U:%G %a", "/etc/fieldwatch/fieldwatch.toml", "/var/lib/fieldwatch"]);
    assert!(modes.contains("/etc/fieldwatch/fieldwatch.toml root:fieldwatch 640"), "{modes}");
    assert!(modes.contains("/var/lib/fieldwatch fieldwatch:fieldwatch 750"), "{modes}");
    // The daemon runs there with the library it ships: `check` gets as far as the model file.
    let (code, out) = inside(&root, &["/usr/bin/fieldwatch", "check", "--config", "/etc/fieldwatch/fieldwatch.toml"]);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("model.path: no such file: /var/lib/fieldwatch/models/coco-yolov3-tiny.onnx"), "{out}");
    assert!(!out.contains("model.runtime"), "the packaged ONNX Runtime is where the config says: {out}");

    // The operator edits the config; the daemon has reports waiting in its outbox.
    let config = root.join("etc/fieldwatch/fieldwatch.toml");
    let edited = std::fs::read_to_string(&config).unwrap().replace("id = \"edge-district1-001\"", "id = \"edge-42\"");
    assert!(edited.contains("edge-42"), "the example config names its device edge-district1-001");
    std::fs::write(&config, &edited).unwrap();
    let outbox = root.join("var/lib/fieldwatch/outbox.db");
    std::fs::write(&outbox, b"reports waiting for the broker").unwrap();

    // Upgrade, remove, purge.
    let second = build_deb(&dir, "0.1.0-2");
    std::fs::copy(&second, root.join("tmp/second.deb")).unwrap();
    dpkg(&root, &["-i", "/tmp/second.deb"]);
    let (_, version) = inside(&root, &["dpkg-query", "-W", "-f", "${Version}", "fieldwatch"]);
    assert_eq!(version, "0.1.0-2");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited, "the upgrade kept the operator's config");
    assert!(outbox.exists(), "the upgrade kept the outbox");

    dpkg(&root, &["-r", "fieldwatch"]);
    assert!(!root.join("usr/bin/fieldwatch").exists());
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited, "remove keeps the config");
    assert!(outbox.exists(), "remove keeps the outbox");

    dpkg(&root, &["-P", "fieldwatch"]);
    assert!(!config.exists() && !outbox.exists(), "purge deletes config and state");
    let (code, _) = inside(&root, &["getent", "passwd", "fieldwatch"]);
    assert_ne!(code, 0, "purge deletes the service user");
    std::fs::remove_dir_all(&dir).ok();
}
