//! PNG charts of a bench run (plotters, pure Rust). Text needs a font: a
//! DejaVu file from Debian's fonts-dejavu-core, read at run time.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use plotters::{
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::report::Spread;

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];
pub const FONT_FILE: &str = FONTS[0];
const FONT: &str = "sans-serif";

/// Registers the font once for the process.
pub fn load_font() -> Result<()> {
    static LOADED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *LOADED.get_or_init(|| {
        FONTS.iter().any(|f| {
            std::fs::read(f).is_ok_and(|bytes| {
                // plotters keeps the font for the process's life.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok()
            })
        })
    });
    if !ok {
        bail!("no font: install fonts-dejavu-core ({FONT_FILE})");
    }
    Ok(())
}

/// One workload: a bar per tracer, or a note why there are none.
pub struct Group {
    pub label: String,
    pub note: Option<String>,
    pub bars: Vec<(&'static str, Spread)>,
}

pub struct ProgramBar {
    pub label: String,
    pub ns: f64,
    pub runs: u64,
    pub data_path: bool,
}

fn color(i: usize) -> RGBColor {
    const C: &[RGBColor] = &[
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    C[i % C.len()]
}

/// Ratio per workload and tracer: bar to the median, box over the
/// interquartile range, whisker min–max; 1.00 = no cost.
pub fn overhead(path: &Path, groups: &[Group], tracers: &[&'static str]) -> Result<()> {
    let root = BitMapBackend::new(path, (1400, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let shown = |g: &Group| g.note.is_none();
    let values = groups
        .iter()
        .filter(|g| shown(g))
        .flat_map(|g| g.bars.iter().map(|b| b.1));
    let top = values.clone().map(|s| s.max).fold(1.1, f64::max) * 1.08;
    let bottom = values.map(|s| s.min).fold(0.95, f64::min) - 0.02;
    let n = groups.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Throughput ratio untraced / traced (paired rounds; 1.00 = free)",
            (FONT, 26),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n, bottom..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_label_style((FONT, 15))
        .y_desc("ratio (median, IQR box, min–max whisker)")
        .axis_desc_style((FONT, 16))
        .draw()?;
    // Workload names under their groups (the axis has no labels of its own).
    let label = (FONT, 16)
        .into_font()
        .into_text_style(&root)
        .pos(Pos::new(HPos::Center, VPos::Top));
    for (gi, g) in groups.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(gi as f64 + 0.5, bottom));
        root.draw(&Text::new(g.label.clone(), (x, y + 10), label.clone()))?;
    }
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(0.0, 1.0), (n, 1.0)],
        BLACK.stroke_width(1),
    )))?;
    let width = 0.8 / tracers.len().max(1) as f64;
    for (ti, tracer) in tracers.iter().enumerate() {
        let c = color(ti);
        let mut bars = Vec::new();
        for (gi, g) in groups.iter().enumerate().filter(|(_, g)| shown(g)) {
            if let Some((_, s)) = g.bars.iter().find(|b| b.0 == *tracer) {
                let x0 = gi as f64 + 0.1 + ti as f64 * width;
                bars.push((x0, *s));
            }
        }
        chart
            .draw_series(bars.iter().map(|(x0, s)| {
                Rectangle::new(
                    [(*x0 + width * 0.1, 1.0), (*x0 + width * 0.9, s.median)],
                    c.filled(),
                )
            }))?
            .label(*tracer)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
        chart.draw_series(bars.iter().map(|(x0, s)| {
            let xc = x0 + width / 2.0;
            PathElement::new(vec![(xc, s.min), (xc, s.max)], BLACK.stroke_width(1))
        }))?;
        chart.draw_series(bars.iter().map(|(x0, s)| {
            Rectangle::new(
                [(x0 + width * 0.3, s.q1), (x0 + width * 0.7, s.q3)],
                BLACK.stroke_width(2),
            )
        }))?;
        chart.draw_series(bars.iter().map(|(x0, s)| {
            Text::new(
                format!("{:.2}", s.median),
                (
                    x0 + width * 0.05,
                    s.max.max(s.median) + (top - bottom) * 0.01,
                ),
                (FONT, 13).into_font(),
            )
        }))?;
    }
    for (gi, g) in groups.iter().enumerate() {
        if let Some(note) = &g.note {
            chart.draw_series(std::iter::once(Text::new(
                note.clone(),
                (gi as f64 + 0.05, 1.0 + (top - bottom) * 0.05),
                (FONT, 14).into_font(),
            )))?;
        }
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present().context("writing the overhead chart")?;
    Ok(())
}

/// Average BPF run time per program, log scale, with the targets (≤ 100 ns
/// lifecycle, ≤ 50 ns data path) as lines.
pub fn bpf(path: &Path, bars: &[ProgramBar]) -> Result<()> {
    let height = 120 + 28 * bars.len() as u32;
    let root = BitMapBackend::new(path, (1300, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = bars.iter().map(|b| b.ns).fold(200.0, f64::max) * 3.0;
    let n = bars.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Average BPF run time per program run (kernel.bpf_stats_enabled), ns",
            (FONT, 24),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(380)
        .build_cartesian_2d((5f64..max).log_scale(), -0.5f64..n - 0.5)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("ns per run (log scale)")
        .x_label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()?;
    // Program names left of their bars (the axis has no labels of its own).
    let label = (FONT, 14)
        .into_font()
        .into_text_style(&root)
        .pos(Pos::new(HPos::Right, VPos::Center));
    for (i, b) in bars.iter().enumerate() {
        let kind = if b.data_path {
            "data path"
        } else {
            "lifecycle"
        };
        let (x, y) = chart.backend_coord(&(5.0, i as f64));
        root.draw(&Text::new(
            format!("{} ({kind})", b.label),
            (x - 8, y),
            label.clone(),
        ))?;
    }
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        let c = if b.data_path { color(1) } else { color(0) };
        let y = i as f64;
        Rectangle::new([(5.0, y - 0.35), (b.ns.max(5.0), y + 0.35)], c.filled())
    }))?;
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        Text::new(
            format!("{:.0} ns × {} runs", b.ns, b.runs),
            (b.ns.max(5.0) * 1.05, i as f64 - 0.2),
            (FONT, 13).into_font(),
        )
    }))?;
    for (ns, c, what) in [
        (100.0, color(0), "lifecycle target 100 ns"),
        (50.0, color(1), "data-path target 50 ns"),
    ] {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(ns, -0.5), (ns, n - 0.5)],
                c.stroke_width(2),
            )))?
            .label(what)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present().context("writing the BPF chart")?;
    Ok(())
}

/// Daemon RSS and BPF map memory against open connections, with the 64 MiB
/// target.
pub fn memory(path: &Path, points: &[(f64, f64, f64)]) -> Result<()> {
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let xmax = points.iter().map(|p| p.0).fold(100_000.0, f64::max) * 1.05;
    let ymax = points.iter().map(|p| p.1.max(p.2)).fold(64.0, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "conntracer daemon memory against open connections",
            (FONT, 24),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("open tracked connections")
        .y_desc("MiB")
        .x_label_formatter(&|x| format!("{:.0}k", x / 1000.0))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()?;
    for (i, (what, pick)) in [
        (
            "daemon RSS",
            (|p: &(f64, f64, f64)| p.1) as fn(&(f64, f64, f64)) -> f64,
        ),
        ("BPF maps (memlock)", |p| p.2),
    ]
    .into_iter()
    .enumerate()
    {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.0, pick(p))),
                c.stroke_width(2),
            ))?
            .label(what)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
        chart.draw_series(
            points
                .iter()
                .map(|p| Circle::new((p.0, pick(p)), 4, c.filled())),
        )?;
        chart.draw_series(points.iter().map(|p| {
            Text::new(
                format!("{:.1}", pick(p)),
                (p.0, pick(p) + ymax * 0.02),
                (FONT, 13).into_font(),
            )
        }))?;
    }
    let red = color(3);
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 64.0), (xmax, 64.0)],
            red.stroke_width(1),
        )))?
        .label("RSS target 64 MiB at 100k")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], red.stroke_width(1)));
    chart
        .configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present().context("writing the memory chart")?;
    Ok(())
}
