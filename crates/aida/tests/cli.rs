//! The `aida` binary against a real gateway on a real port, with sign-in on
//! as it always is. No orchestrator runs here, so these cover what a user
//! sees when something is wrong (the API's error message on stderr and a
//! non-zero exit), and which token the CLI sends: access tokens are signed
//! here with the gateway's own secret, and the gateway checks them without
//! the orchestrator.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use aida_core::auth::Role;
use aida_core::secret::SecretString;
use aida_gateway::auth::jwt::JwtKeys;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

struct Gateway {
    url: String,
    keys: JwtKeys,
    /// The CLI's home and configuration directory: never the user's.
    home: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Gateway {
    /// A gateway whose orchestrator address has nothing listening.
    async fn start() -> Gateway {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let orchestrator_addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let jwt_secret = aida_core::secret::random_hex(32);
        let config = aida_gateway::Config {
            gateway_listen_addr: addr.to_string(),
            orchestrator_addr,
            security: aida_core::grpc::Security::with_token(SecretString::from(
                aida_core::secret::random_hex(32),
            )),
            secrets: aida_gateway::Secrets {
                jwt_secret: Some(SecretString::from(jwt_secret.clone())),
                webhook_secrets: vec![],
            },
            ..Default::default()
        };
        let keys = JwtKeys::new(
            &SecretString::from(jwt_secret),
            &config.jwt_issuer,
            &config.jwt_audience,
            Duration::from_secs(config.access_token_ttl_secs),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(aida_gateway::run(config, listener, async {
            let _ = stopped.await;
        }));
        Gateway {
            url: format!("http://{addr}"),
            keys,
            home: tempfile::tempdir().unwrap(),
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// An access token this gateway accepts.
    fn access_token(&self, user: &str, role: Role) -> String {
        self.keys.issue(user, role, "session-1").unwrap()
    }

    fn credentials_file(&self) -> std::path::PathBuf {
        self.home.path().join("config/aida/credentials.json")
    }

    /// Runs `aida` with this gateway's URL, in a home of its own, with
    /// `AIDA_TOKEN` only when given.
    async fn aida(&self, token: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_aida"));
        cmd.args(args)
            .env("AIDA_URL", &self.url)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env_remove("AIDA_TOKEN")
            .current_dir(self.home.path());
        if let Some(token) = token {
            cmd.env("AIDA_TOKEN", token);
        }
        cmd.output().await.unwrap()
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.server.take().unwrap().await.unwrap().unwrap();
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Writes a credentials file as `aida login` would, with one entry.
fn store_login(path: &Path, url: &str, access_token: &str) {
    let body = serde_json::json!({
        "gateways": {
            url: {
                "username": "alice",
                "access_token": access_token,
                "source": "login"
            }
        }
    });
    aida_core::secret::write_private(path, body.to_string().as_bytes()).unwrap();
}

#[tokio::test]
async fn api_errors_are_shown_with_their_message_and_fail() {
    let gateway = Gateway::start().await;
    let token = gateway.access_token("alice", Role::Admin);
    let token = Some(token.as_str());

    let output = gateway.aida(token, &["task", "list"]).await;
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "no data on stdout");
    assert!(
        stderr(&output).contains("orchestrator unavailable"),
        "{}",
        stderr(&output)
    );

    let output = gateway.aida(token, &["task", "show", "not-a-uuid"]).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("\"not-a-uuid\" is not a valid task id"),
        "{}",
        stderr(&output)
    );

    let output = gateway
        .aida(
            token,
            &[
                "task",
                "create",
                "--repo",
                "/r",
                "--description",
                "d",
                "--",
                "true",
            ],
        )
        .await;
    assert!(!output.status.success());
    assert!(stderr(&output).contains("HTTP 503"), "{}", stderr(&output));

    gateway.stop().await;
}

#[tokio::test]
async fn without_a_token_the_cli_says_how_to_sign_in() {
    let gateway = Gateway::start().await;

    let output = gateway.aida(None, &["task", "list"]).await;
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let text = stderr(&output);
    assert!(text.contains("HTTP 401"), "{text}");
    // Not the default URL, so the hint names it.
    assert!(
        text.contains(&format!("run `aida login --url {}`", gateway.url))
            && text.contains("AIDA_TOKEN"),
        "{text}"
    );

    // A token the gateway did not sign is refused, and the CLI says which.
    let output = gateway
        .aida(Some("eyJhbGciOiJIUzI1NiJ9.e30.bm9wZQ"), &["whoami"])
        .await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("the token in AIDA_TOKEN was refused"),
        "{}",
        stderr(&output)
    );

    gateway.stop().await;
}

#[tokio::test]
async fn the_stored_login_is_sent_to_its_gateway_and_aida_token_overrides_it() {
    let gateway = Gateway::start().await;
    let alice = gateway.access_token("alice", Role::Operator);
    store_login(&gateway.credentials_file(), &gateway.url, &alice);

    let output = gateway.aida(None, &["whoami"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "alice (operator) via jwt\n");

    let bob = gateway.access_token("bob", Role::Viewer);
    let output = gateway.aida(Some(&bob), &["whoami", "--json"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let me: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(me["name"], "bob");
    assert_eq!(me["role"], "viewer");

    // The login belongs to its URL: another gateway does not get it.
    let other = Gateway::start().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_aida"))
        .args(["whoami", "--url", &other.url])
        .env("HOME", gateway.home.path())
        .env("XDG_CONFIG_HOME", gateway.home.path().join("config"))
        .env_remove("AIDA_TOKEN")
        .env_remove("AIDA_URL")
        .current_dir(gateway.home.path())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("not signed in"),
        "{}",
        stderr(&output)
    );

    // Nothing the CLI printed holds a token.
    for output in [gateway.aida(None, &["whoami"]).await, output] {
        for token in [&alice, &bob] {
            assert!(!stdout(&output).contains(token.as_str()));
            assert!(!stderr(&output).contains(token.as_str()));
        }
    }
    other.stop().await;
    gateway.stop().await;
}

#[tokio::test]
async fn an_unreachable_gateway_is_named() {
    let gateway = Gateway::start().await;
    let url = gateway.url.clone();
    let config = tempfile::tempdir().unwrap();
    gateway.stop().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_aida"))
        .args(["workers", "--url", &url])
        .env("XDG_CONFIG_HOME", config.path())
        .env_remove("AIDA_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(&format!("cannot reach the gateway at {url}")),
        "{}",
        stderr(&output)
    );
}
