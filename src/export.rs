//! `powerfleet export`: a run (a batch id, a correlation id or `label=NAME`) as a directory of
//! files evaluation tools read: `manifest.json` (what the run is, what made it and how much of
//! it is stored), `samples.jsonl` (one line per job), `results.json` (the report) and `figures/`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use powerfleet_jobs::{
    BatchId, CorrelationId, JobId, JobResult, JobStatus, Label, Prompt, ReferenceAnswer,
    SubmissionRecord, now_ms,
};
use powerfleet_report::Prices;
use powerfleet_sampler::{Method, SamplerConfig, TokenId};
use serde::Serialize;

use crate::fleet::DatabaseArgs;
use crate::selection::{Run, Selection};

/// The layout of a run directory, recorded in its manifest so a reader can check what it reads.
pub const FORMAT: &str = "powerfleet-run/1";

/// Samples between two progress lines while `samples.jsonl` is written.
const PROGRESS_EVERY: usize = 100_000;

/// Arguments of `powerfleet export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// What to export: a batch id, a correlation id, or label=NAME (every batch submitted with
    /// that label).
    pub id: String,
    /// The run directory to write: manifest.json, samples.jsonl, results.json and figures/.
    /// Created if missing; it must be empty unless --force.
    #[arg(long)]
    pub dir: PathBuf,
    /// Write into a directory that is not empty, replacing the files an export writes (other
    /// files are left as they are).
    #[arg(long)]
    pub force: bool,
    /// Price of generated tokens in US dollars per million, for the report: USD for every model,
    /// or MODEL=USD (repeatable). Default: the price given at submission, if any.
    #[arg(long = "price")]
    pub prices: Vec<String>,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

pub async fn run(args: ExportArgs) -> Result<()> {
    let prices = Prices::parse(args.prices.iter().map(String::as_str))
        .map_err(|e| anyhow::anyhow!("--price: {e}"))?;
    let selection: Selection = args.id.parse()?;
    check_dir(&args.dir, args.force)?;
    let store = args.database.connect().await?;
    let run = Run::load(&store, selection).await?;
    let scheduled = run.scheduled();
    if run.results.is_empty() {
        bail!(
            "no results stored yet for {} ({} jobs scheduled); wait for them (`powerfleet status {} --wait`) and export again",
            args.id,
            scheduled.unwrap_or_default(),
            args.id
        );
    }
    if run.batches() > 1 {
        eprintln!(
            "note: {} spans {} batches; results.json pools them by method and configuration, samples.jsonl names each sample's batch",
            args.id,
            run.batches()
        );
    }
    let dir = &args.dir;
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create --dir {}; choose another", dir.display()))?;
    eprintln!(
        "exporting {} samples of {} to {}",
        run.results.len(),
        args.id,
        dir.display()
    );

    let path = dir.join(SAMPLES);
    let total = run.results.len();
    write_file(&path, |out| {
        write_samples(&run.results, out, |n| {
            eprintln!("{}: {n} of {total} samples", path.display());
        })
    })?;
    eprintln!("wrote {}: {}", path.display(), count(total, "sample"));

    let mut report = powerfleet_report::build(&args.id, &run.results, &prices);
    report.set_progress(scheduled, None);
    let path = dir.join(RESULTS);
    write_file(&path, |out| {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)
    })?;
    eprintln!(
        "wrote {}: the report of {}, {}, {}",
        path.display(),
        count(report.jobs as usize, "job"),
        count(report.methods.len(), "method row"),
        count(report.problems as usize, "problem"),
    );
    if let Some(note) = report.partial_note() {
        eprintln!("note: {note}; export again once the run has finished for a complete one");
    }

    let figures_dir = dir.join(FIGURES);
    let figures = powerfleet_report::write_figures(&report, &figures_dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", figures_dir.display()))?;
    eprintln!("wrote {}: {} files", figures_dir.display(), figures.len());

    // Last: a directory with a manifest holds a whole export.
    let figure_names: Vec<String> = figures
        .iter()
        .filter_map(|f| f.strip_prefix(dir).ok())
        .map(|f| f.display().to_string())
        .collect();
    let manifest = Manifest::of(&run, figure_names, now_ms());
    let path = dir.join(MANIFEST);
    write_file(&path, |out| {
        serde_json::to_writer_pretty(&mut *out, &manifest)?;
        writeln!(out)
    })?;
    eprintln!(
        "wrote {}: {}, {}, {}, {} of {} jobs stored",
        path.display(),
        count(manifest.submissions.len(), "submission"),
        count(manifest.configs.len(), "configuration"),
        count(manifest.models.len(), "model"),
        manifest.counts.stored,
        scheduled.map_or("?".to_string(), |s| s.to_string()),
    );
    Ok(())
}

/// "1 model", "3 models".
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

const MANIFEST: &str = "manifest.json";
const SAMPLES: &str = "samples.jsonl";
const RESULTS: &str = "results.json";
const FIGURES: &str = "figures";

/// Checks, before anything is read or written, that `dir` can take an export: missing, an empty
/// directory, or (with `force`) any directory.
fn check_dir(dir: &Path, force: bool) -> Result<()> {
    let mut entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) if dir.is_file() => {
            bail!(
                "--dir {} is a file ({e}); name a new or empty directory",
                dir.display()
            )
        }
        Err(e) => bail!(
            "cannot read --dir {}: {e}; name a directory you can write",
            dir.display()
        ),
    };
    if force {
        return Ok(());
    }
    if let Some(entry) = entries.next() {
        let first = entry.map_or_else(|_| "?".into(), |e| e.file_name().display().to_string());
        let more = match entries.count() {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        bail!(
            "--dir {} is not empty (it holds {first}{more}); name a new or empty directory, or pass --force to write over an export's files in it",
            dir.display()
        );
    }
    Ok(())
}

/// Writes `path` through `write` into a temporary file beside it, then renames it into place, so
/// that a file an export names is whole.
fn write_file(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<fs::File>) -> io::Result<()>,
) -> Result<()> {
    let name = path.file_name().expect("a file name").to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.partial"));
    let written = (|| {
        let mut out = BufWriter::new(fs::File::create(&tmp)?);
        write(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| {
            format!(
                "cannot write {}; check the space and permissions of --dir, then export again with --force",
                path.display()
            )
        });
    }
    Ok(())
}

/// Writes one [`Sample`] line per result, calling `progress` with the count every
/// [`PROGRESS_EVERY`] lines.
fn write_samples(
    results: &[JobResult],
    out: &mut impl Write,
    mut progress: impl FnMut(usize),
) -> io::Result<()> {
    for (i, r) in results.iter().enumerate() {
        serde_json::to_writer(&mut *out, &Sample::of(r))?;
        out.write_all(b"\n")?;
        if (i + 1) % PROGRESS_EVERY == 0 && i + 1 < results.len() {
            progress(i + 1);
        }
    }
    Ok(())
}

/// One line of `samples.jsonl`: a job's sample as the results store has it. Every field is
/// present, `null` where it does not apply (a job that did not complete has no text; an
/// ungraded one no verdict).
#[derive(Debug, Serialize)]
struct Sample<'a> {
    job_id: JobId,
    batch_id: Option<BatchId>,
    correlation_id: &'a CorrelationId,
    problem_id: Option<&'a str>,
    method: Method,
    /// The validated configuration, every default resolved.
    config: Option<&'a SamplerConfig>,
    seed: u64,
    /// The chain within its seed.
    stream: u64,
    model: &'a str,
    label: Option<&'a Label>,
    /// The prompt the result carries (`{"text": ...}`, `{"messages": [...]}` or
    /// `{"tokens": [...]}`); the collector resolved a prompt stored by reference before it
    /// stored the result. `null` for a job that did not complete.
    prompt: Option<&'a Prompt>,
    /// The completion's text as stored (whole: a stop string's cut is the grader's business).
    text: Option<&'a str>,
    /// The completion's token ids, a terminal EOS included.
    tokens: &'a [TokenId],
    correct: Option<bool>,
    extracted: Option<&'a str>,
    reference: Option<&'a ReferenceAnswer>,
    grade_error: Option<&'a str>,
    status: JobStatus,
    error: Option<&'a str>,
}

impl<'a> Sample<'a> {
    fn of(r: &'a JobResult) -> Sample<'a> {
        Sample {
            job_id: r.job_id,
            batch_id: r.batch_id,
            correlation_id: &r.correlation_id,
            problem_id: r.problem_id.as_deref(),
            method: r.method,
            config: r.config.as_ref(),
            seed: r.seed,
            stream: r.stream,
            model: &r.model,
            label: r.label.as_ref(),
            prompt: r.prompt.as_ref(),
            text: r.text.as_deref(),
            tokens: &r.tokens,
            correct: r.grade.as_ref().map(|g| g.correct),
            extracted: r.grade.as_ref().and_then(|g| g.extracted.as_deref()),
            reference: r.grading.as_ref().map(|g| &g.reference),
            grade_error: r.grade_error.as_deref(),
            status: r.status,
            error: r.error.as_deref(),
        }
    }
}

/// `manifest.json`: what the run is, what made its results, and how much of it is stored.
#[derive(Debug, Serialize)]
struct Manifest<'a> {
    /// [`FORMAT`].
    format: &'static str,
    /// The run exported: `{"batch_id": ...}`, `{"correlation_id": ...}` or `{"label": ...}`.
    selection: SelectionEntry<'a>,
    /// The powerfleet that wrote the directory, and when (ms since the Unix epoch).
    exported_by: ExportedBy,
    /// The powerfleet versions that wrote the results, with their counts (`null`: results
    /// written before results recorded their version).
    produced_by: Vec<VersionEntry<'a>>,
    counts: Counts,
    /// The records of the run's submitted batches.
    submissions: &'a [SubmissionRecord],
    /// The distinct configurations, in the order of the jobs, with the methods and models that
    /// ran each.
    configs: Vec<ConfigEntry<'a>>,
    /// The models, by name, each with the distinct backend pins its results ran with.
    models: Vec<ModelEntry<'a>>,
    /// The directory's files.
    files: Files,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
enum SelectionEntry<'a> {
    BatchId(&'a BatchId),
    CorrelationId(&'a CorrelationId),
    Label(&'a Label),
}

impl<'a> From<&'a Selection> for SelectionEntry<'a> {
    fn from(s: &'a Selection) -> Self {
        match s {
            Selection::Batch(b) => SelectionEntry::BatchId(b),
            Selection::Correlation(c) => SelectionEntry::CorrelationId(c),
            Selection::Label(l) => SelectionEntry::Label(l),
        }
    }
}

#[derive(Debug, Serialize)]
struct ExportedBy {
    powerfleet: &'static str,
    at_ms: u64,
}

#[derive(Debug, Serialize)]
struct VersionEntry<'a> {
    powerfleet: Option<&'a str>,
    samples: u64,
}

/// Jobs scheduled (`null` when no submission was recorded) and stored, and the stored ones by
/// status and grade.
#[derive(Debug, Default, Serialize)]
struct Counts {
    scheduled: Option<u64>,
    stored: u64,
    /// Every scheduled job stored (without a known `scheduled`: true).
    complete: bool,
    batches: u64,
    completed: u64,
    failed: u64,
    cancelled: u64,
    dead: u64,
    graded: u64,
    correct: u64,
}

#[derive(Debug, Serialize)]
struct ConfigEntry<'a> {
    /// `null` for results stored before configurations were recorded, or whose configuration
    /// did not validate.
    config: Option<&'a SamplerConfig>,
    methods: Vec<Method>,
    models: Vec<&'a str>,
    samples: u64,
}

#[derive(Debug, Serialize)]
struct ModelEntry<'a> {
    model: &'a str,
    samples: u64,
    /// Distinct pins with their counts; a job that never ran on a backend has none.
    pins: Vec<PinEntry<'a>>,
}

#[derive(Debug, Serialize)]
struct PinEntry<'a> {
    pin: &'a powerfleet_jobs::Pin,
    samples: u64,
}

#[derive(Debug, Serialize)]
struct Files {
    samples: &'static str,
    results: &'static str,
    figures: Vec<String>,
}

impl<'a> Manifest<'a> {
    fn of(run: &'a Run, figures: Vec<String>, at_ms: u64) -> Manifest<'a> {
        let mut counts = Counts {
            scheduled: run.scheduled(),
            stored: run.results.len() as u64,
            batches: run.batches() as u64,
            ..Counts::default()
        };
        counts.complete = counts.scheduled.is_none_or(|s| counts.stored >= s);
        let mut versions: Vec<VersionEntry> = Vec::new();
        let mut configs: Vec<(Option<String>, ConfigEntry)> = Vec::new();
        let mut models: BTreeMap<&str, ModelEntry> = BTreeMap::new();
        for s in &run.submissions {
            for m in &s.models {
                models.entry(m).or_insert_with(|| ModelEntry::new(m));
            }
        }
        for r in &run.results {
            match r.status {
                JobStatus::Completed => counts.completed += 1,
                JobStatus::Failed => counts.failed += 1,
                JobStatus::Cancelled => counts.cancelled += 1,
                JobStatus::Dead => counts.dead += 1,
                JobStatus::Queued | JobStatus::Running => {}
            }
            if let Some(g) = &r.grade {
                counts.graded += 1;
                counts.correct += u64::from(g.correct);
            }

            let version = r.version.as_deref();
            match versions.iter_mut().find(|v| v.powerfleet == version) {
                Some(v) => v.samples += 1,
                None => versions.push(VersionEntry {
                    powerfleet: version,
                    samples: 1,
                }),
            }

            // Configurations compare as their JSON: a configuration holds floats.
            let key = r
                .config
                .as_ref()
                .map(|c| serde_json::to_string(c).expect("a configuration serializes"));
            let at = match configs.iter().position(|(k, _)| *k == key) {
                Some(at) => at,
                None => {
                    configs.push((
                        key,
                        ConfigEntry {
                            config: r.config.as_ref(),
                            methods: Vec::new(),
                            models: Vec::new(),
                            samples: 0,
                        },
                    ));
                    configs.len() - 1
                }
            };
            let entry = &mut configs[at].1;
            entry.samples += 1;
            if !entry.methods.contains(&r.method) {
                entry.methods.push(r.method);
            }
            if !entry.models.contains(&r.model.as_str()) {
                entry.models.push(&r.model);
            }

            let model = models
                .entry(&r.model)
                .or_insert_with(|| ModelEntry::new(&r.model));
            model.samples += 1;
            if let Some(pin) = &r.pin {
                match model.pins.iter_mut().find(|p| p.pin == pin) {
                    Some(p) => p.samples += 1,
                    None => model.pins.push(PinEntry { pin, samples: 1 }),
                }
            }
        }
        for (_, c) in &mut configs {
            c.models.sort_unstable();
        }
        Manifest {
            format: FORMAT,
            selection: (&run.selection).into(),
            exported_by: ExportedBy {
                powerfleet: env!("CARGO_PKG_VERSION"),
                at_ms,
            },
            produced_by: versions,
            counts,
            submissions: &run.submissions,
            configs: configs.into_iter().map(|(_, c)| c).collect(),
            models: models.into_values().collect(),
            files: Files {
                samples: SAMPLES,
                results: RESULTS,
                figures,
            },
        }
    }
}

impl<'a> ModelEntry<'a> {
    fn new(model: &'a str) -> ModelEntry<'a> {
        ModelEntry {
            model,
            samples: 0,
            pins: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use powerfleet_jobs::{GradeRecord, Grader, Grading};
    use powerfleet_testkit::{result_for, spec};

    fn config(n_mcmc: u32) -> SamplerConfig {
        let mut c = SamplerConfig::new(Method::Power);
        c.n_mcmc = n_mcmc;
        c.validate().unwrap().manifest()
    }

    #[test]
    fn a_directory_takes_an_export_when_missing_or_empty_and_otherwise_only_with_force() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        check_dir(&dir, false).unwrap();
        fs::create_dir(&dir).unwrap();
        check_dir(&dir, false).unwrap();
        fs::write(dir.join("manifest.json"), "{}").unwrap();
        let e = check_dir(&dir, false).unwrap_err().to_string();
        assert!(
            e.contains("is not empty (it holds manifest.json") && e.contains("--force"),
            "{e}"
        );
        check_dir(&dir, true).unwrap();
        let file = dir.join("manifest.json");
        let e = check_dir(&file, true).unwrap_err().to_string();
        assert!(e.contains("is a file"), "{e}");
    }

    #[test]
    fn a_sample_line_has_every_field_and_null_where_it_does_not_apply() {
        let batch = BatchId::new();
        let graded = result_for(
            &spec()
                .batch_id(batch)
                .problem_id("q1")
                .text_prompt("1 + 1 =")
                .grading(Grading {
                    template: "plain".into(),
                    grader: Grader::Exact,
                    reference: ReferenceAnswer::Text("2".into()),
                    price_per_mtok: None,
                    reasoning_markers: None,
                })
                .build(),
        )
        .tokens(vec![5, 0])
        .text(" 2")
        .grade(GradeRecord {
            grader: "exact".into(),
            extracted: Some("2".into()),
            answer_key: Some("2".into()),
            correct: true,
        })
        .with(|r| r.prompt = Some(Prompt::Text("1 + 1 =".into())))
        .build();
        let line = serde_json::to_value(Sample::of(&graded)).unwrap();
        assert_eq!(line["batch_id"], batch.to_string());
        assert_eq!(line["prompt"], serde_json::json!({"text": "1 + 1 ="}));
        assert_eq!(line["tokens"], serde_json::json!([5, 0]));
        assert_eq!(line["text"], " 2");
        assert_eq!(line["correct"], true);
        assert_eq!(line["extracted"], "2");
        assert_eq!(line["reference"], serde_json::json!({"text": "2"}));
        assert_eq!(line["config"]["method"], "power");
        assert_eq!(line["status"], "completed");

        let failed = result_for(&spec().build())
            .status(JobStatus::Failed)
            .error("model: unknown model")
            .build();
        let line = serde_json::to_value(Sample::of(&failed)).unwrap();
        let keys: Vec<&String> = line.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 19, "{line}");
        for field in [
            "batch_id",
            "problem_id",
            "label",
            "prompt",
            "text",
            "correct",
            "extracted",
            "reference",
            "grade_error",
        ] {
            assert!(line[field].is_null(), "{field}: {line}");
        }
        assert_eq!(line["tokens"], serde_json::json!([]));
        assert_eq!(line["status"], "failed");
        assert_eq!(line["error"], "model: unknown model");
    }

    #[test]
    fn the_manifest_groups_configurations_models_pins_and_versions() {
        let batch = BatchId::new();
        let on = |model: &str, n_mcmc: u32| {
            result_for(&spec().batch_id(batch).model(model).build())
                .with(|r| r.config = Some(config(n_mcmc)))
        };
        let toy = |model: &str| powerfleet_jobs::Pin::Toy {
            model: model.into(),
        };
        let pin_a = toy("a");
        let results = vec![
            on("m1", 2).pin(pin_a.clone()).build(),
            on("m2", 2).pin(pin_a.clone()).build(),
            on("m1", 8).pin(toy("b")).status(JobStatus::Failed).build(),
            on("m1", 2)
                .pin(pin_a.clone())
                .with(|r| r.version = None)
                .build(),
            on("m1", 8)
                .status(JobStatus::Dead)
                .with(|r| r.config = None)
                .build(),
        ];
        let run = Run {
            selection: Selection::Batch(batch),
            submissions: vec![SubmissionRecord {
                batch_id: batch,
                correlation_id: results[0].correlation_id.clone(),
                label: None,
                models: vec!["m1".into(), "m2".into(), "m3".into()],
                methods: vec![Method::Power],
                scheduled: 6,
                created_at_ms: 1,
                request: None,
            }],
            results,
        };
        let m = serde_json::to_value(Manifest::of(&run, vec!["figures/a.png".into()], 7)).unwrap();
        assert_eq!(m["format"], FORMAT);
        assert_eq!(m["selection"], serde_json::json!({"batch_id": batch}));
        assert_eq!(m["exported_by"]["at_ms"], 7);
        let counts = &m["counts"];
        assert_eq!(
            (
                &counts["scheduled"],
                &counts["stored"],
                &counts["complete"],
                &counts["completed"],
                &counts["failed"],
                &counts["dead"]
            ),
            (
                &serde_json::json!(6),
                &serde_json::json!(5),
                &serde_json::json!(false),
                &serde_json::json!(3),
                &serde_json::json!(1),
                &serde_json::json!(1)
            )
        );
        let configs = m["configs"].as_array().unwrap();
        assert_eq!(configs.len(), 3, "{configs:?}");
        assert_eq!(configs[0]["config"]["n_mcmc"], 2);
        assert_eq!(configs[0]["models"], serde_json::json!(["m1", "m2"]));
        assert_eq!(configs[0]["samples"], 3);
        assert_eq!(configs[1]["config"]["n_mcmc"], 8);
        assert_eq!(configs[1]["methods"], serde_json::json!(["power"]));
        assert!(configs[2]["config"].is_null());
        let models = m["models"].as_array().unwrap();
        assert_eq!(
            models.iter().map(|m| &m["model"]).collect::<Vec<_>>(),
            ["m1", "m2", "m3"]
        );
        assert_eq!(models[0]["samples"], 4);
        assert_eq!(
            models[0]["pins"],
            serde_json::json!([
                {"pin": {"kind": "toy", "model": "a"}, "samples": 2},
                {"pin": {"kind": "toy", "model": "b"}, "samples": 1},
            ])
        );
        assert_eq!(models[2]["samples"], 0, "a model scheduled but not stored");
        assert_eq!(
            m["produced_by"],
            serde_json::json!([
                {"powerfleet": powerfleet_jobs::VERSION, "samples": 4},
                {"powerfleet": null, "samples": 1},
            ])
        );
        assert_eq!(m["files"]["figures"], serde_json::json!(["figures/a.png"]));
    }

    #[tokio::test]
    async fn a_run_with_a_submission_and_no_results_is_not_exported() {
        let tmp = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", tmp.path().join("r.db").display());
        let store = powerfleet_store::Store::connect(&url).await.unwrap();
        let batch = BatchId::new();
        store
            .record_submissions(&[SubmissionRecord {
                batch_id: batch,
                correlation_id: CorrelationId::generate(),
                label: None,
                models: vec!["toy:pivot".into()],
                methods: vec![Method::Power],
                scheduled: 3,
                created_at_ms: 1,
                request: None,
            }])
            .await
            .unwrap();
        let dir = tmp.path().join("run");
        let e = run(ExportArgs {
            id: batch.to_string(),
            dir: dir.clone(),
            force: false,
            prices: Vec::new(),
            database: DatabaseArgs { database_url: url },
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("no results stored yet") && e.contains("3 jobs scheduled"),
            "{e}"
        );
        assert!(!dir.exists(), "nothing is written");
    }
}
