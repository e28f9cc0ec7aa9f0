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
        },
        model: 0,
        classes: vec!["motorbike".into()],
        filters: BTreeMap::from([("motorbike".to_string(), filter)]),
        min_count: 1,
        dwell: Duration::from_secs(10),
        clear_after: Duration::from_secs(5),
        cooldown: Duration::from_secs(60),
        update_every: None,
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
        for e in rules.observe(t(s), &detections, W, W) {
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
        for e in first.observe(t(i as f64), &[obj(400.0, 800.0)], W, W) {
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
        events.extend(second.observe(t(i as f64), &[], W, W));
    }
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].kind, Some(events[0].incident_id)), (EventKind::Resolved, opened));
    assert_eq!(events[0].at, t(50.0));
    // Still there after a restart: no resolve, no second opened.
    let mut still = CameraRules::new(&camera(r.clone()));
    still.restore(&saved);
    assert_eq!((40..100).flat_map(|i| still.observe(t(i as f64), &[obj(400.0, 800.0)], W, W)).count(), 0);
    // Restarted again during the cooldown: an object parking there does not open anything.
    let mut third = CameraRules::new(&camera(r));
    third.restore(&second.saved());
    let reopened = (60..140).flat_map(|i| third.observe(t(i as f64), &[obj(400.0, 800.0)], W, W)).count();
    assert_eq!(reopened, 0);
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
        events += rules.observe(t(s), &dets, W, W).len();
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
