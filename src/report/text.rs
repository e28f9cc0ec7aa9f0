//! The human description in each report, in English and Vietnamese, from templates: built-in
//! ones per violation, or the rule's own (`[cameras.rules.text]`). Class names go through the
//! config's `class_names` table, else a built-in one for common street classes.
//!
//! Placeholders: {violation}, {objects} ("3 xe máy"), {count}, {camera}, {location}, {place}
//! (camera and location), {zone}, {since} (local HH:MM), {duration} ("12 phút").

use super::Origin;
use crate::config::Text;
use crate::rules::{EventKind, IncidentEvent};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Description {
    pub en: String,
    pub vi: String,
}

const PLACEHOLDERS: &[&str] =
    &["violation", "objects", "count", "camera", "location", "place", "zone", "since", "duration"];

/// Checks a template for unknown placeholders and stray braces (an empty one is fine: built-in).
pub fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(format!("a '}}' without its '{{' in {template:?}"));
        }
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("a '{{' without its '}}' in {template:?}"));
        };
        let name = &rest[open + 1..open + close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!("unknown placeholder {{{name}}}; known: {}", PLACEHOLDERS.join(", ")));
        }
        rest = &rest[open + close + 1..];
    }
    Ok(())
}

fn render(template: &str, values: &BTreeMap<&str, String>) -> String {
    let mut out = template.to_string();
    for (name, value) in values {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// Built-in names and templates for the violations the city reports most.
fn violation_names(violation: &str) -> Text {
    let (en, vi) = match violation {
        "sidewalk_encroachment" => ("Sidewalk encroachment", "Lấn chiếm vỉa hè"),
        "garbage" => ("Garbage dumped", "Đổ rác thải"),
        "obstacle" => ("Obstacle on the road", "Vật cản trên đường"),
        "illegal_parking" => ("Illegal parking", "Đỗ xe sai quy định"),
        "camera_offline" => ("Camera offline", "Camera mất kết nối"),
        "view_blocked" => ("Camera view blocked", "Camera bị che khuất"),
        "view_moved" => ("Camera view moved", "Camera bị lệch hướng"),
        other => return Text { en: other.replace('_', " "), vi: other.replace('_', " ") },
    };
    Text { en: en.into(), vi: vi.into() }
}

fn builtin(violation: &str, kind: EventKind, paused: bool, dismissed: bool) -> Text {
    let (en, vi) = match (violation, kind) {
        (_, EventKind::Resolved) if dismissed => (
            "Dismissed by the operations centre as a false alarm: {violation} at {place}, zone '{zone}', after {duration}.",
            "Trung tâm điều hành đã xác định báo động sai: {violation} tại {place}, vùng '{zone}', sau {duration}.",
        ),
        (_, EventKind::Updated) if paused => (
            "Still open, unchecked: {violation} at {place}; the camera cannot see ({paused}), so its rules are paused.",
            "Vẫn tiếp diễn, chưa kiểm tra được: {violation} tại {place}; camera không quan sát được ({paused}) nên tạm dừng.",
        ),
        ("camera_offline", EventKind::Opened) => (
            "Camera offline: {camera} has sent no picture since {since} ({duration}); its rules are paused.",
            "Camera mất kết nối: {camera} không gửi hình từ {since} ({duration}); các quy tắc của camera tạm dừng.",
        ),
        ("view_blocked" | "view_moved", EventKind::Opened) => (
            "{violation}: {camera} has not shown its scene since {since} ({duration}); its rules are paused.",
            "{violation}: {camera} không quan sát được khu vực từ {since} ({duration}); các quy tắc của camera tạm dừng.",
        ),
        ("camera_offline" | "view_blocked" | "view_moved", EventKind::Resolved) => (
            "Camera working again: {violation} at {camera} ended after {duration}.",
            "Camera hoạt động lại: {violation} tại {camera} đã kết thúc sau {duration}.",
        ),
        ("sidewalk_encroachment", EventKind::Opened) => (
            "Sidewalk encroachment: {objects} stopped on the sidewalk at {place} since {since} ({duration}), zone '{zone}'.",
            "Phát hiện lấn chiếm vỉa hè: {objects} dừng đỗ trên vỉa hè tại {place} từ {since} ({duration}), vùng '{zone}'.",
        ),
        (_, EventKind::Opened) => (
            "{violation} at {place}: {objects} in zone '{zone}' since {since} ({duration}).",
            "{violation} tại {place}: {objects} trong vùng '{zone}' từ {since} ({duration}).",
        ),
        (_, EventKind::Updated) => (
            "Still open: {violation} at {place}, now {objects} in zone '{zone}' since {since} ({duration}).",
            "Vẫn tiếp diễn: {violation} tại {place}, hiện có {objects} trong vùng '{zone}' từ {since} ({duration}).",
        ),
        (_, EventKind::Resolved) => (
            "Cleared: {violation} at {place}; zone '{zone}' is free again after {duration}.",
            "Đã xử lý xong: {violation} tại {place}; vùng '{zone}' đã thông thoáng sau {duration}.",
        ),
    };
    Text { en: en.into(), vi: vi.into() }
}

/// Names for common street classes; the config's `class_names` wins, then the model's name.
fn class_name(class: &str, table: &BTreeMap<String, Text>) -> Text {
    if let Some(t) = table.get(class) {
        return t.clone();
    }
    let (en, vi) = match class {
        "motorbike" | "motorcycle" => ("motorbike", "xe máy"),
        "bicycle" => ("bicycle", "xe đạp"),
        "car" => ("car", "ô tô"),
        "truck" => ("truck", "xe tải"),
        "bus" => ("bus", "xe buýt"),
        "person" => ("person", "người"),
        "vendor_stall" => ("vendor stall", "quầy hàng"),
        "garbage" => ("pile of garbage", "đống rác"),
        other => (other, other),
    };
    Text { en: en.into(), vi: vi.into() }
}

/// "3 motorbikes, 1 car" and "3 xe máy, 1 ô tô".
fn objects(event: &IncidentEvent, table: &BTreeMap<String, Text>) -> Text {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for o in &event.objects {
        *counts.entry(o.label.as_str()).or_default() += 1;
    }
    let (mut en, mut vi) = (Vec::new(), Vec::new());
    for (class, n) in counts {
        let name = class_name(class, table);
        let plural = if n > 1 && !name.en.ends_with('s') { "s" } else { "" };
        en.push(format!("{n} {}{plural}", name.en));
        vi.push(format!("{n} {}", name.vi));
    }
    Text { en: en.join(", "), vi: vi.join(", ") }
}

/// "45 s" / "45 giây", "12 min" / "12 phút", "1 h 5 min" / "1 giờ 5 phút".
fn duration(secs: i64) -> Text {
    let secs = secs.max(0);
    let (h, m) = (secs / 3600, secs % 3600 / 60);
    match (h, m) {
        (0, 0) => Text { en: format!("{secs} s"), vi: format!("{secs} giây") },
        (0, m) => Text { en: format!("{m} min"), vi: format!("{m} phút") },
        (h, m) => Text { en: format!("{h} h {m} min"), vi: format!("{h} giờ {m} phút") },
    }
}

pub fn describe(event: &IncidentEvent, origin: &Origin) -> Description {
    let rule = &event.rule;
    let own = match event.kind {
        EventKind::Opened => &rule.text.opened,
        EventKind::Updated => &rule.text.updated,
        EventKind::Resolved => &rule.text.resolved,
    };
    let dismissed = event.resolved_by == Some(crate::rules::ResolvedBy::Dismissed);
    let builtin = builtin(&rule.violation, event.kind, event.paused_by.is_some(), dismissed);
    // A pause speaks for the camera, not the rule: the rule's own text would not say why.
    let own = if event.paused_by.is_some() { &crate::config::Text::default() } else { own };
    let paused = event.paused_by.map(violation_names).unwrap_or_default();
    let names = violation_names(&rule.violation);
    let objects = objects(event, &origin.class_names);
    let duration = duration((event.at - event.started_at).num_seconds());
    let place = if origin.camera_location.is_empty() {
        origin.camera_name.clone()
    } else {
        format!("{} ({})", origin.camera_name, origin.camera_location)
    };
    let since = event.started_at.with_timezone(&chrono::Local).format("%H:%M").to_string();
    let fill = |template: &str, builtin: &str, violation: &str, objects: &str, duration: &str, paused: &str| {
        let values = BTreeMap::from([
            ("violation", violation.to_string()),
            ("objects", objects.to_string()),
            ("count", event.objects.len().to_string()),
            ("camera", origin.camera_name.clone()),
            ("location", origin.camera_location.clone()),
            ("place", place.clone()),
            ("zone", rule.zone.name.clone()),
            ("since", since.clone()),
            ("duration", duration.to_string()),
            ("paused", lowercase_first(paused)),
        ]);
        render(if template.is_empty() { builtin } else { template }, &values)
    };
    // Mid-sentence, the violation's name starts in lower case ("Cleared: sidewalk encroachment").
    let lower = |s: &str, kind| if kind == EventKind::Opened { s.to_string() } else { lowercase_first(s) };
    Description {
        en: fill(&own.en, &builtin.en, &lower(&names.en, event.kind), &objects.en, &duration.en, &paused.en),
        vi: fill(&own.vi, &builtin.vi, &lower(&names.vi, event.kind), &objects.vi, &duration.vi, &paused.vi),
    }
}

fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_lowercase().chain(c).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_checked_for_unknown_placeholders_and_braces() {
        assert!(check_template("").is_ok());
        assert!(check_template("{objects} tại {location} từ {since} ({duration}).").is_ok());
        assert!(check_template("{objetcs}").unwrap_err().contains("unknown placeholder {objetcs}"));
        assert!(check_template("{objects").is_err());
        assert!(check_template("objects}").is_err());
    }

    #[test]
    fn durations_and_object_counts_read_naturally() {
        assert_eq!(duration(45), Text { en: "45 s".into(), vi: "45 giây".into() });
        assert_eq!(duration(12 * 60 + 5), Text { en: "12 min".into(), vi: "12 phút".into() });
        assert_eq!(duration(3900), Text { en: "1 h 5 min".into(), vi: "1 giờ 5 phút".into() });
        let table = BTreeMap::from([("red".to_string(), Text { en: "red square".into(), vi: "ô vuông đỏ".into() })]);
        assert_eq!(class_name("red", &table).vi, "ô vuông đỏ");
        assert_eq!(class_name("motorbike", &table).vi, "xe máy");
        assert_eq!(class_name("kiosk", &table).en, "kiosk");
    }
}
