//! The router's HTTPS listener, in process, with a fake PaaS streaming certificates and a
//! real TLS client that checks the chain and the name: each hostname gets its own
//! certificate by SNI, a name without one gets no certificate at all, a new set replaces the
//! old one without a restart or a dropped connection, and the app sees
//! `X-Forwarded-Proto: https`.

use std::net::SocketAddr;
use std::time::Duration;

use drove_testkit::router::{app_json, free_port, Backend, Paas, RouterUnderTest};
use drove_testkit::tls::TestCa;
use drove_testkit::wait::until_ok;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

/// A test CA, issuing certificates as the route stream carries them.
struct Ca(TestCa);

impl Ca {
    fn new(name: &str) -> Ca {
        Ca(TestCa::new(name))
    }

    /// A certificate for `names` signed by this CA, as the route stream carries it.
    fn issue(&self, names: &[&str]) -> Value {
        let (chain, key) = self.0.issue(names);
        json!({"hostnames": names, "chain_pem": chain, "key_pem": key})
    }

    /// An HTTPS client trusting only this CA, reaching every name at `addr`.
    fn client(&self, addr: SocketAddr, names: &[&str]) -> reqwest::Client {
        let resolve: Vec<(&str, SocketAddr)> = names.iter().map(|n| (*n, addr)).collect();
        self.0.client(&resolve)
    }
}

async fn get(c: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let r = c.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    let status = r.status().as_u16();
    Ok((status, r.text().await.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_each_hostname_its_certificate_and_swaps_them_live() {
    let paas = Paas::start().await;
    let (shop, blog) = (Backend::start("shop").await, Backend::start("blog").await);
    let mut app = app_json("shop", &[(shop.addr, true, false)]);
    app["hostnames"] = json!(["www.shop.test"]);
    paas.upsert(app);
    let mut app = app_json("blog", &[(blog.addr, true, false)]);
    app["hostnames"] = json!(["blog.test"]);
    paas.upsert(app);
    let https: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let r = RouterUnderTest::in_process(&paas.url, &["--https-listen", &https.to_string()]);
    let names = ["www.shop.test", "blog.test", "nocert.test"];
    let ca = Ca::new("drove test CA");
    let c = ca.client(https, &names);
    // Routed over plain HTTP first: the route stream is up.
    until_ok("the plain listener to route shop", T, || async {
        let resp = reqwest::Client::new()
            .get(r.url("/"))
            .header("Host", "www.shop.test")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        match resp.status().as_u16() {
            200 => Ok(()),
            s => Err(format!("{s}")),
        }
    })
    .await;

    paas.certificates(json!([
        ca.issue(&["www.shop.test"]),
        ca.issue(&["blog.test"])
    ]));
    let shop_url = format!("https://www.shop.test:{}/", https.port());
    let body = until_ok("shop over HTTPS", T, || get(&c, &shop_url)).await;
    assert_eq!(body, (200, "shop".to_string()));
    let blog_url = format!("https://blog.test:{}/", https.port());
    assert_eq!(get(&c, &blog_url).await, Ok((200, "blog".to_string())));
    // The app is told the client came over HTTPS, whatever the client claimed.
    let seen = c
        .get(format!("{shop_url}headers"))
        .header("x-forwarded-proto", "gopher")
        .send()
        .await
        .expect("headers over HTTPS")
        .text()
        .await
        .expect("headers");
    assert!(seen.contains("x-forwarded-proto: https\n"), "{seen}");
    assert!(!seen.contains("gopher"), "{seen}");

    // A routed name without a certificate gets none: the handshake fails (no other app's).
    let mut app = app_json("nocert", &[(blog.addr, true, false)]);
    app["hostnames"] = json!(["nocert.test"]);
    paas.upsert(app);
    let nocert_url = format!("https://nocert.test:{}/", https.port());
    let e = get(&c, &nocert_url)
        .await
        .expect_err("no certificate for nocert.test");
    assert!(
        e.contains("Connect") || e.contains("handshake") || e.contains("tls"),
        "{e}"
    );
    // A client that does not check names still gets nothing (no fallback certificate).
    let lax = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .resolve("nocert.test", https)
        .build()
        .expect("client");
    assert!(
        get(&lax, &nocert_url).await.is_err(),
        "a certificate was served for nocert.test"
    );

    // A new set replaces the old one without a restart: another CA's certificate for shop.
    let other = Ca::new("drove second CA");
    paas.certificates(json!([other.issue(&["www.shop.test"])]));
    let c2 = other.client(https, &names);
    let body = until_ok("shop with the new certificate", T, || get(&c2, &shop_url)).await;
    assert_eq!(body, (200, "shop".to_string()));
    // The connection open before the swap keeps serving (it keeps the certificate it was made
    // with); a new one gets the new certificate only.
    assert_eq!(get(&c, &shop_url).await, Ok((200, "shop".to_string())));
    let fresh = ca.client(https, &names);
    assert!(
        get(&fresh, &shop_url).await.is_err(),
        "the old CA's certificate is still served"
    );
    assert!(
        get(&c2, &blog_url).await.is_err(),
        "blog kept a certificate it no longer has"
    );
    drop(r);
}
