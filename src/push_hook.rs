//! `drove hook pre-receive`: the pre-receive hook of a pushed app's repository. git runs it
//! with the pushed ref updates on stdin (`<old> <new> <ref>` lines) and the new objects still in
//! quarantine; it hands both to the PaaS (`DROVE_PUSH_URL`, with the single-use
//! `DROVE_PUSH_TOKEN` the PaaS gave this push) and prints the deploy's output as it comes (git
//! shows it to the pusher as `remote:` lines). It exits 0, accepting the push, only if the last
//! line is `ok`. If git stops taking its output (git's own reader, the PaaS, went away
//! mid-push), it exits after [`OUTPUT_STALL`] rather than wait on the pipe forever, holding
//! `receive-pack` and the repository with it.

use std::io::BufRead;
use std::time::Duration;

use anyhow::Context;
use drove_paas::push::{Receive, QUARANTINE};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

/// How long a line of output may wait for git to take it.
pub const OUTPUT_STALL: Duration = Duration::from_secs(60);

#[derive(clap::Subcommand, Debug)]
pub enum Hook {
    /// Deploy the pushed commit before the ref moves.
    PreReceive,
}

pub async fn run(hook: Hook) -> anyhow::Result<()> {
    let Hook::PreReceive = hook;
    let url = std::env::var("DROVE_PUSH_URL").context("DROVE_PUSH_URL is not set")?;
    let token = std::env::var("DROVE_PUSH_TOKEN").context("DROVE_PUSH_TOKEN is not set")?;
    let mut updates = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading the ref updates")?;
        let mut parts = line.split_whitespace();
        if let (Some(old), Some(new), Some(name)) = (parts.next(), parts.next(), parts.next()) {
            updates.push((old.to_string(), new.to_string(), name.to_string()));
        }
    }
    let git_dir = std::env::current_dir().context("the repository directory")?;
    let env = QUARANTINE
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    let body = Receive {
        updates,
        git_dir: git_dir.display().to_string(),
        env,
    };
    let resp = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("calling {url}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        anyhow::bail!("{status}: {}", resp.text().await.unwrap_or_default().trim());
    }
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    let mut last = String::new();
    let mut stdout = tokio::io::stdout();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.context("reading the deploy's output")?);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            if text != "ok" && !text.starts_with("rejected: ") {
                let line = format!("{text}\n");
                let write = async {
                    stdout.write_all(line.as_bytes()).await?;
                    stdout.flush().await
                };
                if tokio::time::timeout(OUTPUT_STALL, write).await.is_err() {
                    // Nobody takes the output: the push cannot be reported, so it is refused.
                    // Exiting here, not returning: the runtime would wait for the stuck write.
                    std::process::exit(1);
                }
            }
            last = text;
        }
    }
    match last.strip_prefix("rejected: ") {
        None if last == "ok" => Ok(()),
        Some(why) => anyhow::bail!("push rejected: {why}"),
        None => anyhow::bail!("the deploy ended without a verdict"),
    }
}
