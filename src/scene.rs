//! What the picture says about a place: whether a parked object the detector missed has gone
//! or is only hidden.
//!
//! At 1-2 detections per second a miss says little: a motorbike that rides off is usually seen
//! in no frame while it moves, and one behind a bus is not seen either. The picture tells them
//! apart. Per camera, a [`Scene`] keeps:
//!
//! - **a background**: the frame's luma scaled to a grid [`GRID_WIDTH`] cells wide (box filter),
//!   averaged over time, and learned only where nothing is detected or tracked, so what stands
//!   behind a parked object is the street as it was before the object came; a large change is
//!   learned slowly, so a frame in which an object was visible but not yet detected leaves
//!   little trace, and something the model has no class for that parks joins the street only
//!   after minutes;
//! - **the light**: each frame's brightness against the background's, the median ratio over
//!   the cells that learn, estimated afresh each frame. The background is kept in the light of
//!   the first frame, and it and every object's signature are compared in the light of the
//!   frame, so a cloud or dusk is not taken for a change of place (and no estimate's noise
//!   piles up under objects that stand for hours);
//! - per stationary track, **a signature**: its box sampled on a [`SAMPLES`]² grid while it was
//!   seen and nothing else covered it ([`View::signature`]).
//!
//! When a stationary track is missed, [`View::place`] compares its place now with both, by the
//! mean absolute difference of luma over the same samples, measured in units of how different
//! the object was from the background (its contrast):
//!
//! - within [`NEAR`] of the contrast to the background, and so far from the object: **empty**;
//! - within [`NEAR`] of it to the object: the object is **still there** (the detector's score
//!   dropped: lighting, a partial view);
//! - neither: something stands in front, **covered**; so is a place a detection of any class
//!   overlaps by [`COVERED`] of its area;
//! - **unknown** where the picture cannot tell: a background never seen there (the object was
//!   there when the camera started), or an object that looks like the street (contrast below
//!   [`MIN_CONTRAST`]). Then the tracker coasts, as it would without a picture.
//!
//! Luma alone, on a coarse grid: cheap (the grid is made once per frame; a look is a few hundred
//! operations), and colour adds little at night. The choice and its figures are in the README.

use crate::detect::BBox;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image, images::ImageRef};

/// Grid cells across the frame (rows keep its aspect): 4 px cells at 640x360, 12 px at 1080p.
pub const GRID_WIDTH: u32 = 160;
/// Samples per side of a box: a signature is this many squared luma values.
pub const SAMPLES: usize = 8;
/// A place within this fraction of the object's contrast to the background (or to the object)
/// looks like it.
pub const NEAR: f32 = 0.35;
/// Least contrast, in luma levels, between an object and its background for the picture to
/// say anything: below it compression noise is as large as the difference.
pub const MIN_CONTRAST: f32 = 8.0;
/// A detection over this fraction of a place's area covers it.
pub const COVERED: f32 = 0.25;
/// Fraction of a box's samples whose background must have been seen.
const KNOWN: f32 = 0.9;
/// How fast the background learns, per frame: about 20 frames to follow a change.
const LEARN: f32 = 0.05;
/// A change of a cell larger than this many levels (something undetected arriving, a frame
/// before its detection) is learned [`SLOWLY`]: after minutes, not seconds.
const LARGE: f32 = 12.0;
const SLOWLY: f32 = 0.01;

/// A frame's luma plane (stride = width), as decoded.
#[derive(Debug, Clone, Copy)]
pub struct Luma<'a> {
    pub width: u32,
    pub height: u32,
    pub data: &'a [u8],
    /// 0..255 rather than TV range (black at 16).
    pub full_range: bool,
}

/// What the scene reads of a frame: its luma plane as decoded, or the grid a tuning tape kept of
/// it (so that rules can see a clip again without decoding it).
#[derive(Debug, Clone, Copy)]
pub enum Picture<'a> {
    Luma(Luma<'a>),
    Cells(&'a Cells),
}

impl<'a> From<Luma<'a>> for Picture<'a> {
    fn from(luma: Luma<'a>) -> Self {
        Self::Luma(luma)
    }
}

/// A [`Grid`]'s values, without the means to make them.
#[derive(Debug, Clone, PartialEq)]
pub struct Cells {
    pub frame: (u32, u32),
    pub columns: u32,
    pub rows: u32,
    pub values: Vec<f32>,
}

/// What a missed object's place looks like now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Like the background: the object has gone.
    Empty,
    /// Like the object: it is there, undetected.
    Object,
    /// Like neither, or under a detection: something in front of it.
    Covered,
    /// The picture cannot tell.
    Unknown,
}

/// What a missed object's place looks like, and the figures that decided it: mean absolute
/// differences of luma, in levels (0 where not measured). `to_background` and `to_object` are
/// judged in units of `contrast`, the object's own difference from the background.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Look {
    pub place: Place,
    pub contrast: f32,
    pub to_background: f32,
    pub to_object: f32,
}

impl Look {
    fn only(place: Place) -> Self {
        Self { place, contrast: 0.0, to_background: 0.0, to_object: 0.0 }
    }
}

/// An object's look, taken while it was seen: luma samples over its box, and the light then.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    samples: [f32; SAMPLES * SAMPLES],
    light: f32,
}

/// A frame's luma on a coarse grid (box filter), in levels above black: what [`Scene`] and
/// [`crate::health`] read instead of pixels.
pub struct Grid {
    /// The frame size the grid was made for.
    pub frame: (u32, u32),
    pub columns: u32,
    pub rows: u32,
    /// Row by row; all 0 for a frame whose plane is shorter than its size says.
    pub cells: Vec<f32>,
    /// Cells across wanted (fewer for a narrower frame).
    across: u32,
    resizer: Resizer,
    scaled: Option<Image<'static>>,
}

impl std::fmt::Debug for Grid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grid").field("frame", &self.frame).field("columns", &self.columns).finish_non_exhaustive()
    }
}

impl Grid {
    pub fn new(across: u32) -> Self {
        Self { frame: (0, 0), columns: 0, rows: 0, cells: Vec::new(), across, resizer: Resizer::new(), scaled: None }
    }

    /// Its values, to keep.
    pub fn values(&self) -> Cells {
        Cells { frame: self.frame, columns: self.columns, rows: self.rows, values: self.cells.clone() }
    }

    /// Takes values kept before; true when the frame's size changed.
    pub fn set(&mut self, kept: &Cells) -> bool {
        let resized = self.frame != kept.frame;
        (self.frame, self.columns, self.rows) = (kept.frame, kept.columns, kept.rows);
        self.cells.clone_from(&kept.values);
        self.scaled = None;
        resized
    }

    /// Scales `luma` into `cells`; true when the frame's size changed, so the grid did too.
    pub fn scale(&mut self, luma: Luma<'_>) -> bool {
        let resized = self.frame != (luma.width, luma.height);
        if resized {
            let columns = self.across.min(luma.width).max(1);
            let rows = ((luma.height as u64 * columns as u64).div_ceil(luma.width.max(1) as u64) as u32).max(1);
            *self = Self {
                frame: (luma.width, luma.height),
                columns,
                rows,
                cells: vec![0.0; (columns * rows) as usize],
                ..Self::new(self.across)
            };
        }
        let black = if luma.full_range { 0.0 } else { 16.0 };
        let scaled = (self.scaled).get_or_insert_with(|| Image::new(self.columns, self.rows, PixelType::U8));
        let source = ImageRef::new(luma.width, luma.height, luma.data, PixelType::U8);
        let done = source.ok().map(|source| {
            let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Box));
            self.resizer.resize(&source, scaled, &options)
        });
        if !matches!(done, Some(Ok(()))) {
            // A plane shorter than its size says: no evidence from this frame.
            self.cells.fill(0.0);
            return resized;
        }
        for (cell, &v) in self.cells.iter_mut().zip(scaled.buffer()) {
            *cell = (v as f32 - black).max(0.0);
        }
        resized
    }
}

/// One camera's background and light; see the module docs.
pub struct Scene {
    /// This frame's grid (a new frame size starts the scene afresh).
    grid: Grid,
    /// Luma above black per cell, in the first frame's light.
    background: Vec<f32>,
    /// Frames each cell has learned from (capped); 0: never seen.
    learned: Vec<u16>,
    /// This frame's brightness against the first frame's.
    light: f32,
}

impl Default for Scene {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Scene {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scene").field("frame", &self.grid.frame).field("light", &self.light).finish_non_exhaustive()
    }
}

impl Scene {
    pub fn new() -> Self {
        Self { grid: Grid::new(GRID_WIDTH), background: Vec::new(), learned: Vec::new(), light: 1.0 }
    }

    /// The last frame's grid.
    pub fn cells(&self) -> Cells {
        self.grid.values()
    }

    /// Takes a frame: scales its luma to the grid, follows the light, and learns the
    /// background where no box in `occupied` (this frame's detections, the tracks so far) is.
    /// `covering`: this frame's detections, of every class and model. The view answers the
    /// trackers' questions about this frame.
    pub fn look<'a>(&'a mut self, picture: Picture<'_>, occupied: &[BBox], covering: &'a [BBox]) -> View<'a> {
        let resized = match picture {
            Picture::Luma(luma) => self.grid.scale(luma),
            Picture::Cells(kept) => self.grid.set(kept),
        };
        if resized {
            let cells = self.grid.cells.len();
            (self.background, self.learned, self.light) = (vec![0.0; cells], vec![0; cells], 1.0);
        }
        let (columns, rows) = (self.grid.columns as usize, self.grid.rows as usize);
        let (width, height) = self.grid.frame;
        let (cw, ch) = (width as f32 / columns as f32, height as f32 / rows as f32);
        // Cells under a box (grown by one cell) do not learn.
        let mut free = vec![true; columns * rows];
        for b in occupied {
            let c1 = ((b.x1 / cw).floor() as i64 - 1).clamp(0, columns as i64) as usize;
            let c2 = ((b.x2 / cw).ceil() as i64 + 1).clamp(0, columns as i64) as usize;
            let r1 = ((b.y1 / ch).floor() as i64 - 1).clamp(0, rows as i64) as usize;
            let r2 = ((b.y2 / ch).ceil() as i64 + 1).clamp(0, rows as i64) as usize;
            for row in free.chunks_mut(columns).take(r2).skip(r1) {
                row.get_mut(c1..c2).into_iter().for_each(|cells| cells.fill(false));
            }
        }
        // The light: now against the background over the free cells seen before whose ratio
        // is in the middle half (dark cells left out: their ratio is noise), as a ratio of sums;
        // the last one if too few are free. A ratio of sums, not a median of ratios: the
        // median of quantised levels is lumpy, and the background would learn its error
        // frame after frame (seen: an hour of dusk to half the light read as 0.72).
        let cells = free.iter().zip(&self.learned).zip(self.grid.cells.iter().zip(&self.background));
        let compared: Vec<(f32, f32)> = cells
            .filter(|&((&free, &learned), (_, &background))| free && learned > 0 && background >= MIN_CONTRAST)
            .map(|(_, (&now, &background))| (now, background))
            .collect();
        if compared.len() >= free.len() / 8 && !compared.is_empty() {
            let mut ratios: Vec<f32> = compared.iter().map(|(now, background)| now / background).collect();
            let (q1, q3) = (ratios.len() / 4, ratios.len() * 3 / 4);
            let high = *ratios.select_nth_unstable_by(q3, f32::total_cmp).1;
            let low = *ratios.select_nth_unstable_by(q1, f32::total_cmp).1;
            let (now, background) = (compared.iter())
                .filter(|(now, background)| (low..=high).contains(&(now / background)))
                .fold((0.0, 0.0), |(n, b), (now, background)| (n + now, b + background));
            if background > 0.0 {
                self.light = (now / background).clamp(0.1, 10.0);
            }
        }
        let cells = free.iter().zip(&self.grid.cells).zip(self.background.iter_mut().zip(&mut self.learned));
        for ((_, &now), (background, learned)) in cells.filter(|((free, _), _)| **free) {
            let n = learned.saturating_add(1).min(1000);
            let change = now / self.light - *background;
            // A running mean at first, then an exponential one; large changes slowly.
            let rate = if n > 1 && change.abs() > LARGE { SLOWLY } else { (1.0 / n as f32).max(LEARN) };
            *background += change * rate;
            *learned = n;
        }
        View { scene: self, covering, cell: (cw, ch) }
    }
}

/// One frame as the trackers may ask about it.
pub struct View<'a> {
    scene: &'a Scene,
    covering: &'a [BBox],
    /// Frame pixels per grid cell, across and down.
    cell: (f32, f32),
}

impl View<'_> {
    /// `bbox`'s look now, if nothing but its own detection covers it.
    pub fn signature(&self, bbox: &BBox) -> Option<Signature> {
        if self.covered_by(bbox) > 1 {
            return None;
        }
        let (now, _) = self.sample(bbox)?;
        Some(Signature { samples: now, light: self.scene.light })
    }

    /// What the place `bbox` of an object looked like `signature` shows now.
    pub fn place(&self, bbox: &BBox, signature: Option<&Signature>) -> Look {
        if self.covered_by(bbox) > 0 {
            return Look::only(Place::Covered);
        }
        let (Some((now, background)), Some(signature)) = (self.sample(bbox), signature) else {
            return Look::only(Place::Unknown);
        };
        let Some(background) = background.map(|b| b.map(|v| v * self.scene.light)) else {
            return Look::only(Place::Unknown);
        };
        // The object as it would look in this light.
        let gain = self.scene.light / signature.light;
        let object = signature.samples.map(|v| v * gain);
        let contrast = mean_difference(&object, &background);
        let (to_background, to_object) = (mean_difference(&now, &background), mean_difference(&now, &object));
        let place = if contrast < MIN_CONTRAST {
            Place::Unknown
        } else if to_background <= NEAR * contrast {
            Place::Empty
        } else if to_object <= NEAR * contrast {
            Place::Object
        } else {
            Place::Covered
        };
        Look { place, contrast, to_background, to_object }
    }

    /// Detections over at least `COVERED` of `bbox`.
    fn covered_by(&self, bbox: &BBox) -> usize {
        let area = bbox.area();
        self.covering.iter().filter(|d| area > 0.0 && d.intersection(bbox).area() >= COVERED * area).count()
    }

    /// `bbox` (clipped to the frame) sampled bilinearly on the grid: now, and the background
    /// (in the first frame's light) if enough of it has been seen. None for a box outside the
    /// frame.
    #[allow(clippy::type_complexity)]
    fn sample(&self, bbox: &BBox) -> Option<([f32; SAMPLES * SAMPLES], Option<[f32; SAMPLES * SAMPLES]>)> {
        let s = self.scene;
        let g = &s.grid;
        let (fw, fh) = (g.frame.0 as f32, g.frame.1 as f32);
        let (x1, x2) = (bbox.x1.clamp(0.0, fw), bbox.x2.clamp(0.0, fw));
        let (y1, y2) = (bbox.y1.clamp(0.0, fh), bbox.y2.clamp(0.0, fh));
        if !(x2 - x1 >= 1.0 && y2 - y1 >= 1.0) {
            return None;
        }
        let (mut now, mut background) = ([0.0; SAMPLES * SAMPLES], [0.0; SAMPLES * SAMPLES]);
        let mut known = 0;
        for (k, (now, background)) in now.iter_mut().zip(&mut background).enumerate() {
            // Sample centres, in grid coordinates (cell centres at .5).
            let (i, j) = ((k % SAMPLES) as f32, (k / SAMPLES) as f32);
            let x = (x1 + (x2 - x1) * (i + 0.5) / SAMPLES as f32) / self.cell.0 - 0.5;
            let y = (y1 + (y2 - y1) * (j + 0.5) / SAMPLES as f32) / self.cell.1 - 0.5;
            *now = bilinear(&g.cells, g.columns, g.rows, x, y);
            *background = bilinear(&s.background, g.columns, g.rows, x, y);
            let nearest = (y.round().clamp(0.0, g.rows.saturating_sub(1) as f32) as usize) * g.columns as usize
                + x.round().clamp(0.0, g.columns.saturating_sub(1) as f32) as usize;
            known += usize::from(s.learned.get(nearest).is_some_and(|&n| n > 0));
        }
        let seen = known as f32 >= KNOWN * (SAMPLES * SAMPLES) as f32;
        Some((now, seen.then_some(background)))
    }
}

fn mean_difference(a: &[f32; SAMPLES * SAMPLES], b: &[f32; SAMPLES * SAMPLES]) -> f32 {
    a.iter().zip(b).map(|(a, b)| (a - b).abs()).sum::<f32>() / a.len() as f32
}

/// `grid` at (x, y) in cell coordinates, clamped to its edges.
fn bilinear(grid: &[f32], columns: u32, rows: u32, x: f32, y: f32) -> f32 {
    let (last_column, last_row) = (columns.saturating_sub(1) as usize, rows.saturating_sub(1) as usize);
    let x = x.clamp(0.0, last_column as f32);
    let y = y.clamp(0.0, last_row as f32);
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(last_column), (y0 + 1).min(last_row));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    // Within the grid by the clamps above; a grid shorter than its size reads as black.
    let at = |c: usize, r: usize| grid.get(r * columns as usize + c).copied().unwrap_or(0.0);
    let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
    let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
    top * (1.0 - fy) + bottom * fy
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A luma picture to paint scenes on: a textured street (so a flat box is not like it).
    #[derive(Clone)]
    pub(crate) struct Picture {
        pub width: u32,
        pub height: u32,
        pub data: Vec<u8>,
    }

    impl Picture {
        pub(crate) fn street(width: u32, height: u32) -> Self {
            let data = (0..height)
                .flat_map(|y| {
                    (0..width).map(move |x| 60 + ((x / 16 + y / 16) % 2) as u8 * 20 + (x * 7 + y * 3) as u8 % 5)
                })
                .collect();
            Self { width, height, data }
        }

        /// Fills `bbox` (clipped) with `level`.
        pub(crate) fn paint(&mut self, bbox: &BBox, level: u8) {
            let (w, h) = (self.width as f32, self.height as f32);
            for y in bbox.y1.clamp(0.0, h) as u32..bbox.y2.clamp(0.0, h) as u32 {
                for x in bbox.x1.clamp(0.0, w) as u32..bbox.x2.clamp(0.0, w) as u32 {
                    self.data[(y * self.width + x) as usize] = level;
                }
            }
        }

        /// Every level scaled by `gain` above black: a cloud (below 1) or sunshine.
        pub(crate) fn lit(&self, gain: f32) -> Self {
            let data = self.data.iter().map(|&v| (16.0 + (v as f32 - 16.0) * gain).round().clamp(0.0, 255.0) as u8);
            Self { data: data.collect(), ..self.clone() }
        }

        /// With a camera's noise: up to 2 levels either way, different in every `frame`.
        pub(crate) fn noisy(&self, frame: u64) -> Self {
            let mut state = frame.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let data = self.data.iter().map(|&v| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (v as i32 + (state % 5) as i32 - 2).clamp(0, 255) as u8
            });
            Self { data: data.collect(), ..self.clone() }
        }

        pub(crate) fn luma(&self) -> Luma<'_> {
            Luma { width: self.width, height: self.height, data: &self.data, full_range: false }
        }
    }

    fn bbox(x: f32, y: f32, w: f32, h: f32) -> BBox {
        BBox { x1: x, y1: y, x2: x + w, y2: y + h }
    }

    /// A scene that learned the street, then saw `object` over `place` while it was detected.
    fn learned_with_object(place: BBox, object: u8) -> (Scene, Picture, Signature) {
        let street = Picture::street(640, 360);
        let mut scene = Scene::new();
        for _ in 0..3 {
            scene.look(street.luma().into(), &[], &[]);
        }
        let mut with = street.clone();
        with.paint(&place, object);
        let signature = scene.look(with.luma().into(), &[place], &[place]).signature(&place).expect("only its own box");
        (scene, street, signature)
    }

    #[test]
    fn an_empty_place_a_present_object_and_one_in_front_are_told_apart() {
        let place = bbox(300.0, 200.0, 48.0, 48.0);
        let (mut scene, street, signature) = learned_with_object(place, 140);
        let look = |scene: &mut Scene, picture: &Picture| {
            scene.look(picture.luma().into(), &[place], &[]).place(&place, Some(&signature)).place
        };
        assert_eq!(look(&mut scene, &street), Place::Empty);
        let mut still = street.clone();
        still.paint(&place, 140);
        assert_eq!(look(&mut scene, &still), Place::Object);
        let mut bus = street.clone();
        bus.paint(&bbox(250.0, 150.0, 200.0, 120.0), 220);
        assert_eq!(look(&mut scene, &bus), Place::Covered);
        // A detection over it covers it whatever the pixels.
        let passer = [bbox(310.0, 190.0, 40.0, 60.0)];
        assert_eq!(
            scene.look(street.luma().into(), &[place], &passer).place(&place, Some(&signature)).place,
            Place::Covered
        );
    }

    #[test]
    fn a_cloud_is_not_a_change_of_place() {
        let place = bbox(300.0, 200.0, 48.0, 48.0);
        let (mut scene, street, signature) = learned_with_object(place, 140);
        let mut still = street.clone();
        still.paint(&place, 140);
        // Darker by 40 %: the object would look like the street if the light were not followed.
        for gain in [0.8, 0.6] {
            let view = scene.look(still.lit(gain).luma().into(), &[place], &[]);
            assert_eq!(view.place(&place, Some(&signature)).place, Place::Object, "gain {gain}");
        }
        assert_eq!(
            scene.look(street.lit(0.6).luma().into(), &[place], &[]).place(&place, Some(&signature)).place,
            Place::Empty
        );
    }

    #[test]
    fn the_picture_says_nothing_where_it_cannot_know() {
        let street = Picture::street(640, 360);
        let place = bbox(300.0, 200.0, 48.0, 48.0);
        let mut with = street.clone();
        with.paint(&place, 140);
        // The object was there from the first frame: its background was never seen.
        let mut scene = Scene::new();
        let signature = scene.look(with.luma().into(), &[place], &[place]).signature(&place).unwrap();
        assert_eq!(
            scene.look(street.luma().into(), &[place], &[]).place(&place, Some(&signature)).place,
            Place::Unknown
        );
        // An object that looks like the street.
        let (mut scene, street, _) = learned_with_object(place, 140);
        let signature = scene.look(street.luma().into(), &[place], &[place]).signature(&place).unwrap();
        assert_eq!(
            scene.look(street.luma().into(), &[place], &[]).place(&place, Some(&signature)).place,
            Place::Unknown
        );
        // No signature, or a box off the frame.
        assert_eq!(scene.look(street.luma().into(), &[], &[]).place(&place, None).place, Place::Unknown);
        assert_eq!(
            scene.look(street.luma().into(), &[], &[]).place(&bbox(700.0, 0.0, 10.0, 10.0), None).place,
            Place::Unknown
        );
    }

    #[test]
    fn an_object_cut_by_the_frame_edge_is_judged_on_what_is_in_the_frame() {
        let place = bbox(610.0, 200.0, 48.0, 48.0); // 30 px in, 18 px beyond the right edge
        let (mut scene, street, signature) = learned_with_object(place, 140);
        let mut still = street.clone();
        still.paint(&place, 140);
        assert_eq!(scene.look(still.luma().into(), &[place], &[]).place(&place, Some(&signature)).place, Place::Object);
        assert_eq!(scene.look(street.luma().into(), &[place], &[]).place(&place, Some(&signature)).place, Place::Empty);
    }

    #[test]
    fn no_signature_is_taken_while_another_detection_covers_the_object() {
        let place = bbox(300.0, 200.0, 48.0, 48.0);
        let (mut scene, street, _) = learned_with_object(place, 140);
        let covering = [place, bbox(290.0, 190.0, 40.0, 60.0)];
        assert_eq!(scene.look(street.luma().into(), &covering, &covering).signature(&place), None);
    }

    #[test]
    fn a_slow_dusk_over_half_an_hour_of_an_object_standing_is_followed() {
        // A small frame (the grid is the same 160 cells wide): 1,800 frames unoptimised. The
        // street has a camera's noise: without it every pixel of a level rounds the same way
        // as the light falls, a change no camera makes, and the light was read as 0.69 of the
        // first frame's for 0.5.
        let place = bbox(150.0, 100.0, 24.0, 24.0);
        let street = Picture::street(320, 180);
        let mut scene = Scene::new();
        for _ in 0..3 {
            scene.look(street.luma().into(), &[], &[]);
        }
        let mut still = street.clone();
        still.paint(&place, 140);
        let signature = scene.look(still.luma().into(), &[place], &[place]).signature(&place).unwrap();
        let mut still = street.clone();
        still.paint(&place, 140);
        // Half an hour at 1 frame/s, the light falling to half; the object seen all along.
        let (mut signature, boxes) = (signature, [place]);
        for k in 0..1800 {
            let view = scene.look(still.lit(1.0 - 0.5 * k as f32 / 1800.0).noisy(k).luma().into(), &boxes, &boxes);
            if k % 60 == 0 {
                signature = view.signature(&place).unwrap();
            }
        }
        assert!((scene.light - 0.5).abs() < 0.02, "light {}", scene.light);
        let dusk = |p: &Picture| p.lit(0.5).noisy(7);
        assert_eq!(
            scene.look(dusk(&still).luma().into(), &[place], &[]).place(&place, Some(&signature)).place,
            Place::Object
        );
        assert_eq!(
            scene.look(dusk(&street).luma().into(), &[place], &[]).place(&place, Some(&signature)).place,
            Place::Empty
        );
    }

    #[test]
    fn the_background_is_not_learned_under_tracked_objects() {
        let place = bbox(300.0, 200.0, 48.0, 48.0);
        let (mut scene, street, signature) = learned_with_object(place, 140);
        let mut still = street.clone();
        still.paint(&place, 140);
        // A minute of the object standing there, tracked: the street behind it is remembered.
        for _ in 0..120 {
            scene.look(still.luma().into(), &[place], &[place]);
        }
        assert_eq!(scene.look(street.luma().into(), &[place], &[]).place(&place, Some(&signature)).place, Place::Empty);
    }
}
