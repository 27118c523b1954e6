//! `/metrics`: the broker's figures in Prometheus' text exposition format (version 0.0.4).
//! Per topic: records and bytes produced, bytes fetched, requests and the seconds they took
//! (their ratio is the mean latency), bytes held and partitions; requests refused by error
//! code; per module deployment: records in, out, rejected and dead-lettered, batches, failed
//! batches, seconds inside the module, call latency quantiles and the memory high-water mark;
//! per consumer group: total lag; segment reads and writes around the page cache.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::error::code_name;
use crate::Console;

/// A label value as the text format wants it: backslash, quote and newline escaped.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn start<'a>(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
        match labels.is_empty() {
            true => {
                let _ = writeln!(self.out, "{name} {value}");
            }
            false => {
                let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
            }
        }
    }
}

pub fn render(console: &Console) -> String {
    let mut out = String::new();
    let broker = &console.broker;
    let traffic = broker.traffic().topics();
    type Field = fn(&weir_broker::service::TopicCounts) -> f64;
    let per_topic: [(&str, &str, &str, Field); 7] = [
        ("weir_produced_records_total", "counter", "Records appended, by topic.", |c| c.produced_records as f64),
        ("weir_produced_bytes_total", "counter", "Bytes of record batches appended, by topic.", |c| {
            c.produced_bytes as f64
        }),
        ("weir_produce_requests_total", "counter", "Partition appends answered, by topic.", |c| {
            c.produce_requests as f64
        }),
        ("weir_produce_seconds_total", "counter", "Seconds partition appends took to be answered, by topic.", |c| {
            c.produce_micros as f64 / 1e6
        }),
        ("weir_fetched_bytes_total", "counter", "Bytes of record batches fetched, by topic.", |c| {
            c.fetched_bytes as f64
        }),
        ("weir_fetch_requests_total", "counter", "Partition fetches answered, by topic.", |c| c.fetch_requests as f64),
        (
            "weir_fetch_seconds_total",
            "counter",
            "Seconds partition fetches took (long polls included), by topic.",
            |c| c.fetch_micros as f64 / 1e6,
        ),
    ];
    for (name, kind, help, field) in per_topic {
        let mut f = Family::start(&mut out, name, kind, help);
        for (topic, counts) in &traffic {
            f.sample(name, &[("topic", topic)], field(counts));
        }
    }
    {
        let name = "weir_request_errors_total";
        let mut f = Family::start(&mut out, name, "counter", "Produce and fetch partitions refused, by error code.");
        for (code, n) in broker.traffic().errors() {
            f.sample(name, &[("code", &code_name(code))], n as f64);
        }
    }
    let topics: Vec<_> = broker.topics().iter().filter_map(|t| broker.describe_topic(&t.name).ok()).collect();
    {
        let name = "weir_partitions";
        let mut f = Family::start(&mut out, name, "gauge", "Partitions, by topic.");
        for t in &topics {
            f.sample(name, &[("topic", &t.name)], t.partitions.len() as f64);
        }
    }
    {
        let name = "weir_log_bytes";
        let mut f = Family::start(&mut out, name, "gauge", "Bytes of log this broker holds, by topic.");
        for t in &topics {
            f.sample(name, &[("topic", &t.name)], t.partitions.iter().map(|p| p.size_bytes).sum::<u64>() as f64);
        }
    }
    {
        let name = "weir_offline_partitions";
        let mut f = Family::start(&mut out, name, "gauge", "Partitions without a leader.");
        let status = broker.cluster_status();
        f.sample(name, &[], status.offline_partitions as f64);
        let name = "weir_under_replicated_partitions";
        let mut f = Family::start(f.out, name, "gauge", "Partitions with fewer in-sync replicas than replicas.");
        f.sample(name, &[], status.under_replicated_partitions as f64);
    }
    {
        let io = broker.segment_io();
        let name = "weir_segment_direct_writes_total";
        let mut f =
            Family::start(&mut out, name, "counter", "Segment appends written around the page cache (O_DIRECT).");
        f.sample(name, &[], io.direct_writes as f64);
        let name = "weir_segment_direct_reads_total";
        let mut f = Family::start(f.out, name, "counter", "Segment sections read around the page cache (O_DIRECT).");
        f.sample(name, &[], io.direct_reads as f64);
        let name = "weir_segment_direct_writes_enabled";
        let help = "1 while segment appends of 128 KiB or more go around the page cache (on, and not refused).";
        let mut f = Family::start(f.out, name, "gauge", help);
        f.sample(name, &[], f64::from(u8::from(io.writes_around_cache)));
    }
    let modules = broker.list_modules().modules;
    type ModuleField = fn(&weir_sdk::wire::ModuleMetrics) -> f64;
    let per_module: [(&str, &str, &str, ModuleField); 9] = [
        ("weir_module_records_in_total", "counter", "Records a deployment was called with.", |m| m.records_in as f64),
        ("weir_module_records_out_total", "counter", "Records a deployment emitted.", |m| m.records_out as f64),
        ("weir_module_records_rejected_total", "counter", "Records a deployment rejected.", |m| {
            m.records_rejected as f64
        }),
        (
            "weir_module_records_dead_lettered_total",
            "counter",
            "Records sent to a deployment's dead-letter topic.",
            |m| m.records_dead_lettered as f64,
        ),
        ("weir_module_batches_total", "counter", "Calls of a deployment.", |m| m.batches as f64),
        ("weir_module_batches_failed_total", "counter", "Calls of a deployment that failed.", |m| {
            m.batches_failed as f64
        }),
        ("weir_module_call_seconds_total", "counter", "Seconds spent inside a deployment.", |m| {
            m.call_time_us_total as f64 / 1e6
        }),
        ("weir_module_call_latency_p99_seconds", "gauge", "99th percentile of a deployment's call time.", |m| {
            m.call_latency_us_p99 as f64 / 1e6
        }),
        ("weir_module_memory_high_water_bytes", "gauge", "Most linear memory an instance of a deployment used.", |m| {
            m.memory_high_water_bytes as f64
        }),
    ];
    for (name, kind, help, field) in per_module {
        let mut f = Family::start(&mut out, name, kind, help);
        for m in &modules {
            f.sample(name, &[("module", &m.name), ("kind", &m.kind)], field(&m.metrics));
        }
    }
    {
        let name = "weir_group_lag";
        let mut f = Family::start(
            &mut out,
            name,
            "gauge",
            "Records a consumer group's committed offsets are behind the high watermarks.",
        );
        for group in broker.list_groups() {
            f.sample(name, &[("group", &group.group_id)], group.total_lag as f64);
        }
    }
    out
}

/// The broker's metrics for Prometheus.
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain")))]
pub async fn metrics(State(console): State<Console>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render(&console))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_as_the_text_format_requires() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("line\nbreak"), "line\\nbreak");
        assert_eq!(escape("plain.topic-1"), "plain.topic-1");
    }
}
