//! Who may use the workbench: bound beyond loopback it needs a token, and then every page,
//! picture and change does; `/healthz` and `/metrics` stay open.

use crate::support::*;
use std::time::Duration;

const TOKEN: &str = "s3cret-workbench-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_the_workbench_needs_the_token_and_changes_need_the_csrf_token() {
    let dir = temp_dir("workbench");
    let http = free_port();
    // A camera that is not there: the daemon runs, backing off; the pages are what is tested.
    let camera = plain_camera("rtsp://127.0.0.1:9/none", "");
    let config = daemon_config_http(&dir, free_port(), "", &camera, Some(http));
    let text = std::fs::read_to_string(&config).unwrap().replace("127.0.0.1:", "0.0.0.0:");
    std::fs::write(&config, text).unwrap();

    let (code, out) = fieldwatch(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("http.token: required when http.listen (0.0.0.0:"), "{out}");
    let mut refused = Daemon::start(&config, &dir.join("refused.log"));
    let (status, _) = refused.wait_exit(Duration::from_secs(10)).expect("it refuses to start");
    assert_eq!(status.code(), Some(78), "{}", refused.log_text());

    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[http]\n", &format!("[http]\ntoken_file = \"{}\"\n", token_file.display()));
    std::fs::write(&config, text).unwrap();
    let mut daemon = Daemon::start(&config, &dir.join("daemon.log"));
    wait_listening(http, Duration::from_secs(10));

    for path in ["/", "/cameras/cam-1", "/cameras/cam-1/view.json", "/cameras/cam-1/frame.jpg"] {
        let (status, body) = http_get_bytes(http, path);
        assert_eq!(status, 401, "{path}");
        assert!(
            !body.starts_with(&[0xff, 0xd8]) && String::from_utf8_lossy(&body).contains("Token"),
            "{path}: the login form"
        );
    }
    assert_eq!(http_get(http, "/healthz").0, 200);
    assert_eq!(http_get(http, "/metrics").0, 200);

    let bearer = format!("Bearer {TOKEN}");
    let get = |path: &str, auth: &str| {
        http_request(
            http,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {auth}\r\n\r\n"),
        )
    };
    assert_eq!(get("/", "Bearer wrong-token-wrong-token").0, 401);
    let (status, index) = get("/", &bearer);
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&index).contains("data-camera=\"cam-1\""));
    let (status, page) = get("/cameras/cam-1", &bearer);
    assert_eq!(status, 200);
    let page = String::from_utf8_lossy(&page).into_owned();
    let csrf = page.split("name=\"csrf-token\" content=\"").nth(1).unwrap().split('"').next().unwrap().to_string();

    // The login form sets a cookie that opens the pages; the cookie is not the token.
    let form = format!("token={TOKEN}");
    let login = format!(
        "POST /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    let raw = {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", http)).unwrap();
        stream.write_all(login.as_bytes()).unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        raw
    };
    let cookie = raw.lines().find_map(|l| l.strip_prefix("set-cookie: ")).expect("a cookie").to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && !cookie.contains(TOKEN), "{cookie}");
    let session = cookie.split(';').next().unwrap();
    let (status, _) =
        http_request(http, &format!("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: {session}\r\n\r\n"));
    assert_eq!(status, 200);

    // A change needs the token and the page's CSRF token.
    let zone = r#"{"zone": "all", "polygon": [[0, 0], [1, 0], [1, 1]]}"#;
    assert_eq!(http_post(http, "/cameras/cam-1/zones", &[("X-CSRF-Token", &csrf)], zone).0, 401);
    assert_eq!(http_post(http, "/cameras/cam-1/zones", &[("Authorization", &bearer)], zone).0, 403);
    let (status, saved) =
        http_post(http, "/cameras/cam-1/zones", &[("Authorization", &bearer), ("X-CSRF-Token", &csrf)], zone);
    assert_eq!(status, 200, "{saved}");
    daemon.wait_log("reload taken", 1, Duration::from_secs(5)).await;
    assert!(daemon.log_text().contains("what=zone all"), "{}", daemon.log_text());
    // A mask: a new one, then the same one moved.
    let auth = [("Authorization", bearer.as_str()), ("X-CSRF-Token", csrf.as_str())];
    let mask = r#"{"polygon": [[0, 0], [0.2, 0], [0.2, 0.2]]}"#;
    assert_eq!(http_post(http, "/cameras/cam-1/masks", &auth, mask).0, 200);
    let moved = r#"{"mask": 1, "polygon": [[0.5, 0], [0.7, 0], [0.7, 0.2]]}"#;
    assert_eq!(http_post(http, "/cameras/cam-1/masks", &auth, moved).0, 200);
    let overlay = std::fs::read_to_string(dir.join("state/overlay.toml")).unwrap();
    assert!(overlay.contains("masks = [[[0.5, 0.0], [0.7, 0.0], [0.7, 0.2]]]"), "{overlay}");
    daemon.wait_log("reload taken", 3, Duration::from_secs(5)).await;
    assert!(daemon.log_text().contains("workbench login"));
    assert!(!daemon.log_text().contains(TOKEN), "the token is never logged");

    assert!(daemon.terminate(Duration::from_secs(10)).0.success());
    std::fs::remove_dir_all(&dir).ok();
}
