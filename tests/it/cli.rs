//! The command line as IT staff meet it: `check` lists every mistake with its key path and
//! exits 78; `run` refuses the same config with the same code (systemd does not restart on 78),
//! and a missing or broken runtime or model is a clear error naming its key, never a panic.

use crate::support::*;

fn write(dir: &std::path::Path, text: &str) -> String {
    let p = dir.join("c.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn good(runtime: &str, model: &str) -> String {
    format!(
        r#"
[device]
id = "edge-1"
state_dir = "/tmp/fieldwatch-cli-state"
[model]
path = "{model}"
runtime = "{runtime}"
[[cameras]]
id = "cam-1"
url = "rtsp://127.0.0.1:1/cam"
[[cameras.zones]]
name = "sidewalk"
polygon = [[0.1, 0.5], [0.9, 0.5], [0.9, 1.0]]
[[cameras.rules]]
id = "sidewalk"
violation = "sidewalk_encroachment"
zone = "sidewalk"
classes = ["red"]
"#
    )
}

fn paths() -> (String, String) {
    (ort_library().display().to_string(), root().join("models/squares.onnx").display().to_string())
}

#[test]
fn check_reports_three_mistakes_at_once_with_their_paths() {
    let dir = temp_dir("cli");
    let (runtime, model) = paths();
    let bad = good(&runtime, &model)
        .replace("[mqtt]", "")
        .replace("id = \"cam-1\"", "id = \"cam-1\"\ndetect_fps = \"fast\"")
        .replace("[device]", "[device]\ncolour = \"blue\"")
        .replace("classes = [\"red\"]", "classes = [\"red\"]\nmin_score = 1.5");
    let config = write(&dir, &bad);
    for command in ["check", "run"] {
        let (code, out) = fieldwatch(&[command, "--config", &config]);
        assert_eq!(code, 78, "{command}: {out}");
        assert!(out.contains("3 problem(s)"), "{command}: {out}");
        assert!(out.contains("device.colour: unknown key"), "{out}");
        assert!(out.contains("cameras[0].detect_fps: invalid type: string \"fast\""), "{out}");
        assert!(out.contains("cameras[0].rules[0].min_score: 1.5 is outside 0..=1"), "{out}");
    }
    let (code, out) = fieldwatch(&["check", "--config", &write(&dir, &good(&runtime, &model))]);
    assert_eq!(code, 0, "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn environment_overrides_the_file() {
    let dir = temp_dir("cli-env");
    let (runtime, model) = paths();
    let config = write(&dir, &good(&runtime, &model));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fieldwatch"))
        .args(["check", "--config", &config])
        .env("FIELDWATCH__MQTT__PORT", "0")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(text.contains("mqtt.port: must be 1..=65535"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_or_broken_runtime_and_model_are_clear_errors() {
    let dir = temp_dir("cli-missing");
    let (runtime, model) = paths();
    let (code, out) = fieldwatch(&["run", "--config", &write(&dir, &good("/nonexistent/libonnxruntime.so", &model))]);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("model.runtime: no such file: /nonexistent/libonnxruntime.so"), "{out}");

    let (code, out) = fieldwatch(&["run", "--config", &write(&dir, &good(&runtime, "/nonexistent/model.onnx"))]);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("model.path: no such file: /nonexistent/model.onnx"), "{out}");

    // Files that exist but are not what they claim: caught when loading, with the key named,
    // by `check` as by `run`.
    let junk = dir.join("junk.bin");
    std::fs::write(&junk, b"not a library").unwrap();
    for command in ["check", "run"] {
        let (code, out) = fieldwatch(&[command, "--config", &write(&dir, &good(&junk.display().to_string(), &model))]);
        assert_eq!(code, 78, "{command}: {out}");
        assert!(out.contains("model.runtime: cannot load ONNX Runtime"), "{command}: {out}");
        let (code, out) =
            fieldwatch(&[command, "--config", &write(&dir, &good(&runtime, &junk.display().to_string()))]);
        assert_eq!(code, 78, "{command}: {out}");
        assert!(out.contains("model.path: cannot load model"), "{command}: {out}");
        assert!(!out.contains("panicked"), "{out}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn check_and_run_refuse_a_rule_class_the_model_lacks() {
    let dir = temp_dir("cli-classes");
    let (runtime, model) = paths();
    let config = write(&dir, &good(&runtime, &model).replace("[\"red\"]", "[\"red\", \"motorbike\"]"));
    for command in ["check", "run"] {
        let (code, out) = fieldwatch(&[command, "--config", &config]);
        assert_eq!(code, 78, "{command}: {out}");
        assert!(out.contains("cameras[0].rules[0].classes[1]: \"motorbike\" is not a class of the model"), "{out}");
        assert!(!out.contains("panicked"), "{out}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn out_of_range_durations_are_config_errors_with_their_keys() {
    let dir = temp_dir("cli-durations");
    let (runtime, model) = paths();
    let bad = good(&runtime, &model)
        .replace("[device]", "[mqtt]\nkeep_alive_secs = 70000\n[device]")
        .replace("url = ", "reconnect_max_secs = 1e20\nurl = ")
        .replace("classes = [\"red\"]", "classes = [\"red\"]\ndwell_secs = 1e300\nclear_after_secs = -1");
    let (code, out) = fieldwatch(&["check", "--config", &write(&dir, &bad)]);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("4 problem(s)"), "{out}");
    for key in [
        "mqtt.keep_alive_secs: 70000 must be 0 (off) or 5..=65535",
        "cameras[0].reconnect_max_secs: 100000000000000000000 must be above 0 and at most 3600",
        "cameras[0].rules[0].dwell_secs:",
        "cameras[0].rules[0].clear_after_secs: -1 must be above 0",
    ] {
        assert!(out.contains(key), "{key} missing from\n{out}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A technician trying a model on photos needs no cameras in the config; names may come from a
/// labels file.
#[test]
fn detect_writes_json_and_annotated_copies() {
    let dir = temp_dir("cli-detect");
    let (runtime, model) = paths();
    let labels = dir.join("labels.txt");
    std::fs::write(&labels, "rouge\nvert\n").unwrap();
    let text =
        format!("[model]\npath = \"{model}\"\nruntime = \"{runtime}\"\nlabels_file = \"{}\"\n", labels.display());
    let config = write(&dir, &text);
    let (code, out) = fieldwatch(&["check", "--config", &config]);
    assert!(
        code == 78 && out.contains("cameras: at least one camera is required"),
        "run and check need cameras: {out}"
    );
    let mut img = image::RgbImage::from_pixel(400, 300, image::Rgb([40, 40, 40]));
    for (x0, y0, colour) in [(50u32, 60u32, [250u8, 10, 10]), (250, 150, [10, 250, 10])] {
        paint_square(&mut img, x0, y0, 60, image::Rgb(colour));
    }
    let photo = dir.join("scene.jpg");
    img.save(&photo).unwrap();
    let out_dir = dir.join("out");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fieldwatch"))
        .args(["detect", "--config", &config, "--out", &out_dir.display().to_string(), &photo.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let labels: Vec<&str> =
        json[0]["detections"].as_array().unwrap().iter().map(|d| d["label"].as_str().unwrap()).collect();
    assert_eq!(labels.len(), 2, "{json}");
    assert!(labels.contains(&"rouge") && labels.contains(&"vert"), "{json}");
    assert!(json[0]["detections"][0]["score"].as_f64().unwrap() > 0.9, "{json}");
    let annotated = image::open(out_dir.join("scene.detections.jpg")).unwrap().to_rgb8();
    assert_eq!(annotated.dimensions(), (400, 300));
    std::fs::remove_dir_all(&dir).ok();
}

/// The systemd unit is hardened: `systemd-analyze security` rates it 2.0 or better.
#[test]
fn the_service_unit_is_rated_2_or_better_by_systemd_analyze() {
    let unit = root().join("systemd/fieldwatch.service");
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (scripts/setup installs systemd)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let level: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for fieldwatch.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no rating in:\n{text}"));
    assert!(level <= 2.0, "exposure {level}:\n{text}");
}
