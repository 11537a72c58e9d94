//! A real browser for the dashboard's tests and benchmarks: Debian's
//! headless Chromium driven over WebDriver (`chromedriver`) with
//! fantoccini. Screenshots go to the target's test output directory.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::{eventually, free_port};

/// A headless Chromium session, and the chromedriver that runs it.
pub struct Browser {
    driver: Child,
    pub client: Client,
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a 1280×800 headless session.
    pub async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        eventually("chromedriver to answer", || async {
            reqwest::get(format!("{url}/status"))
                .await
                .ok()
                .filter(|r| r.status().is_success())
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--window-size=1280,800", format!("--user-data-dir={}", profile.path().display())
            ]}),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a browser session");
        let target = crate::process::bin_dir();
        let shots = target
            .parent()
            .unwrap_or(&target)
            .join("tmp")
            .join("dashboard");
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            driver,
            client,
            shots,
            _profile: profile,
        }
    }

    pub async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// Waits for `css` to match an element whose text holds `text`.
    pub async fn text(&self, css: &str, text: &str) -> String {
        eventually(&format!("{css} to show {text:?}"), || async {
            let found = self.client.find(Locator::Css(css)).await.ok()?;
            let shown = found.text().await.ok()?;
            shown.contains(text).then_some(shown)
        })
        .await
    }

    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let found = self.client.find(Locator::Css(css)).await.ok()?;
        found.attr(name).await.ok().flatten()
    }

    pub async fn fill(&self, css: &str, value: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    /// Clicks the element `css` matches, finding it again if the page
    /// redrew it between finding and clicking.
    pub async fn click(&self, css: &str) {
        eventually(&format!("{css} to be clicked"), || async {
            let el = self.client.find(Locator::Css(css)).await.ok()?;
            el.click().await.ok()
        })
        .await
    }

    pub async fn sign_in(&self, base: &str, name: &str, password: &str) {
        self.client.goto(&format!("{base}/")).await.unwrap();
        self.text("h1", "Sign in").await;
        self.fill("#login-name", name).await;
        self.fill("#login-password", password).await;
        self.click("#login-submit").await;
        self.text("#who", name).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
