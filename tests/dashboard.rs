//! The admin dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`)
//! driven over WebDriver, against `drove up` with an app deployed by `git push`: log in, watch
//! the app change live as its controls are used, roll back a release, and be refused without
//! a session or with a bad CSRF token. Screenshots of every page at laptop and phone widths
//! land in `target/tmp/dashboard/`.

use drove_testkit as support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use support::up::Up;
use support::wait::until_ok;
use support::{dashboard, git};

const PASSWORD: &str = "correct horse battery staple";
/// A config value with markup in it: shown only when asked, and as text.
const SECRET: &str = "second-release-secret <i>not markup</i>";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// `chromedriver` on a loopback port, killed when dropped.
struct ChromeDriver(Child);

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser(profile: &Path) -> (ChromeDriver, Client) {
    assert!(
        Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
        "this test needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
    );
    let port = support::free_port("127.0.0.1");
    let driver = ChromeDriver(
        Command::new(CHROMEDRIVER)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                     format!("--user-data-dir={}", profile.display())],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let client = until_ok("a WebDriver session", Duration::from_secs(30), || async {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    (driver, client)
}

async fn text(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css))
        .await
        .map(|v| v.len())
        .unwrap_or(0)
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

/// The page's result line once it says something other than "working…".
async fn result(c: &Client) -> String {
    until_ok("the control's result", Duration::from_secs(60), || async {
        let t = text(c, "#result").await;
        if t.is_empty() || t.starts_with("working") {
            Err(t)
        } else {
            Ok(t)
        }
    })
    .await
}

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Saves the whole page at `width` (the window grows to the page's height).
async fn screenshot(c: &Client, url: &str, width: u32, name: &str) {
    c.set_window_size(width, 900).await.expect("window size");
    c.goto(url).await.expect("goto");
    // The page comes rendered (the live stream only updates it): let it lay out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let height = c
        .execute("return document.documentElement.scrollHeight", vec![])
        .await
        .ok()
        .and_then(|v| v.as_u64())
        .unwrap_or(900)
        .clamp(600, 5000) as u32;
    c.set_window_size(width, height + 140)
        .await
        .expect("resize");
    let wide = c
        .execute("return document.documentElement.scrollWidth", vec![])
        .await
        .ok()
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    assert!(
        wide <= u64::from(width),
        "{name}: the page is {wide} px wide at {width} px"
    );
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(shots().join(format!("{name}.png")), png).expect("saving a screenshot");
}

fn package() -> Value {
    json!({
        "name": "shop", "version": "1.0.0",
        "scripts": {"start": "node server.js"},
        "flock": {"instances": 1, "cpus": 0.1, "mem": 64},
        "checks": [{"path": "/health", "intervalSeconds": 1, "maxConsecutiveFailures": 2}],
        "drove": {"checkGraceSeconds": 3, "minInstances": 0, "idleSeconds": 600}
    })
}

async fn api(up: &Up, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", up.paas_url))
        .bearer_auth(&up.token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("the PaaS answers");
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

async fn through_router(up: &Up) -> Result<String, String> {
    let (url, host) = up.app_request("shop");
    let r = reqwest::Client::new()
        .get(url)
        .header("Host", host)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let body = r.text().await.map_err(|e| e.to_string())?;
    if status == 200 {
        Ok(body)
    } else {
        Err(format!("{status}: {body}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    let up = Up::start((22800, 22999), &[("DROVE_ADMIN_PASSWORD", PASSWORD)]).await;
    assert!(up.log().contains("/admin"), "drove up names the dashboard");

    // An app pushed with git (v1), then a config change (v2).
    let created = api(
        &up,
        reqwest::Method::POST,
        "/v1/push/apps",
        Some(json!({"name": "shop"})),
    )
    .await;
    let remote = support::push_remote(&created);
    let work = support::tempdir();
    let dir = work.path();
    assert!(git(dir, &["init", "-q"]).0);
    std::fs::copy(support::paas::server_js(), dir.join("server.js")).expect("server.js");
    std::fs::write(dir.join("package.json"), package().to_string()).expect("package.json");
    assert!(git(dir, &["add", "-A"]).0);
    assert!(git(dir, &["commit", "-q", "-m", "v1"]).0);
    let (ok, out) = git(dir, &["push", &remote, "main"]);
    assert!(ok && out.contains("released v1"), "{out}\n{}", up.log());
    api(
        &up,
        reqwest::Method::PATCH,
        "/v1/push/apps/shop/config",
        Some(json!({"set": {"MESSAGE": SECRET}})),
    )
    .await;
    let body = until_ok("v2 serving", Duration::from_secs(60), || {
        through_router(&up)
    })
    .await;
    assert!(body.starts_with(SECRET), "{body}");

    let profile = support::tempdir();
    let (_driver, c) = browser(profile.path()).await;
    let base = up.paas_url.clone();

    // No session: every page sends the browser to the login.
    c.goto(&format!("{base}/admin/apps/shop")).await.unwrap();
    let url = c.current_url().await.unwrap();
    assert!(url.path() == "/admin/login", "{url}");
    // A wrong password is refused; the configured one opens a session.
    c.find(Locator::Id("secret"))
        .await
        .unwrap()
        .send_keys("wrong")
        .await
        .unwrap();
    click(&c, "#login").await;
    until_ok(
        "the wrong password refused",
        Duration::from_secs(10),
        || async {
            let t = text(&c, ".result.err").await;
            if t.contains("Wrong token or password") {
                Ok(())
            } else {
                Err(t)
            }
        },
    )
    .await;
    c.find(Locator::Id("secret"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    click(&c, "#login").await;
    until_ok(
        "logged in, on the apps page",
        Duration::from_secs(10),
        || async {
            let url = c.current_url().await.map_err(|e| e.to_string())?;
            if url.path() == "/admin/apps" {
                Ok(())
            } else {
                Err(url.to_string())
            }
        },
    )
    .await;
    let cookie = c
        .get_named_cookie("drove_session")
        .await
        .expect("a session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()).as_deref(),
        Some("Strict")
    );
    assert!(cookie.expires().is_some(), "the session cookie expires");

    // The apps page lists the pushed app with its state and instances.
    let row = until_ok(
        "the app listed as running",
        Duration::from_secs(30),
        || async {
            let t = text(&c, "tr[data-app=shop]").await;
            if t.contains("/shop") && t.contains("1 / 1") {
                Ok(t)
            } else {
                Err(t)
            }
        },
    )
    .await;
    assert!(
        row.contains("idle") || row.contains("running"),
        "state: {row}"
    );

    // The app page: change the instances, and see the count and the list follow, live.
    c.goto(&format!("{base}/admin/apps/shop")).await.unwrap();
    c.execute("window.notReloaded = true;", vec![])
        .await
        .unwrap();
    let field = c.find(Locator::Id("instances")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys("2").await.unwrap();
    click(&c, "#set-instances").await;
    let said = result(&c).await;
    assert!(said.contains("scaling /shop to 2"), "{said}");
    until_ok(
        "2 instances ready, shown live",
        Duration::from_secs(60),
        || async {
            let (n, rows) = (text(&c, "#count").await, count(&c, "tr.instance").await);
            if n == "2 / 2" && rows == 2 {
                Ok(())
            } else {
                Err(format!("count {n:?}, {rows} rows"))
            }
        },
    )
    .await;
    let addrs = text(&c, "#instances-list").await;
    assert!(addrs.contains("127.0.0.1:22"), "host:port shown: {addrs}");
    let still = c
        .execute("return window.notReloaded === true;", vec![])
        .await;
    assert_eq!(still.ok(), Some(json!(true)), "the page was not reloaded");

    // A bad CSRF token is refused and changes nothing.
    c.execute(
        "document.querySelector('form[action$=\"/instances\"] input[name=csrf]').value = 'forged';",
        vec![],
    )
    .await
    .unwrap();
    let field = c.find(Locator::Id("instances")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys("3").await.unwrap();
    click(&c, "#set-instances").await;
    let said = result(&c).await;
    assert!(said.contains("csrf"), "{said}");
    let app = api(&up, reqwest::Method::GET, "/v2/apps/shop", None).await;
    assert_eq!(app["app"]["instances"], 2, "nothing changed: {app}");
    c.refresh().await.unwrap();

    // Scale to zero, then wake.
    click(&c, "#zero").await;
    let said = result(&c).await;
    assert!(said.contains("scaling /shop to 0"), "{said}");
    until_ok("at zero, shown live", Duration::from_secs(60), || async {
        let (s, rows) = (text(&c, "#state").await, count(&c, "tr.instance").await);
        if s == "at zero" && rows == 0 {
            Ok(())
        } else {
            Err(format!("{s:?}, {rows} rows"))
        }
    })
    .await;
    click(&c, "#wake").await;
    let said = result(&c).await;
    assert!(said.contains("awake"), "{said}");
    until_ok("awake again", Duration::from_secs(60), || async {
        let (n, s) = (text(&c, "#count").await, text(&c, "#state").await);
        if n == "1 / 1" && s != "at zero" && s != "waking" {
            Ok(())
        } else {
            Err(format!("{n:?} {s:?}"))
        }
    })
    .await;
    let decisions = text(&c, "#scaler").await;
    assert!(
        decisions.contains("2 → 0") && decisions.contains("0 → 1"),
        "the scaler's decisions: {decisions}"
    );

    // Suspend (it asks first): no instances, shown as suspended, requests 503; then resume.
    click(&c, "#suspend").await;
    c.accept_alert().await.expect("suspending asks first");
    let said = result(&c).await;
    assert!(said.contains("/shop: suspended"), "{said}");
    until_ok("suspended, shown live", Duration::from_secs(60), || async {
        let (s, rows) = (text(&c, "#state").await, count(&c, "tr.instance").await);
        if s == "suspended" && rows == 0 {
            Ok(())
        } else {
            Err(format!("{s:?}, {rows} rows"))
        }
    })
    .await;
    let (url, host) = up.app_request("shop");
    let r = reqwest::Client::new()
        .get(&url)
        .header("Host", &host)
        .send()
        .await
        .expect("a request to the suspended app");
    assert_eq!(r.status(), 503, "a suspended app is not woken");
    click(&c, "#resume").await;
    let said = result(&c).await;
    assert!(said.contains("/shop: resumed"), "{said}");
    click(&c, "#wake").await;
    let said = result(&c).await;
    assert!(said.contains("awake"), "{said}");
    until_ok(
        "awake after the resume",
        Duration::from_secs(60),
        || async {
            let (n, s) = (text(&c, "#count").await, text(&c, "#state").await);
            if n == "1 / 1" && s != "suspended" && s != "waking" {
                Ok(())
            } else {
                Err(format!("{n:?} {s:?}"))
            }
        },
    )
    .await;

    // Bad input is refused with the API's message, naming the field; a restart goes through.
    let min = c
        .find(Locator::Css("form.scaling input[name=min]"))
        .await
        .unwrap();
    min.clear().await.unwrap();
    min.send_keys("50").await.unwrap();
    click(&c, "#save-scaling").await;
    let said = result(&c).await;
    assert!(said.contains("/scaling/minInstances"), "{said}");
    let before = text(&c, "tr.instance small").await;
    click(&c, "#restart").await;
    let said = result(&c).await;
    assert!(said.contains("restarting /shop"), "{said}");
    until_ok(
        "restarted: one new instance ready",
        Duration::from_secs(60),
        || async {
            let n = text(&c, "#count").await;
            let rows = count(&c, "tr.instance").await;
            let now = text(&c, "tr.instance small").await;
            if n == "1 / 1" && rows == 1 && now != before {
                Ok(())
            } else {
                Err(format!("{n:?}, {rows} rows"))
            }
        },
    )
    .await;

    // Config values are hidden until asked for.
    let page = c.source().await.unwrap();
    assert!(page.contains("MESSAGE") && !page.contains("second-release-secret"));
    let link = format!("shop.localhost:{}", up.router_port);
    assert!(
        page.contains(&link),
        "the app's link names the router's port"
    );
    // Its own hostname has a certificate from drove up's local CA: the page links it over HTTPS.
    let https_link = format!("https://shop.localhost:{}/", up.router_https);
    until_ok("the app's HTTPS link", Duration::from_secs(30), || async {
        c.refresh().await.map_err(|e| e.to_string())?;
        let page = c.source().await.map_err(|e| e.to_string())?;
        if page.contains(&https_link) {
            Ok(())
        } else {
            Err("no HTTPS link yet".to_string())
        }
    })
    .await;
    click(&c, "#show-config").await;
    until_ok(
        "the config value shown",
        Duration::from_secs(30),
        || async {
            let t = text(&c, "#config").await;
            if t.contains(SECRET) {
                Ok(())
            } else {
                Err(t)
            }
        },
    )
    .await;
    // The value is the app's text, not markup.
    assert_eq!(count(&c, "#config i").await, 0, "config values are escaped");

    // Roll back to v1 from its row: a new release (v3) with v1's config serves.
    let log = text(&c, "#releases").await;
    assert!(log.contains("v1") && log.contains("v2"), "{log}");
    click(&c, "tr.release[data-version=v1] button.rollback").await;
    c.accept_alert().await.expect("the rollback asks first");
    let said = result(&c).await;
    assert!(
        said.contains("rolled back") && said.contains("v3"),
        "{said}"
    );
    until_ok("v3 listed as serving", Duration::from_secs(30), || async {
        let t = text(&c, "tr.release[data-version=v3]").await;
        if t.contains("serving") && t.contains("rollback to v1") {
            Ok(())
        } else {
            Err(t)
        }
    })
    .await;
    let body = until_ok("v1's config serving", Duration::from_secs(60), || {
        through_router(&up)
    })
    .await;
    assert!(body.starts_with("hello "), "{body}");
    let build_log = c
        .execute(
            "return document.querySelector('#log-v1 pre').textContent",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        build_log.as_str().is_some_and(|l| !l.is_empty()),
        "v1's build log: {build_log}"
    );

    // An app that cannot fit waits for resources; the cluster page says why.
    api(
        &up,
        reqwest::Method::POST,
        "/v2/apps",
        Some(
            json!({"id": "/hog", "cmd": "exec sleep 600", "instances": 2, "cpus": 1.5, "mem": 32}),
        ),
    )
    .await;
    c.goto(&format!("{base}/admin/cluster")).await.unwrap();
    until_ok(
        "the waiting app explained",
        Duration::from_secs(30),
        || async {
            let t = text(&c, "#starving").await;
            if t.contains("/hog") && t.contains("InsufficientCpus") {
                Ok(())
            } else {
                Err(t)
            }
        },
    )
    .await;
    let agents = text(&c, "#agents").await;
    assert!(
        agents.contains("1.6 / 2 cpus") && agents.contains("active"),
        "{agents}"
    );

    // Requests through the router reach the app's charts (the last hour, sampled every 10 s).
    let traffic = {
        let (url, host) = up.app_request("shop");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for _ in 0..600 {
                let _ = http.get(&url).header("Host", &host).send().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    c.goto(&format!("{base}/admin/apps/shop")).await.unwrap();
    until_ok("a request rate drawn", Duration::from_secs(45), || async {
        let rate = c
            .execute(
                "return document.querySelector('#charts figure').innerHTML",
                vec![],
            )
            .await
            .map_err(|e| e.to_string())?;
        let svg = rate.as_str().unwrap_or("");
        if svg.contains(" L") && !svg.contains("no data yet") {
            Ok(())
        } else {
            Err(svg.chars().take(200).collect::<String>())
        }
    })
    .await;
    let charts = text(&c, "#charts").await;
    assert!(
        charts.contains("req/s") && charts.contains("p99"),
        "{charts}"
    );
    traffic.abort();

    // An app whose process keeps exiting is failing, with its last failure.
    api(
        &up,
        reqwest::Method::POST,
        "/v2/apps",
        Some(
            json!({"id": "/crash", "cmd": "echo 'cannot start' >&2; exit 3", "instances": 1,
                    "cpus": 0.1, "mem": 32}),
        ),
    )
    .await;
    c.goto(&format!("{base}/admin/apps")).await.unwrap();
    until_ok(
        "the crashing app shown failing",
        Duration::from_secs(30),
        || async {
            let t = text(&c, "tr[data-app=crash]").await;
            if t.contains("failing") && t.contains("last failure") {
                Ok(())
            } else {
                Err(t)
            }
        },
    )
    .await;
    let hog = text(&c, "tr[data-app=hog]").await;
    assert!(
        hog.contains("waiting for resources: InsufficientCpus"),
        "{hog}"
    );

    // Screenshots of every page at both widths.
    for (width, tag) in [(1280, "laptop"), (390, "phone")] {
        for (path, name) in [
            ("/admin/cluster", "cluster"),
            ("/admin/apps", "apps"),
            ("/admin/apps/shop", "app"),
        ] {
            screenshot(
                &c,
                &format!("{base}{path}"),
                width,
                &format!("{name}-{tag}"),
            )
            .await;
        }
    }
    // The last page shot is the app's, at phone width: its charts are there.
    let app_page = c.source().await.unwrap();
    assert!(
        app_page.contains("class=\"chart\""),
        "the app's charts at phone width"
    );

    // Logging out ends the session.
    c.set_window_size(1280, 900).await.unwrap();
    c.goto(&format!("{base}/admin/apps")).await.unwrap();
    click(&c, ".logout button").await;
    until_ok("logged out", Duration::from_secs(10), || async {
        let url = c.current_url().await.map_err(|e| e.to_string())?;
        if url.path() == "/admin/login" {
            Ok(())
        } else {
            Err(url.to_string())
        }
    })
    .await;
    c.goto(&format!("{base}/admin/apps/shop")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/admin/login");
    c.close().await.unwrap();

    // Without the browser: the session cookie is the only way in, and a control needs it and
    // its CSRF token.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .post(format!("{base}/admin/apps/shop/zero"))
        .form(&[("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a control without a session");
    let r = http
        .get(format!("{base}/admin/live?page=apps"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the live stream without a session");
    let r = http
        .get(format!("{base}/admin/apps"))
        .bearer_auth(&up.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the API token is not a dashboard session");
    let app = api(&up, reqwest::Method::GET, "/v2/apps/shop", None).await;
    assert_eq!(app["app"]["instances"], 1, "{app}");

    // The admin token logs in too; the login form wants its own cookie back (no login from
    // another site's form).
    let form = dashboard::login_form(&http, &base).await;
    let r = http
        .post(format!("{base}/admin/login"))
        .form(&[("secret", up.token.as_str()), ("csrf", form.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a login without the form's cookie");
    let r = http
        .post(format!("{base}/admin/login"))
        .header("Cookie", &form.cookie)
        .form(&[("secret", up.token.as_str()), ("csrf", form.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the admin token logs in");
    let session = dashboard::set_cookie(&r, "drove_session").expect("a session cookie");
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/admin",
        "Max-Age=28800",
    ] {
        assert!(session.contains(attr), "{attr} in {session}");
    }
    let session = session.split(';').next().unwrap_or_default().to_string();
    let page = http
        .get(format!("{base}/admin/apps/shop"))
        .header("Cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = dashboard::csrf_field(&page);
    // The right token from another site's page is still refused.
    let r = http
        .post(format!("{base}/admin/apps/shop/zero"))
        .header("Cookie", &session)
        .header("Origin", "http://evil.example")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a cross-origin control");
    // An open live stream ends when its session does.
    let mut live = http
        .get(format!("{base}/admin/live?page=app&app=shop"))
        .header("Cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(10), live.chunk())
        .await
        .expect("the stream's first blocks")
        .unwrap();
    assert!(first.is_some_and(|c| String::from_utf8_lossy(&c).contains("fragment")));
    let r = http
        .post(format!("{base}/admin/logout"))
        .header("Cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        while let Ok(Some(_)) = live.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the live stream outlived its session");
    let app = api(&up, reqwest::Method::GET, "/v2/apps/shop", None).await;
    assert_eq!(app["app"]["instances"], 1, "nothing was scaled: {app}");

    println!("screenshots in {}", shots().display());
}
