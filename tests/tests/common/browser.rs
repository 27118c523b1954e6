//! Headless Chromium driven over WebDriver (Debian's `chromium` and `chromedriver`, which the
//! test command installs), for the console's browser tests. Each [`Browser`] starts its own
//! chromedriver on a free port with its own profile folder, saves screenshots under the test's
//! output folder, and reads the browser's console log, so a test fails on any error there.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

pub struct Browser {
    pub client: Client,
    driver: Child,
    /// Where this test's screenshots go.
    pub out_dir: PathBuf,
    _profile: tempfile::TempDir,
}

/// The browser's console log (chromedriver's `se/log` endpoint, `goog:loggingPrefs`).
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or_default()))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(json!({"type": "browser"}).to_string()))
    }
}

/// A Chrome DevTools command through chromedriver (`goog/cdp/execute`).
#[derive(Debug)]
struct Cdp(serde_json::Value);

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/goog/cdp/execute", session_id.unwrap_or_default()))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.0.to_string()))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Browser {
    /// A fresh headless Chromium; `test` names the folder its screenshots go to.
    pub async fn start(test: &str) -> Self {
        let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-browser").join(test);
        std::fs::create_dir_all(&out_dir).unwrap();
        let profile = tempfile::tempdir().unwrap();
        let mut last_error = String::new();
        // A port picked free can be taken before chromedriver binds it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let mut driver = Command::new(std::env::var("WEIR_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into()))
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver (the test command installs Debian's chromium-driver)");
            let deadline = Instant::now() + Duration::from_secs(15);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
                if driver.try_wait().unwrap().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let mut caps = serde_json::Map::new();
            caps.insert(
                "goog:chromeOptions".into(),
                json!({
                    "binary": std::env::var("WEIR_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--no-first-run", "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--disable-extensions", "--window-size=1280,900",
                        format!("--user-data-dir={}", profile.path().display()),
                    ],
                }),
            );
            caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(caps).connect(&format!("http://127.0.0.1:{port}")).await {
                Ok(client) => return Self { client, driver, out_dir, _profile: profile },
                Err(e) => {
                    last_error = e.to_string();
                    let _ = driver.kill();
                    let _ = driver.wait();
                }
            }
        }
        panic!("could not start a browser session: {last_error}");
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Saves a PNG of the page as `<out_dir>/<name>.png`, and under `WEIR_SCREENSHOTS`
    /// (docs/screenshots, by the command the README gives) when that is set.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(self.out_dir.join(format!("{name}.png")), &png).unwrap();
        if let Ok(dir) = std::env::var("WEIR_SCREENSHOTS") {
            // A relative folder is the workspace's (tests run in tests/).
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
        }
    }

    /// Waits for an element, up to 15 s.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css:?} within 15 s: {e}"))
    }

    /// Waits until the element's text contains `text`, up to 15 s; returns its text.
    pub async fn wait_text(&self, css: &str, text: &str) -> String {
        self.wait_for(css, text, |got| got.contains(text)).await
    }

    /// Waits until the element's text is `text`, up to 15 s.
    pub async fn wait_text_is(&self, css: &str, text: &str) {
        self.wait_for(css, text, |got| got.trim() == text).await;
    }

    async fn wait_for(&self, css: &str, text: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if done(&got) {
                return got;
            }
            assert!(Instant::now() < deadline, "{css:?} does not show {text:?} within 15 s; it shows {got:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let input = self.find(css).await;
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap_or_else(|e| panic!("click {css:?}: {e}"));
    }

    pub async fn select(&self, css: &str, value: &str) {
        self.find(css).await.select_by_value(value).await.unwrap_or_else(|e| panic!("select {value} in {css:?}: {e}"));
    }

    /// Makes the page see `prefers-color-scheme: dark` (or light), as a user's system setting.
    pub async fn color_scheme(&self, scheme: &str) {
        let command = json!({
            "cmd": "Emulation.setEmulatedMedia",
            "params": {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
        });
        self.client.issue_cmd(Cdp(command)).await.expect("emulate the color scheme");
    }

    /// Resizes the window (the viewport follows).
    pub async fn window(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.expect("resize the window");
    }

    /// Runs a script in the page and returns its value.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client.execute(script, Vec::new()).await.unwrap_or_else(|e| panic!("run {script:?}: {e}"))
    }

    /// Everything the page logged as a warning or error since the last call.
    pub async fn console_errors(&self) -> Vec<String> {
        let log = self.client.issue_cmd(BrowserLog).await.expect("read the browser's console log");
        log.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter(|e| matches!(e["level"].as_str(), Some("SEVERE" | "WARNING")))
                    .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Takes the console's entries since the last read: each must contain one of `expected`
    /// (a request the test meant to be refused logs its status), and each of `expected` must
    /// be there.
    pub async fn expect_console_errors(&self, expected: &[&str]) {
        let errors = self.console_errors().await;
        for e in &errors {
            assert!(expected.iter().any(|x| e.contains(x)), "an unexpected error in the browser's console: {e}");
        }
        for x in expected {
            assert!(errors.iter().any(|e| e.contains(x)), "no {x:?} in the browser's console: {errors:#?}");
        }
    }

    /// Fails the test on any error in the browser's console.
    pub async fn assert_no_console_errors(&self) {
        let errors = self.console_errors().await;
        assert!(errors.is_empty(), "the browser's console has errors: {errors:#?}");
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // A test that failed before `close` leaves the browser chromedriver started: its
        // processes are the ones whose command line names this browser's profile folder.
        let profile = self._profile.path().to_string_lossy().into_owned();
        let _ = Command::new("pkill").args(["-KILL", "-f", &profile]).status();
    }
}
