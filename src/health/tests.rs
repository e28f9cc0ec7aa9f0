//! The health detectors on generated frames with injected time: a street of random shapes, the
//! same street shifted, black, a hand over the lens, a truck filling half the view.

use super::*;
use crate::config::CameraUrl;
use chrono::TimeDelta;

const W: u32 = 320;
const H: u32 = 180;

fn t(secs: f64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap() + TimeDelta::milliseconds((secs * 1000.0) as i64)
}

fn camera() -> Camera {
    Camera::at("cam", CameraUrl::parse("rtsp://127.0.0.1/cam").unwrap())
}

/// A small seeded generator (xorshift).
fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// A street twice as wide as the view: a gradient with 300 rectangles of random size and luma.
fn world() -> Vec<u8> {
    let (ww, wh) = (2 * W as usize, H as usize);
    let mut img: Vec<u8> = (0..ww * wh).map(|i| (70 + (i / ww) * 60 / wh) as u8).collect();
    let mut seed = 0x5eed_u64;
    for _ in 0..300 {
        let (x, y) = (rng(&mut seed) as usize % ww, rng(&mut seed) as usize % wh);
        let (w, h) = (4 + rng(&mut seed) as usize % 30, 4 + rng(&mut seed) as usize % 30);
        let v = (30 + rng(&mut seed) % 200) as u8;
        for row in y..(y + h).min(wh) {
            img[row * ww + x..row * ww + (x + w).min(ww)].fill(v);
        }
    }
    img
}

/// The view of `world` from `offset` pixels across, with a little noise.
fn view(world: &[u8], offset: usize, noise_seed: u64) -> Vec<u8> {
    let ww = 2 * W as usize;
    let mut seed = noise_seed | 1;
    (0..(W * H) as usize)
        .map(|i| {
            let (x, y) = (i % W as usize, i / W as usize);
            let v = world[y * ww + x + offset] as i32 + (rng(&mut seed) % 5) as i32 - 2;
            v.clamp(16, 235) as u8
        })
        .collect()
}

fn black() -> Vec<u8> {
    vec![16; (W * H) as usize]
}

/// A hand close to the lens: a smooth blob of skin, lighter in the middle.
fn hand() -> Vec<u8> {
    (0..(W * H) as usize)
        .map(|i| {
            let (x, y) = ((i % W as usize) as f32 - 160.0, (i / W as usize) as f32 - 90.0);
            (110.0 - (x * x + y * y).sqrt() * 0.35) as u8
        })
        .collect()
}

/// The street with a flat box truck covering its left half.
fn truck(world: &[u8]) -> Vec<u8> {
    let mut v = view(world, 0, 7);
    for row in v.chunks_mut(W as usize) {
        row[..(W / 2) as usize].fill(150);
    }
    v
}

fn luma(data: &[u8]) -> Luma<'_> {
    Luma { width: W, height: H, data, full_range: false }
}

/// Runs frames at 2 per second, `picture(s)` giving each: (seconds, event kind, violation).
fn run(health: &mut Health, from: f64, to: f64, picture: impl Fn(f64) -> Vec<u8>) -> Vec<(f64, EventKind, String)> {
    let mut events = Vec::new();
    let mut s = from;
    while s < to {
        for e in health.observe(t(s), luma(&picture(s))) {
            events.push(((e.at - t(0.0)).as_seconds_f64(), e.kind, e.rule.violation.clone()));
        }
        s += 0.5;
    }
    events
}

#[test]
fn the_measures_tell_a_street_from_black_a_hand_and_another_view() {
    let world = world();
    let mut h = Health::new(&camera(), None, t(0.0));
    h.observe(t(0.0), luma(&view(&world, 0, 1)));
    let street = h.last_measure().unwrap();
    let mut at = |data: &[u8], s: f64| {
        h.observe(t(s), luma(data));
        h.last_measure().unwrap()
    };
    let same = at(&view(&world, 0, 2), 0.5);
    let shifted = at(&view(&world, 32, 3), 1.0);
    let (dark, covered, half) = (at(&black(), 1.5), at(&hand(), 2.0), at(&truck(&world), 2.5));
    eprintln!(
        "street {street:?}\nsame {same:?}\nshifted {shifted:?}\nblack {dark:?}\nhand {covered:?}\ntruck {half:?}"
    );
    let s = HealthSettings::default();
    assert!(street.edges > 10.0 * s.blocked_edges, "{street:?}");
    assert!(same.likeness.unwrap() > 0.8, "the same view, other noise: {same:?}");
    assert!(shifted.likeness.unwrap() < s.moved_likeness / 2.0, "a tenth across: {shifted:?}");
    assert!(dark.spread < 1.0 && dark.edges < s.blocked_edges, "{dark:?}");
    assert!(covered.edges < s.blocked_edges, "a hand: {covered:?}");
    assert!(half.edges > 4.0 * s.blocked_edges, "half a street is still a street: {half:?}");
}

#[test]
fn a_black_view_opens_a_blocked_case_after_its_time_and_the_picture_returning_resolves_it() {
    let world = world();
    let mut h = Health::new(&camera(), None, t(0.0));
    let picture = |s: f64| if (10.0..50.0).contains(&s) { black() } else { view(&world, 0, s.to_bits()) };
    let events = run(&mut h, 0.0, 70.0, picture);
    let blocked = "view_blocked".to_string();
    assert_eq!(events, [(30.0, EventKind::Opened, blocked.clone()), (55.0, EventKind::Resolved, blocked)]);
}

#[test]
fn a_hand_over_the_lens_is_a_blocked_view() {
    let world = world();
    let mut h = Health::new(&camera(), None, t(0.0));
    let events = run(&mut h, 0.0, 40.0, |s| if s < 5.0 { view(&world, 0, 1) } else { hand() });
    assert_eq!(events, [(25.0, EventKind::Opened, "view_blocked".to_string())]);
    assert_eq!(h.pausing(), Some(Kind::Blocked));
    assert!(!h.view_ok());
}

#[test]
fn a_view_shifted_by_a_tenth_of_the_frame_opens_a_moved_case_until_it_is_put_back() {
    let world = world();
    let mut h = Health::new(&camera(), None, t(0.0));
    let picture = |s: f64| view(&world, if (10.0..60.0).contains(&s) { 32 } else { 0 }, s.to_bits());
    let events = run(&mut h, 0.0, 80.0, picture);
    let moved = "view_moved".to_string();
    assert_eq!(events, [(40.0, EventKind::Opened, moved.clone()), (65.0, EventKind::Resolved, moved)]);
    assert!(h.take_new_reference().is_some(), "the first frame became the reference");
    assert!(h.take_new_reference().is_none(), "once");
}

#[test]
fn a_truck_filling_half_the_view_for_5_s_opens_nothing() {
    let world = world();
    let mut h = Health::new(&camera(), None, t(0.0));
    let picture = |s: f64| if (10.0..15.0).contains(&s) { truck(&world) } else { view(&world, 0, s.to_bits()) };
    assert_eq!(run(&mut h, 0.0, 60.0, picture), []);
}

#[test]
fn a_silent_camera_is_offline_after_its_limit_and_its_next_frame_resolves_it() {
    let world = world();
    let mut h = Health::new(&camera(), None, t(0.0));
    h.observe(t(1.0), luma(&view(&world, 0, 1)));
    assert!(h.silent(t(300.0)).is_empty(), "299 s of silence");
    let opened = h.silent(t(301.5));
    assert_eq!(opened.len(), 1);
    assert_eq!((opened[0].kind, opened[0].rule.violation.as_str()), (EventKind::Opened, "camera_offline"));
    assert_eq!((opened[0].started_at, opened[0].opened_at), (t(1.0), t(301.5)), "silent since its last frame");
    assert_eq!(opened[0].rule.category, Category::UrbanInfrastructure);
    assert!(h.silent(t(400.0)).is_empty(), "once");
    assert_eq!(h.pausing(), Some(Kind::Offline));
    let back = h.observe(t(420.0), luma(&view(&world, 0, 2)));
    assert_eq!(
        back.iter().map(|e| (e.kind, e.incident_id)).collect::<Vec<_>>(),
        [(EventKind::Resolved, opened[0].incident_id)]
    );
    assert_eq!(h.pausing(), None);
}

#[test]
fn turning_the_watch_off_resolves_what_is_open() {
    let world = world();
    let mut h = Health::new(&camera(), None, t(0.0));
    run(&mut h, 0.0, 30.0, |s| if s < 5.0 { view(&world, 0, 1) } else { black() });
    assert_eq!(h.pausing(), Some(Kind::Blocked));
    assert!(h.reconfigure(&camera(), t(30.0)).is_empty(), "still on: the case goes on");
    let mut off = camera();
    off.health.enabled = false;
    let resolved = h.reconfigure(&off, t(31.0));
    assert_eq!(resolved.len(), 1);
    assert_eq!(
        (resolved[0].kind, resolved[0].resolved_by),
        (EventKind::Resolved, Some(crate::rules::ResolvedBy::Config))
    );
    assert_eq!(h.pausing(), None);
}

#[test]
fn an_open_case_survives_a_restart_and_resolves_once_the_view_is_back() {
    let world = world();
    let mut first = Health::new(&camera(), None, t(0.0));
    run(&mut first, 0.0, 40.0, |s| if s < 5.0 { view(&world, 0, 1) } else { black() });
    let saved: Vec<(String, Saved)> = serde_json::from_str(&serde_json::to_string(&first.saved()).unwrap()).unwrap();
    assert_eq!(saved.len(), 1);
    let reference = first.take_new_reference();
    let mut second = Health::new(&camera(), reference, t(100.0));
    second.restore(&saved);
    assert_eq!(second.pausing(), Some(Kind::Blocked));
    let events = run(&mut second, 100.0, 120.0, |s| view(&world, 0, s.to_bits()));
    assert_eq!(events, [(105.0, EventKind::Resolved, "view_blocked".to_string())]);
}

#[test]
fn a_reference_reads_back_from_its_pgm() {
    let reference = Reference { columns: 3, rows: 2, cells: vec![0.0, 10.0, 20.0, 30.0, 254.6, 255.0] };
    let pgm = reference.to_pgm();
    assert!(pgm.starts_with(b"P5\n3 2\n255\n"));
    let back = Reference::from_pgm(&pgm).unwrap();
    assert_eq!(back.cells, [0.0, 10.0, 20.0, 30.0, 255.0, 255.0]);
    assert_eq!(Reference::from_pgm(b"P5\n3 2\n255\nabc"), None, "too short");
    assert_eq!(Reference::from_pgm(b"P6\n1 1\n255\nabc"), None);
}
