//! The few WebDriver commands the browser test needs, spoken to Debian's chromedriver on
//! loopback with headless chromium. (fantoccini would bring 34 crates — icu, time, Mozilla's
//! webdriver — for the eleven commands used here, and the suite's build time is budgeted.)

use crate::support::{Proc, free_port, http_exchange, wait_listening};
use base64::Engine;
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::Duration;

/// W3C WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless chromium session; closed, and its driver stopped, when dropped.
pub struct Browser {
    port: u16,
    session: String,
    _driver: Proc,
    /// Chromium's profile, removed at the end.
    profile: std::path::PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless chromium of `width`x`height` CSS pixels at scale 1.
    pub fn start(width: u32, height: u32) -> Self {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/setup installs chromium-driver)");
        let driver = Proc(driver);
        wait_listening(port, Duration::from_secs(10));
        let profile = crate::support::temp_dir("chromium");
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--force-device-scale-factor=1".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        }}});
        let created = request(port, "POST", "/session", Some(&capabilities));
        let session = created["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}")).to_string();
        Self { port, session, _driver: driver, profile }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let answer = request(self.port, method, &format!("/session/{}{path}", self.session), body.as_ref());
        if let Some(error) = answer.get("error") {
            panic!("WebDriver {method} {path}: {error}: {}", answer["message"]);
        }
        answer
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// The elements `css` selects now.
    fn find_all(&self, css: &str) -> Vec<String> {
        let found = self.call("POST", "/elements", Some(json!({ "using": "css selector", "value": css })));
        (found.as_array().into_iter().flatten()).filter_map(|e| e[ELEMENT].as_str().map(str::to_string)).collect()
    }

    pub fn find(&self, css: &str) -> Option<String> {
        self.find_all(css).into_iter().next()
    }

    pub fn attr(&self, element: &str, name: &str) -> Option<String> {
        self.call("GET", &format!("/element/{element}/attribute/{name}"), None).as_str().map(str::to_string)
    }

    /// (x, y, width, height) in CSS pixels.
    pub fn rect(&self, element: &str) -> (f64, f64, f64, f64) {
        let r = self.call("GET", &format!("/element/{element}/rect"), None);
        let n = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        (n("x"), n("y"), n("width"), n("height"))
    }

    /// What `js` (a function body) returns, run in the page at one go: reading elements the page
    /// redraws (the overlay, twice a second) this way never finds one that has just been replaced.
    pub fn script(&self, js: &str) -> Value {
        self.call("POST", "/execute/sync", Some(json!({ "script": js, "args": [] })))
    }

    pub fn click(&self, element: &str) {
        self.call("POST", &format!("/element/{element}/click"), Some(json!({})));
    }

    /// A left click `dx`, `dy` CSS pixels from `element`'s centre.
    pub fn click_at(&self, element: &str, dx: i64, dy: i64) {
        let actions = json!({ "actions": [{
            "type": "pointer", "id": "mouse", "parameters": { "pointerType": "mouse" },
            "actions": [
                { "type": "pointerMove", "duration": 0, "origin": { ELEMENT: element }, "x": dx, "y": dy },
                { "type": "pointerDown", "button": 0 },
                { "type": "pointerUp", "button": 0 },
            ],
        }]});
        self.call("POST", "/actions", Some(actions));
    }

    pub fn type_into(&self, element: &str, text: &str) {
        self.call("POST", &format!("/element/{element}/value"), Some(json!({ "text": text })));
    }

    /// The page as PNG.
    /// The page's console messages since the last call: (level, text).
    pub fn console(&self) -> Vec<(String, String)> {
        let logged = self.call("POST", "/se/log", Some(json!({ "type": "browser" })));
        (logged.as_array().into_iter().flatten())
            .map(|m| (m["level"].as_str().unwrap_or_default().to_string(), m["message"].to_string()))
            .collect()
    }

    pub fn screenshot(&self) -> Vec<u8> {
        let shot = self.call("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD.decode(shot.as_str().unwrap_or_default()).unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closes chromium; the driver is killed after (Proc).
        request(self.port, "DELETE", &format!("/session/{}", self.session), None);
        std::fs::remove_dir_all(&self.profile).ok();
    }
}

/// One WebDriver call: its answer's `value`.
fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (_, payload) = http_exchange(port, &request, Duration::from_secs(60));
    let parsed: Value = serde_json::from_slice(&payload)
        .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}: {}", String::from_utf8_lossy(&payload)));
    parsed.get("value").cloned().unwrap_or(parsed)
}
