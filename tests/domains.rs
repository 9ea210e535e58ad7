//! Custom domains end to end, through the `drove` binary: an app claims a hostname (with the
//! CLI and the API), the router routes it to that app, another app's claim on it is refused
//! naming the holder, claims survive a PaaS restart, and a hostname let go (or whose app is
//! deleted) is free for another app.

use std::time::Duration;

use drove_testkit as support;
use reqwest::Method;
use serde_json::json;
use support::paas::{agent, node_app, Drove, ADMIN_TOKEN};
use support::tls::TestCa;
use support::wait::until_ok;

const T: Duration = Duration::from_secs(40);

/// `drove <args>` against `d`'s PaaS, the token in the environment as a user sets it.
async fn cli(d: &Drove, args: &[&str]) -> (bool, String) {
    let url = d.paas_url();
    let env = [
        ("DROVE_PAAS_URL", url.as_str()),
        ("DROVE_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    support::drove_cli_env(args, &env).await
}

/// Waits until a request for `host` through the router answers `status` with a body starting
/// with `body` (any body when empty).
async fn routed(d: &Drove, host: &str, status: u16, body: &str) {
    let what = format!("{host} to answer {status} {body:?} through the router");
    until_ok(&what, T, || async {
        match d.through_router(host, "/").await {
            Ok((s, b)) if s == status && b.starts_with(body) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_domains_route_to_their_app_and_belong_to_one() {
    let mut d = Drove::start(&[&agent(37)]).await;
    d.create(node_app("/shop", 1, "shop")).await;
    d.create(node_app("/blog", 1, "blog")).await;
    d.wait_healthy("shop", 1, T).await;
    d.wait_healthy("blog", 1, T).await;
    // Before any claim the router knows no such host.
    routed(&d, "www.shop.test", 404, "").await;

    // Claimed with the CLI: routed to the app, whatever the Host's case.
    let (ok, out) = cli(&d, &["domains:add", "shop", "WWW.Shop.Test."]).await;
    assert!(ok, "drove domains:add: {out}");
    assert!(out.contains("www.shop.test: routed to /shop"), "{out}");
    routed(&d, "www.shop.test", 200, "shop ").await;
    routed(&d, "WWW.SHOP.TEST", 200, "shop ").await;
    // Its own name still serves it.
    routed(&d, "shop.localhost", 200, "shop ").await;
    let (ok, out) = cli(&d, &["domains", "shop"]).await;
    assert!(ok && out.contains("www.shop.test"), "drove domains: {out}");

    // Another app's claim is refused, naming the holder; its own claim (the control) works.
    let (status, body) = d
        .call(
            Method::POST,
            "/v1/apps/blog/domains",
            Some(json!({"hostname": "www.shop.test"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("/shop")),
        "{body}"
    );
    let (status, body) = d
        .call(
            Method::POST,
            "/v1/apps/blog/domains",
            Some(json!({"hostname": "blog.test"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (body["hostname"].as_str(), body["app"].as_str()),
        (Some("blog.test"), Some("/blog"))
    );
    routed(&d, "blog.test", 200, "blog ").await;
    routed(&d, "www.shop.test", 200, "shop ").await;
    // Claiming it again changes nothing.
    let (status, _) = d
        .call(
            Method::POST,
            "/v1/apps/blog/domains",
            Some(json!({"hostname": "blog.test"})),
        )
        .await;
    assert_eq!(status, 200);

    // Names that are not an app's to claim, each refused saying why; none is kept.
    for (bad, why) in [
        ("x.localhost", "drove's own domain"),
        ("10.0.0.9", "an address"),
        ("no_underscores.test", "not a DNS label"),
    ] {
        let (status, body) = d
            .call(
                Method::POST,
                "/v1/apps/shop/domains",
                Some(json!({"hostname": bad})),
            )
            .await;
        assert_eq!(status, 422, "{bad}: {body}");
        let said = body.to_string();
        assert!(
            said.contains("/hostname") && said.contains(why),
            "{bad}: {said}"
        );
    }
    let (status, body) = d
        .call(Method::POST, "/v1/apps/shop/domains", Some(json!({})))
        .await;
    assert_eq!(status, 422, "a body without a hostname: {body}");
    let listed = d.get("/v1/apps/shop/domains").await;
    assert_eq!(
        listed["domains"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );

    // Claims are kept across a PaaS restart.
    d.kill_paas();
    d.start_paas();
    d.wait_paas().await;
    let listed = d.get("/v1/apps/shop/domains").await;
    assert_eq!(
        listed["domains"][0]["hostname"], "www.shop.test",
        "{listed}"
    );
    routed(&d, "www.shop.test", 200, "shop ").await;

    // Let go: the router stops routing it, and another app may claim it.
    let (ok, out) = cli(&d, &["domains:remove", "shop", "www.shop.test"]).await;
    assert!(ok, "drove domains:remove: {out}");
    routed(&d, "www.shop.test", 404, "").await;
    routed(&d, "shop.localhost", 200, "shop ").await;
    let (ok, out) = cli(&d, &["domains:add", "blog", "www.shop.test"]).await;
    assert!(ok, "{out}");
    routed(&d, "www.shop.test", 200, "blog ").await;
    let (ok, out) = cli(&d, &["domains:remove", "shop", "nothing.test"]).await;
    assert!(!ok && out.contains("no domain"), "{out}");

    // A deleted app's domains are free again.
    let (status, body) = d.call(Method::DELETE, "/v2/apps/blog", None).await;
    assert_eq!(status, 200, "{body}");
    routed(&d, "blog.test", 404, "").await;
    let (status, body) = d
        .call(
            Method::POST,
            "/v1/apps/shop/domains",
            Some(json!({"hostname": "blog.test"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    routed(&d, "blog.test", 200, "shop ").await;

    // The dashboard shows them and adds and removes them (a form without the page's script).
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let session = support::dashboard::login(&http, &d.paas_url(), ADMIN_TOKEN).await;
    let page = || async {
        http.get(format!("{}/admin/apps/shop", d.paas_url()))
            .header("Cookie", &session)
            .send()
            .await
            .expect("the app page")
            .text()
            .await
            .expect("the app page")
    };
    let html = page().await;
    assert!(
        html.contains("data-host=\"blog.test\""),
        "the app page lists its domain"
    );
    let control = |action: &'static str, host: &'static str, csrf: String| {
        let (http, session, url) = (&http, &session, d.paas_url());
        async move {
            let r = http
                .post(format!("{url}/admin/apps/shop/{action}"))
                .header("Cookie", session)
                .form(&[("csrf", csrf.as_str()), ("hostname", host)])
                .send()
                .await
                .expect("the control");
            assert_eq!(r.status(), 303, "{action} {host}: back to the page");
        }
    };
    control(
        "domain-add",
        "shop.example",
        support::dashboard::csrf_field(&html),
    )
    .await;
    routed(&d, "shop.example", 200, "shop ").await;
    let html = page().await;
    assert!(
        html.contains("data-host=\"shop.example\""),
        "listed once added"
    );
    control(
        "domain-remove",
        "blog.test",
        support::dashboard::csrf_field(&html),
    )
    .await;
    routed(&d, "blog.test", 404, "").await;
    assert!(
        !page().await.contains("data-host=\"blog.test\""),
        "gone once removed"
    );
}

/// `drove.hostnames` in package.json are claimed with the release; a push naming a hostname
/// another app holds is refused saying so, and nothing of it is deployed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_json_hostnames_are_claimed_with_a_release() {
    let d = Drove::start(&[&agent(38)]).await;
    d.create(node_app("/taken", 1, "taken")).await;
    d.wait_healthy("taken", 1, T).await;
    let (status, body) = d
        .call(
            Method::POST,
            "/v1/apps/taken/domains",
            Some(json!({"hostname": "taken.test"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let remote = d.create_pushed("site").await;
    let work = support::tempdir();
    let dir = work.path();
    let commit = |hostnames: serde_json::Value, message: &str| {
        let package = json!({
            "name": "site", "version": "1.0.0", "scripts": {"start": "node server.js"},
            "flock": {"instances": 1, "cpus": 0.1, "mem": 64},
            "checks": [{"path": "/health", "intervalSeconds": 1}],
            "drove": {"checkGraceSeconds": 3, "minInstances": 1, "hostnames": hostnames},
        });
        std::fs::write(dir.join("package.json"), package.to_string()).expect("package.json");
        assert!(support::git(dir, &["add", "-A"]).0);
        assert!(support::git(dir, &["commit", "-q", "-m", message]).0);
    };
    assert!(support::git(dir, &["init", "-q", "-b", "main"]).0);
    std::fs::copy(support::paas::server_js(), dir.join("server.js")).expect("server.js");
    commit(json!(["www.site.test", "taken.test"]), "v1");
    let (ok, out) = support::git(dir, &["push", &remote, "main"]);
    assert!(
        !ok,
        "a push claiming another app's hostname went through: {out}"
    );
    assert!(
        out.contains("drove.hostnames") && out.contains("taken.test belongs to the app /taken"),
        "{out}"
    );
    routed(&d, "www.site.test", 404, "").await;
    routed(&d, "taken.test", 200, "taken ").await;

    // Without the other app's hostname: released, and its own is routed to it.
    commit(json!(["www.site.test"]), "v2");
    let (ok, out) = support::git(dir, &["push", &remote, "main"]);
    assert!(ok, "{out}");
    routed(&d, "www.site.test", 200, "").await;
    routed(&d, "site.localhost", 200, "").await;
    let listed = d.get("/v1/apps/site/domains").await;
    assert_eq!(
        listed["domains"][0]["hostname"], "www.site.test",
        "{listed}"
    );
    assert_eq!(
        listed["domains"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
}

/// A test CA and the certificates it issues, as PEM files an operator would have.
struct Ca(TestCa);

impl Ca {
    fn new() -> Ca {
        Ca(TestCa::new("drove test CA"))
    }

    /// A certificate for `name`: (chain PEM, key PEM).
    fn issue(&self, name: &str) -> (String, String) {
        self.0.issue(&[name])
    }

    /// A client that trusts only this CA and reaches `name` at the router's HTTPS port.
    fn client(&self, d: &Drove, name: &str) -> reqwest::Client {
        self.0
            .client(&[(name, ([127, 0, 0, 1], d.router_https).into())])
    }
}

/// `domains:cert` gives a domain the operator's certificate: the router serves the app over
/// HTTPS with it (checked by a client trusting only the operator's CA), across restarts of
/// the PaaS and the router; a certificate that does not fit is refused saying why; letting
/// the domain go stops it being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_certificates_serve_https_through_the_router() {
    let mut d = Drove::start(&[&agent(39)]).await;
    d.create(node_app("/secure", 1, "secure")).await;
    d.wait_healthy("secure", 1, T).await;
    let (ok, out) = cli(&d, &["domains:add", "secure", "secure.test"]).await;
    assert!(ok, "{out}");
    let ca = Ca::new();
    let https = ca.client(&d, "secure.test");
    let url = format!("https://secure.test:{}/", d.router_https);
    // No certificate yet: no HTTPS for it (plain HTTP routes it).
    assert!(
        https.get(&url).send().await.is_err(),
        "HTTPS without a certificate"
    );
    routed(&d, "secure.test", 200, "secure ").await;

    let dir = support::tempdir();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("pem file");
        p.display().to_string()
    };
    let (chain, key) = ca.issue("secure.test");
    let (cert_file, key_file) = (write("cert.pem", &chain), write("key.pem", &key));
    let (ok, out) = cli(
        &d,
        &[
            "domains:cert",
            "secure",
            "secure.test",
            "--cert",
            &cert_file,
            "--key",
            &key_file,
        ],
    )
    .await;
    assert!(
        ok && out.contains("served over HTTPS"),
        "drove domains:cert: {out}"
    );
    assert!(
        !out.contains("PRIVATE KEY"),
        "the key is never echoed: {out}"
    );
    let served = || async {
        match https.get(&url).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                if status == 200 && body.starts_with("secure ") {
                    Ok(())
                } else {
                    Err(format!("{status} {body}"))
                }
            }
            Err(e) => Err(format!("{e:?}")),
        }
    };
    until_ok("secure.test over HTTPS", T, served).await;
    let (ok, out) = cli(&d, &["domains", "secure"]).await;
    assert!(
        ok && out.contains("secure.test") && out.contains("HTTPS until"),
        "{out}"
    );

    // Certificates that do not fit: refused naming the field and why; the one served stays.
    let (other_chain, other_key) = ca.issue("other.test");
    for (chain, key, field, why) in [
        (
            other_chain.as_str(),
            other_key.as_str(),
            "/chain_pem",
            "not secure.test",
        ),
        (
            chain.as_str(),
            other_key.as_str(),
            "/key_pem",
            "not the certificate's key",
        ),
        ("not pem", key.as_str(), "/chain_pem", "no certificate"),
    ] {
        let (status, body) = d
            .call(
                Method::PUT,
                "/v1/apps/secure/domains/secure.test/certificate",
                Some(json!({"chain_pem": chain, "key_pem": key})),
            )
            .await;
        assert_eq!(status, 422, "{field}: {body}");
        let said = body.to_string();
        assert!(
            said.contains(field) && said.contains(why),
            "{field}: {said}"
        );
        assert!(!said.contains("PRIVATE KEY"), "{said}");
    }
    let (status, body) = d
        .call(
            Method::PUT,
            "/v1/apps/secure/domains/nodomain.test/certificate",
            Some(json!({"chain_pem": chain, "key_pem": key})),
        )
        .await;
    assert_eq!(
        status, 404,
        "a certificate for a domain the app lacks: {body}"
    );
    until_ok("secure.test still over HTTPS", T, served).await;

    // Kept across restarts: a new PaaS and a new router serve it from the store.
    d.kill_paas();
    d.start_paas();
    d.wait_paas().await;
    d.router = None;
    d.start_router();
    d.wait_router().await;
    let https = ca.client(&d, "secure.test");
    let served = || async {
        match https.get(&url).send().await {
            Ok(r) if r.status() == 200 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    };
    until_ok("secure.test over HTTPS after restarts", T, served).await;

    // Let go: no longer served, over HTTPS either.
    let (ok, out) = cli(&d, &["domains:remove", "secure", "secure.test"]).await;
    assert!(ok, "{out}");
    let fresh = ca.client(&d, "secure.test");
    until_ok("secure.test's certificate to go", T, || async {
        match fresh.get(&url).send().await {
            Err(_) => Ok(()),
            Ok(r) => Err(format!("{}", r.status())),
        }
    })
    .await;
}
