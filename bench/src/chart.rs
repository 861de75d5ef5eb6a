//! Line charts as SVG, written by hand (a few `format!`s, no plotting crate): a curve the
//! report gives as a table, also drawn, so that its shape is seen at a glance.

use std::fmt::Write as _;

use crate::report::count;

/// Width of the whole picture, in pixels.
const WIDTH: f64 = 760.0;
/// Room left of the plot, for the y axis' labels.
const LEFT: f64 = 90.0;
/// Room right of the plot.
const RIGHT: f64 = 30.0;
/// Room above the plot, for the title.
const TOP: f64 = 40.0;
/// Height of the plot area.
const PLOT_HEIGHT: f64 = 300.0;
/// Room below the plot, for the x axis' labels and name.
const BELOW: f64 = 50.0;
/// Height of one line of the legend.
const LEGEND_LINE: f64 = 20.0;
/// Lines of the y axis' grid, 0 included.
const Y_TICKS: u32 = 5;

/// One line of a chart.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// Its name in the legend.
    pub(crate) name: String,
    /// Its y value at each of the chart's x values, in their order.
    pub(crate) values: Vec<f64>,
    /// Its colour, as SVG takes it (`#1f77b4`).
    pub(crate) colour: &'static str,
    /// Dashed rather than solid: a baseline beside the system it is compared with.
    pub(crate) dashed: bool,
}

/// A line chart: x on a logarithmic axis (each x value marked and labelled), y on a
/// linear axis from zero.
#[derive(Debug, Clone)]
pub(crate) struct LineChart {
    /// Above the plot.
    pub(crate) title: String,
    /// Below the x axis: what x is, and in what unit.
    pub(crate) x_name: String,
    /// Beside the y axis.
    pub(crate) y_name: String,
    /// The x values the series have a point at (positive, ascending).
    pub(crate) xs: Vec<f64>,
    /// The lines, in the legend's order.
    pub(crate) series: Vec<Series>,
}

impl LineChart {
    /// The chart as a standalone SVG document.
    pub(crate) fn to_svg(&self) -> String {
        let height = TOP + PLOT_HEIGHT + BELOW + LEGEND_LINE * self.series.len() as f64 + 10.0;
        let values = self.series.iter().flat_map(|series| series.values.iter().copied());
        let y_max = round_up(values.filter(|value| value.is_finite()).fold(0.0, f64::max));
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
             viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
        );
        let _ = writeln!(svg, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
        let (title, centre) = (escape(&self.title), WIDTH / 2.0);
        let _ = writeln!(svg, r#"<text x="{centre}" y="24" text-anchor="middle" font-size="15">{title}</text>"#);
        self.axes(&mut svg, y_max);
        for series in &self.series {
            self.line(&mut svg, series, y_max);
        }
        self.legend(&mut svg);
        svg.push_str("</svg>\n");
        svg
    }

    /// The grid, both axes, their ticks, labels and names.
    fn axes(&self, svg: &mut String, y_max: f64) {
        let (right, bottom) = (WIDTH - RIGHT, TOP + PLOT_HEIGHT);
        for tick in 0..=Y_TICKS {
            let value = y_max * f64::from(tick) / f64::from(Y_TICKS);
            let y = y_at(value, y_max);
            let _ = writeln!(svg, r##"<line x1="{LEFT}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#dddddd"/>"##);
            let (label_x, label_y, label) = (LEFT - 8.0, y + 4.0, count(value));
            let _ = writeln!(svg, r#"<text x="{label_x}" y="{label_y:.1}" text-anchor="end">{label}</text>"#);
        }
        for &x in &self.xs {
            let (at, tick_end, label_at, label) = (self.x_at(x), bottom + 5.0, bottom + 20.0, count(x));
            let _ =
                writeln!(svg, r##"<line x1="{at:.1}" y1="{bottom}" x2="{at:.1}" y2="{tick_end}" stroke="#333333"/>"##);
            let _ = writeln!(svg, r#"<text x="{at:.1}" y="{label_at}" text-anchor="middle">{label}</text>"#);
        }
        let _ = writeln!(svg, r##"<line x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#333333"/>"##);
        let _ = writeln!(svg, r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#333333"/>"##);
        let (x_name, y_name) = (escape(&self.x_name), escape(&self.y_name));
        let (centre, name_at) = ((LEFT + right) / 2.0, bottom + 40.0);
        let _ = writeln!(svg, r#"<text x="{centre:.1}" y="{name_at}" text-anchor="middle">{x_name}</text>"#);
        let middle = TOP + PLOT_HEIGHT / 2.0;
        let _ = writeln!(
            svg,
            r#"<text transform="translate(20 {middle:.1}) rotate(-90)" text-anchor="middle">{y_name}</text>"#
        );
    }

    /// One series: its line through the points it has, and a dot at each.
    fn line(&self, svg: &mut String, series: &Series, y_max: f64) {
        let points: Vec<(f64, f64)> = self
            .xs
            .iter()
            .zip(&series.values)
            .filter(|(_, value)| value.is_finite())
            .map(|(&x, &value)| (self.x_at(x), y_at(value, y_max)))
            .collect();
        let path: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let (colour, dash) = (series.colour, dash_attribute(series));
        let path = path.join(" ");
        let _ = writeln!(svg, r#"<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#);
        for (x, y) in &points {
            let _ = writeln!(svg, r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{colour}"/>"#);
        }
    }

    /// The legend, below the plot: a stretch of each series' line, then its name.
    fn legend(&self, svg: &mut String) {
        for (index, series) in self.series.iter().enumerate() {
            let y = TOP + PLOT_HEIGHT + BELOW + LEGEND_LINE * (index as f64 + 0.5);
            let (colour, dash, end, text_at) = (series.colour, dash_attribute(series), LEFT + 30.0, LEFT + 38.0);
            let _ = writeln!(
                svg,
                r#"<line x1="{LEFT}" y1="{y:.1}" x2="{end}" y2="{y:.1}" stroke="{colour}" stroke-width="2"{dash}/>"#
            );
            let (text_y, name) = (y + 4.0, escape(&series.name));
            let _ = writeln!(svg, r#"<text x="{text_at}" y="{text_y:.1}">{name}</text>"#);
        }
    }

    /// Where `x` falls on the logarithmic x axis: the smallest of the chart's x values a
    /// twentieth of the plot in from the left, the largest as far in from the right.
    fn x_at(&self, x: f64) -> f64 {
        let width = WIDTH - LEFT - RIGHT;
        let (low, high) = (self.xs.first().copied().unwrap_or(1.0), self.xs.last().copied().unwrap_or(1.0));
        let span = high.max(f64::MIN_POSITIVE).log10() - low.max(f64::MIN_POSITIVE).log10();
        if span <= 0.0 {
            return LEFT + width / 2.0;
        }
        let share = (x.max(f64::MIN_POSITIVE).log10() - low.max(f64::MIN_POSITIVE).log10()) / span;
        LEFT + width * (0.05 + 0.9 * share)
    }
}

/// The attribute that dashes a series' line, if it is dashed.
fn dash_attribute(series: &Series) -> &'static str {
    if series.dashed { r#" stroke-dasharray="6 4""# } else { "" }
}

/// Where `value` falls on the y axis, which runs from 0 at the bottom to `y_max` at the top.
fn y_at(value: f64, y_max: f64) -> f64 {
    TOP + PLOT_HEIGHT * (1.0 - value / y_max)
}

/// The y axis' top: the smallest of 1, 2 or 5 times a power of ten that is at least
/// `value` (1 when there is nothing to show).
fn round_up(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    // `powi`, not `powf`: a power of ten by multiplication is exact, so 200 000 stays its own top.
    let power = 10_f64.powi(value.log10().floor() as i32);
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|step| step * power).find(|top| *top >= value).unwrap_or(10.0 * power)
}

/// `text` with the characters XML gives a meaning escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::{LineChart, Series, round_up};

    #[test]
    fn the_y_axis_ends_at_one_two_or_five_times_a_power_of_ten() {
        assert!((round_up(0.0) - 1.0).abs() < 1e-9);
        assert!((round_up(73_000.0) - 100_000.0).abs() < 1e-6);
        assert!((round_up(180_000.0) - 200_000.0).abs() < 1e-6);
        assert!((round_up(200_000.0) - 200_000.0).abs() < 1e-6);
        assert!((round_up(420.0) - 500.0).abs() < 1e-9);
    }

    #[test]
    fn a_chart_draws_each_series_and_escapes_its_names() {
        let chart = LineChart {
            title: "throughput".into(),
            x_name: "batch limit".into(),
            y_name: "msg/s".into(),
            xs: vec![100.0, 500.0, 2_000.0, 10_000.0],
            series: vec![
                Series { name: "a & b".into(), values: vec![1.0, 2.0, 3.0, 4.0], colour: "#1f77b4", dashed: false },
                Series { name: "<c>".into(), values: vec![2.0, 2.0, f64::NAN, 1.0], colour: "#ff7f0e", dashed: true },
            ],
        };
        let svg = chart.to_svg();
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert_eq!(svg.matches("<circle").count(), 7, "a point not a number is left out: {svg}");
        assert!(svg.contains("a &amp; b") && svg.contains("&lt;c&gt;"), "{svg}");
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }
}
