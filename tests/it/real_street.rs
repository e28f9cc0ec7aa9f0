//! Real streets: darknet's COCO YOLOv3-tiny (converted by models/darknet2onnx.py from the MIT
//! weights scripts/setup fetches) on real photos and footage, and the evidence clips of what it
//! finds, replayed and live.
//!
//! The footage is OpenCV's vtest.avi (first 40 s, re-encoded as H.264 with a keyframe every
//! second: .cache/clips/vtest.mp4): a fixed CCTV view over a pedestrian street. Watching it
//! (frames every 5 s, and the top right at 3x), a white van and a light-blue car stand parked
//! on the paving in front of the building at the top right the whole time, and only people walk
//! through. The test zone "frontage" is that paving (x 0.80-1.0, y 0.08-0.22); the rule takes
//! COCO's vehicles, not `person`. The boxes below were read off those frames by hand.

use crate::support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A box in pixels: (x1, y1, x2, y2).
type Rect = (f64, f64, f64, f64);

/// By hand from vtest's frames (768x576): the white van and the light-blue car, cut by the
/// frame's right edge.
const VAN: Rect = (652.0, 45.0, 724.0, 100.0);
const CAR: Rect = (735.0, 50.0, 768.0, 92.0);
/// By hand from darknet's dog.jpg: the bicycle, and the pickup truck behind it.
const BICYCLE: Rect = (125.0, 140.0, 568.0, 420.0);
const PICKUP: Rect = (467.0, 75.0, 685.0, 170.0);

fn coco() -> PathBuf {
    cache("models/coco-yolov3-tiny.onnx")
}

fn darknet(file: &str) -> PathBuf {
    cache("models/darknet").join(file)
}

pub fn vtest() -> PathBuf {
    cache("clips/vtest.mp4")
}

fn bbox(v: &Value) -> Rect {
    let f = |k: &str| v[k].as_f64().unwrap();
    (f("x1"), f("y1"), f("x2"), f("y2"))
}

fn iou(a: Rect, b: Rect) -> f64 {
    let w = (a.2.min(b.2) - a.0.max(b.0)).max(0.0);
    let h = (a.3.min(b.3) - a.1.max(b.1)).max(0.0);
    let area = |r: Rect| (r.2 - r.0) * (r.3 - r.1);
    w * h / (area(a) + area(b) - w * h)
}

fn within(inner: Rect, outer: Rect, slack: f64) -> bool {
    inner.0 >= outer.0 - slack && inner.1 >= outer.1 - slack && inner.2 <= outer.2 + slack && inner.3 <= outer.3 + slack
}

#[test]
fn the_converter_gives_the_same_bytes_every_run_and_agrees_with_opencv() {
    let _serial = heavy_blocking();
    let dir = temp_dir("darknet");
    let mut made = Vec::new();
    for run in ["a", "b"] {
        let out = dir.join(format!("{run}.onnx"));
        let status = Command::new(root().join("scripts/darknet2onnx"))
            .args(["--cfg", darknet("yolov3-tiny.cfg").to_str().unwrap()])
            .args(["--weights", darknet("yolov3-tiny.weights").to_str().unwrap()])
            .args(["--names", darknet("coco.names").to_str().unwrap()])
            .args(["--out", out.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success());
        made.push(std::fs::read(&out).unwrap());
    }
    assert!(made[0] == made[1], "two conversions differ");
    assert!(made[0] == std::fs::read(coco()).unwrap(), "the setup's model is not what the converter makes");

    // OpenCV's own darknet reader on the original cfg and weights, against our ONNX through
    // onnxruntime: darknet's four photos and four frames of each real clip.
    let images = ["dog", "person", "kite", "horses"].map(|i| cache(&format!("images/{i}.jpg")));
    let out = Command::new(cache("venv/bin/python"))
        .arg(root().join("models/check_darknet.py"))
        .args(["--onnx", coco().to_str().unwrap()])
        .args(["--cfg", darknet("yolov3-tiny.cfg").to_str().unwrap()])
        .args(["--weights", darknet("yolov3-tiny.weights").to_str().unwrap()])
        .args(["--clip", vtest().to_str().unwrap(), "--clip", cache("footage/bikes.mp4").to_str().unwrap()])
        .args(&images)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let result: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(result["images"], 12, "{result}");
    assert!(result["max_box_diff"].as_f64().unwrap() <= 1e-4, "{result}");
    assert!(result["max_score_diff"].as_f64().unwrap() <= 1e-4, "{result}");
    assert!(result["confident"].as_u64().unwrap() >= 20, "the images hold objects: {result}");
}

#[test]
fn detect_finds_the_bicycle_and_the_truck_in_dog_jpg() {
    let dir = temp_dir("coco-detect");
    let config = daemon_config(&dir, 1, &plain_camera("rtsp://127.0.0.1:9/none", ""));
    with_model(&config, &coco());
    // As darknet reports: every class over the score on a box (the pickup is car and truck).
    let text = std::fs::read_to_string(&config).unwrap().replace("[model]\n", "[model]\nmulti_label = true\n");
    std::fs::write(&config, text).unwrap();
    let dog = cache("images/dog.jpg");
    let out = dir.join("annotated");
    let (code, text) = fieldwatch(&[
        "detect",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        dog.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    let json: Value = serde_json::from_str(&text[text.find('[').unwrap()..=text.rfind(']').unwrap()]).unwrap();
    let found: Vec<(&str, Rect)> = json[0]["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["label"].as_str().unwrap(), bbox(&d["bbox"])))
        .collect();
    assert!(found.iter().any(|(l, b)| *l == "bicycle" && iou(*b, BICYCLE) > 0.6), "{found:?}");
    assert!(found.iter().any(|(l, b)| *l == "truck" && within(*b, PICKUP, 5.0)), "{found:?}");
    assert!(found.iter().any(|(l, _)| *l == "dog"), "{found:?}");
    assert!(out.join("dog.detections.jpg").exists());
}

/// The camera block for vtest: the frontage rule, COCO vehicles, and `extra` keys.
pub fn street_camera(url: &str, extra: &str) -> String {
    format!(
        r#"
[[cameras]]
id = "cam-ok"
name = "Real Street"
url = "{url}"
{extra}

[[cameras.zones]]
name = "frontage"
polygon = [[0.80, 0.08], [1.0, 0.08], [1.0, 0.22], [0.80, 0.22]]

[[cameras.rules]]
id = "frontage"
violation = "sidewalk_encroachment"
zone = "frontage"
classes = ["motorcycle", "bicycle", "car", "truck"]
min_score = 0.4
threshold = 0.45
dwell_secs = 5
clear_after_secs = 5
"#
    )
}

pub fn street_config(dir: &Path, mqtt_port: u16, evidence: &str, camera: &str, http: Option<u16>) -> PathBuf {
    let config = daemon_config_http(dir, mqtt_port, "", camera, http);
    with_model(&config, &coco());
    let text = std::fs::read_to_string(&config).unwrap().replace(TEST_EVIDENCE, &format!("[evidence]\n{evidence}\n"));
    std::fs::write(&config, text).unwrap();
    config
}

/// A video's packets in file order: (bytes, keyframe, pts in seconds).
fn packets(path: &Path) -> Vec<(Vec<u8>, bool, f64)> {
    use ffmpeg_next as ff;
    ff::init().unwrap();
    let mut input = ff::format::input(path).unwrap();
    let stream = input.streams().best(ff::media::Type::Video).unwrap();
    let (index, base) = (stream.index(), f64::from(stream.time_base()));
    input
        .packets()
        .filter(|(s, _)| s.index() == index)
        .map(|(_, p)| (p.data().unwrap().to_vec(), p.is_key(), p.pts().unwrap() as f64 * base))
        .collect()
}

/// ffprobe's reading of a clip: codec, frames, duration.
fn probe(path: &Path) -> (String, u64, f64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_packets", "-show_entries", "stream=codec_name,nb_read_packets:format=duration"])
        .args(["-of", "json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe cannot read {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stream = &v["streams"][0];
    (
        stream["codec_name"].as_str().unwrap().to_string(),
        stream["nb_read_packets"].as_str().unwrap().parse().unwrap(),
        v["format"]["duration"].as_str().unwrap().parse().unwrap(),
    )
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn secs(report: &Value, key: &str) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(report[key].as_str().unwrap()).unwrap()
}

/// The incident of the frontage: the van and the car, as watched.
fn assert_parked_van_and_car(opened: &Value) {
    let objects: Vec<(&str, Rect)> =
        opened["objects"].as_array().unwrap().iter().map(|o| (o["class"].as_str().unwrap(), bbox(&o["box"]))).collect();
    assert_eq!(objects.len(), 2, "{objects:?}");
    assert!(objects.iter().any(|(c, b)| *c == "truck" && iou(*b, VAN) > 0.3), "the van: {objects:?}");
    assert!(objects.iter().any(|(c, b)| *c == "car" && iou(*b, CAR) > 0.3), "the car: {objects:?}");
}

#[test]
fn a_replayed_real_street_gives_the_parked_vehicles_with_their_clip() {
    let _serial = heavy_blocking();
    let dir = temp_dir("street-replay");
    // A clip of at most 6 s, ending 3 s after the opening: with the vehicles there from the
    // first frame, max_secs decides where it starts.
    let evidence = "pre_secs = 2.0\npost_secs = 3.0\nmax_secs = 6.0";
    let config = street_config(&dir, 1, evidence, &street_camera("rtsp://127.0.0.1:9/none", "detect_fps = 1"), None);
    let out = dir.join("out");
    let reports = crate::replay::replay_any(&vtest(), &config, &out);

    // As watched: one incident, opened once the dwell was reached, never resolved (they stay).
    let events: Vec<&str> = reports.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["opened"], "{reports:?}");
    let opened = &reports[0];
    assert_parked_van_and_car(opened);
    assert_eq!((secs(opened, "opened_at") - secs(opened, "started_at")).as_seconds_f64(), 5.0);

    let evidence = &opened["evidence"];
    let file = out.join(format!("{}.mp4", opened["report_id"].as_str().unwrap()));
    assert_eq!(evidence["url"], format!("/evidence/{}.mp4", opened["report_id"].as_str().unwrap()));
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(evidence["bytes"], bytes.len());
    assert_eq!(evidence["sha256"], sha256(&bytes));
    let (codec, frames, duration) = probe(&file);
    assert_eq!(codec, "h264");
    // 6 s from the keyframe at or before its start (a keyframe every second: 1 GOP more at most).
    assert!((6.0..=7.1).contains(&duration), "{duration} s");
    assert_eq!(frames as f64, (duration * 10.0).round(), "10 fps");
    assert_eq!(evidence["duration_secs"].as_f64().unwrap(), duration);

    // Its packets are the source's, byte for byte, from a keyframe; it covers the opening.
    let clip = packets(&file);
    let source = packets(&vtest());
    assert!(clip[0].1, "it starts with a keyframe");
    let at = source.iter().position(|p| p.0 == clip[0].0).expect("its first packet is one of the source's");
    assert!(source[at..at + clip.len()].iter().map(|p| &p.0).eq(clip.iter().map(|p| &p.0)), "packets differ");
    let clip_start = secs(evidence, "start");
    assert_eq!((clip_start - secs(opened, "started_at")).as_seconds_f64(), source[at].2);
    let opened_offset = (secs(opened, "opened_at") - clip_start).as_seconds_f64();
    assert!(opened_offset > 0.0 && opened_offset + 3.0 <= duration + 0.1, "{opened_offset} in {duration}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_real_street_serves_its_clip_with_the_token_only() {
    let _serial = heavy_exclusive().await;
    let dir = temp_dir("street-live");
    let broker = Mosquitto::start();
    let camera = RtspServer::start(&vtest(), None);
    let http = free_port();
    let tracking = "detect_fps = 2\n\n[cameras.tracking]\nstationary_after_secs = 1";
    let street = street_camera(&camera.url(), tracking).replace("dwell_secs = 5", "dwell_secs = 3");
    let config = street_config(&dir, broker.port, "pre_secs = 2.0\npost_secs = 2.0", &street, Some(http));
    const TOKEN: &str = "clips-need-this-token";
    let text = std::fs::read_to_string(&config).unwrap().replace("[http]\n", &format!("[http]\ntoken = \"{TOKEN}\"\n"));
    std::fs::write(&config, text).unwrap();

    let subscriber = Subscriber::start(broker.port, "fieldwatch/#").await;
    let mut daemon = Daemon::start(&config, &dir.join("daemon.log"));
    subscriber
        .wait_for(Duration::from_secs(40), "an opened report", |m| m.iter().any(|(t, _)| t.ends_with("/reports")))
        .await;
    let reports = subscriber.json_on("edge-test/cam-ok/reports");
    let opened = &reports[0];
    assert_eq!(opened["event"], "opened");
    assert_parked_van_and_car(opened);
    let evidence = &opened["evidence"];
    let url = evidence["url"].as_str().unwrap_or_else(|| panic!("no clip: {}", daemon.log_text()));

    // Without the token: refused, and no video in the answer.
    let (status, body) = http_get_bytes(http, url);
    assert_eq!(status, 401);
    assert!(!body.windows(4).any(|w| w == b"ftyp"));
    let (status, mp4) = http_request(
        http,
        &format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"),
    );
    assert_eq!(status, 200);
    assert_eq!(evidence["sha256"], sha256(&mp4));
    let file = dir.join("clip.mp4");
    std::fs::write(&file, &mp4).unwrap();
    assert_eq!(std::fs::read(dir.join("state/evidence").join(url.trim_start_matches("/evidence/"))).unwrap(), mp4);
    let (codec, _, duration) = probe(&file);
    assert_eq!(codec, "h264");

    // From the stream's first keyframe (the vehicles were there from the start, so the span
    // reaches back before it) to 2 s after the opening, within a frame.
    let clip = packets(&file);
    assert!(clip[0].1, "it starts with a keyframe");
    let end = (secs(opened, "opened_at") - secs(evidence, "start")).as_seconds_f64() + 2.0;
    assert!((duration - end).abs() <= 0.2, "{duration} s, expected {end} s");
    // The camera's own pictures: every slice of the clip is the source's, in order (the RTSP
    // server re-packetises, so only the framing and the parameter sets around them differ).
    let slices = |packets: &[(Vec<u8>, bool, f64)]| -> Vec<Vec<u8>> {
        packets.iter().flat_map(|(data, _, _)| nal_units(data)).filter(|n| matches!(n[0] & 0x1f, 1 | 5)).collect()
    };
    let (ours, theirs) = (slices(&clip), slices(&packets(&vtest())));
    let at = theirs.iter().position(|s| *s == ours[0]).expect("the first slice is the source's");
    assert!(theirs[at..].starts_with(&ours), "slices differ");
    daemon.terminate(Duration::from_secs(10));

    // The technician's listing names it.
    let (code, listing) = fieldwatch(&["outbox", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{listing}");
    assert!(listing.contains(&format!("{} bytes, written", mp4.len())) && listing.contains(url), "{listing}");
}

/// The NAL units of a length-prefixed (MP4) H.264 sample.
fn nal_units(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        out.push(data[4..4 + len].to_vec());
        data = &data[4 + len..];
    }
    out
}

/// The first picture of a video as 8-bit luma (ffmpeg), with its width.
fn first_luma(path: &Path) -> (Vec<u8>, usize) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (out.stdout, 768)
}

#[test]
fn a_camera_with_privacy_masks_gets_a_clip_only_re_encoded_with_them_pixelated() {
    let _serial = heavy_blocking();
    let dir = temp_dir("street-masked");
    // The windows of the building at the top left are private.
    let mask = "privacy_masks = [[[0.05, 0.0], [0.35, 0.0], [0.35, 0.12], [0.05, 0.12]]]";
    let camera = street_camera("rtsp://127.0.0.1:9/none", &format!("detect_fps = 1\n{mask}"));
    let spans = "pre_secs = 1.0\npost_secs = 1.0\nmax_secs = 3.0";
    for run in ["plain", "masked"] {
        std::fs::create_dir_all(dir.join(run)).unwrap();
    }
    let plain = street_config(&dir.join("plain"), 1, spans, &camera, None);
    let reports = crate::replay::replay_any(&cache("clips/vtest_12s.mp4"), &plain, &dir.join("plain/out"));
    assert_eq!(reports.len(), 1);
    assert!(reports[0].get("evidence").is_none(), "no clip of an unmasked camera's video");

    let masked = street_config(&dir.join("masked"), 1, &format!("{spans}\nreencode = true"), &camera, None);
    let out = dir.join("masked/out");
    let reports = crate::replay::replay_any(&cache("clips/vtest_12s.mp4"), &masked, &out);
    let evidence = &reports[0]["evidence"];
    let file = out.join(evidence["url"].as_str().unwrap().trim_start_matches("/evidence/"));
    assert_eq!(evidence["sha256"], sha256(&std::fs::read(&file).unwrap()));
    let (codec, _, duration) = probe(&file);
    assert_eq!(codec, "h264");
    assert!((3.0..=4.1).contains(&duration), "{duration} s");

    // Inside the mask, each 16-pixel block is flat; the source is not, there.
    let (clip, width) = first_luma(&file);
    let (source, _) = first_luma(&vtest());
    let spread = |luma: &[u8], x: usize, y: usize| {
        let block: Vec<u8> = (y..y + 16).flat_map(|r| luma[r * width + x..r * width + x + 16].to_vec()).collect();
        block.iter().max().unwrap() - block.iter().min().unwrap()
    };
    // Blocks wholly inside the mask (x 38..268, y 0..69 of 768x576).
    let inside: Vec<(usize, usize)> = (48..256).step_by(16).flat_map(|x| [0, 16, 32].map(|y| (x, y))).collect();
    let flat = inside.iter().filter(|&&(x, y)| spread(&clip, x, y) <= 12).count();
    assert!(flat * 10 >= inside.len() * 9, "{flat} of {} blocks flat", inside.len());
    let textured = inside.iter().filter(|&&(x, y)| spread(&source, x, y) > 30).count();
    assert!(textured * 2 >= inside.len(), "the source has detail there: {textured} of {}", inside.len());
    // Outside it, the picture is kept: the van is still there to see.
    assert!(spread(&clip, 672, 64) > 30);
}
