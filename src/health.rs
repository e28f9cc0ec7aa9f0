//! Camera health: a camera that is dead, covered or turned away is itself a case for the
//! infrastructure team, and it silently ends every other rule on it. [`Health`] watches one
//! camera for three cases, reported as `urban_infrastructure` incidents with the same
//! lifecycle as a rule's (opened, resolved, kept across restarts):
//!
//! - **`camera_offline`**: no frame for `offline_after` (wall time, checked once a second by the
//!   unit: a dead camera sends no stream time); resolved by the next frame.
//! - **`view_blocked`**: the picture has no structure for `blocked_after`: under `blocked_edges`
//!   of the grid's cells on an edge: black, a hand or a bag over the lens (smooth, out of
//!   focus), sprayed paint. Edges rather than the spread of luma, because a smooth gradient
//!   (the hand) spreads as much as a dim street; a truck filling half the view leaves the other
//!   half's edges.
//! - **`view_moved`**: the scene's structure no longer matches a reference picture taken when
//!   the camera was set up, for `moved_after`. The measure is the normalised cross-correlation
//!   of gradient magnitudes on a coarse grid ([`ACROSS`] cells wide) at zero offset: gradients,
//!   not luma, so the light of the day changes little; a coarse grid, so compression noise and
//!   the sway of a pole average out; zero offset, because a camera that has turned by a tenth
//!   of its view has its edges a tenth away, where they correlate no better than another scene.
//!   Feature matching (ORB and the like) would say more (how far it turned) but needs a vision
//!   library for a yes or no. Passing traffic covers part of the view for seconds, not for
//!   `moved_after`; a case resolves only once the view matches again for `clear_after`.
//!
//! While a case is open the camera's rules pause (see [`crate::rules::CameraRules::pause`]).
//! The reference is the grid of the first picture with structure, saved by the unit as a PGM
//! in the state directory; deleting it (or the workbench's button) makes the next one the
//! reference.

use crate::config::{Camera, Category, HealthSettings, Rule, Templates, Zone};
use crate::rules::{EventKind, IncidentEvent, ResolvedBy, Saved};
use crate::scene::{Grid, Luma};
use crate::track::secs;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use uuid::Uuid;

/// Cells across the health grid.
pub const ACROSS: u32 = 64;
/// A cell whose luma differs from its right or lower neighbour's by more than this many levels
/// is on an edge.
const EDGE_LEVELS: f32 = 6.0;
/// A moved view resolves only once its likeness is this much above `moved_likeness`.
const LIKENESS_MARGIN: f32 = 0.1;

/// The kinds of case, in the order they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Offline,
    Blocked,
    Moved,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Offline, Kind::Blocked, Kind::Moved];

    /// The violation (and rule id) its reports carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Offline => "camera_offline",
            Kind::Blocked => "view_blocked",
            Kind::Moved => "view_moved",
        }
    }

    /// The kind a report's rule id names, if it is a health case.
    pub fn of(rule_id: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == rule_id)
    }
}

/// One of a thing per kind.
#[derive(Debug, Clone, Default)]
struct ByKind<T> {
    offline: T,
    blocked: T,
    moved: T,
}

impl<T> ByKind<T> {
    fn new(mut make: impl FnMut(Kind) -> T) -> Self {
        Self { offline: make(Kind::Offline), blocked: make(Kind::Blocked), moved: make(Kind::Moved) }
    }

    fn get(&self, kind: Kind) -> &T {
        match kind {
            Kind::Offline => &self.offline,
            Kind::Blocked => &self.blocked,
            Kind::Moved => &self.moved,
        }
    }

    fn get_mut(&mut self, kind: Kind) -> &mut T {
        match kind {
            Kind::Offline => &mut self.offline,
            Kind::Blocked => &mut self.blocked,
            Kind::Moved => &mut self.moved,
        }
    }
}

/// What one frame's picture says about the view.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measure {
    /// Standard deviation of the grid's luma, in levels.
    pub spread: f32,
    /// Fraction of the grid's cells on an edge.
    pub edges: f32,
    /// Structure likeness to the reference (1: the same view, about 0: another); `None` without
    /// a reference of the same grid.
    pub likeness: Option<f32>,
}

/// A reference picture: the grid of a frame with structure.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub columns: u32,
    pub rows: u32,
    /// Luma above black per cell, row by row.
    pub cells: Vec<f32>,
}

impl Reference {
    /// As a binary PGM (viewable), one byte per cell.
    pub fn to_pgm(&self) -> Vec<u8> {
        let mut out = format!("P5\n{} {}\n255\n", self.columns, self.rows).into_bytes();
        out.extend(self.cells.iter().map(|&v| v.round().clamp(0.0, 255.0) as u8));
        out
    }

    /// Reads what [`Self::to_pgm`] wrote.
    pub fn from_pgm(bytes: &[u8]) -> Option<Self> {
        let mut fields = Vec::new();
        let mut at = 0;
        while fields.len() < 4 {
            let rest = bytes.get(at..)?;
            let start = at + rest.iter().position(|b| !b.is_ascii_whitespace())?;
            let len = bytes.get(start..)?.iter().position(|b| b.is_ascii_whitespace())?;
            fields.push(std::str::from_utf8(bytes.get(start..start + len)?).ok()?.to_string());
            at = start + len + 1;
        }
        let number = |i: usize| fields.get(i)?.parse::<u32>().ok();
        let (columns, rows) = (number(1)?, number(2)?);
        let data = bytes.get(at..)?;
        let ok = fields.first()? == "P5" && number(3)? == 255 && data.len() == (columns * rows) as usize;
        ok.then(|| Self { columns, rows, cells: data.iter().map(|&v| v as f32).collect() })
    }
}

/// One kind's case: its hysteresis and, while open, the incident.
#[derive(Debug, Clone, Default)]
struct Watch {
    /// Since when the view has been bad (or the camera silent), without a break.
    bad_since: Option<DateTime<Utc>>,
    /// While open: since when it has been good again.
    good_since: Option<DateTime<Utc>>,
    open: Option<Case>,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    incident_id: Uuid,
    started_at: DateTime<Utc>,
    opened_at: DateTime<Utc>,
}

impl Case {
    /// An event of this case of `rule` at `at`; a resolved one ends for `resolved_by`.
    fn event(&self, kind: EventKind, rule: &Arc<Rule>, at: DateTime<Utc>, resolved_by: ResolvedBy) -> IncidentEvent {
        IncidentEvent {
            kind,
            incident_id: self.incident_id,
            rule: rule.clone(),
            started_at: self.started_at,
            opened_at: self.opened_at,
            at,
            objects: Vec::new(),
            resolved_by: (kind == EventKind::Resolved).then_some(resolved_by),
            paused_by: None,
        }
    }
}

/// One camera's health; see the module docs.
#[derive(Debug)]
pub struct Health {
    settings: HealthSettings,
    /// The report rule of each kind.
    rules: ByKind<Arc<Rule>>,
    watches: ByKind<Watch>,
    grid: Grid,
    reference: Option<Reference>,
    /// A reference taken from a frame and not yet handed to the unit to save.
    taken: bool,
    /// The stream time of the last frame, or the start.
    last_frame: DateTime<Utc>,
    last: Option<Measure>,
}

impl Health {
    /// Watches `camera` from `now`, comparing its view with `reference` (none: the first
    /// picture with structure becomes it).
    pub fn new(camera: &Camera, reference: Option<Reference>, now: DateTime<Utc>) -> Self {
        Self {
            settings: camera.health.clone(),
            rules: ByKind::new(|kind| Arc::new(rule(camera, kind))),
            watches: ByKind::default(),
            grid: Grid::new(ACROSS),
            reference,
            taken: false,
            last_frame: now,
            last: None,
        }
    }

    /// Takes `camera`'s changed settings at `at` (a reload): open cases go on, unless the watch
    /// was turned off, which resolves them (`resolved_by: config`, the events returned).
    pub fn reconfigure(&mut self, camera: &Camera, at: DateTime<Utc>) -> Vec<IncidentEvent> {
        self.settings = camera.health.clone();
        self.rules = ByKind::new(|kind| Arc::new(rule(camera, kind)));
        if self.settings.enabled {
            return Vec::new();
        }
        (Kind::ALL.into_iter())
            .filter_map(|kind| {
                let case = self.watches.get_mut(kind).open.take()?;
                Some(case.event(EventKind::Resolved, self.rules.get(kind), at, ResolvedBy::Config))
            })
            .collect()
    }

    /// The case that pauses the camera's rules, if one is open (the first by [`Kind::ALL`]).
    pub fn pausing(&self) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| self.watches.get(*k).open.is_some())
    }

    /// The kinds with an open case.
    pub fn open(&self) -> impl Iterator<Item = Kind> + '_ {
        Kind::ALL.into_iter().filter(|k| self.watches.get(*k).open.is_some())
    }

    /// What the last frame's picture said.
    pub fn last_measure(&self) -> Option<Measure> {
        self.last
    }

    /// Whether the last frame showed the view as it should be: a good frame to show later.
    pub fn view_ok(&self) -> bool {
        self.last.is_some_and(|m| !self.blocked(&m) && !self.moved(&m))
    }

    /// A reference taken since the last call, to be saved.
    pub fn take_new_reference(&mut self) -> Option<Reference> {
        std::mem::take(&mut self.taken).then(|| self.reference.clone()).flatten()
    }

    /// Forgets the reference: the next picture with structure becomes it.
    pub fn retake_reference(&mut self) {
        self.reference = None;
    }

    fn blocked(&self, m: &Measure) -> bool {
        m.edges < self.settings.blocked_edges
    }

    fn moved(&self, m: &Measure) -> bool {
        let limit = self.settings.moved_likeness;
        let open = self.watches.get(Kind::Moved).open.is_some();
        // Hysteresis: an open case needs a clearly better likeness to count as back.
        m.likeness.is_some_and(|l| l < if open { limit + LIKENESS_MARGIN } else { limit })
    }

    /// A frame at stream time `at`: the events of the cases it opens or resolves.
    pub fn observe(&mut self, at: DateTime<Utc>, luma: Luma<'_>) -> Vec<IncidentEvent> {
        let mut events = Vec::new();
        if !self.settings.enabled {
            return events;
        }
        self.last_frame = at;
        events.extend(self.step(Kind::Offline, at, false));
        self.grid.scale(luma);
        let mut m = measure(&self.grid);
        let blocked = self.blocked(&m);
        if self.reference.is_none() && !blocked {
            self.reference =
                Some(Reference { columns: self.grid.columns, rows: self.grid.rows, cells: self.grid.cells.clone() });
            self.taken = true;
        }
        m.likeness = self.reference.as_ref().and_then(|r| likeness(&self.grid, r));
        self.last = Some(m);
        events.extend(self.step(Kind::Blocked, at, blocked));
        // A blocked view says nothing about where the camera points.
        let moved = !blocked && self.moved(&m);
        if !blocked {
            events.extend(self.step(Kind::Moved, at, moved));
        }
        events
    }

    /// No frame by wall time `now`: opens the offline case once the camera has been silent
    /// for `offline_after`.
    pub fn silent(&mut self, now: DateTime<Utc>) -> Vec<IncidentEvent> {
        if !self.settings.enabled || now - self.last_frame < secs(self.settings.offline_after) {
            return Vec::new();
        }
        let watch = self.watches.get_mut(Kind::Offline);
        watch.bad_since.get_or_insert(self.last_frame);
        self.step(Kind::Offline, now, true).into_iter().collect()
    }

    /// One kind's hysteresis at `at`, where the view (or the stream) is `bad` or not.
    fn step(&mut self, kind: Kind, at: DateTime<Utc>, bad: bool) -> Option<IncidentEvent> {
        let s = &self.settings;
        let (open_after, clear_after) = match kind {
            // A silent camera's case opens on the silence's own clock; a frame ends it.
            Kind::Offline => (s.offline_after, std::time::Duration::ZERO),
            Kind::Blocked => (s.blocked_after, s.clear_after),
            Kind::Moved => (s.moved_after, s.clear_after),
        };
        let rule = self.rules.get(kind).clone();
        let watch = self.watches.get_mut(kind);
        if !bad {
            watch.bad_since = None;
        }
        let event = |kind, case: &Case| case.event(kind, &rule, at, ResolvedBy::Clear);
        match &watch.open {
            None if bad => {
                let since = *watch.bad_since.get_or_insert(at);
                (at - since >= secs(open_after)).then(|| {
                    let case = Case { incident_id: Uuid::new_v4(), started_at: since, opened_at: at };
                    watch.open = Some(case);
                    watch.good_since = None;
                    event(EventKind::Opened, &case)
                })
            }
            None => None,
            Some(_) if bad => {
                watch.good_since = None;
                None
            }
            Some(case) => {
                let case = *case;
                let good = *watch.good_since.get_or_insert(at);
                (at - good >= secs(clear_after)).then(|| {
                    watch.open = None;
                    watch.good_since = None;
                    event(EventKind::Resolved, &case)
                })
            }
        }
    }

    /// The open cases, to keep across a restart (by their kinds' rule ids).
    pub fn saved(&self) -> Vec<(String, Saved)> {
        (Kind::ALL.into_iter())
            .filter_map(|kind| {
                let case = self.watches.get(kind).open?;
                let saved = Saved::Open {
                    incident_id: case.incident_id,
                    started_at: case.started_at,
                    opened_at: case.opened_at,
                    count: 0,
                    overdue_reported: false,
                    acknowledged: false,
                };
                Some((kind.as_str().to_string(), saved))
            })
            .collect()
    }

    /// Takes up the cases a previous run left open; they resolve once the view (or the stream)
    /// is good again.
    pub fn restore(&mut self, saved: &[(String, Saved)]) {
        for (id, saved) in saved {
            if let (Some(kind), Saved::Open { incident_id, started_at, opened_at, .. }) = (Kind::of(id), saved) {
                let case = Case { incident_id: *incident_id, started_at: *started_at, opened_at: *opened_at };
                self.watches.get_mut(kind).open = Some(case);
            }
        }
    }
}

/// The report rule of a health case on `camera`: the whole frame, the camera's place.
fn rule(camera: &Camera, kind: Kind) -> Rule {
    let s = &camera.health;
    Rule {
        id: kind.as_str().into(),
        violation: kind.as_str().into(),
        category: Category::UrbanInfrastructure,
        zone: Zone {
            name: "view".into(),
            polygon: vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]],
            membership: crate::config::Membership::Center,
            inertia: 1,
            place: camera.place.clone(),
        },
        model: 0,
        classes: Vec::new(),
        filters: Default::default(),
        min_count: 1,
        dwell: match kind {
            Kind::Offline => s.offline_after,
            Kind::Blocked => s.blocked_after,
            Kind::Moved => s.moved_after,
        },
        clear_after: s.clear_after,
        cooldown: std::time::Duration::ZERO,
        update_every: None,
        priority: s.priority,
        respond_within: s.respond_within,
        schedule: None,
        text: Templates::default(),
    }
}

/// Gradient magnitude per cell (right and lower neighbours), the last row and column 0.
fn gradients(columns: usize, cells: &[f32]) -> Vec<f32> {
    let at = |i: usize| cells.get(i).copied().unwrap_or(0.0);
    (0..cells.len())
        .map(|i| {
            let (c, below) = (i % columns.max(1), i + columns);
            if c + 1 >= columns || below >= cells.len() {
                return 0.0;
            }
            (at(i + 1) - at(i)).abs() + (at(below) - at(i)).abs()
        })
        .collect()
}

/// Spread and edges of `grid` (likeness left to the caller).
fn measure(grid: &Grid) -> Measure {
    let n = grid.cells.len().max(1) as f32;
    let mean = grid.cells.iter().sum::<f32>() / n;
    let spread = (grid.cells.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n).sqrt();
    let edges = gradients(grid.columns as usize, &grid.cells).iter().filter(|&&g| g > EDGE_LEVELS).count() as f32 / n;
    Measure { spread, edges, likeness: None }
}

/// Normalised cross-correlation of the gradient magnitudes of `grid` and `reference`, at zero
/// offset; `None` if their grids differ (the frame size changed).
fn likeness(grid: &Grid, reference: &Reference) -> Option<f32> {
    if (grid.columns, grid.rows) != (reference.columns, reference.rows) {
        return None;
    }
    let a = gradients(grid.columns as usize, &grid.cells);
    let b = gradients(reference.columns as usize, &reference.cells);
    let n = a.len().max(1) as f32;
    let (mean_a, mean_b) = (a.iter().sum::<f32>() / n, b.iter().sum::<f32>() / n);
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(&b) {
        let (x, y) = (x - mean_a, y - mean_b);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    Some(if aa > 0.0 && bb > 0.0 { ab / (aa * bb).sqrt() } else { 0.0 })
}

#[cfg(test)]
mod tests;
