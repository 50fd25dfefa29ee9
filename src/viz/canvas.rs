//! A minimal RGB raster canvas: filled and outlined rectangles, lines (Bresenham), scaled
//! nearest-neighbour image blits, and text in the 8x8 bitmap font of `font8x8` (public domain),
//! horizontal or rotated for vertical axis labels. Everything is clipped to the canvas.

use std::path::Path;

use font8x8::legacy::{BASIC_LEGACY, LATIN_LEGACY};
use image::{Rgb, RgbImage};

use super::VizError;

/// An RGB colour.
pub type Color = Rgb<u8>;

/// Colours used by the pictures of this crate.
pub mod colors {
    use super::Color;

    /// White.
    pub const WHITE: Color = image::Rgb([255, 255, 255]);
    /// Black.
    pub const BLACK: Color = image::Rgb([0, 0, 0]);
    /// Light grey (grid lines).
    pub const LIGHT_GRAY: Color = image::Rgb([220, 220, 220]);
    /// Mid grey (axes, secondary text).
    pub const GRAY: Color = image::Rgb([120, 120, 120]);
    /// Green of correct predictions.
    pub const GREEN: Color = image::Rgb([0, 135, 0]);
    /// Red of wrong predictions.
    pub const RED: Color = image::Rgb([205, 0, 0]);
    /// Matplotlib's `tab10` palette, for series.
    pub const TAB10: [Color; 10] = [
        image::Rgb([31, 119, 180]),
        image::Rgb([255, 127, 14]),
        image::Rgb([44, 160, 44]),
        image::Rgb([214, 39, 40]),
        image::Rgb([148, 103, 189]),
        image::Rgb([140, 86, 75]),
        image::Rgb([227, 119, 194]),
        image::Rgb([127, 127, 127]),
        image::Rgb([188, 189, 34]),
        image::Rgb([23, 190, 207]),
    ];
}

/// Side of a glyph of the font, in pixels at scale 1.
pub const GLYPH: u32 = 8;

/// The 8x8 bitmap of a character (`?` for characters the font lacks). Row `y` is byte `y`;
/// bit `x` (least significant first) is the pixel in column `x`.
fn glyph(c: char) -> [u8; 8] {
    let code = c as u32;
    match code {
        0..=127 => BASIC_LEGACY[code as usize],
        0xA0..=0xFF => LATIN_LEGACY[(code - 0xA0) as usize],
        _ => BASIC_LEGACY['?' as usize],
    }
}

/// Calls `plot` for every pixel of the line from `(x0, y0)` to `(x1, y1)`, both ends included
/// (Bresenham; at most `max(|dx|, |dy|) + 1` steps).
fn bresenham(x0: i64, y0: i64, x1: i64, y1: i64, mut plot: impl FnMut(i64, i64)) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    for _ in 0..=dx.max(-dy) {
        plot(x, y);
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

/// An RGB image to draw on.
#[derive(Clone, Debug)]
pub struct Canvas {
    image: RgbImage,
}

impl Canvas {
    /// A `width x height` canvas filled with `background`.
    pub fn new(width: u32, height: u32, background: Color) -> Self {
        Canvas {
            image: RgbImage::from_pixel(width, height, background),
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.image.width()
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.image.height()
    }

    /// The pixels drawn so far.
    pub fn image(&self) -> &RgbImage {
        &self.image
    }

    /// The finished picture.
    pub fn into_image(self) -> RgbImage {
        self.image
    }

    /// Sets one pixel (ignored outside the canvas).
    pub fn put(&mut self, x: i64, y: i64, color: Color) {
        if x >= 0 && y >= 0 && x < i64::from(self.width()) && y < i64::from(self.height()) {
            self.image.put_pixel(x as u32, y as u32, color);
        }
    }

    /// Fills the `w x h` rectangle whose top-left corner is `(x, y)`.
    pub fn fill_rect(&mut self, x: i64, y: i64, w: u32, h: u32, color: Color) {
        let x0 = x.max(0);
        let y0 = y.max(0);
        let x1 = (x + i64::from(w)).min(i64::from(self.width()));
        let y1 = (y + i64::from(h)).min(i64::from(self.height()));
        for yy in y0..y1 {
            for xx in x0..x1 {
                self.image.put_pixel(xx as u32, yy as u32, color);
            }
        }
    }

    /// Outlines the `w x h` rectangle whose top-left corner is `(x, y)` (1 pixel wide).
    pub fn stroke_rect(&mut self, x: i64, y: i64, w: u32, h: u32, color: Color) {
        if w == 0 || h == 0 {
            return;
        }
        let (r, b) = (x + i64::from(w) - 1, y + i64::from(h) - 1);
        self.line(x, y, r, y, color);
        self.line(x, b, r, b, color);
        self.line(x, y, x, b, color);
        self.line(r, y, r, b, color);
    }

    /// A 1-pixel line from `(x0, y0)` to `(x1, y1)`, both ends included (Bresenham).
    pub fn line(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, color: Color) {
        bresenham(x0, y0, x1, y1, |x, y| self.put(x, y, color));
    }

    /// A line `width` pixels thick (squares stamped along a Bresenham line).
    pub fn thick_line(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, width: u32, color: Color) {
        if width <= 1 {
            return self.line(x0, y0, x1, y1, color);
        }
        let half = i64::from(width / 2);
        bresenham(x0, y0, x1, y1, |x, y| {
            self.fill_rect(x - half, y - half, width, width, color)
        });
    }

    /// `(width, height)` of `text` drawn at `scale` (one line).
    pub fn text_size(text: &str, scale: u32) -> (u32, u32) {
        (text.chars().count() as u32 * GLYPH * scale, GLYPH * scale)
    }

    /// Draws `text` with its top-left corner at `(x, y)`, each font pixel a `scale x scale`
    /// square. Returns the width drawn.
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: u32, color: Color) -> u32 {
        let s = i64::from(scale.max(1));
        let mut cx = x;
        for c in text.chars() {
            let g = glyph(c);
            for (gy, row) in g.iter().enumerate() {
                for gx in 0..8 {
                    if row & (1 << gx) != 0 {
                        self.fill_rect(cx + gx * s, y + gy as i64 * s, s as u32, s as u32, color);
                    }
                }
            }
            cx += 8 * s;
        }
        (cx - x) as u32
    }

    /// Draws `text` horizontally centred on `center_x`.
    pub fn text_centered(&mut self, center_x: i64, y: i64, text: &str, scale: u32, color: Color) {
        let (w, _) = Self::text_size(text, scale);
        self.text(center_x - i64::from(w) / 2, y, text, scale, color);
    }

    /// Draws `text` rotated a quarter turn counter-clockwise (reading bottom to top, for
    /// vertical axis labels), its bottom-left corner at `(x, y)`.
    pub fn text_vertical(&mut self, x: i64, y: i64, text: &str, scale: u32, color: Color) {
        let s = i64::from(scale.max(1));
        let mut cy = y;
        for c in text.chars() {
            let g = glyph(c);
            for (gy, row) in g.iter().enumerate() {
                for gx in 0..8 {
                    if row & (1 << gx) != 0 {
                        // (gx, gy) -> (gy, -gx): column becomes height above the baseline.
                        self.fill_rect(
                            x + gy as i64 * s,
                            cy - (gx + 1) * s,
                            s as u32,
                            s as u32,
                            color,
                        );
                    }
                }
            }
            cy -= 8 * s;
        }
    }

    /// Copies `image` with its top-left corner at `(x, y)`, each pixel a `scale x scale` square.
    pub fn blit(&mut self, image: &RgbImage, x: i64, y: i64, scale: u32) {
        let s = scale.max(1);
        for (ix, iy, p) in image.enumerate_pixels() {
            self.fill_rect(x + i64::from(ix * s), y + i64::from(iy * s), s, s, *p);
        }
    }

    /// Writes the canvas as PNG, atomically.
    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<(), VizError> {
        super::save_png(path, &self.image)
    }
}
