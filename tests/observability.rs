//! What an operator watching AIDA in Prometheus sees, against the real
//! binaries: every service's `/metrics` parses as Prometheus text and its
//! counters move by what a task did; `/api/health` names the part that is
//! down (Redis, the aggregator) and recovers with it; gRPC health follows
//! each service's real state (a worker without its orchestrator is
//! NOT_SERVING); and an error caused by the aggregator names the
//! aggregator.

use std::collections::HashMap;

use aida_tests::system::{Options, sh_agent};
use aida_tests::{GitRepo, System, eventually};
use serde_json::{Value, json};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const METRICS_TOKEN: &str = "metrics-token-0123456789abcdef";

/// One scrape: `(name, sorted labels)` → value. Histograms appear as
/// their `_count` and `_sum`.
#[derive(Debug, Default)]
struct Scrape(HashMap<(String, Vec<(String, String)>), f64>);

impl Scrape {
    fn parse(text: &str) -> Scrape {
        use openmetrics_parser::PrometheusValue;
        let exposition = openmetrics_parser::prometheus::parse_prometheus(text)
            .unwrap_or_else(|e| panic!("/metrics parses as Prometheus text: {e:?}\n{text}"));
        let mut values = HashMap::new();
        for (name, family) in &exposition.families {
            for sample in family.iter_samples() {
                let mut labels: Vec<(String, String)> = sample
                    .get_labelset()
                    .expect("a sample of a family has its labels")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                labels.sort();
                match &sample.value {
                    PrometheusValue::Counter(c) => {
                        values.insert((name.clone(), labels), c.value.as_f64());
                    }
                    PrometheusValue::Gauge(v) | PrometheusValue::Unknown(v) => {
                        values.insert((name.clone(), labels), v.as_f64());
                    }
                    PrometheusValue::Histogram(h) => {
                        let count = h.count.unwrap_or_default() as f64;
                        values.insert((format!("{name}_count"), labels), count);
                    }
                    PrometheusValue::Summary(_) => {}
                }
            }
        }
        Scrape(values)
    }

    /// The value of `name` with exactly these labels; 0 when absent.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        self.0
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    fn has(&self, name: &str) -> bool {
        self.0.keys().any(|(n, _)| n == name)
    }
}

async fn scrape(url: &str) -> Scrape {
    let resp = reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}/metrics: {e}"));
    assert_eq!(resp.status(), 200, "{url}/metrics");
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    Scrape::parse(&resp.text().await.unwrap())
}

/// Where every service serves its metrics.
struct Targets {
    gateway: String,
    orchestrator: String,
    aggregator: String,
    worker: String,
}

async fn targets(system: &System) -> Targets {
    let workers = system.wait_workers(1).await;
    let worker = workers["workers"][0]["metrics_address"]
        .as_str()
        .expect("/api/workers shows where the worker serves its metrics")
        .to_owned();
    Targets {
        gateway: system.url.clone(),
        orchestrator: system.orchestrator_ops_url.clone(),
        aggregator: system.aggregator_ops_url.clone(),
        worker: format!("http://{worker}"),
    }
}

struct Scrapes {
    gateway: Scrape,
    orchestrator: Scrape,
    aggregator: Scrape,
    worker: Scrape,
}

async fn scrape_all(t: &Targets) -> Scrapes {
    Scrapes {
        gateway: scrape(&t.gateway).await,
        orchestrator: scrape(&t.orchestrator).await,
        aggregator: scrape(&t.aggregator).await,
        worker: scrape(&t.worker).await,
    }
}

fn with_metrics_token(options: Options) -> Options {
    options
        .gateway_env("AIDA_METRICS_TOKEN", METRICS_TOKEN)
        .orchestrator_env("AIDA_METRICS_TOKEN", METRICS_TOKEN)
        .aggregator_env("AIDA_METRICS_TOKEN", METRICS_TOKEN)
        .worker_env("AIDA_METRICS_TOKEN", METRICS_TOKEN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_counts_what_a_task_did() {
    let system = System::start_with(with_metrics_token(Options::workers(1))).await;
    let t = targets(&system).await;

    // Without the token a scrape is refused, everywhere.
    for url in [&t.gateway, &t.orchestrator, &t.aggregator, &t.worker] {
        let resp = reqwest::get(format!("{url}/metrics")).await.unwrap();
        assert_eq!(resp.status(), 401, "{url}/metrics without the token");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthenticated", "{body}");
    }

    let before = scrape_all(&t).await;
    let task = run_two_subtasks(&system).await;
    system
        .get(&format!("/api/tasks/{task}"))
        .await
        .expect("GET the task");
    let history = system.event_history(&task).await;
    let on = |channel: &str| history.iter().filter(|e| e["channel"] == channel).count() as f64;
    let (task_events, log_events) = (on("task"), on("log"));
    assert!(task_events > 0.0 && log_events > 0.0, "{history:#?}");

    // The outbox publishes on its own time: wait until every event of the
    // task went out, then read everything once.
    let after = eventually("the task's events to be published on redis", || async {
        let after = scrape_all(&t).await;
        let published = |s: &Scrape, channel: &str| {
            s.value("aida_events_published_total", &[("channel", channel)])
        };
        let task_delta = published(&after.orchestrator, "aida:events:task")
            - published(&before.orchestrator, "aida:events:task");
        let log_delta = published(&after.orchestrator, "aida:events:log")
            - published(&before.orchestrator, "aida:events:log");
        (task_delta >= task_events && log_delta >= log_events).then_some(after)
    })
    .await;
    let moved = |b: &Scrape, a: &Scrape, name: &str, labels: &[(&str, &str)]| {
        a.value(name, labels) - b.value(name, labels)
    };

    // The gateway: the request that made the task, by route template.
    let created = [
        ("method", "POST"),
        ("route", "/api/tasks"),
        ("status", "201"),
    ];
    assert_eq!(
        moved(
            &before.gateway,
            &after.gateway,
            "aida_http_requests_total",
            &created
        ),
        1.0
    );
    assert_eq!(
        moved(
            &before.gateway,
            &after.gateway,
            "aida_http_request_duration_seconds_count",
            &[("method", "POST"), ("route", "/api/tasks")]
        ),
        1.0
    );
    // Reading the task was counted under its template, never its id.
    assert!(
        after.gateway.value(
            "aida_http_requests_total",
            &[
                ("method", "GET"),
                ("route", "/api/tasks/{id}"),
                ("status", "200")
            ]
        ) >= 1.0,
        "{:#?}",
        after
            .gateway
            .0
            .keys()
            .filter(|(n, _)| n == "aida_http_requests_total")
            .collect::<Vec<_>>()
    );
    assert!(
        after.gateway.value(
            "aida_http_requests_total",
            &[
                ("method", "GET"),
                ("route", "/api/tasks/{id}"),
                ("status", "200")
            ]
        ) >= 1.0
    );
    assert!(
        !after
            .gateway
            .0
            .keys()
            .any(|(_, labels)| labels.iter().any(|(_, v)| v.contains(&task))),
        "a task id became a label"
    );

    // The orchestrator: one task in, one task out, two attempts, and the
    // gRPC call that created it.
    let o = (&before.orchestrator, &after.orchestrator);
    assert_eq!(moved(o.0, o.1, "aida_tasks_created_total", &[]), 1.0);
    assert_eq!(
        moved(o.0, o.1, "aida_tasks_total", &[("status", "succeeded")]),
        1.0
    );
    assert_eq!(
        moved(
            o.0,
            o.1,
            "aida_task_duration_seconds_count",
            &[("status", "succeeded")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            o.0,
            o.1,
            "aida_subtasks_total",
            &[("agent", "command"), ("status", "succeeded")]
        ),
        2.0
    );
    assert_eq!(
        moved(
            o.0,
            o.1,
            "aida_subtask_duration_seconds_count",
            &[("agent", "command")]
        ),
        2.0
    );
    assert_eq!(
        moved(
            o.0,
            o.1,
            "aida_grpc_requests_total",
            &[
                ("service", "aida.orchestrator.Orchestrator"),
                ("method", "CreateTask"),
                ("code", "OK")
            ]
        ),
        1.0
    );
    // Every event of the task went out once.
    assert_eq!(
        moved(
            o.0,
            o.1,
            "aida_events_published_total",
            &[("channel", "aida:events:task")]
        ),
        task_events
    );
    assert_eq!(
        moved(
            o.0,
            o.1,
            "aida_events_published_total",
            &[("channel", "aida:events:log")]
        ),
        log_events
    );
    // The merge took its repository's lock once.
    assert!(moved(o.0, o.1, "aida_lock_wait_duration_seconds_count", &[]) >= 1.0);

    // The aggregator: one clean merge, no conflict.
    let g = (&before.aggregator, &after.aggregator);
    assert_eq!(
        moved(g.0, g.1, "aida_merges_total", &[("outcome", "clean")]),
        1.0
    );
    assert_eq!(moved(g.0, g.1, "aida_merge_conflicts_total", &[]), 0.0);
    assert_eq!(
        moved(
            g.0,
            g.1,
            "aida_grpc_requests_total",
            &[
                ("service", "aida.aggregator.Aggregator"),
                ("method", "MergeResults"),
                ("code", "OK")
            ]
        ),
        1.0
    );

    // The worker: two runs, two worktrees made ready.
    let w = (&before.worker, &after.worker);
    assert_eq!(
        moved(
            w.0,
            w.1,
            "aida_agent_runs_total",
            &[("agent", "command"), ("status", "succeeded")]
        ),
        2.0
    );
    let prepared = moved(
        w.0,
        w.1,
        "aida_worktree_prepare_duration_seconds_count",
        &[("mode", "fresh")],
    ) + moved(
        w.0,
        w.1,
        "aida_worktree_prepare_duration_seconds_count",
        &[("mode", "reused")],
    );
    assert_eq!(prepared, 2.0);

    // Every service: its process's figures, and ready.
    for (name, s) in [
        ("gateway", &after.gateway),
        ("orchestrator", &after.orchestrator),
        ("aggregator", &after.aggregator),
        ("worker", &after.worker),
    ] {
        assert!(s.has("process_resident_memory_bytes"), "{name}");
        assert!(s.has("process_cpu_seconds_total"), "{name}");
        if name != "gateway" {
            assert_eq!(s.value("aida_up", &[]), 1.0, "{name}");
        }
    }

    // The gauges the orchestrator samples: one idle worker, nothing queued.
    eventually("the worker gauge to show one idle worker", || async {
        let s = scrape(&t.orchestrator).await;
        (s.value("aida_workers", &[("state", "idle")]) == 1.0
            && s.value("aida_workers", &[("state", "busy")]) == 0.0)
            .then_some(())
    })
    .await;

    // A webhook with a wrong signature is counted as such.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/webhook", system.url))
        .header("X-Signature", "t=1,v1=00")
        .json(&json!({"event": "task.create"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let s = scrape(&t.gateway).await;
    assert_eq!(
        s.value(
            "aida_webhook_signatures_verified_total",
            &[("result", "expired")]
        ),
        1.0
    );
}

/// Runs a task of two subtasks, each writing a file, to success; its id.
async fn run_two_subtasks(system: &System) -> String {
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let task = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "subtasks": [
                {"name": "a", "prompt": "p", "agent": sh_agent("echo a > a.txt")},
                {"name": "b", "prompt": "p", "agent": sh_agent("echo b > b.txt")},
            ]
        }))
        .await;
    assert_eq!(system.wait_finished(&task).await["status"], "succeeded");
    task
}

/// The system's health as `/api/health` says it: (HTTP status, body).
async fn api_health(system: &System) -> (u16, Value) {
    let resp = reqwest::get(format!("{}/api/health", system.url))
        .await
        .expect("GET /api/health");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("health is JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_names_redis_while_it_is_down_and_recovers_with_it() {
    let mut system = System::start(1).await;
    let healthy = eventually("the system to be healthy", || async {
        let (code, body) = api_health(&system).await;
        (code == 200 && body["status"] == "healthy").then_some(body)
    })
    .await;
    for part in ["orchestrator", "database", "redis", "aggregator", "workers"] {
        assert_eq!(
            healthy["components"][part]["status"], "healthy",
            "{part}: {healthy}"
        );
    }
    assert!(healthy["components"]["database"]["latency_ms"].is_number());

    system.redis.stop().await;
    let degraded = eventually("/api/health to name redis", || async {
        let (code, body) = api_health(&system).await;
        (body["status"] == "degraded").then_some((code, body))
    })
    .await;
    // Work goes on without Redis: the system still answers 200.
    assert_eq!(degraded.0, 200);
    let body = degraded.1;
    assert_eq!(body["components"]["redis"]["status"], "degraded", "{body}");
    assert!(body["components"]["redis"]["detail"].is_string(), "{body}");
    for part in ["orchestrator", "database", "aggregator", "workers"] {
        assert_eq!(
            body["components"][part]["status"], "healthy",
            "{part}: {body}"
        );
    }
    // The orchestrator's own readiness says the same, and it keeps serving.
    let resp = reqwest::get(format!("{}/readyz", system.orchestrator_ops_url))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ready: Value = resp.json().await.unwrap();
    assert_eq!(ready["status"], "degraded");
    assert_eq!(
        grpc_health(&system.orchestrator_addr, "aida.orchestrator.Orchestrator").await,
        Some(ServingStatus::Serving)
    );

    system.redis.restart().await;
    eventually("/api/health to be healthy again", || async {
        let (code, body) = api_health(&system).await;
        (code == 200 && body["status"] == "healthy").then_some(())
    })
    .await;

    // Text logs to a file (not a terminal) carry no colour codes.
    for (name, log) in system.captured_logs() {
        assert!(!log.contains('\u{1b}'), "{name} has terminal escapes");
    }
}

/// A service's gRPC health for `service`; `None` when it cannot be asked.
async fn grpc_health(addr: &str, service: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(std::time::Duration::from_secs(2))
        .connect()
        .await
        .ok()?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .ok()?;
    Some(answer.into_inner().status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_is_not_serving_while_its_orchestrator_is_down() {
    let mut system = System::start(1).await;
    let workers = system.wait_workers(1).await;
    let worker = &workers["workers"][0];
    let address = worker["address"].as_str().unwrap().to_owned();
    let ops = format!("http://{}", worker["metrics_address"].as_str().unwrap());
    const WORKER: &str = "aida.worker.Worker";
    eventually("the registered worker to serve", || async {
        (grpc_health(&address, WORKER).await == Some(ServingStatus::Serving)).then_some(())
    })
    .await;
    assert_eq!(
        grpc_health(&system.aggregator_addr, "aida.aggregator.Aggregator").await,
        Some(ServingStatus::Serving)
    );

    system.kill9("orchestrator");
    eventually("the worker to stop serving", || async {
        (grpc_health(&address, WORKER).await == Some(ServingStatus::NotServing)).then_some(())
    })
    .await;
    // The overall status ("") follows too, and /readyz says why.
    assert_eq!(
        grpc_health(&address, "").await,
        Some(ServingStatus::NotServing)
    );
    let resp = reqwest::get(format!("{ops}/readyz")).await.unwrap();
    assert_eq!(resp.status(), 503);
    let ready: Value = resp.json().await.unwrap();
    assert_eq!(
        ready["components"]["orchestrator_session"]["status"], "unhealthy",
        "{ready}"
    );
    // Alive all the same.
    assert_eq!(
        reqwest::get(format!("{ops}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    // The gateway says what is down.
    let (code, body) = api_health(&system).await;
    assert_eq!(code, 503);
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["components"]["orchestrator"]["status"], "unhealthy");

    system.restart_orchestrator().await;
    eventually("the worker to register again and serve", || async {
        (grpc_health(&address, WORKER).await == Some(ServingStatus::Serving)).then_some(())
    })
    .await;
    let resp = reqwest::get(format!("{ops}/readyz")).await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_aggregator_stopped_errors_and_health_name_it() {
    let mut system = System::start(1).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let scratch = tempfile::tempdir().unwrap();
    let gate = scratch.path().join("go");
    // Runs until the test opens the gate: the task is under way, so its
    // report is written fresh, by the aggregator.
    let task = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "subtasks": [{"name": "wait", "prompt": "p", "agent": sh_agent(&format!(
                "while [ ! -e '{}' ]; do sleep 0.05; done", gate.display()
            ))}]
        }))
        .await;
    let report = system
        .http
        .get(format!("{}/api/tasks/{task}/report", system.url))
        .send()
        .await
        .unwrap();
    assert_eq!(report.status(), 200, "the aggregator writes the report");

    system.terminate("aggregator").await;
    let resp = system
        .http
        .get(format!("{}/api/tasks/{task}/report", system.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("aggregator unavailable"),
        "the error names the aggregator, not the orchestrator: {message}"
    );

    let (code, health) = eventually("/api/health to name the aggregator", || async {
        let (code, body) = api_health(&system).await;
        (body["components"]["aggregator"]["status"] == "degraded").then_some((code, body))
    })
    .await;
    assert_eq!(code, 200);
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["components"]["orchestrator"]["status"], "healthy");
    std::fs::write(&gate, "").unwrap();
}

/// The Grafana dashboard charts only metrics AIDA exports, and the
/// Prometheus configuration scrapes every metrics port the pod opens.
#[test]
fn the_dashboard_and_the_scrape_configuration_match_what_the_services_export() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/aida-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut charted = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (at, _) in expr.match_indices("aida_") {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                charted.insert(name.trim_end_matches("_bucket").to_owned());
            }
        }
    }
    let exported: std::collections::BTreeSet<String> = aida_core::metrics::names::ALL
        .iter()
        .map(|n| (*n).to_owned())
        .collect();
    let unknown: Vec<_> = charted.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "charted but never exported: {unknown:?}"
    );
    for wanted in [
        "aida_http_requests_total",
        "aida_http_request_duration_seconds",
        "aida_tasks_total",
        "aida_task_queue_depth",
        "aida_workers",
        "aida_merge_conflicts_total",
        "aida_agent_cost_usd_total",
    ] {
        assert!(charted.contains(wanted), "no panel charts {wanted}");
    }

    // Every METRICS_LISTEN_ADDR of the pod, and the gateway, is a target.
    let pod = std::fs::read_to_string(root.join("deploy/podman/pod.yaml")).unwrap();
    let prometheus =
        std::fs::read_to_string(root.join("deploy/prometheus/prometheus.yml")).unwrap();
    let mut ports = vec!["127.0.0.1:8080".to_owned()];
    for line in pod
        .lines()
        .filter(|l| l.contains("name: METRICS_LISTEN_ADDR"))
    {
        let addr = line
            .split("value: \"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("a METRICS_LISTEN_ADDR without a quoted value: {line}"));
        ports.push(addr.to_owned());
    }
    assert!(ports.len() >= 5, "{ports:?}");
    for addr in ports {
        assert!(
            prometheus.contains(&format!("\"{addr}\"")),
            "prometheus.yml does not scrape {addr}"
        );
    }
}

/// A Slack-compatible incoming webhook: every JSON body posted to `/hook`.
async fn webhook_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::routing::post;
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&received);
    let app = axum::Router::new().route(
        "/hook",
        post(move |axum::Json(body): axum::Json<Value>| {
            let sink = std::sync::Arc::clone(&sink);
            async move {
                sink.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

fn texts(received: &std::sync::Mutex<Vec<Value>>) -> Vec<String> {
    received
        .lock()
        .unwrap()
        .iter()
        .map(|b| {
            b["text"]
                .as_str()
                .expect("a Slack message has text")
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_runs_keep_failing_is_quarantined_then_released() {
    let (hook, received) = webhook_receiver().await;
    let mut system = System::start_with(
        Options::workers(0)
            .orchestrator_env("AIDA_QUARANTINE_AFTER_FAILURES", "2")
            .orchestrator_env("AIDA_QUARANTINE_SECS", "5")
            .orchestrator_env("AIDA_ALERT_WEBHOOK_URL", &hook),
    )
    .await;
    // A broken worker, its agents see BROKEN and fail, and a healthy one.
    // Work goes to the first idle worker by name: the broken one.
    let mut broken = system.worker_command("a-broken");
    broken.env("BROKEN", "1").env("AIDA_AGENT_ENV", "BROKEN");
    system.spawn("a-broken", broken);
    system.add_worker("b-healthy");
    system.wait_workers(2).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let script = "if [ -n \"$BROKEN\" ]; then echo broken >&2; exit 1; fi; echo ok > ok.txt";
    let task = |name: &str| {
        json!({
            "repo": repo.path_str(),
            "max_attempts": 1,
            "subtasks": [{"name": name, "prompt": "p", "agent": sh_agent(script)}]
        })
    };
    for name in ["first", "second"] {
        let id = system.create_task(&task(name)).await;
        assert_eq!(system.wait_finished(&id).await["status"], "failed");
    }

    // Two failures in a row, of two subtasks: quarantined, said on the
    // event stream.
    let events = system
        .read_sse_until("/api/events", |e| e["kind"] == "worker.quarantined")
        .await;
    let quarantined = events.last().unwrap();
    assert_eq!(quarantined["worker_id"], "a-broken");
    assert_eq!(quarantined["data"]["failures_in_a_row"], 2);
    let workers = system.get("/api/workers").await.unwrap();
    assert!(
        workers["workers"][0]["quarantined_until"].is_string(),
        "{workers}"
    );
    assert!(workers["workers"][1]["quarantined_until"].is_null());

    // New work goes to the healthy worker, never to the broken one.
    let third = system.create_task(&task("third")).await;
    let finished = system.wait_finished(&third).await;
    assert_eq!(finished["status"], "succeeded", "{finished}");
    assert_eq!(finished["subtasks"][0]["worker"], "b-healthy");

    // After the cool-down it is released, and says so.
    let released = eventually("the broken worker to be released", || async {
        let workers = system.get("/api/workers").await.ok()?;
        let broken = workers["workers"]
            .as_array()?
            .iter()
            .find(|w| w["worker_id"] == "a-broken")?
            .clone();
        broken["quarantined_until"].is_null().then_some(broken)
    })
    .await;
    assert_eq!(released["state"], "idle");
    system
        .read_sse_until("/api/events", |e| {
            e["kind"] == "worker.released" && e["worker_id"] == "a-broken"
        })
        .await;

    // The alert reached the webhook once (not once per failure), and its
    // end once.
    let sent = eventually("the resolution to reach the webhook", || async {
        let sent = texts(&received);
        sent.iter().any(|t| t.contains("resolved")).then_some(sent)
    })
    .await;
    let alerts: Vec<_> = sent.iter().filter(|t| t.contains("alert")).collect();
    assert_eq!(alerts.len(), 1, "{sent:#?}");
    assert!(alerts[0].contains("a-broken") && alerts[0].contains("quarantined"));
    assert_eq!(sent.len(), 2, "{sent:#?}");

    // Every automatic action is counted.
    let s = scrape_open(&system.orchestrator_ops_url).await;
    for action in ["quarantine", "release", "alert", "alert_resolved"] {
        assert_eq!(
            s.value("aida_monitor_actions_total", &[("action", action)]),
            1.0,
            "{action}"
        );
    }
}

async fn scrape_open(url: &str) -> Scrape {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    Scrape::parse(&text)
}

/// Every JSON log line of `log` that names `task` anywhere.
fn lines_of_task(log: &str, task: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {l}"))
        })
        .filter(|line| line.to_string().contains(task))
        .collect()
}

/// The trace ids a JSON log line carries, from the spans it is in.
fn trace_ids_of(line: &Value) -> Vec<String> {
    line["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(std::iter::once(&line["span"]))
        .filter_map(|s| s["trace_id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_one_trace_across_the_four_services_and_its_log_lines_carry_it() {
    let otlp = aida_tests::otlp::OtlpReceiver::start().await;
    let mut options = Options::workers(1);
    for (key, value) in [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint.as_str()),
        // Export within a fifth of a second, not the default five.
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ("AIDA_LOG_FORMAT", "json"),
    ] {
        options = options
            .gateway_env(key, value)
            .orchestrator_env(key, value)
            .aggregator_env(key, value)
            .worker_env(key, value);
    }
    let system = System::start_with(options).await;
    let task = run_two_subtasks(&system).await;

    // One trace, with spans from every service.
    let (trace, spans) = eventually("spans of all four services in the task's trace", || async {
        let spans = otlp.spans();
        let traces: std::collections::BTreeSet<String> = spans
            .iter()
            .filter(|s| s.attributes.get("task_id") == Some(&task))
            .map(|s| s.trace_id.clone())
            .collect();
        assert!(
            traces.len() <= 1,
            "the task's spans are in {} traces: {:#?}",
            traces.len(),
            spans
                .iter()
                .filter(|s| s.attributes.get("task_id") == Some(&task))
                .map(|s| (&s.service, &s.name, &s.trace_id, &s.parent_span_id))
                .collect::<Vec<_>>()
        );
        let trace = traces.into_iter().next()?;
        let in_trace: Vec<_> = spans.into_iter().filter(|s| s.trace_id == trace).collect();
        let services: std::collections::BTreeSet<&str> =
            in_trace.iter().map(|s| s.service.as_str()).collect();
        let all = [
            "aida-gateway",
            "aida-orchestrator",
            "aida-worker",
            "aida-aggregator",
        ];
        let merged = in_trace.iter().any(|s| {
            s.service == "aida-aggregator"
                && s.attributes.get("rpc.method").map(String::as_str) == Some("MergeResults")
        });
        // Spans are exported when they end, each service on its own
        // schedule: wait for the last of them.
        let runs = in_trace.iter().filter(|s| s.name == "agent run").count();
        let root = in_trace.iter().any(|s| s.parent_span_id.is_empty());
        let merge = in_trace.iter().any(|s| s.name == "merge");
        (all.iter().all(|s| services.contains(s)) && merged && runs == 2 && root && merge)
            .then_some((trace, in_trace))
    })
    .await;
    // The request that made it is the root; the agent runs and the merge are
    // spans with the task's (and subtask's) ids.
    let root: Vec<_> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(root.len(), 1, "{root:#?}");
    assert_eq!(root[0].service, "aida-gateway");
    assert_eq!(root[0].name, "POST /api/tasks");
    let runs: Vec<_> = spans.iter().filter(|s| s.name == "agent run").collect();
    assert_eq!(runs.len(), 2, "{spans:#?}");
    for run in &runs {
        assert_eq!(run.service, "aida-worker");
        assert_eq!(run.attributes["task_id"], task);
        assert!(["a", "b"].contains(&run.attributes["subtask"].as_str()));
    }
    assert!(
        spans.iter().any(|s| s.name == "merge"
            && s.service == "aida-orchestrator"
            && s.attributes["task_id"] == task),
        "{spans:#?}"
    );
    // Every span's parent is in the trace too: nothing hangs loose.
    let ids: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    for span in &spans {
        assert!(
            span.parent_span_id.is_empty() || ids.contains(span.parent_span_id.as_str()),
            "{span:?} has a parent outside the trace"
        );
    }

    // The logs: JSON, and each line about the task carries a trace id; the
    // lines of the work (gateway, orchestrator, worker) carry the task's.
    let logs = system.captured_logs();
    for service in ["gateway", "orchestrator", "worker-1"] {
        let log = &logs
            .iter()
            .find(|(name, _)| name == &format!("{service}.log"))
            .unwrap_or_else(|| panic!("no log of {service}"))
            .1;
        let lines = lines_of_task(log, &task);
        assert!(!lines.is_empty(), "{service} logged nothing about the task");
        for line in &lines {
            assert!(
                line["timestamp"].is_string()
                    && line["level"].is_string()
                    && line["target"].is_string(),
                "{line}"
            );
            assert!(
                !trace_ids_of(line).is_empty(),
                "{service}: a line about the task without a trace id: {line}"
            );
        }
        assert!(
            lines.iter().any(|l| trace_ids_of(l).contains(&trace)),
            "{service}: no line of the task's trace"
        );
    }
    // The events published on Redis carry the trace too.
    let history = system.event_history(&task).await;
    let created = history
        .iter()
        .find(|e| e["kind"] == "task.created")
        .unwrap();
    assert!(
        created["traceparent"]
            .as_str()
            .is_some_and(|t| t.contains(&trace)),
        "{created}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_over_its_threshold_raises_an_alert_once_and_resolves_it() {
    let (hook, received) = webhook_receiver().await;
    let mut system = System::start_with(
        Options::workers(0)
            .orchestrator_env("AIDA_ALERT_QUEUE_DEPTH", "3")
            .orchestrator_env("AIDA_ALERT_WEBHOOK_URL", &hook),
    )
    .await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    // Three subtasks wait: no worker is connected.
    let task = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "subtasks": [
                {"name": "a", "prompt": "p", "agent": sh_agent("echo a > a.txt")},
                {"name": "b", "prompt": "p", "agent": sh_agent("echo b > b.txt")},
                {"name": "c", "prompt": "p", "agent": sh_agent("echo c > c.txt")},
            ]
        }))
        .await;
    let events = system
        .read_sse_until("/api/events", |e| e["kind"] == "monitor.alert")
        .await;
    let alert = events.last().unwrap();
    assert_eq!(alert["data"]["alert"], "queue_depth", "{alert}");
    assert_eq!(alert["data"]["queue_depth"], 3, "{alert}");

    // A worker drains the queue: the alert ends.
    system.add_worker("worker-1");
    assert_eq!(system.wait_finished(&task).await["status"], "succeeded");
    system
        .read_sse_until("/api/events", |e| {
            e["kind"] == "monitor.alert_resolved" && e["data"]["key"] == "queue_depth"
        })
        .await;
    let sent = eventually("the resolution to reach the webhook", || async {
        let sent = texts(&received);
        sent.iter().any(|t| t.contains("resolved")).then_some(sent)
    })
    .await;
    // Raised once for as long as it lasted, however many checks saw it.
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert!(sent[0].contains("3 subtasks are waiting"), "{sent:#?}");
}
