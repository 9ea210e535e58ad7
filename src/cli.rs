//! The `drove` CLI's client commands: a thin client of the PaaS's `/v2` API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use drove_paas::model::app::AppDefinition;
use drove_paas::ops::views::App;
use drove_proto::marathon::{Apps, OneApp, Queue};
use drove_proto::paas::{Certificate, Domain, Domains, NewCertificate, NewDomain, ScalingView};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// Where the PaaS is and how to authenticate.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// The PaaS's URL.
    #[arg(long, env = "DROVE_PAAS_URL", default_value = "http://127.0.0.1:7070")]
    pub paas: String,
    /// The admin token (default: read from <data-dir>/paas/admin-token).
    #[arg(long, env = "DROVE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The admin token, read from a file (mode 0600).
    #[arg(
        long,
        env = "DROVE_ADMIN_TOKEN_FILE",
        value_name = "FILE",
        value_parser = drove_proto::secret::from_file,
        conflicts_with = "token"
    )]
    pub token_file: Option<String>,
    /// The data dir `drove up` uses, to find the admin token.
    #[arg(long = "data-dir", default_value = ".drove")]
    pub data_dir: PathBuf,
}

#[derive(clap::Subcommand, Debug)]
pub enum ClientCommand {
    /// Create an app deployed by `git push`: prints its git remote and deploy token.
    Create {
        /// The app's name (one DNS label: its URL is `<name>.<domain>`).
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Removes a pushed app, its repository and its releases.
    #[command(name = "apps:destroy")]
    AppsDestroy {
        /// The pushed app's name.
        app: String,
        /// The app's name again, to confirm.
        #[arg(long)]
        confirm: String,
        #[command(flatten)]
        target: Target,
    },
    /// Shows a pushed app's webhook URL and secret; `--rotate` replaces the secret.
    Webhook {
        /// The pushed app's name.
        app: String,
        #[arg(long)]
        rotate: bool,
        #[command(flatten)]
        target: Target,
    },
    /// A pushed app's releases.
    Releases {
        /// The pushed app's name.
        app: String,
        #[command(flatten)]
        target: Target,
    },
    /// One release, whole (its log included).
    #[command(name = "releases:info")]
    ReleasesInfo {
        /// The pushed app's name.
        app: String,
        /// The release (`vN`).
        version: String,
        #[command(flatten)]
        target: Target,
    },
    /// A new release from an older one's artifact and config (default: the one before).
    Rollback {
        /// The pushed app's name.
        app: String,
        /// The release to go back to (`vN`; default: the one before the current).
        version: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// A pushed app's config vars.
    Config {
        /// The pushed app's name.
        app: String,
        #[command(flatten)]
        target: Target,
    },
    /// Sets config vars (`K=V ...`): a new release, rolled out.
    #[command(name = "config:set")]
    ConfigSet {
        /// The pushed app's name.
        app: String,
        #[arg(required = true)]
        /// `NAME=value` pairs.
        vars: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Removes config vars: a new release, rolled out.
    #[command(name = "config:unset")]
    ConfigUnset {
        /// The pushed app's name.
        app: String,
        #[arg(required = true)]
        /// Config var names.
        names: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List apps with their instances.
    Apps {
        #[command(flatten)]
        target: Target,
    },
    /// Show one app (Marathon's JSON).
    App {
        /// The app's id (`shop`, `/team/shop`).
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Create or update an app from a Marathon app definition file.
    Deploy {
        /// A Marathon app definition (JSON).
        file: PathBuf,
        #[command(flatten)]
        target: Target,
        /// Supersede a deployment in progress.
        #[arg(long)]
        force: bool,
    },
    /// Set an app's instance count (0 scales it to zero). On an autoscaled app the count holds
    /// as a floor until `drove scale <app> auto` clears it.
    Scale {
        /// The app's id (`shop`, `/team/shop`).
        id: String,
        /// A count, or `auto` to hand the app back to the scaler.
        instances: Count,
        #[command(flatten)]
        target: Target,
    },
    /// Deletes an app (any: a pushed app's repository and releases go with `apps:destroy`).
    Delete {
        /// The app's id (`shop`, `/team/shop`).
        id: String,
        /// The app's id again, to confirm.
        #[arg(long)]
        confirm: String,
        #[command(flatten)]
        target: Target,
    },
    /// An app's custom domains (its own `<app>.<domain>` is always served too).
    Domains {
        /// The app's id (`shop`, `/team/shop`).
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Routes a hostname to an app (refused when another app has it).
    #[command(name = "domains:add")]
    DomainsAdd {
        /// The app's id (`shop`, `/team/shop`).
        id: String,
        /// The hostname (`www.example.com`), pointed at drove's routers in DNS.
        hostname: String,
        #[command(flatten)]
        target: Target,
    },
    /// Serves a domain over HTTPS with a certificate you provide (PEM files, read here and
    /// sent to the PaaS; the key never goes on a command line).
    #[command(name = "domains:cert")]
    DomainsCert {
        /// The app's id (`shop`, `/team/shop`).
        id: String,
        hostname: String,
        /// The certificate chain (PEM, the leaf first).
        #[arg(long)]
        cert: PathBuf,
        /// Its private key (PEM).
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Stops routing a hostname to an app.
    #[command(name = "domains:remove")]
    DomainsRemove {
        /// The app's id (`shop`, `/team/shop`).
        id: String,
        hostname: String,
        #[command(flatten)]
        target: Target,
    },
    /// Takes an app offline: no instances, and requests get 503 without waking it.
    Suspend {
        /// The app's id (`shop`, `/team/shop`).
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Brings a suspended app back (an autoscaled one to its minimum, woken by its next
    /// request; another to one instance).
    Resume {
        /// The app's id (`shop`, `/team/shop`).
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Rolling restart of an app.
    Restart {
        /// The app's id (`shop`, `/team/shop`).
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Print the stdout (or stderr) of an app's instances.
    Logs {
        /// The app's id (`shop`, `/team/shop`).
        id: String,
        #[command(flatten)]
        target: Target,
        /// Keep printing what they write.
        #[arg(long, short)]
        follow: bool,
        /// stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
        /// Only the last N lines of each instance's log.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
    },
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(t: &Target) -> anyhow::Result<Client> {
        let token = match t.token.as_ref().or(t.token_file.as_ref()) {
            Some(t) => t.clone(),
            None => {
                let path = t.data_dir.join("paas").join("admin-token");
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "no --token-file / DROVE_ADMIN_TOKEN, and cannot read {}",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        Ok(Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            base: t.paas.trim_end_matches('/').to_string(),
            token,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        if !status.is_success() {
            let msg = value["message"].as_str().unwrap_or(&text);
            let details = value
                .get("details")
                .map(|d| format!(" {d}"))
                .unwrap_or_default();
            bail!("{status}: {msg}{details}");
        }
        Ok(value)
    }

    /// A call that reached nothing: say where it went and what to check.
    fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        if e.is_connect() || e.is_timeout() {
            anyhow::anyhow!(
                "cannot reach the PaaS at {} ({}): is drove up running? (--paas or DROVE_PAAS_URL \
                 say where it is)",
                self.base,
                if e.is_timeout() {
                    "timed out"
                } else {
                    "connection refused"
                }
            )
        } else {
            anyhow::Error::new(e).context(format!("calling {}", self.base))
        }
    }

    /// A GET of `path`, read as `T`.
    async fn read<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let v = self.send(reqwest::Method::GET, path, None).await?;
        serde_json::from_value(v).with_context(|| format!("reading the answer to GET {path}"))
    }

    /// The app `id`, or an error saying there is none.
    async fn app(&self, id: &str) -> anyhow::Result<App> {
        match self.read::<OneApp<AppDefinition>>(&app_path(id)).await {
            Ok(v) => Ok(v.app),
            Err(e) if e.to_string().starts_with("404") => {
                bail!("no app {id:?} (drove apps lists them)")
            }
            Err(e) => Err(e),
        }
    }

    async fn bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            bail!(
                "{}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(resp.bytes().await?.to_vec())
    }
}

/// `drove logs`: every running instance's log; with none running, the app's last failed
/// instance's, saying so.
async fn logs(
    c: &Client,
    id: &str,
    follow: bool,
    stderr: bool,
    tail: Option<usize>,
) -> anyhow::Result<()> {
    let stream = if stderr { "stderr" } else { "stdout" };
    let app = c.app(id).await?;
    let mut offsets: std::collections::HashMap<String, u64> = Default::default();
    let mut first = true;
    loop {
        let v = c
            .send(
                reqwest::Method::GET,
                &format!("{}/tasks", app_path(id)),
                None,
            )
            .await?;
        let mut tasks: Vec<String> = v["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["id"].as_str().map(str::to_string))
            .collect();
        if tasks.is_empty() && first {
            match &app.last_task_failure {
                Some(f) => {
                    eprintln!(
                        "({id} has no instance running; this is its last failed one, {}, which \
                         ended: {})",
                        f.task_id,
                        f.message.lines().next().unwrap_or("?")
                    );
                    tasks.push(f.task_id.clone());
                }
                None => eprintln!("({id} has no instance running, and none has failed)"),
            }
        }
        for t in &tasks {
            let query = match (first, tail) {
                (true, Some(_)) => format!("tail={}", 256 * 1024),
                _ => format!("offset={}", offsets.get(t).copied().unwrap_or(0)),
            };
            let Ok(bytes) = c
                .bytes(&format!("/v1/tasks/{t}/logs/{stream}?{query}"))
                .await
            else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes);
            let mut lines: Vec<&str> = text.lines().collect();
            if let (true, Some(n)) = (first, tail) {
                if follow {
                    // Following goes on from the log's end.
                    let size = c
                        .bytes(&format!("/v1/tasks/{t}/logs/{stream}?offset=0"))
                        .await
                        .map(|b| b.len() as u64)
                        .unwrap_or(0);
                    offsets.insert(t.clone(), size);
                }
                lines = lines.split_off(lines.len().saturating_sub(n));
            } else {
                *offsets.entry(t.clone()).or_insert(0) += bytes.len() as u64;
            }
            for line in lines {
                if tasks.len() > 1 {
                    println!("[{t}] {line}");
                } else {
                    println!("{line}");
                }
            }
        }
        first = false;
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// App `id`'s route name (its name in `/v1/apps/{name}/…`).
fn route_of(id: &str) -> anyhow::Result<String> {
    drove_paas::model::app::normalize_id(id)
        .ok()
        .and_then(|i| drove_paas::model::app::route_name(&i))
        .with_context(|| format!("{id:?} is not an app id"))
}

/// `drove suspend` / `drove resume`.
async fn suspension(c: &Client, id: &str, suspend: bool) -> anyhow::Result<()> {
    let verb = if suspend { "suspend" } else { "resume" };
    let route = route_of(id)?;
    let v = c
        .send(
            reqwest::Method::POST,
            &format!("/v1/apps/{route}/{verb}"),
            None,
        )
        .await?;
    match (v["changed"] == true, suspend) {
        (true, true) => println!("{id}: suspended; requests get 503 until `drove resume {id}`"),
        (true, false) => println!("{id}: resumed ({} instances)", v["instances"]),
        (false, _) => println!("{id}: already {verb}d"),
    }
    Ok(())
}

fn app_path(id: &str) -> String {
    format!("/v2/apps/{}", id.trim_start_matches('/'))
}

impl ClientCommand {
    fn target(&self) -> &Target {
        match self {
            ClientCommand::Apps { target }
            | ClientCommand::Create { target, .. }
            | ClientCommand::Releases { target, .. }
            | ClientCommand::AppsDestroy { target, .. }
            | ClientCommand::Webhook { target, .. }
            | ClientCommand::ReleasesInfo { target, .. }
            | ClientCommand::Rollback { target, .. }
            | ClientCommand::Config { target, .. }
            | ClientCommand::ConfigSet { target, .. }
            | ClientCommand::ConfigUnset { target, .. }
            | ClientCommand::App { target, .. }
            | ClientCommand::Deploy { target, .. }
            | ClientCommand::Scale { target, .. }
            | ClientCommand::Restart { target, .. }
            | ClientCommand::Suspend { target, .. }
            | ClientCommand::Domains { target, .. }
            | ClientCommand::DomainsAdd { target, .. }
            | ClientCommand::DomainsRemove { target, .. }
            | ClientCommand::DomainsCert { target, .. }
            | ClientCommand::Delete { target, .. }
            | ClientCommand::Resume { target, .. }
            | ClientCommand::Logs { target, .. } => target,
        }
    }
}

pub async fn run(command: ClientCommand) -> anyhow::Result<()> {
    let c = Client::new(command.target())?;
    match command {
        ClientCommand::Create { name, .. } => {
            let v = c
                .send(
                    reqwest::Method::POST,
                    "/v1/push/apps",
                    Some(json!({ "name": name })),
                )
                .await?;
            let remote = v["remote"].as_str().unwrap_or("?");
            let token = v["deployToken"].as_str().unwrap_or("?");
            println!("created {name}");
            println!("  app:           {}", v["url"].as_str().unwrap_or("?"));
            println!("  git remote:    {remote}");
            println!("  deploy token:  {token}  (the password git asks for; any user name)");
            println!(
                "  webhook:       {} (secret {})",
                v["webhookUrl"].as_str().unwrap_or("?"),
                v["webhookSecret"].as_str().unwrap_or("?")
            );
            println!("\nnext:\n  git remote add drove {remote}\n  git push drove main");
        }
        ClientCommand::AppsDestroy { app, confirm, .. } => {
            if confirm != app {
                anyhow::bail!("--confirm {confirm:?} is not {app:?}: nothing destroyed");
            }
            c.send(
                reqwest::Method::DELETE,
                &format!("/v1/push/apps/{app}"),
                None,
            )
            .await?;
            println!("{app}: destroyed (app, repository, releases)");
        }
        ClientCommand::Webhook { app, rotate, .. } => {
            let method = if rotate {
                reqwest::Method::POST
            } else {
                reqwest::Method::GET
            };
            let v = c
                .send(method, &format!("/v1/push/apps/{app}/webhook"), None)
                .await?;
            println!("url:    {}", v["webhookUrl"].as_str().unwrap_or("?"));
            println!("secret: {}", v["webhookSecret"].as_str().unwrap_or("?"));
        }
        ClientCommand::Releases { app, .. } => {
            let v = c
                .send(
                    reqwest::Method::GET,
                    &format!("/v1/push/apps/{app}/releases"),
                    None,
                )
                .await?;
            for r in v["releases"].as_array().into_iter().flatten().rev() {
                println!(
                    "{:<5} {:<10} {:<22} {}  {}",
                    r["version"].as_str().unwrap_or("?"),
                    r["status"].as_str().unwrap_or("?"),
                    r["by"].as_str().unwrap_or("?"),
                    r["commit"].as_str().unwrap_or("").get(..12).unwrap_or(""),
                    r["created"].as_str().unwrap_or("")
                );
            }
        }
        ClientCommand::ReleasesInfo { app, version, .. } => {
            let v = c
                .send(
                    reqwest::Method::GET,
                    &format!("/v1/push/apps/{app}/releases/{version}"),
                    None,
                )
                .await?;
            let text = |k: &str| v[k].as_str().unwrap_or("?").to_string();
            println!(
                "v{}  {}  by {}  at {}",
                v["number"],
                text("status"),
                text("by"),
                text("created")
            );
            println!("commit:   {}", text("commit"));
            println!("artifact: {}", text("artifact"));
            let config: Vec<&String> = v["config"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
                .collect();
            if !config.is_empty() {
                println!(
                    "config:   {}",
                    config
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            println!("log:");
            for entry in v["log"].as_array().into_iter().flatten() {
                for line in entry.as_str().unwrap_or("").lines() {
                    println!("  {line}");
                }
            }
        }
        ClientCommand::Rollback { app, version, .. } => {
            let body = match &version {
                Some(v) => json!({ "to": v }),
                None => json!({}),
            };
            let v = c
                .send(
                    reqwest::Method::POST,
                    &format!("/v1/push/apps/{app}/rollback"),
                    Some(body),
                )
                .await?;
            println!("{app}: released {}", v["version"].as_str().unwrap_or("?"));
        }
        ClientCommand::Config { app, .. } => {
            let v = c
                .send(
                    reqwest::Method::GET,
                    &format!("/v1/push/apps/{app}/config"),
                    None,
                )
                .await?;
            for (k, val) in v["config"].as_object().into_iter().flatten() {
                println!("{k}={}", val.as_str().unwrap_or(""));
            }
        }
        ClientCommand::ConfigSet { app, vars, .. } => {
            let mut set = serde_json::Map::new();
            for kv in &vars {
                let Some((k, val)) = kv.split_once('=') else {
                    anyhow::bail!("{kv:?}: expected NAME=VALUE");
                };
                set.insert(k.to_string(), json!(val));
            }
            let v = c
                .send(
                    reqwest::Method::PATCH,
                    &format!("/v1/push/apps/{app}/config"),
                    Some(json!({ "set": set })),
                )
                .await?;
            println!("{app}: released {}", v["version"].as_str().unwrap_or("?"));
        }
        ClientCommand::ConfigUnset { app, names, .. } => {
            let v = c
                .send(
                    reqwest::Method::PATCH,
                    &format!("/v1/push/apps/{app}/config"),
                    Some(json!({ "unset": names })),
                )
                .await?;
            println!("{app}: released {}", v["version"].as_str().unwrap_or("?"));
        }
        ClientCommand::Apps { .. } => {
            use drove_paas::admin::views::{app_state, note, queued};
            let apps: Apps<AppDefinition> = c.read("/v2/apps?embed=apps.tasks").await?;
            let queue: Queue<AppDefinition> = c.read("/v2/queue").await?;
            println!(
                "{:<24} {:>9} {:>8} {:>8}  {:<10} WHY",
                "ID", "INSTANCES", "RUNNING", "HEALTHY", "STATE"
            );
            for a in &apps.apps {
                let id = &a.definition.id;
                let queued = queued(&queue.queue, id);
                let route = drove_paas::model::app::route_name(id).unwrap_or_default();
                let scaling: Option<ScalingView> =
                    c.read(&format!("/v1/apps/{route}/scaling")).await.ok();
                let state = app_state(a, queued, scaling.as_ref());
                println!(
                    "{:<24} {:>9} {:>8} {:>8}  {:<10} {}",
                    id,
                    a.definition.instances,
                    a.tasks_running,
                    a.tasks_healthy,
                    state,
                    note(a, queued, state).unwrap_or_default()
                );
            }
        }
        ClientCommand::App { id, .. } => {
            let app = c.app(&id).await?;
            println!("{}", serde_json::to_string_pretty(&app)?);
        }
        ClientCommand::Deploy { file, force, .. } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let def: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let Some(id) = def["id"].as_str() else {
                bail!("{}: the app definition needs an \"id\"", file.display());
            };
            // The file is the whole definition: what it leaves out goes back to the defaults.
            let path = format!(
                "{}?partialUpdate=false{}",
                app_path(id),
                if force { "&force=true" } else { "" }
            );
            let v = c
                .send(reqwest::Method::PUT, &path, Some(def.clone()))
                .await?;
            println!(
                "deploying {id}: deployment {} (version {})",
                v["deploymentId"].as_str().unwrap_or("?"),
                v["version"].as_str().unwrap_or("?")
            );
        }
        ClientCommand::Scale {
            id,
            instances: Count::Auto,
            ..
        } => {
            let app = c.app(&id).await?;
            let Some(mut scaling) = app.definition.scaling else {
                anyhow::bail!("{id} has no scaling settings: its count is fixed, nothing to clear");
            };
            scaling.floor = None;
            c.send(
                reqwest::Method::PATCH,
                &format!("{}?force=true", app_path(&id)),
                Some(json!({ "scaling": scaling })),
            )
            .await?;
            println!("{id}: the floor is cleared; the scaler decides its count");
        }
        ClientCommand::Scale {
            id,
            instances: Count::N(instances),
            ..
        } => {
            // Marathon's PUT creates a missing app: scaling one that is not there says so.
            c.app(&id).await?;
            let path = format!("{}?force=true", app_path(&id));
            let v = c
                .send(
                    reqwest::Method::PUT,
                    &path,
                    Some(json!({"instances": instances})),
                )
                .await?;
            println!(
                "scaling {id} to {instances}: deployment {}",
                v["deploymentId"].as_str().unwrap_or("?")
            );
        }
        ClientCommand::Domains { id, .. } => {
            let path = format!("/v1/apps/{}/domains", route_of(&id)?);
            let domains: Domains = c.read(&path).await?;
            if let Some(d) = &domains.own {
                println!("{}  (its own; {})", d.hostname, d.https_note());
            }
            if domains.domains.is_empty() {
                println!("{id} has no custom domains (drove domains:add {id} <hostname>)");
            }
            for d in domains.domains {
                println!("{}  (added {}; {})", d.hostname, d.added, d.https_note());
            }
        }
        ClientCommand::DomainsAdd { id, hostname, .. } => {
            let path = format!("/v1/apps/{}/domains", route_of(&id)?);
            let body = serde_json::to_value(NewDomain { hostname })?;
            let v = c.send(reqwest::Method::POST, &path, Some(body)).await?;
            let d: Domain = serde_json::from_value(v)?;
            println!(
                "{}: routed to {} (point its DNS at drove's routers)",
                d.hostname, d.app
            );
        }
        ClientCommand::DomainsCert {
            id,
            hostname,
            cert,
            key,
            ..
        } => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
            };
            let new = NewCertificate {
                chain_pem: read(&cert)?,
                key_pem: read(&key)?,
            };
            let route = route_of(&id)?;
            let path = format!("/v1/apps/{route}/domains/{hostname}/certificate");
            let v = c
                .send(
                    reqwest::Method::PUT,
                    &path,
                    Some(serde_json::to_value(new)?),
                )
                .await?;
            let shown: Certificate = serde_json::from_value(v)?;
            println!(
                "{hostname}: served over HTTPS with this certificate (issued by {}, expires {})",
                shown.issuer, shown.not_after
            );
        }
        ClientCommand::DomainsRemove { id, hostname, .. } => {
            let route = route_of(&id)?;
            let path = format!("/v1/apps/{route}/domains/{hostname}");
            let v = c.send(reqwest::Method::DELETE, &path, None).await?;
            let d: Domain = serde_json::from_value(v)?;
            println!("{}: no longer routed to {}", d.hostname, d.app);
        }
        ClientCommand::Suspend { id, .. } => suspension(&c, &id, true).await?,
        ClientCommand::Resume { id, .. } => suspension(&c, &id, false).await?,
        ClientCommand::Delete { id, confirm, .. } => {
            if confirm.trim_start_matches('/') != id.trim_start_matches('/') {
                bail!("--confirm {confirm:?} is not {id:?}: nothing deleted");
            }
            c.app(&id).await?;
            let v = c
                .send(
                    reqwest::Method::DELETE,
                    &format!("{}?force=true", app_path(&id)),
                    None,
                )
                .await?;
            println!(
                "deleting {id}: its instances are stopped (deployment {})",
                v["deploymentId"].as_str().unwrap_or("?")
            );
        }
        ClientCommand::Restart { id, .. } => {
            c.app(&id).await?;
            let v = c
                .send(
                    reqwest::Method::POST,
                    &format!("{}/restart?force=true", app_path(&id)),
                    None,
                )
                .await?;
            println!(
                "restarting {id}: deployment {}",
                v["deploymentId"].as_str().unwrap_or("?")
            );
        }
        ClientCommand::Logs {
            id,
            follow,
            stderr,
            tail,
            ..
        } => logs(&c, &id, follow, stderr, tail).await?,
    }
    Ok(())
}

/// `drove scale`'s count: a number, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    N(u32),
    Auto,
}

impl std::str::FromStr for Count {
    type Err = String;

    fn from_str(s: &str) -> Result<Count, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Count::Auto);
        }
        s.parse()
            .map(Count::N)
            .map_err(|_| format!("expected a number of instances or `auto`, found {s:?}"))
    }
}
