//! A camera that goes away (reboot, cable) is retried with backoff and picked up again when it
//! returns on the same address, without restarting the daemon.

use crate::support::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_comes_back_is_streamed_again() {
    let _serial = heavy().await;
    let dir = temp_dir("reconnect");
    let broker = Mosquitto::start();
    let clip = cache("clips/scene.mp4");
    let camera = RtspServer::start(&clip, None);
    let port = camera.port;
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    let cameras = plain_camera(&url, "stall_timeout_secs = 2\nreconnect_min_secs = 0.3\nreconnect_max_secs = 1");
    let config = daemon_config(&dir, broker.port, &cameras);
    let mut daemon = Daemon::start(&config, &dir.join("daemon.log"));
    daemon.wait_log("rtsp playing", 1, Duration::from_secs(15)).await;

    drop(camera); // the camera dies mid-stream...
    daemon.wait_log("retrying", 2, Duration::from_secs(15)).await;
    let _camera = RtspServer::start_on(port, &clip, None); // ...and comes back on the same port
    daemon.wait_log("rtsp playing", 2, Duration::from_secs(15)).await;

    let (status, took) = daemon.terminate(Duration::from_secs(10));
    assert!(status.success() && took < Duration::from_secs(5), "{status:?} after {took:?}\n{}", daemon.log_text());
    std::fs::remove_dir_all(&dir).ok();
}

/// At the end of its clip the test server stops sending video but goes on sending RTCP reports,
/// as a camera whose encoder died might: the camera is silent all the same and is reconnected.
/// (The reports used to restart the stall timer, so such a camera was never noticed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_sends_only_rtcp_reports_is_silent_and_reconnected() {
    let _serial = heavy().await;
    let dir = temp_dir("rtcp-only");
    let broker = Mosquitto::start();
    let camera = RtspServer::start(&cache("clips/scene.mp4"), None);
    let keys = "stall_timeout_secs = 10\nreconnect_min_secs = 0.5\nreconnect_max_secs = 1";
    let config = daemon_config(&dir, broker.port, &plain_camera(&camera.url(), keys));
    let mut daemon = Daemon::start(&config, &dir.join("daemon.log"));
    // The clip lasts 17 s; then 10 s of RTCP alone.
    daemon.wait_log("camera silent", 1, Duration::from_secs(45)).await;
    daemon.wait_log("rtsp playing", 2, Duration::from_secs(15)).await;
    let (status, _) = daemon.terminate(Duration::from_secs(10));
    let log = daemon.log_text();
    assert!(status.success(), "{log}");
    assert!(log.contains("silent: no frame for 10.0 s"), "{log}");
    std::fs::remove_dir_all(&dir).ok();
}
