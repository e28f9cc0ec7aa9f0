//! The live view and zone editor in a real browser: Debian's headless chromium, driven over
//! WebDriver (see `webdriver`).

use crate::support::*;
use crate::webdriver::Browser;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Polls `check` every 100 ms until it holds; fails naming `what` after `within`.
fn until(what: &str, within: Duration, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The live page of a camera with three parked squares shows them as stationary tracks with
/// their class and the rule's zone (read from the DOM), and its frame changes within 2 s;
/// four clicks in the editor make exactly the expected polygon; saving it changes the running
/// rule (the page's next annotation and the next report use it) while the camera stays on its
/// first connection; a mask drawn and saved the same way shows on the page. A screenshot is
/// left in target/test-artefacts/live-view.png.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_shows_what_the_rules_see_and_its_editor_changes_the_running_zone() {
    let _serial = heavy_exclusive().await;
    let dir = temp_dir("browser");
    let broker = Mosquitto::start();
    let camera = RtspServer::start(&cache("clips/parked.mp4"), None);
    let http = free_port();
    let subscriber = Subscriber::start(broker.port, "fieldwatch/#").await;
    let url = format!("rtsp://127.0.0.1:{}/cam", camera.port);
    let config = daemon_config_http(&dir, broker.port, "", &scene_camera(&url), Some(http));
    let mut daemon = Daemon::start(&config, &dir.join("daemon.log"));
    wait_listening(http, Duration::from_secs(10));
    let browser = Browser::start(1280, 1000);
    browser.goto(&format!("http://127.0.0.1:{http}/cameras/cam-ok"));

    // The overlay is redrawn twice a second: it is read by scripts, each at one go.
    let parked = || {
        let css = r#"rect.track[data-class="red"][data-stationary="true"][data-rule="sidewalk"]"#;
        browser.script(&format!("return document.querySelectorAll('{css}').length")).as_u64().unwrap_or(0)
    };
    let zone = || {
        let css = r#"polygon.zone[data-zone="sidewalk"]"#;
        browser.script(&format!("const z = document.querySelector('{css}'); return z && z.dataset.polygon"))
    };
    until("three parked squares and the zone on the page", Duration::from_secs(15), || {
        parked() >= 3 && !zone().is_null()
    });
    assert_eq!(zone(), "[[0.25,0.5],[0.75,0.5],[0.75,1],[0.25,1]]");
    let frame = browser.find("#frame").unwrap();
    let shown = browser.attr(&frame, "data-at");
    assert!(shown.is_some(), "a frame is shown");
    until("a newer frame", Duration::from_secs(2), || browser.attr(&frame, "data-at") != shown);

    // The editor: name the zone (the rule's polygon loads), clear it, click four points.
    let name = browser.find("#zone-name").unwrap();
    browser.type_into(&name, "sidewalk\u{E007}");
    browser.click(&browser.find("#clear").unwrap());
    let overlay = browser.find("#overlay").unwrap();
    let (_, _, width, height) = browser.rect(&overlay);
    assert_eq!((width, height), (640.0, 360.0), "the clip's frame at its own size");
    for (x, y) in [(128, 198), (512, 198), (512, 342), (128, 342)] {
        browser.click_at(&overlay, x - 320, y - 180);
    }
    let expected = json!([[0.2, 0.55], [0.8, 0.55], [0.8, 0.95], [0.2, 0.95]]);
    let toml = browser.find("#toml").unwrap();
    let drawn: Value = serde_json::from_str(&browser.attr(&toml, "data-points").unwrap()).unwrap();
    assert_eq!(drawn, expected);

    let saved_at = Instant::now();
    browser.click(&browser.find("#save").unwrap());
    until("the save", Duration::from_secs(5), || browser.find(r#"#saved[data-result="saved"]"#).is_some());
    until("the running rule's new zone on the page", Duration::from_secs(3), || {
        zone() == "[[0.2,0.55],[0.8,0.55],[0.8,0.95],[0.2,0.95]]"
    });
    // A mask, drawn in the empty top-left corner and saved: the page shows it, numbered.
    browser.click(&browser.find("#kind").unwrap());
    browser.click(&browser.find(r#"#kind option[value="mask"]"#).unwrap());
    browser.click(&browser.find("#clear").unwrap());
    for (x, y) in [(16, 16), (96, 16), (96, 64)] {
        browser.click_at(&overlay, x - 320, y - 180);
    }
    browser.click(&browser.find("#save").unwrap());
    until("the mask saved", Duration::from_secs(5), || browser.find(r#"#saved[data-result="saved"]"#).is_some());
    let mask = || {
        browser
            .script("const m = document.querySelector('polygon.mask[data-mask=\"1\"]'); return m && m.dataset.polygon")
    };
    until("the mask on the page", Duration::from_secs(3), || mask() == "[[0.025,0.0444],[0.15,0.0444],[0.15,0.1778]]");

    let shot = browser.screenshot();
    let artefacts = root().join("target/test-artefacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    std::fs::write(artefacts.join("live-view.png"), &shot).unwrap();
    assert!(shot.starts_with(b"\x89PNG"), "a PNG screenshot");
    drop(browser);

    let (_, view) = http_get(http, "/cameras/cam-ok/view.json");
    let view: Value = serde_json::from_str(&view).unwrap();
    assert_eq!(view["connects"], 1, "{view:#}");
    let overlay_file = std::fs::read_to_string(dir.join("state/overlay.toml")).unwrap();
    assert!(overlay_file.contains("name = \"sidewalk\"") && overlay_file.contains("[0.2, 0.95]"), "{overlay_file}");

    // The next report (the fourth square's update, or the resolution) has the saved zone.
    let with_zone = |m: &[(String, Vec<u8>)]| {
        m.iter()
            .filter(|(t, _)| t.ends_with("/reports"))
            .any(|(_, p)| serde_json::from_slice::<Value>(p).is_ok_and(|r| r["zone"] == expected))
    };
    subscriber.wait_for(Duration::from_secs(15), "a report with the saved zone", with_zone).await;
    assert!(saved_at.elapsed() < Duration::from_secs(15));
    assert!(daemon.terminate(Duration::from_secs(10)).0.success());
    std::fs::remove_dir_all(&dir).ok();
}
