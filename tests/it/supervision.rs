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

/// Under systemd (`Type=notify`, through a `NOTIFY_SOCKET` the test owns): READY once the daemon
/// is up, watchdog pings while its stages make progress, none while an inference run hangs (made
/// to take 5 s with a 1 s watchdog), pings again once it returns, and STOPPING when stopped.
/// `/healthz` says the same: 200, then 503 naming the stuck worker, then 200 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_and_healthz_follow_a_hung_inference_run() {
    let _serial = heavy_exclusive().await;
    let dir = temp_dir("notify");
    let broker = Mosquitto::start();
    let camera = RtspServer::start(&cache("clips/scene.mp4"), None);
    let socket_path = dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(Duration, String)>::new()));
    let listening = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let listener = {
        let (heard, listening) = (heard.clone(), listening.clone());
        std::thread::spawn(move || {
            let (started, mut buf) = (std::time::Instant::now(), [0u8; 512]);
            while listening.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    for line in String::from_utf8_lossy(&buf[..n]).lines() {
                        heard.lock().unwrap().push((started.elapsed(), line.to_string()));
                    }
                }
            }
        })
    };
    let http = free_port();
    let cameras = plain_camera(&camera.url(), "detect_fps = 5");
    let config = daemon_config_http(&dir, broker.port, "", &cameras, Some(http));
    let listen = format!("listen = \"127.0.0.1:{http}\"");
    let text = std::fs::read_to_string(&config).unwrap().replace(&listen, &format!("{listen}\nstuck_after_secs = 1"));
    std::fs::write(&config, text).unwrap();
    let env = [
        ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "1000000"),
        ("FIELDWATCH_TEST_BLOCK", "detect:cam-1:5"),
    ];
    let mut daemon = Daemon::start_with_env(&config, &dir.join("daemon.log"), &env);
    wait_listening(http, Duration::from_secs(10));
    let mut health = Vec::new();
    let polling = std::time::Instant::now();
    while polling.elapsed() < Duration::from_secs(11) {
        health.push(http_get(http, "/healthz"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, _) = daemon.terminate(Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(300)).await;
    listening.store(false, std::sync::atomic::Ordering::Relaxed);
    listener.join().unwrap();
    let log = daemon.log_text();
    assert!(status.success(), "{log}");

    let heard = heard.lock().unwrap().clone();
    let at = |what: &str| heard.iter().filter(|(_, m)| m == what).map(|(t, _)| *t).collect::<Vec<_>>();
    let (ready, pings, stopping) = (at("READY=1"), at("WATCHDOG=1"), at("STOPPING=1"));
    assert_eq!(ready.len(), 1, "{heard:?}");
    assert!(pings.first().is_some_and(|p| *p > ready[0]), "pings follow READY: {heard:?}");
    let longest_gap = pings.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(longest_gap >= Duration::from_secs(3), "pings stopped while inference hung: {pings:?}");
    let gap_ends = pings.windows(2).find(|w| w[1] - w[0] == longest_gap).unwrap()[1];
    assert!(pings.iter().filter(|p| **p > gap_ends).count() >= 3, "pings again once the run returned: {pings:?}");
    assert_eq!(stopping.len(), 1, "{heard:?}");
    assert!(log.contains("not pinging the watchdog") && log.contains("hung=[\"detect squares #"), "{log}");

    let codes: Vec<u16> = health.iter().map(|(code, _)| *code).collect();
    let first_bad = codes.iter().position(|c| *c == 503).unwrap_or_else(|| panic!("never 503: {codes:?}"));
    let recovered = codes[first_bad..].iter().position(|c| *c == 200).map(|i| i + first_bad);
    assert!(first_bad > 0 && codes[0] == 200, "healthy before the hang: {codes:?}");
    assert!(recovered.is_some_and(|i| codes[i..].iter().all(|c| *c == 200)), "healthy again after: {codes:?}");
    let bad: serde_json::Value = serde_json::from_str(&health[first_bad].1).unwrap();
    assert_eq!(bad["status"], "stuck", "{bad}");
    let stuck: Vec<&serde_json::Value> =
        bad["stages"].as_array().unwrap().iter().filter(|s| s["state"] == "stuck").collect();
    assert!(stuck.len() == 1 && stuck[0]["name"].as_str().unwrap().starts_with("detect squares #"), "{bad}");
    assert!(bad["stages"].as_array().unwrap().iter().any(|s| s["name"] == "decode cam-1"), "{bad}");
    assert_eq!(bad["cameras"][0]["id"], "cam-1", "{bad}");
    std::fs::remove_dir_all(&dir).ok();
}
