//! `scripts/demo` as a new user runs it: on the real street it shows the parked van and car
//! with their evidence clip, ends by itself with status 0, and leaves no process behind
//! (broker, camera, subscriber, listener, daemon).

use crate::support::*;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// Processes (pid, command line) still in process group `pgid`.
fn members(pgid: u32) -> Vec<(u32, String)> {
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // Fields after the parenthesised command: state, ppid, pgrp, ...
        let after = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
        if after.split_whitespace().nth(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            left.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_ends_by_itself_and_leaves_no_process_behind() {
    let _serial = heavy_exclusive().await;
    let dir = temp_dir("demo");
    let mut child = Command::new(root().join("scripts/demo"))
        .env("DEMO_SECONDS", "20")
        .env("DEMO_OUT", &dir)
        .env("DEMO_BIN", env!("CARGO_BIN_EXE_fieldwatch"))
        .stdout(std::fs::File::create(dir.join("demo.out")).unwrap())
        .stderr(std::fs::File::create(dir.join("demo.err")).unwrap())
        .process_group(0) // its own group: everything it starts can be found afterwards
        .spawn()
        .unwrap();
    let pgid = child.id();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            unsafe { libc::kill(-(pgid as i32), libc::SIGKILL) };
            panic!("the demo did not end within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = std::fs::read_to_string(dir.join("demo.out")).unwrap();
    let err = std::fs::read_to_string(dir.join("demo.err")).unwrap();
    assert!(status.success(), "{status:?}\n{out}\n{err}");
    assert!(out.contains("[report] OPENED") && out.contains("truck 0.") && out.contains("car 0."), "{out}\n{err}");
    assert!(out.contains("evidence clip: "), "{out}\n{err}");
    let clips = std::fs::read_dir(dir.join("state/evidence")).unwrap().count();
    assert_eq!(clips, 1, "{out}");
    assert!(err.contains("demo: done"), "{err}");
    let left = members(pgid);
    unsafe { libc::kill(-(pgid as i32), libc::SIGKILL) }; // never leak, even when failing
    assert!(left.is_empty(), "left running: {left:?}");
    std::fs::remove_dir_all(&dir).ok();
}
