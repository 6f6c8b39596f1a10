//! Draws the dashboards' main panels as one PNG from the Prometheus data of a real run.
//!
//! The input is what `edge-proxy/tests/browser_players.rs` writes: every Grafana panel's
//! query run over the test against a live Prometheus (`target/test-artifacts/
//! prometheus-run.json`). The output is the picture in `docs/operations.md`:
//!
//! ```text
//! cargo test -p shoal-edge-proxy --test browser_players
//! cargo run -p shoal-bench --bin dashboard-png -- \
//!     --input target/test-artifacts/prometheus-run.json --output docs/dashboard.png
//! ```

use anyhow::{bail, Context, Result};
use clap::Parser;
use plotters::prelude::*;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Draws Shoal's main dashboard panels from a Prometheus run dump")]
struct Args {
    /// The dump `browser_players` writes.
    #[arg(long, default_value = "target/test-artifacts/prometheus-run.json")]
    input: PathBuf,
    /// The PNG to write.
    #[arg(long, default_value = "docs/dashboard.png")]
    output: PathBuf,
    /// A TrueType font for the labels (Debian package fonts-dejavu-core).
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    font: PathBuf,
}

#[derive(Deserialize)]
struct Run {
    start: f64,
    panels: Vec<PanelData>,
}

#[derive(Deserialize)]
struct PanelData {
    dashboard: String,
    panel: String,
    legend: String,
    series: Vec<Series>,
}

/// One series of a Prometheus range-query answer.
#[derive(Deserialize)]
struct Series {
    metric: BTreeMap<String, String>,
    /// `[unix seconds, "value"]`.
    values: Vec<(f64, String)>,
}

/// How a panel's values are shown.
#[derive(Clone, Copy)]
enum Unit {
    /// 0..1 shown as percent.
    Ratio,
    /// Bytes per second shown as kB/s.
    BytesPerSec,
    /// Seconds shown as milliseconds.
    Seconds,
    /// As is.
    Count,
}

impl Unit {
    fn scale(self, v: f64) -> f64 {
        match self {
            Unit::Ratio => v * 100.0,
            Unit::BytesPerSec => v / 1000.0,
            Unit::Seconds => v * 1000.0,
            Unit::Count => v,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Unit::Ratio => "%",
            Unit::BytesPerSec => "kB/s",
            Unit::Seconds => "ms",
            Unit::Count => "",
        }
    }
}

/// The panels drawn, in reading order: (dashboard uid, panel title, unit).
const MAIN: [(&str, &str, Unit); 6] = [
    ("shoal-fleet", "Fleet offload ratio", Unit::Ratio),
    ("shoal-fleet", "Bytes by source", Unit::BytesPerSec),
    ("shoal-fleet", "Peers and swarms", Unit::Count),
    ("shoal-fleet", "Announce latency", Unit::Seconds),
    ("shoal-edge", "Delivered bytes by source", Unit::BytesPerSec),
    (
        "shoal-edge",
        "Segment fetch latency (p95) by source",
        Unit::Seconds,
    ),
];

/// `{{label}}` in a legend format replaced by the series' label values, as Grafana does.
fn legend(format: &str, metric: &BTreeMap<String, String>) -> String {
    let mut s = format.to_string();
    for (k, v) in metric {
        s = s.replace(&format!("{{{{{k}}}}}"), v);
    }
    s
}

/// A line: its legend and (seconds since the run started, scaled value) points.
type Line = (String, Vec<(f64, f64)>);

fn lines(run: &Run, dashboard: &str, panel: &str, unit: Unit) -> Result<Vec<Line>> {
    let mut out = Vec::new();
    for p in run
        .panels
        .iter()
        .filter(|p| p.dashboard == dashboard && p.panel == panel)
    {
        for s in &p.series {
            let points = s
                .values
                .iter()
                .filter_map(|(t, v)| {
                    let v: f64 = v.parse().ok()?;
                    v.is_finite().then(|| (t - run.start, unit.scale(v)))
                })
                .collect();
            out.push((legend(&p.legend, &s.metric), points));
        }
    }
    if out.is_empty() {
        bail!("no data for panel {dashboard} / {panel}");
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let font = std::fs::read(&args.font)
        .with_context(|| format!("reading the font {}", args.font.display()))?;
    // plotters keeps registered fonts for the life of the process.
    plotters::style::register_font("sans-serif", FontStyle::Normal, font.leak())
        .map_err(|_| anyhow::anyhow!("{} is not a usable font", args.font.display()))?;
    let run: Run = serde_json::from_slice(
        &std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?,
    )
    .context("parsing the run dump")?;

    let root = BitMapBackend::new(&args.output, (1400, 1050)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(50);
    title.titled(
        "Shoal dashboards from a real run: hls.js and dash.js in headless Chromium, four edge proxies",
        ("sans-serif", 24),
    )?;
    for (area, (dashboard, panel, unit)) in body.split_evenly((3, 2)).iter().zip(MAIN) {
        let lines = lines(&run, dashboard, panel, unit)?;
        let x_max = lines
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
            .fold(1.0, f64::max);
        let y_max = lines
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
            .fold(0.0, f64::max);
        let y_max = match unit {
            Unit::Ratio => 100.0,
            _ => (y_max * 1.15).max(1e-3),
        };
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{panel}  ({dashboard})"), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("seconds into the run")
            .y_desc(unit.label())
            .label_style(("sans-serif", 13))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        for (i, (name, points)) in lines.into_iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 13))
            .draw()?;
    }
    root.present()?;
    println!("wrote {}", args.output.display());
    Ok(())
}
