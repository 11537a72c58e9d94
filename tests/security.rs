//! Who gets in, against the real binaries over HTTP: roles, access tokens
//! honest and forged, API tokens and their revocation, refresh-token
//! rotation and reuse, the lockout, webhooks and their signatures, rate and
//! size limits, repository roots, and the audit trail; and no secret used
//! anywhere appears in any log.

use std::time::{Duration, Instant};

use aida_tests::system::{ADMIN, client_with, sh_agent};
use aida_tests::{GitRepo, Options, System, eventually};
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};

type HmacSha256 = Hmac<sha2::Sha256>;

async fn status_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn task_body(repo: &GitRepo) -> Value {
    json!({
        "repo": repo.path_str(),
        "description": "d",
        "agent": sh_agent("echo hi > hi.txt"),
        "subtasks": [{"name": "a", "prompt": "p"}],
    })
}

async fn task_count(system: &System) -> usize {
    system.get("/api/tasks?limit=1000").await.unwrap()["tasks"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_tokens_and_sessions_are_enforced_end_to_end() {
    let system = System::start(1).await;
    let repo = GitRepo::with_files(&[("a.txt", "a\n")]);
    let url = |path: &str| format!("{}{path}", system.url);

    // 1. Without a token every documented route but health answers 401.
    let doc = system.get("/api/openapi.json").await.unwrap();
    let anonymous = reqwest::Client::new();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{id}", "0190f3c2-7f4e-7c2a-9b1e-4a7d2c9e8f10")
                .replace("{name}", "x")
                .replace("{key}", "k");
            let resp = anonymous
                .request(method.to_uppercase().parse().unwrap(), url(&concrete))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            match path.as_str() {
                "/api/health" => assert_eq!(status, 200),
                // Signing in takes credentials in the body; the webhook
                // its signature (refused without one).
                "/api/auth/login" | "/api/auth/refresh" => assert_ne!(status, 200),
                _ => assert_eq!(status, 401, "{method} {path}"),
            }
            checked += 1;
        }
    }
    assert!(checked >= 30, "{checked} routes walked");

    // 2. A viewer reads but does not create, approve or cancel.
    let viewer = system.user("vic", "viewer").await;
    let task_id = system.create_task(&task_body(&repo)).await;
    let (status, _) = status_of(
        viewer
            .post(url("/api/tasks"))
            .json(&task_body(&repo))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    for action in ["cancel", "approve"] {
        let (status, body) = status_of(
            viewer
                .post(url(&format!("/api/tasks/{task_id}/{action}")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 403, "{action}: {body}");
        assert_eq!(body["error"]["code"], "permission_denied");
    }
    let (status, task) = status_of(
        viewer
            .get(url(&format!("/api/tasks/{task_id}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(task["created_by"], ADMIN, "tasks remember who made them");

    // 3. An operator creates tasks but manages no users or tokens.
    let operator = system.user("otto", "operator").await;
    let (status, created) = status_of(
        operator
            .post(url("/api/tasks"))
            .json(&task_body(&repo))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["created_by"], "otto");
    for (method, path, body) in [
        ("GET", "/api/users", json!(null)),
        (
            "POST",
            "/api/users",
            json!({"name": "eve", "role": "admin", "password": "Sup3r-Secret-Pw"}),
        ),
        ("GET", "/api/tokens", json!(null)),
        (
            "POST",
            "/api/tokens",
            json!({"name": "ci", "role": "operator"}),
        ),
        ("GET", "/api/audit", json!(null)),
    ] {
        let (status, _) = status_of(
            operator
                .request(method.parse().unwrap(), url(path))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 403, "{method} {path}");
    }

    // 4. API tokens: shown once, listed without secrets, revoked at once.
    let (status, made) = status_of(
        system
            .http
            .post(url("/api/tokens"))
            .json(&json!({"name": "ci", "role": "operator", "expires_in_days": 7}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let api_token = made["token"].as_str().unwrap().to_owned();
    let ci = client_with(&api_token);
    let (status, me) = status_of(ci.get(url("/api/auth/me")).send().await.unwrap()).await;
    assert_eq!(
        (status, me["role"].as_str()),
        (200, Some("operator")),
        "{me}"
    );
    let (status, _) = status_of(
        ci.post(url("/api/tasks"))
            .json(&task_body(&repo))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    let listed = system.get("/api/tokens").await.unwrap().to_string();
    assert!(listed.contains("\"ci\"") && !listed.contains(&api_token));
    let id = made["id"].as_str().unwrap();
    let (status, revoked) = status_of(
        system
            .http
            .delete(url(&format!("/api/tokens/{id}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(revoked["revoked_at"].is_string());
    let (status, _) = status_of(ci.get(url("/api/tasks")).send().await.unwrap()).await;
    assert_eq!(status, 401, "a revoked token is refused at once");
    // A token's role must be one of the roles.
    let (status, _) = status_of(
        client_with(&system.admin_token)
            .post(url("/api/tokens"))
            .json(&json!({"name": "root", "role": "root"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);

    // 5. Access tokens the gateway did not sign as it signs them.
    let now = chrono::Utc::now().timestamp() as u64;
    let claims = |exp: u64, iss: &str, aud: &str| {
        json!({"sub": ADMIN, "role": "admin", "iss": iss, "aud": aud, "exp": exp,
               "nbf": now - 5, "iat": now - 5, "jti": "j", "sid": "s"})
    };
    let secret = system.secrets.jwt_secret.clone();
    let sign = |alg: jsonwebtoken::Algorithm, key: &str, claims: &Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(alg),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    };
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let good = claims(now + 300, "aida", "aida-api");
    let honest = sign(jsonwebtoken::Algorithm::HS256, &secret, &good);
    let mut parts: Vec<String> = honest.split('.').map(str::to_owned).collect();
    let mut other_user = good.clone();
    other_user["sub"] = json!("vic");
    parts[1] = b64(other_user.to_string().as_bytes());
    let forged = [
        (
            "expired",
            sign(
                jsonwebtoken::Algorithm::HS256,
                &secret,
                &claims(now - 120, "aida", "aida-api"),
            ),
        ),
        (
            "another key",
            sign(jsonwebtoken::Algorithm::HS256, &"k".repeat(40), &good),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(good.to_string().as_bytes())
            ),
        ),
        (
            "HS512",
            sign(jsonwebtoken::Algorithm::HS512, &secret, &good),
        ),
        (
            "wrong aud",
            sign(
                jsonwebtoken::Algorithm::HS256,
                &secret,
                &claims(now + 300, "aida", "other"),
            ),
        ),
        (
            "wrong iss",
            sign(
                jsonwebtoken::Algorithm::HS256,
                &secret,
                &claims(now + 300, "evil", "aida-api"),
            ),
        ),
        ("tampered", parts.join(".")),
    ];
    for (what, token) in forged {
        let (status, _) = status_of(
            client_with(&token)
                .get(url("/api/tasks"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 401, "{what}");
    }
    let (status, _) = status_of(
        client_with(&honest)
            .get(url("/api/tasks"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        status, 200,
        "the same claims, signed as the gateway signs, pass"
    );

    // 6. Refresh tokens rotate; one used twice ends the session for both.
    let password = system.secrets.admin_password.clone();
    let (_, pair) = status_of(
        anonymous
            .post(url("/api/auth/login"))
            .json(&json!({"username": ADMIN, "password": password}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(pair["token_type"], "Bearer");
    assert!(pair["expires_in"].as_u64().unwrap() > 0);
    let first = pair["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |token: String| {
        let anonymous = anonymous.clone();
        let url = url("/api/auth/refresh");
        async move {
            status_of(
                anonymous
                    .post(url)
                    .json(&json!({"refresh_token": token}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let (status, next) = refresh(first.clone()).await;
    assert_eq!(status, 200, "{next}");
    let second = next["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    let (status, _) = refresh(first).await;
    assert_eq!(status, 401, "a used refresh token is refused");
    let (status, _) = refresh(second).await;
    assert_eq!(status, 401, "and its whole family with it");

    // 7. Logging out ends the session.
    let (_, pair) = status_of(
        anonymous
            .post(url("/api/auth/login"))
            .json(&json!({"username": ADMIN, "password": password}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let session = client_with(pair["access_token"].as_str().unwrap());
    let resp = session.post(url("/api/auth/logout")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let (status, _) = refresh(pair["refresh_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(status, 401);

    // 8. The audit trail has seen it all.
    let audit = system.get("/api/audit?limit=1000").await.unwrap();
    let actions: Vec<String> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["action"].as_str().unwrap(),
                e["user"].as_str().unwrap(),
                e["result"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        "user.create os:",
        "auth.login admin ok",
        "user.create admin ok",
        "task.create admin ok",
        "task.create otto ok",
        "authz.denied vic denied",
        "token.create admin ok",
        "token.use admin ok",
        "token.revoke admin ok",
        "token.use admin denied",
        "auth.refresh_reuse admin denied",
        "auth.logout admin ok",
        "auth.access_token  denied",
    ] {
        assert!(
            actions.iter().any(|a| a.starts_with(expected)),
            "no audit line {expected:?} in {actions:#?}"
        );
    }
    let since = system
        .get("/api/audit?action=token.&user=admin")
        .await
        .unwrap();
    assert!(
        since["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| { e["action"].as_str().unwrap().starts_with("token.") && e["user"] == ADMIN })
    );
    // The file copy has the same lines, as JSON.
    let file = std::fs::read_to_string(&system.audit_log).unwrap();
    let lines: Vec<Value> = file
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["action"] == "token.revoke" && l["user"] == ADMIN)
    );
    assert!(
        lines
            .iter()
            .all(|l| l["at"].is_string() && l["client_addr"].is_string())
    );

    assert_no_secret_in_logs(&system, &[api_token.as_str(), honest.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_wrong_passwords_lock_the_account_until_the_lockout_ends() {
    let system =
        System::start_with(Options::workers(0).orchestrator_env("AIDA_LOCKOUT_SECS", "6")).await;
    system.user("lou", "viewer").await;
    // The harness made lou with a password of its own; set a known one.
    let password = "Correct-Horse-9!";
    let (status, _) = system
        .patch("/api/users/lou", &json!({"password": password}))
        .await;
    assert_eq!(status, 200);

    for _ in 0..5 {
        let err = system.login("lou", "Wrong-Horse-9!").await.unwrap_err();
        assert!(err.starts_with("401"), "{err}");
    }
    let locked_at = Instant::now();
    let err = system.login("lou", password).await.unwrap_err();
    assert!(
        err.contains("invalid username or password"),
        "the same answer: {err}"
    );
    let users = system.get("/api/users").await.unwrap();
    let lou = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "lou")
        .unwrap();
    assert!(lou["locked_until"].is_string(), "{lou}");

    // Trying the right password while locked is refused and changes
    // nothing; once the lockout is over it works.
    eventually("the lockout to end", || async {
        system.login("lou", password).await.ok()
    })
    .await;
    assert!(
        locked_at.elapsed() >= Duration::from_secs(5),
        "{:?}",
        locked_at.elapsed()
    );
    let audit = system
        .get("/api/audit?user=lou&action=auth.")
        .await
        .unwrap();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"auth.lockout"), "{actions:?}");
}

/// `X-Signature` for `body` at `t` with `secret`.
fn signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_need_a_fresh_valid_signature_and_act_once_per_event() {
    // Two secrets while the old one is rotated out; any other is wrong.
    let system = System::start_with(Options::workers(1).webhook_secrets(2)).await;
    let current = system.secrets.webhook_secrets[0].clone();
    let previous = system.secrets.webhook_secrets[1].clone();
    let unknown = aida_core::secret::random_hex(24);
    let repo = GitRepo::with_files(&[("a.txt", "a\n")]);
    let hook = format!("{}/api/webhook", system.url);
    let plain = reqwest::Client::new();
    let send = |body: String, header: Option<(&'static str, String)>| {
        let mut req = plain
            .post(&hook)
            .header("content-type", "application/json")
            .body(body);
        if let Some((name, value)) = header {
            req = req.header(name, value);
        }
        async move { status_of(req.send().await.unwrap()).await }
    };
    let event =
        |id: &str| json!({"id": id, "type": "task.create", "data": task_body(&repo)}).to_string();
    let now = chrono::Utc::now().timestamp();
    let before = task_count(&system).await;

    // Refused, with nothing created: no header, a wrong secret, a stale
    // timestamp, a body changed after signing.
    let body = event("evt-1");
    for (what, header) in [
        ("no signature", None),
        (
            "wrong secret",
            Some(("x-signature", signature(&unknown, now, &body))),
        ),
        (
            "301 s old",
            Some(("x-signature", signature(&current, now - 301, &body))),
        ),
        (
            "other body",
            Some(("x-signature", signature(&current, now, &event("evt-2")))),
        ),
    ] {
        let (status, answer) = send(body.clone(), header).await;
        assert_eq!(status, 401, "{what}: {answer}");
    }
    assert_eq!(task_count(&system).await, before, "nothing was created");

    // A valid one creates exactly one task, as system; a replay is refused.
    let (status, answer) = send(
        body.clone(),
        Some(("x-signature", signature(&current, now, &body))),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let task_id = answer["task_id"].as_str().unwrap().to_owned();
    let (status, answer) = send(
        body.clone(),
        Some(("x-signature", signature(&current, now, &body))),
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "already_exists");
    assert_eq!(task_count(&system).await, before + 1);
    let task = system.get(&format!("/api/tasks/{task_id}")).await.unwrap();
    assert_eq!(task["created_by"], "system");

    // The secret being rotated out still signs; several v1 values are
    // accepted when one of them is valid.
    let body = event("evt-3");
    let (status, answer) = send(
        body.clone(),
        Some(("x-signature", signature(&previous, now, &body))),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let body = event("evt-4");
    let unknown_v1 = signature(&unknown, now, &body);
    let both = format!(
        "{},{}",
        signature(&current, now, &body),
        unknown_v1.split(',').nth(1).unwrap()
    );
    let (status, answer) = send(body, Some(("x-signature", both))).await;
    assert_eq!(status, 201, "{answer}");

    // An external status becomes a task event, once.
    let status_event = json!({"id": "ci-1", "type": "task.external_status", "data": {
        "task_id": task_id, "state": "success", "description": "build passed",
        "url": "https://ci.example/1", "context": "ci/build"}})
    .to_string();
    let (status, answer) = send(
        status_event.clone(),
        Some(("x-signature", signature(&current, now, &status_event))),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let (status, _) = send(
        status_event.clone(),
        Some(("x-signature", signature(&current, now, &status_event))),
    )
    .await;
    assert_eq!(status, 409);
    let events = system
        .get(&format!("/api/tasks/{task_id}/events"))
        .await
        .unwrap();
    let external: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "task.external_status")
        .collect();
    assert_eq!(external.len(), 1);
    assert_eq!(external[0]["data"]["state"], "success");

    // GitHub's signature and delivery id.
    let ping = json!({"zen": "Keep it logically awesome.", "hook_id": 1}).to_string();
    let mut mac = HmacSha256::new_from_slice(current.as_bytes()).unwrap();
    mac.update(ping.as_bytes());
    let github = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let resp = plain
        .post(&hook)
        .header("x-hub-signature-256", &github)
        .header("x-github-delivery", "d-1")
        .header("x-github-event", "ping")
        .body(ping.clone())
        .send()
        .await
        .unwrap();
    let (status, answer) = status_of(resp).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("pong")),
        "{answer}"
    );
    let resp = plain
        .post(&hook)
        .header("x-hub-signature-256", "sha256=00")
        .header("x-github-delivery", "d-2")
        .header("x-github-event", "ping")
        .body(ping)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // The audit trail is written in batches, a moment after the answer.
    eventually("five refused webhooks in the audit trail", || async {
        let audit = system
            .get("/api/audit?action=webhook.refused")
            .await
            .unwrap();
        (audit["entries"].as_array().unwrap().len() >= 5).then_some(())
    })
    .await;
    assert_no_secret_in_logs(&system, &[&unknown]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_bodies_streams_and_repositories_are_limited() {
    let system = System::start_with(
        Options::workers(0)
            .gateway_env("AIDA_RATE_LIMIT_PER_MINUTE", "60")
            .gateway_env("AIDA_RATE_LIMIT_BURST", "40")
            .gateway_env("AIDA_MAX_BODY_BYTES", "4096")
            .gateway_env("AIDA_MAX_SSE_PER_USER", "2"),
    )
    .await;
    let url = |path: &str| format!("{}{path}", system.url);

    // 413 for a body over the limit.
    let (status, body) = status_of(
        system
            .http
            .post(url("/api/tasks"))
            .json(&json!({"repo": "/tmp/x", "description": "x".repeat(8000)}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413, "{body}");

    // A repository outside AIDA_REPO_ROOTS, also through a symlink or
    // `..`, gets one generic answer and nothing is created.
    // Outside the roots (the temporary directory), as the harness sets them.
    let outside = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::create_dir(outside.path().join("escape")).unwrap();
    let inside = GitRepo::with_files(&[("a.txt", "a\n")]);
    std::os::unix::fs::symlink(outside.path(), inside.path.join("link")).unwrap();
    let before = task_count(&system).await;
    let generic = |message: &str| message.contains("AIDA_REPO_ROOTS") && !message.contains("exist");
    for repo in [
        "/etc".to_owned(),
        "/root".to_owned(),
        format!("{}/link", inside.path_str()),
        format!("{}/../../../../../../etc", inside.path_str()),
        "/nonexistent/secret-place".to_owned(),
    ] {
        let (status, body) = status_of(
            system
                .http
                .post(url("/api/tasks"))
                .json(&json!({"repo": repo, "description": "d", "agent": sh_agent("true")}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(status, 400, "{repo}: {body}");
        assert!(generic(&message), "{repo}: {message}");
    }
    assert_eq!(task_count(&system).await, before);
    assert!(
        std::fs::read_dir(outside.path()).unwrap().count() == 1,
        "nothing written outside"
    );

    // At most two live event streams per user.
    let first = system.http.get(url("/api/events")).send().await.unwrap();
    let second = system.http.get(url("/api/events")).send().await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let (status, body) = status_of(system.http.get(url("/api/events")).send().await.unwrap()).await;
    assert_eq!(status, 429, "{body}");
    drop(first);
    eventually("a stream slot to free", || async {
        let resp = system.http.get(url("/api/events")).send().await.ok()?;
        (resp.status().as_u16() == 200).then_some(())
    })
    .await;
    drop(second);

    // 429 with Retry-After past the per-user rate.
    let mut limited = None;
    for _ in 0..200 {
        let resp = system.http.get(url("/api/workers")).send().await.unwrap();
        if resp.status().as_u16() == 429 {
            limited = Some(resp);
            break;
        }
    }
    let resp = limited.expect("the rate limit answered 429");
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let (_, body) = status_of(resp).await;
    assert_eq!(body["error"]["code"], "too_many_requests");
}

/// Every log the system's processes wrote (and the audit log) is free of
/// every secret the test used.
fn assert_no_secret_in_logs(system: &System, extra: &[&str]) {
    let mut secrets = system.secrets.all();
    secrets.extend(extra.iter().map(|s| s.to_string()));
    let logs = system.captured_logs();
    assert!(logs.len() >= 4, "{} logs", logs.len());
    for (name, text) in logs {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{name} contains a secret");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_drains_a_worker_and_it_is_given_nothing_new_until_resumed() {
    let system = System::start(2).await;
    let operator = system.user("opal", "operator").await;
    let drain = format!("{}/api/workers/worker-1/drain", system.url);
    let (status, _) = status_of(operator.post(&drain).send().await.unwrap()).await;
    assert_eq!(status, 403, "only admins manage workers");
    let (status, worker) = status_of(system.http.post(&drain).send().await.unwrap()).await;
    assert_eq!(
        (status, worker["draining"].as_bool()),
        (200, Some(true)),
        "{worker}"
    );

    let repo = GitRepo::with_files(&[("a.txt", "a\n")]);
    let task_id = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "description": "three files",
            "agent": sh_agent("echo x > \"$AIDA_SUBTASK_NAME.txt\""),
            "subtasks": [{"name": "a", "prompt": "p"}, {"name": "b", "prompt": "p"}, {"name": "c", "prompt": "p"}],
        }))
        .await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    let ran_on: Vec<&str> = task["subtasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["worker"].as_str().unwrap())
        .collect();
    assert_eq!(ran_on, ["worker-2"; 3], "the drained worker took nothing");

    let resume = format!("{}/api/workers/worker-1/resume", system.url);
    let (status, worker) = status_of(system.http.post(&resume).send().await.unwrap()).await;
    assert_eq!((status, worker["draining"].as_bool()), (200, Some(false)));
    let (status, _) = status_of(
        system
            .http
            .post(format!("{}/api/workers/nobody/drain", system.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let audit = system.get("/api/audit?action=worker.").await.unwrap();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"worker.drain") && actions.contains(&"worker.resume"),
        "{actions:?}"
    );
}

/// Runs `binary` with exactly `env` (plus PATH) and returns its exit and
/// what it printed; it must stop by itself.
fn run_alone(binary: &str, env: &[(&str, &str)]) -> (bool, String) {
    let out = std::process::Command::new(aida_tests::process::bin(binary))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn services_refuse_to_start_without_their_credentials_naming_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/aida.db", dir.path().display());
    let token = aida_core::secret::random_hex(32);
    /// A binary, its whole environment, and what its refusal must name.
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "aida-gateway",
            vec![("GATEWAY_LISTEN_ADDR", "127.0.0.1:0")],
            "AIDA_INTERNAL_TOKEN",
        ),
        (
            "aida-gateway",
            vec![
                ("GATEWAY_LISTEN_ADDR", "127.0.0.1:0"),
                ("AIDA_INTERNAL_TOKEN", &token),
            ],
            "AIDA_JWT_SECRET",
        ),
        (
            "aida-gateway",
            vec![
                ("GATEWAY_LISTEN_ADDR", "127.0.0.1:0"),
                ("AIDA_INTERNAL_TOKEN", &token),
                ("AIDA_JWT_SECRET", "too-short"),
            ],
            "at least 32 bytes",
        ),
        (
            "aida-gateway",
            vec![
                ("GATEWAY_LISTEN_ADDR", "0.0.0.0:0"),
                ("AIDA_INTERNAL_TOKEN", &token),
                ("AIDA_AUTH", "off"),
            ],
            "AIDA_AUTH=off",
        ),
        (
            "aida-orchestrator",
            vec![
                ("ORCHESTRATOR_LISTEN_ADDR", "127.0.0.1:0"),
                ("DATABASE_URL", &db),
            ],
            "AIDA_INTERNAL_TOKEN",
        ),
        (
            "aida-orchestrator",
            vec![
                ("ORCHESTRATOR_LISTEN_ADDR", "127.0.0.1:0"),
                ("DATABASE_URL", &db),
                ("AIDA_INTERNAL_TOKEN", "short"),
            ],
            "at least 32 bytes",
        ),
        (
            "aida-orchestrator",
            vec![
                ("ORCHESTRATOR_LISTEN_ADDR", "127.0.0.1:0"),
                ("DATABASE_URL", &db),
                ("AIDA_INTERNAL_TOKEN", &token),
            ],
            "AIDA_REPO_ROOTS",
        ),
        (
            "aida-aggregator",
            vec![("AGGREGATOR_LISTEN_ADDR", "127.0.0.1:0")],
            "AIDA_INTERNAL_TOKEN",
        ),
        (
            "aida-worker",
            vec![("WORKER_ID", "w")],
            "AIDA_INTERNAL_TOKEN",
        ),
    ];
    for (binary, env, named) in cases {
        let (ok, output) = run_alone(binary, &env);
        assert!(!ok, "{binary} {env:?} started");
        assert!(
            output.contains(named),
            "{binary} {env:?} does not name {named}: {output}"
        );
        assert!(!output.contains(&token), "{binary} printed the token");
    }
}
