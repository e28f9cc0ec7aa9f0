//! Camera ingest against real GStreamer RTSP servers: the formats cameras send (H.265, High
//! profile with B-frames, a resolution change mid-stream), UDP, basic and digest
//! authentication with passwords from a file or the environment, a lossy link, keyframes-only
//! decoding, sampled decoding (what it leaves out changes no sampled frame), a frozen camera
//! (silent) told apart from a pipeline that does not take frames (blocked), and four cameras
//! where one failing leaves the others alone. What the daemon saw is read from its heartbeat
//! (every second) and its log.

use crate::support::*;
use fieldwatch::config::DecodeConfig;
use serde_json::Value;
use std::time::Duration;

/// A daemon for `cameras` with heartbeats every second, and a subscriber to them.
async fn watched(dir: &std::path::Path, cameras: &str, env: &[(&str, &str)]) -> (Mosquitto, Subscriber, Daemon) {
    let broker = Mosquitto::start();
    let (subscriber, daemon) = restart(dir, &broker, cameras, env, "daemon.log").await;
    (broker, subscriber, daemon)
}

/// The daemon of [`watched`] (again) with a fresh subscriber, logging to `log`.
async fn restart(
    dir: &std::path::Path,
    broker: &Mosquitto,
    cameras: &str,
    env: &[(&str, &str)],
    log: &str,
) -> (Subscriber, Daemon) {
    let subscriber = Subscriber::start(broker.port, "fieldwatch/edge-test/heartbeat").await;
    let config = daemon_config_with(dir, broker.port, "heartbeat_secs = 1", cameras);
    (subscriber, Daemon::start_with_env(&config, &dir.join(log), env))
}

/// Waits for a heartbeat in which `ok` holds for camera `id`; returns that camera's entry.
async fn beat_where(subscriber: &Subscriber, id: &str, within: Duration, ok: impl Fn(&Value) -> bool) -> Value {
    let found = |m: &[(String, Vec<u8>)]| {
        m.iter().rev().filter_map(|(_, p)| serde_json::from_slice::<Value>(p).ok()).find_map(|b| {
            let cam = camera_in(&b, id).clone();
            ok(&cam).then_some(cam)
        })
    };
    subscriber.wait_for(within, &format!("a heartbeat where {id} is as expected"), |m| found(m).is_some()).await;
    found(&subscriber.messages()).unwrap()
}

fn streaming(cam: &Value) -> bool {
    cam["state"] == "streaming" && cam["frames_per_sec"].as_f64().is_some_and(|f| f >= 10.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_b_frames_udp_and_a_resolution_change_all_stream() {
    let _serial = heavy().await;
    let dir = temp_dir("ingest-formats");
    let h265 = RtspServer::start(&cache("clips/scene_h265.mp4"), None);
    let bframes = RtspServer::start(&cache("clips/bframes.mp4"), None);
    let resize = RtspServer::start(&cache("clips/resize.h264"), None);
    let udp = RtspServer::start(&cache("clips/scene.mp4"), None);
    let cameras = [
        camera_block("h265", &h265.url(), "detect_fps = 15"),
        camera_block("bframes", &bframes.url(), "detect_fps = 15"),
        camera_block("resize", &resize.url(), "detect_fps = 15"),
        camera_block("udp", &udp.url(), "transport = \"udp\""),
    ]
    .concat();
    let (_broker, subscriber, mut daemon) = watched(&dir, &cameras, &[]).await;
    for id in ["h265", "bframes", "udp"] {
        let cam = beat_where(&subscriber, id, Duration::from_secs(15), streaming).await;
        assert_eq!(cam["frame_size"], "640x360", "{cam}");
        assert_eq!(cam["decode_errors"], 0, "{cam}");
    }
    // The raw stream switches from 640x360 to 480x270 after 6 s: frames after it have the new size.
    beat_where(&subscriber, "resize", Duration::from_secs(10), |c| c["frame_size"] == "640x360").await;
    let after = beat_where(&subscriber, "resize", Duration::from_secs(15), |c| c["frame_size"] == "480x270").await;
    assert_eq!(after["decode_errors"], 0, "{after}");
    assert!(daemon.terminate(Duration::from_secs(10)).0.success());
    let log = daemon.log_text();
    assert!(log.contains("codec=H265") && log.contains("transport=Udp"), "{log}");
    let changed =
        log.lines().filter(|l| l.contains("camera{camera=resize}") && l.contains("changed its video parameters"));
    assert!(changed.count() >= 1, "the new SPS was noticed and the decoder made afresh:\n{log}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_and_digest_auth_with_passwords_from_a_file_and_the_environment() {
    let _serial = heavy().await;
    let dir = temp_dir("ingest-auth");
    let clip = cache("clips/scene.mp4");
    let basic = RtspServer::start_with(0, &clip, &["--user", "cam", "--password", "s3cret"]);
    let digest = RtspServer::start_with(0, &clip, &["--user", "cam", "--password", "d1gest", "--auth", "digest"]);
    let wrong = RtspServer::start_with(0, &clip, &["--user", "cam", "--password", "right"]);
    let (password, wrong_password) = (dir.join("camera-password"), dir.join("wrong-password"));
    std::fs::write(&password, "s3cret\n").unwrap();
    std::fs::write(&wrong_password, "not-it\n").unwrap();
    let fast = "reconnect_min_secs = 0.5\nreconnect_max_secs = 1";
    let file = |path: &std::path::Path| format!("username = \"cam\"\npassword_file = \"{}\"", path.display());
    let cameras = [
        camera_block("basic", &basic.url(), &file(&password)),
        camera_block("digest", &digest.url(), "username = \"cam\"\npassword_env = \"DIGEST_CAM_PASSWORD\""),
        camera_block("wrong", &wrong.url(), &format!("{}\n{fast}", file(&wrong_password))),
        camera_block("nopath", &basic.url().replace("/cam", "/nope"), &format!("{}\n{fast}", file(&password))),
    ]
    .concat();
    let env = [("DIGEST_CAM_PASSWORD", "d1gest")];
    let (broker, subscriber, mut daemon) = watched(&dir, &cameras, &env).await;
    for id in ["basic", "digest"] {
        beat_where(&subscriber, id, Duration::from_secs(15), streaming).await;
    }
    let refused = beat_where(&subscriber, "wrong", Duration::from_secs(10), |c| !c["last_error"].is_null()).await;
    assert!(refused["last_error"].as_str().unwrap().contains("401"), "{refused}");
    let missing = beat_where(&subscriber, "nopath", Duration::from_secs(10), |c| !c["last_error"].is_null()).await;
    assert!(missing["last_error"].as_str().unwrap().contains("404"), "{missing}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(daemon.terminate(Duration::from_secs(10)).0.success());
    let log = daemon.log_text();
    // Retried with backoff, one line per attempt: no storm, and no password anywhere.
    let attempts = log.lines().filter(|l| l.contains("camera wrong") && l.contains("401")).count();
    assert!((2..=12).contains(&attempts), "{attempts} lines about the wrong password:\n{log}");
    for secret in ["s3cret", "d1gest", "not-it"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
    // The password fixed and the daemon restarted: the camera streams.
    std::fs::write(&wrong_password, "right\n").unwrap();
    let (subscriber, mut again) = restart(&dir, &broker, &cameras, &env, "fixed.log").await;
    beat_where(&subscriber, "wrong", Duration::from_secs(15), streaming).await;
    assert!(again.terminate(Duration::from_secs(10)).0.success());
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_link_keeps_streaming_and_keyframes_mode_decodes_only_keyframes() {
    let _serial = heavy_exclusive().await;
    let dir = temp_dir("ingest-loss");
    let clip = cache("clips/scene.mp4");
    let lossy = RtspServer::start_with(0, &clip, &["--loss", "0.03"]);
    let keyframes = RtspServer::start(&clip, None);
    let cameras = [
        camera_block("lossy", &lossy.url(), "detect_fps = 15"),
        camera_block("keyframes", &keyframes.url(), "decode = \"keyframes\""),
    ]
    .concat();
    let (_broker, subscriber, mut daemon) = watched(&dir, &cameras, &[]).await;
    // Loss costs frames until the next keyframe, never the stream.
    let lossy_cam = beat_where(&subscriber, "lossy", Duration::from_secs(15), |c| {
        c["state"] == "streaming" && c["units_decoded"].as_u64().is_some_and(|n| n >= 60)
    })
    .await;
    assert!(lossy_cam["frame_size"] == "640x360", "{lossy_cam}");
    // Keyframes mode: the stream arrives whole (15 fps), one access unit in 15 is decoded.
    let cam = beat_where(&subscriber, "keyframes", Duration::from_secs(15), |c| {
        streaming(c) && c["keyframes_decoded"].as_u64().is_some_and(|n| n >= 5)
    })
    .await;
    assert_eq!(cam["units_decoded"], cam["keyframes_decoded"], "only keyframes reached the decoder: {cam}");
    assert_eq!(cam["frame_size"], "640x360");
    assert!(daemon.terminate(Duration::from_secs(10)).0.success());
    let log = daemon.log_text();
    let loss_lines = log.lines().filter(|l| l.contains("packet loss")).count();
    assert!((1..=3).contains(&loss_lines), "loss logged at most every 10 s, got {loss_lines} lines:\n{log}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The sampled frames of `clip` up to `seconds` of it, as (time, hash of the planes), and the
/// access units handed to the decoder.
fn sampled_frames(clip: &str, mode: DecodeConfig, detect_fps: f64, seconds: f64) -> (Vec<(f64, u64)>, u64) {
    use std::hash::{Hash, Hasher};
    let mut frames = Vec::new();
    let counters = crate::bench_common::decode_clip(&cache(clip), mode, detect_fps, |f| {
        let mut hash = std::collections::hash_map::DefaultHasher::new();
        (&f.y, &f.u, &f.v).hash(&mut hash);
        frames.push((f.pts_secs, hash.finish()));
        f.pts_secs < seconds
    });
    frames.retain(|(pts, _)| *pts < seconds);
    (frames, counters.units_decoded.get())
}

#[test]
fn sampled_decoding_leaves_out_frames_but_changes_no_sampled_frame() {
    let _serial = heavy_blocking();
    // 15 fps with B-frames (some of them references) and a keyframe every second; H.265
    // without B-frames; the benchmark's street clip (25 fps, B-frames, a keyframe every 2 s).
    // At 2 samples per second or fewer, some keyframes come before the next sample is due, so
    // fewer units are decoded.
    for (clip, seconds) in [("clips/bframes.mp4", 10.0), ("clips/scene_h265.mp4", 10.0), ("clips/street_720p.mp4", 8.0)]
    {
        for fps in [0.5, 1.0, 2.0, 5.0] {
            let (all, all_units) = sampled_frames(clip, DecodeConfig::All, fps, seconds);
            let (sampled, sampled_units) = sampled_frames(clip, DecodeConfig::Sampled, fps, seconds);
            assert!(all.len() as f64 >= seconds * fps - 1.0, "{clip} at {fps}/s: {} frames", all.len());
            assert_eq!(sampled, all, "{clip} at {fps}/s: the same frames, bit for bit");
            assert!(
                fps > 2.0 || sampled_units < all_units,
                "{clip} at {fps}/s: {sampled_units} of {all_units} units decoded"
            );
        }
    }
    // A GOP of two samples' time: once two keyframes told the spacing, about half of each GOP
    // is decoded (the first GOP whole; 330 of 528 units when this was written).
    let (_, all_units) = sampled_frames("clips/street_720p.mp4", DecodeConfig::All, 1.0, 20.0);
    let (_, units) = sampled_frames("clips/street_720p.mp4", DecodeConfig::Sampled, 1.0, 20.0);
    assert!((units as f64) < 0.65 * all_units as f64, "{units} of {all_units} units decoded at 1/s, GOP 2 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_camera_is_silent_and_a_pipeline_that_takes_no_frames_is_blocked() {
    let _serial = heavy_exclusive().await;
    let dir = temp_dir("ingest-stall");
    let clip = cache("clips/scene.mp4");
    let frozen = RtspServer::start(&clip, None);
    let busy = RtspServer::start(&clip, None);
    let stall = "stall_timeout_secs = 2\nreconnect_min_secs = 0.5\nreconnect_max_secs = 1";
    let cameras = [camera_block("frozen", &frozen.url(), stall), camera_block("busy", &busy.url(), stall)].concat();
    // The busy camera's decoder takes nothing for its first 12 s: its edge (64 access units at
    // 15 fps) fills in about 4 s, and 2 s later it counts as blocked, with room for a slow start.
    let (_broker, subscriber, mut daemon) =
        watched(&dir, &cameras, &[("FIELDWATCH_TEST_BLOCK", "decode:busy:12")]).await;
    beat_where(&subscriber, "frozen", Duration::from_secs(15), streaming).await;
    let blocked = beat_where(&subscriber, "busy", Duration::from_secs(20), |c| c["state"] == "blocked").await;
    assert_eq!(blocked["blockages"], 1, "{blocked}");

    let frozen_at = chrono::Utc::now();
    frozen.freeze(true);
    daemon.wait_log("silent: no frame", 1, Duration::from_secs(10)).await;
    let log = daemon.log_text();
    let line = log.lines().find(|l| l.contains("silent: no frame")).unwrap();
    let logged = chrono::DateTime::parse_from_rfc3339(line.split_whitespace().next().unwrap()).unwrap();
    let took = (logged.to_utc() - frozen_at).as_seconds_f64();
    assert!(took <= 3.0, "silence noticed {took:.2} s after the freeze (stall_timeout 2 s): {line}");
    assert!(line.contains("camera frozen"), "{line}");
    // The busy camera flows again once its decoder does; it was never taken for silent.
    daemon.wait_log("the pipeline takes frames again", 1, Duration::from_secs(20)).await;
    beat_where(&subscriber, "busy", Duration::from_secs(5), |c| {
        c["state"] == "streaming" && c["units_decoded"].as_u64().is_some_and(|u| u > 0)
    })
    .await;
    frozen.freeze(false);
    assert!(daemon.terminate(Duration::from_secs(10)).0.success());
    let log = daemon.log_text();
    assert!(log.contains("pipeline blocked") && log.contains("takes frames again"), "{log}");
    assert!(!log.lines().any(|l| l.contains("camera busy") && l.contains("silent")), "{log}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_cameras_where_one_fails_the_other_three_keep_their_frame_rate() {
    let _serial = heavy_exclusive().await;
    let dir = temp_dir("ingest-four");
    let clip = cache("clips/scene.mp4");
    let servers: Vec<RtspServer> = (0..4).map(|_| RtspServer::start(&clip, None)).collect();
    let ids = ["a", "b", "c", "d"];
    let cameras: String = ids
        .iter()
        .zip(&servers)
        .map(|(id, s)| camera_block(id, &s.url(), "reconnect_min_secs = 0.5\nreconnect_max_secs = 1"))
        .collect();
    let (_broker, subscriber, mut daemon) = watched(&dir, &cameras, &[]).await;
    for id in ids {
        beat_where(&subscriber, id, Duration::from_secs(15), streaming).await;
    }
    let mut servers = servers;
    drop(servers.remove(3)); // camera d dies
    beat_where(&subscriber, "d", Duration::from_secs(10), |c| c["state"] != "streaming" && c["state"] != "stalled")
        .await;
    // Three seconds on, the others still stream at the clip's rate while d keeps failing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let beats: Vec<Value> = subscriber.json_on("/heartbeat");
    let last = beats.last().unwrap();
    for id in ["a", "b", "c"] {
        let cam = camera_in(last, id);
        let fps = cam["frames_per_sec"].as_f64().unwrap();
        assert!(cam["state"] == "streaming" && (12.0..=18.0).contains(&fps), "{id}: {cam}");
    }
    assert!(camera_in(last, "d")["last_error"].is_string(), "{last}");
    assert!(daemon.terminate(Duration::from_secs(10)).0.success());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn probe_describes_a_camera_and_says_why_it_cannot_reach_another() {
    let dir = temp_dir("ingest-probe");
    let camera = RtspServer::start(&cache("clips/scene_h265.mp4"), None);
    let jpeg = dir.join("frame.jpg");
    let (url, out) = (camera.url(), jpeg.display().to_string());
    let (code, text) = fieldwatch(&["probe", &url, "--seconds", "2", "--out", &out]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("codec       H.265 (Main)"), "{text}");
    assert!(text.contains("resolution  640x360"), "{text}");
    assert!(text.contains("GOP         15.0 frames"), "{text}");
    let fps: f64 = text.split("frame rate  ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!((14.0..=16.0).contains(&fps), "{text}");
    let picture = image::open(&jpeg).unwrap();
    assert_eq!((picture.width(), picture.height()), (640, 360));

    let dead = format!("rtsp://127.0.0.1:{}/cam", free_port());
    let (code, text) = fieldwatch(&["probe", &dead, "--seconds", "1"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("Connection refused"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}
