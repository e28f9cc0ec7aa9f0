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
    subscriber.wait_for_reports(2, Duration::from_secs(20)).await;
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

/// SIGTERM while the broker is unreachable: the daemon stops within its deadline (the
/// publisher does not wait for a broker that is not there) and the report it made is on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_broker_outage_is_quick_and_keeps_the_pending_report() {
    let _serial = heavy_exclusive().await;
    let dir = temp_dir("stop-outage");
    let mut broker = Mosquitto::start();
    broker.stop();
    let camera = RtspServer::start(&cache("clips/scene.mp4"), None);
    let config = daemon_config(&dir, broker.port, &scene_camera(&format!("rtsp://127.0.0.1:{}/cam", camera.port)));
    let mut daemon = Daemon::start(&config, &dir.join("daemon.log"));
    daemon.wait_log("report queued in the outbox", 1, Duration::from_secs(30)).await;
    let (status, took) = daemon.terminate(Duration::from_secs(10));
    let log = daemon.log_text();
    assert!(status.success() && took < Duration::from_secs(5), "exit {status:?} after {took:?}:\n{log}");
    assert!(log.contains("stopped"), "{log}");
    let (code, out) = fieldwatch(&["outbox", "--config", &config.display().to_string()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(": 1 report(s)"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A broker as an IOC runs it (TLS with our CA, passwords, an ACL): the wrong password is
/// reported clearly (and never logged), the reports wait in the outbox, and they arrive once
/// the right one, from a file, is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_reported_clearly_and_lose_nothing() {
    let _serial = heavy().await;
    let dir = temp_dir("delivery-auth");
    let plain = free_port();
    let (broker, mqtt) = secured_broker(&dir, plain, true);
    let subscriber = Subscriber::start_as(plain, "fieldwatch/#", Some(("ioc", "ioc-pw"))).await;
    let camera = RtspServer::start(&cache("clips/scene.mp4"), None);
    let cameras = scene_camera(&format!("rtsp://127.0.0.1:{}/cam", camera.port));
    let password = dir.join("mqtt-password");

    std::fs::write(&password, "wrong-pw\n").unwrap();
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
    subscriber.wait_for_reports(2, Duration::from_secs(20)).await;
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

/// Over TLS and MQTT 3.1.1: a broker whose certificate is signed by a CA the daemon is given
/// (certificates made here with openssl) gets the reports; the test listens on the broker's
/// plain listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_go_over_tls_to_a_broker_signed_by_the_configured_ca() {
    let dir = temp_dir("delivery-tls");
    make_certs(&dir);
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
    // Over MQTT 3.1.1 too: both protocol versions deliver.
    let mqtt = format!("ca_file = \"{}\"\nprotocol = \"3.1.1\"", dir.join("ca.crt").display());
    let config = daemon_config_with(&dir, tls, &mqtt, &scene_camera("rtsp://127.0.0.1:1/cam"));
    let clip = cache("clips/scene.mp4");
    let out = dir.join("out");
    let written =
        tokio::task::spawn_blocking(move || crate::replay::replay(&clip, &config, &out, &["--publish"])).await.unwrap();
    subscriber.wait_for_reports(2, Duration::from_secs(10)).await;
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
    assert!(out.contains(": 1 report(s) waiting"), "no PUBACK, so still in the outbox: {out}");

    let direct = daemon_config(&dir, broker.port, &cameras);
    let mut again = Daemon::start(&direct, &dir.join("run2.log"));
    subscriber.wait_for(Duration::from_secs(15), "the opened report again", |m| opened(m) >= 2).await;
    assert!(again.terminate(Duration::from_secs(10)).0.success());
    let reports = subscriber.json_on("edge-test/cam-ok/reports");
    let first: Vec<&serde_json::Value> = reports.iter().filter(|r| r["event"] == "opened").collect();
    assert_eq!(first[0]["report_id"], first[1]["report_id"], "the same report, sent again");
    std::fs::remove_dir_all(&dir).ok();
}

/// A CA, and a certificate for `localhost` signed by it, made with openssl in `dir`: `ca.crt`,
/// `server.crt`, `server.key`.
fn make_certs(dir: &std::path::Path) {
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
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
}

/// A broker as an IOC runs it: TLS on its main port with a certificate signed by our CA,
/// passwords, and an ACL that lets the box write its status and heartbeat and, if
/// `reports_allowed`, its reports; a plain listener on `plain` for the test's subscriber
/// (`ioc`). Returns the broker and the `[mqtt]` keys that reach it as `box`, with the password
/// in `password_file`.
fn secured_broker(dir: &std::path::Path, plain: u16, reports_allowed: bool) -> (Mosquitto, String) {
    make_certs(dir);
    write_acl(dir, reports_allowed);
    let tls = format!(
        "cafile {0}/ca.crt\ncertfile {0}/server.crt\nkeyfile {0}/server.key\nacl_file {0}/acl\nlistener {plain} 127.0.0.1\n",
        dir.display()
    );
    let broker = Mosquitto::start_with(&[("box", "right-pw"), ("ioc", "ioc-pw")], &tls);
    wait_listening(plain, Duration::from_secs(10));
    let mqtt = format!(
        "ca_file = \"{}\"\nusername = \"box\"\npassword_file = \"{}\"\nheartbeat_secs = 1",
        dir.join("ca.crt").display(),
        dir.join("mqtt-password").display()
    );
    (broker, mqtt)
}

fn write_acl(dir: &std::path::Path, reports_allowed: bool) {
    let mut acl =
        "user box\ntopic write fieldwatch/edge-test/status\ntopic write fieldwatch/edge-test/heartbeat\n".to_string();
    if reports_allowed {
        acl.push_str("topic write fieldwatch/edge-test/+/reports\n");
    }
    acl.push_str("user ioc\ntopic read fieldwatch/#\n");
    std::fs::write(dir.join("acl"), acl).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("acl"), std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// MQTT 5: a broker whose ACL denies the reports' topic says so in its PUBACK. Each report is
/// tried a few times, then kept as a dead letter with the broker's reason (in the log, the
/// heartbeat and `fieldwatch outbox`); it does not hold up the queue, and once the ACL is fixed
/// `fieldwatch outbox --requeue` sends it, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_the_acl_denies_become_dead_letters_with_the_reason_and_can_be_requeued() {
    let _serial = heavy().await;
    let dir = temp_dir("delivery-acl");
    let plain = free_port();
    let (mut broker, mqtt) = secured_broker(&dir, plain, false);
    std::fs::write(dir.join("mqtt-password"), "right-pw\n").unwrap();
    let subscriber = Subscriber::start_as(plain, "fieldwatch/#", Some(("ioc", "ioc-pw"))).await;
    let camera = RtspServer::start(&cache("clips/scene.mp4"), None);
    let config =
        daemon_config_with(&dir, broker.port, &mqtt, &scene_camera(&format!("rtsp://127.0.0.1:{}/cam", camera.port)));
    let outbox = |extra: &[&str]| {
        let config = config.display().to_string();
        let mut args = vec!["outbox", "--config", &config];
        args.extend_from_slice(extra);
        let (code, out) = fieldwatch(&args);
        assert_eq!(code, 0, "{out}");
        out
    };

    let mut daemon = Daemon::start(&config, &dir.join("run1.log"));
    daemon.wait_log("kept as a dead letter", 2, Duration::from_secs(40)).await;
    subscriber
        .wait_for(Duration::from_secs(5), "a heartbeat counting both dead letters", |m| {
            m.iter().any(|(t, p)| {
                t.ends_with("/heartbeat")
                    && serde_json::from_slice::<serde_json::Value>(p).is_ok_and(|b| b["outbox"]["dead_letters"] == 2)
            })
        })
        .await;
    assert!(daemon.terminate(Duration::from_secs(10)).0.success());
    let log = daemon.log_text();
    assert!(log.contains("not authorized (0x87)"), "{log}");
    assert!(subscriber.json_on("/reports").is_empty(), "denied, so nothing reached the IOC");
    assert!(!subscriber.json_on("edge-test/status").is_empty(), "the status topic is allowed");
    let out = outbox(&[]);
    assert!(out.contains(": 0 report(s) waiting") && out.contains("2 dead letter(s)"), "{out}");
    assert_eq!(out.matches("not authorized (0x87) (topic fieldwatch/edge-test/cam-ok/reports)").count(), 2, "{out}");

    write_acl(&dir, true);
    broker.restart(); // forgets subscriptions: a new subscriber
    wait_listening(plain, Duration::from_secs(10));
    let subscriber = Subscriber::start_as(plain, "fieldwatch/#", Some(("ioc", "ioc-pw"))).await;
    assert!(outbox(&["--requeue"]).contains("2 dead letter(s) put back in the queue"));
    let mut again = Daemon::start(&config, &dir.join("run2.log"));
    subscriber.wait_for_reports(2, Duration::from_secs(20)).await;
    assert!(again.terminate(Duration::from_secs(10)).0.success());
    let reports = subscriber.json_on("edge-test/cam-ok/reports");
    let events: Vec<&str> = reports.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(events[..2], ["opened", "resolved"], "in their order");
    let validator = crate::e2e::validator();
    assert!(reports.iter().all(|r| validator.is_valid(r)));
    assert!(outbox(&[]).contains("0 dead letter(s)"));
    std::fs::remove_dir_all(&dir).ok();
}
