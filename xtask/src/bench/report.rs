//! What a bench run found: one [`Row`] per (case, measurement, tool) with a
//! value per round, single [`Figure`]s (latency percentiles), the issue's
//! [`Target`]s evaluated on this run's numbers, and their two renderings —
//! the table on stdout and `target/bench/results.json`.

use serde_json::{Value, json};

use super::measure::Summary;

/// The unit of a row's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Bytes,
    /// CPU seconds per wall second.
    Cores,
    /// A number of things (files, errors).
    Count,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Seconds => "seconds",
            Unit::Bytes => "bytes",
            Unit::Cores => "cores",
            Unit::Count => "count",
        }
    }
}

/// Every round's value of one measurement of one tool.
#[derive(Debug, Clone)]
pub struct Row {
    pub case: String,
    pub measurement: String,
    pub tool: String,
    pub unit: Unit,
    pub values: Vec<f64>,
    pub bytes_sent: Vec<u64>,
    pub peak_rss_bytes: Vec<u64>,
}

/// One round's observation for a row.
#[derive(Debug, Clone, Copy, Default)]
pub struct Observation {
    pub value: f64,
    pub bytes_sent: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
}

impl Observation {
    pub fn seconds(value: f64) -> Observation {
        Observation {
            value,
            ..Observation::default()
        }
    }
}

/// A single number (a percentile over all rounds' samples).
#[derive(Debug, Clone)]
pub struct Figure {
    pub case: String,
    pub name: String,
    pub tool: String,
    pub unit: Unit,
    pub value: f64,
}

/// A target of the issue and whether this run meets it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub description: String,
    /// `None` when a number it needs is missing.
    pub holds: Option<bool>,
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct Results {
    pub rows: Vec<Row>,
    pub figures: Vec<Figure>,
}

impl Results {
    pub fn add(&mut self, case: &str, measurement: &str, tool: &str, unit: Unit, obs: Observation) {
        let idx =
            match self.rows.iter().position(|row| {
                row.case == case && row.measurement == measurement && row.tool == tool
            }) {
                Some(idx) => idx,
                None => {
                    self.rows.push(Row {
                        case: case.to_owned(),
                        measurement: measurement.to_owned(),
                        tool: tool.to_owned(),
                        unit,
                        values: Vec::new(),
                        bytes_sent: Vec::new(),
                        peak_rss_bytes: Vec::new(),
                    });
                    self.rows.len() - 1
                }
            };
        let row = &mut self.rows[idx];
        row.values.push(obs.value);
        row.bytes_sent.extend(obs.bytes_sent);
        row.peak_rss_bytes.extend(obs.peak_rss_bytes);
    }

    /// A figure of syncfolder's (embedded) default set-up.
    pub fn add_figure(&mut self, case: &str, name: &str, unit: Unit, value: f64) {
        self.add_figure_of(case, name, super::SYNCFOLDER, unit, value);
    }

    /// A figure of `tool`.
    pub fn add_figure_of(&mut self, case: &str, name: &str, tool: &str, unit: Unit, value: f64) {
        self.figures.push(Figure {
            case: case.to_owned(),
            name: name.to_owned(),
            tool: tool.to_owned(),
            unit,
            value,
        });
    }

    /// The rows ordered by case (their names start with the case number),
    /// in the order they were measured within a case.
    pub fn sorted_rows(&self) -> Vec<&Row> {
        let mut rows: Vec<&Row> = self.rows.iter().collect();
        rows.sort_by(|a, b| a.case.cmp(&b.case));
        rows
    }

    pub fn row(&self, case: &str, measurement: &str, tool: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|row| row.case == case && row.measurement == measurement && row.tool == tool)
    }

    fn median(&self, case: &str, measurement: &str, tool: &str) -> Option<f64> {
        Summary::of(&self.row(case, measurement, tool)?.values).map(|summary| summary.median)
    }

    fn figure(&self, case: &str, name: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|figure| figure.case == case && figure.name == name)
            .map(|figure| figure.value)
    }

    /// syncfolder's median over each peer's median in the same case
    /// (peer = any other tool's time row of that case); for the scale-out
    /// stack, its median over the embedded default's in the same case and
    /// measurement.
    pub fn ratios(&self, row: &Row) -> Vec<(String, f64)> {
        let is_syncfolder =
            |tool: &str| tool == super::SYNCFOLDER || tool == super::SYNCFOLDER_SCALE_OUT;
        if !is_syncfolder(&row.tool) || row.unit != Unit::Seconds {
            return Vec::new();
        }
        let Some(own) = Summary::of(&row.values) else {
            return Vec::new();
        };
        if row.tool == super::SYNCFOLDER_SCALE_OUT {
            return self
                .median(&row.case, &row.measurement, super::SYNCFOLDER)
                .filter(|&embedded| embedded > 0.0)
                .map(|embedded| vec![(EMBEDDED.to_owned(), own.median / embedded)])
                .unwrap_or_default();
        }
        self.rows
            .iter()
            .filter(|peer| {
                peer.case == row.case && !is_syncfolder(&peer.tool) && peer.unit == Unit::Seconds
            })
            .filter_map(|peer| {
                let theirs = Summary::of(&peer.values)?.median;
                (theirs > 0.0).then(|| {
                    (
                        format!("{} {}", peer.tool, peer.measurement),
                        own.median / theirs,
                    )
                })
            })
            .collect()
    }
}

/// Names of the cases and measurements, shared by the cases and the targets.
pub mod names {
    pub const BIG: &str = "1 big file";
    pub const SMALL: &str = "2 small files";
    pub const CHANGE: &str = "3 one byte changed";
    pub const LATENCY: &str = "4 latency";
    pub const IDLE: &str = "5 idle cost";
    pub const FLOOR: &str = "6 floor";
    pub const STORAGE: &str = "7 storage";
    pub const SCALE_OUT: &str = "8 scale-out";
    pub const UPLOAD: &str = "upload (A to server durable)";
    pub const END_TO_END: &str = "end to end (A to B complete)";
    pub const TO_B: &str = "time to B";
    pub const SERVER_PEAK_RSS: &str = "server peak RSS in case 1";
    pub const PUSH: &str = "push --fsync";
    pub const RESCAN_WALL: &str = "rescan wall";
    pub const RESCAN_CPU: &str = "rescan CPU";
    pub const AGENT_RSS: &str = "agent peak RSS in case 1";
    pub const SERVER_RSS_POLLS: &str = "server RSS with parked long-polls";
    pub const P50: &str = "p50";
    pub const P99: &str = "p99";
    /// Case 4's samples (`cases.rs` spells the same words out).
    pub const LATENCY_SAMPLE: &str = "1 KiB written on A until complete on B";
    pub const P50_ACROSS_REPLICAS: &str = "p50 across replicas";
    pub const P90_ACROSS_REPLICAS: &str = "p90 across replicas";
    pub const ROLLING_DELAY: &str = "rolling upgrade: longest delay until on A and B";
    pub const STORE_PUT: &str = "object store alone: big file PUT";
    pub const STORE_GET: &str = "object store alone: big file GET";
    pub const ROLLING_MEDIAN_DELAY: &str = "rolling upgrade: median delay until on A and B";
    pub const ROLLING_FAILED: &str = "rolling upgrade: files not on A and B within 30 s";
    pub const ROLLING_WRITTEN: &str = "rolling upgrade: files written through the balancer";
    pub const ROLLING_ERRORS: &str = "rolling upgrade: agent errors (each retried)";
    pub const ROLLING_RESTART: &str = "rolling upgrade: one replica, SIGTERM to ready again";
}

/// How a scale-out row names the embedded default it is compared with.
const EMBEDDED: &str = "syncfolder embedded";

const MIB: f64 = 1024.0 * 1024.0;

/// The issue's targets, on this run's medians.
pub fn evaluate_targets(results: &Results) -> Vec<Target> {
    use names::*;
    let sf = super::SYNCFOLDER;
    let med = |case: &str, measurement: &str, tool: &str| results.median(case, measurement, tool);
    let ratio_target = |description: &str, own: Option<f64>, peer: Option<f64>, limit: f64| {
        let (holds, detail) = match (own, peer) {
            (Some(own), Some(peer)) if peer > 0.0 => (
                Some(own <= limit * peer),
                format!("{:.2}× ({own:.3} s vs {peer:.3} s)", own / peer),
            ),
            _ => (None, "not measured".to_owned()),
        };
        Target {
            description: description.to_owned(),
            holds,
            detail,
        }
    };
    let limit_target = |description: &str, value: Option<f64>, limit: f64, unit: &str| {
        let scale = if unit == "MiB" { MIB } else { 1.0 };
        Target {
            description: description.to_owned(),
            holds: value.map(|value| value <= limit * scale),
            detail: value.map_or("not measured".to_owned(), |value| {
                format!("{:.3} {unit}", value / scale)
            }),
        }
    };
    let max_of = |case: &str, measurement: &str, tool: &str| {
        results
            .row(case, measurement, tool)
            .and_then(|row| Summary::of(&row.values))
            .map(|summary| summary.max)
    };
    let scale_out = super::SYNCFOLDER_SCALE_OUT;
    let change_sent = results
        .row(CHANGE, UPLOAD, sf)
        .and_then(|row| row.bytes_sent.iter().copied().max());
    vec![
        ratio_target(
            "big file end to end ≤ 1.0× Syncthing",
            med(BIG, END_TO_END, sf),
            med(BIG, END_TO_END, super::SYNCTHING),
            1.0,
        ),
        ratio_target(
            "big file end to end ≤ 1.5× rsync --fsync push",
            med(BIG, END_TO_END, sf),
            med(BIG, PUSH, super::RSYNC),
            1.5,
        ),
        ratio_target(
            "big file upload ≤ 1.0× rsync --fsync push",
            med(BIG, UPLOAD, sf),
            med(BIG, PUSH, super::RSYNC),
            1.0,
        ),
        ratio_target(
            "small files end to end ≤ 1.0× rsync --fsync push",
            med(SMALL, END_TO_END, sf),
            med(SMALL, PUSH, super::RSYNC),
            1.0,
        ),
        ratio_target(
            "small files end to end ≥ 3× faster than Syncthing",
            med(SMALL, END_TO_END, sf),
            med(SMALL, END_TO_END, super::SYNCTHING),
            1.0 / 3.0,
        ),
        Target {
            description: "one byte changed: ≤ 2 MiB uploaded".to_owned(),
            holds: change_sent.map(|sent| sent as f64 <= 2.0 * MIB),
            detail: change_sent.map_or("not measured".to_owned(), |sent| {
                format!("{sent} bytes (the most of any round)")
            }),
        },
        ratio_target(
            "one byte changed: time to B ≤ 1.0× Syncthing",
            med(CHANGE, TO_B, sf),
            med(CHANGE, TO_B, super::SYNCTHING),
            1.0,
        ),
        limit_target(
            "latency p50 ≤ 200 ms",
            results.figure(LATENCY, P50),
            0.2,
            "s",
        ),
        limit_target("latency p99 ≤ 1 s", results.figure(LATENCY, P99), 1.0, "s"),
        limit_target(
            "rescan of unchanged files ≤ 1 s",
            med(IDLE, RESCAN_WALL, sf),
            1.0,
            "s",
        ),
        limit_target(
            "agent peak RSS in case 1 ≤ 64 MiB",
            max_of(IDLE, AGENT_RSS, sf),
            64.0,
            "MiB",
        ),
        limit_target(
            "server RSS with parked long-polls ≤ 100 MiB",
            max_of(IDLE, SERVER_RSS_POLLS, sf),
            100.0,
            "MiB",
        ),
        ratio_target(
            "scale-out: big file end to end ≤ 1.5× embedded",
            med(BIG, END_TO_END, scale_out),
            med(BIG, END_TO_END, sf),
            1.5,
        ),
        ratio_target(
            "scale-out: small files end to end ≤ 2× embedded",
            med(SMALL, END_TO_END, scale_out),
            med(SMALL, END_TO_END, sf),
            2.0,
        ),
        limit_target(
            "scale-out: change to visible across replicas p50 ≤ 250 ms",
            results.figure(LATENCY, P50_ACROSS_REPLICAS),
            0.25,
            "s",
        ),
        {
            let n_failed = max_of(SCALE_OUT, ROLLING_FAILED, scale_out);
            Target {
                description: "rolling upgrade: no failed sync".to_owned(),
                holds: n_failed.map(|n_failed| n_failed == 0.0),
                detail: n_failed.map_or("not measured".to_owned(), |n_failed| {
                    format!("{n_failed:.0} files not synced (the most of any upgrade)")
                }),
            }
        },
        {
            let delay = max_of(SCALE_OUT, ROLLING_DELAY, scale_out);
            Target {
                description: "rolling upgrade: longest delay < 5 s".to_owned(),
                holds: delay.map(|delay| delay < 5.0),
                detail: delay.map_or("not measured".to_owned(), |delay| {
                    format!("{delay:.3} s (the longest of any upgrade)")
                }),
            }
        },
    ]
}

/// What the run was, for the report's header and JSON.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub mode: &'static str,
    pub rounds: usize,
    pub machine: String,
    pub filesystem: String,
    pub sizes: String,
    pub started_unix: u64,
    pub total_seconds: f64,
}

fn format_value(unit: Unit, value: f64) -> String {
    match unit {
        Unit::Seconds => format!("{value:.3} s"),
        Unit::Bytes => format!("{:.1} MiB", value / MIB),
        Unit::Cores => format!("{value:.2} cores"),
        Unit::Count => format!("{value:.0}"),
    }
}

fn format_bytes(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / MIB)
    } else if bytes >= 1 << 10 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

fn median_u64(values: &[u64]) -> Option<u64> {
    let floats: Vec<f64> = values.iter().map(|&value| value as f64).collect();
    Summary::of(&floats).map(|summary| summary.median as u64)
}

/// The Markdown table printed on stdout (and pasted into the README).
pub fn table(info: &RunInfo, results: &Results, targets: &[Target]) -> String {
    let mut out = format!(
        "syncfolder bench ({} mode, {} rounds, {:.0} s) on {}\nfile systems: {}\nsizes: {}\n\n",
        info.mode, info.rounds, info.total_seconds, info.machine, info.filesystem, info.sizes
    );
    out.push_str("| case | measurement | tool | median | min | max | sent | peak RSS | syncfolder ÷ peer |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for row in results.sorted_rows() {
        let Some(summary) = Summary::of(&row.values) else {
            continue;
        };
        let ratios = results
            .ratios(row)
            .iter()
            .map(|(peer, ratio)| format!("{ratio:.2}× {peer}"))
            .collect::<Vec<_>>()
            .join("; ");
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.case,
            row.measurement,
            row.tool,
            format_value(row.unit, summary.median),
            format_value(row.unit, summary.min),
            format_value(row.unit, summary.max),
            median_u64(&row.bytes_sent).map_or(String::new(), format_bytes),
            row.peak_rss_bytes
                .iter()
                .max()
                .map_or(String::new(), |&rss| format_bytes(rss)),
            ratios
        ));
    }
    let mut figures: Vec<&Figure> = results.figures.iter().collect();
    figures.sort_by(|a, b| a.case.cmp(&b.case));
    for figure in figures {
        out.push_str(&format!(
            "| {} | {} | {} | {} | | | | | |\n",
            figure.case,
            figure.name,
            figure.tool,
            format_value(figure.unit, figure.value)
        ));
    }
    out.push_str("\n| target | holds | this run |\n|---|---|---|\n");
    for target in targets {
        let holds = match target.holds {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "?",
        };
        out.push_str(&format!(
            "| {} | {holds} | {} |\n",
            target.description, target.detail
        ));
    }
    if info.mode == "quick" {
        out.push_str(
            "\n(quick mode: small data and debug binaries prove the harness works; \
             its numbers say nothing about the targets)\n",
        );
    }
    out
}

/// `target/bench/results.json`.
pub fn json(info: &RunInfo, results: &Results, targets: &[Target]) -> Value {
    let summary_json = |values: &[f64]| match Summary::of(values) {
        Some(summary) => json!({"median": summary.median, "min": summary.min, "max": summary.max}),
        None => Value::Null,
    };
    let rows: Vec<Value> = results
        .sorted_rows()
        .into_iter()
        .map(|row| {
            let bytes: Vec<f64> = row.bytes_sent.iter().map(|&b| b as f64).collect();
            let rss: Vec<f64> = row.peak_rss_bytes.iter().map(|&b| b as f64).collect();
            let ratios: serde_json::Map<String, Value> = results
                .ratios(row)
                .into_iter()
                .map(|(peer, ratio)| (peer, json!(ratio)))
                .collect();
            json!({
                "case": row.case,
                "measurement": row.measurement,
                "tool": row.tool,
                "unit": row.unit.as_str(),
                "rounds": row.values,
                "median": Summary::of(&row.values).map(|s| s.median),
                "min": Summary::of(&row.values).map(|s| s.min),
                "max": Summary::of(&row.values).map(|s| s.max),
                "bytes_sent": summary_json(&bytes),
                "peak_rss_bytes": summary_json(&rss),
                "ratio_to_peer": ratios,
            })
        })
        .collect();
    let figures: Vec<Value> = results
        .figures
        .iter()
        .map(|figure| {
            json!({"case": figure.case, "name": figure.name, "tool": figure.tool, "unit": figure.unit.as_str(), "value": figure.value})
        })
        .collect();
    let targets: Vec<Value> = targets
        .iter()
        .map(|target| json!({"target": target.description, "holds": target.holds, "detail": target.detail}))
        .collect();
    json!({
        "mode": info.mode,
        "rounds": info.rounds,
        "machine": info.machine,
        "filesystem": info.filesystem,
        "sizes": info.sizes,
        "started_unix": info.started_unix,
        "total_seconds": info.total_seconds,
        "results": rows,
        "figures": figures,
        "targets": targets,
    })
}

#[cfg(test)]
mod tests {
    use super::names::*;
    use super::*;

    fn seconds(results: &mut Results, case: &str, measurement: &str, tool: &str, values: &[f64]) {
        for &value in values {
            results.add(
                case,
                measurement,
                tool,
                Unit::Seconds,
                Observation::seconds(value),
            );
        }
    }

    fn sample_results() -> Results {
        let mut results = Results::default();
        seconds(
            &mut results,
            BIG,
            END_TO_END,
            "syncfolder",
            &[4.0, 5.0, 6.0],
        );
        seconds(&mut results, BIG, UPLOAD, "syncfolder", &[2.0, 3.0, 9.0]);
        seconds(&mut results, BIG, PUSH, "rsync", &[4.0, 4.0, 4.0]);
        seconds(
            &mut results,
            BIG,
            END_TO_END,
            "syncthing",
            &[10.0, 5.0, 5.0],
        );
        seconds(
            &mut results,
            SMALL,
            END_TO_END,
            "syncfolder",
            &[1.0, 1.0, 1.0],
        );
        seconds(
            &mut results,
            SMALL,
            END_TO_END,
            "syncthing",
            &[2.0, 2.0, 2.0],
        );
        results.add(
            CHANGE,
            UPLOAD,
            "syncfolder",
            Unit::Seconds,
            Observation {
                value: 1.0,
                bytes_sent: Some(1_500_000),
                peak_rss_bytes: None,
            },
        );
        results.add_figure(LATENCY, P50, Unit::Seconds, 0.15);
        results.add_figure(LATENCY, P99, Unit::Seconds, 1.5);
        results.add(
            IDLE,
            AGENT_RSS,
            "syncfolder",
            Unit::Bytes,
            Observation {
                value: 70.0 * MIB,
                ..Observation::default()
            },
        );
        results
    }

    fn target<'a>(targets: &'a [Target], start: &str) -> &'a Target {
        targets
            .iter()
            .find(|target| target.description.starts_with(start))
            .unwrap()
    }

    #[test]
    fn targets_compare_medians_in_the_same_run() {
        let targets = evaluate_targets(&sample_results());
        // 5 s vs Syncthing's median 5 s: holds at 1.0×
        assert_eq!(
            target(&targets, "big file end to end ≤ 1.0×").holds,
            Some(true)
        );
        // 5 s vs rsync's 4 s: 1.25× ≤ 1.5×
        assert_eq!(
            target(&targets, "big file end to end ≤ 1.5×").holds,
            Some(true)
        );
        // upload 3 s vs 4 s
        assert_eq!(target(&targets, "big file upload").holds, Some(true));
        // 1 s vs 2 s is only 2× faster
        assert_eq!(
            target(&targets, "small files end to end ≥ 3×").holds,
            Some(false)
        );
        assert_eq!(
            target(&targets, "small files end to end ≤ 1.0× rsync").holds,
            None
        );
        assert_eq!(
            target(&targets, "one byte changed: ≤ 2 MiB").holds,
            Some(true)
        );
        assert_eq!(target(&targets, "latency p50").holds, Some(true));
        assert_eq!(target(&targets, "latency p99").holds, Some(false));
        assert_eq!(target(&targets, "agent peak RSS").holds, Some(false));
        assert_eq!(target(&targets, "server RSS").holds, None);
    }

    #[test]
    fn ratios_are_syncfolder_over_each_peer_of_the_case() {
        let results = sample_results();
        let row = results.row(BIG, END_TO_END, "syncfolder").unwrap();
        let ratios = results.ratios(row);
        assert_eq!(
            ratios,
            vec![
                ("rsync push --fsync".to_owned(), 1.25),
                ("syncthing end to end (A to B complete)".to_owned(), 1.0)
            ]
        );
        assert!(
            results
                .ratios(results.row(BIG, PUSH, "rsync").unwrap())
                .is_empty()
        );
    }

    #[test]
    fn the_scale_out_stack_is_compared_with_the_embedded_default_of_the_same_measurement() {
        let scale_out = crate::bench::SYNCFOLDER_SCALE_OUT;
        let mut results = sample_results();
        seconds(&mut results, BIG, END_TO_END, scale_out, &[7.0, 8.0, 9.0]);
        seconds(&mut results, SMALL, END_TO_END, scale_out, &[1.5, 1.5, 2.5]);
        results.add_figure_of(LATENCY, P50_ACROSS_REPLICAS, scale_out, Unit::Seconds, 0.2);
        for (n_failed, delay) in [(0.0, 1.0), (1.0, 4.9), (0.0, 2.0)] {
            let count = Observation {
                value: n_failed,
                ..Observation::default()
            };
            results.add(SCALE_OUT, ROLLING_FAILED, scale_out, Unit::Count, count);
            seconds(&mut results, SCALE_OUT, ROLLING_DELAY, scale_out, &[delay]);
        }

        let row = results.row(BIG, END_TO_END, scale_out).unwrap();
        assert_eq!(
            results.ratios(row),
            vec![("syncfolder embedded".to_owned(), 1.6)]
        );
        // the embedded row's peers are the other tools, not the scale-out stack
        let embedded = results.row(BIG, END_TO_END, "syncfolder").unwrap();
        assert_eq!(results.ratios(embedded).len(), 2);
        assert!(
            results
                .ratios(results.row(SCALE_OUT, ROLLING_FAILED, scale_out).unwrap())
                .is_empty()
        );

        let targets = evaluate_targets(&results);
        assert_eq!(target(&targets, "scale-out: big file").holds, Some(false));
        assert_eq!(target(&targets, "scale-out: small files").holds, Some(true));
        assert_eq!(
            target(&targets, "scale-out: change to visible").holds,
            Some(true)
        );
        assert_eq!(
            target(&targets, "rolling upgrade: no failed").holds,
            Some(false)
        );
        assert_eq!(
            target(&targets, "rolling upgrade: longest delay").holds,
            Some(true)
        );

        let info = RunInfo {
            mode: "full",
            rounds: 3,
            machine: "test".to_owned(),
            filesystem: "dirs".to_owned(),
            sizes: "small".to_owned(),
            started_unix: 0,
            total_seconds: 1.0,
        };
        let text = table(&info, &results, &targets);
        assert!(
            text.contains("| 4 latency | p50 across replicas | syncfolder scale-out | 0.200 s |")
        );
        assert!(text.contains(&format!(
            "| 8 scale-out | {ROLLING_FAILED} | syncfolder scale-out | 0 | 0 | 1 |"
        )));
        assert!(text.contains("1.60× syncfolder embedded"));
    }

    #[test]
    fn the_json_names_every_field_the_issue_asks_for() {
        let results = sample_results();
        let targets = evaluate_targets(&results);
        let info = RunInfo {
            mode: "quick",
            rounds: 3,
            machine: "test".to_owned(),
            filesystem: "dirs".to_owned(),
            sizes: "small".to_owned(),
            started_unix: 0,
            total_seconds: 1.0,
        };
        let value = json(&info, &results, &targets);
        let row = &value["results"][0];
        for field in [
            "case",
            "tool",
            "median",
            "min",
            "max",
            "bytes_sent",
            "peak_rss_bytes",
            "ratio_to_peer",
        ] {
            assert!(row.get(field).is_some(), "{field}");
        }
        assert_eq!(row["median"], json!(5.0));
        assert_eq!(row["min"], json!(4.0));
        assert_eq!(row["ratio_to_peer"]["rsync push --fsync"], json!(1.25));
        assert_eq!(value["targets"].as_array().unwrap().len(), targets.len());
        let text = table(&info, &results, &targets);
        assert!(text.contains("| 1 big file | end to end (A to B complete) | syncfolder | 5.000 s | 4.000 s | 6.000 s |"));
        assert!(text.contains("| latency p99 ≤ 1 s | NO | 1.500 s |"));
    }
}
