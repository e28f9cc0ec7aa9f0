//! No report is lost when the link drops: reports made while the broker is down wait in the
//! outbox on disk, survive the daemon being killed, and arrive, in order, once both are back.
//! A daemon killed while connected leaves its retained last will, `offline`.

use crate::support::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_made_during_a_broker_outage_survive_a_kill_and_arrive_in_order() {
    let _serial = heavy().await;
    let dir = temp_dir("delivery");
    let mut broker = Mosquitto::start();
    broker.stop(); // the port stays ours; nothing listens on it
    let camera = RtspServer::start(&cache("clips/scene.mp4"), None);
    let config = daemon_config(&dir, broker.port, &scene_camera(&format!("rtsp://127.0.0.1:{}/cam", camera.port)));

    // The incident opens and resolves while the broker is down; then the box loses power.
    let mut daemon = Daemon::start(&config, &dir.join("run1.log"));
    daemon.wait_log("report queued in the outbox", 2, Duration::from_secs(30)).await;
    daemon.proc.0.kill().unwrap(); // SIGKILL: no clean shutdown, nothing flushed on the way out
    daemon.proc.0.wait().unwrap();
    let (code, out) = fieldwatch(&["outbox", "--config", &config.display().to_string()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(": 2 report(s)"), "{out}");

    broker.restart();
    let subscriber = Subscriber::start(broker.port, "fieldwatch/#").await;
    let mut again = Daemon::start(&config, &dir.join("run2.log"));
    subscriber
        .wait_for(Duration::from_secs(20), "both reports", |m| {
            m.iter().filter(|(t, _)| t.ends_with("/reports")).count() >= 2
        })
        .await;
    // Killed while connected: the broker publishes the retained last will.
    again.proc.0.kill().unwrap();
    again.proc.0.wait().unwrap();
    subscriber
        .wait_for(Duration::from_secs(10), "the last will", |m| {
            m.iter().any(|(t, p)| t.ends_with("/status") && String::from_utf8_lossy(p).contains("connection lost"))
        })
        .await;
    let late = Subscriber::start(broker.port, "fieldwatch/edge-test/status").await;
    late.wait_for(Duration::from_secs(5), "the retained status", |m| !m.is_empty()).await;
    assert_eq!(late.json_on("/status")[0]["state"], "offline", "retained for whoever subscribes later");

    let reports = subscriber.json_on("edge-test/cam-ok/reports");
    let events: Vec<&str> = reports.iter().map(|r| r["event"].as_str().unwrap()).collect();
    let first = |e: &str| events.iter().position(|x| *x == e).unwrap_or_else(|| panic!("no {e} in {events:?}"));
    assert!(first("opened") < first("resolved"), "order kept: {events:?}");
    assert!(reports.iter().all(|r| r["incident_id"] == reports[0]["incident_id"]), "{events:?}");
    let validator = crate::e2e::validator();
    assert!(reports.iter().all(|r| validator.is_valid(r)));
    assert!(again.log_text().contains("report delivered"), "{}", again.log_text());
    std::fs::remove_dir_all(&dir).ok();
}

/// A broker that wants a password: the wrong one is reported clearly (and never logged), the
/// reports wait in the outbox, and they arrive once the right one, from a file, is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_reported_clearly_and_lose_nothing() {
    let _serial = heavy().await;
    let dir = temp_dir("delivery-auth");
    let broker = Mosquitto::start_with_users(&[("box", "right-pw"), ("ioc", "ioc-pw")]);
    let subscriber = Subscriber::start_as(broker.port, "fieldwatch/#", Some(("ioc", "ioc-pw"))).await;
    let camera = RtspServer::start(&cache("clips/scene.mp4"), None);
    let cameras = scene_camera(&format!("rtsp://127.0.0.1:{}/cam", camera.port));
    let password = dir.join("mqtt-password");

    std::fs::write(&password, "wrong-pw\n").unwrap();
    let mqtt = format!("username = \"box\"\npassword_file = \"{}\"", password.display());
    let config = daemon_config_with(&dir, broker.port, &mqtt, &cameras);
    let mut daemon = Daemon::start(&config, &dir.join("run1.log"));
    daemon.wait_log("report queued in the outbox", 2, Duration::from_secs(30)).await;
    let (status, _) = daemon.terminate(Duration::from_secs(10));
    let log = daemon.log_text();
    assert!(status.success(), "{log}");
    assert!(log.contains("the broker refused the connection: check mqtt.username and mqtt.password"), "{log}");
    assert!(!log.contains("wrong-pw"), "a password in the log");
    assert!(subscriber.json_on("/reports").is_empty());

    std::fs::write(&password, "right-pw\n").unwrap();
    let mut again = Daemon::start(&config, &dir.join("run2.log"));
    subscriber
        .wait_for(Duration::from_secs(20), "both reports", |m| {
            m.iter().filter(|(t, _)| t.ends_with("/reports")).count() >= 2
        })
        .await;
    assert!(again.terminate(Duration::from_secs(10)).0.success());
    let events: Vec<String> = subscriber
        .json_on("edge-test/cam-ok/reports")
        .iter()
        .map(|r| r["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events[..2], ["opened", "resolved"]);
    let status = subscriber.json_on("edge-test/status");
    assert_eq!(status.first().map(|s| s["state"].clone()), Some("online".into()), "{status:?}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Over TLS: a broker whose certificate is signed by a CA the daemon is given (certificates
/// made here with openssl) gets the reports; the test listens on the broker's plain listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_go_over_tls_to_a_broker_signed_by_the_configured_ca() {
    let dir = temp_dir("delivery-tls");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(&dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=fieldwatch test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    // mosquitto started as root reads its files as the `mosquitto` user.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o644)).unwrap();

    let (plain, tls) = (free_port(), free_port());
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "allow_anonymous true\npersistence false\nlistener {plain} 127.0.0.1\nlistener {tls} 127.0.0.1\ncafile {0}/ca.crt\ncertfile {0}/server.crt\nkeyfile {0}/server.key\n",
            dir.display()
        ),
    )
    .unwrap();
    let _broker = Proc(
        std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    for port in [plain, tls] {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < until, "mosquitto not listening on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let subscriber = Subscriber::start(plain, "fieldwatch/#").await;
    let mqtt = format!("ca_file = \"{}\"", dir.join("ca.crt").display());
    let config = daemon_config_with(&dir, tls, &mqtt, &scene_camera("rtsp://127.0.0.1:1/cam"));
    let clip = cache("clips/scene.mp4");
    let out = dir.join("out");
    let written =
        tokio::task::spawn_blocking(move || crate::replay::replay(&clip, &config, &out, &["--publish"])).await.unwrap();
    subscriber
        .wait_for(Duration::from_secs(10), "two reports over TLS", |m| {
            m.iter().filter(|(t, _)| t.ends_with("/reports")).count() >= 2
        })
        .await;
    let ids = |rs: &[serde_json::Value]| rs.iter().map(|r| r["report_id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&subscriber.json_on("/reports")), ids(&written));
    std::fs::remove_dir_all(&dir).ok();
}

/// The broker got a report but its PUBACK never came back (a relay withholds it), then the box
/// lost power: after the restart the report is sent again, so it is not lost on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_whose_puback_never_came_is_sent_again_after_a_restart() {
    let _serial = heavy().await;
    let dir = temp_dir("delivery-puback");
    let broker = Mosquitto::start();
    let thief = PubackThief::start(broker.port).await;
    let subscriber = Subscriber::start(broker.port, "fieldwatch/#").await;
    let camera = RtspServer::start(&cache("clips/scene.mp4"), None);
    let cameras = scene_camera(&format!("rtsp://127.0.0.1:{}/cam", camera.port));

    let through_thief = daemon_config(&dir, thief.port, &cameras);
    let mut daemon = Daemon::start(&through_thief, &dir.join("run1.log"));
    let opened = |m: &[(String, Vec<u8>)]| {
        m.iter().filter(|(t, p)| t.ends_with("/reports") && String::from_utf8_lossy(p).contains("\"opened\"")).count()
    };
    subscriber.wait_for(Duration::from_secs(20), "the opened report at the broker", |m| opened(m) >= 1).await;
    daemon.proc.0.kill().unwrap();
    daemon.proc.0.wait().unwrap();
    let (_, out) = fieldwatch(&["outbox", "--config", &through_thief.display().to_string()]);
    assert!(!out.contains(": 0 report(s)"), "no PUBACK, so still in the outbox: {out}");

    let direct = daemon_config(&dir, broker.port, &cameras);
    let mut again = Daemon::start(&direct, &dir.join("run2.log"));
    subscriber.wait_for(Duration::from_secs(15), "the opened report again", |m| opened(m) >= 2).await;
    assert!(again.terminate(Duration::from_secs(10)).0.success());
    let reports = subscriber.json_on("edge-test/cam-ok/reports");
    let first: Vec<&serde_json::Value> = reports.iter().filter(|r| r["event"] == "opened").collect();
    assert_eq!(first[0]["report_id"], first[1]["report_id"], "the same report, sent again");
    std::fs::remove_dir_all(&dir).ok();
}
