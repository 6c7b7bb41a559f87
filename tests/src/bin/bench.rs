//! `bench`: the gateway against a broker-only baseline and a Mosquitto bridge, on this
//! machine, under the same load. Prints a Markdown table of medians and ratios and issue
//! 8's targets; `--json FILE` writes the same as JSON. See `edge_tests::bench`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use edge_tests::bench::systems::System;
use edge_tests::bench::{self, report, Options, Scenario};

const USAGE: &str = "\
usage: bench [--quick] [--runs N] [--json FILE] [--scenario LIST] [options]

  --quick              one run with small counts (a CI-sized smoke run)
  --runs N             repetitions; the table shows medians (default 3)
  --json FILE          also write the results as JSON
  --scenario LIST      comma-separated: throughput,latency,outage,backlog,steady (default all)
  --events N           events of the throughput scenario (default 200000)
  --throughput-limit S longest wait for them, seconds (default 120)
  --publishers N       device connections for throughput and outage (default 20)
  --rate N             events/s of the latency scenario (default 5000)
  --latency-secs S     length of the latency scenario (default 10)
  --outage-events N    events buffered during the outage (default 100000)
  --backlog N          events of the big backlog (default 1000000)
  --backlog-publishers N  device connections filling it (default 50)
  --steady-devices N   devices of the steady scenario (default 20)
  --steady-rate N      events/s per device in the steady scenario (default 10)
  --steady-secs S      length of the steady load (default 30)
  --idle-secs S        idle CPU window of the steady scenario (default 20)
  --no-bridge-backlog  do not fill the Mosquitto bridge with the big backlog
  --no-rumqttd         skip the rumqttd-alone baseline
  --render FILE        print the table and targets of a JSON report again, run nothing
  --systems LIST       comma-separated: mosquitto,rumqttd,bridge,gateway (default all)
  --max-delay D        the gateway's max_delay outside the latency scenario (default:
                       config/gateway.toml's), e.g. 10ms, for what-if runs

The gateway binary is $EDGE_GATEWAY_BIN, or built by cargo (release when this bench is a
release build); its config is $EDGE_BENCH_CONFIG, or the repository's config/gateway.toml,
with ports and paths changed. Mosquitto must be installed.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve-rumqttd") {
        let port = args.get(1).and_then(|p| p.parse().ok()).unwrap_or(1883);
        return match bench::rumqttd::serve(port) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("rumqttd: {err}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(path) = args.iter().position(|a| a == "--render").and_then(|i| args.get(i + 1)) {
        return render(path);
    }
    let (options, json) = match parse(&args) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("bench: {err}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if cfg!(not(debug_assertions))
        && std::env::var_os("EDGE_GATEWAY_BIN").is_none()
        && std::env::var_os("EDGE_TEST_PROFILE").is_none()
    {
        std::env::set_var("EDGE_TEST_PROFILE", "release");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("bench: cannot start a runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let machine = report::machine();
    eprintln!("machine: {machine}");
    let result = runtime.block_on(bench::run(&options));
    let command = format!("bench {}", args.join(" "));
    println!("\n{}", report::table(&result.results));
    println!("Targets of issue 8 (medians of {} run(s)):\n", options.runs);
    println!("{}", report::targets_text(&result.targets));
    for err in &result.errors {
        println!("error: {err}");
    }
    if let Some(path) = json {
        let meta = serde_json::json!({
            "command": command,
            "runs": options.runs,
            "backlog_events": options.backlog_events,
            "latency_rate": options.latency_rate,
            "machine": machine,
            "options": format!("{options:?}"),
            "errors": result.errors,
        });
        let value = report::to_json(&result.results, &result.targets, meta);
        let text = serde_json::to_string_pretty(&value).unwrap_or_default();
        if let Err(err) = std::fs::write(&path, text + "\n") {
            eprintln!("bench: cannot write {}: {err}", path.display());
            return ExitCode::FAILURE;
        }
    }
    // The runtime holds the cloud subscribers' tasks; the processes are gone already.
    runtime.shutdown_background();
    if result.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--render FILE`: the table and targets of a saved JSON report.
fn render(path: &str) -> ExitCode {
    let report = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).map_err(|e| e.to_string()));
    let report = match report {
        Ok(report) => report,
        Err(err) => {
            eprintln!("bench: {path}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let results = match report::from_json(&report) {
        Ok(results) => results,
        Err(err) => {
            eprintln!("bench: {path}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let meta = &report["meta"];
    let mut options = Options::full();
    options.runs = meta["runs"].as_u64().unwrap_or(1) as usize;
    options.backlog_events = meta["backlog_events"].as_u64().unwrap_or(options.backlog_events);
    options.latency_rate = meta["latency_rate"].as_f64().unwrap_or(options.latency_rate);
    let targets = bench::targets::judge(&results, &options);
    println!("{}", report::table(&results));
    println!("Targets of issue 8 (medians of {} run(s)):\n", options.runs);
    println!("{}", report::targets_text(&targets));
    ExitCode::SUCCESS
}

/// `Ok(None)` for `--help`.
fn parse(args: &[String]) -> Result<Option<(Options, Option<PathBuf>)>, String> {
    let quick = args.iter().any(|a| a == "--quick");
    let mut options = if quick { Options::quick() } else { Options::full() };
    options.rumqttd_exe = std::env::current_exe().ok();
    let mut json = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--quick" => {}
            "-h" | "--help" => return Ok(None),
            "--runs" => options.runs = number(arg, value()?)?.max(1) as usize,
            "--json" => json = Some(PathBuf::from(value()?)),
            "--scenario" => {
                options.scenarios = value()?
                    .split(',')
                    .map(|s| Scenario::parse(s.trim()).ok_or(format!("unknown scenario {s:?}")))
                    .collect::<Result<_, _>>()?;
            }
            "--events" => options.throughput_events = number(arg, value()?)?,
            "--throughput-limit" => options.throughput_limit = Duration::from_secs(number(arg, value()?)?.max(1)),
            "--publishers" => options.publishers = number(arg, value()?)?.max(1) as usize,
            "--rate" => options.latency_rate = number(arg, value()?)?.max(1) as f64,
            "--latency-secs" => options.latency_secs = number(arg, value()?)?.max(1) as f64,
            "--outage-events" => options.outage_events = number(arg, value()?)?,
            "--backlog" => options.backlog_events = number(arg, value()?)?,
            "--backlog-publishers" => options.backlog_publishers = number(arg, value()?)?.max(1) as usize,
            "--no-bridge-backlog" => options.backlog_bridge = false,
            "--no-rumqttd" => options.rumqttd_exe = None,
            "--systems" => {
                options.systems = value()?
                    .split(',')
                    .map(|s| System::parse(s.trim()).ok_or(format!("unknown system {s:?}")))
                    .collect::<Result<_, _>>()?;
            }
            "--max-delay" => options.max_delay = Some(value()?.clone()),
            "--steady-devices" => options.steady_devices = number(arg, value()?)?.max(1) as usize,
            "--steady-rate" => options.steady_rate = number(arg, value()?)?.max(1) as f64,
            "--steady-secs" => options.steady_secs = number(arg, value()?)?.max(1) as f64,
            "--idle-secs" => options.idle_secs = number(arg, value()?)?.max(1) as f64,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some((options, json)))
}

fn number(arg: &str, text: &str) -> Result<u64, String> {
    text.replace('_', "").parse().map_err(|_| format!("{arg}: expected a number, found {text:?}"))
}
