//! Results of a bench invocation: samples per (metric, system), their medians, the ratios
//! gateway/ceiling and gateway/bridge, issue 8's targets, the machine, and the two outputs
//! (a Markdown table and JSON).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use super::systems::System;

/// Which way a metric is good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Throughput, rates.
    Higher,
    /// Latency, memory, time, loss.
    Lower,
}

/// What a metric is: its key, unit and which way is good.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Stable key (`throughput.events_per_s`).
    pub key: &'static str,
    /// Unit.
    pub unit: &'static str,
    /// Which way is good.
    pub better: Better,
}

impl Metric {
    /// A metric where more is better.
    pub const fn higher(key: &'static str, unit: &'static str) -> Metric {
        Metric { key, unit, better: Better::Higher }
    }

    /// A metric where less is better.
    pub const fn lower(key: &'static str, unit: &'static str) -> Metric {
        Metric { key, unit, better: Better::Lower }
    }
}

/// One metric: its samples per system, one per run.
#[derive(Debug, Clone)]
pub struct Row {
    /// Stable key (`throughput.events_per_s`).
    pub key: String,
    /// What it is, for people.
    pub label: String,
    /// Unit.
    pub unit: &'static str,
    /// Which way is good.
    pub better: Better,
    /// Samples per system.
    pub samples: BTreeMap<System, Vec<f64>>,
}

impl Row {
    /// Median of a system's samples.
    pub fn median(&self, system: System) -> Option<f64> {
        median(self.samples.get(&system)?)
    }

    /// The best baseline median (the ceiling on this machine) and which one it is.
    pub fn ceiling(&self) -> Option<(System, f64)> {
        let baselines = System::ALL.into_iter().filter(|s| s.is_baseline()).filter_map(|s| Some((s, self.median(s)?)));
        match self.better {
            Better::Higher => baselines.max_by(|a, b| a.1.total_cmp(&b.1)),
            Better::Lower => baselines.min_by(|a, b| a.1.total_cmp(&b.1)),
        }
    }

    /// Gateway median / ceiling median.
    pub fn ratio_ceiling(&self) -> Option<f64> {
        ratio(self.median(System::Gateway)?, self.ceiling()?.1)
    }

    /// Gateway median / bridge median.
    pub fn ratio_bridge(&self) -> Option<f64> {
        ratio(self.median(System::Gateway)?, self.median(System::Bridge)?)
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b != 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

/// The median (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) { (v[mid - 1] + v[mid]) / 2.0 } else { v[mid] })
}

/// Every sample of an invocation, rows in first-recorded order.
#[derive(Debug, Clone, Default)]
pub struct Results {
    rows: Vec<Row>,
}

impl Results {
    /// Adds one sample of `metric` (labelled `label` in the table) for `system`.
    pub fn add(&mut self, metric: Metric, label: &str, system: System, value: f64) {
        let index = match self.rows.iter().position(|r| r.key == metric.key) {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    key: metric.key.to_owned(),
                    label: label.to_owned(),
                    unit: metric.unit,
                    better: metric.better,
                    samples: BTreeMap::new(),
                });
                self.rows.len() - 1
            }
        };
        self.rows[index].samples.entry(system).or_default().push(value);
    }

    /// The rows.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// A row by key.
    pub fn row(&self, key: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.key == key)
    }

    /// Median of a metric for a system.
    pub fn median(&self, key: &str, system: System) -> Option<f64> {
        self.row(key)?.median(system)
    }
}

/// One of issue 8's targets and where the gateway stands.
#[derive(Debug, Clone)]
pub struct Target {
    /// The target as the issue says it.
    pub target: String,
    /// What was measured (medians).
    pub measured: String,
    /// None when the bench did not measure it in this invocation.
    pub met: Option<bool>,
}

/// Formats a number for the table: thousands separators for big ones, 2-3 significant
/// digits for small ones.
pub fn number(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let a = x.abs();
    if a >= 1000.0 {
        let digits = format!("{:.0}", a);
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if x < 0.0 {
            out.insert(0, '-');
        }
        out
    } else if a >= 100.0 || a == a.trunc() {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 0.1 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn cell(x: Option<f64>) -> String {
    x.map_or_else(|| "–".into(), number)
}

fn ratio_cell(x: Option<f64>) -> String {
    x.map_or_else(|| "–".into(), |r| format!("{r:.2}x"))
}

/// The Markdown table of medians and ratios.
pub fn table(results: &Results) -> String {
    let mut out = String::new();
    let systems: Vec<System> =
        System::ALL.into_iter().filter(|s| results.rows().iter().any(|r| r.samples.contains_key(s))).collect();
    let _ = write!(out, "| metric | unit |");
    for s in &systems {
        let _ = write!(out, " {} |", s.title());
    }
    let _ = writeln!(out, " gw / ceiling | gw / bridge |");
    let _ = write!(out, "|---|---|");
    for _ in &systems {
        let _ = write!(out, "---:|");
    }
    let _ = writeln!(out, "---:|---:|");
    for row in results.rows() {
        let _ = write!(out, "| {} | {} |", row.label, row.unit);
        for s in &systems {
            let _ = write!(out, " {} |", cell(row.median(*s)));
        }
        let _ = writeln!(out, " {} | {} |", ratio_cell(row.ratio_ceiling()), ratio_cell(row.ratio_bridge()));
    }
    out
}

/// The targets as a Markdown list.
pub fn targets_text(targets: &[Target]) -> String {
    let mut out = String::new();
    for t in targets {
        let mark = match t.met {
            Some(true) => "MET",
            Some(false) => "MISSED",
            None => "not measured",
        };
        let _ = writeln!(out, "- **{mark}** — {}: {}", t.target, t.measured);
    }
    out
}

/// The machine the numbers come from.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix("model name")?.split_once(':')).map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_default();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let first_line = |cmd: &str, arg: &str| {
        std::process::Command::new(cmd)
            .arg(arg)
            .output()
            .ok()
            .map(|o| {
                let text =
                    String::from_utf8_lossy(if o.stdout.is_empty() { &o.stderr } else { &o.stdout }).into_owned();
                text.lines().next().unwrap_or_default().trim().to_owned()
            })
            .unwrap_or_default()
    };
    json!({
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "loadavg_at_start": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "mosquitto": first_line("mosquitto", "-h"),
        "gateway_binary": crate::gateway::binary().display().to_string(),
    })
}

/// Everything as JSON.
pub fn to_json(results: &Results, targets: &[Target], meta: Value) -> Value {
    let rows: Vec<Value> = results
        .rows()
        .iter()
        .map(|row| {
            let medians: serde_json::Map<String, Value> =
                row.samples.keys().filter_map(|s| Some((s.key().to_owned(), json!(row.median(*s)?)))).collect();
            let samples: serde_json::Map<String, Value> =
                row.samples.iter().map(|(s, v)| (s.key().to_owned(), json!(v))).collect();
            json!({
                "key": row.key,
                "label": row.label,
                "unit": row.unit,
                "better": if row.better == Better::Higher { "higher" } else { "lower" },
                "median": medians,
                "samples": samples,
                "ceiling": row.ceiling().map(|(s, _)| s.key()),
                "ratio_gateway_ceiling": row.ratio_ceiling(),
                "ratio_gateway_bridge": row.ratio_bridge(),
            })
        })
        .collect();
    let targets: Vec<Value> =
        targets.iter().map(|t| json!({"target": t.target, "measured": t.measured, "met": t.met})).collect();
    json!({ "meta": meta, "rows": rows, "targets": targets })
}

/// The samples of a JSON report made by [`to_json`], to print it again.
pub fn from_json(value: &Value) -> Result<Results, String> {
    let mut results = Results::default();
    for row in value["rows"].as_array().ok_or("no \"rows\" array")? {
        let text = |field: &str| row[field].as_str().map(str::to_owned).ok_or(format!("row without {field:?}"));
        let (key, label, unit) = (text("key")?, text("label")?, text("unit")?);
        // Keys and units live as long as the process: a report is rendered once.
        let metric = Metric {
            key: Box::leak(key.into_boxed_str()),
            unit: Box::leak(unit.into_boxed_str()),
            better: if row["better"] == "higher" { Better::Higher } else { Better::Lower },
        };
        for (system, samples) in row["samples"].as_object().ok_or("row without samples")? {
            let system = System::from_key(system).ok_or(format!("unknown system {system:?}"))?;
            for sample in samples.as_array().into_iter().flatten() {
                results.add(metric, &label, system, sample.as_f64().unwrap_or(f64::NAN));
            }
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios_use_the_best_baseline() {
        let mut r = Results::default();
        for (s, v) in [
            (System::Mosquitto, 50.0),
            (System::Mosquitto, 40.0),
            (System::Mosquitto, 60.0),
            (System::Rumqttd, 200.0),
            (System::Bridge, 45.0),
            (System::Gateway, 150.0),
        ] {
            r.add(Metric::higher("t", "ev/s"), "t", s, v);
        }
        let row = r.row("t").unwrap();
        assert_eq!(row.median(System::Mosquitto), Some(50.0));
        assert_eq!(row.ceiling().map(|c| c.0), Some(System::Rumqttd));
        assert_eq!(row.ratio_ceiling(), Some(0.75));
        assert!((row.ratio_bridge().unwrap() - 150.0 / 45.0).abs() < 1e-9);
        assert_eq!(median(&[1.0, 3.0]), Some(2.0));
        assert_eq!(number(123456.7), "123,457");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(2.345), "2.35");
    }

    #[test]
    fn a_json_report_reads_back_to_the_same_table() {
        let mut r = Results::default();
        r.add(Metric::higher("t", "ev/s"), "throughput", System::Bridge, 45.0);
        r.add(Metric::lower("l", "ms"), "latency", System::Gateway, 2.5);
        let back = from_json(&to_json(&r, &[], Value::Null)).unwrap();
        assert_eq!(table(&back), table(&r));
    }
}
