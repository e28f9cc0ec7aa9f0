//! The technician's workbench on the HTTP endpoint: the live view of each camera, the zone
//! editor, and who may use them.
//!
//! - `GET /`: the cameras, each with its state; `GET /cameras/{id}`: the live page (plain HTML,
//!   CSS and a little JavaScript embedded in the binary). It polls `view.json` and `frame.jpg`
//!   every 500 ms while open and draws boxes, tracks and zones itself over the picture.
//! - `POST /cameras/{id}/zones` (`{"zone": NAME, "polygon": [[x, y], …]}`) and
//!   `POST /cameras/{id}/masks` (`{"mask": N, "polygon": …}`, N from 1, absent for a new mask),
//!   with the page's CSRF token in `X-CSRF-Token`: the editor's save. The polygon goes into the
//!   overlay in the state directory, then the daemon reloads as on SIGHUP; the answer says what
//!   the reload made of it.
//! - Access: with `http.token`, every page, picture and change needs it, as `Authorization:
//!   Bearer TOKEN` or through `/login`, which sets an HttpOnly, SameSite=Strict cookie derived
//!   from it; both are compared in constant time. `/healthz` and `/metrics` stay open.

use crate::config::Secret;
use crate::telemetry::CameraList;
use sha2::Digest;
use std::path::PathBuf;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};

/// A change the workbench asks the daemon to load (the overlay was written), and where to say
/// how it went: the new config version, or every problem.
pub struct ReloadRequest {
    pub from: String,
    pub reply: oneshot::Sender<Result<String, Vec<String>>>,
}

/// What the workbench needs beside the health endpoint's own.
#[derive(Clone)]
pub struct Workbench {
    /// The token pages need; `None`: open (loopback only, as `check` enforces).
    pub token: Option<Secret>,
    /// The token every change must carry in `X-CSRF-Token`, new each start.
    pub csrf: String,
    /// Where saves go and how they are loaded; `None`: the editor only shows the TOML.
    pub edits: Option<Edits>,
}

#[derive(Clone)]
pub struct Edits {
    pub overlay: PathBuf,
    pub reloads: mpsc::Sender<ReloadRequest>,
}

/// The session cookie's name.
const COOKIE: &str = "fieldwatch_session";

impl Workbench {
    pub fn new(token: &Secret, edits: Option<Edits>) -> Self {
        let token = (!token.is_empty()).then(|| token.clone());
        Self { token, csrf: uuid::Uuid::new_v4().simple().to_string(), edits }
    }

    /// The cookie a login sets: derived from the token, so the token itself never travels again.
    fn session(token: &Secret) -> String {
        let digest = sha2::Sha256::digest(format!("fieldwatch session\0{}", token.expose()).as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether a request with these headers may see pages and make changes.
    pub fn allows(&self, authorization: Option<&str>, cookies: Option<&str>) -> bool {
        let Some(token) = &self.token else { return true };
        let same = |a: &str, b: &str| bool::from(a.as_bytes().ct_eq(b.as_bytes()));
        let bearer =
            authorization.and_then(|a| a.strip_prefix("Bearer ")).is_some_and(|t| same(t.trim(), token.expose()));
        let session = Self::session(token);
        let cookie = (cookies.unwrap_or_default().split(';'))
            .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .any(|value| same(value, &session));
        bearer || cookie
    }

    /// `Some(Set-Cookie value)` when `form` (`token=…`, URL-encoded) carries the token.
    pub fn login(&self, form: &str) -> Option<String> {
        let token = self.token.as_ref()?;
        let given = form.split('&').find_map(|kv| kv.strip_prefix("token="))?;
        let given = percent_encoding::percent_decode_str(&given.replace('+', " ")).decode_utf8_lossy().into_owned();
        bool::from(given.as_bytes().ct_eq(token.expose().as_bytes()))
            .then(|| format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", Self::session(token)))
    }

    pub fn csrf_ok(&self, header: Option<&str>) -> bool {
        header.is_some_and(|h| bool::from(h.as_bytes().ct_eq(self.csrf.as_bytes())))
    }

    /// The index: each of `cameras` with its state and a link to its live page.
    pub fn index(&self, cameras: &CameraList) -> String {
        let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let rows: String = (cameras.all().iter())
            .map(|(id, c)| {
                let id = escape(id);
                format!(
                    "<li><a href=\"/cameras/{id}\" data-camera=\"{id}\">{id}</a> <span class=\"state\">{}</span></li>",
                    c.connection_state(now_ms)
                )
            })
            .collect();
        page("fieldwatch", &format!("<h1>fieldwatch</h1><ul class=\"cameras\">{rows}</ul>"))
    }

    /// A camera's live page.
    pub fn camera_page(&self, id: &str) -> String {
        let editable = if self.edits.is_some() { "true" } else { "false" };
        LIVE_PAGE.replace("{{CAMERA}}", &escape(id)).replace("{{CSRF}}", &self.csrf).replace("{{EDITABLE}}", editable)
    }
}

/// The login form; `failed` after a wrong token.
pub fn login_page(failed: bool) -> String {
    let note = if failed { "<p class=\"error\">That is not the token.</p>" } else { "" };
    page(
        "fieldwatch: log in",
        &format!(
            "<h1>fieldwatch</h1>{note}<form method=\"post\" action=\"/login\"><label>Token \
             <input type=\"password\" name=\"token\" autofocus></label> <button>Log in</button></form>"
        ),
    )
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;margin:1em}}.error{{color:#b00}}</style></head><body>{body}</body></html>"
    )
}

/// `text` safe inside HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// A polygon the editor saves: zone `zone`, or mask number `mask`.
#[derive(Debug, serde::Deserialize)]
pub struct Edit {
    #[serde(default)]
    pub zone: String,
    /// The mask it replaces, counted from 1; absent (or past the last): a new mask.
    #[serde(default)]
    pub mask: Option<usize>,
    pub polygon: Vec<[f64; 2]>,
}

impl Edit {
    /// What is wrong with it (as a zone, or as a mask) before the config's own validation sees it.
    pub fn problem(&self, zone: bool) -> Option<String> {
        if zone && self.zone.trim().is_empty() {
            return Some("zone: a name is needed".into());
        }
        if self.polygon.len() < 3 {
            return Some("polygon: at least 3 points".into());
        }
        let outside = self.polygon.iter().flatten().any(|v| !(0.0..=1.0).contains(v));
        outside.then(|| "polygon: points are fractions of the frame, 0..1".into())
    }
}

const LIVE_PAGE: &str = include_str!("workbench/live.html");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_opens_by_header_or_by_the_cookie_a_login_sets_and_nothing_else_does() {
        let bench = Workbench::new(&Secret::new("0123456789abcdef-token"), None);
        assert!(bench.allows(Some("Bearer 0123456789abcdef-token"), None));
        assert!(!bench.allows(Some("Bearer 0123456789abcdef-tokeN"), None));
        assert!(!bench.allows(None, None));
        assert!(bench.login("token=wrong").is_none());
        let cookie = bench.login("token=0123456789abcdef-token").unwrap();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
        let value = cookie.split(';').next().unwrap();
        assert!(!value.contains("0123456789abcdef"), "the cookie is not the token: {value}");
        assert!(bench.allows(None, Some(&format!("other=1; {value}"))));
        assert!(!bench.allows(None, Some("fieldwatch_session=00")));
        let open = Workbench::new(&Secret::default(), None);
        assert!(open.allows(None, None));
        assert!(open.csrf_ok(Some(&open.csrf.clone())) && !open.csrf_ok(Some("x")) && !open.csrf_ok(None));
    }

    #[test]
    fn zone_edits_are_checked_before_they_are_saved() {
        let edit = |zone: &str, polygon: Vec<[f64; 2]>| Edit { zone: zone.into(), mask: None, polygon }.problem(true);
        assert_eq!(edit("z", vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]), None);
        assert!(edit("", vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]).is_some());
        assert!(edit("z", vec![[0.0, 0.0], [1.0, 0.0]]).is_some());
        assert!(edit("z", vec![[0.0, 0.0], [1.5, 0.0], [1.0, 1.0]]).is_some());
        let mask = Edit { zone: String::new(), mask: Some(1), polygon: vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]] };
        assert_eq!(mask.problem(false), None);
    }
}
