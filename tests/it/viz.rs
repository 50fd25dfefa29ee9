//! Pictures: grids with captions, the canvas, atomic PNG writes.

use finetune::Error;
use finetune::viz::{Canvas, VizError, colors, save_grid};
use image::{Rgb, RgbImage};

fn names() -> Vec<String> {
    ["cat", "dog", "automobile"].map(String::from).to_vec()
}

fn images(n: usize) -> Vec<RgbImage> {
    (0..n)
        .map(|i| RgbImage::from_pixel(32, 32, Rgb([40 * i as u8, 90, 200])))
        .collect()
}

fn count(img: &RgbImage, color: Rgb<u8>) -> usize {
    img.pixels().filter(|p| **p == color).count()
}

#[test]
fn grid_captions_are_green_when_right_and_red_when_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out/grid.png");
    save_grid(&path, &images(3), &names(), &[0, 1, 2], Some(&[0, 2, 2])).unwrap();
    let png = image::open(&path).unwrap().into_rgb8();
    // Images are enlarged 4x: 3 columns of at least 128 pixels.
    assert!(
        png.width() >= 3 * 128 && png.height() >= 128,
        "{:?}",
        png.dimensions()
    );
    assert!(count(&png, colors::GREEN) > 50);
    assert!(count(&png, colors::RED) > 50);
    // The enlarged image itself is there.
    assert!(count(&png, Rgb([40, 90, 200])) >= 128 * 128);
    // Only the PNG is left in the directory.
    let entries: Vec<_> = std::fs::read_dir(dir.path().join("out")).unwrap().collect();
    assert_eq!(entries.len(), 1);

    // True labels only: black captions, no green or red.
    save_grid(&path, &images(2), &names(), &[2, 0], None).unwrap();
    let png = image::open(&path).unwrap().into_rgb8();
    assert_eq!(count(&png, colors::GREEN) + count(&png, colors::RED), 0);
    assert!(count(&png, colors::BLACK) > 50);
}

#[test]
fn inconsistent_inputs_are_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grid.png");
    let cases: [(&[usize], Option<&[usize]>); 3] =
        [(&[0], None), (&[0, 3], None), (&[0, 1], Some(&[1]))];
    for (labels, preds) in cases {
        let err = save_grid(&path, &images(2), &names(), labels, preds).unwrap_err();
        assert!(matches!(err, Error::Viz(VizError::Input(_))), "{err}");
    }
    assert!(!path.exists());
}

#[test]
fn canvas_text_uses_the_8x8_font() {
    let mut c = Canvas::new(40, 20, colors::WHITE);
    let w = c.text(2, 3, "Hi", 2, colors::BLACK);
    assert_eq!(w, 32);
    assert_eq!(Canvas::text_size("Hi", 2), (32, 16));
    // 'H' in font8x8: rows 0..6 have both vertical strokes (bits 0-1 and 4-5).
    let img = c.image();
    assert_eq!(*img.get_pixel(2, 3), colors::BLACK);
    assert_eq!(*img.get_pixel(2 + 4 * 2, 3), colors::BLACK);
    assert_eq!(*img.get_pixel(2 + 2 * 2, 3), colors::WHITE);
    // Nothing drawn outside the text box.
    assert_eq!(*img.get_pixel(1, 3), colors::WHITE);
    assert_eq!(*img.get_pixel(35, 3), colors::WHITE);

    c.line(0, 19, 39, 0, colors::RED);
    assert_eq!(*c.image().get_pixel(0, 19), colors::RED);
    assert_eq!(*c.image().get_pixel(39, 0), colors::RED);
    c.fill_rect(-5, -5, 8, 8, colors::GREEN);
    assert_eq!(*c.image().get_pixel(0, 0), colors::GREEN);
    assert_eq!(*c.image().get_pixel(2, 2), colors::GREEN);
    assert_eq!(*c.image().get_pixel(3, 0), colors::WHITE);
}
