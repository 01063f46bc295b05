//! The loss curves of the demo as a hand-written SVG line chart.

use std::fmt::Write as _;

/// Colours of the curves, in the order of the series.
const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#7f7f7f", "#ff7f0e"];

/// Left edge of the plot area inside the 720 × 420 picture.
const LEFT: f64 = 64.0;
/// Top edge of the plot area.
const TOP: f64 = 40.0;
/// Width of the plot area (the legend sits to its right).
const WIDTH: f64 = 520.0;
/// Height of the plot area.
const HEIGHT: f64 = 320.0;

/// Averages of consecutive blocks of `block` values (the last block may be shorter).
fn block_means(values: &[f32], block: usize) -> Vec<f64> {
    values.chunks(block.max(1)).map(|c| c.iter().map(|&v| f64::from(v)).sum::<f64>() / c.len() as f64).collect()
}

/// A "nice" tick step (1, 2 or 5 × 10^k) giving about `target` ticks over `span`.
fn tick_step(span: f64, target: f64) -> f64 {
    let raw = span / target;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * mag).find(|&s| s >= raw).unwrap_or(10.0 * mag)
}

/// An SVG of one loss curve per `(name, losses)` series: the training loss of every step,
/// averaged over blocks of steps (about 50 points per curve) so minibatch noise does not hide
/// the trend; x is the step, y the loss from 0.
pub fn loss_plot(title: &str, series: &[(&str, &[f32])]) -> String {
    let steps = series.iter().map(|(_, l)| l.len()).max().unwrap_or(0).max(1);
    let block = steps.div_ceil(50).max(1);
    let curves: Vec<Vec<f64>> = series.iter().map(|(_, l)| block_means(l, block)).collect();
    let top = curves.iter().flatten().copied().filter(|v| v.is_finite()).fold(0.0f64, f64::max).max(1e-3);
    let y_step = tick_step(top, 5.0);
    let y_max = (top / y_step).ceil() * y_step;
    let x = |step: f64| LEFT + WIDTH * step / steps as f64;
    let y = |loss: f64| TOP + HEIGHT * (1.0 - (loss / y_max).clamp(0.0, 1.0));
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="720" height="420" viewBox="0 0 720 420" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="720" height="420" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        LEFT + WIDTH / 2.0,
        escape(title)
    );
    let x_step = tick_step(steps as f64, 6.0);
    let mut t = 0.0;
    while t <= steps as f64 + 1e-9 {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#e0e0e0"/><text x="{0:.1}" y="{3}" text-anchor="middle">{4}</text>"##,
            x(t),
            TOP,
            TOP + HEIGHT,
            TOP + HEIGHT + 16.0,
            trim(t)
        );
        t += x_step;
    }
    let mut v = 0.0;
    while v <= y_max + 1e-9 {
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{1:.1}" x2="{2}" y2="{1:.1}" stroke="#e0e0e0"/><text x="{3}" y="{4:.1}" text-anchor="end">{5}</text>"##,
            LEFT,
            y(v),
            LEFT + WIDTH,
            LEFT - 6.0,
            y(v) + 4.0,
            trim(v)
        );
        v += y_step;
    }
    let _ =
        writeln!(s, r##"<rect x="{LEFT}" y="{TOP}" width="{WIDTH}" height="{HEIGHT}" fill="none" stroke="#404040"/>"##);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">step (loss averaged over blocks of {block})</text>"#,
        LEFT + WIDTH / 2.0,
        TOP + HEIGHT + 34.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{0}" text-anchor="middle" transform="rotate(-90 18 {0})">training loss (cross-entropy)</text>"#,
        TOP + HEIGHT / 2.0
    );
    for (i, ((name, _), curve)) in series.iter().zip(&curves).enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = curve
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(j, &v)| format!("{:.1},{:.1}", x((j as f64 + 0.5) * block as f64).min(LEFT + WIDTH), y(v)))
            .collect();
        let _ =
            writeln!(s, r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#, points.join(" "));
        let ly = TOP + 12.0 + 20.0 * i as f64;
        let lx = LEFT + WIDTH + 16.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A tick label without float noise (`0.30000000000000004` → `0.3`).
fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
