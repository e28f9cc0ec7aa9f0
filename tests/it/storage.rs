//! Storage faults never stop the cameras, on real file systems: a tmpfs filled up while the
//! daemon runs with the broker down, or before it starts, and an ext4 image the kernel turns
//! read-only under the running daemon. Each test needs root to mount, and says SKIPPED where
//! it cannot.

use crate::support::*;
use fieldwatch::testing::{Ext4, Tmpfs};
use serde_json::Value;
use std::time::{Duration, Instant};

/// A config with the health endpoint, heartbeats every second, a free-space limit a small test
/// disk can meet, and the scene again and again: the camera reconnects 2 s after the clip ends
/// and, with no cooldown, each pass opens an incident.
fn config(dir: &std::path::Path, mqtt_port: u16, rtsp_port: u16, http_port: u16) -> std::path::PathBuf {
    let camera = scene_camera(&format!("rtsp://127.0.0.1:{rtsp_port}/cam"))
        .replace("clear_after_secs = 2", "clear_after_secs = 2\ncooldown_secs = 0")
        .replace(
            "reconnect_min_secs = 60\nreconnect_max_secs = 60",
            "reconnect_min_secs = 0.5\nreconnect_max_secs = 1\nstall_timeout_secs = 2",
        );
    let cameras = format!("{camera}\n[outbox]\nmin_free_bytes = 65536\n");
    daemon_config_http(dir, mqtt_port, "heartbeat_secs = 1", &cameras, Some(http_port))
}

/// `/healthz`, or null while nothing listens yet.
fn health(port: u16) -> Value {
    if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        return Value::Null;
    }
    let (_, body) = http_get(port, "/healthz");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// Polls `/healthz` until `pred` holds; panics with the last answer after `within`.
async fn wait_health(port: u16, within: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let now = health(port);
        if pred(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "{what}: /healthz says {now:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn storage_is(state: &'static str) -> impl Fn(&Value) -> bool {
    move |h| h["storage"]["state"] == state
}

fn mounted<T>(what: &str, fs: Result<T, String>) -> Option<T> {
    fs.map_err(|why| eprintln!("SKIPPED: cannot mount {what} here ({why}); the storage tests need root")).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_while_the_broker_is_down_stops_no_camera_and_loses_no_report() {
    let _serial = heavy().await;
    let dir = temp_dir("storage-full");
    let Some(disk) = mounted("a tmpfs", Tmpfs::mount(&dir.join("state"), 8 << 20)) else { return };
    let mut broker = Mosquitto::start();
    broker.stop();
    let camera = RtspServer::start(&cache("clips/scene.mp4"), None);
    let http = free_port();
    let config = config(&dir, broker.port, camera.port, http);
    let mut daemon = Daemon::start(&config, &dir.join("daemon.log"));
    wait_health(http, Duration::from_secs(20), "up, storage fine", storage_is("ok")).await;

    // The disk fills up: the incident's reports are held in memory; nothing stops.
    let filler = disk.fill();
    daemon.wait_log("outbox_id=memory-", 2, Duration::from_secs(40)).await;
    let full = wait_health(http, Duration::from_secs(10), "degraded: full", storage_is("full")).await;
    assert_eq!(full["status"], "degraded", "{full:#}");
    assert!(full["storage"]["held_in_memory"].as_u64() >= Some(2), "{full:#}");
    assert!(daemon.proc.0.try_wait().unwrap().is_none(), "the daemon runs on");

    // The broker comes back while the disk is still full: the held reports go out from memory,
    // and the heartbeat says why.
    broker.restart();
    let subscriber = Subscriber::start(broker.port, "fieldwatch/#").await;
    subscriber.wait_for_reports(2, Duration::from_secs(20)).await;
    subscriber
        .wait_for(Duration::from_secs(10), "a heartbeat saying full", |m| {
            m.iter()
                .any(|(t, p)| t.ends_with("/heartbeat") && String::from_utf8_lossy(p).contains(r#""storage":"full""#))
        })
        .await;

    // Space is freed: the outbox is back on disk by itself, and the next incident's reports
    // are committed there.
    std::fs::remove_file(filler).unwrap();
    let freed = Instant::now();
    wait_health(http, Duration::from_secs(20), "storage fine again", |h| {
        h["status"] == "ok" && h["storage"]["held_in_memory"] == 0
    })
    .await;
    eprintln!("storage fine again {:.1} s after space was freed", freed.elapsed().as_secs_f64());
    subscriber.wait_for_reports(4, Duration::from_secs(40)).await;
    assert!(daemon.log_text().lines().any(|l| l.contains("report queued") && !l.contains("memory-")), "on disk again");

    let reports = subscriber.json_on("edge-test/cam-ok/reports");
    let events: Vec<(String, String)> = reports
        .iter()
        .map(|r| (r["incident_id"].as_str().unwrap().to_string(), r["event"].as_str().unwrap().to_string()))
        .collect();
    for (incident, _) in &events {
        let of: Vec<&str> = events.iter().filter(|(i, _)| i == incident).map(|(_, e)| e.as_str()).collect();
        assert_eq!(of.first(), Some(&"opened"), "each incident opens first: {events:?}");
    }
    let ids: std::collections::HashSet<&str> = reports.iter().map(|r| r["report_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), reports.len(), "no report twice: {events:?}");
    let beats = subscriber.json_on("/heartbeat");
    let detected: Vec<u64> =
        beats.iter().map(|b| camera_in(b, "cam-ok")["frames_detected"].as_u64().unwrap()).collect();
    assert!(
        detected.windows(2).all(|w| w[0] <= w[1]) && detected.last() > detected.first(),
        "the camera kept detecting: {detected:?}"
    );
    let (status, _) = daemon.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", daemon.log_text());
    assert!(!daemon.log_text().contains("stage failed"), "{}", daemon.log_text());
    drop(disk);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_full_at_start_starts_the_daemon_degraded_and_it_recovers_when_space_returns() {
    let _serial = heavy().await;
    let dir = temp_dir("storage-start");
    let Some(disk) = mounted("a tmpfs", Tmpfs::mount(&dir.join("state"), 2 << 20)) else { return };
    let filler = disk.fill();
    let broker = Mosquitto::start();
    let camera = RtspServer::start(&cache("clips/scene.mp4"), None);
    let http = free_port();
    let config = config(&dir, broker.port, camera.port, http);
    let mut daemon = Daemon::start(&config, &dir.join("daemon.log"));
    let full = wait_health(http, Duration::from_secs(20), "started degraded", storage_is("full")).await;
    assert_eq!(full["status"], "degraded", "{full:#}");
    assert!(daemon.proc.0.try_wait().unwrap().is_none(), "no exit 78: {}", daemon.log_text());
    std::fs::remove_file(filler).unwrap();
    wait_health(http, Duration::from_secs(20), "recovered", |h| h["status"] == "ok").await;
    assert!(dir.join("state/outbox.db").exists(), "the outbox is on disk now");
    let (status, _) = daemon.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", daemon.log_text());
    drop(disk);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_the_kernel_turns_read_only_under_the_daemon_holds_reports_until_it_is_repaired() {
    let _serial = heavy().await;
    let dir = temp_dir("storage-ro");
    let Some(disk) = mounted("an ext4 image", Ext4::mount(&dir.join("state"), 16 << 20)) else { return };
    let broker = Mosquitto::start();
    let subscriber = Subscriber::start(broker.port, "fieldwatch/#").await;
    let camera = RtspServer::start(&cache("clips/scene.mp4"), None);
    let http = free_port();
    let config = config(&dir, broker.port, camera.port, http);
    let mut daemon = Daemon::start(&config, &dir.join("daemon.log"));
    wait_health(http, Duration::from_secs(20), "up", storage_is("ok")).await;
    disk.fail().unwrap();
    daemon.wait_log("outbox_id=memory-", 1, Duration::from_secs(40)).await;
    let read_only = wait_health(http, Duration::from_secs(10), "read-only", storage_is("read_only")).await;
    assert_eq!(read_only["status"], "degraded", "{read_only:#}");
    subscriber.wait_for_reports(1, Duration::from_secs(10)).await; // published from memory
    disk.repair().unwrap();
    wait_health(http, Duration::from_secs(30), "repaired", |h| h["status"] == "ok").await;
    let (status, _) = daemon.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", daemon.log_text());
    drop(disk);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_outbox_at_start_is_set_aside_and_the_daemon_runs() {
    let _serial = heavy().await;
    let dir = temp_dir("storage-corrupt");
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let noise: Vec<u8> = (0..64_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    std::fs::write(dir.join("state/outbox.db"), &noise).unwrap();
    let broker = Mosquitto::start();
    let camera = RtspServer::start(&cache("clips/scene.mp4"), None);
    let http = free_port();
    let config = config(&dir, broker.port, camera.port, http);
    let mut daemon = Daemon::start(&config, &dir.join("daemon.log"));
    let up = wait_health(http, Duration::from_secs(20), "up", |h| h["status"] == "ok").await;
    assert_eq!(up["storage"]["state"], "ok", "{up:#}");
    let aside: Vec<_> = std::fs::read_dir(dir.join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("outbox.db.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(dir.join("state").join(&aside[0])).unwrap(), noise, "kept as it was");
    assert!(daemon.log_text().contains("the file is corrupt; setting it aside"), "{}", daemon.log_text());
    let (status, _) = daemon.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", daemon.log_text());
    std::fs::remove_dir_all(&dir).ok();
}

/// `fieldwatch outbox` only looks: on a corrupt outbox it says so once, and leaves the file
/// for the daemon to set aside.
#[test]
fn the_outbox_command_on_a_corrupt_outbox_says_so_once_and_touches_nothing() {
    let dir = temp_dir("storage-cli");
    std::fs::create_dir_all(dir.join("state")).unwrap();
    std::fs::write(dir.join("state/outbox.db"), vec![0x42; 8192]).unwrap();
    let config = daemon_config(&dir, free_port(), &scene_camera("rtsp://127.0.0.1:1/cam"));
    let (code, out) = fieldwatch(&["outbox", "--config", &config.display().to_string()]);
    assert_eq!(code, 1, "not a config problem: {out}");
    assert_eq!(out.matches("file is not a database").count(), 1, "{out}");
    assert_eq!(std::fs::read(dir.join("state/outbox.db")).unwrap(), vec![0x42; 8192]);
    std::fs::remove_dir_all(&dir).ok();
}

/// Where the kill loop's writer works, and the first report number it uses.
const WRITER_DIR: &str = "FIELDWATCH_KILL_LOOP_DIR";
const WRITER_FROM: &str = "FIELDWATCH_KILL_LOOP_FROM";

/// The kill loop's writer, run in a child process of this test binary: a burst of reports
/// (each with a 20 KB image) and incident changes, as the daemon writes them, until killed.
/// Prints `committed N` once report N's push has returned from the disk.
#[test]
#[ignore = "the writer of power_cuts_at_any_point_of_a_write_burst_leave_outbox_and_state_whole; run by it"]
fn kill_loop_writer() {
    use fieldwatch::outbox::{Limits, Outbox, Slot};
    let dir = std::path::PathBuf::from(std::env::var(WRITER_DIR).expect("run by the kill loop"));
    let from: u64 = std::env::var(WRITER_FROM).unwrap().parse().unwrap();
    let limits = Limits { max_bytes: 1 << 30, memory_bytes: 1 << 20, min_free_bytes: 0 };
    let outbox = Outbox::start(&dir.join("outbox.db"), limits);
    let state = fieldwatch::state::StateFile::open(&dir, "cam-1");
    let images = fieldwatch::report::Images { snapshot: Some(vec![0x5A; 20_000]), first_seen: None };
    for n in from.. {
        let json = format!(r#"{{"n":{n}}}"#);
        if let Slot::Disk(_) = outbox.push("cam-1", "t", json.as_bytes(), &images) {
            println!("committed {n}");
        }
        let until = chrono::DateTime::from_timestamp(1_800_000_000 + n as i64, 0).unwrap();
        state.save(&[("sidewalk".into(), fieldwatch::rules::Saved::Cooldown { until })]).unwrap();
    }
}

/// 200 power cuts (SIGKILL) at random points of a write burst: after each, the outbox opens and
/// passes its check, the incident state reads, and at the end every report whose commit was
/// seen is there, and none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_at_any_point_of_a_write_burst_leave_outbox_and_state_whole() {
    use rand::Rng;
    let _serial = heavy_exclusive().await;
    let dir = temp_dir("kill-loop");
    let mut committed = std::collections::BTreeSet::new();
    let mut rng = rand::rng();
    for round in 0..200u64 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["storage::kill_loop_writer", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
            .env(WRITER_DIR, &dir)
            .env(WRITER_FROM, (round * 100_000).to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(15..150)));
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        committed.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.strip_prefix("committed ")?.parse::<u64>().ok()),
        );
        let outbox = fieldwatch::outbox::Outbox::open(&dir.join("outbox.db"), 1 << 30);
        assert!(outbox.is_ok(), "round {round}: the outbox does not open: {:?}", outbox.err());
        let state = fieldwatch::state::StateFile::open(&dir, "cam-1").load();
        assert!(state.is_ok(), "round {round}: the incident state does not read: {state:?}");
    }
    let outbox = fieldwatch::outbox::Outbox::open(&dir.join("outbox.db"), 1 << 30).unwrap();
    let mut present = Vec::new();
    while let Some(next) = outbox.next() {
        let report: Value = serde_json::from_slice(&next.json).unwrap();
        present.push(report["n"].as_u64().unwrap());
        outbox.remove(next.slot);
    }
    let unique: std::collections::BTreeSet<u64> = present.iter().copied().collect();
    assert_eq!(unique.len(), present.len(), "a report twice");
    let missing: Vec<&u64> = committed.difference(&unique).collect();
    assert!(missing.is_empty(), "{} committed reports missing: {missing:?}", missing.len());
    assert!(committed.len() > 200, "the writers got going: {} commits seen", committed.len());
    eprintln!(
        "200 kills: {} commits seen, {} reports on disk, none missing, none twice",
        committed.len(),
        present.len()
    );
    std::fs::remove_dir_all(&dir).ok();
}
