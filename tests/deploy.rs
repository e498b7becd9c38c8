//! The deployment files in deploy/, checked against the real binary and the metrics code.
//!
//! Nothing in deploy/ is run against a live Docker host or cluster by the test suite. These tests
//! catch what does not need one: files that do not parse, flags or environment variables the
//! binary does not know, a worker killed before its shutdown grace, an autoscaler watching the
//! wrong stream, and dashboards or alerts querying metrics that do not exist. The set-up that
//! `scripts/ensure-services.sh` does for the image's collector user runs here too, against
//! stand-ins for the system commands it calls.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use yaml_rust2::{Yaml, YamlLoader};

/// Variables the binary reads outside clap, so no `[env: ...]` line documents them. Each is
/// accepted only where the help of the named subcommand mentions it.
const ENV_ALLOW_LIST: &[(&str, &str, &str)] = &[(
    "POWERFLEET_API_TOKENS",
    "serve",
    // src/fleet.rs reads it with std::env::var (comma-separated bearer tokens); the
    // --api-tokens-file help text of `serve` documents it.
    "read with std::env::var by serve, documented in --api-tokens-file",
)];

/// Kubernetes workload kinds whose pod templates are checked.
const WORKLOAD_KINDS: &[&str] = &["Deployment", "StatefulSet", "DaemonSet", "Job"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy_dir() -> PathBuf {
    root().join("deploy")
}

/// The path relative to the repository root, for messages.
fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every file under `dir` whose name ends with one of `exts`, sorted.
fn files_with_ext(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", rel(&d)));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn load_yaml(path: &Path) -> Result<Vec<Yaml>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", rel(path)))?;
    YamlLoader::load_from_str(&text).map_err(|e| format!("{}: YAML does not parse: {e}", rel(path)))
}

fn yaml_docs(path: &Path) -> Vec<Yaml> {
    load_yaml(path).unwrap_or_else(|e| panic!("{e}"))
}

/// Every YAML document under `dir`, with its file.
fn yaml_docs_under(dir: &Path) -> Vec<(PathBuf, Yaml)> {
    files_with_ext(dir, &["yml", "yaml"])
        .into_iter()
        .flat_map(|p| yaml_docs(&p).into_iter().map(move |d| (p.clone(), d)))
        .collect()
}

/// A scalar as a string (numbers and booleans too, as written).
fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn str_at<'a>(y: &'a Yaml, key: &str) -> Option<&'a str> {
    y[key].as_str()
}

fn vec_at<'a>(y: &'a Yaml, key: &str) -> &'a [Yaml] {
    y[key].as_vec().map(Vec::as_slice).unwrap_or(&[])
}

/// Parses the `--help` output of the binary, once per subcommand.
struct Help {
    text: String,
    flags: BTreeSet<String>,
    env: BTreeSet<String>,
}

fn help(sub: Option<&str>) -> &'static Help {
    static CACHE: OnceLock<Mutex<BTreeMap<String, &'static Help>>> = OnceLock::new();
    let key = sub.unwrap_or("").to_string();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
    if let Some(h) = cache.get(&key) {
        return h;
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_powerfleet"));
    if let Some(sub) = sub {
        cmd.arg(sub);
    }
    let out = cmd
        .arg("--help")
        .output()
        .expect("the powerfleet binary runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = if out.status.success() {
        text
    } else {
        String::new()
    };
    let flags = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|t| t.starts_with('-') && t.len() > 1)
        .map(str::to_string)
        .collect();
    let env = text
        .match_indices("[env: ")
        .filter_map(|(i, m)| {
            let rest = &text[i + m.len()..];
            let end = rest.find(['=', ']'])?;
            Some(rest[..end].to_string())
        })
        .collect();
    let h: &'static Help = Box::leak(Box::new(Help { text, flags, env }));
    cache.insert(key, h);
    h
}

/// Whether `sub` is a subcommand of the binary.
fn is_subcommand(sub: &str) -> bool {
    !sub.starts_with('-') && !help(Some(sub)).text.is_empty()
}

/// The default of `flag` in `sub --help` (`[default: ...]` after the flag).
fn help_default(sub: &str, flag: &str) -> Option<String> {
    let text = &help(Some(sub)).text;
    let at = text.find(&format!("{flag} "))?;
    let rest = &text[at..];
    let next_flag = rest[flag.len()..]
        .find("\n      --")
        .map(|i| i + flag.len());
    let section = &rest[..next_flag.unwrap_or(rest.len())];
    let d = section.find("[default: ")? + "[default: ".len();
    Some(section[d..d + section[d..].find(']')?].to_string())
}

/// One powerfleet process described by a deployment file.
#[derive(Debug, Clone)]
struct Invocation {
    /// File, and service or workload/container, for messages.
    origin: String,
    /// Arguments after the program name.
    args: Vec<String>,
    /// POWERFLEET_* and other variables set on the process, with literal values when known.
    env: BTreeMap<String, Option<String>>,
}

impl Invocation {
    /// The subcommand: the first argument that is not a global option or its value.
    fn subcommand(&self) -> Option<String> {
        let mut i = 0;
        while i < self.args.len() {
            let a = &self.args[i];
            if !a.starts_with('-') {
                return Some(a.clone());
            }
            // A global option with its value as the next argument.
            if !a.contains('=') && help(None).text.contains(&format!("{a} <")) {
                i += 1;
            }
            i += 1;
        }
        None
    }

    /// The value of `--flag VALUE` or `--flag=VALUE`.
    fn flag_value(&self, flag: &str) -> Option<String> {
        let mut it = self.args.iter();
        while let Some(a) = it.next() {
            if a == flag {
                return it.next().cloned();
            }
            if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
                return Some(v.to_string());
            }
        }
        None
    }
}

fn compose_path() -> PathBuf {
    deploy_dir().join("docker-compose.yml")
}

/// Services of the compose file that run the powerfleet image, by name.
fn compose_invocations() -> Vec<(String, Yaml, Invocation)> {
    let path = compose_path();
    let docs = yaml_docs(&path);
    let services = docs[0]["services"]
        .as_hash()
        .unwrap_or_else(|| panic!("{}: no services", rel(&path)));
    let mut out = Vec::new();
    for (name, svc) in services {
        let name = name.as_str().unwrap().to_string();
        let image = str_at(svc, "image").unwrap_or("");
        let is_powerfleet = image.contains("powerfleet")
            || str_at(&svc["build"], "dockerfile").is_some_and(|d| d.contains("deploy/Dockerfile"));
        if !is_powerfleet {
            continue;
        }
        let args: Vec<String> = match &svc["command"] {
            Yaml::String(s) => s.split_whitespace().map(str::to_string).collect(),
            Yaml::Array(a) => a.iter().filter_map(scalar).collect(),
            _ => panic!(
                "{}: service {name} runs powerfleet without a command",
                rel(&path)
            ),
        };
        let mut env = BTreeMap::new();
        match &svc["environment"] {
            Yaml::Hash(h) => {
                for (k, v) in h {
                    env.insert(k.as_str().unwrap().to_string(), scalar(v));
                }
            }
            Yaml::Array(a) => {
                for item in a {
                    let s = scalar(item).unwrap();
                    let (k, v) = match s.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (s, None),
                    };
                    env.insert(k, v);
                }
            }
            _ => {}
        }
        let inv = Invocation {
            origin: format!("{} (service {name})", rel(&path)),
            args,
            env,
        };
        out.push((name, svc.clone(), inv));
    }
    assert!(
        !out.is_empty(),
        "{}: no service runs the powerfleet image",
        rel(&path)
    );
    out
}

/// Kubernetes objects under deploy/k8s, with their files.
fn k8s_objects() -> Vec<(PathBuf, Yaml)> {
    yaml_docs_under(&deploy_dir().join("k8s"))
        .into_iter()
        .filter(|(_, d)| str_at(d, "kind").is_some())
        .collect()
}

fn kind_of(doc: &Yaml) -> &str {
    str_at(doc, "kind").unwrap_or("")
}

fn name_of(doc: &Yaml) -> &str {
    str_at(&doc["metadata"], "name").unwrap_or("")
}

/// Secrets by name: their keys and literal values (stringData, or base64 data left undecoded).
fn k8s_secrets() -> BTreeMap<String, BTreeMap<String, Option<String>>> {
    let mut out = BTreeMap::new();
    for (_, doc) in k8s_objects() {
        if kind_of(&doc) != "Secret" {
            continue;
        }
        let mut keys = BTreeMap::new();
        if let Some(h) = doc["stringData"].as_hash() {
            for (k, v) in h {
                keys.insert(k.as_str().unwrap().to_string(), scalar(v));
            }
        }
        if let Some(h) = doc["data"].as_hash() {
            for (k, _) in h {
                keys.insert(k.as_str().unwrap().to_string(), None);
            }
        }
        out.insert(name_of(&doc).to_string(), keys);
    }
    out
}

/// A powerfleet container of a Kubernetes workload.
struct K8sContainer {
    path: PathBuf,
    workload: Yaml,
    container: Yaml,
    inv: Invocation,
}

fn k8s_containers() -> Vec<K8sContainer> {
    let secrets = k8s_secrets();
    let mut out = Vec::new();
    for (path, doc) in k8s_objects() {
        if !WORKLOAD_KINDS.contains(&kind_of(&doc)) {
            continue;
        }
        let pod = &doc["spec"]["template"]["spec"];
        for c in vec_at(pod, "containers")
            .iter()
            .chain(vec_at(pod, "initContainers"))
        {
            if !str_at(c, "image").unwrap_or("").contains("powerfleet") {
                continue;
            }
            let origin = format!(
                "{} ({} {}, container {})",
                rel(&path),
                kind_of(&doc),
                name_of(&doc),
                str_at(c, "name").unwrap_or("?")
            );
            // A `command` replaces the image's ENTRYPOINT ["powerfleet"]: keep what follows the
            // program name.
            let mut args: Vec<String> = vec_at(c, "command")
                .iter()
                .filter_map(scalar)
                .skip_while(|a| !a.ends_with("powerfleet"))
                .skip(1)
                .collect();
            args.extend(vec_at(c, "args").iter().filter_map(scalar));
            let mut env = BTreeMap::new();
            for e in vec_at(c, "env") {
                let name = str_at(e, "name").unwrap_or("").to_string();
                let value = scalar(&e["value"]).or_else(|| {
                    let r = &e["valueFrom"]["secretKeyRef"];
                    let (s, k) = (str_at(r, "name")?, str_at(r, "key")?);
                    secrets.get(s)?.get(k)?.clone()
                });
                env.insert(name, value);
            }
            for ef in vec_at(c, "envFrom") {
                if let Some(s) = str_at(&ef["secretRef"], "name") {
                    let prefix = str_at(ef, "prefix").unwrap_or("");
                    for (k, v) in secrets.get(s).into_iter().flatten() {
                        env.insert(format!("{prefix}{k}"), v.clone());
                    }
                }
            }
            out.push(K8sContainer {
                path: path.clone(),
                workload: doc.clone(),
                container: c.clone(),
                inv: Invocation { origin, args, env },
            });
        }
    }
    out
}

fn all_invocations() -> Vec<Invocation> {
    let mut out: Vec<Invocation> = compose_invocations()
        .into_iter()
        .map(|(_, _, i)| i)
        .collect();
    out.extend(k8s_containers().into_iter().map(|c| c.inv));
    out
}

/// Whether `sub`'s process accepts the variable `var`.
fn env_accepted(sub: Option<&str>, var: &str) -> bool {
    let h = help(sub);
    h.env.contains(var)
        || ENV_ALLOW_LIST.iter().any(|(v, s, _)| {
            *v == var && sub.is_none_or(|sub| sub == *s) && help(Some(s)).text.contains(var)
        })
}

fn fail_if_any(errors: Vec<String>) {
    assert!(errors.is_empty(), "\n{}\n", errors.join("\n"));
}

/// 1. Every YAML (all documents) and JSON file under deploy/ parses.
#[test]
fn every_yaml_and_json_file_under_deploy_parses() {
    let mut errors = Vec::new();
    let yaml = files_with_ext(&deploy_dir(), &["yml", "yaml"]);
    assert!(
        yaml.len() >= 10,
        "expected the deploy/ YAML files, found {yaml:?}"
    );
    for path in &yaml {
        match load_yaml(path) {
            Ok(docs) if docs.is_empty() => errors.push(format!("{}: no YAML document", rel(path))),
            Ok(docs) => {
                for (i, d) in docs.iter().enumerate() {
                    if matches!(d, Yaml::BadValue | Yaml::Null) {
                        errors.push(format!("{}: document {i} is empty", rel(path)));
                    }
                }
            }
            Err(e) => errors.push(e),
        }
    }
    let json = files_with_ext(&deploy_dir(), &["json"]);
    assert!(
        !json.is_empty(),
        "expected a Grafana dashboard under deploy/"
    );
    for path in &json {
        let text = std::fs::read_to_string(path).unwrap();
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
            errors.push(format!("{}: JSON does not parse: {e}", rel(path)));
        }
    }
    fail_if_any(errors);
}

/// 2. Every powerfleet command line and POWERFLEET_* variable is one the binary knows.
#[test]
fn every_flag_and_variable_is_known_to_the_binary() {
    let mut errors = Vec::new();
    let invocations = all_invocations();
    let roles: BTreeSet<String> = invocations.iter().filter_map(|i| i.subcommand()).collect();
    for role in ["worker", "collector", "serve"] {
        assert!(
            roles.contains(role),
            "no deployment file runs `powerfleet {role}` (found {roles:?})"
        );
    }
    for inv in &invocations {
        let Some(sub) = inv.subcommand() else {
            errors.push(format!("{}: no subcommand in {:?}", inv.origin, inv.args));
            continue;
        };
        if !is_subcommand(&sub) {
            errors.push(format!(
                "{}: `{sub}` is not a powerfleet subcommand",
                inv.origin
            ));
            continue;
        }
        let mut seen_sub = false;
        for a in &inv.args {
            if *a == sub && !seen_sub {
                seen_sub = true;
                continue;
            }
            if !a.starts_with('-') || a == "-" {
                continue;
            }
            let flag = a.split_once('=').map_or(a.as_str(), |(f, _)| f);
            // Before the subcommand only global options are valid; after it, the subcommand's
            // help lists its own options and the global ones.
            let h = if seen_sub {
                help(Some(&sub))
            } else {
                help(None)
            };
            if !h.flags.contains(flag) {
                errors.push(format!(
                    "{}: flag {flag} is not in `powerfleet {}--help`",
                    inv.origin,
                    if seen_sub {
                        format!("{sub} ")
                    } else {
                        String::new()
                    }
                ));
            }
        }
        for var in inv.env.keys().filter(|v| v.starts_with("POWERFLEET_")) {
            if !env_accepted(Some(&sub), var) {
                errors.push(format!(
                    "{}: variable {var} is not read by `powerfleet {sub}` (not in its --help, not allow-listed)",
                    inv.origin
                ));
            }
        }
    }
    // Every secretKeyRef names a key of a Secret defined under deploy/k8s.
    let secrets = k8s_secrets();
    for c in k8s_containers() {
        for e in vec_at(&c.container, "env") {
            let r = &e["valueFrom"]["secretKeyRef"];
            if let (Some(s), Some(k)) = (str_at(r, "name"), str_at(r, "key"))
                && !secrets.get(s).is_some_and(|keys| keys.contains_key(k))
            {
                errors.push(format!(
                    "{}: env {} refers to Secret {s} key {k}, which is not defined under deploy/k8s",
                    c.inv.origin,
                    str_at(e, "name").unwrap_or("?")
                ));
            }
        }
    }
    // Secret keys are not tied to one role: each must be read by some role.
    let subs: Vec<String> = ["worker", "collector", "serve", "submit", "demo"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (path, doc) in k8s_objects() {
        if kind_of(&doc) != "Secret" {
            continue;
        }
        for section in ["stringData", "data"] {
            for (k, _) in doc[section].as_hash().into_iter().flatten() {
                let var = k.as_str().unwrap_or("");
                if var.starts_with("POWERFLEET_")
                    && !env_accepted(None, var)
                    && !subs.iter().any(|s| env_accepted(Some(s), var))
                {
                    errors.push(format!(
                        "{}: Secret {} key {var} is read by no powerfleet subcommand",
                        rel(&path),
                        name_of(&doc)
                    ));
                }
            }
        }
    }
    fail_if_any(errors);
}

/// Parses a compose duration such as `30s`, `1m30s` or `500ms` into milliseconds.
fn compose_duration_ms(s: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut rest = s.trim();
    while !rest.is_empty() {
        let n = rest.find(|c: char| !c.is_ascii_digit())?;
        let value: u64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mult = match &rest[..u] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return None,
        };
        total += value * mult;
        rest = &rest[u..];
    }
    Some(total)
}

/// The worker's `--grace` (a duration), its older spelling `--grace-ms`, or the default that
/// `worker --help` shows, in milliseconds.
fn grace_ms(inv: &Invocation) -> Result<u64, String> {
    if let Some(v) = inv.flag_value("--grace-ms") {
        return v
            .parse()
            .map_err(|_| format!("{}: --grace-ms {v} is not a number", inv.origin));
    }
    let v = inv
        .flag_value("--grace")
        .or_else(|| help_default("worker", "--grace"))
        .ok_or_else(|| {
            format!(
                "{}: no --grace and no default in `worker --help`",
                inv.origin
            )
        })?;
    compose_duration_ms(&v).ok_or_else(|| format!("{}: --grace {v} is not a duration", inv.origin))
}

/// The pause of a preStop hook, in milliseconds (`sleep N` or the native sleep action).
fn pre_stop_ms(pre_stop: &Yaml) -> u64 {
    if let Some(s) = pre_stop["sleep"]["seconds"].as_i64() {
        return s as u64 * 1000;
    }
    let cmd: Vec<String> = vec_at(&pre_stop["exec"], "command")
        .iter()
        .filter_map(scalar)
        .collect();
    let words: Vec<&str> = cmd.iter().flat_map(|c| c.split_whitespace()).collect();
    words
        .windows(2)
        .find(|w| w[0].ends_with("sleep"))
        .and_then(|w| w[1].trim_end_matches(';').parse::<f64>().ok())
        .map_or(0, |s| (s * 1000.0) as u64)
}

/// 3. Workers get more time to stop than they need to hand their jobs back.
#[test]
fn workers_are_not_killed_before_their_shutdown_grace() {
    let mut errors = Vec::new();
    let mut checked = 0;
    for c in k8s_containers() {
        if c.inv.subcommand().as_deref() != Some("worker") {
            continue;
        }
        checked += 1;
        let file = rel(&c.path);
        let grace = match grace_ms(&c.inv) {
            Ok(g) => g,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let pod = &c.workload["spec"]["template"]["spec"];
        let Some(tgps) = pod["terminationGracePeriodSeconds"].as_i64() else {
            errors.push(format!(
                "{file}: worker {} sets no terminationGracePeriodSeconds (must exceed --grace-ms {grace})",
                name_of(&c.workload)
            ));
            continue;
        };
        let pre_stop = &c.container["lifecycle"]["preStop"];
        if pre_stop.is_badvalue() || pre_stop.is_null() {
            errors.push(format!(
                "{file}: worker container {} has no lifecycle.preStop hook",
                str_at(&c.container, "name").unwrap_or("?")
            ));
        }
        // The grace period also covers the preStop hook, which runs before SIGTERM.
        let pause = pre_stop_ms(pre_stop);
        if (tgps as u64) * 1000 <= grace + pause {
            errors.push(format!(
                "{file}: terminationGracePeriodSeconds {tgps} s does not exceed preStop {pause} ms + --grace-ms {grace} ms"
            ));
        }
    }
    assert!(
        checked > 0,
        "no Kubernetes workload under deploy/k8s runs `powerfleet worker`"
    );
    for (name, svc, inv) in compose_invocations() {
        if inv.subcommand().as_deref() != Some("worker") {
            continue;
        }
        let grace = match grace_ms(&inv) {
            Ok(g) => g,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        // Docker's default stop timeout is 10 s.
        let stop = str_at(&svc, "stop_grace_period").unwrap_or("10s");
        match compose_duration_ms(stop) {
            Some(ms) if ms > grace => {}
            Some(ms) => errors.push(format!(
                "{}: service {name} stop_grace_period {stop} ({ms} ms) does not exceed --grace-ms {grace}",
                rel(&compose_path())
            )),
            None => errors.push(format!(
                "{}: service {name} stop_grace_period {stop} does not parse",
                rel(&compose_path())
            )),
        }
        if svc["container_name"].as_str().is_some() {
            errors.push(format!(
                "{}: service {name} sets container_name, which breaks --scale",
                rel(&compose_path())
            ));
        }
        if !svc["ports"].is_badvalue() {
            errors.push(format!(
                "{}: service {name} publishes host ports, which collide under --scale",
                rel(&compose_path())
            ));
        }
    }
    fail_if_any(errors);
}

/// 4. KEDA scales the workers on the lag of the stream they read.
#[test]
fn keda_scales_workers_on_the_lag_of_their_jobs_stream() {
    let mut errors = Vec::new();
    let objects = k8s_objects();
    let secrets = k8s_secrets();
    let workers: BTreeMap<String, Invocation> = k8s_containers()
        .into_iter()
        .filter(|c| c.inv.subcommand().as_deref() == Some("worker"))
        .map(|c| (name_of(&c.workload).to_string(), c.inv))
        .collect();
    let trigger_auths: BTreeMap<String, Yaml> = objects
        .iter()
        .filter(|(_, d)| kind_of(d) == "TriggerAuthentication")
        .map(|(_, d)| (name_of(d).to_string(), d.clone()))
        .collect();
    let scaled: Vec<&(PathBuf, Yaml)> = objects
        .iter()
        .filter(|(_, d)| kind_of(d) == "ScaledObject")
        .collect();
    assert!(!scaled.is_empty(), "no KEDA ScaledObject under deploy/k8s");
    for (path, so) in scaled {
        let file = rel(path);
        let target = str_at(&so["spec"]["scaleTargetRef"], "name").unwrap_or("");
        let Some(worker) = workers.get(target) else {
            errors.push(format!(
                "{file}: ScaledObject {} targets {target:?}, not a Deployment running `powerfleet worker` ({:?})",
                name_of(so),
                workers.keys().collect::<Vec<_>>()
            ));
            continue;
        };
        // The namespace the workers use: --namespace, POWERFLEET_NAMESPACE, or the default.
        let ns = worker
            .flag_value("--namespace")
            .or_else(|| worker.env.get("POWERFLEET_NAMESPACE").cloned().flatten())
            .or_else(|| help_default("worker", "--namespace"))
            .unwrap_or_else(|| "default".to_string());
        // The streams the workers read: the shared one, and each --model name's.
        let keys = powerfleet_queue::Keys::new(&ns);
        let mut reads = vec![keys.jobs()];
        let mut args = worker.args.iter();
        while let Some(a) = args.next() {
            let value = if a == "--model" {
                args.next().cloned()
            } else {
                a.strip_prefix("--model=").map(str::to_string)
            };
            if let Some((name, _)) = value.as_deref().and_then(|v| v.split_once('=')) {
                reads.push(keys.model_jobs(name));
            }
        }
        let mut lagged: BTreeSet<String> = BTreeSet::new();
        let (min, max) = (
            so["spec"]["minReplicaCount"].as_i64(),
            so["spec"]["maxReplicaCount"].as_i64(),
        );
        match (min, max) {
            (Some(min), Some(max)) if 0 <= min && min <= max && max > 0 => {}
            _ => errors.push(format!(
                "{file}: ScaledObject {} needs minReplicaCount <= maxReplicaCount (got {min:?}, {max:?})",
                name_of(so)
            )),
        }
        let triggers = vec_at(&so["spec"], "triggers");
        let mut lag_triggers = 0;
        for t in triggers {
            if str_at(t, "type") != Some("redis-streams") {
                continue;
            }
            let m = &t["metadata"];
            if m["lagCount"].as_str().is_some() {
                lag_triggers += 1;
                lagged.extend(str_at(m, "stream").map(str::to_string));
                if m["lagCount"]
                    .as_str()
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_none()
                {
                    errors.push(format!(
                        "{file}: lagCount {:?} is not a number",
                        m["lagCount"]
                    ));
                }
                if m["activationLagCount"].as_str().is_none() {
                    errors.push(format!(
                        "{file}: a lagCount trigger needs activationLagCount (KEDA docs)"
                    ));
                }
            }
            if str_at(m, "consumerGroup") != Some("workers") {
                errors.push(format!(
                    "{file}: redis-streams trigger consumerGroup {:?}, the workers' group is \"workers\"",
                    str_at(m, "consumerGroup")
                ));
            }
            if !str_at(m, "stream").is_some_and(|s| reads.iter().any(|r| r == s)) {
                errors.push(format!(
                    "{file}: redis-streams trigger stream {:?}, but the workers of {target} read {reads:?} (namespace {ns:?})",
                    str_at(m, "stream")
                ));
            }
            // The address comes from the metadata or from a TriggerAuthentication whose secret
            // keys exist.
            let auth = str_at(&t["authenticationRef"], "name");
            let mut params = BTreeSet::new();
            if let Some(auth) = auth {
                match trigger_auths.get(auth) {
                    None => errors.push(format!(
                        "{file}: authenticationRef {auth} is not a TriggerAuthentication under deploy/k8s"
                    )),
                    Some(ta) => {
                        for r in vec_at(&ta["spec"], "secretTargetRef") {
                            let (p, s, k) = (
                                str_at(r, "parameter").unwrap_or(""),
                                str_at(r, "name").unwrap_or(""),
                                str_at(r, "key").unwrap_or(""),
                            );
                            params.insert(p.to_string());
                            if !secrets.get(s).is_some_and(|keys| keys.contains_key(k)) {
                                errors.push(format!(
                                    "TriggerAuthentication {auth}: parameter {p} refers to Secret {s} key {k}, which is not defined under deploy/k8s"
                                ));
                            }
                        }
                    }
                }
            }
            let has_address = ["address", "addressFromEnv", "host", "hostFromEnv"]
                .iter()
                .any(|k| m[*k].as_str().is_some())
                || params.contains("address")
                || params.contains("host");
            if !has_address {
                errors.push(format!(
                    "{file}: redis-streams trigger has no Redis address (metadata or TriggerAuthentication)"
                ));
            }
        }
        if lag_triggers == 0 {
            errors.push(format!(
                "{file}: ScaledObject {} has no redis-streams trigger with lagCount",
                name_of(so)
            ));
        }
        // Every model name's stream the workers read wakes them when jobs wait there.
        for stream in &reads[1..] {
            if !lagged.contains(stream) {
                errors.push(format!(
                    "{file}: the workers of {target} read {stream} (their --model names), but no lagCount trigger watches it"
                ));
            }
        }
    }
    fail_if_any(errors);
}

/// Metric names in a PromQL expression: identifiers starting with `powerfleet_`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("powerfleet_"))
        .map(str::to_string)
        .collect()
}

/// The PromQL of a Grafana dashboard: every `expr` string.
fn json_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => json_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| json_exprs(v, out)),
        _ => {}
    }
}

/// The PromQL of YAML files (Prometheus alert and recording rules): every `expr` string.
fn yaml_exprs(y: &Yaml, out: &mut Vec<String>) {
    match y {
        Yaml::Hash(h) => {
            for (k, v) in h {
                match (k.as_str(), v) {
                    (Some("expr"), v) if scalar(v).is_some() => out.push(scalar(v).unwrap()),
                    _ => yaml_exprs(v, out),
                }
            }
        }
        Yaml::Array(a) => a.iter().for_each(|v| yaml_exprs(v, out)),
        _ => {}
    }
}

/// 5. Dashboards and alert rules only query metrics that the code defines.
#[test]
fn dashboards_and_rules_query_only_defined_metrics() {
    // Every metric a fleet process records, as the code declares it; histograms are scraped
    // as their _bucket, _sum and _count series.
    let mut defined = BTreeSet::new();
    for def in powerfleet_fleet::metrics::all() {
        defined.insert(def.name.to_string());
        if def.kind == powerfleet_common::MetricKind::Histogram {
            for suffix in ["_bucket", "_sum", "_count"] {
                defined.insert(format!("{}{suffix}", def.name));
            }
        }
    }
    let known = |name: &str| defined.contains(name);
    let declared_in = "powerfleet_fleet::metrics::all()";
    let mut errors = Vec::new();
    let mut used = BTreeSet::new();
    let mut sources: Vec<(String, Vec<String>)> = Vec::new();
    for path in files_with_ext(&deploy_dir(), &["json"]) {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut exprs = Vec::new();
        json_exprs(&v, &mut exprs);
        sources.push((rel(&path), exprs));
    }
    for path in files_with_ext(&deploy_dir(), &["yml", "yaml"]) {
        let mut exprs = Vec::new();
        for d in yaml_docs(&path) {
            yaml_exprs(&d, &mut exprs);
        }
        if !exprs.is_empty() {
            sources.push((rel(&path), exprs));
        }
    }
    let dashboard = rel(&deploy_dir().join("grafana/powerfleet.json"));
    assert!(
        sources
            .iter()
            .any(|(f, e)| *f == dashboard && !e.is_empty()),
        "{dashboard}: no panel queries"
    );
    for (file, exprs) in &sources {
        for expr in exprs {
            for name in metric_names(expr) {
                if !known(&name) {
                    errors.push(format!(
                        "{file}: metric {name} is not declared in {declared_in} (expr: {expr})"
                    ));
                }
                used.insert(name);
            }
        }
    }
    // The dashboard covers the fleet's main signals.
    for must in [
        "powerfleet_jobs_finished_total",
        "powerfleet_queue_lag_jobs",
        "powerfleet_queue_pending_jobs",
        "powerfleet_chains_in_flight",
        "powerfleet_mcmc_acceptances_total",
        "powerfleet_mcmc_proposals_total",
        "powerfleet_tokens_generated_total",
        "powerfleet_block_duration_seconds_bucket",
        "powerfleet_model_call_duration_seconds_bucket",
        "powerfleet_checkpoint_write_duration_seconds_bucket",
        "powerfleet_jobs_reclaimed_total",
        "powerfleet_jobs_dead_lettered_total",
        "powerfleet_jobs_handed_back_total",
        "powerfleet_model_retries_total",
        "powerfleet_http_requests_total",
    ] {
        if !used.contains(must) {
            errors.push(format!("{dashboard}: no panel queries {must}"));
        }
    }
    fail_if_any(errors);
}

/// Prometheus scrapes every compose service that serves metrics, on the port it listens on.
#[test]
fn prometheus_scrapes_every_compose_role() {
    let prom = deploy_dir().join("prometheus/prometheus.yml");
    let docs = yaml_docs(&prom);
    let mut targets: BTreeSet<(String, String)> = BTreeSet::new();
    for job in vec_at(&docs[0], "scrape_configs") {
        for sd in vec_at(job, "dns_sd_configs") {
            let port = scalar(&sd["port"]).unwrap_or_default();
            for n in vec_at(sd, "names").iter().filter_map(scalar) {
                targets.insert((n.trim_start_matches("tasks.").to_string(), port.clone()));
            }
        }
        for sc in vec_at(job, "static_configs") {
            for t in vec_at(sc, "targets").iter().filter_map(scalar) {
                if let Some((h, p)) = t.rsplit_once(':') {
                    targets.insert((h.to_string(), p.to_string()));
                }
            }
        }
    }
    let mut errors = Vec::new();
    for (name, _, inv) in compose_invocations() {
        let Some(listen) = inv
            .flag_value("--metrics-listen")
            .or_else(|| inv.env.get("POWERFLEET_METRICS_LISTEN").cloned().flatten())
        else {
            errors.push(format!(
                "{}: serves no metrics (--metrics-listen)",
                inv.origin
            ));
            continue;
        };
        let port = listen.rsplit_once(':').map_or("", |(_, p)| p).to_string();
        if !targets.contains(&(name.clone(), port.clone())) {
            errors.push(format!(
                "{}: service {name} serves metrics on port {port}, which no scrape config of {} targets ({targets:?})",
                rel(&compose_path()),
                rel(&prom)
            ));
        }
    }
    fail_if_any(errors);
}

/// Every collector can wall its graded programs in: the image has bubblewrap (and an init that
/// reaps what a killed sandbox leaves), and each collector container may make the namespaces
/// bubblewrap needs (docs/operations.md, "Collectors that run code"), unless it runs unisolated
/// on purpose.
/// A securityContext field as the container sees it: its own value, else the pod's.
fn effective(pod: &Yaml, container_sc: &Yaml, key: &str) -> Option<String> {
    scalar(&container_sc[key]).or_else(|| scalar(&pod["securityContext"][key]))
}

/// The capability names of a list, upper-cased and without a `CAP_` prefix.
fn names(list: &Yaml) -> BTreeSet<String> {
    list.as_vec()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter_map(scalar)
        .map(|n| {
            let n = n.to_ascii_uppercase();
            n.strip_prefix("CAP_").map(str::to_string).unwrap_or(n)
        })
        .collect()
}

/// What the Dockerfile lacks for a collector running as user 10001 to start programs as a
/// subordinate id: uidmap installed, and subordinate uids and gids for the user with uid 10001,
/// a range that does not hold 10001 itself.
fn dockerfile_subordinate_ids_errors(dockerfile: &str) -> Vec<String> {
    let mut errors = Vec::new();
    // Continuation lines joined, so each RUN is one line of words.
    let joined = dockerfile.replace("\\\n", " ");
    let runs: Vec<Vec<&str>> = joined
        .lines()
        .filter(|l| l.trim_start().starts_with("RUN "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let installs_uidmap = runs.iter().any(|words| {
        words
            .windows(2)
            .any(|w| w[0] == "apt-get" && w[1] == "install")
            && words.contains(&"uidmap")
    });
    if !installs_uidmap {
        errors
            .push("deploy/Dockerfile: no apt-get install of uidmap (newuidmap, newgidmap)".into());
    }
    let value_after = |words: &[&str], flag: &str| -> Option<String> {
        words
            .windows(2)
            .find(|w| w[0] == flag)
            .map(|w| w[1].to_string())
    };
    // The user created with uid 10001: `useradd ... --uid 10001 ... NAME`.
    let user = runs.iter().find_map(|words| {
        let at = words.iter().position(|w| *w == "useradd")?;
        let cmd: Vec<&str> = words[at..]
            .iter()
            .take_while(|w| **w != "&&")
            .copied()
            .collect();
        (value_after(&cmd, "--uid").as_deref() == Some("10001"))
            .then(|| cmd.last().unwrap().to_string())
    });
    let Some(user) = user else {
        errors.push("deploy/Dockerfile: no useradd --uid 10001".into());
        return errors;
    };
    for flag in ["--add-subuids", "--add-subgids"] {
        let range = runs.iter().find_map(|words| {
            let at = words.iter().position(|w| *w == "usermod")?;
            let cmd: Vec<&str> = words[at..]
                .iter()
                .take_while(|w| **w != "&&")
                .copied()
                .collect();
            (cmd.last() == Some(&user.as_str()))
                .then(|| value_after(&cmd, flag))
                .flatten()
        });
        let parsed = range.as_deref().and_then(|r| {
            let (a, b) = r.split_once('-')?;
            Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
        });
        match parsed {
            Some((a, b)) if a <= b && !(a..=b).contains(&10001) => {}
            _ => errors.push(format!(
                "deploy/Dockerfile: user {user} (uid 10001) needs usermod {flag} FIRST-LAST, \
                 a range without 10001 (found {range:?})"
            )),
        }
    }
    errors
}

#[test]
fn the_subordinate_ids_check_fails_without_them() {
    let dockerfile = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    assert!(
        dockerfile_subordinate_ids_errors(&dockerfile).is_empty(),
        "{:?}",
        dockerfile_subordinate_ids_errors(&dockerfile)
    );
    let without_uidmap = dockerfile.replace(" tini uidmap", " tini");
    assert_ne!(without_uidmap, dockerfile);
    assert!(!dockerfile_subordinate_ids_errors(&without_uidmap).is_empty());
    let without_subgids = dockerfile.replace("--add-subgids 100000-165535", "");
    assert_ne!(without_subgids, dockerfile);
    assert!(!dockerfile_subordinate_ids_errors(&without_subgids).is_empty());
    let without_subuids = dockerfile.replace("--add-subuids 100000-165535", "");
    assert!(!dockerfile_subordinate_ids_errors(&without_subuids).is_empty());
}

/// The settings a collector's pod (`spec.template.spec`) and container securityContext lack for
/// its sandbox and for starting programs as another user.
fn sandbox_lacks(pod: &Yaml, sc: &Yaml) -> Vec<&'static str> {
    let checks = [
        (
            pod["hostUsers"].as_bool() == Some(false),
            "pod hostUsers: false",
        ),
        (
            effective(pod, sc, "runAsUser").as_deref() == Some("0"),
            "runAsUser: 0 (root of the pod's user namespace)",
        ),
        (
            effective(pod, sc, "runAsNonRoot").as_deref() != Some("true"),
            "no runAsNonRoot: true (it runs as root of its user namespace)",
        ),
        (
            names(&sc["capabilities"]["drop"]) == BTreeSet::from(["ALL".to_string()]),
            "capabilities drop: [ALL]",
        ),
        (
            names(&sc["capabilities"]["add"])
                == BTreeSet::from(["SETUID".to_string(), "SETGID".to_string()]),
            "capabilities add: exactly [SETUID, SETGID]",
        ),
        (
            str_at(sc, "procMount") == Some("Unmasked"),
            "procMount: Unmasked",
        ),
        (
            str_at(&sc["seccompProfile"], "type") == Some("Unconfined"),
            "seccompProfile type Unconfined",
        ),
        (
            str_at(&sc["appArmorProfile"], "type") == Some("Unconfined"),
            "appArmorProfile type Unconfined",
        ),
    ];
    checks
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, what)| what)
        .collect()
}

#[test]
fn the_collector_sandbox_check_fails_without_its_settings() {
    let path = deploy_dir().join("k8s/collector-deployment.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let lacks = |text: &str| {
        let docs = YamlLoader::load_from_str(text).unwrap();
        let d = docs
            .iter()
            .find(|d| str_at(d, "kind") == Some("Deployment"))
            .expect("a Deployment");
        let pod = &d["spec"]["template"]["spec"];
        let c = vec_at(pod, "containers")
            .iter()
            .find(|c| str_at(c, "name") == Some("collector"))
            .expect("a collector container");
        sandbox_lacks(pod, &c["securityContext"])
    };
    assert_eq!(lacks(&text), Vec::<&str>::new());
    for (from, to) in [
        ("runAsUser: 0", "runAsUser: 10001"),
        ("\n      hostUsers: false", "\n      hostUsers: true"),
        ("\n      hostUsers: false", ""),
        ("\n        runAsUser: 0", ""),
        ("drop: [\"ALL\"]", "drop: [\"NET_RAW\"]"),
        ("add: [\"SETUID\", \"SETGID\"]", "add: [\"SETUID\"]"),
        (
            "add: [\"SETUID\", \"SETGID\"]",
            "add: [\"SETUID\", \"SETGID\", \"SYS_ADMIN\"]",
        ),
        ("runAsNonRoot: false", "runAsNonRoot: true"),
    ] {
        let changed = text.replacen(from, to, 1);
        assert_ne!(changed, text, "{from} is in {}", rel(&path));
        assert!(!lacks(&changed).is_empty(), "{from} -> {to} goes unnoticed");
    }
}

#[test]
fn collectors_may_run_their_sandbox() {
    let mut errors = Vec::new();
    let dockerfile = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    for needed in [
        "bubblewrap",
        "tini",
        r#"ENTRYPOINT ["/usr/bin/tini", "--", "powerfleet"]"#,
    ] {
        if !dockerfile.contains(needed) {
            errors.push(format!("deploy/Dockerfile: no {needed}"));
        }
    }
    errors.extend(dockerfile_subordinate_ids_errors(&dockerfile));
    let collectors: Vec<K8sContainer> = k8s_containers()
        .into_iter()
        .filter(|c| c.inv.subcommand().as_deref() == Some("collector"))
        .collect();
    if collectors.is_empty() {
        errors.push("no collector under deploy/k8s".into());
    }
    for c in &collectors {
        if c.inv.args.iter().any(|a| a == "--grading-unisolated") {
            continue;
        }
        let pod = &c.workload["spec"]["template"]["spec"];
        for what in sandbox_lacks(pod, &c.container["securityContext"]) {
            errors.push(format!("{} ({}): needs {what}", c.inv.origin, rel(&c.path)));
        }
    }
    let (compose, _, _) = compose_invocations()
        .into_iter()
        .find(|(_, _, inv)| inv.subcommand().as_deref() == Some("collector"))
        .expect("a collector in deploy/docker-compose.yml");
    let docs = yaml_docs(&compose_path());
    let opts: Vec<String> = vec_at(&docs[0]["services"][compose.as_str()], "security_opt")
        .iter()
        .filter_map(scalar)
        .collect();
    for needed in [
        "seccomp=unconfined",
        "apparmor=unconfined",
        "systempaths=unconfined",
    ] {
        if !opts.iter().any(|o| o == needed) {
            errors.push(format!(
                "{}: service {compose} needs security_opt {needed}",
                rel(&compose_path())
            ));
        }
    }
    fail_if_any(errors);
}

/// `need_subordinate_ids` of `scripts/ensure-services.sh`, sourced into a shell that runs with
/// `set -euo pipefail` as `scripts/test.sh` does, on a machine as root where no user has uid
/// 10001 yet (a fresh machine): it creates that user and carries on. `getent` exits 2 for an id it
/// does not know, which `pipefail` turns into an error of the whole pipeline. The system commands
/// it would change the machine with are stand-ins that record their arguments.
#[test]
fn the_test_set_up_creates_the_collector_user_on_a_machine_without_one() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.path().join("calls.log");
    let stand_ins = [
        ("getent", "exit 2".to_string()),
        ("id", "echo 0".to_string()),
        ("newuidmap", "exit 0".to_string()),
        ("newgidmap", "exit 0".to_string()),
    ]
    .into_iter()
    .chain(
        ["groupadd", "useradd", "usermod"]
            .map(|cmd| (cmd, format!("echo \"{cmd} $*\" >> '{}'", log.display()))),
    );
    for (name, body) in stand_ins {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg("set -euo pipefail; source scripts/ensure-services.sh; need_subordinate_ids; echo set-up done")
        .current_dir(root())
        .env("PATH", path)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("set-up done"),
        "need_subordinate_ids stopped the set-up ({}): stdout {stdout:?}, stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        calls
            .lines()
            .any(|l| l.starts_with("useradd ") && l.contains("--uid 10001")),
        "no user with uid 10001 was made: {calls:?}"
    );
    assert!(
        calls
            .lines()
            .any(|l| l.starts_with("groupadd ") && l.contains("--gid 10001")),
        "no group 10001 was made: {calls:?}"
    );
}
