//! Real servers for the integration tests, each on a free port and stopped on drop:
//! mosquitto, GStreamer's RTSP server (scripts/rtsp_server.py), an MQTT subscriber, and the
//! daemon binary itself. Everything large comes from `scripts/setup` (the `.cache` folder).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The setup cache; tests fail with a clear message if `scripts/setup` has not run.
pub fn cache(rel: &str) -> PathBuf {
    let base = std::env::var_os("FIELDWATCH_CACHE").map(PathBuf::from).unwrap_or_else(|| root().join(".cache"));
    let p = base.join(rel);
    assert!(p.exists(), "{} is missing: run scripts/setup first", p.display());
    p
}

pub fn ort_library() -> PathBuf {
    cache("onnxruntime/libonnxruntime.so")
}

/// Turns for the end-to-end tests on the two cores. A test that plays clips in real time
/// against a daemon mostly waits, so two may run together ([`heavy`]); one whose timing
/// assertions, frame rates or CPU work (replays, several cameras, chromium, the person model)
/// would suffer from another beside it takes both turns ([`heavy_exclusive`],
/// [`heavy_blocking`]). The semaphore is fair: a test waiting for both turns is not overtaken.
static TURNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// One turn: a real-time test that may run beside another.
pub async fn heavy() -> Heavy {
    Heavy { _turn: TURNS.acquire().await.unwrap(), since: std::time::Instant::now() }
}

/// Both turns: a test that must run alone.
pub async fn heavy_exclusive() -> Heavy {
    Heavy { _turn: TURNS.acquire_many(2).await.unwrap(), since: std::time::Instant::now() }
}

/// [`heavy_exclusive`] for a plain `#[test]` whose CPU work (a replay, the person model) would
/// otherwise slow a real-time test running beside it.
pub fn heavy_blocking() -> Heavy {
    Heavy { _turn: futures::executor::block_on(TURNS.acquire_many(2)).unwrap(), since: std::time::Instant::now() }
}

/// A test's turn. With `FIELDWATCH_HEAVY_TIMES` set it says how long the turn was held
/// (what the suite's wall time is made of; `--report-time` counts the wait for it as well):
/// run with `--nocapture`.
pub struct Heavy {
    _turn: tokio::sync::SemaphorePermit<'static>,
    since: std::time::Instant,
}

impl Drop for Heavy {
    fn drop(&mut self) {
        if std::env::var_os("FIELDWATCH_HEAVY_TIMES").is_some() {
            let test = std::thread::current().name().unwrap_or("?").to_string();
            eprintln!("heavy turn: {:7.1} s {test}", self.since.elapsed().as_secs_f64());
        }
    }
}

/// The evidence settings of the tests' daemons: an opened report waits 1 s for its clip, not 5.
pub const TEST_EVIDENCE: &str = "[evidence]\npost_secs = 1.0\n";

/// Writes `dir/fieldwatch.toml` for the daemon: device `edge-test`, the squares model, the broker
/// on `mqtt_port`, clips as [`TEST_EVIDENCE`] says, then `cameras` (the `[[cameras]]` blocks of
/// the test).
pub fn daemon_config(dir: &Path, mqtt_port: u16, cameras: &str) -> PathBuf {
    daemon_config_with(dir, mqtt_port, "", cameras)
}

/// [`daemon_config`] with more `[mqtt]` keys (`mqtt`: lines of TOML).
pub fn daemon_config_with(dir: &Path, mqtt_port: u16, mqtt: &str, cameras: &str) -> PathBuf {
    daemon_config_http(dir, mqtt_port, mqtt, cameras, None)
}

/// [`daemon_config_with`] with the health and metrics endpoint on `http_port` (off without).
pub fn daemon_config_http(dir: &Path, mqtt_port: u16, mqtt: &str, cameras: &str, http_port: Option<u16>) -> PathBuf {
    let listen = http_port.map(|p| format!("127.0.0.1:{p}")).unwrap_or_default();
    let text = format!(
        "[device]\nid = \"edge-test\"\nstate_dir = \"{}\"\n\n[model]\npath = \"{}\"\nruntime = \"{}\"\n\n[mqtt]\nport = {mqtt_port}\n{mqtt}\n\n[http]\nlisten = \"{listen}\"\n\n[class_names.red]\nen = \"red square\"\nvi = \"ô vuông đỏ\"\n\n{TEST_EVIDENCE}\n{cameras}",
        dir.join("state").display(),
        root().join("models/squares.onnx").display(),
        ort_library().display(),
    );
    let path = dir.join("fieldwatch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Makes the config [`daemon_config`] wrote at `config` use `model` instead of the squares model.
pub fn with_model(config: &Path, model: &Path) {
    let squares = root().join("models/squares.onnx").display().to_string();
    let text = std::fs::read_to_string(config).unwrap().replace(&squares, &model.display().to_string());
    std::fs::write(config, text).unwrap();
}

/// The squares clips are plain grey pictures whose only structure comes and goes: to the
/// camera-health watch (see `health`), blocked or moved views. Their cameras go without it; the
/// health tests and the real street keep it.
pub const SYNTHETIC_HEALTH: &str = "[cameras.health]\nenabled = false\n";

/// The camera block for scene.mp4 (see scripts/make_clips): id `cam-ok`, detecting at 5 fps,
/// one rule on the lower middle of the frame for red squares, dwell 3 s, clear after 2 s. The
/// squares stop dead and vanish at once, so tracking is quick: stationary after 1 s, and a
/// vanished square is let go after 1 s (a street camera would coast much longer).
pub fn scene_camera(url: &str) -> String {
    format!(
        r#"
[[cameras]]
id = "cam-ok"
name = "Test Street"
location = "Le Loi / Nguyen Hue, north side"
url = "{url}"
detect_fps = 5
reconnect_min_secs = 60
reconnect_max_secs = 60

[cameras.tracking]
stationary_after_secs = 1
stationary_max_unseen_secs = 1

{SYNTHETIC_HEALTH}
[[cameras.zones]]
name = "sidewalk"
polygon = [[0.25, 0.5], [0.75, 0.5], [0.75, 1.0], [0.25, 1.0]]

[[cameras.rules]]
id = "sidewalk"
violation = "sidewalk_encroachment"
category = "urban_order"
zone = "sidewalk"
classes = ["red"]
min_score = 0.5
dwell_secs = 3
clear_after_secs = 2
"#
    )
}

/// Camera `cam-1` at `url` with one rule for red squares anywhere, plus `extra` camera keys:
/// for tests about the stream rather than the rules.
pub fn plain_camera(url: &str, extra: &str) -> String {
    format!(
        "\n[[cameras]]\nid = \"cam-1\"\nurl = \"{url}\"\n{extra}\n{SYNTHETIC_HEALTH}\n[[cameras.zones]]\nname = \"all\"\npolygon = [[0, 0], [1, 0], [1, 1]]\n[[cameras.rules]]\nid = \"sidewalk\"\nviolation = \"sidewalk_encroachment\"\nzone = \"all\"\nclasses = [\"red\"]\n"
    )
}

/// Seconds from `from` to `to`, two RFC 3339 fields of a report.
pub fn secs_between(report: &serde_json::Value, from: &str, to: &str) -> f64 {
    let t = |k: &str| chrono::DateTime::parse_from_rfc3339(report[k].as_str().unwrap()).unwrap();
    (t(to) - t(from)).as_seconds_f64()
}

/// Paints a solid `size` x `size` square with its top-left corner at (x, y).
pub fn paint_square(img: &mut image::RgbImage, x: u32, y: u32, size: u32, colour: image::Rgb<u8>) {
    for yy in y..y + size {
        for xx in x..x + size {
            img.put_pixel(xx, yy, colour);
        }
    }
}

/// `GET path` on 127.0.0.1:`port`: the status code and body (an HTTP/1.1 client of a few lines,
/// enough for the daemon's own endpoint).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let (status, body) = http_get_bytes(port, path);
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `GET path` on 127.0.0.1:`port`: the status code and the body's bytes.
pub fn http_get_bytes(port: u16, path: &str) -> (u16, Vec<u8>) {
    http_request(port, &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"))
}

/// `POST path` with `headers` and a JSON `body`: the status code and the body.
pub fn http_post(port: u16, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, bytes) = http_request(port, &request);
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Sends `request` as it is; the status code and the body's bytes.
pub fn http_request(port: u16, request: &str) -> (u16, Vec<u8>) {
    http_exchange(port, request, Duration::from_secs(10))
}

/// [`http_request`], waiting up to `patience` for each read. The answer is read to its
/// `Content-Length` (a server may keep the connection open whatever the request says), else to
/// the connection's end.
pub fn http_exchange(port: u16, request: &str, patience: Duration) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the server listens");
    stream.set_read_timeout(Some(patience)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let (mut response, mut chunk) = (Vec::new(), [0u8; 65536]);
    let mut read = |response: &mut Vec<u8>| {
        let n = stream.read(&mut chunk).unwrap();
        response.extend_from_slice(&chunk[..n]);
        n > 0
    };
    let head_end = loop {
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if !read(&mut response) {
            break response.len();
        }
    };
    let head = String::from_utf8_lossy(&response[..head_end]).to_ascii_lowercase();
    let length = head.lines().find_map(|l| l.strip_prefix("content-length:")?.trim().parse::<usize>().ok());
    while length.is_none_or(|length| response.len() < head_end + length) && read(&mut response) {}
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let end = length.map_or(response.len(), |length| (head_end + length).min(response.len()));
    (status, response[head_end..end].to_vec())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fieldwatch-{tag}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_listening(port: u16, within: Duration) {
    let until = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "nothing listening on {port} after {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Mosquitto {
    pub port: u16,
    dir: PathBuf,
    /// Extra lines for mosquitto.conf (authentication, ACLs).
    conf: String,
    proc: Option<Proc>,
}

impl Mosquitto {
    pub fn start() -> Self {
        Self::start_with_users(&[])
    }

    /// A broker that admits only `users` (name, password); anonymous if there are none.
    pub fn start_with_users(users: &[(&str, &str)]) -> Self {
        Self::start_with(users, "")
    }

    /// [`Mosquitto::start_with_users`] with more configuration after its listener's line
    /// (`extra`: e.g. TLS files for that listener, a second listener, an `acl_file`).
    pub fn start_with(users: &[(&str, &str)], extra: &str) -> Self {
        let dir = temp_dir("mosquitto");
        let mut conf = "allow_anonymous true\n".to_string();
        if !users.is_empty() {
            let passwords = dir.join("passwords");
            for (i, (user, password)) in users.iter().enumerate() {
                let mut cmd = Command::new("mosquitto_passwd");
                if i == 0 {
                    cmd.arg("-c");
                }
                let status = cmd.arg("-b").arg(&passwords).args([user, password]).status().expect("mosquitto_passwd");
                assert!(status.success());
            }
            conf = format!("allow_anonymous false\npassword_file {}\n", passwords.display());
        }
        conf.push_str(extra);
        let mut m = Mosquitto { port: free_port(), dir, conf, proc: None };
        m.restart();
        m
    }

    /// (Re)starts on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let conf = self.dir.join("mosquitto.conf");
        std::fs::write(&conf, format!("listener {} 127.0.0.1\npersistence false\n{}", self.port, self.conf)).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (run scripts/setup)");
        self.proc = Some(Proc(child));
        wait_listening(self.port, Duration::from_secs(10));
    }

    pub fn stop(&mut self) {
        self.proc.take();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct RtspServer {
    pub port: u16,
    _proc: Proc,
}

impl RtspServer {
    /// Serves `clip` at rtsp://127.0.0.1:PORT/cam on a free port, optionally behind basic auth.
    pub fn start(clip: &Path, auth: Option<(&str, &str)>) -> Self {
        Self::start_on(0, clip, auth)
    }

    /// The same on a given port (0 = pick one), e.g. to bring a camera back where it was.
    pub fn start_on(port: u16, clip: &Path, auth: Option<(&str, &str)>) -> Self {
        match auth {
            Some((u, p)) => Self::start_with(port, clip, &["--user", u, "--password", p]),
            None => Self::start_with(port, clip, &[]),
        }
    }

    /// With more of `rtsp_server.py`'s options (`--auth digest`, `--loss 0.05`).
    pub fn start_with(port: u16, clip: &Path, options: &[&str]) -> Self {
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(root().join("scripts/rtsp_server.py")).arg("--clip").arg(clip).args(["--port", &port.to_string()]);
        cmd.args(options);
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("python3 with gi (run scripts/setup)");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let port =
            line.trim().strip_prefix("PORT ").unwrap_or_else(|| panic!("rtsp server said {line:?}")).parse().unwrap();
        RtspServer { port, _proc: Proc(child) }
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: a camera that hangs without closing.
    pub fn freeze(&self, frozen: bool) {
        let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        unsafe { libc::kill(self._proc.0.id() as i32, signal) };
    }
}

/// A `[[cameras]]` block: camera `id` at `url` with `extra` keys, one rule for red squares.
pub fn camera_block(id: &str, url: &str, extra: &str) -> String {
    plain_camera(url, extra).replacen("id = \"cam-1\"", &format!("id = \"{id}\""), 1)
}

/// The heartbeat's entry for camera `id` in `beat`.
pub fn camera_in<'a>(beat: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    let cameras = beat["cameras"].as_array().expect("a heartbeat lists its cameras");
    cameras.iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no camera {id} in {beat}"))
}

/// (topic, payload) in arrival order.
pub type Messages = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A real MQTT subscriber collecting every message under `filter`.
pub struct Subscriber {
    pub messages: Messages,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub async fn start(port: u16, filter: &str) -> Self {
        Self::start_as(port, filter, None).await
    }

    /// A subscriber logged in as `user` (name, password).
    pub async fn start_as(port: u16, filter: &str, user: Option<(&str, &str)>) -> Self {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
        let mut opts = MqttOptions::new(format!("test-{}", uuid::Uuid::new_v4()), "127.0.0.1", port);
        opts.set_max_packet_size(16 << 20, 16 << 20);
        if let Some((name, password)) = user {
            opts.set_credentials(name, password);
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 16);
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (sink, (ready_tx, ready_rx)) = (messages.clone(), tokio::sync::oneshot::channel());
        let task = tokio::spawn(async move {
            let _client = client;
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        sink.lock().unwrap().push((p.topic.clone(), p.payload.to_vec()))
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx).await.expect("subscribed").unwrap();
        Subscriber { messages, task }
    }

    /// Every message so far, (topic, payload), in the order they arrived.
    pub fn messages(&self) -> Vec<(String, Vec<u8>)> {
        self.messages.lock().unwrap().clone()
    }

    pub fn json_on(&self, topic_suffix: &str) -> Vec<serde_json::Value> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t.ends_with(topic_suffix))
            .map(|(_, p)| serde_json::from_slice(p).expect("JSON payload"))
            .collect()
    }

    /// Waits until `pred` holds for the messages so far.
    pub async fn wait_for(&self, within: Duration, what: &str, pred: impl Fn(&[(String, Vec<u8>)]) -> bool) {
        let until = Instant::now() + within;
        loop {
            if pred(&self.messages.lock().unwrap()) {
                return;
            }
            assert!(Instant::now() < until, "timed out after {within:?} waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `n` reports (messages on `…/reports`) have arrived.
    pub async fn wait_for_reports(&self, n: usize, within: Duration) {
        let what = format!("{n} reports");
        self.wait_for(within, &what, |m| m.iter().filter(|(t, _)| t.ends_with("/reports")).count() >= n).await
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The daemon binary, its log captured to a file.
pub struct Daemon {
    pub proc: Proc,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path, log: &Path) -> Self {
        Self::start_with_env(config, log, &[])
    }

    pub fn start_with_env(config: &Path, log: &Path, env: &[(&str, &str)]) -> Self {
        let out = std::fs::File::create(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_fieldwatch"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .env_remove("ORT_DYLIB_PATH")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Daemon { proc: Proc(child), log: log.to_path_buf() }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has at least `n` lines containing `needle`.
    pub async fn wait_log(&self, needle: &str, n: usize, within: Duration) {
        let until = Instant::now() + within;
        while self.log_text().lines().filter(|l| l.contains(needle)).count() < n {
            assert!(Instant::now() < until, "no {n}x {needle:?} in the log after {within:?}:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the daemon to exit by itself; `None` if it is still running after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<(std::process::ExitStatus, Duration)> {
        let started = Instant::now();
        while started.elapsed() < within {
            if let Some(status) = self.proc.0.try_wait().unwrap() {
                return Some((status, started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends SIGTERM and returns the exit status and how long the daemon took to stop.
    pub fn terminate(&mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        unsafe { libc::kill(self.proc.0.id() as i32, libc::SIGTERM) };
        loop {
            if let Some(status) = self.proc.0.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            assert!(started.elapsed() < within, "daemon still running {within:?} after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs the binary to completion: (exit code, stdout + stderr).
pub fn fieldwatch(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fieldwatch")).args(args).env_remove("ORT_DYLIB_PATH").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// A loopback relay in front of a broker that passes everything but withholds every PUBACK
/// from the broker: the client's reports reach the broker, but it never hears so.
pub struct PubackThief {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl PubackThief {
    pub async fn start(broker_port: u16) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(broker) = tokio::net::TcpStream::connect(("127.0.0.1", broker_port)).await else { continue };
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut broker_rx, mut broker_tx) = broker.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_rx, &mut broker_tx).await;
                });
                tokio::spawn(async move {
                    // Broker → client, packet by packet: fixed header, remaining length, body.
                    loop {
                        let mut first = [0u8; 1];
                        if broker_rx.read_exact(&mut first).await.is_err() {
                            return;
                        }
                        let (mut len, mut shift, mut header) = (0usize, 0, vec![first[0]]);
                        loop {
                            let mut b = [0u8; 1];
                            if broker_rx.read_exact(&mut b).await.is_err() {
                                return;
                            }
                            header.push(b[0]);
                            len |= ((b[0] & 0x7f) as usize) << shift;
                            shift += 7;
                            if b[0] & 0x80 == 0 {
                                break;
                            }
                        }
                        let mut body = vec![0u8; len];
                        if broker_rx.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        if first[0] >> 4 == 4 {
                            continue; // PUBACK: withheld
                        }
                        header.extend_from_slice(&body);
                        if client_tx.write_all(&header).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        PubackThief { port, task }
    }
}

impl Drop for PubackThief {
    fn drop(&mut self) {
        self.task.abort();
    }
}
