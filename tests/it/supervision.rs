//! Every stage is watched: one that dies stops the daemon with a non-zero exit (so systemd
//! restarts it) and a log line naming the stage and camera, instead of a half-alive daemon
//! whose status still says `online`.

use crate::support::*;
use std::time::Duration;

#[test]
fn a_panicking_stage_stops_the_daemon_non_zero_and_names_it() {
    let dir = temp_dir("supervision");
    let cameras = plain_camera(&format!("rtsp://127.0.0.1:{}/cam", free_port()), "");
    let config = daemon_config(&dir, free_port(), &cameras);
    for (stage, named) in [
        ("source", "stage source of camera cam-1"),
        ("decode", "stage decode of camera cam-1"),
        ("rules", "stage rules of camera cam-1"),
        ("detect", "stage detect"),
    ] {
        let log = dir.join(format!("{stage}.log"));
        let spec = format!("{stage}:cam-1");
        let mut daemon = Daemon::start_with_env(&config, &log, &[("FIELDWATCH_TEST_PANIC", &spec)]);
        let (status, took) = daemon
            .wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{stage}: still running 10 s after the stage died:\n{}", daemon.log_text()));
        let text = daemon.log_text();
        assert_eq!(status.code(), Some(1), "{stage}: {status:?}\n{text}");
        assert!(took < Duration::from_secs(8), "{stage}: took {took:?}");
        assert!(
            text.lines().any(|l| l.contains(named) && l.contains("failed; stopping") && l.contains("panicked")),
            "{stage}: no line names the stage that died:\n{text}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
