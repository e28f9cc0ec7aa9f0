//! Incidents an inspector would sign, end to end with the squares model on generated clips
//! (scripts/make_clips), live (RTSP camera → daemon → broker) and through `fieldwatch replay`:
//! a stream of passers opens nothing, parked objects open one incident that is updated when
//! another parks, a parked object hidden by squares passing in front keeps its incident, and a restart
//! neither forgets an open incident nor opens it again during its cooldown.

use crate::support::*;
use serde_json::Value;
use std::time::Duration;

/// The reports `clip` gives live: played once by a camera, until `until` holds or `within`.
async fn live(clip: &str, within: Duration, until: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let dir = temp_dir("incidents-live");
    let broker = Mosquitto::start();
    let camera = RtspServer::start(&cache(&format!("clips/{clip}")), None);
    let subscriber = Subscriber::start(broker.port, "fieldwatch/#").await;
    let config = daemon_config(&dir, broker.port, &scene_camera(&format!("rtsp://127.0.0.1:{}/cam", camera.port)));
    let mut daemon = Daemon::start(&config, &dir.join("daemon.log"));
    let started = std::time::Instant::now();
    while started.elapsed() < within && !until(&subscriber.json_on("/reports")) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = daemon.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", daemon.log_text());
    std::fs::remove_dir_all(&dir).ok();
    subscriber.json_on("edge-test/cam-ok/reports")
}

fn replayed(clip: &str) -> Vec<Value> {
    let dir = temp_dir("incidents-replay");
    let config = daemon_config(&dir, 1883, &scene_camera("rtsp://127.0.0.1:1/cam"));
    let reports = crate::replay::replay_any(&cache(&format!("clips/{clip}")), &config, &dir.join("out"));
    std::fs::remove_dir_all(&dir).ok();
    reports
}

fn events(reports: &[Value]) -> Vec<(String, usize)> {
    reports.iter().map(|r| (r["event"].as_str().unwrap().to_string(), r["objects"].as_array().unwrap().len())).collect()
}

fn track_ids(report: &Value) -> Vec<u64> {
    report["objects"].as_array().unwrap().iter().map(|o| o["track_id"].as_u64().unwrap()).collect()
}

fn resolved(reports: &[Value]) -> bool {
    reports.iter().any(|r| r["event"] == "resolved")
}

fn assert_valid(reports: &[Value]) {
    let validator = crate::e2e::validator();
    for r in reports {
        let errors: Vec<String> = validator.iter_errors(r).map(|e| format!("{e} at {}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{errors:#?}");
        assert_eq!(r["incident_id"], reports[0]["incident_id"], "one incident, not one per object");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_squares_crossing_the_zone_reports_nothing() {
    let _serial = heavy().await;
    assert_eq!(replayed("crossing.mp4"), Vec::<Value>::new());
    assert_eq!(live("crossing.mp4", Duration::from_secs(21), |_| false).await, Vec::<Value>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_parked_squares_are_one_incident_updated_when_a_fourth_parks() {
    let _serial = heavy().await;
    let expected = [("opened".to_string(), 3), ("updated".to_string(), 4), ("resolved".to_string(), 0)];
    for (how, reports) in
        [("replay", replayed("parked.mp4")), ("live", live("parked.mp4", Duration::from_secs(25), resolved).await)]
    {
        assert_eq!(events(&reports), expected, "{how}");
        assert_valid(&reports);
        let (opened, updated) = (track_ids(&reports[0]), track_ids(&reports[1]));
        assert!(
            opened.iter().all(|id| updated.contains(id)),
            "{how}: the three keep their tracks: {opened:?} {updated:?}"
        );
        // Parked at 1 s, dwell 3 s: open at 4 s; the fourth parks at 6 s and counts at 9 s.
        let at = |r: &Value| secs_between(r, "started_at", "observed_at");
        assert!((3.0..3.3).contains(&at(&reports[0])), "{how}: {}", reports[0]);
        assert!((8.0..8.3).contains(&at(&reports[1])), "{how}: {}", reports[1]);
        let stayed: Vec<f64> =
            reports[1]["objects"].as_array().unwrap().iter().map(|o| o["stayed_secs"].as_f64().unwrap()).collect();
        assert!(
            stayed.iter().filter(|s| **s >= 8.0).count() == 3 && stayed.iter().any(|s| (3.0..3.3).contains(s)),
            "{how}: {stayed:?}"
        );
        let vi = reports[1]["description"]["vi"].as_str().unwrap();
        assert!(vi.contains("4 ô vuông đỏ"), "{how}: {vi}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_square_with_squares_passing_in_front_is_one_incident() {
    let _serial = heavy().await;
    for (how, reports) in
        [("replay", replayed("occluded.mp4")), ("live", live("occluded.mp4", Duration::from_secs(25), resolved).await)]
    {
        assert_eq!(events(&reports), [("opened".to_string(), 1), ("resolved".to_string(), 0)], "{how}");
        assert_valid(&reports);
        // It stood from 1 s to 12 s; 1 s of coasting and 2 s clear later it is resolved.
        let duration = reports[1]["duration_secs"].as_f64().unwrap();
        assert!((13.8..14.4).contains(&duration), "{how}: {duration}");
    }
}

/// Restarted while an incident is open: the next run resolves that incident (the square is gone
/// when the clip starts again), and neither it nor a run restarted during the cooldown opens
/// another when the square parks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_neither_forgets_an_open_incident_nor_reopens_it_during_cooldown() {
    let _serial = heavy().await;
    let dir = temp_dir("incidents-restart");
    let broker = Mosquitto::start();
    let camera = RtspServer::start(&cache("clips/scene.mp4"), None);
    let subscriber = Subscriber::start(broker.port, "fieldwatch/#").await;
    let config = daemon_config(&dir, broker.port, &scene_camera(&format!("rtsp://127.0.0.1:{}/cam", camera.port)));
    let reports = |event: &str| {
        subscriber.json_on("cam-ok/reports").into_iter().filter(|r| r["event"] == event).collect::<Vec<_>>()
    };
    let run = |n: usize| Daemon::start(&config, &dir.join(format!("run{n}.log")));

    let mut first = run(1);
    subscriber
        .wait_for(Duration::from_secs(20), "opened", |m| {
            m.iter().any(|(_, p)| String::from_utf8_lossy(p).contains("\"opened\""))
        })
        .await;
    assert!(first.terminate(Duration::from_secs(10)).0.success());

    // Run 2: the camera's clip starts again without the square; the open incident resolves.
    let mut second = run(2);
    subscriber
        .wait_for(Duration::from_secs(15), "resolved", |m| {
            m.iter().any(|(_, p)| String::from_utf8_lossy(p).contains("\"resolved\""))
        })
        .await;
    let state = dir.join("state/incidents/cam-ok.json");
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(saved.contains("\"cooldown\""), "{saved}");
    // The square parks again at 6 s and would open at 9 s: the cooldown holds.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(second.terminate(Duration::from_secs(10)).0.success());
    assert!(second.log_text().contains("incidents and cooldowns restored"), "{}", second.log_text());

    let mut third = run(3);
    third.wait_log("rtsp playing", 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(third.terminate(Duration::from_secs(10)).0.success());

    let (opened, resolved) = (reports("opened"), reports("resolved"));
    assert_eq!((opened.len(), resolved.len()), (1, 1), "{:#?}", subscriber.json_on("cam-ok/reports"));
    assert_eq!(opened[0]["incident_id"], resolved[0]["incident_id"]);
    std::fs::remove_dir_all(&dir).ok();
}
