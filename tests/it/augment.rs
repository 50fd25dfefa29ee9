//! TrivialAugmentWide, RandAugment and RandomErasing: every operation against torchvision's own
//! `_apply_op` on PIL images, the magnitude tables against `_augmentation_space`, `F.erase`
//! (tests/fixtures/augment/make_augment_reference.py), and the random draws.

use std::collections::HashMap;
use std::sync::OnceLock;

use finetune::data::rng::SeededRng;
use finetune::data::{
    AugmentOp, DataError, ErasingValue, ImageBatcher, ImageItem, Pipeline, RandAugment,
    RandomErasing, SeededItem, TrivialAugmentWide, apply_op, erase, to_chw,
};
use image::RgbImage;

/// One `magnitudes` line: `_augmentation_space` of one op.
struct MagnitudeLine {
    class: String,
    bins: u32,
    height: u32,
    width: u32,
    op: AugmentOp,
    signed: bool,
    values: Vec<f64>,
}

/// One `erase` line: `F.erase` on a small tensor.
struct EraseLine {
    case: String,
    height: u32,
    width: u32,
    region: (u32, u32, u32, u32),
    value: [f32; 3],
    input: Vec<f32>,
    output: Vec<f32>,
}

/// tests/fixtures/augment/reference.txt, parsed once.
struct Reference {
    sources: HashMap<String, RgbImage>,
    /// `(case, source, op, magnitude, torchvision's output)`, in the file's order.
    cases: Vec<(String, String, AugmentOp, f64, RgbImage)>,
    magnitudes: Vec<MagnitudeLine>,
    erases: Vec<EraseLine>,
}

fn hex_image(w: &str, h: &str, hex: &str) -> RgbImage {
    let (w, h): (u32, u32) = (w.parse().unwrap(), h.parse().unwrap());
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    RgbImage::from_raw(w, h, bytes).unwrap()
}

fn reference() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let path = format!(
            "{}/tests/fixtures/augment/reference.txt",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).unwrap();
        let mut r = Reference {
            sources: HashMap::new(),
            cases: Vec::new(),
            magnitudes: Vec::new(),
            erases: Vec::new(),
        };
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            match f[0] {
                "magnitudes" => r.magnitudes.push(MagnitudeLine {
                    class: f[1].to_string(),
                    bins: f[2].parse().unwrap(),
                    height: f[3].parse().unwrap(),
                    width: f[4].parse().unwrap(),
                    op: AugmentOp::parse(f[5]).unwrap_or_else(|| panic!("unknown op {}", f[5])),
                    signed: f[6] == "1",
                    values: f[7..].iter().map(|v| v.parse().unwrap()).collect(),
                }),
                "erase" => {
                    let parts: Vec<&str> = line.split(" | ").collect();
                    let head: Vec<&str> = parts[0].split(' ').collect();
                    let floats = |s: &str| -> Vec<f32> {
                        s.split(' ').map(|v| v.parse().unwrap()).collect()
                    };
                    let n = |i: usize| -> u32 { head[i].parse().unwrap() };
                    r.erases.push(EraseLine {
                        case: head[1].to_string(),
                        height: n(2),
                        width: n(3),
                        region: (n(4), n(5), n(6), n(7)),
                        value: [
                            head[8].parse().unwrap(),
                            head[9].parse().unwrap(),
                            head[10].parse().unwrap(),
                        ],
                        input: floats(parts[1]),
                        output: floats(parts[2]),
                    });
                }
                name if name.starts_with("source_") => {
                    let image = hex_image(f[1], f[2], f[3]);
                    r.sources.insert(name["source_".len()..].to_string(), image);
                }
                case => {
                    let mut key = case.split(':');
                    let source = key.next().unwrap().to_string();
                    let op_name = key.next().unwrap();
                    let op = AugmentOp::parse(op_name)
                        .unwrap_or_else(|| panic!("unknown op {op_name} in {case}"));
                    let magnitude: f64 = key.next().unwrap().parse().unwrap();
                    let image = hex_image(f[1], f[2], f[3]);
                    r.cases
                        .push((case.to_string(), source, op, magnitude, image));
                }
            }
        }
        r
    })
}

/// An RGB image whose bytes come from a 32-bit LCG (Numerical Recipes constants), as the
/// fixture scripts build their inputs.
fn lcg_image(width: u32, height: u32, seed: u32) -> RgbImage {
    let mut state = seed;
    let bytes: Vec<u8> = (0..width * height * 3)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect();
    RgbImage::from_raw(width, height, bytes).unwrap()
}

/// The fixture's inputs, rebuilt: three LCG images, a low-contrast one with a constant green
/// channel (`v / 8 + 100`, green 77) and the grey image whose equalize table Pillow clips.
fn rebuilt_sources() -> HashMap<&'static str, RgbImage> {
    let b = lcg_image(23, 17, 5);
    let mut low = b.clone();
    for p in low.pixels_mut() {
        p[0] = p[0] / 8 + 100;
        p[1] = 77;
        p[2] = p[2] / 8 + 100;
    }
    let grey: Vec<u8> = std::iter::repeat_n(0u8, 100)
        .chain(1..=200u8)
        .chain(std::iter::once(255u8))
        .flat_map(|v| [v, v, v])
        .collect();
    HashMap::from([
        ("a32", lcg_image(32, 32, 2)),
        ("b23x17", b),
        ("c13x11", lcg_image(13, 11, 9)),
        ("low23x17", low),
        ("eqclip43x7", RgbImage::from_raw(43, 7, grey).unwrap()),
    ])
}

/// Why `got` is not `want` (the number of differing bytes and the first differing pixel), or
/// `None` when they are identical.
fn difference(got: &RgbImage, want: &RgbImage) -> Option<String> {
    if got.dimensions() != want.dimensions() {
        return Some(format!(
            "size {:?}, torchvision {:?}",
            got.dimensions(),
            want.dimensions()
        ));
    }
    let differing = got
        .as_raw()
        .iter()
        .zip(want.as_raw())
        .filter(|(a, b)| a != b)
        .count();
    if differing == 0 {
        return None;
    }
    let (x, y, g, w) = got
        .enumerate_pixels()
        .zip(want.pixels())
        .find(|((_, _, a), b)| a != b)
        .map(|((x, y, a), b)| (x, y, a.0, b.0))
        .unwrap();
    Some(format!(
        "{differing} bytes differ; first at (x {x}, y {y}): {g:?}, torchvision {w:?}"
    ))
}

/// Checks every fixture case of the operations in `ops`: 0 bytes may differ.
fn check_family(ops: &[AugmentOp]) {
    let r = reference();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (case, source, op, magnitude, want) in &r.cases {
        if !ops.contains(op) {
            continue;
        }
        let got = apply_op(&r.sources[source], *op, *magnitude);
        checked += 1;
        if let Some(why) = difference(&got, want) {
            failures.push(format!("{case}: {why}"));
        }
    }
    assert!(checked > 0, "no fixture case for {ops:?}");
    assert!(
        failures.is_empty(),
        "{} of {checked} cases differ from torchvision:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn fixture_sources_are_the_lcg_images() {
    let r = reference();
    for (name, image) in rebuilt_sources() {
        let want = &r.sources[name];
        assert_eq!(difference(&image, want), None, "source {name}");
    }
    assert_eq!(r.sources.len(), 5);
    assert!(r.cases.len() > 100, "{} cases", r.cases.len());
}

#[test]
fn geometric_ops_match_torchvision() {
    check_family(&[
        AugmentOp::ShearX,
        AugmentOp::ShearY,
        AugmentOp::TranslateX,
        AugmentOp::TranslateY,
        AugmentOp::Rotate,
    ]);
}

#[test]
fn colour_ops_match_torchvision() {
    check_family(&[
        AugmentOp::Brightness,
        AugmentOp::Color,
        AugmentOp::Contrast,
        AugmentOp::Sharpness,
    ]);
}

#[test]
fn histogram_ops_match_torchvision() {
    check_family(&[
        AugmentOp::Identity,
        AugmentOp::Posterize,
        AugmentOp::Solarize,
        AugmentOp::AutoContrast,
        AugmentOp::Equalize,
    ]);
}

#[test]
fn every_op_has_fixture_cases() {
    let r = reference();
    for op in AugmentOp::ALL {
        assert!(
            r.cases.iter().any(|c| c.2 == op),
            "no fixture case for {op}"
        );
        assert_eq!(AugmentOp::parse(op.name()), Some(op));
        assert_eq!(AugmentOp::parse(&op.name().to_lowercase()), Some(op));
    }
    assert_eq!(AugmentOp::parse("Invert"), None);
}

#[test]
fn magnitude_tables_match_torchvision_bit_for_bit() {
    let r = reference();
    assert!(r.magnitudes.len() >= 8 * AugmentOp::ALL.len());
    let mut failures = Vec::new();
    for line in &r.magnitudes {
        let got = match line.class.as_str() {
            "ta" => TrivialAugmentWide::new(line.bins).magnitudes(line.op),
            "ra" => RandAugment::new(2, 0, line.bins).magnitudes(line.op, line.height, line.width),
            other => panic!("unknown class {other}"),
        };
        let what = format!(
            "{} bins={} {}x{} {}",
            line.class, line.bins, line.width, line.height, line.op
        );
        assert_eq!(line.op.is_signed(), line.signed, "{what}: signed");
        assert_eq!(line.op.has_magnitude(), !line.values.is_empty(), "{what}");
        let same = got.len() == line.values.len()
            && got
                .iter()
                .zip(&line.values)
                .all(|(a, b)| a.to_bits() == b.to_bits());
        if !same {
            failures.push(format!("{what}: {got:?}\n  torchvision {:?}", line.values));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The ops come in torchvision's order (the index the policies draw).
    let order: Vec<AugmentOp> = r
        .magnitudes
        .iter()
        .filter(|l| l.class == "ta" && l.bins == 31)
        .map(|l| l.op)
        .collect();
    assert_eq!(order, AugmentOp::ALL);
}

#[test]
fn erase_matches_torchvision() {
    let r = reference();
    assert!(!r.erases.is_empty());
    for e in &r.erases {
        let mut x = e.input.clone();
        erase(&mut x, e.height, e.width, e.region, e.value);
        assert_eq!(x.len(), e.output.len(), "{}", e.case);
        for (k, (a, b)) in x.iter().zip(&e.output).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{}: value {k}: {a} vs {b}",
                e.case
            );
        }
    }
}

#[test]
fn trivial_augment_is_deterministic_per_seed_and_draws_every_op() {
    let image = lcg_image(23, 17, 5);
    let ta = TrivialAugmentWide::default();
    assert_eq!(ta.num_magnitude_bins, 31);
    let mut seen: HashMap<AugmentOp, (usize, usize)> = HashMap::new();
    for seed in 0..3000u64 {
        let (op, m) = ta.sample(&mut SeededRng::new(seed));
        assert_eq!(ta.sample(&mut SeededRng::new(seed)), (op, m));
        let table = ta.magnitudes(op);
        if table.is_empty() {
            assert_eq!(m, 0.0, "{op}");
        } else {
            assert!(table.contains(&m.abs()), "{op}: {m} not in its table");
        }
        let entry = seen.entry(op).or_default();
        if m.is_sign_negative() {
            entry.1 += 1;
        } else {
            entry.0 += 1;
        }
        if seed < 200 {
            // apply = apply_op of the sample, and the same seed gives the same pixels.
            let a = ta.apply(image.clone(), &mut SeededRng::new(seed));
            let b = ta.apply(image.clone(), &mut SeededRng::new(seed));
            assert_eq!(a, b, "seed {seed}");
            assert_eq!(a, apply_op(&image, op, m), "seed {seed}: {op} {m}");
        }
    }
    for op in AugmentOp::ALL {
        let (pos, neg) = seen.get(&op).copied().unwrap_or_default();
        // 3000 draws over 14 ops: about 214 each.
        assert!(pos + neg > 120, "{op} drawn {} times", pos + neg);
        if op.is_signed() {
            assert!(pos > 30 && neg > 30, "{op}: {pos} positive, {neg} negative");
        } else {
            assert_eq!(neg, 0, "{op} is unsigned");
        }
    }
}

#[test]
fn rand_augment_is_deterministic_per_seed_and_draws_every_op() {
    let image = lcg_image(23, 17, 5);
    let ra = RandAugment::default();
    assert_eq!(
        (ra.num_ops, ra.magnitude, ra.num_magnitude_bins),
        (2, 9, 31)
    );
    let mut seen: HashMap<AugmentOp, usize> = HashMap::new();
    for seed in 0..2000u64 {
        let ops = ra.sample(17, 23, &mut SeededRng::new(seed));
        assert_eq!(ops.len(), 2);
        assert_eq!(ops, ra.sample(17, 23, &mut SeededRng::new(seed)));
        for &(op, m) in &ops {
            let table = ra.magnitudes(op, 17, 23);
            let want = table.get(9).copied().unwrap_or(0.0);
            assert_eq!(m.abs(), want, "{op}");
            *seen.entry(op).or_default() += 1;
        }
        if seed < 100 {
            let a = ra.apply(image.clone(), &mut SeededRng::new(seed));
            assert_eq!(a, ra.apply(image.clone(), &mut SeededRng::new(seed)));
            let b = ops
                .iter()
                .fold(image.clone(), |img, &(op, m)| apply_op(&img, op, m));
            assert_eq!(a, b, "seed {seed}: {ops:?}");
        }
    }
    for op in AugmentOp::ALL {
        assert!(seen.get(&op).copied().unwrap_or(0) > 150, "{op}: {seen:?}");
    }
    // No ops: the image unchanged and nothing drawn.
    let none = RandAugment::new(0, 9, 31);
    let mut rng = SeededRng::new(1);
    assert_eq!(none.apply(image.clone(), &mut rng), image);
    assert_eq!(rng.next_u64(), SeededRng::new(1).next_u64());
}

#[test]
fn policies_in_a_pipeline() {
    let image = lcg_image(23, 17, 5);
    let ta = Pipeline::new().then(TrivialAugmentWide::default());
    let ra = Pipeline::new().then(RandAugment::default());
    for p in [&ta, &ra] {
        assert!(p.is_random());
        assert_eq!(p.output_size(23, 17).unwrap(), (23, 17));
        let a = p.apply(image.clone(), &mut SeededRng::new(7)).unwrap();
        assert_eq!(a, p.apply(image.clone(), &mut SeededRng::new(7)).unwrap());
        assert_eq!(a.dimensions(), (23, 17));
    }
    assert_eq!(
        ta.apply(image.clone(), &mut SeededRng::new(7)).unwrap(),
        TrivialAugmentWide::default().apply(image.clone(), &mut SeededRng::new(7))
    );
    assert!(!Pipeline::new().then(RandAugment::new(0, 9, 31)).is_random());
    assert_eq!(
        finetune::data::Transform::from(TrivialAugmentWide::default()).name(),
        "TrivialAugmentWide"
    );
    assert_eq!(
        finetune::data::Transform::from(RandAugment::default()).name(),
        "RandAugment"
    );
    // Serialisable, and pipelines written before `erasing` existed still load.
    let json = serde_json::to_string(&ra.clone().random_erasing(RandomErasing::default())).unwrap();
    let back: Pipeline = serde_json::from_str(&json).unwrap();
    assert_eq!(back, ra.clone().random_erasing(RandomErasing::default()));
    let old: Pipeline = serde_json::from_str(r#"{"transforms":[],"normalize":null}"#).unwrap();
    assert_eq!(old, Pipeline::new());
}

#[test]
fn invalid_policies_and_erasing_are_errors() {
    let transform_error = |p: Pipeline, name: &str| match p.validate() {
        Err(DataError::Transform { transform, reason }) => {
            assert_eq!(transform, name, "{reason}");
            assert!(!reason.is_empty());
        }
        other => panic!("{name}: expected a transform error, got {other:?}"),
    };
    transform_error(
        Pipeline::new().then(TrivialAugmentWide::new(1)),
        "TrivialAugmentWide",
    );
    transform_error(
        Pipeline::new().then(TrivialAugmentWide::new(0)),
        "TrivialAugmentWide",
    );
    transform_error(
        Pipeline::new().then(RandAugment::new(2, 31, 31)),
        "RandAugment",
    );
    transform_error(
        Pipeline::new().then(RandAugment::new(2, 0, 1)),
        "RandAugment",
    );
    assert!(
        Pipeline::new()
            .then(RandAugment::new(2, 30, 31))
            .validate()
            .is_ok()
    );
    assert!(
        Pipeline::new()
            .then(RandAugment::new(2, 30, 31))
            .output_size(8, 8)
            .is_ok()
    );
    assert!(
        Pipeline::new()
            .then(TrivialAugmentWide::new(1))
            .output_size(8, 8)
            .is_err()
    );
    let bad = [
        RandomErasing::new(1.5),
        RandomErasing::new(-0.1),
        RandomErasing::new(f64::NAN),
        RandomErasing::default().with_scale(0.5, 0.1),
        RandomErasing::default().with_scale(-0.1, 0.3),
        RandomErasing::default().with_scale(0.1, 1.5),
        RandomErasing::default().with_ratio(0.0, 1.0),
        RandomErasing::default().with_ratio(2.0, 1.0),
        RandomErasing::default().with_ratio(0.5, f64::INFINITY),
        RandomErasing::default().with_value(ErasingValue::PerChannel([0.0, f32::NAN, 0.0])),
    ];
    for e in bad {
        assert!(e.validate().is_err(), "{e:?}");
        transform_error(Pipeline::new().random_erasing(e), "RandomErasing");
    }
    let good = RandomErasing::default();
    assert_eq!(
        (good.p, good.scale, good.ratio, good.value),
        (0.5, (0.02, 0.33), (0.3, 3.3), ErasingValue::Zero)
    );
    assert!(good.validate().is_ok());
    assert!(Pipeline::new().random_erasing(good).validate().is_ok());
}

#[test]
fn erasing_params_stay_in_range() {
    let (height, width) = (200u32, 300u32);
    let area = f64::from(height * width);
    let e = RandomErasing::default();
    let (mut found, mut small, mut large) = (0, 0, 0);
    for seed in 0..2000u64 {
        let Some((top, left, h, w)) = e.get_params(height, width, &mut SeededRng::new(seed)) else {
            continue;
        };
        found += 1;
        assert!(h < height && w < width, "{h}x{w}");
        assert!(
            top + h <= height && left + w <= width,
            "({top}, {left}) {h}x{w}"
        );
        let fraction = f64::from(h * w) / area;
        assert!(
            (0.02 * 0.85..=0.33 * 1.15).contains(&fraction),
            "area fraction {fraction}"
        );
        let ratio = f64::from(h) / f64::from(w);
        assert!((0.3 / 1.1..=3.3 * 1.1).contains(&ratio), "ratio {ratio}");
        small += usize::from(fraction < 0.06);
        large += usize::from(fraction > 0.25);
        assert_eq!(
            e.get_params(height, width, &mut SeededRng::new(seed)),
            Some((top, left, h, w))
        );
    }
    assert!(found > 1900, "{found} of 2000 draws fit");
    assert!(small > 50 && large > 50, "{small} small, {large} large");
    // Nothing fits in a 1x1 image but an empty rectangle.
    for seed in 0..100u64 {
        if let Some((_, _, h, w)) = e.get_params(1, 1, &mut SeededRng::new(seed)) {
            assert_eq!((h, w), (0, 0));
        }
    }
}

#[test]
fn erasing_probability_and_values() {
    let (height, width) = (40u32, 60u32);
    let n = 3 * (height * width) as usize;
    let ones = vec![1.0f32; n];
    // p = 0: never erases.
    let never = RandomErasing::new(0.0);
    for seed in 0..200u64 {
        let mut x = ones.clone();
        never.apply(&mut x, height, width, &mut SeededRng::new(seed));
        assert_eq!(x, ones);
    }
    // p = 1: erases the rectangle get_params draws after the probability draw.
    let always = RandomErasing::new(1.0);
    let tuple = always.with_value(ErasingValue::PerChannel([0.5, -2.0, 3.0]));
    for seed in 0..200u64 {
        let mut rng = SeededRng::new(seed);
        let _ = rng.unit_f64();
        let params = always.get_params(height, width, &mut rng);
        let mut x = ones.clone();
        always.apply(&mut x, height, width, &mut SeededRng::new(seed));
        let mut y = ones.clone();
        tuple.apply(&mut y, height, width, &mut SeededRng::new(seed));
        match params {
            Some((top, left, h, w)) => {
                let zeros = x.iter().filter(|&&v| v == 0.0).count();
                assert_eq!(zeros, 3 * (h * w) as usize, "seed {seed}");
                let mut want = ones.clone();
                erase(
                    &mut want,
                    height,
                    width,
                    (top, left, h, w),
                    [0.5, -2.0, 3.0],
                );
                assert_eq!(y, want, "seed {seed}");
            }
            None => assert_eq!(x, ones),
        }
    }
    // 'random': standard normal noise in the rectangle.
    let noisy = RandomErasing::new(1.0)
        .with_scale(0.3, 0.33)
        .with_value(ErasingValue::Random);
    let (height, width) = (200u32, 300u32);
    let ones = vec![1.0f32; 3 * (height * width) as usize];
    let mut x = ones.clone();
    noisy.apply(&mut x, height, width, &mut SeededRng::new(3));
    let noise: Vec<f64> = x
        .iter()
        .filter(|&&v| v != 1.0)
        .map(|&v| f64::from(v))
        .collect();
    assert!(noise.len() > 3 * 15_000, "{} values erased", noise.len());
    assert!(noise.iter().all(|v| v.is_finite()));
    let mean = noise.iter().sum::<f64>() / noise.len() as f64;
    let var = noise.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / noise.len() as f64;
    assert!(
        mean.abs() < 0.05 && (var - 1.0).abs() < 0.1,
        "mean {mean}, variance {var}"
    );
    let mut again = ones.clone();
    noisy.apply(&mut again, height, width, &mut SeededRng::new(3));
    assert_eq!(x, again);
}

#[test]
fn the_batcher_erases_after_normalising() {
    let image = RgbImage::from_pixel(12, 10, image::Rgb([255, 128, 0]));
    let pipeline = Pipeline::new()
        .then(TrivialAugmentWide::default())
        .random_erasing(RandomErasing::new(1.0).with_value(ErasingValue::Random));
    let batcher = ImageBatcher::new(pipeline.clone());
    let seed = 11;
    let batch = batcher
        .batch_host(vec![SeededItem {
            item: ImageItem {
                image: image.clone(),
                label: 0,
            },
            index: 0,
            seed,
        }])
        .unwrap();
    // By hand: the u8 transforms, ToTensor, then the erasing, all from one generator.
    let mut rng = SeededRng::new(seed);
    let out = pipeline.apply(image, &mut rng).unwrap();
    let mut chw = vec![0f32; 3 * 12 * 10];
    to_chw(&out, &pipeline.lut(), &mut chw);
    pipeline.erase(&mut chw, 10, 12, &mut rng);
    assert_eq!(batch.images, chw);
    assert!(pipeline.is_random());
    assert!(
        Pipeline::new()
            .random_erasing(RandomErasing::new(0.5))
            .is_random()
    );
    assert!(
        !Pipeline::new()
            .random_erasing(RandomErasing::new(0.0))
            .is_random()
    );
}
