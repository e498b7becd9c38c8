//! The fleet end to end: real redis-server, real worker and collector processes, killed, stopped
//! and restarted on purpose. Every job must finish exactly once with the tokens of a fault-free run.

use crate::common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{
    BIN, Fleet, PATIENCE, batch, fault_free_output, fault_free_tokens, long_config,
    published_results, specs, submit_batch,
};
use powerfleet_fleet::collector::{self, CollectorConfig};
use powerfleet_jobs::{CorrelationId, JobId, JobResult, JobSpec, JobStatus, Prompt};
use powerfleet_queue::ClaimOutcome;
use powerfleet_sampler::{Method, SamplerConfig};

const SIGTERM: i32 = 15;
const SIGSTOP: i32 = 19;
const SIGCONT: i32 = 18;

fn assert_exact(results: &[JobResult], specs: &[JobSpec]) {
    for spec in specs {
        let r = results
            .iter()
            .find(|r| r.job_id == spec.job_id)
            .unwrap_or_else(|| panic!("job {} has no result", spec.job_id));
        assert_eq!(r.status, JobStatus::Completed, "{r:?}");
        assert_eq!(
            r.tokens,
            fault_free_tokens(spec),
            "job {} differs from a fault-free run",
            spec.job_id
        );
    }
}

/// A tiny deterministic generator for kill timings.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Which jobs stream a fault test's jobs go through: the shared one, as jobs of a toy reference
/// itself, or a model name's own, as jobs of a name the workers map to the toy model
/// (`--model NAME=toy:...`).
#[derive(Clone, Copy, Debug)]
enum Route {
    Reference,
    Name(&'static str),
}

impl Route {
    /// The model the jobs on `toy` are submitted for.
    fn model(self, toy: &str) -> String {
        match self {
            Route::Reference => toy.to_string(),
            Route::Name(name) => name.to_string(),
        }
    }

    /// The worker flags that map the name to `toy` (none for a reference).
    fn worker_flags(self, toy: &str) -> Vec<String> {
        match self {
            Route::Reference => Vec::new(),
            Route::Name(name) => vec!["--model".to_string(), format!("{name}={toy}")],
        }
    }

    /// Starts a worker for these jobs with `extra` flags too.
    fn spawn_worker(self, fleet: &mut Fleet, toy: &str, extra: &[&str]) -> usize {
        let flags = self.worker_flags(toy);
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        fleet.spawn_worker(&args)
    }

    /// `specs` as a fault-free run computes them: on `toy` itself.
    fn on_toy(self, toy: &str, specs: &[JobSpec]) -> Vec<JobSpec> {
        specs
            .iter()
            .map(|s| JobSpec {
                model: toy.to_string(),
                ..s.clone()
            })
            .collect()
    }

    /// Checks that the jobs went through the stream of their route: a name's own stream exists
    /// (asked on a new connection: Redis may have restarted since the fleet's others were made).
    async fn check_stream(self, fleet: &Fleet) {
        if let Route::Name(name) = self {
            let backlog = fleet.queue().await.backlog_by_stream().await.unwrap();
            assert!(
                backlog.iter().any(|b| b.model.as_deref() == Some(name)),
                "no jobs stream of {name}: {backlog:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_workers_lose_nothing_and_double_nothing() {
    sigkilled_workers_lose_nothing_and_double_nothing_via(Route::Reference).await;
}

/// As `sigkilled_workers_lose_nothing_and_double_nothing`, with jobs of a model name: they wait
/// and are taken over in the name's own stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_workers_lose_nothing_and_double_nothing_of_a_model_name() {
    sigkilled_workers_lose_nothing_and_double_nothing_via(Route::Name("killed")).await;
}

async fn sigkilled_workers_lose_nothing_and_double_nothing_via(route: Route) {
    const TOY: &str = "toy:eos-lengths?delay_ms=40";
    let mut fleet = Fleet::new(BIN, false);
    for _ in 0..3 {
        route.spawn_worker(&mut fleet, TOY, &[]);
    }
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let submission = batch(&route.model(TOY))
        .config(long_config(4, 8))
        .methods(&[Method::Power, Method::LowTemp])
        .problems(30)
        .seeds(2)
        .build();
    let receipt = submit_batch(&queue, &submission).await;
    let n = receipt.job_ids.len();
    assert_eq!(n, 120);
    let batch_id = receipt.batch_id.unwrap();
    let specs = specs(&queue, &receipt).await;
    let store = fleet.store().await;

    let mut rng = Lcg(42);
    let mut kills_during_batch = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100 + rng.below(200))).await;
        let victim = rng.below(3) as usize;
        fleet.kill_worker(victim);
        if store.jobs_by_batch(batch_id).await.unwrap().len() < n {
            kills_during_batch += 1;
        }
        fleet.restart_worker(victim);
    }
    assert_eq!(
        kills_during_batch, 20,
        "every kill landed while jobs were still running"
    );

    let results = fleet
        .wait_for_results(batch_id, n, Duration::from_secs(180))
        .await;
    assert_eq!(results.len(), n);
    assert_exact(&results, &route.on_toy(TOY, &specs));
    route.check_stream(&fleet).await;
    let published = published_results(&fleet).await;
    for spec in &specs {
        assert_eq!(
            published.get(&spec.job_id.to_string()),
            Some(&1),
            "job {} published once",
            spec.job_id
        );
    }
    let resumed = results.iter().filter(|r| r.attempts >= 2).count();
    assert!(
        resumed > 0,
        "some jobs were taken over from killed workers and resumed"
    );
    let summary = store.batch_summary(batch_id).await.unwrap().unwrap();
    assert_eq!(summary.jobs, n as u64, "the batch counts every job once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_smc_jobs_survive_killed_workers_with_the_tokens_and_weights_of_a_fault_free_run() {
    let mut fleet = two_workers_and_a_collector();
    let config = SamplerConfig {
        block_size: 2,
        max_new_tokens: 16,
        particles: Some(8),
        finish_on_eos: false,
        ..SamplerConfig::new(Method::PowerSmc)
    };
    // A block's 8 particle requests go out at once: 8 blocks of 150 ms each per job, as the
    // particles never stop at EOS.
    let model = format!("{}?delay_ms=150", no_early_eos_model(&fleet));
    let results = jobs_survive_three_kills(&mut fleet, &model, config).await;
    for r in &results {
        let smc = r
            .stats
            .smc
            .as_ref()
            .expect("power-smc results record the particles");
        assert_eq!(smc.particles, 8);
        assert!(smc.weighted.iter().any(|w| w.tokens == r.tokens));
    }
}

/// A fleet of two workers and a collector, for the kill tests.
fn two_workers_and_a_collector() -> Fleet {
    let mut fleet = Fleet::new(BIN, false);
    for _ in 0..2 {
        fleet.spawn_worker(&[]);
    }
    fleet.spawn_collector();
    fleet
}

/// Runs 24 jobs of `config` on `model` with two workers, SIGKILLs the owner of a job in flight
/// that has checkpointed a block three times (each restarted at once), and checks that every
/// job completed once with the tokens and statistics of a fault-free run and that the killed
/// jobs were resumed. The results.
async fn jobs_survive_three_kills(
    fleet: &mut Fleet,
    model: &str,
    config: SamplerConfig,
) -> Vec<JobResult> {
    let method = config.method;
    let queue = fleet.queue().await;
    let submission = batch(model)
        .config(config)
        .methods(&[method])
        .seeds(24)
        .build();
    let receipt = submit_batch(&queue, &submission).await;
    let n = receipt.job_ids.len();
    let batch_id = receipt.batch_id.unwrap();
    let specs = specs(&queue, &receipt).await;
    let mut killed_mid_job = Vec::new();
    while killed_mid_job.len() < 3 {
        match kill_owner_past_block(fleet, &queue, &receipt.job_ids, 2).await {
            Kill::Landed(job) => killed_mid_job.push(job),
            Kill::Missed => {}
            Kill::NothingInFlight => panic!(
                "every job finished before 3 kills landed on jobs in flight (landed: {})",
                killed_mid_job.len()
            ),
        }
    }
    let results = fleet
        .wait_for_results(batch_id, n, Duration::from_secs(180))
        .await;
    assert_eq!(results.len(), n);
    assert_exact(&results, &specs);
    let published = published_results(fleet).await;
    for spec in &specs {
        assert_eq!(
            published.get(&spec.job_id.to_string()),
            Some(&1),
            "job {} published once",
            spec.job_id
        );
        let r = results.iter().find(|r| r.job_id == spec.job_id).unwrap();
        assert_eq!(r.method, method);
        let fault_free = fault_free_output(spec).stats;
        assert_eq!(
            (&r.stats.smc, &r.stats.lookahead),
            (&fault_free.smc, &fault_free.lookahead),
            "job {}: the statistics of a fault-free run",
            spec.job_id
        );
    }
    for job in &killed_mid_job {
        let r = results.iter().find(|r| r.job_id == *job).unwrap();
        assert!(
            r.attempts >= 2,
            "job {job} was resumed after its worker was killed: {r:?}"
        );
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_lookahead_jobs_survive_killed_workers_with_the_tokens_of_a_fault_free_run() {
    let mut fleet = two_workers_and_a_collector();
    // Every token of the vocabulary is a candidate, EOS among them: a chain that did not know
    // the model's terminal token would give EOS rollouts, and differ from the fault-free run.
    let config = SamplerConfig {
        block_size: 2,
        max_new_tokens: 8,
        lookahead_candidates: Some(3),
        lookahead_rollouts: Some(2),
        ..SamplerConfig::new(Method::PowerLookahead)
    };
    // Per token, one candidate request and then its rollouts at once: 4 rounds of 100 ms per
    // block.
    let model = format!("{}?delay_ms=100", no_early_eos_model(&fleet));
    let results = jobs_survive_three_kills(&mut fleet, &model, config).await;
    for r in &results {
        let la = r
            .stats
            .lookahead
            .as_ref()
            .expect("power-lookahead results record their rollouts");
        assert_eq!(la.tokens, r.tokens.len() as u64);
        assert!(la.rollouts > 0, "{la:?}");
        // EOS is exact at every token, and so is every candidate of the last.
        assert!(la.exact_candidates >= la.tokens - 1 + 3, "{la:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_smc_jobs_with_moves_and_annealing_survive_killed_workers() {
    let mut fleet = two_workers_and_a_collector();
    let config = SamplerConfig {
        block_size: 2,
        max_new_tokens: 16,
        particles: Some(8),
        finish_on_eos: false,
        rejuvenation_steps: Some(2),
        alpha_schedule: Some(powerfleet_sampler::AlphaSchedule::Linear),
        anneal_blocks: Some(4),
        ..SamplerConfig::new(Method::PowerSmc)
    };
    let model = format!("{}?delay_ms=100", no_early_eos_model(&fleet));
    let results = jobs_survive_three_kills(&mut fleet, &model, config).await;
    let moves: u64 = results
        .iter()
        .map(|r| r.stats.smc.as_ref().expect("smc statistics").moves)
        .sum();
    assert!(moves > 0, "the particles were moved after resampling");
}

/// A toy model on which completions (almost) never stop at EOS and the next token's
/// distribution depends on the last token, so that power-smc particles grow through every
/// block with unequal weights. Returns its model reference.
fn no_early_eos_model(fleet: &Fleet) -> String {
    let path = fleet.dir.path().join("no-early-eos.json");
    std::fs::write(
        &path,
        r#"{"vocab": ["a", "b", "<eos>"], "eos": 2, "default": [0.5, 0.49, 0.01],
            "contexts": [{"context": [0], "probs": [0.2, 0.79, 0.01]}]}"#,
    )
    .unwrap();
    format!("toy:{}", path.display())
}

/// What [`kill_owner_past_block`] did.
enum Kill {
    /// The job was running under the killed worker: another worker must resume it.
    Landed(JobId),
    /// The job finished before the kill.
    Missed,
    /// Every job had finished.
    NothingInFlight,
}

/// Waits until one of `jobs` runs at block `block` or later (so its checkpoint of an earlier
/// block is stored) on a live worker, SIGKILLs that worker and starts it again. Of several
/// such jobs, the one with the most blocks left. Panics when the jobs stop moving for
/// [`PATIENCE`] (a hung fleet).
async fn kill_owner_past_block(
    fleet: &mut Fleet,
    queue: &powerfleet_queue::Queue,
    jobs: &[JobId],
    block: u32,
) -> Kill {
    let mut last_moved = (Vec::new(), Instant::now());
    loop {
        let states: Vec<_> = queue
            .job_states(jobs)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.expect("the job's state is in Redis"))
            .collect();
        if states.iter().all(|s| s.status.is_final()) {
            return Kill::NothingInFlight;
        }
        let target = states
            .iter()
            .filter(|s| s.status == JobStatus::Running)
            .filter_map(|s| {
                let p = s.progress.as_ref().filter(|p| p.block_idx >= block)?;
                let owner = s.owner.clone()?;
                let worker = fleet.worker_named(&owner)?;
                Some((p.block_idx, s.job_id, owner, worker))
            })
            .min();
        if let Some((_, job, owner, worker)) = target {
            fleet.kill_worker(worker);
            let after = queue.job_state(job).await.unwrap().unwrap();
            fleet.restart_worker(worker);
            return if after.status == JobStatus::Running && after.owner == Some(owner) {
                Kill::Landed(job)
            } else {
                Kill::Missed
            };
        }
        let moved: Vec<_> = states.into_iter().map(|s| (s.status, s.progress)).collect();
        if moved != last_moved.0 {
            last_moved = (moved, Instant::now());
        }
        assert!(
            last_moved.1.elapsed() < PATIENCE,
            "no job moved for {PATIENCE:?}\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every one of `jobs` is running.
async fn wait_all_running(
    fleet: &Fleet,
    queue: &powerfleet_queue::Queue,
    jobs: &[JobId],
    what: &str,
) {
    fleet
        .wait_until(what, PATIENCE, || async {
            let mut running = 0;
            for id in jobs {
                if queue.job_state(*id).await.unwrap().unwrap().status == JobStatus::Running {
                    running += 1;
                }
            }
            running == jobs.len()
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_cannot_overwrite_the_new_owner() {
    let mut fleet = Fleet::new(BIN, false);
    let a = fleet.spawn_worker(&["--concurrency", "1"]);
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let receipt = submit_batch(
        &queue,
        &batch("toy:eos-lengths?delay_ms=50")
            .config(long_config(5, 12))
            .build(),
    )
    .await;
    let job = receipt.job_ids[0];
    let spec = specs(&queue, &receipt).await.remove(0);

    fleet
        .wait_until("worker A has checkpointed a block", PATIENCE, || async {
            let s = queue.job_state(job).await.unwrap().unwrap();
            s.progress.is_some_and(|p| p.block_idx >= 1)
        })
        .await;
    let owner_a = queue.job_state(job).await.unwrap().unwrap().owner.unwrap();
    fleet.signal_worker(a, SIGSTOP);
    fleet.spawn_worker(&["--concurrency", "1"]);
    fleet
        .wait_until("worker B took the job over", PATIENCE, || async {
            let s = queue.job_state(job).await.unwrap().unwrap();
            s.owner.is_some_and(|o| o != owner_a)
        })
        .await;
    // A wakes up mid-block while B owns the job.
    fleet.signal_worker(a, SIGCONT);

    let results = fleet
        .wait_for_results(receipt.batch_id.unwrap(), 1, PATIENCE)
        .await;
    assert_exact(&results, std::slice::from_ref(&spec));
    assert_eq!(results[0].attempts, 2);
    // Give A time to try its stale writes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        published_results(&fleet).await.get(&job.to_string()),
        Some(&1)
    );
    let logs = fleet.logs();
    assert!(
        logs.contains("lease lost"),
        "worker A noticed it lost the lease:\n{logs}"
    );
    let stored = fleet.store().await.job(job).await.unwrap().unwrap();
    assert_eq!(stored.tokens, fault_free_tokens(&spec));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_batch_loses_no_job() {
    a_redis_restart_mid_batch_loses_no_job_via(Route::Reference).await;
}

/// As `a_redis_restart_mid_batch_loses_no_job`, with jobs of a model name, in its own stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_batch_loses_no_job_of_a_model_name() {
    a_redis_restart_mid_batch_loses_no_job_via(Route::Name("restarted")).await;
}

async fn a_redis_restart_mid_batch_loses_no_job_via(route: Route) {
    const TOY: &str = "toy:eos-lengths?delay_ms=30";
    let mut fleet = Fleet::new(BIN, true);
    route.spawn_worker(&mut fleet, TOY, &[]);
    route.spawn_worker(&mut fleet, TOY, &[]);
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let receipt = submit_batch(
        &queue,
        &batch(&route.model(TOY))
            .config(long_config(3, 6))
            .problems(20)
            .seeds(2)
            .build(),
    )
    .await;
    let n = receipt.job_ids.len();
    let batch_id = receipt.batch_id.unwrap();
    let specs = specs(&queue, &receipt).await;
    let store = fleet.store().await;
    fleet
        .wait_until("some results are stored", PATIENCE, || async {
            store.jobs_by_batch(batch_id).await.unwrap().len() >= 5
        })
        .await;
    let before = store.jobs_by_batch(batch_id).await.unwrap().len();
    assert!(before < n, "the restart happens mid-batch");
    fleet.redis.restart().unwrap();

    let results = fleet
        .wait_for_results(batch_id, n, Duration::from_secs(180))
        .await;
    assert_exact(&results, &route.on_toy(TOY, &specs));
    route.check_stream(&fleet).await;
    let published = published_results(&fleet).await;
    for spec in &specs {
        assert_eq!(published.get(&spec.job_id.to_string()), Some(&1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_loses_its_data_the_roles_recreate_their_groups_and_jobs_complete() {
    after_redis_loses_its_data_jobs_complete_via(Route::Reference).await;
}

/// As `after_redis_loses_its_data_the_roles_recreate_their_groups_and_jobs_complete`, with jobs
/// of a model name: the name's stream and its group come back too (with the first job, or from
/// the worker's read), and the worker reads it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_loses_its_data_jobs_of_a_model_name_complete() {
    after_redis_loses_its_data_jobs_complete_via(Route::Name("flushed")).await;
}

async fn after_redis_loses_its_data_jobs_complete_via(route: Route) {
    const TOY: &str = "toy:tiny";
    let mut fleet = Fleet::new(BIN, false);
    route.spawn_worker(&mut fleet, TOY, &[]);
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let before = submit_batch(&queue, &batch(&route.model(TOY)).problems(2).build()).await;
    fleet
        .wait_for_results(before.batch_id.unwrap(), 2, Duration::from_secs(120))
        .await;
    // Every stream and group goes, with the roles running (blocked in their reads).
    let client = redis::Client::open(fleet.redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    // A batch submitted afterwards completes, each job once with the tokens of a fault-free
    // run, and is stored.
    let receipt = submit_batch(
        &queue,
        &batch(&route.model(TOY)).problems(3).seeds(2).build(),
    )
    .await;
    let specs = specs(&queue, &receipt).await;
    let results = fleet
        .wait_for_results(receipt.batch_id.unwrap(), 6, PATIENCE)
        .await;
    assert_eq!(results.len(), 6);
    assert_exact(&results, &route.on_toy(TOY, &specs));
    route.check_stream(&fleet).await;
    let published = published_results(&fleet).await;
    for spec in &specs {
        assert_eq!(published.get(&spec.job_id.to_string()), Some(&1));
    }
    // The collector recreated its group (the jobs stream's comes back with the first job
    // submitted, or from the worker's read if that comes first).
    let logs = fleet.logs();
    assert!(
        logs.lines().any(|l| l.contains("WARN")
            && l.contains("consumer group collectors of stream pf:{test}:results was missing")),
        "no warning names the results stream:\n{logs}"
    );
    assert!(
        !logs.lines().any(|l| l.contains("NOGROUP")),
        "a role still fails on the lost groups:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_jobs_back_without_waiting_for_the_lease() {
    let mut fleet = Fleet::new(BIN, false);
    // A lease far longer than the test may take: a job taken over at all was handed back, not
    // reclaimed after its lease expired. The grace period is as long, so that however slowly a
    // loaded machine checkpoints the chains, the worker hands them back rather than give up.
    let lease = ["--lease", "3600s", "--heartbeat", "1s", "--grace", "3600s"];
    let a = fleet.spawn_worker(&lease);
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let receipt = submit_batch(
        &queue,
        &batch("toy:eos-lengths?delay_ms=50")
            .config(long_config(4, 12))
            .problems(4)
            .build(),
    )
    .await;
    let specs = specs(&queue, &receipt).await;
    wait_all_running(
        &fleet,
        &queue,
        &receipt.job_ids,
        "worker A runs all four jobs",
    )
    .await;
    fleet.signal_worker(a, SIGTERM);
    let status = exit_status(&mut fleet, a).await;
    assert!(status.success(), "worker A exits cleanly: {status:?}");
    assert!(
        !fleet.logs().contains("grace period over"),
        "within the grace period:\n{}",
        fleet.logs()
    );
    for id in &receipt.job_ids {
        let s = queue.job_state(*id).await.unwrap().unwrap();
        assert_eq!(s.status, JobStatus::Queued, "handed back: {s:?}");
    }
    fleet.spawn_worker(&lease);
    // Stored within PATIENCE, far less than the lease: taken over before it could have expired.
    let results = fleet
        .wait_for_results(receipt.batch_id.unwrap(), 4, PATIENCE)
        .await;
    assert_exact(&results, &specs);
    for r in &results {
        assert_eq!(r.attempts, 1, "a hand-back is not a failed delivery");
    }
    assert!(fleet.logs().contains("handed back"));
}

/// The exit status of worker `i`, which was told to stop; panics if it has not exited after
/// [`PATIENCE`] (a worker that hangs on its way out).
async fn exit_status(fleet: &mut Fleet, i: usize) -> std::process::ExitStatus {
    let mut child = fleet.workers[i].take().unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the worker did not exit in {PATIENCE:?}\n{}", fleet.logs());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn raw_spec(model: &str, config: SamplerConfig, prompt: Prompt) -> JobSpec {
    common::spec()
        .model(model)
        .prompt(prompt)
        .config(config)
        .seed(1)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_dead_lettered_or_failed_and_no_process_exits() {
    let mut fleet = Fleet::new(BIN, false);
    let w = fleet.spawn_worker(&[]);
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let store = fleet.store().await;

    queue
        .push_raw_job_entry(&[("job_id", "nope"), ("spec", "{")])
        .await
        .unwrap();
    queue.push_raw_job_entry(&[("garbage", "1")]).await.unwrap();
    let huge = "x".repeat(2 << 20);
    queue
        .push_raw_job_entry(&[("job_id", "big"), ("spec", &huge)])
        .await
        .unwrap();
    queue
        .push_raw_result_entry(&[("job_id", "r"), ("result", "not json")])
        .await
        .unwrap();

    // Jobs that bypass the producer's checks fail at the worker with the reason.
    let bad_config = raw_spec(
        "toy:tiny",
        SamplerConfig {
            n_mcmc: 0,
            ..SamplerConfig::new(Method::Power)
        },
        Prompt::Tokens(vec![]),
    );
    let bad_model = raw_spec(
        "toy:missing",
        SamplerConfig::new(Method::Power),
        Prompt::Tokens(vec![]),
    );
    let bad_prompt = raw_spec(
        "toy:tiny",
        SamplerConfig::new(Method::Power),
        Prompt::Tokens(vec![99]),
    );
    for s in [&bad_config, &bad_model, &bad_prompt] {
        queue.enqueue(std::slice::from_ref(s), None).await.unwrap();
    }
    let good = submit_batch(
        &queue,
        &batch("toy:tiny")
            .config(SamplerConfig {
                max_new_tokens: 6,
                block_size: 3,
                ..SamplerConfig::new(Method::Power)
            })
            .problems(3)
            .build(),
    )
    .await;
    let results = fleet
        .wait_for_results(good.batch_id.unwrap(), 3, PATIENCE)
        .await;
    assert!(results.iter().all(|r| r.status == JobStatus::Completed));

    for (spec, needle) in [
        (&bad_config, "n_mcmc must be >= 1, got 0"),
        (&bad_model, "neither a built-in model"),
        (&bad_prompt, "token id 99 is not in the vocabulary"),
    ] {
        let mut stored = None;
        for _ in 0..100 {
            stored = store.job(spec.job_id).await.unwrap();
            if stored.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let r =
            stored.unwrap_or_else(|| panic!("no result for the {needle} job\n{}", fleet.logs()));
        assert_eq!(r.status, JobStatus::Failed);
        assert!(
            r.error.as_deref().unwrap_or("").contains(needle),
            "{:?}",
            r.error
        );
    }
    // The four bad entries are dead-lettered in whatever order the worker and collector reach
    // them; wait for all of them.
    let mut dead = queue.dead_letters(10).await.unwrap();
    for _ in 0..100 {
        if dead.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        dead = queue.dead_letters(10).await.unwrap();
    }
    let reasons: Vec<&str> = dead.iter().map(|(_, f)| f["reason"].as_str()).collect();
    assert_eq!(dead.len(), 4, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("spec is not a valid job"))
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("lacks the job_id and spec"))
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("exceeds the limit of 1048576 bytes"))
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("result is not a valid job result"))
    );
    assert!(
        fleet.workers[w]
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none(),
        "the worker still runs"
    );
    assert!(
        fleet
            .collector
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none(),
        "the collector still runs"
    );

    // Bad CLI input is refused before anything is enqueued.
    let (backlog_before, _) = queue.job_backlog().await.unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .args([
                "--redis",
                &fleet.redis.url(),
                "--namespace",
                &fleet.namespace,
            ])
            .output()
            .unwrap()
    };
    let out = cli(&["submit", "--model", "toy:tiny", "--n-mcmc", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("n_mcmc must be >= 1, got 0"));
    let file = fleet.dir.path().join("batch.jsonl");
    std::fs::write(
        &file,
        "{\"prompt\": \"a\"}\n{\"promt\": \"a\"}\n{\"prompt\": \"a zz\"}\n",
    )
    .unwrap();
    let out = cli(&[
        "submit",
        "--model",
        "toy:tiny",
        "--batch-file",
        file.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("line 2: unknown field `promt`"), "{stderr}");
    std::fs::write(
        &file,
        "{\"prompt\": \"a\"}\n{\"prompt\": \"a zz\", \"id\": \"q2\"}\n",
    )
    .unwrap();
    let out = cli(&[
        "submit",
        "--model",
        "toy:tiny",
        "--batch-file",
        file.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("problem q2: unknown token \"zz\""),
        "{stderr}"
    );
    assert_eq!(
        queue.job_backlog().await.unwrap().0,
        backlog_before,
        "nothing was enqueued"
    );
    let out = cli(&[
        "status",
        &JobId::new().to_string(),
        "--database-url",
        &fleet.db_url,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job, batch or correlation id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_delivered_too_often_goes_to_the_dead_letter_stream() {
    let mut fleet = Fleet::new(BIN, false);
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let receipt = submit_batch(&queue, &batch("toy:tiny").build()).await;
    let job = receipt.job_ids[0];
    // Two workers claim it and die without a trace.
    let d = queue
        .read_jobs("crashed-1", 1, 1000)
        .await
        .unwrap()
        .remove(0);
    assert!(matches!(
        queue.claim(job, &d, "crashed-1").await.unwrap(),
        ClaimOutcome::Claimed { .. }
    ));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let d = queue
        .reclaim_jobs("crashed-2", 1000, 1)
        .await
        .unwrap()
        .remove(0);
    assert!(matches!(
        queue.claim(job, &d, "crashed-2").await.unwrap(),
        ClaimOutcome::Claimed { .. }
    ));
    fleet.spawn_worker(&["--max-deliveries", "2"]);
    let results = fleet
        .wait_for_results(receipt.batch_id.unwrap(), 1, PATIENCE)
        .await;
    assert_eq!(results[0].status, JobStatus::Dead);
    assert_eq!(results[0].attempts, 3);
    let dead = queue.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].1["reason"].contains("delivered 3 times, more than the limit of 2"),
        "{dead:?}"
    );
    let status = powerfleet_fleet::status::status(
        &queue,
        Some(&fleet.store().await),
        &job.to_string(),
        powerfleet_fleet::status::Page::ALL.into(),
    )
    .await
    .unwrap();
    assert_eq!(status.jobs()[0].status, JobStatus::Dead);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_delivered_twice_is_stored_once() {
    let fleet = Fleet::new(BIN, false);
    let queue = fleet.queue().await;
    let store = fleet.store().await;
    let corr = CorrelationId::generate();
    let batch_id = powerfleet_jobs::BatchId::new();
    let result = common::result()
        .correlation_id(corr)
        .batch_id(batch_id)
        .seed(1)
        .finished_at_eos("a <eos>", -1.2)
        .build();
    let json = serde_json::to_string(&result).unwrap();
    let mut last_entry = String::new();
    for _ in 0..2 {
        last_entry = queue
            .push_raw_result_entry(&[("job_id", &result.job_id.to_string()), ("result", &json)])
            .await
            .unwrap();
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(collector::run(
        CollectorConfig::new("c1".into()),
        queue.clone(),
        store.clone(),
        async {
            let _ = rx.await;
        },
    ));
    // The collector stops once it has read both entries and acknowledged them (after storing
    // the first and finding the second stored already), however long that takes.
    let client = redis::Client::open(fleet.redis.url()).unwrap();
    let c = client.get_multiplexed_async_connection().await.unwrap();
    let results_stream = powerfleet_queue::Keys::new(&fleet.namespace).results();
    common::wait_until("the collector acknowledged both entries", PATIENCE, || {
        let (mut c, results_stream, last_entry) = (c.clone(), &results_stream, &last_entry);
        async move {
            let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(results_stream)
                .query_async(&mut c)
                .await
                .unwrap();
            groups.iter().any(|g| {
                let field = |k: &str| {
                    g.get(k)
                        .map(|v| redis::from_redis_value::<String>(v.clone()).unwrap())
                };
                field("last-delivered-id").as_ref() == Some(last_entry)
                    && field("pending").as_deref() == Some("0")
            })
        }
    })
    .await;
    tx.send(()).unwrap();
    let report = task.await.unwrap();
    assert_eq!(report.stored.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(
        report.duplicates.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(store.jobs_by_batch(batch_id).await.unwrap().len(), 1);
    let summary = store.batch_summary(batch_id).await.unwrap().unwrap();
    assert_eq!(
        (summary.jobs, summary.proposals, summary.acceptances),
        (1, 10, 4)
    );
}

/// A completed result of a math problem whose answer is 4.
fn graded_result(batch_id: powerfleet_jobs::BatchId, text: &str) -> JobResult {
    graded_with(batch_id, powerfleet_jobs::Grader::Math, text, "4")
}

/// A completed result with `text`, graded by `grader` against `reference`.
fn graded_with(
    batch_id: powerfleet_jobs::BatchId,
    grader: powerfleet_jobs::Grader,
    text: &str,
    reference: &str,
) -> JobResult {
    common::result()
        .correlation_id(CorrelationId::generate())
        .batch_id(batch_id)
        .text(text)
        .grading(powerfleet_jobs::Grading {
            template: "plain".into(),
            grader,
            reference: powerfleet_jobs::ReferenceAnswer::Text(reference.into()),
            price_per_mtok: None,
            reasoning_markers: None,
        })
        .build()
}

async fn push_result(queue: &powerfleet_queue::Queue, r: &JobResult) {
    let json = serde_json::to_string(r).unwrap();
    queue
        .push_raw_result_entry(&[("job_id", &r.job_id.to_string()), ("result", &json)])
        .await
        .unwrap();
}

/// Polls the store until `job` is stored (giving up only on a hung collector, after
/// [`PATIENCE`]).
async fn stored(store: &powerfleet_store::Store, job: JobId) -> JobResult {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(r) = store.job(job).await.unwrap() {
            return r;
        }
        assert!(Instant::now() < deadline, "job {job} was never stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Makes `config`'s collector hold the grading of each of `jobs` until released: the receiver
/// gets a job's id when its grading starts, and each `()` sent releases one held grading.
fn hold_grading(
    config: &mut CollectorConfig,
    jobs: Vec<JobId>,
) -> (
    std::sync::mpsc::Receiver<JobId>,
    std::sync::mpsc::Sender<()>,
) {
    use std::sync::{Arc, Mutex, mpsc};
    let (entered_tx, entered) = mpsc::channel::<JobId>();
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let entered_tx = Mutex::new(entered_tx);
    config.grading_hook = Some(collector::GradingHook(Arc::new(move |r: &JobResult| {
        if jobs.contains(&r.job_id) {
            entered_tx.lock().unwrap().send(r.job_id).unwrap();
            released.lock().unwrap().recv().unwrap();
        }
    })));
    (entered, release)
}

/// A collector with `config` run in this process until the returned sender is used.
fn run_collector(
    config: CollectorConfig,
    queue: &powerfleet_queue::Queue,
    store: &powerfleet_store::Store,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::sync::Arc<collector::CollectorReport>>,
) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(collector::run(
        config,
        queue.clone(),
        store.clone(),
        async {
            let _ = stop_rx.await;
        },
    ));
    (stop_tx, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grading_that_does_not_finish_holds_back_no_other_result() {
    let fleet = Fleet::new(BIN, false);
    let queue = fleet.queue().await;
    let store = fleet.store().await;
    let batch_id = powerfleet_jobs::BatchId::new();
    let slow = graded_result(batch_id, "so \\boxed{4}");
    let over = graded_result(batch_id, "so \\boxed{4}");
    let (slow_id, over_id) = (slow.job_id, over.job_id);
    // The grading of `slow` and of `over` wait until released (one release each); the test knows
    // when they started.
    let mut config = CollectorConfig::new("c1".into());
    let (entered, release) = hold_grading(&mut config, vec![slow_id, over_id]);
    let (stop_tx, task) = run_collector(config, &queue, &store);
    push_result(&queue, &slow).await;
    let first = tokio::task::spawn_blocking(move || {
        let first = entered.recv().unwrap();
        (first, entered)
    });
    let (first, entered) = first.await.unwrap();
    assert_eq!(first, slow_id);
    // While it is being graded, a result without grading and a graded one are stored.
    let plain = common::result().batch_id(batch_id).build();
    let quick = graded_result(batch_id, "the final answer is 5");
    push_result(&queue, &plain).await;
    push_result(&queue, &quick).await;
    stored(&store, plain.job_id).await;
    let quick_stored = stored(&store, quick.job_id).await;
    assert_eq!(quick_stored.grade.as_ref().map(|g| g.correct), Some(false));
    assert!(
        store.job(slow_id).await.unwrap().is_none(),
        "the held grading's result waits for its grade"
    );
    release.send(()).unwrap();
    let slow_stored = stored(&store, slow_id).await;
    let grade = slow_stored.grade.expect("graded once released");
    assert!(
        grade.correct && slow_stored.grade_error.is_none(),
        "{grade:?}"
    );
    tokio::task::spawn_blocking(move || drop(entered))
        .await
        .unwrap();
    stop_tx.send(()).unwrap();
    task.await.unwrap();

    // Past the budget, a grading is given up: the result is stored without a grade, with the
    // reason, and the results behind it are not held back.
    let mut config = CollectorConfig::new("c2".into());
    config.answer_grading_budget = Duration::from_millis(50);
    let (entered, release) = hold_grading(&mut config, vec![over_id]);
    let (stop_tx, task) = run_collector(config, &queue, &store);
    push_result(&queue, &over).await;
    let behind = graded_result(batch_id, "\\boxed{4}");
    push_result(&queue, &behind).await;
    let over_stored = stored(&store, over_id).await;
    assert!(over_stored.grade.is_none(), "{over_stored:?}");
    let reason = over_stored.grade_error.unwrap();
    assert!(
        reason.contains("grading took longer than its budget of 50 ms")
            && reason.contains("--answer-grading-budget"),
        "{reason}"
    );
    assert_eq!(entered.recv().unwrap(), over_id);
    assert!(stored(&store, behind.job_id).await.grade.unwrap().correct);
    // The held thread ends once released.
    release.send(()).unwrap();
    stop_tx.send(()).unwrap();
    task.await.unwrap();
}

/// The largest reference the API accepts (a dataset record): 256 KiB.
const MAX_REFERENCE: usize = 256 << 10;

/// `piece` repeated to about `bytes`.
fn repeated(piece: &str, bytes: usize) -> String {
    piece.repeat(bytes / piece.len())
}

/// Results whose completion or reference is adversarial, near the sizes the fleet accepts, go
/// through a collector and its real graders beside an unrelated result: each is stored exactly
/// once, with the grade the grader owes it or a grading error that says why, and none holds
/// back the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversarial_answers_are_stored_once_each_graded_or_with_the_reason() {
    use powerfleet_jobs::Grader;
    let fleet = Fleet::new(BIN, false);
    let queue = fleet.queue().await;
    let store = fleet.store().await;
    let batch_id = powerfleet_jobs::BatchId::new();
    let math = |text: &str, reference: &str| graded_with(batch_id, Grader::Math, text, reference);
    let regex = |pattern: String, text: &str, reference: &str| {
        graded_with(batch_id, Grader::Regex { pattern }, text, reference)
    };
    let nested = format!("{}5{}", "{".repeat(100_000), "}".repeat(100_000));
    // A pattern near the regex size limit, and one past it.
    let big_pattern = format!("({})", vec!["[a-z]{3}x"; 2000].join("|"));
    let too_big_pattern = r"(\w{1000}){1000}".to_string();
    // (result, the grade it is owed: Some((extracted, correct)), or None for an error whose
    // reason contains the given text)
    type Owed = Result<(Option<String>, bool), &'static str>;
    let cases: Vec<(JobResult, Owed)> = vec![
        // 32,700 unclosed boxes as the reference: compared as written.
        (
            math("\\boxed{1}", &"\\boxed{".repeat(32_700)),
            Ok((Some("1".into()), false)),
        ),
        // Megabytes of unclosed boxes before a closed one: that box is the answer.
        (
            math(
                &format!("{}\\boxed{{7}}", repeated("\\boxed{", 6 << 20)),
                "7",
            ),
            Ok((Some("7".into()), true)),
        ),
        // A hundred thousand nested braces around the answer, in both.
        (
            math(&format!("\\boxed{{{nested}}}"), &nested),
            Ok((Some(nested.clone()), true)),
        ),
        // Megabytes of opening braces and no answer at all.
        (math(&"{".repeat(4 << 20), "4"), Ok((None, false))),
        // Near-limit references of unclosed commands.
        (
            math("\\boxed{1}", &repeated("\\frac{a}{", MAX_REFERENCE)),
            Ok((Some("1".into()), false)),
        ),
        (
            math("\\boxed{1}", &repeated("\\sqrt[}", MAX_REFERENCE)),
            Ok((Some("1".into()), false)),
        ),
        // A near-limit pattern over a quarter of a megabyte of matches: the last one is the answer.
        (
            regex(
                big_pattern,
                &format!("{}zzzx", repeated("abcx ", 256 << 10)),
                "zzzx",
            ),
            Ok((Some("zzzx".into()), true)),
        ),
        // A pattern past the size limit cannot be compiled: stored with that reason.
        (
            regex(too_big_pattern, "answer: 4", "4"),
            Err("not a valid regex"),
        ),
    ];
    let unrelated = common::result().batch_id(batch_id).build();
    let mut config = CollectorConfig::new("c1".into());
    // Only a hung grader reaches it: every verdict here is the grader's own.
    config.answer_grading_budget = PATIENCE;
    let (stop_tx, task) = run_collector(config, &queue, &store);
    for (r, _) in &cases {
        push_result(&queue, r).await;
    }
    push_result(&queue, &unrelated).await;
    let plain = stored(&store, unrelated.job_id).await;
    assert!(
        plain.grade.is_none() && plain.grade_error.is_none(),
        "{plain:?}"
    );
    for (i, (r, owed)) in cases.iter().enumerate() {
        let got = stored(&store, r.job_id).await;
        assert_eq!(got.text, r.text, "case {i}: stored as sent");
        match owed {
            Ok((extracted, correct)) => {
                let grade = got
                    .grade
                    .unwrap_or_else(|| panic!("case {i}: not graded: {:?}", got.grade_error));
                assert!(got.grade_error.is_none(), "case {i}: {:?}", got.grade_error);
                assert_eq!(grade.correct, *correct, "case {i}");
                assert!(
                    grade.extracted.as_deref() == extracted.as_deref(),
                    "case {i}: extracted {:.80?}, owed {:.80?}",
                    grade.extracted,
                    extracted
                );
            }
            Err(reason) => {
                assert!(got.grade.is_none(), "case {i}: {:?}", got.grade);
                let error = got.grade_error.unwrap_or_default();
                assert!(error.contains(reason), "case {i}: {error}");
            }
        }
    }
    stop_tx.send(()).unwrap();
    let report = task.await.unwrap();
    let n = cases.len() as u64 + 1;
    assert_eq!(report.stored.load(std::sync::atomic::Ordering::Relaxed), n);
    assert_eq!(
        report.duplicates.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(store.jobs_by_batch(batch_id).await.unwrap().len() as u64, n);
}

/// Makes `config`'s collector hold every grading that reads the answer until released, as
/// [`hold_grading`] does, and counts how many are held at once: the most at any time is in the
/// returned counter.
fn count_held_gradings(
    config: &mut CollectorConfig,
) -> (
    std::sync::mpsc::Receiver<JobId>,
    std::sync::mpsc::Sender<()>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, mpsc};
    let (entered_tx, entered) = mpsc::channel::<JobId>();
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let entered_tx = Mutex::new(entered_tx);
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let most_seen = Arc::clone(&most);
    config.grading_hook = Some(collector::GradingHook(Arc::new(move |r: &JobResult| {
        let held = now.fetch_add(1, Ordering::SeqCst) + 1;
        most_seen.fetch_max(held, Ordering::SeqCst);
        entered_tx.lock().unwrap().send(r.job_id).unwrap();
        released.lock().unwrap().recv().unwrap();
        now.fetch_sub(1, Ordering::SeqCst);
    })));
    (entered, release, most)
}

/// Many slow gradings that read the answer run at most `answer_graders` at a time; the others
/// wait their turn and are all stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_gradings_run_at_most_answer_graders_at_once() {
    use std::sync::atomic::Ordering;
    let fleet = Fleet::new(BIN, false);
    let queue = fleet.queue().await;
    let store = fleet.store().await;
    let batch_id = powerfleet_jobs::BatchId::new();
    let cap = 3;
    let results: Vec<JobResult> = (0..12)
        .map(|_| graded_result(batch_id, "\\boxed{4}"))
        .collect();
    // All waiting before the collector starts, so one read brings them all.
    for r in &results {
        push_result(&queue, r).await;
    }
    let mut config = CollectorConfig::new("c1".into());
    config.answer_graders = cap;
    config.answer_grading_budget = PATIENCE;
    let (entered, release, most) = count_held_gradings(&mut config);
    let (stop_tx, task) = run_collector(config, &queue, &store);
    let n = results.len();
    let order = tokio::task::spawn_blocking(move || {
        // The first `cap` are held together; then each release lets one more in.
        let mut order: Vec<JobId> = (0..cap).map(|_| entered.recv().unwrap()).collect();
        while order.len() < n {
            release.send(()).unwrap();
            order.push(entered.recv().unwrap());
        }
        for _ in 0..cap {
            release.send(()).unwrap();
        }
        order
    })
    .await
    .unwrap();
    assert_eq!(
        order.iter().collect::<HashSet<_>>(),
        results.iter().map(|r| &r.job_id).collect::<HashSet<_>>()
    );
    for r in &results {
        assert!(stored(&store, r.job_id).await.grade.unwrap().correct);
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        cap,
        "gradings held at once (the cap is {cap})"
    );
    stop_tx.send(()).unwrap();
    let report = task.await.unwrap();
    assert_eq!(report.stored.load(Ordering::Relaxed), n as u64);
}

/// A grading given up at its budget keeps its thread, and its place among `answer_graders`,
/// until its grader ends: the result behind it waits for a free place, then is graded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grading_given_up_keeps_its_place_until_its_thread_ends() {
    use std::sync::atomic::Ordering;
    let fleet = Fleet::new(BIN, false);
    let queue = fleet.queue().await;
    let store = fleet.store().await;
    let batch_id = powerfleet_jobs::BatchId::new();
    let results: Vec<JobResult> = (0..3)
        .map(|_| graded_result(batch_id, "\\boxed{4}"))
        .collect();
    for r in &results {
        push_result(&queue, r).await;
    }
    let mut config = CollectorConfig::new("c1".into());
    config.answer_graders = 2;
    config.answer_grading_budget = Duration::from_millis(50);
    let (entered, release, most) = count_held_gradings(&mut config);
    let (stop_tx, task) = run_collector(config, &queue, &store);
    let (first, entered) = tokio::task::spawn_blocking(move || {
        let first = [entered.recv().unwrap(), entered.recv().unwrap()];
        (first, entered)
    })
    .await
    .unwrap();
    for id in first {
        let given_up = stored(&store, id).await;
        assert!(given_up.grade.is_none(), "{given_up:?}");
        assert!(
            given_up
                .grade_error
                .as_deref()
                .is_some_and(|e| e.contains("--answer-grading-budget")),
            "{given_up:?}"
        );
    }
    let behind = results
        .iter()
        .map(|r| r.job_id)
        .find(|id| !first.contains(id))
        .unwrap();
    // Both places are still taken by the given-up gradings' threads.
    assert!(store.job(behind).await.unwrap().is_none());
    let (entered, last) = tokio::task::spawn_blocking(move || {
        assert!(entered.try_recv().is_err(), "no third grading started");
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        let last = entered.recv().unwrap();
        (entered, last)
    })
    .await
    .unwrap();
    assert_eq!(last, behind);
    stored(&store, behind).await;
    assert_eq!(most.load(Ordering::SeqCst), 2);
    tokio::task::spawn_blocking(move || drop(entered))
        .await
        .unwrap();
    stop_tx.send(()).unwrap();
    let report = task.await.unwrap();
    assert_eq!(report.stored.load(Ordering::Relaxed), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_running_jobs_between_steps_and_queued_jobs_at_once() {
    let mut fleet = Fleet::new(BIN, false);
    fleet.spawn_worker(&["--concurrency", "1"]);
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let receipt = submit_batch(
        &queue,
        &batch("toy:eos-lengths?delay_ms=50")
            .config(long_config(10, 40))
            .problems(2)
            .build(),
    )
    .await;
    let (first, second) = (receipt.job_ids[0], receipt.job_ids[1]);
    let is_running = |id: JobId| {
        let queue = queue.clone();
        async move { queue.job_state(id).await.unwrap().unwrap().status == JobStatus::Running }
    };
    fleet
        .wait_until("a job is running", PATIENCE, || async {
            is_running(first).await || is_running(second).await
        })
        .await;
    let running = if is_running(first).await {
        first
    } else {
        second
    };
    let queued = if running == first { second } else { first };
    let cli = |id: JobId| {
        std::process::Command::new(BIN)
            .args([
                "cancel",
                &id.to_string(),
                "--redis",
                &fleet.redis.url(),
                "--namespace",
                &fleet.namespace,
            ])
            .output()
            .unwrap()
    };
    let out = cli(queued);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("cancelled"));
    let out = cli(running);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cancellation requested"),
        "{out:?}"
    );
    let results = fleet
        .wait_for_results(receipt.batch_id.unwrap(), 2, PATIENCE)
        .await;
    let statuses: HashSet<JobStatus> = results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, HashSet::from([JobStatus::Cancelled]));
    let r = results.iter().find(|r| r.job_id == running).unwrap();
    assert!(
        r.stats.proposals > 0 && r.stats.proposals < 10 * 20,
        "stopped part-way: {:?}",
        r.stats
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_model_errors_are_retried_and_an_outage_past_the_patience_fails_the_job() {
    let mut fleet = Fleet::new(BIN, false);
    fleet.spawn_worker(&[["--model-attempts", "4"].as_slice(), &common::IMPATIENT].concat());
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let config = common::short_power_config();
    // Every request fails with probability 0.3: retries get every job through, with exact tokens.
    let flaky = submit_batch(
        &queue,
        &batch("toy:eos-lengths?fail_rate=0.3")
            .config(config.clone())
            .problems(10)
            .build(),
    )
    .await;
    let flaky_specs = specs(&queue, &flaky).await;
    // Every request fails: the model is unavailable; the job waits for it, keeping its place,
    // and fails once it has waited longer than the patience, with the model's error.
    let broken = submit_batch(
        &queue,
        &batch("toy:eos-lengths?fail_rate=1").config(config).build(),
    )
    .await;
    let results = fleet
        .wait_for_results(flaky.batch_id.unwrap(), 10, PATIENCE)
        .await;
    assert_exact(&results, &flaky_specs);
    let failed = fleet
        .wait_for_results(broken.batch_id.unwrap(), 1, PATIENCE)
        .await;
    assert_eq!(failed[0].status, JobStatus::Failed);
    let error = failed[0].error.as_deref().unwrap_or("");
    assert!(
        error.contains("longer than the worker's --model-patience of 3 s")
            && error.contains("simulated transient failure"),
        "{error}"
    );
    assert_eq!(
        failed[0].attempts, 1,
        "waiting for the model is not a delivery: {failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_status_and_results_export_through_the_cli() {
    let mut fleet = Fleet::new(BIN, false);
    fleet.spawn_worker(&[]);
    fleet.spawn_collector();
    let cli = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .args([
                "--redis",
                &fleet.redis.url(),
                "--namespace",
                &fleet.namespace,
            ])
            .args(["--database-url", &fleet.db_url])
            .output()
            .unwrap()
    };
    let out = cli(&[
        "submit",
        "--model",
        "toy:pivot",
        "--prompt",
        "",
        "--methods",
        "power,low-temp",
        "--seeds",
        "2",
        "--n-mcmc",
        "4",
        "--block-size",
        "4",
        "--max-new-tokens",
        "8",
        "--wait",
        "--format",
        "json",
        "--correlation-id",
        "study-1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let receipt: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(receipt["correlation_id"], "study-1");
    assert_eq!(receipt["job_ids"].as_array().unwrap().len(), 4);
    let batch = receipt["batch_id"].as_str().unwrap();

    let status_of = |id: &str| -> serde_json::Value {
        let out = cli(&["status", id, "--format", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let batch_status = status_of(batch);
    assert_eq!(batch_status["kind"], "batch");
    assert_eq!(batch_status["counts"]["completed"], 4);
    assert_eq!(batch_status["summary"]["jobs"], 4);
    let corr_status = status_of("study-1");
    assert_eq!(corr_status["kind"], "correlation");
    assert_eq!(corr_status["jobs"].as_array().unwrap().len(), 4);
    let job = receipt["job_ids"][0].as_str().unwrap();
    let job_status = status_of(job);
    assert_eq!(job_status["kind"], "job");
    assert_eq!(job_status["status"], "completed");
    assert_eq!(job_status["source"], "database");

    let results = |format: &str| {
        std::process::Command::new(BIN)
            .args([
                "results",
                "--batch",
                batch,
                "--format",
                format,
                "--database-url",
                &fleet.db_url,
            ])
            .output()
            .unwrap()
    };
    let out = results("jsonl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<JobResult> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    let queue = fleet.queue().await;
    for r in &rows {
        let spec = common::job_spec(&queue, r.job_id).await;
        assert_eq!(r.tokens, fault_free_tokens(&spec));
        // The text is the completion's without a terminal EOS, as a server's own text is.
        let toy = powerfleet_models::resolve_toy("toy:pivot").unwrap();
        let text = r.text.as_deref().expect("a completed job has its text");
        assert_eq!(
            text,
            toy.detokenize(powerfleet_sampler::text_tokens(&r.tokens, r.ends_with_eos))
        );
        assert!(!text.contains("<eos>"), "{text:?}");
    }
    assert!(
        rows.iter().any(|r| r.ends_with_eos),
        "a batch with a completion that ends at EOS"
    );
    let out = results("csv");
    let csv = String::from_utf8(out.stdout).unwrap();
    assert_eq!(csv.lines().count(), 5, "a header and four rows:\n{csv}");
    assert!(csv.lines().next().unwrap().contains("job_id"));

    // Nothing stored under an id: said on stderr, naming the id, and a failure exit.
    let unknown = powerfleet_jobs::BatchId::new().to_string();
    for (flag, id) in [
        ("--batch", unknown.as_str()),
        ("--correlation", "study-none"),
    ] {
        for format in ["jsonl", "csv"] {
            let out = std::process::Command::new(BIN)
                .args(["results", flag, id, "--format", format])
                .args(["--database-url", &fleet.db_url])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{flag} {id}: {stderr}");
            assert!(out.stdout.is_empty(), "{flag} {id}");
            assert!(
                stderr.contains("no results stored for")
                    && stderr.contains(id)
                    && stderr.contains(&format!("powerfleet status {id}")),
                "{stderr}"
            );
        }
    }
}

/// A batch on the model registered as `name`: fault-free tokens come from `toy` (the names are
/// worker-side).
fn named_batch(
    name: &str,
    config: SamplerConfig,
    n: usize,
) -> powerfleet_fleet::producer::Submission {
    batch(name).config(config).problems(n).build()
}

fn fault_free_on(toy: &str, spec: &JobSpec) -> Vec<powerfleet_sampler::TokenId> {
    let mut s = spec.clone();
    s.model = toy.to_string();
    fault_free_tokens(&s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_abandons_a_long_request_in_flight_and_hands_back_within_the_grace_period() {
    let mut fleet = Fleet::new(BIN, false);
    // Every request of the slow worker takes a day, far beyond its grace period, its lease and
    // the test's patience: the worker exits at all only if it abandons the requests in flight.
    // The grace period is long, so that however slowly a loaded machine hands the jobs back, it
    // does so within it.
    let slow = fleet.spawn_worker(&[
        "--model",
        "m=toy:pivot?delay_ms=86400000",
        "--grace",
        "3600s",
        "--lease",
        "86400s",
        "--heartbeat",
        "1s",
    ]);
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let receipt = submit_batch(&queue, &named_batch("m", long_config(3, 8), 2)).await;
    let specs = specs(&queue, &receipt).await;
    wait_all_running(
        &fleet,
        &queue,
        &receipt.job_ids,
        "the slow worker runs both jobs",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    fleet.signal_worker(slow, SIGTERM);
    // Exited (within PATIENCE, not after the day-long request), cleanly and within the grace
    // period: the jobs were handed back, none left to its lease.
    let status = exit_status(&mut fleet, slow).await;
    assert!(status.success(), "the worker exits cleanly: {status:?}");
    assert!(
        !fleet.logs().contains("grace period over"),
        "handed back within the grace period:\n{}",
        fleet.logs()
    );
    for id in &receipt.job_ids {
        let s = queue.job_state(*id).await.unwrap().unwrap();
        assert_eq!(s.status, JobStatus::Queued, "handed back: {s:?}");
        assert_eq!(s.deliveries, 0, "a hand-back is not a delivery: {s:?}");
    }
    assert!(fleet.logs().contains("handed back"));
    // A worker whose requests are fast finishes the jobs long before the day-long lease.
    fleet.spawn_worker(&["--model", "m=toy:pivot"]);
    let results = fleet
        .wait_for_results(receipt.batch_id.unwrap(), 2, PATIENCE)
        .await;
    for spec in &specs {
        let r = results.iter().find(|r| r.job_id == spec.job_id).unwrap();
        assert_eq!(r.status, JobStatus::Completed, "{r:?}");
        assert_eq!(r.tokens, fault_free_on("toy:pivot", spec));
        assert_eq!(r.attempts, 1, "delivered once: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_maps_the_model_elsewhere_refuses_the_checkpoint_and_says_why() {
    let mut fleet = Fleet::new(BIN, false);
    let lease = ["--lease", "1s", "--heartbeat", "200ms"];
    let a = fleet.spawn_worker(
        &[
            &["--model", "m=toy:pivot?delay_ms=100", "--concurrency", "1"][..],
            &lease[..],
        ]
        .concat(),
    );
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let receipt = submit_batch(&queue, &named_batch("m", long_config(3, 12), 1)).await;
    let job = receipt.job_ids[0];
    let spec = specs(&queue, &receipt).await.remove(0);
    fleet
        .wait_until("the job has checkpointed a block", PATIENCE, || async {
            let s = queue.job_state(job).await.unwrap().unwrap();
            s.progress.is_some_and(|p| p.block_idx >= 2)
        })
        .await;
    fleet.kill_worker(a);
    // A worker that maps `m` to another model takes the job over after the lease and refuses
    // to resume it: its log q would come from another proposal.
    let b = fleet.spawn_worker(
        &[
            &["--model", "m=toy:eos-lengths", "--max-wait", "1s"][..],
            &lease[..],
        ]
        .concat(),
    );
    fleet
        .wait_until("the job waits, saying why", PATIENCE, || async {
            let s = queue.job_state(job).await.unwrap().unwrap();
            s.waiting
                .is_some_and(|w| w.contains("not the backend the checkpoint was made with"))
        })
        .await;
    // It may be claimed again between two waits; read the reason while it waits.
    let mut waiting = None;
    for _ in 0..100 {
        waiting = queue.job_state(job).await.unwrap().unwrap().waiting;
        if waiting.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let why = waiting.unwrap();
    assert!(
        why.contains(r#"model: checkpoint "toy:pivot", this worker "toy:eos-lengths""#),
        "{why}"
    );
    // The status command shows it too (asked again if it caught the job between two waits).
    let mut shown = String::new();
    for _ in 0..20 {
        shown = common::stdout_of(&fleet.cli(&["status", &job.to_string()]));
        if shown.contains("not the backend the checkpoint was made with") {
            break;
        }
    }
    assert!(
        shown.contains("not the backend the checkpoint was made with"),
        "{shown}"
    );
    fleet.kill_worker(b);
    // A worker with the old mapping resumes it, with the tokens of an uninterrupted run.
    fleet.spawn_worker(&[&["--model", "m=toy:pivot"][..], &lease[..]].concat());
    let results = fleet
        .wait_for_results(receipt.batch_id.unwrap(), 1, PATIENCE)
        .await;
    assert_eq!(results[0].status, JobStatus::Completed, "{:?}", results[0]);
    assert_eq!(results[0].tokens, fault_free_on("toy:pivot", &spec));
    assert_eq!(
        results[0].pin,
        Some(powerfleet_jobs::Pin::Toy {
            model: "toy:pivot".into()
        }),
        "the result records the backend it ran with"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_state_vanishes_mid_run_is_dead_lettered_and_its_checkpoint_expires() {
    let mut fleet = Fleet::new(BIN, false);
    fleet.spawn_worker(&["--concurrency", "1"]);
    let queue = fleet.queue().await;
    let receipt = submit_batch(
        &queue,
        &batch("toy:eos-lengths?delay_ms=50")
            .config(long_config(5, 12))
            .build(),
    )
    .await;
    let job = receipt.job_ids[0];
    fleet
        .wait_until("the worker has checkpointed a block", PATIENCE, || async {
            let s = queue.job_state(job).await.unwrap().unwrap();
            s.progress.is_some_and(|p| p.block_idx >= 1)
        })
        .await;
    // The job's state is deleted under the running worker (by hand, or evicted by Redis).
    let client = redis::Client::open(fleet.redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let checkpoint = format!("pf:{{{}}}:ckpt:{job}", fleet.namespace);
    let deleted: i64 = redis::cmd("DEL")
        .arg(format!("pf:{{{}}}:job:{job}", fleet.namespace))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    fleet
        .wait_until("the job's entry is dead-lettered", PATIENCE, || async {
            !queue.dead_letters(10).await.unwrap().is_empty()
        })
        .await;
    let dead = queue.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].1["reason"].contains(&format!("the state of job {job} vanished from Redis")),
        "{dead:?}"
    );
    // Its checkpoint is left to expire, not kept for good.
    let ttl: i64 = redis::cmd("TTL")
        .arg(&checkpoint)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 0, "the checkpoint has no expiry (TTL {ttl})");
    // Nothing was left pending, and the worker goes on serving.
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg(format!("pf:{{{}}}:jobs", fleet.namespace))
        .arg("workers")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        matches!(&pending, redis::Value::Array(v) if v.first() == Some(&redis::Value::Int(0))),
        "entries are still pending: {pending:?}"
    );
    fleet.spawn_collector();
    let next = submit_batch(
        &queue,
        &batch("toy:pivot").config(long_config(1, 2)).build(),
    )
    .await;
    let results = fleet
        .wait_for_results(next.batch_id.unwrap(), 1, PATIENCE)
        .await;
    assert_eq!(results[0].status, JobStatus::Completed);
    assert!(
        fleet.logs().contains("vanished from Redis"),
        "{}",
        fleet.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_dead_lettered_by_a_worker_is_stored_as_dead_with_its_reason() {
    let mut fleet = Fleet::new(BIN, false);
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let store = fleet.store().await;
    let receipt = submit_batch(
        &queue,
        &batch("toy:tiny")
            .config(long_config(1, 2))
            .problems(2)
            .build(),
    )
    .await;
    let batch_id = receipt.batch_id.unwrap();
    // A job of the same batch written by a newer producer: its specification has an option
    // this worker does not know, so the worker cannot decode its entry.
    let mut newer = raw_spec("toy:tiny", long_config(1, 2), Prompt::Tokens(vec![]));
    newer.batch_id = Some(batch_id);
    newer.correlation_id = receipt.correlation_id.clone();
    newer.problem_id = Some("p9".into());
    let mut json: serde_json::Value = serde_json::to_value(&newer).unwrap();
    json["new_option"] = true.into();
    let json = json.to_string();
    let id = newer.job_id.to_string();
    let ns = &fleet.namespace;
    let client = redis::Client::open(fleet.redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let entry = queue
        .push_raw_job_entry(&[("job_id", &id), ("spec", &json)])
        .await
        .unwrap();
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(format!("pf:{{{ns}}}:job:{id}"))
        .arg(common::queued_job_state(
            &json,
            &entry,
            receipt.correlation_id.as_str(),
            &[("method", "power"), ("cancel", "0")],
        ))
        .ignore()
        .cmd("HSET")
        .arg(format!("pf:{{{ns}}}:job:{id}"))
        .arg("batch_id")
        .arg(batch_id.to_string())
        .ignore()
        .cmd("SADD")
        .arg(format!("pf:{{{ns}}}:batch:{batch_id}"))
        .arg(&id)
        .ignore()
        .query_async(&mut c)
        .await
        .unwrap();

    // The worker starts once the job is fully written, as a producer's script would write it.
    fleet.spawn_worker(&[]);
    let results = fleet.wait_for_results(batch_id, 3, PATIENCE).await;
    let dead = results
        .iter()
        .find(|r| r.job_id == newer.job_id)
        .expect("the dead-lettered job is in job_results");
    assert_eq!(dead.status, JobStatus::Dead);
    assert_eq!(dead.problem_id.as_deref(), Some("p9"));
    assert!(
        dead.error.as_deref().unwrap_or("").contains("new_option"),
        "{dead:?}"
    );
    let summary = store.batch_summary(batch_id).await.unwrap().unwrap();
    assert_eq!(summary.jobs, 3);
    assert_eq!(summary.by_status.get("dead"), Some(&1), "{summary:?}");
    assert_eq!(summary.by_status.get("completed"), Some(&2), "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_without_a_database_follows_redis_and_creates_no_file() {
    let mut fleet = Fleet::new(BIN, false);
    fleet.spawn_worker(&[]);
    // No collector: nothing is ever stored, and without --database-url nothing is waited for
    // but the jobs themselves.
    let cwd = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .current_dir(cwd.path())
        .args([
            "submit",
            "--model",
            "toy:pivot",
            "--prompt",
            "",
            "--seeds",
            "3",
            "--n-mcmc",
            "2",
            "--max-new-tokens",
            "4",
            "--wait",
        ])
        .env("POWERFLEET_REDIS_URL", fleet.redis_url())
        .env("POWERFLEET_NAMESPACE", &fleet.namespace)
        .env_remove("POWERFLEET_DATABASE_URL")
        .output()
        .unwrap();
    let stdout = common::stdout_of(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("jobs 3 (1 problem x 1 method x 3 seeds x 1 chain)"),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().count(),
        3,
        "no job ids without --jobs: {stdout}"
    );
    // Not a terminal: progress comes as lines, the first when the watch starts.
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with('[') && l.contains("jobs")),
        "{stderr}"
    );
    assert!(
        stderr.contains("done in") && stderr.contains("completed 3"),
        "{stderr}"
    );
    let created: Vec<_> = std::fs::read_dir(cwd.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(created.is_empty(), "submit created {created:?}");
}

/// `status` and `status --wait` without `--database-url` (nor `POWERFLEET_DATABASE_URL`) read
/// the jobs' final states from Redis, as `submit --wait` does, and create no database file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_status_wait_without_a_database_follow_redis_and_create_no_file() {
    let mut fleet = Fleet::new(BIN, false);
    fleet.spawn_worker(&[]);
    // No collector: nothing is ever stored, so only Redis can say that the jobs finished.
    let queue = fleet.queue().await;
    let receipt = submit_batch(
        &queue,
        &batch("toy:pivot?delay_ms=20")
            .config(long_config(2, 6))
            .seeds(3)
            .build(),
    )
    .await;
    let batch_id = receipt.batch_id.unwrap().to_string();
    let cwd = tempfile::tempdir().unwrap();
    let status = |args: &[&str]| {
        std::process::Command::new(BIN)
            .current_dir(cwd.path())
            .arg("status")
            .args(args)
            .env("POWERFLEET_REDIS_URL", fleet.redis_url())
            .env("POWERFLEET_NAMESPACE", &fleet.namespace)
            .env_remove("POWERFLEET_DATABASE_URL")
            .output()
            .unwrap()
    };
    let created = || -> Vec<std::ffi::OsString> {
        std::fs::read_dir(cwd.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    };
    let once = common::stdout_of(&status(&[&batch_id]));
    assert!(
        once.starts_with(&format!("batch {batch_id}\njobs 3: ")),
        "{once}"
    );
    assert!(created().is_empty(), "status created {:?}", created());

    let out = status(&[&batch_id, "--wait"]);
    let waited = common::stdout_of(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        waited.contains("jobs 3: completed 3\n"),
        "{waited}\n{stderr}"
    );
    assert!(
        stderr.contains("done in") && stderr.contains("completed 3"),
        "{stderr}"
    );
    assert!(
        created().is_empty(),
        "status --wait created {:?}",
        created()
    );

    // A finished job's result, from Redis.
    let spec = common::job_spec(&queue, receipt.job_ids[0]).await;
    let out = status(&[&spec.job_id.to_string(), "--format", "json"]);
    let job: serde_json::Value = serde_json::from_str(&common::stdout_of(&out)).unwrap();
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["source"], "redis", "{job}");
    let tokens: Vec<powerfleet_sampler::TokenId> =
        serde_json::from_value(job["result"]["tokens"].clone()).unwrap();
    assert_eq!(tokens, fault_free_tokens(&spec));
    assert!(created().is_empty(), "status created {:?}", created());
}

/// `submit --wait` with standard error not a terminal writes a progress line at a cadence (every
/// 10 s; POWERFLEET_PROGRESS_EVERY shortens it for this test) while jobs wait, each saying what
/// the watch waits for, per method and why, then a last line with the final counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_off_a_terminal_writes_progress_lines_at_a_cadence_until_done() {
    let mut fleet = Fleet::new(BIN, false);
    fleet.spawn_collector();
    // No worker maps `m` yet: the jobs wait, and the watch goes on writing lines meanwhile.
    let mut command = fleet.cli_command(&[
        "submit",
        "--model",
        "m",
        "--prompt",
        "",
        "--seeds",
        "3",
        "--n-mcmc",
        "2",
        "--max-new-tokens",
        "4",
        "--wait",
    ]);
    command.env("POWERFLEET_PROGRESS_EVERY", "100ms");
    let mut watching = common::Watching::start(command);
    // "[12s] waiting for ...", "[3m05s] ...": the time since the watch started, then progress.
    let is_progress = |l: &str| {
        l.strip_prefix('[')
            .and_then(|l| l.split_once("] "))
            .is_some_and(|(clock, _)| {
                clock.starts_with(|c: char| c.is_ascii_digit())
                    && clock.chars().all(|c| c.is_ascii_alphanumeric())
            })
    };
    let waiting = watching
        .wait_for_lines("progress while no worker serves m", 4, |l| {
            is_progress(l) && l.contains("] waiting for ")
        })
        .await;
    for line in &waiting {
        assert!(
            line.contains("waiting for 3 of 3 jobs to finish; power 0/3")
                && line.contains("no live worker serves model m"),
            "{line}"
        );
    }
    fleet.spawn_worker(&["--model", "m=toy:pivot"]);
    let (status, stdout, lines) = watching.finish().await;
    let text = lines.join("\n");
    assert!(status.success(), "{stdout}\n{text}");
    assert!(
        stdout.contains("jobs 3 (1 problem x 1 method x 3 seeds x 1 chain)"),
        "{stdout}"
    );
    let (last, before) = lines.split_last().unwrap();
    assert!(
        last.starts_with("done in ") && last.ends_with(": completed 3"),
        "{text}"
    );
    assert!(
        before.iter().all(|l| is_progress(l)),
        "nothing but progress lines before the last:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_output_of_a_batch_is_counts_and_problems_and_lists_jobs_only_when_asked() {
    let mut fleet = Fleet::new(BIN, false);
    fleet.spawn_collector();
    let cli = |args: &[&str]| common::stdout_of(&fleet.cli(args));
    let small = [
        "--prompt",
        "",
        "--n-mcmc",
        "2",
        "--block-size",
        "2",
        "--max-new-tokens",
        "4",
    ];
    // submit: ids, counts, and the job ids only with --jobs, however many jobs.
    let receipt = cli(&[
        &["submit", "--model", "toy:pivot", "--chains", "100"][..],
        &small,
    ]
    .concat());
    assert_eq!(
        receipt.lines().count(),
        3,
        "correlation id, batch id and counts:\n{receipt}"
    );
    assert!(
        receipt.contains("jobs 100 (1 problem x 1 method x 1 seed x 100 chains)"),
        "{receipt}"
    );
    let field = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name:?} in:\n{text}"))
            .to_string()
    };
    let batch = field(&receipt, "batch_id ");
    let correlation = field(&receipt, "correlation_id ");
    // A second batch under the same correlation id, of another method, listing its jobs.
    let listed = cli(&[
        &[
            "submit",
            "--model",
            "toy:pivot",
            "--chains",
            "100",
            "--jobs",
        ][..],
        &["--methods", "standard", "--correlation-id", &correlation],
        &small,
    ]
    .concat());
    let ids: Vec<JobId> = listed.lines().filter_map(|l| l.parse().ok()).collect();
    assert_eq!(ids.len(), 100, "{listed}");
    assert_eq!(listed.lines().count(), 103, "{listed}");
    let listed_batch = field(&listed, "batch_id ");
    // A toy model file that is gone by the time a worker loads it: every worker fails these
    // jobs, and status shows them as the problem.
    let nomodel = fleet.dir.path().join("nomodel.json");
    std::fs::write(
        &nomodel,
        r#"{"vocab": ["a", "b", "<eos>"], "eos": 2, "default": [0.5, 0.4, 0.1], "contexts": []}"#,
    )
    .unwrap();
    let reference = format!("toy:{}", nomodel.display());
    let broken = cli(&[
        &["submit", "--model", reference.as_str(), "--chains", "3"][..],
        &small,
    ]
    .concat());
    std::fs::remove_file(&nomodel).unwrap();
    fleet.spawn_worker(&["--concurrency", "8"]);
    let cli = |args: &[&str]| common::stdout_of(&fleet.cli(args));
    let broken_batch = broken
        .lines()
        .find_map(|l| l.strip_prefix("batch_id "))
        .unwrap()
        .to_string();
    for (b, n) in [(&batch, 100), (&listed_batch, 100), (&broken_batch, 3)] {
        fleet
            .wait_for_results(b.parse().unwrap(), n, PATIENCE)
            .await;
    }
    let job_lines = |text: &str| {
        text.lines()
            .filter(|l| l.get(..36).is_some_and(|id| id.parse::<JobId>().is_ok()))
            .count()
    };

    // status: counts, per method, the aggregates, and no job listing.
    let status = cli(&["status", &batch]);
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(lines[0], format!("batch {batch}"), "{status}");
    assert_eq!(lines[1], "jobs 100: completed 100", "{status}");
    assert!(
        lines[2].trim_start().starts_with("power") && lines[2].contains("100 of 100 finished"),
        "{status}"
    );
    assert!(status.contains("acceptance rate "), "{status}");
    assert_eq!(job_lines(&status), 0, "no job lines:\n{status}");
    assert!(
        status.contains("--jobs"),
        "says how to list them:\n{status}"
    );
    // --limit N lists N and says where the next ones start; --after continues there.
    let page = cli(&["status", &batch, "--limit", "5"]);
    assert_eq!(job_lines(&page), 5, "{page}");
    let after = page
        .lines()
        .find_map(|l| l.split("--after ").nth(1))
        .unwrap_or_else(|| panic!("where the next page starts:\n{page}"));
    let rest = cli(&["status", &batch, "--after", after]);
    assert_eq!(job_lines(&rest), 95, "{rest}");
    assert_eq!(job_lines(&cli(&["status", &batch, "--jobs"])), 100);
    // JSON lists every job.
    let json: serde_json::Value =
        serde_json::from_str(&cli(&["status", &batch, "--format", "json"])).unwrap();
    assert_eq!(json["jobs"].as_array().unwrap().len(), 100);

    // status of a correlation id: counts over its batches, a tally per method, no job listing.
    let status = cli(&["status", &correlation]);
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(lines[0], format!("correlation {correlation}"), "{status}");
    assert_eq!(lines[1], "jobs 200: completed 200", "{status}");
    for method in ["power", "standard"] {
        assert!(
            lines
                .iter()
                .any(|l| l.trim_start().starts_with(method) && l.contains("100 of 100 finished")),
            "a tally of {method}:\n{status}"
        );
    }
    assert_eq!(job_lines(&status), 0, "no job lines:\n{status}");
    assert!(
        status.contains("--jobs"),
        "says how to list them:\n{status}"
    );

    let status = cli(&["status", &broken_batch]);
    assert!(status.contains("jobs 3: failed 3"), "{status}");
    assert!(status.contains("failed or dead: 3"), "{status}");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("  3 failed: model: ") && l.contains("nomodel")),
        "the failures, grouped by their error:\n{status}"
    );

    // cancel of a batch or of a correlation id: one summary line; a line per job only with
    // --jobs, before the summary.
    let cancel = |extra: &[&str]| {
        std::process::Command::new(BIN)
            .arg("cancel")
            .args(extra)
            .args([
                "--redis",
                &fleet.redis_url(),
                "--namespace",
                &fleet.namespace,
            ])
            .output()
            .unwrap()
    };
    let summary = common::stdout_of(&cancel(&["--batch", &batch]));
    assert_eq!(
        summary,
        "cancelled 0, running jobs asked to stop 0, already finished 100\n"
    );
    let per_job = common::stdout_of(&cancel(&["--batch", &batch, "--jobs"]));
    assert_eq!(per_job.lines().count(), 101, "{per_job}");
    assert!(per_job.ends_with(&summary), "{per_job}");
    let summary = common::stdout_of(&cancel(&["--correlation", &correlation]));
    assert_eq!(
        summary,
        "cancelled 0, running jobs asked to stop 0, already finished 200\n"
    );
    let per_job = common::stdout_of(&cancel(&["--correlation", &correlation, "--jobs"]));
    assert_eq!(per_job.lines().count(), 201, "{per_job}");
    assert!(per_job.ends_with(&summary), "{per_job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_what_queued_jobs_wait_for_per_model() {
    let mut fleet = Fleet::new(BIN, false);
    fleet.spawn_worker(&[]);
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    // Every request fails: the model is unavailable and the job waits for it.
    let receipt = submit_batch(
        &queue,
        &batch("toy:eos-lengths?fail_rate=1").problems(2).build(),
    )
    .await;
    let id = receipt.batch_id.unwrap().to_string();
    // Between two waits a worker claims a job again; ask until both are seen waiting.
    let deadline = Instant::now() + PATIENCE;
    let mut status = common::stdout_of(&fleet.cli(&["status", &id]));
    while !status.contains("2 of 2 queued jobs wait") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = common::stdout_of(&fleet.cli(&["status", &id]));
    }
    assert!(
        status.contains("waiting for their model:"),
        "{status}\n{}",
        fleet.logs()
    );
    let line = status
        .lines()
        .find(|l| l.contains("queued jobs wait"))
        .unwrap();
    assert!(
        line.starts_with("  toy:eos-lengths?fail_rate=1: 2 of 2 queued jobs wait")
            && line.contains("waiting for model toy:eos-lengths?fail_rate=1")
            && line.contains("simulated transient failure"),
        "{status}"
    );
}

/// The settings behind each result survive in SQL, JSONL and CSV, and two settings of one method
/// under one correlation id are two report rows, not one pooled row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_keeps_each_results_settings_and_label_and_reports_them_apart() {
    let mut fleet = Fleet::new(BIN, false);
    fleet.spawn_worker(&[]);
    fleet.spawn_collector();
    for n_mcmc in ["2", "40"] {
        let out = fleet.cli(&[
            "submit",
            "--model",
            "toy:pivot",
            "--prompt",
            "",
            "--methods",
            "power",
            "--seeds",
            "2",
            "--n-mcmc",
            n_mcmc,
            "--block-size",
            "3",
            "--max-new-tokens",
            "6",
            "--correlation-id",
            "sweep1",
            "--label",
            "n_mcmc sweep, pivot",
            "--wait",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // SQL: the key settings as columns, the whole configuration as JSON.
    let pool = sqlx::SqlitePool::connect(&fleet.db_url).await.unwrap();
    let rows: Vec<(i64, i64, i64, String, String, String)> = sqlx::query_as(
        "SELECT n_mcmc, block_size, max_new_tokens, label, version, config_json \
         FROM job_results WHERE correlation_id = 'sweep1' ORDER BY n_mcmc",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4);
    for (i, (n_mcmc, block, max_new, label, version, config)) in rows.iter().enumerate() {
        assert_eq!(*n_mcmc, if i < 2 { 2 } else { 40 });
        assert_eq!((*block, *max_new), (3, 6));
        assert_eq!(label, "n_mcmc sweep, pivot");
        assert_eq!(version, env!("CARGO_PKG_VERSION"));
        let config: SamplerConfig = serde_json::from_str(config).unwrap();
        assert_eq!(config.n_mcmc as i64, *n_mcmc);
        // Every default resolved: α 4, the proposal at 1/α.
        assert_eq!(config.alpha.map(|a| a.get()), Some(4.0));
        assert_eq!(config.proposal_temp, Some(0.25));
    }

    // JSONL: every result with its configuration and label.
    let out = fleet.cli(&["results", "--correlation", "sweep1", "--format", "jsonl"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<JobResult> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 4);
    let mut n_mcmcs: Vec<u32> = results
        .iter()
        .map(|r| r.config.as_ref().expect("a configuration").n_mcmc)
        .collect();
    n_mcmcs.sort();
    assert_eq!(n_mcmcs, [2, 2, 40, 40]);
    assert!(results.iter().all(|r| {
        r.label.as_ref().map(|l| l.as_str()) == Some("n_mcmc sweep, pivot")
            && r.version.as_deref() == Some(env!("CARGO_PKG_VERSION"))
    }));

    // CSV: the same, by column.
    let out = fleet.cli(&["results", "--correlation", "sweep1", "--format", "csv"]);
    let csv = String::from_utf8(out.stdout).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|c| *c == name).unwrap();
    let (n_col, label_col) = (col("n_mcmc"), col("label"));
    let mut csv_n: Vec<String> = csv
        .lines()
        .skip(1)
        .map(|line| {
            // The label holds a comma, so it is quoted: split around it.
            assert!(line.contains("\"n_mcmc sweep, pivot\""), "{line}");
            let unquoted = line.replace("\"n_mcmc sweep, pivot\"", "LABEL");
            let cells: Vec<&str> = unquoted.split(',').collect();
            assert_eq!(cells[label_col], "LABEL");
            cells[n_col].to_string()
        })
        .collect();
    csv_n.sort();
    assert_eq!(csv_n, ["2", "2", "40", "40"]);

    // The report: two power rows, each with its n_mcmc.
    let out = fleet.cli(&["report", "sweep1", "--format", "jsonl"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["row"], "batch");
    assert_eq!(lines[0]["scheduled"], 4);
    assert_eq!(lines[0]["stored"], 4);
    assert_eq!(lines[0]["complete"], true);
    let methods: Vec<&serde_json::Value> = lines.iter().filter(|l| l["row"] == "method").collect();
    assert_eq!(methods.len(), 2, "{methods:?}");
    let mut seen: Vec<(String, u64, u64)> = methods
        .iter()
        .map(|m| {
            (
                m["method"].as_str().unwrap().to_string(),
                m["config"]["n_mcmc"].as_u64().unwrap(),
                m["jobs"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort_by_key(|s| s.1);
    assert_eq!(
        seen,
        [
            ("power n_mcmc=2".to_string(), 2, 2),
            ("power n_mcmc=40".to_string(), 40, 2)
        ]
    );
    let out = fleet.cli(&["report", "sweep1", "--require-complete"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("power n_mcmc=2") && table.contains("power n_mcmc=40"));
    assert!(!table.contains("partial"), "{table}");
}

/// A report on a batch whose jobs have not run says it is partial, with what was scheduled and
/// what is stored, and `--require-complete` fails on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_on_an_unfinished_batch_says_partial_and_require_complete_fails() {
    let mut fleet = Fleet::new(BIN, false);
    // A collector and no worker: the batch is submitted and nothing runs.
    fleet.spawn_collector();
    let out = fleet.cli(&[
        "submit",
        "--model",
        "toy:pivot",
        "--prompt",
        "",
        "--methods",
        "power,low-temp",
        "--seeds",
        "3",
        "--n-mcmc",
        "3",
        "--label",
        "unfinished",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let receipt: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let batch = receipt["batch_id"].as_str().unwrap().to_string();
    let batch_id: powerfleet_jobs::BatchId = batch.parse().unwrap();

    // The collector stores the batch's submission record.
    let store = fleet.store().await;
    let deadline = Instant::now() + PATIENCE;
    let record = loop {
        if let Some(r) = store.submission(batch_id).await.unwrap() {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the collector never stored the submission"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(record.scheduled, 6);
    assert_eq!(
        record.label.as_ref().map(|l| l.as_str()),
        Some("unfinished")
    );
    assert_eq!(record.methods, [Method::Power, Method::LowTemp]);
    assert_eq!(record.models, ["toy:pivot"]);
    // With what it asked for: three seeds of one prompt, the n_mcmc given, and no key.
    let request = record
        .request
        .as_ref()
        .expect("the record keeps the request");
    assert_eq!(
        (request.seeds.as_slice(), request.seed_count),
        (&[0, 1, 2][..], 3)
    );
    assert_eq!((request.problems, request.chains), (1, 1));
    assert_eq!(request.config.n_mcmc, 3);
    assert!(!request.submission_key && request.graded.is_none());
    assert!(
        request.jobs_fingerprint.starts_with("fnv1a64:"),
        "{request:?}"
    );

    let out = fleet.cli(&["report", &batch]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.starts_with("partial: 0 of 6 stored, 6 still queued or running\n"),
        "{table}"
    );
    let out = fleet.cli(&["report", &batch, "--format", "jsonl"]);
    let first: serde_json::Value = serde_json::from_str(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["scheduled"], 6);
    assert_eq!(first["stored"], 0);
    assert_eq!(first["complete"], false);

    let out = fleet.cli(&["report", &batch, "--require-complete"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is partial (0 of 6 jobs stored)"), "{err}");

    // Compared with itself by its label: each run is named by the label its submission
    // recorded (told apart by the id given), says it is partial, and --require-complete fails
    // on any partial run.
    let out = fleet.cli(&["report", &batch, "label=unfinished", "--require-complete"]);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8(out.stdout).unwrap();
    for name in [
        format!("unfinished ({batch})"),
        "unfinished (label=unfinished)".to_string(),
    ] {
        assert!(
            table.contains(&format!("{name}: partial: 0 of 6 stored")),
            "{name} in:\n{table}"
        );
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("the reports of {batch} (0 of 6 jobs stored), label=unfinished (0 of 6 jobs stored) are partial")),
        "{err}"
    );
}
