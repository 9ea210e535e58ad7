//! Automatic certificates end to end, against a real ACME CA (Debian's Pebble) whose HTTP-01
//! validations reach drove's router: a custom domain gets a certificate chained to Pebble's
//! root and is served over HTTPS (HTTP/2 by ALPN); a CA refusal and a failed validation show
//! their reasons on the app and are retried with growing delays until one succeeds; a
//! certificate near its end is renewed and swapped while a client keeps sending.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use drove_testkit as support;
use reqwest::Method;
use serde_json::{json, Value};
use support::paas::{agent, node_app, Drove, Options, ADMIN_TOKEN};
use support::pebble::{https_client, Pebble, PebbleOptions};
use support::wait::until_ok;

const T: Duration = Duration::from_secs(60);

/// drove with its PaaS getting certificates from `pebble` (whose HTTP-01 checks come to the
/// router's port `router_port`), retrying failures after 1 s, 2 s, 4 s…, and app shop serving.
async fn drove_with(agent_range: u32, router_port: u16, pebble: &Pebble) -> Drove {
    let mut paas_args = pebble.paas_args();
    paas_args.push("--certificate-retry=1s".into());
    // The apps' own `<app>.localhost` too (Pebble's DNS resolves every name to the router).
    paas_args.push("--acme-own-hostnames".into());
    let options = Options {
        paas_args,
        router_port: Some(router_port),
        ..Options::default()
    };
    let d = Drove::start_with(&[&agent(agent_range)], options).await;
    d.create(node_app("/shop", 1, "shop")).await;
    d.wait_healthy("shop", 1, T).await;
    d
}

/// App shop claims `host` through the API.
async fn claim(d: &Drove, host: &str) {
    let (status, body) = d
        .call(
            Method::POST,
            "/v1/apps/shop/domains",
            Some(json!({ "hostname": host })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// App `app`'s domain `host` as the API shows it.
async fn domain(d: &Drove, app: &str, host: &str) -> Value {
    let listed = d.get(&format!("/v1/apps/{app}/domains")).await;
    listed["domains"]
        .as_array()
        .and_then(|ds| ds.iter().find(|x| x["hostname"] == host))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until `host`'s issuance satisfies `ok`; returns the domain.
async fn issuance_until(
    d: &Drove,
    app: &str,
    host: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    until_ok(&format!("{host}: {what}"), T, || async {
        let dom = domain(d, app, host).await;
        if ok(&dom["issuance"]) {
            Ok(dom)
        } else {
            Err(dom.to_string())
        }
    })
    .await
}

fn rfc3339(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{v} is not RFC 3339: {e}"))
}

/// The router's HTTPS address.
fn https(d: &Drove) -> SocketAddr {
    ([127, 0, 0, 1], d.router_https).into()
}

/// The leaf certificate `client` was served for `url` (DER).
async fn served(client: &reqwest::Client, url: &str) -> Result<(u16, Vec<u8>, String), String> {
    let r = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    let cert = r
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let status = r.status().as_u16();
    Ok((status, cert, r.text().await.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_domain_gets_a_certificate_from_the_acme_ca() {
    let router_port = support::free_port("127.0.0.1");
    let pebble = Pebble::start(router_port, PebbleOptions::default()).await;
    let d = drove_with(40, router_port, &pebble).await;

    // Before any certificate the name gets no TLS at all (the control for what follows).
    let root = pebble.issuing_root().await;
    let client = https_client(&root, &["www.shop.test"], https(&d));
    let url = format!("https://www.shop.test:{}/", d.router_https);
    assert!(
        client.get(&url).send().await.is_err(),
        "served before issued"
    );

    let url_env = d.paas_url();
    let env = [
        ("DROVE_PAAS_URL", url_env.as_str()),
        ("DROVE_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let (ok, out) = support::drove_cli_env(&["domains:add", "shop", "www.shop.test"], &env).await;
    assert!(ok, "{out}");
    let dom = issuance_until(&d, "shop", "www.shop.test", "issued", |i| {
        i["state"] == "issued"
    })
    .await;
    assert_eq!(dom["certificate"]["source"], "acme", "{dom}");
    assert_eq!(dom["issuance"]["authority"], pebble.directory(), "{dom}");
    assert_eq!(dom["issuance"]["attempts"], 0, "{dom}");
    // Renewal is planned at about two thirds of Pebble's five years, not sooner.
    let next = rfc3339(&dom["issuance"]["next"]);
    let soon = SystemTime::now() + Duration::from_secs(3 * 365 * 86_400);
    assert!(next > soon, "renewal planned at {next:?}: {dom}");

    // Served over HTTPS by the router, the chain checked against Pebble's root and the name,
    // HTTP/2 by ALPN; the app sees that the request came over HTTPS.
    let r = until_ok("www.shop.test over HTTPS", T, || async {
        client
            .get(format!("{url}headers"))
            .send()
            .await
            .map_err(|e| format!("{e:?}"))
    })
    .await;
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap_or_default();
    assert!(body.contains("x-forwarded-proto: https"), "{body}");
    // The CLI shows it.
    let (ok, out) = support::drove_cli_env(&["domains", "shop"], &env).await;
    assert!(ok && out.contains("issued"), "drove domains: {out}");

    // The app's own hostname got one too, shown beside its domains.
    let own = until_ok("shop.localhost's certificate", T, || async {
        let listed = d.get("/v1/apps/shop/domains").await;
        match listed["own"]["issuance"]["state"].as_str() {
            Some("issued") => Ok(listed["own"].clone()),
            _ => Err(listed.to_string()),
        }
    })
    .await;
    assert_eq!(own["hostname"], "shop.localhost", "{own}");
    assert_eq!(own["certificate"]["source"], "acme", "{own}");
    let own_client = https_client(&root, &["shop.localhost"], https(&d));
    let (status, _, body) = served(
        &own_client,
        &format!("https://shop.localhost:{}/", d.router_https),
    )
    .await
    .expect("shop.localhost over HTTPS");
    assert_eq!(status, 200, "{body}");

    // A second app's claim on the hostname is refused, naming the holder.
    d.create(node_app("/blog", 0, "blog")).await;
    let (status, body) = d
        .call(
            Method::POST,
            "/v1/apps/blog/domains",
            Some(json!({"hostname": "www.shop.test"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("/shop"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_show_their_reason_and_are_retried_with_backoff() {
    let router_port = support::free_port("127.0.0.1");
    let options = PebbleOptions {
        blocklist: vec!["blocked.test".into()],
        ..PebbleOptions::default()
    };
    let pebble = Pebble::start(router_port, options).await;
    let d = drove_with(41, router_port, &pebble).await;

    // The CA refuses to issue for a name it blocks: its reason is on the app, and the tries
    // go on, each after a longer wait (1 s, 2 s, 4 s).
    claim(&d, "blocked.test").await;
    let dom = issuance_until(&d, "shop", "blocked.test", "failed 3 times", |i| {
        i["state"] == "failed" && i["attempts"].as_u64() >= Some(3)
    })
    .await;
    let i = &dom["issuance"];
    let error = i["error"].as_str().unwrap_or_default();
    assert!(error.contains("rejectedIdentifier"), "{dom}");
    let waited = rfc3339(&i["next"])
        .duration_since(rfc3339(&i["updated"]))
        .unwrap_or_default();
    let attempts = i["attempts"].as_u64().unwrap_or(0) as u32;
    let expected = Duration::from_secs(1 << (attempts - 1)).min(Duration::from_secs(6 * 3600));
    // RFC 3339 seconds: a second either way.
    assert!(
        waited + Duration::from_secs(1) >= expected && waited <= expected + Duration::from_secs(1),
        "after {attempts} failures the next try waits {waited:?}, not {expected:?}: {dom}"
    );
    assert!(dom["certificate"].is_null(), "{dom}");

    // A validation that cannot reach the router (the name resolves elsewhere) fails with the
    // CA's reason; once the name points at the router again, a retry gets the certificate.
    pebble.resolve("late.test", "127.0.0.2").await;
    claim(&d, "late.test").await;
    let dom = issuance_until(&d, "shop", "late.test", "failed validation", |i| {
        i["state"] == "failed"
    })
    .await;
    let error = dom["issuance"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("acme:error:connection"), "{dom}");
    assert!(
        error.contains("127.0.0.2"),
        "the CA's reason names where it went: {dom}"
    );
    pebble.unresolve("late.test").await;
    let dom = issuance_until(&d, "shop", "late.test", "issued after retries", |i| {
        i["state"] == "issued"
    })
    .await;
    assert_eq!(dom["certificate"]["source"], "acme", "{dom}");
    let root = pebble.issuing_root().await;
    let client = https_client(&root, &["late.test"], https(&d));
    let (status, _, body) = served(&client, &format!("https://late.test:{}/", d.router_https))
        .await
        .expect("late.test over HTTPS");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("shop "), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_renewed_while_a_client_keeps_sending() {
    let router_port = support::free_port("127.0.0.1");
    // Certificates of 15 s: renewed about 10 s in.
    let options = PebbleOptions {
        validity_seconds: Some(15),
        ..PebbleOptions::default()
    };
    let pebble = Pebble::start(router_port, options).await;
    let d = drove_with(42, router_port, &pebble).await;
    claim(&d, "renew.test").await;
    let first = issuance_until(&d, "shop", "renew.test", "issued", |i| {
        i["state"] == "issued"
    })
    .await;
    let first_expiry = first["certificate"]["not_after"].clone();

    // One client on one kept-alive connection sends all along, while new connections look
    // at the certificate served.
    let root = pebble.issuing_root().await;
    let url = format!("https://renew.test:{}/", d.router_https);
    let steady = https_client(&root, &["renew.test"], https(&d));
    let (_, original, _) =
        until_ok("the first certificate served", T, || served(&steady, &url)).await;
    let sender = {
        let (steady, url) = (steady.clone(), url.clone());
        tokio::spawn(async move {
            let (mut sent, mut failed) = (0u32, Vec::new());
            let end = tokio::time::Instant::now() + Duration::from_secs(25);
            while tokio::time::Instant::now() < end {
                match served(&steady, &url).await {
                    Ok((200, _, _)) => {}
                    other => failed.push(format!("{other:?}")),
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (sent, failed)
        })
    };
    // A new client each time: one that kept its TLS session would resume it, and a resumed
    // session shows the certificate it began with.
    until_ok("a renewed certificate on new connections", T, || async {
        let fresh = https_client(&root, &["renew.test"], https(&d));
        let (status, cert, _) = served(&fresh, &url).await?;
        if status == 200 && !cert.is_empty() && cert != original {
            Ok(())
        } else {
            Err(format!("{status}, the same certificate"))
        }
    })
    .await;
    let renewed = domain(&d, "shop", "renew.test").await;
    assert_ne!(
        renewed["certificate"]["not_after"], first_expiry,
        "{renewed}"
    );
    assert_eq!(renewed["issuance"]["state"], "issued", "{renewed}");
    let (sent, failed) = sender.await.expect("sender");
    assert!(sent > 100, "only {sent} requests were sent");
    assert!(
        failed.is_empty(),
        "{} of {sent} failed: {failed:?}",
        failed.len()
    );
}

/// `drove up` serves every app's own `<app>.localhost` over HTTPS with a certificate from its
/// local CA (kept in the data dir, its key root's alone); an app that asks for it gets
/// HTTP→HTTPS redirects and HSTS, one that does not gets neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drove_up_serves_apps_over_https_with_redirects_and_hsts_when_asked() {
    use std::os::unix::fs::PermissionsExt;
    let up = support::up::Up::start((28600, 28799), &[]).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut strict = node_app("/strict", 1, "strict");
    strict["https"] = json!({"redirect": true, "hstsMaxAge": 600});
    for app in [node_app("/plain", 1, "plain"), strict] {
        let (status, body) = up.call(Method::POST, "/v2/apps", Some(app)).await;
        assert_eq!(status, 201, "{body}");
    }
    // A bad HSTS age is refused naming the field.
    let mut bad = node_app("/bad", 1, "bad");
    bad["https"] = json!({"hstsMaxAge": 999_999_999u64});
    let (status, body) = up.call(Method::POST, "/v2/apps", Some(bad)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["details"][0]["path"], "/https/hstsMaxAge", "{body}");

    let ca = up.data.join("paas/local-ca");
    let root = std::fs::read_to_string(ca.join("root.pem")).expect("drove up's root");
    let key_mode = std::fs::metadata(ca.join("root.key"))
        .expect("root key")
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o077, 0, "the CA's key is its owner's alone");
    assert!(up.log().contains("root.pem"), "drove up says what to trust");
    let https_addr: SocketAddr = ([127, 0, 0, 1], up.router_https).into();
    let client = support::tls::client_trusting(
        &root,
        &[
            ("plain.localhost", https_addr),
            ("strict.localhost", https_addr),
        ],
    );
    let get = |host: &'static str| {
        let (client, port) = (client.clone(), up.router_https);
        async move {
            let r = client
                .get(format!("https://{host}:{port}/"))
                .send()
                .await
                .map_err(|e| format!("{e:?}"))?;
            let hsts = r
                .headers()
                .get("strict-transport-security")
                .map(|v| v.to_str().unwrap_or_default().to_string());
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            if status == 200 {
                Ok((body, hsts))
            } else {
                Err(format!("{status} {body}"))
            }
        }
    };
    let (body, hsts) = until_ok("plain over HTTPS", T, || get("plain.localhost")).await;
    assert!(body.starts_with("plain "), "{body}");
    assert_eq!(hsts, None, "an app that did not ask gets no HSTS");
    let (body, hsts) = until_ok("strict over HTTPS", T, || get("strict.localhost")).await;
    assert!(body.starts_with("strict "), "{body}");
    assert_eq!(hsts.as_deref(), Some("max-age=600"));

    // Plain HTTP: the app that asked is redirected to the same URL over HTTPS; the other is
    // served.
    let over_http = |host: &'static str| {
        let http = http.clone();
        let router = up.router_port;
        async move {
            http.get(format!("http://127.0.0.1:{router}/path?q=1"))
                .header("Host", host)
                .send()
                .await
                .expect("HTTP request")
        }
    };
    let r = over_http("strict.localhost").await;
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers().get("location").and_then(|v| v.to_str().ok()),
        Some(format!("https://strict.localhost:{}/path?q=1", up.router_https).as_str())
    );
    assert!(r.headers().get("strict-transport-security").is_none());
    let r = over_http("plain.localhost").await;
    assert_eq!(r.status(), 200);

    // The app's own hostname is listed with its certificate from the local CA; deleting the
    // app takes the certificate away (the other app's still serves: the control).
    let (status, listed) = up.call(Method::GET, "/v1/apps/plain/domains", None).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["own"]["hostname"], "plain.localhost", "{listed}");
    assert_eq!(listed["own"]["certificate"]["source"], "local", "{listed}");
    assert_eq!(listed["own"]["issuance"]["authority"], "local", "{listed}");
    let (status, body) = up.call(Method::DELETE, "/v2/apps/plain", None).await;
    assert_eq!(status, 200, "{body}");
    until_ok("plain.localhost to lose its certificate", T, || async {
        let fresh = support::tls::client_trusting(&root, &[("plain.localhost", https_addr)]);
        match fresh
            .get(format!("https://plain.localhost:{}/", up.router_https))
            .send()
            .await
        {
            Err(e) if e.is_connect() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let (body, _) = get("strict.localhost").await.expect("strict still serves");
    assert!(body.starts_with("strict "), "{body}");
}

/// A router on another machine follows the PaaS over HTTPS (`drove paas --tls-listen`, `drove
/// router --paas https://… --paas-ca-file`), so the route stream, which carries certificates'
/// private keys, crosses only TLS. A router that does not trust the PaaS's certificate gets
/// nothing from it; the same router trusting it routes the app (the control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_follows_the_paas_over_https() {
    let dir = support::tempdir();
    let ca = support::tls::TestCa::new("the PaaS's CA");
    let (chain, key) = ca.issue(&["127.0.0.1"]);
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let (cert, key, root) = (
        write("paas.pem", &chain),
        write("paas.key", &key),
        write("ca.pem", &ca.pem()),
    );
    let tls_port = support::free_port("127.0.0.1");
    let options = Options {
        paas_args: vec![
            format!("--tls-listen=127.0.0.1:{tls_port}"),
            format!("--tls-cert={}", cert.display()),
            format!("--tls-key={}", key.display()),
        ],
        ..Options::default()
    };
    let d = Drove::start_with(&[&agent(45)], options).await;
    d.create(node_app("/far", 1, "far")).await;
    d.wait_healthy("far", 1, T).await;

    let router = |name: &str, trust: bool| {
        let (port, admin) = (
            support::free_port("127.0.0.1"),
            support::free_port("127.0.0.1"),
        );
        let mut args = vec![
            "router".to_string(),
            format!("--paas=https://127.0.0.1:{tls_port}"),
            format!("--listen=127.0.0.1:{port}"),
            format!("--admin=127.0.0.1:{admin}"),
            format!("--paas-token={}", support::paas::ROUTER_TOKEN),
            "--threads=1".into(),
        ];
        if trust {
            args.push(format!("--paas-ca-file={}", root.display()));
        }
        let log = dir.path().join(format!("{name}.log"));
        (support::Proc::spawn(name, &args, &log), port, log)
    };
    let via = |port: u16| async move {
        let r = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/"))
            .header("Host", "far.localhost")
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = r.status().as_u16();
        Ok::<_, String>((status, r.text().await.unwrap_or_default()))
    };

    // Not trusting the PaaS's certificate: the stream is refused, and nothing is routed.
    let (_blind, blind_port, blind_log) = router("blind", false);
    until_ok(
        "the untrusting router to give up on the stream",
        T,
        || async {
            let log = std::fs::read_to_string(&blind_log).unwrap_or_default();
            if log.contains("route stream lost") {
                Ok(())
            } else {
                Err(log)
            }
        },
    )
    .await;
    let (status, _) = until_ok("the untrusting router to answer", T, || via(blind_port)).await;
    assert_eq!(status, 404, "nothing routed without the stream");

    // Trusting it: the app is routed, from the stream over HTTPS.
    let (_far, far_port, _) = router("trusting", true);
    let (status, body) = until_ok("the app through the HTTPS-following router", T, || async {
        match via(far_port).await {
            Ok((200, body)) => Ok((200, body)),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(status, 200);
    assert!(body.starts_with("far "), "{body}");
}
