//! Training curves and confusion matrices as PNG, drawn on the crate's [`Canvas`] (the
//! tutorial plots with matplotlib; these are the same two pictures without Python):
//! loss and accuracy per epoch for train and validation, and a confusion matrix with counts.

use std::path::Path;

use super::VizError;
use super::canvas::{Canvas, Color, GLYPH, colors};

/// One line of a chart.
#[derive(Clone, Debug)]
pub(crate) struct Series<'a> {
    /// Legend label.
    pub(crate) label: &'a str,
    /// `(x, y)` points in order.
    pub(crate) points: Vec<(f64, f64)>,
    /// Line colour.
    pub(crate) color: Color,
    /// Whether every point gets a square marker (the epoch curves); `false` draws the line
    /// alone (dense curves), and a series of one point is always marked.
    pub(crate) markers: bool,
}

/// How the x axis is scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum XScale {
    /// Values as given.
    Linear,
    /// Points are given as `log10(x)`; ticks at whole powers of ten, labelled `1e-5`.
    Log10,
}

fn nice_step(range: f64, target_ticks: usize) -> f64 {
    let raw = range / target_ticks.max(1) as f64;
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_tick(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{v:.decimals$}")
}

/// Draws a line chart into the rectangle `(x0, y0, w, h)` of `canvas`.
fn chart(
    canvas: &mut Canvas,
    (x0, y0, w, h): (i64, i64, i64, i64),
    title: &str,
    x_label: &str,
    series: &[Series<'_>],
    y_range: Option<(f64, f64)>,
    x_scale: XScale,
) {
    let scale = 2;
    let glyph = i64::from(GLYPH * scale);
    let (left, right, top, bottom) = (
        x0 + 9 * glyph,
        x0 + w - 2 * glyph,
        y0 + 3 * glyph,
        y0 + h - 4 * glyph,
    );
    canvas.text_centered(x0 + w / 2, y0 + glyph / 2, title, scale, colors::BLACK);
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        if x.is_finite() && y.is_finite() {
            xmin = xmin.min(x);
            xmax = xmax.max(x);
            ymin = ymin.min(y);
            ymax = ymax.max(y);
        }
    }
    if xmin > xmax {
        (xmin, xmax, ymin, ymax) = (0.0, 1.0, 0.0, 1.0);
    }
    if let Some((lo, hi)) = y_range {
        (ymin, ymax) = (lo, hi);
    }
    if xmax - xmin < 1e-12 {
        xmax = xmin + 1.0;
    }
    if ymax - ymin < 1e-12 {
        ymax = ymin + 1.0;
    }
    let ystep = nice_step(ymax - ymin, 5);
    let (ymin, ymax) = (
        (ymin / ystep).floor() * ystep,
        (ymax / ystep).ceil() * ystep,
    );
    let xstep = nice_step(xmax - xmin, 8).max(1.0);
    let px = |x: f64| left + ((x - xmin) / (xmax - xmin) * (right - left) as f64).round() as i64;
    let py = |y: f64| bottom - ((y - ymin) / (ymax - ymin) * (bottom - top) as f64).round() as i64;

    // Grid, ticks and labels.
    let mut y = ymin;
    while y <= ymax + ystep * 1e-6 {
        let yy = py(y);
        canvas.line(left, yy, right, yy, colors::LIGHT_GRAY);
        let label = fmt_tick(y, ystep);
        let (tw, _) = Canvas::text_size(&label, scale);
        canvas.text(
            left - i64::from(tw) - glyph / 2,
            yy - glyph / 2,
            &label,
            scale,
            colors::GRAY,
        );
        y += ystep;
    }
    let mut x = (xmin / xstep).ceil() * xstep;
    while x <= xmax + xstep * 1e-6 {
        let xx = px(x);
        canvas.line(xx, bottom, xx, bottom + glyph / 3, colors::GRAY);
        let label = match x_scale {
            XScale::Linear => fmt_tick(x, xstep),
            XScale::Log10 => format!("1e{}", x.round() as i64),
        };
        canvas.text_centered(xx, bottom + glyph / 2, &label, scale, colors::GRAY);
        x += xstep;
    }
    canvas.line(left, top, left, bottom, colors::BLACK);
    canvas.line(left, bottom, right, bottom, colors::BLACK);
    canvas.text_centered(
        (left + right) / 2,
        bottom + 2 * glyph,
        x_label,
        scale,
        colors::BLACK,
    );

    // Lines with point markers.
    for s in series {
        let pts: Vec<(i64, i64)> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| (px(x), py(y)))
            .collect();
        for pair in pts.windows(2) {
            canvas.thick_line(pair[0].0, pair[0].1, pair[1].0, pair[1].1, 3, s.color);
        }
        if s.markers || pts.len() == 1 {
            for &(x, y) in &pts {
                canvas.fill_rect(x - 5, y - 5, 11, 11, s.color);
            }
        }
    }
    // Legend, top right inside the plot.
    let mut ly = top + glyph / 2;
    for s in series {
        let (tw, _) = Canvas::text_size(s.label, scale);
        let lx = right - i64::from(tw) - 3 * glyph;
        canvas.fill_rect(lx, ly + glyph / 2 - 2, (2 * glyph - 8) as u32, 5, s.color);
        canvas.text(lx + 2 * glyph, ly, s.label, scale, colors::BLACK);
        ly += glyph + glyph / 2;
    }
}

/// Writes `curves.png`: loss (left) and accuracy (right) per epoch, train and validation.
/// Each slice holds one value per epoch (epochs count from 1).
pub fn save_curves(
    path: impl AsRef<Path>,
    train_loss: &[f64],
    val_loss: &[f64],
    train_acc: &[f64],
    val_acc: &[f64],
) -> Result<(), VizError> {
    let n = train_loss.len();
    if [val_loss.len(), train_acc.len(), val_acc.len()] != [n, n, n] {
        return Err(VizError::Input(
            "every curve needs one value per epoch".into(),
        ));
    }
    let pts = |v: &[f64]| -> Vec<(f64, f64)> {
        v.iter()
            .enumerate()
            .map(|(i, &y)| ((i + 1) as f64, y))
            .collect()
    };
    let (w, h) = (1400, 560);
    let mut canvas = Canvas::new(w, h, colors::WHITE);
    let half = i64::from(w) / 2;
    chart(
        &mut canvas,
        (0, 0, half, i64::from(h)),
        "Loss",
        "epoch",
        &[
            Series {
                label: "train",
                points: pts(train_loss),
                color: colors::TAB10[0],
                markers: true,
            },
            Series {
                label: "val",
                points: pts(val_loss),
                color: colors::TAB10[1],
                markers: true,
            },
        ],
        None,
        XScale::Linear,
    );
    chart(
        &mut canvas,
        (half, 0, half, i64::from(h)),
        "Accuracy",
        "epoch",
        &[
            Series {
                label: "train",
                points: pts(train_acc),
                color: colors::TAB10[0],
                markers: true,
            },
            Series {
                label: "val",
                points: pts(val_acc),
                color: colors::TAB10[1],
                markers: true,
            },
        ],
        Some((0.0, 1.0)),
        XScale::Linear,
    );
    canvas.save_png(path)
}

/// Writes the learning-rate finder's plot (fastai's `plot_lr_find`): the smoothed loss against
/// the learning rate on a logarithmic axis, with each suggestion `(name, lr, loss)` marked.
/// `lrs` and `losses` are equally long; learning rates must be positive.
pub fn save_lr_find(
    path: impl AsRef<Path>,
    lrs: &[f64],
    losses: &[f64],
    suggestions: &[(&str, f64, f64)],
) -> Result<(), VizError> {
    if lrs.len() != losses.len() || lrs.is_empty() {
        return Err(VizError::Input(
            "the learning-rate finder needs one loss per learning rate, and at least one".into(),
        ));
    }
    if let Some(lr) = lrs.iter().find(|lr| !(lr.is_finite() && **lr > 0.0)) {
        return Err(VizError::Input(format!(
            "learning rates must be positive to be drawn on a log axis (got {lr})"
        )));
    }
    let mut series = vec![Series {
        label: "smoothed loss",
        points: lrs
            .iter()
            .zip(losses)
            .map(|(lr, loss)| (lr.log10(), *loss))
            .collect(),
        color: colors::TAB10[0],
        markers: false,
    }];
    for (i, (name, lr, loss)) in suggestions.iter().enumerate() {
        series.push(Series {
            label: name,
            points: vec![(lr.log10(), *loss)],
            color: colors::TAB10[(i + 1) % colors::TAB10.len()],
            markers: true,
        });
    }
    let (w, h) = (900, 600);
    let mut canvas = Canvas::new(w, h, colors::WHITE);
    chart(
        &mut canvas,
        (0, 0, i64::from(w), i64::from(h)),
        "Learning-rate finder",
        "learning rate",
        &series,
        None,
        XScale::Log10,
    );
    canvas.save_png(path)
}

/// Writes a confusion matrix (`confusion[true][predicted]`) as a heat map with counts, class
/// names on both axes and per-class accuracy at the right.
pub fn save_confusion(
    path: impl AsRef<Path>,
    confusion: &[Vec<u64>],
    class_names: &[String],
) -> Result<(), VizError> {
    let k = confusion.len();
    if k == 0 || confusion.iter().any(|row| row.len() != k) {
        return Err(VizError::Input(
            "the confusion matrix must be square and non-empty".into(),
        ));
    }
    let names: Vec<String> = (0..k)
        .map(|i| class_names.get(i).cloned().unwrap_or_else(|| i.to_string()))
        .map(|n| n.chars().take(14).collect())
        .collect();
    let scale = 2u32;
    let glyph = i64::from(GLYPH * scale);
    let cell = (glyph * 4).max(64);
    let label_w = names
        .iter()
        .map(|n| n.chars().count() as i64)
        .max()
        .unwrap_or(1)
        * glyph
        + glyph;
    let (left, top) = (label_w + 2 * glyph, label_w + 3 * glyph);
    let right_w = 8 * glyph;
    let width = (left + cell * k as i64 + right_w) as u32;
    let height = (top + cell * k as i64 + 3 * glyph) as u32;
    let mut canvas = Canvas::new(width, height, colors::WHITE);
    canvas.text(
        glyph / 2,
        glyph / 2,
        "true \\ predicted",
        scale,
        colors::BLACK,
    );
    let max = confusion
        .iter()
        .flatten()
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    for (t, row) in confusion.iter().enumerate() {
        let y = top + t as i64 * cell;
        let (tw, _) = Canvas::text_size(&names[t], scale);
        canvas.text(
            left - i64::from(tw) - glyph / 2,
            y + cell / 2 - glyph / 2,
            &names[t],
            scale,
            colors::BLACK,
        );
        let total: u64 = row.iter().sum();
        for (p, &count) in row.iter().enumerate() {
            let x = left + p as i64 * cell;
            let v = count as f64 / max;
            // White to the tab10 blue.
            let shade = |c: u8| (255.0 - v * (255.0 - f64::from(c))).round() as u8;
            let base = colors::TAB10[0].0;
            let fill = image::Rgb([shade(base[0]), shade(base[1]), shade(base[2])]);
            canvas.fill_rect(x, y, cell as u32, cell as u32, fill);
            canvas.stroke_rect(x, y, cell as u32, cell as u32, colors::LIGHT_GRAY);
            let text_color = if v > 0.5 {
                colors::WHITE
            } else {
                colors::BLACK
            };
            canvas.text_centered(
                x + cell / 2,
                y + cell / 2 - glyph / 2,
                &count.to_string(),
                scale,
                text_color,
            );
        }
        let acc = if total == 0 {
            "-".to_string()
        } else {
            format!("{:.0}%", 100.0 * row[t] as f64 / total as f64)
        };
        canvas.text(
            left + cell * k as i64 + glyph / 2,
            y + cell / 2 - glyph / 2,
            &acc,
            scale,
            colors::BLACK,
        );
    }
    for (p, name) in names.iter().enumerate() {
        let x = left + p as i64 * cell + cell / 2 - glyph / 2;
        canvas.text_vertical(x, top - glyph / 2, name, scale, colors::BLACK);
    }
    canvas.text(
        left + cell * k as i64 + glyph / 2,
        top - glyph - glyph / 2,
        "acc",
        scale,
        colors::GRAY,
    );
    canvas.save_png(path)
}
