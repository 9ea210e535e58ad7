//! How every component answers `/metrics`: OpenMetrics text from a `prometheus-client`
//! [`Registry`] built once, whose collector reads the component's live state at each scrape
//! through a [`Scrape`] (so nothing is copied into metric objects between scrapes, and nothing
//! is rebuilt per scrape but the text).

use std::fmt::{self, Write};

pub use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::encoding::{
    EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeLabelValue, LabelValueEncoder,
    NoLabelSet,
};
use prometheus_client::metrics::MetricType;
pub use prometheus_client::{collector::Collector, registry::Registry};

/// The `Content-Type` of the text [`encode`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry's OpenMetrics text.
pub fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut text = String::with_capacity(4096);
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

/// A label value, escaped as the text format wants (`\`, `"` and newlines), whatever it holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Label<'a>(pub &'a str);

impl EncodeLabelValue for Label<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Labels of one series: `(name, value)` pairs.
pub type Labels<'a> = Vec<(&'static str, Label<'a>)>;

/// One scrape: a collector writes its families through it. Counter names are given without
/// `_total` (the encoder adds it), as OpenMetrics wants.
pub struct Scrape<'e>(DescriptorEncoder<'e>);

impl<'e> Scrape<'e> {
    pub fn new(encoder: DescriptorEncoder<'e>) -> Self {
        Scrape(encoder)
    }

    pub fn gauge(&mut self, name: &str, help: &str, v: impl EncodeGaugeValue) -> fmt::Result {
        self.0
            .encode_descriptor(name, help, None, MetricType::Gauge)?
            .encode_gauge(&v)
    }

    pub fn counter(&mut self, name: &str, help: &str, v: impl EncodeCounterValue) -> fmt::Result {
        self.0
            .encode_descriptor(name, help, None, MetricType::Counter)?
            .encode_counter::<NoLabelSet, _, u64>(&v, None)
    }

    /// A gauge family: one series per row.
    pub fn gauges<S: EncodeLabelSet, V: EncodeGaugeValue>(
        &mut self,
        name: &str,
        help: &str,
        rows: impl IntoIterator<Item = (S, V)>,
    ) -> fmt::Result {
        let mut m = self
            .0
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, v) in rows {
            m.encode_family(&labels)?.encode_gauge(&v)?;
        }
        Ok(())
    }

    /// A counter family: one series per row.
    pub fn counters<S: EncodeLabelSet, V: EncodeCounterValue>(
        &mut self,
        name: &str,
        help: &str,
        rows: impl IntoIterator<Item = (S, V)>,
    ) -> fmt::Result {
        let mut m = self
            .0
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, v) in rows {
            m.encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
        }
        Ok(())
    }

    /// A histogram family: per row its sum, count and per-bucket counts `(upper bound, n)`,
    /// the last bound `f64::MAX` (written `+Inf`).
    pub fn histograms<S: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        rows: impl IntoIterator<Item = (S, Histogram)>,
    ) -> fmt::Result {
        let mut m = self
            .0
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, h) in rows {
            m.encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
        }
        Ok(())
    }
}

/// One histogram series as read at a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub sum: f64,
    pub count: u64,
    /// `(upper bound, observations in this bucket)`, ascending, the last bound `f64::MAX`.
    pub buckets: Vec<(f64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed;

    impl Collector for Fixed {
        fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
            let mut s = Scrape::new(encoder);
            s.gauge("t_up", "Up.", 1i64)?;
            s.counter("t_calls", "Calls.", 7u64)?;
            s.counters(
                "t_by_app",
                "By app.",
                [(vec![("app", Label("a\"b\\c\nd"))], 2u64)],
            )?;
            s.histograms(
                "t_latency_seconds",
                "Latency.",
                [(
                    vec![("app", Label("x"))],
                    Histogram {
                        sum: 0.5,
                        count: 3,
                        buckets: vec![(0.1, 1), (1.0, 2), (f64::MAX, 0)],
                    },
                )],
            )
        }
    }

    #[test]
    fn a_collector_writes_openmetrics_with_escaped_labels_and_cumulative_buckets() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed));
        let text = encode(&registry).expect("encode");
        for line in [
            "# TYPE t_up gauge",
            "t_up 1",
            "# TYPE t_calls counter",
            "t_calls_total 7",
            "t_by_app_total{app=\"a\\\"b\\\\c\\nd\"} 2",
            "t_latency_seconds_count{app=\"x\"} 3",
            "t_latency_seconds_bucket{le=\"1.0\",app=\"x\"} 3",
            "t_latency_seconds_bucket{le=\"+Inf\",app=\"x\"} 3",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in:\n{text}");
        }
    }
}
