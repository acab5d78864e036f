//! API latency under a small concurrent kube-rs load: 8 clients each issue GETs of single
//! ConfigMaps and LISTs of 100 ConfigMaps (with a label selector) against an in-process server.
//! Prints p50/p99 for get and list; the last line is `api_get_p99_ms=<value> ms`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use psctl_sandbox_apiserver::{ApiServer, ApiServerConfig};
use serde_json::json;

const CLIENTS: usize = 8;
const GETS_PER_CLIENT: usize = 300;
const LISTS_PER_CLIENT: usize = 50;
const OBJECTS: usize = 100;

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = ApiServer::start(ApiServerConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..ApiServerConfig::default()
    })
    .await?;
    let mut config = kube::Config::new(server.url().parse()?);
    config.auth_info.token = Some(server.admin_token().to_owned().into());
    let client = Client::try_from(config)?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for index in 0..OBJECTS {
        let map: ConfigMap = serde_json::from_value(json!({
            "metadata": { "name": format!("cm-{index}"), "labels": { "app": "bench", "shard": (index % 4).to_string() } },
            "data": { "payload": "x".repeat(512) }
        }))?;
        api.create(&PostParams::default(), &map).await?;
    }
    let mut tasks = Vec::new();
    for worker in 0..CLIENTS {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let mut gets = Vec::with_capacity(GETS_PER_CLIENT);
            let mut lists = Vec::with_capacity(LISTS_PER_CLIENT);
            for round in 0..GETS_PER_CLIENT {
                let started = Instant::now();
                api.get(&format!("cm-{}", (worker * 31 + round) % OBJECTS))
                    .await?;
                gets.push(started.elapsed());
                if round % (GETS_PER_CLIENT / LISTS_PER_CLIENT) == 0 {
                    let started = Instant::now();
                    let listed = api.list(&ListParams::default().labels("app=bench")).await?;
                    lists.push(started.elapsed());
                    anyhow::ensure!(
                        listed.items.len() == OBJECTS,
                        "list returned {} objects, expected {OBJECTS}",
                        listed.items.len()
                    );
                }
            }
            anyhow::Ok((gets, lists))
        }));
    }
    let mut gets = Vec::new();
    let mut lists = Vec::new();
    for task in tasks {
        let (task_gets, task_lists) = task.await??;
        gets.extend(task_gets);
        lists.extend(task_lists);
    }
    gets.sort();
    lists.sort();
    server.shutdown().await;
    println!(
        "clients={CLIENTS} gets={} lists={} (of {OBJECTS} objects)",
        gets.len(),
        lists.len()
    );
    println!("api_get_p50_ms={:.3} ms", percentile(&gets, 0.50));
    println!("api_list_p50_ms={:.3} ms", percentile(&lists, 0.50));
    println!("api_list_p99_ms={:.3} ms", percentile(&lists, 0.99));
    println!("api_get_p99_ms={:.3} ms", percentile(&gets, 0.99));
    Ok(())
}
