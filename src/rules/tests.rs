//! The rules stage on synthetic scenes with injected time: a sidewalk (the lower half of a
//! 1000x1000 frame), parked objects with jittery boxes, streams of passers, occlusions,
//! dropped frames and jittered timestamps, at 1 and 2 detections per second.

use super::*;
use crate::config::{Camera, CameraUrl, Category, Filter, Membership, Templates, Zone};
use crate::track::TrackerConfig;
use chrono::TimeDelta;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::Duration;

const W: u32 = 1000;
const SIZE: f32 = 60.0;

pub(crate) fn rule(tweak: impl FnOnce(&mut Rule)) -> Rule {
    let filter =
        Filter { min_score: 0.5, threshold: 0.6, min_area: 0.0, max_area: 1.0, min_ratio: 0.0, max_ratio: 100.0 };
    let mut r = Rule {
        id: "sidewalk".into(),
        violation: "sidewalk_encroachment".into(),
        category: Category::UrbanOrder,
        zone: Zone {
            name: "sidewalk".into(),
            polygon: vec![[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]],
            membership: Membership::BottomCenter,
            inertia: 2,
            place: Default::default(),
        },
        model: 0,
        classes: vec!["motorbike".into()],
        filters: BTreeMap::from([("motorbike".to_string(), filter)]),
        min_count: 1,
        dwell: Duration::from_secs(10),
        clear_after: Duration::from_secs(5),
        cooldown: Duration::from_secs(60),
        update_every: None,
        priority: crate::config::Priority::Normal,
        respond_within: Duration::from_secs(86_400),
        schedule: None,
        text: Templates::default(),
    };
    tweak(&mut r);
    r
}

fn camera(rule: Rule) -> Camera {
    Camera { rules: vec![Arc::new(rule)], ..Camera::at("cam", CameraUrl::parse("rtsp://127.0.0.1/cam").unwrap()) }
}

fn t(secs: f64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap() + TimeDelta::microseconds((secs * 1e6).round() as i64)
}

fn obj(x: f32, y_bottom: f32) -> Detection {
    Detection {
        model: 0,
        class_id: 0,
        label: "motorbike".into(),
        score: 0.9,
        bbox: BBox { x1: x, y1: y_bottom - SIZE, x2: x + SIZE, y2: y_bottom },
    }
}

/// Something in the scene, as a function of time: its detection, if any.
type Actor = Box<dyn Fn(f64) -> Option<Detection>>;

/// Parked at (x, bottom) from `from` to `until` seconds, boxes jittering by up to 2 px,
/// hidden during `hidden`.
fn parked(x: f32, bottom: f32, from: f64, until: f64, hidden: Vec<(f64, f64)>) -> Actor {
    Box::new(move |s| {
        if s < from || s >= until || hidden.iter().any(|&(a, b)| s >= a && s < b) {
            return None;
        }
        let jitter = ((s * 7.3).sin() * 2.0) as f32;
        Some(obj(x + jitter, bottom - jitter))
    })
}

/// Walks along the sidewalk at `speed` px/s from the left edge, starting at `from`.
fn passer(from: f64, speed: f32, bottom: f32) -> Actor {
    sized_passer(from, speed, bottom, SIZE)
}

fn sized_passer(from: f64, speed: f32, bottom: f32, size: f32) -> Actor {
    Box::new(move |s| {
        let x = -size + (s - from) as f32 * speed;
        let mut d = obj(x, bottom);
        d.bbox.x2 = x + size;
        d.bbox.y1 = bottom - size;
        (s >= from && x < W as f32).then_some(d)
    })
}

/// Walks in from the left and stops at `stop_x` at `stops_at`.
fn stopper(stops_at: f64, stop_x: f32, speed: f32, bottom: f32) -> Actor {
    Box::new(move |s| {
        let start = stops_at - ((stop_x + SIZE) / speed) as f64;
        let x = if s < stops_at { -SIZE + (s - start) as f32 * speed } else { stop_x };
        (s >= start).then(|| obj(x, bottom))
    })
}

/// (seconds since the start, kind, object count) of every event.
type Timeline = Vec<(f64, EventKind, usize)>;

/// Runs `actors` through a camera with `rule` for `secs` at `fps`; `drop_every` drops every
/// n-th frame, `jitter` moves each timestamp by up to that many seconds.
fn run(rule: Rule, actors: &[Actor], secs: f64, fps: f64, drop_every: usize, jitter: f64) -> Timeline {
    let mut rules = CameraRules::new(&camera(rule));
    let mut events = Vec::new();
    let frames = (secs * fps) as usize;
    for i in 0..frames {
        if drop_every > 0 && i % drop_every == drop_every - 1 {
            continue;
        }
        let s = i as f64 / fps + jitter * ((i as f64 * 12.9898).sin() * 0.5 + 0.5);
        let detections: Vec<Detection> = actors.iter().filter_map(|a| a(s)).collect();
        for e in rules.observe(t(s), &detections, W, W, None) {
            events.push(((e.at - t(0.0)).as_seconds_f64(), e.kind, e.objects.len()));
        }
    }
    events
}

fn kinds(events: &Timeline) -> Vec<EventKind> {
    events.iter().map(|e| e.1).collect()
}

#[test]
fn a_parked_object_opens_once_at_dwell_after_it_stopped_and_resolves_once_after_it_leaves() {
    for fps in [1.0, 2.0] {
        let events = run(rule(|_| {}), &[parked(400.0, 800.0, 3.0, 40.0, vec![])], 120.0, fps, 0, 0.0);
        assert_eq!(kinds(&events), [EventKind::Opened, EventKind::Resolved], "{fps} fps: {events:?}");
        let (opened, resolved) = (events[0].0, events[1].0);
        assert!((13.0..=13.0 + 1.0 / fps).contains(&opened), "{fps} fps: opened at {opened}");
        // Gone at 40 s: it coasts 60 s (it might be hidden), then 5 s clear.
        assert!((100.0..=106.0 + 1.0 / fps).contains(&resolved), "{fps} fps: resolved at {resolved}");
    }
}

#[test]
fn an_object_driving_off_resolves_without_waiting_out_the_coast() {
    let leaves: Actor = Box::new(|s| match s {
        s if s < 3.0 => None,
        s if s < 30.0 => Some(obj(400.0, 800.0)),
        s => Some(obj(400.0 + ((s - 30.0) * 80.0) as f32, 800.0)).filter(|d| d.bbox.x1 < W as f32),
    });
    let events = run(rule(|_| {}), &[leaves], 60.0, 2.0, 0, 0.0);
    assert_eq!(kinds(&events), [EventKind::Opened, EventKind::Resolved], "{events:?}");
    assert!(events[1].0 <= 30.0 + 1.0 + 5.0 + 0.5, "resolved at {}", events[1].0);
}

#[test]
fn passers_and_an_occlusion_keep_the_parked_objects_track_and_dwell() {
    // Parked at x=400 from 2 s; hidden 8–11 s and 20–23 s while passers cross it.
    let mut actors = vec![parked(400.0, 800.0, 2.0, 60.0, vec![(8.0, 11.0), (20.0, 23.0)])];
    for k in 0..12 {
        actors.push(passer(k as f64 * 4.0, 120.0, 805.0));
    }
    for fps in [1.0, 2.0] {
        let events = run(rule(|_| {}), &actors, 140.0, fps, 0, 0.0);
        assert_eq!(kinds(&events)[0], EventKind::Opened, "{fps} fps: {events:?}");
        assert!((12.0..=12.0 + 1.0 / fps).contains(&events[0].0), "{fps} fps: dwell reset: {events:?}");
        assert!(events[1..].iter().all(|e| e.1 == EventKind::Resolved), "{fps} fps: {events:?}");
        assert_eq!(events.iter().filter(|e| e.1 == EventKind::Resolved).count(), 1, "{fps} fps: {events:?}");
    }
}

#[test]
fn a_passer_who_stops_starts_its_dwell_when_it_stopped() {
    let events = run(rule(|_| {}), &[stopper(7.0, 500.0, 150.0, 800.0)], 40.0, 2.0, 0, 0.0);
    assert_eq!(kinds(&events), [EventKind::Opened], "{events:?}");
    assert!((17.0..=17.5).contains(&events[0].0), "opened at {} (stopped at 7 s, dwell 10 s)", events[0].0);
}

#[test]
fn min_count_updated_on_a_change_and_every_update_every() {
    let r = rule(|r| {
        r.min_count = 3;
        r.update_every = Some(Duration::from_secs(30));
    });
    let actors = vec![
        parked(100.0, 800.0, 1.0, 90.0, vec![]),
        parked(300.0, 800.0, 1.0, 90.0, vec![]),
        parked(500.0, 800.0, 2.0, 90.0, vec![]),
        parked(700.0, 800.0, 20.0, 90.0, vec![]),
    ];
    let events = run(r, &actors, 70.0, 2.0, 0, 0.0);
    let summary: Vec<(EventKind, usize)> = events.iter().map(|e| (e.1, e.2)).collect();
    assert_eq!(summary, [(EventKind::Opened, 3), (EventKind::Updated, 4), (EventKind::Updated, 4)], "{events:?}");
    assert!((12.0..=12.5).contains(&events[0].0), "{events:?}");
    assert!((30.0..=30.5).contains(&events[1].0), "{events:?}");
    assert!((60.0..=60.5).contains(&events[2].0), "{events:?}");
}

#[test]
fn cooldown_keeps_a_returning_object_from_opening_again_until_it_ends() {
    let r = rule(|r| r.cooldown = Duration::from_secs(100));
    let tracking = TrackerConfig::default();
    let gone = tracking.stationary_max_unseen.as_secs_f64();
    // Parked 0–20 s, resolved at ~20 + 60 + 5; back at 90 s: within cooldown until ~185 s.
    let actors = vec![parked(400.0, 800.0, 0.0, 20.0, vec![]), parked(400.0, 800.0, 90.0, 300.0, vec![])];
    let events = run(r, &actors, 260.0, 1.0, 0, 0.0);
    assert_eq!(kinds(&events), [EventKind::Opened, EventKind::Resolved, EventKind::Opened], "{events:?}");
    let resolved = events[1].0;
    assert!((20.0 + gone..=20.0 + gone + 7.0).contains(&resolved), "{events:?}");
    assert!((resolved + 100.0..=resolved + 101.0).contains(&events[2].0), "{events:?}");
}

#[test]
fn an_incident_open_at_a_restart_goes_on_and_a_cooldown_holds() {
    let r = rule(|r| r.cooldown = Duration::from_secs(100));
    let mut first = CameraRules::new(&camera(r.clone()));
    let mut opened = None;
    for i in 0..30 {
        for e in first.observe(t(i as f64), &[obj(400.0, 800.0)], W, W, None) {
            opened = Some(e.incident_id);
        }
    }
    let saved = first.saved();
    assert!(matches!(saved[..], [(_, Saved::Open { .. })]), "{saved:?}");
    // Serialised as the state file will hold it, and read back.
    let saved: Vec<(String, Saved)> = serde_json::from_str(&serde_json::to_string(&saved).unwrap()).unwrap();
    let mut second = CameraRules::new(&camera(r.clone()));
    second.restore(&saved);
    // The object is gone after the restart: the same incident resolves, once it could have been
    // seen stationary again (5 s after the first frame) plus clear_after (5 s).
    let mut events = Vec::new();
    for i in 40..60 {
        events.extend(second.observe(t(i as f64), &[], W, W, None));
    }
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].kind, Some(events[0].incident_id)), (EventKind::Resolved, opened));
    assert_eq!(events[0].at, t(50.0));
    // Still there after a restart: no resolve, no second opened.
    let mut still = CameraRules::new(&camera(r.clone()));
    still.restore(&saved);
    assert_eq!((40..100).flat_map(|i| still.observe(t(i as f64), &[obj(400.0, 800.0)], W, W, None)).count(), 0);
    // Restarted again during the cooldown: an object parking there does not open anything.
    let mut third = CameraRules::new(&camera(r));
    third.restore(&second.saved());
    let reopened = (60..140).flat_map(|i| third.observe(t(i as f64), &[obj(400.0, 800.0)], W, W, None)).count();
    assert_eq!(reopened, 0);
}

#[test]
fn a_reconfigured_rule_keeps_its_open_incident_and_its_objects_dwell() {
    let mut rules = CameraRules::new(&camera(rule(|_| {})));
    let mut events = Vec::new();
    for i in 0..20 {
        events.extend(rules.observe(t(i as f64), &[obj(400.0, 800.0)], W, W, None));
    }
    assert_eq!(events.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::Opened]);
    let opened = events[0].incident_id;
    // A raised threshold (still under the object's score), a longer dwell, a zone a little
    // larger: the incident stays open (no event), and it resolves under the new clear_after.
    let stricter = rule(|r| {
        r.filters.values_mut().for_each(|f| f.threshold = 0.8);
        r.dwell = Duration::from_secs(30);
        r.clear_after = Duration::from_secs(2);
        r.zone.polygon = vec![[0.0, 0.4], [1.0, 0.4], [1.0, 1.0], [0.0, 1.0]];
    });
    assert!(rules.reconfigure(&camera(stricter), t(20.0)).is_empty());
    let mut after = Vec::new();
    for i in 20..40 {
        after.extend(rules.observe(t(i as f64), &[obj(400.0, 800.0)], W, W, None));
    }
    assert!(after.is_empty(), "still open, not reopened: {after:?}");
    for i in 40..120 {
        after.extend(rules.observe(t(i as f64), &[], W, W, None));
    }
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!((after[0].kind, after[0].incident_id), (EventKind::Resolved, opened));

    // An object counting towards its dwell keeps what it has counted across a reload.
    let mut counting = CameraRules::new(&camera(rule(|_| {})));
    let mut events = Vec::new();
    for i in 0..8 {
        events.extend(counting.observe(t(i as f64), &[obj(400.0, 800.0)], W, W, None));
    }
    counting.reconfigure(&camera(rule(|r| r.clear_after = Duration::from_secs(3))), t(8.0));
    for i in 8..30 {
        events.extend(counting.observe(t(i as f64), &[obj(400.0, 800.0)], W, W, None));
    }
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].at <= t(14.0), "opened at the old dwell, not 10 s after the reload: {:?}", events[0].at);
}

#[test]
fn a_removed_rule_resolves_its_open_incident_and_a_new_one_starts_idle() {
    let mut rules = CameraRules::new(&camera(rule(|_| {})));
    let opened: Vec<IncidentEvent> =
        (0..20).flat_map(|i| rules.observe(t(i as f64), &[obj(400.0, 800.0)], W, W, None)).collect();
    assert_eq!(opened.len(), 1);
    let other = rule(|r| r.id = "road".into());
    let resolved = rules.reconfigure(&camera(other), t(20.0));
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(
        (resolved[0].kind, resolved[0].incident_id, resolved[0].at),
        (EventKind::Resolved, opened[0].incident_id, t(20.0))
    );
    assert_eq!(resolved[0].rule.id, "sidewalk");
    // The new rule counts its own dwell from the reload: it opens 10 s later, not at once.
    let next: Vec<IncidentEvent> =
        (20..40).flat_map(|i| rules.observe(t(i as f64), &[obj(400.0, 800.0)], W, W, None)).collect();
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(next[0].rule.id, "road");
    assert!(next[0].at >= t(29.0), "{:?}", next[0].at);
}

#[test]
fn filters_masks_and_membership_inertia() {
    // Too small, too low a score, and inside a mask: none counts.
    let small = Box::new(|s: f64| {
        let mut d = obj(100.0, 800.0);
        d.bbox.x2 = d.bbox.x1 + 5.0;
        d.bbox.y1 = d.bbox.y2 - 5.0;
        (s >= 0.0).then_some(d)
    }) as Actor;
    let faint = Box::new(|_| Some(Detection { score: 0.4, ..obj(300.0, 800.0) })) as Actor;
    let r = rule(|r| r.filters.get_mut("motorbike").unwrap().min_area = 0.001);
    let mut cam = camera(r);
    cam.masks = vec![vec![[0.45, 0.6], [0.7, 0.6], [0.7, 0.9], [0.45, 0.9]]];
    let mut rules = CameraRules::new(&cam);
    let masked = parked(500.0, 800.0, 0.0, 100.0, vec![]);
    let mut events = 0;
    for i in 0..60 {
        let s = i as f64;
        let dets: Vec<Detection> = [&small, &faint, &masked].iter().filter_map(|a| a(s)).collect();
        events += rules.observe(t(s), &dets, W, W, None).len();
    }
    assert_eq!(events, 0);
    // Parked with its bottom right on the zone's edge, flickering in and out every frame: the
    // inertia of 2 keeps it from ever counting as inside.
    let edge: Actor = Box::new(|s| Some(obj(400.0, if (s as i64) % 2 == 0 { 505.0 } else { 495.0 })));
    assert!(run(rule(|_| {}), &[edge], 60.0, 1.0, 0, 0.0).is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// A continuous stream of passers (the zone never empty) opens nothing, whatever the pace.
    /// People do not walk in lockstep: each starts a little off the beat and walks at their own
    /// speed (a perfectly periodic stream sampled at its own period would look parked to
    /// anyone), and they keep at least a body's width apart.
    #[test]
    fn a_stream_of_passers_opens_nothing(
        fps in prop_oneof![Just(1.0), Just(2.0)],
        speed in 60.0f32..300.0,
        gap in 0.0f64..1.0,
        lanes in 1usize..3,
        seed in any::<u64>(),
    ) {
        // From 2 body widths apart to 5 s apart, whatever the speed.
        let min_gap = (2.0 * SIZE / speed) as f64;
        let gap = min_gap + gap * (5.0 - min_gap).max(0.0);
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 1000) as f64 / 1000.0
        };
        // Each walks a little above or below the lane's line and is a little bigger or smaller.
        let mut actors: Vec<Actor> = Vec::new();
        for lane in 0..lanes {
            let mut start = 0.0;
            while start < 150.0 {
                let pace = speed * (0.8 + 0.4 * next() as f32);
                let bottom = 700.0 + lane as f32 * 150.0 + (next() as f32 - 0.5) * 40.0;
                let size = SIZE * (0.85 + 0.3 * next() as f32);
                actors.push(sized_passer(start, pace, bottom, size));
                start += gap * (1.0 + 0.5 * next());
            }
        }
        let events = run(rule(|_| {}), &actors, 150.0, fps, 0, 0.0);
        prop_assert!(events.is_empty(), "{:?}", events);
    }

    /// One parked object among passers gives the same incidents at 1 or 2 fps, with dropped
    /// frames or jittered timestamps. Each event comes within one frame interval of when it
    /// is due, counted from when the object was first (or last) seen, itself up to a frame
    /// interval after it arrived (or left): two runs differ by at most two intervals.
    #[test]
    fn the_same_scene_at_other_rates_gives_the_same_incidents(
        arrives in 1.0f64..10.0,
        stays in 20.0f64..60.0,
        x in 100.0f32..800.0,
        drop_every in prop_oneof![Just(0usize), Just(5), Just(7)],
        jitter in 0.0f64..0.2,
    ) {
        let scene = || {
            let mut actors = vec![parked(x, 850.0, arrives, arrives + stays, vec![])];
            for k in 0..20 {
                actors.push(passer(k as f64 * 6.0, 150.0, 700.0));
            }
            actors
        };
        let reference = run(rule(|_| {}), &scene(), 150.0, 2.0, 0, 0.0);
        prop_assert_eq!(kinds(&reference), vec![EventKind::Opened, EventKind::Resolved]);
        for (fps, drop) in [(1.0, 0), (2.0, drop_every), (1.0, drop_every)] {
            let other = run(rule(|_| {}), &scene(), 150.0, fps, drop, jitter);
            prop_assert_eq!(kinds(&other), kinds(&reference), "{} fps, drop {}: {:?}", fps, drop, other);
            // Two frame intervals (one more where a frame was dropped), plus the jitter.
            let tolerance = (1.0 / fps) * if drop > 0 { 3.0 } else { 2.0 } + jitter;
            for (a, b) in other.iter().zip(&reference) {
                prop_assert!((a.0 - b.0).abs() <= tolerance, "{} fps: {:?} vs {:?}", fps, other, reference);
            }
        }
    }

    /// The same input always gives the same output.
    #[test]
    fn rules_are_deterministic(arrives in 0.0f64..10.0, speed in 60.0f32..300.0) {
        let scene = || vec![parked(300.0, 800.0, arrives, 40.0, vec![]), passer(0.0, speed, 760.0), passer(3.0, speed, 900.0)];
        prop_assert_eq!(run(rule(|_| {}), &scene(), 120.0, 2.0, 0, 0.0), run(rule(|_| {}), &scene(), 120.0, 2.0, 0, 0.0));
    }
}

// Scenes with a picture: the camera's frames painted on a textured street, so the rules can
// tell an object that has gone from one that is hidden (see `crate::scene`).

/// Something in the picture at `s` seconds: its box, its luma level, and its detection if the
/// model sees it then.
type Painted = Box<dyn Fn(f64) -> Option<(BBox, u8, Option<Detection>)>>;

const OBJECT: u8 = 140;

/// Stands at (x, bottom) from `from` to `until` (box jittering by up to 2 px), detected except
/// during `missed`.
fn standing(x: f32, bottom: f32, from: f64, until: f64, missed: Vec<(f64, f64)>) -> Painted {
    Box::new(move |s| {
        if s < from || s >= until {
            return None;
        }
        let jitter = ((s * 7.3).sin() * 2.0) as f32;
        let d = obj(x + jitter, bottom - jitter);
        let seen = !missed.iter().any(|&(a, b)| s >= a && s < b);
        Some((d.bbox, OBJECT, seen.then_some(d)))
    })
}

/// A `width` x `height` box crossing from the left edge at `speed` px/s from `from`, detected
/// as `label` (a bus) or not at all (a tarpaulin on a cart: no class of the model).
fn crossing(from: f64, speed: f32, bottom: f32, width: f32, height: f32, label: Option<&'static str>) -> Painted {
    Box::new(move |s| {
        let x = -width + (s - from) as f32 * speed;
        let bbox = BBox { x1: x, y1: bottom - height, x2: x + width, y2: bottom };
        let detection = label.map(|label| Detection { label: label.into(), class_id: 5, bbox, ..obj(0.0, 0.0) });
        (s >= from && x < W as f32).then_some((bbox, 210, detection))
    })
}

/// Runs `things` through a camera with `rule`: each frame painted (in list order, later in
/// front) on the street, darkened by `light(s)`, with the detections of what the model sees.
fn run_pictured(rule: Rule, things: &[Painted], secs: f64, fps: f64, light: impl Fn(f64) -> f32) -> Timeline {
    let mut rules = CameraRules::new(&camera(rule));
    let street = crate::scene::tests::Picture::street(W, W);
    let mut events = Vec::new();
    for i in 0..(secs * fps) as usize {
        let s = i as f64 / fps;
        let mut picture = street.clone();
        let mut detections = Vec::new();
        for (bbox, level, detection) in things.iter().filter_map(|thing| thing(s)) {
            picture.paint(&bbox, level);
            detections.extend(detection);
        }
        let gain = light(s);
        let picture = if gain == 1.0 { picture } else { picture.lit(gain) };
        for e in rules.observe(t(s), &detections, W, W, Some(picture.luma().into())) {
            events.push(((e.at - t(0.0)).as_seconds_f64(), e.kind, e.objects.len()));
        }
    }
    events
}

fn daylight(_: f64) -> f32 {
    1.0
}

fn counts(events: &Timeline) -> Vec<(EventKind, usize)> {
    events.iter().map(|e| (e.1, e.2)).collect()
}

#[test]
fn a_vanished_object_is_gone_after_the_grace_but_without_a_picture_coasts() {
    let things = [standing(400.0, 800.0, 2.0, 30.0, vec![])];
    let grace = TrackerConfig::default().gone_after.as_secs_f64();
    for fps in [1.0, 2.0] {
        let events = run_pictured(rule(|_| {}), &things, 60.0, fps, daylight);
        assert_eq!(kinds(&events), [EventKind::Opened, EventKind::Resolved], "{fps} fps: {events:?}");
        // Last seen at 30 s less a frame: resolved 5 s after that, the grace being shorter.
        let last_seen = 30.0 - 1.0 / fps;
        assert!((last_seen + 5.0..=last_seen + 5.0 + 1.0 / fps).contains(&events[1].0), "{fps} fps: {events:?}");
        assert!(grace < 5.0);
    }
    // The same detections without a picture: it might be hidden, so it coasts 60 s.
    let blind = run(rule(|_| {}), &[parked(400.0, 800.0, 2.0, 30.0, vec![])], 120.0, 1.0, 0, 0.0);
    assert!(blind[1].0 >= 29.0 + 60.0, "{blind:?}");
}

#[test]
fn hidden_for_20_s_by_a_larger_detection_passing_slowly_keeps_its_track_and_incident() {
    // A 300 px bus at 18 px/s covers the object (x 400..460) for about 20 s, from ~24 s.
    let things =
        [standing(400.0, 800.0, 2.0, 90.0, vec![(24.0, 44.0)]), crossing(2.0, 18.0, 820.0, 300.0, 200.0, Some("bus"))];
    for fps in [1.0, 2.0] {
        let events = run_pictured(rule(|_| {}), &things, 110.0, fps, daylight);
        assert_eq!(kinds(&events), [EventKind::Opened, EventKind::Resolved], "{fps} fps: {events:?}");
        assert!(events[1].0 >= 90.0 + 4.0, "{fps} fps: resolved while it stood there: {events:?}");
    }
}

#[test]
fn hidden_for_8_s_by_a_box_of_no_class_keeps_its_incident_where_a_short_coast_does_not() {
    // A cart with a tarpaulin (no class of the model) at 30 px/s covers it for about 8 s.
    let cart = || crossing(4.0, 30.0, 820.0, 200.0, 150.0, None);
    let hidden = (18.0, 26.0);
    let things = [standing(400.0, 800.0, 2.0, 90.0, vec![hidden]), cart()];
    for fps in [1.0, 2.0] {
        let events = run_pictured(rule(|_| {}), &things, 110.0, fps, daylight);
        assert_eq!(kinds(&events), [EventKind::Opened, EventKind::Resolved], "{fps} fps: {events:?}");
        assert!(events[1].0 >= 90.0 + 4.0, "{fps} fps: {events:?}");
    }
    // A plain coast as short as the grace, with no picture, ends the incident behind the cart.
    let mut short = camera(rule(|_| {}));
    short.tracking.stationary_max_unseen = TrackerConfig::default().gone_after;
    let mut rules = CameraRules::new(&short);
    let mut events = Vec::new();
    for i in 0..110 {
        let s = i as f64;
        let dets: Vec<Detection> = parked(400.0, 800.0, 2.0, 90.0, vec![hidden])(s).into_iter().collect();
        events.extend(rules.observe(t(s), &dets, W, W, None).into_iter().map(|e| e.kind));
    }
    assert_eq!(&events[..2], [EventKind::Opened, EventKind::Resolved], "{events:?}");
}

#[test]
fn one_then_another_after_an_empty_gap_are_two_incidents_of_one_object_each() {
    // A stands 2-10 s, the zone is empty 10-16 s, B stands elsewhere in it from 16 s.
    let r = || {
        rule(|r| {
            r.dwell = Duration::from_secs(3);
            r.cooldown = Duration::from_secs(2);
        })
    };
    let things = [standing(200.0, 800.0, 2.0, 10.0, vec![]), standing(600.0, 900.0, 16.0, 60.0, vec![])];
    for fps in [1.0, 2.0] {
        let events = run_pictured(r(), &things, 60.0, fps, daylight);
        let summary = counts(&events);
        assert_eq!(
            summary,
            [(EventKind::Opened, 1), (EventKind::Resolved, 0), (EventKind::Opened, 1)],
            "{fps} fps: {events:?}"
        );
        let frame = 1.0 / fps;
        // Stopped at 2 s: stationary 5 s later, since it stopped, so dwell (3 s) is past.
        assert!((7.0..=7.0 + frame).contains(&events[0].0), "{fps} fps: {events:?}");
        // A last seen at 10 s less a frame, clear after 5 s.
        assert!((15.0 - frame..=15.0 + frame).contains(&events[1].0), "{fps} fps: {events:?}");
        assert!((21.0..=21.0 + frame).contains(&events[2].0), "{fps} fps: {events:?}");
    }
    // Without a picture A coasts on, and B is added to A's incident.
    let blind = run(
        r(),
        &[parked(200.0, 800.0, 2.0, 10.0, vec![]), parked(600.0, 900.0, 16.0, 60.0, vec![])],
        60.0,
        1.0,
        0,
        0.0,
    );
    assert_eq!(counts(&blind), [(EventKind::Opened, 1), (EventKind::Updated, 2)], "{blind:?}");
}

#[test]
fn a_group_that_leaves_one_by_one_is_counted_down_then_resolved() {
    let things = [
        standing(100.0, 800.0, 2.0, 30.0, vec![]),
        standing(400.0, 800.0, 2.0, 40.0, vec![]),
        standing(700.0, 800.0, 2.0, 50.0, vec![]),
    ];
    let grace = TrackerConfig::default().gone_after.as_secs_f64();
    for fps in [1.0, 2.0] {
        let events = run_pictured(rule(|_| {}), &things, 70.0, fps, daylight);
        let summary = counts(&events);
        assert_eq!(
            summary,
            [(EventKind::Opened, 3), (EventKind::Updated, 2), (EventKind::Updated, 1), (EventKind::Resolved, 0)],
            "{fps} fps: {events:?}"
        );
        // Each leaves at 30, 40, 50 s, last seen a frame before; counted down once gone.
        for (event, left) in events[1..3].iter().zip([30.0, 40.0]) {
            assert!((left - 1.0 / fps + grace..=left + grace).contains(&event.0), "{fps} fps: {events:?}");
        }
        assert!((55.0 - 1.0 / fps..=55.0).contains(&events[3].0), "{fps} fps: {events:?}");
    }
}

#[test]
fn a_cloud_that_hides_the_object_from_the_detector_changes_nothing() {
    // 20-28 s: the light falls by 40 % and the detector misses the object.
    let things = [standing(400.0, 800.0, 2.0, 60.0, vec![(20.0, 28.0)])];
    let cloud = |s: f64| if (20.0..28.0).contains(&s) { 0.6 } else { 1.0 };
    for fps in [1.0, 2.0] {
        let events = run_pictured(rule(|_| {}), &things, 60.0, fps, cloud);
        assert_eq!(counts(&events), [(EventKind::Opened, 1)], "{fps} fps: {events:?}");
    }
}

#[test]
fn an_object_cut_by_the_frame_edge_is_gone_when_it_leaves() {
    // 60 px wide at x = 960: a third of it beyond the right edge.
    let things = [standing(960.0, 800.0, 2.0, 30.0, vec![])];
    for fps in [1.0, 2.0] {
        let events = run_pictured(rule(|_| {}), &things, 60.0, fps, daylight);
        assert_eq!(kinds(&events), [EventKind::Opened, EventKind::Resolved], "{fps} fps: {events:?}");
        assert!(events[1].0 <= 30.0 + 5.0, "{fps} fps: {events:?}");
    }
}

#[test]
fn a_parked_object_that_rides_off_through_the_zone_resolves_after_it_left() {
    // Parked 2-30 s, then off to the right at 300 px/s: seen moving once or twice at most.
    let rides: [Painted; 1] = [Box::new(|s| {
        let x = if s < 30.0 { 400.0 } else { 400.0 + ((s - 30.0) * 300.0) as f32 };
        let d = obj(x, 800.0);
        (s >= 2.0 && x < W as f32).then_some((d.bbox, OBJECT, Some(d)))
    })];
    let grace = TrackerConfig::default().gone_after.as_secs_f64();
    for fps in [1.0, 2.0] {
        let events = run_pictured(rule(|_| {}), &rides, 60.0, fps, daylight);
        assert_eq!(kinds(&events), [EventKind::Opened, EventKind::Resolved], "{fps} fps: {events:?}");
        assert!(events[1].0 <= 30.0 + 5.0 + grace + 1.0 / fps, "{fps} fps: {events:?}");
    }
}

proptest! {
    // Few cases: a pictured frame costs ~20 ms unoptimised (the resize is compiled in this crate).
    #![proptest_config(ProptestConfig { cases: 8, .. ProptestConfig::default() })]

    /// An object that vanishes with nothing over its place resolves within clear_after + the
    /// grace + one frame interval of its last sighting, wherever it stood and however long.
    #[test]
    fn a_vanished_object_resolves_within_clear_after_and_the_grace_of_its_last_sighting(
        fps in prop_oneof![Just(1.0), Just(2.0)],
        arrives in 1.0f64..5.0,
        stays in 15.0f64..40.0,
        x in 0.0f32..940.0,
        bottom in 560.0f32..1000.0,
        clear_after in 1u64..8,
    ) {
        let r = rule(|r| r.clear_after = Duration::from_secs(clear_after));
        let until = arrives + stays;
        let events = run_pictured(r, &[standing(x, bottom, arrives, until, vec![])], until + 20.0, fps, daylight);
        prop_assert_eq!(kinds(&events), vec![EventKind::Opened, EventKind::Resolved]);
        let last_seen = ((until * fps).ceil() - 1.0) / fps;
        let grace = TrackerConfig::default().gone_after.as_secs_f64();
        let resolved = events[1].0 - last_seen;
        prop_assert!(
            resolved >= clear_after as f64 && resolved <= clear_after as f64 + grace + 1.0 / fps,
            "resolved {} s after its last sighting: {:?}", resolved, events
        );
    }
}

/// A schedule in Ho Chi Minh City time of `(days, from, to)` windows. `t(0.0)` is Wednesday
/// 2023-11-15 05:13:20 there, so 05:14 is `t(40.0)`.
fn hcmc(windows: &[([bool; 7], &str, &str)]) -> Option<Schedule> {
    let windows = windows.iter().map(|&(days, from, to)| schedule::Window {
        days,
        from: schedule::parse_time(from).unwrap(),
        to: schedule::parse_time(to).unwrap(),
    });
    Some(Schedule::new(windows.collect(), "Asia/Ho_Chi_Minh".parse().unwrap()))
}

const WEDNESDAY: [bool; 7] = [false, false, true, false, false, false, false];

/// Every event of `rule` over a car parked from 3 s to `until`, at 1 frame a second.
fn parked_events(rules: &mut CameraRules, from: u32, to: u32, until: f64) -> Vec<(f64, EventKind, Option<ResolvedBy>)> {
    let car = parked(400.0, 800.0, 3.0, until, vec![]);
    (from..to)
        .flat_map(|i| rules.observe(t(i as f64), car(i as f64).as_slice(), W, W, None))
        .map(|e| ((e.at - t(0.0)).as_seconds_f64(), e.kind, e.resolved_by))
        .collect()
}

#[test]
fn outside_its_hours_a_rule_opens_nothing_and_resolves_what_is_open_when_they_end() {
    let r = rule(|r| r.schedule = hcmc(&[(WEDNESDAY, "05:00", "05:14")]));
    let mut rules = CameraRules::new(&camera(r));
    let events = parked_events(&mut rules, 0, 120, 100.0);
    assert_eq!(
        events,
        [(13.0, EventKind::Opened, None), (40.0, EventKind::Resolved, Some(ResolvedBy::Schedule))],
        "the car stays till 100 s, but the hours end at 05:14 (40 s)"
    );
    assert_eq!(rules.view(t(119.0))[0].state, "off");
}

#[test]
fn an_object_already_there_when_the_hours_begin_dwells_from_their_start() {
    // On from 05:14 (40 s): the car parked at 3 s opens at 50 s, not at once.
    let r = rule(|r| r.schedule = hcmc(&[(WEDNESDAY, "05:14", "06:00")]));
    let events = parked_events(&mut CameraRules::new(&camera(r)), 0, 80, 100.0);
    assert_eq!(events, [(50.0, EventKind::Opened, None)]);
}

#[test]
fn a_window_that_starts_as_another_ends_keeps_the_open_incident() {
    let r = rule(|r| r.schedule = hcmc(&[(WEDNESDAY, "05:00", "05:14"), (WEDNESDAY, "05:14", "05:30")]));
    let events = parked_events(&mut CameraRules::new(&camera(r)), 0, 140, 60.0);
    assert_eq!(kinds(&events.iter().map(|e| (e.0, e.1, 0)).collect()), [EventKind::Opened, EventKind::Resolved]);
    assert_eq!(events[1].2, Some(ResolvedBy::Clear), "resolved when the car left, not at 05:14: {events:?}");
}

#[test]
fn a_daemon_started_within_the_hours_watches_at_once() {
    // The first frame is in the middle of a window that began an hour before.
    let r = rule(|r| r.schedule = hcmc(&[(WEDNESDAY, "04:00", "06:00")]));
    let events = parked_events(&mut CameraRules::new(&camera(r)), 0, 20, 100.0);
    assert_eq!(events, [(13.0, EventKind::Opened, None)]);
}

#[test]
fn an_incident_open_at_its_due_time_is_reported_overdue_once_even_across_a_restart() {
    let r = rule(|r| r.respond_within = Duration::from_secs(30));
    // Opened at 13 s, due at 43 s: one update then, none after, the resolve when it leaves.
    let events = parked_events(&mut CameraRules::new(&camera(r.clone())), 0, 130, 40.0);
    let summary: Vec<(f64, EventKind)> = events.iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(summary[..2], [(13.0, EventKind::Opened), (43.0, EventKind::Updated)], "{events:?}");
    assert_eq!(kinds(&events.iter().map(|e| (e.0, e.1, 0)).collect())[2..], [EventKind::Resolved], "{events:?}");

    // Restarted before the due time: the overdue update still comes, once.
    let mut first = CameraRules::new(&camera(r.clone()));
    parked_events(&mut first, 0, 20, 100.0);
    let mut second = CameraRules::new(&camera(r.clone()));
    second.restore(
        &serde_json::from_str::<Vec<(String, Saved)>>(&serde_json::to_string(&first.saved()).unwrap()).unwrap(),
    );
    let after = parked_events(&mut second, 25, 80, 100.0);
    assert_eq!(after.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>(), [(43.0, EventKind::Updated)]);

    // Restarted after it: none again.
    let mut third = CameraRules::new(&camera(r));
    third.restore(&second.saved());
    assert_eq!(parked_events(&mut third, 85, 95, 100.0), []);
    // A state file from before due times reads as not yet reported.
    let old = r#"[["sidewalk",{"state":"open","incident_id":"6f0c1f0e-6a51-4a2a-9c51-1f6a1e0a0b01","started_at":"2023-11-14T22:13:23Z","opened_at":"2023-11-14T22:13:33Z","count":1}]]"#;
    assert!(matches!(
        serde_json::from_str::<Vec<(String, Saved)>>(old).unwrap()[0].1,
        Saved::Open { overdue_reported: false, .. }
    ));
}

#[test]
fn an_incident_paused_by_the_camera_still_reports_overdue_once() {
    let r = rule(|r| r.respond_within = Duration::from_secs(30));
    let mut rules = CameraRules::new(&camera(r));
    parked_events(&mut rules, 0, 20, 100.0);
    let paused = rules.pause(t(20.0), "view_blocked");
    assert_eq!(
        paused.iter().map(|e| (e.kind, e.paused_by)).collect::<Vec<_>>(),
        [(EventKind::Updated, Some("view_blocked"))]
    );
    assert!(rules.overdue_while_paused(t(42.0)).is_empty(), "due at 43 s");
    let overdue = rules.overdue_while_paused(t(43.0));
    assert_eq!(
        overdue.iter().map(|e| (e.kind, e.paused_by)).collect::<Vec<_>>(),
        [(EventKind::Updated, Some("view_blocked"))]
    );
    assert!(rules.overdue_while_paused(t(60.0)).is_empty(), "once");
    rules.resume();
    assert!(rules.overdue_while_paused(t(61.0)).is_empty(), "only while paused");
    assert!(!parked_events(&mut rules, 61, 70, 100.0).iter().any(|e| e.1 == EventKind::Updated), "and not again");
}

#[test]
fn a_dismissed_incident_resolves_and_its_object_is_not_reported_again_while_it_stays() {
    let r = rule(|r| r.cooldown = Duration::ZERO);
    let mut rules = CameraRules::new(&camera(r.clone()));
    let parked = |i: u32| obj(400.0, 800.0 + (i % 3) as f32);
    let opened: Vec<IncidentEvent> =
        (0..20).flat_map(|i| rules.observe(t(i as f64), &[parked(i)], W, W, None)).collect();
    assert_eq!(opened.len(), 1);
    let incident = opened[0].incident_id;
    assert!(rules.feedback(Uuid::new_v4(), Feedback::Dismiss, t(20.0)).is_none(), "not its incident");
    let resolved = rules.feedback(incident, Feedback::Dismiss, t(20.0)).unwrap();
    assert_eq!(
        (resolved.len(), resolved[0].kind, resolved[0].resolved_by),
        (1, EventKind::Resolved, Some(ResolvedBy::Dismissed))
    );
    // It stays, a detection missed now and then: nothing.
    let frames = |rules: &mut CameraRules, from: u32, to: u32| -> Vec<IncidentEvent> {
        (from..to)
            .flat_map(|i| rules.observe(t(i as f64), &if i % 7 == 0 { vec![] } else { vec![parked(i)] }, W, W, None))
            .collect()
    };
    assert!(frames(&mut rules, 20, 60).is_empty());
    // Across a restart (new tracks, known by the box): still nothing.
    let mut again = CameraRules::new(&camera(r.clone()));
    again.restore(&rules.saved());
    assert!(frames(&mut again, 63, 100).is_empty());
    // Another object parking beside it is reported, alone.
    let other: Vec<IncidentEvent> =
        (100..120).flat_map(|i| again.observe(t(i as f64), &[parked(i), obj(700.0, 800.0)], W, W, None)).collect();
    assert_eq!(other.len(), 1, "{other:?}");
    assert_eq!(other[0].objects.len(), 1);
    assert_eq!(other[0].objects[0].bbox.x1, 700.0, "the other one");
    // Once it has left for clear_after, the same place may be reported again.
    let mut fresh = CameraRules::new(&camera(r.clone()));
    fresh.restore(&rules.saved());
    // (After a restart it is looked for until it could be tracked again, as an open incident's
    // objects are: stationary_after, then clear_after.)
    let looked_for = fresh.rules[0].tracker.config().stationary_after + r.clear_after;
    let gone = 130 + looked_for.as_secs() as u32 + 1;
    for i in 130..gone {
        fresh.observe(t(i as f64), &[], W, W, None);
    }
    assert!(fresh.saved().iter().all(|(_, s)| !matches!(s, Saved::Dismissed { .. })), "forgotten once gone");
    let back: Vec<IncidentEvent> =
        (gone..gone + 20).flat_map(|i| fresh.observe(t(i as f64), &[parked(i)], W, W, None)).collect();
    assert_eq!(back.len(), 1);
}

#[test]
fn an_acknowledged_incident_sends_no_periodic_update_even_after_a_restart() {
    let r = rule(|r| r.update_every = Some(Duration::from_secs(5)));
    let mut rules = CameraRules::new(&camera(r.clone()));
    let events: Vec<IncidentEvent> =
        (0..30).flat_map(|i| rules.observe(t(i as f64), &[obj(400.0, 800.0)], W, W, None)).collect();
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert!(kinds.starts_with(&[EventKind::Opened, EventKind::Updated]), "{kinds:?}");
    assert_eq!(rules.feedback(events[0].incident_id, Feedback::Acknowledge, t(30.0)).map(|e| e.len()), Some(0));
    let after: Vec<IncidentEvent> =
        (30..60).flat_map(|i| rules.observe(t(i as f64), &[obj(400.0, 800.0)], W, W, None)).collect();
    assert!(after.is_empty(), "{after:?}");
    let mut again = CameraRules::new(&camera(r));
    again.restore(&rules.saved());
    let after: Vec<IncidentEvent> =
        (60..90).flat_map(|i| again.observe(t(i as f64), &[obj(400.0, 800.0)], W, W, None)).collect();
    assert!(after.is_empty(), "{after:?}");
    // A change of count is still reported.
    let more: Vec<IncidentEvent> = (90..110)
        .flat_map(|i| again.observe(t(i as f64), &[obj(400.0, 800.0), obj(700.0, 800.0)], W, W, None))
        .collect();
    assert_eq!(more.iter().map(|e| (e.kind, e.objects.len())).collect::<Vec<_>>(), [(EventKind::Updated, 2)]);
}
