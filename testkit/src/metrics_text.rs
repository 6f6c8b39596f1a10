//! Reads a Prometheus / OpenMetrics text page (what `/metrics` serves) into series values.

use std::collections::HashMap;

/// `series -> value` for every sample line of `text`, the series being the metric name with
/// its labels as written (`shoal_edge_bytes_total{source="p2p"}`). Comments, blank lines and
/// lines whose value is not a number are left out.
pub fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of every series of `m` whose name and labels start with `prefix`.
pub fn sum(m: &HashMap<String, f64>, prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| *v)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_by_series_and_summed_by_prefix() {
        let text = "# HELP x_total Bytes.\n# TYPE x_total counter\n\
                    x_total{source=\"p2p\"} 30\nx_total{source=\"cdn\"} 12.5\ny 1\nbroken nan-ish\n# EOF\n";
        let m = parse(text);
        assert_eq!(m["x_total{source=\"p2p\"}"], 30.0);
        assert_eq!(m.len(), 3);
        assert_eq!(sum(&m, "x_total"), 42.5);
    }
}
