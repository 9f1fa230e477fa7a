//! PNG line charts of training curves (reward, KL, ...) with plotters.
//!
//! Text is drawn with DejaVu Sans embedded in the binary, so plots need no system fonts.

use crate::error::{CoreError, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// One named series of `(x, y)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points, in x order.
    pub points: Vec<(f64, f64)>,
}

/// One chart: a title and its series.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Title (e.g. `rollout_buffer/mean_reward`).
    pub title: String,
    /// X-axis label.
    pub x_label: String,
    /// The series.
    pub series: Vec<Series>,
}

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        // DejaVu Sans is a valid TrueType font; failure here would be a packaging bug.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

fn plot_error(path: &Path, e: impl std::fmt::Display) -> CoreError {
    CoreError::WithContext { context: format!("drawing {}", path.display()), message: e.to_string() }
}

fn range(values: impl Iterator<Item = f64> + Clone) -> std::ops::Range<f64> {
    let finite = values.filter(|v| v.is_finite());
    let lo = finite.clone().fold(f64::INFINITY, f64::min);
    let hi = finite.fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let span = hi - lo;
    let pad = if span < 1e-9 { (lo.abs() * 0.1).max(0.1) } else { span * 0.05 };
    (lo - pad)..(hi + pad)
}

/// Draws the panels stacked vertically into one PNG (written atomically).
pub fn plot_panels(path: &Path, panels: &[Panel]) -> Result<()> {
    plot_grid(path, panels, 1)
}

/// Draws the panels into one PNG (written atomically), `columns` panels a row, row by row.
pub fn plot_grid(path: &Path, panels: &[Panel], columns: usize) -> Result<()> {
    if !crate::parallel::is_primary() {
        return Ok(()); // data-parallel: rank 0 draws the plots
    }
    register_font();
    let tmp = path.with_extension("tmp.png");
    {
        let columns = columns.clamp(1, panels.len().max(1));
        let rows = panels.len().div_ceil(columns).max(1);
        let (width, height) = (if columns == 1 { 900 } else { 600 * columns as u32 }, 320 * rows as u32);
        let root = BitMapBackend::new(&tmp, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
        let areas = root.split_evenly((rows, columns));
        for (panel, area) in panels.iter().zip(areas) {
            draw_panel(panel, &area).map_err(|e| plot_error(path, e))?;
        }
        root.present().map_err(|e| plot_error(path, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|source| CoreError::Io { path: path.to_path_buf(), source })
}

fn draw_panel<DB: DrawingBackend>(
    panel: &Panel,
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let xs = panel.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = panel.series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(
            range(xs.clone().collect::<Vec<_>>().into_iter()),
            range(ys.collect::<Vec<_>>().into_iter()),
        )?;
    chart.configure_mesh().x_desc(panel.x_label.as_str()).label_style(("sans-serif", 14)).draw()?;
    for (i, series) in panel.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        // Non-finite values (a NaN loss) are skipped rather than drawn off the chart.
        let points: Vec<(f64, f64)> =
            series.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(series.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    if panel.series.len() > 1 {
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        let reward = Series { label: "train".into(), points: (0..10).map(|i| (i as f64, (i as f64).sqrt())).collect() };
        let kl = Series { label: "kl".into(), points: vec![(0.0, 0.0), (1.0, 0.5)] };
        let panels = [
            Panel { title: "reward".into(), x_label: "iteration".into(), series: vec![reward] },
            Panel {
                title: "kl".into(),
                x_label: "iteration".into(),
                series: vec![kl, Series { label: "empty".into(), points: vec![] }],
            },
        ];
        plot_panels(&path, &panels).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(bytes.len() > 5_000, "a real image, not an empty canvas");
    }
}
