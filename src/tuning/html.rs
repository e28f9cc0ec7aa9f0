//! The tuning report as one HTML page that needs nothing else: inline CSS, SVG plots drawn by
//! `plotters`, pictures as data URIs. It opens offline, as a mail attachment.

use super::{DWELL_FACTORS, Object, RuleStudy, Study, THRESHOLD_OFFSETS, THUMB_WIDTH};
use crate::rules::EventKind;
use crate::workbench::escape;
use base64::Engine;
use chrono::{DateTime, Utc};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use std::fmt::Write;

/// The rows a timeline shows at most.
const TIMELINE_ROWS: usize = 30;

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1000px}\
h2{border-top:2px solid #888;padding-top:.6em;margin-top:2em}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right}\
th{background:#eee}td.as-set{font-weight:bold;background:#ffe9a8}.note{color:#555;font-size:.9em}\
.misses{display:flex;flex-wrap:wrap;gap:1em}.miss{width:320px;font-size:.9em}.miss svg{display:block}\
.reason{font-weight:bold;color:#a40}";

/// The page for `study` of clip `clip`.
pub fn page(study: &Study, clip: &str) -> String {
    let mut out = String::new();
    let camera = &study.camera;
    let (start, secs) = match study.span {
        Some((first, last)) => (time(first), (last - first).as_seconds_f64()),
        None => ("-".into(), 0.0),
    };
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>fieldwatch tuning report: {id}</title>\
         <style>{STYLE}</style></head><body><h1>Tuning report: camera {id}</h1>\
         <p>Clip <code>{clip}</code> replayed as camera <b>{id}</b> ({name}): {frames} frames detected over {secs:.1} s, \
         the first at {start}. Every figure below comes from the rules themselves, run again over the \
         detections of this replay (no second decoding or inference).</p>",
        id = escape(&camera.id),
        name = escape(&camera.name),
        clip = escape(clip),
        frames = study.frames,
    );
    for rule in &study.rules {
        out.push_str(&section(study, rule));
    }
    out.push_str("</body></html>\n");
    out
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn section(study: &Study, rs: &RuleStudy) -> String {
    let rule = &rs.rule;
    let at = |t: DateTime<Utc>| study.span.map_or(0.0, |(first, _)| (t - first).as_seconds_f64());
    let mut out = String::new();
    let filters: Vec<String> = (rule.filters.iter())
        .map(|(class, f)| format!("{}: min_score {:.2}, threshold {:.2}", escape(class), f.min_score, f.threshold))
        .collect();
    let _ = write!(
        out,
        "<section class=\"rule\" id=\"rule-{id}\"><h2>Rule {id}: {violation} in zone {zone}</h2>\
         <p>{filters}; dwell {dwell:.1} s, min_count {min_count}, clear after {clear:.1} s.</p>",
        id = escape(&rule.id),
        violation = escape(&rule.violation),
        zone = escape(&rule.zone.name),
        filters = filters.join("; "),
        dwell = rule.dwell.as_secs_f64(),
        min_count = rule.min_count,
        clear = rule.clear_after.as_secs_f64(),
    );

    out.push_str("<h3>Incidents</h3>");
    if rs.opened() == 0 {
        out.push_str("<p class=\"incidents\">None opened.</p>");
    } else {
        out.push_str("<table class=\"incidents\"><tr><th>#</th><th>opened (s)</th><th>updates</th><th>resolved (s)</th><th>most objects</th></tr>");
        for number in 1..=rs.events.iter().map(|e| e.incident).max().unwrap_or(0) {
            let mine: Vec<_> = rs.events.iter().filter(|e| e.incident == number).collect();
            let Some(opened) = mine.iter().find(|e| e.kind == EventKind::Opened) else { continue };
            let resolved = (mine.iter().find(|e| e.kind == EventKind::Resolved)).map_or("still open".into(), |e| {
                format!("{:.1} ({})", at(e.at), e.resolved_by.map_or("", |r| r.as_str()))
            });
            let _ = write!(
                out,
                "<tr><td>{number}</td><td>{:.1}</td><td>{}</td><td>{resolved}</td><td>{}</td></tr>",
                at(opened.at),
                mine.iter().filter(|e| e.kind == EventKind::Updated).count(),
                mine.iter().map(|e| e.count).max().unwrap_or(0),
            );
        }
        out.push_str("</table>");
    }

    out.push_str("<h3>Timeline</h3><p class=\"note\">Each object of the rule's classes while it was in the zone \
                  (red: counted by an incident; orange: a near miss; grey: passed through), and each incident event.</p>");
    let rows = timeline_rows(rs).len().max(1) as u32;
    out.push_str(&plot((900, 80 + 24 * rows), |root| timeline(root, study, rs)));

    out.push_str("<h3>Scores in the zone</h3><p class=\"note\">The scores of the detections of objects while in the zone, per class, \
                  with the class's min_score (detections under it are dropped) and threshold (an object's median score must reach it).</p>");
    for (class, scores) in &rs.scores {
        let Some(filter) = rule.filters.get(class) else { continue };
        out.push_str(&plot((900, 220), |root| histogram(root, class, scores, filter.min_score, filter.threshold)));
    }
    if rs.scores.is_empty() {
        out.push_str("<p>No object of its classes was in the zone.</p>");
    }

    let (misses, more) = rs.near_misses();
    out.push_str(
        "<h3>Near misses</h3><p class=\"note\">Objects of the rule's classes that stood still and never counted, \
                  with the first stage that stopped them.</p>",
    );
    if misses.is_empty() {
        out.push_str("<p>None.</p>");
    }
    out.push_str("<div class=\"misses\">");
    for object in &misses {
        out.push_str(&near_miss(study, rs, object));
    }
    out.push_str("</div>");
    if more > 0 {
        let _ = write!(out, "<p class=\"note\">And {more} more.</p>");
    }

    out.push_str(
        "<h3>What if</h3><p class=\"note\">Incidents this clip would open with the thresholds of all the rule's \
                  classes moved and the dwell changed, everything else as set (the highlighted cell).</p>\
                  <table class=\"what-if\"><tr><th>dwell \\ threshold</th>",
    );
    for offset in THRESHOLD_OFFSETS {
        let _ = write!(out, "<th data-offset=\"{offset}\">{}</th>", offset_text(rs, offset));
    }
    out.push_str("</tr>");
    for (factor, row) in DWELL_FACTORS.iter().zip(&rs.what_if) {
        let dwell = rule.dwell.mul_f64(*factor).as_secs_f64();
        let _ = write!(out, "<tr><th data-dwell=\"{dwell}\">{dwell:.1} s</th>");
        for (offset, opened) in THRESHOLD_OFFSETS.iter().zip(row) {
            let class = if *offset == 0.0 && *factor == 1.0 { " class=\"as-set\"" } else { "" };
            let _ = write!(out, "<td{class}>{opened}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</table></section>");
    out
}

/// A column head of the what-if table: the thresholds, or the offset when classes differ.
fn offset_text(rs: &RuleStudy, offset: f32) -> String {
    let thresholds: Vec<f32> = rs.rule.filters.values().map(|f| (f.threshold + offset).clamp(0.0, 1.0)).collect();
    match thresholds.as_slice() {
        [one] => format!("{one:.2}"),
        _ if offset == 0.0 => "as set".into(),
        _ => format!("{offset:+.2}"),
    }
}

fn near_miss(study: &Study, rs: &RuleStudy, object: &Object) -> String {
    let (index, bbox) = object.shot;
    let picture = study.tape.get(index).map(|kept| {
        let width = THUMB_WIDTH.min(kept.width).max(1);
        let scale = width as f32 / kept.width.max(1) as f32;
        let height = ((kept.height as f32 * scale).round() as u32).max(1);
        let jpeg = base64::engine::general_purpose::STANDARD.encode(&kept.thumb);
        format!(
            "<svg viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\">\
             <image href=\"data:image/jpeg;base64,{jpeg}\" width=\"{width}\" height=\"{height}\"/>\
             <rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"#f80\" stroke-width=\"2\"/></svg>",
            bbox.x1 * scale,
            bbox.y1 * scale,
            (bbox.x2 - bbox.x1) * scale,
            (bbox.y2 - bbox.y1) * scale,
        )
    });
    let at = study.span.map_or(0.0, |(first, _)| (object.first_seen - first).as_seconds_f64());
    let (name, why) = object.miss.as_ref().map_or(("", String::new()), |m| (m.name(), m.why(&rs.rule)));
    format!(
        "<div class=\"miss\" data-reason=\"{name}\" data-object=\"{id}\">{}<p>{label} #{id}, from {at:.1} s, stood still {still:.1} s<br>\
         <span class=\"reason\">{why}</span></p></div>",
        picture.unwrap_or_default(),
        id = object.id,
        label = escape(&object.label),
        still = object.still_secs,
        why = escape(&why),
    )
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type Drawn = Result<(), Box<dyn std::error::Error>>;

/// An SVG of `size` drawn by `draw`, or a note of why it could not be.
fn plot(size: (u32, u32), draw: impl FnOnce(&Area<'_>) -> Drawn) -> String {
    let mut svg = String::new();
    let drawn = {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw(&root).and_then(|()| root.present().map_err(Into::into))
    };
    match drawn {
        Ok(()) => svg,
        Err(e) => format!("<p class=\"note\">(plot not drawn: {})</p>", escape(&e.to_string())),
    }
}

/// The objects a timeline shows: those in the zone at some time, and the near misses.
fn timeline_rows(rs: &RuleStudy) -> Vec<&Object> {
    rs.objects.iter().filter(|o| !o.in_zone.is_empty() || o.is_near_miss()).take(TIMELINE_ROWS).collect()
}

fn timeline(root: &Area<'_>, study: &Study, rs: &RuleStudy) -> Drawn {
    let Some((first, last)) = study.span else { return Ok(()) };
    let at = |t: DateTime<Utc>| (t - first).as_seconds_f64();
    let rows = timeline_rows(rs);
    let n = rows.len().max(1) as i32;
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(130)
        .build_cartesian_2d(0f64..at(last).max(1.0), (0..n).into_segmented())?;
    let name = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(row) => {
            rows.get(*row as usize).map_or(String::new(), |o| format!("{} #{}", o.label, o.id))
        }
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n as usize + 1)
        .y_label_formatter(&name)
        .x_desc("seconds into the clip")
        .draw()?;
    for (row, object) in rows.iter().enumerate() {
        let colour = if object.counted {
            RGBColor(210, 40, 40)
        } else if object.is_near_miss() {
            RGBColor(240, 140, 0)
        } else {
            RGBColor(150, 150, 150)
        };
        let middle = SegmentValue::CenterOf(row as i32);
        // A bar across the row's middle while in the zone; a near miss outside the zone shows
        // the time it was seen instead, as a thin line.
        let (spans, width) = match object.in_zone.is_empty() {
            true => (vec![(object.first_seen, object.last_seen)], 3),
            false => (object.in_zone.clone(), 14),
        };
        chart.draw_series(spans.iter().map(|(from, to)| {
            let (from, to) = (at(*from), at(*to).max(at(*from) + 0.05));
            PathElement::new(vec![(from, middle.clone()), (to, middle.clone())], colour.stroke_width(width))
        }))?;
    }
    for e in &rs.events {
        let colour = match e.kind {
            EventKind::Opened => RGBColor(0, 140, 0),
            EventKind::Updated => RGBColor(0, 90, 200),
            EventKind::Resolved => BLACK,
        };
        let x = at(e.at);
        chart
            .draw_series([PathElement::new(vec![(x, SegmentValue::Exact(0)), (x, SegmentValue::Exact(n))], colour)])?;
        let what = match e.kind {
            EventKind::Opened => "opened",
            EventKind::Updated => "updated",
            EventKind::Resolved => "resolved",
        };
        chart.draw_series([Text::new(
            format!("#{} {what}", e.incident),
            (x, SegmentValue::Exact(n)),
            ("sans-serif", 11).into_font().color(&colour),
        )])?;
    }
    Ok(())
}

fn histogram(root: &Area<'_>, class: &str, scores: &[f32], min_score: f32, threshold: f32) -> Drawn {
    const BINS: usize = 20;
    let mut counts = [0u32; BINS];
    for score in scores {
        let bin = ((score.clamp(0.0, 1.0) * BINS as f32) as usize).min(BINS - 1);
        if let Some(count) = counts.get_mut(bin) {
            *count += 1;
        }
    }
    let top = counts.iter().copied().max().unwrap_or(0).max(1);
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .margin(8)
        .caption(format!("{class}: {} detections in the zone", scores.len()), ("sans-serif", 14))
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0u32..top + top / 5 + 1)?;
    chart.configure_mesh().x_desc("score").y_desc("detections").draw()?;
    chart.draw_series(counts.iter().enumerate().map(|(bin, count)| {
        let x = bin as f64 / BINS as f64;
        Rectangle::new([(x, 0), (x + 1.0 / BINS as f64, *count)], RGBColor(90, 120, 200).filled())
    }))?;
    let top = top + top / 5 + 1;
    for (value, name, colour) in [(min_score, "min_score", RGBColor(120, 120, 120)), (threshold, "threshold", RED)] {
        let x = value as f64;
        chart
            .draw_series([PathElement::new(vec![(x, 0), (x, top)], colour.stroke_width(2))])?
            .label(format!("{name} {value:.2}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2)));
    }
    chart.configure_series_labels().position(SeriesLabelPosition::UpperLeft).border_style(BLACK).draw()?;
    Ok(())
}
