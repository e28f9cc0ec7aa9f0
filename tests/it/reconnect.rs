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
