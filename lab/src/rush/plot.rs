//! The drill's plot over time (PNG): requests/s by status, p50/p99 latency,
//! stock remaining, decisions/s and gifts/s, on one time axis (seconds from
//! the start of the rush; the opening instant marked); with the waiting room
//! on, a fifth panel: the line's length.
//!
//! Text needs a TrueType font: the first of [`FONTS`] found (DejaVu, which
//! Debian installs with fontconfig), or `FIRSTCOME_PLOT_FONT`.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::report::PipelineReport;
use super::RushReport;

pub const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn register_font() -> anyhow::Result<()> {
    let candidates: Vec<String> =
        std::env::var("FIRSTCOME_PLOT_FONT").into_iter().chain(FONTS.iter().map(|f| f.to_string())).collect();
    let path = candidates.iter().find(|p| Path::new(p).exists()).ok_or_else(|| {
        anyhow::anyhow!("no TrueType font for the plot (tried {candidates:?}); set FIRSTCOME_PLOT_FONT")
    })?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{path} is not a usable font"))?;
    Ok(())
}

/// A colour per status class.
fn status_colour(status: u16) -> RGBColor {
    match status {
        202 => RGBColor(0x1b, 0x9e, 0x77),
        409 => RGBColor(0x75, 0x70, 0xb3),
        410 => RGBColor(0xd9, 0x5f, 0x02),
        425 => RGBColor(0xe6, 0xab, 0x02),
        403 => RGBColor(0x66, 0xa6, 0x1e),
        429 | 503 => RGBColor(0xe7, 0x29, 0x8a),
        0 => BLACK,
        _ => RGBColor(0x66, 0x66, 0x66),
    }
}

type Series = Vec<(f64, f64)>;

/// Draws `rush` (and `pipeline`, when the drill waited for it) into `path`.
pub fn draw(path: &Path, title: &str, rush: &RushReport, pipeline: Option<&PipelineReport>) -> anyhow::Result<()> {
    register_font()?;
    let end = rush
        .timeline
        .len()
        .max(pipeline.and_then(|p| p.timeline.last()).map(|s| (s.second + 1).max(0) as usize).unwrap_or(0))
        .max(1) as f64;
    let opening = rush.opening_ms as f64 / 1_000.0;

    let line: Series =
        rush.timeline.iter().filter_map(|s| Some((s.second as f64 + 0.5, s.line_waiting? as f64))).collect();
    let rows = if line.is_empty() { 4 } else { 5 };

    let root = BitMapBackend::new(path, (1400, 400 * rows as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(50);
    header.titled(title, ("sans-serif", 26))?;
    let panels = body.split_evenly((rows, 1));

    // 1. requests/s by status.
    let mut statuses: Vec<u16> = rush.timeline.iter().flat_map(|s| s.by_status.keys().copied()).collect();
    statuses.sort_unstable();
    statuses.dedup();
    let by_status: Vec<(u16, Series)> = statuses
        .iter()
        .map(|status| {
            let series = rush
                .timeline
                .iter()
                .map(|s| (s.second as f64 + 0.5, s.by_status.get(status).copied().unwrap_or(0) as f64))
                .collect();
            (*status, series)
        })
        .collect();
    let unsent: Series = rush.timeline.iter().map(|s| (s.second as f64 + 0.5, s.unsent as f64)).collect();
    let mut lines: Vec<(String, RGBColor, Series)> =
        by_status.into_iter().map(|(status, series)| (format!("{status}"), status_colour(status), series)).collect();
    if rush.unsent > 0 {
        lines.push(("unsent".into(), RGBColor(0xa0, 0x00, 0x00), unsent));
    }
    panel(&panels[0], "answers per second by HTTP status (0 = transport error)", "req/s", end, opening, lines)?;

    // 2. latency.
    let p50: Series =
        rush.timeline.iter().filter(|s| s.p50_ms > 0.0).map(|s| (s.second as f64 + 0.5, s.p50_ms)).collect();
    let p99: Series =
        rush.timeline.iter().filter(|s| s.p99_ms > 0.0).map(|s| (s.second as f64 + 0.5, s.p99_ms)).collect();
    panel(
        &panels[1],
        "latency of the answers of each second",
        "ms",
        end,
        opening,
        vec![("p50".into(), BLUE, p50), ("p99".into(), RED, p99)],
    )?;

    // 3. stock, 4. decisions and gifts.
    if let Some(pipeline) = pipeline {
        let stock: Series =
            pipeline.timeline.iter().map(|s| (s.second as f64 + 0.5, s.stock_remaining as f64)).collect();
        panel(
            &panels[2],
            "stock remaining (for sale, not yet won)",
            "units",
            end,
            opening,
            vec![("stock".into(), BLACK, stock)],
        )?;
        let decisions: Series = pipeline.timeline.iter().map(|s| (s.second as f64 + 0.5, s.decisions as f64)).collect();
        let gifts: Series = pipeline.timeline.iter().map(|s| (s.second as f64 + 0.5, s.gifts as f64)).collect();
        panel(
            &panels[3],
            "decisions and gifts per second",
            "per s",
            end,
            opening,
            vec![("decisions".into(), BLUE, decisions), ("gifts sent".into(), RGBColor(0x1b, 0x9e, 0x77), gifts)],
        )?;
    }
    // 5. the waiting room's line.
    if !line.is_empty() {
        panel(
            &panels[4],
            "the waiting room's line (longest `waiting` answered each second)",
            "members",
            end,
            opening,
            vec![("in line".into(), RGBColor(0xe7, 0x29, 0x8a), line)],
        )?;
    }
    root.present()?;
    Ok(())
}

fn panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    caption: &str,
    unit: &str,
    end: f64,
    opening: f64,
    lines: Vec<(String, RGBColor, Series)>,
) -> anyhow::Result<()> {
    let top = lines.iter().flat_map(|(_, _, s)| s.iter().map(|(_, y)| *y)).fold(0.0_f64, f64::max).max(1.0) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..end, 0.0..top)?;
    chart.configure_mesh().x_desc("s from the start of the rush").y_desc(unit).draw()?;
    if opening > 0.0 {
        chart
            .draw_series(LineSeries::new(vec![(opening, 0.0), (opening, top)], RGBColor(0xbb, 0xbb, 0xbb)))?
            .label("opening")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RGBColor(0xbb, 0xbb, 0xbb)));
    }
    for (label, colour, series) in lines {
        chart
            .draw_series(LineSeries::new(series, colour.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    Ok(())
}
