//! Stream time: rules run on the camera's own timestamps, anchored to the wall clock once per
//! connection, so a clock step mid-dwell (NTP after boot) changes no incident. The daemon runs
//! in-process here, with a clock the test steps, against the real RTSP server and broker.

use crate::support::*;
use chrono::TimeDelta;
use fieldwatch::clock::SteppedClock;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_stepped_an_hour_during_a_dwell_changes_nothing() {
    let _serial = heavy_exclusive().await;
    let dir = temp_dir("clock");
    let broker = Mosquitto::start();
    let camera = RtspServer::start(&cache("clips/scene.mp4"), None);
    let subscriber = Subscriber::start(broker.port, "fieldwatch/#").await;
    let config = daemon_config(&dir, broker.port, &scene_camera(&format!("rtsp://127.0.0.1:{}/cam", camera.port)));
    let settings = fieldwatch::config::load(&config).unwrap();
    let clock = Arc::new(SteppedClock::default());
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(fieldwatch::app::run(settings, clock.clone(), shutdown.clone()));

    // The dweller is in the zone from 6 s to 12 s of the clip; the dwell ends at 9 s. Step the
    // clock an hour ahead at about 7.5 s: with wall-clock timing the dwell would be "over" at once.
    tokio::time::sleep(Duration::from_millis(7500)).await;
    assert!(subscriber.json_on("/reports").is_empty(), "nothing may open before the dwell");
    clock.step(TimeDelta::hours(1));
    let stepped = Instant::now();
    let reports = |m: &[(String, Vec<u8>)], event: &str| {
        m.iter().any(|(t, p)| t.ends_with("/reports") && String::from_utf8_lossy(p).contains(event))
    };
    subscriber.wait_for(Duration::from_secs(20), "the opened report", |m| reports(m, "\"opened\"")).await;
    let opened_after = stepped.elapsed();
    subscriber.wait_for(Duration::from_secs(20), "the resolved report", |m| reports(m, "\"resolved\"")).await;
    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), daemon).await.expect("daemon stops").unwrap();
    assert!(result.is_ok(), "{result:?}");

    let published = subscriber.json_on("edge-test/cam-ok/reports");
    let events: Vec<&str> = published.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["opened", "resolved"]);
    let (opened, resolved) = (&published[0], &published[1]);
    assert!(
        opened_after >= Duration::from_millis(500),
        "opened {opened_after:?} after the step: the step cut the dwell"
    );
    let dwell = secs_between(opened, "started_at", "opened_at");
    assert!((3.0..3.3).contains(&dwell), "dwell {dwell} s");
    let duration = resolved["duration_secs"].as_f64().unwrap();
    assert!((8.8..9.4).contains(&duration), "duration {duration} s (6 s present, 1 s coasting, 2 s clear)");
    // Every time stays on the connection's timeline, anchored before the step.
    let resolved_at = chrono::DateTime::parse_from_rfc3339(resolved["resolved_at"].as_str().unwrap()).unwrap();
    assert!(resolved_at < chrono::Utc::now() + TimeDelta::minutes(30), "resolved_at {resolved_at} followed the step");
    std::fs::remove_dir_all(&dir).ok();
}
