//! Storage: a full-disk episode on a real tmpfs. N loopback RTSP cameras play the test scene
//! again and again (an incident opened and resolved each pass), the daemon runs with the
//! squares model and the broker down, and the state directory's disk is full for the episode.
//! It measures the reports made meanwhile (held in memory), the memory they take at
//! `outbox.memory_bytes` (the daemon's resident memory before and at the end), what was lost
//! past it; then, with space freed, how long until the held reports are on disk, and with the
//! broker back, until every report made is delivered.
//!
//! `cargo bench --bench storage [-- --cameras 4] [--minutes 10 | --seconds S] [--memory-mib 4]
//!  [--out FILE.json]`
//! Needs root (it mounts the tmpfs) and `scripts/setup`; where it cannot mount, it says so and
//! measures nothing. CI runs a smoke run of one camera for 20 s.

mod common;

use common::{Proc, arg, daemon, free_port, mosquitto, mosquitto_on, proc_stats, rtsp_camera, scrape};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn config(dir: &Path, root: &Path, mqtt: u16, http: u16, ports: &[u16], memory: u64) -> PathBuf {
    let mut text = format!(
        "[device]\nid = \"storage\"\nstate_dir = \"{}\"\n[model]\npath = \"{}\"\nruntime = \"{}\"\n\
         [mqtt]\nport = {mqtt}\nheartbeat_secs = 5\n[http]\nlisten = \"127.0.0.1:{http}\"\n[log]\nlevel = \"warn\"\n\
         [outbox]\nmemory_bytes = {memory}\nmin_free_bytes = 65536\n",
        dir.join("state").display(),
        root.join("models/squares.onnx").display(),
        root.join(".cache/onnxruntime/libonnxruntime.so").display(),
    );
    for (i, port) in ports.iter().enumerate() {
        text.push_str(&format!(
            "[[cameras]]\nid = \"cam-{}\"\nurl = \"rtsp://127.0.0.1:{port}/cam\"\ndetect_fps = 5\n\
             stall_timeout_secs = 2\nreconnect_min_secs = 0.5\nreconnect_max_secs = 1\n\
             [cameras.tracking]\nstationary_after_secs = 1\nstationary_max_unseen_secs = 1\n\
             [cameras.health]\nenabled = false\n\
             [[cameras.zones]]\nname = \"sidewalk\"\npolygon = [[0.25, 0.5], [0.75, 0.5], [0.75, 1.0], [0.25, 1.0]]\n\
             [[cameras.rules]]\nid = \"sidewalk\"\nviolation = \"sidewalk_encroachment\"\nzone = \"sidewalk\"\n\
             classes = [\"red\"]\nmin_score = 0.5\ndwell_secs = 3\nclear_after_secs = 2\ncooldown_secs = 0\n",
            i + 1
        ));
    }
    let path = dir.join("fieldwatch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The sum of a metric's samples in a `/metrics` scrape (every label set; counters end in
/// `_total`); 0 if it is not there.
fn metric(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let bare = key.split('{').next()?;
            (bare == name || bare == format!("{name}_total")).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Scrapes until `done` holds (or `within` passes); returns the last scrape and when.
fn until(http: u16, within: Duration, done: impl Fn(&str) -> bool) -> (String, Duration) {
    let started = Instant::now();
    loop {
        let now = scrape(http);
        if done(&now) || started.elapsed() > within {
            return (now, started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn main() {
    let cameras: usize = arg("--cameras").and_then(|n| n.parse().ok()).unwrap_or(4);
    let episode = match (arg("--seconds"), arg("--minutes")) {
        (Some(s), _) => Duration::from_secs_f64(s.parse().unwrap()),
        (None, m) => Duration::from_secs_f64(m.map_or(10.0, |m| m.parse().unwrap()) * 60.0),
    };
    let memory: u64 = arg("--memory-mib").and_then(|n| n.parse().ok()).unwrap_or(4) << 20;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("fieldwatch-bench-storage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let disk = match fieldwatch::testing::Tmpfs::mount(&dir.join("state"), 256 << 20) {
        Ok(disk) => disk,
        Err(why) => {
            println!("SKIPPED: cannot mount a tmpfs here ({why}); the storage benchmark needs root");
            std::fs::remove_dir_all(&dir).ok();
            return;
        }
    };
    let (broker, mqtt) = mosquitto(&dir);
    drop(broker); // down for the episode; its port stays ours to start it again
    let clip = root.join(".cache/clips/scene.mp4");
    let servers: Vec<(Proc, u16)> = (0..cameras).map(|_| rtsp_camera(&root, &clip)).collect();
    let ports: Vec<u16> = servers.iter().map(|(_, p)| *p).collect();
    let http = free_port();
    let config = config(&dir, &root, mqtt, http, &ports, memory);
    let daemon = daemon(&config, Some(&dir.join("daemon.log")));
    let pid = daemon.0.id();
    let (_, _) = until(http, Duration::from_secs(30), |s| !s.is_empty());
    std::thread::sleep(Duration::from_secs(3));
    let rss_before = proc_stats(pid).rss;

    // The episode: the disk is full, the broker down.
    let filler = disk.fill();
    let started = Instant::now();
    let mut held_peak = 0.0f64;
    while started.elapsed() < episode {
        std::thread::sleep(Duration::from_secs(1));
        held_peak = held_peak.max(metric(&scrape(http), "fieldwatch_reports_held_in_memory"));
    }
    let at_end = scrape(http);
    let rss_end = proc_stats(pid).rss;
    let made = metric(&at_end, "fieldwatch_reports");
    let held = metric(&at_end, "fieldwatch_reports_held_in_memory");
    let lost_reports = metric(&at_end, "fieldwatch_reports_lost") - lost_images(&at_end);
    let full = at_end.lines().any(|l| l.starts_with(r#"fieldwatch_storage_state{state="full"} 1"#));

    // Space freed: the held reports go to disk. Then the broker comes back: all delivered.
    std::fs::remove_file(&filler).unwrap();
    let (_, to_disk) = until(http, Duration::from_secs(300), |s| {
        !s.is_empty() && metric(s, "fieldwatch_reports_held_in_memory") == 0.0
    });
    let broker = mosquitto_on(&dir, mqtt);
    let (drained, to_broker) =
        until(http, Duration::from_secs(600), |s| !s.is_empty() && metric(s, "fieldwatch_reports_pending") == 0.0);
    let delivered = metric(&drained, "fieldwatch_reports_published");
    let result = json!({
        "cameras": cameras,
        "episode_secs": episode.as_secs_f64(),
        "memory_bytes": memory,
        "storage_full_during_episode": full,
        "reports_made_during_episode": made,
        "held_in_memory_at_end": held,
        "held_in_memory_peak": held_peak,
        "lost_images": lost_images(&at_end),
        "lost_reports": lost_reports,
        "rss_before_mib": rss_before as f64 / 1048576.0,
        "rss_at_end_mib": rss_end as f64 / 1048576.0,
        "secs_from_space_freed_to_all_held_on_disk": to_disk.as_secs_f64(),
        "secs_from_broker_back_to_all_delivered": to_broker.as_secs_f64(),
        "delivered_after": delivered,
    });
    println!("{result:#}");
    if let Some(out) = arg("--out") {
        std::fs::write(out, format!("{result:#}\n")).unwrap();
    }
    drop((daemon, broker, servers));
    drop(disk);
    std::fs::remove_dir_all(&dir).ok();
    assert!(full && made > 0.0, "the episode had the disk full and reports made");
    assert!(delivered >= made - lost_reports, "every report kept was delivered");
}

fn lost_images(scrape: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(r#"fieldwatch_reports_lost_total{what="images"}"#))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}
