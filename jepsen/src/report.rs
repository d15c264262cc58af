//! Reports: `results.json` (verdicts, counts, fault windows, the
//! availability table, nodes that exited on their own) and `latency.png`
//! (latency over time, fault windows shaded, throughput).

use crate::checker::availability::WindowAvailability;
use crate::checker::{Validity, Verdict};
use crate::db::Exit;
use crate::history::{pairs, Op, OpType};
use crate::nemesis::Window;
use plotters::prelude::*;
use serde::Serialize;
use std::path::Path;

/// How many operations ended each way.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    pub invoked: usize,
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
}

impl Counts {
    pub fn of(history: &[Op]) -> Counts {
        let mut c = Counts::default();
        for (_, done) in pairs(history) {
            c.invoked += 1;
            match done.map(|d| d.kind) {
                Some(OpType::Ok) => c.ok += 1,
                Some(OpType::Fail) => c.fail += 1,
                _ => c.info += 1,
            }
        }
        c
    }
}

/// Everything `results.json` holds.
#[derive(Serialize)]
pub struct Results<'a> {
    pub workload: &'a str,
    pub nemesis: &'a str,
    pub seed: u64,
    pub seconds: f64,
    pub network: String,
    pub broken_reads: bool,
    pub valid: Validity,
    pub counts: Counts,
    pub events: usize,
    pub windows: &'a [Window],
    pub availability: AvailabilityReport<'a>,
    /// Nodes that exited without the harness stopping them.
    pub exits: &'a [Exit],
    pub verdicts: &'a [Verdict],
}

/// The availability table and the bound it was judged by.
#[derive(Serialize)]
pub struct AvailabilityReport<'a> {
    pub bound_ms: u64,
    pub windows: &'a [WindowAvailability],
}

/// Invalid wins over unknown, unknown over valid.
pub fn overall(verdicts: &[Verdict]) -> Validity {
    if verdicts.iter().any(|v| v.valid == Validity::Invalid) {
        Validity::Invalid
    } else if verdicts.iter().any(|v| v.valid == Validity::Unknown) {
        Validity::Unknown
    } else {
        Validity::Valid
    }
}

pub fn write_json(path: &Path, results: &Results<'_>) -> Result<(), String> {
    let text = serde_json::to_string_pretty(results).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// One point per completed operation: (completion time s, latency ms, kind).
fn points(history: &[Op]) -> Vec<(f64, f64, OpType)> {
    pairs(history)
        .into_iter()
        .filter_map(|(inv, done)| {
            let done = done?;
            let t = done.time_ns as f64 / 1e9;
            let lat = (done.time_ns.saturating_sub(inv.time_ns)) as f64 / 1e6;
            Some((t, lat.max(0.01), done.kind))
        })
        .collect()
}

fn font() {
    // Registering twice is harmless; failing leaves labels undrawn, which
    // `plot` reports.
    let _ =
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
}

/// Draw latency over time (log scale, by outcome) above throughput (ok
/// operations per second), with every fault window shaded.
pub fn plot(path: &Path, history: &[Op], windows: &[Window], title: &str) -> Result<(), String> {
    font();
    let pts = points(history);
    let end = pts.iter().map(|p| p.0).fold(1.0f64, f64::max).ceil();
    let max_lat = pts.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.5;
    let root = BitMapBackend::new(path, (1200, 800)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (top, bottom) = root.split_vertically(520);

    let mut chart = ChartBuilder::on(&top)
        .caption(title, ("sans-serif", 22))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, (0.01..max_lat).log_scale())
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("latency (ms)")
        .draw()
        .map_err(|x| e(&x))?;
    shade(&mut chart, windows, 0.01, max_lat).map_err(|x| e(&x))?;
    for (kind, color, label) in [
        (OpType::Ok, GREEN.mix(0.6), "ok"),
        (OpType::Fail, RED.mix(0.7), "fail"),
        (OpType::Info, RGBColor(230, 140, 0).mix(0.9), "info"),
    ] {
        chart
            .draw_series(
                pts.iter()
                    .filter(|p| p.2 == kind)
                    .map(|p| Circle::new((p.0, p.1), 2, color.filled())),
            )
            .map_err(|x| e(&x))?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + 5, y), 3, color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;

    let buckets = throughput(&pts, end as usize);
    let max_rate = buckets.iter().copied().fold(1.0f64, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..max_rate)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("ok ops/s")
        .draw()
        .map_err(|x| e(&x))?;
    shade(&mut chart, windows, 0.0, max_rate).map_err(|x| e(&x))?;
    chart
        .draw_series(LineSeries::new(
            buckets
                .iter()
                .enumerate()
                .map(|(s, r)| (s as f64 + 0.5, *r)),
            BLUE.stroke_width(2),
        ))
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// Ok completions per one-second bucket.
fn throughput(pts: &[(f64, f64, OpType)], seconds: usize) -> Vec<f64> {
    let mut b = vec![0.0; seconds.max(1)];
    for p in pts.iter().filter(|p| p.2 == OpType::Ok) {
        let i = (p.0 as usize).min(b.len() - 1);
        b[i] += 1.0;
    }
    b
}

type Chart<'a, Y> =
    ChartContext<'a, BitMapBackend<'a>, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>;

fn shade<Y>(chart: &mut Chart<'_, Y>, windows: &[Window], lo: f64, hi: f64) -> Result<(), String>
where
    Y: Ranged<ValueType = f64>,
{
    for w in windows {
        let color = match w.fault {
            crate::nemesis::Fault::Partition => RGBColor(120, 120, 255).mix(0.15),
            crate::nemesis::Fault::Kill => RGBColor(255, 80, 80).mix(0.15),
            crate::nemesis::Fault::Pause => RGBColor(200, 160, 0).mix(0.18),
            crate::nemesis::Fault::HeavyRead => RGBColor(170, 60, 200).mix(0.15),
            crate::nemesis::Fault::StrayNode => RGBColor(60, 160, 60).mix(0.18),
        };
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(w.start_s, lo), (w.end_s, hi)],
                color.filled(),
            )))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Latency percentiles of ok operations, in ms: (p50, p99, max).
pub fn latency_summary(history: &[Op]) -> (f64, f64, f64) {
    let mut lat: Vec<f64> = points(history)
        .into_iter()
        .filter(|p| p.2 == OpType::Ok)
        .map(|p| p.1)
        .collect();
    if lat.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    lat.sort_by(f64::total_cmp);
    let at = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99), at(1.0))
}
