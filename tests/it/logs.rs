//! Logs as operators read them: plain text with journald priority prefixes under systemd, JSON
//! lines with `log.format = "json"`, and never a credential, even at trace level with every
//! library's own logging on.

use crate::support::*;
use base64::Engine;
use std::time::Duration;

const CAMERA_USER: &str = "viewer";
const CAMERA_PASSWORD: &str = "p@ss:w/rd%1";
const MQTT_USER: &str = "edge";
const MQTT_PASSWORD: &str = "mqtt-s3cret!";

/// Every form a password could leak in: as is, percent-encoded (in a URL), and inside the
/// base64 of `user:password` (HTTP basic authorization).
fn leaks(log: &str) -> Vec<String> {
    let encoded = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    let basic = |u: &str, p: &str| base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
    [
        CAMERA_PASSWORD.to_string(),
        encoded(CAMERA_PASSWORD),
        basic(CAMERA_USER, CAMERA_PASSWORD),
        MQTT_PASSWORD.to_string(),
        encoded(MQTT_PASSWORD),
        basic(MQTT_USER, MQTT_PASSWORD),
    ]
    .into_iter()
    .filter(|secret| log.contains(secret.as_str()))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_hold_no_credential_in_text_for_the_journal_or_in_json() {
    let _serial = heavy().await;
    let dir = temp_dir("logs");
    let broker = Mosquitto::start_with_users(&[(MQTT_USER, MQTT_PASSWORD)]);
    let camera = RtspServer::start(&cache("clips/scene.mp4"), Some((CAMERA_USER, CAMERA_PASSWORD)));
    let password = percent_encoding::utf8_percent_encode(CAMERA_PASSWORD, percent_encoding::NON_ALPHANUMERIC);
    let url = format!("rtsp://{CAMERA_USER}:{password}@127.0.0.1:{}/cam", camera.port);
    let mqtt = format!("username = \"{MQTT_USER}\"\npassword = \"{MQTT_PASSWORD}\"\nheartbeat_secs = 1");
    let config = daemon_config_with(&dir, broker.port, &mqtt, &plain_camera(&url, "detect_fps = 5"));

    // Under systemd: text lines, each with the journal's priority prefix.
    let journal = [("RUST_LOG", "trace"), ("JOURNAL_STREAM", "8:12345")];
    let mut daemon = Daemon::start_with_env(&config, &dir.join("journal.log"), &journal);
    daemon.wait_log("rtsp playing", 1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, _) = daemon.terminate(Duration::from_secs(10));
    let log = daemon.log_text();
    assert!(status.success(), "{log}");
    assert!(log.lines().count() > 100, "trace level logs a lot:\n{log}");
    assert_eq!(leaks(&log), Vec::<String>::new(), "credentials in the trace log");
    let unprefixed: Vec<&str> = log.lines().filter(|l| !l.starts_with('<')).take(3).collect();
    assert!(unprefixed.is_empty(), "every line has a priority prefix: {unprefixed:?}");
    assert!(log.lines().any(|l| l.starts_with("<6>") && l.contains("rtsp playing")), "info is <6>");
    assert!(log.lines().any(|l| l.starts_with("<7>")), "debug and trace are <7>");

    // JSON lines, one object each, with the camera's span fields.
    let json_config = std::fs::read_to_string(&config).unwrap().replace("[http]", "[log]\nformat = \"json\"\n\n[http]");
    std::fs::write(&config, json_config).unwrap();
    let mut daemon = Daemon::start_with_env(&config, &dir.join("json.log"), &[("RUST_LOG", "trace")]);
    daemon.wait_log("rtsp playing", 1, Duration::from_secs(20)).await;
    let (status, _) = daemon.terminate(Duration::from_secs(10));
    let log = daemon.log_text();
    assert!(status.success(), "{log}");
    assert_eq!(leaks(&log), Vec::<String>::new(), "credentials in the JSON log");
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
    }
    assert!(log.lines().any(|l| l.contains("rtsp playing") && l.contains("\"camera\":\"cam-1\"")), "{log}");
    std::fs::remove_dir_all(&dir).ok();
}
