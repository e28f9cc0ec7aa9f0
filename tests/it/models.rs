//! Several models in one daemon: each rule reads the model it names, a camera runs every model
//! its rules need and its rules see their results of one frame together; a model with a
//! dynamic batch dimension runs frames of several cameras in one inference. An end-to-end
//! model (NMS inside, a detection count that changes) on an empty street keeps the daemon up.

use crate::replay::replay_any;
use crate::support::*;
use serde_json::Value;
use std::time::Duration;

/// `[models.bins]`: the squares detector again, exported with a dynamic batch and with class
/// names of its own, so its detections can only be told apart by the model that made them.
fn bins_model(extra: &str) -> String {
    format!(
        "\n[models.bins]\npath = \"{}\"\nlabels = [\"bin_red\", \"bin_green\"]\n{extra}\n",
        root().join("models/squares_batch.onnx").display()
    )
}

/// scene.mp4 replayed with a second rule on the same zone that reads `bins`: each rule opens
/// and resolves its own incident, and each report names the model its rule read.
#[test]
fn two_models_on_one_camera_each_rule_reads_its_own() {
    let _serial = heavy_blocking();
    let dir = temp_dir("two-models");
    let second_rule = "\n[[cameras.rules]]\nid = \"bins\"\nviolation = \"garbage\"\ncategory = \"environmental_sanitation\"\nzone = \"sidewalk\"\nmodel = \"bins\"\nclasses = [\"bin_red\"]\ndwell_secs = 3\nclear_after_secs = 2\n";
    let cameras = format!("{}{second_rule}{}", scene_camera("rtsp://127.0.0.1:1/unused"), bins_model(""));
    let config = daemon_config(&dir, 1, &cameras);
    let reports = replay_any(&cache("clips/scene.mp4"), &config, &dir.join("out"));
    let seen: Vec<(&str, &str, &str)> = reports
        .iter()
        .map(|r| (r["rule_id"].as_str().unwrap(), r["event"].as_str().unwrap(), r["model"]["name"].as_str().unwrap()))
        .collect();
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            ("bins", "opened", "bins"),
            ("bins", "resolved", "bins"),
            ("sidewalk", "opened", "squares"),
            ("sidewalk", "resolved", "squares")
        ],
        "{seen:?}"
    );
    // Both models saw the same frames: the two incidents open on the same frame.
    let opened = |rule: &str| reports.iter().find(|r| r["rule_id"] == rule && r["event"] == "opened").unwrap();
    assert_eq!(opened("bins")["observed_at"], opened("sidewalk")["observed_at"]);
    assert_eq!(opened("bins")["objects"][0]["class"], "bin_red");
    assert_eq!(opened("bins")["objects"][0]["box"], opened("sidewalk")["objects"][0]["box"]);

    // A class of the other model, or a model that is not there, is refused naming the key.
    let wrong_class = config_text(&config).replace("classes = [\"bin_red\"]", "classes = [\"red\"]");
    let (code, out) = check(&dir, &wrong_class);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("cameras[0].rules[1].classes[0]: \"red\" is not a class of the model"), "{out}");
    let (code, out) = check(&dir, &config_text(&config).replace("model = \"bins\"", "model = \"trash\""));
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("cameras[0].rules[1].model: \"trash\" is not a model of the config"), "{out}");

    // A technician tries either model on a photo by name.
    let mut photo = image::RgbImage::from_pixel(640, 360, image::Rgb([90, 90, 90]));
    paint_square(&mut photo, 100, 100, 60, image::Rgb([230, 20, 20]));
    let photo_path = dir.join("square.jpg");
    photo.save(&photo_path).unwrap();
    let detect = |model: &str| {
        let (config, out, photo) =
            (config.display().to_string(), dir.display().to_string(), photo_path.display().to_string());
        fieldwatch(&["detect", "--config", &config, "--out", &out, "--model", model, &photo])
    };
    for (model, label) in [("squares", "red"), ("bins", "bin_red")] {
        let (code, out) = detect(model);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&format!("\"label\": \"{label}\"")), "{model}: {out}");
    }
    let (code, out) = detect("trash");
    assert_ne!(code, 0);
    assert!(out.contains("--model: no model \"trash\" in the config (it has [\"squares\", \"bins\"])"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

fn config_text(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn check(dir: &std::path::Path, text: &str) -> (i32, String) {
    let path = dir.join("check.toml");
    std::fs::write(&path, text).unwrap();
    fieldwatch(&["check", "--config", &path.display().to_string()])
}

/// Three cameras whose rules read only the dynamic-batch model, served by one worker: frames
/// of different cameras wait together and run together, which the heartbeat's model entry
/// shows; `[model]`, which no rule reads, is not loaded at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_sharing_a_dynamic_batch_model_are_detected_in_batches() {
    let _serial = heavy_exclusive().await;
    let dir = temp_dir("batching");
    let broker = Mosquitto::start();
    let server = RtspServer::start(&cache("clips/scene.mp4"), None);
    let mut cameras: String = ["a", "b", "c"]
        .iter()
        .map(|id| camera_block(id, &server.url(), "detect_fps = 15"))
        .collect::<String>()
        .replace("classes = [\"red\"]", "model = \"bins\"\nclasses = [\"bin_red\"]");
    cameras.push_str(&bins_model("workers = 1\nbatch = 4"));
    let subscriber = Subscriber::start(broker.port, "fieldwatch/edge-test/heartbeat").await;
    let config = daemon_config_with(&dir, broker.port, "heartbeat_secs = 1", &cameras);
    let mut daemon = Daemon::start(&config, &dir.join("daemon.log"));

    let batched = |b: &Value| b["models"][0]["largest_batch"].as_u64().is_some_and(|n| n >= 2);
    subscriber
        .wait_for(Duration::from_secs(30), "a heartbeat showing a batch of two or more frames", |m| {
            m.iter().filter_map(|(_, p)| serde_json::from_slice::<Value>(p).ok()).any(|b| batched(&b))
        })
        .await;
    let (status, _) = daemon.terminate(Duration::from_secs(10));
    let log = daemon.log_text();
    assert!(status.success(), "{log}");
    let beats: Vec<Value> = subscriber.messages().iter().filter_map(|(_, p)| serde_json::from_slice(p).ok()).collect();
    let beat = beats.iter().rev().find(|b| batched(b)).unwrap();
    let models = beat["models"].as_array().unwrap();
    assert_eq!(models.len(), 1, "only the model a rule reads is loaded: {models:?}");
    let bins = &models[0];
    assert_eq!(
        (bins["name"].as_str(), bins["batch_limit"].as_u64(), bins["workers"].as_u64()),
        (Some("bins"), Some(4), Some(1))
    );
    assert!(bins["mean_batch"].as_f64().unwrap() > 1.0 && bins["largest_batch"].as_u64().unwrap() <= 3, "{bins}");
    assert!(bins["frames"].as_u64().unwrap() > bins["runs"].as_u64().unwrap(), "{bins}");
    for id in ["a", "b", "c"] {
        assert!(camera_in(beat, id)["frames_detected"].as_u64().unwrap() > 0, "{beat}");
    }
    assert!(!log.contains("model=squares"), "[model] is not loaded when no rule reads it:\n{log}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The end-to-end squares model (output `[1, K, 6]`, K varying) on a live camera that shows
/// nothing for 10 s and then a parked square: every empty frame is an output of no rows (which
/// once panicked the shared inference worker); the daemon stays up and reports the square.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_to_end_model_on_an_empty_street_stays_up_and_reports_the_square_that_comes() {
    let _serial = heavy().await;
    let dir = temp_dir("e2e-empty");
    let broker = Mosquitto::start();
    let camera = RtspServer::start(&cache("clips/empty_then_square.mp4"), None);
    let subscriber = Subscriber::start(broker.port, "fieldwatch/#").await;
    let config = daemon_config(&dir, broker.port, &scene_camera(&camera.url()));
    with_model(&config, &root().join("models/squares_e2e.onnx"));
    let mut daemon = Daemon::start(&config, &dir.join("daemon.log"));
    // The square comes after 10 s; its opened report waits 1 s more for its evidence clip.
    subscriber.wait_for_reports(1, Duration::from_secs(30)).await;
    assert!(daemon.wait_exit(Duration::from_millis(100)).is_none(), "the daemon died:\n{}", daemon.log_text());
    let (status, _) = daemon.terminate(Duration::from_secs(10));
    let log = daemon.log_text();
    assert!(status.success(), "{log}");
    assert!(!log.contains("detection failed"), "the empty frames were detected, not skipped:\n{log}");
    let reports = subscriber.json_on("cam-ok/reports");
    assert_eq!(reports[0]["event"], "opened", "{:?}", reports[0]["event"]);
    assert_eq!(reports[0]["objects"][0]["box"]["x1"], 300.0);
    // Opened about 3 s (dwell) after the square came at 10 s: the empty frames were run.
    let started = secs_between(&reports[0], "started_at", "observed_at");
    assert!((2.9..3.5).contains(&started), "{started}");
    std::fs::remove_dir_all(&dir).ok();
}
