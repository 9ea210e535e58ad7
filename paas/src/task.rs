//! The Mesos task for one instance of an app: resources, command, environment (`PORT0..N`,
//! `HOST`, `MARATHON_APP_ID`...), fetch URIs, health check, labels.

use std::time::Duration;

use drove_proto::mesos::{
    AgentId, CommandInfo, DurationInfo, Environment, EnvironmentVariable, HealthCheck,
    HealthCheckType, HttpCheckInfo, KillPolicy, Label, Labels, Offer, Resource, TaskId, TaskInfo,
    TcpCheckInfo, Uri,
};

use crate::model::app::{task_prefix, AppDefinition};

/// The Mesos task for one instance of `def` on `offer`, with host ports `ports`.
pub fn task_info(def: &AppDefinition, version: &str, offer: &Offer, ports: &[u32]) -> TaskInfo {
    let task_id = format!("{}.{}", task_prefix(&def.id), uuid::Uuid::new_v4());
    let mut vars: Vec<EnvironmentVariable> = def
        .env
        .iter()
        .map(|(k, v)| EnvironmentVariable {
            name: k.clone(),
            value: v.clone(),
        })
        .collect();
    let mut set = |name: &str, value: String| {
        vars.retain(|v| v.name != name);
        vars.push(EnvironmentVariable {
            name: name.into(),
            value,
        });
    };
    for (k, p) in ports.iter().enumerate() {
        set(&format!("PORT{k}"), p.to_string());
    }
    if let Some(p) = ports.first() {
        set("PORT", p.to_string());
    }
    set(
        "PORTS",
        ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    set("HOST", offer.hostname.clone());
    set("MARATHON_APP_ID", def.id.clone());
    set("MARATHON_APP_VERSION", version.into());
    set("MESOS_TASK_ID", task_id.clone());
    let mut resources = vec![
        Resource::scalar("cpus", def.cpus),
        Resource::scalar("mem", def.mem),
    ];
    if def.disk > 0.0 {
        resources.push(Resource::scalar("disk", def.disk));
    }
    if !ports.is_empty() {
        let ranges: Vec<(u64, u64)> = ports
            .iter()
            .map(|&p| (u64::from(p), u64::from(p)))
            .collect();
        resources.push(Resource::ranges("ports", &ranges));
    }
    let (shell, value, arguments) = match (&def.cmd, &def.args) {
        (Some(cmd), _) => (Some(true), Some(cmd.clone()), Vec::new()),
        (None, Some(args)) => (Some(false), args.first().cloned(), args.clone()),
        (None, None) => (Some(true), Some("true".into()), Vec::new()),
    };
    let command = CommandInfo {
        uris: def
            .fetch
            .iter()
            .map(|f| Uri {
                value: f.uri.clone(),
                executable: Some(f.executable),
                extract: Some(f.extract),
                cache: Some(f.cache),
                output_file: f.output_file.clone(),
            })
            .collect(),
        environment: Some(Environment { variables: vars }),
        shell,
        value,
        arguments,
        // The agent gives each (framework, user) its own uid: without a `user` of its own, an
        // app runs as one named after it, so no two apps share a uid.
        user: def.user.clone().or_else(|| {
            Some(format!(
                "app-{}",
                def.id.trim_matches('/').replace('/', "-")
            ))
        }),
    };
    let health_check = def.health_checks.first().map(|hc| {
        let port = ports.get(hc.port_index as usize).copied();
        let (kind, http, tcp, command) = match hc.protocol.as_str() {
            "TCP" => (
                HealthCheckType::Tcp,
                None,
                Some(TcpCheckInfo {
                    port,
                    port_index: None,
                }),
                None,
            ),
            "COMMAND" => (
                HealthCheckType::Command,
                None,
                None,
                Some(CommandInfo {
                    shell: Some(true),
                    value: hc.command.as_ref().map(|c| c.value.clone()),
                    ..CommandInfo::default()
                }),
            ),
            proto => (
                HealthCheckType::Http,
                Some(HttpCheckInfo {
                    scheme: Some(if proto == "HTTPS" { "https" } else { "http" }.into()),
                    port,
                    port_index: None,
                    path: hc.path.clone(),
                    statuses: Vec::new(),
                }),
                None,
                None,
            ),
        };
        HealthCheck {
            kind,
            // Marathon checks from the start; failures in the grace period do not count.
            delay_seconds: Some(0.0),
            interval_seconds: Some(f64::from(hc.interval_seconds)),
            timeout_seconds: Some(f64::from(hc.timeout_seconds)),
            consecutive_failures: Some(u64::from(hc.max_consecutive_failures)),
            grace_period_seconds: Some(f64::from(hc.grace_period_seconds)),
            http,
            tcp,
            command,
        }
    });
    let mut limits = std::collections::BTreeMap::new();
    if let Some(cpus) = def
        .resource_limits
        .as_ref()
        .and_then(|l| l.cpus.as_ref())
        .and_then(|l| l.cpus())
    {
        limits.insert(
            "cpus".to_string(),
            drove_proto::mesos::Scalar { value: cpus },
        );
    }
    TaskInfo {
        limits,
        name: def.id.trim_start_matches('/').to_string(),
        task_id: TaskId::new(task_id),
        agent_id: AgentId::new(offer.agent_id.value.clone()),
        resources,
        command: Some(command),
        executor: None,
        health_check,
        kill_policy: None,
        labels: Some(Labels {
            labels: def
                .labels
                .iter()
                .map(|(k, v)| Label {
                    key: k.clone(),
                    value: Some(v.clone()),
                })
                .collect(),
        }),
        discovery: None,
        container: container_info(def),
    }
}

/// Mesos's `ContainerInfo` for the app's `networks`: the host's network when it asks for it,
/// else (drove's default) none, which gives the instance its own.
fn container_info(def: &AppDefinition) -> Option<serde_json::Value> {
    let host = def.networks.iter().any(|n| n.mode == "host");
    host.then(|| {
        serde_json::to_value(drove_proto::mesos::ContainerInfo {
            kind: Some("MESOS".into()),
            network_infos: vec![drove_proto::mesos::NetworkInfo {
                name: Some("host".into()),
                ..Default::default()
            }],
        })
        .unwrap_or_default()
    })
}

/// A kill policy with `grace` between SIGTERM and SIGKILL.
pub fn kill_policy(grace: Duration) -> KillPolicy {
    KillPolicy {
        grace_period: Some(DurationInfo {
            nanoseconds: i64::try_from(grace.as_nanos()).unwrap_or(i64::MAX),
        }),
    }
}
