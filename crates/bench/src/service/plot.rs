//! PNG plots of `offpath-bench service` results, drawn with plotters.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::Report;
use super::pipeline::{Pipeline, StageMs};
use super::responsiveness::{Responsiveness, Run};

/// The font plots are labelled with, unless OFFPATH_PLOT_FONT names another .ttf.
const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FONT: &str = "sans-serif";
const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// Draws `latency-<backend>.png` and `pipeline-<backend>.png` into `out`.
pub(super) fn service(report: &Report, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    register_font()?;
    let backend = report.backend;
    let latency_png = out.join(format!("latency-{backend}.png"));
    latency(&report.responsiveness, backend, &latency_png)?;
    let pipeline_png = out.join(format!("pipeline-{backend}.png"));
    pipeline(&report.pipeline, backend, &pipeline_png)?;
    Ok(vec![latency_png, pipeline_png])
}

fn register_font() -> anyhow::Result<()> {
    let path = std::env::var_os("OFFPATH_PLOT_FONT")
        .map_or_else(|| PathBuf::from(DEFAULT_FONT), PathBuf::from);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read the plot font {}; set OFFPATH_PLOT_FONT to a .ttf file (Debian: fonts-dejavu-core)",
            path.display()
        )
    })?;
    // plotters keeps fonts for the life of the process.
    plotters::style::register_font(FONT, FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
        .map_err(|_| anyhow::anyhow!("{} is not a TrueType font", path.display()))
}

/// Labels the category whose bars are centred on `x` (categories sit at i + 0.5).
fn category(names: &[String], x: f64) -> String {
    let doubled = (x * 2.0).round();
    if doubled as i64 % 2 == 1 && (x * 2.0 - doubled).abs() < 1e-6 {
        names.get((x.floor()) as usize).cloned().unwrap_or_default()
    } else {
        String::new()
    }
}

/// Grouped bars: submit latency percentiles per run, log scale.
fn latency(responsiveness: &Responsiveness, backend: &str, path: &Path) -> anyhow::Result<()> {
    let all = &responsiveness.runs;
    let runs: [(&Run, &str); 4] = [
        (&all.offpath_idle, "offpath, idle workers"),
        (&all.offpath_saturated, "offpath, saturated"),
        (&all.sync_idle, "synchronous, idle"),
        (&all.sync_saturated, "synchronous, saturated"),
    ];
    let percentiles = ["p50", "p95", "p99"];
    let value = |run: &Run, p: &str| {
        run.latency.map_or(f64::NAN, |l| match p {
            "p50" => l.p50,
            "p95" => l.p95,
            _ => l.p99,
        })
    };
    let values: Vec<f64> = runs
        .iter()
        .flat_map(|(run, _)| percentiles.iter().map(move |p| value(run, p)))
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let low = values.iter().copied().fold(f64::INFINITY, f64::min) / 2.0;
    let high = values.iter().copied().fold(0.0, f64::max) * 3.0;
    let names: Vec<String> = runs.iter().map(|(_, label)| label.to_string()).collect();

    let root = BitMapBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let caption = format!(
        "Submit latency at {}/s, idle vs saturated workers ({backend})",
        responsiveness.rate_per_second
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, (FONT, 22))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..runs.len() as f64, (low..high).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(runs.len() * 2 + 1)
        .x_label_formatter(&|x| category(&names, *x))
        .y_desc("milliseconds (log scale)")
        .label_style((FONT, 14))
        .draw()?;
    let width = 0.8 / percentiles.len() as f64;
    for (k, p) in percentiles.iter().enumerate() {
        let color = COLORS[k];
        chart
            .draw_series(runs.iter().enumerate().map(|(i, (run, _))| {
                let x0 = i as f64 + 0.1 + k as f64 * width;
                Rectangle::new(
                    [(x0, low), (x0 + width * 0.9, value(run, p))],
                    color.filled(),
                )
            }))?
            .label(*p)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .label_font((FONT, 14))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Left: jobs/s per pollers x batch size. Right: worker time per job by stage.
fn pipeline(pipeline: &Pipeline, backend: &str, path: &Path) -> anyhow::Result<()> {
    let runs = &pipeline.runs;
    let names: Vec<String> = runs
        .iter()
        .map(|r| format!("{}p x b{}", r.pollers, r.batch_size))
        .collect();
    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(600);
    let throughput: Vec<f64> = runs.iter().map(|r| r.jobs_per_second).collect();
    bars(
        &left,
        &format!("Pipeline throughput ({backend})"),
        "jobs per second",
        &names,
        &[("jobs/s", throughput)],
    )?;
    let per_stage: Vec<(&str, Vec<f64>)> = StageMs::NAMES
        .iter()
        .enumerate()
        .map(|(k, stage)| {
            let ms = runs
                .iter()
                .map(|r| r.worker_ms_per_job.values()[k])
                .collect();
            (*stage, ms)
        })
        .collect();
    bars(
        &right,
        "Worker time per job, by stage",
        "milliseconds per job (all pollers)",
        &names,
        &per_stage,
    )?;
    root.present()?;
    Ok(())
}

/// Stacked bars, one per category, one colour per series.
fn bars(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    caption: &str,
    y_desc: &str,
    names: &[String],
    series: &[(&str, Vec<f64>)],
) -> anyhow::Result<()> {
    let totals: Vec<f64> = (0..names.len())
        .map(|i| series.iter().map(|(_, v)| v[i]).sum())
        .collect();
    let high = totals.iter().copied().fold(0.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 20))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..names.len() as f64, 0f64..high.max(1e-3))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(names.len() * 2 + 1)
        .x_label_formatter(&|x| category(names, *x))
        .y_desc(y_desc)
        .label_style((FONT, 13))
        .draw()?;
    let mut base = vec![0.0; names.len()];
    for (k, (label, values)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let bottoms = base.clone();
        chart
            .draw_series(values.iter().enumerate().map(|(i, v)| {
                Rectangle::new(
                    [
                        (i as f64 + 0.15, bottoms[i]),
                        (i as f64 + 0.85, bottoms[i] + v),
                    ],
                    color.filled(),
                )
            }))?
            .label(*label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        for (b, v) in base.iter_mut().zip(values) {
            *b += v;
        }
    }
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .label_font((FONT, 13))
            .draw()?;
    }
    Ok(())
}
