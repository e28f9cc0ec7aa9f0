//! `fieldwatch replay --report`: the tuning report of a clip with planted near misses
//! (tuning.mp4, see scripts/make_clips), checked against separate replays, and rendered in
//! headless Chromium; `--overlay` replays with a box's changes.

use crate::support::*;
use std::path::{Path, PathBuf};

const START: &str = "2026-11-28T10:00:00+07:00";

/// Camera `cam-ok` for tuning.mp4: rule `sidewalk` (red, threshold 0.9, at most 2% of the
/// frame, dwell 3 s) on the lower middle with a mask over its left part, and rule `pair` (two
/// red squares at once) on the top-left corner.
fn tuning_camera() -> String {
    format!(
        r#"
[[cameras]]
id = "cam-ok"
url = "rtsp://127.0.0.1:1/cam"
detect_fps = 5
masks = [[[0.25, 0.5], [0.35, 0.5], [0.35, 1.0], [0.25, 1.0]]]

[cameras.tracking]
stationary_after_secs = 1
stationary_max_unseen_secs = 1

{SYNTHETIC_HEALTH}
[[cameras.zones]]
name = "sidewalk"
polygon = [[0.25, 0.5], [0.75, 0.5], [0.75, 1.0], [0.25, 1.0]]

[[cameras.zones]]
name = "kerb"
polygon = [[0.0, 0.0], [0.25, 0.0], [0.25, 0.5], [0.0, 0.5]]

[[cameras.rules]]
id = "sidewalk"
violation = "sidewalk_encroachment"
zone = "sidewalk"
classes = ["red"]
min_score = 0.5
threshold = 0.9
max_area = 0.02
dwell_secs = 3
clear_after_secs = 2
cooldown_secs = 0

[[cameras.rules]]
id = "pair"
violation = "obstacle"
zone = "kerb"
classes = ["red"]
min_count = 2
dwell_secs = 3
clear_after_secs = 2
cooldown_secs = 0
"#
    )
}

fn tuning_config(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    daemon_config(dir, 1883, &tuning_camera())
}

/// Replays tuning.mp4 with `config`, writing the report to `report` if given; the summary line.
fn replay(config: &Path, out: &Path, extra: &[&str]) -> String {
    let (clip, config, out) = (cache("clips/tuning.mp4"), config.display().to_string(), out.display().to_string());
    let clip = clip.display().to_string();
    let mut args = vec!["replay", &clip, "--config", &config, "--camera", "cam-ok", "--out", &out, "--start", START];
    args.extend_from_slice(extra);
    let (code, text) = fieldwatch(&args);
    assert_eq!(code, 0, "{text}");
    text
}

/// The what-if table of rule `rule` in `html`: incidents by (dwell, threshold) as the page
/// shows them.
fn what_if(html: &str, rule: &str) -> Vec<(String, String, usize)> {
    let section = html.split(&format!("id=\"rule-{rule}\"")).nth(1).unwrap();
    let table = section.split("<table class=\"what-if\">").nth(1).unwrap().split("</table>").next().unwrap();
    let text = |cell: &str| cell.split('>').nth(1).unwrap().split('<').next().unwrap().to_string();
    let mut rows = table.split("<tr>").skip(1);
    let heads: Vec<String> = rows.next().unwrap().split("<th").skip(2).map(text).collect();
    rows.flat_map(|row| {
        let dwell = text(row.split("<th").nth(1).unwrap());
        let cells: Vec<usize> = row.split("<td").skip(1).map(|c| text(c).parse().unwrap()).collect();
        heads.clone().into_iter().zip(cells).map(move |(threshold, n)| (dwell.clone(), threshold, n))
    })
    .collect()
}

/// The near misses of rule `rule` in `html`: (reason, text).
fn near_misses(html: &str, rule: &str) -> Vec<(String, String)> {
    let section = html.split(&format!("id=\"rule-{rule}\"")).nth(1).unwrap().split("</section>").next().unwrap();
    section
        .split("<div class=\"miss\" data-reason=\"")
        .skip(1)
        .map(|m| (m.split('"').next().unwrap().to_string(), m.split("<p>").nth(1).unwrap().to_string()))
        .collect()
}

#[test]
fn the_tuning_report_shows_incidents_near_misses_and_a_what_if_table_that_replays_agree_with() {
    let _turn = heavy_exclusive();
    let dir = temp_dir("tuning");
    let config = tuning_config(&dir);
    let report = dir.join("report.html");
    let text = replay(&config, &dir.join("out"), &["--report", &report.display().to_string()]);
    assert!(text.contains("incidents 1,") && text.contains("tuning report written to"), "{text}");
    let html = std::fs::read_to_string(&report).unwrap();

    // The incident: the square at (250,290) opens 3 s after it stood still, and clears.
    let sidewalk = html.split("id=\"rule-sidewalk\"").nth(1).unwrap();
    assert!(sidewalk.contains("<td>1</td><td>4.0</td><td>0</td><td>11.0 (clear)</td><td>1</td>"), "{sidewalk:.2000}");
    assert!(html.split("id=\"rule-pair\"").nth(1).unwrap().contains("None opened."));

    // One near miss for each planted reason, and nothing else: the squares far from a rule's
    // zone are no near miss of it.
    let mut reasons: Vec<String> = near_misses(&html, "sidewalk").into_iter().map(|(r, _)| r).collect();
    reasons.sort();
    assert_eq!(reasons, ["area", "dwell", "masked", "outside_zone", "threshold"], "{reasons:?}");
    let said = |rule: &str, reason: &str| {
        near_misses(&html, rule).into_iter().find(|(r, _)| r == reason).map(|(_, text)| text).unwrap()
    };
    assert!(said("sidewalk", "threshold").contains("median score 0.83 under the threshold 0.90"));
    assert!(said("sidewalk", "dwell").contains("dwell short by"));
    assert!(said("sidewalk", "area").contains("failed min_area/max_area"));
    assert!(said("sidewalk", "masked").contains("masks"));
    assert!(said("sidewalk", "outside_zone").contains("zone &quot;sidewalk&quot;"));
    let pair: Vec<(String, String)> = near_misses(&html, "pair");
    assert_eq!(pair.len(), 1, "{pair:?}");
    assert!(pair[0].1.contains("min_count not reached: 1 dwelled at once, 2 needed"), "{pair:?}");
    // Each with its picture, and its box on it.
    assert_eq!(html.matches("<image href=\"data:image/jpeg;base64,").count(), 6);

    // Self-contained: nothing to fetch.
    for attribute in ["src=\"", "href=\""] {
        for value in html.split(attribute).skip(1) {
            assert!(value.starts_with("data:"), "{attribute}{:.60}", value);
        }
    }
    assert!(!html.contains("<script") && !html.contains("<link"));
    // Plots drawn by plotters, histogram lines labelled.
    assert!(html.contains("threshold 0.90") && html.contains("min_score 0.50"));

    // The what-if table agrees with replays at those values.
    let table = what_if(&html, "sidewalk");
    assert_eq!(table.len(), 15, "{table:?}");
    let cell = |dwell: &str, threshold: &str| {
        table.iter().find(|(d, t, _)| d == dwell && t == threshold).map(|(_, _, n)| *n).unwrap()
    };
    assert_eq!(cell("3.0 s", "0.90"), 1, "as set: {table:?}");
    // A cell of it replayed for real: the lower threshold as a box's overlay would set it (a
    // remote change), with --overlay over the same config.
    let overlay = dir.join("remote-overlay.toml");
    std::fs::write(&overlay, "[[cameras]]\nid = \"cam-ok\"\n[[cameras.rules]]\nid = \"sidewalk\"\nthreshold = 0.8\n")
        .unwrap();
    let text = replay(&config, &dir.join("out-overlay"), &["--overlay", &overlay.display().to_string()]);
    assert!(text.contains(&format!("incidents {},", cell("3.0 s", "0.80"))), "threshold 0.8 by the overlay: {text}");
    let missing = dir.join("no-such-overlay.toml").display().to_string();
    let clip = cache("clips/tuning.mp4").display().to_string();
    let args =
        ["replay", &clip, "--config", &config.display().to_string(), "--camera", "cam-ok", "--overlay", &missing];
    let (code, text) = fieldwatch(&args);
    assert_eq!(code, 78, "{text}");
    assert!(text.contains("no such overlay file"), "{text}");
    // The lower threshold admits the oblong square (0.83): one more incident.
    assert_eq!(cell("3.0 s", "0.80"), 2, "{table:?}");

    // It renders in a real browser without a console error.
    let browser = crate::webdriver::Browser::start(1000, 800);
    browser.goto(&format!("file://{}", report.display()));
    assert!(browser.find("section#rule-pair").is_some());
    let errors: Vec<_> = browser.console().into_iter().filter(|(level, _)| level == "SEVERE").collect();
    assert!(errors.is_empty(), "{errors:?}");
    let fetched = browser.script("return performance.getEntriesByType('resource').length");
    assert_eq!(fetched, 0, "fetched: {fetched}");
    drop(browser);
    std::fs::remove_dir_all(&dir).ok();
}
